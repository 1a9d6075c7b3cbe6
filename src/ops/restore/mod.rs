//! Point-in-time restore: a backup, rolled forward with its own log and archived segments
//! to a target LSN, time or restore point. The result holds exactly the commits of the
//! longest LSN prefix that ends at the target.
//!
//! A restore follows one history: the backup's database (its identity) along one timeline,
//! the backup's unless told another that descends from it, switching to each later timeline
//! of the way at the LSN it branched. Segments of another database or of timelines off the
//! way are never read. The restored database keeps the identity on a new timeline, above
//! every timeline of the database the backup and archive hold, so its own archived segments
//! never take the names of the history it came from.

mod chain;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::backup::{require_empty, BackupManifest};
use crate::config::{Config, Durability};
use crate::engine::{RestorePoint, Running, Shutdown};
use crate::error::{Error, Result};
use crate::lsn::Lineage;
use crate::store::sync_dir;
use crate::wal::log::archive::{record_history, TimelineHistory};
use crate::wal::log::fs::StdFs;
use crate::wal::{LogRecord, Lsn, Record, Wal};
use chain::{chain, for_records, Chain, Handed};

/// Where a restore stops.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreTarget {
    /// As far as the backup's log and the archive reach without a gap.
    Latest,
    /// Through this LSN.
    Lsn(Lsn),
    /// Through the last record before the first one committed after this time
    /// (microseconds since the Unix epoch).
    Time(u64),
    /// Up to (not including) the restore point of this name.
    Name(String),
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The WAL archive to roll forward from (`WalConfig::archive`), if any.
    pub archive: Option<PathBuf>,
    /// The configuration the restored database is opened with once to replay (its
    /// `wal.archive` is ignored during the replay; the restored database, on a timeline of
    /// its own, may archive into the same archive afterwards). Default: `Config::default()`.
    pub config: Config,
    /// The timeline to follow: the backup's (`None`, the default), or a later timeline of
    /// the same database that descends from it (a restore of it), switching to it where it
    /// branched. Its first archived segment must be in the archive.
    pub timeline: Option<u32>,
    /// A log directory of the database itself (its `wal/`), read as the archive is, for the
    /// segments not yet archived: what `walmdb::repair` rolls forward with. A torn tail of
    /// its last segment ends the history there, as opening the database would cut it.
    pub live_log: Option<PathBuf>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The LSN the backup's LMDB copy held.
    pub backup_lsn: Lsn,
    /// The restored database holds every commit through this LSN and none after.
    pub restored_lsn: Lsn,
    /// The commit time of the last transaction restored, if any was replayed.
    pub restored_micros: Option<u64>,
    /// Records written into the restored log and replayed (a transaction written in pieces
    /// counts once).
    pub records: u64,
    /// The segment files read, in order.
    pub segments: Vec<PathBuf>,
    /// The timeline followed.
    pub timeline: u32,
    /// The restored database's identity and its new timeline (whose parent is the one
    /// followed): recorded in its log, its archived segments' names and its backups.
    pub lineage: Lineage,
}

/// The points a backup and archive can restore to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryPoints {
    /// The backup's manifest.
    pub backup: BackupManifest,
    /// The last LSN reachable (`backup.lmdb_applied_lsn` when nothing follows it).
    pub last_lsn: Lsn,
    /// The commit time of the last reachable transaction, if any.
    pub last_micros: Option<u64>,
    /// The named restore points after the backup, in log order.
    pub restore_points: Vec<RestorePoint>,
    /// Why the reachable log ends there: the archive ends, a gap, or a damaged segment.
    pub end: String,
    /// The segment files of the reachable log, in order.
    pub segments: Vec<PathBuf>,
    /// The timeline followed.
    pub timeline: u32,
}

fn decode(r: &LogRecord) -> Result<Record> {
    r.record.decode().map_err(|e| Error::Corruption {
        segment: 0,
        offset: 0,
        reason: format!("record at LSN {} does not decode: {e}", r.lsn),
    })
}

/// Lists what the backup in `backup_dir` and the archive can restore to, along the
/// backup's timeline.
pub fn recovery_points(backup_dir: &Path, archive: Option<&Path>) -> Result<RecoveryPoints> {
    recovery_points_on(backup_dir, archive, None)
}

/// [`recovery_points`] along `timeline` (`None`: the backup's), as
/// [`RestoreOptions::timeline`] chooses it.
pub fn recovery_points_on(
    backup_dir: &Path,
    archive: Option<&Path>,
    timeline: Option<u32>,
) -> Result<RecoveryPoints> {
    let manifest = BackupManifest::read_verified(backup_dir)?;
    let chain = chain(backup_dir, &manifest, archive, None, timeline)?;
    let mut last_lsn = manifest.lmdb_applied_lsn;
    let mut last_micros = None;
    let mut restore_points = Vec::new();
    for_records(&chain, manifest.lmdb_applied_lsn + 1, |r, handed| {
        match handed {
            Handed::Part => return Ok(true),
            Handed::End { commit_micros } => {
                last_lsn = r.lsn;
                last_micros = Some(commit_micros);
                return Ok(true);
            }
            Handed::Whole => last_lsn = r.lsn,
        }
        match decode(&r)? {
            Record::Txn(t) => last_micros = Some(t.commit_micros),
            Record::Timestamp { unix_micros, name } if !name.is_empty() => {
                restore_points.push(RestorePoint {
                    name,
                    lsn: r.lsn,
                    unix_micros,
                })
            }
            _ => {}
        }
        Ok(true)
    })?;
    Ok(RecoveryPoints {
        backup: manifest,
        last_lsn,
        last_micros,
        restore_points,
        end: chain.end,
        timeline: chain.timeline,
        segments: chain.links.into_iter().map(|l| l.segment.path).collect(),
    })
}

/// Restores the backup in `backup_dir`, rolled forward to `target` with its log and the
/// archive, into `target_dir` (which must not exist or be empty). Every file of the backup
/// is checked against its manifest first; a damaged or missing segment on the way to the
/// target stops the restore with an error naming it, and nothing is written then. The
/// restored database is opened once (replaying the log into LMDB) and closed.
pub fn restore(
    backup_dir: &Path,
    target_dir: &Path,
    target: &RestoreTarget,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let span =
        tracing::info_span!("walmdb.restore", backup = %backup_dir.display(), target = ?target);
    let _entered = span.enter();
    let manifest = BackupManifest::read_verified(backup_dir)?;
    require_empty(target_dir, "restore target directory")?;
    let chain = chain(
        backup_dir,
        &manifest,
        options.archive.as_deref(),
        options.live_log.as_deref(),
        options.timeline,
    )?;
    let base = manifest.lmdb_applied_lsn;
    let cut = find_cut(&chain, &manifest, target)?;
    // The same database (a new identity only when nothing recorded one: a format-1 backup
    // without an archive that does) on a timeline of its own.
    let identity = match chain.identity {
        0 => Lineage::new_database().identity,
        known => known,
    };
    let mut lineage = Lineage {
        identity,
        timeline: chain.timeline,
        parent: 0,
    }
    .branch(chain.max_timeline + 1);
    if let Some(dir) = &options.archive {
        lineage = record_branch(dir, lineage, cut);
    }

    crate::layout::create_private_dir(&crate::layout::data_dir(target_dir))?;
    let data_copy = crate::layout::lmdb_file(crate::layout::data_dir(target_dir));
    let mut copy = crate::layout::create_private_file(&data_copy)?;
    std::io::copy(
        &mut std::fs::File::open(crate::layout::lmdb_file(crate::layout::data_dir(
            backup_dir,
        )))?,
        &mut copy,
    )?;
    copy.sync_all()?;
    sync_dir(&crate::layout::data_dir(target_dir))?;
    let mut wal_cfg = options.config.wal.clone();
    wal_cfg.archive = None;
    wal_cfg.prepare_segments = false;
    let wal = Wal::open_with_lineage(
        crate::sync::DynArc::new(StdFs),
        &crate::layout::wal_dir(target_dir),
        wal_cfg.clone(),
        Some(base),
        crate::wal::NoSequencer,
        Some(lineage),
    )?;
    let mut records = 0u64;
    let mut restored_micros = None;
    let mut pending = VecDeque::new();
    let answer = |pending: &mut VecDeque<(Lsn, crate::wal::CommitHandle)>| -> Result<()> {
        let (want, handle) = pending.pop_front().expect("one is pending");
        let got = handle.wait()?;
        if got != want {
            return Err(Error::Inconsistent {
                path: target_dir.to_owned(),
                reason: format!("record {want} was written at LSN {got}"),
            });
        }
        Ok(())
    };
    if cut > base {
        // Every record at or below the cut as it is, a split transaction's pieces one at a
        // time at their own LSNs (parts cut off from their end are dropped by the open).
        for_records(&chain, base + 1, |r, handed| {
            if r.lsn > cut {
                return Ok(false);
            }
            match handed {
                Handed::Part => {}
                Handed::End { commit_micros } => {
                    restored_micros = Some(commit_micros);
                    records += 1;
                }
                Handed::Whole => {
                    if let Record::Txn(t) = decode(&r)? {
                        restored_micros = Some(t.commit_micros);
                    }
                    records += 1;
                }
            }
            let lsn = r.lsn;
            pending.push_back((lsn, wal.submit(r.record, (), Some(Durability::None))?));
            if pending.len() >= 256 {
                answer(&mut pending)?;
            }
            Ok(lsn < cut)
        })?;
    }
    while !pending.is_empty() {
        answer(&mut pending)?;
    }
    wal.sync()?;
    wal.close()?;
    sync_dir(target_dir)?;
    let mut cfg = options.config.clone();
    cfg.wal = wal_cfg;
    let engine = Running::open(target_dir, cfg, crate::sync::DynArc::new(StdFs), None)?;
    let restored_lsn = engine.engine().report.last_lsn;
    engine.shutdown(Shutdown::Drain)?;
    if restored_lsn != cut {
        return Err(Error::Inconsistent {
            path: target_dir.to_owned(),
            reason: format!("the restore replayed through LSN {restored_lsn}, not {cut}"),
        });
    }
    tracing::info!(
        base,
        restored_lsn,
        records,
        followed = chain.timeline,
        lineage = %lineage,
        "restored the database"
    );
    Ok(RestoreReport {
        backup_lsn: base,
        restored_lsn,
        restored_micros,
        records,
        segments: chain.links.into_iter().map(|l| l.segment.path).collect(),
        timeline: chain.timeline,
        lineage,
    })
}

/// Records in the archive where the new timeline branches (after `cut`), so a later restore
/// can follow it from a backup of its parent even once its first segments are gone. A number
/// another restore has taken meanwhile is skipped. Not recording it (a read-only archive) is
/// no error: following the timeline then needs its first segment archived.
fn record_branch(dir: &Path, mut lineage: Lineage, cut: Lsn) -> Lineage {
    loop {
        let history = TimelineHistory {
            lineage,
            branch_lsn: cut,
        };
        match record_history(&StdFs, dir, &history) {
            Ok(true) => return lineage,
            Ok(false) if lineage.timeline < u32::MAX => lineage.timeline += 1,
            Ok(false) => return lineage,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, timeline = lineage.timeline, "could not record the new timeline's history in the archive");
                return lineage;
            }
        }
    }
}

/// The LSN the restore stops at, or why the target is out of reach.
fn find_cut(chain: &Chain, manifest: &BackupManifest, target: &RestoreTarget) -> Result<Lsn> {
    let base = manifest.lmdb_applied_lsn;
    match target {
        RestoreTarget::Lsn(t) if *t < base => {
            return Err(Error::RestoreTarget(format!(
                "LSN {t} is before the backup, whose LMDB copy holds through LSN {base}"
            )))
        }
        RestoreTarget::Time(t) if *t < manifest.lmdb_applied_micros => {
            return Err(Error::RestoreTarget(format!(
                "time {t} is before the backup, whose LMDB copy holds commits through time {}",
                manifest.lmdb_applied_micros
            )))
        }
        _ => {}
    }
    let mut last = base;
    let mut cut = None;
    let mut last_time = None;
    for_records(chain, base + 1, |r, handed| {
        let commit_micros = match handed {
            // Read, not handed out: a transaction is at its end's LSN.
            Handed::Part => return Ok(true),
            Handed::End { commit_micros } => Some(commit_micros),
            Handed::Whole => None,
        };
        match target {
            RestoreTarget::Lsn(t) if r.lsn > *t => {
                cut = Some(*t);
                return Ok(false);
            }
            RestoreTarget::Time(t) => {
                let at = match commit_micros {
                    Some(at) => Some(at),
                    None => decode(&r)?.time_micros(),
                };
                if let Some(at) = at {
                    if at > *t {
                        cut = Some(r.lsn - 1);
                        return Ok(false);
                    }
                    last_time = Some(at);
                }
            }
            RestoreTarget::Name(n) if commit_micros.is_none() => {
                if let Record::Timestamp { name, .. } = decode(&r)? {
                    if name == *n {
                        cut = Some(r.lsn - 1);
                        return Ok(false);
                    }
                }
            }
            _ => {}
        }
        last = r.lsn;
        Ok(true)
    })?;
    if let Some(cut) = cut {
        return Ok(cut);
    }
    // The target lies at or past the end of the reachable log.
    let out_of_reach = |what: String| {
        Err(match &chain.damaged {
            Some((segment, offset, reason)) => Error::Corruption {
                segment: *segment,
                offset: *offset,
                reason: reason.clone(),
            },
            None => Error::RestoreTarget(what),
        })
    };
    match target {
        RestoreTarget::Latest if chain.damaged.is_none() => Ok(last),
        RestoreTarget::Lsn(t) if *t == last => Ok(last),
        RestoreTarget::Lsn(t) => out_of_reach(format!(
            "LSN {t} is past the reachable log, which ends at LSN {last}: {}",
            chain.end
        )),
        RestoreTarget::Time(t) => out_of_reach(format!(
            "time {t} is past the last commit reachable ({}, LSN {last}): {}; nothing shows what came after it",
            last_time.map_or("none".to_string(), |m| m.to_string()),
            chain.end
        )),
        RestoreTarget::Name(n) => out_of_reach(format!(
            "no restore point named {n:?} after the backup (LSN {base}) in the reachable log: {}",
            chain.end
        )),
        RestoreTarget::Latest => out_of_reach(String::new()),
    }
}
