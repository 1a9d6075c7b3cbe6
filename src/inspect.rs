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

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use heed::types::Bytes;
use heed::{EnvFlags, EnvOpenOptions};

use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::wal::record::{decode_frame, FrameHeader, FORMAT_VERSION, FRAME_HEADER_LEN};
use crate::wal::segment::{
    is_spare_or_temp, parse_segment_file_name, scan_segment, HeaderError, ScanEnd, SegmentHeader,
    SEGMENT_HEADER_LEN,
};
use crate::wal::{CutTail, Lsn, Record, RecoveryReport};

// The LMDB layout of `src/store.rs` (store format 1).
const META_DB: &str = "walmdb.meta";
const TABLES_DB: &str = "walmdb.tables";
const KEY_FORMAT: &[u8] = b"format";
const KEY_APPLIED: &[u8] = b"applied_lsn";

// =======================================================================================
// The database directory
// =======================================================================================

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
        wal: dir.join("wal"),
        data: dir.join("data"),
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
        let meta = std::fs::metadata(db_dir.join("LOCK")).ok()?;
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

// =======================================================================================
// LMDB, read-only
// =======================================================================================

/// What LMDB (`<db>/data`) holds of walmdb's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// The data directory.
    pub path: PathBuf,
    /// Bytes of `data.mdb`.
    pub file_bytes: u64,
    /// The store format in the `format` record; `None` when the record is missing.
    pub format_version: Option<u32>,
    /// LMDB holds every commit through this LSN (0 when the record is missing).
    pub applied_lsn: Lsn,
    /// The tables that exist: name and the LSN that created them.
    pub tables: Vec<(String, Lsn)>,
}

/// Reads `applied_lsn` from LMDB's `walmdb.meta` in `data_dir`, checking its CRC, without
/// writing anything (see [`read_store`]). 0 when there is no store yet (no `data.mdb`, or an
/// empty one) or no record, which is what [`crate::Db::open`] would read.
pub fn applied_lsn(data_dir: &Path) -> Result<Lsn> {
    Ok(read_store(data_dir)?.map_or(0, |s| s.applied_lsn))
}

/// Reads walmdb's metadata from the LMDB environment in `data_dir`: the store format, the
/// applied LSN and the table list, checking every CRC as [`crate::Db::open`] does. `None`
/// when there is no `data.mdb` (or it is empty): `Db::open` would create a new store.
///
/// A damaged `format` or `applied_lsn` record or table entry is `Error::Inconsistent` and a
/// format other than 1 `Error::UnsupportedVersion`, as `Db::open` reports them.
///
/// # How LMDB is opened, and why
///
/// With `MDB_RDONLY | MDB_NOLOCK`, and a map the size of `data.mdb` (rounded up): LMDB opens
/// `data.mdb` with `O_RDONLY`, maps it `PROT_READ`, never grows or truncates it, and never
/// touches `lock.mdb`. `MDB_RDONLY` alone is not read-only enough: LMDB would open (and
/// create, if missing) `lock.mdb` read-write, take `fcntl` locks on it, reinitialize it when
/// it is the only user, and write a slot of its reader table. The price of `MDB_NOLOCK` is
/// that a writer in another process does not see this reader: if the database is open
/// elsewhere, the pages read may be reused under the read. The read is one short transaction
/// of two small lookups, every value read is checked against its CRC, and the tool warns when
/// the database is in use ([`lock_holder`]); a result read from a live database is a hint,
/// not a verdict.
///
/// heed refuses to open an environment twice in one process: while a [`crate::Db`] of this
/// process has the directory open, this fails with an LMDB error ("environment already
/// opened"). Use [`crate::Db::stats`] there.
pub fn read_store(data_dir: &Path) -> Result<Option<StoreInfo>> {
    let file = data_dir.join("data.mdb");
    let file_bytes = match std::fs::metadata(&file) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if file_bytes == 0 {
        // LMDB would initialize it (a write): a store that never committed.
        return Ok(None);
    }
    let map_size = usize::try_from(file_bytes)
        .unwrap_or(usize::MAX)
        .div_ceil(1 << 20)
        .saturating_mul(1 << 20);
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(map_size).max_dbs(4);
    // SAFETY: read-only and lock-free (see above): nothing of this process writes the file,
    // and heed refuses a second open of the same environment in this process.
    let env = unsafe {
        opts.flags(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK);
        opts.open(data_dir)
    }
    .map_err(lmdb_err("open read-only"))?;
    let result = read_meta(&env, data_dir, file_bytes);
    // Close it before returning, so a later open in this process (a `Db`) finds it closed.
    let closing = env.prepare_for_closing();
    closing.wait();
    result.map(Some)
}

fn read_meta(env: &crate::store::Env, data_dir: &Path, file_bytes: u64) -> Result<StoreInfo> {
    let inconsistent = |reason: &str| Error::Inconsistent {
        path: data_dir.to_owned(),
        reason: reason.into(),
    };
    let rtxn = env.read_txn().map_err(lmdb_err("begin read"))?;
    let mut info = StoreInfo {
        path: data_dir.to_owned(),
        file_bytes,
        format_version: None,
        applied_lsn: 0,
        tables: Vec::new(),
    };
    let meta: Option<heed::Database<Bytes, Bytes>> = env
        .open_database(&rtxn, Some(META_DB))
        .map_err(lmdb_err("open the meta table"))?;
    if let Some(meta) = meta {
        if let Some(stored) = meta.get(&rtxn, KEY_FORMAT).map_err(lmdb_err("read"))? {
            let version = decode_u32(KEY_FORMAT, stored)
                .ok_or_else(|| inconsistent("the store's format record is damaged"))?;
            if version != crate::store::STORE_FORMAT_VERSION {
                return Err(Error::UnsupportedVersion {
                    path: data_dir.to_owned(),
                    found: version,
                    supported: crate::store::STORE_FORMAT_VERSION,
                });
            }
            info.format_version = Some(version);
        }
        if let Some(stored) = meta.get(&rtxn, KEY_APPLIED).map_err(lmdb_err("read"))? {
            info.applied_lsn = decode_u64(KEY_APPLIED, stored)
                .ok_or_else(|| inconsistent("the store's applied LSN is damaged"))?;
        }
    }
    let tables: Option<heed::Database<Bytes, Bytes>> = env
        .open_database(&rtxn, Some(TABLES_DB))
        .map_err(lmdb_err("open the table list"))?;
    if let Some(tables) = tables {
        for item in tables.iter(&rtxn).map_err(lmdb_err("read"))? {
            let (name, stored) = item.map_err(lmdb_err("read"))?;
            let created = decode_u64(name, stored)
                .ok_or_else(|| inconsistent("a table list entry is damaged"))?;
            let name =
                std::str::from_utf8(name).map_err(|_| inconsistent("a table name is not UTF-8"))?;
            info.tables.push((name.to_owned(), created));
        }
    }
    Ok(info)
}

fn lmdb_err(op: &'static str) -> impl Fn(heed::Error) -> Error {
    crate::store::lmdb_err(op)
}

fn decode_u64(key: &[u8], stored: &[u8]) -> Option<u64> {
    (stored.len() == 8 + crate::store::CRC_LEN && crate::store::verify(key, stored))
        .then(|| u64::from_le_bytes(stored[..8].try_into().expect("8 bytes")))
}

fn decode_u32(key: &[u8], stored: &[u8]) -> Option<u32> {
    (stored.len() == 4 + crate::store::CRC_LEN && crate::store::verify(key, stored))
        .then(|| u32::from_le_bytes(stored[..4].try_into().expect("4 bytes")))
}

// =======================================================================================
// The log, scanned
// =======================================================================================

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
}

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
    },
    /// Damaged: magic, CRC, reserved bytes, impossible values, or a header that names another
    /// segment. The reason is the one recovery gives.
    Damaged(String),
    /// A format version this build does not read.
    UnsupportedVersion(u32),
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
            } => Some((first_lsn, salt, segment_bytes)),
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
    let bytes = &first_bytes[..first_bytes.len().min(SEGMENT_HEADER_LEN)];
    match SegmentHeader::decode(bytes) {
        Ok(h) if segment_no.is_some_and(|n| n != h.segment_no) => HeaderState::Damaged(format!(
            "header names segment {} but the file is named for segment {}",
            h.segment_no,
            segment_no.unwrap_or(0)
        )),
        Ok(h) => HeaderState::Valid {
            first_lsn: h.first_lsn,
            salt: h.salt,
            segment_bytes: h.segment_bytes,
        },
        Err(HeaderError::Version(v)) => HeaderState::UnsupportedVersion(v),
        Err(HeaderError::Damaged(reason)) => HeaderState::Damaged(reason),
    }
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
    };
    // `read_header` reads the first 64 bytes; `decode` looks at no more than those.
    info.header = header_state(data, Some(segment_no));
    let header = match &info.header {
        HeaderState::Valid {
            first_lsn,
            salt,
            segment_bytes,
        } => SegmentHeader {
            segment_no,
            first_lsn: *first_lsn,
            salt: *salt,
            segment_bytes: *segment_bytes,
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
    info.end = match scan.end_kind {
        ScanEnd::Clean if info.after.is_empty() => SegmentEnd::Clean,
        ScanEnd::Clean => SegmentEnd::TornTail {
            offset: info.run_end,
            reason: "a frame with a damaged header (valid frames follow it)".into(),
            frames_after: 0,
        },
        ScanEnd::Damaged(reason) => SegmentEnd::TornTail {
            offset: info.run_end,
            reason,
            frames_after: 0,
        },
    };
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

// =======================================================================================
// What opening would do
// =======================================================================================

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
struct Plan {
    result: Result<RecoveryReport>,
    /// Index of the start segment, when recovery got that far.
    start: Option<usize>,
}

impl LogScan {
    /// The first file with segment number `no`.
    pub fn segment(&self, no: u64) -> Option<&SegmentInfo> {
        self.segments.iter().find(|s| s.segment_no == no)
    }

    /// The file name of segment `no` as found (`wal-{no:08}.log` when there is none).
    pub fn file_name(&self, no: u64) -> String {
        self.segment(no).map_or_else(
            || crate::wal::segment::segment_file_name(no),
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
    /// This follows `src/wal/recovery.rs` step by step, on the same scans.
    pub fn would_open(&self, from_lsn: Option<Lsn>, mode: RecoveryMode) -> Result<RecoveryReport> {
        self.plan(from_lsn, mode).result
    }

    /// The segment the log would start at for `from_lsn` (recovery's step 5), as an index
    /// into [`LogScan::segments`]: `None` when there is none (a new log, or an error).
    pub fn start_segment(&self, from_lsn: Option<Lsn>) -> Option<usize> {
        self.plan(from_lsn, RecoveryMode::PointInTime).start
    }

    fn plan(&self, from_lsn: Option<Lsn>, mode: RecoveryMode) -> Plan {
        let fail = |e: Error, start: Option<usize>| Plan {
            result: Err(e),
            start,
        };
        let sequence = |reason: String| Error::SegmentSequence {
            dir: self.dir.clone(),
            reason,
        };
        // Step 3: a version other than 1 fails at once, the first in name order.
        let mut by_name: Vec<&SegmentInfo> = self.segments.iter().collect();
        by_name.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        if let Some((s, found)) = by_name.iter().find_map(|s| match s.header {
            HeaderState::UnsupportedVersion(v) => Some((s, v)),
            _ => None,
        }) {
            return fail(
                Error::UnsupportedVersion {
                    path: s.path.clone(),
                    found,
                    supported: FORMAT_VERSION,
                },
                None,
            );
        }
        let found = &self.segments;
        // Step 4.
        for pair in found.windows(2) {
            if pair[0].segment_no == pair[1].segment_no {
                return fail(
                    sequence(format!("segment {} appears twice", pair[0].segment_no)),
                    None,
                );
            }
        }
        let header_reason = |s: &SegmentInfo| match &s.header {
            HeaderState::Damaged(r) => r.clone(),
            _ => String::new(),
        };
        let from_lsn = match (from_lsn, found.first()) {
            (Some(lsn), _) => lsn,
            (None, None) => 0,
            (None, Some(first)) => match first.first_lsn() {
                Some(lsn) => lsn.saturating_sub(1),
                None => {
                    return fail(
                        Error::Corruption {
                            segment: first.segment_no,
                            offset: 0,
                            reason: header_reason(first),
                        },
                        None,
                    )
                }
            },
        };
        // Step 5.
        let needed = from_lsn + 1;
        let start = found
            .iter()
            .rposition(|s| s.first_lsn().is_some_and(|f| f <= needed));
        let Some(start) = start else {
            if let Some(first) = found.iter().find_map(|s| s.first_lsn()) {
                return fail(
                    sequence(format!(
                        "LSN gap: records from LSN {needed} are needed but the oldest segment starts at LSN {first}"
                    )),
                    None,
                );
            }
            if let Some(bad) = found.first() {
                return fail(
                    Error::Corruption {
                        segment: bad.segment_no,
                        offset: 0,
                        reason: header_reason(bad),
                    },
                    None,
                );
            }
            // A new log.
            return Plan {
                result: Ok(RecoveryReport {
                    segments: 1,
                    first_lsn: needed,
                    last_lsn: from_lsn,
                    cut: None,
                    segments_retired: 0,
                    segments_archived: 0,
                    duration: Duration::ZERO,
                }),
                start: None,
            };
        };
        // Steps 6 and 7.
        let live = &found[start..];
        let mut prev: Option<(u64, Lsn)> = None;
        for s in live {
            let Some(first) = s.first_lsn() else {
                return fail(
                    Error::Corruption {
                        segment: s.segment_no,
                        offset: 0,
                        reason: header_reason(s),
                    },
                    Some(start),
                );
            };
            if let Some((prev_no, prev_first)) = prev {
                if s.segment_no != prev_no + 1 {
                    return fail(
                        sequence(format!(
                            "segment {} is missing (found {} after {prev_no})",
                            prev_no + 1,
                            s.segment_no
                        )),
                        Some(start),
                    );
                }
                if first <= prev_first {
                    return fail(
                        sequence(format!(
                            "segment {} starts at LSN {first}, not after segment {prev_no} (LSN {prev_first})",
                            s.segment_no
                        )),
                        Some(start),
                    );
                }
            }
            prev = Some((s.segment_no, first));
        }
        // Steps 8 and 9.
        let last_of = |s: &SegmentInfo| s.last_lsn().expect("live headers are valid");
        let brk = live.iter().enumerate().position(|(k, s)| {
            let next_mismatch = live
                .get(k + 1)
                .is_some_and(|next| next.first_lsn() != Some(last_of(s) + 1));
            s.breaks() || next_mismatch
        });
        let mut cut = None;
        let (active, last_lsn) = match brk {
            None => (live.len() - 1, last_of(&live[live.len() - 1])),
            Some(k) => {
                // Step 10.
                let s = &live[k];
                let good_last = last_of(s);
                let mut evidence: Vec<&FrameInfo> = s.after.iter().collect();
                for later in &live[k + 1..] {
                    evidence.extend(later.frames.iter().chain(&later.after));
                }
                let reason = match &s.end {
                    SegmentEnd::TornTail { reason, .. } | SegmentEnd::Corruption { reason, .. } => {
                        reason.clone()
                    }
                    _ => {
                        let next = &live[k + 1];
                        format!(
                            "LSN gap: segment {} ends at LSN {good_last}, segment {} starts at LSN {}",
                            s.segment_no,
                            next.segment_no,
                            next.first_lsn().unwrap_or(0)
                        )
                    }
                };
                let synced_over = evidence.iter().any(|f| f.header.synced_lsn > good_last);
                let damaged = s.end.is_damaged() || !evidence.is_empty();
                let corruption = Error::Corruption {
                    segment: s.segment_no,
                    offset: s.run_end,
                    reason: reason.clone(),
                };
                if good_last < from_lsn {
                    return fail(corruption, Some(start));
                }
                match mode {
                    _ if !damaged => return fail(sequence(reason), Some(start)),
                    RecoveryMode::Strict if synced_over => return fail(corruption, Some(start)),
                    RecoveryMode::Strict => {
                        return fail(
                            Error::TornTail {
                                segment: s.segment_no,
                                offset: s.run_end,
                            },
                            Some(start),
                        )
                    }
                    RecoveryMode::TolerateTornTail if synced_over => {
                        return fail(corruption, Some(start))
                    }
                    _ => {}
                }
                // Step 11, as it would be done.
                let end = s.run_end;
                let zero_end = s
                    .after
                    .iter()
                    .map(|f| f.offset + f.len())
                    .max()
                    .unwrap_or(0)
                    .max(end + FRAME_HEADER_LEN as u64)
                    .min(s.bytes);
                cut = Some(CutTail {
                    segment: s.segment_no,
                    offset: end,
                    bytes_cut: zero_end.saturating_sub(end),
                    frames_dropped: evidence.len(),
                    segments_dropped: live.len() - (k + 1),
                    reason,
                });
                (k, good_last)
            }
        };
        // Step 12.
        if last_lsn < from_lsn {
            return fail(
                sequence(format!(
                    "the log ends at LSN {last_lsn} but records through LSN {from_lsn} were expected"
                )),
                Some(start),
            );
        }
        Plan {
            result: Ok(RecoveryReport {
                segments: active + 1,
                first_lsn: live[0].first_lsn().expect("live headers are valid"),
                last_lsn,
                cut,
                segments_retired: start,
                segments_archived: 0,
                duration: Duration::ZERO,
            }),
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

// =======================================================================================
// A whole database
// =======================================================================================

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
        data: wal_dir.join("data"),
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
