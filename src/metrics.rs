//! Metrics: lock-free histograms kept by the engine's threads, the [`Metrics`] snapshot that
//! `Db::metrics` returns, and Prometheus exposition through `prometheus-client`: a
//! collector the host registers in its own registry (`Db::register_metrics`).
//!
//! Recording is a few relaxed atomic adds on the thread that did the work; nothing locks.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::config::Durability;
use crate::sync::{Ordering, StatCounter};
use crate::wal::Lsn;

/// Buckets of latency histograms, in microseconds: up to 2^25 µs (34 s), then unbounded.
pub(crate) const LATENCY_BUCKETS: usize = 27;
/// Buckets of count histograms (commits per group): up to 2^16, then unbounded.
pub(crate) const COUNT_BUCKETS: usize = 18;

/// A histogram recorded with relaxed atomic adds. Bucket `i` counts values in
/// `(2^(i-1), 2^i]` (bucket 0 counts 0 and 1); the last bucket has no upper bound.
#[derive(Debug)]
pub(crate) struct AtomicHistogram<const N: usize> {
    buckets: [StatCounter; N],
    sum: StatCounter,
}

impl<const N: usize> Default for AtomicHistogram<N> {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| StatCounter::new(0)),
            sum: StatCounter::new(0),
        }
    }
}

impl<const N: usize> AtomicHistogram<N> {
    pub fn record(&self, value: u64) {
        let bucket = (u64::BITS - value.saturating_sub(1).leading_zeros()) as usize;
        self.buckets[bucket.min(N - 1)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn snapshot(&self) -> Histogram {
        let buckets: Vec<(u64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let bound = if i + 1 == N { u64::MAX } else { 1 << i };
                (bound, n.load(Ordering::Relaxed))
            })
            .collect();
        Histogram {
            count: buckets.iter().map(|b| b.1).sum(),
            sum: self.sum.load(Ordering::Relaxed),
            buckets,
        }
    }
}

/// A histogram's counts at one moment. Latencies are in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Histogram {
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// `(upper bound, values in this bucket)`, bounds ascending powers of two; the last
    /// bound is `u64::MAX` (unbounded).
    pub buckets: Vec<(u64, u64)>,
}

impl Histogram {
    /// The upper bound of the bucket holding the `q`-quantile (0.0 to 1.0), an estimate
    /// at most twice the true value; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(bound, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return bound;
            }
        }
        u64::MAX
    }

    /// The mean, or 0.0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// Commit latency (from `commit()` to its return, successful commits only) by the
/// durability level the commit ran at, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CommitLatency {
    /// `Durability::None`.
    pub none: Histogram,
    /// `Durability::Interval`.
    pub interval: Histogram,
    /// `Durability::EveryWrite`.
    pub every_write: Histogram,
    /// `Durability::GroupCommit`.
    pub group_commit: Histogram,
}

/// The engine's commit-latency histograms, one per durability level.
#[derive(Debug, Default)]
pub(crate) struct CommitLatencyRecorder([AtomicHistogram<LATENCY_BUCKETS>; 4]);

impl CommitLatencyRecorder {
    pub fn record(&self, durability: Durability, d: Duration) {
        self.0[level_index(durability)].record_duration(d);
    }

    pub fn snapshot(&self) -> CommitLatency {
        CommitLatency {
            none: self.0[0].snapshot(),
            interval: self.0[1].snapshot(),
            every_write: self.0[2].snapshot(),
            group_commit: self.0[3].snapshot(),
        }
    }
}

fn level_index(d: Durability) -> usize {
    match d {
        Durability::None => 0,
        Durability::Interval(_) => 1,
        Durability::EveryWrite => 2,
        Durability::GroupCommit { .. } => 3,
    }
}

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

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> Result<(), std::fmt::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_power_of_two_buckets() {
        let h = AtomicHistogram::<6>::default();
        for v in [0, 1, 2, 3, 4, 5, 1000] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 7);
        assert_eq!(s.sum, 1015);
        let counts: Vec<u64> = s.buckets.iter().map(|b| b.1).collect();
        // <=1, <=2, <=4, <=8, <=16, unbounded
        assert_eq!(counts, [2, 1, 2, 1, 0, 1]);
        assert_eq!(s.buckets[5].0, u64::MAX);
        assert_eq!(s.quantile(0.5), 4);
        assert_eq!(s.quantile(1.0), u64::MAX);
        assert_eq!(Histogram::default().quantile(0.99), 0);
    }
}
