//! A coarse monotonic clock for the read path's timestamps (when a snapshot began): a few
//! nanoseconds to read where `Instant::now()` takes about 20, at the kernel tick's
//! resolution (`CLOCK_MONOTONIC_COARSE`, 1-4 ms on Linux). It never runs ahead of the
//! monotonic clock: a time read after an event is never earlier than the event's.

use std::time::Duration;

/// A reading of the coarse monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CoarseInstant(u64);

impl CoarseInstant {
    pub fn now() -> CoarseInstant {
        CoarseInstant(now_nanos())
    }

    /// Nanoseconds on the clock's own scale (since boot on Linux).
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since `self`, to the clock's resolution.
    pub fn elapsed(self) -> Duration {
        Duration::from_nanos(now_nanos().saturating_sub(self.0))
    }
}

#[cfg(target_os = "linux")]
fn now_nanos() -> u64 {
    // Through the vDSO, as `Instant::now` is.
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn now_nanos() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(
        EPOCH
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_never_runs_ahead_of_or_behind_the_monotonic_one_by_more_than_a_tick() {
        let before = CoarseInstant::now();
        let fine = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let coarse = before.elapsed();
        let fine = fine.elapsed();
        assert!(
            coarse <= fine + Duration::from_millis(10),
            "{coarse:?} vs {fine:?}"
        );
        assert!(
            coarse + Duration::from_millis(10) >= fine,
            "{coarse:?} vs {fine:?}"
        );
        assert!(CoarseInstant::now() >= before);
    }
}
