//! A write transaction whose writes pass `Config::txn_spill_bytes` moves them into unlinked
//! files and reads them back from there: it reads its own writes as one that kept them in
//! memory would, commits them whole (through to LMDB), conflicts as it would, keeps its
//! savepoints, and its commit reaches the change feed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use walmdb::{Config, Db, Error, Op, WriteTxn};

const TABLES: [&str; 2] = ["a", "b"];

/// The least budget: about 800 small writes a spill.
fn config() -> Config {
    Config::default().txn_spill_bytes(64 << 10)
}

type Model = BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

fn key(i: u64) -> Vec<u8> {
    // Keys of 1 to 12 bytes, in no order.
    let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes();
    let mut key = k[..(i % 8 + 1) as usize].to_vec();
    key.extend_from_slice(&(i as u32).to_be_bytes()[..(i % 5) as usize]);
    key
}

/// Distinct keys, in no order.
fn distinct(i: u64) -> Vec<u8> {
    let mut k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes().to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn contents(db: &Db, table: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let txn = db.read().unwrap();
    let all = txn.range(table, ..).unwrap();
    all.map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect()
}

/// Every read of the transaction agrees with `model`: point reads (written keys and keys
/// never written), walks up and down from random starts, counts and ends.
fn assert_reads(txn: &WriteTxn<'_>, model: &Model, next: &mut impl FnMut() -> u64) {
    for (table, want) in model {
        for _ in 0..40 {
            let k = key(next() % 3_000);
            assert_eq!(txn.get(table, &k).unwrap(), want.get(&k).map(Vec::as_slice));
        }
        let got: Vec<_> = (txn.range(table, ..).unwrap())
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        let all: Vec<_> = want.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(got, all, "table {table}");
        for _ in 0..10 {
            let (low, high) = (key(next() % 3_000), key(next() % 3_000));
            let got: Vec<_> = (txn.range(table, low.clone()..high.clone()).unwrap())
                .map(|e| e.map(|(k, _)| k.to_vec()).unwrap())
                .collect();
            let expected: Vec<_> = if low <= high {
                want.range(low.clone()..high.clone())
                    .map(|(k, _)| k.clone())
                    .collect()
            } else {
                Vec::new()
            };
            assert_eq!(got, expected, "{table} {low:?}..{high:?}");
            let got: Vec<_> = (txn.rev_range(table, low.clone()..=high.clone()).unwrap())
                .map(|e| e.map(|(k, _)| k.to_vec()).unwrap())
                .collect();
            let expected: Vec<_> = if low <= high {
                (want.range(low.clone()..=high.clone()).rev())
                    .map(|(k, _)| k.clone())
                    .collect()
            } else {
                Vec::new()
            };
            assert_eq!(got, expected, "{table} rev {low:?}..={high:?}");
        }
        assert_eq!(txn.count(table).unwrap(), want.len() as u64);
        let first = want
            .iter()
            .next()
            .map(|(k, v)| (k.as_slice(), v.as_slice()));
        assert_eq!(txn.first(table).unwrap(), first);
        let last = want
            .iter()
            .next_back()
            .map(|(k, v)| (k.as_slice(), v.as_slice()));
        assert_eq!(txn.last(table).unwrap(), last);
    }
}

fn rng() -> impl FnMut() -> u64 {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Random puts, overwrites and deletes over a committed table, spilled many times over:
/// the transaction reads what a model says between spills, and its commit leaves exactly
/// the model, before and after a reopen; its files are gone and their folder is private.
#[test]
fn a_spilled_transaction_reads_its_own_writes_and_commits_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let mut model: Model = TABLES.iter().map(|t| (*t, BTreeMap::new())).collect();
    db.update(|t| {
        for i in 0..1_000 {
            t.put("a", &key(i), b"committed")?;
        }
        Ok(())
    })
    .unwrap();
    let a = model.get_mut("a").unwrap();
    a.extend((0..1_000).map(|i| (key(i), b"committed".to_vec())));
    let mut next = rng();
    let mut txn = db.write().unwrap();
    for round in 0..12u64 {
        for _ in 0..1_500 {
            let table = TABLES[(next() % 2) as usize];
            let k = key(next() % 3_000);
            if next().is_multiple_of(4) {
                txn.delete(table, &k).unwrap();
                model.get_mut(table).unwrap().remove(&k);
            } else {
                let v = format!("{round}-{}", next() % 1_000).repeat((next() % 4 + 1) as usize);
                txn.put(table, &k, v.as_bytes()).unwrap();
                model.get_mut(table).unwrap().insert(k, v.into_bytes());
            }
        }
        assert_reads(&txn, &model, &mut next);
    }
    let spill = dir.path().join("spill");
    let mode = std::fs::metadata(&spill).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the spill folder is private");
    txn.commit().unwrap();
    for table in TABLES {
        assert_eq!(contents(&db, table), model[table], "table {table}");
        assert_eq!(
            db.read().unwrap().count(table).unwrap(),
            model[table].len() as u64
        );
    }
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "nothing left"
    );
    db.simulate_crash();
    let db = Db::open_with(dir.path(), config()).unwrap();
    for table in TABLES {
        assert_eq!(
            contents(&db, table),
            model[table],
            "table {table} after a crash"
        );
    }
    assert!(db.scrub().unwrap().is_healthy());
    db.close().unwrap();
}

/// A transaction that read a key, spilled, and wrote it conflicts with a commit to that key
/// since its snapshot; it leaves nothing behind.
#[test]
fn a_spilled_transaction_conflicts_as_one_in_memory_would() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    db.update(|t| t.put("a", b"x", b"0")).unwrap();
    let mut txn = db.write().unwrap();
    assert_eq!(txn.get("a", b"x").unwrap(), Some(&b"0"[..]));
    txn.put("a", b"x", b"mine").unwrap();
    for i in 0..5_000 {
        txn.put("a", &key(i), b"v").unwrap();
    }
    assert_eq!(
        txn.get("a", b"x").unwrap(),
        Some(&b"mine"[..]),
        "spilled, read back"
    );
    db.update(|t| t.put("a", b"x", b"theirs")).unwrap();
    assert!(matches!(txn.commit(), Err(Error::Conflict { .. })));
    assert_eq!(contents(&db, "a").len(), 1);
    assert_eq!(
        db.read().unwrap().get("a", b"x").unwrap(),
        Some(&b"theirs"[..])
    );
    db.close().unwrap();
}

/// Writes spilled before a savepoint stay; writes after it, over spilled keys, are undone
/// by a rollback, which brings the spilled values back. No spill happens once a savepoint
/// was taken.
#[test]
fn a_rollback_over_spilled_writes_brings_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let mut txn = db.write().unwrap();
    for i in 0..5_000 {
        txn.put("a", &distinct(i), b"before").unwrap();
    }
    let savepoint = txn.savepoint();
    for i in 0..3_000 {
        if i % 2 == 0 {
            txn.put("a", &distinct(i), b"after").unwrap();
        } else {
            txn.delete("a", &distinct(i)).unwrap();
        }
    }
    assert_eq!(txn.get("a", &distinct(2)).unwrap(), Some(&b"after"[..]));
    assert_eq!(txn.get("a", &distinct(1)).unwrap(), None);
    assert_eq!(txn.count("a").unwrap(), 3_500);
    txn.rollback_to(&savepoint).unwrap();
    assert_eq!(txn.get("a", &distinct(2)).unwrap(), Some(&b"before"[..]));
    assert_eq!(txn.get("a", &distinct(1)).unwrap(), Some(&b"before"[..]));
    assert_eq!(txn.count("a").unwrap(), 5_000);
    txn.commit().unwrap();
    let got = contents(&db, "a");
    assert_eq!(got.len(), 5_000);
    assert!(got.values().all(|v| v == b"before"));
    db.close().unwrap();
}

/// A subscription gets a spilled commit whole (read back from the log), between the
/// commits around it.
#[test]
fn the_change_feed_delivers_a_spilled_commit_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let mut feed = db.subscribe(1).unwrap();
    db.update(|t| t.put("b", b"before", b"1")).unwrap();
    let mut txn = db.write().unwrap();
    for i in 0..5_000 {
        txn.put("a", &distinct(i), &i.to_le_bytes()).unwrap();
    }
    txn.delete("a", &distinct(7)).unwrap();
    let lsn = txn.commit().unwrap();
    db.update(|t| t.put("b", b"after", b"2")).unwrap();
    let first = feed.next_change().unwrap();
    assert_eq!(first.ops.len(), 1);
    let spilled = feed.next_change().unwrap();
    assert_eq!(spilled.lsn, lsn);
    let mut want: BTreeMap<Vec<u8>, Option<Vec<u8>>> = (0..5_000)
        .map(|i| (distinct(i), Some(i.to_le_bytes().to_vec())))
        .collect();
    want.insert(distinct(7), None);
    let got: BTreeMap<Vec<u8>, Option<Vec<u8>>> = (spilled.ops.into_iter())
        .map(|op| match op {
            Op::Put { table, key, value } if table == "a" => (key, Some(value)),
            Op::Delete { table, key } if table == "a" => (key, None),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, want);
    let last = feed.next_change().unwrap();
    assert_eq!(last.ops.len(), 1);
    assert!(last.lsn > lsn);
    db.close().unwrap();
}

/// A budget below a spill file's block is refused, not taken.
#[test]
fn a_spill_budget_below_a_block_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default().txn_spill_bytes(1 << 10);
    assert!(matches!(
        Db::open_with(dir.path(), cfg),
        Err(Error::InvalidConfig(_))
    ));
}

/// A spill that cannot write its file (here `<dir>/spill` is a file, not a folder) fails the
/// write that needed it with an I/O error and loses nothing: the transaction keeps its writes
/// in memory, reads them, and once the spill can be written goes on and commits them all.
#[test]
fn a_spill_that_fails_keeps_the_writes_and_the_transaction_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let blocker = dir.path().join("spill");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let mut txn = db.write().unwrap();
    let mut written = 0u64;
    let failed = loop {
        match txn.put("a", &distinct(written), b"v") {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100_000, "the spill never failed");
    };
    assert!(matches!(failed, Error::Io(_)), "{failed:?}");
    assert_eq!(txn.count("a").unwrap(), written);
    assert_eq!(txn.get("a", &distinct(0)).unwrap(), Some(&b"v"[..]));
    std::fs::remove_file(&blocker).unwrap();
    for i in written..written + 5_000 {
        txn.put("a", &distinct(i), b"v").unwrap();
    }
    assert!(blocker.is_dir(), "spilled once it could");
    txn.commit().unwrap();
    assert_eq!(db.read().unwrap().count("a").unwrap(), written + 5_000);
    db.close().unwrap();
}
