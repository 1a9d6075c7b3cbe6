//! Pure encoding and decoding of frames and records. No I/O.
//!
//! A frame holds one or more records (a group of transactions) under one CRC. Each record
//! has one LSN: the i-th record of a frame has LSN `first_lsn + i`.

use std::fmt;

use super::pieces::Piece;
pub(crate) use super::txn_payload::{
    encode_txn, lazy_txn, op_len, put_op, IndexedEncoder, OpEncoder, OpRef, Payload, TxnOps,
};
use super::txn_payload::{encode_txn_into, put_table};

pub use crate::limits::MAX_FRAME_BODY;
pub use crate::lsn::Lsn;

/// The on-disk format version of segments and frames this build writes. It also reads
/// versions 1 to 3 (`docs/wal-format.md`, "Version changes").
pub const FORMAT_VERSION: u32 = 4;

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 40;

/// Bytes of a record header inside a frame body.
pub const RECORD_HEADER_LEN: usize = 5;

/// The longest table name a record can carry (a `u16` length); the engine allows far
/// shorter ones (`MAX_TABLE_NAME_LEN`).
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub const MAX_LOGGED_TABLE_NAME_LEN: usize = u16::MAX as usize;

/// A frame body of at least four times this is compressed only if this much of its middle
/// compresses to at most [`SAMPLE_RATIO`] of its size.
const SAMPLE_BYTES: usize = 64 << 10;
const SAMPLE_RATIO: f64 = 0.9;

/// Frame flag: the body is zstd-compressed; `raw_len` is its uncompressed length.
pub const FLAG_ZSTD: u8 = 1;

/// The type of a record, stored as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordType {
    /// A committed transaction: operations on named tables. Payload: [`TxnRecord`].
    Txn = 1,
    /// The engine's checkpoint marker: LMDB is durable through `applied_lsn`.
    Checkpoint = 2,
    /// A wall-clock time marker (optionally named), for point-in-time recovery.
    Timestamp = 3,
    /// Reserved for consensus use: a vote. Payload opaque to walmdb.
    Vote = 16,
    /// Reserved for consensus use: truncate the log after an LSN. Payload opaque.
    TruncateSuffix = 17,
    /// Reserved for consensus use: purge the log before an LSN. Payload opaque.
    PurgePrefix = 18,
    /// Reserved for consensus use: a replicated log entry (with its log id). Payload
    /// opaque. Format version 3 on.
    Entry = 19,
    /// A piece of a transaction too large for one record (over `max_record_bytes`), not
    /// its last: `{ index: u32 | the next bytes of the transaction's payload }`, indexes
    /// 0, 1, ... at consecutive LSNs. Format version 4 on.
    TxnPart = 20,
    /// The last piece of such a transaction, right after its parts: `{ parts: u32 | the
    /// payload's last bytes }`. The transaction's LSN is this record's; parts without their
    /// end were never committed. Format version 4 on.
    TxnEnd = 21,
}

impl TryFrom<u8> for RecordType {
    type Error = u8;
    fn try_from(value: u8) -> Result<Self, u8> {
        Ok(match value {
            1 => RecordType::Txn,
            2 => RecordType::Checkpoint,
            3 => RecordType::Timestamp,
            16 => RecordType::Vote,
            17 => RecordType::TruncateSuffix,
            18 => RecordType::PurgePrefix,
            19 => RecordType::Entry,
            20 => RecordType::TxnPart,
            21 => RecordType::TxnEnd,
            other => return Err(other),
        })
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value` in `table` (creating the table if needed).
    Put {
        /// Table name.
        table: String,
        /// Key bytes.
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// Remove `key` from `table`.
    Delete {
        /// Table name.
        table: String,
        /// Key bytes.
        key: Vec<u8>,
    },
    /// Create `table` if it does not exist.
    CreateTable {
        /// Table name.
        table: String,
    },
    /// Drop `table` and everything in it.
    DropTable {
        /// Table name.
        table: String,
    },
}

impl Op {
    /// The table it acts on.
    pub fn table(&self) -> &str {
        match self {
            Op::Put { table, .. }
            | Op::Delete { table, .. }
            | Op::CreateTable { table }
            | Op::DropTable { table } => table,
        }
    }
}

pub(super) const OP_PUT: u8 = 1;
pub(super) const OP_DELETE: u8 = 2;
pub(super) const OP_CREATE_TABLE: u8 = 3;
pub(super) const OP_DROP_TABLE: u8 = 4;

/// A transaction record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnRecord {
    /// Commit time, microseconds since the Unix epoch (for point-in-time recovery).
    pub commit_micros: u64,
    /// The operations, applied in order.
    pub ops: Vec<Op>,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// A transaction.
    Txn(TxnRecord),
    /// LMDB is durable through `applied_lsn`; older segments may be retired.
    Checkpoint {
        /// The highest LSN whose effects LMDB holds durably.
        applied_lsn: Lsn,
    },
    /// A time marker, optionally a named restore point.
    Timestamp {
        /// Microseconds since the Unix epoch.
        unix_micros: u64,
        /// A restore point name, empty for none.
        name: String,
    },
    /// A reserved consensus record; its payload is opaque to walmdb.
    Consensus {
        /// `Vote`, `TruncateSuffix` or `PurgePrefix`.
        kind: RecordType,
        /// The payload as written.
        payload: Vec<u8>,
    },
    /// A piece of a transaction written as several records ([`RecordType::TxnPart`] or
    /// [`RecordType::TxnEnd`]). Reading the log ([`LogIter`](crate::wal::LogIter)) joins
    /// the pieces into one [`Record::Txn`]; a piece is seen alone only when decoded alone.
    TxnPiece {
        /// `TxnPart` or `TxnEnd`.
        kind: RecordType,
        /// A part's index, or the number of parts before an end.
        number: u32,
        /// Its bytes of the transaction's payload.
        chunk: Vec<u8>,
    },
}

/// A record encoded for the log: its type byte and payload. Built by the committing thread
/// so the flusher only copies bytes, except a transaction that goes through to LMDB, which
/// the flusher encodes a piece at a time as it writes it (`Payload::Lazy`).
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    pub(crate) kind: RecordType,
    pub(crate) payload: Payload,
}

impl fmt::Debug for EncodedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedRecord")
            .field("kind", &self.kind)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl EncodedRecord {
    /// A record of a given type with an already encoded payload (for the consensus types).
    pub fn raw(kind: RecordType, payload: Vec<u8>) -> Self {
        EncodedRecord {
            kind,
            payload: payload.into(),
        }
    }

    /// The record type.
    pub fn kind(&self) -> RecordType {
        self.kind
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        self.payload.bytes()
    }

    /// Bytes this record takes in a frame body.
    pub fn framed_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload.len()
    }

    /// Decodes the payload.
    pub fn decode(&self) -> Result<Record, DecodeError> {
        Record::decode(self.kind, self.payload.bytes())
    }
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::error::Error for DecodeError {}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bounds-checked little-endian reader over a byte slice.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError(format!(
                "needs {n} bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self, len: usize) -> Result<String, DecodeError> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| DecodeError("table name is not UTF-8".into()))
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

impl Record {
    /// Its time, microseconds since the Unix epoch: a transaction's `commit_micros`, a
    /// timestamp's `unix_micros`; `None` for the other types.
    pub fn time_micros(&self) -> Option<u64> {
        match self {
            Record::Txn(txn) => Some(txn.commit_micros),
            Record::Timestamp { unix_micros, .. } => Some(*unix_micros),
            _ => None,
        }
    }

    /// Encodes the record's payload.
    ///
    /// Panics if a table name exceeds [`MAX_LOGGED_TABLE_NAME_LEN`] bytes or a key or value 4 GiB; the
    /// engine checks both before encoding.
    pub fn encode(&self) -> EncodedRecord {
        let mut out = Vec::new();
        let kind = match self {
            // Format: txn = { commit_micros: u64 | op_count: u32 | op* }
            //         op  = { tag: u8 | table_len: u16 | table | [key_len: u32 | key]
            //                 | [value_len: u32 | value] }   (key for put/delete, value for put)
            Record::Txn(txn) => {
                let ops = txn.ops.iter().map(|op| match op {
                    Op::Put { table, key, value } => OpRef::Put { table, key, value },
                    Op::Delete { table, key } => OpRef::Delete { table, key },
                    Op::CreateTable { table } => OpRef::CreateTable { table },
                    Op::DropTable { table } => OpRef::DropTable { table },
                });
                encode_txn_into(&mut out, txn.commit_micros, txn.ops.len(), ops);
                RecordType::Txn
            }
            // Format: checkpoint = { applied_lsn: u64 }
            Record::Checkpoint { applied_lsn } => {
                out.extend_from_slice(&applied_lsn.to_le_bytes());
                RecordType::Checkpoint
            }
            // Format: timestamp = { unix_micros: u64 | name_len: u16 | name }
            Record::Timestamp { unix_micros, name } => {
                out.extend_from_slice(&unix_micros.to_le_bytes());
                put_table(&mut out, name);
                RecordType::Timestamp
            }
            Record::Consensus { kind, payload } => {
                out.extend_from_slice(payload);
                *kind
            }
            // Format: piece = { number: u32 | chunk }
            Record::TxnPiece {
                kind,
                number,
                chunk,
            } => {
                out.extend_from_slice(&number.to_le_bytes());
                out.extend_from_slice(chunk);
                *kind
            }
        };
        EncodedRecord {
            kind,
            payload: out.into(),
        }
    }

    /// Decodes a payload of the given type. Never panics and never allocates more than the
    /// payload's own length.
    pub fn decode(kind: RecordType, payload: &[u8]) -> Result<Record, DecodeError> {
        let mut cur = Cursor::new(payload);
        let record = match kind {
            RecordType::Txn => {
                let commit_micros = cur.u64()?;
                let count = cur.u32()? as usize;
                // Each op takes at least 3 bytes: cap the allocation by what is there.
                let mut ops = Vec::with_capacity(count.min(payload.len() / 3));
                for _ in 0..count {
                    let tag = cur.u8()?;
                    let table_len = cur.u16()? as usize;
                    let table = cur.string(table_len)?;
                    let op = match tag {
                        OP_PUT => {
                            let key_len = cur.u32()? as usize;
                            let key = cur.take(key_len)?.to_vec();
                            let value_len = cur.u32()? as usize;
                            let value = cur.take(value_len)?.to_vec();
                            Op::Put { table, key, value }
                        }
                        OP_DELETE => {
                            let key_len = cur.u32()? as usize;
                            let key = cur.take(key_len)?.to_vec();
                            Op::Delete { table, key }
                        }
                        OP_CREATE_TABLE => Op::CreateTable { table },
                        OP_DROP_TABLE => Op::DropTable { table },
                        other => return Err(DecodeError(format!("unknown operation tag {other}"))),
                    };
                    ops.push(op);
                }
                Record::Txn(TxnRecord { commit_micros, ops })
            }
            RecordType::Checkpoint => Record::Checkpoint {
                applied_lsn: cur.u64()?,
            },
            RecordType::Timestamp => {
                let unix_micros = cur.u64()?;
                let len = cur.u16()? as usize;
                let name = cur.string(len)?;
                Record::Timestamp { unix_micros, name }
            }
            RecordType::TxnPart | RecordType::TxnEnd => {
                let number = cur.u32()?;
                let chunk = cur.take(payload.len() - 4)?.to_vec();
                Record::TxnPiece {
                    kind,
                    number,
                    chunk,
                }
            }
            RecordType::Vote
            | RecordType::TruncateSuffix
            | RecordType::PurgePrefix
            | RecordType::Entry => {
                return Ok(Record::Consensus {
                    kind,
                    payload: payload.to_vec(),
                })
            }
        };
        if !cur.is_empty() {
            return Err(DecodeError("trailing bytes after the record".into()));
        }
        Ok(record)
    }
}

/// The fixed header of a frame.
///
/// ```text
/// Format: frame = { len: u32 | crc: u32 | salt: u32 | flags: u8 | reserved: u8 | count: u16
///                 | first_lsn: u64 | synced_lsn: u64 | raw_len: u32 | reserved: u32
///                 | body: [u8; len] }
///         crc   = crc32(frame[0..4] ++ frame[8..40 + len])
///         body (after zstd when flags & 1) = record{count},
///         record = { type: u8 | payload_len: u32 | payload }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Stored body length (compressed length when `FLAG_ZSTD`).
    pub len: u32,
    /// The frame's CRC.
    pub crc: u32,
    /// The segment's salt: frames left over from a recycled file's earlier life carry another.
    pub salt: u32,
    /// `FLAG_ZSTD` or 0.
    pub flags: u8,
    /// Records in the frame, at least 1.
    pub count: u16,
    /// LSN of the first record.
    pub first_lsn: Lsn,
    /// Every LSN up to this one was durable before this frame was written. Recovery uses it to
    /// tell a torn tail (valid frames after damage, all written after the last sync) from
    /// corruption (a valid frame proving the damaged one had been synced).
    pub synced_lsn: Lsn,
    /// Body length before compression.
    pub raw_len: u32,
}

impl FrameHeader {
    /// Parses a header; checks nothing but the reserved bytes.
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8"));
        FrameHeader {
            len: u32_at(0),
            crc: u32_at(4),
            salt: u32_at(8),
            flags: bytes[12],
            count: u16::from_le_bytes([bytes[14], bytes[15]]),
            first_lsn: u64_at(16),
            synced_lsn: u64_at(24),
            raw_len: u32_at(32),
        }
    }

    /// The last LSN in the frame.
    pub fn last_lsn(&self) -> Lsn {
        self.first_lsn + u64::from(self.count) - 1
    }

    /// Total bytes of the frame on disk.
    pub fn total_len(&self) -> usize {
        FRAME_HEADER_LEN + self.len as usize
    }

    /// Cheap plausibility checks done before reading the body or computing the CRC.
    pub fn is_plausible(&self, salt: u32, room: usize) -> bool {
        self.salt == salt
            && self.count > 0
            && (self.len as usize) <= room.saturating_sub(FRAME_HEADER_LEN)
            && (self.len as usize) <= MAX_FRAME_BODY
            && (self.raw_len as usize) <= MAX_FRAME_BODY
            && self.flags & !FLAG_ZSTD == 0
            && (self.flags & FLAG_ZSTD != 0 || self.raw_len == self.len)
            && self.first_lsn > self.synced_lsn
            // The LSN after the frame is representable (`last_lsn` cannot overflow).
            && self.first_lsn.checked_add(u64::from(self.count)).is_some()
    }
}

/// The CRC of a whole frame (header and stored body), skipping the CRC field itself.
pub fn frame_crc(frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[0..4]);
    hasher.update(&frame[8..]);
    hasher.finalize()
}

/// The CRC a frame would have if its salt field held `salt`: tells a frame whose salt bits
/// were damaged from space that never held a frame of this segment.
pub fn frame_crc_with_salt(frame: &[u8], salt: u32) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[0..4]);
    hasher.update(&salt.to_le_bytes());
    hasher.update(&frame[12..]);
    hasher.finalize()
}

/// Builds frames into a reusable buffer.
#[derive(Default)]
pub struct FrameBuilder {
    body: Vec<u8>,
    count: u16,
    compressed: Vec<u8>,
    /// A reused zstd context and its level: a fresh context per frame costs about as much
    /// as the compression itself.
    compressor: Option<(i32, zstd::bulk::Compressor<'static>)>,
}

impl fmt::Debug for FrameBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuilder")
            .field("count", &self.count)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl FrameBuilder {
    /// An empty builder.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records added since the last `finish`.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Uncompressed body bytes added since the last `finish`.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// True when the frame can take another record without reaching `u16::MAX` records.
    pub fn has_room(&self) -> bool {
        self.count < u16::MAX
    }

    /// Appends one record to the frame body.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn push(&mut self, record: &EncodedRecord) {
        self.push_piece(Piece {
            kind: record.kind,
            number: None,
            chunk: record.payload.bytes().into(),
        });
    }

    /// Drops the records pushed since the last `finish` (their group failed).
    pub(crate) fn discard(&mut self) {
        self.body.clear();
        self.count = 0;
    }

    /// Appends one record, whole or a piece of a split transaction, to the frame body.
    pub(crate) fn push_piece(&mut self, piece: Piece<'_>) {
        debug_assert!(self.has_room());
        self.body.push(piece.kind as u8);
        let len = piece.number.map_or(0, |_| 4) + piece.chunk.len();
        let len = u32::try_from(len).expect("records are below 4 GiB");
        self.body.extend_from_slice(&len.to_le_bytes());
        if let Some(number) = piece.number {
            self.body.extend_from_slice(&number.to_le_bytes());
        }
        self.body.extend_from_slice(&piece.chunk);
        self.count += 1;
    }

    /// Appends the finished frame to `out` and resets the builder. Compresses with zstd when
    /// `compress` is `Some((threshold, level))`, the body is at least `threshold` bytes and
    /// compression saves space.
    pub fn finish(
        &mut self,
        out: &mut Vec<u8>,
        salt: u32,
        first_lsn: Lsn,
        synced_lsn: Lsn,
        compress: Option<(usize, i32)>,
    ) {
        assert!(self.count > 0, "a frame holds at least one record");
        let raw_len = self.body.len();
        let mut flags = 0u8;
        let mut stored: &[u8] = &self.body;
        if let Some((threshold, level)) = compress {
            if raw_len >= threshold {
                if self.compressor.as_ref().is_none_or(|(l, _)| *l != level) {
                    self.compressor = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
                }
                let mut compress = |body: &[u8]| match &mut self.compressor {
                    Some((_, c)) => c.compress(body),
                    None => zstd::bulk::compress(body, level),
                };
                // A large body whose middle does not compress (random values, say) is
                // stored as it is: compressing all of it would cost the writer far more
                // than the sample for a few bytes saved.
                let middle = raw_len / 2 - raw_len.min(SAMPLE_BYTES * 4) / 8;
                let sample = &self.body[middle..][..SAMPLE_BYTES.min(raw_len - middle)];
                let worth_it = raw_len < SAMPLE_BYTES * 4
                    || compress(sample)
                        .is_ok_and(|c| c.len() as f64 <= sample.len() as f64 * SAMPLE_RATIO);
                let result = if worth_it {
                    compress(&self.body)
                } else {
                    Err(std::io::Error::other("incompressible sample"))
                };
                if let Ok(c) = result {
                    if c.len() < raw_len {
                        self.compressed = c;
                        stored = &self.compressed;
                        flags |= FLAG_ZSTD;
                    }
                }
            }
        }
        let start = out.len();
        out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&salt.to_le_bytes());
        out.push(flags);
        out.push(0);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&first_lsn.to_le_bytes());
        out.extend_from_slice(&synced_lsn.to_le_bytes());
        out.extend_from_slice(&(raw_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(stored);
        let crc = frame_crc(&out[start..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.body.clear();
        self.compressed.clear();
        self.count = 0;
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its type and payload.
    pub record: EncodedRecord,
}

/// Checks a whole frame (header and body, `frame.len() == header.total_len()`) and splits it
/// into its records. The frame must already have passed `is_plausible`.
pub fn decode_frame(header: &FrameHeader, frame: &[u8]) -> Result<Vec<LogRecord>, DecodeError> {
    if frame.len() != header.total_len() {
        return Err(DecodeError("frame length mismatch".into()));
    }
    if frame_crc(frame) != header.crc {
        return Err(DecodeError("frame CRC mismatch".into()));
    }
    if frame[13] != 0 || frame[36..40] != [0; 4] {
        return Err(DecodeError(
            "reserved frame header bytes are not zero".into(),
        ));
    }
    let stored = &frame[FRAME_HEADER_LEN..];
    let decompressed;
    let body: &[u8] = if header.flags & FLAG_ZSTD != 0 {
        decompressed = zstd::bulk::decompress(stored, header.raw_len as usize)
            .map_err(|e| DecodeError(format!("zstd: {e}")))?;
        if decompressed.len() != header.raw_len as usize {
            return Err(DecodeError("decompressed length mismatch".into()));
        }
        &decompressed
    } else {
        stored
    };
    if header.count == 0
        || header
            .first_lsn
            .checked_add(u64::from(header.count))
            .is_none()
    {
        return Err(DecodeError("the frame's LSNs overflow".into()));
    }
    let mut cur = Cursor::new(body);
    let mut records = Vec::with_capacity(header.count as usize);
    for i in 0..u64::from(header.count) {
        let kind = cur.u8()?;
        let kind = RecordType::try_from(kind)
            .map_err(|t| DecodeError(format!("unknown record type {t}")))?;
        let len = cur.u32()? as usize;
        let payload = cur.take(len)?.to_vec();
        records.push(LogRecord {
            lsn: header.first_lsn + i,
            record: EncodedRecord {
                kind,
                payload: payload.into(),
            },
        });
    }
    if !cur.is_empty() {
        return Err(DecodeError("trailing bytes after the last record".into()));
    }
    Ok(records)
}
