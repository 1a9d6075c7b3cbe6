//! The change feed under load: 16 writer threads commit 1-key transactions (16-byte key,
//! 100-byte value, default GroupCommit durability) for D seconds, once with no subscription
//! and once with one subscription following every commit on a thread of its own. Reports the
//! commit rate of each run (so the cost of feeding a subscriber shows), the subscriber's
//! rate, how far behind it fell (LSNs, sampled every 10 ms) and how long it took to catch up
//! after the writers stopped. Runs alternate (none, one, none, one).
//!
//! ```text
//! cargo bench --bench feed                       # 30 s a run, 2 rounds
//! FEED_BENCH_SECS=120 FEED_BENCH_ROUNDS=1 cargo bench --bench feed
//! cargo bench --bench feed -- --test             # smoke test: 0.5 s, 1 round
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use walmdb::{Config, Db};

#[allow(dead_code)] // this benchmark uses the generator, `value` and the directories
mod common;
use common::{value, Rng};

const WRITERS: usize = 16;
const TABLE: &str = "feed";

struct Run {
    subscribed: bool,
    commits_per_sec: f64,
    followed_per_sec: f64,
    max_lag: u64,
    catch_up: Duration,
}

fn run(root: &std::path::Path, subscribed: bool, secs: f64) -> Run {
    let dir = common::tempdir(root, "feed", if subscribed { "one" } else { "none" });
    let cfg = Config::default()
        .map_size(2 << 30)
        .max_map_size(48 << 30)
        .table(TABLE);
    let db = Db::open_with(dir.path(), cfg).expect("open walmdb");
    let from = db.stats().visible_lsn + 1;
    let stop = AtomicBool::new(false);
    let followed = AtomicU64::new(0);
    let followed_through = AtomicU64::new(0);
    let started = Instant::now();
    let (commits, elapsed, max_lag, catch_up) = thread::scope(|s| {
        let follower = subscribed.then(|| {
            s.spawn(|| {
                let mut feed = db.subscribe(from).expect("subscribe");
                let mut n = 0u64;
                loop {
                    match feed
                        .next_timeout(Duration::from_millis(50))
                        .expect("the feed")
                    {
                        Some(change) => {
                            n += 1;
                            followed.store(n, Ordering::Relaxed);
                            followed_through.store(change.lsn, Ordering::Relaxed);
                        }
                        None if stop.load(Ordering::Relaxed) => return,
                        None => {}
                    }
                }
            })
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (db, stop) = (&db, &stop);
                s.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9 + w as u64);
                    let mut n = 0u64;
                    let mut key = [0u8; 16];
                    while !stop.load(Ordering::Relaxed) {
                        rng.fill(&mut key);
                        let mut t = db.write().expect("write");
                        t.put(TABLE, &key, &value(&mut rng)).expect("put");
                        t.commit().expect("commit");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let deadline = started + Duration::from_secs_f64(secs);
        let mut max_lag = 0;
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
            if subscribed {
                let visible = db.stats().visible_lsn;
                let through = followed_through.load(Ordering::Relaxed).max(from - 1);
                max_lag = max_lag.max(visible.saturating_sub(through));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let commits: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
        let elapsed = started.elapsed();
        let last = db.stats().visible_lsn;
        let caught = Instant::now();
        if subscribed {
            while followed_through.load(Ordering::Relaxed) < last {
                thread::sleep(Duration::from_millis(1));
            }
        }
        let catch_up = caught.elapsed();
        if let Some(f) = follower {
            f.join().expect("follower");
        }
        (commits, elapsed, max_lag, catch_up)
    });
    if subscribed {
        assert_eq!(
            followed.load(Ordering::Relaxed),
            commits,
            "the subscription missed or repeated commits"
        );
    }
    db.close().expect("close");
    Run {
        subscribed,
        commits_per_sec: commits as f64 / elapsed.as_secs_f64(),
        followed_per_sec: followed.load(Ordering::Relaxed) as f64
            / (elapsed + catch_up).as_secs_f64(),
        max_lag,
        catch_up,
    }
}

fn main() {
    let test = std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (secs, rounds) = if test {
        (0.5, 1)
    } else {
        (
            env("FEED_BENCH_SECS", 30.0),
            env("FEED_BENCH_ROUNDS", 2.0) as usize,
        )
    };
    let root = common::bench_root();
    println!("# the change feed under load: {WRITERS} writer threads, {secs} s a run\n");
    println!("| subscription | commits/s | followed/s | max lag (LSNs) | catch-up after the writers stop |");
    println!("|---|---:|---:|---:|---:|");
    for _ in 0..rounds {
        for subscribed in [false, true] {
            let r = run(&root, subscribed, secs);
            println!(
                "| {} | {:.0} | {} | {} | {} |",
                if r.subscribed { "one" } else { "none" },
                r.commits_per_sec,
                if r.subscribed {
                    format!("{:.0}", r.followed_per_sec)
                } else {
                    "-".into()
                },
                if r.subscribed {
                    r.max_lag.to_string()
                } else {
                    "-".into()
                },
                if r.subscribed {
                    format!("{:.1} ms", r.catch_up.as_secs_f64() * 1e3)
                } else {
                    "-".into()
                },
            );
        }
    }
}
