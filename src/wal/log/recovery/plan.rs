//! Recovery's decisions, as pure functions of what the segment files hold: which segments are
//! obsolete, which are live, where the valid log ends, and whether what ends it is a torn tail
//! to cut or damage to refuse. Nothing here touches a file: [`super::recover`] executes the
//! plan, and `walmdb::inspect` (`walmdb verify`) prints it. Steps are numbered as in
//! `docs/recovery.md`.

use std::path::Path;

use super::CutTail;
use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::lsn::{Lineage, Lsn};
use crate::wal::log::record::{FrameHeader, FORMAT_VERSION, FRAME_HEADER_LEN};
use crate::wal::log::segment::{HeaderError, ScanEnd, SegmentHeader, SegmentScan};

/// A segment header, checked as recovery checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderState {
    /// Valid, and naming this file's segment.
    Valid {
        /// LSN of the segment's first record.
        first_lsn: Lsn,
        /// The nonce its frames carry.
        salt: u32,
        /// The size it was preallocated to.
        segment_bytes: u64,
        /// The database and timeline it belongs to ([`Lineage::UNKNOWN`] for version 1).
        lineage: Lineage,
    },
    /// Damaged: magic, CRC, reserved bytes, impossible values, or a header that names another
    /// segment. The reason is the one recovery gives.
    Damaged(String),
    /// A format version this build does not read.
    UnsupportedVersion(u32),
}

impl HeaderState {
    /// Judges a decoded header of the file named for segment `segment_no`.
    pub(crate) fn judge(
        decoded: std::result::Result<SegmentHeader, HeaderError>,
        segment_no: u64,
    ) -> HeaderState {
        match decoded {
            Ok(h) if h.segment_no != segment_no => HeaderState::Damaged(format!(
                "header names segment {} but the file is named for segment {segment_no}",
                h.segment_no
            )),
            Ok(h) => HeaderState::Valid {
                first_lsn: h.first_lsn,
                salt: h.salt,
                segment_bytes: h.segment_bytes,
                lineage: h.lineage,
            },
            Err(HeaderError::Version(v)) => HeaderState::UnsupportedVersion(v),
            Err(HeaderError::Damaged(reason)) => HeaderState::Damaged(reason),
        }
    }

    /// The header of segment `segment_no`, when valid.
    pub(crate) fn valid(&self, segment_no: u64) -> Option<SegmentHeader> {
        match *self {
            HeaderState::Valid {
                first_lsn,
                salt,
                segment_bytes,
                lineage,
            } => Some(SegmentHeader {
                segment_no,
                first_lsn,
                salt,
                segment_bytes,
                lineage,
            }),
            _ => None,
        }
    }

    fn damage(&self) -> String {
        match self {
            HeaderState::Damaged(reason) => reason.clone(),
            _ => String::new(),
        }
    }
}

/// A segment file found in the log directory. Given in segment number order (ties in file
/// name order).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FoundSegment<'a> {
    pub segment_no: u64,
    pub path: &'a Path,
    pub header: &'a HeaderState,
}

/// Which segments the log is made of (steps 3 to 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LivePlan {
    /// No segment holds a record after `from_lsn`, and none is needed: a new log whose first
    /// record is `from_lsn + 1`.
    NewLog { from_lsn: Lsn },
    /// Segments before `start` are obsolete (wholly below `from_lsn`); the ones from `start`
    /// on are live, with valid headers naming consecutive segments in LSN order. `lineage`
    /// is the log's (`None`: every segment is version 1, without one).
    Segments {
        from_lsn: Lsn,
        start: usize,
        lineage: Option<Lineage>,
    },
}

fn sequence_error(dir: &Path, reason: String) -> Error {
    Error::SegmentSequence {
        dir: dir.to_owned(),
        reason,
    }
}

fn header_corruption(s: &FoundSegment<'_>) -> Error {
    Error::Corruption {
        segment: s.segment_no,
        offset: 0,
        reason: s.header.damage(),
    }
}

/// Step 4, the lineage: the log's is the one most of its version-2 segments have (or
/// `expected`, the one a caller requires). Every segment with a valid header must belong to it; a version-1
/// segment (no lineage) only on timeline 1 and before every version-2 one, as a log an
/// older build wrote and this one went on with. `None` when every segment is version 1.
pub(crate) fn log_lineage(
    found: &[FoundSegment<'_>],
    expected: Option<Lineage>,
) -> Result<Option<Lineage>> {
    let valid = || {
        found
            .iter()
            .filter_map(|s| s.header.valid(s.segment_no).map(|h| (s, h.lineage)))
    };
    // The lineage most version-2 segments have (the newest of those on a tie), so the
    // error names the odd segment out.
    let known: Vec<(&FoundSegment<'_>, Lineage)> = valid().filter(|(_, l)| l.is_known()).collect();
    let count = |l: Lineage| known.iter().filter(|(_, k)| *k == l).count();
    // `max_by_key` keeps the last of equal maxima: the newest.
    let newest = known.iter().max_by_key(|(_, l)| count(*l)).copied();
    let lineage = match (newest, expected) {
        (Some((s, found)), Some(expected)) if found != expected => {
            return Err(Error::ForeignSegment {
                path: s.path.to_owned(),
                expected,
                found,
            })
        }
        (Some((_, l)), _) => Some(l),
        (None, expected) => expected,
    };
    let Some(lineage) = lineage else {
        return Ok(None);
    };
    let first_known = valid()
        .find(|(_, l)| l.is_known())
        .map_or(u64::MAX, |(s, _)| s.segment_no);
    for (s, found) in valid() {
        let belongs = if found.is_known() {
            found == lineage
        } else {
            lineage.timeline == 1 && s.segment_no < first_known
        };
        if !belongs {
            return Err(Error::ForeignSegment {
                path: s.path.to_owned(),
                expected: lineage,
                found,
            });
        }
    }
    Ok(Some(lineage))
}

/// Steps 3 to 7: the segments from LSN `from_lsn + 1` on (without `from_lsn`, from the
/// lowest-numbered segment, whose header must then be intact). `expected`: the lineage
/// the log must have (a new log takes it).
pub(crate) fn plan_live(
    dir: &Path,
    found: &[FoundSegment<'_>],
    from_lsn: Option<Lsn>,
    expected: Option<Lineage>,
) -> Result<LivePlan> {
    // Step 3: a version other than this build's fails at once, the first in name order.
    if let Some((s, version)) = found
        .iter()
        .filter_map(|s| match s.header {
            HeaderState::UnsupportedVersion(v) => Some((s, *v)),
            _ => None,
        })
        .min_by(|a, b| a.0.path.file_name().cmp(&b.0.path.file_name()))
    {
        return Err(Error::UnsupportedVersion {
            path: s.path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    // Step 4: one lineage, then no duplicates.
    let lineage = log_lineage(found, expected)?;
    for pair in found.windows(2) {
        if pair[0].segment_no == pair[1].segment_no {
            return Err(sequence_error(
                dir,
                format!("segment {} appears twice", pair[0].segment_no),
            ));
        }
    }
    let first_lsn = |s: &FoundSegment<'_>| s.header.valid(s.segment_no).map(|h| h.first_lsn);
    // Without a caller's `from_lsn`, the lowest-numbered segment starts the log. Its header
    // must be intact and name it: nothing tells a damaged first segment from an obsolete one,
    // so that is an error rather than a silent retirement.
    let from_lsn = match (from_lsn, found.first()) {
        (Some(lsn), _) => lsn,
        (None, None) => 0,
        (None, Some(first)) => match first_lsn(first) {
            Some(lsn) => lsn.saturating_sub(1),
            None => return Err(header_corruption(first)),
        },
    };
    // Step 5: the live log starts at the last segment that begins at or before the first
    // LSN needed.
    let needed = from_lsn + 1;
    let Some(start) = found
        .iter()
        .rposition(|s| first_lsn(s).is_some_and(|f| f <= needed))
    else {
        if let Some(first) = found.iter().find_map(first_lsn) {
            return Err(sequence_error(
                dir,
                format!(
                    "LSN gap: records from LSN {needed} are needed but the oldest segment starts at LSN {first}"
                ),
            ));
        }
        if let Some(bad) = found.first() {
            return Err(header_corruption(bad));
        }
        return Ok(LivePlan::NewLog { from_lsn });
    };
    // Steps 6 and 7: segments wholly below `from_lsn` are obsolete, whatever their state;
    // every live one has a valid header and follows the one before it.
    let mut prev: Option<(u64, Lsn)> = None;
    for s in &found[start..] {
        let Some(first) = first_lsn(s) else {
            return Err(header_corruption(s));
        };
        if let Some((prev_no, prev_first)) = prev {
            if s.segment_no != prev_no + 1 {
                return Err(sequence_error(
                    dir,
                    format!(
                        "segment {} is missing (found {} after {prev_no})",
                        prev_no + 1,
                        s.segment_no
                    ),
                ));
            }
            if first <= prev_first {
                return Err(sequence_error(
                    dir,
                    format!(
                        "segment {} starts at LSN {first}, not after segment {prev_no} (LSN {prev_first})",
                        s.segment_no
                    ),
                ));
            }
        }
        prev = Some((s.segment_no, first));
    }
    Ok(LivePlan::Segments {
        from_lsn,
        start,
        lineage,
    })
}

/// A live segment, scanned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScannedSegment<'a> {
    pub header: &'a SegmentHeader,
    pub scan: &'a SegmentScan,
    /// The file's length.
    pub file_len: u64,
}

/// Where the log ends after recovery (steps 8 to 12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TailPlan {
    /// Index (among the live segments) of the segment new records go into.
    pub active: usize,
    /// Where the next frame goes in it.
    pub write_offset: u64,
    /// The last LSN the log keeps.
    pub last_lsn: Lsn,
    /// The torn tail to cut: the live segments after `active` are removed, then bytes
    /// `zero_from..zero_to` of `active` are zeroed.
    pub cut: Option<PlannedCut>,
}

/// A cut, as it will be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedCut {
    pub tail: CutTail,
    pub zero_from: u64,
    pub zero_to: u64,
}

/// Steps 8 to 12 over the live segments: the first place where the run of valid frames
/// breaks, whether the break is a torn tail (`mode` says whether to cut it) or corruption,
/// and where the log then ends.
pub(crate) fn plan_tail(
    dir: &Path,
    live: &[ScannedSegment<'_>],
    from_lsn: Lsn,
    mode: RecoveryMode,
) -> Result<TailPlan> {
    // Steps 8 and 9: the first segment not followed by the next LSN, or, the last, whose
    // run ends other than cleanly or has valid frames after it. A segment the next one
    // continues at the next LSN holds every record before it (a lost one would leave a
    // gap): bytes past its run are stale (a torn write of an earlier life the writer went
    // on past, as a build before step 11's zeroing left them), not damage.
    let brk = live
        .iter()
        .enumerate()
        .position(|(k, s)| match live.get(k + 1) {
            Some(next) => !crate::lsn::continues(s.scan.last_lsn, next.header.first_lsn),
            None => s.scan.end_kind != ScanEnd::Clean || !s.scan.after.is_empty(),
        });
    let plan = match brk {
        None => {
            let last = &live[live.len() - 1];
            TailPlan {
                active: live.len() - 1,
                write_offset: last.scan.end as u64,
                last_lsn: last.scan.last_lsn,
                cut: None,
            }
        }
        Some(k) => {
            // Step 10.
            let s = &live[k];
            let good_last = s.scan.last_lsn;
            // Valid frames after the break, in this segment and in every later one.
            let mut evidence: Vec<&FrameHeader> = s.scan.after.iter().map(|(_, h)| h).collect();
            for later in &live[k + 1..] {
                evidence.extend(later.scan.frames.iter());
                evidence.extend(later.scan.after.iter().map(|(_, h)| h));
            }
            let reason = match &s.scan.end_kind {
                ScanEnd::Damaged(r) => r.clone(),
                ScanEnd::Clean if !s.scan.after.is_empty() => {
                    "a frame with a damaged header (valid frames follow it)".into()
                }
                ScanEnd::Clean => {
                    let next = live[k + 1].header;
                    format!(
                        "LSN gap: segment {} ends at LSN {good_last}, segment {} starts at LSN {}",
                        s.header.segment_no, next.segment_no, next.first_lsn
                    )
                }
            };
            // A frame written after the damaged position had been synced proves the damage
            // is not a torn write.
            let synced_over = evidence.iter().any(|h| h.synced_lsn > good_last);
            let damaged = s.scan.end_kind != ScanEnd::Clean || !evidence.is_empty();
            let end = s.scan.end as u64;
            let corruption = || Error::Corruption {
                segment: s.header.segment_no,
                offset: end,
                reason: reason.clone(),
            };
            if good_last < from_lsn {
                // Records the caller already holds are damaged: never cut below `from_lsn`.
                return Err(corruption());
            }
            match mode {
                _ if !damaged => return Err(sequence_error(dir, reason)),
                RecoveryMode::Strict if synced_over => return Err(corruption()),
                RecoveryMode::Strict => {
                    return Err(Error::TornTail {
                        segment: s.header.segment_no,
                        offset: end,
                    })
                }
                RecoveryMode::TolerateTornTail if synced_over => return Err(corruption()),
                _ => {}
            }
            // Step 11: zero everything valid after the break in this segment (at least one
            // frame header's worth), and drop the later segments.
            let zero_to = s
                .scan
                .after
                .iter()
                .map(|(off, h)| (off + h.total_len()) as u64)
                .max()
                .unwrap_or(0)
                .max(end + FRAME_HEADER_LEN as u64)
                .min(s.file_len);
            TailPlan {
                active: k,
                write_offset: end,
                last_lsn: good_last,
                cut: Some(PlannedCut {
                    tail: CutTail {
                        segment: s.header.segment_no,
                        offset: end,
                        bytes_cut: zero_to.saturating_sub(end),
                        frames_dropped: evidence.len(),
                        segments_dropped: live.len() - (k + 1),
                        reason,
                    },
                    zero_from: end,
                    zero_to,
                }),
            }
        }
    };
    // Step 12.
    if plan.last_lsn < from_lsn {
        return Err(sequence_error(
            dir,
            format!(
                "the log ends at LSN {} but records through LSN {from_lsn} were expected",
                plan.last_lsn
            ),
        ));
    }
    Ok(plan)
}
