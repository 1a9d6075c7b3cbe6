//! Opening after a clean close and after `simulate_crash` at many points, all-or-nothing
//! transactions, a full map, map growth under an open reader, checkpoints retiring WAL
//! segments, and a torn WAL tail.

#[path = "common/engine.rs"]
mod engine_common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use engine_common::*;
use walmdb::{Config, Db, Durability, Error, Lsn, WalConfig};

/// 64 KiB segments (the smallest), three operations per LMDB apply transaction: many
/// segment rotations and many points between LMDB transactions to crash at.
fn crash_cfg(seed: u64) -> Config {
    let cfg = Config::default()
        .wal(WalConfig {
            segment_bytes: 64 << 10,
            max_record_bytes: 32 << 10,
            ..wal_cfg()
        })
        .apply_max_ops(3)
        .update_attempts(10_000);
    if seed.is_multiple_of(3) {
        // The background checkpointer runs too, retiring segments under the writers.
        cfg.checkpoint_bytes(48 << 10)
            .checkpoint_interval(Duration::from_millis(20))
    } else {
        cfg
    }
}

/// Some seeds write with the applier held back ([`crash_cfg`] gives way to this) and reopen
/// with an overlay smaller than the log to replay: open applies its oldest part first.
fn outgrows_overlay(seed: u64) -> bool {
    seed % 4 == 1
}

/// The configuration to write with.
fn write_cfg(seed: u64) -> Config {
    if outgrows_overlay(seed) {
        crash_cfg(seed)
            .apply_interval(Duration::from_secs(3600))
            .apply_max_ops(1 << 20)
    } else {
        crash_cfg(seed)
    }
}

/// The configuration to reopen with.
fn reopen_cfg(seed: u64) -> Config {
    if outgrows_overlay(seed) {
        crash_cfg(seed).overlay_max_bytes(32 << 10)
    } else {
        crash_cfg(seed)
    }
}

/// One random transaction's operations over tables r0..r3, keys 0..30.
fn random_ops(rng: &mut Rng, tag: &str) -> Vec<Op> {
    (0..rng.between(1, 6))
        .map(|i| {
            let table = format!("r{}", rng.below(4));
            let k = key(rng.below(30));
            if rng.percent(25) {
                Op::delete(&table, &k)
            } else {
                let mut v = format!("{tag}.{i}:").into_bytes();
                let len = rng.below(1500);
                v.extend(rng.bytes(len));
                Op::put(&table, &k, &v)
            }
        })
        .collect()
}

/// Commits `txns` random transactions (sometimes a table drop, sometimes a checkpoint),
/// recording every acknowledged one in `log`.
fn run_writer(db: &Db, log: &CommitLog, seed: u64, txns: usize, checkpoint_every: Option<usize>) {
    let mut rng = Rng::new(seed);
    for n in 0..txns {
        if rng.percent(4) {
            match db.drop_table("r3") {
                Ok(lsn) => log.record(lsn, vec![Op::DropTable { table: "r3".into() }]),
                Err(Error::TableNotFound(_)) => {}
                Err(e) => panic!("drop_table: {e:?}"),
            }
            continue;
        }
        let isolation = rng.isolation();
        let durability = rng.durability();
        let read_first = rng.percent(50);
        let mut attempt = 0;
        let (ops, lsn) = commit_retry(db, isolation, durability, 10_000, |t| {
            attempt += 1;
            if read_first {
                t.get("r0", &key(rng.below(30)))?; // not blind: conflicts possible
            }
            let ops = random_ops(&mut rng, &format!("{seed}.{n}.{attempt}"));
            for op in &ops {
                op.run(t)?;
            }
            Ok(ops)
        })
        .unwrap_or_else(|e| panic!("seed {seed} txn {n}: {e:?}"));
        log.record(lsn, ops);
        if checkpoint_every.is_some_and(|c| n % c == c - 1) {
            db.checkpoint().unwrap();
        }
    }
}

/// Checks a database just opened after a crash against the acknowledged commits.
fn check_recovered(db: &Db, log: &CommitLog, ctx: &str) -> u64 {
    let rep = db.recovery_report();
    assert_eq!(
        rep.last_lsn,
        log.max_lsn(),
        "{ctx}: the last acknowledged LSN"
    );
    assert!(rep.applied_lsn_at_open <= rep.last_lsn, "{ctx}");
    assert_eq!(
        rep.replayed_records,
        rep.last_lsn - rep.applied_lsn_at_open,
        "{ctx}: replay covers exactly what LMDB lacked"
    );
    assert_eq!(
        rep.applied_records + rep.overlay_records,
        rep.replayed_records,
        "{ctx}: every replayed record went to LMDB or the overlay"
    );
    assert_eq!(
        rep.applied_lsn,
        rep.applied_lsn_at_open + rep.applied_records,
        "{ctx}: the oldest records were applied at open"
    );
    assert!(
        rep.overlay_bytes <= db.config().overlay_max_bytes as u64,
        "{ctx}: the overlay's share of the replay is within its bound"
    );
    let st = db.stats();
    assert_eq!(st.visible_lsn, rep.last_lsn, "{ctx}");
    assert!(st.applied_lsn >= rep.applied_lsn, "{ctx}");
    // Visible at once, through the overlay while the applier catches up, ...
    assert_eq!(dump(db), log.model(), "{ctx}: contents after recovery");
    // ... and in LMDB once it has.
    db.wait_applied(rep.last_lsn).unwrap();
    assert!(db.catch_up().is_some(), "{ctx}: the catch-up is reported");
    assert_eq!(db.stats().applied_lsn, rep.last_lsn, "{ctx}");
    assert_eq!(dump(db), log.model(), "{ctx}: contents after the catch-up");
    rep.replayed_records
}

#[test]
fn reopen_after_close_replays_nothing_and_keeps_everything() {
    let dir = tempdir();
    let log = CommitLog::default();
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    run_writer(&db, &log, 1, 60, Some(25));
    let last = log.max_lsn();
    let tables = db.tables().unwrap();
    db.close().unwrap();

    let db = Db::open_with(dir.path(), cfg()).unwrap();
    let rep = db.recovery_report().clone();
    assert_eq!(rep.replayed_records, 0);
    assert_eq!(rep.replayed_bytes, 0);
    assert_eq!((rep.applied_lsn_at_open, rep.last_lsn), (last, last));
    assert!(rep.wal.cut.is_none());
    assert_eq!(db.tables().unwrap(), tables);
    assert_eq!(dump(&db), log.model());
    let st = db.stats();
    assert_eq!(
        (st.visible_lsn, st.applied_lsn, st.checkpoint_lsn),
        (last, last, last)
    );
    // The LSNs go on from there.
    let mut t = db.write().unwrap();
    t.put("r0", b"after", b"reopen").unwrap();
    let lsn = t.commit().unwrap();
    assert_eq!(lsn, last + 1);
    log.record(lsn, vec![Op::put("r0", b"after", b"reopen")]);
    // Dropping the handle closes it as cleanly as close().
    drop(db);
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert_eq!(dump(&db), log.model());
}

#[test]
fn recovery_after_simulate_crash_at_many_points_keeps_every_acknowledged_commit() {
    const SEEDS: u64 = 30;
    let mut replayed_seeds = 0;
    let mut split_seeds = 0;
    for seed in 0..SEEDS {
        let dir = tempdir();
        let mut rng = Rng::new(seed);
        let log = CommitLog::default();
        let db = Db::open_with(dir.path(), write_cfg(seed)).unwrap();
        let txns = [rng.between(3, 40), rng.between(3, 40)];
        let checkpoint_every = rng.percent(40).then(|| rng.between(4, 12));
        std::thread::scope(|s| {
            for (th, &n) in txns.iter().enumerate() {
                let (db, log) = (&db, &log);
                s.spawn(move || run_writer(db, log, seed * 100 + th as u64, n, checkpoint_every));
            }
        });
        // Crash right after the last acknowledgement, or a moment later, with the applier
        // anywhere in its work.
        match rng.below(3) {
            0 => {}
            1 => std::thread::yield_now(),
            _ => std::thread::sleep(Duration::from_micros(rng.below(3000) as u64)),
        }
        db.simulate_crash();

        let db = Db::open_with(dir.path(), reopen_cfg(seed))
            .unwrap_or_else(|e| panic!("seed {seed}: reopen after the crash: {e:?}"));
        if check_recovered(&db, &log, &format!("seed {seed}")) > 0 {
            replayed_seeds += 1;
        }
        let rep = db.recovery_report();
        split_seeds += (rep.applied_records > 0 && rep.overlay_records > 0) as u32;
        // A second crash at once, after a few more commits, recovers as well.
        run_writer(&db, &log, seed * 100 + 50, rng.between(1, 8), None);
        db.simulate_crash();
        let db = Db::open_with(dir.path(), reopen_cfg(seed)).unwrap();
        check_recovered(&db, &log, &format!("seed {seed}, second crash"));
        db.close().unwrap();
    }
    assert!(
        replayed_seeds > 0,
        "no seed crashed with commits LMDB lacked: the crash points were not exercised"
    );
    assert!(
        split_seeds > 0,
        "no replay outgrew the overlay: applying its oldest part at open was not exercised"
    );
}

#[test]
fn recovery_never_shows_a_partial_transaction() {
    // Each commit sets all six keys of a group (three tables x two keys) to one value, or
    // deletes all six; LMDB applies at most two operations per transaction of its own...
    // but never splits a commit.
    const TABLES: [&str; 3] = ["a", "b", "c"];
    for seed in 0..8u64 {
        let dir = tempdir();
        let cfg = || crash_cfg(1).apply_max_ops(2);
        let db = Db::open_with(dir.path(), cfg()).unwrap();
        let log = CommitLog::default();
        std::thread::scope(|s| {
            for th in 0..2u64 {
                let (db, log) = (&db, &log);
                s.spawn(move || {
                    let mut rng = Rng::new(seed * 10 + th);
                    for n in 0..30 {
                        let g = rng.below(5);
                        let v = format!("{seed}-{th}-{n}").into_bytes();
                        let delete = rng.percent(20);
                        let ops: Vec<Op> = TABLES
                            .iter()
                            .flat_map(|t| {
                                (0..2).map(move |k| (t, format!("g{g}-{k}").into_bytes()))
                            })
                            .map(|(t, k)| {
                                if delete {
                                    Op::delete(t, &k)
                                } else {
                                    Op::put(t, &k, &v)
                                }
                            })
                            .collect();
                        let mut t = db.write().unwrap();
                        for op in &ops {
                            op.run(&mut t).unwrap();
                        }
                        log.record(t.commit_with(Durability::None).unwrap(), ops);
                    }
                });
            }
        });
        db.simulate_crash();
        let db = Db::open_with(dir.path(), cfg()).unwrap();
        let r = db.read().unwrap();
        for g in 0..5 {
            let vals: Vec<Option<Vec<u8>>> = TABLES
                .iter()
                .flat_map(|t| {
                    (0..2)
                        .map(|k| {
                            r.get(t, format!("g{g}-{k}").as_bytes())
                                .unwrap()
                                .map(<[u8]>::to_vec)
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            assert!(
                vals.windows(2).all(|w| w[0] == w[1]),
                "seed {seed}: group {g} is partial after recovery: {vals:?}"
            );
        }
        drop(r);
        check_recovered(&db, &log, &format!("seed {seed}"));
    }
}

#[test]
fn table_drops_and_recreates_replay_after_a_crash() {
    for wait_for_apply in [false, true] {
        let dir = tempdir();
        let cfg = || crash_cfg(1).apply_max_ops(2);
        let db = Db::open_with(dir.path(), cfg().table("declared")).unwrap();
        let mut t = db.write().unwrap();
        for k in [&b"a"[..], b"b", b"c"] {
            t.put("t", k, b"old").unwrap();
            t.put("u", k, b"old").unwrap();
        }
        t.commit().unwrap();
        db.checkpoint().unwrap(); // "t" and "u" are in LMDB
        db.drop_table("t").unwrap();
        let mut t = db.write().unwrap();
        t.put("t", b"x", b"new").unwrap();
        t.commit().unwrap();
        db.create_table("e").unwrap();
        let mut t = db.write().unwrap();
        t.put("v", b"k", b"1").unwrap();
        t.commit().unwrap();
        db.drop_table("v").unwrap();
        db.drop_table("u").unwrap();
        db.drop_table("declared").unwrap();
        if wait_for_apply {
            db.wait_applied(db.stats().visible_lsn).unwrap();
        }
        db.simulate_crash();

        // No declared tables this time: "declared" must stay dropped.
        let db = Db::open_with(dir.path(), cfg()).unwrap();
        let ctx = format!("wait_for_apply={wait_for_apply}");
        assert_eq!(
            db.tables().unwrap(),
            vec!["e".to_string(), "t".to_string()],
            "{ctx}"
        );
        let want: TableMap = [(b"x".to_vec(), b"new".to_vec())].into_iter().collect();
        assert_eq!(scan(&db, "t"), want, "{ctx}");
        assert!(
            scan(&db, "u").is_empty() && !db.table_exists("u").unwrap(),
            "{ctx}"
        );
        assert!(!db.table_exists("v").unwrap(), "{ctx}");
        assert!(
            db.table_exists("e").unwrap() && scan(&db, "e").is_empty(),
            "{ctx}"
        );
        // Writing a dropped table again starts it empty.
        let mut t = db.write().unwrap();
        t.put("u", b"z", b"1").unwrap();
        t.commit().unwrap();
        db.close().unwrap();
        let db = Db::open_with(dir.path(), cfg()).unwrap();
        assert_eq!(scan(&db, "u").len(), 1, "{ctx}");
        assert_eq!(scan(&db, "t"), want, "{ctx}");
    }
}

/// A commit of eight 16 KiB values into table "big".
fn big_commit(db: &Db, rng: &mut Rng, n: usize) -> (Vec<Op>, walmdb::Result<Lsn>) {
    let ops: Vec<Op> = (0..8)
        .map(|i| {
            Op::put(
                "big",
                format!("{n:05}-{i}").as_bytes(),
                &rng.bytes(16 << 10),
            )
        })
        .collect();
    let mut t = db.write().unwrap();
    for op in &ops {
        op.run(&mut t).unwrap();
    }
    (ops.clone(), t.commit())
}

#[test]
fn storage_full_refuses_commits_keeps_acknowledged_ones_and_recovers_with_a_larger_map() {
    for crash in [false, true] {
        let ctx = if crash { "simulate_crash" } else { "close" };
        let dir = tempdir();
        let small = cfg().map_size(1 << 20).max_map_size(4 << 20);
        let db = Db::open_with(dir.path(), small).unwrap();
        let log = CommitLog::default();
        let mut rng = Rng::new(u64::from(crash));
        // Once the map is at its maximum, a reader pins LMDB's pages, so no page freed
        // later can make room again: the full state stays until the pin is dropped.
        let mut pin = None;
        let mut refused = false;
        for n in 0..2000 {
            let (ops, r) = big_commit(&db, &mut rng, n);
            match r {
                Ok(lsn) => log.record(lsn, ops),
                Err(Error::StorageFull { map_size }) => {
                    assert_eq!(map_size, 4 << 20, "{ctx}");
                    // The map can grow to its maximum and fill between two looks at it
                    // (a loaded machine's applier lags the commits).
                    pin.get_or_insert_with(|| db.read().unwrap());
                    refused = true;
                    break;
                }
                Err(e) => panic!("{ctx}: commit {n}: {e:?}"),
            }
            if pin.is_none() && db.stats().map_size == 4 << 20 {
                pin = Some(db.read().unwrap());
            }
        }
        assert!(refused, "{ctx}: a 4 MiB map took 250 MiB");
        let st = db.stats();
        assert!(st.storage_full, "{ctx}");
        assert!(st.map_resizes > 0, "{ctx}: the map grew before it was full");
        assert_eq!(st.map_size, 4 << 20, "{ctx}");
        assert!(st.applied_lsn < st.visible_lsn, "{ctx}");
        // Every acknowledged commit is readable; new commits are refused, reads work.
        assert_eq!(dump(&db), log.model(), "{ctx}");
        let mut t = db.write().unwrap();
        t.put("small", b"k", b"v").unwrap();
        assert!(
            matches!(t.commit(), Err(Error::StorageFull { .. })),
            "{ctx}"
        );
        assert!(
            matches!(db.checkpoint(), Err(Error::StorageFull { .. })),
            "{ctx}"
        );
        drop(pin);
        if crash {
            db.simulate_crash();
        } else {
            let r = db.close();
            assert!(
                matches!(r, Ok(()) | Err(Error::StorageFull { .. })),
                "{ctx}: close: {r:?}"
            );
        }

        let large = cfg().map_size(1 << 20).max_map_size(64 << 20);
        let db = Db::open_with(dir.path(), large).unwrap();
        check_recovered(&db, &log, ctx);
        assert!(!db.stats().storage_full, "{ctx}");
        // The larger maximum holds as much again and more.
        for n in 2000..2048 {
            let (ops, r) = big_commit(&db, &mut rng, n);
            let lsn = r.unwrap_or_else(|e| panic!("{ctx}: commit {n} after reopen: {e:?}"));
            log.record(lsn, ops);
        }
        db.checkpoint().unwrap();
        let st = db.stats();
        assert!(st.map_size > 4 << 20 && !st.storage_full, "{ctx}");
        assert_eq!(dump(&db), log.model(), "{ctx}");
    }
}

/// Ends the reader's loops if the writer fails, so the scope does not wait forever.
struct StopOnPanic<'a>(&'a AtomicUsize);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(usize::MAX, Ordering::Release);
        }
    }
}

/// A 4 KiB value that names its key.
fn fill(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.extend((0..4096 - v.len()).map(|j| (i + j) as u8));
    v
}

#[test]
fn the_map_grows_while_a_reader_is_open_in_another_thread() {
    const TXNS: usize = 80;
    const PER_TXN: usize = 64; // 80 x 64 x 4 KiB = 20 MiB
    const HOLD_UNTIL: usize = 20; // commits made while the long reader stays open
    let dir = tempdir();
    let cfg = Config::default()
        .wal(WalConfig {
            segment_bytes: 4 << 20,
            max_record_bytes: 1 << 20,
            ..wal_cfg()
        })
        .durability(Durability::None)
        .map_size(1 << 20)
        .max_map_size(256 << 20)
        .resize_wait(Duration::from_millis(5));
    let db = Db::open_with(dir.path(), cfg.clone()).unwrap();
    let base: Vec<(Vec<u8>, Vec<u8>)> = (0..50).map(|i| (key(i), b"base".to_vec())).collect();
    let mut t = db.write().unwrap();
    for (k, v) in &base {
        t.put("base", k, v).unwrap();
    }
    t.commit().unwrap();
    let progress = AtomicUsize::new(0);
    let long_open = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            // A long read transaction: the map must not be resized under it.
            let r = db.read().unwrap();
            let size_at_open = db.stats().map_size;
            long_open.store(true, Ordering::Release);
            let mut rounds = 0;
            while progress.load(Ordering::Acquire) < HOLD_UNTIL {
                for (k, v) in &base {
                    assert_eq!(r.get("base", k).unwrap(), Some(&v[..]));
                }
                assert!(
                    r.get("big", &key(0)).unwrap().is_none(),
                    "newer than the snapshot"
                );
                rounds += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(
                db.stats().map_size,
                size_at_open,
                "the map was resized under an open transaction"
            );
            drop(r);
            // Then short ones, while the map grows between them.
            loop {
                // Read the progress first: every commit it counts returned before `r` began.
                let done = progress.load(Ordering::Acquire);
                if done >= TXNS {
                    break;
                }
                let r = db.read().unwrap();
                let size = db.stats().map_size;
                for i in (0..done * PER_TXN).step_by(97) {
                    assert_eq!(
                        r.get("big", &key(i)).unwrap(),
                        Some(&fill(i)[..]),
                        "key {i}"
                    );
                }
                assert_eq!(
                    db.stats().map_size,
                    size,
                    "resized under a short transaction"
                );
                rounds += 1;
            }
            rounds
        });
        while !long_open.load(Ordering::Acquire) {
            assert!(!reader.is_finished(), "the reader failed");
            std::thread::sleep(Duration::from_millis(1));
        }
        let _stop_reader_on_panic = StopOnPanic(&progress);
        for n in 0..TXNS {
            let mut t = db.write().unwrap();
            for i in n * PER_TXN..(n + 1) * PER_TXN {
                t.put("big", &key(i), &fill(i)).unwrap();
            }
            t.commit().unwrap();
            progress.store(n + 1, Ordering::Release);
        }
        assert!(reader.join().unwrap() > 0);
    });
    db.checkpoint().unwrap();
    let st = db.stats();
    assert!(st.map_resizes > 0, "the map never grew");
    assert!(
        st.map_size >= 16 << 20,
        "map {} for 20 MiB of data",
        st.map_size
    );
    assert!(!st.storage_full);
    let check = |db: &Db| {
        let r = db.read().unwrap();
        let mut n = 0;
        for item in r.range("big", ..).unwrap() {
            let (k, v) = item.unwrap();
            let i: usize = std::str::from_utf8(&k[1..]).unwrap().parse().unwrap();
            assert_eq!(v, &fill(i)[..], "key {i}");
            n += 1;
        }
        assert_eq!(n, TXNS * PER_TXN);
    };
    check(&db);
    db.close().unwrap();
    let db = Db::open_with(dir.path(), cfg).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 0);
    check(&db);
}

#[test]
fn checkpoint_retires_wal_segments_and_a_reopen_replays_only_what_came_after() {
    let dir = tempdir();
    let cfg = Config::default().wal(WalConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 32 << 10,
        ..wal_cfg()
    });
    let db = Db::open_with(dir.path(), cfg.clone()).unwrap();
    let log = CommitLog::default();
    let mut rng = Rng::new(3);
    let mut commit = |db: &Db, n: usize| {
        let ops = vec![
            Op::put("w", &key(n % 70), &rng.bytes(4000)),
            Op::put("w", &key(n % 70 + 100), &rng.bytes(100)),
        ];
        let mut t = db.write().unwrap();
        for op in &ops {
            op.run(&mut t).unwrap();
        }
        log.record(t.commit().unwrap(), ops);
    };
    for n in 0..100 {
        commit(&db, n);
    }
    let segments_before = wal_segments(dir.path()).len();
    assert!(
        segments_before >= 5,
        "400 KiB of log in {segments_before} segments"
    );
    let before = db.stats();
    assert_eq!(before.wal.segments_retired, 0);

    let ck: Lsn = db.checkpoint().unwrap();
    assert_eq!(ck, log.max_lsn());
    let st = db.stats();
    assert_eq!(st.checkpoint_lsn, ck);
    assert!(st.checkpoints > before.checkpoints);
    assert!(st.wal.segments_retired > 0, "no segment retired");
    let segments_after = wal_segments(dir.path()).len();
    assert!(
        segments_after < segments_before,
        "segments {segments_before} -> {segments_after}"
    );

    for n in 100..110 {
        commit(&db, n);
    }
    db.simulate_crash();
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let rep = db.recovery_report().clone();
    assert!(rep.applied_lsn_at_open >= ck, "LMDB lost the checkpoint");
    assert!(
        rep.wal.first_lsn > 1,
        "the retired records are gone from the log"
    );
    assert!(
        rep.wal.first_lsn <= rep.applied_lsn_at_open + 1,
        "the log holds everything LMDB lacks"
    );
    assert_eq!(rep.last_lsn, ck + 10);
    assert!(
        rep.replayed_records <= 10,
        "replayed {}",
        rep.replayed_records
    );
    check_recovered(&db, &log, "after checkpoint and crash");
}

#[derive(Debug, Clone, Copy)]
enum Tail {
    /// Garbage appended after the preallocated end of the last segment.
    AppendAtFileEnd,
    /// Garbage right after the last frame.
    GarbageAfterLastFrame,
    /// A frame header with this segment's salt and the next LSN, and a bad CRC: a torn write.
    TornFrame,
}

#[test]
fn a_torn_wal_tail_is_cut_and_everything_acknowledged_is_kept() {
    for tail in [
        Tail::AppendAtFileEnd,
        Tail::GarbageAfterLastFrame,
        Tail::TornFrame,
    ] {
        for crash in [false, true] {
            let ctx = format!("{tail:?}, crash={crash}");
            let dir = tempdir();
            let log = CommitLog::default();
            let db = Db::open_with(dir.path(), cfg()).unwrap();
            run_writer(&db, &log, 7, 30, None);
            if crash {
                db.simulate_crash();
            } else {
                db.close().unwrap();
            }

            let segment = wal_segments(dir.path()).pop().expect("a WAL segment");
            let mut bytes = std::fs::read(&segment).unwrap();
            let (salt, end, next_lsn) = frames_end(&bytes);
            assert!(end > SEGMENT_HEADER, "{ctx}: the last segment holds frames");
            assert_eq!(next_lsn, log.max_lsn() + 1, "{ctx}");
            let mut rng = Rng::new(9);
            let mut garbage = rng.bytes(1000);
            match tail {
                Tail::AppendAtFileEnd => {
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&segment)
                        .unwrap();
                    f.write_all(&garbage).unwrap();
                    f.sync_all().unwrap();
                }
                Tail::GarbageAfterLastFrame => {
                    garbage[8..12].copy_from_slice(&(salt ^ 0x5A5A_5A5A).to_le_bytes());
                    bytes[end..end + garbage.len()].copy_from_slice(&garbage);
                    std::fs::write(&segment, &bytes).unwrap();
                }
                Tail::TornFrame => {
                    let body = 100usize;
                    let mut h = vec![0u8; FRAME_HEADER];
                    h[0..4].copy_from_slice(&(body as u32).to_le_bytes());
                    h[4..8].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes()); // wrong CRC
                    h[8..12].copy_from_slice(&salt.to_le_bytes());
                    h[14..16].copy_from_slice(&1u16.to_le_bytes());
                    h[16..24].copy_from_slice(&next_lsn.to_le_bytes());
                    h[24..32].copy_from_slice(&(next_lsn - 1).to_le_bytes());
                    h[32..36].copy_from_slice(&(body as u32).to_le_bytes());
                    h.extend_from_slice(&garbage[..body]);
                    bytes[end..end + h.len()].copy_from_slice(&h);
                    std::fs::write(&segment, &bytes).unwrap();
                }
            }

            let db = Db::open_with(dir.path(), cfg())
                .unwrap_or_else(|e| panic!("{ctx}: open with a torn tail: {e:?}"));
            let rep = db.recovery_report().clone();
            if matches!(tail, Tail::TornFrame) {
                let cut = rep.wal.cut.as_ref().expect("the torn frame is cut");
                assert_eq!(cut.offset, end as u64, "{ctx}");
            }
            check_recovered(&db, &log, &ctx);
            // The log goes on from the cut: later commits survive another reopen.
            run_writer(&db, &log, 8, 10, None);
            db.close().unwrap();
            let db = Db::open_with(dir.path(), cfg()).unwrap();
            assert!(db.recovery_report().wal.cut.is_none(), "{ctx}: cut again");
            assert_eq!(dump(&db), log.model(), "{ctx}: after the second open");
        }
    }
}
