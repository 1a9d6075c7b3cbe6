//! A whole database checked as `Db::open` would open it, without changing a byte.

use std::io;
use std::path::Path;

use super::*;
use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::wal::RecoveryReport;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// For information.
    Note,
    /// Not damage, but worth knowing (a torn tail opening would cut, a damaged segment that
    /// is no longer needed).
    Warning,
    /// Opening would fail, or lose records it should hold.
    Damage,
}

/// One thing [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What it is.
    pub message: String,
}

/// What [`verify`] found in a database directory.
#[derive(Debug)]
pub struct Verification {
    /// The directory's parts.
    pub paths: DbPaths,
    /// True for a bare log directory ([`verify_log`]): judged as [`crate::Wal::open`] would
    /// open it, from its oldest segment, with no LMDB.
    pub log_only: bool,
    /// LMDB's metadata: `Ok(None)` when there is no store yet, `Err` when it is damaged.
    pub store: Result<Option<StoreInfo>>,
    /// LMDB's applied LSN (0 without a readable store): what the log must continue.
    pub applied_lsn: Lsn,
    /// The log.
    pub log: LogScan,
    /// The segment the engine's log recovery would start at (index into `log.segments`);
    /// the segments before it are wholly at or below the applied LSN and would be retired.
    pub start: Option<usize>,
    /// What the log's recovery inside [`crate::Db::open`] would do: its report (with the cut
    /// it would make), or its error.
    pub open: Result<RecoveryReport>,
    /// Everything found, in order.
    pub findings: Vec<Finding>,
    /// The process holding the database open, if one is seen ([`lock_holder`]).
    pub in_use_by: Option<u32>,
}

impl Verification {
    /// True when nothing found is damage: [`crate::Db::open`] would open the database
    /// without losing a record it should hold (a torn tail at the end of the last segment,
    /// which it cuts, is a warning).
    pub fn is_healthy(&self) -> bool {
        self.findings.iter().all(|f| f.severity < Severity::Damage)
    }
}

/// Checks the database directory `db_dir` as [`crate::Db::open`] would open it, without
/// opening it: LMDB's metadata (read-only), every segment's header and frame CRCs, the
/// sequence of segments and LSNs, LMDB's applied LSN against the log (the log must hold every
/// LSN after it), and that every record the open would replay decodes. `mode` is the
/// recovery mode to judge by: `Strict` makes a torn tail damage.
///
/// `Err` only when the directory cannot be inspected (missing, not a walmdb directory, an
/// I/O error); damage is in [`Verification::findings`].
pub fn verify(db_dir: &Path, mode: RecoveryMode) -> Result<Verification> {
    verify_with_progress(db_dir, mode, &mut |_, _| {})
}

/// [`verify`], calling `progress(bytes_read, total_bytes)` as the log is scanned.
pub fn verify_with_progress(
    db_dir: &Path,
    mode: RecoveryMode,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Verification> {
    verify_inner(db_paths(db_dir)?, false, mode, progress)
}

/// Checks a bare log directory (as [`crate::Wal`] alone uses) as [`crate::Wal::open`] would
/// open it: from its oldest segment, with no LMDB. [`Verification::log_only`] is true,
/// `paths.wal` is `wal_dir` and `store` is `Ok(None)`.
pub fn verify_log(
    wal_dir: &Path,
    mode: RecoveryMode,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Verification> {
    let paths = DbPaths {
        root: wal_dir.to_owned(),
        wal: wal_dir.to_owned(),
        data: crate::layout::data_dir(wal_dir),
    };
    verify_inner(paths, true, mode, progress)
}

fn verify_inner(
    paths: DbPaths,
    log_only: bool,
    mode: RecoveryMode,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Verification> {
    if !paths.wal.is_dir() && log_only {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no such directory", paths.wal.display()),
        )));
    }
    let in_use_by = if log_only {
        None
    } else {
        lock_holder(&paths.root)
    };
    let mut findings = Vec::new();
    let mut find = |severity, message: String| findings.push(Finding { severity, message });
    if let Some(pid) = in_use_by {
        find(
            Severity::Warning,
            format!(
                "the database is open in process {pid}: the log and LMDB may change while they are read"
            ),
        );
    }
    // LMDB first: the log read after it can only be newer.
    let store = match log_only {
        true => Ok(None),
        false => match read_store(&paths.data) {
            Err(Error::Io(e)) => return Err(Error::Io(e)),
            other => other,
        },
    };
    let applied_lsn = match &store {
        Ok(Some(s)) => s.applied_lsn,
        _ => 0,
    };
    match &store {
        Ok(None) if log_only => {}
        Ok(None) => find(
            Severity::Warning,
            format!(
                "no LMDB store in {}: opening would create one and replay the log from its start",
                paths.data.display()
            ),
        ),
        Ok(Some(_)) => {}
        Err(e) => find(
            Severity::Damage,
            format!("LMDB ({}): {e}", paths.data.display()),
        ),
    }
    let log = scan_log_with_progress(&paths.wal, progress)?;
    // The engine opens its log from LMDB's applied LSN; without a readable store, judge the
    // log on its own.
    let from_lsn = match &store {
        Ok(_) if !log_only => Some(applied_lsn),
        _ => None,
    };
    let plan = log.plan(from_lsn, mode);
    let (open, start) = (plan.result, plan.start);
    if !log.exists {
        find(
            Severity::Note,
            format!(
                "no log directory {}: opening would start a new log at LSN {}",
                paths.wal.display(),
                applied_lsn + 1
            ),
        );
    } else if log.segments.is_empty() {
        find(
            Severity::Note,
            format!(
                "the log holds no segment: opening would start a new one at LSN {}",
                applied_lsn + 1
            ),
        );
    }
    let seg_name = |no: u64| log.file_name(no);
    match &open {
        Ok(report) => {
            if let Some(cut) = &report.cut {
                let where_ = format!("{} at offset {}", seg_name(cut.segment), cut.offset);
                if cut.segments_dropped > 0 {
                    find(
                        Severity::Damage,
                        format!(
                            "torn tail in {where_} ({}), which is not the last segment: opening would cut it and discard {} later segment(s) and {} valid frame(s)",
                            cut.reason, cut.segments_dropped, cut.frames_dropped
                        ),
                    );
                } else {
                    let dropped = if cut.frames_dropped > 0 {
                        format!(
                            "; the {} valid frame(s) after it, written after the last sync, would go with it",
                            cut.frames_dropped
                        )
                    } else {
                        String::new()
                    };
                    find(
                        Severity::Warning,
                        format!(
                            "torn tail in {where_} ({}): normal after a crash; opening would cut it, the log then ending at LSN {}{dropped}",
                            cut.reason, report.last_lsn
                        ),
                    );
                }
            }
        }
        Err(e) => find(Severity::Damage, describe_open_error(e, &log, applied_lsn)),
    }
    // Segments before the start one: wholly at or below the applied LSN, retired at open.
    let obsolete = start.unwrap_or(0);
    for s in &log.segments[..obsolete.min(log.segments.len())] {
        if s.end != SegmentEnd::Clean || !s.after.is_empty() {
            find(
                Severity::Warning,
                format!(
                    "{} ({}) is wholly at or below the applied LSN {applied_lsn}: not needed, opening retires it",
                    s.file_name, s.end
                ),
            );
        }
    }
    if obsolete > 0 && open.is_ok() {
        find(
            Severity::Note,
            format!("{obsolete} segment(s) wholly at or below the applied LSN {applied_lsn} would be retired at open"),
        );
    }
    // Records the open would replay must decode (a frame with a valid CRC that does not is
    // what only a buggy or foreign writer produces).
    let replay_end = open.as_ref().map_or(Lsn::MAX, |r| r.last_lsn);
    for (i, s) in log.segments.iter().enumerate() {
        for p in &s.decode_errors {
            let replayed =
                i >= obsolete && *p.lsns.end() > applied_lsn && *p.lsns.start() <= replay_end;
            let severity = if replayed {
                Severity::Damage
            } else {
                Severity::Warning
            };
            let why = if replayed {
                "opening would fail replaying it"
            } else {
                "not replayed by an open"
            };
            find(
                severity,
                format!("{} offset {}: {} ({why})", s.file_name, p.offset, p.reason),
            );
        }
    }
    Ok(Verification {
        paths,
        log_only,
        store,
        applied_lsn,
        log,
        start,
        open,
        findings,
        in_use_by,
    })
}

/// A recovery error, in the terms of a database: which file, which offset, and what it means
/// for LMDB's applied LSN.
fn describe_open_error(e: &Error, log: &LogScan, applied_lsn: Lsn) -> String {
    match e {
        Error::Corruption {
            segment,
            offset,
            reason,
        } => {
            let mut m = format!(
                "corruption in {} at offset {offset}: {reason}",
                log.file_name(*segment)
            );
            if let Some(s) = log.segment(*segment) {
                if *offset > 0 && s.last_lsn().is_some_and(|l| l < applied_lsn) {
                    m.push_str(&format!(
                        " (below LMDB's applied LSN {applied_lsn}: records LMDB already holds)"
                    ));
                } else if let SegmentEnd::Corruption { frames_after, .. } = &s.end {
                    m.push_str(&format!(
                        "; {frames_after} valid frame(s) written after a sync that covered it follow, so a crash cannot explain it"
                    ));
                }
            }
            m
        }
        Error::TornTail { segment, offset } => format!(
            "torn tail in {} at offset {offset} (refused in strict mode; the default mode would cut it)",
            log.file_name(*segment)
        ),
        Error::SegmentSequence { reason, .. } => {
            let first = log.segments.iter().find_map(|s| s.first_lsn());
            if reason.starts_with("LSN gap: records from") {
                format!(
                    "{reason}: LMDB's applied LSN {applied_lsn} is behind the log (LSNs {}..={} are in neither)",
                    applied_lsn + 1,
                    first.unwrap_or(applied_lsn + 1).saturating_sub(1)
                )
            } else if reason.starts_with("the log ends at LSN") {
                format!("{reason}: LMDB's applied LSN {applied_lsn} is ahead of the log")
            } else {
                reason.clone()
            }
        }
        Error::UnsupportedVersion {
            path,
            found,
            supported,
        } => format!(
            "{} is format version {found}; this build reads version {supported}",
            path.display()
        ),
        other => other.to_string(),
    }
}
