//! Panics injected into the engine (issue 16, defects 2 and 9), and a spilled transaction's
//! runs failing to read back (issue 21), through failpoints that every engine in the
//! process hits: so they run in a test binary of their own, one scenario at a time
//! (`fail::FailScenario` serializes them).
//!
//! Needs the feature: `cargo test --features failpoints --test failpoint_panics`.

#![cfg(feature = "failpoints")]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use walmdb::{Config, Db, Durability, Error, HealthStatus};

/// Defect 2: a committer that panicked inside the commit queue's push left the queue's
/// in-flight count raised, and `close()` waited for it forever.
#[test]
fn a_committer_that_panics_inside_the_queue_push_does_not_hang_close() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    db.update(|txn| txn.put("t", b"a", b"1")).unwrap();
    fail::cfg("commit-queue-push", "1*panic").unwrap();
    let panicked = std::thread::scope(|s| {
        s.spawn(|| db.update(|txn| txn.put("t", b"b", b"2")))
            .join()
            .is_err()
    });
    assert!(panicked, "the failpoint did not fire");
    fail::remove("commit-queue-push");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(db.close());
    });
    let closed = rx.recv_timeout(Duration::from_secs(30));
    assert!(matches!(closed, Ok(Ok(()))), "close: {closed:?}");
    scenario.teardown();
}

/// Defect 9: a panicked applier or checkpoint thread left the engine unable to apply or
/// checkpoint until reopened. Each is restarted (the applier's batch goes back to its
/// queue: nothing is lost or applied twice out of order), `health()` reports it, and past
/// three restarts of one thread the engine fails (`Poisoned`) instead of looping.
#[test]
fn a_panicked_applier_or_checkpoint_thread_is_restarted_and_reported() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default().apply_interval(Duration::from_millis(1));
    let db = Db::open_with(dir.path().join("db"), cfg).unwrap();
    let commit = |i: u32| db.update(|txn| txn.put("t", &i.to_be_bytes(), b"v"));
    fail::cfg("applier-batch-taken", "1*panic(applier test panic)").unwrap();
    fail::cfg("checkpoint-tick", "1*panic(checkpoint test panic)").unwrap();
    for i in 0..100 {
        commit(i).unwrap();
    }
    db.wait_applied(db.stats().visible_lsn).unwrap();
    db.checkpoint().unwrap();
    let m = db.metrics();
    assert_eq!(m.thread_restarts, 2, "{m:?}");
    let health = db.health();
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    assert!(
        health.reasons.iter().any(|r| r.1.contains("restarted")),
        "{health:?}"
    );
    let txn = db.read().unwrap();
    for i in 0..100u32 {
        assert_eq!(txn.get("t", &i.to_be_bytes()).unwrap(), Some(&b"v"[..]));
    }
    drop(txn);
    // A thread that keeps panicking ends the engine instead.
    fail::cfg("applier-batch-taken", "panic(applier keeps panicking)").unwrap();
    let failed = (100..10_000u32).find_map(|i| commit(i).err());
    assert!(matches!(failed, Some(Error::Poisoned { .. })), "{failed:?}");
    fail::remove("applier-batch-taken");
    let _ = db.close();
    scenario.teardown();
    let db = Db::open(dir.path().join("db")).unwrap();
    assert_eq!(
        db.read().unwrap().get("t", &99u32.to_be_bytes()).unwrap(),
        Some(&b"v"[..])
    );
    db.close().unwrap();
}

/// Issue 17: the background scrubber (`Config::scrub_interval`) is supervised like the
/// applier, but the engine does not need it: past three restarts the thread ends,
/// `health()` turns Degraded (not Unhealthy) and says so, and commits, reads, `Db::scrub`
/// and `close()` go on.
#[test]
fn a_scrubber_that_keeps_panicking_ends_and_the_engine_goes_on() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    fail::cfg("scrubber-tick", "panic(scrubber test panic)").unwrap();
    let cfg = Config::default().scrub_interval(Some(Duration::from_millis(10)));
    let db = Db::open_with(dir.path().join("db"), cfg).unwrap();
    let ended = |db: &Db| {
        db.health().reasons.iter().any(|r| {
            r.0 == HealthStatus::Degraded && r.1.contains("scrubber thread is not running")
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ended(&db) {
        assert!(std::time::Instant::now() < deadline, "{:?}", db.health());
        std::thread::sleep(Duration::from_millis(5));
    }
    fail::remove("scrubber-tick");
    let m = db.metrics();
    assert_eq!(
        (m.thread_restarts, m.scrubs, m.poisoned),
        (3, 0, false),
        "{m:?}"
    );
    let health = db.health();
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    assert!(
        health.reasons.iter().any(|r| r.1.contains("scrubber: ")),
        "the restart names its thread: {health:?}"
    );
    db.update(|txn| txn.put("t", b"k", b"v")).unwrap();
    assert!(db.scrub().unwrap().is_healthy());
    db.close().unwrap();
    scenario.teardown();
}

/// The highest segment number among the live segment files of the database at `db_dir`.
fn newest_segment(db_dir: &Path) -> u64 {
    std::fs::read_dir(db_dir.join("wal"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("wal-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .max()
        .unwrap()
}

/// Waits until `n` thread restarts are counted: a committer is answered (with an error) as
/// the flusher unwinds, before the restart has put the log back.
fn wait_for_restarts(db: &Db, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db.metrics().thread_restarts < n {
        assert!(std::time::Instant::now() < deadline, "no restart {n}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Defect 9, the flusher: a panicked flusher thread failed every later commit with
/// `FlusherDied` until the database was reopened. It now puts the log back where the last
/// settled group ended and carries on: the commits of the group in flight get an error and
/// are never replayed later (their frames are zeroed, a segment the group rotated into is
/// removed, their keys leave the conflict index), every other commit is kept, and
/// `health()` and the metrics report the restart.
#[test]
fn a_panicked_flusher_is_restarted_and_the_group_in_flight_is_neither_acknowledged_nor_replayed() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let cfg = || Config::default().wal(common::cfg());
    let db = Db::open_with(&dir, cfg()).unwrap();
    let put = |key: &str, value: &[u8]| db.update(|txn| txn.put("t", key.as_bytes(), value));
    let mut kept = Vec::new();
    let mut lost = Vec::new();
    let mut retried = Vec::new();
    for i in 0..20 {
        put(&format!("a{i}"), b"v").unwrap();
        kept.push(format!("a{i}"));
    }
    // Written, not yet synced; then synced, not yet published.
    for (n, point) in ["group-written-before-sync", "group-synced-before-answer"]
        .into_iter()
        .enumerate()
    {
        let key = format!("lost{n}");
        // A transaction whose snapshot predates the failed commit: were the failed commit's
        // key left in the conflict index, at an LSN the next commits reuse, it would conflict.
        let mut older = db.write().unwrap();
        assert_eq!(older.get("t", b"a0").unwrap(), Some(&b"v"[..]));
        fail::cfg(point, "1*panic(flusher test panic)").unwrap();
        let failed = put(&key, b"failed");
        assert!(
            matches!(failed, Err(Error::FlusherDied(_))),
            "{point}: {failed:?}"
        );
        fail::remove(point);
        wait_for_restarts(&db, n as u64 + 1);
        // The failed group's frame is gone from the file, not just overwritten later: a
        // crash now must not replay it.
        let data = std::fs::read(dir.join("wal").join(common::seg_name(1))).unwrap();
        let last = *common::frames(&data).last().unwrap();
        assert_eq!(last.last_lsn(), db.stats().visible_lsn, "{point}");
        let after = &data[last.end()..last.end() + common::FRAME_HEADER];
        assert!(after.iter().all(|&b| b == 0), "{point}: {after:?}");
        for i in 0..20 {
            put(&format!("b{n}-{i}"), b"v").unwrap();
            kept.push(format!("b{n}-{i}"));
        }
        older.put("t", key.as_bytes(), b"again").unwrap();
        older.commit().unwrap();
        retried.push(key);
    }
    // A group that rotated into a new segment before the panic: the segment is removed.
    let before = newest_segment(&dir);
    let panicked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, wal_dir) = (panicked.clone(), dir.clone());
    fail::cfg_callback("group-written-before-sync", move || {
        if newest_segment(&wal_dir) > before
            && !flag.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("flusher test panic after a rotation");
        }
    })
    .unwrap();
    let big = vec![7u8; 8 * 1024];
    let mut i = 0;
    loop {
        let key = format!("c{i}");
        i += 1;
        match put(&key, &big) {
            Ok(_) => kept.push(key),
            Err(Error::FlusherDied(_)) => {
                lost.push(key);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(i < 100, "no group rotated");
    }
    fail::remove("group-written-before-sync");
    wait_for_restarts(&db, 3);
    assert_eq!(
        newest_segment(&dir),
        before,
        "the segment the failed group made is still there"
    );
    for i in 0..20 {
        put(&format!("d{i}"), &big).unwrap();
        kept.push(format!("d{i}"));
    }
    assert!(newest_segment(&dir) > before);

    let m = db.metrics();
    assert_eq!(m.thread_restarts, 3, "{m:?}");
    let health = db.health();
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    assert!(
        health
            .reasons
            .iter()
            .any(|r| r.1.contains("flusher: flusher test panic")),
        "{health:?}"
    );
    let check = |db: &Db| {
        let txn = db.read().unwrap();
        for key in &kept {
            assert!(
                txn.get("t", key.as_bytes()).unwrap().is_some(),
                "{key} lost"
            );
        }
        for key in &lost {
            assert_eq!(
                txn.get("t", key.as_bytes()).unwrap(),
                None,
                "{key} came back"
            );
        }
    };
    check(&db);
    db.close().unwrap();
    scenario.teardown();
    let db = Db::open_with(&dir, cfg()).unwrap();
    assert!(
        db.recovery_report().wal.cut.is_none(),
        "{:?}",
        db.recovery_report()
    );
    check(&db);
    db.close().unwrap();
}

/// A flusher that panics while it publishes a group (the overlay's state is then unknown),
/// or more than three times, is not restarted: commits are refused until the database is
/// reopened, and nothing acknowledged is lost.
#[test]
fn a_flusher_that_panics_while_publishing_or_keeps_panicking_fails_the_log_and_loses_nothing() {
    for (point, action) in [
        ("group-publishing", "1*panic(publishing)"),
        ("group-written-before-sync", "panic(keeps panicking)"),
    ] {
        let scenario = fail::FailScenario::setup();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let cfg = || Config::default().wal(common::cfg());
        let db = Db::open_with(&dir, cfg()).unwrap();
        let put = |i: u32| db.update(|txn| txn.put("t", &i.to_be_bytes(), b"v"));
        for i in 0..50 {
            put(i).unwrap();
        }
        fail::cfg(point, action).unwrap();
        // Every commit fails from here on: the first with its group, the later ones with
        // the restarted flusher's next panic or because the log is failed.
        for i in 50..60 {
            let failed = put(i);
            assert!(
                matches!(failed, Err(Error::FlusherDied(_) | Error::Poisoned { .. })),
                "{point}: commit {i}: {failed:?}"
            );
        }
        let restarts = if point == "group-publishing" { 0 } else { 3 };
        assert_eq!(db.metrics().thread_restarts, restarts, "{point}");
        assert!(!db.health().flusher_alive, "{point}");
        fail::remove(point);
        let _ = db.close();
        scenario.teardown();
        let db = Db::open_with(&dir, cfg()).unwrap();
        let txn = db.read().unwrap();
        for i in 0..50u32 {
            assert_eq!(
                txn.get("t", &i.to_be_bytes()).unwrap(),
                Some(&b"v"[..]),
                "{point}"
            );
        }
        drop(txn);
        db.close().unwrap();
    }
}

/// Issue 21: a commit at `Durability::None` made while the flusher is idle is written on
/// its committer's own thread, without a hand-off. A panic there is handled as the
/// flusher's own: the commit is answered `FlusherDied` and never replayed, the log resumes
/// at its settled tail and later commits go on; a panic while publishing fails the log,
/// `close()` returns, and nothing acknowledged is lost.
#[test]
fn a_commit_at_none_written_on_its_own_thread_that_panics_is_handled_as_the_flushers_panic() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let cfg = || {
        Config::default()
            .wal(common::cfg())
            .durability(Durability::None)
    };
    let db = Db::open_with(&dir, cfg()).unwrap();
    let put = |key: &str| db.update(|txn| txn.put("t", key.as_bytes(), b"v"));
    let mut kept = Vec::new();
    for i in 0..20 {
        put(&format!("a{i}")).unwrap();
        kept.push(format!("a{i}"));
    }
    // Where the group is written: the committer's thread, the flusher idle.
    let writers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = writers.clone();
    fail::cfg_callback("group-written-before-sync", move || {
        let me = std::thread::current().name().map(str::to_owned);
        seen.lock().unwrap().push(me);
    })
    .unwrap();
    std::thread::Builder::new()
        .name("committer".into())
        .spawn({
            let db = db.clone();
            move || db.update(|txn| txn.put("t", b"named", b"v")).unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
    kept.push("named".into());
    fail::remove("group-written-before-sync");
    assert_eq!(*writers.lock().unwrap(), [Some("committer".to_owned())]);

    fail::cfg("group-written-before-sync", "1*panic(inline test panic)").unwrap();
    let failed = put("lost");
    assert!(matches!(failed, Err(Error::FlusherDied(_))), "{failed:?}");
    fail::remove("group-written-before-sync");
    assert_eq!(db.metrics().thread_restarts, 1);
    for i in 0..20 {
        put(&format!("b{i}")).unwrap();
        kept.push(format!("b{i}"));
    }
    assert!(db.health().flusher_alive);

    fail::cfg("group-publishing", "1*panic(inline publishing)").unwrap();
    let failed = put("unpublished");
    assert!(matches!(failed, Err(Error::FlusherDied(_))), "{failed:?}");
    fail::remove("group-publishing");
    let refused = put("refused");
    assert!(
        matches!(refused, Err(Error::FlusherDied(_) | Error::Poisoned { .. })),
        "{refused:?}"
    );
    assert!(!db.health().flusher_alive);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(db.close());
    });
    let closed = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("close hung");
    assert!(closed.is_err(), "the failed log closed cleanly");
    scenario.teardown();

    let db = Db::open_with(&dir, cfg()).unwrap();
    let txn = db.read().unwrap();
    for key in &kept {
        assert!(
            txn.get("t", key.as_bytes()).unwrap().is_some(),
            "{key} lost"
        );
    }
    for key in ["lost", "refused"] {
        assert_eq!(
            txn.get("t", key.as_bytes()).unwrap(),
            None,
            "{key} came back"
        );
    }
    drop(txn);
    db.close().unwrap();
}

/// A spilled transaction whose runs fail to read back while its record is written fails
/// its commit with the I/O error and loses nothing acknowledged: before any of its pieces is
/// written, the log goes on; after some are, the log is poisoned, and the reopen discards
/// the pieces without an end.
#[test]
fn a_spilled_commit_that_cannot_be_read_back_fails_and_loses_nothing_acknowledged() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cfg = || {
        Config::default()
            .txn_spill_bytes(64 << 10)
            .wal(walmdb::WalConfig {
                max_record_bytes: 256 << 10,
                ..walmdb::WalConfig::default()
            })
    };
    let spilled_commit = |db: &Db, tag: u8| {
        let mut txn = db.write().unwrap();
        for i in 0..30_000u64 {
            // Values that do not compress: the log's pieces are written as they fill.
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(tag);
            let value: Vec<u8> = (0..100)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            txn.put("big", &i.to_be_bytes(), &value).unwrap();
        }
        txn.commit()
    };
    let db = Db::open_with(&path, cfg()).unwrap();
    db.update(|t| t.put("t", b"before", b"1")).unwrap();
    // At its first operation: nothing of it is written.
    fail::cfg("spill-read-back", "return").unwrap();
    assert!(matches!(spilled_commit(&db, 1), Err(Error::Io(_))));
    fail::remove("spill-read-back");
    db.update(|t| t.put("t", b"after", b"2")).unwrap();
    assert_eq!(db.read().unwrap().count("big").unwrap(), 0);
    // Past pieces of it built but not written yet (values that compress: the pieces stay
    // in the flusher's buffer): they are dropped, and the log goes on.
    fail::cfg("spill-read-back", "6000*off->return").unwrap();
    let mut txn = db.write().unwrap();
    for i in 0..30_000u32 {
        txn.put("big", &i.to_be_bytes(), &[7; 100]).unwrap();
    }
    assert!(matches!(txn.commit(), Err(Error::Io(_))));
    fail::remove("spill-read-back");
    db.update(|t| t.put("t", b"after", b"2")).unwrap();
    assert_eq!(db.read().unwrap().count("big").unwrap(), 0);
    // Pieces of it written (30,000 operations of ~120 bytes, in pieces of 256 KiB) before
    // the read fails: the log is poisoned, the engine refuses commits until reopened.
    fail::cfg("spill-read-back", "20000*off->return").unwrap();
    assert!(spilled_commit(&db, 2).is_err());
    fail::remove("spill-read-back");
    assert!(db.update(|t| t.put("t", b"refused", b"3")).is_err());
    drop(db);
    let db = Db::open_with(&path, cfg()).unwrap();
    let read = db.read().unwrap();
    assert_eq!(read.get("t", b"before").unwrap(), Some(&b"1"[..]));
    assert_eq!(read.get("t", b"after").unwrap(), Some(&b"2"[..]));
    assert_eq!(read.count("big").unwrap(), 0);
    drop(read);
    // And a spilled commit goes through once its runs read back.
    spilled_commit(&db, 3).unwrap();
    assert_eq!(db.read().unwrap().count("big").unwrap(), 30_000);
    db.close().unwrap();
    scenario.teardown();
}

/// A spilled commit whose record is in the log but not in LMDB when the engine stops (a
/// crash while LMDB took it) is replayed at the next open a piece at a time: its operations
/// are gathered into spill runs within `txn_spill_bytes`, not joined and decoded in memory,
/// and LMDB takes it before `open` returns (in memory, the overlay would hold it), after the
/// commit before it. The tables read whole after.
#[test]
fn a_spilled_commit_logged_but_not_applied_is_replayed_from_spill_runs() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cfg = || {
        Config::default()
            .txn_spill_bytes(64 << 10)
            .apply_interval(Duration::from_millis(1))
            .wal(walmdb::WalConfig {
                max_record_bytes: 256 << 10,
                ..walmdb::WalConfig::default()
            })
    };
    let value = |i: u32| i.to_le_bytes().repeat(25);
    let db = Db::open_with(&path, cfg()).unwrap();
    db.update(|t| t.put("t", b"before", b"1")).unwrap();
    db.wait_applied(db.stats().visible_lsn).unwrap();
    let commits = db.stats().wal.commits;
    // The applier stops holding the next commit's batch: LMDB takes nothing after it.
    static TAKEN: AtomicBool = AtomicBool::new(false);
    static LET_GO: AtomicBool = AtomicBool::new(false);
    fail::cfg_callback("applier-batch-taken", || {
        TAKEN.store(true, Ordering::SeqCst);
        while !LET_GO.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    db.update(|t| t.put("t", b"held", b"2")).unwrap();
    while !TAKEN.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Older than the spilled commit, which overwrites it: replayed first.
    db.update(|t| t.put("big", &5u32.to_be_bytes(), b"older"))
        .unwrap();
    let mut txn = db.write().unwrap();
    for i in 0..30_000u32 {
        txn.put("big", &i.to_be_bytes(), &value(i)).unwrap();
    }
    // Waits for LMDB, which never takes it: not awaited.
    let pending = txn.commit_with_async(Durability::EveryWrite);
    let logged = std::time::Instant::now();
    loop {
        let s = db.stats().wal;
        if s.commits >= commits + 3 && s.durable_lsn == s.written_lsn {
            break;
        }
        assert!(logged.elapsed() < Duration::from_secs(60), "never logged");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(pending);
    // The crash stops the applier at its next batch; it is let go once that is asked.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(500));
        LET_GO.store(true, Ordering::SeqCst);
    });
    db.simulate_crash();
    let db = Db::open_with(&path, cfg()).unwrap();
    let report = db.recovery_report();
    // The held commit's batch was applied once let go; the two after it were not.
    assert_eq!(
        (report.replayed_records, report.applied_records),
        (2, 2),
        "both applied at open, in order, none published to the overlay: {report:?}"
    );
    let read = db.read().unwrap();
    assert_eq!(read.get("t", b"before").unwrap(), Some(&b"1"[..]));
    assert_eq!(read.get("t", b"held").unwrap(), Some(&b"2"[..]));
    assert_eq!(read.count("big").unwrap(), 30_000);
    for (i, entry) in read.range("big", ..).unwrap().enumerate() {
        let (key, got) = entry.unwrap();
        let i = i as u32;
        assert_eq!((key, got), (&i.to_be_bytes()[..], &value(i)[..]));
    }
    drop(read);
    assert!(db.scrub().unwrap().is_healthy());
    db.close().unwrap();
    fail::remove("applier-batch-taken");
    scenario.teardown();
}

/// Regression: a commit handed to the applier at admission (one that goes through) whose
/// record then fails to reach the log, to a table it was the first to write, failed the
/// engine when the applier was creating that table in LMDB as the failed commit's table
/// was forgotten (`applying to LMDB failed: table "big" has no LMDB handle`): the applier
/// found no handle for a commit it must not apply anyway. It drops the withdrawn commit
/// and goes on.
#[test]
fn a_withdrawn_commit_whose_table_is_forgotten_while_the_applier_creates_it_fails_nothing() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(
        dir.path().join("db"),
        Config::default().txn_spill_bytes(64 << 10),
    )
    .unwrap();
    db.update(|t| t.put("t", b"before", b"1")).unwrap();
    db.wait_applied(db.stats().visible_lsn).unwrap();
    static FAILED: AtomicBool = AtomicBool::new(false);
    static CREATING: AtomicBool = AtomicBool::new(false);
    // The applier creates the table, and waits there until the commit has failed.
    fail::cfg_callback("applier-creating-tables", || {
        CREATING.store(true, Ordering::SeqCst);
        let waited = std::time::Instant::now();
        while !FAILED.load(Ordering::SeqCst) && waited.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    // The log's encoder fails at the second operation, a second after the first: the
    // applier is creating the table by then.
    fail::cfg("spill-read-back", "1*sleep(1000)->return").unwrap();
    let mut txn = db.write().unwrap();
    for i in 0..3_000u32 {
        txn.put("big", &i.to_be_bytes(), &[7; 100]).unwrap();
    }
    assert!(matches!(txn.commit(), Err(Error::Io(_))));
    assert!(
        CREATING.load(Ordering::SeqCst),
        "the applier took the commit"
    );
    FAILED.store(true, Ordering::SeqCst);
    fail::remove("spill-read-back");
    fail::remove("applier-creating-tables");
    db.update(|t| t.put("t", b"after", b"2")).unwrap();
    let mut txn = db.write().unwrap();
    for i in 0..3_000u32 {
        txn.put("big", &i.to_be_bytes(), &[8; 100]).unwrap();
    }
    txn.commit().unwrap();
    let read = db.read().unwrap();
    assert_eq!(read.count("big").unwrap(), 3_000);
    assert_eq!(read.get("t", b"after").unwrap(), Some(&b"2"[..]));
    drop(read);
    assert_eq!(
        db.health().status,
        HealthStatus::Healthy,
        "{:?}",
        db.health()
    );
    db.close().unwrap();
    scenario.teardown();
}

/// A spilled commit whose runs fail to read back in a group it shares with small commits,
/// whose records the frame being built already holds: the whole group fails before any of
/// it is written, the frame is discarded (not written with the next group), and the log
/// goes on; none of the group's commits is in the log after a crash.
#[test]
fn a_spilled_commit_that_fails_in_a_shared_group_discards_the_frame() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cfg = || Config::default().txn_spill_bytes(64 << 10);
    let db = Db::open_with(&path, cfg()).unwrap();
    db.update(|t| t.put("t", b"before", b"1")).unwrap();
    static HELD: AtomicBool = AtomicBool::new(false);
    static HOLD: AtomicBool = AtomicBool::new(true);
    // The flusher stops after writing the next group, until let go.
    fail::cfg_callback("group-written-before-sync", || {
        HELD.store(true, Ordering::SeqCst);
        while HOLD.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    let db_ref = &db;
    std::thread::scope(|s| {
        let db = db_ref;
        let first = s.spawn(|| db.update(|t| t.put("t", b"first", b"2")));
        while !HELD.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Queued while the flusher is held: one group, the spilled commit between the two.
        let small = |key: &'static [u8]| move || db.update(|t| t.put("t", key, b"lost"));
        let a = s.spawn(small(b"a"));
        while db.stats().wal.queued_commits < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let big = s.spawn(|| {
            let mut txn = db.write()?;
            for i in 0..3_000u32 {
                txn.put("big", &i.to_be_bytes(), &[7; 100])?;
            }
            txn.commit()
        });
        while db.stats().wal.queued_commits < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let b = s.spawn(small(b"b"));
        while db.stats().wal.queued_commits < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        fail::cfg("spill-read-back", "return").unwrap();
        HOLD.store(false, Ordering::SeqCst);
        assert!(first.join().unwrap().is_ok());
        for (name, failed) in [
            ("a", a.join().unwrap()),
            ("big", big.join().unwrap().map(|_| ())),
            ("b", b.join().unwrap()),
        ] {
            assert!(matches!(failed, Err(Error::Io(_))), "{name}: {failed:?}");
        }
    });
    fail::remove("spill-read-back");
    fail::remove("group-written-before-sync");
    db.update(|t| t.put("t", b"after", b"3")).unwrap();
    // Replayed from LMDB's applied LSN, before the failed group's.
    db.simulate_crash();
    let db = Db::open_with(&path, cfg()).unwrap();
    let read = db.read().unwrap();
    let got: Vec<(Vec<u8>, Vec<u8>)> = (read.range("t", ..).unwrap())
        .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = [("after", "3"), ("before", "1"), ("first", "2")]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(read.count("big").unwrap(), 0);
    drop(read);
    assert!(db.scrub().unwrap().is_healthy());
    db.close().unwrap();
    scenario.teardown();
}
