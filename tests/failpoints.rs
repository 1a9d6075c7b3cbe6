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

#[path = "common/crash.rs"]
mod crash;
#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crash::*;

/// Every crash point in the engine, in the order a commit meets them.
const POINTS: &[&str] = &[
    "group-written-before-sync",
    "group-synced-before-answer",
    "segment-renamed-before-dir-sync",
    "applied-in-lmdb-before-published",
    "checkpoint-lmdb-synced-before-retirement",
    "segment-retired-before-dir-sync",
    "replay-batch-applied",
];

/// The tests of this binary run one at a time: a point configured in this process (the
/// stalled applier's) would also stop the databases the crash-point test recovers here.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The hits to abort at, one child each. A recovery point is hit a few times per open at
/// most, so there every child aborts at its first hit: the crashes chain inside replay.
fn hits(point: &str) -> &'static [u64] {
    if point.starts_with("replay") {
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
    for point in POINTS {
        let root = engine_common::tempdir();
        let dir = root.path().join("db");
        let mut acks: BTreeMap<(u64, u64), Ack> = BTreeMap::new();
        let mut last = vec![0u64; WRITERS as usize];
        let (mut aborted, mut acked) = (0, 0);
        for &n in hits(point) {
            let env = [("WALMDB_FAILPOINT", format!("{point}:{n}"))];
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
/// `Error::ApplyBacklog` after the backpressure wait; the overlay never passes its bound by
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
