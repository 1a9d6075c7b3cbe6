//! What opening would do with a scanned log (recovery's own planner), and the records that
//! can be read back from it.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::*;
use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::lsn::{Lineage, Lsn};
use crate::wal::log::record::{decode_frame, FrameHeader, FRAME_HEADER_LEN};
use crate::wal::log::recovery::plan::{
    log_lineage, plan_live, plan_tail, FoundSegment, LivePlan, ScannedSegment,
};
use crate::wal::log::segment::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::wal::{Record, RecoveryReport};

/// Where the readable log stops early (see [`LogScan::readable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The segment number.
    pub segment_no: u64,
    /// The byte offset in that segment (0 for a header or a missing segment).
    pub offset: u64,
    /// What is there.
    pub reason: String,
}

/// The longest intact, contiguous run of the log from the segment recovery would start at:
/// what can be read back record by record (see [`LogScan::readable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readable {
    /// Indexes into [`LogScan::segments`], in order.
    pub segments: Vec<usize>,
    /// The first LSN of the first segment (`None` without one).
    pub first_lsn: Option<Lsn>,
    /// The last LSN of the run (`first_lsn - 1` when it holds no record).
    pub last_lsn: Option<Lsn>,
    /// Why the run stops before the end of the last segment file, if it does.
    pub stop: Option<Stop>,
}

/// What recovery decided, and where.
pub(super) struct Plan {
    pub result: Result<RecoveryReport>,
    /// Index of the start segment, when recovery got that far.
    pub start: Option<usize>,
}

impl LogScan {
    /// The first file with segment number `no`.
    pub fn segment(&self, no: u64) -> Option<&SegmentInfo> {
        self.segments.iter().find(|s| s.segment_no == no)
    }

    /// The file name of segment `no` as found (`wal-{no:08}.log` when there is none).
    pub fn file_name(&self, no: u64) -> String {
        self.segment(no).map_or_else(
            || crate::wal::log::segment::segment_file_name(no),
            |s| s.file_name.clone(),
        )
    }

    /// Bytes of all segment files.
    pub fn segment_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// What [`crate::Wal::open_with`] would do with these files given `from_lsn` (the engine
    /// passes LMDB's applied LSN; [`crate::Wal::open`] passes `None`) in recovery `mode`:
    /// the report it would return (its `duration` is zero), or the error it would fail with.
    /// Nothing is changed: where opening would cut, the report says what it would cut.
    ///
    /// It runs recovery's own planner on these scans.
    pub fn would_open(&self, from_lsn: Option<Lsn>, mode: RecoveryMode) -> Result<RecoveryReport> {
        self.plan(from_lsn, mode).result
    }

    /// The segment the log would start at for `from_lsn` (recovery's step 5), as an index
    /// into [`LogScan::segments`]: `None` when there is none (a new log, or an error).
    pub fn start_segment(&self, from_lsn: Option<Lsn>) -> Option<usize> {
        self.plan(from_lsn, RecoveryMode::CutAtFirstDamage).start
    }

    fn found(&self) -> Vec<FoundSegment<'_>> {
        self.segments
            .iter()
            .map(|s| FoundSegment {
                segment_no: s.segment_no,
                path: &s.path,
                header: &s.header,
            })
            .collect()
    }

    /// The database and timeline of the log, as recovery judges them (its step 4):
    /// `Ok(None)` when no segment records one (every header is version 1, or there is no
    /// valid header), `Err(ForeignSegment)` when the segments belong to several.
    pub fn lineage(&self) -> Result<Option<Lineage>> {
        log_lineage(&self.found(), None)
    }

    /// Recovery's own planner ([`plan_live`], [`plan_tail`]) over these scans.
    pub(super) fn plan(&self, from_lsn: Option<Lsn>, mode: RecoveryMode) -> Plan {
        let found = self.found();
        let (from_lsn, start) = match plan_live(&self.dir, &found, from_lsn, None) {
            Err(e) => {
                return Plan {
                    result: Err(e),
                    start: None,
                }
            }
            Ok(LivePlan::NewLog { from_lsn }) => {
                return Plan {
                    result: Ok(RecoveryReport {
                        segments: 1,
                        first_lsn: from_lsn + 1,
                        last_lsn: from_lsn,
                        ..RecoveryReport::default()
                    }),
                    start: None,
                }
            }
            Ok(LivePlan::Segments {
                from_lsn, start, ..
            }) => (from_lsn, start),
        };
        let live = &self.segments[start..];
        let headers: Vec<SegmentHeader> = live
            .iter()
            .map(|s| {
                s.header
                    .valid(s.segment_no)
                    .expect("live headers are valid")
            })
            .collect();
        let scanned: Vec<ScannedSegment<'_>> = live
            .iter()
            .zip(&headers)
            .map(|(s, header)| ScannedSegment {
                header,
                scan: s
                    .scan
                    .as_ref()
                    .expect("a valid header's segment is scanned"),
                file_len: s.bytes,
            })
            .collect();
        let result = plan_tail(&self.dir, &scanned, from_lsn, mode).map(|tail| RecoveryReport {
            segments: tail.active + 1,
            first_lsn: headers[0].first_lsn,
            last_lsn: tail.last_lsn,
            cut: tail.cut.map(|c| c.tail),
            segments_retired: start,
            segments_archived: 0,
            // Opening names the files it writes then; a prediction cannot.
            quarantined: Vec::new(),
            duration: Duration::ZERO,
        });
        Plan {
            result,
            start: Some(start),
        }
    }

    /// The longest intact, contiguous run of the log that can be read record by record: from
    /// the segment recovery would start at for `from_lsn` (the first segment without one, or
    /// when there is no such segment), through consecutive segments with valid headers that
    /// continue the LSN sequence, up to the first damage, gap, duplicate or missing segment
    /// ([`Readable::stop`]). Whether that stop is a torn tail opening would cut, or damage it
    /// would refuse, is [`LogScan::would_open`]'s answer.
    pub fn readable(&self, from_lsn: Option<Lsn>) -> Readable {
        let mut out = Readable {
            segments: Vec::new(),
            first_lsn: None,
            last_lsn: None,
            stop: None,
        };
        if self.segments.is_empty() {
            return out;
        }
        let start = match from_lsn {
            None => 0,
            Some(from) => self
                .segments
                .iter()
                .rposition(|s| s.first_lsn().is_some_and(|f| f <= from + 1))
                .or_else(|| self.segments.iter().position(|s| s.first_lsn().is_some()))
                .unwrap_or(0),
        };
        let stop = |s: &SegmentInfo, offset: u64, reason: String| {
            Some(Stop {
                segment_no: s.segment_no,
                offset,
                reason,
            })
        };
        for i in start..self.segments.len() {
            let s = &self.segments[i];
            if let Some(&prev_i) = out.segments.last() {
                let prev = &self.segments[prev_i];
                if s.segment_no == prev.segment_no {
                    out.stop = stop(s, 0, format!("segment {} appears twice", s.segment_no));
                    break;
                }
                if s.segment_no != prev.segment_no + 1 {
                    out.stop = Some(Stop {
                        segment_no: prev.segment_no + 1,
                        offset: 0,
                        reason: format!(
                            "segment {} is missing (found {} after {})",
                            prev.segment_no + 1,
                            s.segment_no,
                            prev.segment_no
                        ),
                    });
                    break;
                }
            }
            let Some(first) = s.first_lsn() else {
                let reason = match &s.end {
                    SegmentEnd::UnsupportedVersion(v) => format!("unsupported format version {v}"),
                    other => other.to_string(),
                };
                out.stop = stop(s, 0, reason);
                break;
            };
            if let Some(last) = out.last_lsn {
                if first != last + 1 {
                    out.stop = stop(
                        s,
                        0,
                        format!(
                            "LSN gap: the log before segment {} ends at LSN {last}, it starts at LSN {first}",
                            s.segment_no
                        ),
                    );
                    break;
                }
            }
            out.segments.push(i);
            out.first_lsn.get_or_insert(first);
            out.last_lsn = s.last_lsn();
            if s.breaks() {
                let reason = match &s.end {
                    SegmentEnd::TornTail { reason, .. } | SegmentEnd::Corruption { reason, .. } => {
                        reason.clone()
                    }
                    _ => "damage after the last valid frame".into(),
                };
                out.stop = stop(s, s.run_end, reason);
                break;
            }
        }
        out
    }

    /// The records of [`LogScan::readable`]`(from_lsn)` whose LSN is in `lsns`, decoded, in
    /// order. Each segment is read again (one at a time); a segment that changed since the
    /// scan, or a record that does not decode, ends the iteration with `Error::Corruption`.
    pub fn records(&self, from_lsn: Option<Lsn>, lsns: RangeInclusive<Lsn>) -> Records {
        let readable = self.readable(from_lsn);
        let segments: Vec<SegmentInfo> = readable
            .segments
            .iter()
            .map(|&i| self.segments[i].clone())
            .collect();
        let total = segments
            .iter()
            .flat_map(|s| &s.frames)
            .filter(|f| f.last_lsn() >= *lsns.start() && f.first_lsn() <= *lsns.end())
            .map(|f| f.len())
            .sum();
        Records {
            segments: segments.into(),
            current: None,
            buffered: VecDeque::new(),
            lsns,
            done_bytes: 0,
            total_bytes: total,
            finished: false,
        }
    }
}

/// A decoded record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its LSN.
    pub lsn: Lsn,
    /// The segment it is in.
    pub segment_no: u64,
    /// Offset of its frame in the segment file.
    pub frame_offset: u64,
    /// The record.
    pub record: Record,
}

impl LogEntry {
    /// Its time, microseconds since the Unix epoch: a transaction's `commit_micros`, a
    /// timestamp record's `unix_micros`; `None` for the other types.
    pub fn time_micros(&self) -> Option<u64> {
        self.record.time_micros()
    }
}

/// An iterator over decoded records; see [`LogScan::records`].
#[derive(Debug)]
pub struct Records {
    segments: VecDeque<SegmentInfo>,
    current: Option<(SegmentInfo, Vec<u8>, usize)>,
    buffered: VecDeque<LogEntry>,
    lsns: RangeInclusive<Lsn>,
    done_bytes: u64,
    total_bytes: u64,
    finished: bool,
}

impl Records {
    /// Frame bytes decoded so far and in all (of the frames in the LSN range).
    pub fn progress(&self) -> (u64, u64) {
        (self.done_bytes, self.total_bytes)
    }

    fn changed(s: &SegmentInfo, offset: u64, what: &str) -> Error {
        Error::Corruption {
            segment: s.segment_no,
            offset,
            reason: format!("{} changed since it was scanned: {what}", s.file_name),
        }
    }

    /// Decodes the next frame in range into `buffered`; false at the end.
    fn fill(&mut self) -> Result<bool> {
        loop {
            if self.current.is_none() {
                let Some(s) = self.segments.pop_front() else {
                    return Ok(false);
                };
                let data = std::fs::read(&s.path)?;
                let same = SegmentHeader::decode(&data[..data.len().min(SEGMENT_HEADER_LEN)])
                    .ok()
                    .map(|h| (h.first_lsn, h.salt, h.segment_bytes));
                if same != s.valid_header() {
                    return Err(Self::changed(&s, 0, "its header differs"));
                }
                self.current = Some((s, data, 0));
            }
            let (s, data, next) = self.current.as_mut().expect("set above");
            let Some(frame) = s.frames.get(*next).copied() else {
                self.current = None;
                continue;
            };
            *next += 1;
            if frame.last_lsn() < *self.lsns.start() {
                continue;
            }
            if frame.first_lsn() > *self.lsns.end() {
                self.segments.clear();
                self.current = None;
                return Ok(false);
            }
            let off = frame.offset as usize;
            let bytes = data
                .get(off..off + frame.header.total_len())
                .ok_or_else(|| Self::changed(s, frame.offset, "it is shorter"))?;
            let on_disk = FrameHeader::parse(bytes[..FRAME_HEADER_LEN].try_into().expect("40"));
            if on_disk != frame.header {
                return Err(Self::changed(s, frame.offset, "a frame header differs"));
            }
            let records = decode_frame(&frame.header, bytes).map_err(|e| Error::Corruption {
                segment: s.segment_no,
                offset: frame.offset,
                reason: format!("frame does not decode: {e}"),
            })?;
            self.done_bytes += frame.len();
            for r in records {
                if !self.lsns.contains(&r.lsn) {
                    continue;
                }
                let record = r.record.decode().map_err(|e| Error::Corruption {
                    segment: s.segment_no,
                    offset: frame.offset,
                    reason: format!("record at LSN {} does not decode: {e}", r.lsn),
                })?;
                self.buffered.push_back(LogEntry {
                    lsn: r.lsn,
                    segment_no: s.segment_no,
                    frame_offset: frame.offset,
                    record,
                });
            }
            return Ok(true);
        }
    }
}

impl Iterator for Records {
    type Item = Result<LogEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.buffered.pop_front() {
                return Some(Ok(e));
            }
            if self.finished {
                return None;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => {
                    self.finished = true;
                    return None;
                }
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
