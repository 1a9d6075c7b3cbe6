//! Opening (recovering) a write-ahead log whose files the fuzzer wrote or damaged, on an
//! in-memory `SimFs`.
//!
//! Input: `[control: u8] [from: u8] ++ rest`.
//!
//! * `control & 3`: recovery mode (0, 1: `TolerateTornTail`; 2: `Strict`; 3: `CutAtFirstDamage`).
//! * `control & 4`: open with `from_lsn = Some(from % 16)` instead of `None`.
//! * `(control >> 3) & 3`: the source. 0: `rest` is a list of files (raw bytes, optionally
//!   with repaired segment header and frame CRCs); 1..=3: one of three valid logs built by
//!   committing records (one segment of every record type; two segments; compressed
//!   frames), then `rest` is a list of edits to its files.
//!
//! Properties:
//! * nothing panics, hangs or allocates absurdly (the smoke run caps single allocations);
//! * an open either fails with a damage error or gives a log whose `read_from` yields LSNs
//!   `first_lsn..=last_lsn` of its recovery report, consecutive, (`read_from(1)` included);
//! * a valid log opens unchanged; a log whose last segment was only truncated or zeroed
//!   from some offset on (a torn tail) opens in `TolerateTornTail` and `CutAtFirstDamage` modes
//!   and keeps every record whose frame lies wholly before the damage;
//! * after a successful open, a durable commit gets the next LSN, and a clean reopen gives
//!   back everything read plus that commit.

#![no_main]

mod alloc_limit;
mod bytes;
use bytes::Bytes;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use walmdb::internals::record::{decode_frame, frame_crc, FrameHeader, FRAME_HEADER_LEN};
use walmdb::{
    EncodedRecord, Error, FsRef, LogRecord, Lsn, NoSequencer, Op, Record, RecordType, RecoveryMode,
    SimFs, TxnRecord, Wal, WalConfig,
};

const DIR: &str = "/db/wal";
const SEG: u64 = 64 << 10;
const SEG_HEADER: usize = 64;

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn cfg(mode: RecoveryMode, compress: bool) -> WalConfig {
    WalConfig {
        segment_bytes: SEG,
        max_record_bytes: 16 << 10,
        queue_capacity: 256,
        prepare_segments: false,
        compress_threshold: compress.then_some(64),
        recovery_mode: mode,
        ..WalConfig::default()
    }
}

fn open(fs: &SimFs, cfg: WalConfig, from_lsn: Option<Lsn>) -> walmdb::Result<Wal> {
    let fsref: FsRef = Arc::new(fs.clone());
    Wal::open_with(fsref, dir(), cfg, from_lsn, NoSequencer)
}

/// File name and contents of every file of the log directory.
type Image = Vec<(String, Vec<u8>)>;

fn snapshot(fs: &SimFs) -> Image {
    fs.file_names(dir())
        .into_iter()
        .map(|name| {
            let data = fs.read_file(&dir().join(&name)).expect("a listed file");
            (name, data)
        })
        .collect()
}

fn restore(image: &Image) -> SimFs {
    let fs = SimFs::new();
    for (name, data) in image {
        fs.write_file(&dir().join(name), data);
    }
    fs
}

/// A valid log and the records committed to it (LSN 1 on).
struct Base {
    image: Image,
    records: Vec<EncodedRecord>,
}

fn txn(i: u64, value: Vec<u8>) -> EncodedRecord {
    Record::Txn(TxnRecord {
        commit_micros: 1_700_000_000_000_000 + i,
        ops: vec![Op::Put {
            table: "t".into(),
            key: format!("key-{i:06}").into_bytes(),
            value,
        }],
    })
    .encode()
}

/// Deterministic incompressible bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn build(records: Vec<EncodedRecord>, compress: bool) -> Base {
    let fs = SimFs::new();
    let wal = open(&fs, cfg(RecoveryMode::TolerateTornTail, compress), None).expect("new log");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(wal.commit(r.clone()).expect("commit"), i as Lsn + 1);
    }
    wal.close().expect("close");
    Base {
        image: snapshot(&fs),
        records,
    }
}

fn bases() -> &'static [Base; 3] {
    static BASES: OnceLock<[Base; 3]> = OnceLock::new();
    BASES.get_or_init(|| {
        let every_type = vec![
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
                    Op::Delete {
                        table: "users".into(),
                        key: b"bob".to_vec(),
                    },
                    Op::DropTable {
                        table: "old".into(),
                    },
                ],
            })
            .encode(),
            Record::Checkpoint { applied_lsn: 1 }.encode(),
            Record::Timestamp {
                unix_micros: 1_700_000_001_000_000,
                name: "restore-point".into(),
            }
            .encode(),
            EncodedRecord::raw(RecordType::Vote, b"term=7".to_vec()),
            EncodedRecord::raw(RecordType::TruncateSuffix, 42u64.to_le_bytes().to_vec()),
            EncodedRecord::raw(RecordType::PurgePrefix, Vec::new()),
            EncodedRecord::raw(RecordType::Entry, b"term=7 index=3".to_vec()),
            txn(7, noise(7, 100)),
        ];
        // About 84 KiB of records: a rotation into a second 64 KiB segment.
        let two_segments = (1..=14).map(|i| txn(i, noise(i, 6000))).collect();
        // Compressible records in compressed frames.
        let compressed = (1..=6).map(|i| txn(i, vec![b'a' + i as u8; 700])).collect();
        [
            build(every_type, false),
            build(two_segments, false),
            build(compressed, true),
        ]
    })
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn fix_segment_header_crc(b: &mut [u8]) {
    if b.len() >= SEG_HEADER {
        let crc = crc32(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
    }
}

/// CRC-32 (IEEE), as the segment header uses; `frame_crc` is public but skips bytes 4..8.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Frames that follow each other from the segment header while their salt matches and
/// their length fits, valid CRC or not: `(offset, total length)`.
fn frame_offsets(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if b.len() < SEG_HEADER {
        return out;
    }
    let salt = u32_at(b, 12);
    let mut off = SEG_HEADER;
    while off + FRAME_HEADER_LEN <= b.len() && u32_at(b, off + 8) == salt && out.len() < 1024 {
        let total = FRAME_HEADER_LEN + u32_at(b, off) as usize;
        if off + total > b.len() {
            break;
        }
        out.push((off, total));
        off += total;
    }
    out
}

/// LSNs of the `TxnPart` records of the image's segments (a body rewritten with its CRC
/// repaired can become one): a split transaction's parts are never handed out under their own
/// LSN, but joined into its end's, or skipped when no end follows.
fn part_lsns(image: &Image) -> HashSet<Lsn> {
    let mut parts = HashSet::new();
    for (_, data) in image
        .iter()
        .filter(|(n, _)| n.starts_with("wal-") && n.ends_with(".log"))
    {
        for (off, total) in frame_offsets(data) {
            let header = FrameHeader::parse(
                data[off..off + FRAME_HEADER_LEN]
                    .try_into()
                    .expect("a whole frame header"),
            );
            // As recovery reads a frame: a plausible header first (its lengths bound what
            // decoding allocates).
            if !header.is_plausible(u32_at(data, 12), data.len() - off) {
                continue;
            }
            let Ok(records) = decode_frame(&header, &data[off..off + total]) else {
                continue;
            };
            parts.extend(
                records
                    .iter()
                    .filter(|r| r.record.kind() == RecordType::TxnPart)
                    .map(|r| r.lsn),
            );
        }
    }
    parts
}

fn fix_frame_crcs(b: &mut [u8]) {
    for (off, total) in frame_offsets(b) {
        let crc = frame_crc(&b[off..off + total]);
        b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

fn file_name(sel: u8) -> String {
    match sel % 8 {
        0..=4 => format!("wal-{:08}.log", sel % 8),
        5 => "spare-00000001.log".into(),
        6 => "wal-00000002.log.tmp".into(),
        _ => format!("wal-{:08}.log", u64::from(sel) << 20),
    }
}

/// Source 0: files from raw bytes. Each: `[name: u8] [fix: u8] [len: u16] ++ bytes`.
fn raw_files(b: &mut Bytes) -> Image {
    let mut image: Image = Vec::new();
    while !b.is_empty() && image.len() < 4 {
        let name = file_name(b.u8());
        let fix = b.u8();
        let len = usize::from(b.u16()) % (2 * SEG as usize);
        let mut data = b.take(len).to_vec();
        if data.len() >= SEG_HEADER {
            if fix & 1 != 0 {
                data[0..8].copy_from_slice(b"WALMDBLG");
                data[8..12].copy_from_slice(&1u32.to_le_bytes());
                data[40..60].fill(0);
            }
            if fix & 2 != 0 {
                if let Some(n) = name
                    .strip_prefix("wal-")
                    .and_then(|s| s.strip_suffix(".log"))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    data[16..24].copy_from_slice(&n.to_le_bytes());
                }
            }
            if fix & 4 != 0 {
                // Small LSNs, where the writer's logs live.
                let first = u64_at(&data, 24) % 64;
                data[24..32].copy_from_slice(&first.to_le_bytes());
            }
            if fix & 8 != 0 {
                fix_frame_crcs(&mut data);
            }
            if fix & 16 != 0 {
                fix_segment_header_crc(&mut data);
            }
        }
        match image.iter_mut().find(|(n, _)| *n == name) {
            Some((_, d)) => *d = data,
            None => image.push((name, data)),
        }
    }
    image
}

/// What the edits did, for the properties that hold only for some kinds of damage.
#[derive(Default)]
struct Damage {
    /// Any edit at all.
    any: bool,
    /// Only "tail" edits: truncating or zeroing the last segment from an offset on.
    only_tail: bool,
    /// The lowest offset in the last segment a tail edit touched.
    tail_from: Option<usize>,
}

/// Sources 1..=3: edits of a valid log. Each: `[op: u8] [file: u8] ++ arguments`.
fn edit(image: &mut Image, b: &mut Bytes) -> Damage {
    let mut damage = Damage {
        only_tail: true,
        ..Damage::default()
    };
    let last_seg = image
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| n.starts_with("wal-") && n.ends_with(".log"))
        .map(|(i, _)| i)
        .next_back();
    let mut edits = 0;
    while !b.is_empty() && edits < 8 && !image.is_empty() {
        edits += 1;
        damage.any = true;
        let op = b.u8();
        let idx = usize::from(b.u8()) % image.len();
        let tail_ok = Some(idx) == last_seg;
        let data = &mut image[idx].1;
        let len = data.len();
        let at = |v: u16| if len == 0 { 0 } else { usize::from(v) % len };
        match op % 12 {
            // Flip bits of one byte.
            0 => {
                let o = at(b.u16());
                let x = b.u8().max(1);
                if len > 0 {
                    data[o] ^= x;
                }
                damage.only_tail = false;
            }
            // Overwrite bytes.
            1 => {
                let o = at(b.u16());
                let n = usize::from(b.u8() % 16);
                let bytes = b.take(n).to_vec();
                let end = (o + bytes.len()).min(len);
                data[o..end].copy_from_slice(&bytes[..end - o]);
                damage.only_tail = false;
            }
            // Truncate (a torn tail when it is the last segment).
            2 => {
                let o = at(b.u16());
                data.truncate(o);
                note_tail(&mut damage, tail_ok, o);
            }
            // Zero from an offset to the end (a torn tail when it is the last segment).
            3 => {
                let o = at(b.u16());
                data[o..].fill(0);
                note_tail(&mut damage, tail_ok, o);
            }
            // Zero a range.
            4 => {
                let o = at(b.u16());
                let end = (o + usize::from(b.u16())).min(len);
                data[o..end].fill(0);
                damage.only_tail = false;
            }
            // Remove the file.
            5 => {
                image.remove(idx);
                damage.only_tail = false;
            }
            // Rename (or copy) the file.
            6 => {
                let name = file_name(b.u8());
                let copy = b.u8() & 1 != 0;
                let entry = (name.clone(), image[idx].1.clone());
                if !copy {
                    image.remove(idx);
                }
                image.retain(|(n, _)| *n != name);
                image.push(entry);
                damage.only_tail = false;
            }
            // Rewrite a segment header field, with a valid header CRC.
            7 => {
                let field = b.u8();
                let v = b.u64();
                if len >= SEG_HEADER {
                    let (o, v) = match field % 5 {
                        0 => (8, v & 0xFFFF_FFFF), // version (u32 + salt low bytes kept)
                        1 => (16, v % 16),         // segment_no
                        2 => (24, v % 64),         // first_lsn
                        3 => (24, v),              // first_lsn, anything
                        _ => (32, v),              // segment_bytes
                    };
                    if o == 8 {
                        data[8..12].copy_from_slice(&(v as u32).to_le_bytes());
                    } else {
                        data[o..o + 8].copy_from_slice(&v.to_le_bytes());
                    }
                    fix_segment_header_crc(data);
                }
                damage.only_tail = false;
            }
            // Rewrite a frame header field, with a valid frame CRC.
            8 => {
                let frames = frame_offsets(data);
                let k = usize::from(b.u8());
                let field = b.u8();
                let v = b.u64();
                if !frames.is_empty() {
                    let (off, _) = frames[k % frames.len()];
                    let (o, w) = match field % 6 {
                        0 => (0, 4),  // len
                        1 => (12, 1), // flags
                        2 => (14, 2), // count
                        3 => (16, 8), // first_lsn
                        4 => (24, 8), // synced_lsn
                        _ => (32, 4), // raw_len
                    };
                    data[off + o..off + o + w].copy_from_slice(&v.to_le_bytes()[..w]);
                    let total = FRAME_HEADER_LEN + u32_at(data, off) as usize;
                    if off + total <= len {
                        let crc = frame_crc(&data[off..off + total]);
                        data[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
                    }
                }
                damage.only_tail = false;
            }
            // Overwrite inside a frame body, then repair every CRC.
            9 => {
                let o = at(b.u16());
                let x = b.u8().max(1);
                if len > 0 {
                    data[o] ^= x;
                }
                fix_frame_crcs(data);
                fix_segment_header_crc(data);
                damage.only_tail = false;
            }
            // Copy a range from another file (a frame from elsewhere, an old life).
            10 => {
                let src = usize::from(b.u8()) % image.len();
                let from = usize::from(b.u16());
                let to = usize::from(b.u16());
                let n = usize::from(b.u16() % 4096);
                let piece: Vec<u8> = {
                    let s = &image[src].1;
                    let from = from.min(s.len());
                    s[from..(from + n).min(s.len())].to_vec()
                };
                let d = &mut image[idx].1;
                let to = to.min(d.len());
                let end = (to + piece.len()).min(d.len());
                d[to..end].copy_from_slice(&piece[..end - to]);
                damage.only_tail = false;
            }
            // Append bytes.
            _ => {
                let n = usize::from(b.u8());
                data.extend_from_slice(b.take(n));
                damage.only_tail = false;
            }
        }
    }
    damage
}

fn note_tail(damage: &mut Damage, tail_ok: bool, offset: usize) {
    if tail_ok && offset >= SEG_HEADER {
        damage.tail_from = Some(damage.tail_from.map_or(offset, |t| t.min(offset)));
    } else {
        damage.only_tail = false;
    }
}

/// Records whose frames end at or before `offset` in the last segment of `image`, plus
/// every record of the earlier segments: what a torn tail at `offset` must leave.
fn records_before(image: &Image, offset: usize) -> Option<Lsn> {
    let (_, data) = image
        .iter()
        .rfind(|(n, _)| n.starts_with("wal-") && n.ends_with(".log"))?;
    let first_lsn = u64_at(data, 24);
    let mut last = first_lsn.saturating_sub(1);
    for (off, total) in frame_offsets(data) {
        if off + total > offset {
            break;
        }
        last = u64_at(data, off + 16)
            + u64::from(u16::from_le_bytes([data[off + 14], data[off + 15]]))
            - 1;
    }
    Some(last)
}

/// `WALMDB_FUZZ_DEBUG=1`: say what each input did (for reproducing one input).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("WALMDB_FUZZ_DEBUG").is_some_and(|v| v == "1"))
}

fn is_damage_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Corruption { .. }
            | Error::SegmentSequence { .. }
            | Error::TornTail { .. }
            | Error::UnsupportedVersion { .. }
            | Error::ForeignSegment { .. }
    )
}

fuzz_target!(|input: &[u8]| {
    let mut b = Bytes(input);
    let control = b.u8();
    let from = b.u8();
    let mode = match control & 3 {
        2 => RecoveryMode::Strict,
        3 => RecoveryMode::CutAtFirstDamage,
        _ => RecoveryMode::TolerateTornTail,
    };
    let from_lsn = (control & 4 != 0).then_some(u64::from(from % 16));
    let source = (control >> 3) & 3;
    let (image, base, damage) = if source == 0 {
        (raw_files(&mut b), None, None)
    } else {
        let base = &bases()[usize::from(source - 1)];
        let mut image = base.image.clone();
        let damage = edit(&mut image, &mut b);
        (image, Some(base), Some(damage))
    };
    if let Some(dump) = std::env::var_os("WALMDB_FUZZ_DUMP") {
        // The files this input opens, for a unit test to load onto a `SimFs`.
        let dump = Path::new(&dump);
        std::fs::create_dir_all(dump).expect("create the dump directory");
        for (name, data) in &image {
            std::fs::write(dump.join(name), data).expect("write a dumped file");
        }
    }
    let fs = restore(&image);
    let opened = open(&fs, cfg(mode, false), from_lsn);

    // The records the damage must leave, when the damage is a torn tail or nothing.
    let must_keep: Option<Lsn> = match (&base, &damage) {
        (Some(base), Some(d))
            if !d.any && from_lsn.is_none_or(|f| f <= base.records.len() as Lsn) =>
        {
            Some(base.records.len() as Lsn)
        }
        (Some(_), Some(d)) if d.only_tail && from_lsn.is_none() => {
            d.tail_from.and_then(|o| records_before(&image, o))
        }
        _ => None,
    };

    let wal = match opened {
        Ok(wal) => wal,
        Err(e) => {
            if debug() {
                eprintln!("open in {mode:?} from {from_lsn:?} failed: {e:?}");
            }
            assert!(
                is_damage_error(&e),
                "open failed with a non-damage error: {e:?}"
            );
            if let Some(keep) = must_keep {
                // Only Strict may refuse a torn tail, and only as a torn tail.
                let strict_torn = mode == RecoveryMode::Strict
                    && damage.as_ref().is_some_and(|d| d.any)
                    && matches!(e, Error::TornTail { .. });
                assert!(
                    strict_torn,
                    "a log that must keep LSN 1..={keep} (damage: torn tail or none) failed to open in {mode:?}: {e:?}"
                );
            }
            return;
        }
    };
    let report = wal.recovery_report().clone();
    if debug() {
        eprintln!("opened in {mode:?} from {from_lsn:?}: must keep {must_keep:?}; {report:?}");
    }
    assert!(report.first_lsn >= 1, "report: {report:?}");
    assert!(
        report.last_lsn + 1 >= report.first_lsn,
        "report: {report:?}"
    );
    assert_eq!(wal.written_lsn(), report.last_lsn);

    // read_from(1): everything, or at once `Retired` when the log starts later.
    let from_one: Vec<walmdb::Result<LogRecord>> = wal.read_from(1).collect();
    if report.first_lsn > 1 && report.last_lsn >= report.first_lsn {
        assert!(
            matches!(from_one.first(), Some(Err(Error::Retired { .. }))),
            "read_from(1) of a log starting at LSN {}: {:?}",
            report.first_lsn,
            from_one.first().map(|r| r.as_ref().map(|r| r.lsn))
        );
    }
    let read: walmdb::Result<Vec<LogRecord>> = wal.read_from(report.first_lsn).collect();
    let records = match read {
        Ok(records) => records,
        Err(e) => {
            // A frame with a valid CRC whose body does not decode: reported, not returned.
            assert!(
                matches!(e, Error::Corruption { .. }),
                "read failed with {e:?}"
            );
            assert!(
                damage.as_ref().is_none_or(|d| d.any && !d.only_tail),
                "a valid or torn log read back an error: {e:?}"
            );
            return;
        }
    };
    let lsns: Vec<Lsn> = records.iter().map(|r| r.lsn).collect();
    let parts = part_lsns(&image);
    let want: Vec<Lsn> = (report.first_lsn..=report.last_lsn)
        .filter(|lsn| !parts.contains(lsn))
        .collect();
    assert_eq!(
        lsns, want,
        "LSNs read are not first_lsn..=last_lsn; report {report:?}"
    );
    if report.first_lsn == 1 {
        let again: Vec<Lsn> = from_one
            .iter()
            .map(|r| r.as_ref().expect("read_from(1)").lsn)
            .collect();
        assert_eq!(
            again, want,
            "read_from(1) differs from read_from(first_lsn)"
        );
    }
    if let (Some(base), Some(keep)) = (base, must_keep) {
        assert!(
            report.last_lsn >= keep,
            "lost records: kept through LSN {}, must keep through {keep}",
            report.last_lsn
        );
        for r in &records {
            let want = &base.records[(r.lsn - 1) as usize];
            assert!(r.record == *want, "LSN {} changed", r.lsn);
        }
    }

    // The log takes the next LSN, and a clean reopen keeps everything.
    let extra = EncodedRecord::raw(RecordType::Vote, b"after recovery".to_vec());
    let lsn = wal.commit(extra.clone()).expect("commit after recovery");
    assert_eq!(lsn, report.last_lsn + 1, "the first commit after recovery");
    wal.close().expect("close after recovery");
    // With a `from_lsn`, ask for what the first open kept: the commit may have rotated into a
    // new segment (the header's `segment_bytes` rules), which the old `from_lsn` would retire.
    let from_again = from_lsn.map(|_| report.first_lsn - 1);
    let wal = open(&fs, cfg(RecoveryMode::TolerateTornTail, false), from_again)
        .unwrap_or_else(|e| panic!("reopen after a successful recovery failed: {e:?}"));
    let report2 = wal.recovery_report().clone();
    assert_eq!(report2.first_lsn, report.first_lsn, "{report2:?}");
    assert_eq!(report2.last_lsn, lsn, "{report2:?}");
    let again: Vec<LogRecord> = wal
        .read_from(report.first_lsn)
        .collect::<walmdb::Result<_>>()
        .unwrap_or_else(|e| panic!("read after reopen: {e:?}"));
    assert_eq!(again.len(), records.len() + 1);
    assert!(
        again[..records.len()] == records[..],
        "records changed across a reopen"
    );
    assert!(again[records.len()].record == extra);
    drop(wal);
});
