//! The store opened read-only, for tools and backups: walmdb's metadata in LMDB without
//! writing a byte (`MDB_RDONLY | MDB_NOLOCK`).

use std::io;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{EnvFlags, EnvOpenOptions};

use super::scrub::{ScrubProgress, ScrubReport, Scrubbed};
use super::{
    lmdb_err, meta_seed, stored_format, KEY_APPLIED, KEY_FORMAT, META_DB, STORE_FORMAT_VERSION,
    TABLES_DB,
};
use crate::error::{Error, Result};
use crate::lsn::Lsn;

/// What LMDB (`<db>/data`) holds of walmdb's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// The data directory.
    pub path: PathBuf,
    /// Bytes of `data.mdb`.
    pub file_bytes: u64,
    /// The store format in the `format` record; `None` when the record is missing.
    pub format_version: Option<u32>,
    /// LMDB holds every commit through this LSN (0 when the record is missing).
    pub applied_lsn: Lsn,
    /// The tables that exist: name and the LSN that created them.
    pub tables: Vec<(String, Lsn)>,
}

/// Reads `applied_lsn` from LMDB's `walmdb.meta` in `data_dir`, checking its CRC, without
/// writing anything (see [`read_store`]). 0 when there is no store yet (no `data.mdb`, or an
/// empty one) or no record, which is what [`crate::Db::open`] would read.
pub fn applied_lsn(data_dir: &Path) -> Result<Lsn> {
    Ok(read_store(data_dir)?.map_or(0, |s| s.applied_lsn))
}

/// Reads walmdb's metadata from the LMDB environment in `data_dir`: the store format, the
/// applied LSN and the table list, checking every CRC as [`crate::Db::open`] does. `None`
/// when there is no `data.mdb` (or it is empty): `Db::open` would create a new store.
///
/// A damaged `format` or `applied_lsn` record or table entry is `Error::Inconsistent` and a
/// format other than 1 `Error::UnsupportedVersion`, as `Db::open` reports them.
///
/// # How LMDB is opened, and why
///
/// With `MDB_RDONLY | MDB_NOLOCK`, and a map the size of `data.mdb` (rounded up): LMDB opens
/// `data.mdb` with `O_RDONLY`, maps it `PROT_READ`, never grows or truncates it, and never
/// touches `lock.mdb`. `MDB_RDONLY` alone is not read-only enough: LMDB would open (and
/// create, if missing) `lock.mdb` read-write, take `fcntl` locks on it, reinitialize it when
/// it is the only user, and write a slot of its reader table. The price of `MDB_NOLOCK` is
/// that a writer in another process does not see this reader: if the database is open
/// elsewhere, the pages read may be reused under the read. The read is one short transaction
/// of two small lookups, every value read is checked against its CRC, and the tool warns when
/// the database is in use ([`lock_holder`](crate::inspect::lock_holder)); a result read from a live database is a hint,
/// not a verdict.
///
/// heed refuses to open an environment twice in one process: while a [`crate::Db`] of this
/// process has the directory open, this fails with an LMDB error ("environment already
/// opened"). Use [`crate::Db::stats`] there.
pub fn read_store(data_dir: &Path) -> Result<Option<StoreInfo>> {
    let file_bytes = std::fs::metadata(crate::layout::lmdb_file(data_dir)).map_or(0, |m| m.len());
    let Some(env) = open_read_only(data_dir, 4)? else {
        return Ok(None);
    };
    let result = read_meta(&env, data_dir, file_bytes);
    // Close it before returning, so a later open in this process (a `Db`) finds it closed.
    let closing = env.prepare_for_closing();
    closing.wait();
    result.map(Some)
}

/// Opens the environment in `data_dir` read-only and lock-free (see [`read_store`]), with
/// room for `max_dbs` named tables. `None` when there is no `data.mdb` or it is empty.
fn open_read_only(data_dir: &Path, max_dbs: u32) -> Result<Option<super::Env>> {
    let file_bytes = match std::fs::metadata(crate::layout::lmdb_file(data_dir)) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if file_bytes == 0 {
        // LMDB would initialize it (a write): a store that never committed.
        return Ok(None);
    }
    let map_size = usize::try_from(file_bytes)
        .unwrap_or(usize::MAX)
        .div_ceil(1 << 20)
        .saturating_mul(1 << 20);
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(map_size).max_dbs(max_dbs);
    // SAFETY: read-only and lock-free (see above): nothing of this process writes the file,
    // and heed refuses a second open of the same environment in this process.
    let env = unsafe {
        opts.flags(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK);
        opts.open(data_dir)
    }
    .map_err(lmdb_err("open read-only"))?;
    Ok(Some(env))
}

fn read_meta(env: &super::Env, data_dir: &Path, file_bytes: u64) -> Result<StoreInfo> {
    let inconsistent = |reason: &str| Error::Inconsistent {
        path: data_dir.to_owned(),
        reason: reason.into(),
    };
    let rtxn = env.read_txn().map_err(lmdb_err("begin read"))?;
    let mut info = StoreInfo {
        path: data_dir.to_owned(),
        file_bytes,
        format_version: None,
        applied_lsn: 0,
        tables: Vec::new(),
    };
    let meta: Option<heed::Database<Bytes, Bytes>> = env
        .open_database(&rtxn, Some(META_DB))
        .map_err(lmdb_err("open the meta table"))?;
    if let Some(meta) = meta {
        if let Some(stored) = meta.get(&rtxn, KEY_FORMAT).map_err(lmdb_err("read"))? {
            let version = stored_format(stored)
                .ok_or_else(|| inconsistent("the store's format record is damaged"))?;
            if !(1..=STORE_FORMAT_VERSION).contains(&version) {
                return Err(Error::UnsupportedVersion {
                    path: data_dir.to_owned(),
                    found: version,
                    supported: STORE_FORMAT_VERSION,
                });
            }
            info.format_version = Some(version);
        }
    }
    // A store without a format record is read as this build seals.
    let format = info.format_version.unwrap_or(STORE_FORMAT_VERSION);
    if let Some(meta) = meta {
        if let Some(stored) = meta.get(&rtxn, KEY_APPLIED).map_err(lmdb_err("read"))? {
            info.applied_lsn = super::stored_u64(format, meta_seed(), KEY_APPLIED, stored)
                .ok_or_else(|| inconsistent("the store's applied LSN is damaged"))?;
        }
    }
    let tables: Option<heed::Database<Bytes, Bytes>> = env
        .open_database(&rtxn, Some(TABLES_DB))
        .map_err(lmdb_err("open the table list"))?;
    if let Some(tables) = tables {
        for item in tables.iter(&rtxn).map_err(lmdb_err("read"))? {
            let (name, stored) = item.map_err(lmdb_err("read"))?;
            let created = super::tally::TableRecord::decode(format, name, stored)
                .ok_or_else(|| inconsistent("a table list entry is damaged"))?
                .created;
            let name =
                std::str::from_utf8(name).map_err(|_| inconsistent("a table name is not UTF-8"))?;
            info.tables.push((name.to_owned(), created));
        }
    }
    Ok(info)
}

/// Scrubs the store in `data_dir` offline, reading `data.mdb` page by page as of its newest
/// sound meta page, without LMDB (see [`ScrubReport`]). `Ok(None)` when there is no store.
/// A damaged page is a finding, never a fault; `walmdb verify --deep` still runs this in a
/// child process, so that even a fault would be reported as damage. Like [`read_store`],
/// a result read from a database open in another process is a hint, not a verdict.
pub fn scrub_store(
    data_dir: &Path,
    progress: &mut dyn FnMut(ScrubProgress<'_>),
) -> Result<Option<ScrubReport>> {
    let path = crate::layout::lmdb_file(data_dir);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > 0 => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    match super::scrub::scrub_file(&path, None, progress, &|| false)? {
        Scrubbed::Report(report) => Ok(Some(report)),
        Scrubbed::MetaGone => unreachable!("an offline scrub asks for no transaction's meta"),
    }
}
