//! Checkpoints (`walmdb-checkpoint`): sync LMDB, then retire the log segments it covers;
//! and the replay estimate that bounds recovery.

use std::time::{Duration, Instant};

use super::{Engine, EngineState};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sync::Ordering;
use crate::wal::Wal;

#[derive(Debug, Default)]
pub(crate) struct CheckpointState {
    stop: bool,
}

/// Syncs LMDB and retires the log segments it covers. A failed LMDB sync is never retried:
/// the kernel may have dropped the pages it could not write, so a later sync that succeeds
/// would prove nothing, and retiring log segments on its word could lose commits. The
/// engine fails instead, and reopening replays the log.
pub(crate) fn checkpoint_now(engine: &Engine) -> Result<()> {
    let sh = &engine.state;
    let _no_backup_copying = sh.retirement.lock();
    let span = tracing::info_span!(
        "walmdb.checkpoint",
        applied_lsn = sh.applied_lsn.load(Ordering::Acquire),
        segments_retired = tracing::field::Empty
    );
    let _entered = span.enter();
    let started = Instant::now();
    let retired_before = engine.wal.stats().segments_retired;
    let result = checkpoint_with(sh, &engine.wal, || engine.store.force_sync());
    sh.stats
        .checkpoint_duration
        .record_duration(started.elapsed());
    match &result {
        Ok(()) => {
            let retired = engine.wal.stats().segments_retired - retired_before;
            span.record("segments_retired", retired);
        }
        Err(_) => {
            sh.stats.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    result
}

/// [`checkpoint_now`] with LMDB's sync as `force_sync` (the loom model's fake LMDB has its
/// own).
pub(crate) fn checkpoint_with<S: crate::wal::Sequencer>(
    sh: &EngineState,
    wal: &Wal<S>,
    force_sync: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if let Some(e) = sh.failure() {
        return Err(e);
    }
    let applied = sh.applied_lsn.load(Ordering::Acquire);
    let early = crate::sync::bug(crate::sync::Bug::RetireBeforeLmdbSync);
    if early {
        wal.retire_below(applied + 1)?;
    }
    if applied > sh.checkpoint_lsn.load(Ordering::Acquire) {
        if let Err(e) = force_sync() {
            sh.fail(format!("syncing LMDB failed: {e}"));
            return Err(sh.failure().unwrap_or(e));
        }
        fail::fail_point!("checkpoint-lmdb-synced-before-retirement");
        sh.checkpoint_lsn.fetch_max(applied, Ordering::AcqRel);
        sh.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    }
    if !early {
        wal.retire_below(applied + 1)?;
    }
    Ok(())
}

/// The checkpoint thread: checkpoints when enough log was written or enough time passed,
/// or when asked; keeps the replay estimate.
pub(crate) fn checkpoint_loop(engine: &Engine) {
    let sh = &engine.state;
    let cfg = &engine.cfg;
    let mut last = Instant::now();
    // Log bytes written when the last checkpoint began, and unapplied bytes then (at first,
    // what open replayed to the overlay).
    let mut base = (
        engine.wal.stats().bytes_written,
        sh.overlay_bytes.load(Ordering::Relaxed) as u64,
    );
    loop {
        fail::fail_point!("checkpoint-tick");
        {
            let mut st = sh.checkpoint.lock();
            if !st.stop {
                st = sh.checkpoint_cv.wait_timeout(st, Duration::from_millis(50));
            }
            if st.stop {
                return;
            }
        }
        let written = engine.wal.stats().bytes_written;
        let estimate = written.saturating_sub(base.0) + base.1;
        sh.replay_estimate.store(estimate, Ordering::Relaxed);
        let over = estimate > cfg.max_replay_bytes;
        if sh.replay_over.swap(over, Ordering::Relaxed) && !over {
            sh.notify_room();
        }
        let due = estimate >= cfg.checkpoint_bytes
            || (last.elapsed() >= cfg.checkpoint_interval
                && sh.applied_lsn.load(Ordering::Acquire)
                    > sh.checkpoint_lsn.load(Ordering::Acquire));
        if !due {
            continue;
        }
        let unapplied = sh.overlay_bytes.load(Ordering::Relaxed) as u64;
        last = Instant::now();
        match checkpoint_now(engine) {
            Ok(()) => {
                base = (written, unapplied);
                let estimate = engine.wal.stats().bytes_written.saturating_sub(base.0) + base.1;
                sh.replay_estimate.store(estimate, Ordering::Relaxed);
                if sh
                    .replay_over
                    .swap(estimate > cfg.max_replay_bytes, Ordering::Relaxed)
                {
                    sh.notify_room();
                }
            }
            Err(e) => tracing::warn!(error = %e, "checkpoint failed; retrying later"),
        }
    }
}

impl EngineState {
    /// Tells the checkpoint thread to stop.
    pub(crate) fn stop_checkpointer(&self) {
        let mut st = self.checkpoint.lock();
        st.stop = true;
        self.checkpoint_cv.notify_all();
    }
}

impl Engine {
    /// Applies every commit so far to LMDB, syncs LMDB and retires the log segments it
    /// covers. Returns the checkpoint LSN.
    pub(crate) fn checkpoint(&self) -> Result<Lsn> {
        if let Some(e) = self.state.refusal() {
            return Err(e);
        }
        self.wait_applied(self.state.visible_lsn.load(Ordering::Acquire))?;
        checkpoint_now(self)?;
        Ok(self.state.checkpoint_lsn.load(Ordering::Acquire))
    }

    /// Waits until LMDB holds every commit through `lsn`.
    pub(crate) fn wait_applied(&self, lsn: Lsn) -> Result<()> {
        let sh = &self.state;
        let postponed = || sh.stats.map_resizes_postponed.load(Ordering::Relaxed);
        let (mut seen_postponed, mut seen_applied) =
            (postponed(), sh.applied_lsn.load(Ordering::Acquire));
        let mut progress_at = Instant::now();
        loop {
            if let Some(e) = sh.refusal() {
                return Err(e);
            }
            let applied = sh.applied_lsn.load(Ordering::Acquire);
            if applied >= lsn {
                return Ok(());
            }
            if applied > seen_applied {
                (seen_applied, progress_at) = (applied, Instant::now());
            }
            // A resize the applier needs was put off (after `resize_wait`) with nothing
            // applied meanwhile. If the caller holds a transaction it may be the blocker and
            // waiting cannot end; otherwise another thread's may end, so wait, but no longer
            // than `backlog_wait` without progress.
            let now_postponed = postponed();
            if now_postponed > seen_postponed {
                seen_postponed = now_postponed;
                if sh.snapshots.held_by_this_thread()
                    || progress_at.elapsed() >= self.cfg.backlog_wait
                {
                    return Err(Error::MapResizeBlocked {
                        resize_wait: self.cfg.resize_wait,
                    });
                }
            }
            if let Some(e) = sh.refusal() {
                return Err(e);
            }
            if sh.storage_full.load(Ordering::Acquire) {
                return Err(Error::StorageFull {
                    map_size: self.store.map_size.load(Ordering::Relaxed),
                });
            }
            sh.hurry_applier();
            let mut g = sh.room.lock();
            if sh.applied_lsn.load(Ordering::Acquire) < lsn {
                g = sh.room_cv.wait_timeout(g, Duration::from_millis(10));
            }
            drop(g);
        }
    }
}
