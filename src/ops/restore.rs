//! Point-in-time restore: a backup, rolled forward with its own log and archived segments
//! to a target LSN, time or restore point. The result holds exactly the commits of the
//! longest LSN prefix that ends at the target.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use super::backup::{require_empty, BackupManifest};
use crate::config::{Config, Durability};
use crate::engine::{RestorePoint, Running, Shutdown};
use crate::error::{Error, Result};
use crate::store::sync_dir;
use crate::wal::log::fs::StdFs;
use crate::wal::log::segment::{
    parse_segment_file_name, records_in, scan_segment, ScanEnd, SegmentHeader,
};
use crate::wal::{LogRecord, Lsn, Record, Wal};

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
    /// `wal.archive` is ignored: the restored log starts again at segment 1, so it must
    /// archive elsewhere). Default: `Config::default()`.
    pub config: Config,
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
    /// Records written into the restored log and replayed.
    pub records: u64,
    /// The segment files read, in order.
    pub segments: Vec<PathBuf>,
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
}

/// A segment file found in the backup or the archive.
struct Candidate {
    path: PathBuf,
    header: SegmentHeader,
    last_lsn: Lsn,
    /// Where and why its frames are damaged.
    damage: Option<(u64, String)>,
}

fn examine(path: &Path) -> Result<Option<Candidate>> {
    let data = std::fs::read(path)?;
    let Ok(header) = SegmentHeader::decode(&data) else {
        return Ok(None);
    };
    let scan = scan_segment(&data, &header);
    let damage = match (&scan.end_kind, scan.after.first()) {
        (ScanEnd::Damaged(why), _) => Some((scan.end as u64, why.clone())),
        (ScanEnd::Clean, Some((off, _))) => Some((
            scan.end as u64,
            format!("valid frames at offset {off} follow invalid bytes"),
        )),
        (ScanEnd::Clean, None) => None,
    };
    Ok(Some(Candidate {
        path: path.to_owned(),
        header,
        last_lsn: scan.last_lsn,
        damage,
    }))
}

/// The reachable log after the backup's LMDB copy: segments in order, and why it ends.
struct Chain {
    segments: Vec<Candidate>,
    end: String,
    /// A damaged segment where the chain ends (segment, offset, reason): a restore that
    /// needs what lies past its valid frames fails naming it.
    damaged: Option<(u64, u64, String)>,
}

fn chain(backup_dir: &Path, manifest: &BackupManifest, archive: Option<&Path>) -> Result<Chain> {
    let mut files: Vec<PathBuf> = manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with(&crate::layout::relative_wal_file("")))
        .map(|f| backup_dir.join(&f.path))
        .collect();
    if let Some(dir) = archive {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::BadBackup {
                path: dir.to_owned(),
                reason: format!("cannot read the archive: {e}"),
            })?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| parse_segment_file_name(n).is_some())
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|n| dir.join(n)));
    }
    // For each segment number, the most complete undamaged copy (an archived copy of the
    // segment that was active during the backup holds more than the backup's).
    let mut best: BTreeMap<u64, Candidate> = BTreeMap::new();
    // Files whose header does not decode, by the number in their name: damage only if the
    // walk reaches them.
    let mut bad_headers: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for path in files {
        let Some(c) = examine(&path)? else {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if let Some(no) = parse_segment_file_name(&name) {
                bad_headers.insert(no, path);
            }
            continue;
        };
        let better = |old: &Candidate| {
            (c.damage.is_none(), c.last_lsn) > (old.damage.is_none(), old.last_lsn)
        };
        match best.get(&c.header.segment_no) {
            Some(old) if !better(old) => {}
            _ => {
                best.insert(c.header.segment_no, c);
            }
        }
    }
    let from = manifest.lmdb_applied_lsn + 1;
    let start = best
        .values()
        .filter(|c| c.header.first_lsn <= from)
        .map(|c| c.header.segment_no)
        .next_back();
    let Some(mut no) = start else {
        return Err(Error::BadBackup {
            path: backup_dir.to_owned(),
            reason: format!("no segment holds LSN {from}, the first after the backup's LMDB copy"),
        });
    };
    let mut segments = Vec::new();
    let mut damaged = None;
    let end = loop {
        let c = best.remove(&no).expect("present");
        if let Some((offset, why)) = &c.damage {
            damaged = Some((no, *offset, format!("{}: {why}", c.path.display())));
            let end = format!("segment {} is damaged at offset {offset}", c.path.display());
            segments.push(c);
            break end;
        }
        let last = c.last_lsn;
        segments.push(c);
        match best.get(&(no + 1)) {
            None if bad_headers.contains_key(&(no + 1)) => {
                let path = &bad_headers[&(no + 1)];
                damaged = Some((
                    no + 1,
                    0,
                    format!("{}: the segment header is damaged", path.display()),
                ));
                break format!("segment {} has a damaged header", path.display());
            }
            None => break format!("the archive ends after segment {no} (LSN {last})"),
            Some(next) if next.header.first_lsn != last + 1 => {
                break format!(
                    "gap: segment {no} ends at LSN {last} but segment {} starts at LSN {}",
                    no + 1,
                    next.header.first_lsn
                )
            }
            Some(_) => no += 1,
        }
    };
    Ok(Chain {
        segments,
        end,
        damaged,
    })
}

/// Calls `f` with each record after `from_lsn - 1` of the chain, in order, until it
/// returns false.
fn for_records(
    chain: &Chain,
    from_lsn: Lsn,
    mut f: impl FnMut(LogRecord) -> Result<bool>,
) -> Result<()> {
    for c in &chain.segments {
        let data = std::fs::read(&c.path)?;
        let (records, _) = records_in(&data, &c.header, from_lsn, Lsn::MAX)?;
        for r in records {
            if !f(r)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn decode(r: &LogRecord) -> Result<Record> {
    r.record.decode().map_err(|e| Error::Corruption {
        segment: 0,
        offset: 0,
        reason: format!("record at LSN {} does not decode: {e}", r.lsn),
    })
}

/// Lists what the backup in `backup_dir` and the archive can restore to.
pub fn recovery_points(backup_dir: &Path, archive: Option<&Path>) -> Result<RecoveryPoints> {
    let manifest = BackupManifest::read_verified(backup_dir)?;
    let chain = chain(backup_dir, &manifest, archive)?;
    let mut last_lsn = manifest.lmdb_applied_lsn;
    let mut last_micros = None;
    let mut restore_points = Vec::new();
    for_records(&chain, manifest.lmdb_applied_lsn + 1, |r| {
        last_lsn = r.lsn;
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
        segments: chain.segments.into_iter().map(|c| c.path).collect(),
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
    let chain = chain(backup_dir, &manifest, options.archive.as_deref())?;
    let base = manifest.lmdb_applied_lsn;
    let cut = find_cut(&chain, &manifest, target)?;

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
    let wal = Wal::open_with(
        crate::sync::DynArc::new(StdFs),
        &crate::layout::wal_dir(target_dir),
        wal_cfg.clone(),
        Some(base),
        crate::wal::NoSequencer,
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
        for_records(&chain, base + 1, |r| {
            if r.lsn > cut {
                return Ok(false);
            }
            if let Record::Txn(t) = decode(&r)? {
                restored_micros = Some(t.commit_micros);
            }
            let lsn = r.lsn;
            pending.push_back((lsn, wal.submit(r.record, (), Some(Durability::None))?));
            records += 1;
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
    let mut engine = Running::open(target_dir, cfg, crate::sync::DynArc::new(StdFs), None)?;
    let restored_lsn = engine.engine().report.last_lsn;
    engine.shutdown(Shutdown::Drain)?;
    if restored_lsn != cut {
        return Err(Error::Inconsistent {
            path: target_dir.to_owned(),
            reason: format!("the restore replayed through LSN {restored_lsn}, not {cut}"),
        });
    }
    tracing::info!(base, restored_lsn, records, "restored the database");
    Ok(RestoreReport {
        backup_lsn: base,
        restored_lsn,
        restored_micros,
        records,
        segments: chain.segments.into_iter().map(|c| c.path).collect(),
    })
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
    for_records(chain, base + 1, |r| {
        match target {
            RestoreTarget::Lsn(t) if r.lsn > *t => {
                cut = Some(*t);
                return Ok(false);
            }
            RestoreTarget::Time(t) => {
                if let Some(at) = decode(&r)?.time_micros() {
                    if at > *t {
                        cut = Some(r.lsn - 1);
                        return Ok(false);
                    }
                    last_time = Some(at);
                }
            }
            RestoreTarget::Name(n) => {
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
