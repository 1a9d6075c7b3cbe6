//! Operating the engine: the directory lock, `Db::metrics`, Prometheus exposition and
//! `Db::health`.

#[path = "common/engine.rs"]
mod engine_common;

use std::sync::Arc;
use std::time::Duration;

use engine_common::*;
use walmdb::{Db, Durability, Error, FaultKind, HealthLimits, HealthStatus, OpKind, SimFs};

fn put(db: &Db, key: &[u8], durability: Durability) -> walmdb::Lsn {
    let mut txn = db.write().unwrap();
    txn.put("t", key, b"value").unwrap();
    txn.commit_with(durability).unwrap()
}

fn exposition(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

/// The value of the sample `line_start` (a metric name with its labels) in `text`.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn a_second_open_of_an_open_database_is_refused_as_locked() {
    let dir = tempdir();
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    put(&db, b"k", Durability::EveryWrite);
    match Db::open_with(dir.path(), cfg()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("a second open answered {other:?}"),
    }
    // The refused open changed nothing; the first handle still works.
    put(&db, b"k2", Durability::EveryWrite);
    db.close().unwrap();
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    assert_eq!(
        db.read().unwrap().get("t", b"k2").unwrap(),
        Some(&b"value"[..])
    );
    // A crashed handle releases the lock too.
    db.simulate_crash();
    Db::open_with(dir.path(), cfg()).unwrap().close().unwrap();
}

#[test]
fn metrics_count_commits_conflicts_aborts_timeouts_and_checkpoints() {
    let dir = tempdir();
    let db = Db::open_with(
        dir.path(),
        cfg().txn_timeout(Some(Duration::from_millis(50))),
    )
    .unwrap();
    for i in 0..20u32 {
        put(&db, &i.to_be_bytes(), Durability::default());
    }
    for i in 0..5u32 {
        put(&db, &i.to_be_bytes(), Durability::None);
    }
    for i in 0..3u32 {
        put(&db, &i.to_be_bytes(), Durability::EveryWrite);
    }
    // A conflict: two transactions read and write one key.
    let mut a = db.write().unwrap();
    let mut b = db.write().unwrap();
    a.get("t", b"c").unwrap();
    b.get("t", b"c").unwrap();
    a.put("t", b"c", b"a").unwrap();
    b.put("t", b"c", b"b").unwrap();
    a.commit().unwrap();
    assert!(b.commit().unwrap_err().is_conflict());
    // Two aborts: dropped with and without writes.
    let mut dropped = db.write().unwrap();
    dropped.put("t", b"never", b"x").unwrap();
    drop(dropped);
    drop(db.write().unwrap());
    // A timeout.
    let late = db.read().unwrap();
    std::thread::sleep(Duration::from_millis(60));
    assert!(matches!(late.get("t", b"c"), Err(Error::TxnTimeout { .. })));
    drop(late);
    let lsn = db.checkpoint().unwrap();

    let m = db.metrics();
    let commits = 20 + 5 + 3 + 1;
    assert_eq!(m.commits, commits);
    assert_eq!(m.conflicts, 1);
    assert_eq!(m.aborts, 2);
    assert_eq!(m.txn_timeouts, 1);
    let l = &m.commit_latency;
    // The conflict's winner committed at the default level.
    assert_eq!(
        (
            l.group_commit.count,
            l.none.count,
            l.every_write.count,
            l.interval.count
        ),
        (21, 5, 3, 0)
    );
    assert!(l.every_write.quantile(0.5) > 0);
    assert_eq!(m.group_size.sum, commits, "every commit is in one group");
    assert_eq!(m.groups, m.group_size.count);
    assert!(m.syncs >= 24 && m.syncs == m.sync_latency.count, "{m:?}");
    assert!(m.last_sync_age.is_some_and(|a| a < Duration::from_secs(60)));
    assert!(m.log_record_bytes > 0 && m.log_bytes_written > m.log_record_bytes);
    assert_eq!(
        (m.visible_lsn, m.applied_lsn, m.checkpoint_lsn),
        (lsn, lsn, lsn)
    );
    assert_eq!(m.written_lsn, m.durable_lsn);
    assert_eq!((m.applied_lag_lsns, m.applied_lag), (0, Duration::ZERO));
    assert!(m.checkpoints >= 1 && m.checkpoint_duration.count >= m.checkpoints);
    assert_eq!(m.checkpoint_failures, 0);
    assert!(m.apply_batches >= 1 && m.apply_latency.count == m.apply_batches);
    assert!(m.applied_ops >= commits, "{m:?}");
    assert!(m.estimated_recovery.is_some());
    assert!(m.segments_live >= 1);
    assert!(m.map_used_bytes > 0 && m.map_used_bytes <= m.map_size as u64);
    assert_eq!(m.max_readers, db.config().max_readers);
    assert_eq!(
        (
            m.queued_commits,
            m.queue_full_waits,
            m.backpressure_refusals
        ),
        (0, 0, 0)
    );
    assert_eq!(m.queue_capacity, db.config().wal.queue_capacity);
    assert!(!m.poisoned && !m.storage_full);
    assert_eq!(m.open_snapshots, 0);
    db.close().unwrap();
}

#[test]
fn applied_lag_and_overlay_versions_show_unapplied_commits_until_applied() {
    let dir = tempdir();
    let db = Db::open_with(dir.path(), cfg().apply_interval(Duration::from_secs(3600))).unwrap();
    let mut last = 0;
    for i in 0..10u32 {
        last = put(&db, &i.to_be_bytes(), Durability::None);
    }
    std::thread::sleep(Duration::from_millis(20));
    let m = db.metrics();
    assert_eq!(m.applied_lag_lsns, last - m.applied_lsn);
    assert!(m.applied_lag_lsns > 0, "{m:?}");
    assert!(m.applied_lag >= Duration::from_millis(20), "{m:?}");
    assert_eq!(m.overlay_versions, m.applied_lag_lsns);
    assert!(m.overlay_bytes > 0);
    let limits = HealthLimits {
        max_applied_lag: Duration::from_millis(10),
        ..HealthLimits::default()
    };
    let h = db.health_with(&limits);
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert!(
        h.reasons.iter().any(|r| r.1.contains("behind the log")),
        "{h:?}"
    );

    db.wait_applied(last).unwrap();
    // Versions retire after the apply; the applier does that right after publishing it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db.metrics().overlay_versions > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let m = db.metrics();
    assert_eq!((m.applied_lag_lsns, m.applied_lag), (0, Duration::ZERO));
    assert_eq!((m.overlay_versions, m.overlay_bytes), (0, 0));
    db.close().unwrap();
}

#[test]
fn prometheus_exposition_carries_the_metrics_until_the_database_closes() {
    let dir = tempdir();
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    db.register_metrics(registry.sub_registry_with_label(("db".into(), "main".into())));
    for i in 0..7u32 {
        put(&db, &i.to_be_bytes(), Durability::default());
    }
    let text = exposition(&registry);
    if let Ok(path) = std::env::var("WALMDB_DUMP_EXPOSITION") {
        std::fs::write(path, &text).unwrap();
    }
    assert_eq!(
        sample(&text, "walmdb_commits_total{db=\"main\"}"),
        Some(7.0),
        "{text}"
    );
    assert_eq!(sample(&text, "walmdb_poisoned{db=\"main\"}"), Some(0.0));
    let count = "walmdb_commit_latency_seconds_count{db=\"main\",durability=\"group_commit\"}";
    assert_eq!(sample(&text, count), Some(7.0), "{text}");
    let inf =
        "walmdb_commit_latency_seconds_bucket{db=\"main\",le=\"+Inf\",durability=\"group_commit\"}";
    assert_eq!(sample(&text, inf), Some(7.0), "{text}");
    for name in [
        "walmdb_sync_latency_seconds_sum",
        "walmdb_group_size_count",
        "walmdb_queue_utilisation_ratio",
        "walmdb_applied_lag_seconds",
        "walmdb_overlay_bytes",
        "walmdb_map_used_bytes",
        "walmdb_estimated_recovery_seconds",
        "walmdb_segments_live",
        "walmdb_log_written_bytes_total",
    ] {
        assert!(
            sample(&text, &format!("{name}{{db=\"main\"}}")).is_some(),
            "{name} missing from:\n{text}"
        );
    }
    // Every line is a comment or `name{labels} value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
    db.close().unwrap();
    assert!(
        !exposition(&registry).contains("walmdb_commits_total"),
        "a closed database is not encoded"
    );
}

#[test]
fn health_is_healthy_when_idle_and_degraded_past_a_limit() {
    let dir = tempdir();
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    put(&db, b"k", Durability::EveryWrite);
    let h = db.health();
    assert_eq!(h.status, HealthStatus::Healthy, "{h:?}");
    assert!(h.reasons.is_empty());
    assert!(h.flusher_alive && h.applier_alive && h.checkpointer_alive);
    assert!(h.disk_free_bytes.is_some_and(|b| b > 0));
    assert_eq!(h.unsynced_lsns, 0);

    let reader = db.read().unwrap();
    // Ages come from the coarse clock, which idle CPUs can leave unticked for a while.
    let start = std::time::Instant::now();
    while db.stats().oldest_snapshot_age <= Duration::from_millis(1)
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let limits = HealthLimits {
        max_snapshot_age: Duration::from_millis(1),
        min_free_disk_bytes: u64::MAX,
        ..HealthLimits::default()
    };
    let h = db.health_with(&limits);
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert!(h.reasons.iter().all(|r| r.0 == HealthStatus::Degraded));
    assert!(h.reasons.iter().any(|r| r.1.contains("open for")), "{h:?}");
    assert!(
        h.reasons.iter().any(|r| r.1.contains("free on disk")),
        "{h:?}"
    );
    drop(reader);
    db.close().unwrap();
}

#[test]
fn a_poisoned_engine_is_unhealthy_and_says_why() {
    let dir = tempdir();
    let fs = SimFs::new();
    let db = Db::open_with_fs(dir.path(), cfg(), Arc::new(fs.clone())).unwrap();
    put(&db, b"k", Durability::EveryWrite);
    fs.fail_next(OpKind::SyncData, FaultKind::Eio);
    let mut txn = db.write().unwrap();
    txn.put("t", b"k2", b"v").unwrap();
    assert!(txn
        .commit_with(Durability::EveryWrite)
        .unwrap_err()
        .is_poisoned());
    let h = db.health();
    assert_eq!(h.status, HealthStatus::Unhealthy, "{h:?}");
    assert!(h.poisoned);
    assert!(
        h.reasons[0].1.contains("poisoned") && h.reasons[0].1.contains("sync"),
        "{h:?}"
    );
    assert!(db.metrics().poisoned);
    drop(db);
    // Reopening heals.
    let db = Db::open_with_fs(dir.path(), cfg(), Arc::new(fs.clone())).unwrap();
    assert_eq!(db.health().status, HealthStatus::Healthy);
    assert!(!db.metrics().poisoned);
    assert_eq!(
        db.read().unwrap().get("t", b"k").unwrap(),
        Some(&b"value"[..])
    );
    db.close().unwrap();
}

#[test]
fn backpressure_waits_and_refusals_are_counted() {
    let dir = tempdir();
    let wal = walmdb::WalConfig {
        queue_capacity: 2,
        backpressure_wait: Duration::ZERO,
        ..wal_cfg()
    };
    let db = Arc::new(Db::open_with(dir.path(), cfg().wal(wal)).unwrap());
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut refused = 0u64;
                for i in 0..200u32 {
                    let mut txn = db.write().unwrap();
                    txn.put("t", &(t * 1000 + i).to_be_bytes(), b"v").unwrap();
                    match txn.commit_with(Durability::EveryWrite) {
                        Ok(_) => {}
                        Err(Error::Backpressure { .. }) => refused += 1,
                        Err(e) => panic!("{e:?}"),
                    }
                }
                refused
            })
        })
        .collect();
    let refused: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!("{refused} of 1600 commits refused for backpressure");
    let m = db.metrics();
    assert_eq!(m.backpressure_refusals, refused);
    assert!(m.queue_full_waits >= refused);
    assert_eq!(m.commits + refused, 1600);
    Arc::try_unwrap(db).unwrap().close().unwrap();
}

/// `GET path` over a plain TCP connection: (status code, body).
#[cfg(feature = "http")]
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let code = reply.split(' ').nth(1).unwrap().parse().unwrap();
    let body = reply.split_once("\r\n\r\n").map_or("", |b| b.1).to_owned();
    (code, body)
}

#[cfg(feature = "http")]
#[test]
fn the_http_endpoint_serves_metrics_and_health_until_the_database_closes() {
    let dir = tempdir();
    let fs = SimFs::new();
    let db = Db::open_with_fs(dir.path(), cfg(), Arc::new(fs.clone())).unwrap();
    put(&db, b"k", Durability::EveryWrite);
    let server = db
        .serve_http("127.0.0.1:0", HealthLimits::default())
        .unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(sample(&body, "walmdb_commits_total"), Some(1.0), "{body}");
    let (code, body) = http_get(addr, "/health");
    assert_eq!(
        (code, body.trim()),
        (200, r#"{"status":"healthy","reasons":[]}"#)
    );
    let (code, _) = http_get(addr, "/nothing");
    assert_eq!(code, 404);
    // A crossed limit: degraded, with its reason, still 200.
    let limits = HealthLimits {
        min_free_disk_bytes: u64::MAX,
        ..HealthLimits::default()
    };
    let degraded = db.serve_http("127.0.0.1:0", limits).unwrap();
    let (code, body) = http_get(degraded.local_addr(), "/health");
    assert_eq!(code, 200);
    assert!(
        body.starts_with(r#"{"status":"degraded","reasons":[{"level":"degraded","reason":""#),
        "{body}"
    );
    drop(degraded);
    // Unhealthy: 503, with the reason.
    fs.fail_next(OpKind::SyncData, FaultKind::Eio);
    let mut txn = db.write().unwrap();
    txn.put("t", b"k2", b"v").unwrap();
    assert!(txn.commit_with(Durability::EveryWrite).is_err());
    let (code, body) = http_get(addr, "/health");
    assert_eq!(code, 503);
    assert!(
        body.contains(r#""level":"unhealthy","reason":"poisoned"#),
        "{body}"
    );
    drop(db);
    // Closed: 503.
    let (code, _) = http_get(addr, "/metrics");
    assert_eq!(code, 503);
    server.stop();
}

/// Past half of `overlay_max_bytes`, commits are slowed down to the applier's measured rate
/// instead of filling the overlay and failing: at the defaults every commit succeeds, the
/// overlay stays within its bound, and the metrics show the delays.
#[test]
fn a_backlog_past_half_its_bound_slows_commits_down_and_refuses_none() {
    const LIMIT: usize = 256 << 10;
    let dir = tempdir();
    let cfg = cfg()
        .overlay_max_bytes(LIMIT)
        .apply_interval(Duration::from_millis(50));
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let value = vec![7u8; 1024];
    for i in 0..1500 {
        let mut txn = db.write().unwrap();
        txn.put("t", &key(i), &value).unwrap();
        txn.commit_with(Durability::None).unwrap();
        let held = db.stats().unapplied_bytes;
        assert!(held <= LIMIT + 2 * value.len(), "overlay {held} bytes");
    }
    let m = db.metrics();
    assert!(m.backlog_delays > 0, "no commit was slowed down: {m:?}");
    assert!(m.backlog_stall > Duration::ZERO);
    assert_eq!(m.backlog_refusals, 0);
    assert!(m.apply_rate_bytes_per_sec > 0);
    let read = db.read().unwrap();
    for i in 0..1500 {
        assert_eq!(read.get("t", &key(i)).unwrap(), Some(&value[..]));
    }
    drop(read);
    db.close().unwrap();
}
