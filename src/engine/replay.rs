//! Replay at open: the log's records after LMDB's applied LSN, the newest that fit the
//! overlay's bound published to it, the older applied to LMDB first.

use std::collections::{HashMap, VecDeque};

use super::apply::{apply_growing, batch_cap, key_order};
use super::open::DbRecoveryReport;
use super::sequencer::{versions_cost, TxnWrites};
use super::{Engine, EngineState};
use crate::bytes::SharedBytes;
use crate::catalog::Table;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::overlay::Version;
use crate::spill::{Gather, Gathered};
use crate::store::{ApplyOps, WriteOp};
use crate::sync::DataArc as Arc;
use crate::sync::Ordering;
use crate::wal::log::op_stream::{OpStream, StreamError};
use crate::wal::log::txn_payload::{piece_parts, OpRef};
use crate::wal::{LogRecord, Op, Record, RecordType};

/// Operations a replayed record's keys and values are packed by at a time: the decoded
/// ones are freed as they are packed, so a large record is not held twice.
const REPLAY_PACK_OPS: usize = 1024;

/// Converts a record's logged operations: their keys and values packed into shared blocks
/// (as a commit's are), each table's name shared by its run of operations.
fn write_ops(ops: Vec<Op>) -> Vec<WriteOp> {
    let mut converted = Vec::with_capacity(ops.len());
    let mut last_table: Option<Arc<str>> = None;
    let mut ops = ops.into_iter();
    let mut chunk: Vec<Op> = Vec::new();
    loop {
        chunk.extend(ops.by_ref().take(REPLAY_PACK_OPS));
        if chunk.is_empty() {
            return converted;
        }
        write_ops_packed(&chunk, &mut last_table, &mut converted);
        chunk.clear();
    }
}

/// Appends `ops` converted to `out`, their keys and values packed together.
fn write_ops_packed(ops: &[Op], last_table: &mut Option<Arc<str>>, out: &mut Vec<WriteOp>) {
    let strings = ops.iter().flat_map(|op| match op {
        Op::Put { key, value, .. } => [Some(&key[..]), Some(&value[..])],
        Op::Delete { key, .. } => [Some(&key[..]), None],
        Op::CreateTable { .. } | Op::DropTable { .. } => [None, None],
    });
    let mut packed = crate::bytes::pack(strings.flatten());
    let mut next = || packed.next().expect("each key and value was packed");
    let mut shared_name = |name: &str| match &*last_table {
        Some(t) if &**t == name => t.clone(),
        _ => last_table.insert(Arc::from(name)).clone(),
    };
    out.extend(ops.iter().map(|op| match op {
        Op::Put { table, .. } => WriteOp::Put {
            table: shared_name(table),
            key: next(),
            value: next(),
        },
        Op::Delete { table, .. } => WriteOp::Delete {
            table: shared_name(table),
            key: next(),
        },
        Op::CreateTable { table } => WriteOp::CreateTable {
            table: shared_name(table),
        },
        Op::DropTable { table } => WriteOp::DropTable {
            table: shared_name(table),
        },
    }));
}

/// One replayed log record: its writes (none for a record that is not a transaction) and
/// what they cost in the overlay.
struct Replayed {
    lsn: Lsn,
    /// Bytes of the record's payload in the log.
    size: usize,
    writes: Arc<TxnWrites>,
    cost: usize,
}

/// Decodes the log's records after LMDB's applied LSN, in order. A split transaction is
/// read a piece at a time ([`SplitTxn`]). Parts of a transaction whose end never came (a
/// crash while it was written) can be left at the log's tail: they commit nothing, and
/// are handed out last as one record without writes at the tail's LSN, so replay, the
/// applied LSN and the log's next LSN all cover them.
fn replayed(engine: &Engine, from: Lsn) -> impl Iterator<Item = Result<Replayed>> + '_ {
    let mut log = engine.wal.read_from(from).unjoined();
    let mut last = from - 1;
    let mut split: Option<SplitTxn> = None;
    std::iter::from_fn(move || {
        for item in log.by_ref() {
            let step = item.and_then(|rec| match rec.record.kind() {
                RecordType::TxnPart | RecordType::TxnEnd => split_step(engine, &mut split, &rec),
                _ => {
                    drop_unended(&mut split, rec.lsn);
                    decode_replayed(rec).map(Some)
                }
            });
            match step {
                Ok(Some(rec)) => {
                    last = rec.lsn;
                    return Some(Ok(rec));
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        let through = log.read_through();
        // Parts without their end at the log's tail: the warning below says so.
        drop(split.take());
        if through <= last {
            return None;
        }
        tracing::warn!(
            after_lsn = last,
            through_lsn = through,
            "the log ends in parts of a transaction that was never committed; they are skipped"
        );
        last = through;
        Some(Ok(Replayed {
            lsn: through,
            size: 0,
            writes: Arc::new(TxnWrites::new(Vec::new(), 0, 0, false)),
            cost: 0,
        }))
    })
}

/// A record that does not decode.
fn undecodable(lsn: Lsn, e: impl std::fmt::Display) -> Error {
    Error::Corruption {
        segment: 0,
        offset: 0,
        reason: format!("record at LSN {lsn} does not decode: {e}"),
    }
}

/// One log record as replay takes it.
fn decode_replayed(rec: LogRecord) -> Result<Replayed> {
    let decoded = rec.record.decode().map_err(|e| undecodable(rec.lsn, e))?;
    let (ops, commit_micros): (Vec<WriteOp>, u64) = match decoded {
        Record::Txn(txn) => (write_ops(txn.ops), txn.commit_micros),
        _ => (Vec::new(), 0),
    };
    let cost = versions_cost(&ops);
    Ok(Replayed {
        lsn: rec.lsn,
        size: rec.record.payload.len(),
        writes: Arc::new(TxnWrites::new(ops, cost, commit_micros, false)),
        cost,
    })
}

/// A split transaction read a piece at a time: its operations decoded as the pieces come
/// and gathered within `txn_spill_bytes`, past which they go to spill runs, so it is never
/// in memory whole (neither its payload nor its operations), however large.
struct SplitTxn {
    first_lsn: Lsn,
    /// Pieces read.
    parts: u32,
    /// Bytes of its payload read.
    size: usize,
    ops: OpStream,
    gather: Gather,
}

/// Takes a piece of a split transaction (a `TxnPart` or `TxnEnd` record): the transaction
/// when it is its end. Pieces are numbered from 0 up to the end's; a piece after the first
/// of a transaction that began before the read is skipped, as a joining read skips it.
fn split_step(
    engine: &Engine,
    open: &mut Option<SplitTxn>,
    rec: &LogRecord,
) -> Result<Option<Replayed>> {
    let Some((number, chunk)) = piece_parts(rec.record.payload()) else {
        return Err(undecodable(
            rec.lsn,
            "a transaction piece shorter than its number",
        ));
    };
    match open {
        _ if number == 0 => {
            drop_unended(open, rec.lsn);
            *open = Some(SplitTxn {
                first_lsn: rec.lsn,
                parts: 0,
                size: 0,
                ops: OpStream::new(),
                gather: Gather::new(
                    crate::layout::spill_dir(&engine.path),
                    engine.cfg.txn_spill_bytes,
                ),
            });
        }
        Some(txn) if number == txn.parts => {}
        None => return Ok(None),
        Some(txn) => {
            return Err(undecodable(
                rec.lsn,
                format!(
                    "transaction piece {number} follows {} parts from LSN {}",
                    txn.parts, txn.first_lsn
                ),
            ))
        }
    }
    let txn = open.as_mut().expect("a transaction is open");
    txn.feed(chunk, rec.lsn)?;
    if rec.record.kind() == RecordType::TxnEnd {
        let txn = open.take().expect("a transaction is open");
        return txn.finish(rec.lsn).map(Some);
    }
    Ok(None)
}

/// Drops the parts of a transaction read without their end (never committed), before the
/// record at `lsn`; their spill runs go with them.
fn drop_unended(open: &mut Option<SplitTxn>, lsn: Lsn) {
    if let Some(txn) = open.take() {
        tracing::warn!(
            first_lsn = txn.first_lsn,
            parts = txn.parts,
            before_lsn = lsn,
            "parts of a transaction without their end (never committed) are skipped"
        );
    }
}

impl SplitTxn {
    /// Takes the chunk of its next piece, read at `lsn`.
    fn feed(&mut self, chunk: &[u8], lsn: Lsn) -> Result<()> {
        self.parts += 1;
        self.size += chunk.len();
        let gather = &mut self.gather;
        let fed = self.ops.feed(chunk, |op| match op {
            OpRef::Put { table, key, value } => Ok(gather.push(table, key, Some(value))?),
            OpRef::Delete { table, key } => Ok(gather.push(table, key, None)?),
            // Tables are created and dropped by commits of their own, never split.
            OpRef::CreateTable { .. } | OpRef::DropTable { .. } => Err(undecodable(
                lsn,
                "a split transaction creates or drops a table",
            )),
        });
        fed.map_err(|e| match e {
            StreamError::Decode(e) => undecodable(lsn, e),
            StreamError::Sink(e) => e,
        })
    }

    /// The transaction, its end read at `lsn`: in memory if it fit `txn_spill_bytes`,
    /// else spilled (applied to LMDB alone, as a spilled commit goes through).
    fn finish(self, lsn: Lsn) -> Result<Replayed> {
        let (commit_micros, _) = self.ops.finish().map_err(|e| undecodable(lsn, e))?;
        let writes = match self.gather.finish()? {
            Gathered::Memory(tables) => {
                let ops: Vec<WriteOp> = (tables.into_iter())
                    .flat_map(|(table, writes)| {
                        (writes.into_iter()).map(move |(key, value)| {
                            WriteOp::put_or_delete(table.clone(), key, value)
                        })
                    })
                    .collect();
                let cost = versions_cost(&ops);
                TxnWrites::new(ops, cost, commit_micros, false)
            }
            Gathered::Spilled(spilled) => TxnWrites::spilled(spilled, commit_micros),
        };
        Ok(Replayed {
            lsn,
            size: self.size,
            cost: writes.versions_cost,
            writes: Arc::new(writes),
        })
    }
}

/// Records replay applies to LMDB before `open` returns, gathered into sorted batches.
#[derive(Default)]
struct Batch {
    records: Vec<Replayed>,
    ops: usize,
    cost: usize,
}

impl Batch {
    /// Adds `rec` (newer than every record added before), applying the batch once it is
    /// as large as the applier's or its versions reach the overlay's bound.
    fn add(&mut self, engine: &Engine, rec: Replayed, report: &mut DbRecoveryReport) -> Result<()> {
        self.ops += rec.writes.ops.len();
        self.cost += rec.cost;
        self.records.push(rec);
        if self.ops >= batch_cap(engine, usize::MAX) || self.cost >= engine.cfg.overlay_max_bytes {
            self.apply(engine, report)?;
        }
        Ok(())
    }

    /// Applies the records added, if any.
    fn apply(&mut self, engine: &Engine, report: &mut DbRecoveryReport) -> Result<()> {
        let Some(last) = self.records.last().map(|r| r.lsn) else {
            return Ok(());
        };
        apply_at_open(engine, &self.records)?;
        report.applied_records += self.records.len() as u64;
        report.applied_lsn = last;
        *self = Batch::default();
        Ok(())
    }
}

/// Replays every log record after LMDB's applied LSN, in one read of the log. The newest
/// records whose versions fit in `overlay_max_bytes` (the running engine's own bound, so
/// replay never needs more memory than the engine held) are published to the overlay,
/// where reads see them and the applier applies them after `open` returns; older ones are
/// applied to LMDB first, in sorted batches, as newer ones push them out of that window. A
/// spilled transaction (one past `txn_spill_bytes`) is applied alone, after every record
/// before it, as it went through when committed.
pub(super) fn replay(engine: &Engine, report: &mut DbRecoveryReport) -> Result<()> {
    let bound = engine.cfg.overlay_max_bytes;
    let from = report.applied_lsn_at_open + 1;
    // The newest records, their versions at most `bound` in all.
    let mut window: VecDeque<Replayed> = VecDeque::new();
    let mut window_cost = 0usize;
    let mut batch = Batch::default();
    let mut last = report.applied_lsn_at_open;
    for item in replayed(engine, from) {
        let rec = item?;
        report.replayed_records += 1;
        report.replayed_bytes += rec.size as u64;
        last = rec.lsn;
        if rec.writes.spilled.is_some() {
            for older in window.drain(..) {
                batch.add(engine, older, report)?;
            }
            window_cost = 0;
            batch.apply(engine, report)?;
            let mut alone = Batch::default();
            alone.records.push(rec);
            alone.apply(engine, report)?;
            continue;
        }
        window_cost += rec.cost;
        window.push_back(rec);
        while window_cost > bound {
            let older = window
                .pop_front()
                .expect("a window over its bound has records");
            window_cost -= older.cost;
            batch.add(engine, older, report)?;
        }
    }
    batch.apply(engine, report)?;
    let written = engine.wal.written_lsn();
    if written != last {
        return Err(Error::Inconsistent {
            path: engine.path.clone(),
            reason: format!("replay ended at LSN {last} but the log holds LSN {written}"),
        });
    }
    report.overlay_records += window.len() as u64;
    report.overlay_bytes += publish_replayed(&engine.state, window.into()) as u64;
    report.last_lsn = last;
    Ok(())
}

/// What one table's share of a replay does to it, in LSN order.
enum TableEvent {
    Exists(Lsn),
    Dropped(Lsn),
    Version(SharedBytes, Version),
}

/// Publishes replayed records as the flusher publishes commits (versions into the overlay,
/// the writes onto the apply queue, then the visible LSN), but in bulk: each table is
/// locked once and its overlay's ordered index built in one pass. Returns the overlay bytes.
fn publish_replayed(sh: &EngineState, records: Vec<Replayed>) -> usize {
    let Some(last) = records.last().map(|r| r.lsn) else {
        return 0;
    };
    let mut tables: HashMap<Arc<str>, Vec<TableEvent>> = HashMap::new();
    let (mut bytes, mut versions) = (0, 0u64);
    for rec in &records {
        for op in &rec.writes.ops {
            let lsn = rec.lsn;
            let event = match op {
                WriteOp::Put { key, value, .. } => {
                    sh.catalog.get_or_add(op.table());
                    TableEvent::Version(
                        key.clone(),
                        Version {
                            lsn,
                            value: Some(value.clone()),
                        },
                    )
                }
                // A delete from a table never known changes nothing visible.
                WriteOp::Delete { key, .. } if sh.catalog.get(op.table()).is_some() => {
                    TableEvent::Version(key.clone(), Version { lsn, value: None })
                }
                WriteOp::Delete { .. } => continue,
                WriteOp::CreateTable { .. } => {
                    sh.catalog.get_or_add(op.table());
                    TableEvent::Exists(lsn)
                }
                WriteOp::DropTable { .. } => TableEvent::Dropped(lsn),
            };
            if matches!(event, TableEvent::Version(..)) {
                bytes += op.overlay_cost();
                versions += 1;
            }
            tables.entry(op.table().clone()).or_default().push(event);
        }
    }
    for (name, events) in tables {
        let Some(table) = sh.catalog.get(&name) else {
            continue;
        };
        let mut st = table.state.write();
        let mut new_versions = Vec::new();
        for event in events {
            match event {
                TableEvent::Exists(lsn) => Table::note_exists(&mut st, lsn),
                TableEvent::Dropped(lsn) => Table::note_dropped(&mut st, lsn),
                TableEvent::Version(key, version) => {
                    // A put makes its table exist, as `publish` notes it.
                    if version.value.is_some() {
                        Table::note_exists(&mut st, version.lsn);
                    }
                    new_versions.push((key, version));
                }
            }
        }
        st.overlay.extend(new_versions);
    }
    sh.overlay_bytes.fetch_add(bytes, Ordering::Relaxed);
    sh.stats
        .overlay_versions
        .fetch_add(versions, Ordering::Relaxed);
    // Visible before the applier can take any of it, as `publish` orders it.
    sh.visible_lsn.store(last, Ordering::Release);
    for rec in records {
        sh.enqueue_for_apply(rec.lsn, rec.writes);
    }
    bytes
}

/// Applies replayed records to LMDB in one sorted batch, before `open` returns: records
/// with their operations in memory, or one spilled record alone (read from its runs).
fn apply_at_open(engine: &Engine, batch: &[Replayed]) -> Result<()> {
    let Some(last) = batch.last().map(|r| r.lsn) else {
        return Ok(());
    };
    if let [rec] = batch {
        if let Some(spilled) = &rec.writes.spilled {
            apply_growing(
                engine,
                ApplyOps::Spilled(rec.lsn, spilled),
                last,
                || true,
                &|| true,
            )?;
            fail::fail_point!("replay-batch-applied");
            for table in spilled.tables() {
                let catalogued = engine.state.catalog.get_or_add(&table.name);
                if table.put_span.is_some() {
                    Table::note_exists(&mut catalogued.state.write(), rec.lsn);
                }
            }
            return Ok(());
        }
    }
    let mut ops: Vec<(Lsn, &WriteOp)> = batch
        .iter()
        .flat_map(|r| r.writes.ops.iter().map(move |op| (r.lsn, op)))
        .collect();
    key_order(&mut ops);
    apply_growing(engine, ApplyOps::Listed(&ops), last, || true, &|| true)?;
    fail::fail_point!("replay-batch-applied");
    for rec in batch {
        for op in &rec.writes.ops {
            let table = engine.state.catalog.get_or_add(op.table());
            let mut st = table.state.write();
            match op {
                WriteOp::Put { .. } | WriteOp::CreateTable { .. } => {
                    Table::note_exists(&mut st, rec.lsn)
                }
                WriteOp::DropTable { .. } => Table::note_dropped(&mut st, rec.lsn),
                WriteOp::Delete { .. } => {}
            }
        }
    }
    Ok(())
}
