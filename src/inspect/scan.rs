//! The log directory, scanned as recovery scans it: every segment's header, run of valid
//! frames, what ends the run, and the evidence after it.

use std::fmt;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::*;
use crate::error::{Error, Result};
use crate::lsn::{Lineage, Lsn};
use crate::wal::log::record::{decode_frame, FrameHeader, FORMAT_VERSION};
use crate::wal::log::segment::{
    is_spare_or_temp, parse_segment_file_name, scan_segment, ScanEnd, SegmentHeader, SegmentScan,
    SEGMENT_HEADER_LEN,
};
use crate::wal::Record;

/// Everything in a log directory, each segment scanned as recovery scans it.
#[derive(Debug, Clone)]
pub struct LogScan {
    /// The log directory.
    pub dir: PathBuf,
    /// False when the directory does not exist (opening would create it: a new log).
    pub exists: bool,
    /// Every `wal-<digits>.log` file, by segment number (then file name).
    pub segments: Vec<SegmentInfo>,
    /// Spare segments (`spare-*.log`) and interrupted creations (`*.log.tmp`), kept for reuse.
    pub spares: Vec<OtherFile>,
    /// Other files, which the log ignores.
    pub ignored: Vec<OtherFile>,
    /// Problems across segments, in segment order.
    pub problems: Vec<SequenceProblem>,
}

/// A file of the log directory that is not a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherFile {
    /// Its name.
    pub name: String,
    /// Its length.
    pub bytes: u64,
}

/// One segment file, scanned.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Its file name.
    pub file_name: String,
    /// Its path.
    pub path: PathBuf,
    /// The segment number in its file name.
    pub segment_no: u64,
    /// The file's length.
    pub bytes: u64,
    /// Its 64-byte header.
    pub header: HeaderState,
    /// The run of valid frames from offset 64 (empty unless the header is valid).
    pub frames: Vec<FrameInfo>,
    /// Offset just past the run: where the next frame would go (0 unless the header is valid).
    pub run_end: u64,
    /// How the run ends.
    pub end: SegmentEnd,
    /// Valid frames with this segment's salt found after the run (evidence past a damage).
    pub after: Vec<FrameInfo>,
    /// The earliest and latest `commit_micros` of the transactions in the run.
    pub commit_micros: Option<(u64, u64)>,
    /// Frames of the run with a valid CRC that do not decode, and records that do not decode
    /// (only a buggy or foreign writer makes them).
    pub decode_errors: Vec<DecodeProblem>,
    /// The scan recovery's planner reads (`None` unless the header is valid).
    pub(crate) scan: Option<SegmentScan>,
}

/// A frame found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Offset of its header in the segment file.
    pub offset: u64,
    /// Its header.
    pub header: FrameHeader,
}

impl FrameInfo {
    /// Bytes on disk, header included.
    pub fn len(&self) -> u64 {
        self.header.total_len() as u64
    }

    /// Always false: a frame has a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// LSN of its first record.
    pub fn first_lsn(&self) -> Lsn {
        self.header.first_lsn
    }

    /// LSN of its last record.
    pub fn last_lsn(&self) -> Lsn {
        self.header.last_lsn()
    }
}

/// How a segment's run of valid frames ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Zeros, frames of the file's earlier life, or no room for another frame header.
    Clean,
    /// Damage that a crash can explain: no valid frame after it has a `synced_lsn` past it.
    /// In the last segment this is what a crash leaves; opening cuts it (`TolerateTornTail`).
    TornTail {
        /// Where the damage starts (the end of the valid run).
        offset: u64,
        /// What was found there.
        reason: String,
        /// Valid frames after it (in this segment and later ones), all written after the
        /// last sync before the damage.
        frames_after: usize,
    },
    /// Damage that a crash cannot explain: a valid frame after it was written after a sync
    /// that covered it. Opening refuses it (`Error::Corruption`).
    Corruption {
        /// Where the damage starts (the end of the valid run).
        offset: u64,
        /// What was found there.
        reason: String,
        /// Valid frames after it (in this segment and later ones).
        frames_after: usize,
    },
    /// The header is damaged: nothing in the file can be read.
    BadHeader(String),
    /// The header's format version is not this build's.
    UnsupportedVersion(u32),
}

impl SegmentEnd {
    /// True for a torn tail or corruption.
    pub fn is_damaged(&self) -> bool {
        matches!(
            self,
            SegmentEnd::TornTail { .. } | SegmentEnd::Corruption { .. }
        )
    }
}

impl fmt::Display for SegmentEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentEnd::Clean => f.write_str("clean"),
            SegmentEnd::TornTail {
                offset,
                reason,
                frames_after,
            } => {
                write!(f, "torn tail at offset {offset}: {reason}")?;
                if *frames_after > 0 {
                    write!(f, " ({frames_after} unsynced valid frame(s) after it)")?;
                }
                Ok(())
            }
            SegmentEnd::Corruption {
                offset,
                reason,
                frames_after,
            } => write!(
                f,
                "corruption at offset {offset}: {reason} ({frames_after} valid frame(s) synced past it follow)"
            ),
            SegmentEnd::BadHeader(reason) => write!(f, "bad header: {reason}"),
            SegmentEnd::UnsupportedVersion(v) => {
                write!(f, "format version {v} (this build reads {FORMAT_VERSION})")
            }
        }
    }
}

/// A frame or record with a valid CRC that does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeProblem {
    /// Offset of the frame in the segment file.
    pub offset: u64,
    /// The LSNs affected: the frame's, or the one record's.
    pub lsns: RangeInclusive<Lsn>,
    /// Why it does not decode.
    pub reason: String,
}

/// A problem across segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceProblem {
    /// Two or more files name the same segment.
    Duplicate {
        /// The segment number.
        segment_no: u64,
        /// The files.
        files: Vec<String>,
    },
    /// Segment numbers are missing between two segments.
    Missing {
        /// The first missing number.
        from: u64,
        /// The last missing number.
        to: u64,
    },
    /// A segment does not start after the one before it (first LSNs not increasing).
    OutOfOrder {
        /// The segment.
        segment_no: u64,
        /// Its first LSN.
        first_lsn: Lsn,
        /// The segment before it.
        prev_segment_no: u64,
        /// That segment's first LSN.
        prev_first_lsn: Lsn,
    },
    /// A segment whose run ends clean is not followed by the next LSN.
    LsnGap {
        /// The segment.
        segment_no: u64,
        /// Its last LSN.
        last_lsn: Lsn,
        /// The next segment.
        next_segment_no: u64,
        /// The next segment's first LSN.
        next_first_lsn: Lsn,
    },
}

impl fmt::Display for SequenceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceProblem::Duplicate { segment_no, files } => write!(
                f,
                "segment {segment_no} appears {} times ({})",
                files.len(),
                files.join(", ")
            ),
            SequenceProblem::Missing { from, to } if from == to => {
                write!(f, "segment {from} is missing")
            }
            SequenceProblem::Missing { from, to } => write!(f, "segments {from}..={to} are missing"),
            SequenceProblem::OutOfOrder {
                segment_no,
                first_lsn,
                prev_segment_no,
                prev_first_lsn,
            } => write!(
                f,
                "segment {segment_no} starts at LSN {first_lsn}, not after segment {prev_segment_no} (LSN {prev_first_lsn})"
            ),
            SequenceProblem::LsnGap {
                segment_no,
                last_lsn,
                next_segment_no,
                next_first_lsn,
            } => write!(
                f,
                "LSN gap: segment {segment_no} ends at LSN {last_lsn}, segment {next_segment_no} starts at LSN {next_first_lsn}"
            ),
        }
    }
}

impl SegmentInfo {
    /// The header, when valid.
    pub fn valid_header(&self) -> Option<(Lsn, u32, u64)> {
        match self.header {
            HeaderState::Valid {
                first_lsn,
                salt,
                segment_bytes,
                ..
            } => Some((first_lsn, salt, segment_bytes)),
            _ => None,
        }
    }

    /// The database and timeline its header records, when valid ([`Lineage::UNKNOWN`] for
    /// a version-1 header).
    pub fn lineage(&self) -> Option<Lineage> {
        match self.header {
            HeaderState::Valid { lineage, .. } => Some(lineage),
            _ => None,
        }
    }

    /// LSN of the segment's first record, from its header.
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.valid_header().map(|h| h.0)
    }

    /// LSN of the last record of the run (`first_lsn - 1` when the run is empty).
    pub fn last_lsn(&self) -> Option<Lsn> {
        let first = self.first_lsn()?;
        Some(self.frames.last().map_or(first - 1, |f| f.last_lsn()))
    }

    /// Records in the run.
    pub fn records(&self) -> u64 {
        self.frames.iter().map(|f| u64::from(f.header.count)).sum()
    }

    /// True when the run ends anywhere but cleanly, or valid frames follow it: the log
    /// breaks in this segment.
    pub fn breaks(&self) -> bool {
        self.end.is_damaged() || !self.after.is_empty()
    }
}

/// The segment number in a segment file name (`wal-<digits>.log`), as the log reads it.
pub fn segment_number(file_name: &str) -> Option<u64> {
    parse_segment_file_name(file_name)
}

/// Reads and checks only the 64-byte header of the segment file at `path`, as recovery does
/// (a header naming another segment than the file name is damaged).
pub fn segment_header(path: &Path) -> Result<HeaderState> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(SEGMENT_HEADER_LEN);
    std::fs::File::open(path)?
        .take(SEGMENT_HEADER_LEN as u64)
        .read_to_end(&mut buf)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    Ok(header_state(&buf, parse_segment_file_name(name)))
}

fn header_state(first_bytes: &[u8], segment_no: Option<u64>) -> HeaderState {
    let decoded = SegmentHeader::decode(&first_bytes[..first_bytes.len().min(SEGMENT_HEADER_LEN)]);
    // A file whose name names no segment is judged by its header alone.
    let named = segment_no.or(decoded.as_ref().ok().map(|h| h.segment_no));
    HeaderState::judge(decoded, named.unwrap_or(0))
}

/// Scans the log in `wal_dir`: lists it, reads every segment (one at a time, whole, as
/// recovery does), checks its header, scans its frames and probes past them, and decodes
/// every record of the run. A missing directory is an empty log (`exists: false`).
pub fn scan_log(wal_dir: &Path) -> Result<LogScan> {
    scan_log_with_progress(wal_dir, &mut |_, _| {})
}

/// [`scan_log`], calling `progress(bytes_read, total_bytes)` after each segment.
pub fn scan_log_with_progress(
    wal_dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<LogScan> {
    let mut scan = LogScan {
        dir: wal_dir.to_owned(),
        exists: wal_dir.is_dir(),
        segments: Vec::new(),
        spares: Vec::new(),
        ignored: Vec::new(),
        problems: Vec::new(),
    };
    if !scan.exists {
        if wal_dir.exists() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", wal_dir.display()),
            )));
        }
        return Ok(scan);
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(wal_dir)? {
        let entry = entry?;
        // The log lists names that are UTF-8 only (`StdFs::list`).
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    let mut segment_files = Vec::new();
    for name in names {
        let path = wal_dir.join(&name);
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if let Some(segment_no) = parse_segment_file_name(&name) {
            segment_files.push((name, path, segment_no, bytes));
        } else if is_spare_or_temp(&name) {
            scan.spares.push(OtherFile { name, bytes });
        } else {
            scan.ignored.push(OtherFile { name, bytes });
        }
    }
    let total: u64 = segment_files.iter().map(|f| f.3).sum();
    let mut done = 0u64;
    for (name, path, segment_no, bytes) in segment_files {
        let data = std::fs::read(&path)?;
        scan.segments.push(scan_one(name, path, segment_no, &data));
        done += bytes;
        progress(done.min(total), total);
    }
    // Recovery sorts the names, then (stably) by number.
    scan.segments.sort_by_key(|s| s.segment_no);
    classify_ends(&mut scan.segments);
    scan.problems = sequence_problems(&scan.segments);
    Ok(scan)
}

fn scan_one(file_name: String, path: PathBuf, segment_no: u64, data: &[u8]) -> SegmentInfo {
    let mut info = SegmentInfo {
        file_name,
        path,
        segment_no,
        bytes: data.len() as u64,
        header: HeaderState::Damaged(String::new()),
        frames: Vec::new(),
        run_end: 0,
        end: SegmentEnd::Clean,
        after: Vec::new(),
        commit_micros: None,
        decode_errors: Vec::new(),
        scan: None,
    };
    // `read_header` reads the first 64 bytes; `decode` looks at no more than those.
    info.header = header_state(data, Some(segment_no));
    let header = match &info.header {
        HeaderState::Valid {
            first_lsn,
            salt,
            segment_bytes,
            lineage,
        } => SegmentHeader {
            segment_no,
            first_lsn: *first_lsn,
            salt: *salt,
            segment_bytes: *segment_bytes,
            lineage: *lineage,
        },
        HeaderState::Damaged(reason) => {
            info.end = SegmentEnd::BadHeader(reason.clone());
            return info;
        }
        HeaderState::UnsupportedVersion(v) => {
            info.end = SegmentEnd::UnsupportedVersion(*v);
            return info;
        }
    };
    let scan = scan_segment(data, &header);
    let mut off = SEGMENT_HEADER_LEN;
    for h in &scan.frames {
        let frame = &data[off..off + h.total_len()];
        match decode_frame(h, frame) {
            Ok(records) => {
                for r in records {
                    match r.record.decode() {
                        Ok(Record::Txn(txn)) => {
                            let t = txn.commit_micros;
                            info.commit_micros = Some(match info.commit_micros {
                                None => (t, t),
                                Some((lo, hi)) => (lo.min(t), hi.max(t)),
                            });
                        }
                        Ok(_) => {}
                        Err(e) => info.decode_errors.push(DecodeProblem {
                            offset: off as u64,
                            lsns: r.lsn..=r.lsn,
                            reason: format!("record at LSN {} does not decode: {e}", r.lsn),
                        }),
                    }
                }
            }
            Err(e) => info.decode_errors.push(DecodeProblem {
                offset: off as u64,
                lsns: h.first_lsn..=h.last_lsn(),
                reason: format!("frame does not decode: {e}"),
            }),
        }
        info.frames.push(FrameInfo {
            offset: off as u64,
            header: *h,
        });
        off += h.total_len();
    }
    debug_assert_eq!(off, scan.end);
    info.run_end = scan.end as u64;
    info.after = scan
        .after
        .iter()
        .map(|(o, h)| FrameInfo {
            offset: *o as u64,
            header: *h,
        })
        .collect();
    // Damaged for now; `classify_ends` weighs the evidence.
    info.end = match &scan.end_kind {
        ScanEnd::Clean if info.after.is_empty() => SegmentEnd::Clean,
        ScanEnd::Clean => SegmentEnd::TornTail {
            offset: info.run_end,
            reason: "a frame with a damaged header (valid frames follow it)".into(),
            frames_after: 0,
        },
        ScanEnd::Damaged(reason) => SegmentEnd::TornTail {
            offset: info.run_end,
            reason: reason.clone(),
            frames_after: 0,
        },
    };
    info.scan = Some(scan);
    info
}

/// The evidence rule of recovery (step 10), per segment: the valid frames after a damage
/// (this segment's after frames, every frame of the later segments with a valid header)
/// tell a torn tail from corruption.
fn classify_ends(segments: &mut [SegmentInfo]) {
    for i in 0..segments.len() {
        let (good_last, offset, reason) = match (&segments[i].end, segments[i].last_lsn()) {
            (SegmentEnd::TornTail { offset, reason, .. }, Some(last)) => {
                (last, *offset, reason.clone())
            }
            _ => continue,
        };
        let mut evidence: Vec<&FrameInfo> = segments[i].after.iter().collect();
        for later in &segments[i + 1..] {
            if later.valid_header().is_some() {
                evidence.extend(later.frames.iter().chain(&later.after));
            }
        }
        let frames_after = evidence.len();
        let synced_over = evidence.iter().any(|f| f.header.synced_lsn > good_last);
        segments[i].end = if synced_over {
            SegmentEnd::Corruption {
                offset,
                reason,
                frames_after,
            }
        } else {
            SegmentEnd::TornTail {
                offset,
                reason,
                frames_after,
            }
        };
    }
}

fn sequence_problems(segments: &[SegmentInfo]) -> Vec<SequenceProblem> {
    let mut problems = Vec::new();
    let mut i = 0;
    while i < segments.len() {
        let no = segments[i].segment_no;
        let same = segments[i..]
            .iter()
            .take_while(|s| s.segment_no == no)
            .count();
        if same > 1 {
            problems.push(SequenceProblem::Duplicate {
                segment_no: no,
                files: segments[i..i + same]
                    .iter()
                    .map(|s| s.file_name.clone())
                    .collect(),
            });
        }
        i += same;
    }
    for pair in segments.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.segment_no > a.segment_no + 1 {
            problems.push(SequenceProblem::Missing {
                from: a.segment_no + 1,
                to: b.segment_no - 1,
            });
        }
        if let (Some(a_first), Some(b_first)) = (a.first_lsn(), b.first_lsn()) {
            if b.segment_no != a.segment_no && b_first <= a_first {
                problems.push(SequenceProblem::OutOfOrder {
                    segment_no: b.segment_no,
                    first_lsn: b_first,
                    prev_segment_no: a.segment_no,
                    prev_first_lsn: a_first,
                });
            } else if b.segment_no == a.segment_no + 1
                && !a.breaks()
                && a.last_lsn().is_some_and(|last| last + 1 != b_first)
            {
                problems.push(SequenceProblem::LsnGap {
                    segment_no: a.segment_no,
                    last_lsn: a.last_lsn().unwrap_or(0),
                    next_segment_no: b.segment_no,
                    next_first_lsn: b_first,
                });
            }
        }
    }
    problems
}
