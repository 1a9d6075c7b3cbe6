//! Opening: lock the directory, open LMDB, recover the log, replay what LMDB lacks, and
//! start the engine's threads.

use std::path::Path;
use std::time::{Duration, Instant};

use super::admit::admitter_loop;
use super::apply::applier_loop;
use super::checkpoint::{checkpoint_loop, checkpoint_now};
use super::scrub::scrubber_loop;
use super::sequencer::EngineSequencer;
use super::{supervise, Engine, EngineState, GiveUp, Running, RunningGuard, Threads};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::store::Store;
use crate::sync::DataArc as Arc;
use crate::sync::{AtomicBool, Mutex, Ordering, ThreadBuilder};
use crate::wal::{RecoveryReport, Wal};

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
        super::replay::replay(&engine, &mut report)?;
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
