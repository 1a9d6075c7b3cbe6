//! Opening the log: find the segments and read their headers, plan (which segments are
//! obsolete and live, where the valid log ends, whether a torn tail is cut as
//! `RecoveryMode` says: [`plan`], pure), then carry the plan out.

pub(crate) mod plan;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fs::{join, Fs};
use super::record::Lsn;
use super::segment::{
    create_segment, is_spare_or_temp, parse_segment_file_name, read_header, read_segment,
    scan_segment, Segment, SegmentHeader, SEGMENT_HEADER_LEN,
};
use crate::config::WalConfig;
use crate::error::{Error, Result};
use crate::lsn::Lineage;
pub use plan::HeaderState;
use plan::{FoundSegment, LivePlan, ScannedSegment};

/// A live segment of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Its number.
    pub segment_no: u64,
    /// The LSN of its first record.
    pub first_lsn: Lsn,
    /// Its path.
    pub path: PathBuf,
}

/// A damaged tail that opening cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutTail {
    /// The segment it was in.
    pub segment: u64,
    /// The offset the log now ends at.
    pub offset: u64,
    /// Bytes zeroed from there on.
    pub bytes_cut: u64,
    /// Valid frames after the damage that were discarded with it.
    pub frames_dropped: usize,
    /// Segments after it that were discarded.
    pub segments_dropped: usize,
    /// What was found at the cut.
    pub reason: String,
}

/// What opening the log found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Live segments after opening.
    pub segments: usize,
    /// The first LSN the log still holds.
    pub first_lsn: Lsn,
    /// The last valid LSN (`first_lsn - 1` when the log is empty).
    pub last_lsn: Lsn,
    /// The torn tail (or, in `CutAtFirstDamage` mode, the damage) that was cut, if any.
    pub cut: Option<CutTail>,
    /// The quarantine files the cut bytes were copied into first (`<log>/quarantine/`).
    pub quarantined: Vec<String>,
    /// Segments wholly below `from_lsn` that were retired while opening.
    pub segments_retired: usize,
    /// Of those, the segments copied into the archive first (`WalConfig::archive`).
    pub segments_archived: usize,
    /// Time the scan took.
    pub duration: Duration,
}

/// The state the flusher starts from.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub segments: Vec<SegmentMeta>,
    pub active: Segment,
    pub write_offset: u64,
    pub next_lsn: Lsn,
    pub spares: Vec<PathBuf>,
    pub report: RecoveryReport,
    /// The log's database and timeline, recorded in every segment it creates.
    pub lineage: Lineage,
}

/// Opens the log in `dir`, keeping every record with LSN > `from_lsn`; without `from_lsn`,
/// every record from the lowest-numbered segment on. Reads what the plan needs, plans
/// ([`plan::plan_live`], [`plan::plan_tail`]), then carries the plan out. `lineage`: the
/// database and timeline the log must have; a new log takes it (without, a new database's).
pub(crate) fn recover(
    fs: &dyn Fs,
    dir: &Path,
    cfg: &WalConfig,
    from_lsn: Option<Lsn>,
    lineage: Option<Lineage>,
) -> Result<Recovered> {
    let started = Instant::now();
    if !fs.exists(dir) {
        fs.create_dir_all(dir)?;
    }
    // Even a directory found here may be one a crashed open created without making its
    // entry durable: sync its parent every time, or a power loss can take the whole log.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs.sync_dir(parent).map_err(Error::SyncFailed)?;
    }
    let mut spares = Vec::new();
    let mut found: Vec<(u64, PathBuf, HeaderState)> = Vec::new();
    let mut names = fs.list(dir)?;
    names.sort();
    for name in names {
        let path = join(dir, &name);
        if let Some(segment_no) = parse_segment_file_name(&name) {
            let header = HeaderState::judge(read_header(fs, &path)?, segment_no);
            found.push((segment_no, path, header));
        } else if is_spare_or_temp(&name) {
            spares.push(path);
        }
    }
    found.sort_by_key(|f| f.0);
    let entries: Vec<FoundSegment<'_>> = found
        .iter()
        .map(|(segment_no, path, header)| FoundSegment {
            segment_no: *segment_no,
            path,
            header,
        })
        .collect();
    let mut report = RecoveryReport::default();
    let (from_lsn, start, found_lineage) = match plan::plan_live(dir, &entries, from_lsn, lineage)?
    {
        LivePlan::Segments {
            from_lsn,
            start,
            lineage,
        } => (from_lsn, start, lineage),
        LivePlan::NewLog { from_lsn } => {
            let needed = from_lsn + 1;
            let lineage = lineage.unwrap_or_else(Lineage::new_database);
            let header = SegmentHeader::new(1, needed, cfg.segment_bytes, lineage);
            let active = create_segment(fs, dir, header, spares.pop())?;
            report.segments = 1;
            report.first_lsn = needed;
            report.last_lsn = from_lsn;
            report.duration = started.elapsed();
            return Ok(Recovered {
                segments: vec![meta(&active)],
                active,
                write_offset: SEGMENT_HEADER_LEN as u64,
                next_lsn: needed,
                spares,
                report,
                lineage,
            });
        }
    };
    // A log only an older build wrote (version 1) is adopted: its database gets an
    // identity now, on timeline 1, recorded when the active segment's header is rewritten
    // below and in every segment created from then on.
    let lineage = found_lineage.unwrap_or_else(|| lineage.unwrap_or_else(Lineage::new_database));
    let live: Vec<(SegmentHeader, PathBuf)> = found[start..]
        .iter()
        .map(|(no, path, header)| {
            let header = header
                .valid(*no)
                .expect("plan_live checked every live header");
            (header, path.clone())
        })
        .collect();

    // Scan every live segment.
    let mut scans = Vec::with_capacity(live.len());
    for (header, path) in &live {
        let file = fs.open(path, false)?;
        let data = read_segment(file.as_ref())?;
        let scan = scan_segment(&data, header);
        scans.push((scan, file, data.len() as u64));
    }
    let scanned: Vec<ScannedSegment<'_>> = live
        .iter()
        .zip(&scans)
        .map(|((header, _), (scan, _, file_len))| ScannedSegment {
            header,
            scan,
            file_len: *file_len,
        })
        .collect();
    let tail = plan::plan_tail(dir, &scanned, from_lsn, cfg.recovery_mode)?;
    drop(scanned);

    if let Some(cut) = &tail.cut {
        // Nothing is cut before it is quarantined.
        report.quarantined = quarantine_cut(fs, dir, cfg, &live, &scans, tail.active, cut)?;
        // Cut. Later segments go first, durably: a crash between the two steps then leaves
        // the same damage to cut again, never an empty later segment behind a clean end.
        if tail.active + 1 < live.len() {
            for (_, path) in &live[tail.active + 1..] {
                fs.remove(path)?;
            }
            fs.sync_dir(dir).map_err(Error::SyncFailed)?;
            fail::fail_point!("recovery-later-segments-removed");
        }
        tracing::warn!(
            segment = cut.tail.segment,
            offset = cut.tail.offset,
            last_lsn = tail.last_lsn,
            frames_dropped = cut.tail.frames_dropped,
            reason = %cut.tail.reason,
            "cut the damaged tail of the write-ahead log"
        );
    }

    // Then zero, durably, the active segment past the log's end (after the later segments
    // are gone): a cut's range (everything valid after the break), and on to the end of
    // whatever else of this life lies there. A crashed writer's torn frames are no
    // evidence, but new frames could end exactly where such a stale header begins (a
    // writer that goes on after a crash writes the same records again), and a later scan
    // would take it for damage under frames that were synced, refusing the log as corrupt.
    {
        let (scan, file, _) = &scans[tail.active];
        let zero_from = tail.write_offset;
        let zero_to = tail
            .cut
            .as_ref()
            .map_or(0, |c| c.zero_to)
            .max(scan.salted_end as u64);
        if zero_to > zero_from {
            let zeros = vec![0u8; (zero_to - zero_from) as usize];
            file.write_at(&zeros, zero_from)?;
            fail::fail_point!("recovery-tail-zeroed-before-sync");
            file.sync_data().map_err(Error::SyncFailed)?;
        }
    }

    // Adopt a log an older build wrote: its active segment, which takes this build's
    // records, gets its header rewritten in place at the current version (salt and
    // everything else kept, so its frames stay valid; it lies in one sector), with the new
    // lineage for a version-1 log, and synced before anything (an archive's identity file)
    // can record the identity. Earlier segments keep their version.
    let (mut active_header, active_path) = live[tail.active].clone();
    let file = &scans[tail.active].1;
    let mut version = [0u8; 12];
    file.read_exact_at(&mut version, 0)?;
    let version = u32::from_le_bytes(version[8..12].try_into().expect("4"));
    if version < super::record::FORMAT_VERSION {
        let version_1 = active_header.is_version_1();
        active_header.lineage = lineage;
        file.write_at(&active_header.encode(), 0)?;
        file.sync_data().map_err(Error::SyncFailed)?;
        tracing::info!(
            segment = active_header.segment_no,
            from_version = version,
            identity = %format_args!("{:016x}", lineage.identity),
            "the active segment of a log an older format wrote now has this format's header{}",
            if version_1 { " (its database's identity is now recorded)" } else { "" }
        );
    }

    // Retire obsolete segments. The directory is synced even if nothing changed here: a
    // crashed process may have named a segment (rename, removal) without syncing it, and
    // commits are about to go into that segment.
    let obsolete = &found[..start];
    let (mut archived, mut retired) = (0, 0);
    for (i, (segment_no, path, _)) in obsolete.iter().enumerate() {
        if let Some(archive) = &cfg.archive {
            let next_first_lsn = match found.get(i + 1) {
                Some((_, _, HeaderState::Valid { first_lsn, .. })) => Some(*first_lsn),
                _ => None,
            };
            if let Err(e) =
                super::archive::archive_segment(fs, archive, path, lineage, next_first_lsn)
            {
                // The records are the caller's already; an obsolete segment that cannot be
                // read stays on disk for the operator rather than stop the open.
                tracing::error!(path = %path.display(), error = %e, "cannot archive an obsolete segment; it is left in place");
                continue;
            }
            archived += 1;
        }
        if spares.len() < cfg.recycle_segments {
            let spare = join(dir, &super::segment::spare_file_name(*segment_no));
            fs.rename(path, &spare)?;
            spares.push(spare);
        } else {
            fs.remove(path)?;
        }
        retired += 1;
    }
    if !obsolete.is_empty() {
        fail::fail_point!("recovery-obsolete-retired-before-dir-sync");
    }
    fs.sync_dir(dir).map_err(Error::SyncFailed)?;

    // Records recovered from the page cache after a process crash may not be on disk yet;
    // frames written from now on claim `synced_lsn >= last_lsn`, so sync first.
    let (_, active_file, _) = scans.swap_remove(tail.active);
    active_file.sync_data().map_err(Error::SyncFailed)?;
    let segments: Vec<SegmentMeta> = live[..=tail.active]
        .iter()
        .map(|(h, p)| SegmentMeta {
            segment_no: h.segment_no,
            first_lsn: h.first_lsn,
            path: p.clone(),
        })
        .collect();
    report.segments = segments.len();
    report.first_lsn = segments[0].first_lsn;
    report.last_lsn = tail.last_lsn;
    report.cut = tail.cut.map(|c| c.tail);
    report.segments_retired = retired;
    report.segments_archived = archived;
    report.duration = started.elapsed();
    Ok(Recovered {
        segments,
        active: Segment {
            header: active_header,
            path: active_path,
            file: active_file,
        },
        write_offset: tail.write_offset,
        next_lsn: tail.last_lsn + 1,
        spares,
        report,
        lineage,
    })
}

/// The metadata of an open segment.
pub(crate) fn meta(segment: &Segment) -> SegmentMeta {
    SegmentMeta {
        segment_no: segment.header.segment_no,
        first_lsn: segment.header.first_lsn,
        path: segment.path.clone(),
    }
}

/// Bytes beyond the cut's zeroed range (or past the damage when nothing valid follows it)
/// that a quarantine copies at most: the damage itself, not a recycled file's old life.
const QUARANTINE_SLACK: usize = 4 << 20;

/// Copies what `cut` is about to discard into the quarantine: the active segment's bytes from
/// the cut on, and each later segment whole (trailing zeros left out).
fn quarantine_cut(
    fs: &dyn Fs,
    dir: &Path,
    cfg: &WalConfig,
    live: &[(SegmentHeader, PathBuf)],
    scans: &[(
        crate::wal::log::segment::SegmentScan,
        Box<dyn crate::wal::log::fs::FsFile>,
        u64,
    )],
    active: usize,
    cut: &plan::PlannedCut,
) -> Result<Vec<String>> {
    let trimmed = |data: &[u8], from: usize, at_least: usize| {
        let nonzero = data[from..]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(from, |i| from + i + 1);
        let cap = at_least.max(from).saturating_add(QUARANTINE_SLACK);
        data[from..nonzero.max(at_least).min(cap).min(data.len())].to_vec()
    };
    let reason = format!(
        "opening cut the log at segment {} offset {}: {}",
        cut.tail.segment, cut.tail.offset, cut.tail.reason
    );
    let mut written = Vec::new();
    for (i, (header, _)) in live.iter().enumerate().skip(active) {
        let data = read_segment(scans[i].1.as_ref())?;
        let (offset, bytes, why) = if i == active {
            let from = (cut.tail.offset as usize).min(data.len());
            let bytes = trimmed(&data, from, cut.zero_to as usize);
            (cut.tail.offset, bytes, reason.clone())
        } else {
            let why = format!("a whole later segment dropped with the cut; {reason}");
            (0, trimmed(&data, 0, 0), why)
        };
        written.extend(super::quarantine::quarantine(
            fs,
            dir,
            cfg.quarantine_max_bytes,
            header.segment_no,
            header.salt,
            offset,
            bytes,
            &why,
        )?);
    }
    Ok(written)
}
