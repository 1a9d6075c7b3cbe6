//! WAL archiving: before the log recycles or removes a retired segment, its valid frames are
//! copied into an archive directory and synced, so a backup plus the archive can be rolled
//! forward to any later point. A retention policy prunes the archive.
//!
//! An archived segment is the segment's header and its run of valid frames, byte for byte:
//! the same format, CRCs and version as a live segment, without the preallocated tail. It is
//! named after its timeline and number (`wal-<timeline:08>-<segment:08>.log`), so the
//! timelines of one database share an archive without overwriting each other, and the
//! directory's `IDENTITY` file names the one database whose segments it holds.

use std::path::Path;
use std::time::SystemTime;

use super::fs::{join, Fs};
use super::segment::{
    parse_segment_file_name, read_header, read_prefix, read_segment, scan_segment, ScanEnd,
    SegmentHeader,
};
use crate::config::ArchiveConfig;
use crate::error::{Error, Result};
use crate::lsn::{Lineage, Lsn};

/// The file in an archive directory that names the database its segments belong to.
pub const IDENTITY_FILE: &str = "IDENTITY";
const IDENTITY_MAGIC: &str = "walmdb-archive";
/// The format version of the `IDENTITY` file.
const IDENTITY_VERSION: u32 = 1;

/// The archive's name for segment `segment_no` of `timeline`.
pub fn archive_file_name(timeline: u32, segment_no: u64) -> String {
    format!("wal-{timeline:08}-{segment_no:08}.log")
}

/// The timeline and segment number in an archived segment's name: `wal-<t>-<n>.log`, or a
/// live segment's name (`wal-<n>.log`, what archives written by format version 1 hold),
/// read as timeline 1.
pub fn parse_archive_file_name(name: &str) -> Option<(u32, u64)> {
    if let Some(n) = parse_segment_file_name(name) {
        return Some((1, n));
    }
    let (t, n) = name
        .strip_prefix("wal-")?
        .strip_suffix(".log")?
        .split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(t) || !digits(n) {
        return None;
    }
    Some((t.parse().ok()?, n.parse().ok()?))
}

/// The `IDENTITY` file's bytes.
///
/// ```text
/// Format: IDENTITY = "walmdb-archive 1\nidentity <16 hex digits>\ncrc32 <8 hex digits>\n"
///         crc32 = crc32(the bytes of the first two lines)
/// ```
fn encode_identity(identity: u64) -> String {
    let body = format!("{IDENTITY_MAGIC} {IDENTITY_VERSION}\nidentity {identity:016x}\n");
    let crc = crc32fast::hash(body.as_bytes());
    format!("{body}crc32 {crc:08x}\n")
}

/// The identity an `IDENTITY` file records, or `None` when it is damaged or of another
/// version.
fn decode_identity(text: &str) -> Option<u64> {
    let mut lines = text.split_inclusive('\n');
    let (head, id) = (lines.next()?, lines.next()?);
    let crc = lines.next()?.strip_prefix("crc32 ")?.trim_end();
    if lines.next().is_some()
        || u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(format!("{head}{id}").as_bytes())
        || head.trim_end() != format!("{IDENTITY_MAGIC} {IDENTITY_VERSION}")
    {
        return None;
    }
    let identity = u64::from_str_radix(id.strip_prefix("identity ")?.trim_end(), 16).ok()?;
    (identity != 0).then_some(identity)
}

/// The first 4 KiB of the small text file at `path` (`None` when not UTF-8).
fn read_small(fs: &dyn Fs, path: &Path) -> Result<Option<String>> {
    let file = fs.open(path, false)?;
    let len = file.len()?.min(4096);
    Ok(String::from_utf8(read_prefix(file.as_ref(), len)?).ok())
}

/// The identity the archive in `dir` records: `None` without an `IDENTITY` file, `Some(None)`
/// when it is damaged.
pub(crate) fn archive_identity(fs: &dyn Fs, dir: &Path) -> Result<Option<Option<u64>>> {
    let path = join(dir, IDENTITY_FILE);
    if !fs.exists(&path) {
        return Ok(None);
    }
    Ok(Some(
        read_small(fs, &path)?.as_deref().and_then(decode_identity),
    ))
}

/// Where a timeline branched: what a restore records in the archive it read
/// (`timeline-<t:08>.history`), so a later restore can follow the timeline from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimelineHistory {
    /// The restored database's lineage: its identity, timeline and parent timeline.
    pub lineage: Lineage,
    /// The last LSN it shares with its parent (the restore's target).
    pub branch_lsn: Lsn,
}

const HISTORY_MAGIC: &str = "walmdb-timeline";
const HISTORY_VERSION: u32 = 1;

/// The name of timeline `t`'s history file.
pub(crate) fn history_file_name(timeline: u32) -> String {
    format!("timeline-{timeline:08}.history")
}

impl TimelineHistory {
    /// ```text
    /// Format: timeline-<t:08>.history = "walmdb-timeline 1\nidentity <16 hex>\ntimeline <t>\n
    ///         parent_timeline <p>\nbranch_lsn <lsn>\ncrc32 <8 hex>\n"
    ///         crc32 = crc32(every byte before its line)
    /// ```
    fn encode(&self) -> String {
        let l = self.lineage;
        let body = format!(
            "{HISTORY_MAGIC} {HISTORY_VERSION}\nidentity {:016x}\ntimeline {}\nparent_timeline {}\nbranch_lsn {}\n",
            l.identity, l.timeline, l.parent, self.branch_lsn
        );
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}crc32 {crc:08x}\n")
    }

    fn decode(text: &str) -> Option<TimelineHistory> {
        let (body, last) = text.trim_end_matches('\n').rsplit_once('\n')?;
        let body = format!("{body}\n");
        let crc = u32::from_str_radix(last.strip_prefix("crc32 ")?, 16).ok()?;
        if crc != crc32fast::hash(body.as_bytes()) {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != format!("{HISTORY_MAGIC} {HISTORY_VERSION}") {
            return None;
        }
        let mut field = |name: &str| lines.next()?.strip_prefix(name).map(str::to_owned);
        let identity = u64::from_str_radix(&field("identity ")?, 16).ok()?;
        let timeline: u32 = field("timeline ")?.parse().ok()?;
        let parent: u32 = field("parent_timeline ")?.parse().ok()?;
        let branch_lsn = field("branch_lsn ")?.parse().ok()?;
        (identity != 0 && parent >= 1 && parent < timeline).then_some(TimelineHistory {
            lineage: Lineage {
                identity,
                timeline,
                parent,
            },
            branch_lsn,
        })
    }
}

/// Records `history` in the archive in `dir` (a synced temporary file, a rename, the
/// directory synced). False, with nothing written, when that timeline's history exists
/// already: another restore took the number.
pub(crate) fn record_history(fs: &dyn Fs, dir: &Path, history: &TimelineHistory) -> Result<bool> {
    let name = history_file_name(history.lineage.timeline);
    let path = join(dir, &name);
    if fs.exists(&path) {
        return Ok(false);
    }
    let tmp = join(dir, &format!("{name}.tmp"));
    write_synced(fs, &tmp, history.encode().as_bytes())?;
    fs.rename(&tmp, &path)?;
    fs.sync_dir(dir)?;
    Ok(true)
}

/// The timeline histories in the archive in `dir` (damaged ones are skipped, logged).
pub(crate) fn histories(fs: &dyn Fs, dir: &Path) -> Result<Vec<TimelineHistory>> {
    let mut out = Vec::new();
    for name in fs.list(dir)? {
        let is_history = name
            .strip_prefix("timeline-")
            .and_then(|n| n.strip_suffix(".history"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_history {
            continue;
        }
        let path = join(dir, &name);
        match read_small(fs, &path)?
            .as_deref()
            .and_then(TimelineHistory::decode)
        {
            Some(h) if name == history_file_name(h.lineage.timeline) => out.push(h),
            _ => {
                tracing::warn!(path = %path.display(), "a damaged timeline history file is ignored")
            }
        }
    }
    Ok(out)
}

/// Checks that the archive in `dir` is `identity`'s, or claims it (an `IDENTITY` file
/// written through a synced temporary file and a rename) when it records none yet.
fn claim(fs: &dyn Fs, dir: &Path, identity: u64) -> Result<()> {
    match archive_identity(fs, dir)? {
        Some(Some(found)) if found == identity => Ok(()),
        Some(found) => {
            let e = Error::ForeignArchive {
                dir: dir.to_owned(),
                expected: identity,
                found,
            };
            tracing::error!(error = %e, "refused to archive into another database's archive");
            Err(e)
        }
        None => {
            let tmp = join(dir, &format!("{IDENTITY_FILE}.{identity:016x}.tmp"));
            write_synced(fs, &tmp, encode_identity(identity).as_bytes())?;
            fs.rename(&tmp, &join(dir, IDENTITY_FILE))?;
            fs.sync_dir(dir)?;
            tracing::info!(dir = %dir.display(), identity = %format_args!("{identity:016x}"), "the WAL archive now records this database's identity");
            Ok(())
        }
    }
}

/// Refuses to replace `dest` unless it is an earlier copy of the very segment `header`
/// heads (same lineage, number, first LSN and salt: archived before a crash that came
/// before the segment's retirement). Another database's, timeline's or life's segment, or
/// a copy whose header is damaged, is never overwritten.
fn check_replaceable(fs: &dyn Fs, dir: &Path, dest: &Path, header: &SegmentHeader) -> Result<()> {
    let e = match read_header(fs, dest)? {
        Ok(old)
            if old.segment_no == header.segment_no
                && old.first_lsn == header.first_lsn
                && old.salt == header.salt
                && (old.lineage == header.lineage || !old.lineage.is_known()) =>
        {
            return Ok(())
        }
        Ok(old) if old.lineage.is_known() && old.lineage != header.lineage => {
            Error::ForeignSegment {
                path: dest.to_owned(),
                expected: header.lineage,
                found: old.lineage,
            }
        }
        Ok(old) => Error::SegmentSequence {
            dir: dir.to_owned(),
            reason: format!(
                "{} is another segment {} of {} (first LSN {}, salt {:08x}; this one's: LSN {}, \
                 salt {:08x}): two histories took one timeline; it is never overwritten",
                dest.display(),
                old.segment_no,
                old.lineage,
                old.first_lsn,
                old.salt,
                header.first_lsn,
                header.salt
            ),
        },
        Err(why) => Error::Corruption {
            segment: header.segment_no,
            offset: 0,
            reason: format!(
                "{}: an archived copy with a damaged header ({why:?}) is in the way; it is never overwritten",
                dest.display()
            ),
        },
    };
    tracing::error!(error = %e, "refused to overwrite an archived segment");
    Err(e)
}

/// Copies the valid frames of the segment at `path`, of the database and timeline
/// `lineage`, into the archive, durably: a temporary file written and synced, renamed, and
/// the directory synced. Then prunes the archive. Refused, with nothing written, when the
/// archive belongs to another database or a different segment has the name. `next_first_lsn`
/// is the first LSN of the segment after it, if known: when that continues its run, bytes
/// past the run are stale (an earlier life's torn frames the writer went on past), not damage.
pub(crate) fn archive_segment(
    fs: &dyn Fs,
    cfg: &ArchiveConfig,
    path: &Path,
    lineage: Lineage,
    next_first_lsn: Option<Lsn>,
) -> Result<()> {
    let ValidPrefix {
        mut header,
        data,
        last_lsn,
        damage,
    } = valid_prefix(fs, path)?;
    if header.lineage.is_known() && header.lineage != lineage {
        return Err(Error::ForeignSegment {
            path: path.to_owned(),
            expected: lineage,
            found: header.lineage,
        });
    }
    // A version-1 segment of the log: the log's own (recovery checked it), named for it.
    header.lineage = lineage;
    let continued = next_first_lsn.is_some_and(|next| crate::lsn::continues(last_lsn, next));
    if let Some(why) = damage.as_ref().filter(|_| !continued) {
        // The records are in LMDB already; the archive will show the gap to a restore.
        tracing::error!(
            segment = header.segment_no,
            offset = data.len(),
            reason = %why,
            "archiving a damaged segment: only its valid prefix is archived"
        );
    }
    if !fs.exists(&cfg.dir) {
        fs.create_dir_all(&cfg.dir)?;
        if let Some(parent) = cfg.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent)?;
        }
    }
    claim(fs, &cfg.dir, lineage.identity)?;
    let name = archive_file_name(lineage.timeline, header.segment_no);
    let dest = join(&cfg.dir, &name);
    if fs.exists(&dest) {
        check_replaceable(fs, &cfg.dir, &dest, &header)?;
    }
    let tmp = join(&cfg.dir, &format!("{name}.tmp"));
    write_synced(fs, &tmp, &data)?;
    fs.rename(&tmp, &dest)?;
    fs.sync_dir(&cfg.dir)?;
    tracing::debug!(
        segment = header.segment_no,
        timeline = lineage.timeline,
        first_lsn = header.first_lsn,
        last_lsn,
        bytes = data.len(),
        "archived a WAL segment"
    );
    prune(fs, cfg, lineage.timeline)
}

/// A segment's header and run of valid frames: what an archive or a backup keeps of it.
pub(crate) struct ValidPrefix {
    pub header: SegmentHeader,
    /// The file's bytes up to the end of its last valid frame.
    pub data: Vec<u8>,
    /// The LSN of its last valid record.
    pub last_lsn: Lsn,
    /// Why the run of valid frames ended before the file did, if it is damage.
    pub damage: Option<String>,
}

/// Reads the segment at `path` and keeps its header and valid frames.
pub(crate) fn valid_prefix(fs: &dyn Fs, path: &Path) -> Result<ValidPrefix> {
    let mut data = read_segment(fs.open(path, false)?.as_ref())?;
    let header = SegmentHeader::decode(&data).map_err(|e| Error::Corruption {
        segment: path
            .file_name()
            .and_then(|n| parse_segment_file_name(&n.to_string_lossy()))
            .unwrap_or(0),
        offset: 0,
        reason: format!("{}: bad header: {e:?}", path.display()),
    })?;
    let scan = scan_segment(&data, &header);
    data.truncate(scan.end);
    Ok(ValidPrefix {
        header,
        data,
        last_lsn: scan.last_lsn,
        damage: match scan.end_kind {
            ScanEnd::Damaged(why) => Some(why),
            ScanEnd::Clean => None,
        },
    })
}

/// Writes `bytes` as the whole of the file at `path` (created if missing) and syncs it.
pub(crate) fn write_synced(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> Result<()> {
    let out = fs.open(path, true)?;
    out.set_len(0)?;
    out.write_at(bytes, 0)?;
    out.sync_data()?;
    Ok(())
}

/// Removes the archived segments of `timeline` no retention rule keeps: a segment stays
/// while it is among the timeline's newest `keep_last` or was archived within `keep_for`.
/// Without a rule, keeps everything. Other timelines' segments are theirs to prune.
fn prune(fs: &dyn Fs, cfg: &ArchiveConfig, timeline: u32) -> Result<()> {
    if cfg.keep_last.is_none() && cfg.keep_for.is_none() {
        return Ok(());
    }
    let mut segments: Vec<(u64, String)> = fs
        .list(&cfg.dir)?
        .into_iter()
        .filter_map(|n| match parse_archive_file_name(&n) {
            Some((t, no)) if t == timeline => Some((no, n)),
            _ => None,
        })
        .collect();
    segments.sort_unstable();
    let first_of_newest = cfg
        .keep_last
        .map_or(usize::MAX, |n| segments.len().saturating_sub(n));
    let now = SystemTime::now();
    let mut removed = 0;
    for (i, (_, name)) in segments.iter().enumerate() {
        let path = join(&cfg.dir, name);
        let among_newest = i >= first_of_newest;
        let recent = cfg.keep_for.is_some_and(|keep| {
            // A segment whose age cannot be read is kept.
            fs.modified(&path)
                .map_or(true, |t| now.duration_since(t).unwrap_or_default() <= keep)
        });
        if !among_newest && !recent {
            fs.remove(&path)?;
            removed += 1;
        }
    }
    if removed > 0 {
        fs.sync_dir(&cfg.dir)?;
        tracing::debug!(removed, timeline, "pruned the WAL archive");
    }
    Ok(())
}
