//! Transactions over `max_record_bytes`, written as pieces (`TxnPart` records, then a
//! `TxnEnd`; log format version 4): the log hands them back whole at their end's LSN, across
//! segments, reopens and crashes; parts whose end was never written are never read, and
//! the log goes on after them.

use std::path::Path;
use std::sync::Arc;

use walmdb::{
    CrashOptions, Durability, EncodedRecord, Error, FsRef, NoSequencer, Op, Record, RecordType,
    SimFs, TxnRecord, Wal, WalConfig,
};

const DIR: &str = "/db/wal";

/// 64 KiB records in 256 KiB segments: a 600 KiB transaction takes ten pieces and three
/// segments.
fn cfg() -> WalConfig {
    WalConfig {
        segment_bytes: 256 * 1024,
        max_record_bytes: 64 * 1024,
        queue_max_bytes: 1 << 20,
        group_max_bytes: 64 * 1024,
        prepare_segments: false,
        ..WalConfig::default()
    }
}

fn open(fs: &SimFs) -> walmdb::Result<Wal> {
    let fsref: FsRef = Arc::new(fs.clone());
    Wal::open_with(fsref, Path::new(DIR), cfg(), None, NoSequencer)
}

/// A transaction of `ops` puts of 15 KiB each, told apart by `tag`.
fn big(tag: u8, ops: usize) -> TxnRecord {
    TxnRecord {
        commit_micros: u64::from(tag),
        ops: (0..ops)
            .map(|i| Op::Put {
                table: "t".into(),
                key: vec![tag, i as u8],
                value: vec![tag ^ i as u8; 15 * 1024],
            })
            .collect(),
    }
}

fn small(tag: u8) -> TxnRecord {
    TxnRecord {
        commit_micros: u64::from(tag),
        ops: vec![Op::Put {
            table: "t".into(),
            key: vec![tag],
            value: vec![tag; 100],
        }],
    }
}

fn encode(t: &TxnRecord) -> EncodedRecord {
    Record::Txn(t.clone()).encode()
}

/// Every record the log hands out from LSN 1, decoded, with its LSN.
fn read_all(wal: &Wal) -> Vec<(u64, Record)> {
    wal.read_from(1)
        .map(|r| {
            let r = r.expect("read");
            (r.lsn, r.record.decode().expect("decode"))
        })
        .collect()
}

#[test]
fn a_transaction_over_max_record_bytes_is_written_in_pieces_and_read_back_whole() {
    let fs = SimFs::new();
    let wal = open(&fs).unwrap();
    let first = big(1, 40);
    let encoded = encode(&first);
    assert!(encoded.framed_len() > 9 * 64 * 1024, "ten pieces");
    let first_lsn = wal.commit(encoded).unwrap();
    // Ten pieces: LSNs 1..=10, the transaction's own the last.
    assert_eq!(first_lsn, 10);
    assert_eq!(wal.commit(encode(&small(2))).unwrap(), 11);
    let second_lsn = wal
        .commit_with(encode(&big(3, 20)), (), Some(Durability::None))
        .unwrap();
    assert_eq!(second_lsn, 16);
    let want = vec![
        (10, Record::Txn(first.clone())),
        (11, Record::Txn(small(2))),
        (16, Record::Txn(big(3, 20))),
    ];
    assert_eq!(read_all(&wal), want);
    // A read from inside a split transaction skips it: it began before the read.
    let from_inside: Vec<u64> = wal.read_from(5).map(|r| r.unwrap().lsn).collect();
    assert_eq!(from_inside, [11, 16]);
    // The pieces decode alone as what they are.
    let raw = walmdb::Record::decode(RecordType::TxnPart, &[0, 0, 0, 0, 9, 9]).unwrap();
    assert_eq!(
        raw,
        Record::TxnPiece {
            kind: RecordType::TxnPart,
            number: 0,
            chunk: vec![9, 9]
        }
    );
    wal.close().unwrap();
    let wal = open(&fs).unwrap();
    assert_eq!(read_all(&wal), want);
    assert_eq!(wal.commit(encode(&small(4))).unwrap(), 17);
    wal.close().unwrap();
    // Everything acknowledged at a durable level (and everything closed) survives a power loss.
    let after = fs.crash(3, CrashOptions::default());
    let wal = open(&after).unwrap();
    assert_eq!(read_all(&wal).len(), 4);
}

#[test]
fn records_other_than_transactions_are_still_refused_over_max_record_bytes() {
    let fs = SimFs::new();
    let wal = open(&fs).unwrap();
    let vote = EncodedRecord::raw(RecordType::Vote, vec![1; 64 * 1024]);
    assert!(matches!(
        wal.commit(vote),
        Err(Error::RecordTooLarge { max, .. }) if max == 64 * 1024
    ));
    assert_eq!(wal.commit(encode(&small(1))).unwrap(), 1);
}

/// A crash after each I/O operation of a split transaction's write and sync: after the
/// reopen the log holds the transaction whole (always, once its commit was acknowledged) or
/// not at all, and later transactions, split or not, are read back whole after the parts the
/// crash left without an end.
#[test]
fn parts_without_their_end_are_never_read_and_the_log_goes_on() {
    let mut outcomes = [0usize; 2];
    for k in 1..60 {
        for reorder in [false, true] {
            let fs = SimFs::new();
            let wal = open(&fs).unwrap();
            assert_eq!(wal.commit(encode(&small(1))).unwrap(), 1);
            fs.crash_after_ops(k);
            let acked = wal.commit(encode(&big(2, 40))).is_ok();
            drop(wal);
            let opts = CrashOptions {
                reorder,
                ..CrashOptions::default()
            };
            let after = fs.crash(k, opts);
            let wal = open(&after).unwrap_or_else(|e| panic!("k={k}: reopen: {e:?}"));
            let got = read_all(&wal);
            let whole = got.iter().any(|(_, r)| *r == Record::Txn(big(2, 40)));
            assert!(
                whole || !acked,
                "k={k}: an acknowledged transaction was lost"
            );
            assert!(
                got.iter().all(
                    |(_, r)| matches!(r, Record::Txn(t) if t.ops.len() == 1 || t.ops.len() == 40)
                ),
                "k={k}: {:?}",
                got.iter().map(|(l, _)| l).collect::<Vec<_>>()
            );
            outcomes[usize::from(whole)] += 1;
            // The log goes on: a split transaction and a small one after whatever was left.
            let next = wal.commit(encode(&big(3, 12))).unwrap();
            let last = wal.commit(encode(&small(4))).unwrap();
            let got = read_all(&wal);
            let tail: Vec<_> = got.iter().rev().take(2).rev().cloned().collect();
            assert_eq!(
                tail,
                vec![
                    (next, Record::Txn(big(3, 12))),
                    (last, Record::Txn(small(4)))
                ],
                "k={k}"
            );
            wal.close().unwrap();
            let wal = open(&after).unwrap();
            assert_eq!(read_all(&wal), got, "k={k}: after a clean reopen");
        }
    }
    // Both outcomes were reached: crashes before the end, and after it.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

/// Found by `engine_ops` (CI run of fb6a133; input `fuzz/regressions/engine_ops-lone-txn-end`):
/// a piece carries at least 64 bytes, so with a small `max_record_bytes` a transaction just
/// over it went out as a single `TxnEnd` with no parts, which readers skipped as the tail
/// of a transaction begun before the read. The acknowledged commit was gone from every read
/// (replay, change feed, restore), and a lone end after a crash's unended parts was
/// reported as corruption. Every size around the thresholds now reads back whole, also
/// after parts a crash left without their end.
#[test]
fn a_transaction_written_as_one_piece_is_read_back_whole() {
    let tiny = || WalConfig {
        max_record_bytes: 64,
        segment_bytes: 64 * 1024,
        prepare_segments: false,
        ..WalConfig::default()
    };
    let open_tiny = |fs: &SimFs| {
        let fsref: FsRef = Arc::new(fs.clone());
        Wal::open_with(fsref, Path::new(DIR), tiny(), None, NoSequencer)
    };
    let sized = |tag: u8, len: usize| TxnRecord {
        commit_micros: u64::from(tag),
        ops: vec![Op::Put {
            table: "t".into(),
            key: vec![tag],
            value: vec![tag; len],
        }],
    };
    let fs = SimFs::new();
    let wal = open_tiny(&fs).unwrap();
    let mut want = Vec::new();
    // Payloads from under the limit to several pieces.
    for len in 0..120 {
        let t = sized(len as u8, len);
        let lsn = wal.commit(encode(&t)).unwrap();
        want.push((lsn, Record::Txn(t)));
    }
    assert!(
        want.iter()
            .map(|(_, r)| r.encode().kind())
            .all(|k| k == RecordType::Txn),
        "the records themselves are whole transactions"
    );
    let lsns = |records: &[(u64, Record)]| records.iter().map(|(l, _)| *l).collect::<Vec<_>>();
    assert_eq!(lsns(&read_all(&wal)), lsns(&want), "read back while open");
    assert_eq!(read_all(&wal), want);
    // The parts of a transaction whose end a crash took, then one written as one piece.
    fs.crash_after_ops(fs.op_count() + 1);
    let _ = wal.commit(encode(&sized(200, 500)));
    drop(wal);
    let fs = fs.crash(1, CrashOptions::default());
    let wal = open_tiny(&fs).unwrap();
    // Over the limit framed, within one piece's 64 bytes.
    let lone = (0..64)
        .map(|len| sized(201, len))
        .find(|t| (60..=64).contains(&encode(t).payload().len()))
        .expect("a size written as one piece");
    let lsn = wal.commit(encode(&lone)).unwrap();
    want.push((lsn, Record::Txn(lone)));
    assert_eq!(
        read_all(&wal),
        want,
        "after the unended parts, and the one-piece commit"
    );
    wal.close().unwrap();
    let wal = open_tiny(&fs).unwrap();
    assert_eq!(read_all(&wal), want, "after a clean reopen");
    // A read from the one-piece transaction's own LSN hands it out.
    let from = wal.read_from(lsn).next().expect("one record").unwrap();
    assert_eq!((from.lsn, from.record.kind()), (lsn, RecordType::Txn));
}
