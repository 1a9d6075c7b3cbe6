//! Opening: lock the directory, open LMDB, recover the log, replay what LMDB lacks, and
//! start the engine's threads.

use std::path::Path;
use std::time::{Duration, Instant};

use super::apply::{applier_loop, apply_growing, batch_cap, key_order};
use super::checkpoint::{checkpoint_loop, checkpoint_now};
use super::sequencer::EngineSequencer;
use super::{Engine, EngineState, Running, RunningGuard};
use crate::catalog::Table;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::store::{Store, WriteOp};
use crate::sync::DataArc as Arc;
use crate::sync::{Ordering, ThreadBuilder};
use crate::wal::{Op, Record, RecoveryReport, Wal};

/// What opening the database found and did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbRecoveryReport {
    /// The log's own recovery (segments, torn tail cut).
    pub wal: RecoveryReport,
    /// LMDB's applied LSN found at open: replay started after it.
    pub applied_lsn_at_open: Lsn,
    /// Records replayed into LMDB.
    pub replayed_records: u64,
    /// Payload bytes of those records.
    pub replayed_bytes: u64,
    /// The last LSN replayed (the applied LSN after recovery).
    pub last_lsn: Lsn,
    /// Time recovery took, the log's included.
    pub duration: Duration,
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
        std::fs::create_dir_all(&path)?;
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
            EngineSequencer::new(state.clone(), cfg.max_tables),
        )?;
        let mut report = DbRecoveryReport {
            wal: wal.recovery_report().clone(),
            applied_lsn_at_open: opened.applied_lsn,
            replayed_records: 0,
            replayed_bytes: 0,
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
            lock,
        };
        replay(&engine, &mut report)?;
        recovery.record("replayed", report.replayed_records);
        recovery.record("last_lsn", report.last_lsn);
        drop(recovering);
        report.duration = started.elapsed();
        engine.report = report;
        let last = engine.report.last_lsn;
        let sh = &engine.state;
        sh.visible_lsn.store(last, Ordering::Release);
        sh.applied_lsn.store(last, Ordering::Release);
        sh.checkpoint_lsn
            .store(opened.applied_lsn, Ordering::Release);
        let engine = Arc::new(engine);
        if engine.report.replayed_records > 0 {
            checkpoint_now(&engine)?;
        }
        tracing::info!(
            path = %engine.path.display(),
            applied_lsn_at_open = engine.report.applied_lsn_at_open,
            replayed = engine.report.replayed_records,
            replayed_bytes = engine.report.replayed_bytes,
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
                    applier_loop(&engine)
                })?
        };
        let checkpointer = {
            let engine = engine.clone();
            ThreadBuilder::new()
                .name("walmdb-checkpoint".into())
                .spawn(move || {
                    let _running = RunningGuard(&engine.state.checkpointer_running);
                    checkpoint_loop(&engine)
                })?
        };
        let running = Running {
            engine: Some(engine),
            applier: Some(applier),
            checkpointer: Some(checkpointer),
        };
        let engine = running.engine();
        for name in &engine.cfg.tables {
            engine.create_table(name)?;
        }
        Ok(running)
    }
}

/// Takes the exclusive lock on `<dir>/LOCK` (an `flock`: the kernel drops it when the
/// process dies), so two engines never write one log.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = crate::layout::lock_file(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Io(e)),
    }
}

/// Converts a logged operation.
fn write_op(op: Op) -> WriteOp {
    match op {
        Op::Put { table, key, value } => WriteOp::Put {
            table: Arc::from(table),
            key: Arc::from(key),
            value: Arc::from(value),
        },
        Op::Delete { table, key } => WriteOp::Delete {
            table: Arc::from(table),
            key: Arc::from(key),
        },
        Op::CreateTable { table } => WriteOp::CreateTable {
            table: Arc::from(table),
        },
        Op::DropTable { table } => WriteOp::DropTable {
            table: Arc::from(table),
        },
    }
}

/// Replays every log record after LMDB's applied LSN into LMDB, in batches.
fn replay(engine: &Engine, report: &mut DbRecoveryReport) -> Result<()> {
    let from = report.applied_lsn_at_open + 1;
    let mut batch: Vec<(Lsn, WriteOp)> = Vec::new();
    let mut last = report.applied_lsn_at_open;
    let flush = |batch: &mut Vec<(Lsn, WriteOp)>, last: Lsn| -> Result<()> {
        let mut ops: Vec<(Lsn, &WriteOp)> = batch.iter().map(|(l, op)| (*l, op)).collect();
        key_order(&mut ops);
        apply_growing(engine, &ops, last, || true)?;
        fail::fail_point!("replay-batch-applied");
        for (lsn, op) in batch.iter() {
            let table = engine.state.catalog.get_or_add(op.table());
            let mut st = table.state.write();
            match op {
                WriteOp::Put { .. } | WriteOp::CreateTable { .. } => {
                    Table::note_exists(&mut st, *lsn)
                }
                WriteOp::DropTable { .. } => Table::note_dropped(&mut st, *lsn),
                WriteOp::Delete { .. } => {}
            }
        }
        batch.clear();
        Ok(())
    };
    for item in engine.wal.read_from(from) {
        let rec = item?;
        report.replayed_records += 1;
        report.replayed_bytes += rec.record.payload().len() as u64;
        last = rec.lsn;
        let decoded = rec.record.decode().map_err(|e| Error::Corruption {
            segment: 0,
            offset: 0,
            reason: format!("record at LSN {} does not decode: {e}", rec.lsn),
        })?;
        if let Record::Txn(txn) = decoded {
            batch.extend(txn.ops.into_iter().map(|op| (rec.lsn, write_op(op))));
        }
        if batch.len() >= batch_cap(engine, usize::MAX) {
            flush(&mut batch, last)?;
        }
    }
    if last > report.applied_lsn_at_open {
        flush(&mut batch, last)?;
    }
    let written = engine.wal.written_lsn();
    if written != last {
        return Err(Error::Inconsistent {
            path: engine.path.clone(),
            reason: format!("replay ended at LSN {last} but the log holds LSN {written}"),
        });
    }
    report.last_lsn = last;
    Ok(())
}
