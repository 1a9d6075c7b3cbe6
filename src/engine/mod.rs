//! The engine behind the [`Db`](crate::Db) handle, one file per job:
//!
//! - [`admit`]: commit requests and backpressure (waiting for room in the overlay);
//! - [`sequencer`]: on the flusher thread, conflict checks and publication to the overlay;
//! - [`apply`]: the `walmdb-applier` thread, the only LMDB writer, and overlay eviction;
//! - [`checkpoint`]: the `walmdb-checkpoint` thread: LMDB syncs and segment retirement;
//! - [`open`]: locking the directory, LMDB, the log's recovery, replay, starting threads;
//! - [`admin`]: compaction and restore points;
//! - [`scrub`]: online scrubs of LMDB's file, and the `walmdb-scrubber` thread.
//!
//! [`EngineState`] is what these jobs share; [`Engine`] adds the store, the log and the
//! configuration; [`Running`] owns the engine's threads and stops them.

pub(crate) mod admin;
pub(crate) mod admit;
pub(crate) mod apply;
pub(crate) mod checkpoint;
pub(crate) mod feed;
pub(crate) mod open;
mod replay;
pub(crate) mod scrub;
pub(crate) mod sequencer;
pub(crate) mod writes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::histogram::{AtomicHistogram, CommitLatencyRecorder, LATENCY_BUCKETS};
use crate::lsn::Lsn;
use crate::snapshots::Snapshots;
use crate::store::{Store, WriteOp};
use crate::sync::DataArc as Arc;
use crate::sync::{
    AtomicBool, AtomicU64, AtomicUsize, Condvar, JoinHandle, Mutex, Ordering, StatCounter,
};
use crate::wal::Wal;

pub use admin::{CompactReport, RestorePoint};
pub(crate) use admit::{commit_ops, commit_ops_async, too_big_for_overlay, Commit};
use apply::ApplyQueue;
use checkpoint::CheckpointState;
pub use feed::{Change, NextChange, Subscription};
pub use open::DbRecoveryReport;
pub(crate) use sequencer::{Check, ConflictPin, EngineSequencer, ReadSet};

/// Counters kept by the engine's threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub conflicts: AtomicU64,
    pub apply_batches: AtomicU64,
    pub applied_ops: AtomicU64,
    pub map_resizes: AtomicU64,
    pub map_resizes_postponed: AtomicU64,
    /// Resizes made ahead, before the map was full (counted in `map_resizes` too).
    pub map_resizes_ahead: AtomicU64,
    /// `sync::monotonic_micros()` since the applier has waited for a full map to grow;
    /// 0 when it does not wait.
    pub map_full_since: AtomicU64,
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: StatCounter,
    pub checkpoint_duration: AtomicHistogram<LATENCY_BUCKETS>,
    pub aborts: StatCounter,
    pub txn_timeouts: StatCounter,
    pub commit_latency: CommitLatencyRecorder,
    pub apply_latency: AtomicHistogram<LATENCY_BUCKETS>,
    /// Key and value bytes applied, and the microseconds LMDB apply transactions took:
    /// the applier's measured rate, which estimates how long a replay would take.
    pub applied_op_bytes: StatCounter,
    pub apply_micros: StatCounter,
    /// Versions in the overlay (a gauge).
    pub overlay_versions: StatCounter,
    pub backlog_waits: StatCounter,
    pub backlog_refusals: StatCounter,
    /// Commits slowed down for the apply backlog, and the microseconds commits spent
    /// slowed down or waiting for room.
    pub backlog_delays: StatCounter,
    pub backlog_stall_micros: StatCounter,
    /// Async commits handed to the admitter thread because they had to wait.
    pub async_admissions: StatCounter,
    /// Times the applier, checkpoint or scrubber thread panicked and was restarted.
    pub thread_restarts: StatCounter,
    /// Scrubs run, and what the last one found (damaged entries and structure findings; a
    /// gauge).
    pub scrubs: StatCounter,
    pub scrub_findings: StatCounter,
    /// Scrubs that ended in an error.
    pub scrub_failures: StatCounter,
    /// When the last scrub ended (Unix seconds; 0: none since open), and how long it took.
    pub last_scrub_unix_secs: StatCounter,
    pub last_scrub_micros: StatCounter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// Apply everything durable, then stop.
    Drain,
    /// Stop at once (a simulated crash).
    Abandon,
}

/// State shared by the handle, the sequencer (on the flusher thread) and the engine threads.
#[derive(Debug, Default)]
pub(crate) struct EngineState {
    pub catalog: Catalog,
    pub snapshots: Snapshots,
    /// Every commit at or below it is in the overlay or LMDB, for every new snapshot.
    pub visible_lsn: AtomicU64,
    /// LMDB holds every commit at or below it.
    pub applied_lsn: AtomicU64,
    /// LMDB holds every commit at or below it durably; the log holds everything above.
    pub checkpoint_lsn: AtomicU64,
    pub overlay_bytes: AtomicUsize,
    /// Overlay bytes per second the applier applies when busy (a moving average; 0 before
    /// its first batch). Commits are slowed down to about this rate.
    pub(crate) apply_rate: AtomicU64,
    /// The rate commits are let through at now, overlay bytes per second (0: not slowed).
    pub(crate) delayed_rate: AtomicU64,
    /// When the next slowed-down commit may go.
    throttle: Mutex<Option<Instant>>,
    /// Recovery would replay more than `max_replay_bytes`.
    replay_over: AtomicBool,
    pub(crate) replay_estimate: AtomicU64,
    /// The map is at its maximum (or the disk is full) and a batch is waiting for space.
    pub(crate) storage_full: AtomicBool,
    pub(crate) apply: Mutex<ApplyQueue>,
    apply_cv: Condvar,
    room: Mutex<()>,
    room_cv: Condvar,
    /// Commits kept for change-feed subscriptions, and their wake-ups.
    pub(crate) feed: feed::Feed,
    /// Async commits waiting to be admitted by the admitter thread.
    admissions: Mutex<admit::Admissions>,
    admissions_cv: Condvar,
    checkpoint: Mutex<CheckpointState>,
    checkpoint_cv: Condvar,
    /// The handle was closed: commits, syncs, checkpoints and waits get `Error::Closed`.
    closed: AtomicBool,
    /// The applier failed for good: the engine refuses commits until reopened.
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    /// Held while segments are retired, and by a backup while it copies LMDB and the log:
    /// no segment a backup needs is retired under it.
    pub(crate) retirement: Mutex<()>,
    /// The applier's catch-up on what `open` replayed to the overlay.
    pub(crate) catch_up: open::CatchUp,
    /// The last restart of an engine thread: "<thread>: <panic>".
    pub(crate) last_restart: Mutex<Option<String>>,
    /// True from open until the applier thread ends (however it ends).
    pub(crate) applier_running: AtomicBool,
    /// True from open until the checkpoint thread ends.
    pub(crate) checkpointer_running: AtomicBool,
    /// True from open until the scrubber thread ends (never set without `scrub_interval`).
    pub(crate) scrubber_running: AtomicBool,
    /// Stops the scrubber thread and cuts a rate-limited scrub's pauses short.
    pub(crate) scrubber: scrub::ScrubberControl,
    pub stats: Counters,
}

/// Clears its flag when dropped: when the thread owning it returns or unwinds.
struct RunningGuard<'a>(&'a AtomicBool);

/// What a supervised thread's panics do past the last restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// The engine fails (commits refused until reopened): it cannot go on without the thread.
    FailEngine,
    /// The thread ends (`health()` says so); the engine goes on without it.
    EndThread,
}

/// Runs `work` (an engine thread's loop) and runs it again when it panics, up to
/// [`MAX_THREAD_RESTARTS`](crate::limits::MAX_THREAD_RESTARTS) times; each restart is
/// counted (metrics, `health()`). Past that, `give_up` says what happens. `work` leaves the
/// state it shares consistent however it unwinds (the applier gives its batch back).
pub(crate) fn supervise(sh: &EngineState, thread: &str, give_up: GiveUp, work: impl Fn()) {
    // Under loom a panic is the model checker's own (a failed model): let it through.
    #[cfg(walmdb_loom)]
    {
        let _ = (sh, thread, give_up);
        work()
    }
    #[cfg(not(walmdb_loom))]
    supervise_panics(sh, thread, give_up, work)
}

#[cfg(not(walmdb_loom))]
fn supervise_panics(sh: &EngineState, thread: &str, give_up: GiveUp, work: impl Fn()) {
    let mut restarts = 0;
    loop {
        let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&work)) else {
            return;
        };
        let msg = crate::error::panic_message(panic.as_ref());
        restarts += 1;
        if restarts > crate::limits::MAX_THREAD_RESTARTS {
            let why = format!("the {thread} thread panicked {restarts} times, the last: {msg}");
            match give_up {
                GiveUp::FailEngine => sh.fail(why),
                GiveUp::EndThread => {
                    tracing::error!(cause = %why, "an engine thread ended; reopen to restart it");
                    *sh.last_restart.lock() = Some(format!("{thread}: {msg}"));
                }
            }
            return;
        }
        sh.stats.thread_restarts.fetch_add(1, Ordering::Relaxed);
        *sh.last_restart.lock() = Some(format!("{thread}: {msg}"));
        tracing::error!(thread, restarts, panic = %msg, "an engine thread panicked; restarting it");
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl EngineState {
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn replay_is_over(&self) -> bool {
        self.replay_over.load(Ordering::Relaxed)
    }

    /// Why the engine takes no more work: `Closed` once closed, else its failure.
    pub(crate) fn refusal(&self) -> Option<Error> {
        if self.closed.load(Ordering::Acquire) {
            return Some(Error::Closed);
        }
        self.failure()
    }

    /// The engine's failure (`Poisoned`), if it failed.
    pub(crate) fn failure(&self) -> Option<Error> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let cause = self.failure.lock().clone().unwrap_or_default();
        Some(Error::Poisoned { cause })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refuses work from now on (`Error::Closed`) and wakes whoever waits for room, for the
    /// applier or for the feed, to get the refusal.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify_room();
        self.feed.close_for_good();
    }

    fn fail(&self, cause: String) {
        tracing::error!(cause = %cause, "the engine failed; reopen to recover");
        let mut f = self.failure.lock();
        if f.is_none() {
            *f = Some(cause);
        }
        self.failed.store(true, Ordering::Release);
        drop(f);
        // Commits waiting for room get the refusal now.
        self.notify_room();
    }

    fn notify_room(&self) {
        let _g = self.room.lock();
        self.room_cv.notify_all();
    }
}

pub(crate) struct Engine {
    pub path: PathBuf,
    pub cfg: Config,
    pub state: Arc<EngineState>,
    pub store: Store,
    pub wal: Wal<EngineSequencer>,
    pub report: DbRecoveryReport,
    /// An exclusive lock on `<path>/LOCK`, held until LMDB's environment is closed.
    pub(crate) lock: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// True if table `name` exists now.
    pub fn table_exists(&self, name: &str) -> bool {
        let v = self.state.visible_lsn.load(Ordering::Acquire);
        self.state
            .catalog
            .get(name)
            .is_some_and(|t| t.state.read().view(v, v).is_some())
    }

    /// Creates table `name` (a commit of its own) and returns its LSN; if the table exists,
    /// commits nothing and returns the visible LSN.
    pub fn create_table(&self, name: &str) -> Result<Lsn> {
        crate::limits::check_table_name(name)?;
        if self.table_exists(name) {
            return Ok(self.state.visible_lsn.load(Ordering::Acquire));
        }
        let op = WriteOp::CreateTable {
            table: Arc::from(name),
        };
        commit_ops(self, Commit::blind(vec![op]))
    }

    /// Drops table `name` and everything in it (a commit of its own).
    pub fn drop_table(&self, name: &str) -> Result<Lsn> {
        if !self.table_exists(name) {
            return Err(Error::TableNotFound(name.to_owned()));
        }
        let op = WriteOp::DropTable {
            table: Arc::from(name),
        };
        commit_ops(self, Commit::blind(vec![op]))
    }
}

/// The engine and its threads: what a [`Db`](crate::Db) shares. Dropping it drains the log
/// into LMDB and stops the threads, as `close` does, if nothing closed it before.
#[derive(Debug)]
pub(crate) struct Running {
    engine: Arc<Engine>,
    /// `Some` until shut down.
    threads: Mutex<Option<Threads>>,
}

#[derive(Debug)]
pub(crate) struct Threads {
    pub applier: JoinHandle<()>,
    pub checkpointer: JoinHandle<()>,
    /// Admits async commits that must wait.
    pub admitter: Option<JoinHandle<()>>,
    /// `Some` while `Config::scrub_interval` runs a scrubber thread.
    pub scrubber: Option<JoinHandle<()>>,
}

/// What closing must do once every transaction has ended and before LMDB closes, and then
/// with the directory (still locked) once it has: compaction's copy and its rename.
pub(crate) trait Exclusive {
    fn before_lmdb_closes(&mut self, engine: &Engine) -> Result<()>;
    fn after_lmdb_closed(&mut self, dir: &Path) -> Result<()>;
}

impl Running {
    pub(crate) fn new(engine: Arc<Engine>, threads: Threads) -> Running {
        Running {
            engine,
            threads: Mutex::new(Some(threads)),
        }
    }

    /// Records a thread started after the engine's first ones.
    pub(crate) fn set_thread(&self, set: impl FnOnce(&mut Threads)) {
        if let Some(threads) = self.threads.lock().as_mut() {
            set(threads);
        }
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A handle for metrics and health that does not keep the engine open.
    pub(crate) fn observer(&self) -> crate::sync::DataWeak<Engine> {
        Arc::downgrade(&self.engine)
    }

    /// Stops the engine (`Error::Closed` if it was stopped already). Then LMDB's
    /// environment and the directory's lock are released unless a transaction stayed open
    /// [`CLOSE_WAITS_FOR_TRANSACTIONS`](crate::limits::CLOSE_WAITS_FOR_TRANSACTIONS): then
    /// when the engine drops (the last handle and transaction gone).
    pub(crate) fn shutdown(&self, how: Shutdown) -> Result<()> {
        self.shutdown_then(how, None)
    }

    /// [`Running::shutdown`], with `exclusive` run while no transaction is open and none
    /// can begin (an error if one stayed open past `Config::resize_wait`).
    pub(crate) fn shutdown_then(
        &self,
        how: Shutdown,
        exclusive: Option<&mut dyn Exclusive>,
    ) -> Result<()> {
        let mut threads = self.threads.lock();
        let Some(Threads {
            applier,
            checkpointer,
            admitter,
            scrubber,
        }) = threads.take()
        else {
            return Err(Error::Closed);
        };
        let engine = &*self.engine;
        let sh = &engine.state;
        // First, so its snapshot postpones no map resize the drain below needs.
        sh.scrubber.stop();
        if let Some(scrubber) = scrubber {
            if scrubber.join().is_err() {
                tracing::error!("the scrubber thread panicked");
            }
        }
        // Before the log closes: on `Drain` it queues every async commit handed to it.
        sh.stop_admitter(how);
        if let Some(admitter) = admitter {
            if admitter.join().is_err() {
                tracing::error!("the admitter thread panicked");
            }
        }
        // Commits, syncs and waits from other handles get `Closed` from here on.
        sh.close();
        let mut result = Ok(());
        let mut log_closed = false;
        if how == Shutdown::Drain && !engine.wal.is_poisoned() {
            // Every commit queued is written and synced, and later ones are refused, so the
            // applier may apply all of them.
            result = engine.wal.close_shared();
            log_closed = true;
        }
        sh.stop_applier(how);
        if applier.join().is_err() {
            result = result.and(Err(Error::Poisoned {
                cause: "the applier thread panicked".into(),
            }));
        }
        sh.stop_checkpointer();
        if checkpointer.join().is_err() {
            tracing::error!("the checkpoint thread panicked");
        }
        if how == Shutdown::Drain {
            fail::fail_point!("close-applied-before-checkpoint");
            if let Some(e) = sh.failure() {
                result = result.and(Err(e));
            } else if sh.applied_lsn.load(Ordering::Acquire)
                < sh.visible_lsn.load(Ordering::Acquire)
            {
                result = result.and(Err(Error::StorageFull {
                    map_size: engine.store.map_size.load(Ordering::Relaxed),
                }));
            }
            if let Err(e) = checkpoint::checkpoint_now(engine) {
                result = result.and(Err(e));
            }
        }
        fail::fail_point!("close-checkpointed-before-lmdb-close");
        if !log_closed {
            result = result.and(engine.wal.close_shared());
        }
        let wait = match &exclusive {
            Some(_) => engine.cfg.resize_wait,
            // A transaction of this thread's cannot end while it waits here.
            None if sh.snapshots.held_by_this_thread() => Duration::ZERO,
            None => crate::limits::CLOSE_WAITS_FOR_TRANSACTIONS,
        };
        if !sh.snapshots.close_for_good(wait) {
            tracing::info!(
                path = %engine.path.display(),
                "closed with transactions open: LMDB and the directory are released when \
                 the last of them and of the handles ends"
            );
            return match exclusive {
                Some(_) => result.and(Err(Error::TransactionsOpen {
                    wait: engine.cfg.resize_wait,
                })),
                None => result,
            };
        }
        let mut exclusive = exclusive;
        if let Some(work) = exclusive.as_mut() {
            result = result.and_then(|()| work.before_lmdb_closes(engine));
        }
        // SAFETY: the registry is closed with no transaction open, and every engine thread
        // that begins one (applier, checkpoint, scrubber) is joined.
        unsafe { engine.store.close_env() };
        if let Some(work) = exclusive {
            result = result.and_then(|()| work.after_lmdb_closed(&engine.path));
        }
        // Only now may another handle open the directory.
        drop(engine.lock.lock().take());
        result
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        match self.shutdown(Shutdown::Drain) {
            Ok(()) | Err(Error::Closed) => {}
            Err(e) => tracing::warn!(error = %e, "closing the database on drop failed"),
        }
    }
}

pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
