//! Repair of a database whose LMDB file is damaged, into a new directory (the damaged one is
//! only read, under its lock):
//!
//! - **From a backup** ([`RepairOptions::backup`]): the backup restored and rolled forward
//!   with the archive and the damaged database's own log, to its last record.
//! - **Salvage** (no backup): every entry of the damaged file whose checksum holds, read page
//!   by page as the scrub reads it, copied into a fresh store whose applied LSN is set back to
//!   the first record the damaged database's log still holds; opening then replays the whole
//!   log over it. Replaying records the store already holds is harmless (a log record is a
//!   blind put, delete, create or drop, so replaying a suffix of the history in order ends in
//!   the same state), and it rewrites every key the log still holds, damaged or not. What
//!   could not be saved is listed ([`Loss`]), with the keys of it the log wrote again.
//!
//! Either way the repaired store is scrubbed before the repair returns.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::EnvOpenOptions;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::ops::restore::{restore, RestoreOptions, RestoreReport, RestoreTarget};
use crate::store::pages::{
    choose_meta, key_after, LostKeys, PageDamage, PageFile, TreeKind, Walker,
};
use crate::store::scrub::ScrubReport;
use crate::store::tally::{put_tallied, TableRecord, Tally};
use crate::store::{
    lmdb_err, lmdb_name, meta_seed, open_stored, stored_format, stored_u64, Seed, KEY_APPLIED,
    KEY_FORMAT, META_DB, STORE_FORMAT_VERSION, TABLES_DB,
};
use crate::wal::{Op, Record};

/// How to repair.
#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    /// A backup of the database (`Db::backup`) to rebuild from; `None`: salvage.
    pub backup: Option<PathBuf>,
    /// The WAL archive (`WalConfig::archive`) to roll the backup forward with.
    pub archive: Option<PathBuf>,
    /// The configuration the repaired database is opened with once to replay.
    pub config: Config,
}

/// How a database was repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMethod {
    /// From a backup, the archive and the damaged database's log.
    Backup,
    /// The damaged file's entries that verify, and the damaged database's log.
    Salvage,
}

/// Entries a salvage could not save.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Loss {
    /// The table (or `walmdb.meta`, `walmdb.tables`, `(main)` for LMDB's list of tables).
    pub table: String,
    /// The keys whose entries are lost.
    pub keys: LostKeys,
    /// Why.
    pub reason: String,
    /// Keys of `keys` that the log replayed over the salvage wrote (or the whole table,
    /// when the log drops it): the repaired database holds them as of the log's end. A
    /// single key the log rewrote is saved after all.
    pub rewritten_by_log: u64,
    /// The log drops the table after the salvaged state: nothing of it from before counts.
    pub dropped_by_log: bool,
}

impl Loss {
    /// A loss the log has not been checked against yet.
    fn new(table: &str, keys: LostKeys, reason: String) -> Loss {
        Loss {
            table: table.to_owned(),
            keys,
            reason,
            rewritten_by_log: 0,
            dropped_by_log: false,
        }
    }

    /// True when the log gave the entries back (a single key it rewrote, or a table it
    /// dropped).
    pub fn is_recovered(&self) -> bool {
        self.dropped_by_log || (matches!(self.keys, LostKeys::Key(_)) && self.rewritten_by_log > 0)
    }
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// How.
    pub method: RepairMethod,
    /// The repaired database holds every commit through this LSN and none after.
    pub repaired_lsn: Lsn,
    /// The last LSN the damaged database's log holds (a commit past `repaired_lsn` that
    /// the log holds was not replayed: a damaged log, see `RepairReport::is_complete`).
    pub log_end: Lsn,
    /// From a backup: the restore's report.
    pub restore: Option<RestoreReport>,
    /// Salvage: entries copied from the damaged file.
    pub salvaged: u64,
    /// Salvage: the applied LSN the salvaged store was given (the log replayed after it).
    pub salvaged_lsn: Lsn,
    /// Salvage: what could not be saved.
    pub losses: Vec<Loss>,
    /// The scrub of the repaired store.
    pub scrub: ScrubReport,
}

impl RepairReport {
    /// True when nothing is lost: every loss recovered by the log, and every commit the log
    /// holds replayed.
    pub fn is_complete(&self) -> bool {
        self.losses.iter().all(Loss::is_recovered) && self.repaired_lsn >= self.log_end
    }
}

/// Repairs the database in `damaged_dir` into `target_dir` (which must not exist or be
/// empty); see the module documentation. The damaged database must be closed (its lock is
/// held meanwhile) and is left as it is. An error leaves `target_dir` partly written.
pub fn repair(
    damaged_dir: &Path,
    target_dir: &Path,
    options: &RepairOptions,
) -> Result<RepairReport> {
    crate::ops::backup::require_empty(target_dir, "repair target directory")?;
    let _lock = crate::engine::open::lock_dir(damaged_dir)?;
    let span = tracing::info_span!("walmdb.repair", damaged = %damaged_dir.display());
    let _entered = span.enter();
    let live_log = crate::layout::wal_dir(damaged_dir);
    let scan = crate::inspect::scan_log(&live_log)?;
    let log_end = scan.readable(None).last_lsn.unwrap_or(0);
    let mut config = options.config.clone();
    config.wal.archive = None;
    let report = match &options.backup {
        Some(backup) => {
            let restored = restore(
                backup,
                target_dir,
                &RestoreTarget::Latest,
                &RestoreOptions {
                    archive: options.archive.clone(),
                    config: config.clone(),
                    timeline: scan.lineage()?.map(|l| l.timeline),
                    live_log: Some(live_log),
                },
            )?;
            RepairReport {
                method: RepairMethod::Backup,
                repaired_lsn: restored.restored_lsn,
                log_end,
                restore: Some(restored),
                salvaged: 0,
                salvaged_lsn: 0,
                losses: Vec::new(),
                scrub: ScrubReport::default(),
            }
        }
        None => salvage(damaged_dir, target_dir, &scan, log_end, config)?,
    };
    let data = crate::layout::data_dir(target_dir);
    let scrub = crate::inspect::scrub_store(&data, &mut |_| {})?.unwrap_or_default();
    if !scrub.is_healthy() {
        return Err(Error::Inconsistent {
            path: target_dir.to_owned(),
            reason: format!("the repaired store does not scrub clean: {scrub:?}"),
        });
    }
    tracing::info!(
        method = ?report.method,
        repaired_lsn = report.repaired_lsn,
        losses = report.losses.len(),
        "repaired the database"
    );
    Ok(RepairReport { scrub, ..report })
}

fn salvage(
    damaged_dir: &Path,
    target_dir: &Path,
    scan: &crate::inspect::LogScan,
    log_end: Lsn,
    config: Config,
) -> Result<RepairReport> {
    let path = crate::layout::lmdb_file(crate::layout::data_dir(damaged_dir));
    let file = match PageFile::open(&path) {
        Ok(file) => file,
        Err(e) => {
            let why = format!("LMDB's file cannot be read ({e})");
            return from_log_only(damaged_dir, target_dir, scan, log_end, config, why);
        }
    };
    let (meta, _) = choose_meta(&file, None);
    let Some(meta) = meta else {
        let why = "neither meta page of LMDB's file is sound".to_owned();
        return from_log_only(damaged_dir, target_dir, scan, log_end, config, why);
    };
    let mut losses = Vec::new();
    let lose = |losses: &mut Vec<Loss>, table: &str, keys: LostKeys, reason: String| {
        losses.push(Loss::new(table, keys, reason))
    };

    // A main tree that reaches pages listed free may be a stale copy (a damaged root in the
    // meta page): the tables it names, and their roots, are not to be trusted.
    let stale_main = {
        let mut walker = Walker::new(&file, meta);
        walker.named_trees();
        !walker.account().both.is_empty()
    };
    if stale_main {
        let why = "LMDB's main tree reaches pages listed free: it may be a stale copy, so the \
                   tables it names cannot be trusted"
            .to_owned();
        return from_log_only(damaged_dir, target_dir, scan, log_end, config, why);
    }

    // A first walk finds pages that are both in use and free: a damaged pointer can reach a
    // stale page, whose entries verify but are old. Their entries are not salvaged.
    let suspect: HashSet<u64> = {
        let mut walker = Walker::new(&file, meta);
        let (trees, _) = walker.named_trees();
        for tree in trees.iter().filter_map(|t| t.record) {
            walker.walk(&tree, TreeKind::Table, &mut |_| {});
        }
        walker.account().both.into_iter().collect()
    };

    let mut walker = Walker::new(&file, meta);
    let (trees, main) = walker.named_trees();
    // Tables named in a damaged part of the main tree may be missing.
    lose_damage(&mut losses, "(main)", main.damage);
    let find = |name: &str| trees.iter().find(|t| t.lmdb_name == name);

    // walmdb.meta: the format and the applied LSN.
    let mut format = STORE_FORMAT_VERSION;
    let mut stored_applied = None;
    match find(META_DB).and_then(|t| t.record) {
        Some(record) => {
            let mut entries = Vec::new();
            let walk = walker.walk(&record, TreeKind::Table, &mut |e| {
                entries.push((e.key.to_vec(), e.data.to_vec()));
            });
            lose_damage(&mut losses, META_DB, walk.damage);
            if let Some((_, stored)) = entries.iter().find(|(k, _)| k == KEY_FORMAT) {
                format = stored_format(stored).unwrap_or(STORE_FORMAT_VERSION);
            }
            if let Some((key, stored)) = entries.iter().find(|(k, _)| k == KEY_APPLIED) {
                stored_applied = stored_u64(format, meta_seed(), key, stored);
            }
        }
        None => lose(
            &mut losses,
            META_DB,
            LostKeys::Range {
                from: None,
                to: None,
            },
            "LMDB's main tree does not reach it".into(),
        ),
    }
    // The log replays from its first record: every key it holds is written again.
    let first_in_log = scan.readable(None).first_lsn;
    let salvaged_lsn = match (first_in_log, stored_applied) {
        (Some(first), Some(applied)) => applied.min(first.saturating_sub(1)),
        (Some(first), None) => first.saturating_sub(1),
        (None, Some(applied)) => applied,
        (None, None) => 0,
    };
    if stored_applied.is_none() {
        lose(
            &mut losses,
            META_DB,
            LostKeys::Key(KEY_APPLIED.to_vec()),
            format!("the applied LSN is lost; the log is replayed after LSN {salvaged_lsn}"),
        );
    }

    // The tables: listed, and any LMDB holds under walmdb's prefix.
    let mut tables: BTreeMap<String, Lsn> = BTreeMap::new();
    match find(TABLES_DB).and_then(|t| t.record) {
        Some(record) => {
            let walk = walker.walk(&record, TreeKind::Table, &mut |e| {
                let created = TableRecord::decode(format, e.key, e.data).map(|r| r.created);
                match (std::str::from_utf8(e.key), created) {
                    (Ok(name), Some(lsn)) => {
                        tables.insert(name.to_owned(), lsn);
                    }
                    _ => lose(
                        &mut losses,
                        TABLES_DB,
                        LostKeys::Key(e.key.to_vec()),
                        "checksum fails".into(),
                    ),
                }
            });
            lose_damage(&mut losses, TABLES_DB, walk.damage);
        }
        None => lose(
            &mut losses,
            TABLES_DB,
            LostKeys::Range {
                from: None,
                to: None,
            },
            "LMDB's main tree does not reach it".into(),
        ),
    }
    for tree in &trees {
        if let Some(name) = tree
            .lmdb_name
            .strip_prefix(crate::layout::LMDB_TABLE_PREFIX)
        {
            // Not listed: created since the list was damaged, or emptied by a drop.
            tables.entry(name.to_owned()).or_insert(0);
        }
    }

    // A damaged name in LMDB's main tree may be one walmdb could not have created.
    tables.retain(|name, _| {
        let valid = crate::limits::check_table_name(name).is_ok();
        if !valid {
            let every = LostKeys::Range {
                from: None,
                to: None,
            };
            let why = "LMDB's main tree names a table walmdb could not have created (a \
                       damaged name)";
            lose(&mut losses, name, every, why.into());
        }
        valid
    });

    // The fresh store.
    let map_size = (file.page_size() as u64 * (meta.last_page + 1)).saturating_mul(2);
    let (env, list_db) = new_store(target_dir, map_size, salvaged_lsn, &tables)?;
    let mut salvaged = 0u64;
    let mut buf = Vec::new();

    for name in tables.keys() {
        let lmdb = lmdb_name(name);
        let Some(record) = find(&lmdb).and_then(|t| t.record) else {
            lose(
                &mut losses,
                name,
                LostKeys::Range {
                    from: None,
                    to: None,
                },
                "LMDB's main tree does not reach the table".into(),
            );
            continue;
        };
        let seed = Seed::of_table(name);
        // The table is created in a transaction of its own: its handle is then valid in the
        // transactions that fill it.
        let mut txn = env.write_txn().map_err(lmdb_err("begin write"))?;
        let db = env
            .create_database::<Bytes, Bytes>(&mut txn, Some(&lmdb))
            .map_err(lmdb_err("create"))?;
        txn.commit().map_err(lmdb_err("commit"))?;
        let mut wtxn = Some(env.write_txn().map_err(lmdb_err("begin write"))?);
        let mut failed = None;
        let mut in_txn = 0u64;
        let mut tally = Tally::default();
        // The last key that verified in its place, and a run of damaged entries after it.
        let mut last_good: Option<Vec<u8>> = None;
        let mut damaged_run: Option<(Option<Vec<u8>>, String)> = None;
        let walk = walker.walk(&record, TreeKind::Table, &mut |e| {
            if failed.is_some() {
                return;
            }
            // A page also listed free may be a stale copy a damaged pointer reaches, in place
            // of the page it meant; a damaged entry's key may be what changed. Either way
            // what is lost lies between the good keys around it.
            let value = (!suspect.contains(&e.page))
                .then(|| open_stored(format, seed, e.key, e.data))
                .flatten();
            let Some(value) = value else {
                if damaged_run.is_none() {
                    let why = if suspect.contains(&e.page) {
                        format!(
                            "page {} is also listed free: it may be a stale copy",
                            e.page
                        )
                    } else {
                        format!("checksum fails (an entry stored under key {:02x?})", e.key)
                    };
                    damaged_run = Some((last_good.as_deref().map(key_after), why));
                }
                return;
            };
            if e.reachable {
                if let Some((from, why)) = damaged_run.take() {
                    let keys = LostKeys::Range {
                        from,
                        to: Some(e.key.to_vec()),
                    };
                    lose(&mut losses, name, keys, why);
                }
                last_good = Some(e.key.to_vec());
            }
            seed.seal(&mut buf, e.key, value);
            let Some(txn) = wtxn.as_mut() else { return };
            if let Err(err) = put_tallied(db, txn, e.key, &buf, &mut tally) {
                failed = Some(lmdb_err("write")(err));
                return;
            }
            salvaged += 1;
            in_txn += 1;
            // Commits in pieces, so a large table needs no large transaction.
            if in_txn >= 50_000 {
                in_txn = 0;
                let done = wtxn.take().map(|t| t.commit());
                match done.unwrap_or(Ok(())).and_then(|()| env.write_txn()) {
                    Ok(next) => wtxn = Some(next),
                    Err(err) => failed = Some(lmdb_err("commit")(err)),
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some((from, why)) = damaged_run {
            lose(&mut losses, name, LostKeys::Range { from, to: None }, why);
        }
        let mut txn = match wtxn {
            Some(txn) => txn,
            None => env.write_txn().map_err(lmdb_err("begin write"))?,
        };
        TableRecord::seal(tables[name], tally, name.as_bytes(), &mut buf);
        list_db
            .put(&mut txn, name.as_bytes(), &buf)
            .map_err(lmdb_err("write"))?;
        txn.commit().map_err(lmdb_err("commit"))?;
        lose_damage(&mut losses, name, walk.damage);
    }
    env.force_sync().map_err(lmdb_err("sync"))?;
    env.prepare_for_closing().wait();
    count_rewritten(scan, salvaged_lsn, &mut losses)?;
    let repaired_lsn = replay_log(damaged_dir, target_dir, config)?;
    Ok(RepairReport {
        method: RepairMethod::Salvage,
        repaired_lsn,
        log_end,
        restore: None,
        salvaged,
        salvaged_lsn,
        losses,
        scrub: ScrubReport::default(),
    })
}

/// A salvage with nothing from LMDB's file (`why`): an empty store, then the whole log. Lost:
/// everything the log no longer holds (nothing, when it starts at LSN 1).
fn from_log_only(
    damaged_dir: &Path,
    target_dir: &Path,
    scan: &crate::inspect::LogScan,
    log_end: Lsn,
    config: Config,
    why: String,
) -> Result<RepairReport> {
    let first = scan.readable(None).first_lsn.unwrap_or(log_end + 1);
    let salvaged_lsn = first.saturating_sub(1);
    let (env, _) = new_store(target_dir, 0, salvaged_lsn, &BTreeMap::new())?;
    env.prepare_for_closing().wait();
    let mut losses = Vec::new();
    if salvaged_lsn > 0 {
        let every = LostKeys::Range {
            from: None,
            to: None,
        };
        let reason = format!("{why}: only what the log holds after LSN {salvaged_lsn} is back");
        losses.push(Loss::new("(every table)", every, reason));
    }
    let repaired_lsn = replay_log(damaged_dir, target_dir, config)?;
    tracing::warn!(reason = %why, salvaged_lsn, "nothing salvaged from LMDB's file; rebuilt from the log");
    Ok(RepairReport {
        method: RepairMethod::Salvage,
        repaired_lsn,
        log_end,
        restore: None,
        salvaged: 0,
        salvaged_lsn,
        losses,
        scrub: ScrubReport::default(),
    })
}

/// A new store in `target_dir`: walmdb's metadata (format, applied LSN `applied`, the table
/// list `tables`, each counted empty), synced; its map at least `map_size` bytes. Returns the
/// environment and its table list.
fn new_store(
    target_dir: &Path,
    map_size: u64,
    applied: Lsn,
    tables: &BTreeMap<String, Lsn>,
) -> Result<(heed::Env, heed::Database<Bytes, Bytes>)> {
    let data = crate::layout::data_dir(target_dir);
    crate::layout::create_private_dir(target_dir)?;
    crate::layout::create_private_dir(&data)?;
    let mut opts = EnvOpenOptions::new();
    opts.map_size(map_size.max(64 << 20).next_multiple_of(1 << 20) as usize)
        .max_dbs(tables.len() as u32 + 2);
    // SAFETY: a new environment in a directory this call created, opened once.
    let env = unsafe { opts.open(&data) }.map_err(lmdb_err("open the repaired store"))?;
    let mut wtxn = env.write_txn().map_err(lmdb_err("begin write"))?;
    let meta_db = env
        .create_database::<Bytes, Bytes>(&mut wtxn, Some(META_DB))
        .map_err(lmdb_err("create"))?;
    let mut buf = Vec::new();
    meta_seed().seal(&mut buf, KEY_FORMAT, &STORE_FORMAT_VERSION.to_le_bytes());
    meta_db
        .put(&mut wtxn, KEY_FORMAT, &buf)
        .map_err(lmdb_err("write"))?;
    meta_seed().seal(&mut buf, KEY_APPLIED, &applied.to_le_bytes());
    meta_db
        .put(&mut wtxn, KEY_APPLIED, &buf)
        .map_err(lmdb_err("write"))?;
    let list_db = env
        .create_database::<Bytes, Bytes>(&mut wtxn, Some(TABLES_DB))
        .map_err(lmdb_err("create"))?;
    for (name, &created) in tables {
        TableRecord::seal(created, Tally::default(), name.as_bytes(), &mut buf);
        list_db
            .put(&mut wtxn, name.as_bytes(), &buf)
            .map_err(lmdb_err("write"))?;
    }
    wtxn.commit().map_err(lmdb_err("commit"))?;
    env.force_sync().map_err(lmdb_err("sync"))?;
    Ok((env, list_db))
}

/// Copies the damaged database's log into `target_dir` and opens the repaired database once
/// to replay it. Returns the last LSN the repaired database holds.
fn replay_log(damaged_dir: &Path, target_dir: &Path, config: Config) -> Result<Lsn> {
    let log = crate::layout::wal_dir(target_dir);
    copy_log(&crate::layout::wal_dir(damaged_dir), &log)?;
    let fs = crate::sync::DynArc::new(crate::wal::fs::StdFs);
    let engine = crate::engine::Running::open(target_dir, config, fs, None)?;
    let repaired_lsn = engine.engine().report.last_lsn;
    engine.shutdown(crate::engine::Shutdown::Drain)?;
    Ok(repaired_lsn)
}

/// Lists as lost what damaged pages of `table` may have held.
fn lose_damage(losses: &mut Vec<Loss>, table: &str, damage: Vec<PageDamage>) {
    for d in damage.into_iter().filter(|d| d.lost != LostKeys::Nothing) {
        losses.push(Loss::new(
            table,
            d.lost,
            format!("page {}: {}", d.page, d.reason),
        ));
    }
}

/// Copies the segment files of log `from` into a new log directory `to`, synced.
fn copy_log(from: &Path, to: &Path) -> Result<()> {
    crate::layout::create_private_dir(to)?;
    let mut names: Vec<String> = match std::fs::read_dir(from) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| crate::wal::log::segment::parse_segment_file_name(n).is_some())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    names.sort();
    for name in names {
        let mut out = crate::layout::create_private_file(&to.join(&name))?;
        std::io::copy(&mut std::fs::File::open(from.join(&name))?, &mut out)?;
        out.sync_all()?;
    }
    crate::store::sync_dir(to)
}

/// Counts, per loss, the keys the damaged database's log (`scan`) after `from_lsn` writes
/// again (or the table it drops).
fn count_rewritten(
    scan: &crate::inspect::LogScan,
    from_lsn: Lsn,
    losses: &mut [Loss],
) -> Result<()> {
    if losses.is_empty() {
        return Ok(());
    }
    let affected: BTreeSet<&str> = losses.iter().map(|l| l.table.as_str()).collect();
    let mut written: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    for entry in scan.records(None, from_lsn + 1..=Lsn::MAX) {
        let Record::Txn(txn) = entry?.record else {
            continue;
        };
        for op in txn.ops {
            match op {
                Op::Put { table, key, .. } | Op::Delete { table, key }
                    if affected.contains(table.as_str()) =>
                {
                    written.entry(table).or_default().insert(key);
                }
                Op::DropTable { table } if affected.contains(table.as_str()) => {
                    dropped.insert(table);
                }
                _ => {}
            }
        }
    }
    for loss in losses {
        loss.dropped_by_log = dropped.contains(&loss.table);
        let Some(keys) = written.get(&loss.table) else {
            continue;
        };
        loss.rewritten_by_log = match &loss.keys {
            LostKeys::Nothing => 0,
            LostKeys::Key(k) => u64::from(keys.contains(k)),
            LostKeys::Range { from, to } => keys
                .iter()
                .filter(|k| {
                    from.as_ref().is_none_or(|f| *k >= f) && to.as_ref().is_none_or(|t| *k < t)
                })
                .count() as u64,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pages::PAGE_HEADER;

    fn key(i: u32) -> Vec<u8> {
        format!("key{i:05}").into_bytes()
    }

    /// A branch pointer redirected to a stale copy of the leaf it meant (an older version
    /// of the same keys, on a free page): its entries verify, but they are old. The salvage
    /// must never hand them out: what the leaf held is listed lost (or comes back from the
    /// log), never an old value.
    #[test]
    fn a_pointer_to_a_stale_copy_of_a_leaf_never_brings_old_values_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let cfg = Config::default().wal(crate::WalConfig {
            segment_bytes: 256 << 10,
            max_record_bytes: 96 << 10,
            recycle_segments: 1,
            ..crate::WalConfig::default()
        });
        let db = crate::Db::open_with(&dir, cfg.clone()).unwrap();
        // Each version in one transaction: the second frees every leaf of the first at once.
        for version in [1u32, 2] {
            db.update(|t| {
                for i in 0..3000 {
                    t.put("t", &key(i), format!("v{version} {i}").as_bytes())?;
                }
                Ok(())
            })
            .unwrap();
            db.checkpoint().unwrap();
        }
        db.close().unwrap();
        // Without the log, the salvage cannot take `t`'s keys back from it.
        std::fs::remove_dir_all(crate::layout::wal_dir(&dir)).unwrap();

        let path = crate::layout::lmdb_file(crate::layout::data_dir(&dir));
        let file = PageFile::open(&path).unwrap();
        let meta = choose_meta(&file, None).0.unwrap();
        let mut walker = Walker::new(&file, meta);
        let record = walker
            .named_trees()
            .0
            .into_iter()
            .find(|t| t.lmdb_name == "t.t")
            .and_then(|t| t.record)
            .unwrap();
        assert_eq!(record.depth, 2, "a root branch over leaves");
        let mut first_keys: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        walker.walk(&record, TreeKind::Table, &mut |e| {
            first_keys.entry(e.key.to_vec()).or_insert(e.page);
        });
        let mut free = Vec::new();
        walker.walk(&meta.free_tree(), TreeKind::Free, &mut |e| {
            for i in 1..e.data.len() / 8 {
                free.push(u64::from_le_bytes(
                    e.data[i * 8..i * 8 + 8].try_into().unwrap(),
                ));
            }
        });
        // A free page that is an old copy of (part of) a live leaf: a leaf of the table's
        // keys, among the range of a live leaf.
        let (stale, live) = free
            .iter()
            .find_map(|&p| {
                let page = file.read(p, 1).ok()?;
                let (nodes, _) = walker.nodes(&page, p, TreeKind::Table).ok()?;
                let (at, ksize, _) = nodes[0];
                let first = &page[at + 8..at + 8 + ksize];
                let (_, &live) = first_keys.range(..=first.to_vec()).next_back()?;
                (live != p && first.starts_with(b"key")).then_some((p, live))
            })
            .expect("a stale copy of a leaf among the free pages");
        let size = file.page_size();
        let mut image = std::fs::read(&path).unwrap();
        let root = record.root as usize * size;
        let (nodes, _) = walker
            .nodes(&image[root..root + size], record.root, TreeKind::Table)
            .unwrap();
        let slot = nodes
            .iter()
            .map(|n| root + n.0)
            .find(|&at| {
                let lo = u16::from_le_bytes([image[at], image[at + 1]]) as u64;
                let hi = u16::from_le_bytes([image[at + 2], image[at + 3]]) as u64;
                lo | hi << 16 == live
            })
            .unwrap();
        image[slot..slot + 2].copy_from_slice(&(stale as u16).to_le_bytes());
        image[slot + 2..slot + 4].copy_from_slice(&((stale >> 16) as u16).to_le_bytes());
        assert!(PAGE_HEADER < size);
        std::fs::write(&path, &image).unwrap();

        let into = tmp.path().join("repaired");
        let options = RepairOptions {
            config: cfg.clone(),
            ..RepairOptions::default()
        };
        let report = repair(&dir, &into, &options).unwrap();
        let db = crate::Db::open_with(&into, cfg).unwrap();
        let txn = db.read().unwrap();
        let mut missing = 0;
        for i in 0..3000u32 {
            match txn.get("t", &key(i)).unwrap() {
                Some(v) => assert_eq!(v, format!("v2 {i}").as_bytes(), "key {i}: an old value"),
                None => {
                    missing += 1;
                    let k = key(i);
                    assert!(
                        report.losses.iter().any(|l| match &l.keys {
                            LostKeys::Range { from, to } =>
                                from.as_deref().is_none_or(|f| f <= &k[..])
                                    && to.as_deref().is_none_or(|t| &k[..] < t),
                            LostKeys::Key(lost) => lost == &k,
                            LostKeys::Nothing => false,
                        }),
                        "key {i} missing, not listed: {:?}",
                        report.losses
                    );
                }
            }
        }
        assert!(
            missing > 0,
            "the stale page's range is lost: {:?}",
            report.losses
        );
        drop(txn);
        db.close().unwrap();
    }
}
