//! Which segments a restore reads: the one history it follows (the backup's database along
//! one timeline, switching to each later timeline of the way where it branched), assembled
//! from the backup's segments and the archive. Segments of another database or of a
//! timeline off the way are never read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ops::backup::BackupManifest;
use crate::wal::log::archive::{
    archive_identity, histories as read_histories, parse_archive_file_name, TimelineHistory,
};
use crate::wal::log::fs::StdFs;
use crate::wal::log::segment::{
    parse_segment_file_name, scan_segment, FrameWalk, ScanEnd, SegmentHeader,
};
use crate::wal::log::txn_payload::{header_commit_micros, piece_parts};
use crate::wal::{LogRecord, Lsn, RecordType};

/// A segment file found in the backup or the archive.
pub(super) struct Candidate {
    pub path: PathBuf,
    pub header: SegmentHeader,
    /// Its timeline: its header's, or 1 for a version-1 header.
    timeline: u32,
    last_lsn: Lsn,
    /// Where and why its frames are damaged.
    damage: Option<(u64, String)>,
    /// The damage is a torn tail: no valid frame follows it.
    torn_tail: bool,
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
        timeline: header.lineage.timeline,
        last_lsn: scan.last_lsn,
        torn_tail: matches!(scan.end_kind, ScanEnd::Damaged(_)) && scan.after.is_empty(),
        damage,
    }))
}

/// A segment of the followed history and the last LSN taken from it: where the history goes
/// on along a later timeline (`Lsn::MAX` on the timeline followed).
pub(super) struct Link {
    pub segment: Candidate,
    pub until: Lsn,
}

/// The reachable log after the backup's LMDB copy, along the timeline followed: segments in
/// order, and why it ends.
pub(super) struct Chain {
    pub links: Vec<Link>,
    pub end: String,
    /// A damaged segment where the chain ends (segment, offset, reason): a restore that
    /// needs what lies past its valid frames fails naming it.
    pub damaged: Option<(u64, u64, String)>,
    /// The timeline followed.
    pub timeline: u32,
    /// The database's identity (0: unknown, a format-1 backup without an archive that
    /// records one).
    pub identity: u64,
    /// The highest timeline of the database in the backup and the archive.
    pub max_timeline: u32,
}

/// The segment files of the backup (on the backup's timeline) and of the archive, by
/// (timeline, number) as their names say.
fn segment_files(
    backup_dir: &Path,
    manifest: &BackupManifest,
    archive: Option<&Path>,
    live_log: Option<&Path>,
) -> Result<Vec<(PathBuf, (u32, u64))>> {
    let mut files: Vec<(PathBuf, (u32, u64))> = manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with(&crate::layout::relative_wal_file("")))
        .filter_map(|f| {
            let path = backup_dir.join(&f.path);
            let name = path.file_name()?.to_str()?;
            let no = parse_segment_file_name(name)?;
            Some((path, (manifest.lineage.timeline, no)))
        })
        .collect();
    if let Some(dir) = archive {
        let mut names: Vec<(String, (u32, u64))> = std::fs::read_dir(dir)
            .map_err(|e| Error::BadBackup {
                path: dir.to_owned(),
                reason: format!("cannot read the archive: {e}"),
            })?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| parse_archive_file_name(&n).map(|key| (n, key)))
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|(n, key)| (dir.join(n), key)));
    }
    if let Some(dir) = live_log {
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let no = parse_segment_file_name(e.file_name().to_str()?)?;
                Some((no, e.path()))
            })
            .collect();
        found.sort();
        for (no, path) in found {
            // The timeline its header names (a version-1 header: 1).
            let timeline = match crate::wal::log::segment::read_header(&StdFs, &path)? {
                Ok(h) => h.lineage.timeline,
                Err(_) => manifest.lineage.timeline,
            };
            files.push((path, (timeline, no)));
        }
    }
    Ok(files)
}

/// The database's identity: the backup's, which the archive (if it records one) must share;
/// for a format-1 backup, the archive's.
fn identity(manifest: &BackupManifest, archive: Option<&Path>) -> Result<u64> {
    let Some(dir) = archive else {
        return Ok(manifest.lineage.identity);
    };
    let expected = manifest.lineage.identity;
    match archive_identity(&StdFs, dir)? {
        None => Ok(expected),
        Some(Some(found)) if found == expected || expected == 0 => Ok(found),
        Some(found) => Err(Error::ForeignArchive {
            dir: dir.to_owned(),
            expected,
            found,
        }),
    }
}

/// The timelines from the backup's to `follow`, oldest first, each after the first with the
/// last LSN it shares with its parent: the one its restore recorded in the archive's history
/// file, else where its log begins (its segment 1's first LSN - 1, the restore's backup LSN:
/// what the restore replayed after it are copies of the parent's records).
fn timeline_path(
    best: &BTreeMap<(u32, u64), Candidate>,
    histories: &BTreeMap<u32, TimelineHistory>,
    from: u32,
    follow: u32,
    base: Lsn,
) -> Result<Vec<(u32, Lsn)>> {
    let parent = |t: u32| {
        histories.get(&t).map(|h| h.lineage.parent).or_else(|| {
            best.iter()
                .find(|((tl, _), c)| *tl == t && c.header.lineage.is_known())
                .map(|(_, c)| c.header.lineage.parent)
        })
    };
    let mut path = vec![follow];
    let mut t = follow;
    while t != from {
        let p = parent(t).ok_or_else(|| {
            Error::RestoreTarget(format!(
                "timeline {t} has no segment or history file in the backup or the archive, so \
                 its history is unknown"
            ))
        })?;
        if p < from {
            return Err(Error::RestoreTarget(format!(
                "timeline {follow} does not descend from the backup's timeline {from} \
                 (timeline {t} branched from timeline {p})"
            )));
        }
        path.push(p);
        t = p;
    }
    path.reverse();
    let mut out = vec![(from, Lsn::MAX)];
    for pair in path.windows(2) {
        let (p, c) = (pair[0], pair[1]);
        let recorded = histories.get(&c).map(|h| h.branch_lsn);
        let begins = best.get(&(c, 1)).map(|first| first.header.first_lsn - 1);
        let branch = recorded.or(begins).ok_or_else(|| {
            Error::RestoreTarget(format!(
                "the archive holds neither timeline {c}'s history file nor its first segment, \
                 so where it branched from timeline {p} is unknown"
            ))
        })?;
        // Branch points along the path never go back, nor before the backup.
        let floor = out[1..].last().map_or(base, |&(_, b)| b.max(base));
        if branch < floor {
            return Err(Error::RestoreTarget(format!(
                "timeline {c} branched from timeline {p} at LSN {branch}, before this backup's \
                 LMDB copy (LSN {base}) or its parent's own branch: use an earlier backup"
            )));
        }
        out.push((c, branch));
    }
    Ok(out)
}

pub(super) fn chain(
    backup_dir: &Path,
    manifest: &BackupManifest,
    archive: Option<&Path>,
    live_log: Option<&Path>,
    follow: Option<u32>,
) -> Result<Chain> {
    let identity = identity(manifest, archive)?;
    // For each (timeline, segment number), the most complete undamaged copy (an archived
    // copy of the segment that was active during the backup holds more than the backup's).
    let mut best: BTreeMap<(u32, u64), Candidate> = BTreeMap::new();
    // Files whose header does not decode, by the timeline and number in their name: damage
    // only if the walk reaches them.
    let mut bad_headers: BTreeMap<(u32, u64), PathBuf> = BTreeMap::new();
    let files = segment_files(backup_dir, manifest, archive, live_log)?;
    // The live log's last segment: a torn tail there is where the history ends, as opening
    // the database would cut it.
    let live_last = live_log.and_then(|dir| {
        files
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, _)| p.clone())
            .next_back()
    });
    for (path, key) in files {
        let Some(mut c) = examine(&path)? else {
            bad_headers.insert(key, path);
            continue;
        };
        if live_last.as_ref() == Some(&path) && c.torn_tail {
            c.damage = None;
        }
        let lineage = c.header.lineage;
        if lineage.is_known() && lineage.identity != identity {
            // Never part of this database's history, whatever its number.
            tracing::warn!(path = %path.display(), found = %lineage, identity = %format_args!("{identity:016x}"), "a segment of another database is ignored");
            continue;
        }
        let key = (c.timeline, c.header.segment_no);
        match best.get(&key) {
            Some(old) if old.header.salt != c.header.salt => {
                return Err(Error::SegmentSequence {
                    dir: archive.unwrap_or(backup_dir).to_owned(),
                    reason: format!(
                        "{} and {} are two different segments {} of timeline {} (their salts \
                         differ): two restores started the same timeline",
                        old.path.display(),
                        c.path.display(),
                        key.1,
                        key.0
                    ),
                })
            }
            Some(old)
                if (c.damage.is_none(), c.last_lsn) <= (old.damage.is_none(), old.last_lsn) => {}
            _ => {
                best.insert(key, c);
            }
        }
    }
    let histories: BTreeMap<u32, TimelineHistory> = match archive {
        Some(dir) => read_histories(&StdFs, dir)?
            .into_iter()
            .filter(|h| h.lineage.identity == identity)
            .map(|h| (h.lineage.timeline, h))
            .collect(),
        None => BTreeMap::new(),
    };
    let from_timeline = manifest.lineage.timeline;
    let timeline = follow.unwrap_or(from_timeline);
    let max_timeline = best
        .keys()
        .map(|k| k.0)
        .chain(histories.keys().copied())
        .chain([from_timeline, timeline])
        .max()
        .unwrap_or(timeline);
    let base = manifest.lmdb_applied_lsn;
    let path = timeline_path(&best, &histories, from_timeline, timeline, base)?;
    let mut links = Vec::new();
    let mut damaged = None;
    let mut next = base + 1;
    let mut end = String::new();
    'timelines: for (i, &(t, _)) in path.iter().enumerate() {
        // The records of this timeline are taken up to where the next one branched.
        let until = path.get(i + 1).map_or(Lsn::MAX, |&(_, branch)| branch);
        if until < next {
            continue;
        }
        let start = best
            .iter()
            .filter(|((tl, _), c)| *tl == t && c.header.first_lsn <= next)
            .map(|((_, no), _)| *no)
            .next_back();
        let Some(mut no) = start else {
            return Err(Error::BadBackup {
                path: backup_dir.to_owned(),
                reason: format!(
                    "no segment of timeline {t} holds LSN {next}, the first after the backup's \
                     LMDB copy"
                ),
            });
        };
        loop {
            let c = best.remove(&(t, no)).expect("present");
            let last = c.last_lsn;
            // A segment the next one continues at the next LSN lost nothing: bytes past
            // its run are stale, not damage (as recovery judges them).
            let continued = best
                .get(&(t, no + 1))
                .is_some_and(|n| crate::lsn::continues(last, n.header.first_lsn));
            if let Some((offset, why)) = c.damage.clone().filter(|_| last < until && !continued) {
                damaged = Some((no, offset, format!("{}: {why}", c.path.display())));
                end = format!("segment {} is damaged at offset {offset}", c.path.display());
                links.push(Link { segment: c, until });
                break 'timelines;
            }
            links.push(Link { segment: c, until });
            if last >= until {
                next = until + 1;
                continue 'timelines;
            }
            match best.get(&(t, no + 1)) {
                None if bad_headers.contains_key(&(t, no + 1)) => {
                    let path = &bad_headers[&(t, no + 1)];
                    damaged = Some((
                        no + 1,
                        0,
                        format!("{}: the segment header is damaged", path.display()),
                    ));
                    end = format!("segment {} has a damaged header", path.display());
                }
                None => {
                    end =
                        format!("the archive ends after segment {no} of timeline {t} (LSN {last})")
                }
                Some(next) if next.header.first_lsn != last + 1 => {
                    end = format!(
                        "gap: segment {no} of timeline {t} ends at LSN {last} but segment {} \
                         starts at LSN {}",
                        no + 1,
                        next.header.first_lsn
                    )
                }
                Some(_) => {
                    no += 1;
                    continue;
                }
            }
            break 'timelines;
        }
    }
    Ok(Chain {
        links,
        end,
        damaged,
        timeline,
        identity,
        max_timeline,
    })
}

/// What a record of the chain is to restore (see [`for_records`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handed {
    /// A record of its own (not a piece of a split transaction).
    Whole,
    /// A piece of a split transaction that does not end it (or one of a transaction that
    /// began before the read).
    Part,
    /// The last piece of a split transaction: the transaction committed at its LSN, at
    /// `commit_micros` (read from its first piece).
    End { commit_micros: u64 },
}

/// A split transaction's first piece's commit time: its chunk's header.
fn piece_micros(chunk: &[u8], lsn: Lsn) -> Result<u64> {
    header_commit_micros(chunk).ok_or_else(|| Error::Corruption {
        segment: 0,
        offset: 0,
        reason: format!("the first piece of a transaction at LSN {lsn} is shorter than its header"),
    })
}

/// Calls `f` with each record after `from_lsn - 1` of the chain, in order, until it
/// returns false: every record as it is in the log, a split transaction's pieces included
/// (never joined, so none is in memory whole), each with what it is ([`Handed`]). The
/// pieces' numbers are checked as a joining read checks them.
pub(super) fn for_records(
    chain: &Chain,
    from_lsn: Lsn,
    mut f: impl FnMut(LogRecord, Handed) -> Result<bool>,
) -> Result<()> {
    let mut next = from_lsn;
    // The split transaction being read: the number of its next piece and its commit time.
    let mut open: Option<(u32, u64)> = None;
    for link in &chain.links {
        let c = &link.segment;
        let data = std::fs::read(&c.path)?;
        // A frame at a time: a segment of compressed frames decodes to many times its size.
        let mut walk = FrameWalk::new(&c.header);
        while let Some(records) = walk.next_frame(&data, &c.header, next, link.until)? {
            for r in records {
                next = r.lsn + 1;
                let end = match r.record.kind() {
                    RecordType::TxnPart => false,
                    RecordType::TxnEnd => true,
                    _ => {
                        open = None;
                        if !f(r, Handed::Whole)? {
                            return Ok(());
                        }
                        continue;
                    }
                };
                let payload = r.record.payload();
                let corrupt = |reason: String| Error::Corruption {
                    segment: c.header.segment_no,
                    offset: 0,
                    reason,
                };
                let (number, chunk) = piece_parts(payload)
                    .ok_or_else(|| corrupt("a transaction piece shorter than its number".into()))?;
                let micros = match open {
                    _ if number == 0 => piece_micros(chunk, r.lsn)?,
                    Some((expected, micros)) if number == expected => micros,
                    // A transaction that began before the read: skipped, as a joining read does.
                    None => {
                        if !f(r, Handed::Part)? {
                            return Ok(());
                        }
                        continue;
                    }
                    Some((expected, _)) => {
                        return Err(corrupt(format!(
                            "transaction piece {number} at LSN {} follows {expected} parts",
                            r.lsn
                        )))
                    }
                };
                let handed = if end {
                    open = None;
                    Handed::End {
                        commit_micros: micros,
                    }
                } else {
                    open = Some((number + 1, micros));
                    Handed::Part
                };
                if !f(r, handed)? {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
