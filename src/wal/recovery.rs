//! Opening the log: find the segments, check their sequence, scan them, classify what ends
//! the valid frames (clean end, torn tail, corruption) and cut a torn tail as
//! `RecoveryMode` says.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fs::{join, Fs};
use super::record::{FrameHeader, Lsn, FORMAT_VERSION, FRAME_HEADER_LEN};
use super::segment::{
    create_segment, is_spare_or_temp, parse_segment_file_name, read_header, read_segment,
    scan_segment, HeaderError, ScanEnd, Segment, SegmentHeader, SEGMENT_HEADER_LEN,
};
use crate::config::{RecoveryMode, WalConfig};
use crate::error::{Error, Result};

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
    /// The torn tail (or, in `PointInTime` mode, the damage) that was cut, if any.
    pub cut: Option<CutTail>,
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
}

struct Found {
    segment_no: u64,
    path: PathBuf,
    header: std::result::Result<SegmentHeader, String>,
}

fn sequence_error(dir: &Path, reason: String) -> Error {
    Error::SegmentSequence {
        dir: dir.to_owned(),
        reason,
    }
}

/// Opens the log in `dir`, keeping every record with LSN > `from_lsn`; without `from_lsn`,
/// every record from the lowest-numbered segment on.
pub(crate) fn recover(
    fs: &dyn Fs,
    dir: &Path,
    cfg: &WalConfig,
    from_lsn: Option<Lsn>,
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
    let mut found = Vec::new();
    let mut names = fs.list(dir)?;
    names.sort();
    for name in names {
        let path = join(dir, &name);
        if let Some(segment_no) = parse_segment_file_name(&name) {
            let header = match read_header(fs, &path)? {
                Ok(h) if h.segment_no != segment_no => Err(format!(
                    "header names segment {} but the file is named for segment {segment_no}",
                    h.segment_no
                )),
                Ok(h) => Ok(h),
                Err(HeaderError::Version(found)) => {
                    return Err(Error::UnsupportedVersion {
                        path,
                        found,
                        supported: FORMAT_VERSION,
                    })
                }
                Err(HeaderError::Damaged(reason)) => Err(reason),
            };
            found.push(Found {
                segment_no,
                path,
                header,
            });
        } else if is_spare_or_temp(&name) {
            spares.push(path);
        }
    }
    found.sort_by_key(|f| f.segment_no);
    for pair in found.windows(2) {
        if pair[0].segment_no == pair[1].segment_no {
            return Err(sequence_error(
                dir,
                format!("segment {} appears twice", pair[0].segment_no),
            ));
        }
    }

    // Without a caller's `from_lsn`, the lowest-numbered segment starts the log. Its header
    // must be intact and name it: nothing tells a damaged first segment from an obsolete one,
    // so that is an error rather than a silent retirement.
    let from_lsn = match (from_lsn, found.first()) {
        (Some(lsn), _) => lsn,
        (None, None) => 0,
        (None, Some(first)) => match &first.header {
            Ok(h) => h.first_lsn.saturating_sub(1),
            Err(reason) => {
                return Err(Error::Corruption {
                    segment: first.segment_no,
                    offset: 0,
                    reason: reason.clone(),
                })
            }
        },
    };

    // The live log starts at the last segment that begins at or before the first LSN needed.
    let needed = from_lsn + 1;
    let start = found
        .iter()
        .rposition(|f| matches!(&f.header, Ok(h) if h.first_lsn <= needed));
    let mut report = RecoveryReport::default();
    let Some(start) = start else {
        if let Some(first) = found.iter().find_map(|f| f.header.as_ref().ok()) {
            return Err(sequence_error(
                dir,
                format!(
                    "LSN gap: records from LSN {needed} are needed but the oldest segment starts at LSN {}",
                    first.first_lsn
                ),
            ));
        }
        if let Some(bad) = found.first() {
            return Err(Error::Corruption {
                segment: bad.segment_no,
                offset: 0,
                reason: bad.header.clone().err().unwrap_or_default(),
            });
        }
        // A new log.
        let header = SegmentHeader::new(1, needed, cfg.segment_bytes);
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
        });
    };

    // Segments wholly below `from_lsn` are no longer needed, whatever their state.
    let obsolete: Vec<Found> = found.drain(..start).collect();
    let mut live = Vec::with_capacity(found.len());
    for f in found {
        let header = f.header.map_err(|reason| Error::Corruption {
            segment: f.segment_no,
            offset: 0,
            reason,
        })?;
        if let Some((prev, _)) = live.last() {
            let prev: &SegmentHeader = prev;
            if f.segment_no != prev.segment_no + 1 {
                return Err(sequence_error(
                    dir,
                    format!(
                        "segment {} is missing (found {} after {})",
                        prev.segment_no + 1,
                        f.segment_no,
                        prev.segment_no
                    ),
                ));
            }
            if header.first_lsn <= prev.first_lsn {
                return Err(sequence_error(
                    dir,
                    format!(
                        "segment {} starts at LSN {}, not after segment {} (LSN {})",
                        f.segment_no, header.first_lsn, prev.segment_no, prev.first_lsn
                    ),
                ));
            }
        }
        live.push((header, f.path));
    }

    // Scan every live segment.
    let mut scans = Vec::with_capacity(live.len());
    for (header, path) in &live {
        let file = fs.open(path, false)?;
        let data = read_segment(file.as_ref())?;
        let scan = scan_segment(&data, header);
        scans.push((scan, file));
    }

    // The first place where the run of valid frames breaks.
    let brk = scans.iter().enumerate().position(|(k, (scan, _))| {
        let next_mismatch = live
            .get(k + 1)
            .is_some_and(|(next, _)| next.first_lsn != scan.last_lsn + 1);
        scan.end_kind != ScanEnd::Clean || !scan.after.is_empty() || next_mismatch
    });

    let mut cut = None;
    let (active_idx, write_offset, last_lsn) = match brk {
        None => {
            let k = live.len() - 1;
            (k, scans[k].0.end as u64, scans[k].0.last_lsn)
        }
        Some(k) => {
            let (header, _) = &live[k];
            let (scan, _) = &scans[k];
            let good_last = scan.last_lsn;
            // Valid frames after the break, in this segment and in every later one.
            let mut evidence: Vec<FrameHeader> = scan.after.iter().map(|(_, h)| *h).collect();
            for (later, _) in &scans[k + 1..] {
                evidence.extend(later.frames.iter().copied());
                evidence.extend(later.after.iter().map(|(_, h)| *h));
            }
            let reason = match &scan.end_kind {
                ScanEnd::Damaged(r) => r.clone(),
                ScanEnd::Clean if !scan.after.is_empty() => {
                    "a frame with a damaged header (valid frames follow it)".into()
                }
                ScanEnd::Clean => {
                    let next = &live[k + 1].0;
                    format!(
                        "LSN gap: segment {} ends at LSN {good_last}, segment {} starts at LSN {}",
                        header.segment_no, next.segment_no, next.first_lsn
                    )
                }
            };
            // A frame written after the damaged position had been synced proves the damage
            // is not a torn write.
            let synced_over = evidence.iter().any(|h| h.synced_lsn > good_last);
            let damaged = scan.end_kind != ScanEnd::Clean || !evidence.is_empty();
            let corruption = || Error::Corruption {
                segment: header.segment_no,
                offset: scan.end as u64,
                reason: reason.clone(),
            };
            if good_last < from_lsn {
                // Records the caller already holds are damaged: never cut below `from_lsn`.
                return Err(corruption());
            }
            match cfg.recovery_mode {
                _ if !damaged => {
                    return Err(sequence_error(dir, reason));
                }
                RecoveryMode::Strict if synced_over => return Err(corruption()),
                RecoveryMode::Strict => {
                    return Err(Error::TornTail {
                        segment: header.segment_no,
                        offset: scan.end as u64,
                    })
                }
                RecoveryMode::TolerateTornTail if synced_over => return Err(corruption()),
                _ => {}
            }
            // Cut. Later segments go first, durably: a crash between the two steps then leaves
            // the same damage to cut again, never an empty later segment behind a clean end.
            if k + 1 < live.len() {
                for (_, path) in &live[k + 1..] {
                    fs.remove(path)?;
                }
                fs.sync_dir(dir).map_err(Error::SyncFailed)?;
                fail::fail_point!("recovery-later-segments-removed");
            }
            // Then zero everything valid after the break in this segment.
            let zero_end = scan
                .after
                .iter()
                .map(|(off, h)| off + h.total_len())
                .max()
                .unwrap_or(0)
                .max(scan.end + FRAME_HEADER_LEN);
            let file = &scans[k].1;
            let file_len = file.len()? as usize;
            let zero_end = zero_end.min(file_len);
            if zero_end > scan.end {
                file.write_at(&vec![0u8; zero_end - scan.end], scan.end as u64)?;
                fail::fail_point!("recovery-tail-zeroed-before-sync");
                file.sync_data().map_err(Error::SyncFailed)?;
            }
            tracing::warn!(
                segment = header.segment_no,
                offset = scan.end,
                last_lsn = good_last,
                frames_dropped = evidence.len(),
                reason = %reason,
                "cut the damaged tail of the write-ahead log"
            );
            let segments_dropped = live.len() - (k + 1);
            cut = Some(CutTail {
                segment: header.segment_no,
                offset: scan.end as u64,
                bytes_cut: (zero_end - scan.end) as u64,
                frames_dropped: evidence.len(),
                segments_dropped,
                reason,
            });
            (k, scan.end as u64, good_last)
        }
    };
    if last_lsn < from_lsn {
        return Err(sequence_error(
            dir,
            format!(
                "the log ends at LSN {last_lsn} but records through LSN {from_lsn} were expected"
            ),
        ));
    }

    // Retire obsolete segments. The directory is synced even if nothing changed here: a
    // crashed process may have named a segment (rename, removal) without syncing it, and
    // commits are about to go into that segment.
    let (mut archived, mut retired) = (0, 0);
    for f in &obsolete {
        if let Some(archive) = &cfg.archive {
            if let Err(e) = super::archive_segment(fs, archive, &f.path) {
                // The records are the caller's already; an obsolete segment that cannot be
                // read stays on disk for the operator rather than stop the open.
                tracing::error!(path = %f.path.display(), error = %e, "cannot archive an obsolete segment; it is left in place");
                continue;
            }
            archived += 1;
        }
        if spares.len() < cfg.recycle_segments {
            let spare = join(dir, &super::segment::spare_file_name(f.segment_no));
            fs.rename(&f.path, &spare)?;
            spares.push(spare);
        } else {
            fs.remove(&f.path)?;
        }
        retired += 1;
    }
    if !obsolete.is_empty() {
        fail::fail_point!("recovery-obsolete-retired-before-dir-sync");
    }
    fs.sync_dir(dir).map_err(Error::SyncFailed)?;

    // Records recovered from the page cache after a process crash may not be on disk yet;
    // frames written from now on claim `synced_lsn >= last_lsn`, so sync first.
    let (_, active_file) = scans.swap_remove(active_idx);
    active_file.sync_data().map_err(Error::SyncFailed)?;
    let (active_header, active_path) = live[active_idx].clone();
    let segments: Vec<SegmentMeta> = live[..=active_idx]
        .iter()
        .map(|(h, p)| SegmentMeta {
            segment_no: h.segment_no,
            first_lsn: h.first_lsn,
            path: p.clone(),
        })
        .collect();
    report.segments = segments.len();
    report.first_lsn = segments[0].first_lsn;
    report.last_lsn = last_lsn;
    report.cut = cut;
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
        write_offset,
        next_lsn: last_lsn + 1,
        spares,
        report,
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
