//! The crash, panic, hang and leak paths a review found (issue 16), one named test each.
//!
//! With `--features failpoints` the resize test also holds the map's resizing window open
//! (failpoint `map-resizing`), so a call that slips past the exclusion is caught every run.
//! The tests that inject panics are in `tests/failpoint_panics.rs`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use walmdb::{Config, Db};

/// Defect 1: the applier resized LMDB's map while a checkpoint's sync, a metrics scrape
/// (`env.info`/`env.stat`) or a backup's copy could be reading the meta pages the resize
/// unmaps. Drives resizes against all three; none may run inside a resize.
#[test]
fn a_map_resize_never_runs_beside_a_sync_a_scrape_or_a_copy() {
    #[cfg(feature = "failpoints")]
    let _scenario = {
        let scenario = fail::FailScenario::setup();
        fail::cfg("map-resizing", "sleep(20)").unwrap();
        scenario
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default()
        .map_size(1 << 20)
        .max_map_size(1 << 30)
        .apply_interval(Duration::from_millis(1));
    let db = Db::open_with(dir.path().join("db"), cfg).unwrap();
    let done = AtomicBool::new(false);
    let value = [7u8; 100];
    let resizes_wanted = 5;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    let m = db.metrics();
                    assert!(m.map_used_bytes > 0);
                    let _ = db.health();
                }
            });
        }
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                db.checkpoint().unwrap();
            }
        });
        s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Acquire) {
                let backup = dir.path().join(format!("backup-{n}"));
                db.backup(&backup).unwrap();
                std::fs::remove_dir_all(&backup).unwrap();
                n += 1;
            }
        });
        let mut written = 0u64;
        while db.stats().map_resizes < resizes_wanted {
            let mut txn = db.write().unwrap();
            for _ in 0..1000 {
                txn.put("t", &written.to_be_bytes(), &value).unwrap();
                written += 1;
            }
            txn.commit().unwrap();
            assert!(written < 10_000_000, "the map never grew");
        }
        done.store(true, Ordering::Release);
    });
    assert_eq!(db.lmdb_calls_during_resize(), 0);
    let resizes = db.stats().map_resizes;
    db.close().unwrap();
    assert!(resizes >= resizes_wanted);
}

/// Opens `cfg` in a thread, commits once at the engine's level and once at `level`, and
/// closes, within a minute: `Ok(level's result)`, or the open's error. A panic or a hang
/// fails the test.
fn open_commit_close(
    cfg: Config,
    level: walmdb::Durability,
) -> walmdb::Result<walmdb::Result<walmdb::Lsn>> {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().join("db");
    std::thread::spawn(move || {
        let run = || -> walmdb::Result<walmdb::Result<walmdb::Lsn>> {
            let db = Db::open_with(&path, cfg)?;
            db.update(|txn| txn.put("t", b"k", b"v"))?;
            let mut txn = db.write()?;
            txn.put("t", b"l", b"w")?;
            let at_level = txn.commit_with(level);
            assert_eq!(db.read()?.get("t", b"k")?, Some(&b"v"[..]));
            db.close()?;
            Ok(at_level)
        };
        let _ = tx.send(run());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("open, commit and close panicked or hung")
}

/// Defect 2: `Instant + Duration` overflowed in the flusher (`GroupCommit { max_wait }`,
/// `Interval(d)`), the queue (`backpressure_wait`), admission and the resize wait, panicking
/// an engine thread (the flusher even at open). Every duration setting above a day, and the
/// sizes whose allocation would abort, are refused with `InvalidConfig` naming the field;
/// within bounds the engine runs and closes.
#[test]
fn extreme_settings_are_refused_by_name_and_never_panic_a_thread_or_hang_close() {
    use walmdb::Durability::{GroupCommit, Interval};
    let huge = Duration::MAX;
    let day = Duration::from_secs(24 * 3600);
    let group = |max_wait, max_batch| GroupCommit {
        max_wait,
        max_batch,
    };
    let wal = |set: &dyn Fn(&mut walmdb::WalConfig)| {
        let mut w = walmdb::WalConfig::default();
        set(&mut w);
        Config::default().wal(w)
    };
    let refused: Vec<(&str, Config)> = vec![
        (
            "GroupCommit max_wait",
            Config::default().durability(group(huge, 8)),
        ),
        (
            "GroupCommit max_batch",
            Config::default().durability(group(Duration::ZERO, 0)),
        ),
        ("Interval", Config::default().durability(Interval(huge))),
        ("backpressure_wait", wal(&|w| w.backpressure_wait = huge)),
        ("backlog_wait", Config::default().backlog_wait(huge)),
        ("apply_interval", Config::default().apply_interval(huge)),
        (
            "checkpoint_interval",
            Config::default().checkpoint_interval(huge),
        ),
        ("resize_wait", Config::default().resize_wait(huge)),
        ("max_readers", Config::default().max_readers(u32::MAX)),
        ("max_tables", Config::default().max_tables(u32::MAX)),
        ("queue_capacity", wal(&|w| w.queue_capacity = usize::MAX)),
        ("compress_level", wal(&|w| w.compress_level = i32::MAX)),
        (
            "scrub_interval",
            Config::default().scrub_interval(Some(huge)),
        ),
        (
            "scrub_interval",
            Config::default().scrub_interval(Some(Duration::ZERO)),
        ),
    ];
    for (field, cfg) in refused {
        match open_commit_close(cfg, walmdb::Durability::EveryWrite) {
            Err(walmdb::Error::InvalidConfig(msg)) => {
                assert!(
                    msg.contains(field),
                    "{field}: the error does not name it: {msg}"
                )
            }
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
    let at_the_bounds: Vec<Config> = vec![
        Config::default().durability(Interval(day)),
        wal(&|w| w.backpressure_wait = day).backlog_wait(day),
        Config::default()
            .resize_wait(day)
            .apply_interval(Duration::ZERO),
        Config::default()
            .checkpoint_interval(day)
            .apply_interval(Duration::from_millis(1)),
        Config::default().max_readers(1).max_tables(1),
        Config::default()
            .scrub_interval(Some(day))
            .scrub_max_bytes_per_sec(Some(1)),
        // Scrubs back to back, unthrottled or throttled to nothing and to anything.
        Config::default()
            .scrub_interval(Some(Duration::from_nanos(1)))
            .scrub_max_bytes_per_sec(None),
        Config::default()
            .scrub_interval(Some(Duration::from_nanos(1)))
            .scrub_max_bytes_per_sec(Some(0)),
        Config::default()
            .scrub_interval(Some(Duration::from_millis(1)))
            .scrub_max_bytes_per_sec(Some(1)),
        Config::default()
            .scrub_interval(Some(Duration::from_millis(1)))
            .scrub_max_bytes_per_sec(Some(u64::MAX)),
    ];
    for cfg in at_the_bounds {
        let answer = open_commit_close(cfg.clone(), walmdb::Durability::None);
        assert!(matches!(answer, Ok(Ok(_))), "{cfg:?}: {answer:?}");
    }
    // A level chosen per commit is checked too: the commit is refused, the engine goes on.
    for level in [group(huge, 8), group(Duration::ZERO, 0), Interval(huge)] {
        match open_commit_close(Config::default(), level) {
            Ok(Err(walmdb::Error::InvalidConfig(msg))) => assert!(msg.contains("durability")),
            other => panic!("{level:?}: expected the commit refused, got {other:?}"),
        }
    }
}

/// Every file under `root` is 0600 and every directory 0700 (`root` itself excluded).
fn assert_private(root: &std::path::Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut checked = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(
                mode,
                0o700,
                "{} is a folder of mode {mode:o}",
                path.display()
            );
            checked += assert_private(&path);
        } else {
            assert_eq!(mode, 0o600, "{} is a file of mode {mode:o}", path.display());
        }
        checked += 1;
    }
    checked
}

/// Defect 5: WAL segments and spares, `LOCK`, archived segments, backup files and the
/// `MANIFEST` were created 0644 and walmdb's directories 0755 (under the usual umask 022).
/// Drives every path that creates files (open, rotation and spares, archiving, backup,
/// restore, compaction) and checks every mode; a folder the user made keeps its mode.
#[test]
fn every_file_and_folder_walmdb_creates_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let made = root.path().join("made-by-the-user");
    std::fs::create_dir(&made).unwrap();
    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o755)).unwrap();
    let created = root.path().join("created");
    let cfg = Config::default().wal(walmdb::WalConfig {
        segment_bytes: 64 * 1024,
        max_record_bytes: 16 * 1024,
        archive: Some(walmdb::ArchiveConfig::new(created.join("archive"))),
        ..walmdb::WalConfig::default()
    });
    let db = Db::open_with(made.join("db"), cfg.clone()).unwrap();
    for i in 0..200u32 {
        db.update(|txn| txn.put("t", &i.to_be_bytes(), &[1u8; 1000]))
            .unwrap();
    }
    db.checkpoint().unwrap();
    db.backup(created.join("nested").join("backup")).unwrap();
    db.compact().unwrap();
    walmdb::restore(
        &created.join("nested").join("backup"),
        &created.join("restored"),
        &walmdb::RestoreTarget::Latest,
        &walmdb::RestoreOptions::default(),
    )
    .unwrap();
    let checked = assert_private(&created) + assert_private(&made);
    assert!(checked > 20, "only {checked} paths checked");
    let kept = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
    assert_eq!(kept, 0o755, "the user's folder changed mode");
    let reopened = Db::open_with(made.join("db"), cfg).unwrap();
    assert_eq!(
        reopened
            .read()
            .unwrap()
            .get("t", &7u32.to_be_bytes())
            .unwrap()
            .map(<[u8]>::len),
        Some(1000)
    );
    reopened.close().unwrap();
    assert_private(&made);
}

/// Defect 3: at `None` and `Interval`, the applier syncs the log before applying; a sync
/// that shared a group with an append failed for space (here: no room for the next segment)
/// got `DiskFull`, and the applier ended the engine (`Poisoned`) for good. Space errors fail
/// only the commits they hit; once space exists the engine carries on without a reopen.
/// The disk fills and frees 20 times per level while the applier syncs continually.
#[test]
fn a_transient_full_disk_fails_only_its_commits_at_every_durability_level() {
    use std::sync::atomic::AtomicU64;
    use walmdb::{Durability, Error, SimFs};
    let levels = [
        Durability::None,
        Durability::Interval(Duration::from_millis(2)),
        Durability::group_commit(),
    ];
    for level in levels {
        let dir = tempfile::tempdir().unwrap();
        let fs = SimFs::new();
        let cfg = Config::default()
            .apply_interval(Duration::from_millis(1))
            .wal(walmdb::WalConfig {
                durability: level,
                recycle_segments: 0,
                ..common::cfg()
            });
        let db = Db::open_with_fs(dir.path(), cfg, std::sync::Arc::new(fs.clone())).unwrap();
        let next = AtomicU64::new(0);
        let refused = AtomicU64::new(0);
        let full = AtomicBool::new(false);
        let done = AtomicBool::new(false);
        let wrong = std::sync::Mutex::new(None);
        let commit = |db: &Db| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            db.update(|txn| txn.put("t", &i.to_be_bytes(), &[3u8; 900]))
                .map(|_| i)
        };
        let acked: Vec<u64> = std::thread::scope(|s| {
            let committers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut acked = Vec::new();
                        while !done.load(Ordering::Acquire) {
                            match commit(&db) {
                                Ok(i) => acked.push(i),
                                Err(Error::DiskFull(_)) => {
                                    full.store(true, Ordering::Release);
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    *wrong.lock().unwrap() = Some(e.to_string());
                                    done.store(true, Ordering::Release);
                                }
                            }
                        }
                        acked
                    })
                })
                .collect();
            for _ in 0..20 {
                // No room for another segment: every group that must rotate fails.
                fs.set_capacity(Some(0));
                while !full.load(Ordering::Acquire) && !done.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                std::thread::sleep(Duration::from_millis(5));
                fs.set_capacity(None);
                full.store(false, Ordering::Release);
                std::thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Ordering::Release);
            let acked: Vec<Vec<u64>> = committers.into_iter().map(|c| c.join().unwrap()).collect();
            acked.concat()
        });
        let wrong = wrong.into_inner().unwrap();
        assert_eq!(wrong, None, "{level:?}: a full disk gave another error");
        commit(&db).unwrap_or_else(|e| panic!("{level:?}: after space: {e:?}"));
        db.checkpoint().unwrap();
        assert!(!db.metrics().poisoned, "{level:?}");
        let txn = db.read().unwrap();
        for i in &acked {
            assert!(
                txn.get("t", &i.to_be_bytes()).unwrap().is_some(),
                "{level:?}: {i} lost"
            );
        }
        drop(txn);
        db.close().unwrap();
        eprintln!(
            "{level:?}: {} acknowledged, {} refused",
            acked.len(),
            refused.load(Ordering::Relaxed)
        );
    }
}

/// Defect 7: a commit admitted and then failed with its group (here `DiskFull`) left its
/// keys in the conflict index at an LSN the next commits reuse: a transaction that read the
/// key afterwards and wrote it got a spurious `Conflict`. And its new table's name stayed
/// registered, counting against `max_tables`.
#[test]
fn a_commit_that_fails_with_its_group_leaves_no_conflict_and_no_table_behind() {
    use walmdb::{Durability, Error, FaultKind, OpKind, SimFs};
    let dir = tempfile::tempdir().unwrap();
    let fs = SimFs::new();
    let cfg = Config::default().max_tables(2);
    let db = Db::open_with_fs(dir.path(), cfg, std::sync::Arc::new(fs.clone())).unwrap();
    db.update(|txn| txn.put("t", b"k", b"1")).unwrap();
    // Written blind (no snapshot to check), into a new table; its group's write fails.
    fs.fail_next(OpKind::Write, FaultKind::Enospc);
    let mut failed = db.write().unwrap();
    failed.put("t", b"k", b"2").unwrap();
    failed.put("new", b"x", b"y").unwrap();
    let e = failed.commit_with(Durability::EveryWrite).unwrap_err();
    assert!(matches!(e, Error::DiskFull(_)), "{e:?}");
    // Reads `k` at a snapshot before the failed commit's LSN, which the next commit reuses.
    let mut reader = db.write().unwrap();
    assert_eq!(reader.get("t", b"k").unwrap(), Some(&b"1"[..]));
    reader.put("t", b"k", b"3").unwrap();
    reader.commit().expect("no spurious conflict");
    // Two tables at most: `t` and one more. The failed commit's `new` must not hold a slot.
    db.update(|txn| txn.put("other", b"a", b"b"))
        .expect("no false TooManyTables");
    assert!(matches!(
        db.update(|txn| txn.put("third", b"a", b"b")),
        Err(Error::TooManyTables { .. })
    ));
    assert_eq!(db.read().unwrap().get("t", b"k").unwrap(), Some(&b"3"[..]));
    db.close().unwrap();
}

/// Defect 7: a commit refused for a conflict registered its new tables' names first, for
/// good, so later commits got a false `TooManyTables`.
#[test]
fn a_commit_refused_for_a_conflict_registers_no_table() {
    use walmdb::Error;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), Config::default().max_tables(2)).unwrap();
    db.update(|txn| txn.put("t", b"k", b"1")).unwrap();
    for i in 0..5 {
        let mut loser = db.write().unwrap();
        loser.get("t", b"k").unwrap();
        loser.put("t", b"k", b"x").unwrap();
        loser.put(&format!("new{i}"), b"a", b"b").unwrap();
        db.update(|txn| txn.put("t", b"k", b"winner")).unwrap();
        assert!(matches!(loser.commit(), Err(Error::Conflict { .. })));
    }
    db.update(|txn| txn.put("other", b"a", b"b"))
        .expect("no false TooManyTables");
    db.close().unwrap();
}

/// Fills a 1 MiB map until the applier needs it to grow; returns the LSN of the last commit.
fn fill_past_the_map(db: &Db) -> walmdb::Lsn {
    let mut lsn = 0;
    for i in 0..40u32 {
        let mut txn = db.write().unwrap();
        for j in 0..100u32 {
            txn.put("t", &(i * 100 + j).to_be_bytes(), &[9u8; 500])
                .unwrap();
        }
        lsn = txn.commit().unwrap();
    }
    lsn
}

fn small_map(resize_wait: Duration) -> Config {
    Config::default()
        .map_size(1 << 20)
        .max_map_size(1 << 30)
        .resize_wait(resize_wait)
        .apply_interval(Duration::from_millis(1))
}

/// Defect 4: `wait_applied` (and so `checkpoint`) waited forever when the caller's own open
/// transaction kept the applier from growing the map. It now ends with
/// `MapResizeBlocked` once a resize was put off with nothing applied.
#[test]
fn waiting_for_the_applier_behind_the_callers_own_reader_ends_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(
        Db::open_with(dir.path().join("db"), small_map(Duration::from_millis(200))).unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let in_thread = db.clone();
    std::thread::spawn(move || {
        let db = in_thread;
        let reader = db.read().unwrap();
        let lsn = fill_past_the_map(&db);
        let waited = db.wait_applied(lsn);
        let checkpoint = db.checkpoint().map(|_| ());
        drop(reader);
        let _ = tx.send((waited, checkpoint, db.checkpoint().map(|_| ())));
    });
    let (waited, checkpoint, after) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the wait did not end");
    assert!(
        matches!(waited, Err(walmdb::Error::MapResizeBlocked { .. })),
        "{waited:?}"
    );
    assert!(
        matches!(checkpoint, Err(walmdb::Error::MapResizeBlocked { .. })),
        "{checkpoint:?}"
    );
    assert!(after.is_ok(), "{after:?}");
    assert!(db.stats().map_resizes >= 1);
}

/// Defect 4: a resize put off by one long reader re-paused at once, holding off every new
/// transaction for up to `resize_wait` a cycle: one long reader stalled all reads. Now a
/// resize first waits for the transactions open before it, without pausing, so while the
/// long reader lives no new transaction waits for a pause.
#[test]
fn a_long_reader_postpones_a_resize_without_holding_off_new_readers() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path().join("db"), small_map(Duration::from_millis(100))).unwrap();
    let long = db.read().unwrap();
    let lsn = fill_past_the_map(&db);
    let started = std::time::Instant::now();
    let mut reads = 0u64;
    while db.stats().map_resizes_postponed < 3 {
        let txn = db.read().unwrap();
        assert!(txn.get("t", &0u32.to_be_bytes()).unwrap().is_some());
        drop(txn);
        reads += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no resize was put off"
        );
    }
    assert_eq!(
        db.transactions_held_off_by_resizes(),
        0,
        "after {reads} reads"
    );
    drop(long);
    db.wait_applied(lsn).unwrap();
    assert!(db.stats().map_resizes >= 1);
    db.close().unwrap();
}

/// Defect 8: a rotation that failed after creating its segment under the temporary name
/// listed that path as a spare; the next attempt renamed another spare over it, and the
/// rotation after that took the listed path, which named nothing: `ENOENT`, a failed commit.
#[test]
fn a_failed_rotation_leaves_no_dangling_spare_behind() {
    use walmdb::{Error, FaultKind, OpKind, SimFs};
    let dir = tempfile::tempdir().unwrap();
    let fs = SimFs::new();
    let cfg = Config::default().wal(walmdb::WalConfig {
        recycle_segments: 4,
        ..common::cfg()
    });
    let db = Db::open_with_fs(dir.path(), cfg, std::sync::Arc::new(fs.clone())).unwrap();
    let mut i = 0u32;
    let mut commit = |db: &Db| {
        i += 1;
        db.update(|txn| txn.put("t", &i.to_be_bytes(), &[5u8; 2000]))
    };
    let rotations = |db: &Db| db.stats().wal.rotations;
    // Fill past a rotation, so a checkpoint can retire a segment into a spare later.
    while rotations(&db) < 2 {
        commit(&db).unwrap();
    }
    // The next rotation creates its file, then fails to preallocate it.
    fs.fail_next(OpKind::Allocate, FaultKind::Enospc);
    let failed = loop {
        match commit(&db) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(failed, Error::DiskFull(_)), "{failed:?}");
    // A checkpoint retires the full segments into spares; rotations use them all up.
    db.checkpoint().unwrap();
    let before = rotations(&db);
    while rotations(&db) < before + 6 {
        commit(&db).expect("a rotation after the failed one");
    }
    db.close().unwrap();
}

/// Defect 8: reading a segment allocated the file's whole length, whatever its header's
/// segment size said: a segment file grown (or damaged in its length) to 1 TiB made opening
/// try to allocate 1 TiB. Reading stops at the header's segment size.
#[test]
fn opening_reads_a_segment_only_up_to_its_headers_size() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default().wal(common::cfg());
    let db = Db::open_with(dir.path(), cfg.clone()).unwrap();
    for i in 0..10u32 {
        db.update(|txn| txn.put("t", &i.to_be_bytes(), b"v"))
            .unwrap();
    }
    db.simulate_crash();
    for entry in std::fs::read_dir(dir.path().join("wal")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("wal-") {
            // Sparse: no disk space is used.
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(1 << 40).unwrap();
        }
    }
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let txn = db.read().unwrap();
    for i in 0..10u32 {
        assert_eq!(txn.get("t", &i.to_be_bytes()).unwrap(), Some(&b"v"[..]));
    }
    drop(txn);
    db.close().unwrap();
}

/// Defect 8: zeros written over a write that failed with ENOSPC (half of it landed) were
/// not synced when the next group rotated to a new segment, so a power loss could keep the
/// half-written frame and lose the zeros: damage before a later segment's durable records,
/// which recovery must refuse (`Corruption`). The rotation now syncs the zeros first.
#[test]
fn zeros_over_a_failed_write_are_synced_before_the_log_rotates_away() {
    use common::*;
    use walmdb::{CrashOptions, Durability, Error, FaultKind, OpKind, SimFs};
    let durable = Some(Durability::EveryWrite);
    for seed in 0..64 {
        let fs = SimFs::new();
        let wal = open(&fs, cfg()).unwrap();
        let mut acked = Vec::new();
        for i in 0..50 {
            acked.push(rec(i, 1000));
            wal.commit_with(rec(i, 1000), (), durable).unwrap();
        }
        fs.fail_next(OpKind::Write, FaultKind::ShortEnospc);
        let e = wal.commit_with(rec(50, 1000), (), durable).unwrap_err();
        assert!(matches!(e, Error::DiskFull(_)), "{e:?}");
        // Too big for what is left of the segment: written to the next one.
        acked.push(rec(51, 15_000));
        wal.commit_with(rec(51, 15_000), (), durable).unwrap();
        assert_eq!(wal.stats().rotations, 1);
        let crashed = fs.crash(seed, CrashOptions::default());
        drop(wal);
        let reopened = open(&crashed, cfg()).unwrap_or_else(|e| {
            panic!("seed {seed}: the power loss left the log unopenable: {e:?}")
        });
        assert_records(&read_all(&reopened), &acked, 1, &format!("seed {seed}"));
    }
}

/// Defect 8: a serializable transaction's read set was checked on the flusher thread with
/// no bound: a range over a large conflict index walked every entry in it while every
/// other commit waited. The check is bounded by `max_conflict_checks`
/// (`ReadSetTooLarge`), and a range of a table nobody wrote since the snapshot is not
/// walked at all.
#[test]
fn a_serializable_commits_conflict_check_is_bounded() {
    use walmdb::{Error, Isolation};
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default().max_conflict_checks(1000);
    let db = Db::open_with(dir.path(), cfg).unwrap();
    // An open reader keeps the conflict index from being pruned.
    let pin = db.read().unwrap();
    for chunk in 0..50u32 {
        let mut txn = db.write().unwrap();
        for i in 0..100u32 {
            txn.put("t", format!("a{:06}", chunk * 100 + i).as_bytes(), b"v")
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let scan = |db: &Db, write_elsewhere_meanwhile: bool| {
        let mut txn = db.write_with(Isolation::Serializable).unwrap();
        let range = (
            std::ops::Bound::Included(&b"a"[..]),
            std::ops::Bound::Excluded(&b"b"[..]),
        );
        let seen = txn.range("t", range).unwrap().count();
        assert_eq!(seen, 5000);
        txn.put("x", b"k", b"v").unwrap();
        if write_elsewhere_meanwhile {
            db.update(|other| other.put("t", b"z", b"outside the range"))
                .unwrap();
        }
        txn.commit()
    };
    // Nothing written to `t` since the snapshot: no walk, so no bound to reach.
    scan(&db, false).expect("a range of an unwritten table is not walked");
    // Written since: the 5,000 index entries in range are past the bound of 1,000.
    match scan(&db, true) {
        Err(Error::ReadSetTooLarge { limit: 1000 }) => {}
        other => panic!("expected ReadSetTooLarge, got {other:?}"),
    }
    // Too many keys read is refused before the commit is queued.
    let mut txn = db.write_with(Isolation::Serializable).unwrap();
    for i in 0..1001u32 {
        txn.get("t", format!("a{i:06}").as_bytes()).unwrap();
    }
    txn.put("x", b"k", b"w").unwrap();
    assert!(matches!(txn.commit(), Err(Error::ReadSetTooLarge { .. })));
    drop(pin);
    db.close().unwrap();
}

/// Found by the configuration-drawing fuzz target: a commit waiting for room in a full
/// overlay did not hurry the applier, which went on gathering for `apply_interval` (here a
/// day), so the commit waited out `backlog_wait` and failed with `ApplyBacklog`.
#[test]
fn a_commit_waiting_for_room_hurries_the_applier() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default()
        .wal(walmdb::WalConfig {
            segment_bytes: 64 * 1024,
            max_record_bytes: 4096,
            queue_max_bytes: 4096,
            ..walmdb::WalConfig::default()
        })
        .overlay_max_bytes(4096)
        .apply_interval(Duration::from_secs(24 * 3600))
        .backlog_wait(Duration::from_secs(600));
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let result = (0..20u32)
                .try_for_each(|i| db.update(|txn| txn.put("t", &i.to_be_bytes(), &[1u8; 1000])));
            let _ = tx.send(result);
        });
        let done = rx.recv_timeout(Duration::from_secs(120));
        assert!(matches!(done, Ok(Ok(()))), "{done:?}");
    });
    db.close().unwrap();
}

/// Found by the same fuzz target: `commit_with` an out-of-bounds level returned `Ok` when
/// the transaction wrote nothing, and otherwise checked the level only after waiting for
/// room. The level is checked first.
#[test]
fn a_commits_level_is_checked_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let bad = walmdb::Durability::Interval(Duration::MAX);
    let empty = db.write().unwrap();
    assert!(matches!(
        empty.commit_with(bad),
        Err(walmdb::Error::InvalidConfig(_))
    ));
    db.close().unwrap();
}

/// An I/O error names the path it happened on: here the database directory that cannot be
/// created (its parent is a file).
#[test]
fn an_io_error_names_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("a-file");
    std::fs::write(&parent, b"not a directory").unwrap();
    let dir = parent.join("db");
    let err = walmdb::Db::open(&dir).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, walmdb::Error::Io(_)) && text.contains(&*parent.to_string_lossy()),
        "{text}"
    );
}
