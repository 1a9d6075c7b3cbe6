//! The LMDB side: the environment, its metadata, and `apply` ([`apply`]), which writes a
//! batch of committed transactions and their highest LSN in one LMDB transaction.
//!
//! Layout (store format 3), every value ending in a checksum over its database's name, the
//! key and the value ([`seal`]):
//! - `walmdb.meta`: `format` -> `{version: u32 | crc}`, `applied_lsn` -> `{lsn: u64 | crc}`.
//! - `walmdb.tables`: table name -> `{created_lsn: u64 | entries: u64 | digest: u64 | crc}`,
//!   for tables that exist ([`tally`]); kept in step with the table's entries by `apply`.
//! - `t.<name>`: one LMDB table per user table, key -> `{value | crc}`.
//!
//! A format 1 or 2 store is migrated when opened, in one LMDB transaction.
//!
//! The environment runs with `NO_META_SYNC` (never `NO_SYNC` or `MAP_ASYNC`): a crash may
//! undo the newest LMDB transaction, never corrupt the file, and the log replays what was
//! undone. A checkpoint's `force_sync` makes the meta page durable.

use std::path::{Path, PathBuf};

use heed::{EnvFlags, EnvOpenOptions, MdbError, RoTxn, WithoutTls};

mod append;
mod apply;
pub(crate) use apply::{ApplyOps, BatchApplied};
mod env;
mod migrate;
pub(crate) mod pages;
pub(crate) mod read_only;
pub(crate) mod scrub;
pub(crate) mod tally;
use crate::seal::open_v1;
pub(crate) use crate::seal::Seed;
use tally::TableRecord;

use crate::catalog::{Catalog, Dbi};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, RwLock};

/// The store format this build reads and writes.
pub const STORE_FORMAT_VERSION: u32 = 3;

pub(crate) const META_DB: &str = "walmdb.meta";
pub(crate) const TABLES_DB: &str = "walmdb.tables";
pub(crate) const KEY_FORMAT: &[u8] = b"format";
pub(crate) const KEY_APPLIED: &[u8] = b"applied_lsn";

pub(crate) type Env = heed::Env<WithoutTls>;
pub(crate) type LmdbReadTxn<'e> = RoTxn<'e, WithoutTls>;

/// One write of an applied transaction.
#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    Put {
        table: crate::sync::DataArc<str>,
        key: crate::bytes::SharedBytes,
        value: crate::bytes::SharedBytes,
    },
    Delete {
        table: crate::sync::DataArc<str>,
        key: crate::bytes::SharedBytes,
    },
    CreateTable {
        table: crate::sync::DataArc<str>,
    },
    DropTable {
        table: crate::sync::DataArc<str>,
    },
}

impl WriteOp {
    /// A put of `value`, or a delete where it is `None` (a buffered write's shape).
    pub fn put_or_delete(
        table: crate::sync::DataArc<str>,
        key: crate::bytes::SharedBytes,
        value: Option<crate::bytes::SharedBytes>,
    ) -> WriteOp {
        match value {
            Some(value) => WriteOp::Put { table, key, value },
            None => WriteOp::Delete { table, key },
        }
    }

    pub fn table(&self) -> &crate::sync::DataArc<str> {
        match self {
            WriteOp::Put { table, .. }
            | WriteOp::Delete { table, .. }
            | WriteOp::CreateTable { table }
            | WriteOp::DropTable { table } => table,
        }
    }

    pub fn as_ref(&self) -> crate::wal::log::record::OpRef<'_> {
        use crate::wal::log::record::OpRef;
        match self {
            WriteOp::Put { table, key, value } => OpRef::Put { table, key, value },
            WriteOp::Delete { table, key } => OpRef::Delete { table, key },
            WriteOp::CreateTable { table } => OpRef::CreateTable { table },
            WriteOp::DropTable { table } => OpRef::DropTable { table },
        }
    }

    pub fn shared_key(&self) -> Option<&crate::bytes::SharedBytes> {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key, .. } => Some(key),
            _ => None,
        }
    }

    pub fn key(&self) -> Option<&[u8]> {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Bytes its version is charged in the overlay (0 for a table create or drop).
    pub fn overlay_cost(&self) -> usize {
        match self {
            WriteOp::Put { key, value, .. } => crate::overlay::version_cost(key, Some(value)),
            WriteOp::Delete { key, .. } => crate::overlay::version_cost(key, None),
            WriteOp::CreateTable { .. } | WriteOp::DropTable { .. } => 0,
        }
    }
}

/// A test hook told of every LMDB commit and sync, so crash tests can keep an image of
/// LMDB's file at each commit and restore one at a simulated power loss (LMDB's own I/O
/// cannot go through the log's [`Fs`](crate::Fs)). Not for production use.
#[doc(hidden)]
pub trait LmdbObserver: Send + Sync + std::fmt::Debug {
    /// The environment in `data_dir` is open; `data.mdb` is as the last process left it.
    fn opened(&self, data_dir: &Path);
    /// This environment's `n`-th write transaction (from 1) committed. Called on the
    /// committing thread before any other LMDB write begins, so `data_dir/data.mdb` holds
    /// exactly that commit.
    fn committed(&self, data_dir: &Path, n: u64);
    /// A sync returned: LMDB's file durably holds commit `n` or a later one (0: the state
    /// at open).
    fn synced(&self, n: u64);
}

/// Shared handle to an [`LmdbObserver`].
pub type LmdbObserverRef = crate::sync::DynArc<dyn LmdbObserver>;

/// The observer and what it needs to know.
#[derive(Debug)]
struct Observed {
    observer: LmdbObserverRef,
    dir: PathBuf,
    commits: AtomicU64,
}

impl Observed {
    fn committed(&self) {
        let n = self.commits.fetch_add(1, Ordering::AcqRel) + 1;
        self.observer.committed(&self.dir, n);
    }
}

/// Why an apply did not commit.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// The map is full: grow it and try again.
    MapFull,
    /// Anything else.
    Other(Error),
}

impl From<std::io::Error> for ApplyError {
    fn from(e: std::io::Error) -> Self {
        ApplyError::Other(Error::Io(e))
    }
}

pub(crate) fn lmdb_err(op: &'static str) -> impl Fn(heed::Error) -> Error {
    move |e| match e {
        heed::Error::Io(io) => Error::Io(io),
        heed::Error::Mdb(MdbError::Corrupted | MdbError::PageNotFound) => Error::StoreCorrupted {
            op,
            message: e.to_string(),
        },
        other => Error::Lmdb {
            op,
            message: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

/// The LMDB environment and its metadata tables.
#[derive(Debug)]
pub(crate) struct Store {
    env: env::EnvSlot,
    meta: Dbi,
    tables: Dbi,
    pub map_size: AtomicUsize,
    pub max_map_size: usize,
    pub max_readers: u32,
    /// The applied LSN of the last LMDB transaction the applier committed, keyed by that
    /// transaction's id, so a read transaction of that id skips reading it from LMDB.
    /// Written only by the applier (and once at open, before it starts): `latest_txn` is
    /// zeroed first and set last, so a reader that sees its own id before and after loading
    /// `latest_applied` loaded that id's value.
    latest_txn: AtomicU64,
    latest_applied: AtomicU64,
    observed: Option<Observed>,
    /// Held shared by every call on the environment outside a transaction (sync, info,
    /// stat, copy) and exclusively by a map resize: `mdb_env_set_mapsize` unmaps the pages
    /// those calls read. Transactions are kept off by `Snapshots::pause` instead.
    map_gate: RwLock<()>,
    /// Set while the map is resized. A call on the environment that finds it set counts
    /// itself in `calls_during_resize`, which stays 0 while the gate works (tests check it).
    resizing: AtomicBool,
    calls_during_resize: AtomicU64,
    /// The environment's figures as last read, for a scrape while the map is resized.
    figures: Mutex<EnvFigures>,
}

/// LMDB's figures for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EnvFigures {
    /// Bytes of the map up to LMDB's last used page.
    pub map_used_bytes: u64,
    pub readers_used: u32,
}

/// What opening the store found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub applied_lsn: Lsn,
}

impl Store {
    /// Opens (creating) the store in `dir` and registers its tables in `catalog`.
    pub fn open(
        dir: &Path,
        cfg: &crate::Config,
        catalog: &Catalog,
        observer: Option<LmdbObserverRef>,
    ) -> Result<(Store, Opened)> {
        crate::layout::create_private_dir(dir)?;
        let page = page_size();
        let existing =
            std::fs::metadata(crate::layout::lmdb_file(dir)).map_or(0, |m| m.len() as usize);
        let map_size = round_up(cfg.map_size.max(existing), page);
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(map_size)
            .max_readers(cfg.max_readers)
            .max_dbs(cfg.max_tables.saturating_add(2));
        // SAFETY: NO_META_SYNC keeps the file consistent across a crash (see module docs);
        // the environment is opened once per process by `Db::open`.
        let env = unsafe {
            opts.flags(EnvFlags::NO_META_SYNC);
            opts.open(dir)
        }
        .map_err(|e| match lmdb_err("open")(e) {
            Error::Io(io) => Error::Io(crate::layout::io_at(dir)(io)),
            other => other,
        })?;
        let observed = observer.map(|observer| {
            observer.opened(dir);
            Observed {
                observer,
                dir: dir.to_owned(),
                commits: AtomicU64::new(0),
            }
        });
        let mut wtxn = env.write_txn().map_err(lmdb_err("begin"))?;
        let meta: Dbi = env
            .create_database(&mut wtxn, Some(META_DB))
            .map_err(lmdb_err("create meta table"))?;
        let tables: Dbi = env
            .create_database(&mut wtxn, Some(TABLES_DB))
            .map_err(lmdb_err("create table list"))?;
        let format = match meta.get(&wtxn, KEY_FORMAT).map_err(lmdb_err("read"))? {
            None => {
                migrate::write_format(&mut wtxn, meta, STORE_FORMAT_VERSION)?;
                STORE_FORMAT_VERSION
            }
            Some(stored) => stored_format(stored)
                .ok_or_else(|| inconsistent(dir, "the store's format record is damaged"))?,
        };
        if !(1..=STORE_FORMAT_VERSION).contains(&format) {
            return Err(Error::UnsupportedVersion {
                path: dir.to_owned(),
                found: format,
                supported: STORE_FORMAT_VERSION,
            });
        }
        if format == 1 {
            let entries = migrate::migrate_from_format_1(&env, &mut wtxn, meta, tables)?;
            tracing::info!(
                path = %dir.display(),
                entries,
                "migrated the store from format 1 to format 2 (entry checksums over table, \
                 key and value)"
            );
        }
        if format <= 2 {
            let tables = migrate::migrate_from_format_2(&env, &mut wtxn, meta, tables, dir)?;
            tracing::info!(
                path = %dir.display(),
                tables,
                "migrated the store to format 3 (each table's entry count and digest)"
            );
        }
        let applied_lsn = match meta.get(&wtxn, KEY_APPLIED).map_err(lmdb_err("read"))? {
            None => 0,
            Some(stored) => decode_u64(meta_seed(), KEY_APPLIED, stored)
                .ok_or_else(|| inconsistent(dir, "the store's applied LSN is damaged"))?,
        };
        let mut names = Vec::new();
        for item in tables.iter(&wtxn).map_err(lmdb_err("read"))? {
            let (name, stored) = item.map_err(lmdb_err("read"))?;
            if TableRecord::decode(STORE_FORMAT_VERSION, name, stored).is_none() {
                return Err(inconsistent(dir, "a table list entry is damaged"));
            }
            let name = std::str::from_utf8(name)
                .map_err(|_| inconsistent(dir, "a table name is not UTF-8"))?;
            names.push(name.to_owned());
        }
        for name in names {
            let dbi: Dbi = env
                .create_database(&mut wtxn, Some(&lmdb_name(&name)))
                .map_err(|e| match e {
                    heed::Error::Mdb(MdbError::DbsFull) => Error::TooManyTables {
                        max_tables: cfg.max_tables,
                    },
                    other => lmdb_err("open table")(other),
                })?;
            catalog.add_existing(&name, dbi);
        }
        wtxn.commit().map_err(lmdb_err("commit"))?;
        if let Some(o) = &observed {
            o.committed();
        }
        let store = Store {
            env: env::EnvSlot::new(env),
            meta,
            tables,
            map_size: AtomicUsize::new(map_size),
            max_map_size: round_up(cfg.max_map_size.max(map_size), page),
            max_readers: cfg.max_readers,
            latest_txn: AtomicU64::new(0),
            latest_applied: AtomicU64::new(0),
            observed,
            map_gate: RwLock::new(()),
            resizing: AtomicBool::new(false),
            calls_during_resize: AtomicU64::new(0),
            figures: Mutex::new(EnvFigures::default()),
        };
        store.remember_current()?;
        Ok((store, Opened { applied_lsn }))
    }

    /// Records the applied LSN of the state LMDB holds now, before any writer runs, so
    /// snapshots of it (all of them until the applier commits) skip reading it.
    fn remember_current(&self) -> Result<()> {
        let txn = self.read_txn()?;
        let applied = self.stored_applied_lsn(&txn)?;
        self.remember_applied(txn.id() as u64, applied);
        Ok(())
    }

    /// Scrubs the store as `txn` sees it (see [`scrub`]), reading LMDB's file, not its map.
    /// `None` when LMDB has already rewritten the meta page of `txn`'s snapshot (two
    /// commits since it began): begin a new one. `Error::Closed` once `stop` says so.
    pub fn scrub(
        &self,
        txn: &LmdbReadTxn<'_>,
        progress: &mut dyn FnMut(scrub::ScrubProgress<'_>),
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<scrub::ScrubReport>> {
        let path = crate::layout::lmdb_file(self.env.get()?.path());
        match scrub::scrub_file(&path, Some(txn.id() as u64), progress, stop)? {
            scrub::Scrubbed::Report(report) => Ok(Some(report)),
            scrub::Scrubbed::MetaGone => Ok(None),
        }
    }

    /// Begins an LMDB read transaction.
    pub fn read_txn(&self) -> Result<LmdbReadTxn<'_>> {
        self.env.get()?.read_txn().map_err(|e| match e {
            heed::Error::Mdb(MdbError::ReadersFull) => Error::ReadersFull {
                max_readers: self.max_readers,
            },
            other => lmdb_err("begin read")(other),
        })
    }

    /// Records that LMDB transaction `txn_id`, now committed, holds applied LSN `applied`.
    /// Only for transactions that wrote (an empty commit does not take its id).
    fn remember_applied(&self, txn_id: u64, applied: Lsn) {
        self.latest_txn.store(0, Ordering::Relaxed);
        self.latest_applied.store(applied, Ordering::Release);
        self.latest_txn.store(txn_id, Ordering::Release);
    }

    /// The applied LSN of the LMDB state `txn` sees.
    pub fn applied_lsn(&self, txn: &RoTxn<'_, WithoutTls>) -> Result<Lsn> {
        let id = txn.id() as u64;
        if self.latest_txn.load(Ordering::Acquire) == id {
            let applied = self.latest_applied.load(Ordering::Acquire);
            if self.latest_txn.load(Ordering::Acquire) == id {
                debug_assert_eq!(self.stored_applied_lsn(txn).ok(), Some(applied));
                return Ok(applied);
            }
        }
        self.stored_applied_lsn(txn)
    }

    fn stored_applied_lsn(&self, txn: &RoTxn<'_, WithoutTls>) -> Result<Lsn> {
        match self.meta.get(txn, KEY_APPLIED).map_err(lmdb_err("read"))? {
            None => Ok(0),
            Some(stored) => {
                decode_u64(meta_seed(), KEY_APPLIED, stored).ok_or_else(|| Error::Lmdb {
                    op: "read applied LSN",
                    message: "the stored applied LSN fails its CRC".into(),
                    source: None,
                })
            }
        }
    }

    /// Grows the map to `new_size`. Waits up to `wait` for calls on the environment (a
    /// checkpoint's sync, a backup's copy) to end, then `pause` must empty the process of
    /// LMDB transactions other than the caller's (the applier's, none open) and `resume`
    /// lets them begin again. `Ok(false)`: put off, something stayed open.
    pub fn resize(
        &self,
        new_size: usize,
        wait: std::time::Duration,
        pause: impl FnOnce() -> bool,
        resume: impl FnOnce(),
    ) -> Result<bool> {
        let Some(_gate) = self.map_gate.try_write_for(wait) else {
            return Ok(false);
        };
        if !pause() {
            return Ok(false);
        }
        self.resizing.store(true, Ordering::Release);
        fail::fail_point!("map-resizing");
        // SAFETY: the gate keeps every call on the environment off, and `pause` returned
        // true: no transaction is open in this process (the caller is the only writer).
        let resized = self
            .env
            .get()
            .and_then(|env| unsafe { env.resize(new_size) }.map_err(lmdb_err("resize")));
        if resized.is_ok() {
            // Before new transactions may begin: one that reads the map size after the
            // resize must see the new one.
            self.map_size.store(new_size, Ordering::Release);
        }
        self.resizing.store(false, Ordering::Release);
        resume();
        resized?;
        Ok(true)
    }

    /// Calls on the environment that ran while the map was resized (0 unless the exclusion
    /// is broken).
    #[cfg(feature = "internals")]
    pub fn calls_during_resize(&self) -> u64 {
        self.calls_during_resize.load(Ordering::Relaxed)
    }

    /// Runs `call` on the environment with map resizes held off; `Error::Closed` once
    /// the environment is closed.
    fn with_env<R>(&self, call: impl FnOnce(&Env) -> Result<R>) -> Result<R> {
        let _gate = self.map_gate.read();
        self.call_env(call)
    }

    /// As [`Store::with_env`], or `None` at once while the map is being resized.
    fn try_with_env<R>(&self, call: impl FnOnce(&Env) -> Result<R>) -> Option<Result<R>> {
        let _gate = self.map_gate.try_read()?;
        Some(self.call_env(call))
    }

    /// `call` on the environment; the caller holds the map gate.
    fn call_env<R>(&self, call: impl FnOnce(&Env) -> Result<R>) -> Result<R> {
        let env = self.env.get()?;
        self.note_env_call();
        let result = call(env);
        self.note_env_call();
        result
    }

    /// Closes LMDB's environment (once; later calls on the store get `Error::Closed`).
    ///
    /// # Safety
    /// No LMDB transaction is open in this process and none can begin (the snapshot
    /// registry is closed for good with none open, the applier and every engine thread
    /// that writes are joined).
    pub unsafe fn close_env(&self) {
        // Calls on the environment end first; later ones find it closed.
        let _gate = self.map_gate.write();
        // SAFETY: the gate keeps calls on the environment off and orders later ones after
        // this; the caller's contract keeps transactions off.
        unsafe { self.env.close() }
    }

    fn note_env_call(&self) {
        if self.resizing.load(Ordering::Acquire) {
            self.calls_during_resize.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// LMDB's figures now, or as last read while the map is being resized (a scrape never
    /// waits for a resize).
    pub fn env_figures(&self) -> EnvFigures {
        let read = self.try_with_env(|env| {
            let (info, page) = (env.info(), env.stat().page_size);
            Ok(EnvFigures {
                map_used_bytes: (info.last_page_number as u64 + 1) * u64::from(page),
                readers_used: info.number_of_readers,
            })
        });
        let mut last = self.figures.lock();
        if let Some(Ok(figures)) = read {
            *last = figures;
        }
        *last
    }

    /// The next map size when full, or `None` at the maximum.
    pub fn next_map_size(&self) -> Option<usize> {
        let now = self.map_size.load(Ordering::Relaxed);
        (now < self.max_map_size)
            .then(|| round_up(now.saturating_mul(2), page_size()).min(self.max_map_size))
    }

    /// Makes every committed LMDB transaction durable (the meta page included).
    pub fn force_sync(&self) -> Result<()> {
        let covered = self
            .observed
            .as_ref()
            .map(|o| o.commits.load(Ordering::Acquire));
        self.with_env(|env| env.force_sync().map_err(lmdb_err("sync")))?;
        if let (Some(o), Some(n)) = (&self.observed, covered) {
            o.observer.synced(n);
        }
        Ok(())
    }

    fn note_commit(&self) {
        if let Some(o) = &self.observed {
            o.committed();
        }
    }
}

/// Makes the entries of directory `dir` (LMDB's side, on the real file system) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn apply_err(op: &'static str) -> impl Fn(heed::Error) -> ApplyError {
    move |e| match e {
        heed::Error::Mdb(MdbError::MapFull) => ApplyError::MapFull,
        other => ApplyError::Other(lmdb_err(op)(other)),
    }
}

fn inconsistent(dir: &Path, reason: &str) -> Error {
    Error::Inconsistent {
        path: dir.to_owned(),
        reason: reason.into(),
    }
}

impl Store {
    /// Copies the environment, compacted, to `path` (a consistent snapshot at one LMDB
    /// transaction), synced. Map resizes wait for it.
    pub fn copy_compacted(&self, path: &Path) -> Result<()> {
        let mut file = crate::layout::create_private_file(path)?;
        let copied = self.with_env(|env| {
            env.copy_to_file(&mut file, heed::CompactionOption::Enabled)
                .map_err(lmdb_err("copy"))
        });
        if let Err(e) = copied {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        file.sync_all()?;
        Ok(())
    }
}

/// The LMDB name of a user table.
pub(crate) fn lmdb_name(table: &str) -> String {
    format!("{}{table}", crate::layout::LMDB_TABLE_PREFIX)
}

/// The checksum seed of the metadata table's entries.
pub(crate) fn meta_seed() -> Seed {
    Seed::of(META_DB)
}

/// The checksum seed of the table list's entries.
pub(crate) fn tables_seed() -> Seed {
    Seed::of(TABLES_DB)
}

pub(crate) fn decode_u64(seed: Seed, key: &[u8], stored: &[u8]) -> Option<u64> {
    let value = seed.open(key, stored)?;
    Some(u64::from_le_bytes(value.try_into().ok()?))
}

pub(crate) fn decode_u32(seed: Seed, key: &[u8], stored: &[u8]) -> Option<u32> {
    let value = seed.open(key, stored)?;
    Some(u32::from_le_bytes(value.try_into().ok()?))
}

/// A stored value, if its checksum holds as store format `format` seals it.
pub(crate) fn open_stored<'a>(
    format: u32,
    seed: Seed,
    key: &[u8],
    stored: &'a [u8],
) -> Option<&'a [u8]> {
    match format {
        1 => open_v1(key, stored),
        _ => seed.open(key, stored),
    }
}

/// A u64 record, if its checksum holds as store format `format` seals it.
pub(crate) fn stored_u64(format: u32, seed: Seed, key: &[u8], stored: &[u8]) -> Option<u64> {
    let value = open_stored(format, seed, key, stored)?;
    Some(u64::from_le_bytes(value.try_into().ok()?))
}

/// The store format a format record names: sealed as format 2 (and later) seal it, or as
/// format 1 did.
pub(crate) fn stored_format(stored: &[u8]) -> Option<u32> {
    decode_u32(meta_seed(), KEY_FORMAT, stored).or_else(|| {
        let value = open_v1(KEY_FORMAT, stored)?;
        (u32::from_le_bytes(value.try_into().ok()?) == 1).then_some(1)
    })
}

/// Map sizes are multiples of this (a multiple of every page size in use).
fn page_size() -> usize {
    1 << 20
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to).saturating_mul(to)
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_lmdb_error_keeps_heeds_error_as_its_source() {
        let e = lmdb_err("apply")(heed::Error::Mdb(MdbError::MapFull));
        assert!(matches!(e, Error::Lmdb { op: "apply", .. }), "{e:?}");
        let source = std::error::Error::source(&e).expect("heed's error kept");
        assert!(source.to_string().contains("MDB_MAP_FULL"), "{source}");
    }
}
