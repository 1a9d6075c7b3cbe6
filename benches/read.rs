//! Criterion micro-benchmarks of the read path: beginning and ending a read transaction, and
//! a point get served by LMDB or by the overlay (committed, not yet applied); beside each
//! LMDB figure, the same over raw heed (`heed_*`: the same keys in heed's unnamed database,
//! read transactions without thread-local slots, as walmdb's).
//!
//! Run with `cargo bench --bench read`. The peer comparison of whole reads is the harness's
//! (`harness/`, see `docs/benchmarks.md`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use walmdb::{Config, Db, Durability};

#[allow(dead_code)] // only the temporary directories and the key generator are used
mod common;
use common::Rng;

const TABLE: &str = "t";
/// Keys in LMDB (applied) and, separately, in the overlay (unapplied).
const KEYS: u64 = 100_000;
const CHUNK: u64 = 10_000;
/// Committed versions (of other keys) in the overlay under `scan10_large_overlay_own_txn`.
const OVERLAY_KEYS: u64 = 1_000_000;

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn load(db: &Db, durability: Durability) {
    for c in 0..KEYS / CHUNK {
        let mut txn = db.write().expect("write");
        for i in c * CHUNK..(c + 1) * CHUNK {
            txn.put(TABLE, &key(i), &[7u8; 100]).expect("put");
        }
        txn.commit_with(durability).expect("commit");
    }
}

type HeedDb = heed::Database<heed::types::Bytes, heed::types::Bytes>;

/// A fresh heed environment in `dir` (read transactions without thread-local slots, as
/// walmdb's) holding the same keys as walmdb's table, in the unnamed database or in `name`.
fn heed_loaded(dir: &std::path::Path, name: Option<&str>) -> (heed::Env<heed::WithoutTls>, HeedDb) {
    let mut opts = heed::EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(1 << 30);
    if name.is_some() {
        opts.max_dbs(4);
    }
    // SAFETY: the directory is fresh and this environment is opened once in the process.
    let env = unsafe { opts.open(dir) }.expect("open heed");
    let mut wtxn = env.write_txn().expect("heed begin");
    let db: HeedDb = env.create_database(&mut wtxn, name).expect("heed create");
    for i in 0..KEYS {
        db.put(&mut wtxn, &key(i), &[7u8; 100]).expect("heed put");
    }
    wtxn.commit().expect("heed commit");
    (env, db)
}

fn reads(c: &mut Criterion) {
    let root = common::bench_root();
    let applied_dir = common::tempdir(&root, "read", "applied");
    let applied = Db::open_with(applied_dir.path(), Config::default().table(TABLE)).expect("open");
    load(&applied, Durability::group_commit());
    applied
        .wait_applied(applied.stats().visible_lsn)
        .expect("apply");
    applied.checkpoint().expect("checkpoint");

    // Nothing is applied while the benchmark runs: every key is read from the overlay.
    let overlay_dir = common::tempdir(&root, "read", "overlay");
    let hour = Duration::from_secs(3600);
    let cfg = Config::default()
        .table(TABLE)
        .apply_interval(hour)
        .apply_max_ops(usize::MAX / 2)
        .checkpoint_interval(hour);
    let overlay = Db::open_with(overlay_dir.path(), cfg).expect("open");
    load(&overlay, Durability::None);
    assert!(overlay.stats().applied_lsn < overlay.stats().visible_lsn);

    let heed_dir = common::tempdir(&root, "read", "heed");
    let (env, hdb) = heed_loaded(heed_dir.path(), None);
    // The same keys in a named database, as a store of several tables keeps them (walmdb's
    // tables are named databases): LMDB looks a named database up in its main tree on its
    // first use in every read transaction.
    let named_dir = common::tempdir(&root, "read", "heed-named");
    let (named_env, named) = heed_loaded(named_dir.path(), Some(TABLE));

    let mut g = c.benchmark_group("read");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("txn_begin_end", |b| {
        b.iter(|| black_box(applied.read().expect("read")))
    });
    // The same with `max_tables` 14 (64 LMDB database slots by default, 16 here): LMDB
    // allocates and clears a slot per possible table in every read transaction.
    let few_dir = common::tempdir(&root, "read", "few-tables");
    let few = Db::open_with(
        few_dir.path(),
        Config::default().table(TABLE).max_tables(14),
    )
    .expect("open");
    g.bench_function("txn_begin_end_14_tables", |b| {
        b.iter(|| black_box(few.read().expect("read")))
    });
    g.bench_function("heed_txn_begin_end", |b| {
        b.iter(|| black_box(env.read_txn().expect("heed read")))
    });
    let mut rng = Rng(0x5eed);
    g.bench_function("get_lmdb_in_open_txn", |b| {
        let txn = applied.read().expect("read");
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            black_box(txn.get(TABLE, &k).expect("get").map(<[u8]>::len))
        })
    });
    g.bench_function("heed_get_in_open_txn", |b| {
        let txn = env.read_txn().expect("heed read");
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            black_box(hdb.get(&txn, &k).expect("get").map(<[u8]>::len))
        })
    });
    // The same two, copying each value out as a reader would: LMDB's get alone never
    // touches the value's bytes, walmdb's checks the value's checksum over them.
    let mut out = Vec::with_capacity(128);
    g.bench_function("get_lmdb_in_open_txn_copy", |b| {
        let txn = applied.read().expect("read");
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            out.clear();
            out.extend_from_slice(txn.get(TABLE, &k).expect("get").expect("loaded"));
            black_box(&out);
        })
    });
    g.bench_function("heed_get_in_open_txn_copy", |b| {
        let txn = env.read_txn().expect("heed read");
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            out.clear();
            out.extend_from_slice(hdb.get(&txn, &k).expect("get").expect("loaded"));
            black_box(&out);
        })
    });
    g.bench_function("get_overlay_in_open_txn", |b| {
        let txn = overlay.read().expect("read");
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            black_box(txn.get(TABLE, &k).expect("get").map(<[u8]>::len))
        })
    });
    g.bench_function("get_lmdb_own_txn", |b| {
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            let txn = applied.read().expect("read");
            black_box(txn.get(TABLE, &k).expect("get").map(<[u8]>::len))
        })
    });
    g.bench_function("heed_get_own_txn", |b| {
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            let txn = env.read_txn().expect("heed read");
            black_box(hdb.get(&txn, &k).expect("get").map(<[u8]>::len))
        })
    });
    g.bench_function("heed_named_get_own_txn", |b| {
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            let txn = named_env.read_txn().expect("heed read");
            black_box(named.get(&txn, &k).expect("get").map(<[u8]>::len))
        })
    });
    // Short scans (10 entries from a random key, each in its own read transaction), the
    // comparison workload's range reads: over LMDB alone, over the overlay alone, over LMDB
    // with a large overlay of other keys (`OVERLAY_KEYS` committed versions not applied),
    // and over raw heed's named database.
    let scan10 = |txn: &walmdb::ReadTxn<'_>, k: &[u8]| {
        let mut n = 0;
        for entry in txn.range(TABLE, k..).expect("range").take(10) {
            let (k, v) = entry.expect("entry");
            n += k.len() + v.len();
        }
        n
    };
    g.bench_function("scan10_lmdb_own_txn", |b| {
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            black_box(scan10(&applied.read().expect("read"), &k))
        })
    });
    g.bench_function("scan10_overlay_own_txn", |b| {
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            black_box(scan10(&overlay.read().expect("read"), &k))
        })
    });
    let large_dir = common::tempdir(&root, "read", "large-overlay");
    let large = Db::open_with(
        large_dir.path(),
        Config::default()
            .table(TABLE)
            .apply_interval(hour)
            .apply_max_ops(usize::MAX / 2)
            .checkpoint_interval(hour)
            .overlay_max_bytes(1 << 30),
    )
    .expect("open");
    load(&large, Durability::None);
    large
        .wait_applied(large.stats().visible_lsn)
        .expect("apply");
    for c in 0..OVERLAY_KEYS / CHUNK {
        let mut txn = large.write().expect("write");
        for i in c * CHUNK..(c + 1) * CHUNK {
            txn.put(TABLE, &key(KEYS + i), &[8u8; 100]).expect("put");
        }
        txn.commit_with(Durability::None).expect("commit");
    }
    assert!(large.stats().applied_lsn < large.stats().visible_lsn);
    g.bench_function("scan10_large_overlay_own_txn", |b| {
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            black_box(scan10(&large.read().expect("read"), &k))
        })
    });
    g.bench_function("get_large_overlay_in_open_txn", |b| {
        let txn = large.read().expect("read");
        b.iter(|| {
            let k = key(KEYS + rng.next_u64() % OVERLAY_KEYS);
            black_box(txn.get(TABLE, &k).expect("get").map(<[u8]>::len))
        })
    });
    g.bench_function("heed_named_scan10_own_txn", |b| {
        b.iter(|| {
            let k = key(rng.next_u64() % KEYS);
            let txn = named_env.read_txn().expect("heed read");
            let mut n = 0;
            for entry in named
                .range(
                    &txn,
                    &(
                        std::ops::Bound::Included(&k[..]),
                        std::ops::Bound::Unbounded,
                    ),
                )
                .expect("range")
                .take(10)
            {
                let (k, v) = entry.expect("entry");
                n += k.len() + v.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
