//! Shared helpers of the recovery and corruption tests: a small simulated log, record
//! generators, file-image snapshots, and an independent reader of the on-disk format
//! (segment header, frame headers) so tests can aim damage at exact bytes.
//!
//! The format is re-implemented here from its documentation (`src/wal/record.rs`,
//! `src/wal/segment.rs`) on purpose: the tests then also check that the code writes what the
//! format says.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use walmdb::internals::record::frame_crc;
use walmdb::{
    EncodedRecord, Error, FsRef, LogRecord, Lsn, NoSequencer, Op, Record, RecordType, RecoveryMode,
    SimFs, TxnRecord, Wal, WalConfig,
};

/// The log directory used on the simulated file system.
pub const DIR: &str = "/db/wal";
/// The smallest segment size the configuration accepts.
pub const SEG: u64 = 64 * 1024;
/// Bytes of a segment header.
pub const SEG_HEADER: usize = 64;
/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 40;
/// Bytes of a record header inside a frame body.
pub const RECORD_HEADER: usize = 5;
/// Frame flag: zstd-compressed body.
pub const FLAG_ZSTD: u8 = 1;

pub fn dir() -> &'static Path {
    Path::new(DIR)
}

pub fn seg_name(n: u64) -> String {
    format!("wal-{n:08}.log")
}

pub fn seg_path(n: u64) -> PathBuf {
    dir().join(seg_name(n))
}

/// 64 KiB segments, no compression, default (torn-tail tolerant) recovery.
pub fn cfg() -> WalConfig {
    WalConfig {
        segment_bytes: SEG,
        max_record_bytes: 16 * 1024,
        compress_threshold: None,
        // The queue is preallocated: a small one keeps each open cheap in debug builds.
        queue_capacity: 256,
        // Exact, replayable I/O order: no background spare preparation.
        prepare_segments: false,
        ..WalConfig::default()
    }
}

pub fn cfg_mode(mode: RecoveryMode) -> WalConfig {
    WalConfig {
        recovery_mode: mode,
        ..cfg()
    }
}

pub const MODES: [RecoveryMode; 3] = [
    RecoveryMode::TolerateTornTail,
    RecoveryMode::Strict,
    RecoveryMode::CutAtFirstDamage,
];

pub fn fsref(fs: &SimFs) -> FsRef {
    Arc::new(fs.clone())
}

/// Opens the log in [`DIR`] on `fs`, from its oldest segment.
pub fn open(fs: &SimFs, cfg: WalConfig) -> walmdb::Result<Wal> {
    Wal::open_with(fsref(fs), dir(), cfg, None, NoSequencer)
}

/// Opens the log in [`DIR`] on `fs` with an explicit `from_lsn`.
pub fn open_from(fs: &SimFs, cfg: WalConfig, from_lsn: Option<Lsn>) -> walmdb::Result<Wal> {
    Wal::open_with(fsref(fs), dir(), cfg, from_lsn, NoSequencer)
}

pub fn try_read_all(wal: &Wal) -> walmdb::Result<Vec<LogRecord>> {
    wal.read_from(1).collect()
}

pub fn read_all(wal: &Wal) -> Vec<LogRecord> {
    try_read_all(wal).expect("read_from(1) failed")
}

/// splitmix64: deterministic bytes without a `rand` dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Deterministic, incompressible bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    Rng(seed ^ 0xA5A5_5A5A_1234_5678).bytes(len)
}

/// Bytes of encoded transaction payload `rec(i, v)` adds on top of its value length
/// (commit_micros 8, op count 4, tag 1, table len 2 + "t", key len 4 + 10, value len 4).
pub const REC_OVERHEAD: usize = 8 + 4 + 1 + 2 + 1 + 4 + 10 + 4;

/// Test record `i`: one `Put` into table "t" of key `key-NNNNNN` and a `value_len`-byte
/// value that depends on `i`.
pub fn rec(i: u64, value_len: usize) -> EncodedRecord {
    Record::Txn(TxnRecord {
        commit_micros: 1_700_000_000_000_000 + i,
        ops: vec![Op::Put {
            table: "t".into(),
            key: format!("key-{i:06}").into_bytes(),
            value: noise(i, value_len),
        }],
    })
    .encode()
}

/// Bytes of the frame that holds `rec(_, value_len)` alone (uncompressed).
pub fn frame_len_of(value_len: usize) -> usize {
    FRAME_HEADER + RECORD_HEADER + REC_OVERHEAD + value_len
}

/// One record of every type the log knows.
pub fn every_record_type() -> Vec<EncodedRecord> {
    vec![
        Record::Txn(TxnRecord {
            commit_micros: 1_700_000_000_123_456,
            ops: vec![
                Op::CreateTable {
                    table: "users".into(),
                },
                Op::Put {
                    table: "users".into(),
                    key: b"alice".to_vec(),
                    value: b"{\"age\":31}".to_vec(),
                },
                Op::Put {
                    table: "users".into(),
                    key: vec![0, 255, 1, 254],
                    value: Vec::new(),
                },
                Op::Delete {
                    table: "users".into(),
                    key: b"alice".to_vec(),
                },
                Op::DropTable {
                    table: "users".into(),
                },
            ],
        })
        .encode(),
        Record::Txn(TxnRecord {
            commit_micros: 0,
            ops: Vec::new(),
        })
        .encode(),
        Record::Checkpoint { applied_lsn: 1 }.encode(),
        Record::Timestamp {
            unix_micros: 1_700_000_001_000_000,
            name: "before-migration".into(),
        }
        .encode(),
        Record::Timestamp {
            unix_micros: u64::MAX,
            name: String::new(),
        }
        .encode(),
        Record::Consensus {
            kind: RecordType::Vote,
            payload: b"term=7;candidate=3".to_vec(),
        }
        .encode(),
        Record::Consensus {
            kind: RecordType::TruncateSuffix,
            payload: 42u64.to_le_bytes().to_vec(),
        }
        .encode(),
        Record::Consensus {
            kind: RecordType::PurgePrefix,
            payload: Vec::new(),
        }
        .encode(),
        EncodedRecord::raw(RecordType::Vote, vec![0xFF; 300]),
    ]
}

/// Asserts that `got` is exactly `want`, numbered from `first_lsn`.
#[track_caller]
pub fn assert_records(got: &[LogRecord], want: &[EncodedRecord], first_lsn: Lsn, ctx: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{ctx}: read {} records, expected {} (LSNs {}..={}); got LSNs {:?}..{:?}",
        got.len(),
        want.len(),
        first_lsn,
        first_lsn + want.len() as u64 - 1,
        got.first().map(|r| r.lsn),
        got.last().map(|r| r.lsn),
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let lsn = first_lsn + i as u64;
        assert_eq!(g.lsn, lsn, "{ctx}: record {i} has the wrong LSN");
        assert!(
            g.record == *w,
            "{ctx}: record at LSN {lsn} differs from what was committed"
        );
    }
}

/// Commits `records` one at a time at the log's durability (one frame each with the default
/// `GroupCommit`) and returns their LSNs.
pub fn commit_all(wal: &Wal, records: &[EncodedRecord]) -> Vec<Lsn> {
    records
        .iter()
        .map(|r| wal.commit(r.clone()).expect("commit failed"))
        .collect()
}

/// Creates a log on a new `SimFs`, commits `records` one at a time, closes it.
pub fn build_log(cfg: WalConfig, records: &[EncodedRecord]) -> SimFs {
    let fs = SimFs::new();
    let wal = open(&fs, cfg).expect("open a new log");
    let lsns = commit_all(&wal, records);
    assert_eq!(lsns, (1..=records.len() as u64).collect::<Vec<_>>());
    wal.close().expect("close");
    fs
}

/// The files of [`DIR`] and their current contents.
pub type Image = Vec<(String, Vec<u8>)>;

pub fn snapshot(fs: &SimFs) -> Image {
    fs.file_names(dir())
        .into_iter()
        .map(|name| {
            let data = fs.read_file(&dir().join(&name)).expect("listed file");
            (name, data)
        })
        .collect()
}

/// A new `SimFs` holding exactly `image` (durably) in [`DIR`].
pub fn restore(image: &Image) -> SimFs {
    let fs = SimFs::new();
    for (name, data) in image {
        fs.write_file(&dir().join(name), data);
    }
    fs
}

/// The data of file `name` in `image`.
pub fn file<'a>(image: &'a Image, name: &str) -> &'a Vec<u8> {
    &image
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no file {name} in the image"))
        .1
}

pub fn file_mut<'a>(image: &'a mut Image, name: &str) -> &'a mut Vec<u8> {
    &mut image
        .iter_mut()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no file {name} in the image"))
        .1
}

/// A parsed segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegHeader {
    pub version: u32,
    pub salt: u32,
    pub segment_no: u64,
    pub first_lsn: Lsn,
    pub segment_bytes: u64,
    /// The database and timeline (version 2; 0, 1, 0 for version 1).
    pub identity: u64,
    pub timeline: u32,
    pub parent_timeline: u32,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Parses and checks (magic, CRC, reserved bytes: 40..60 in version 1, 56..60 in version 2)
/// a segment header.
pub fn parse_seg_header(b: &[u8]) -> Option<SegHeader> {
    if b.len() < SEG_HEADER || &b[0..8] != b"WALMDBLG" {
        return None;
    }
    let version = u32_at(b, 8);
    let reserved = if version == 1 { 40 } else { 56 };
    if crc32fast::hash(&b[0..60]) != u32_at(b, 60) || b[reserved..60].iter().any(|&x| x != 0) {
        return None;
    }
    let v2 = version >= 2;
    Some(SegHeader {
        version,
        salt: u32_at(b, 12),
        segment_no: u64_at(b, 16),
        first_lsn: u64_at(b, 24),
        segment_bytes: u64_at(b, 32),
        identity: if v2 { u64_at(b, 40) } else { 0 },
        timeline: if v2 { u32_at(b, 48) } else { 1 },
        parent_timeline: if v2 { u32_at(b, 52) } else { 0 },
    })
}

/// Rewrites a segment header's number and first LSN, with a valid CRC.
pub fn rewrite_seg_header(b: &mut [u8], segment_no: u64, first_lsn: Lsn) {
    b[16..24].copy_from_slice(&segment_no.to_le_bytes());
    b[24..32].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// A frame found in a segment image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset of its header in the segment file.
    pub offset: usize,
    /// Header plus stored body.
    pub total_len: usize,
    pub flags: u8,
    pub count: u16,
    pub first_lsn: Lsn,
    pub synced_lsn: Lsn,
    pub raw_len: u32,
}

impl Frame {
    pub fn end(&self) -> usize {
        self.offset + self.total_len
    }
    pub fn last_lsn(&self) -> Lsn {
        self.first_lsn + u64::from(self.count) - 1
    }
}

/// The run of valid frames of a segment image (this life's salt, valid CRC, LSNs in
/// sequence from the header's first LSN).
pub fn frames(data: &[u8]) -> Vec<Frame> {
    let h = parse_seg_header(data).expect("segment header");
    let mut out = Vec::new();
    let mut off = SEG_HEADER;
    let mut next = h.first_lsn;
    while off + FRAME_HEADER <= data.len() {
        let len = u32_at(data, off) as usize;
        if u32_at(data, off + 8) != h.salt || off + FRAME_HEADER + len > data.len() {
            break;
        }
        let frame = &data[off..off + FRAME_HEADER + len];
        if frame_crc(frame) != u32_at(data, off + 4) {
            break;
        }
        let f = Frame {
            offset: off,
            total_len: FRAME_HEADER + len,
            flags: data[off + 12],
            count: u16::from_le_bytes([data[off + 14], data[off + 15]]),
            first_lsn: u64_at(data, off + 16),
            synced_lsn: u64_at(data, off + 24),
            raw_len: u32_at(data, off + 32),
        };
        if f.first_lsn != next || f.count == 0 {
            break;
        }
        next = f.last_lsn() + 1;
        off = f.end();
        out.push(f);
    }
    out
}

/// Recomputes the CRC of the frame at `off` (after a deliberate edit of its header).
pub fn fix_frame_crc(data: &mut [u8], off: usize) {
    let len = u32_at(data, off) as usize;
    let crc = frame_crc(&data[off..off + FRAME_HEADER + len]);
    data[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
}

pub fn flip_bit(data: &mut [u8], bit: usize) {
    data[bit / 8] ^= 1 << (bit % 8);
}

/// `(segment, offset)` of an `Error::Corruption`, or a panic naming what came instead.
#[track_caller]
pub fn expect_corruption<T>(r: walmdb::Result<T>, ctx: &str) -> (u64, u64) {
    match r {
        Err(Error::Corruption {
            segment, offset, ..
        }) => (segment, offset),
        Err(e) => panic!("{ctx}: expected Error::Corruption, got {e:?}"),
        Ok(_) => panic!("{ctx}: expected Error::Corruption, but the log opened"),
    }
}

/// True for the errors that say the set of segments or their content is damaged.
pub fn is_damage_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Corruption { .. }
            | Error::SegmentSequence { .. }
            | Error::TornTail { .. }
            | Error::ForeignSegment { .. }
    )
}

/// The checked-in format version 1 fixture (`tests/recovery.rs` writes it, `tests/fixtures.rs`
/// damages copies of it).
pub const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");

/// The fixture's configuration: 64 KiB segments, default compression (zstd from 4 KiB).
pub fn fixture_cfg() -> WalConfig {
    WalConfig {
        compress_threshold: WalConfig::default().compress_threshold,
        ..cfg()
    }
}

/// What `tests/fixtures/v1` holds, LSN 1 on: every record type, a compressible 8 KiB record
/// (a zstd frame), 60 records of 1000 random bytes (rotation into segment 2), and a burst of
/// 40 small records submitted together (frames of several records), which starts at the
/// index returned.
pub fn fixture_records() -> (Vec<EncodedRecord>, usize) {
    let mut v = every_record_type();
    v.push(
        Record::Txn(TxnRecord {
            commit_micros: 1_700_000_002_000_000,
            ops: vec![Op::Put {
                table: "docs".into(),
                key: b"readme".to_vec(),
                value: b"walmdb fixture text. ".repeat(400),
            }],
        })
        .encode(),
    );
    v.extend((0..60).map(|i| rec(100 + i, 1000)));
    let burst_from = v.len();
    v.extend((0..40).map(|i| rec(200 + i, 16)));
    (v, burst_from)
}

/// Shifts every LSN of a segment image (header, frames' first and synced LSNs) by `delta`,
/// keeping every CRC valid.
pub fn shift_lsns(seg: &mut [u8], delta: u64) {
    let h = parse_seg_header(seg).unwrap();
    let fr = frames(seg);
    rewrite_seg_header(seg, h.segment_no, h.first_lsn + delta);
    for f in fr {
        seg[f.offset + 16..f.offset + 24].copy_from_slice(&(f.first_lsn + delta).to_le_bytes());
        seg[f.offset + 24..f.offset + 32].copy_from_slice(&(f.synced_lsn + delta).to_le_bytes());
        fix_frame_crc(seg, f.offset);
    }
}
