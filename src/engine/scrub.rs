//! Online scrubs of LMDB's file, for `Db::scrub` and the `walmdb-scrubber` thread
//! (`Config::scrub_interval`): one function runs them, counts them and logs what they find.

use std::time::{Duration, Instant};

use super::Engine;
use crate::error::{Error, Result};
use crate::snapshots::Registration;
use crate::store::scrub::{ScrubProgress, ScrubReport};
use crate::store::LmdbReadTxn;
use crate::sync::{Condvar, Mutex, Ordering};

/// Snapshots a scrub begins before it gives up finding one whose meta page is in place.
const SCRUB_ATTEMPTS: u32 = 20;

/// Tells the scrubber thread, and a rate-limited scrub's pauses, that the engine is closing.
#[derive(Debug, Default)]
pub(crate) struct ScrubberControl {
    stop: Mutex<bool>,
    cv: Condvar,
}

impl ScrubberControl {
    /// Waits `wait`, or until the engine is closing: false if it is.
    pub(crate) fn pause(&self, wait: Duration) -> bool {
        let deadline = crate::limits::deadline(Instant::now(), wait);
        let mut stop = self.stop.lock();
        loop {
            if *stop {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            stop = self.cv.wait_timeout(stop, deadline - now);
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop.lock()
    }

    /// Ends every pause, now and later.
    pub(crate) fn stop(&self) {
        let mut stop = self.stop.lock();
        *stop = true;
        self.cv.notify_all();
    }
}

/// An LMDB read transaction registered as a snapshot, as `txn::Snapshot` holds one (the
/// engine sits below `txn`): a map resize waits for it, and LMDB reuses none of its pages;
/// it pins neither overlay eviction nor conflicts (it reads no overlay and commits nothing).
struct ScrubSnapshot<'e> {
    engine: &'e Engine,
    /// `Some` until dropped, which ends it before the registration.
    lmdb: Option<LmdbReadTxn<'e>>,
    reg: Registration,
}

impl Engine {
    /// Begins an LMDB read transaction registered as a snapshot (what every reader of the
    /// engine holds): a map resize waits for it, and LMDB reuses none of its pages.
    pub(crate) fn begin_snapshot(&self) -> Result<(LmdbReadTxn<'_>, Registration)> {
        let sh = &self.state;
        sh.snapshots.begin(&sh.visible_lsn, || {
            let txn = self.store.read_txn()?;
            let applied = self.store.applied_lsn(&txn)?;
            Ok((txn, applied))
        })
    }
}

impl<'e> ScrubSnapshot<'e> {
    fn begin(engine: &'e Engine) -> Result<Self> {
        let (txn, reg) = engine.begin_snapshot()?;
        // It reads LMDB only: commits waiting for room must not wait for it.
        engine.state.snapshots.read_lmdb_only(&reg);
        Ok(ScrubSnapshot {
            engine,
            lmdb: Some(txn),
            reg,
        })
    }

    /// Scrubs LMDB's state this snapshot reads; `None` when LMDB has already rewritten its
    /// meta page (begin a new snapshot); `Error::Closed` when the engine begins to close.
    fn scrub(&self, progress: &mut dyn FnMut(ScrubProgress<'_>)) -> Result<Option<ScrubReport>> {
        let txn = self
            .lmdb
            .as_ref()
            .expect("the LMDB transaction lives until the snapshot drops");
        let control = &self.engine.state.scrubber;
        self.engine
            .store
            .scrub(txn, progress, &|| control.is_stopping())
    }
}

impl Drop for ScrubSnapshot<'_> {
    fn drop(&mut self) {
        drop(self.lmdb.take());
        self.engine.state.snapshots.release(&self.reg);
    }
}

impl Engine {
    /// Scrubs LMDB's file from a read snapshot (see `Db::scrub`), reading at most
    /// `max_bytes_per_sec` (`None` or 0: unthrottled); `Error::Closed` as soon as the engine
    /// begins to close (the walk stops at the next page). Counts the scrub in the metrics and
    /// logs damage; a scrub that fails is counted as such.
    pub(crate) fn scrub(
        &self,
        max_bytes_per_sec: Option<u64>,
        progress: &mut dyn FnMut(ScrubProgress<'_>),
    ) -> Result<ScrubReport> {
        let st = &self.state.stats;
        let started = Instant::now();
        let result = self.scrub_attempts(max_bytes_per_sec, progress);
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                st.scrub_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        st.scrub_findings
            .store(report.findings(), Ordering::Relaxed);
        st.last_scrub_micros
            .store(duration_micros(started.elapsed()), Ordering::Relaxed);
        st.last_scrub_unix_secs
            .store(super::now_micros() / 1_000_000, Ordering::Relaxed);
        st.scrubs.fetch_add(1, Ordering::Relaxed);
        if !report.is_healthy() {
            tracing::error!(
                damaged = report.damaged_entries(),
                damaged_pages = report.damaged_pages.len(),
                structure = ?report.structure,
                "the scrub found damage in LMDB's file"
            );
        }
        Ok(report)
    }

    fn scrub_attempts(
        &self,
        max_bytes_per_sec: Option<u64>,
        progress: &mut dyn FnMut(ScrubProgress<'_>),
    ) -> Result<ScrubReport> {
        let rate = max_bytes_per_sec.filter(|r| *r > 0);
        let control = &self.state.scrubber;
        let mut attempts = 0;
        loop {
            // A snapshot whose meta page two commits have already rewritten is begun anew.
            let snapshot = ScrubSnapshot::begin(self)?;
            let started = Instant::now();
            let mut throttled = rate.is_some();
            let found = snapshot.scrub(&mut |p| {
                progress(p);
                let Some(rate) = rate.filter(|_| throttled) else {
                    return;
                };
                let due = Duration::try_from_secs_f64(p.bytes as f64 / rate as f64)
                    .unwrap_or(Duration::MAX);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    throttled = control.pause(ahead);
                }
            })?;
            match found {
                Some(report) => return Ok(report),
                None if attempts < SCRUB_ATTEMPTS && !control.is_stopping() => attempts += 1,
                None => {
                    return Err(Error::Lmdb {
                        op: "scrub",
                        message: format!(
                            "no snapshot's meta page stayed in place in {} attempts (LMDB \
                             commits too often); try again",
                            attempts + 1
                        ),
                        source: None,
                    })
                }
            }
        }
    }
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The `walmdb-scrubber` thread: waits `interval`, scrubs, and again, until the engine
/// closes. A failed scrub is logged (and counted by `Engine::scrub`) and the next one
/// comes an interval later.
pub(crate) fn scrubber_loop(engine: &Engine, interval: Duration) {
    let control = &engine.state.scrubber;
    while control.pause(interval) {
        fail::fail_point!("scrubber-tick");
        let max = engine.cfg.scrub_max_bytes_per_sec;
        if let Err(e) = engine.scrub(max, &mut |_| {}) {
            if control.is_stopping() {
                return;
            }
            tracing::warn!(error = %e, "the background scrub failed; trying again later");
        }
    }
}
