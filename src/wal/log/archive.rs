//! WAL archiving: before the log recycles or removes a retired segment, its valid frames are
//! copied into an archive directory and synced, so a backup plus the archive can be rolled
//! forward to any later point. A retention policy prunes the archive.
//!
//! An archived segment is the segment's header and its run of valid frames, byte for byte:
//! the same format, CRCs and version as a live segment, without the preallocated tail.

use std::path::Path;
use std::time::SystemTime;

use super::fs::{join, Fs};
use super::segment::{
    parse_segment_file_name, read_segment, scan_segment, segment_file_name, ScanEnd, SegmentHeader,
};
use crate::config::ArchiveConfig;
use crate::error::{Error, Result};
use crate::lsn::{Lineage, Lsn};

/// Copies the valid frames of the segment at `path`, of the database and timeline
/// `lineage`, into the archive, durably: a temporary file written and synced, renamed, and
/// the directory synced. Then prunes the archive.
pub(crate) fn archive_segment(
    fs: &dyn Fs,
    cfg: &ArchiveConfig,
    path: &Path,
    lineage: Lineage,
) -> Result<()> {
    let ValidPrefix {
        header,
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
    if let Some(why) = &damage {
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
    let name = segment_file_name(header.segment_no);
    let tmp = join(&cfg.dir, &format!("{name}.tmp"));
    write_synced(fs, &tmp, &data)?;
    fs.rename(&tmp, &join(&cfg.dir, &name))?;
    fs.sync_dir(&cfg.dir)?;
    tracing::debug!(
        segment = header.segment_no,
        first_lsn = header.first_lsn,
        last_lsn,
        bytes = data.len(),
        "archived a WAL segment"
    );
    prune(fs, cfg)
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

/// Removes the archived segments no retention rule keeps: a segment stays while it is
/// among the newest `keep_last` or was archived within `keep_for`. Without a rule, keeps
/// everything.
fn prune(fs: &dyn Fs, cfg: &ArchiveConfig) -> Result<()> {
    if cfg.keep_last.is_none() && cfg.keep_for.is_none() {
        return Ok(());
    }
    let mut numbers: Vec<u64> = fs
        .list(&cfg.dir)?
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    numbers.sort_unstable();
    let first_of_newest = cfg
        .keep_last
        .map_or(usize::MAX, |n| numbers.len().saturating_sub(n));
    let now = SystemTime::now();
    let mut removed = 0;
    for (i, &n) in numbers.iter().enumerate() {
        let path = join(&cfg.dir, &segment_file_name(n));
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
        tracing::debug!(removed, "pruned the WAL archive");
    }
    Ok(())
}
