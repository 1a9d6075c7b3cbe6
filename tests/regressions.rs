//! Bugs found outside the topic suites, one named test each.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use walmdb::{Config, Db};

fn amount(v: &[u8]) -> u64 {
    u64::from_le_bytes(v.try_into().expect("8-byte balance"))
}

/// Found by the quickstart: `publish` queued a commit for the applier before raising the
/// visible LSN, so a snapshot could begin with LMDB already holding a commit its visible LSN
/// did not cover, and see that transaction only in part (a transfer's credit without its
/// debit).
#[test]
fn a_snapshot_never_sees_part_of_a_transaction_the_applier_is_applying() {
    const WRITERS: u64 = 16;
    const ACCOUNTS: u64 = 32;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), Config::default().update_attempts(1000)).unwrap();
    let mut setup = db.write().unwrap();
    for i in 0..ACCOUNTS {
        setup
            .put("acct", &i.to_be_bytes(), &100u64.to_le_bytes())
            .unwrap();
    }
    setup.commit().unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut checked = 0u64;
                    while !done.load(Ordering::Acquire) || checked == 0 {
                        let txn = db.read().unwrap();
                        let sum: u64 = txn
                            .range("acct", ..)
                            .unwrap()
                            .map(|e| amount(e.unwrap().1))
                            .sum();
                        assert_eq!(sum, 100 * ACCOUNTS, "a snapshot saw part of a transfer");
                        checked += 1;
                    }
                    checked
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let db = &db;
                s.spawn(move || {
                    // Transfers between random accounts; conflicting ones are run again.
                    let mut seed = (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    for _ in 0..300u64 {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let (from, to) = (seed % ACCOUNTS, (seed >> 32) % ACCOUNTS);
                        if from == to {
                            continue;
                        }
                        let (from, to) = (from.to_be_bytes(), to.to_be_bytes());
                        db.update(|txn| {
                            let a = amount(txn.get("acct", &from)?.unwrap());
                            let b = amount(txn.get("acct", &to)?.unwrap());
                            let moved = a.min(7);
                            txn.put("acct", &from, &(a - moved).to_le_bytes())?;
                            txn.put("acct", &to, &(b + moved).to_le_bytes())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    db.close().unwrap();
}

/// A commit the sequencer rejects (a conflict) is answered only once the writes admitted
/// before it in its group are published, so a retry's new snapshot sees the write it met.
/// Found by the quickstart under CPU load: rejections answered during admission retried
/// before the winner was visible, met it again, and ran out of `update_attempts`.
#[test]
fn a_rejected_commit_is_answered_after_its_group_is_published() {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;
    use walmdb::{Durability, FsRef, Sequencer, SimFs, Wal, WalConfig};

    struct SlowPublish {
        open: Arc<AtomicBool>,
        published: Arc<parking_lot::Mutex<Vec<u64>>>,
    }
    impl Sequencer for SlowPublish {
        type Ticket = u64;
        fn admit(&mut self, ticket: &mut u64, _lsn: u64) -> walmdb::Result<()> {
            if *ticket == 1 {
                return Err(walmdb::Error::InvalidConfig("rejected".into()));
            }
            Ok(())
        }
        fn publish(&mut self, lsn: u64, _ticket: u64) {
            while !self.open.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.published.lock().push(lsn);
        }
    }

    let open = Arc::new(AtomicBool::new(false));
    let published = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let fs: FsRef = Arc::new(SimFs::new());
    let wal = Wal::open_with(
        fs,
        Path::new("/db/wal"),
        WalConfig::default(),
        None,
        SlowPublish {
            open: open.clone(),
            published: published.clone(),
        },
    )
    .unwrap();
    // One group of both: the first request holds it open until the second arrives.
    let both = Some(Durability::GroupCommit {
        max_wait: Duration::from_secs(5),
        max_batch: 2,
    });
    let winner = wal.submit(common::rec(0, 100), 0, both).unwrap();
    let loser = wal.submit(common::rec(1, 100), 1, both).unwrap();
    let opener = {
        let open = open.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            open.store(true, Ordering::SeqCst);
        })
    };
    assert!(loser.wait().is_err());
    assert_eq!(
        *published.lock(),
        vec![1],
        "the rejection came before the admitted write of its group was visible"
    );
    assert_eq!(winner.wait().unwrap(), 1);
    opener.join().unwrap();
}

/// Found by the `record_decode` fuzz target: a frame whose CRC is right but whose first LSN is
/// so large that its last record's LSN overflows made `decode_frame` (and `last_lsn`) panic
/// on the addition. Such a frame is implausible and refused with an error.
#[test]
fn a_frame_whose_lsns_overflow_is_refused_not_a_panic() {
    use walmdb::internals::record::{decode_frame, FrameBuilder, FrameHeader, FRAME_HEADER_LEN};
    let mut fb = FrameBuilder::new();
    fb.push(&common::rec(1, 10));
    fb.push(&common::rec(2, 10));
    let mut frame = Vec::new();
    fb.finish(&mut frame, 0x5eed, u64::MAX, 0, None);
    let header = FrameHeader::parse(frame[..FRAME_HEADER_LEN].try_into().unwrap());
    assert_eq!(header.first_lsn, u64::MAX);
    assert!(!header.is_plausible(0x5eed, frame.len()));
    assert!(decode_frame(&header, &frame).is_err());
}

/// Found by the `segment_recovery` fuzz target: a segment header with a valid CRC but a first
/// LSN of 0 (which no writer produces) underflowed the scan's last LSN; in release builds
/// recovery then took the whole segment for a torn tail and zeroed its valid frames. Such a
/// header, or one with an impossible size, is damage: the open refuses and changes nothing.
#[test]
fn a_segment_header_with_impossible_values_is_refused_and_nothing_is_cut() {
    use common::*;
    let records: Vec<_> = (1..=5).map(|i| rec(i, 100)).collect();
    let image = snapshot(&build_log(cfg(), &records));
    for (what, first_lsn, segment_bytes) in [
        ("first LSN 0", 0, None),
        ("a first LSN no log reaches", u64::MAX - 2, None),
        ("a segment size below 64 KiB", 1, Some(1u64)),
        ("a segment size past the format's limit", 1, Some(u64::MAX)),
    ] {
        let mut img = image.clone();
        let seg = file_mut(&mut img, &seg_name(1));
        if let Some(bytes) = segment_bytes {
            seg[32..40].copy_from_slice(&bytes.to_le_bytes());
        }
        rewrite_seg_header(seg, 1, first_lsn);
        let damaged = file(&img, &seg_name(1)).clone();
        let fs = restore(&img);
        let r = open(&fs, cfg());
        assert!(
            matches!(r, Err(walmdb::Error::Corruption { .. })),
            "{what}: opened as {:?}",
            r.map(|w| w.recovery_report().clone())
        );
        assert_eq!(
            fs.read_file(&seg_path(1)).as_ref(),
            Some(&damaged),
            "{what}: the refused open changed the segment"
        );
    }
}

/// Found by the engine's power-loss tier (`tests/power_loss.rs`): an open that crashed while
/// creating the log could leave the log directory's entry, or its first segment's name,
/// written but not yet made durable by a directory fsync. The next open found them, wrote
/// and synced commits into that segment without syncing the directories, and a power loss
/// then took the segment's name (or the whole directory) with every acknowledged commit in
/// it. Every open now makes the log's directory entries durable before writing.
#[test]
fn commits_after_a_crashed_log_creation_survive_a_later_power_loss() {
    use common::*;
    let records: Vec<_> = (1..=6).map(|i| rec(i, 300)).collect();
    // Every operation of a first open, crashed after it.
    let first_open_ops = {
        let fs = walmdb::SimFs::new();
        drop(open(&fs, cfg()).unwrap());
        fs.op_count()
    };
    for k in 0..=first_open_ops {
        let fs = walmdb::SimFs::new();
        fs.crash_after_ops(k);
        if let Ok(wal) = open(&fs, cfg()) {
            drop(wal);
        }
        // The process died; the next one opens what it left and commits durably.
        let fs = fs.keep_all_pending();
        let wal = open(&fs, cfg()).unwrap_or_else(|e| panic!("crash after op {k}: reopen: {e:?}"));
        let lsns = commit_all(&wal, &records);
        drop(wal);
        for seed in 0..4 {
            let after = fs.crash(seed, walmdb::CrashOptions::default());
            let wal = open(&after, cfg())
                .unwrap_or_else(|e| panic!("crash after op {k}, power loss {seed}: {e:?}"));
            assert_records(
                &read_all(&wal),
                &records,
                lsns[0],
                &format!("crash after op {k} of the log's creation, then power loss {seed}"),
            );
        }
    }
}

/// Found by the engine power-loss tier with a small overlay (and reported from a bulk load):
/// a transaction that had read kept its snapshot registered while its commit waited for
/// room in the overlay, and that snapshot held back the eviction that makes the room, so the
/// commit waited its whole `backlog_wait` and failed with `ApplyBacklog`. A committing
/// transaction now holds back conflict pruning only.
#[test]
fn a_commit_waiting_for_room_does_not_hold_back_the_eviction_it_waits_for() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 << 10;
    let cfg = Config::default()
        .wal(walmdb::WalConfig {
            max_record_bytes: 32 << 10,
            ..walmdb::WalConfig::default()
        })
        .overlay_max_bytes(limit)
        .backlog_wait(Duration::from_secs(5));
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let mut reader = db.write().unwrap();
    // A read: the transaction's snapshot is registered now, at LMDB's state before the fill.
    assert_eq!(reader.get("t", b"k").unwrap(), None);
    // Blind commits fill the overlay past its bound; the applier applies them, but the
    // snapshot above keeps them in the overlay.
    let mut n = 0u32;
    while db.metrics().overlay_bytes <= limit {
        let mut t = db.write().unwrap();
        t.put("t", &n.to_be_bytes(), &[1u8; 8 << 10]).unwrap();
        let lsn = t.commit().unwrap();
        db.wait_applied(lsn).unwrap();
        n += 1;
    }
    reader.put("t", b"k", b"v").unwrap();
    let started = std::time::Instant::now();
    reader
        .commit()
        .unwrap_or_else(|e| panic!("after {:?}: {e:?}", started.elapsed()));
    assert!(db.metrics().overlay_bytes <= limit);
    assert_eq!(db.read().unwrap().get("t", b"k").unwrap(), Some(&b"v"[..]));
}

/// Found by the engine power-loss tier: when the applier failed for good (here: the log sync
/// it needs before applying non-durable commits fails), commits waiting for room in the
/// overlay went on waiting for room nobody would free, then failed with `ApplyBacklog`
/// after the whole `backlog_wait`. They now get the engine's refusal at once.
#[test]
fn a_commit_waiting_for_room_gets_the_refusal_when_the_applier_fails() {
    use std::time::{Duration, Instant};
    use walmdb::{Durability, Error, FaultKind, OpKind, SimFs};
    let dir = tempfile::tempdir().unwrap();
    let fs = SimFs::new();
    let limit = 64 << 10;
    let hour = Duration::from_secs(3600);
    let cfg = Config::default()
        .wal(walmdb::WalConfig {
            max_record_bytes: 32 << 10,
            ..walmdb::WalConfig::default()
        })
        .overlay_max_bytes(limit)
        .apply_interval(hour)
        .apply_max_ops(1 << 20)
        .backlog_wait(Duration::from_secs(30));
    let db = Db::open_with_fs(dir.path(), cfg, std::sync::Arc::new(fs.clone())).unwrap();
    let commit = |n: u32| {
        let mut t = db.write()?;
        t.put("t", &n.to_be_bytes(), &[1u8; 8 << 10])?;
        t.commit_with(Durability::None)
    };
    // The applier waits (an hour, or a million operations): the overlay fills.
    let mut n = 0;
    while db.metrics().overlay_bytes <= limit {
        commit(n).unwrap();
        n += 1;
    }
    fs.fail_always(OpKind::SyncData, FaultKind::Eio);
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            let started = Instant::now();
            (commit(n), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        // Asked to apply, the applier syncs the log first; the sync fails for good.
        let visible = db.stats().visible_lsn;
        assert!(matches!(
            db.wait_applied(visible),
            Err(Error::Poisoned { .. })
        ));
        let (result, waited) = waiting.join().unwrap();
        assert!(
            matches!(result, Err(Error::Poisoned { .. })),
            "{result:?} after {waited:?}"
        );
        assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    });
}

/// Issue 21's hang: a scrub's snapshot pinned overlay eviction though a scrub reads only
/// LMDB, so with the overlay full every commit waited for room until the (throttled) scrub
/// ended, at no CPU. Here the scrub stays inside its walk until the commits are done: with
/// the pin they fail with `ApplyBacklog` after `backlog_wait`.
#[test]
fn a_scrub_in_progress_does_not_hold_back_the_room_commits_wait_for() {
    use std::sync::mpsc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        overlay_max_bytes: 256 << 10,
        backlog_wait: Duration::from_secs(20),
        wal: walmdb::WalConfig {
            max_record_bytes: 64 << 10,
            ..walmdb::WalConfig::default()
        },
        ..Config::default()
    };
    let db = Db::open_with(dir.path(), cfg).unwrap();
    db.update(|txn| {
        // More than the 4,096 entries between two progress calls.
        for i in 0..10_000u32 {
            txn.put("t", &i.to_be_bytes(), &[7; 100])?;
        }
        Ok(())
    })
    .unwrap();
    db.checkpoint().unwrap();
    let (inside_tx, inside_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let db = &db;
        let scrub = s.spawn(move || {
            let mut first = true;
            db.scrub_with(None, |_| {
                if std::mem::take(&mut first) {
                    inside_tx.send(()).unwrap();
                    // Held inside the walk until the commits are done (or a minute).
                    let _ = done_rx.recv_timeout(Duration::from_secs(60));
                }
            })
        });
        inside_rx.recv().unwrap();
        // Ten times the overlay's room, 4 KiB at a time.
        for i in 0..640u32 {
            db.update(|txn| txn.put("u", &i.to_be_bytes(), &[i as u8; 4096]))
                .unwrap_or_else(|e| panic!("commit {i} behind a scrub: {e}"));
        }
        done_tx.send(()).unwrap();
        let report = scrub.join().unwrap().unwrap();
        assert!(report.is_healthy(), "{report:?}");
    });
    assert_eq!(
        db.read()
            .unwrap()
            .get("u", &639u32.to_be_bytes())
            .unwrap()
            .unwrap()[0],
        127
    );
    db.close().unwrap();
}

/// Found by `engine_ops` (CI run of fb6a133; `fuzz/regressions/engine_ops-lone-txn-end`):
/// with `max_record_bytes` 64 a commit just over it was written as a lone `TxnEnd` that
/// replay skipped, so after a power loss the reopen refused with `Inconsistent` ("replay
/// ended at LSN 0 but the log holds LSN 1") and the acknowledged commit was unreadable
/// (see `a_transaction_written_as_one_piece_is_read_back_whole` in `tests/split_txn.rs`).
#[test]
fn a_commit_written_as_one_piece_survives_a_power_loss() {
    use std::sync::Arc;
    use walmdb::{CrashOptions, Durability, FsRef, SimFs};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.wal.segment_bytes = 64 * 1024;
    cfg.wal.max_record_bytes = 64;
    let fs = SimFs::new();
    let open =
        |fs: &SimFs| Db::open_with_fs(dir.path(), cfg.clone(), Arc::new(fs.clone()) as FsRef);
    let db = open(&fs).unwrap();
    let mut w = db.write().unwrap();
    w.put("a", b"k02", &[3u8; 33]).unwrap();
    w.commit_with(Durability::EveryWrite).unwrap();
    fs.crash_after_ops(fs.op_count());
    db.simulate_crash();
    let fs = fs.crash(255, CrashOptions::default());
    let db = open(&fs).unwrap();
    let r = db.read().unwrap();
    assert_eq!(r.get("a", b"k02").unwrap(), Some(&[3u8; 33][..]));
}
