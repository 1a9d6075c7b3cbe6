//! Transactions over `max_record_bytes`, written as several records (format version 4):
//! `TxnPart` records, then a `TxnEnd` (see `docs/wal-format.md`, "Split transactions").
//! Pure encoding and joining; no I/O.

use super::record::{DecodeError, EncodedRecord, LogRecord, Lsn, RecordType, RECORD_HEADER_LEN};
use super::txn_payload::piece_parts;

impl EncodedRecord {
    /// The records this one is written as when a record may take at most `max_framed`
    /// bytes (`max_record_bytes`): itself, or, for a transaction over it, its parts and end.
    /// A lazy payload that cannot be encoded (a spilled transaction's run that cannot be
    /// read back) ends the pieces with the error.
    pub(crate) fn pieces(
        &self,
        max_framed: usize,
    ) -> impl Iterator<Item = std::io::Result<Piece<'_>>> {
        let whole = self.kind != RecordType::Txn || self.framed_len() <= max_framed;
        let chunk_len = if whole {
            self.payload.len().max(1)
        } else {
            piece_chunk_len(max_framed)
        };
        let count = self.payload.len().div_ceil(chunk_len).max(1);
        self.payload
            .chunks(chunk_len)
            .enumerate()
            .map(move |(i, chunk)| Ok((i, chunk?)))
            .map(move |piece: std::io::Result<_>| {
                let (i, chunk) = piece?;
                Ok(match (whole, i + 1 == count) {
                    (true, _) => Piece {
                        kind: self.kind,
                        number: None,
                        chunk,
                    },
                    (false, false) => Piece {
                        kind: RecordType::TxnPart,
                        number: Some(i as u32),
                        chunk,
                    },
                    (false, true) => Piece {
                        kind: RecordType::TxnEnd,
                        number: Some(i as u32),
                        chunk,
                    },
                })
            })
    }

    /// LSNs the record takes when written with `max_framed` (see [`EncodedRecord::pieces`]).
    pub(crate) fn lsns(&self, max_framed: usize) -> u64 {
        if self.kind != RecordType::Txn || self.framed_len() <= max_framed {
            1
        } else {
            self.payload.len().div_ceil(piece_chunk_len(max_framed)) as u64
        }
    }
}

/// Payload bytes each piece of a split transaction carries: a piece (record header, number,
/// bytes) takes at most `max_framed`.
fn piece_chunk_len(max_framed: usize) -> usize {
    max_framed.saturating_sub(RECORD_HEADER_LEN + 4).max(64)
}

/// One record as written: a whole record, or a piece of a split transaction.
#[derive(Debug, Clone)]
pub(crate) struct Piece<'a> {
    pub kind: RecordType,
    /// A piece's number (part index, or the parts before an end), written before its bytes.
    pub number: Option<u32>,
    /// Borrowed from the record's payload, or encoded for this piece (a lazy payload's).
    pub chunk: std::borrow::Cow<'a, [u8]>,
}

impl Piece<'_> {
    pub fn framed_len(&self) -> usize {
        RECORD_HEADER_LEN + self.number.map_or(0, |_| 4) + self.chunk.len()
    }
}

/// Joins the pieces of split transactions as the log is read in LSN order: parts are held
/// until their end, which is handed out as one [`RecordType::Txn`] record at the end's LSN.
/// Parts without an end (a crash before it was written: never committed) are dropped when
/// another record or a new part 0 follows them, or the log ends. Pieces of a transaction
/// that began before the read began are skipped.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    payload: Vec<u8>,
    /// Parts held (`None`: no transaction open).
    parts: Option<u32>,
    /// LSN of the open transaction's part 0.
    first_lsn: Lsn,
    /// The first LSN of the first transaction whose end was read without its start (it
    /// began before the read).
    began_before: Option<Lsn>,
}

impl Reassembly {
    /// Takes the next record read; returns what the reader hands out, if anything.
    pub fn feed(&mut self, rec: LogRecord) -> Result<Option<LogRecord>, DecodeError> {
        let kind = rec.record.kind;
        if !matches!(kind, RecordType::TxnPart | RecordType::TxnEnd) {
            self.drop_unended(rec.lsn);
            return Ok(Some(rec));
        }
        let (number, chunk) = piece_parts(rec.record.payload.bytes())
            .ok_or_else(|| DecodeError("a transaction piece shorter than its number".into()))?;
        match (kind, self.parts) {
            (RecordType::TxnPart, _) if number == 0 => {
                self.drop_unended(rec.lsn);
                self.payload.clear();
                self.payload.extend_from_slice(chunk);
                self.parts = Some(1);
                self.first_lsn = rec.lsn;
                Ok(None)
            }
            // A transaction written in one piece: whole on its own.
            (RecordType::TxnEnd, _) if number == 0 => {
                self.drop_unended(rec.lsn);
                Ok(Some(LogRecord {
                    lsn: rec.lsn,
                    record: EncodedRecord {
                        kind: RecordType::Txn,
                        payload: chunk.to_vec().into(),
                    },
                }))
            }
            (RecordType::TxnPart, Some(held)) if number == held => {
                self.payload.extend_from_slice(chunk);
                self.parts = Some(held + 1);
                Ok(None)
            }
            (RecordType::TxnEnd, Some(held)) if number == held => {
                let mut payload = std::mem::take(&mut self.payload);
                payload.extend_from_slice(chunk);
                self.parts = None;
                Ok(Some(LogRecord {
                    lsn: rec.lsn,
                    record: EncodedRecord {
                        kind: RecordType::Txn,
                        payload: payload.into(),
                    },
                }))
            }
            // A transaction that began before the read: skipped.
            (kind, None) => {
                if kind == RecordType::TxnEnd && self.began_before.is_none() {
                    self.began_before = Some(rec.lsn.saturating_sub(number.into()));
                }
                Ok(None)
            }
            (_, Some(held)) => Err(DecodeError(format!(
                "transaction piece {number} at LSN {} follows {held} parts from LSN {}",
                rec.lsn, self.first_lsn
            ))),
        }
    }

    /// Where the first transaction whose end was skipped began (see [`LogIter::began_before`]).
    ///
    /// [`LogIter::began_before`]: crate::wal::LogIter::began_before
    pub fn began_before(&self) -> Option<Lsn> {
        self.began_before
    }

    /// The parts held, if any, without what the read before learned (`began_before`).
    pub fn holding_only(self) -> Self {
        Reassembly {
            began_before: None,
            ..self
        }
    }

    /// Whether parts are held without their end.
    pub fn holds_parts(&self) -> bool {
        self.parts.is_some()
    }

    /// Drops parts held without their end, before the record at `lsn`.
    fn drop_unended(&mut self, lsn: Lsn) {
        if let Some(held) = self.parts.take() {
            tracing::warn!(
                first_lsn = self.first_lsn,
                parts = held,
                before_lsn = lsn,
                "parts of a transaction without their end (never committed) are skipped"
            );
            self.payload = Vec::new();
        }
    }
}
