//! `Db::health`: the engine's state judged against limits.

use std::path::Path;
use std::time::Duration;

use crate::engine::Engine;
use crate::sync::Ordering;

/// How the engine is doing: the worst of [`Health::reasons`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Everything within its limits.
    Healthy,
    /// Working, but a limit is near: commits may slow down or be refused soon.
    Degraded,
    /// Commits are refused (poisoned, storage full, a thread gone, almost no disk).
    Unhealthy,
}

/// The limits `Db::health` judges by.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthLimits {
    /// Degraded at this share of the commit queue's count or byte bound. Default: 0.8.
    pub queue_utilisation: f64,
    /// Degraded at this share of `Config::overlay_max_bytes`. Default: 0.8.
    pub overlay_utilisation: f64,
    /// Degraded when the oldest unapplied commit is older. Default: 30 s.
    pub max_applied_lag: Duration,
    /// Degraded when written log data has waited longer for a sync. Default: 10 s.
    pub max_unsynced_age: Duration,
    /// Degraded when a transaction has been open longer (it pins LMDB pages and overlay
    /// versions). Default: 5 min.
    pub max_snapshot_age: Duration,
    /// Degraded below this much free space on the database's file system (Unhealthy
    /// below two log segments). Default: 1 GiB.
    pub min_free_disk_bytes: u64,
}

impl Default for HealthLimits {
    fn default() -> Self {
        HealthLimits {
            queue_utilisation: 0.8,
            overlay_utilisation: 0.8,
            max_applied_lag: Duration::from_secs(30),
            max_unsynced_age: Duration::from_secs(10),
            max_snapshot_age: Duration::from_secs(300),
            min_free_disk_bytes: 1 << 30,
        }
    }
}

/// The engine's health, with the facts it was judged on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// The verdict.
    pub status: HealthStatus,
    /// Each limit crossed, worst first; empty when healthy.
    pub reasons: Vec<(HealthStatus, String)>,
    /// The log's flusher thread is running.
    pub flusher_alive: bool,
    /// The applier thread is running.
    pub applier_alive: bool,
    /// The checkpoint thread is running.
    pub checkpointer_alive: bool,
    /// An I/O failure poisoned the engine; it refuses commits until reopened.
    pub poisoned: bool,
    /// LMDB is full at `max_map_size`, or the disk is full.
    pub storage_full: bool,
    /// The fuller of the queue's two bounds, 0.0 to 1.0.
    pub queue_utilisation: f64,
    /// Free bytes on the file system of the log and of LMDB, the smaller (`None`: unknown).
    pub disk_free_bytes: Option<u64>,
    /// Time since the last successful log sync (`None`: none since open).
    pub last_sync_age: Option<Duration>,
    /// Commits written to the log but not yet synced.
    pub unsynced_lsns: u64,
    /// Age of the oldest commit not yet applied to LMDB.
    pub applied_lag: Duration,
}

pub(crate) fn health(engine: &Engine, limits: &HealthLimits) -> Health {
    let m = super::metrics::snapshot(engine);
    let applier_alive = engine.state.applier_running.load(Ordering::Acquire);
    let checkpointer_alive = engine.state.checkpointer_running.load(Ordering::Acquire);
    let flusher_alive = engine.wal.flusher_alive();
    let disk_free_bytes = [
        crate::layout::wal_dir(&engine.path),
        crate::layout::data_dir(&engine.path),
    ]
    .iter()
    .filter_map(|p| disk_free(p))
    .min();
    let mut reasons = Vec::new();
    let mut bad = |status, why: String| reasons.push((status, why));
    use HealthStatus::{Degraded, Unhealthy};
    if m.poisoned {
        let cause = engine
            .state
            .failure()
            .or_else(|| engine.wal.refusal())
            .map_or_else(String::new, |e| e.to_string());
        bad(Unhealthy, format!("poisoned: {cause}"));
    }
    let closed = engine.state.is_closed();
    if closed {
        bad(Unhealthy, "the database is closed".into());
    }
    for (alive, name) in [
        (flusher_alive, "flusher"),
        (applier_alive, "applier"),
        (checkpointer_alive, "checkpoint"),
    ] {
        if !alive && !closed {
            bad(Unhealthy, format!("the {name} thread is not running"));
        }
    }
    if engine.cfg.scrub_interval.is_some() && !engine.state.scrubber_running.load(Ordering::Acquire)
    {
        bad(
            Degraded,
            "the scrubber thread is not running (scrub_interval is set); reopen to restart it"
                .into(),
        );
    }
    if m.storage_full {
        bad(
            Unhealthy,
            format!("storage is full (LMDB map {} bytes)", m.map_size),
        );
    }
    if let Some(free) = disk_free_bytes {
        if free < 2 * engine.cfg.wal.segment_bytes {
            bad(
                Unhealthy,
                format!("{free} bytes free on disk, under two log segments"),
            );
        } else if free < limits.min_free_disk_bytes {
            bad(
                Degraded,
                format!(
                    "{free} bytes free on disk, under {}",
                    limits.min_free_disk_bytes
                ),
            );
        }
    }
    if m.scrub_findings > 0 {
        bad(
            Unhealthy,
            format!(
                "the last scrub found {} damaged entries or structure problems in LMDB's file \
                 (run `walmdb verify --deep`, then restore or repair)",
                m.scrub_findings
            ),
        );
    }
    if m.thread_restarts > 0 {
        let flusher = engine.wal.detail().last_flusher_panic;
        let last = [
            engine.state.last_restart.lock().clone(),
            flusher.map(|msg| format!("flusher: {msg}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
        bad(
            Degraded,
            format!(
                "engine threads restarted after {} panics (the last of each: {last})",
                m.thread_restarts
            ),
        );
    }
    let queue = m.queue_utilisation();
    if queue >= limits.queue_utilisation {
        bad(
            Degraded,
            format!("the commit queue is {:.0}% full", queue * 100.0),
        );
    }
    let overlay = m.overlay_bytes as f64 / m.overlay_max_bytes.max(1) as f64;
    if overlay >= limits.overlay_utilisation {
        bad(
            Degraded,
            format!(
                "unapplied versions hold {:.0}% of overlay_max_bytes",
                overlay * 100.0
            ),
        );
    }
    if m.applied_lag > limits.max_applied_lag {
        bad(
            Degraded,
            format!("LMDB is {:?} behind the log", m.applied_lag),
        );
    }
    let unsynced_lsns = m.written_lsn.saturating_sub(m.durable_lsn);
    if unsynced_lsns > 0
        && m.last_sync_age
            .is_none_or(|age| age > limits.max_unsynced_age)
    {
        bad(
            Degraded,
            format!(
                "{unsynced_lsns} commits written but not synced; last sync {}",
                m.last_sync_age
                    .map_or("never since open".into(), |a| format!("{a:?} ago"))
            ),
        );
    }
    let full_since = engine.state.stats.map_full_since.load(Ordering::Relaxed);
    let map_full_for =
        Duration::from_micros(crate::sync::monotonic_micros().saturating_sub(full_since));
    if full_since > 0 && map_full_for >= engine.cfg.resize_wait {
        let (_, oldest, blocking) = engine.state.snapshots.census(map_full_for);
        bad(
            Degraded,
            format!(
                "LMDB's map is full and has waited {map_full_for:?} to grow: {blocking} \
                 transaction(s) open longer than that (the oldest for {oldest:?}); LMDB cannot \
                 remap under them, so commits are not applied until they end"
            ),
        );
    }
    if m.oldest_snapshot_age > limits.max_snapshot_age {
        bad(
            Degraded,
            format!(
                "a transaction has been open for {:?}",
                m.oldest_snapshot_age
            ),
        );
    }
    if engine.state.replay_is_over() {
        bad(
            Degraded,
            format!(
                "recovery would replay {} bytes, over max_replay_bytes",
                m.replay_estimate_bytes
            ),
        );
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
    Health {
        status: reasons.first().map_or(HealthStatus::Healthy, |r| r.0),
        reasons,
        flusher_alive,
        applier_alive,
        checkpointer_alive,
        poisoned: m.poisoned,
        storage_full: m.storage_full,
        queue_utilisation: queue,
        disk_free_bytes,
        last_sync_age: m.last_sync_age,
        unsynced_lsns,
        applied_lag: m.applied_lag,
    }
}

/// Free bytes available to this user on the file system holding `path`.
fn disk_free(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}
