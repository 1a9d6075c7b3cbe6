//! Issue 17: the periodic background scrub (`Config::scrub_interval`). The
//! `walmdb-scrubber` thread scrubs on its own, counts its scrubs in the metrics, turns
//! `health()` Unhealthy when it finds damage in LMDB's file, and never holds up `close()`,
//! however slowly it was told to read.

use std::path::Path;
use std::time::{Duration, Instant};

use walmdb::{Config, Db, HealthStatus};

/// A value no other bytes of the file repeat.
const MARKER: &[u8] = b"<<walmdb background scrub marker: 0123456789abcdefghijklmnop>>";

fn scrubbing(interval_ms: u64) -> Config {
    Config::default().scrub_interval(Some(Duration::from_millis(interval_ms)))
}

/// Commits `keys` small entries into table `t` (and `marked` -> `MARKER`) and checkpoints:
/// everything is in LMDB's file.
fn fill(db: &Db, keys: u32, marked: &[u8]) {
    db.update(|txn| {
        for i in 0..keys {
            txn.put("t", format!("key{i:06}").as_bytes(), &i.to_le_bytes())?;
        }
        txn.put("t", marked, MARKER)
    })
    .unwrap();
    db.checkpoint().unwrap();
}

/// Polls `db.metrics()` until `done` holds, for at most 30 s (the machines are noisy).
fn wait_for(db: &Db, what: &str, done: impl Fn(&walmdb::Metrics) -> bool) -> walmdb::Metrics {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = db.metrics();
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {m:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Closes `db` in another thread; fails the test unless it returns within 10 s.
fn close_within_seconds(db: Db) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(db.close());
    });
    let closed = rx.recv_timeout(Duration::from_secs(10));
    assert!(matches!(closed, Ok(Ok(()))), "close: {closed:?}");
}

/// Flips one bit of every copy of `needle` in LMDB's file under the running database, with
/// `pwrite`; returns the copies.
fn flip_in_lmdb(dir: &Path, needle: &[u8]) -> usize {
    use std::os::unix::fs::FileExt;
    let path = dir.join("data").join("data.mdb");
    let image = std::fs::read(&path).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut copies = 0;
    for (at, _) in image
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
    {
        let at = at + needle.len() / 2;
        file.write_all_at(&[image[at] ^ 0x10], at as u64).unwrap();
        copies += 1;
    }
    file.sync_all().unwrap();
    copies
}

#[test]
fn the_background_scrub_runs_on_its_own_and_keeps_the_database_healthy() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open_with(tmp.path().join("db"), scrubbing(50)).unwrap();
    fill(&db, 200, b"marked");
    let before = walmdb::Metrics::default();
    assert_eq!(
        (before.scrubs, before.last_scrub_unix_secs),
        (0, None),
        "nothing before the first"
    );
    let m = wait_for(&db, "three background scrubs", |m| m.scrubs >= 3);
    assert_eq!((m.scrub_findings, m.scrub_failures), (0, 0), "{m:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = m.last_scrub_unix_secs.expect("a time for the last scrub");
    assert!(at <= now && now - at < 600, "last scrub at {at}, now {now}");
    assert!(m.last_scrub_duration.is_some(), "{m:?}");
    // Commits go on beside it.
    for i in 0..20u32 {
        db.update(|txn| txn.put("u", &i.to_be_bytes(), b"v"))
            .unwrap();
    }
    let h = db.health();
    assert_eq!(h.status, HealthStatus::Healthy, "{h:?}");

    let mut registry = prometheus_client::registry::Registry::default();
    db.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let sample = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(sample("walmdb_scrubs_total") >= 3.0);
    assert_eq!(sample("walmdb_scrub_failures_total"), 0.0);
    assert!(sample("walmdb_last_scrub_timestamp_seconds") > 1e9);
    assert!(sample("walmdb_last_scrub_duration_seconds") >= 0.0);
    close_within_seconds(db);
}

#[test]
fn without_an_interval_no_scrub_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db")).unwrap();
    assert_eq!(db.config().scrub_interval, None);
    fill(&db, 10, b"marked");
    std::thread::sleep(Duration::from_millis(200));
    let m = db.metrics();
    assert_eq!((m.scrubs, m.last_scrub_unix_secs), (0, None), "{m:?}");
    assert_eq!(m.last_scrub_duration, None);
    db.close().unwrap();
}

/// A value damaged in LMDB's file under the running database: no call to `Db::scrub`, the
/// background scrub alone finds it and `health()` says so.
#[test]
fn the_background_scrub_alone_finds_a_value_damaged_under_the_running_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = Db::open_with(&dir, scrubbing(50)).unwrap();
    fill(&db, 500, b"marked");
    wait_for(&db, "a clean background scrub", |m| m.scrubs >= 1);
    assert_eq!(db.metrics().scrub_findings, 0);
    assert!(
        flip_in_lmdb(&dir, MARKER) > 0,
        "the value is not in the file"
    );
    let m = wait_for(&db, "a background scrub finding the damage", |m| {
        m.scrub_findings > 0
    });
    assert_eq!(m.scrub_findings, 1, "{m:?}");
    let h = db.health();
    assert_eq!(h.status, HealthStatus::Unhealthy, "{h:?}");
    assert!(
        h.reasons.iter().any(|r| r.1.contains("scrub found")),
        "{h:?}"
    );
    // Findings stand scrub after scrub: nothing repaired the file.
    let seen = m.scrubs;
    let m = wait_for(&db, "another background scrub", |m| m.scrubs > seen);
    assert_eq!(m.scrub_findings, 1, "{m:?}");
    close_within_seconds(db);
}

/// A scrub throttled to 1 byte a second would take days; `close()` ends its pause at once.
#[test]
fn close_returns_promptly_in_the_middle_of_a_heavily_throttled_scrub() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = scrubbing(20).scrub_max_bytes_per_sec(Some(1));
    let db = Db::open_with(tmp.path().join("db"), cfg).unwrap();
    // More entries than the scrub walks between two progress reports (4096), so it pauses.
    fill(&db, 20_000, b"marked");
    let m = wait_for(&db, "a throttled scrub pausing", |m| {
        m.open_snapshots >= 1 && m.oldest_snapshot_age >= Duration::from_millis(300)
    });
    // Scrubs of the store before `fill` ended quickly; this one is stuck in its pause.
    std::thread::sleep(Duration::from_millis(100));
    let later = db.metrics();
    assert_eq!(later.scrubs, m.scrubs, "the throttled scrub ended");
    // Snapshot ages come from a coarse clock: up to a kernel tick (4 ms) short.
    assert!(later.oldest_snapshot_age >= Duration::from_millis(395));
    let started = Instant::now();
    close_within_seconds(db);
    // The point is "no hang": well under the bound on a quiet machine.
    assert!(started.elapsed() < Duration::from_secs(10));
}
