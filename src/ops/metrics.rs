//! Metrics: the [`Metrics`] snapshot that `Db::metrics` returns, and Prometheus exposition
//! through `prometheus-client`: a collector the host registers in its own registry
//! (`Db::register_metrics`).

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::engine::Engine;
use crate::histogram::{CommitLatency, Histogram};
use crate::lsn::Lsn;
use crate::sync::Ordering;

/// Everything the engine measures, at one moment; see `docs/operations.md` for each
/// metric's Prometheus name. Counters count since the database was opened.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Metrics {
    /// Commits written to the log.
    pub commits: u64,
    /// Commits refused for a conflict.
    pub conflicts: u64,
    /// Write transactions dropped without `commit()`.
    pub aborts: u64,
    /// Calls refused because their transaction was older than `Config::txn_timeout`.
    pub txn_timeouts: u64,
    /// Latency of successful commits by durability level, microseconds.
    pub commit_latency: CommitLatency,

    /// Record payload bytes committed, before framing and compression.
    pub log_record_bytes: u64,
    /// Bytes written to log segments, after compression and framing.
    pub log_bytes_written: u64,
    /// Groups written (one write, at most one sync, each).
    pub groups: u64,
    /// Commits per group.
    pub group_size: Histogram,
    /// Syncs of log data.
    pub syncs: u64,
    /// Latency of those syncs, microseconds.
    pub sync_latency: Histogram,
    /// Time since the last successful log sync (`None`: none since open).
    pub last_sync_age: Option<Duration>,
    /// The highest LSN written to the log.
    pub written_lsn: Lsn,
    /// The highest LSN durable in the log.
    pub durable_lsn: Lsn,

    /// Commits waiting in the queue.
    pub queued_commits: usize,
    /// Bytes waiting in the queue.
    pub queued_bytes: usize,
    /// `WalConfig::queue_capacity`.
    pub queue_capacity: usize,
    /// `WalConfig::queue_max_bytes`.
    pub queue_max_bytes: usize,
    /// Commits that found the queue full and waited for room.
    pub queue_full_waits: u64,
    /// Commits refused with `Error::Backpressure` (the queue stayed full).
    pub backpressure_refusals: u64,
    /// Commits that waited for the apply backlog (overlay or replay bytes) to shrink.
    pub backlog_waits: u64,
    /// Commits refused with `Error::ApplyBacklog`.
    pub backlog_refusals: u64,
    /// Commits slowed down because the apply backlog was past half of `overlay_max_bytes`.
    pub backlog_delays: u64,
    /// Time commits spent slowed down or waiting for the apply backlog, summed over commits.
    pub backlog_stall: Duration,
    /// Async commits that had to wait (slowed down, no room, or a full commit queue) and
    /// were handed to the admitter thread to wait in their place.
    pub async_admissions: u64,
    /// Overlay bytes per second the applier applies when busy (a moving average).
    pub apply_rate_bytes_per_sec: u64,
    /// The rate slowed-down commits are let through at now, overlay bytes per second; 0 when
    /// commits are not slowed down.
    pub delayed_rate_bytes_per_sec: u64,

    /// The newest commit every new transaction sees.
    pub visible_lsn: Lsn,
    /// The newest commit LMDB holds.
    pub applied_lsn: Lsn,
    /// The newest commit LMDB holds durably (the last checkpoint).
    pub checkpoint_lsn: Lsn,
    /// `visible_lsn - applied_lsn`.
    pub applied_lag_lsns: u64,
    /// Age of the oldest commit visible but not yet applied to LMDB (zero when none).
    pub applied_lag: Duration,
    /// Bytes of committed versions held in the overlay.
    pub overlay_bytes: usize,
    /// Versions held in the overlay.
    pub overlay_versions: u64,
    /// `Config::overlay_max_bytes`.
    pub overlay_max_bytes: usize,
    /// LMDB apply transactions committed.
    pub apply_batches: u64,
    /// Operations applied to LMDB.
    pub applied_ops: u64,
    /// Duration of apply transactions, microseconds.
    pub apply_latency: Histogram,

    /// Checkpoints done.
    pub checkpoints: u64,
    /// Checkpoints that failed.
    pub checkpoint_failures: u64,
    /// Times the flusher, applier, checkpoint or scrubber thread panicked and was restarted.
    pub thread_restarts: u64,
    /// Runs of bytes opening cut from the log and copied into the quarantine first.
    pub quarantined_cuts: u64,
    /// Scrubs run to the end (`Db::scrub` and `Config::scrub_interval`'s).
    pub scrubs: u64,
    /// Damaged entries and structure findings of the last scrub.
    pub scrub_findings: u64,
    /// Scrubs that ended in an error (their findings are not counted).
    pub scrub_failures: u64,
    /// When the last scrub ended, seconds since the Unix epoch (`None`: none since open).
    pub last_scrub_unix_secs: Option<u64>,
    /// How long the last scrub took, throttling included (`None`: none since open).
    pub last_scrub_duration: Option<Duration>,
    /// Duration of checkpoints (LMDB sync and segment retirement), microseconds.
    pub checkpoint_duration: Histogram,
    /// Live log segments (the active one included).
    pub segments_live: usize,
    /// Retired segment files kept for reuse.
    pub segments_spare: usize,
    /// Segments retired since open (recycled as spares or removed).
    pub segments_retired: u64,
    /// Of those, the segments copied into the archive first (`WalConfig::archive`).
    pub segments_archived: u64,
    /// Log bytes a recovery would replay now (an estimate).
    pub replay_estimate_bytes: u64,
    /// Time a recovery would take now: the replay estimate at the rate the applier has
    /// applied at (operation bytes per second of LMDB apply time). `None` before the
    /// applier has measured a rate.
    pub estimated_recovery: Option<Duration>,

    /// LMDB's map size now.
    pub map_size: usize,
    /// `Config::max_map_size` (rounded to pages).
    pub max_map_size: usize,
    /// Bytes of the map in use (pages up to LMDB's last used page, free pages included).
    pub map_used_bytes: u64,
    /// Times the map grew.
    pub map_resizes: u64,
    /// LMDB reader slots in use.
    pub readers_used: u32,
    /// `Config::max_readers`.
    pub max_readers: u32,
    /// True while LMDB is full at `max_map_size` (or the disk is full).
    pub storage_full: bool,
    /// Open read and write transactions.
    pub open_snapshots: usize,
    /// Age of the oldest open transaction.
    pub oldest_snapshot_age: Duration,

    /// True when an I/O failure poisoned the engine (it refuses commits until reopened).
    pub poisoned: bool,
}

impl Metrics {
    /// The fuller of the queue's two bounds (count and bytes), 0.0 to 1.0.
    pub fn queue_utilisation(&self) -> f64 {
        let by_count = self.queued_commits as f64 / self.queue_capacity.max(1) as f64;
        let by_bytes = self.queued_bytes as f64 / self.queue_max_bytes.max(1) as f64;
        by_count.max(by_bytes).min(1.0)
    }
}

pub(crate) fn snapshot(engine: &Engine) -> Metrics {
    let sh = &engine.state;
    let st = &sh.stats;
    let wal = engine.wal.stats();
    let detail = engine.wal.detail();
    let (open_snapshots, oldest_snapshot_age, _) = sh.snapshots.census(Duration::MAX);
    let visible_lsn = sh.visible_lsn.load(Ordering::Acquire);
    let applied_lsn = sh.applied_lsn.load(Ordering::Acquire);
    let applied_lag = {
        let q = sh.apply.lock();
        q.unapplied_since()
    }
    .map_or(Duration::ZERO, |t| t.elapsed());
    let replay_estimate_bytes = sh.replay_estimate.load(Ordering::Relaxed);
    let (op_bytes, apply_micros) = (
        st.applied_op_bytes.load(Ordering::Relaxed),
        st.apply_micros.load(Ordering::Relaxed),
    );
    let estimated_recovery = (op_bytes > 0 && apply_micros > 0).then(|| {
        let micros_per_byte = apply_micros as f64 / op_bytes as f64;
        Duration::from_micros((replay_estimate_bytes as f64 * micros_per_byte) as u64)
    });
    let lmdb = engine.store.env_figures();
    let scrubs = st.scrubs.load(Ordering::Relaxed);
    Metrics {
        commits: wal.commits,
        conflicts: st.conflicts.load(Ordering::Relaxed),
        aborts: st.aborts.load(Ordering::Relaxed),
        txn_timeouts: st.txn_timeouts.load(Ordering::Relaxed),
        commit_latency: st.commit_latency.snapshot(),
        log_record_bytes: wal.record_bytes,
        log_bytes_written: wal.bytes_written,
        groups: wal.groups,
        group_size: detail.group_size,
        syncs: wal.syncs,
        sync_latency: detail.sync_latency,
        last_sync_age: detail.last_sync_age,
        written_lsn: wal.written_lsn,
        durable_lsn: wal.durable_lsn,
        queued_commits: wal.queued_commits,
        queued_bytes: wal.queued_bytes,
        queue_capacity: engine.cfg.wal.queue_capacity,
        queue_max_bytes: engine.cfg.wal.queue_max_bytes,
        queue_full_waits: detail.queue_full_waits,
        backpressure_refusals: detail.backpressure_refusals,
        backlog_waits: st.backlog_waits.load(Ordering::Relaxed),
        backlog_refusals: st.backlog_refusals.load(Ordering::Relaxed),
        backlog_delays: st.backlog_delays.load(Ordering::Relaxed),
        backlog_stall: Duration::from_micros(st.backlog_stall_micros.load(Ordering::Relaxed)),
        async_admissions: st.async_admissions.load(Ordering::Relaxed),
        apply_rate_bytes_per_sec: sh.apply_rate.load(Ordering::Relaxed),
        delayed_rate_bytes_per_sec: sh.delayed_rate.load(Ordering::Relaxed),
        visible_lsn,
        applied_lsn,
        checkpoint_lsn: sh.checkpoint_lsn.load(Ordering::Acquire),
        applied_lag_lsns: visible_lsn.saturating_sub(applied_lsn),
        applied_lag,
        overlay_bytes: sh.overlay_bytes.load(Ordering::Relaxed),
        overlay_versions: st.overlay_versions.load(Ordering::Relaxed),
        overlay_max_bytes: engine.cfg.overlay_max_bytes,
        apply_batches: st.apply_batches.load(Ordering::Relaxed),
        applied_ops: st.applied_ops.load(Ordering::Relaxed),
        apply_latency: st.apply_latency.snapshot(),
        checkpoints: st.checkpoints.load(Ordering::Relaxed),
        checkpoint_failures: st.checkpoint_failures.load(Ordering::Relaxed),
        thread_restarts: st.thread_restarts.load(Ordering::Relaxed) + detail.flusher_restarts,
        quarantined_cuts: detail.quarantined,
        scrubs,
        scrub_findings: st.scrub_findings.load(Ordering::Relaxed),
        scrub_failures: st.scrub_failures.load(Ordering::Relaxed),
        last_scrub_unix_secs: Some(st.last_scrub_unix_secs.load(Ordering::Relaxed))
            .filter(|t| *t > 0),
        last_scrub_duration: (scrubs > 0)
            .then(|| Duration::from_micros(st.last_scrub_micros.load(Ordering::Relaxed))),
        checkpoint_duration: st.checkpoint_duration.snapshot(),
        segments_live: detail.segments_live,
        segments_spare: detail.segments_spare,
        segments_retired: wal.segments_retired,
        segments_archived: detail.segments_archived,
        replay_estimate_bytes,
        estimated_recovery,
        map_size: engine.store.map_size.load(Ordering::Relaxed),
        max_map_size: engine.store.max_map_size,
        map_used_bytes: lmdb.map_used_bytes,
        map_resizes: st.map_resizes.load(Ordering::Relaxed),
        readers_used: lmdb.readers_used,
        max_readers: engine.store.max_readers,
        storage_full: sh.storage_full.load(Ordering::Relaxed),
        open_snapshots,
        oldest_snapshot_age,
        poisoned: engine.wal.is_poisoned() || sh.is_failed(),
    }
}

/// Encodes `Metrics` for Prometheus. Register with `Db::register_metrics`; once the
/// database is closed it encodes nothing.
pub(crate) struct PrometheusCollector<F> {
    pub snapshot: F,
}

impl<F> std::fmt::Debug for PrometheusCollector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusCollector")
            .finish_non_exhaustive()
    }
}

impl<F> Collector for PrometheusCollector<F>
where
    F: Fn() -> Option<Metrics> + Send + Sync + 'static,
{
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        match (self.snapshot)() {
            Some(m) => encode(&m, &mut enc),
            None => Ok(()),
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn counter<V>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<V>: EncodeMetric,
{
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, unit, c.metric_type())?)
}

fn gauge<V>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, unit, g.metric_type())?)
}

/// `scale` converts the histogram's unit to the exposed one (1e-6: microseconds to seconds).
fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(&str, &Histogram)],
    scale: f64,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    for (label, h) in series {
        // Per-bucket counts (the encoder sums them); `f64::MAX` is its `+Inf`.
        let buckets: Vec<(f64, u64)> = h
            .buckets
            .iter()
            .map(|&(bound, n)| {
                let le = if bound == u64::MAX {
                    f64::MAX
                } else {
                    bound as f64 * scale
                };
                (le, n)
            })
            .collect();
        let sum = h.sum as f64 * scale;
        if label.is_empty() {
            family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, h.count, &buckets, None,
            )?;
        } else {
            family
                .encode_family(&[("durability", *label)])?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, h.count, &buckets, None,
            )?;
        }
    }
    Ok(())
}

fn encode(m: &Metrics, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let s = Some(&Unit::Seconds);
    let b = Some(&Unit::Bytes);
    counter(
        enc,
        "commits",
        "Commits written to the log",
        None,
        m.commits,
    )?;
    counter(
        enc,
        "conflicts",
        "Commits refused for a conflict",
        None,
        m.conflicts,
    )?;
    counter(
        enc,
        "aborts",
        "Write transactions dropped without commit",
        None,
        m.aborts,
    )?;
    counter(
        enc,
        "txn_timeouts",
        "Calls refused because their transaction was past txn_timeout",
        None,
        m.txn_timeouts,
    )?;
    let l = &m.commit_latency;
    histogram(
        enc,
        "commit_latency",
        "Latency of successful commits by durability level",
        s,
        &[
            ("none", &l.none),
            ("interval", &l.interval),
            ("every_write", &l.every_write),
            ("group_commit", &l.group_commit),
        ],
        1e-6,
    )?;
    counter(
        enc,
        "log_record",
        "Record payload bytes committed, before framing and compression",
        b,
        m.log_record_bytes,
    )?;
    counter(
        enc,
        "log_written",
        "Bytes written to log segments, after compression",
        b,
        m.log_bytes_written,
    )?;
    counter(enc, "groups", "Commit groups written", None, m.groups)?;
    histogram(
        enc,
        "group_size",
        "Commits per group",
        None,
        &[("", &m.group_size)],
        1.0,
    )?;
    counter(enc, "syncs", "Syncs of log data", None, m.syncs)?;
    histogram(
        enc,
        "sync_latency",
        "Latency of log syncs",
        s,
        &[("", &m.sync_latency)],
        1e-6,
    )?;
    gauge(
        enc,
        "last_sync_age",
        "Time since the last successful log sync (-1: none since open)",
        s,
        m.last_sync_age.map_or(-1.0, secs),
    )?;
    gauge(
        enc,
        "written_lsn",
        "Highest LSN written to the log",
        None,
        m.written_lsn,
    )?;
    gauge(
        enc,
        "durable_lsn",
        "Highest LSN durable in the log",
        None,
        m.durable_lsn,
    )?;
    gauge(
        enc,
        "queue_commits",
        "Commits waiting in the queue",
        None,
        m.queued_commits,
    )?;
    gauge(
        enc,
        "queue",
        "Bytes waiting in the queue",
        b,
        m.queued_bytes,
    )?;
    gauge(
        enc,
        "queue_utilisation_ratio",
        "The fuller of the queue's count and byte bounds, 0 to 1",
        None,
        m.queue_utilisation(),
    )?;
    counter(
        enc,
        "queue_full_waits",
        "Commits that found the queue full and waited",
        None,
        m.queue_full_waits,
    )?;
    counter(
        enc,
        "backpressure_refusals",
        "Commits refused because the queue stayed full",
        None,
        m.backpressure_refusals,
    )?;
    counter(
        enc,
        "backlog_waits",
        "Commits that waited for the apply backlog",
        None,
        m.backlog_waits,
    )?;
    counter(
        enc,
        "backlog_refusals",
        "Commits refused because the apply backlog stayed full",
        None,
        m.backlog_refusals,
    )?;
    counter(
        enc,
        "backlog_delays",
        "Commits slowed down because the apply backlog was past half its bound",
        None,
        m.backlog_delays,
    )?;
    counter(
        enc,
        "async_admissions",
        "Async commits that had to wait and were handed to the admitter thread",
        None,
        m.async_admissions,
    )?;
    counter(
        enc,
        "backlog_stall",
        "Time commits spent slowed down or waiting for the apply backlog",
        s,
        secs(m.backlog_stall),
    )?;
    let bps = Some(&Unit::Other("bytes_per_second".into()));
    gauge(
        enc,
        "apply_rate",
        "Overlay bytes per second the applier applies when busy",
        bps,
        m.apply_rate_bytes_per_sec as i64,
    )?;
    gauge(
        enc,
        "delayed_rate",
        "Overlay bytes per second slowed-down commits are let through at (0: not slowed)",
        bps,
        m.delayed_rate_bytes_per_sec as i64,
    )?;
    gauge(
        enc,
        "visible_lsn",
        "Newest commit new transactions see",
        None,
        m.visible_lsn,
    )?;
    gauge(
        enc,
        "applied_lsn",
        "Newest commit LMDB holds",
        None,
        m.applied_lsn,
    )?;
    gauge(
        enc,
        "checkpoint_lsn",
        "Newest commit LMDB holds durably",
        None,
        m.checkpoint_lsn,
    )?;
    gauge(
        enc,
        "applied_lag_lsns",
        "Commits visible but not yet applied to LMDB",
        None,
        m.applied_lag_lsns,
    )?;
    gauge(
        enc,
        "applied_lag",
        "Age of the oldest commit not yet applied to LMDB",
        s,
        secs(m.applied_lag),
    )?;
    gauge(
        enc,
        "overlay",
        "Bytes of versions in the overlay",
        b,
        m.overlay_bytes,
    )?;
    gauge(
        enc,
        "overlay_versions",
        "Versions in the overlay",
        None,
        m.overlay_versions,
    )?;
    counter(
        enc,
        "apply_batches",
        "LMDB apply transactions",
        None,
        m.apply_batches,
    )?;
    counter(
        enc,
        "applied_ops",
        "Operations applied to LMDB",
        None,
        m.applied_ops,
    )?;
    histogram(
        enc,
        "apply_latency",
        "Duration of LMDB apply transactions",
        s,
        &[("", &m.apply_latency)],
        1e-6,
    )?;
    counter(enc, "checkpoints", "Checkpoints done", None, m.checkpoints)?;
    counter(
        enc,
        "checkpoint_failures",
        "Checkpoints that failed",
        None,
        m.checkpoint_failures,
    )?;
    counter(
        enc,
        "thread_restarts",
        "Times the flusher, applier, checkpoint or scrubber thread panicked and was restarted",
        None,
        m.thread_restarts,
    )?;
    counter(
        enc,
        "scrubs",
        "Scrubs of the LMDB store run",
        None,
        m.scrubs,
    )?;
    counter(
        enc,
        "quarantined_cuts",
        "Runs of bytes opening cut from the log, copied into the quarantine first",
        None,
        m.quarantined_cuts,
    )?;
    gauge(
        enc,
        "scrub_findings",
        "Damaged entries and structure findings of the last scrub",
        None,
        m.scrub_findings,
    )?;
    counter(
        enc,
        "scrub_failures",
        "Scrubs that ended in an error",
        None,
        m.scrub_failures,
    )?;
    gauge(
        enc,
        "last_scrub_timestamp",
        "When the last scrub ended, Unix time (0: none since open)",
        s,
        m.last_scrub_unix_secs.unwrap_or(0),
    )?;
    gauge(
        enc,
        "last_scrub_duration",
        "Duration of the last scrub, throttling included (-1: none since open)",
        s,
        m.last_scrub_duration.map_or(-1.0, secs),
    )?;
    histogram(
        enc,
        "checkpoint_duration",
        "Duration of checkpoints",
        s,
        &[("", &m.checkpoint_duration)],
        1e-6,
    )?;
    gauge(
        enc,
        "segments_live",
        "Live log segments",
        None,
        m.segments_live,
    )?;
    gauge(
        enc,
        "segments_spare",
        "Retired segment files kept for reuse",
        None,
        m.segments_spare,
    )?;
    counter(
        enc,
        "segments_retired",
        "Segments retired (recycled or removed)",
        None,
        m.segments_retired,
    )?;
    counter(
        enc,
        "segments_archived",
        "Segments copied into the archive before retirement",
        None,
        m.segments_archived,
    )?;
    gauge(
        enc,
        "replay_estimate",
        "Log bytes a recovery would replay now",
        b,
        m.replay_estimate_bytes,
    )?;
    gauge(
        enc,
        "estimated_recovery",
        "Estimated time a recovery would take now (-1: not measured yet)",
        s,
        m.estimated_recovery.map_or(-1.0, secs),
    )?;
    gauge(enc, "map_size", "LMDB map size", b, m.map_size)?;
    gauge(
        enc,
        "map_max",
        "Largest LMDB map size allowed",
        b,
        m.max_map_size,
    )?;
    gauge(
        enc,
        "map_used",
        "Bytes of the LMDB map in use",
        b,
        m.map_used_bytes,
    )?;
    counter(
        enc,
        "map_resizes",
        "Times the LMDB map grew",
        None,
        m.map_resizes,
    )?;
    gauge(
        enc,
        "readers_used",
        "LMDB reader slots in use",
        None,
        m.readers_used,
    )?;
    gauge(enc, "readers_max", "LMDB reader slots", None, m.max_readers)?;
    gauge(
        enc,
        "storage_full",
        "1 while LMDB is full at its maximum or the disk is full",
        None,
        i64::from(m.storage_full),
    )?;
    gauge(
        enc,
        "open_snapshots",
        "Open transactions",
        None,
        m.open_snapshots,
    )?;
    gauge(
        enc,
        "oldest_snapshot_age",
        "Age of the oldest open transaction",
        s,
        secs(m.oldest_snapshot_age),
    )?;
    gauge(
        enc,
        "poisoned",
        "1 when an I/O failure poisoned the engine; reopen to recover",
        None,
        i64::from(m.poisoned),
    )
}
