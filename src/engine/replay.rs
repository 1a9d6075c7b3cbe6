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
use crate::store::{ApplyOps, WriteOp};
use crate::sync::DataArc as Arc;
use crate::sync::Ordering;
use crate::wal::{LogRecord, Op, Record};

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

/// Decodes the log's records after LMDB's applied LSN, in order. Parts of a transaction
/// whose end never came (a crash while it was written) can be left at the log's tail:
/// they commit nothing, and are handed out last as one record without writes at the
/// tail's LSN, so replay, the applied LSN and the log's next LSN all cover them.
fn replayed(engine: &Engine, from: Lsn) -> impl Iterator<Item = Result<Replayed>> + '_ {
    let mut log = engine.wal.read_from(from);
    let mut last = from - 1;
    std::iter::from_fn(move || {
        if let Some(item) = log.next() {
            let rec = item.and_then(decode_replayed);
            if let Ok(rec) = &rec {
                last = rec.lsn;
            }
            return Some(rec);
        }
        let through = log.read_through();
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

/// One log record as replay takes it.
fn decode_replayed(rec: LogRecord) -> Result<Replayed> {
    let decoded = rec.record.decode().map_err(|e| Error::Corruption {
        segment: 0,
        offset: 0,
        reason: format!("record at LSN {} does not decode: {e}", rec.lsn),
    })?;
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

/// Replays every log record after LMDB's applied LSN. The newest records whose versions fit
/// in `overlay_max_bytes` (the running engine's own bound, so replay never needs more
/// memory than the engine held) are published to the overlay, where reads see them and
/// the applier applies them after `open` returns; older ones are applied to LMDB first, in
/// sorted batches. When the whole log fits (always at the defaults after a crash of an
/// engine that kept its bound) it is read once; otherwise a first pass finds where the
/// overlay's part begins and a second applies what comes before it.
pub(super) fn replay(engine: &Engine, report: &mut DbRecoveryReport) -> Result<()> {
    let bound = engine.cfg.overlay_max_bytes;
    let from = report.applied_lsn_at_open + 1;
    // The newest records' LSNs and costs, at most `bound` in all, and while nothing older
    // had to leave them, the records themselves.
    let mut window: VecDeque<(Lsn, usize)> = VecDeque::new();
    let mut window_cost = 0usize;
    let mut kept: Option<Vec<Replayed>> = Some(Vec::new());
    // Records at or below it go to LMDB directly.
    let mut split = report.applied_lsn_at_open;
    let mut last = report.applied_lsn_at_open;
    for item in replayed(engine, from) {
        let rec = item?;
        report.replayed_records += 1;
        report.replayed_bytes += rec.size as u64;
        last = rec.lsn;
        window.push_back((rec.lsn, rec.cost));
        window_cost += rec.cost;
        while window_cost > bound {
            let (lsn, cost) = window
                .pop_front()
                .expect("a window over its bound has records");
            window_cost -= cost;
            split = lsn;
            kept = None;
        }
        if let Some(kept) = &mut kept {
            kept.push(rec);
        }
    }
    drop(window);
    let written = engine.wal.written_lsn();
    if written != last {
        return Err(Error::Inconsistent {
            path: engine.path.clone(),
            reason: format!("replay ended at LSN {last} but the log holds LSN {written}"),
        });
    }
    let mut publish_all = |records: &mut dyn Iterator<Item = Result<Replayed>>| -> Result<()> {
        let records = records.collect::<Result<Vec<Replayed>>>()?;
        report.overlay_records += records.len() as u64;
        report.overlay_bytes += publish_replayed(&engine.state, records) as u64;
        Ok(())
    };
    match kept {
        Some(records) => publish_all(&mut records.into_iter().map(Ok))?,
        None => {
            let mut records = replayed(engine, from).peekable();
            let mut batch: Vec<Replayed> = Vec::new();
            let (mut batch_ops, mut batch_cost) = (0, 0);
            while let Some(rec) = records.next_if(|r| r.as_ref().map_or(true, |r| r.lsn <= split)) {
                let rec = rec?;
                batch_ops += rec.writes.ops.len();
                batch_cost += rec.cost;
                batch.push(rec);
                if batch_ops >= batch_cap(engine, usize::MAX) || batch_cost >= bound {
                    apply_at_open(engine, &batch)?;
                    report.applied_records += batch.len() as u64;
                    (batch, batch_ops, batch_cost) = (Vec::new(), 0, 0);
                }
            }
            if !batch.is_empty() {
                apply_at_open(engine, &batch)?;
                report.applied_records += batch.len() as u64;
            }
            publish_all(&mut records)?;
        }
    }
    report.applied_lsn = split;
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

/// Applies replayed records to LMDB in one sorted batch, before `open` returns.
fn apply_at_open(engine: &Engine, batch: &[Replayed]) -> Result<()> {
    let Some(last) = batch.last().map(|r| r.lsn) else {
        return Ok(());
    };
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
