//! Arbitrary bytes into the record and frame decoders of `walmdb::internals::record`.
//!
//! Input: `[control: u8] ++ data`. Three passes over `data`:
//!
//! 1. `data` as the payload of every record type: `Record::decode` and
//!    `EncodedRecord::decode` must agree, never panic, and whatever decodes must encode back
//!    to exactly `data` (the encoding is canonical) and decode again to the same record.
//! 2. `data` as a whole frame (header and body). `control` chooses which header fields are
//!    repaired first (length, reserved bytes, flags, CRC) so the fuzzer gets past the CRC.
//!    A frame that passes `FrameHeader::is_plausible` (the documented precondition of
//!    `decode_frame`) goes to `decode_frame`; what decodes is rebuilt with `FrameBuilder`
//!    and must give the same records (and, uncompressed, the same bytes).
//! 3. `data` as a recipe for well-formed records (structure-aware): they must survive
//!    encode -> frame (compressed or not) -> decode_frame -> decode unchanged.
//!
//! The segment header decoder (`SegmentHeader::decode`) lives in a crate-private module;
//! `segment_recovery` reaches it through `Wal::open_with`.

#![no_main]

mod alloc_limit;
mod bytes;
use bytes::Bytes;

use libfuzzer_sys::fuzz_target;
use walmdb::internals::record::{
    decode_frame, frame_crc, FrameBuilder, FrameHeader, FLAG_ZSTD, FRAME_HEADER_LEN,
};
use walmdb::{EncodedRecord, Lsn, Op, Record, RecordType, TxnRecord};

const KINDS: [RecordType; 9] = [
    RecordType::Txn,
    RecordType::Checkpoint,
    RecordType::Timestamp,
    RecordType::Vote,
    RecordType::TruncateSuffix,
    RecordType::PurgePrefix,
    RecordType::Entry,
    RecordType::TxnPart,
    RecordType::TxnEnd,
];

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    payloads(data);
    frame(control, data);
    structured(control, data);
});

/// Pass 1: `data` as a payload of every record type.
fn payloads(data: &[u8]) {
    for kind in KINDS {
        let decoded = Record::decode(kind, data);
        let via_encoded = EncodedRecord::raw(kind, data.to_vec()).decode();
        assert_eq!(
            decoded, via_encoded,
            "{kind:?}: the two decode paths differ"
        );
        if let Ok(record) = decoded {
            check_round_trip(kind, data, &record);
        }
    }
}

fn check_round_trip(kind: RecordType, payload: &[u8], record: &Record) {
    let encoded = record.encode();
    assert_eq!(encoded.kind(), kind, "encode changed the record type");
    assert_eq!(
        encoded.payload(),
        payload,
        "{kind:?}: decode -> encode is not the identity"
    );
    assert_eq!(
        encoded.decode().as_ref(),
        Ok(record),
        "{kind:?}: encode -> decode is not the identity"
    );
}

/// Pass 2: `data` as a frame, repaired as `control` says.
fn frame(control: u8, data: &[u8]) {
    if data.len() < FRAME_HEADER_LEN {
        return;
    }
    let mut frame = data.to_vec();
    let body_len = (frame.len() - FRAME_HEADER_LEN) as u32;
    if control & 1 != 0 {
        frame[0..4].copy_from_slice(&body_len.to_le_bytes());
    }
    if control & 2 != 0 {
        frame[13] = 0;
        frame[36..40].fill(0);
    }
    if control & 4 != 0 {
        // Flags the writer can produce; raw_len consistent with them when uncompressed.
        frame[12] &= FLAG_ZSTD;
        if frame[12] == 0 {
            frame[32..36].copy_from_slice(&body_len.to_le_bytes());
        }
    }
    if control & 8 != 0 {
        // A count the body could plausibly hold (the writer never writes 0).
        let count = u16::from_le_bytes([frame[14], frame[15]]) % 64;
        frame[14..16].copy_from_slice(&count.max(1).to_le_bytes());
    }
    if control & 16 != 0 {
        // first_lsn above synced_lsn, as the writer always has it.
        let synced = u64::from_le_bytes(frame[24..32].try_into().unwrap()) % (1 << 40);
        frame[24..32].copy_from_slice(&synced.to_le_bytes());
        let first = synced + 1 + u64::from(frame[16]);
        frame[16..24].copy_from_slice(&first.to_le_bytes());
    }
    if control & 32 != 0 {
        let crc = frame_crc(&frame);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    let header = FrameHeader::parse(frame[..FRAME_HEADER_LEN].try_into().unwrap());
    // `decode_frame`'s precondition, as the segment scanner checks it.
    if !header.is_plausible(header.salt, frame.len()) || header.total_len() != frame.len() {
        return;
    }
    let Ok(records) = decode_frame(&header, &frame) else {
        return;
    };
    assert_eq!(records.len(), usize::from(header.count));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r.lsn,
            header.first_lsn + i as Lsn,
            "record {i} has the wrong LSN"
        );
        if let Ok(record) = r.record.decode() {
            check_round_trip(r.record.kind(), r.record.payload(), &record);
        }
    }
    // Rebuild the frame from its records.
    let records_only: Vec<EncodedRecord> = records.iter().map(|r| r.record.clone()).collect();
    let compress = (header.flags & FLAG_ZSTD != 0).then_some((0, 1));
    let rebuilt = build_frame(
        &records_only,
        header.salt,
        header.first_lsn,
        header.synced_lsn,
        compress,
    );
    if header.flags & FLAG_ZSTD == 0 {
        assert_eq!(
            rebuilt, frame,
            "an uncompressed frame did not rebuild byte for byte"
        );
    }
    check_frame(&rebuilt, &records_only, header.first_lsn);
}

fn build_frame(
    records: &[EncodedRecord],
    salt: u32,
    first_lsn: Lsn,
    synced_lsn: Lsn,
    compress: Option<(usize, i32)>,
) -> Vec<u8> {
    let mut builder = FrameBuilder::new();
    for r in records {
        builder.push(r);
    }
    let mut out = Vec::new();
    builder.finish(&mut out, salt, first_lsn, synced_lsn, compress);
    out
}

/// `frame` must be a valid frame holding exactly `want`, numbered from `first_lsn`.
fn check_frame(frame: &[u8], want: &[EncodedRecord], first_lsn: Lsn) {
    let header = FrameHeader::parse(frame[..FRAME_HEADER_LEN].try_into().unwrap());
    assert!(
        header.is_plausible(header.salt, frame.len()),
        "a built frame is not plausible: {header:?}"
    );
    let got = decode_frame(&header, frame).expect("a built frame must decode");
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.lsn, first_lsn + i as Lsn);
        assert_eq!(&g.record, w, "record {i} changed in the frame");
    }
}

impl Bytes<'_> {
    fn vec(&mut self, max: usize) -> Vec<u8> {
        let n = (self.u8() as usize).min(max);
        self.take(n).to_vec()
    }
    fn string(&mut self) -> String {
        String::from_utf8_lossy(&self.vec(40)).into_owned()
    }
}

/// Pass 3: well-formed records built from the input.
fn structured(control: u8, data: &[u8]) {
    let mut b = Bytes(data);
    let mut records = Vec::new();
    while !b.is_empty() && records.len() < 16 {
        let record = match b.u8() % 7 {
            0 => {
                let commit_micros = b.u64();
                let n = b.u8() % 8;
                let ops = (0..n)
                    .map(|_| match b.u8() % 4 {
                        0 => Op::Put {
                            table: b.string(),
                            key: b.vec(255),
                            value: b.vec(255),
                        },
                        1 => Op::Delete {
                            table: b.string(),
                            key: b.vec(255),
                        },
                        2 => Op::CreateTable { table: b.string() },
                        _ => Op::DropTable { table: b.string() },
                    })
                    .collect();
                Record::Txn(TxnRecord { commit_micros, ops })
            }
            1 => Record::Checkpoint {
                applied_lsn: b.u64(),
            },
            2 => Record::Timestamp {
                unix_micros: b.u64(),
                name: b.string(),
            },
            k => Record::Consensus {
                kind: [
                    RecordType::Vote,
                    RecordType::TruncateSuffix,
                    RecordType::PurgePrefix,
                    RecordType::Entry,
                ][usize::from(k - 3)],
                payload: b.vec(255),
            },
        };
        let encoded = record.encode();
        assert_eq!(
            encoded.decode().as_ref(),
            Ok(&record),
            "encode -> decode changed a record"
        );
        records.push(encoded);
    }
    if records.is_empty() {
        return;
    }
    // LSNs far from 1 but nowhere near overflow; the writer never comes close.
    let first_lsn = 1 + (u64::from(control) << 20);
    let compress = (control & 1 != 0).then_some((usize::from(control >> 4), 1));
    let frame = build_frame(&records, 0xA5A5_0001, first_lsn, first_lsn - 1, compress);
    check_frame(&frame, &records, first_lsn);
}
