//! Issue 21's hang, hunted: many threads fill a small overlay (and a small commit queue)
//! while readers hold snapshots, with long waits for room and queue space, so a lost
//! wake-up between the applier and the committers would show as a stall. Every commit must
//! be acknowledged (the waits are long enough that none should be refused) and every thread
//! must keep making progress: a watchdog fails the test, with the engine's state, if no
//! commit lands for `STALL` (a liveness check, not a speed target).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walmdb::{Config, Db, WalConfig};

const WRITERS: usize = 12;
const COMMITS: u64 = 400;
const VALUE: usize = 2048;
const STALL: Duration = Duration::from_secs(60);

fn config() -> Config {
    Config {
        overlay_max_bytes: 256 << 10,
        backlog_wait: Duration::from_secs(120),
        apply_max_ops: 64,
        wal: WalConfig {
            max_record_bytes: 64 << 10,
            queue_capacity: 8,
            queue_max_bytes: 64 << 10,
            backpressure_wait: Duration::from_secs(120),
            ..WalConfig::default()
        },
        ..Config::default()
    }
}

fn run(with_readers: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let landed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..if with_readers { 2 } else { 0 })
        .map(|r| {
            let (db, done) = (db.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let txn = db.read().unwrap();
                    let _ = txn.get("t", format!("w{r}-0").as_bytes()).unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, landed) = (db.clone(), landed.clone());
            std::thread::spawn(move || {
                for i in 0..COMMITS {
                    let key = format!("w{w}-{i}");
                    let mut txn = db.write().unwrap();
                    // Half of them read first, so they hold a snapshot while they commit.
                    if i % 2 == 0 {
                        let _ = txn.get("t", key.as_bytes()).unwrap();
                    }
                    txn.put("t", key.as_bytes(), &vec![w as u8; VALUE]).unwrap();
                    txn.commit()
                        .unwrap_or_else(|e| panic!("writer {w} commit {i}: {e}"));
                    landed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (mut seen, mut since) = (0, Instant::now());
    while landed.load(Ordering::Relaxed) < WRITERS as u64 * COMMITS {
        std::thread::sleep(Duration::from_millis(100));
        let now = landed.load(Ordering::Relaxed);
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
        assert!(
            since.elapsed() < STALL,
            "no commit landed for {STALL:?} at {seen} commits: {:?}",
            db.stats()
        );
        assert!(
            !writers.iter().any(|w| w.is_finished()) || now > 0,
            "a writer ended early"
        );
    }
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    // The test pressed where it means to: commits waited for room and for queue space.
    let m = db.metrics();
    eprintln!(
        "readers {with_readers}: {} waits for room, {} slowed down, {} waits for queue space",
        m.backlog_waits, m.backlog_delays, m.queue_full_waits
    );
    assert!(
        m.backlog_waits + m.backlog_delays > 0,
        "the overlay never filled"
    );
    assert!(m.queue_full_waits > 0, "the queue never filled");
    let txn = db.read().unwrap();
    assert_eq!(txn.count("t").unwrap(), WRITERS as u64 * COMMITS);
    drop(txn);
    db.close().unwrap();
}

#[test]
fn many_committers_fill_a_small_overlay_and_queue_without_a_stall() {
    run(false);
}

#[test]
fn many_committers_fill_a_small_overlay_and_queue_with_readers_open_without_a_stall() {
    run(true);
}
