//! The LMDB side: the environment, its metadata, and `apply`, which writes a batch of
//! committed transactions and their highest LSN in one LMDB transaction.
//!
//! Layout (store format 1), all values ending in a CRC32 (little-endian) of the key and
//! the bytes before it:
//! - `walmdb.meta`: `format` -> `{version: u32 | crc}`, `applied_lsn` -> `{lsn: u64 | crc}`.
//! - `walmdb.tables`: table name -> `{created_lsn: u64 | crc}`, for tables that exist.
//! - `t.<name>`: one LMDB table per user table, key -> `{value | crc}`.
//!
//! The environment runs with `NO_META_SYNC` (never `NO_SYNC` or `MAP_ASYNC`): a crash may
//! undo the newest LMDB transaction, never corrupt the file, and the log replays what was
//! undone. A checkpoint's `force_sync` makes the meta page durable.

use std::path::{Path, PathBuf};

use heed::{EnvFlags, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls};

pub(crate) mod read_only;

use crate::catalog::{Catalog, Dbi};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, RwLock};

/// The store format this build reads and writes.
pub const STORE_FORMAT_VERSION: u32 = 1;

pub(crate) const META_DB: &str = "walmdb.meta";
pub(crate) const TABLES_DB: &str = "walmdb.tables";
const TABLE_PREFIX: &str = "t.";
pub(crate) const KEY_FORMAT: &[u8] = b"format";
pub(crate) const KEY_APPLIED: &[u8] = b"applied_lsn";

/// Bytes of the CRC after every stored value.
pub(crate) const CRC_LEN: usize = 4;

pub(crate) type Env = heed::Env<WithoutTls>;
pub(crate) type LmdbReadTxn<'e> = RoTxn<'e, WithoutTls>;

/// One write of an applied transaction.
#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    Put {
        table: crate::sync::DataArc<str>,
        key: crate::sync::DataArc<[u8]>,
        value: crate::sync::DataArc<[u8]>,
    },
    Delete {
        table: crate::sync::DataArc<str>,
        key: crate::sync::DataArc<[u8]>,
    },
    CreateTable {
        table: crate::sync::DataArc<str>,
    },
    DropTable {
        table: crate::sync::DataArc<str>,
    },
}

impl WriteOp {
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

/// Appends the CRC of `key ++ value` to `value` in `out`.
pub(crate) fn seal(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.clear();
    out.extend_from_slice(value);
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(value);
    out.extend_from_slice(&h.finalize().to_le_bytes());
}

/// The value without its CRC (a stored value is always at least `CRC_LEN` long).
#[inline]
pub(crate) fn unseal(stored: &[u8]) -> &[u8] {
    &stored[..stored.len().saturating_sub(CRC_LEN)]
}

/// Checks a stored value's CRC.
pub(crate) fn verify(key: &[u8], stored: &[u8]) -> bool {
    if stored.len() < CRC_LEN {
        return false;
    }
    let (value, crc) = stored.split_at(stored.len() - CRC_LEN);
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(value);
    crc == h.finalize().to_le_bytes()
}

pub(crate) fn lmdb_err(op: &'static str) -> impl Fn(heed::Error) -> Error {
    move |e| match e {
        heed::Error::Io(io) => Error::Io(io),
        other => Error::Lmdb {
            op,
            message: other.to_string(),
        },
    }
}

/// The LMDB environment and its metadata tables.
#[derive(Debug)]
pub(crate) struct Store {
    pub env: Env,
    meta: Dbi,
    tables: Dbi,
    pub map_size: AtomicUsize,
    pub max_map_size: usize,
    pub max_readers: u32,
    /// The applied LSN of the last LMDB transaction the applier committed, keyed by that
    /// transaction's id, so a read transaction of that id skips reading it from LMDB.
    /// Written only by the applier: `latest_txn` is zeroed first and set last, so a reader
    /// that sees its own id before and after loading `latest_applied` loaded that id's value.
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
        .map_err(lmdb_err("open"))?;
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
        match meta.get(&wtxn, KEY_FORMAT).map_err(lmdb_err("read"))? {
            None => {
                let mut v = Vec::new();
                seal(&mut v, KEY_FORMAT, &STORE_FORMAT_VERSION.to_le_bytes());
                meta.put(&mut wtxn, KEY_FORMAT, &v)
                    .map_err(lmdb_err("write format"))?;
            }
            Some(stored) => {
                let version = decode_u32(KEY_FORMAT, stored)
                    .ok_or_else(|| inconsistent(dir, "the store's format record is damaged"))?;
                if version != STORE_FORMAT_VERSION {
                    return Err(Error::UnsupportedVersion {
                        path: dir.to_owned(),
                        found: version,
                        supported: STORE_FORMAT_VERSION,
                    });
                }
            }
        }
        let applied_lsn = match meta.get(&wtxn, KEY_APPLIED).map_err(lmdb_err("read"))? {
            None => 0,
            Some(stored) => decode_u64(KEY_APPLIED, stored)
                .ok_or_else(|| inconsistent(dir, "the store's applied LSN is damaged"))?,
        };
        let mut names = Vec::new();
        for item in tables.iter(&wtxn).map_err(lmdb_err("read"))? {
            let (name, stored) = item.map_err(lmdb_err("read"))?;
            if !verify(name, stored) {
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
            env,
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
        Ok((store, Opened { applied_lsn }))
    }

    /// Begins an LMDB read transaction.
    pub fn read_txn(&self) -> Result<LmdbReadTxn<'_>> {
        self.env.read_txn().map_err(|e| match e {
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
            Some(stored) => decode_u64(KEY_APPLIED, stored).ok_or_else(|| Error::Lmdb {
                op: "read applied LSN",
                message: "the stored applied LSN fails its CRC".into(),
            }),
        }
    }

    /// Creates, in an LMDB transaction of their own, the tables `ops` write to that LMDB
    /// does not hold yet, and sets their handles. Their data comes in a later transaction.
    pub fn create_missing_tables(
        &self,
        ops: &[(Lsn, &WriteOp)],
        catalog: &Catalog,
    ) -> Result<(), ApplyError> {
        let mut missing: Vec<(crate::sync::DataArc<crate::catalog::Table>, Lsn)> = Vec::new();
        for &(lsn, op) in ops {
            if matches!(op, WriteOp::Delete { .. } | WriteOp::DropTable { .. }) {
                continue;
            }
            let table = catalog.get_or_add(op.table());
            if table.state.read().lmdb().is_none()
                && !missing.iter().any(|(t, _)| t.name == table.name)
            {
                missing.push((table, lsn));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut wtxn = self.write_txn()?;
        let mut created = Vec::with_capacity(missing.len());
        for (table, lsn) in missing {
            let dbi: Dbi = self
                .env
                .create_database(&mut wtxn, Some(&lmdb_name(&table.name)))
                .map_err(apply_err("create table"))?;
            created.push((table, dbi, lsn));
        }
        wtxn.commit().map_err(apply_err("commit"))?;
        self.note_commit();
        for (table, dbi, lsn) in created {
            table.set_lmdb(dbi, lsn);
        }
        Ok(())
    }

    fn write_txn(&self) -> Result<RwTxn<'_>, ApplyError> {
        self.env.write_txn().map_err(apply_err("begin write"))
    }

    /// Applies `ops` (in order) and sets the applied LSN to `last_lsn`, in one LMDB
    /// transaction. Every table written must have its handle already.
    pub fn apply(
        &self,
        ops: &[(Lsn, &WriteOp)],
        last_lsn: Lsn,
        catalog: &Catalog,
    ) -> Result<(), ApplyError> {
        let mut wtxn = self.write_txn()?;
        let mut buf = Vec::new();
        let mut current: Option<(crate::sync::DataArc<str>, Option<Dbi>)> = None;
        // Tables this batch has made sure are listed.
        let mut listed: Vec<crate::sync::DataArc<str>> = Vec::new();
        for &(lsn, op) in ops {
            let name = op.table();
            if current.as_ref().is_none_or(|(n, _)| n != name) {
                let dbi = catalog.get(name).and_then(|t| t.state.read().lmdb());
                current = Some((name.clone(), dbi));
            }
            let dbi = current.as_ref().and_then(|c| c.1);
            match op {
                WriteOp::Put { key, value, .. } => {
                    let dbi = dbi.ok_or_else(|| missing_handle(name))?;
                    seal(&mut buf, key, value);
                    dbi.put(&mut wtxn, key, &buf).map_err(apply_err("put"))?;
                }
                WriteOp::Delete { key, .. } => {
                    if let Some(dbi) = dbi {
                        dbi.delete(&mut wtxn, key).map_err(apply_err("delete"))?;
                    }
                }
                WriteOp::CreateTable { table } => {
                    seal(&mut buf, table.as_bytes(), &lsn.to_le_bytes());
                    self.tables
                        .put(&mut wtxn, table.as_bytes(), &buf)
                        .map_err(apply_err("create table"))?;
                }
                WriteOp::DropTable { table } => {
                    listed.retain(|t| t != table);
                    if let Some(dbi) = dbi {
                        dbi.clear(&mut wtxn).map_err(apply_err("drop table"))?;
                    }
                    self.tables
                        .delete(&mut wtxn, table.as_bytes())
                        .map_err(apply_err("drop table"))?;
                }
            }
            if let WriteOp::Put { table, .. } = op {
                // A put creates its table: list it, once per table and batch.
                if listed.contains(table) {
                    continue;
                }
                listed.push(table.clone());
                if self
                    .tables
                    .get(&wtxn, table.as_bytes())
                    .map_err(apply_err("read"))?
                    .is_none()
                {
                    seal(&mut buf, table.as_bytes(), &lsn.to_le_bytes());
                    self.tables
                        .put(&mut wtxn, table.as_bytes(), &buf)
                        .map_err(apply_err("create table"))?;
                }
            }
        }
        seal(&mut buf, KEY_APPLIED, &last_lsn.to_le_bytes());
        self.meta
            .put(&mut wtxn, KEY_APPLIED, &buf)
            .map_err(apply_err("write applied LSN"))?;
        let txn_id = wtxn.id() as u64;
        wtxn.commit().map_err(apply_err("commit"))?;
        self.note_commit();
        self.remember_applied(txn_id, last_lsn);
        Ok(())
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
        let resized = unsafe { self.env.resize(new_size) }.map_err(lmdb_err("resize"));
        self.resizing.store(false, Ordering::Release);
        resume();
        resized?;
        self.map_size.store(new_size, Ordering::Relaxed);
        Ok(true)
    }

    /// Calls on the environment that ran while the map was resized (0 unless the exclusion
    /// is broken).
    #[cfg(feature = "internals")]
    pub fn calls_during_resize(&self) -> u64 {
        self.calls_during_resize.load(Ordering::Relaxed)
    }

    /// Runs `call` on the environment with map resizes held off.
    fn with_env<R>(&self, call: impl FnOnce(&Env) -> R) -> R {
        let _gate = self.map_gate.read();
        self.call_env(call)
    }

    /// As [`Store::with_env`], or `None` at once while the map is being resized.
    fn try_with_env<R>(&self, call: impl FnOnce(&Env) -> R) -> Option<R> {
        let _gate = self.map_gate.try_read()?;
        Some(self.call_env(call))
    }

    /// `call` on the environment; the caller holds the map gate.
    fn call_env<R>(&self, call: impl FnOnce(&Env) -> R) -> R {
        self.note_env_call();
        let result = call(&self.env);
        self.note_env_call();
        result
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
            EnvFigures {
                map_used_bytes: (info.last_page_number as u64 + 1) * u64::from(page),
                readers_used: info.number_of_readers,
            }
        });
        let mut last = self.figures.lock();
        if let Some(figures) = read {
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
        self.with_env(|env| env.force_sync())
            .map_err(lmdb_err("sync"))?;
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

fn missing_handle(table: &str) -> ApplyError {
    ApplyError::Other(Error::Lmdb {
        op: "apply",
        message: format!("table {table:?} has no LMDB handle"),
    })
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
        let copied = self
            .with_env(|env| env.copy_to_file(&mut file, heed::CompactionOption::Enabled))
            .map_err(lmdb_err("copy"));
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
fn lmdb_name(table: &str) -> String {
    format!("{TABLE_PREFIX}{table}")
}

pub(crate) fn decode_u64(key: &[u8], stored: &[u8]) -> Option<u64> {
    (stored.len() == 8 + CRC_LEN && verify(key, stored))
        .then(|| u64::from_le_bytes(stored[..8].try_into().expect("8 bytes")))
}

pub(crate) fn decode_u32(key: &[u8], stored: &[u8]) -> Option<u32> {
    (stored.len() == 4 + CRC_LEN && verify(key, stored))
        .then(|| u32::from_le_bytes(stored[..4].try_into().expect("4 bytes")))
}

/// Map sizes are multiples of this (a multiple of every page size in use).
fn page_size() -> usize {
    1 << 20
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to).saturating_mul(to)
}
