//! Reliability tier T3 (`../shared/reliability.md`): named crash points. Each `fail` point
//! in the engine aborts a child process on its n-th hit while the child's writers commit (the
//! workload and oracle of `tests/common/crash.rs`); the parent recovers a copy of the
//! directory, checks it, and starts the next child on the original, whose open recovers the
//! crash (and may itself abort at a recovery point).
//!
//! Also tier T6's stalled applier, which pauses the applier at one of these points.
//!
//! Needs the feature: `cargo test --features failpoints --test failpoints -- --nocapture`.

#![cfg(feature = "failpoints")]

mod common;
#[path = "common/crash.rs"]
mod crash;
#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crash::*;

/// What a child needs so that it reaches a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Writing reaches it.
    Write,
    /// Closing reaches it: the writers stop after a few commits and the child closes.
    Close,
    /// Opening reaches it when the log has a torn tail: one is added before each child.
    TornTail,
    /// As `TornTail`, with an empty segment after the torn one, which recovery removes.
    TornTailBeforeEmptySegment,
    /// Opening when the log holds more than the overlay: the children write with the applier
    /// held back and a small overlay, so the next open applies the oldest records first.
    ReplayOutgrowsOverlay,
}

/// Every crash point in the engine, in the order a commit meets them, and how to reach it.
const POINTS: &[(&str, Reach)] = &[
    ("group-written-before-sync", Reach::Write),
    ("group-synced-before-answer", Reach::Write),
    ("rotation-old-segment-synced", Reach::Write),
    ("segment-header-synced-before-rename", Reach::Write),
    ("segment-renamed-before-dir-sync", Reach::Write),
    ("spare-zeroed-before-sync", Reach::Write),
    ("applied-in-lmdb-before-published", Reach::Write),
    ("checkpoint-lmdb-synced-before-retirement", Reach::Write),
    ("segment-retired-before-dir-sync", Reach::Write),
    ("close-applied-before-checkpoint", Reach::Close),
    ("close-checkpointed-before-lmdb-close", Reach::Close),
    (
        "recovery-later-segments-removed",
        Reach::TornTailBeforeEmptySegment,
    ),
    ("recovery-tail-zeroed-before-sync", Reach::TornTail),
    ("recovery-obsolete-retired-before-dir-sync", Reach::Write),
    ("replay-batch-applied", Reach::ReplayOutgrowsOverlay),
];

/// Gives the log in `db_dir` a torn tail that costs no record: after the last valid frame
/// of the last segment with frames, a frame with the segment's salt and the next LSN whose
/// body fails its CRC (as a write cut by a crash leaves it). With `empty_next`, an empty
/// segment follows it, starting after the torn record (a rotation that wrote nothing yet),
/// which recovery removes. (One starting at the torn record's own LSN would continue the
/// segment before it, whose torn bytes would then be stale, not a tail to cut.)
fn tear_tail(db_dir: &Path, empty_next: bool) {
    use walmdb::internals::record::FrameBuilder;
    if !db_dir.join("wal").exists() {
        return;
    }
    let segments = engine_common::wal_segments(db_dir);
    let Some(last) = segments
        .iter()
        .rev()
        .find(|p| {
            let data = std::fs::read(p).unwrap();
            engine_common::frames_end(&data).1 > engine_common::SEGMENT_HEADER
        })
        .cloned()
    else {
        return;
    };
    let mut data = std::fs::read(&last).unwrap();
    let (salt, end, next_lsn) = engine_common::frames_end(&data);
    let mut fb = FrameBuilder::new();
    fb.push(&common::rec(next_lsn, 200));
    let mut frame = Vec::new();
    fb.finish(&mut frame, salt, next_lsn, next_lsn - 1, None);
    if end + frame.len() > data.len() {
        return;
    }
    frame[engine_common::FRAME_HEADER + 7] ^= 0x40;
    data[end..end + frame.len()].copy_from_slice(&frame);
    std::fs::write(&last, &data).unwrap();
    let segment_no = common::parse_seg_header(&data).unwrap().segment_no;
    let next = db_dir.join("wal").join(common::seg_name(segment_no + 1));
    if empty_next && !next.exists() {
        let mut empty = vec![0u8; data.len()];
        empty[..engine_common::SEGMENT_HEADER]
            .copy_from_slice(&data[..engine_common::SEGMENT_HEADER]);
        common::rewrite_seg_header(&mut empty, segment_no + 1, next_lsn + 1);
        std::fs::write(&next, &empty).unwrap();
    }
}

/// The tests of this binary run one at a time: a point configured in this process (the
/// stalled applier's) would also stop the databases the crash-point test recovers here.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The hits to abort at, one child each. A recovery or close point is hit a few times per
/// process at most, so there every child aborts at its first hit: the crashes chain.
fn hits(point: &str) -> &'static [u64] {
    if ["replay", "recovery", "close"]
        .iter()
        .any(|p| point.starts_with(p))
    {
        &[1, 1, 1, 1, 1, 1]
    } else {
        &[1, 2, 3, 5, 8, 13]
    }
}

#[test]
#[ignore = "the child process of every_crash_point_loses_nothing_acknowledged"]
fn failpoint_child() {
    if let Ok(spec) = std::env::var("WALMDB_FAILPOINT") {
        let (name, n) = spec.split_once(':').unwrap();
        let n: u64 = n.parse().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        fail::cfg_callback(name, move || {
            if hits.fetch_add(1, Ordering::SeqCst) + 1 == n {
                std::process::abort();
            }
        })
        .unwrap();
    }
    child_writers();
}

#[test]
fn every_crash_point_loses_nothing_acknowledged() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = 0x6661_696c;
    let mut report = Vec::new();
    for &(point, reach) in POINTS {
        let root = engine_common::tempdir();
        let dir = root.path().join("db");
        let mut acks: BTreeMap<(u64, u64), Ack> = BTreeMap::new();
        let mut last = vec![0u64; WRITERS as usize];
        let (mut aborted, mut acked) = (0, 0);
        for &n in hits(point) {
            let mut env = vec![("WALMDB_FAILPOINT", format!("{point}:{n}"))];
            match reach {
                Reach::Write => {}
                Reach::Close => env.push(("WALMDB_CRASH_CLOSE_AFTER", "15".into())),
                Reach::TornTail => tear_tail(&dir, false),
                Reach::TornTailBeforeEmptySegment => tear_tail(&dir, true),
                Reach::ReplayOutgrowsOverlay => {
                    env.push(("WALMDB_CRASH_OUTGROW_OVERLAY", "1".into()))
                }
            }
            let child = spawn_child("failpoint_child", &dir, seed, &last, &env);
            // A point not hit n times within the window: the child is killed instead.
            let (got, status) = collect_acks(child, Some(Duration::from_secs(2)));
            if status.signal() == Some(6) {
                aborted += 1;
            }
            acked += got.len();
            for a in got {
                acks.insert((a.w, a.seq), a);
            }
            match recover_and_check(&dir, &root.path().join("check"), seed, &mut acks) {
                Ok(recovered) => last = recovered,
                Err(why) => panic!("crash point {point}, hit {n} (seed {seed}): {why}"),
            }
        }
        // Each point is on a live path: at least its first hit aborted the child.
        assert!(aborted > 0, "crash point {point} was never reached");
        report.push(format!(
            "{point}: {aborted}/{} aborted, {acked} acknowledged",
            hits(point).len()
        ));
    }
    eprintln!("crash points (seed {seed}):\n  {}", report.join("\n  "));
}

/// Tier T6: a stalled applier. With the applier paused after an LMDB commit (before it
/// releases the overlay), commits fill the overlay up to `overlay_max_bytes` and then get
/// `Error::ApplyBacklog` after `backlog_wait`; the overlay never passes its bound by
/// more than one commit; reads see every acknowledged commit; once the applier resumes,
/// commits succeed again, and a reopen holds everything acknowledged.
#[test]
fn a_stalled_applier_keeps_the_overlay_bounded_and_loses_nothing() {
    use walmdb::{Config, Db, Error, WalConfig};
    const LIMIT: usize = 256 << 10;
    const VALUE: usize = 1024;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scenario = fail::FailScenario::setup();
    let dir = engine_common::tempdir();
    let cfg = || {
        Config::default()
            .overlay_max_bytes(LIMIT)
            .backlog_wait(Duration::from_millis(50))
            .apply_max_ops(8)
            .apply_interval(Duration::from_millis(5))
            .wal(WalConfig {
                backpressure_wait: Duration::from_millis(50),
                max_record_bytes: 64 << 10,
                ..WalConfig::default()
            })
    };
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    let key = |i: u64| format!("k{i:06}").into_bytes();
    let value = |i: u64| vec![(i % 251) as u8; VALUE];
    let put = |db: &Db, i: u64| {
        let mut txn = db.write().unwrap();
        txn.put("t", &key(i), &value(i)).unwrap();
        txn.commit()
    };
    put(&db, 0).unwrap();
    db.wait_applied(db.stats().visible_lsn).unwrap();
    fail::cfg("applied-in-lmdb-before-published", "pause").unwrap();
    let mut acked = vec![0];
    let refused = loop {
        let i = acked.len() as u64;
        match put(&db, i) {
            Ok(_) => acked.push(i),
            Err(e) => break e,
        }
        let held = db.stats().unapplied_bytes;
        assert!(
            held <= LIMIT + 2 * VALUE,
            "overlay {held} bytes over {LIMIT}"
        );
        assert!(i < 10 * (LIMIT / VALUE) as u64, "the overlay never filled");
    };
    assert!(
        matches!(refused, Error::ApplyBacklog { .. }),
        "a full overlay answered {refused:?}"
    );
    assert!(
        acked.len() > LIMIT / VALUE / 2,
        "refused too early: {}",
        acked.len()
    );
    {
        let txn = db.read().unwrap();
        for &i in &acked {
            assert_eq!(txn.get("t", &key(i)).unwrap(), Some(&value(i)[..]));
        }
    }
    fail::remove("applied-in-lmdb-before-published");
    let next = acked.len() as u64;
    put(&db, next).expect("commits succeed again once the applier resumes");
    acked.push(next);
    db.close().unwrap();
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    let txn = db.read().unwrap();
    for &i in &acked {
        assert_eq!(
            txn.get("t", &key(i)).unwrap(),
            Some(&value(i)[..]),
            "{i} lost"
        );
    }
    drop(txn);
    drop(db);
    scenario.teardown();
}

/// Regression: the applier, syncing the log for a batch of commits written at `None`, met
/// the log `close` had just closed (its flusher's final sync still to come) and failed the
/// engine ("the log could not be synced for the applier: the database is closed"), so
/// `close` answered `Poisoned`. Now it waits for the flusher's final sync.
#[test]
fn an_applier_syncing_while_close_closes_the_log_waits_for_the_final_sync() {
    use walmdb::{Db, Durability};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scenario = fail::FailScenario::setup();
    let dir = engine_common::tempdir();
    let db = Db::open(dir.path()).unwrap();
    fail::cfg("applier-batch-taken", "sleep(150)").unwrap();
    fail::cfg("flusher-before-final-sync", "sleep(400)").unwrap();
    let mut txn = db.write().unwrap();
    txn.put("t", b"k", b"v").unwrap();
    txn.commit_with(Durability::None).unwrap();
    // The applier holds the batch (in its 150 ms sleep) when close closes the log.
    std::thread::sleep(Duration::from_millis(20));
    let closed = db.close();
    fail::remove("applier-batch-taken");
    fail::remove("flusher-before-final-sync");
    assert!(closed.is_ok(), "close answered {closed:?}");
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert_eq!(db.read().unwrap().get("t", b"k").unwrap(), Some(&b"v"[..]));
    drop(db);
    scenario.teardown();
}
