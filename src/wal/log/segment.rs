//! Segment files: naming, the header, creation, recycling and scanning.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::fs::{join, Fs, FsFile};
use super::record::{decode_frame, FrameHeader, LogRecord, Lsn, FORMAT_VERSION, FRAME_HEADER_LEN};
use crate::error::{Error, Result};
use crate::lsn::Lineage;

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WALMDBLG";

/// Bytes of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;
pub use crate::limits::MIN_SEGMENT_BYTES;
/// The largest first LSN a header may carry: 2^62, out of reach of any log, so LSN
/// arithmetic on a segment never overflows.
const MAX_FIRST_LSN: u64 = 1 << 62;

/// The header at the start of every segment.
///
/// ```text
/// Format: segment header (versions 2 and 3) =
///           { magic: [u8; 8] "WALMDBLG" | version: u32 | salt: u32
///           | segment_no: u64 | first_lsn: u64 | segment_bytes: u64
///           | identity: u64 | timeline: u32 | parent_timeline: u32
///           | reserved: [u8; 4] (zero) | crc: u32 }
///         crc = crc32(header[0..60])
///         version 1: bytes 40..60 are all reserved (zero): no identity, timeline 1
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number; also in its file name.
    pub segment_no: u64,
    /// The LSN its first frame starts with.
    pub first_lsn: Lsn,
    /// A per-creation nonce stored in every frame, so frames left in a recycled file from its
    /// earlier life are never mistaken for this life's.
    pub salt: u32,
    /// The size the segment was preallocated to.
    pub segment_bytes: u64,
    /// The database and timeline the segment belongs to ([`Lineage::UNKNOWN`] when read
    /// from a version-1 header).
    pub lineage: Lineage,
}

/// The format version that wrote segments without a lineage; still read.
const VERSION_WITHOUT_LINEAGE: u32 = 1;
/// The format version before record type `Entry`; its header is this build's. Still read.
const VERSION_WITHOUT_ENTRIES: u32 = 2;
/// The format version before split transactions (`TxnPart`, `TxnEnd`); its header is this
/// build's. Still read.
const VERSION_WITHOUT_PIECES: u32 = 3;

impl SegmentHeader {
    /// A header for a new segment of `lineage`, with a fresh salt.
    pub fn new(segment_no: u64, first_lsn: Lsn, segment_bytes: u64, lineage: Lineage) -> Self {
        debug_assert!(lineage.is_known(), "a new segment records its database");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut h = crc32fast::Hasher::new();
        h.update(&segment_no.to_le_bytes());
        h.update(&first_lsn.to_le_bytes());
        h.update(&nanos.to_le_bytes());
        // Zero would match zero-filled space in a fresh file.
        let salt = h.finalize().max(1);
        SegmentHeader {
            segment_no,
            first_lsn,
            salt,
            segment_bytes,
            lineage,
        }
    }

    /// The header of the segment after this one, for records from `first_lsn`: same
    /// database and timeline, a fresh salt.
    pub fn next(&self, first_lsn: Lsn, segment_bytes: u64) -> Self {
        SegmentHeader::new(self.segment_no + 1, first_lsn, segment_bytes, self.lineage)
    }

    /// True when the header was read from a version-1 segment (no lineage recorded).
    pub fn is_version_1(&self) -> bool {
        !self.lineage.is_known()
    }

    /// The header's bytes, at the current format version.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        debug_assert!(
            self.lineage.is_known(),
            "a written header records its database"
        );
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.salt.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_no.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        b[40..48].copy_from_slice(&self.lineage.identity.to_le_bytes());
        b[48..52].copy_from_slice(&self.lineage.timeline.to_le_bytes());
        b[52..56].copy_from_slice(&self.lineage.parent.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header (version 3 or 2, or version 1 as [`Lineage::UNKNOWN`]). `Err`
    /// carries the reason, or the unsupported version.
    pub fn decode(b: &[u8]) -> std::result::Result<Self, HeaderError> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderError::Damaged(
                "file shorter than a segment header".into(),
            ));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Damaged("bad magic bytes".into()));
        }
        let crc = u32::from_le_bytes(b[60..64].try_into().expect("4"));
        if crc32fast::hash(&b[0..60]) != crc {
            return Err(HeaderError::Damaged("segment header CRC mismatch".into()));
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4"));
        let reserved = match version {
            FORMAT_VERSION | VERSION_WITHOUT_PIECES | VERSION_WITHOUT_ENTRIES => 56..60,
            VERSION_WITHOUT_LINEAGE => 40..60,
            other => return Err(HeaderError::Version(other)),
        };
        if b[reserved].iter().any(|&x| x != 0) {
            return Err(HeaderError::Damaged(
                "reserved header bytes are not zero".into(),
            ));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
        let lineage = if version == VERSION_WITHOUT_LINEAGE {
            Lineage::UNKNOWN
        } else {
            Lineage {
                identity: u64_at(40),
                timeline: u32_at(48),
                parent: u32_at(52),
            }
        };
        let header = SegmentHeader {
            salt: u32_at(12),
            segment_no: u64_at(16),
            first_lsn: u64_at(24),
            segment_bytes: u64_at(32),
            lineage,
        };
        // Values no writer produces are damage, even under a valid CRC: LSNs start at 1 and
        // stay far from overflow, and sizes are what `WalConfig::validate` allows.
        if header.first_lsn == 0 || header.first_lsn > MAX_FIRST_LSN {
            return Err(HeaderError::Damaged(format!(
                "impossible first LSN {}",
                header.first_lsn
            )));
        }
        if header.segment_bytes < MIN_SEGMENT_BYTES
            || header.segment_bytes > crate::limits::MAX_FRAME_BODY as u64
        {
            return Err(HeaderError::Damaged(format!(
                "impossible segment size {}",
                header.segment_bytes
            )));
        }
        // A writer since version 2 records a database (never identity 0), a timeline from 1 on,
        // and a parent below it (0 for timeline 1).
        if version != VERSION_WITHOUT_LINEAGE
            && (lineage.identity == 0
                || lineage.timeline == 0
                || lineage.parent >= lineage.timeline
                || (lineage.timeline == 1) != (lineage.parent == 0))
        {
            return Err(HeaderError::Damaged(format!(
                "impossible lineage: identity {:016x}, timeline {}, parent timeline {}",
                lineage.identity, lineage.timeline, lineage.parent
            )));
        }
        Ok(header)
    }
}

/// Why a segment header did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Damaged: bad magic, CRC or reserved bytes, or impossible values.
    Damaged(String),
    /// A format version this build does not read.
    Version(u32),
}

/// Reads and checks the header of the segment file at `path`. The outer error is I/O; the
/// inner one says why the header is not valid.
pub fn read_header(
    fs: &dyn Fs,
    path: &Path,
) -> Result<std::result::Result<SegmentHeader, HeaderError>> {
    let file = fs.open(path, false)?;
    // A file shorter than the header reads short: decode reports it as damaged.
    let buf = read_prefix(file.as_ref(), SEGMENT_HEADER_LEN as u64)?;
    Ok(SegmentHeader::decode(&buf))
}

/// The file name of segment `n`.
pub fn segment_file_name(n: u64) -> String {
    format!("wal-{n:08}.log")
}

/// The segment number in a segment file name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of a retired segment kept for reuse.
pub fn spare_file_name(n: u64) -> String {
    format!("spare-{n:08}.log")
}

/// True for names of spare files and of temporary files left by an interrupted creation.
pub fn is_spare_or_temp(name: &str) -> bool {
    (name.starts_with("spare-") && name.ends_with(".log")) || name.ends_with(".log.tmp")
}

/// An open segment.
#[derive(Debug)]
pub struct Segment {
    /// Its header.
    pub header: SegmentHeader,
    /// Its path.
    pub path: PathBuf,
    /// The open file.
    pub file: Box<dyn FsFile>,
}

/// Creates segment `header.segment_no` durably, reusing `spare` when given: the header is
/// written and synced under a temporary name, then renamed and the directory synced, so a
/// named segment always has a valid header and its full preallocated size.
pub fn create_segment(
    fs: &dyn Fs,
    dir: &Path,
    header: SegmentHeader,
    spare: Option<PathBuf>,
) -> Result<Segment> {
    let name = segment_file_name(header.segment_no);
    let tmp = join(dir, &format!("{name}.tmp"));
    let path = join(dir, &name);
    if let Some(spare) = spare.filter(|spare| *spare != tmp) {
        fs.rename(&spare, &tmp)?;
    }
    let file = fs.open(&tmp, true)?;
    file.allocate(header.segment_bytes)?;
    file.write_at(&header.encode(), 0)?;
    file.sync_data().map_err(Error::SyncFailed)?;
    fail::fail_point!("segment-header-synced-before-rename");
    fs.rename(&tmp, &path)?;
    fail::fail_point!("segment-renamed-before-dir-sync");
    fs.sync_dir(dir).map_err(Error::SyncFailed)?;
    Ok(Segment { header, path, file })
}

/// How a segment's run of valid frames ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Zeros, frames from an earlier life of the file, or no room for another frame.
    Clean,
    /// Something with this segment's salt that is not a valid next frame.
    Damaged(String),
}

/// The result of scanning one segment's frames in order.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// Offset just past the last valid frame: where the next frame would go.
    pub end: usize,
    /// LSN of the last valid record (`first_lsn - 1` when none).
    pub last_lsn: Lsn,
    /// How the run of valid frames ended.
    pub end_kind: ScanEnd,
    /// The headers of the run of valid frames.
    pub frames: Vec<FrameHeader>,
    /// Frames with a valid CRC found after `end`: (offset, header). Empty when `end` is clean
    /// and nothing valid follows.
    pub after: Vec<(usize, FrameHeader)>,
    /// Offset just past the last frame header's worth of bytes after `end` that carries this
    /// segment's salt (`end` when none): whatever a crashed writer left beyond the log's
    /// end that a later scan could take for one of this life's frames (see
    /// `recovery::recover`, which zeroes it).
    pub salted_end: usize,
}

fn header_at(data: &[u8], off: usize) -> Option<FrameHeader> {
    let bytes: &[u8; FRAME_HEADER_LEN] = data.get(off..off + FRAME_HEADER_LEN)?.try_into().ok()?;
    Some(FrameHeader::parse(bytes))
}

/// The frame at `off` if it is whole and its CRC is valid.
fn valid_frame_at(data: &[u8], off: usize, salt: u32) -> Option<FrameHeader> {
    let h = header_at(data, off)?;
    if !h.is_plausible(salt, data.len() - off) {
        return None;
    }
    let frame = &data[off..off + h.total_len()];
    (super::record::frame_crc(frame) == h.crc).then_some(h)
}

/// Scans the frames of one segment image from its header on. The frames must continue the
/// LSN sequence from `header.first_lsn`; the scan stops at the first frame that does not.
pub fn scan_segment(data: &[u8], header: &SegmentHeader) -> SegmentScan {
    let mut off = SEGMENT_HEADER_LEN;
    let mut next_lsn = header.first_lsn;
    let mut frames = Vec::new();
    let end_kind = loop {
        let Some(h) = header_at(data, off) else {
            break ScanEnd::Clean;
        };
        if h.salt != header.salt {
            // Zeros or a frame from the file's earlier life end this life's frames, unless
            // the frame is this life's with damaged salt bits: its CRC says which.
            let repaired = FrameHeader {
                salt: header.salt,
                ..h
            };
            let damaged_salt = h.first_lsn == next_lsn
                && repaired.is_plausible(header.salt, data.len() - off)
                && super::record::frame_crc_with_salt(&data[off..off + h.total_len()], header.salt)
                    == h.crc;
            if damaged_salt {
                break ScanEnd::Damaged("frame salt damaged".into());
            }
            break ScanEnd::Clean;
        }
        if h.first_lsn != next_lsn {
            break ScanEnd::Damaged(format!(
                "frame starts at LSN {} where LSN {next_lsn} was expected",
                h.first_lsn
            ));
        }
        match valid_frame_at(data, off, header.salt) {
            Some(h) => {
                off += h.total_len();
                next_lsn = h.last_lsn() + 1;
                frames.push(h);
            }
            None => break ScanEnd::Damaged("frame fails its CRC or length checks".into()),
        }
    };
    SegmentScan {
        end: off,
        last_lsn: next_lsn - 1,
        end_kind,
        frames,
        after: probe_valid_frames(data, off + 1, header.salt),
        salted_end: last_salted_header(data, off, header.salt)
            .map_or(off, |at| at + FRAME_HEADER_LEN),
    }
}

/// The offset of the last frame header's worth of bytes at or after `from` whose salt field
/// holds `salt`: a stale header of this life (a torn frame) could start there.
fn last_salted_header(data: &[u8], from: usize, salt: u32) -> Option<usize> {
    let salt_bytes = salt.to_le_bytes();
    let last_start = data.len().checked_sub(FRAME_HEADER_LEN)?;
    (from..=last_start)
        .rev()
        .find(|&off| data[off + 8..off + 12] == salt_bytes)
}

/// Every frame with a valid CRC and this salt starting at or after `from`. The salt is
/// compared before anything else, so scanning junk costs a compare per byte.
pub fn probe_valid_frames(data: &[u8], from: usize, salt: u32) -> Vec<(usize, FrameHeader)> {
    let salt_bytes = salt.to_le_bytes();
    let mut found = Vec::new();
    let mut off = from;
    while off + FRAME_HEADER_LEN <= data.len() {
        if data[off + 8..off + 12] == salt_bytes {
            if let Some(h) = valid_frame_at(data, off, salt) {
                found.push((off, h));
                off += h.total_len();
                continue;
            }
        }
        off += 1;
    }
    found
}

/// Reads a segment file: its header and, when the header is valid, the rest up to the
/// header's segment size; a file whose header does not decode, only its first bytes.
pub fn read_segment(file: &dyn FsFile) -> Result<Vec<u8>> {
    let len = file.len()?;
    let mut data = read_prefix(file, (SEGMENT_HEADER_LEN as u64).min(len))?;
    // Never more than the header's segment size, itself bounded by `MAX_FRAME_BODY`: a
    // file grown past it (or with a damaged length) is not read whole into memory.
    if let Ok(header) = SegmentHeader::decode(&data) {
        data = read_prefix(file, header.segment_bytes.min(len))?;
    }
    Ok(data)
}

/// The file's first `len` bytes (fewer if it ends sooner).
pub(crate) fn read_prefix(file: &dyn FsFile, len: u64) -> Result<Vec<u8>> {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let mut data = vec![0u8; len];
    let mut off = 0;
    while off < len {
        match file.read_at(&mut data[off..], off as u64)? {
            0 => break,
            n => off += n,
        }
    }
    data.truncate(off);
    Ok(data)
}

/// The records of the run of valid frames that starts after a segment's header, decoded a
/// frame at a time: a reader holds one frame's records, not a whole segment's (a segment
/// of compressed frames decodes to many times its size). The run stops at the first frame
/// that is invalid, out of sequence, or wholly above the read's end.
#[derive(Debug)]
pub(crate) struct FrameWalk {
    off: usize,
    next_lsn: Lsn,
    ended: bool,
}

impl FrameWalk {
    pub(crate) fn new(header: &SegmentHeader) -> Self {
        FrameWalk {
            off: SEGMENT_HEADER_LEN,
            next_lsn: header.first_lsn,
            ended: false,
        }
    }

    /// The records of the run's next frame with `from_lsn <= LSN <= until_lsn` (none for a
    /// frame below `from_lsn`); `None` once the run ended.
    pub(crate) fn next_frame(
        &mut self,
        data: &[u8],
        header: &SegmentHeader,
        from_lsn: Lsn,
        until_lsn: Lsn,
    ) -> Result<Option<Vec<LogRecord>>> {
        if self.ended || self.next_lsn > until_lsn {
            self.ended = true;
            return Ok(None);
        }
        let h = match valid_frame_at(data, self.off, header.salt) {
            Some(h) if h.first_lsn == self.next_lsn => h,
            _ => {
                self.ended = true;
                return Ok(None);
            }
        };
        let mut records = Vec::new();
        if h.last_lsn() >= from_lsn {
            let frame = &data[self.off..self.off + h.total_len()];
            records = decode_frame(&h, frame).map_err(|e| Error::Corruption {
                segment: header.segment_no,
                offset: self.off as u64,
                reason: e.0,
            })?;
            records.retain(|r| r.lsn >= from_lsn && r.lsn <= until_lsn);
        }
        self.off += h.total_len();
        self.next_lsn = h.last_lsn() + 1;
        Ok(Some(records))
    }

    /// The last LSN of the run read so far.
    pub(crate) fn last_lsn(&self) -> Lsn {
        self.next_lsn - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINEAGE: Lineage = Lineage {
        identity: 0x0123_4567_89ab_cdef,
        timeline: 3,
        parent: 2,
    };

    /// A header's bytes with the CRC recomputed after `edit`.
    fn resealed(mut b: [u8; SEGMENT_HEADER_LEN], edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        edit(&mut b);
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b.to_vec()
    }

    /// A version-1 header, built by hand as the version-1 writer laid it out.
    fn version_1_header(segment_no: u64, first_lsn: Lsn, salt: u32) -> Vec<u8> {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(b"WALMDBLG");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&salt.to_le_bytes());
        b[16..24].copy_from_slice(&segment_no.to_le_bytes());
        b[24..32].copy_from_slice(&first_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&(1u64 << 20).to_le_bytes());
        resealed(b, |_| {})
    }

    #[test]
    fn a_header_round_trips_with_its_database_and_timeline() {
        let h = SegmentHeader::new(7, 1234, 1 << 20, LINEAGE);
        let b = h.encode();
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 4);
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        // A version-3 header is the same layout and reads the same.
        let v3 = resealed(b, |b| b[8..12].copy_from_slice(&3u32.to_le_bytes()));
        assert_eq!(SegmentHeader::decode(&v3), Ok(h));
        // A version-2 header is the same layout and reads the same.
        let v2 = resealed(b, |b| b[8..12].copy_from_slice(&2u32.to_le_bytes()));
        assert_eq!(SegmentHeader::decode(&v2), Ok(h));
        let next = h.next(2000, 2 << 20);
        assert_eq!(
            (
                next.segment_no,
                next.first_lsn,
                next.segment_bytes,
                next.lineage
            ),
            (8, 2000, 2 << 20, LINEAGE)
        );
        assert_eq!(SegmentHeader::decode(&next.encode()), Ok(next));
    }

    #[test]
    fn every_flipped_bit_of_a_header_is_damage() {
        let b = SegmentHeader::new(7, 1234, 1 << 20, LINEAGE).encode();
        for byte in 0..SEGMENT_HEADER_LEN {
            for bit in 0..8 {
                let mut d = b;
                d[byte] ^= 1 << bit;
                assert!(
                    matches!(SegmentHeader::decode(&d), Err(HeaderError::Damaged(_))),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn a_version_1_header_reads_as_timeline_1_without_identity() {
        let b = version_1_header(5, 300, 0xfeed);
        let h = SegmentHeader::decode(&b).unwrap();
        assert_eq!(
            (h.segment_no, h.first_lsn, h.salt, h.segment_bytes),
            (5, 300, 0xfeed, 1 << 20)
        );
        assert_eq!(h.lineage, Lineage::UNKNOWN);
        assert!(h.is_version_1());
        // Version 1 reserved all of 40..60: a byte there is damage even under a valid CRC.
        let fixed: [u8; SEGMENT_HEADER_LEN] = b.try_into().unwrap();
        let b = resealed(fixed, |b| b[45] = 1);
        assert!(matches!(
            SegmentHeader::decode(&b),
            Err(HeaderError::Damaged(_))
        ));
    }

    #[test]
    fn a_version_this_build_does_not_know_is_refused() {
        let b = SegmentHeader::new(7, 1234, 1 << 20, LINEAGE).encode();
        for v in [0u32, 5, 0xffff_ffff] {
            let d = resealed(b, |b| b[8..12].copy_from_slice(&v.to_le_bytes()));
            assert_eq!(SegmentHeader::decode(&d), Err(HeaderError::Version(v)));
        }
    }

    #[test]
    fn a_lineage_no_writer_records_is_damage() {
        let b = SegmentHeader::new(7, 1234, 1 << 20, LINEAGE).encode();
        let bad: [(u64, u32, u32); 5] = [(0, 3, 2), (9, 0, 0), (9, 3, 3), (9, 2, 0), (9, 1, 1)];
        for (identity, timeline, parent) in bad {
            let d = resealed(b, |b| {
                b[40..48].copy_from_slice(&identity.to_le_bytes());
                b[48..52].copy_from_slice(&timeline.to_le_bytes());
                b[52..56].copy_from_slice(&parent.to_le_bytes());
            });
            assert!(
                matches!(SegmentHeader::decode(&d), Err(HeaderError::Damaged(_))),
                "{identity} {timeline} {parent}"
            );
        }
        let d = resealed(b, |b| b[57] = 1);
        assert!(matches!(
            SegmentHeader::decode(&d),
            Err(HeaderError::Damaged(_))
        ));
    }
}
