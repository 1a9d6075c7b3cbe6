//! Opening: lock the directory, open LMDB, recover the log, replay what LMDB lacks, and
//! start the engine's threads.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use super::admit::admitter_loop;
use super::apply::{applier_loop, apply_growing, batch_cap, key_order};
use super::checkpoint::{checkpoint_loop, checkpoint_now};
use super::scrub::scrubber_loop;
use super::sequencer::{versions_cost, EngineSequencer, TxnWrites};
use super::{supervise, Engine, EngineState, GiveUp, Running, RunningGuard, Threads};
use crate::bytes::SharedBytes;
use crate::catalog::Table;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::overlay::Version;
use crate::store::{ApplyOps, Store, WriteOp};
use crate::sync::DataArc as Arc;
use crate::sync::{AtomicBool, Mutex, Ordering, ThreadBuilder};
use crate::wal::{LogRecord, Op, Record, RecoveryReport, Wal};

/// What opening the database found and did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbRecoveryReport {
    /// The log's own recovery (segments, torn tail cut).
    pub wal: RecoveryReport,
    /// LMDB's applied LSN found at open: replay started after it.
    pub applied_lsn_at_open: Lsn,
    /// Log records after it, replayed.
    pub replayed_records: u64,
    /// Payload bytes of those records in the log.
    pub replayed_bytes: u64,
    /// Of the replayed records, those applied to LMDB before `open` returned: the oldest,
    /// when the rest did not fit in `overlay_max_bytes`.
    pub applied_records: u64,
    /// Of the replayed records, those published to the overlay: visible at once, applied to
    /// LMDB in the background after `open` returns (see [`Db::catch_up`](crate::Db::catch_up)).
    pub overlay_records: u64,
    /// Overlay bytes (decoded versions, as `overlay_max_bytes` counts them) of those.
    pub overlay_bytes: u64,
    /// LMDB's applied LSN when `open` returned.
    pub applied_lsn: Lsn,
    /// The last LSN replayed: every commit the log holds, visible when `open` returns.
    pub last_lsn: Lsn,
    /// Time until `open` returned, the log's recovery included.
    pub duration: Duration,
}

/// Recovery's background part: the overlay's share of the replay, which the applier
/// applies after `open` returns.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// Set until LMDB holds every replayed commit.
    pending: AtomicBool,
    /// When `open` began, and the last LSN it replayed.
    from: Mutex<Option<(Instant, Lsn)>>,
    /// How long after `open` began LMDB held every replayed commit.
    took: Mutex<Option<Duration>>,
}

impl CatchUp {
    /// `open` began at `started` and returned after `opened_in`, with LMDB at `applied`.
    fn start(&self, started: Instant, opened_in: Duration, last: Lsn, applied: Lsn) {
        *self.from.lock() = Some((started, last));
        if applied >= last {
            *self.took.lock() = Some(opened_in);
        } else {
            self.pending.store(true, Ordering::Release);
        }
    }

    /// Told by the applier that LMDB holds every commit through `applied`.
    pub(crate) fn applied(&self, applied: Lsn) {
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        let Some((started, last)) = *self.from.lock() else {
            return;
        };
        if applied >= last {
            let took = started.elapsed();
            *self.took.lock() = Some(took);
            self.pending.store(false, Ordering::Release);
            tracing::info!(
                last_lsn = last,
                micros = took.as_micros() as u64,
                "caught up: LMDB holds every commit replayed at open"
            );
        }
    }

    /// How long after `open` began LMDB held every commit replayed at open; `None` while
    /// the applier is still applying them.
    pub(crate) fn took(&self) -> Option<Duration> {
        *self.took.lock()
    }
}

impl Running {
    /// Opens (creating, or recovering) the database in `path`, the log's files behind `fs`.
    pub(crate) fn open(
        path: &Path,
        cfg: Config,
        fs: crate::wal::fs::FsRef,
        lmdb: Option<crate::store::LmdbObserverRef>,
    ) -> Result<Running> {
        cfg.validate()?;
        let span = tracing::info_span!("walmdb.open", path = %path.display());
        let _entered = span.enter();
        let started = Instant::now();
        let path = path.to_owned();
        crate::layout::create_private_dir(&path)?;
        let lock = lock_dir(&path)?;
        let state = Arc::new(EngineState::default());
        let (store, opened) =
            Store::open(&crate::layout::data_dir(&path), &cfg, &state.catalog, lmdb)?;
        // After a process crash LMDB's newest commits may be in the page cache only
        // (`NO_META_SYNC`): make them durable before the log's recovery retires the
        // segments they cover, so the checkpoint LSN below is true.
        store.force_sync()?;
        // A crashed open may have created these without making their entries durable.
        crate::store::sync_dir(&crate::layout::data_dir(&path))?;
        crate::store::sync_dir(&path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The parent is the user's: one we may not read is left as it is.
            match crate::store::sync_dir(parent) {
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    tracing::warn!(dir = %parent.display(), "cannot sync the database's parent directory");
                }
                other => other?,
            }
        }
        let recovery = tracing::info_span!(
            "walmdb.recovery",
            applied_lsn = opened.applied_lsn,
            replayed = tracing::field::Empty,
            last_lsn = tracing::field::Empty
        );
        let recovering = recovery.enter();
        let wal = Wal::open_with(
            fs,
            &crate::layout::wal_dir(&path),
            cfg.wal.clone(),
            Some(opened.applied_lsn),
            EngineSequencer::new(state.clone(), cfg.max_tables, cfg.max_conflict_checks),
        )?;
        let mut report = DbRecoveryReport {
            wal: wal.recovery_report().clone(),
            applied_lsn_at_open: opened.applied_lsn,
            replayed_records: 0,
            replayed_bytes: 0,
            applied_records: 0,
            overlay_records: 0,
            overlay_bytes: 0,
            applied_lsn: opened.applied_lsn,
            last_lsn: opened.applied_lsn,
            duration: Duration::ZERO,
        };
        let mut engine = Engine {
            path,
            cfg,
            state,
            store,
            wal,
            report: report.clone(),
            lock: crate::sync::Mutex::new(Some(lock)),
        };
        replay(&engine, &mut report)?;
        recovery.record("replayed", report.replayed_records);
        recovery.record("last_lsn", report.last_lsn);
        drop(recovering);
        report.duration = started.elapsed();
        engine.report = report;
        let sh = &engine.state;
        sh.visible_lsn
            .store(engine.report.last_lsn, Ordering::Release);
        sh.applied_lsn
            .store(engine.report.applied_lsn, Ordering::Release);
        sh.checkpoint_lsn
            .store(opened.applied_lsn, Ordering::Release);
        let report = &engine.report;
        sh.catch_up.start(
            started,
            report.duration,
            report.last_lsn,
            report.applied_lsn,
        );
        let engine = Arc::new(engine);
        if engine.report.applied_records > 0 {
            checkpoint_now(&engine)?;
        }
        tracing::info!(
            path = %engine.path.display(),
            applied_lsn_at_open = engine.report.applied_lsn_at_open,
            replayed = engine.report.replayed_records,
            replayed_bytes = engine.report.replayed_bytes,
            applied_at_open = engine.report.applied_records,
            to_overlay = engine.report.overlay_records,
            cut = engine.report.wal.cut.is_some(),
            micros = engine.report.duration.as_micros() as u64,
            "opened the database"
        );
        engine.state.applier_running.store(true, Ordering::Release);
        engine
            .state
            .checkpointer_running
            .store(true, Ordering::Release);
        let applier = {
            let engine = engine.clone();
            ThreadBuilder::new()
                .name("walmdb-applier".into())
                .spawn(move || {
                    let _running = RunningGuard(&engine.state.applier_running);
                    supervise(&engine.state, "applier", GiveUp::FailEngine, || {
                        applier_loop(&engine)
                    })
                })?
        };
        let checkpointer = {
            let engine = engine.clone();
            ThreadBuilder::new()
                .name("walmdb-checkpoint".into())
                .spawn(move || {
                    let _running = RunningGuard(&engine.state.checkpointer_running);
                    supervise(&engine.state, "checkpoint", GiveUp::FailEngine, || {
                        checkpoint_loop(&engine)
                    })
                })?
        };
        let admitter_engine = engine.clone();
        let running = Running::new(
            engine.clone(),
            Threads {
                applier,
                checkpointer,
                admitter: None,
                scrubber: None,
            },
        );
        // On an error `running` drops, which stops the other threads.
        let admitter = ThreadBuilder::new()
            .name("walmdb-admitter".into())
            .spawn(move || {
                supervise(
                    &admitter_engine.state,
                    "admitter",
                    GiveUp::FailEngine,
                    || admitter_loop(&admitter_engine),
                );
                admitter_engine.state.admitter_ended();
            })?;
        running.set_thread(|t| t.admitter = Some(admitter));
        for name in &engine.cfg.tables {
            engine.create_table(name)?;
        }
        if let Some(interval) = engine.cfg.scrub_interval {
            let engine = Arc::clone(&engine);
            engine.state.scrubber_running.store(true, Ordering::Release);
            // On an error `running` drops, which stops the other threads.
            let scrubber =
                ThreadBuilder::new()
                    .name("walmdb-scrubber".into())
                    .spawn(move || {
                        let _running = RunningGuard(&engine.state.scrubber_running);
                        supervise(&engine.state, "scrubber", GiveUp::EndThread, || {
                            scrubber_loop(&engine, interval)
                        })
                    })?;
            running.set_thread(|t| t.scrubber = Some(scrubber));
        }
        Ok(running)
    }
}

/// Takes the exclusive lock on `<dir>/LOCK` (an `flock`: the kernel drops it when the
/// process dies), so two engines never write one log. A lock held is tried again for
/// [`LOCK_RETRY`]: a child process this process forks holds a copy of the lock's
/// descriptor until it runs its program, so a handle closed while a thread spawns a
/// process can keep the lock a moment after `close` returns.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = crate::layout::lock_file(dir);
    let file = crate::layout::open_private(&path)?;
    let deadline = crate::limits::deadline(Instant::now(), LOCK_RETRY);
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: dir.to_owned(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Io(crate::layout::io_at(&path)(e)))
            }
        }
    }
}

/// How long opening tries again for a held lock before `Error::Locked`.
const LOCK_RETRY: Duration = Duration::from_millis(100);

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
fn replay(engine: &Engine, report: &mut DbRecoveryReport) -> Result<()> {
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
