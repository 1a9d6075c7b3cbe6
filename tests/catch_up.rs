//! Restart in seconds: open replays the log into the overlay and returns; the applier
//! catches up in the background. Replay beyond `overlay_max_bytes` is applied first, and a
//! crash during the catch-up (or right after open) loses nothing.

#[path = "common/engine.rs"]
mod engine_common;

use std::time::Duration;

use engine_common::*;
use walmdb::{Config, Db, Lsn};

/// Keeps every commit in the log: nothing is applied or checkpointed while it lives.
fn held_back() -> Config {
    let hour = Duration::from_secs(3600);
    cfg()
        .apply_interval(hour)
        .apply_max_ops(usize::MAX / 2)
        .overlay_max_bytes(usize::MAX / 2)
        .checkpoint_interval(hour)
        .checkpoint_bytes(u64::MAX / 2)
        .max_replay_bytes(u64::MAX / 2)
}

/// Commits `txns` transactions of 20 puts (and a delete) with 200-byte values over 500 keys
/// of tables `a` and `b`, recording them in `log`.
fn write(db: &Db, log: &CommitLog, seed: u64, txns: usize) -> Lsn {
    let mut rng = Rng::new(seed);
    let mut last = 0;
    for _ in 0..txns {
        let mut ops: Vec<Op> = (0..20)
            .map(|_| {
                let table = if rng.percent(50) { "a" } else { "b" };
                Op::put(table, &key(rng.below(500)), &rng.bytes(200))
            })
            .collect();
        ops.push(Op::delete("a", &key(rng.below(500))));
        let mut t = db.write().unwrap();
        for op in &ops {
            op.run(&mut t).unwrap();
        }
        last = t.commit().unwrap();
        log.record(last, ops);
    }
    last
}

/// A database whose last `txns` commits are all in the log and none in LMDB.
fn crashed_with_unapplied(dir: &std::path::Path, log: &CommitLog, txns: usize) -> Lsn {
    let db = Db::open_with(dir, held_back()).unwrap();
    let last = write(&db, log, 7, txns);
    assert_eq!(db.stats().applied_lsn, 0, "the applier was held back");
    db.simulate_crash();
    last
}

#[test]
fn open_returns_with_the_replay_in_the_overlay_and_the_applier_catches_up() {
    let dir = tempdir();
    let log = CommitLog::default();
    let last = crashed_with_unapplied(dir.path(), &log, 300);

    // The applier stays idle after open until 1 hour passed or 1M operations queued, so
    // what open left to it is still in the overlay when it is checked.
    let idle = cfg()
        .apply_interval(Duration::from_secs(3600))
        .apply_max_ops(1 << 20);
    let db = Db::open_with(dir.path(), idle).unwrap();
    let rep = db.recovery_report().clone();
    assert_eq!(rep.last_lsn, last);
    assert_eq!(rep.replayed_records, last);
    assert_eq!(rep.applied_records, 0, "all of it fits in the overlay");
    assert_eq!(rep.overlay_records, last);
    assert_eq!(rep.applied_lsn, 0, "open applied nothing");
    let m = db.metrics();
    assert_eq!(
        m.overlay_bytes as u64, rep.overlay_bytes,
        "the overlay holds the replay"
    );
    assert_eq!(db.stats().applied_lsn, 0);
    assert_eq!(db.catch_up(), None, "the applier has not caught up yet");
    assert_eq!(dump(&db), log.model(), "every commit is visible at once");

    // Commits go on meanwhile; the applier applies everything once asked.
    let after = write(&db, &log, 8, 5);
    db.wait_applied(after).unwrap();
    let took = db.catch_up().expect("caught up once LMDB holds the replay");
    assert!(took >= rep.duration, "caught up after open returned");
    assert_eq!(dump(&db), log.model());
    db.close().unwrap();

    let db = Db::open_with(dir.path(), cfg()).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert_eq!(db.catch_up(), Some(db.recovery_report().duration));
    assert_eq!(dump(&db), log.model());
    db.close().unwrap();
}

#[test]
fn a_replay_over_the_overlay_bound_applies_the_oldest_first_and_keeps_the_overlay_within_it() {
    let dir = tempdir();
    let log = CommitLog::default();
    let last = crashed_with_unapplied(dir.path(), &log, 400);

    let bound = 256 << 10;
    let small = cfg()
        .overlay_max_bytes(bound)
        .apply_interval(Duration::from_secs(3600))
        .apply_max_ops(1 << 20);
    let db = Db::open_with(dir.path(), small).unwrap();
    let rep = db.recovery_report().clone();
    assert_eq!(rep.last_lsn, last);
    assert!(rep.applied_records > 0, "{rep:?}");
    assert!(rep.overlay_records > 0, "{rep:?}");
    assert_eq!(rep.applied_records + rep.overlay_records, last);
    assert_eq!(
        rep.applied_lsn, rep.applied_records,
        "the oldest went to LMDB"
    );
    assert!(rep.overlay_bytes <= bound as u64, "{rep:?}");
    // The newest that fit: one more record would not have.
    let per_record = rep.overlay_bytes / rep.overlay_records;
    assert!(
        rep.overlay_bytes + 2 * per_record > bound as u64,
        "the overlay took less than fits: {rep:?}"
    );
    assert_eq!(db.stats().applied_lsn, rep.applied_lsn);
    assert!(db.metrics().overlay_bytes <= bound);
    assert_eq!(dump(&db), log.model());
    db.wait_applied(last).unwrap();
    assert!(db.catch_up().is_some());
    db.close().unwrap();
}

#[test]
fn a_crash_right_after_open_and_crashes_during_the_catch_up_lose_nothing() {
    let dir = tempdir();
    let log = CommitLog::default();
    let mut last = crashed_with_unapplied(dir.path(), &log, 300);

    // A second crash right after open returns, with everything still in the overlay.
    let idle = cfg()
        .apply_interval(Duration::from_secs(3600))
        .apply_max_ops(1 << 20);
    let db = Db::open_with(dir.path(), idle).unwrap();
    assert_eq!(db.recovery_report().overlay_records, last);
    db.simulate_crash();

    // Crashes while the applier catches up in small batches, at different moments, with
    // commits in between; each open sees everything acknowledged.
    let slow = cfg()
        .apply_max_ops(25)
        .apply_interval(Duration::from_millis(1));
    let mut caught_up_mid_way = 0;
    for round in 0..6u64 {
        let db = Db::open_with(dir.path(), slow.clone()).unwrap();
        let rep = db.recovery_report().clone();
        assert_eq!(rep.last_lsn, last, "round {round}");
        assert_eq!(dump(&db), log.model(), "round {round}: after open");
        std::thread::sleep(Duration::from_millis(round * 3));
        last = write(&db, &log, 100 + round, 3);
        if db.stats().applied_lsn > rep.applied_lsn {
            caught_up_mid_way += 1;
        }
        db.simulate_crash();
    }
    assert!(
        caught_up_mid_way > 0,
        "no crash landed after the applier had started catching up"
    );
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    assert_eq!(dump(&db), log.model(), "after the last crash");
    db.wait_applied(last).unwrap();
    assert_eq!(dump(&db), log.model(), "after the catch-up");
    db.close().unwrap();
}
