//! Read-only inspection of a database directory: `<db>/wal/` (the log's segments) and
//! `<db>/data/` (LMDB). The `walmdb` command-line tool (`verify`, `dump`, `stats --offline`)
//! is built on it.
//!
//! Nothing here modifies, truncates, creates or locks a file, unlike [`crate::Wal::open`] and
//! [`crate::Db::open`], whose recovery cuts torn tails, retires segments and replays into
//! LMDB. Segment files are read with plain read-only opens; LMDB is opened read-only without
//! its lock file (see [`read_store`]).
//!
//! The judgements use the recovery code's own definitions (`src/wal/recovery.rs`, described
//! in `docs/recovery.md`) and its pure functions (`scan_segment`, `decode_frame`):
//! [`LogScan::would_open`] says exactly what [`crate::Wal::open_with`] would do with the
//! same files (the report it would return, or the error), without doing it.
//!
//! ```
//! # fn main() -> walmdb::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let db = walmdb::Db::open(dir.path())?;
//! db.update(|txn| txn.put("users", b"alice", b"1"))?;
//! db.close()?;
//! let v = walmdb::inspect::verify(dir.path(), walmdb::RecoveryMode::TolerateTornTail)?;
//! assert!(v.is_healthy(), "{:?}", v.findings);
//! assert!(v.applied_lsn >= 1);
//! # Ok(()) }
//! ```

mod plan;
mod scan;
mod verify;

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::wal::log::segment::{is_spare_or_temp, parse_segment_file_name};

pub use crate::store::read_only::{applied_lsn, read_store, scrub_store, StoreInfo};
pub use crate::wal::log::quarantine::{
    list as list_quarantine, quarantine_dir, QuarantineEntry, QuarantineListing,
    QUARANTINE_FORMAT_VERSION,
};
pub use crate::wal::log::recovery::HeaderState;
pub use plan::{LogEntry, Readable, Records, Stop};
pub use scan::{
    scan_log, scan_log_with_progress, segment_header, segment_number, DecodeProblem, FrameInfo,
    LogScan, OtherFile, SegmentEnd, SegmentInfo, SequenceProblem,
};
pub use verify::{verify, verify_log, verify_with_progress, Finding, Severity, Verification};

/// The parts of a database directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbPaths {
    /// The database directory.
    pub root: PathBuf,
    /// `<root>/wal`: the log's segments.
    pub wal: PathBuf,
    /// `<root>/data`: the LMDB environment.
    pub data: PathBuf,
}

/// Checks that `dir` is a walmdb database directory (it exists and holds `wal/` or `data/`)
/// and returns its parts. A missing directory is `Error::Io` of kind `NotFound`; a directory
/// with neither part is `Error::Io` of kind `InvalidInput`.
pub fn db_paths(dir: &Path) -> Result<DbPaths> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| Error::Io(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))))?;
    if !meta.is_dir() {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        )));
    }
    let paths = DbPaths {
        root: dir.to_owned(),
        wal: crate::layout::wal_dir(dir),
        data: crate::layout::data_dir(dir),
    };
    if !paths.wal.is_dir() && !paths.data.is_dir() {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a walmdb database directory (it has neither wal/ nor data/)",
                dir.display()
            ),
        )));
    }
    Ok(paths)
}

/// True when `dir` directly holds log files (`wal-*.log`, `spare-*.log`, `*.log.tmp`): a
/// bare log directory, as [`crate::Wal`] alone uses, rather than a database directory.
pub fn is_log_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| parse_segment_file_name(n).is_some() || is_spare_or_temp(n))
        })
    })
}

/// The process that holds the exclusive lock on `<db_dir>/LOCK` (an open [`crate::Db`]), if
/// one can be seen, found without taking any lock: Linux only, from `/proc/locks` (the lock
/// is an `flock`). `None` when nobody holds it, when `LOCK` does not exist, or elsewhere than
/// Linux. A best-effort hint: inspecting a database that is open elsewhere reads a log and an
/// LMDB that are changing underneath.
pub fn lock_holder(db_dir: &Path) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(crate::layout::lock_file(db_dir)).ok()?;
        let (ino, dev) = (meta.ino(), meta.dev());
        // The kernel prints the device as `major:minor` in hex (glibc's dev_t encoding).
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let mut inode_only = None;
        for line in locks.lines() {
            // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; waiters add a `->` field.
            let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "->").collect();
            let (Some(pid), Some(id)) = (fields.get(4), fields.get(5)) else {
                continue;
            };
            let mut parts = id.split(':');
            let (Some(maj), Some(min), Some(i)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if i.parse::<u64>().ok() != Some(ino) {
                continue;
            }
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            let same_dev = u64::from_str_radix(maj, 16).ok() == Some(major)
                && u64::from_str_radix(min, 16).ok() == Some(minor);
            if same_dev {
                return Some(pid);
            }
            // Stacked file systems (overlayfs, btrfs subvolumes) may report another device.
            inode_only.get_or_insert(pid);
        }
        inode_only
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = db_dir;
        None
    }
}

/// The whole records inside a quarantined run of bytes: every frame in it whose CRC holds
/// under its segment's salt, decoded (frames that do not decode are left out). What the log
/// lost with a cut, for an operator to judge.
pub fn quarantined_records(entry: &QuarantineEntry) -> Vec<LogEntry> {
    use crate::wal::log::record::decode_frame;
    use crate::wal::log::segment::probe_valid_frames;
    let mut out = Vec::new();
    for (off, header) in probe_valid_frames(&entry.bytes, 0, entry.salt) {
        let frame = &entry.bytes[off..off + header.total_len()];
        let Ok(records) = decode_frame(&header, frame) else {
            continue;
        };
        for r in records {
            if let Ok(record) = r.record.decode() {
                out.push(LogEntry {
                    lsn: r.lsn,
                    segment_no: entry.segment_no,
                    frame_offset: entry.offset + off as u64,
                    record,
                });
            }
        }
    }
    out
}

/// The quarantine of the log in `log_dir` (`<log_dir>/quarantine/`), oldest first: each
/// file parsed, or why it does not parse. Empty when there is none. Reads only.
pub fn quarantine_entries(log_dir: &Path) -> Result<QuarantineListing> {
    list_quarantine(&crate::wal::log::fs::StdFs, log_dir)
}
