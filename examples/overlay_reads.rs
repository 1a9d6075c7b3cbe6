//! Reads over a large overlay, one thread: `settled` 24-byte keys (150-byte values) applied
//! to LMDB, then `unapplied` more committed at `None` with the applier held back (new keys,
//! or with `overwrite` overwrites of settled ones), then for `secs` seconds either 10-entry
//! range reads from random settled or new keys (`scan`) or 10 point gets a read transaction
//! (`get`), printing the mean time a read transaction; or (`count`) one thread counts the
//! table in a loop while another makes 1-key commits at `None`, one every 200 us, printing
//! the commits' latency quantiles and the counts done. `sorted` instead commits `settled`
//! keys above every other, 1,000 a durable transaction, and prints keys/s; `pops` loads
//! `settled` keys, then pops the first key a commit for `secs` seconds and prints pops/s. The scratch
//! measurements of CHANGELOG.md and docs/benchmarks.md (builds alternated, ABBA):
//!
//! ```sh
//! cargo run --release --example overlay_reads -- scan 2000000 1000000 4
//! cargo run --release --example overlay_reads -- scan 2000000 1000000 4 overwrite
//! cargo run --release --example overlay_reads -- scan 2000000 0 4     # settled scans
//! cargo run --release --example overlay_reads -- get 2000000 1000000 4
//! cargo run --release --example overlay_reads -- count 0 1000000 5   # beside commits
//! cargo run --release --example overlay_reads -- sorted 1000000 0 0
//! cargo run --release --example overlay_reads -- pops 1000000 0 4         # at None
//! cargo run --release --example overlay_reads -- pops 1000000 300000 4    # behind a backlog
//! cargo run --release --example overlay_reads -- pops 1000000 0 4 group   # at GroupCommit
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use walmdb::{Config, Db, Durability};

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: overlay_reads <scan|get|count|sorted|pops> <settled> <unapplied> <seconds> [overwrite|group]";
    let (Some(mode), Some(settled), Some(unapplied), Some(secs)) =
        (args.get(1), args.get(2), args.get(3), args.get(4))
    else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let settled: u64 = settled.parse().expect("settled keys");
    let unapplied: u64 = unapplied.parse().expect("unapplied keys");
    let secs: f64 = secs.parse().expect("seconds");
    let overwrite = args.get(5).is_some_and(|a| a == "overwrite");
    std::fs::create_dir_all("target").expect("create target/");
    let dir = tempfile::tempdir_in("target").expect("a temporary directory");
    if mode == "sorted" {
        sorted(dir.path(), settled);
        return;
    }
    if mode == "pops" {
        pops(
            dir.path(),
            settled,
            unapplied,
            secs,
            args.get(5).is_some_and(|a| a == "group"),
        );
        return;
    }
    let hour = Duration::from_secs(3600);
    let db = Db::open_with(
        dir.path(),
        Config::default().table("t").overlay_max_bytes(4 << 30),
    )
    .expect("open");
    let mut txn = db.write().expect("write");
    for i in 0..settled {
        txn.put("t", &key(i), &[7u8; 150]).expect("put");
    }
    txn.commit_with(Durability::None).expect("commit");
    db.wait_applied(db.stats().visible_lsn).expect("apply");
    db.close().expect("close");
    let db = Db::open_with(
        dir.path(),
        Config::default()
            .table("t")
            .apply_interval(hour)
            .apply_max_ops(usize::MAX / 2)
            .checkpoint_interval(hour)
            .overlay_max_bytes(4 << 30),
    )
    .expect("reopen");
    for c in 0..unapplied.div_ceil(10_000) {
        let mut txn = db.write().expect("write");
        for i in 0..10_000.min(unapplied - c * 10_000) {
            let j = if overwrite {
                (c * 10_000 + i).wrapping_mul(0x2545_F491_4F6C_DD1D) % settled
            } else {
                settled + c * 10_000 + i
            };
            txn.put("t", &key(j), &[8u8; 150]).expect("put");
        }
        txn.commit_with(Durability::None).expect("commit");
    }
    if mode == "count" {
        count_beside_commits(&db, settled + unapplied, secs);
        return;
    }
    let keys = if overwrite {
        settled
    } else {
        settled + unapplied
    };
    let mut x = 1u64;
    let mut next_key = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        key((x >> 11) % keys)
    };
    let start = Instant::now();
    let mut reads = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..1000 {
            let txn = db.read().expect("read");
            let mut bytes = 0;
            if mode == "scan" {
                for entry in txn.range("t", &next_key()[..]..).expect("range").take(10) {
                    let (k, v) = entry.expect("entry");
                    bytes += k.len() + v.len();
                }
            } else {
                for _ in 0..10 {
                    bytes += txn
                        .get("t", &next_key())
                        .expect("get")
                        .map_or(0, <[u8]>::len);
                }
            }
            black_box(bytes);
            reads += 1;
        }
    }
    let per_read = start.elapsed().as_secs_f64() * 1e9 / reads as f64;
    println!("{mode}: {per_read:.0} ns a read transaction ({reads} reads)");
}

/// `settled` keys, then `backlog` 1-key commits of new keys at `None` (the applier's backlog
/// the pops start behind, as in the harness's kv rows), then for `secs` seconds pops of the
/// first key, a commit each, at `None` (at the default durability when `group`).
fn pops(dir: &std::path::Path, settled: u64, backlog: u64, secs: f64, group: bool) {
    let db = Db::open_with(dir, Config::default().table("t")).expect("open");
    let mut txn = db.write().expect("write");
    for i in 0..settled {
        txn.put("t", &key(i), &[7u8; 150]).expect("put");
    }
    txn.commit_with(Durability::None).expect("commit");
    db.wait_applied(db.stats().visible_lsn).expect("apply");
    for i in 0..backlog {
        let mut txn = db.write().expect("write");
        txn.put("t", &key(settled + i), &[5u8; 150]).expect("put");
        txn.commit_with(Durability::None).expect("commit");
    }
    let start = Instant::now();
    let mut pops = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        let mut txn = db.write().expect("write");
        let first = txn.first("t").expect("first").map(|(k, _)| k.to_vec());
        let Some(first) = first else { break };
        txn.delete("t", &first).expect("delete");
        if group {
            txn.commit().expect("commit");
        } else {
            txn.commit_with(Durability::None).expect("commit");
        }
        pops += 1;
    }
    let rate = pops as f64 / start.elapsed().as_secs_f64();
    let level = if group { "group" } else { "none" };
    println!("pops at {level}: {rate:.0} pops/s ({pops} pops)");
}

/// `n` keys above every random one (16 bytes of 0xFF, then a counter), 1,000 a commit at
/// the default durability, then a settle.
fn sorted(dir: &std::path::Path, n: u64) {
    let db = Db::open_with(dir, Config::default().table("t")).expect("open");
    let start = Instant::now();
    let mut i = 0u64;
    while i < n {
        let mut txn = db.write().expect("write");
        for _ in 0..1000.min(n - i) {
            let mut k = [0xFFu8; 24];
            k[16..].copy_from_slice(&i.to_be_bytes());
            txn.put("t", &k, &[3u8; 150]).expect("put");
            i += 1;
        }
        txn.commit().expect("commit");
    }
    let commits = start.elapsed().as_secs_f64();
    db.wait_applied(db.stats().visible_lsn).expect("apply");
    println!(
        "sorted: {:.0} keys/s committed ({commits:.2} s), {:.0} keys/s with the settle",
        n as f64 / commits,
        n as f64 / start.elapsed().as_secs_f64()
    );
}

/// One thread counts table `t` (at least `keys` entries) in a loop while this one makes
/// 1-key commits of new keys at `None`, one every 200 us, for `secs` seconds.
fn count_beside_commits(db: &Db, keys: u64, secs: f64) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let counter = s.spawn(|| {
            let mut counts = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(db.read().expect("read").count("t").expect("count") >= keys);
                counts += 1;
            }
            counts
        });
        let start = Instant::now();
        let mut latencies = Vec::new();
        let mut i = keys;
        while start.elapsed() < Duration::from_secs_f64(secs) {
            let t = Instant::now();
            let mut txn = db.write().expect("write");
            txn.put("t", &key(i), b"x").expect("put");
            txn.commit_with(Durability::None).expect("commit");
            latencies.push(t.elapsed());
            i += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let counts = counter.join().expect("the counting thread");
        latencies.sort();
        let q =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "count: {} commits, p50 {:?} p99 {:?} p99.9 {:?} max {:?}; {counts} counts",
            latencies.len(),
            q(0.5),
            q(0.99),
            q(0.999),
            latencies[latencies.len() - 1]
        );
    });
}
