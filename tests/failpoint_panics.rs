//! Panics injected into the engine (issue 16, defects 2 and 9), through failpoints that
//! every engine in the process hits: so they run in a test binary of their own, one
//! scenario at a time (`fail::FailScenario` serializes them).
//!
//! Needs the feature: `cargo test --features failpoints --test failpoint_panics`.

#![cfg(feature = "failpoints")]

use std::time::Duration;

use walmdb::{Config, Db};

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
    use walmdb::{Error, HealthStatus};
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
