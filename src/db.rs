//! The engine handle: open (recovery), transactions, tables, stats, checkpoint, close.
//!
//! Threads: the WAL's flusher (conflict checks, LSNs, publish to the overlay), completer and
//! preparer; `walmdb-applier`, the only LMDB writer; `walmdb-checkpoint`.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::catalog::{check_table_name, version_cost, Catalog, Table, Version};
use crate::config::{Config, Durability, Isolation};
use crate::conflict::{Check, EngineSequencer, Ticket, TxnWrites};
use crate::error::{Error, Result};
use crate::metrics::{AtomicHistogram, CommitLatencyRecorder, LATENCY_BUCKETS};
use crate::snapshots::Snapshots;
use crate::store::{Store, WriteOp};
use crate::sync::DataArc as Arc;
use crate::sync::{
    AtomicBool, AtomicU64, AtomicUsize, Condvar, JoinHandle, Mutex, Ordering, StatCounter,
    ThreadBuilder,
};
use crate::txn::{ReadTxn, Snapshot, WriteTxn};
use crate::wal::{Lsn, Op, Record, RecoveryReport, Wal, WalStats};

/// Counters kept by the engine's threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub conflicts: AtomicU64,
    pub apply_batches: AtomicU64,
    pub applied_ops: AtomicU64,
    pub map_resizes: AtomicU64,
    pub map_resizes_postponed: AtomicU64,
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
}

#[derive(Debug, Default)]
pub(crate) struct ApplyQueue {
    /// Published commits with the time each was published.
    items: VecDeque<(Lsn, Arc<TxnWrites>, Instant)>,
    /// When the oldest commit of the batch being applied was published.
    applying_since: Option<Instant>,
    ops: usize,
    /// When the oldest queued item arrived.
    oldest_at: Option<Instant>,
    /// The applier sleeps until an item arrives.
    applier_waiting: bool,
    /// The applier gathers a batch; wake it when `ops` reaches this.
    wake_at_ops: Option<usize>,
    /// Someone waits for the applier: apply without gathering.
    urgent: bool,
    stop: Option<Stop>,
}

impl ApplyQueue {
    /// When the oldest commit not yet applied to LMDB was published.
    pub(crate) fn unapplied_since(&self) -> Option<Instant> {
        self.applying_since
            .or_else(|| self.items.front().map(|item| item.2))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Apply everything durable, then stop.
    Drain,
    /// Stop at once (a simulated crash).
    Abandon,
}

#[derive(Debug, Default)]
struct CheckpointState {
    stop: bool,
}

/// State shared by the handle, the sequencer (on the flusher thread) and the engine threads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub catalog: Catalog,
    pub snapshots: Snapshots,
    /// Every commit at or below it is in the overlay or LMDB, for every new snapshot.
    pub visible_lsn: AtomicU64,
    /// LMDB holds every commit at or below it.
    pub applied_lsn: AtomicU64,
    /// LMDB holds every commit at or below it durably; the log holds everything above.
    pub checkpoint_lsn: AtomicU64,
    pub overlay_bytes: AtomicUsize,
    /// Recovery would replay more than `max_replay_bytes`.
    replay_over: AtomicBool,
    pub(crate) replay_estimate: AtomicU64,
    /// The map is at its maximum (or the disk is full) and a batch is waiting for space.
    pub(crate) storage_full: AtomicBool,
    pub(crate) apply: Mutex<ApplyQueue>,
    apply_cv: Condvar,
    room: Mutex<()>,
    room_cv: Condvar,
    checkpoint: Mutex<CheckpointState>,
    checkpoint_cv: Condvar,
    /// The applier failed for good: the engine refuses commits until reopened.
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    /// Held while segments are retired, and by a backup while it copies LMDB and the log:
    /// no segment a backup needs is retired under it.
    pub(crate) retirement: Mutex<()>,
    /// Held by a backup while LMDB copies itself (in an LMDB read transaction of its own):
    /// the map may not be resized then.
    pub(crate) lmdb_copy: Mutex<()>,
    /// True from open until the applier thread ends (however it ends).
    pub(crate) applier_running: AtomicBool,
    /// True from open until the checkpoint thread ends.
    pub(crate) checkpointer_running: AtomicBool,
    pub stats: Counters,
}

/// Clears its flag when dropped: when the thread owning it returns or unwinds.
struct RunningGuard<'a>(&'a AtomicBool);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Shared {
    /// Makes the commit at `lsn` visible: versions into the overlay, the writes onto the
    /// apply queue, then `visible_lsn`. Runs on the flusher thread, in LSN order.
    pub fn publish(&self, lsn: Lsn, writes: Arc<TxnWrites>) {
        let mut bytes = 0;
        let mut versions = 0;
        let mut ops = writes.ops.iter().peekable();
        while let Some(first) = ops.peek() {
            let name = first.table().clone();
            // A delete from a table never known changes nothing visible: skip it.
            let Some(table) = self.catalog.get(&name) else {
                while ops.next_if(|op| op.table() == &name).is_some() {}
                continue;
            };
            let mut st = table.state.write();
            while let Some(op) = ops.next_if(|op| op.table() == &table.name) {
                match op {
                    WriteOp::Put { key, value, .. } => {
                        Table::note_exists(&mut st, lsn);
                        bytes += version_cost(key, Some(value));
                        versions += 1;
                        st.overlay.push(
                            key,
                            Version {
                                lsn,
                                value: Some(value.clone()),
                            },
                        );
                    }
                    WriteOp::Delete { key, .. } => {
                        bytes += version_cost(key, None);
                        versions += 1;
                        st.overlay.push(key, Version { lsn, value: None });
                    }
                    WriteOp::CreateTable { .. } => Table::note_exists(&mut st, lsn),
                    WriteOp::DropTable { .. } => Table::note_dropped(&mut st, lsn),
                }
            }
        }
        self.overlay_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.stats
            .overlay_versions
            .fetch_add(versions, Ordering::Relaxed);
        // Visible before the applier can take it: LMDB never holds a commit that is not
        // visible, so every snapshot has applied LSN <= visible LSN.
        self.visible_lsn.store(lsn, Ordering::Release);
        let n = writes.ops.len();
        let now = Instant::now();
        {
            let mut q = self.apply.lock();
            if q.items.is_empty() {
                q.oldest_at = Some(now);
            }
            q.items.push_back((lsn, writes, now));
            q.ops += n;
            let full = q.wake_at_ops.is_some_and(|at| q.ops >= at);
            if q.applier_waiting || full {
                q.applier_waiting = false;
                q.wake_at_ops = None;
                self.apply_cv.notify_one();
            }
        }
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn replay_is_over(&self) -> bool {
        self.replay_over.load(Ordering::Relaxed)
    }

    pub(crate) fn refusal(&self) -> Option<Error> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let cause = self.failure.lock().clone().unwrap_or_default();
        Some(Error::Poisoned { cause })
    }

    fn fail(&self, cause: String) {
        tracing::error!(cause = %cause, "the engine failed; reopen to recover");
        let mut f = self.failure.lock();
        if f.is_none() {
            *f = Some(cause);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn notify_room(&self) {
        let _g = self.room.lock();
        self.room_cv.notify_all();
    }
}

/// What opening the database found and did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbRecoveryReport {
    /// The log's own recovery (segments, torn tail cut).
    pub wal: RecoveryReport,
    /// LMDB's applied LSN found at open: replay started after it.
    pub applied_lsn_at_open: Lsn,
    /// Records replayed into LMDB.
    pub replayed_records: u64,
    /// Payload bytes of those records.
    pub replayed_bytes: u64,
    /// The last LSN replayed (the applied LSN after recovery).
    pub last_lsn: Lsn,
    /// Time recovery took, the log's included.
    pub duration: Duration,
}

/// A snapshot of the engine's state and counters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbStats {
    /// The log's counters.
    pub wal: WalStats,
    /// The newest commit every new transaction sees.
    pub visible_lsn: Lsn,
    /// The newest commit LMDB holds.
    pub applied_lsn: Lsn,
    /// The newest commit LMDB holds durably (the last checkpoint).
    pub checkpoint_lsn: Lsn,
    /// Bytes of committed versions not yet retired from the overlay.
    pub unapplied_bytes: usize,
    /// Estimated log bytes recovery would replay now.
    pub replay_estimate_bytes: u64,
    /// Open read and write transactions.
    pub open_snapshots: usize,
    /// Age of the oldest open transaction (it pins LMDB pages and overlay versions).
    pub oldest_snapshot_age: Duration,
    /// Open transactions older than `txn_timeout` (or 60 s without one).
    pub long_lived_snapshots: usize,
    /// LMDB's map size now.
    pub map_size: usize,
    /// True while LMDB is full at `max_map_size` (or the disk is full).
    pub storage_full: bool,
    /// Commits refused for a conflict.
    pub conflicts: u64,
    /// LMDB apply transactions committed.
    pub apply_batches: u64,
    /// Operations applied to LMDB.
    pub applied_ops: u64,
    /// Times the map grew.
    pub map_resizes: u64,
    /// Times a map resize waited `resize_wait` for open transactions and was put off.
    pub map_resizes_postponed: u64,
    /// Checkpoints done.
    pub checkpoints: u64,
}

pub(crate) struct Inner {
    pub path: PathBuf,
    pub cfg: Config,
    pub shared: Arc<Shared>,
    pub store: Store,
    pub wal: Wal<EngineSequencer>,
    report: DbRecoveryReport,
    /// An exclusive lock on `<path>/LOCK`, held until the engine is closed.
    lock: std::fs::File,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// An open database: a write-ahead log in front of LMDB. Share it between threads by
/// reference (it is `Sync`); transactions borrow it.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = walmdb::Db::open(dir.path())?;
/// let mut txn = db.write()?;
/// txn.put("users", b"alice", b"1")?;
/// let lsn = txn.commit()?;
/// let read = db.read()?;
/// assert_eq!(read.get("users", b"alice")?, Some(&b"1"[..]));
/// assert!(read.lsn() >= lsn);
/// drop(read);
/// db.close()?;
/// # Ok::<(), walmdb::Error>(())
/// ```
#[derive(Debug)]
pub struct Db {
    /// `Some` until `close` or drop.
    inner: Option<Arc<Inner>>,
    applier: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

impl Db {
    /// Opens (creating, or recovering) the database in directory `path` with defaults.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Self::open_with(path, Config::default())
    }

    /// Opens (creating, or recovering) the database in directory `path`: reads LMDB's
    /// applied LSN, replays every log record after it, and starts the engine's threads.
    pub fn open_with(path: impl AsRef<Path>, cfg: Config) -> Result<Db> {
        Self::open_with_fs(path, cfg, crate::sync::DynArc::new(crate::wal::fs::StdFs))
    }

    /// [`Db::open_with`], with the log's files behind `fs` (LMDB's stay on the real file
    /// system, under `path`). For crash and fault tests with [`crate::SimFs`].
    #[doc(hidden)]
    pub fn open_with_fs(path: impl AsRef<Path>, cfg: Config, fs: crate::FsRef) -> Result<Db> {
        Self::open_inner(path.as_ref(), cfg, fs, None)
    }

    /// [`Db::open_with_fs`], telling `lmdb` of every LMDB commit and sync: for power-loss
    /// tests that restore an image of LMDB's file taken at one of its commits.
    #[doc(hidden)]
    pub fn open_observed(
        path: impl AsRef<Path>,
        cfg: Config,
        fs: crate::FsRef,
        lmdb: crate::store::LmdbObserverRef,
    ) -> Result<Db> {
        Self::open_inner(path.as_ref(), cfg, fs, Some(lmdb))
    }

    fn open_inner(
        path: &Path,
        cfg: Config,
        fs: crate::FsRef,
        lmdb: Option<crate::store::LmdbObserverRef>,
    ) -> Result<Db> {
        cfg.validate()?;
        let span = tracing::info_span!("walmdb.open", path = %path.display());
        let _entered = span.enter();
        let started = Instant::now();
        let path = path.to_owned();
        std::fs::create_dir_all(&path)?;
        let lock = lock_dir(&path)?;
        let shared = Arc::new(Shared::default());
        let (store, opened) = Store::open(&path.join("data"), &cfg, &shared.catalog, lmdb)?;
        // After a process crash LMDB's newest commits may be in the page cache only
        // (`NO_META_SYNC`): make them durable before the log's recovery retires the
        // segments they cover, so the checkpoint LSN below is true.
        store.force_sync()?;
        // A crashed open may have created these without making their entries durable.
        crate::store::sync_dir(&path.join("data"))?;
        crate::store::sync_dir(&path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The parent is the user's: one we may not read is left as it is.
            match crate::store::sync_dir(parent) {
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    tracing::warn!(dir = %parent.display(), "cannot sync the database's parent directory");
                }
                other => other?,
            }
        }
        let recovery = tracing::info_span!(
            "walmdb.recovery",
            applied_lsn = opened.applied_lsn,
            replayed = tracing::field::Empty,
            last_lsn = tracing::field::Empty
        );
        let recovering = recovery.enter();
        let wal = Wal::open_with(
            fs,
            &path.join("wal"),
            cfg.wal.clone(),
            Some(opened.applied_lsn),
            EngineSequencer::new(shared.clone(), cfg.max_tables),
        )?;
        let mut report = DbRecoveryReport {
            wal: wal.recovery_report().clone(),
            applied_lsn_at_open: opened.applied_lsn,
            replayed_records: 0,
            replayed_bytes: 0,
            last_lsn: opened.applied_lsn,
            duration: Duration::ZERO,
        };
        let mut inner = Inner {
            path,
            cfg,
            shared,
            store,
            wal,
            report: report.clone(),
            lock,
        };
        replay(&inner, &mut report)?;
        recovery.record("replayed", report.replayed_records);
        recovery.record("last_lsn", report.last_lsn);
        drop(recovering);
        report.duration = started.elapsed();
        inner.report = report;
        let last = inner.report.last_lsn;
        let sh = &inner.shared;
        sh.visible_lsn.store(last, Ordering::Release);
        sh.applied_lsn.store(last, Ordering::Release);
        sh.checkpoint_lsn
            .store(opened.applied_lsn, Ordering::Release);
        let inner = Arc::new(inner);
        if inner.report.replayed_records > 0 {
            checkpoint_now(&inner)?;
        }
        tracing::info!(
            path = %inner.path.display(),
            applied_lsn_at_open = inner.report.applied_lsn_at_open,
            replayed = inner.report.replayed_records,
            replayed_bytes = inner.report.replayed_bytes,
            cut = inner.report.wal.cut.is_some(),
            micros = inner.report.duration.as_micros() as u64,
            "opened the database"
        );
        inner.shared.applier_running.store(true, Ordering::Release);
        inner
            .shared
            .checkpointer_running
            .store(true, Ordering::Release);
        let applier = {
            let inner = inner.clone();
            ThreadBuilder::new()
                .name("walmdb-applier".into())
                .spawn(move || {
                    let _running = RunningGuard(&inner.shared.applier_running);
                    applier_loop(&inner)
                })?
        };
        let checkpointer = {
            let inner = inner.clone();
            ThreadBuilder::new()
                .name("walmdb-checkpoint".into())
                .spawn(move || {
                    let _running = RunningGuard(&inner.shared.checkpointer_running);
                    checkpoint_loop(&inner)
                })?
        };
        let db = Db {
            inner: Some(inner),
            applier: Some(applier),
            checkpointer: Some(checkpointer),
        };
        for name in db.inner().cfg.tables.clone() {
            if !db.table_exists(&name) {
                db.create_table(&name)?;
            }
        }
        Ok(db)
    }

    pub(crate) fn inner(&self) -> &Inner {
        self.inner
            .as_ref()
            .expect("the handle is open until close or drop")
    }

    /// Begins a read transaction: a consistent snapshot of every commit that returned
    /// before it began. It is `Send`.
    pub fn read(&self) -> Result<ReadTxn<'_>> {
        Ok(ReadTxn::new(Snapshot::begin(self.inner())?))
    }

    /// Begins a write transaction at the configured isolation.
    pub fn write(&self) -> Result<WriteTxn<'_>> {
        self.write_with(self.inner().cfg.isolation)
    }

    /// Begins a write transaction at `isolation`.
    pub fn write_with(&self, isolation: Isolation) -> Result<WriteTxn<'_>> {
        Ok(WriteTxn::new(self.inner(), isolation))
    }

    /// Runs `f` in a write transaction and commits it, running it again (at most
    /// `Config::update_attempts` times in all) while the commit meets a conflict.
    pub fn update<T>(&self, mut f: impl FnMut(&mut WriteTxn<'_>) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut txn = self.write()?;
            let out = f(&mut txn)?;
            match txn.commit() {
                Ok(_) => return Ok(out),
                Err(e) if e.is_conflict() && attempt < self.inner().cfg.update_attempts => {
                    // Back off a little, more each time and by a random share, so
                    // committers that met each other do not meet again in lockstep.
                    let base = 20u64 << attempt.min(8);
                    let jitter = std::hash::RandomState::new().hash_one(attempt) % base;
                    std::thread::sleep(Duration::from_micros(base / 2 + jitter));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// True if table `name` exists now.
    pub fn table_exists(&self, name: &str) -> bool {
        let v = self.inner().shared.visible_lsn.load(Ordering::Acquire);
        self.inner()
            .shared
            .catalog
            .get(name)
            .is_some_and(|t| t.state.read().view(v, v).is_some())
    }

    /// The tables that exist now, sorted by name.
    pub fn tables(&self) -> Vec<String> {
        let v = self.inner().shared.visible_lsn.load(Ordering::Acquire);
        self.inner().shared.catalog.names_at(v)
    }

    /// Creates table `name` (a commit of its own) and returns its LSN; if the table exists,
    /// commits nothing and returns the visible LSN.
    pub fn create_table(&self, name: &str) -> Result<Lsn> {
        check_table_name(name)?;
        if self.table_exists(name) {
            return Ok(self.inner().shared.visible_lsn.load(Ordering::Acquire));
        }
        let op = WriteOp::CreateTable {
            table: Arc::from(name),
        };
        commit_ops(self.inner(), vec![op], Check::Blind, 0, None)
    }

    /// Drops table `name` and everything in it (a commit of its own). Transactions that
    /// touched it and commit later get `Error::Conflict`.
    pub fn drop_table(&self, name: &str) -> Result<Lsn> {
        if !self.table_exists(name) {
            return Err(Error::TableNotFound(name.to_owned()));
        }
        let op = WriteOp::DropTable {
            table: Arc::from(name),
        };
        commit_ops(self.inner(), vec![op], Check::Blind, 0, None)
    }

    /// Makes every commit so far durable in the log; returns the durable LSN.
    pub fn sync(&self) -> Result<Lsn> {
        self.inner().wal.sync()
    }

    /// Applies every commit so far to LMDB, syncs LMDB and retires the log segments it
    /// covers. Returns the checkpoint LSN.
    pub fn checkpoint(&self) -> Result<Lsn> {
        let inner = self.inner();
        self.wait_applied(inner.shared.visible_lsn.load(Ordering::Acquire))?;
        checkpoint_now(inner)?;
        Ok(inner.shared.checkpoint_lsn.load(Ordering::Acquire))
    }

    /// Waits until LMDB holds every commit through `lsn`.
    pub fn wait_applied(&self, lsn: Lsn) -> Result<()> {
        let sh = &self.inner().shared;
        loop {
            if sh.applied_lsn.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            if let Some(e) = sh.refusal() {
                return Err(e);
            }
            if sh.storage_full.load(Ordering::Acquire) {
                return Err(Error::StorageFull {
                    map_size: self.inner().store.map_size.load(Ordering::Relaxed),
                });
            }
            {
                let mut q = sh.apply.lock();
                q.urgent = true;
                sh.apply_cv.notify_all();
            }
            let mut g = sh.room.lock();
            if sh.applied_lsn.load(Ordering::Acquire) < lsn {
                g = sh.room_cv.wait_timeout(g, Duration::from_millis(10));
            }
            drop(g);
        }
    }

    /// The engine's state and counters.
    pub fn stats(&self) -> DbStats {
        let inner = self.inner();
        let sh = &inner.shared;
        let long = inner.cfg.txn_timeout.unwrap_or(Duration::from_secs(60));
        let (open, oldest, long_lived) = sh.snapshots.census(long);
        DbStats {
            wal: inner.wal.stats(),
            visible_lsn: sh.visible_lsn.load(Ordering::Acquire),
            applied_lsn: sh.applied_lsn.load(Ordering::Acquire),
            checkpoint_lsn: sh.checkpoint_lsn.load(Ordering::Acquire),
            unapplied_bytes: sh.overlay_bytes.load(Ordering::Relaxed),
            replay_estimate_bytes: sh.replay_estimate.load(Ordering::Relaxed),
            open_snapshots: open,
            oldest_snapshot_age: oldest,
            long_lived_snapshots: long_lived,
            map_size: inner.store.map_size.load(Ordering::Relaxed),
            storage_full: sh.storage_full.load(Ordering::Relaxed),
            conflicts: sh.stats.conflicts.load(Ordering::Relaxed),
            apply_batches: sh.stats.apply_batches.load(Ordering::Relaxed),
            applied_ops: sh.stats.applied_ops.load(Ordering::Relaxed),
            map_resizes: sh.stats.map_resizes.load(Ordering::Relaxed),
            map_resizes_postponed: sh.stats.map_resizes_postponed.load(Ordering::Relaxed),
            checkpoints: sh.stats.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Everything the engine measures, now: counters since open, gauges, histograms.
    /// See `docs/operations.md`.
    pub fn metrics(&self) -> crate::Metrics {
        crate::health::metrics(self.inner())
    }

    /// Registers the engine's metrics, prefixed `walmdb_`, in a host's Prometheus registry
    /// (use `Registry::sub_registry_with_label` first to tell several databases apart).
    /// The registry holds no reference that keeps the database open: once it is closed,
    /// its metrics are no longer encoded.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = walmdb::Db::open(dir.path())?;
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// db.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("walmdb_commits_total"));
    /// # Ok::<(), walmdb::Error>(())
    /// ```
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let weak = self.observer();
        let collector = crate::metrics::PrometheusCollector {
            snapshot: move || weak.upgrade().map(|inner| crate::health::metrics(&inner)),
        };
        registry
            .sub_registry_with_prefix("walmdb")
            .register_collector(Box::new(collector));
    }

    /// The engine's health judged by the default [`crate::HealthLimits`].
    pub fn health(&self) -> crate::Health {
        self.health_with(&crate::HealthLimits::default())
    }

    /// The engine's health judged by `limits`.
    pub fn health_with(&self, limits: &crate::HealthLimits) -> crate::Health {
        crate::health::health(self.inner(), limits)
    }

    /// Serves `GET /metrics` (Prometheus text) and `GET /health` (JSON; 503 when
    /// unhealthy) on `addr`, judged by `limits`, until the returned server is dropped.
    /// Give [`crate::DEFAULT_HTTP_ADDR`] (loopback) unless scrapers live elsewhere.
    /// Feature `http`.
    #[cfg(feature = "http")]
    pub fn serve_http(
        &self,
        addr: impl std::net::ToSocketAddrs,
        limits: crate::HealthLimits,
    ) -> Result<crate::MetricsServer> {
        crate::http::MetricsServer::start(self.observer(), addr, limits)
    }

    /// A handle for metrics and health that does not keep the database open.
    pub(crate) fn observer(&self) -> crate::sync::DataWeak<Inner> {
        Arc::downgrade(self.inner.as_ref().expect("open until close or drop"))
    }

    /// What opening found and did.
    pub fn recovery_report(&self) -> &DbRecoveryReport {
        &self.inner().report
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner().cfg
    }

    /// Drains the log, applies everything to LMDB, checkpoints and stops the engine's
    /// threads: a clean reopen replays nothing.
    pub fn close(mut self) -> Result<()> {
        self.shutdown(Stop::Drain)
    }

    /// Stops the engine as a crash would, between any two LMDB transactions of the applier:
    /// no final apply, no checkpoint. Every acknowledged commit is in the log; the next open
    /// replays what LMDB lacks. For recovery tests.
    #[doc(hidden)]
    pub fn simulate_crash(mut self) {
        let _ = self.shutdown(Stop::Abandon);
    }

    fn shutdown(&mut self, how: Stop) -> Result<()> {
        self.shutdown_then(how, |_| Ok(()))
    }

    /// Stops the engine; then, with everything closed but the directory still locked, runs
    /// `then` on the database directory (only if stopping succeeded).
    fn shutdown_then(&mut self, how: Stop, then: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let (Some(applier), Some(checkpointer)) = (self.applier.take(), self.checkpointer.take())
        else {
            return Ok(());
        };
        let Some(inner) = self.inner.as_ref() else {
            return Ok(());
        };
        let sh = &inner.shared;
        let mut result = Ok(());
        if how == Stop::Drain && !inner.wal.is_poisoned() {
            // Everything queued becomes durable, so the applier may apply all of it.
            if let Err(e) = inner.wal.sync() {
                result = Err(e);
            }
        }
        {
            let mut q = sh.apply.lock();
            q.stop = Some(how);
            sh.apply_cv.notify_all();
        }
        if applier.join().is_err() {
            result = result.and(Err(Error::Poisoned {
                cause: "the applier thread panicked".into(),
            }));
        }
        {
            let mut st = sh.checkpoint.lock();
            st.stop = true;
            sh.checkpoint_cv.notify_all();
        }
        if checkpointer.join().is_err() {
            tracing::error!("the checkpoint thread panicked");
        }
        if how == Stop::Drain {
            fail::fail_point!("close-applied-before-checkpoint");
            if let Some(e) = sh.refusal() {
                result = result.and(Err(e));
            } else if sh.applied_lsn.load(Ordering::Acquire)
                < sh.visible_lsn.load(Ordering::Acquire)
            {
                result = result.and(Err(Error::StorageFull {
                    map_size: inner.store.map_size.load(Ordering::Relaxed),
                }));
            }
            if let Err(e) = checkpoint_now(inner) {
                result = result.and(Err(e));
            }
        }
        // The threads are joined: this handle holds the only strong reference but for a
        // metrics scrape in progress (it holds one for microseconds).
        let Some(mut arc) = self.inner.take() else {
            return result;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let inner = loop {
            match Arc::try_unwrap(arc) {
                Ok(inner) => break inner,
                Err(back) if Instant::now() < deadline => {
                    arc = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => {
                    return result.and(Err(Error::Poisoned {
                        cause: "an engine thread still holds the database".into(),
                    }))
                }
            }
        };
        let Inner {
            wal,
            store,
            lock,
            path,
            ..
        } = inner;
        fail::fail_point!("close-checkpointed-before-log-close");
        let wal_result = wal.close();
        // Wait for LMDB to close, so a reopen in this process finds it closed.
        let closing = store.env.clone().prepare_for_closing();
        drop(store);
        closing.wait();
        let result = result.and(wal_result).and_then(|()| then(&path));
        // Only now may another handle open the directory.
        drop(lock);
        result
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown(Stop::Drain) {
            tracing::warn!(error = %e, "closing the database on drop failed");
        }
    }
}

/// Takes the exclusive lock on `<dir>/LOCK` (an `flock`: the kernel drops it when the
/// process dies), so two engines never write one log.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Io(e)),
    }
}

/// Waits while the overlay or the replay estimate is over its bound.
fn wait_for_room(inner: &Inner) -> Result<()> {
    let sh = &inner.shared;
    let limit = inner.cfg.overlay_max_bytes;
    let over = || {
        let bytes = sh.overlay_bytes.load(Ordering::Relaxed);
        if bytes > limit {
            Some(Error::ApplyBacklog {
                what: "unapplied bytes",
                held: bytes as u64,
                limit: limit as u64,
            })
        } else if sh.replay_over.load(Ordering::Relaxed) {
            Some(Error::ApplyBacklog {
                what: "replay bytes",
                held: sh.replay_estimate.load(Ordering::Relaxed),
                limit: inner.cfg.max_replay_bytes,
            })
        } else {
            None
        }
    };
    if over().is_none() {
        return Ok(());
    }
    sh.stats.backlog_waits.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + inner.cfg.wal.backpressure_wait;
    let mut g = sh.room.lock();
    loop {
        let Some(e) = over() else { return Ok(()) };
        if sh.storage_full.load(Ordering::Acquire) {
            return Err(Error::StorageFull {
                map_size: inner.store.map_size.load(Ordering::Relaxed),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            sh.stats.backlog_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        g = sh
            .room_cv
            .wait_timeout(g, (deadline - now).min(Duration::from_millis(10)));
    }
}

/// Encodes `ops` as a log record and commits it through the flusher.
pub(crate) fn commit_ops(
    inner: &Inner,
    ops: Vec<WriteOp>,
    check: Check,
    snapshot: Lsn,
    durability: Option<Durability>,
) -> Result<Lsn> {
    let sh = &inner.shared;
    let started = Instant::now();
    if let Some(e) = sh.refusal() {
        return Err(e);
    }
    if sh.storage_full.load(Ordering::Acquire) {
        return Err(Error::StorageFull {
            map_size: inner.store.map_size.load(Ordering::Relaxed),
        });
    }
    wait_for_room(inner)?;
    let record =
        crate::wal::record::encode_txn(now_micros(), ops.len(), ops.iter().map(WriteOp::as_ref));
    let ticket = Ticket {
        snapshot,
        check,
        writes: Arc::new(TxnWrites { ops }),
    };
    let lsn = inner.wal.commit_with(record, ticket, durability)?;
    let level = durability.unwrap_or(inner.cfg.wal.durability);
    sh.stats.commit_latency.record(level, started.elapsed());
    Ok(lsn)
}

/// What [`Db::compact`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// LMDB's file size before.
    pub bytes_before: u64,
    /// LMDB's file size after.
    pub bytes_after: u64,
    /// The LSN the compacted file holds every commit through (everything: the log holds
    /// nothing after it).
    pub applied_lsn: Lsn,
}

impl Db {
    /// Compacts LMDB's file (free pages dropped, pages renumbered) and closes the database:
    /// checkpoints, writes a compacted copy beside the file, closes the engine and, while
    /// the directory is still locked, renames the copy over the file and syncs the
    /// directory. A crash at any point leaves either file, each holding every commit.
    pub fn compact(mut self) -> Result<CompactReport> {
        let lsn = self.checkpoint()?;
        let inner = self.inner();
        let data = inner.path.join("data");
        let staging = data.join("compacting");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(&staging)?;
        let bytes_before = std::fs::metadata(data.join("data.mdb"))?.len();
        {
            let _no_resize = inner.shared.lmdb_copy.lock();
            inner.store.copy_compacted(&staging.join("data.mdb"))?;
        }
        let applied_lsn = crate::inspect::applied_lsn(&staging)?;
        if applied_lsn != lsn || inner.shared.visible_lsn.load(Ordering::Acquire) != lsn {
            return Err(Error::Inconsistent {
                path: inner.path.clone(),
                reason: format!(
                    "the compacted copy holds LSN {applied_lsn}, the checkpoint LSN {lsn}"
                ),
            });
        }
        let bytes_after = std::fs::metadata(staging.join("data.mdb"))?.len();
        self.shutdown_then(Stop::Drain, |path| {
            let data = path.join("data");
            std::fs::rename(staging.join("data.mdb"), data.join("data.mdb"))?;
            crate::store::sync_dir(&data)?;
            std::fs::remove_dir_all(&staging)?;
            crate::store::sync_dir(&data)
        })?;
        tracing::info!(bytes_before, bytes_after, applied_lsn, "compacted LMDB");
        Ok(CompactReport {
            bytes_before,
            bytes_after,
            applied_lsn,
        })
    }
}

/// A named point in the log a restore can return to; see [`Db::create_restore_point`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestorePoint {
    /// Its name.
    pub name: String,
    /// The LSN of its record: a restore to it holds every commit below this LSN.
    pub lsn: Lsn,
    /// When it was made, microseconds since the Unix epoch.
    pub unix_micros: u64,
}

/// Longest restore point name, in bytes.
pub const MAX_RESTORE_POINT_NAME_LEN: usize = 255;

fn check_restore_point_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidInput {
            what: "restore point name",
            reason: reason.into(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_RESTORE_POINT_NAME_LEN {
        return bad("it is longer than 255 bytes");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

impl Db {
    /// Writes a named restore point into the log (a `Timestamp` record, synced before this
    /// returns). `walmdb::restore` with `RestoreTarget::Name` returns to the state of every
    /// commit before it. Names should be unique; a restore to a repeated name uses the first.
    pub fn create_restore_point(&self, name: &str) -> Result<RestorePoint> {
        check_restore_point_name(name)?;
        let inner = self.inner();
        if let Some(e) = inner.shared.refusal() {
            return Err(e);
        }
        let unix_micros = now_micros();
        let record = Record::Timestamp {
            unix_micros,
            name: name.to_owned(),
        }
        .encode();
        let ticket = Ticket {
            snapshot: 0,
            check: Check::Blind,
            writes: Arc::new(TxnWrites { ops: Vec::new() }),
        };
        let lsn = inner
            .wal
            .commit_with(record, ticket, Some(Durability::EveryWrite))?;
        tracing::info!(name, lsn, "created a restore point");
        Ok(RestorePoint {
            name: name.to_owned(),
            lsn,
            unix_micros,
        })
    }
}

pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Converts a logged operation.
fn write_op(op: Op) -> WriteOp {
    match op {
        Op::Put { table, key, value } => WriteOp::Put {
            table: Arc::from(table),
            key: Arc::from(key),
            value: Arc::from(value),
        },
        Op::Delete { table, key } => WriteOp::Delete {
            table: Arc::from(table),
            key: Arc::from(key),
        },
        Op::CreateTable { table } => WriteOp::CreateTable {
            table: Arc::from(table),
        },
        Op::DropTable { table } => WriteOp::DropTable {
            table: Arc::from(table),
        },
    }
}

/// Replays every log record after LMDB's applied LSN into LMDB, in batches.
fn replay(inner: &Inner, report: &mut DbRecoveryReport) -> Result<()> {
    let from = report.applied_lsn_at_open + 1;
    let mut batch: Vec<(Lsn, WriteOp)> = Vec::new();
    let mut last = report.applied_lsn_at_open;
    let flush = |batch: &mut Vec<(Lsn, WriteOp)>, last: Lsn| -> Result<()> {
        let mut ops: Vec<(Lsn, &WriteOp)> = batch.iter().map(|(l, op)| (*l, op)).collect();
        key_order(&mut ops);
        apply_growing(inner, &ops, last, || true)?;
        fail::fail_point!("replay-batch-applied");
        for (lsn, op) in batch.iter() {
            let table = inner.shared.catalog.get_or_add(op.table());
            let mut st = table.state.write();
            match op {
                WriteOp::Put { .. } | WriteOp::CreateTable { .. } => {
                    Table::note_exists(&mut st, *lsn)
                }
                WriteOp::DropTable { .. } => Table::note_dropped(&mut st, *lsn),
                WriteOp::Delete { .. } => {}
            }
        }
        batch.clear();
        Ok(())
    };
    for item in inner.wal.read_from(from) {
        let rec = item?;
        report.replayed_records += 1;
        report.replayed_bytes += rec.record.payload().len() as u64;
        last = rec.lsn;
        let decoded = rec.record.decode().map_err(|e| Error::Corruption {
            segment: 0,
            offset: 0,
            reason: format!("record at LSN {} does not decode: {e}", rec.lsn),
        })?;
        if let Record::Txn(txn) = decoded {
            batch.extend(txn.ops.into_iter().map(|op| (rec.lsn, write_op(op))));
        }
        if batch.len() >= inner.cfg.apply_max_ops {
            flush(&mut batch, last)?;
        }
    }
    if last > report.applied_lsn_at_open {
        flush(&mut batch, last)?;
    }
    let written = inner.wal.written_lsn();
    if written != last {
        return Err(Error::Inconsistent {
            path: inner.path.clone(),
            reason: format!("replay ended at LSN {last} but the log holds LSN {written}"),
        });
    }
    report.last_lsn = last;
    Ok(())
}

/// Puts a batch's key operations in (table, key) order, keeping LSN order per key (a stable
/// sort), so LMDB writes its pages in order: the same result, fewer page visits, and leaves
/// laid out for scans. A batch with a table create or drop keeps LSN order.
fn key_order(ops: &mut [(Lsn, &WriteOp)]) {
    if ops.iter().all(|(_, op)| op.key().is_some()) {
        ops.sort_by(|a, b| (a.1.table(), a.1.key()).cmp(&(b.1.table(), b.1.key())));
    }
}

/// Applies `ops` through `last` in one LMDB transaction, growing the map when full. While
/// the map is at its maximum (or the disk is full) it waits and tries again, until `give_up`.
fn apply_growing(
    inner: &Inner,
    ops: &[(Lsn, &WriteOp)],
    last: Lsn,
    give_up: impl Fn() -> bool,
) -> Result<()> {
    use crate::store::ApplyError;
    let sh = &inner.shared;
    let store = &inner.store;
    loop {
        let attempt = store
            .create_missing_tables(ops, &sh.catalog)
            .and_then(|()| store.apply(ops, last, &sh.catalog));
        let full = match attempt {
            Ok(()) => {
                if sh.storage_full.swap(false, Ordering::AcqRel) {
                    tracing::info!("LMDB has space again; applying resumed");
                }
                return Ok(());
            }
            Err(ApplyError::MapFull) => match store.next_map_size() {
                Some(size) => {
                    let Some(_no_copy) = sh.lmdb_copy.try_lock() else {
                        // A backup is copying LMDB; grow once it is done.
                        sh.stats
                            .map_resizes_postponed
                            .fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    if sh.snapshots.pause(inner.cfg.resize_wait) {
                        let resized = store.resize(size);
                        sh.snapshots.resume();
                        resized?;
                        sh.stats.map_resizes.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(map_size = size, "grew the LMDB map");
                    } else {
                        sh.stats
                            .map_resizes_postponed
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("map resize postponed: transactions stayed open");
                    }
                    continue;
                }
                None => Error::StorageFull {
                    map_size: store.map_size.load(Ordering::Relaxed),
                },
            },
            Err(ApplyError::Other(Error::Io(e))) if is_disk_full(&e) => Error::Io(e),
            Err(ApplyError::Other(e)) => return Err(e),
        };
        if !sh.storage_full.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %full, "LMDB is full; commits are refused until space exists");
            sh.notify_room();
        }
        if give_up() {
            return Err(full);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The applier: applies published commits to LMDB in LSN order, in large transactions, and
/// retires overlay versions no snapshot needs. Never applies what the log does not hold
/// durably (LMDB must never be ahead of the log).
fn applier_loop(inner: &Inner) {
    let sh = &inner.shared;
    let mut backlog: VecDeque<(Lsn, Arc<TxnWrites>)> = VecDeque::new();
    loop {
        let (batch, stop) = {
            let mut q = sh.apply.lock();
            while q.items.is_empty() && q.stop.is_none() {
                q.applier_waiting = true;
                let wait = if backlog.is_empty() { 200 } else { 5 };
                q = sh.apply_cv.wait_timeout(q, Duration::from_millis(wait));
                q.applier_waiting = false;
                if !backlog.is_empty() {
                    break;
                }
            }
            // Gather for `apply_interval` from the oldest item, or up to `apply_max_ops`.
            while q.stop.is_none() && !q.urgent && q.ops < inner.cfg.apply_max_ops {
                let Some(oldest) = q.oldest_at else { break };
                let Some(left) = inner.cfg.apply_interval.checked_sub(oldest.elapsed()) else {
                    break;
                };
                if left.is_zero() {
                    break;
                }
                q.wake_at_ops = Some(inner.cfg.apply_max_ops);
                q = sh.apply_cv.wait_timeout(q, left);
                q.wake_at_ops = None;
            }
            if q.stop == Some(Stop::Abandon) {
                return;
            }
            let mut ops = 0;
            let mut batch = Vec::new();
            q.applying_since = q.items.front().map(|item| item.2);
            while let Some((_, w, _)) = q.items.front() {
                if !batch.is_empty() && ops + w.ops.len() > inner.cfg.apply_max_ops {
                    break;
                }
                ops += w.ops.len();
                let (lsn, writes, _) = q.items.pop_front().expect("front exists");
                batch.push((lsn, writes));
            }
            q.ops -= ops;
            q.urgent = false;
            q.oldest_at = if q.items.is_empty() {
                None
            } else {
                Some(Instant::now())
            };
            (batch, q.stop)
        };
        if let Some((last, _)) = batch.last() {
            let last = *last;
            while inner.wal.durable_lsn() < last {
                match inner.wal.sync() {
                    Ok(_) => {}
                    // A full queue only delays the sync.
                    Err(Error::Backpressure { .. }) => std::thread::sleep(Duration::from_millis(1)),
                    Err(e) => {
                        sh.fail(format!("the log could not be synced for the applier: {e}"));
                        return;
                    }
                }
            }
            let mut ops: Vec<(Lsn, &WriteOp)> = batch
                .iter()
                .flat_map(|(lsn, w)| w.ops.iter().map(move |op| (*lsn, op)))
                .collect();
            key_order(&mut ops);
            let give_up = || sh.apply.lock().stop.is_some();
            let span = tracing::debug_span!(
                "walmdb.apply",
                first_lsn = batch.first().map_or(last, |b| b.0),
                last_lsn = last,
                ops = ops.len()
            );
            let _entered = span.enter();
            let started = Instant::now();
            if let Err(e) = apply_growing(inner, &ops, last, give_up) {
                // Giving up on a full store to stop is no failure; any other error is, and
                // nothing here retries it: the engine refuses commits until reopened.
                let full = match &e {
                    Error::StorageFull { .. } => true,
                    Error::Io(io) => is_disk_full(io),
                    _ => false,
                };
                if !full {
                    sh.fail(format!("applying to LMDB failed: {e}"));
                }
                return;
            }
            fail::fail_point!("applied-in-lmdb-before-published");
            sh.applied_lsn.store(last, Ordering::Release);
            let took = started.elapsed();
            sh.apply.lock().applying_since = None;
            let st = &sh.stats;
            st.apply_batches.fetch_add(1, Ordering::Relaxed);
            st.applied_ops
                .fetch_add(ops.len() as u64, Ordering::Relaxed);
            st.apply_latency.record_duration(took);
            st.apply_micros
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            let op_bytes: usize = ops.iter().map(|(_, op)| op_bytes(op)).sum();
            st.applied_op_bytes
                .fetch_add(op_bytes as u64, Ordering::Relaxed);
            drop(_entered);
            backlog.extend(batch);
        }
        retire(sh, &mut backlog);
        if stop == Some(Stop::Drain) && sh.apply.lock().items.is_empty() {
            return;
        }
    }
}

/// Removes from the overlay the versions of applied commits no snapshot needs.
pub(crate) fn retire(sh: &Shared, backlog: &mut VecDeque<(Lsn, Arc<TxnWrites>)>) {
    if backlog.is_empty() {
        return;
    }
    let applied = sh.applied_lsn.load(Ordering::Acquire);
    let horizon = if crate::sync::bug(crate::sync::Bug::RetireIgnoringSnapshots) {
        applied
    } else {
        sh.snapshots.retire_horizon(applied)
    };
    let mut freed = (0, 0);
    while backlog.front().is_some_and(|(lsn, _)| *lsn <= horizon) {
        let (_, writes) = backlog.pop_front().expect("front exists");
        let mut ops = writes.ops.iter().peekable();
        while let Some(first) = ops.next() {
            let name = first.table().clone();
            let Some(table) = sh.catalog.get(&name) else {
                continue;
            };
            let mut keys: Vec<&[u8]> = first.key().into_iter().collect();
            while let Some(op) = ops.next_if(|op| op.table() == &name) {
                keys.extend(op.key());
            }
            let (bytes, versions) = table.retire(keys.into_iter(), horizon);
            freed.0 += bytes;
            freed.1 += versions;
        }
    }
    if freed.1 > 0 {
        sh.stats
            .overlay_versions
            .fetch_sub(freed.1 as u64, Ordering::Relaxed);
    }
    if freed.0 > 0 {
        sh.overlay_bytes.fetch_sub(freed.0, Ordering::Relaxed);
        sh.notify_room();
    }
}

/// Key and value bytes of an operation.
fn op_bytes(op: &WriteOp) -> usize {
    match op {
        WriteOp::Put { key, value, .. } => key.len() + value.len(),
        WriteOp::Delete { key, .. } => key.len(),
        WriteOp::CreateTable { table } | WriteOp::DropTable { table } => table.len(),
    }
}

/// `ENOSPC`: the disk is full, which may pass.
fn is_disk_full(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
}

/// Syncs LMDB and retires the log segments it covers. A failed LMDB sync is never retried:
/// the kernel may have dropped the pages it could not write, so a later sync that succeeds
/// would prove nothing, and retiring log segments on its word could lose commits. The
/// engine fails instead, and reopening replays the log.
fn checkpoint_now(inner: &Inner) -> Result<()> {
    let sh = &inner.shared;
    let _no_backup_copying = sh.retirement.lock();
    let span = tracing::info_span!(
        "walmdb.checkpoint",
        applied_lsn = sh.applied_lsn.load(Ordering::Acquire),
        segments_retired = tracing::field::Empty
    );
    let _entered = span.enter();
    let started = Instant::now();
    let retired_before = inner.wal.stats().segments_retired;
    let result = checkpoint_with(sh, &inner.wal, || inner.store.force_sync());
    sh.stats
        .checkpoint_duration
        .record_duration(started.elapsed());
    match &result {
        Ok(()) => {
            let retired = inner.wal.stats().segments_retired - retired_before;
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
pub(crate) fn checkpoint_with<S: crate::Sequencer>(
    sh: &Shared,
    wal: &Wal<S>,
    force_sync: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if let Some(e) = sh.refusal() {
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
            return Err(sh.refusal().unwrap_or(e));
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
fn checkpoint_loop(inner: &Inner) {
    let sh = &inner.shared;
    let cfg = &inner.cfg;
    let mut last = Instant::now();
    // Log bytes written when the last checkpoint began, and unapplied bytes then.
    let mut base = (inner.wal.stats().bytes_written, 0u64);
    loop {
        {
            let mut st = sh.checkpoint.lock();
            if !st.stop {
                st = sh.checkpoint_cv.wait_timeout(st, Duration::from_millis(50));
            }
            if st.stop {
                return;
            }
        }
        let written = inner.wal.stats().bytes_written;
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
        match checkpoint_now(inner) {
            Ok(()) => {
                base = (written, unapplied);
                let estimate = inner.wal.stats().bytes_written.saturating_sub(base.0) + base.1;
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
