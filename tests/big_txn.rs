//! Transactions of any size: one over `max_record_bytes` is logged in pieces, and one whose
//! versions would take more than a quarter of `overlay_max_bytes` goes through (applied to
//! LMDB before it becomes visible, never held in the overlay). Both commit atomically,
//! alongside ordinary commits, and survive a reopen and a crash.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use walmdb::{Config, Db, Durability, Error, Op, WalConfig};

const T: &str = "t";

/// 256 KiB records in 1 MiB segments; a 4 MiB overlay: a commit of more than 1 MiB of
/// versions goes through.
fn config() -> Config {
    Config::default()
        .table(T)
        .wal(WalConfig {
            segment_bytes: 1 << 20,
            max_record_bytes: 256 << 10,
            queue_max_bytes: 1 << 20,
            ..WalConfig::default()
        })
        .overlay_max_bytes(4 << 20)
}

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64, round: u8) -> Vec<u8> {
    let mut v = vec![round; 150];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn contents(db: &Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let txn = db.read().unwrap();
    txn.range(T, ..)
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// One transaction of `n` puts (keys `from..from + n`) and deletes of every fifth key below
/// `from`, applied to `model` too.
fn big_commit(
    db: &Db,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    from: u64,
    n: u64,
    round: u8,
    durability: Durability,
) -> walmdb::Result<u64> {
    let mut txn = db.write()?;
    for i in from..from + n {
        txn.put(T, &key(i), &value(i, round))?;
    }
    for i in (0..from).step_by(5) {
        txn.delete(T, &key(i))?;
    }
    let lsn = txn.commit_with(durability)?;
    for i in from..from + n {
        model.insert(key(i).to_vec(), value(i, round));
    }
    for i in (0..from).step_by(5) {
        model.remove(&key(i)[..]);
    }
    Ok(lsn)
}

#[test]
fn a_transaction_larger_than_a_record_and_the_overlay_commits_whole_and_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let mut model = BTreeMap::new();
    // 30,000 pairs: 5 MiB in the log (20 pieces), 11 MiB of versions.
    big_commit(&db, &mut model, 0, 30_000, 1, Durability::group_commit()).unwrap();
    // Visible at once, whole, and never in the overlay.
    assert_eq!(db.read().unwrap().count(T).unwrap(), 30_000);
    assert_eq!(contents(&db), model);
    let st = db.stats();
    assert!(st.applied_lsn >= st.visible_lsn, "{st:?}");
    assert_eq!(db.metrics().overlay_bytes, 0);
    // At `None` too (its group is synced all the same), overwriting and deleting.
    big_commit(&db, &mut model, 20_000, 20_000, 2, Durability::None).unwrap();
    assert_eq!(contents(&db), model);
    db.update(|t| t.put(T, b"small", b"after")).unwrap();
    model.insert(b"small".to_vec(), b"after".to_vec());
    db.simulate_crash();

    let db = Db::open_with(dir.path(), config()).unwrap();
    assert_eq!(contents(&db), model);
    assert_eq!(db.read().unwrap().count(T).unwrap(), model.len() as u64);
    db.close().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    assert_eq!(contents(&db), model);
    let report = db.scrub().unwrap();
    assert!(report.is_healthy(), "{report:?}");
    db.close().unwrap();
}

/// Small commits from other threads go on while large ones go through; every commit lands,
/// readers always see whole transactions (each large one sets a marker key with its pairs).
#[test]
fn large_commits_go_through_beside_small_ones_and_readers_see_them_whole() {
    large_commits_beside_small_ones(config(), false);
}

/// As above, the large transactions spilled (`txn_spill_bytes` at its least): their commits
/// stream from their runs beside the small ones.
#[test]
fn spilled_commits_go_through_beside_small_ones_and_readers_see_them_whole() {
    large_commits_beside_small_ones(config().txn_spill_bytes(64 << 10), true);
}

fn large_commits_beside_small_ones(cfg: Config, spills: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let small_writers: Vec<_> = (0..3u64)
            .map(|w| {
                let db = db.clone();
                let stop = &stop;
                s.spawn(move || {
                    // At least once, however late the thread starts.
                    let mut n = 0u64;
                    loop {
                        let k = format!("s{w}-{n:06}");
                        db.update(|t| t.put("small", k.as_bytes(), b"v")).unwrap();
                        n += 1;
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break n;
                        }
                    }
                })
            })
            .collect();
        let reader = {
            let db = db.clone();
            let stop = &stop;
            s.spawn(move || {
                let mut checks = 0;
                loop {
                    let txn = db.read().unwrap();
                    // Round r wrote 8,000 keys of its own and marker r.
                    let rounds = txn.get(T, b"marker").unwrap().map_or(0, |m| m[0]);
                    let n = txn.count(T).unwrap();
                    assert_eq!(n, u64::from(rounds) * 8_000 + u64::from(rounds > 0));
                    checks += 1;
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break checks;
                    }
                }
            })
        };
        for round in 1..=6u8 {
            let mut txn = db.write().unwrap();
            for i in 0..8_000u64 {
                let k = key(u64::from(round) * 100_000 + i);
                txn.put(T, &k, &value(i, round)).unwrap();
            }
            txn.put(T, b"marker", &[round]).unwrap();
            txn.commit().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let smalls: u64 = small_writers.into_iter().map(|h| h.join().unwrap()).sum();
        let checks = reader.join().unwrap();
        assert!(smalls > 0 && checks > 0);
        assert_eq!(db.read().unwrap().count("small").unwrap(), smalls);
    });
    assert_eq!(db.read().unwrap().count(T).unwrap(), 6 * 8_000 + 1);
    assert_eq!(dir.path().join("spill").is_dir(), spills);
    db.close().unwrap();
}

/// A large commit is checked for conflicts as any commit is, and later commits from an older
/// snapshot that touch its table conflict with it (its keys are not indexed one by one).
#[test]
fn a_large_commit_conflicts_with_older_snapshots_that_touch_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    db.update(|t| t.put(T, b"a", b"0")).unwrap();
    let mut older = db.write().unwrap();
    assert_eq!(older.get(T, b"a").unwrap(), Some(&b"0"[..]));
    let mut model = BTreeMap::new();
    big_commit(&db, &mut model, 0, 20_000, 1, Durability::group_commit()).unwrap();
    older.put(T, b"b", b"1").unwrap();
    assert!(matches!(older.commit(), Err(Error::Conflict { .. })));
    // A large commit from an older snapshot conflicts with a commit to a key it read.
    let mut large = db.write().unwrap();
    assert!(large.get(T, b"a").unwrap().is_some());
    db.update(|t| t.put(T, b"a", b"2")).unwrap();
    for i in 0..20_000 {
        large.put(T, &key(1_000_000 + i), &value(i, 9)).unwrap();
    }
    large.put(T, b"a", b"3").unwrap();
    assert!(matches!(large.commit(), Err(Error::Conflict { .. })));
    assert_eq!(db.read().unwrap().get(T, b"a").unwrap(), Some(&b"2"[..]));
    // Commits to other tables, and from newer snapshots, go on.
    db.update(|t| t.put("other", b"x", b"y")).unwrap();
    db.update(|t| t.put(T, b"c", b"z")).unwrap();
    db.close().unwrap();
}

/// A large commit to several tables counts as a write to each of them: an older snapshot
/// that touched any one of them conflicts, one that touched another table does not.
#[test]
fn a_large_commit_to_several_tables_conflicts_with_older_snapshots_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let tables = ["a", "m", "z", "untouched"];
    db.update(|t| {
        for table in tables {
            t.put(table, b"k", b"0")?;
        }
        Ok(())
    })
    .unwrap();
    let mut older: Vec<_> = tables
        .iter()
        .map(|table| {
            let mut txn = db.write().unwrap();
            assert_eq!(txn.get(table, b"k").unwrap(), Some(&b"0"[..]));
            txn.put(table, b"new", b"1").unwrap();
            txn
        })
        .collect();
    let mut large = db.write().unwrap();
    for i in 0..7_000 {
        for table in &tables[..3] {
            large.put(table, &key(i), &value(i, 1)).unwrap();
        }
    }
    large.commit().unwrap();
    let untouched = older.pop().unwrap();
    for (txn, table) in older.into_iter().zip(tables) {
        let result = txn.commit();
        assert!(
            matches!(result, Err(Error::Conflict { .. })),
            "{table}: {result:?}"
        );
    }
    untouched.commit().unwrap();
    for table in &tables[..3] {
        assert_eq!(db.read().unwrap().count(table).unwrap(), 7_001);
    }
    db.close().unwrap();
}

/// A commit that goes through is handed to the applier when it is admitted, so LMDB takes it
/// while the flusher writes its record; LMDB commits it only once it is logged. Here its
/// write fails for space (the group fails, the log goes on) or its sync fails (the engine
/// poisons itself): LMDB never takes it, readers never see it, and a reopen has it only if
/// its record is whole in the log.
#[test]
fn a_large_commit_whose_record_never_reaches_the_log_never_reaches_lmdb() {
    use walmdb::{FaultKind, OpKind, SimFs};
    for (op, fault) in [
        (OpKind::Write, FaultKind::Enospc),
        (OpKind::SyncData, FaultKind::Eio),
    ] {
        let ctx = format!("{op:?} failing with {fault:?}");
        let dir = tempfile::tempdir().unwrap();
        let fs = SimFs::new();
        let cfg = || {
            let base = config();
            Config {
                wal: WalConfig {
                    // No background log I/O: the next write or sync is the commit's.
                    prepare_segments: false,
                    ..base.wal.clone()
                },
                ..base
            }
        };
        let db = Db::open_with_fs(dir.path(), cfg(), common::fsref(&fs)).unwrap();
        let mut model = BTreeMap::new();
        big_commit(&db, &mut model, 0, 100, 1, Durability::group_commit()).unwrap();
        fs.fail_next(op, fault);
        let mut unchanged = model.clone();
        let failed = big_commit(
            &db,
            &mut unchanged,
            1000,
            20_000,
            2,
            Durability::group_commit(),
        );
        assert!(failed.is_err(), "{ctx}: {failed:?}");
        // What the table would hold had it committed.
        let mut with_failed = model.clone();
        for i in 1000..21_000 {
            with_failed.insert(key(i).to_vec(), value(i, 2));
        }
        for i in (0..1000).step_by(5) {
            with_failed.remove(&key(i)[..]);
        }
        // Whatever the applier does with it, it does before this returns.
        let _ = db.checkpoint();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(contents(&db), model, "{ctx}: a failed commit is visible");
        // A failed sync poisons the engine; a write failing for space fails only its group.
        let poisoned = !matches!(failed, Err(Error::DiskFull(_)));
        if !poisoned {
            // The log goes on.
            big_commit(&db, &mut model, 1000, 20_000, 3, Durability::group_commit()).unwrap();
            assert_eq!(contents(&db), model, "{ctx}");
        }
        drop(db);
        fs.clear_faults();
        let db = Db::open_with_fs(dir.path(), cfg(), common::fsref(&fs)).unwrap();
        // A failed sync leaves the record's outcome open: whole in the log, or not at all.
        let after = contents(&db);
        assert!(
            after == model || (poisoned && after == with_failed),
            "{ctx}: after a reopen ({} keys, expected {}); the commit failed with {failed:?}",
            after.len(),
            model.len()
        );
        db.close().unwrap();
    }
}

/// Found beside `engine_ops-lone-txn-end`: a crash (power loss of the log) while a large
/// transaction's pieces were written could leave parts without their end at the log's
/// tail, and every later open refused with `Inconsistent` ("replay ended at LSN 1 but the
/// log holds LSN 2"): the database could not be opened again. Now the parts are skipped,
/// the transaction is all there (once acknowledged) or not at all, and the log goes on.
#[test]
fn a_crash_while_a_large_transactions_pieces_are_written_leaves_a_database_that_opens() {
    let dir_cfg = || {
        let base = config();
        Config {
            wal: WalConfig {
                segment_bytes: 256 << 10,
                max_record_bytes: 16 << 10,
                prepare_segments: false,
                ..base.wal.clone()
            },
            ..base
        }
    };
    let mut outcomes = [0usize; 2];
    // The commit's own log operations run out at about 31: 40 covers them all.
    for k in 0..40 {
        for seed in 0..3 {
            let ctx = format!("crash after {k} log operations, seed {seed}");
            let dir = tempfile::tempdir().unwrap();
            let fs = walmdb::SimFs::new();
            let db = Db::open_with_fs(dir.path(), dir_cfg(), common::fsref(&fs)).unwrap();
            let mut model = BTreeMap::new();
            big_commit(&db, &mut model, 0, 10, 1, Durability::EveryWrite).unwrap();
            let before = model.clone();
            let mut after = model.clone();
            for i in 10..2_010 {
                after.insert(key(i).to_vec(), value(i, 2));
            }
            for i in (0..10).step_by(5) {
                after.remove(&key(i)[..]);
            }
            fs.crash_after_ops(fs.op_count() + k);
            // 2,000 pairs: about 25 pieces across two segments.
            let acked = big_commit(&db, &mut model, 10, 2_000, 2, Durability::EveryWrite).is_ok();
            assert!(!acked || model == after);
            db.simulate_crash();
            let fs = fs.crash(seed, walmdb::CrashOptions::default());
            let db = Db::open_with_fs(dir.path(), dir_cfg(), common::fsref(&fs))
                .unwrap_or_else(|e| panic!("{ctx}: reopen: {e:?}"));
            let got = contents(&db);
            assert!(
                got == after || (!acked && got == before),
                "{ctx}: acked {acked}"
            );
            outcomes[usize::from(got == after)] += 1;
            // The log goes on after whatever the crash left, through a clean reopen.
            let mut now = got;
            big_commit(&db, &mut now, 5_000, 50, 3, Durability::EveryWrite).unwrap();
            db.close().unwrap();
            let db = Db::open_with_fs(dir.path(), dir_cfg(), common::fsref(&fs)).unwrap();
            assert_eq!(contents(&db), now, "{ctx}: after a clean reopen");
            db.close().unwrap();
        }
    }
    // Crashes before the transaction's end and after it were both reached.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

/// A commit that goes through is encoded by the flusher a piece at a time as it writes it
/// (never whole in memory): read back from the log after a crash, the joined pieces are
/// the transaction, operation for operation, in order.
#[test]
fn a_large_commits_record_read_back_from_the_log_is_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let mut model = BTreeMap::new();
    let before = big_commit(&db, &mut model, 0, 20_000, 1, Durability::group_commit()).unwrap();
    // Puts of new keys and deletes of every fifth old one, in pieces (2.6 MiB of log).
    let lsn = big_commit(&db, &mut model, 20_000, 10_000, 2, Durability::None).unwrap();
    assert!(lsn > before + 5, "written in pieces: {before}, {lsn}");
    db.simulate_crash();

    let db = Db::open_with(dir.path(), config()).unwrap();
    assert_eq!(contents(&db), model);
    // From its first piece, read from the log (the feed keeps nothing across a reopen).
    let mut feed = db.subscribe(before + 1).unwrap();
    let change = feed
        .next_timeout(Duration::from_secs(30))
        .unwrap()
        .expect("the commit, from the log");
    assert_eq!(change.lsn, lsn);
    // The buffer's order: the table's keys ascending, each a put or a delete.
    let mut want: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for i in 20_000..30_000 {
        want.insert(key(i).to_vec(), Some(value(i, 2)));
    }
    for i in (0..20_000).step_by(5) {
        want.insert(key(i).to_vec(), None);
    }
    let got: Vec<(Vec<u8>, Option<Vec<u8>>)> = change
        .ops
        .into_iter()
        .map(|op| match op {
            Op::Put { table, key, value } if table == T => (key, Some(value)),
            Op::Delete { table, key } if table == T => (key, None),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    db.close().unwrap();
}
