//! A transaction record's payload, encoded from borrowed operations: into a `Vec`, or, for
//! a transaction applied straight to LMDB (a bulk load), a piece at a time as the log writes
//! it ([`Payload::Lazy`]), so that its payload is never whole in memory beside its
//! operations.
//!
//! Format: txn = { commit_micros: u64 | op_count: u32 | op* }
//!         op  = { tag: u8 | table_len: u16 | table | [key_len: u32 | key]
//!                 | [value_len: u32 | value] }   (key for put/delete, value for put)

use std::borrow::Cow;
use std::sync::OnceLock;

use super::record::{EncodedRecord, RecordType, OP_CREATE_TABLE, OP_DELETE, OP_DROP_TABLE, OP_PUT};
use crate::sync::DataArc as Arc;

/// A transaction's operations, which a lazy payload encodes as it is written.
pub(crate) trait TxnOps: Send + Sync {
    fn op_count(&self) -> usize;
    /// Bytes the operations take encoded (each [`op_len`]).
    fn ops_len(&self) -> usize;
    /// A walk that encodes the operations in order.
    fn encoder(&self) -> Box<dyn OpEncoder + '_>;
}

/// Encodes a transaction's operations one at a time, in order.
pub(crate) trait OpEncoder {
    /// Encodes the next operation into `out`; false once every one is. An error (a spilled
    /// transaction's run that cannot be read back) ends the walk.
    fn encode_next(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool>;
}

/// The encoder of operations held in memory, `op(i)` for each `i` below `count`.
pub(crate) struct IndexedEncoder<F> {
    pub op: F,
    pub count: usize,
    pub next: usize,
}

impl<'a, F: Fn(usize) -> OpRef<'a>> OpEncoder for IndexedEncoder<F> {
    fn encode_next(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        if self.next == self.count {
            return Ok(false);
        }
        put_op(out, (self.op)(self.next));
        self.next += 1;
        Ok(true)
    }
}

/// A record's payload: its bytes, or a transaction's operations encoded when asked.
#[derive(Clone)]
pub(crate) enum Payload {
    Owned(Vec<u8>),
    Lazy(Arc<LazyTxn>),
}

/// A transaction's payload, not encoded yet: [`Payload::chunks`] encodes it a chunk at a time.
pub(crate) struct LazyTxn {
    commit_micros: u64,
    ops: Arc<dyn TxnOps>,
    len: usize,
    /// The whole payload, encoded only for [`Payload::bytes`] (not on the write path).
    whole: OnceLock<Vec<u8>>,
}

impl Payload {
    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Payload::Owned(bytes) => bytes.len(),
            Payload::Lazy(txn) => txn.len,
        }
    }

    /// The whole payload (encoding a lazy one in full, once). Not on the write path: a
    /// lazy payload whose operations cannot be read back (a spilled transaction's damaged
    /// run) is cut short there, and does not decode.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Payload::Owned(bytes) => bytes,
            Payload::Lazy(txn) => txn.whole.get_or_init(|| {
                let mut out = Vec::with_capacity(txn.len);
                put_header(&mut out, txn.commit_micros, txn.ops.op_count());
                let mut ops = txn.ops.encoder();
                while let Ok(true) = ops.encode_next(&mut out) {}
                out
            }),
        }
    }

    /// The payload in consecutive chunks of `chunk_len` bytes (the last may be shorter; one
    /// empty chunk for an empty payload). A lazy payload is encoded chunk by chunk; an
    /// operation it cannot read back ends the chunks with that error.
    pub(crate) fn chunks(
        &self,
        chunk_len: usize,
    ) -> impl Iterator<Item = std::io::Result<Cow<'_, [u8]>>> {
        let chunk_len = chunk_len.max(1);
        let count = self.len().div_ceil(chunk_len).max(1);
        let mut lazy = match self {
            Payload::Lazy(txn) if txn.whole.get().is_none() => Some(LazyChunks {
                txn,
                ops: None,
                buf: Vec::new(),
                failed: false,
            }),
            _ => None,
        };
        (0..count).map_while(move |i| match lazy.as_mut() {
            Some(lazy) if lazy.failed => None,
            Some(lazy) => {
                let chunk = lazy.next_chunk(chunk_len, i + 1 == count);
                lazy.failed = chunk.is_err();
                Some(chunk.map(Cow::Owned))
            }
            None => {
                let bytes = self.bytes();
                let at = (i * chunk_len).min(bytes.len());
                Some(Ok(Cow::Borrowed(
                    &bytes[at..(at + chunk_len).min(bytes.len())],
                )))
            }
        })
    }
}

/// The state of a lazy payload's chunks: the walk over the operations not encoded yet
/// (begun with the first chunk), and bytes encoded beyond the last chunk handed out.
struct LazyChunks<'a> {
    txn: &'a LazyTxn,
    ops: Option<Box<dyn OpEncoder + 'a>>,
    buf: Vec<u8>,
    failed: bool,
}

impl LazyChunks<'_> {
    fn next_chunk(&mut self, chunk_len: usize, last: bool) -> std::io::Result<Vec<u8>> {
        let txn = self.txn;
        let ops = self.ops.get_or_insert_with(|| {
            put_header(&mut self.buf, txn.commit_micros, txn.ops.op_count());
            txn.ops.encoder()
        });
        let mut more = true;
        while self.buf.len() < chunk_len && more {
            more = ops.encode_next(&mut self.buf)?;
        }
        let rest = self.buf.split_off(chunk_len.min(self.buf.len()));
        let chunk = std::mem::replace(&mut self.buf, rest);
        // The operations are immutable: they encode to the length measured when the record
        // was made, so the chunks end where `chunks` counted them.
        let ended = last && (!more || !ops.encode_next(&mut self.buf)?);
        if last && !(ended && self.buf.is_empty()) {
            return Err(std::io::Error::other(
                "a lazy payload encoded to another length than measured",
            ));
        }
        Ok(chunk)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload::Owned(bytes)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Payload {}

pub(super) fn put_table(out: &mut Vec<u8>, table: &str) {
    let len = u16::try_from(table.len()).expect("table names are at most 65535 bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(table.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("keys and values are below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A borrowed [`Op`](super::record::Op), for encoding without copying.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpRef<'a> {
    Put {
        table: &'a str,
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        table: &'a str,
        key: &'a [u8],
    },
    CreateTable {
        table: &'a str,
    },
    DropTable {
        table: &'a str,
    },
}

impl<'a> OpRef<'a> {
    /// A put of `value`, or a delete where it is `None`.
    pub(crate) fn put_or_delete(table: &'a str, key: &'a [u8], value: Option<&'a [u8]>) -> Self {
        match value {
            Some(value) => OpRef::Put { table, key, value },
            None => OpRef::Delete { table, key },
        }
    }

    /// The table it writes to.
    pub(crate) fn table(&self) -> &'a str {
        match *self {
            OpRef::Put { table, .. }
            | OpRef::Delete { table, .. }
            | OpRef::CreateTable { table }
            | OpRef::DropTable { table } => table,
        }
    }
}

impl From<OpRef<'_>> for super::record::Op {
    /// An owned copy.
    fn from(op: OpRef<'_>) -> Self {
        use super::record::Op;
        match op {
            OpRef::Put { table, key, value } => Op::Put {
                table: table.into(),
                key: key.into(),
                value: value.into(),
            },
            OpRef::Delete { table, key } => Op::Delete {
                table: table.into(),
                key: key.into(),
            },
            OpRef::CreateTable { table } => Op::CreateTable {
                table: table.into(),
            },
            OpRef::DropTable { table } => Op::DropTable {
                table: table.into(),
            },
        }
    }
}

/// A split transaction's piece payload: its number (a part's index, or the parts before an
/// end) and its chunk of the transaction's payload; `None` if shorter than its number.
pub(crate) fn piece_parts(payload: &[u8]) -> Option<(u32, &[u8])> {
    let number = u32::from_le_bytes(payload.get(..4)?.try_into().expect("4 bytes"));
    Some((number, &payload[4..]))
}

/// A transaction payload's commit time, read from its header (the start of a split
/// transaction's first chunk); `None` if shorter than it.
pub(crate) fn header_commit_micros(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(
        payload.get(..8)?.try_into().expect("8 bytes"),
    ))
}

pub(crate) fn put_op(out: &mut Vec<u8>, op: OpRef<'_>) {
    match op {
        OpRef::Put { table, key, value } => {
            out.push(OP_PUT);
            put_table(out, table);
            put_bytes(out, key);
            put_bytes(out, value);
        }
        OpRef::Delete { table, key } => {
            out.push(OP_DELETE);
            put_table(out, table);
            put_bytes(out, key);
        }
        OpRef::CreateTable { table } => {
            out.push(OP_CREATE_TABLE);
            put_table(out, table);
        }
        OpRef::DropTable { table } => {
            out.push(OP_DROP_TABLE);
            put_table(out, table);
        }
    }
}

/// Bytes `op` takes in a payload.
pub(crate) fn op_len(op: OpRef<'_>) -> usize {
    let (table, strings) = match op {
        OpRef::Put { table, key, value } => (table, 8 + key.len() + value.len()),
        OpRef::Delete { table, key } => (table, 4 + key.len()),
        OpRef::CreateTable { table } | OpRef::DropTable { table } => (table, 0),
    };
    1 + 2 + table.len() + strings
}

fn put_header(out: &mut Vec<u8>, commit_micros: u64, count: usize) {
    out.extend_from_slice(&commit_micros.to_le_bytes());
    let count = u32::try_from(count).expect("fewer than 2^32 ops");
    out.extend_from_slice(&count.to_le_bytes());
}

pub(super) fn encode_txn_into<'a>(
    out: &mut Vec<u8>,
    commit_micros: u64,
    count: usize,
    ops: impl Iterator<Item = OpRef<'a>>,
) {
    put_header(out, commit_micros, count);
    for op in ops {
        put_op(out, op);
    }
}

/// Encodes a transaction record from borrowed operations (`count` of them).
pub(crate) fn encode_txn<'a>(
    commit_micros: u64,
    count: usize,
    ops: impl Iterator<Item = OpRef<'a>>,
) -> EncodedRecord {
    let mut payload = Vec::new();
    encode_txn_into(&mut payload, commit_micros, count, ops);
    EncodedRecord {
        kind: RecordType::Txn,
        payload: payload.into(),
    }
}

/// A transaction record of `ops` encoded as the log writes it (see [`Payload::Lazy`]).
pub(crate) fn lazy_txn(commit_micros: u64, ops: Arc<dyn TxnOps>) -> EncodedRecord {
    let len = 12 + ops.ops_len();
    EncodedRecord {
        kind: RecordType::Txn,
        payload: Payload::Lazy(Arc::new(LazyTxn {
            commit_micros,
            ops,
            len,
            whole: OnceLock::new(),
        })),
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;

    struct Ops(Vec<(u8, String, Vec<u8>, Vec<u8>)>);

    impl TxnOps for Ops {
        fn op_count(&self) -> usize {
            self.0.len()
        }
        fn ops_len(&self) -> usize {
            (0..self.0.len()).map(|i| op_len(self.op(i))).sum()
        }
        fn encoder(&self) -> Box<dyn OpEncoder + '_> {
            Box::new(IndexedEncoder {
                op: |i| self.op(i),
                count: self.0.len(),
                next: 0,
            })
        }
    }

    impl Ops {
        fn op(&self, i: usize) -> OpRef<'_> {
            let op = &self.0[i];
            match op.0 {
                OP_PUT => OpRef::Put {
                    table: &op.1,
                    key: &op.2,
                    value: &op.3,
                },
                OP_DELETE => OpRef::Delete {
                    table: &op.1,
                    key: &op.2,
                },
                OP_CREATE_TABLE => OpRef::CreateTable { table: &op.1 },
                _ => OpRef::DropTable { table: &op.1 },
            }
        }
    }

    /// A lazy payload's chunks, at any chunk length, are the eager payload's cut the same
    /// way; its length is the eager one's, and so is its decoding.
    #[test]
    fn a_lazy_payload_chunks_as_the_eager_one() {
        let mut ops = vec![
            (OP_CREATE_TABLE, "new".to_owned(), Vec::new(), Vec::new()),
            (OP_PUT, "other".into(), Vec::new(), Vec::new()),
            (OP_DROP_TABLE, "old".into(), Vec::new(), Vec::new()),
        ];
        for i in 0..200u32 {
            ops.push((
                OP_PUT,
                "t".into(),
                i.to_be_bytes().to_vec(),
                vec![i as u8; i as usize],
            ));
            ops.push((OP_DELETE, "t".into(), vec![i as u8; 3], Vec::new()));
        }
        for ops in [Vec::new(), ops] {
            let ops = Arc::new(Ops(ops));
            let eager = encode_txn(77, ops.op_count(), (0..ops.op_count()).map(|i| ops.op(i)));
            let eager_bytes = eager.payload.bytes().to_vec();
            for chunk_len in [1, 5, 12, 13, 64, 1000, eager_bytes.len(), 1 << 20] {
                let lazy = lazy_txn(77, ops.clone());
                assert_eq!(lazy.payload.len(), eager_bytes.len());
                let chunks: Vec<Vec<u8>> = lazy
                    .payload
                    .chunks(chunk_len)
                    .map(|c| c.unwrap().into_owned())
                    .collect();
                let expected: Vec<Vec<u8>> = eager
                    .payload
                    .chunks(chunk_len)
                    .map(|c| c.unwrap().into_owned())
                    .collect();
                assert_eq!(chunks, expected, "chunks of {chunk_len}");
                assert_eq!(chunks.concat(), eager_bytes);
                assert_eq!(lazy.decode(), eager.decode());
                // Once encoded whole, the chunks are cut from it.
                let again: Vec<Vec<u8>> = lazy
                    .payload
                    .chunks(chunk_len)
                    .map(|c| c.unwrap().into_owned())
                    .collect();
                assert_eq!(again, expected);
            }
        }
    }

    /// Operations that cannot all be read back (a spilled transaction's damaged run): the
    /// chunks end with the error, and none is handed out after it.
    struct Failing(usize);

    impl TxnOps for Failing {
        fn op_count(&self) -> usize {
            self.0 + 1
        }
        fn ops_len(&self) -> usize {
            (self.0 + 1) * op_len(OpRef::CreateTable { table: "t" })
        }
        fn encoder(&self) -> Box<dyn OpEncoder + '_> {
            struct FailsAt(usize);
            impl OpEncoder for FailsAt {
                fn encode_next(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
                    if self.0 == 0 {
                        return Err(std::io::Error::other("unreadable"));
                    }
                    self.0 -= 1;
                    put_op(out, OpRef::CreateTable { table: "t" });
                    Ok(true)
                }
            }
            Box::new(FailsAt(self.0))
        }
    }

    #[test]
    fn a_lazy_payload_that_cannot_be_read_back_ends_its_chunks_with_the_error() {
        let lazy = lazy_txn(1, Arc::new(Failing(100)));
        let chunks: Vec<_> = lazy.payload.chunks(64).collect();
        assert!(chunks.len() > 2, "some chunks before the error");
        assert!(chunks.last().unwrap().is_err());
        assert_eq!(chunks.iter().filter(|c| c.is_err()).count(), 1);
        assert!(lazy.decode().is_err(), "cut short, it does not decode");
    }
}
