//! Reliability tier T3 (`../shared/reliability.md`): named crash points. Each `fail` point
//! in the engine aborts a child process on its n-th hit while the child's writers commit (the
//! workload and oracle of `tests/common/crash.rs`); the parent recovers a copy of the
//! directory, checks it, and starts the next child on the original, whose open recovers the
//! crash (and may itself abort at a recovery point).
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
