//! A transaction record's payload decoded as its pieces are read, one operation at a time:
//! a split transaction read back without its payload whole in memory (replay).
//!
//! The payload's format is [`super::txn_payload`]'s. An operation may cross any number of
//! piece boundaries; only such an operation's bytes are copied (into `carry`).

use super::record::{Cursor, DecodeError, OP_CREATE_TABLE, OP_DELETE, OP_DROP_TABLE, OP_PUT};
use super::txn_payload::OpRef;

/// `commit_micros: u64 | op_count: u32`.
const HEADER_LEN: usize = 12;

/// Decodes a transaction's payload fed a piece at a time ([`OpStream::feed`]).
#[derive(Debug, Default)]
pub(crate) struct OpStream {
    /// The start of an item (the header or an operation) the pieces fed so far cut short.
    carry: Vec<u8>,
    /// `commit_micros` and the operation count, once read.
    header: Option<(u64, u32)>,
    decoded: u32,
}

/// What stops a feed: the payload does not decode, or the caller's function failed.
#[derive(Debug)]
pub(crate) enum StreamError<E> {
    Decode(DecodeError),
    Sink(E),
}

impl<E> From<DecodeError> for StreamError<E> {
    fn from(e: DecodeError) -> Self {
        StreamError::Decode(e)
    }
}

/// How many bytes the item at a buffer's start takes: all of them, or as many as the
/// buffer must hold before that is known.
enum Extent {
    Whole(usize),
    AtLeast(usize),
}

fn u16_at(buf: &[u8], at: usize) -> usize {
    u16::from_le_bytes([buf[at], buf[at + 1]]).into()
}

fn u32_at(buf: &[u8], at: usize) -> usize {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize
}

impl OpStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes the operations that `piece` (the payload's next bytes) completes, calling
    /// `f` with each in order.
    pub fn feed<E>(
        &mut self,
        piece: &[u8],
        mut f: impl FnMut(OpRef<'_>) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        let mut rest = piece;
        // First the item the carry began, completed from the piece's front.
        while !self.carry.is_empty() {
            let need = match self.extent(&self.carry)? {
                Extent::Whole(n) | Extent::AtLeast(n) => n,
            };
            let take = need.saturating_sub(self.carry.len()).min(rest.len());
            self.carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            match self.extent(&self.carry)? {
                Extent::Whole(n) if self.carry.len() == n => {
                    let item = std::mem::take(&mut self.carry);
                    self.item(&item, &mut f)?;
                    self.carry = item;
                    self.carry.clear();
                }
                _ if rest.is_empty() => return Ok(()), // the piece ended first
                _ => {}
            }
        }
        // Then every whole item in place.
        while !rest.is_empty() {
            match self.extent(rest)? {
                Extent::Whole(n) if n <= rest.len() => {
                    self.item(&rest[..n], &mut f)?;
                    rest = &rest[n..];
                }
                _ => break,
            }
        }
        self.carry.extend_from_slice(rest);
        Ok(())
    }

    /// The transaction's commit time and operation count, once every byte was fed: an
    /// error if the payload ended short of either.
    pub fn finish(&self) -> Result<(u64, u32), DecodeError> {
        match self.header {
            Some((micros, count)) if self.decoded == count && self.carry.is_empty() => {
                Ok((micros, count))
            }
            Some((_, count)) => Err(DecodeError(format!(
                "the payload ends after {} of its {count} operations",
                self.decoded
            ))),
            None => Err(DecodeError("the payload ends within its header".into())),
        }
    }

    fn extent(&self, buf: &[u8]) -> Result<Extent, DecodeError> {
        let Some((_, count)) = self.header else {
            return Ok(Extent::Whole(HEADER_LEN));
        };
        if self.decoded == count {
            return Err(DecodeError("trailing bytes after the record".into()));
        }
        // tag: u8 | table_len: u16 | table | [key_len: u32 | key] | [value_len: u32 | value]
        if buf.len() < 3 {
            return Ok(Extent::AtLeast(3));
        }
        let key_at = 3 + u16_at(buf, 1);
        match buf[0] {
            OP_CREATE_TABLE | OP_DROP_TABLE => Ok(Extent::Whole(key_at)),
            OP_PUT | OP_DELETE if buf.len() < key_at + 4 => Ok(Extent::AtLeast(key_at + 4)),
            OP_DELETE => Ok(Extent::Whole(key_at + 4 + u32_at(buf, key_at))),
            OP_PUT => {
                let value_at = key_at + 4 + u32_at(buf, key_at);
                if buf.len() < value_at + 4 {
                    return Ok(Extent::AtLeast(value_at + 4));
                }
                Ok(Extent::Whole(value_at + 4 + u32_at(buf, value_at)))
            }
            other => Err(DecodeError(format!("unknown operation tag {other}"))),
        }
    }

    /// Decodes one whole item (`bytes` is exactly its extent).
    fn item<E>(
        &mut self,
        bytes: &[u8],
        f: &mut impl FnMut(OpRef<'_>) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        let mut cur = Cursor::new(bytes);
        if self.header.is_none() {
            self.header = Some((cur.u64()?, cur.u32()?));
            return Ok(());
        }
        let tag = cur.u8()?;
        let table_len = cur.u16()?.into();
        let table = std::str::from_utf8(cur.take(table_len)?)
            .map_err(|_| DecodeError("table name is not UTF-8".into()))?;
        let op = match tag {
            OP_PUT => {
                let key_len = cur.u32()? as usize;
                let key = cur.take(key_len)?;
                let value_len = cur.u32()? as usize;
                let value = cur.take(value_len)?;
                OpRef::Put { table, key, value }
            }
            OP_DELETE => {
                let key_len = cur.u32()? as usize;
                OpRef::Delete {
                    table,
                    key: cur.take(key_len)?,
                }
            }
            OP_CREATE_TABLE => OpRef::CreateTable { table },
            _ => OpRef::DropTable { table },
        };
        self.decoded += 1;
        f(op).map_err(StreamError::Sink)
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;
    use crate::wal::log::record::{Op, Record, TxnRecord};

    fn sample() -> TxnRecord {
        let mut ops = vec![Op::CreateTable { table: "t".into() }];
        for i in 0..40u32 {
            let key = i.to_be_bytes().repeat(1 + i as usize % 5);
            ops.push(if i % 7 == 3 {
                Op::Delete {
                    table: "t".into(),
                    key,
                }
            } else {
                Op::Put {
                    table: if i % 2 == 0 { "even" } else { "t" }.into(),
                    key,
                    value: vec![i as u8; i as usize * 3],
                }
            });
        }
        ops.push(Op::DropTable {
            table: "even".into(),
        });
        TxnRecord {
            commit_micros: 1_234_567,
            ops,
        }
    }

    /// Feeds `payload` in pieces of `len` bytes; returns the operations decoded.
    fn decode_in_pieces(payload: &[u8], len: usize) -> Result<(u64, Vec<Op>), DecodeError> {
        let mut stream = OpStream::new();
        let mut ops = Vec::new();
        for piece in payload.chunks(len) {
            stream
                .feed(piece, |op| {
                    ops.push(Op::from(op));
                    Ok::<(), ()>(())
                })
                .map_err(|e| match e {
                    StreamError::Decode(e) => e,
                    StreamError::Sink(()) => unreachable!("the sink never fails"),
                })?;
        }
        let (micros, count) = stream.finish()?;
        assert_eq!(count as usize, ops.len());
        Ok((micros, ops))
    }

    #[test]
    fn a_payload_fed_in_pieces_of_any_length_decodes_as_it_does_whole() {
        let txn = sample();
        let payload = Record::Txn(txn.clone()).encode().payload().to_vec();
        for len in [
            1,
            2,
            3,
            5,
            11,
            12,
            13,
            64,
            100,
            payload.len() - 1,
            payload.len(),
        ] {
            let (micros, ops) = decode_in_pieces(&payload, len).expect("decodes");
            assert_eq!(micros, txn.commit_micros, "pieces of {len}");
            assert_eq!(ops, txn.ops, "pieces of {len}");
        }
    }

    #[test]
    fn a_payload_cut_short_or_run_long_or_damaged_is_refused() {
        let payload = Record::Txn(sample()).encode().payload().to_vec();
        for cut in [0, 5, 12, 13, payload.len() / 2, payload.len() - 1] {
            assert!(
                decode_in_pieces(&payload[..cut], 7).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = payload.clone();
        long.push(0);
        assert!(decode_in_pieces(&long, 7).is_err(), "a trailing byte");
        let mut bad_tag = payload.clone();
        bad_tag[HEADER_LEN] = 9;
        assert!(decode_in_pieces(&bad_tag, 7).is_err(), "an unknown tag");
    }

    #[test]
    fn a_sink_error_stops_the_feed() {
        let payload = Record::Txn(sample()).encode().payload().to_vec();
        let mut stream = OpStream::new();
        let mut seen = 0;
        let result = stream.feed(&payload, |_| {
            seen += 1;
            if seen == 3 {
                Err("full")
            } else {
                Ok(())
            }
        });
        assert!(matches!(result, Err(StreamError::Sink("full"))));
        assert_eq!(seen, 3);
    }
}
