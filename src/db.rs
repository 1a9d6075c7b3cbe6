//! The database handle: open and close, transactions, tables, and the doors to the
//! engine's operations (checkpoint, metrics, health, backup, compaction). Everything behind
//! it lives in `engine`; this file holds the handle only.

use std::hash::BuildHasher;
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, Isolation};
use crate::engine::{CompactReport, DbRecoveryReport, Engine, RestorePoint, Running, Shutdown};
use crate::error::{Error, Result};
use crate::lsn::{Lineage, Lsn};
use crate::ops::backup::BackupManifest;
use crate::sync::Ordering;
use crate::txn::{ReadTxn, Snapshot, WriteTxn};
use crate::wal::WalStats;

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
    /// Bytes of committed versions not yet evicted from the overlay.
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
    /// Of `map_resizes`, those made ahead of need: LMDB used half the map and no
    /// transaction stayed open.
    pub map_resizes_ahead: u64,
    /// Checkpoints done.
    pub checkpoints: u64,
}

/// An open database: a write-ahead log in front of LMDB. A cheap handle: clone it for each
/// thread or task that uses the database (clones share one engine); transactions borrow
/// the handle they began from ([`Db::read_owned`] owns one instead). [`Db::close`] closes
/// the database for every clone; dropping the last clone closes it too.
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
#[derive(Debug, Clone)]
pub struct Db {
    running: crate::sync::DataArc<Running>,
}

impl Db {
    /// Opens (creating, or recovering) the database in directory `path` with defaults.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Self::open_with(path, Config::default())
    }

    /// Opens (creating, or recovering) the database in directory `path`: reads LMDB's
    /// applied LSN, replays every log record after it, and starts the engine's threads.
    pub fn open_with(path: impl AsRef<Path>, cfg: Config) -> Result<Db> {
        let fs = crate::sync::DynArc::new(crate::wal::fs::StdFs);
        Self::open_running(Running::open(path.as_ref(), cfg, fs, None))
    }

    fn open_running(running: Result<Running>) -> Result<Db> {
        Ok(Db {
            running: crate::sync::DataArc::new(running?),
        })
    }

    /// [`Db::open_with`], with the log's files behind `fs` (LMDB's stay on the real file
    /// system, under `path`). For crash and fault tests with `SimFs`.
    #[cfg(feature = "internals")]
    pub fn open_with_fs(path: impl AsRef<Path>, cfg: Config, fs: crate::FsRef) -> Result<Db> {
        Self::open_running(Running::open(path.as_ref(), cfg, fs, None))
    }

    /// [`Db::open_with_fs`], telling `lmdb` of every LMDB commit and sync: for power-loss
    /// tests that restore an image of LMDB's file taken at one of its commits.
    #[cfg(feature = "internals")]
    pub fn open_observed(
        path: impl AsRef<Path>,
        cfg: Config,
        fs: crate::FsRef,
        lmdb: crate::store::LmdbObserverRef,
    ) -> Result<Db> {
        Self::open_running(Running::open(path.as_ref(), cfg, fs, Some(lmdb)))
    }

    fn engine(&self) -> &Engine {
        self.running.engine()
    }

    /// The engine, or `Error::Closed` once the database is closed.
    fn open_engine(&self) -> Result<&Engine> {
        let engine = self.engine();
        if engine.state.is_closed() {
            return Err(Error::Closed);
        }
        Ok(engine)
    }

    /// Begins a read transaction: a consistent snapshot of every commit that returned
    /// before it began. It is `Send`.
    pub fn read(&self) -> Result<ReadTxn<'_>> {
        Ok(ReadTxn::new(Snapshot::begin(self.engine())?))
    }

    /// Begins a read transaction that owns a clone of this handle (`ReadTxn<'static>`), so
    /// it can be moved into a thread or task, or held across an `.await`, with no borrow
    /// of the handle; otherwise as [`Db::read`]. The database stays open while it lives,
    /// [`Db::close`] notwithstanding (LMDB and the directory are released when it ends).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = walmdb::Db::open(dir.path())?;
    /// db.update(|t| t.put("t", b"k", b"v"))?;
    /// let txn = db.read_owned()?;
    /// let found = std::thread::spawn(move || txn.get("t", b"k").map(|v| v.map(<[u8]>::to_vec)));
    /// assert_eq!(found.join().unwrap()?, Some(b"v".to_vec()));
    /// # Ok::<(), walmdb::Error>(())
    /// ```
    pub fn read_owned(&self) -> Result<ReadTxn<'static>> {
        let handle = self.clone();
        // SAFETY: the engine lives in the handle's shared allocation, which does not move
        // and which the transaction keeps until after its snapshot has dropped. Every
        // borrow a `ReadTxn` hands out is tied to a borrow of the transaction itself.
        let engine: &'static Engine = unsafe { &*std::ptr::from_ref(handle.engine()) };
        Ok(ReadTxn::owning(Snapshot::begin(engine)?, handle))
    }

    /// Begins a write transaction at the configured isolation.
    pub fn write(&self) -> Result<WriteTxn<'_>> {
        self.write_with(self.engine().cfg.isolation)
    }

    /// Begins a write transaction at `isolation`.
    pub fn write_with(&self, isolation: Isolation) -> Result<WriteTxn<'_>> {
        Ok(WriteTxn::new(self.open_engine()?, isolation))
    }

    /// Runs `f` in a write transaction and commits it, running it again (at most
    /// `Config::update_attempts` times in all) while the commit meets a conflict. An error
    /// from `f` aborts the transaction and is returned; [`Db::try_update`] lets `f` return
    /// the application's own error type.
    pub fn update<T>(&self, f: impl FnMut(&mut WriteTxn<'_>) -> Result<T>) -> Result<T> {
        self.try_update(f)
    }

    /// [`Db::update`] with the application's error type: `f` returns `Result<T, E>` for any
    /// `E` a walmdb error converts into; an error from `f` aborts the transaction and is
    /// returned as it is, and only conflicts at commit are retried. Name `E` where type
    /// inference cannot see it (`Ok::<_, MyError>(...)`, or `db.try_update::<_, MyError>`).
    ///
    /// ```
    /// #[derive(Debug)]
    /// enum AppError { Db(walmdb::Error), Overdrawn }
    /// impl From<walmdb::Error> for AppError {
    ///     fn from(e: walmdb::Error) -> Self { AppError::Db(e) }
    /// }
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = walmdb::Db::open(dir.path()).unwrap();
    /// let withdrawn = db.try_update(|txn| {
    ///     let balance = txn.get("accounts", b"alice")?.map_or(0, |v| v[0]);
    ///     if balance < 10 {
    ///         return Err(AppError::Overdrawn); // aborts: nothing is written
    ///     }
    ///     txn.put("accounts", b"alice", &[balance - 10])?;
    ///     Ok(10)
    /// });
    /// assert!(matches!(withdrawn, Err(AppError::Overdrawn)));
    /// ```
    pub fn try_update<T, E: From<Error>>(
        &self,
        mut f: impl FnMut(&mut WriteTxn<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut txn = self.write()?;
            let out = f(&mut txn)?;
            match txn.commit() {
                Ok(_) => return Ok(out),
                Err(e) if e.is_conflict() && attempt < self.engine().cfg.update_attempts => {
                    // Back off a little, more each time and by a random share, so
                    // committers that met each other do not meet again in lockstep.
                    let base = 20u64 << attempt.min(8);
                    let jitter = std::hash::RandomState::new().hash_one(attempt) % base;
                    std::thread::sleep(Duration::from_micros(base / 2 + jitter));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// True if table `name` exists now. (A `Result`, as [`ReadTxn::table_exists`] is.)
    pub fn table_exists(&self, name: &str) -> Result<bool> {
        Ok(self.open_engine()?.table_exists(name))
    }

    /// The tables that exist now, sorted by name.
    pub fn tables(&self) -> Result<Vec<String>> {
        let engine = self.open_engine()?;
        let v = engine.state.visible_lsn.load(Ordering::Acquire);
        Ok(engine.state.catalog.names_at(v))
    }

    /// Creates table `name` (a commit of its own) and returns its LSN; if the table exists,
    /// commits nothing and returns the visible LSN.
    pub fn create_table(&self, name: &str) -> Result<Lsn> {
        self.open_engine()?.create_table(name)
    }

    /// Drops table `name` and everything in it (a commit of its own). Transactions that
    /// touched it and commit later get `Error::Conflict`.
    pub fn drop_table(&self, name: &str) -> Result<Lsn> {
        self.open_engine()?.drop_table(name)
    }

    /// Makes every commit so far durable in the log; returns the durable LSN.
    pub fn sync(&self) -> Result<Lsn> {
        self.open_engine()?.wal.sync()
    }

    /// Applies every commit so far to LMDB, syncs LMDB and retires the log segments it
    /// covers. Returns the checkpoint LSN.
    pub fn checkpoint(&self) -> Result<Lsn> {
        self.open_engine()?.checkpoint()
    }

    /// Checks every entry LMDB holds against its checksum, and the structure around it, from
    /// one read snapshot (see [`ScrubReport`](crate::ScrubReport)). Commits and reads go on
    /// meanwhile; the snapshot postpones a growth of LMDB's map while it lasts. Counted in
    /// the metrics (`scrubs`, `scrub_findings`, `scrub_failures`, `last_scrub_*`);
    /// `health()` is Unhealthy while the last scrub's findings stand. `Config::scrub_interval`
    /// runs the same scrub in the background.
    pub fn scrub(&self) -> Result<crate::ScrubReport> {
        self.scrub_with(None, |_| {})
    }

    /// [`Db::scrub`] reading at most `max_bytes_per_sec` (if given; 0 reads unthrottled),
    /// calling `progress` every few thousand entries.
    pub fn scrub_with(
        &self,
        max_bytes_per_sec: Option<u64>,
        mut progress: impl FnMut(crate::ScrubProgress<'_>),
    ) -> Result<crate::ScrubReport> {
        self.open_engine()?.scrub(max_bytes_per_sec, &mut progress)
    }

    /// Follows committed transactions from LSN `from` on, in LSN order: each a [`Change`](crate::Change)
    /// (its LSN, commit time and operations), delivered once it is visible. `from` may be any
    /// LSN the log or its archive (`WalConfig::archive`) still holds (`Error::Retired`
    /// otherwise), or above the newest commit to follow only what comes next. Resume after a change with
    /// `subscribe(change.lsn + 1)`. A transaction logged in pieces (over `max_record_bytes`)
    /// has its last piece's LSN and comes whole from any `from` up to it, its first pieces
    /// read from wherever the log or the archive keeps them.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = walmdb::Db::open(dir.path())?;
    /// let mut feed = db.subscribe(1)?.tables(["users"]);
    /// db.update(|t| t.put("users", b"alice", b"1"))?;
    /// let change = feed.next_change()?;
    /// assert_eq!(change.ops.len(), 1);
    /// # Ok::<(), walmdb::Error>(())
    /// ```
    pub fn subscribe(&self, from: Lsn) -> Result<crate::Subscription<'_>> {
        crate::Subscription::new(self.open_engine()?, from)
    }

    /// Waits until LMDB holds every commit through `lsn`.
    pub fn wait_applied(&self, lsn: Lsn) -> Result<()> {
        self.open_engine()?.wait_applied(lsn)
    }

    /// The engine's state and counters.
    pub fn stats(&self) -> DbStats {
        let engine = self.engine();
        let sh = &engine.state;
        let long = engine.cfg.txn_timeout.unwrap_or(Duration::from_secs(60));
        let (open, oldest, long_lived) = sh.snapshots.census(long);
        DbStats {
            wal: engine.wal.stats(),
            visible_lsn: sh.visible_lsn.load(Ordering::Acquire),
            applied_lsn: sh.applied_lsn.load(Ordering::Acquire),
            checkpoint_lsn: sh.checkpoint_lsn.load(Ordering::Acquire),
            unapplied_bytes: sh.overlay_bytes.load(Ordering::Relaxed),
            replay_estimate_bytes: sh.replay_estimate.load(Ordering::Relaxed),
            open_snapshots: open,
            oldest_snapshot_age: oldest,
            long_lived_snapshots: long_lived,
            map_size: engine.store.map_size.load(Ordering::Relaxed),
            storage_full: sh.storage_full.load(Ordering::Relaxed),
            conflicts: sh.stats.conflicts.load(Ordering::Relaxed),
            apply_batches: sh.stats.apply_batches.load(Ordering::Relaxed),
            applied_ops: sh.stats.applied_ops.load(Ordering::Relaxed),
            map_resizes: sh.stats.map_resizes.load(Ordering::Relaxed),
            map_resizes_postponed: sh.stats.map_resizes_postponed.load(Ordering::Relaxed),
            map_resizes_ahead: sh.stats.map_resizes_ahead.load(Ordering::Relaxed),
            checkpoints: sh.stats.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Everything the engine measures, now: counters since open, gauges, histograms.
    /// See `docs/operations.md`.
    pub fn metrics(&self) -> crate::Metrics {
        crate::ops::metrics::snapshot(self.engine())
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
        let weak = self.running.observer();
        let collector = crate::ops::metrics::PrometheusCollector {
            snapshot: move || {
                weak.upgrade()
                    .filter(|engine| !engine.state.is_closed())
                    .map(|engine| crate::ops::metrics::snapshot(&engine))
            },
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
        crate::ops::health::health(self.engine(), limits)
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
        crate::ops::http::MetricsServer::start(self.running.observer(), addr, limits)
    }

    /// Backs the database up into `dir` (which must not exist or be empty) while it serves
    /// reads and commits: a compacted copy of LMDB taken at one of its transactions, the
    /// log from there through every commit acknowledged before this call, and a
    /// `MANIFEST` with LSNs, times and a CRC32 of every file. Segments are not retired
    /// and LMDB's map does not grow while it copies. Everything is synced before it
    /// returns. `walmdb::restore` brings it (and an archive) back.
    ///
    /// ```
    /// use walmdb::{restore, Db, RestoreOptions, RestoreTarget};
    /// # let root = tempfile::tempdir()?;
    /// # let (data, backup, restored) = (root.path().join("db"), root.path().join("backup"), root.path().join("restored"));
    /// let db = Db::open(&data)?;
    /// db.update(|t| t.put("t", b"k", b"v"))?;
    /// db.backup(&backup)?;
    /// restore(&backup, &restored, &RestoreTarget::Latest, &RestoreOptions::default())?;
    /// let copy = Db::open(&restored)?;
    /// assert_eq!(copy.read()?.get("t", b"k")?, Some(&b"v"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backup(&self, dir: impl AsRef<Path>) -> Result<BackupManifest> {
        crate::ops::backup::backup(self.open_engine()?, dir.as_ref())
    }

    /// Writes a named restore point into the log (a `Timestamp` record, synced before this
    /// returns). `walmdb::restore` with `RestoreTarget::Name` returns to the state of every
    /// commit before it. Names should be unique; a restore to a repeated name uses the first.
    pub fn create_restore_point(&self, name: &str) -> Result<RestorePoint> {
        self.open_engine()?.create_restore_point(name)
    }

    /// Closes the database, as [`Db::close`] does, and compacts LMDB's file (free pages
    /// dropped, pages renumbered): once every transaction has ended, writes a compacted
    /// copy beside the file; once LMDB has closed, while the directory is still locked,
    /// renames the copy over the file and syncs the directory. A crash at any point leaves
    /// either file, each holding every commit. A transaction still open (of any clone)
    /// `Config::resize_wait` after closing gets `Error::TransactionsOpen`: closed, not
    /// compacted.
    pub fn compact(&self) -> Result<CompactReport> {
        self.running.compact()
    }

    /// How long after `open` began LMDB held every commit the open replayed: `open` returns
    /// once the log is read and its newest commits are in the overlay (visible to reads and
    /// commits), and the applier applies those in the background. `None` while it still is.
    pub fn catch_up(&self) -> Option<Duration> {
        self.engine().state.catch_up.took()
    }

    /// What opening found and did.
    pub fn recovery_report(&self) -> &DbRecoveryReport {
        &self.engine().report
    }

    /// The database's identity and timeline (`docs/wal-format.md`): recorded in every
    /// segment of its log, in its archived segments' names and in its backups.
    pub fn lineage(&self) -> Lineage {
        self.engine().wal.lineage()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.engine().cfg
    }

    /// Closes the database, for this handle and every clone of it: refuses new work,
    /// writes and syncs every commit already queued (async ones handed over included),
    /// applies everything to LMDB, checkpoints and stops the engine's threads, so a clean
    /// reopen replays nothing. Afterwards transactions, commits, syncs, checkpoints and
    /// waits get `Error::Closed` (as does a second `close`); commits racing with it either
    /// land (and are applied) or get `Error::Closed`.
    ///
    /// LMDB and the directory's lock are released before it returns, so this process may
    /// open the database again at once, unless a transaction (of any clone, or an owned
    /// one) is still open after a short wait: then they are released when the last of
    /// those transactions and handles is dropped.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let db = walmdb::Db::open(dir.path())?;
    /// let worker = db.clone();
    /// std::thread::spawn(move || worker.update(|t| t.put("t", b"k", b"v"))).join().unwrap()?;
    /// db.close()?;
    /// assert!(matches!(db.read(), Err(walmdb::Error::Closed)));
    /// let db = walmdb::Db::open(dir.path())?; // reopened at once
    /// assert_eq!(db.read()?.get("t", b"k")?, Some(&b"v"[..]));
    /// # Ok::<(), walmdb::Error>(())
    /// ```
    pub fn close(&self) -> Result<()> {
        self.running.shutdown(Shutdown::Drain)
    }

    /// Stops the engine as a crash would, between any two LMDB transactions of the applier:
    /// no final apply, no checkpoint. Every acknowledged commit is in the log; the next open
    /// replays what LMDB lacks. For recovery tests.
    #[cfg(feature = "internals")]
    pub fn simulate_crash(self) {
        let _ = self.running.shutdown(Shutdown::Abandon);
    }

    /// Transactions that had to wait to begin because a map resize paused them.
    #[cfg(feature = "internals")]
    pub fn transactions_held_off_by_resizes(&self) -> u64 {
        self.running.engine().state.snapshots.held_off()
    }

    /// Calls on LMDB's environment (sync, info, copy) that ran while the map was being
    /// resized: 0 unless the exclusion that keeps them off unmapped pages is broken.
    #[cfg(feature = "internals")]
    pub fn lmdb_calls_during_resize(&self) -> u64 {
        self.running.engine().store.calls_during_resize()
    }
}
