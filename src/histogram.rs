//! Lock-free histograms kept by the engine's threads, and their snapshots.
//!
//! Recording is a few relaxed atomic adds on the thread that did the work; nothing locks.

use std::time::Duration;

use crate::config::Durability;
use crate::sync::{Ordering, StatCounter};

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
