//! Online scrubs of LMDB's file, for `Db::scrub`: one function runs them, counts them and
//! logs what they find.

use std::time::{Duration, Instant};

use super::Engine;
use crate::error::{Error, Result};
use crate::snapshots::Registration;
use crate::store::scrub::{ScrubProgress, ScrubReport};
use crate::store::LmdbReadTxn;
use crate::sync::Ordering;

/// Snapshots a scrub begins before it gives up finding one whose meta page is in place.
const SCRUB_ATTEMPTS: u32 = 20;

/// An LMDB read transaction registered as a snapshot, as `txn::Snapshot` holds one (the
/// engine sits below `txn`): a map resize waits for it, and LMDB reuses none of its pages.
struct ScrubSnapshot<'e> {
    engine: &'e Engine,
    /// `Some` until dropped, which ends it before the registration.
    lmdb: Option<LmdbReadTxn<'e>>,
    reg: Registration,
}

impl<'e> ScrubSnapshot<'e> {
    fn begin(engine: &'e Engine) -> Result<Self> {
        let sh = &engine.state;
        let (txn, reg) = sh.snapshots.begin(&sh.visible_lsn, || {
            let txn = engine.store.read_txn()?;
            let applied = engine.store.applied_lsn(&txn)?;
            Ok((txn, applied))
        })?;
        Ok(ScrubSnapshot {
            engine,
            lmdb: Some(txn),
            reg,
        })
    }

    /// Scrubs LMDB's state this snapshot reads; `None` when LMDB has already rewritten its
    /// meta page (begin a new snapshot).
    fn scrub(&self, progress: &mut dyn FnMut(ScrubProgress<'_>)) -> Result<Option<ScrubReport>> {
        let txn = self
            .lmdb
            .as_ref()
            .expect("the LMDB transaction lives until the snapshot drops");
        self.engine.store.scrub(txn, progress)
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
    /// `max_bytes_per_sec` (`None` or 0: unthrottled). Counts the scrub in the metrics and
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
        let mut attempts = 0;
        loop {
            // A snapshot whose meta page two commits have already rewritten is begun anew.
            let snapshot = ScrubSnapshot::begin(self)?;
            let started = Instant::now();
            let found = snapshot.scrub(&mut |p| {
                progress(p);
                let Some(rate) = rate else {
                    return;
                };
                let due = Duration::try_from_secs_f64(p.bytes as f64 / rate as f64)
                    .unwrap_or(Duration::MAX);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(ahead);
                }
            })?;
            match found {
                Some(report) => return Ok(report),
                None if attempts < SCRUB_ATTEMPTS => attempts += 1,
                None => {
                    return Err(Error::Lmdb {
                        op: "scrub",
                        message: format!(
                            "no snapshot's meta page stayed in place in {} attempts (LMDB \
                             commits too often); try again",
                            attempts + 1
                        ),
                    })
                }
            }
        }
    }
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
