//! The write-ahead log: the group-commit pipeline over the log's files ([`log`]).
//!
//! [`Wal::open`] recovers the log (see `docs/recovery.md`), then starts the flusher.
//! Committers call [`Wal::commit`]; the bounded [`queue`](CommitQueue) hands their requests
//! to the flusher, which admits them through the [`Sequencer`], writes and syncs groups, and
//! answers each through its [`Completion`]. Dependencies point down: this module uses
//! `log`, never the other way.

mod completer;
mod completion;
mod flusher;
pub mod log;
mod preparer;
mod queue;
mod read;
mod resume;
mod sequencer;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use completer::Completer;
pub use completion::CommitFuture;
pub(crate) use completion::{Completion, Responder};
pub(crate) use flusher::{spawn_flusher, Core, LogWriter};
pub(crate) use log::archive::archive_segment;
pub use log::fs;
pub use log::record::{
    EncodedRecord, LogRecord, Lsn, Op, Record, RecordType, TxnRecord, FORMAT_VERSION,
};
pub use log::recovery::{CutTail, RecoveryReport, SegmentMeta};
pub(crate) use queue::CommitQueue;
pub use read::LogIter;
pub(crate) use sequencer::Request;
pub use sequencer::{NoSequencer, Sequencer};

use crate::config::{Durability, WalConfig};
use crate::error::{Error, Result};
use crate::lsn::Lineage;
use crate::sync::{Arc, AtomicBool, AtomicU64, Condvar, JoinHandle, Mutex, Ordering, StatCounter};
use log::fs::{FsRef, StdFs};

/// Live segments and spare files, shared by the flusher (rotation) and retirement.
#[derive(Debug, Default)]
pub(crate) struct SegmentSet {
    pub live: Vec<SegmentMeta>,
    pub spares: Vec<PathBuf>,
}

/// Counters kept by the flusher.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub commits: StatCounter,
    pub groups: StatCounter,
    pub syncs: StatCounter,
    pub sync_micros: StatCounter,
    pub bytes_written: StatCounter,
    pub record_bytes: StatCounter,
    pub rotations: StatCounter,
    pub segments_retired: StatCounter,
    pub segments_archived: StatCounter,
    pub sync_latency: crate::histogram::AtomicHistogram<{ crate::histogram::LATENCY_BUCKETS }>,
    pub group_size: crate::histogram::AtomicHistogram<{ crate::histogram::COUNT_BUCKETS }>,
    /// `sync::monotonic_micros()` at the last successful sync; 0 before the first.
    pub last_sync_at: StatCounter,
    pub backpressure_refusals: StatCounter,
    /// Times the flusher was restarted after a panic.
    pub flusher_restarts: StatCounter,
}

/// State shared by the log handle and the flusher thread.
#[derive(Debug)]
pub(crate) struct PipelineState<T> {
    pub queue: CommitQueue<Request<T>>,
    pub written_lsn: AtomicU64,
    pub durable_lsn: AtomicU64,
    pub segments: Mutex<SegmentSet>,
    /// Notified (with `segments` held or just released) when the last spare is taken.
    pub spare_wanted: Condvar,
    /// Set under the `segments` lock to stop the preparer.
    pub preparer_stop: AtomicBool,
    pub stats: Stats,
    /// The panic of the flusher's last restart.
    pub last_flusher_panic: Mutex<Option<String>>,
    poisoned: AtomicBool,
    poison_cause: Mutex<Option<String>>,
    dead: Mutex<Option<String>>,
}

impl<T> PipelineState<T> {
    /// Turns the sticky poisoned state on; the first cause is kept.
    pub(crate) fn poison(&self, cause: String) {
        let mut slot = self.poison_cause.lock();
        if slot.is_none() {
            tracing::error!(cause = %cause, "the write-ahead log is poisoned; reopen to recover");
            *slot = Some(cause);
        }
        self.poisoned.store(true, Ordering::SeqCst);
    }

    /// `Error::Poisoned` when the log is poisoned.
    pub(crate) fn poison_error(&self) -> Option<Error> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return None;
        }
        let cause = self.poison_cause.lock().clone().unwrap_or_default();
        Some(Error::Poisoned { cause })
    }

    #[cfg_attr(walmdb_loom, allow(dead_code))]
    pub(crate) fn mark_dead(&self, msg: String) {
        *self.dead.lock() = Some(msg.clone());
        self.poison(format!("the flusher thread died: {msg}"));
    }

    fn dead_error(&self) -> Option<Error> {
        // A dead flusher poisoned the log first.
        if !self.poisoned.load(Ordering::SeqCst) {
            return None;
        }
        self.dead.lock().clone().map(Error::FlusherDied)
    }
}

/// A snapshot of the log's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WalStats {
    /// Commits written.
    pub commits: u64,
    /// Groups written.
    pub groups: u64,
    /// Syncs of segment data.
    pub syncs: u64,
    /// Total time spent in those syncs, microseconds.
    pub sync_micros: u64,
    /// Bytes written to segments (frames, after compression).
    pub bytes_written: u64,
    /// Record payload bytes committed (before framing and compression).
    pub record_bytes: u64,
    /// Segment rotations.
    pub rotations: u64,
    /// Segments retired by `retire_below`.
    pub segments_retired: u64,
    /// The highest LSN written.
    pub written_lsn: Lsn,
    /// The highest LSN durable.
    pub durable_lsn: Lsn,
    /// Commits waiting in the queue.
    pub queued_commits: usize,
    /// Bytes waiting in the queue.
    pub queued_bytes: usize,
    /// Commits that found the queue full and waited for space.
    pub queue_full_waits: u64,
}

/// A segment a backup copied.
#[derive(Debug, Clone)]
pub(crate) struct CopiedSegment {
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
    pub last_lsn: Lsn,
}

/// What `Db::metrics` reads of the log beyond `WalStats`.
#[derive(Debug, Clone)]
pub(crate) struct WalDetail {
    pub sync_latency: crate::histogram::Histogram,
    pub group_size: crate::histogram::Histogram,
    pub last_sync_age: Option<std::time::Duration>,
    pub queue_full_waits: u64,
    pub segments_archived: u64,
    pub backpressure_refusals: u64,
    pub segments_live: usize,
    pub segments_spare: usize,
    pub flusher_restarts: u64,
    pub last_flusher_panic: Option<String>,
    /// Quarantine files opening wrote.
    pub quarantined: u64,
}

/// A request the queue did not take, with why (boxed: it is large, and rare).
pub(crate) type NotQueued<T> = Box<(Error, Request<T>)>;

/// A commit that was queued and not yet answered; see [`Wal::submit`].
#[derive(Debug)]
#[must_use = "a commit is only known to have happened once wait() returns Ok"]
pub struct CommitHandle {
    completion: Arc<Completion>,
}

impl CommitHandle {
    /// Blocks until the flusher answers: the commit's LSN, or why it failed.
    pub fn wait(self) -> Result<Lsn> {
        self.completion.wait()
    }

    /// The answer, if it has arrived.
    pub fn try_wait(&self) -> Option<Result<Lsn>> {
        self.completion.try_take()
    }
}

impl std::future::IntoFuture for CommitHandle {
    type Output = Result<Lsn>;
    type IntoFuture = CommitFuture;

    /// The answer as a future, for async callers (see [`CommitFuture`]).
    fn into_future(self) -> CommitFuture {
        CommitFuture::waiting(self.completion)
    }
}

/// The write-ahead log.
///
/// ```
/// use walmdb::{Wal, WalConfig, Record, TxnRecord, Op};
/// let dir = tempfile::tempdir()?;
/// let wal = Wal::open(dir.path(), WalConfig::default())?;
/// let txn = Record::Txn(TxnRecord {
///     commit_micros: 0,
///     ops: vec![Op::Put { table: "t".into(), key: b"k".to_vec(), value: b"v".to_vec() }],
/// });
/// let lsn = wal.commit(txn.encode())?;
/// assert_eq!(lsn, 1);
/// wal.close()?;
/// let wal = Wal::open(dir.path(), WalConfig::default())?;
/// let back: Vec<_> = wal.read_from(1).collect::<Result<_, _>>()?;
/// assert_eq!(back[0].record.decode()?, txn);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Wal<S: Sequencer = NoSequencer> {
    shared: Arc<PipelineState<S::Ticket>>,
    /// The writer and sequencer: the flusher's, or an inline committer's.
    core: Arc<Mutex<Core<S>>>,
    flusher: Mutex<Option<JoinHandle<Result<()>>>>,
    preparer: Mutex<Option<JoinHandle<()>>>,
    fs: FsRef,
    dir: PathBuf,
    cfg: WalConfig,
    report: RecoveryReport,
    /// Held by `retire_below`, so one call archives and retires at a time.
    retiring: Mutex<()>,
    /// The database and timeline every segment of this log records.
    lineage: Lineage,
}

impl Wal<NoSequencer> {
    /// Opens (recovering) or creates the log in `dir` on the real file system, keeping every
    /// record of the oldest segment on.
    pub fn open(dir: impl AsRef<Path>, cfg: WalConfig) -> Result<Self> {
        Self::open_with(
            crate::sync::DynArc::new(StdFs),
            dir.as_ref(),
            cfg,
            None,
            NoSequencer,
        )
    }
}

impl<S: Sequencer> Wal<S> {
    /// Opens the log on `fs`. With `from_lsn`, records up to it are the caller's already
    /// (segments wholly at or below it are retired, and a gap there is no error); without,
    /// the log starts at its oldest segment.
    pub fn open_with(
        fs: FsRef,
        dir: &Path,
        cfg: WalConfig,
        from_lsn: Option<Lsn>,
        sequencer: S,
    ) -> Result<Self> {
        Self::open_with_lineage(fs, dir, cfg, from_lsn, sequencer, None)
    }

    /// [`Wal::open_with`] for a log that must belong to `lineage` (`Error::ForeignSegment`
    /// otherwise); a new log takes it. Without, a new log is a new database's, on timeline 1.
    pub(crate) fn open_with_lineage(
        fs: FsRef,
        dir: &Path,
        cfg: WalConfig,
        from_lsn: Option<Lsn>,
        sequencer: S,
        lineage: Option<Lineage>,
    ) -> Result<Self> {
        cfg.validate()?;
        let rec = log::recovery::recover(fs.as_ref(), dir, &cfg, from_lsn, lineage)?;
        let lineage = rec.lineage;
        let last_lsn = rec.next_lsn - 1;
        let shared = Arc::new(PipelineState {
            queue: CommitQueue::new(cfg.queue_capacity, cfg.queue_max_bytes),
            written_lsn: AtomicU64::new(last_lsn),
            durable_lsn: AtomicU64::new(last_lsn),
            segments: Mutex::new(SegmentSet {
                live: rec.segments,
                spares: rec.spares,
            }),
            spare_wanted: Condvar::new(),
            preparer_stop: AtomicBool::new(false),
            stats: Stats::default(),
            last_flusher_panic: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            dead: Mutex::new(None),
        });
        let writer = LogWriter {
            fs: fs.clone(),
            dir: dir.to_owned(),
            cfg: cfg.clone(),
            active: rec.active,
            offset: rec.write_offset,
            next_lsn: rec.next_lsn,
            written_lsn: last_lsn,
            synced_lsn: last_lsn,
            interval_deadline: None,
            cleared_unsynced: false,
            frame: Default::default(),
            buf: Vec::new(),
            completer: crate::wal::Completer::spawn()?,
            settled: Default::default(),
            publishing: false,
        };
        let core = Arc::new(Mutex::new(Core::new(writer, sequencer)));
        let flusher = spawn_flusher(shared.clone(), core.clone(), cfg.clone())?;
        let preparer = if cfg.prepare_segments {
            Some(preparer::spawn_preparer(
                shared.clone(),
                fs.clone(),
                dir.to_owned(),
                cfg.segment_bytes,
            )?)
        } else {
            None
        };
        tracing::info!(
            dir = %dir.display(),
            first_lsn = rec.report.first_lsn,
            last_lsn,
            segments = rec.report.segments,
            cut = rec.report.cut.is_some(),
            "opened the write-ahead log"
        );
        Ok(Wal {
            shared,
            core,
            flusher: Mutex::new(Some(flusher)),
            preparer: Mutex::new(preparer),
            fs,
            dir: dir.to_owned(),
            cfg,
            report: rec.report,
            retiring: Mutex::new(()),
            lineage,
        })
    }

    /// The database and timeline this log belongs to: recorded in every segment it writes,
    /// in its archived segments' names and in backups.
    pub fn lineage(&self) -> Lineage {
        self.lineage
    }

    /// What opening found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.cfg
    }

    /// Why the log refuses writes, if it does.
    pub(crate) fn refusal(&self) -> Option<Error> {
        // A dead flusher poisoned the log too: one load answers the healthy case.
        if !self.shared.poisoned.load(Ordering::SeqCst) {
            return None;
        }
        self.shared
            .dead_error()
            .or_else(|| self.shared.poison_error())
    }

    /// Queues a commit and returns at once; [`CommitHandle::wait`] answers it.
    pub fn submit(
        &self,
        record: EncodedRecord,
        ticket: S::Ticket,
        durability: Option<Durability>,
    ) -> Result<CommitHandle> {
        let (completion, request) = self.checked_request(record, ticket, durability)?;
        self.queue(request)?;
        Ok(CommitHandle { completion })
    }

    /// The request of a commit `check_commit` takes, and the completion that answers it.
    fn checked_request(
        &self,
        record: EncodedRecord,
        ticket: S::Ticket,
        durability: Option<Durability>,
    ) -> Result<(Arc<Completion>, Request<S::Ticket>)> {
        self.check_commit(&record, durability.as_ref())?;
        let (completion, done) = Completion::pair();
        Ok((
            completion,
            self.commit_request(record, ticket, durability, done),
        ))
    }

    /// Refuses a commit the log would not take: too large, an invalid level, or a log that
    /// stopped taking commits.
    pub(crate) fn check_commit(
        &self,
        record: &EncodedRecord,
        durability: Option<&Durability>,
    ) -> Result<()> {
        // A transaction over `max_record_bytes` is written in pieces (`EncodedRecord::pieces`).
        let max = match record.kind() {
            RecordType::Txn => crate::limits::MAX_TXN_RECORD_BYTES,
            _ => self.cfg.max_record_bytes,
        };
        if record.framed_len() > max {
            return Err(Error::RecordTooLarge {
                size: record.framed_len(),
                max,
            });
        }
        if let Some(level) = durability {
            level.validate("the commit's durability")?;
        }
        match self.refusal() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The request of a commit `check_commit` took, answered through `done`.
    pub(crate) fn commit_request(
        &self,
        record: EncodedRecord,
        ticket: S::Ticket,
        durability: Option<Durability>,
        done: Responder,
    ) -> Request<S::Ticket> {
        Request::Commit {
            record,
            durability: durability.unwrap_or(self.cfg.durability),
            ticket,
            done,
        }
    }

    /// [`Wal::queue`], or, for a commit at `Durability::None` while the flusher is idle,
    /// writes and answers it on this thread (see `flusher::write_inline`).
    pub(crate) fn write_or_queue(&self, request: Request<S::Ticket>) -> Result<()> {
        match flusher::write_inline(&self.shared, &self.core, request) {
            Ok(()) => Ok(()),
            Err(request) => self.queue(request),
        }
    }

    /// Queues `request` for a caller that waits on it, waiting up to `backpressure_wait` for
    /// space. A request not queued is answered here, quietly: its caller gets the error.
    pub(crate) fn queue(&self, request: Request<S::Ticket>) -> Result<()> {
        self.push(request, Some(self.cfg.backpressure_wait))
            .map_err(|not_queued| {
                let (e, request) = *not_queued;
                request.answer(Err(Error::Closed));
                e
            })
    }

    /// Queues `request`; when the queue is full, waits up to `wait` for space (`None`: not
    /// at all). A request not queued comes back, unanswered, with why.
    pub(crate) fn push(
        &self,
        request: Request<S::Ticket>,
        wait: Option<Duration>,
    ) -> std::result::Result<(), NotQueued<S::Ticket>> {
        let bytes = request.queued_bytes();
        match self.shared.queue.push(request, bytes, wait) {
            Ok(()) => Ok(()),
            Err((e, request)) => {
                if matches!(e, Error::Backpressure { .. }) && wait.is_some() {
                    self.shared
                        .stats
                        .backpressure_refusals
                        .fetch_add(1, Ordering::Relaxed);
                }
                let e = match e {
                    Error::Closed => self.refusal().unwrap_or(Error::Closed),
                    other => other,
                };
                Err(Box::new((e, request)))
            }
        }
    }

    /// Commits `record` at the log's durability with `ticket` for the sequencer, and waits
    /// for the answer: the LSN once the record is as durable as the level promises.
    pub fn commit_with(
        &self,
        record: EncodedRecord,
        ticket: S::Ticket,
        durability: Option<Durability>,
    ) -> Result<Lsn> {
        let (completion, request) = self.checked_request(record, ticket, durability)?;
        self.write_or_queue(request)?;
        completion.wait()
    }

    /// Syncs everything written so far and returns the durable LSN.
    pub fn sync(&self) -> Result<Lsn> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let (completion, done) = Completion::pair();
        self.queue(Request::Sync { done })?;
        completion.wait()
    }

    /// Returns once every LSN up to `lsn` is durable: asks for a sync, but returns as soon
    /// as any sync covers `lsn`, without waiting for its own. The applier uses it: a sync it
    /// asked for may queue behind a group whose publication waits for the applier (a commit
    /// that goes through), and that group's own sync covers what the applier needs.
    pub(crate) fn sync_through(&self, lsn: Lsn) -> Result<()> {
        if self.durable_lsn() >= lsn {
            return Ok(());
        }
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let (completion, done) = Completion::pair();
        self.queue(Request::Sync { done })?;
        loop {
            if let Some(answer) = completion.wait_timeout(std::time::Duration::from_millis(5)) {
                return answer.map(drop);
            }
            if self.durable_lsn() >= lsn {
                return Ok(());
            }
        }
    }

    /// Returns once every LSN up to `lsn` is durable, syncing if it is not yet.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        if self.durable_lsn() >= lsn {
            return Ok(());
        }
        let durable = self.sync()?;
        if durable < lsn {
            return Err(Error::LsnNotWritten {
                lsn,
                written: durable,
            });
        }
        Ok(())
    }

    /// The highest LSN known durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::SeqCst)
    }

    /// The highest LSN written to the log.
    pub fn written_lsn(&self) -> Lsn {
        self.shared.written_lsn.load(Ordering::SeqCst)
    }

    /// True when an I/O failure poisoned the log; it then refuses writes until reopened.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poison_error().is_some()
    }

    /// The log's counters.
    pub fn stats(&self) -> WalStats {
        let s = &self.shared.stats;
        let (queued_commits, queued_bytes) = self.shared.queue.depth();
        WalStats {
            commits: s.commits.load(Ordering::Relaxed),
            groups: s.groups.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            sync_micros: s.sync_micros.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            record_bytes: s.record_bytes.load(Ordering::Relaxed),
            rotations: s.rotations.load(Ordering::Relaxed),
            segments_retired: s.segments_retired.load(Ordering::Relaxed),
            written_lsn: self.written_lsn(),
            durable_lsn: self.durable_lsn(),
            queued_commits,
            queued_bytes,
            queue_full_waits: self.shared.queue.full_waits(),
        }
    }

    /// The log's histograms and the counters `WalStats` leaves out, for `Db::metrics`.
    pub(crate) fn detail(&self) -> WalDetail {
        let s = &self.shared.stats;
        let last = s.last_sync_at.load(Ordering::Relaxed);
        let (segments_live, segments_spare) = {
            let set = self.shared.segments.lock();
            (set.live.len(), set.spares.len())
        };
        WalDetail {
            sync_latency: s.sync_latency.snapshot(),
            group_size: s.group_size.snapshot(),
            last_sync_age: (last > 0).then(|| {
                std::time::Duration::from_micros(
                    crate::sync::monotonic_micros().saturating_sub(last),
                )
            }),
            queue_full_waits: self.shared.queue.full_waits(),
            segments_archived: s.segments_archived.load(Ordering::Relaxed)
                + self.report.segments_archived as u64,
            backpressure_refusals: s.backpressure_refusals.load(Ordering::Relaxed),
            segments_live,
            segments_spare,
            flusher_restarts: s.flusher_restarts.load(Ordering::Relaxed),
            last_flusher_panic: self.shared.last_flusher_panic.lock().clone(),
            quarantined: self.report.quarantined.len() as u64,
        }
    }

    /// False once the flusher thread has ended (it ends only on close or a panic).
    pub(crate) fn flusher_alive(&self) -> bool {
        self.shared.dead.lock().is_none()
            && self
                .flusher
                .lock()
                .as_ref()
                .is_some_and(|h| !crate::sync::is_finished(h))
    }

    /// The live segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentMeta> {
        self.shared.segments.lock().live.clone()
    }

    /// Copies the valid frames of every live segment holding an LSN >= `from_lsn` into
    /// `dest` (synced, directory included), for a backup. The caller keeps retirement off
    /// while it runs; frames written meanwhile past a copy's end are left out of it.
    pub(crate) fn copy_segments(&self, dest: &Path, from_lsn: Lsn) -> Result<Vec<CopiedSegment>> {
        let live = self.segments();
        let first = live
            .iter()
            .rposition(|m| m.first_lsn <= from_lsn)
            .unwrap_or(0);
        self.fs.create_dir_all(dest)?;
        let mut copied = Vec::new();
        for m in &live[first..] {
            let kept = log::archive::valid_prefix(self.fs.as_ref(), &m.path)?;
            let name = log::segment::segment_file_name(m.segment_no);
            log::archive::write_synced(self.fs.as_ref(), &fs::join(dest, &name), &kept.data)?;
            copied.push(CopiedSegment {
                name,
                bytes: kept.data.len() as u64,
                crc32: crc32fast::hash(&kept.data),
                last_lsn: kept.last_lsn,
            });
        }
        self.fs.sync_dir(dest)?;
        Ok(copied)
    }

    /// Retires every segment all of whose records have LSN < `lsn` (never the active one):
    /// each is renamed to a spare for reuse, or removed once `recycle_segments` spares exist.
    /// The caller must hold those records durably elsewhere first. Returns how many.
    pub fn retire_below(&self, lsn: Lsn) -> Result<usize> {
        let _one_at_a_time = self.retiring.lock();
        let keep_from = {
            let set = self.shared.segments.lock();
            set.live
                .windows(2)
                .take_while(|w| w[1].first_lsn <= lsn)
                .count()
        };
        if keep_from == 0 {
            return Ok(0);
        }
        if let Some(archive) = &self.cfg.archive {
            // Archived before anything is renamed: a failure leaves the segments live.
            // With the segment after the last (it stays live): each one's successor.
            let to_archive: Vec<SegmentMeta> =
                self.shared.segments.lock().live[..=keep_from].to_vec();
            for pair in to_archive.windows(2) {
                let (m, next) = (&pair[0], &pair[1]);
                archive_segment(
                    self.fs.as_ref(),
                    archive,
                    &m.path,
                    self.lineage,
                    Some(next.first_lsn),
                )?;
                self.shared
                    .stats
                    .segments_archived
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let retired: Vec<SegmentMeta> = self
            .shared
            .segments
            .lock()
            .live
            .drain(..keep_from)
            .collect();
        for m in &retired {
            let spare = {
                let set = self.shared.segments.lock();
                (set.spares.len() < self.cfg.recycle_segments)
                    .then(|| fs::join(&self.dir, &log::segment::spare_file_name(m.segment_no)))
            };
            match spare {
                Some(spare) => {
                    self.fs.rename(&m.path, &spare)?;
                    self.shared.segments.lock().spares.push(spare);
                }
                None => self.fs.remove(&m.path)?,
            }
            fail::fail_point!("segment-retired-before-dir-sync");
        }
        self.fs.sync_dir(&self.dir)?;
        self.shared
            .stats
            .segments_retired
            .fetch_add(retired.len() as u64, Ordering::Relaxed);
        tracing::debug!(below = lsn, count = retired.len(), "retired WAL segments");
        Ok(retired.len())
    }

    /// Drains the queue, writes and syncs everything, and stops the flusher. Later commits
    /// get `Error::Closed`.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    /// [`Wal::close`] through a shared handle: later commits get `Error::Closed`, queued ones
    /// are written and answered. For the loom models of shutdown racing with commits.
    #[doc(hidden)]
    pub fn close_shared(&self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        self.shared.queue.close();
        let flushed = match self.flusher.lock().take() {
            None => Ok(()),
            Some(handle) => match handle.join() {
                Ok(result) => result,
                Err(_) => Err(Error::FlusherDied("the flusher thread panicked".into())),
            },
        };
        if let Some(handle) = self.preparer.lock().take() {
            {
                let _set = self.shared.segments.lock();
                self.shared.preparer_stop.store(true, Ordering::SeqCst);
                self.shared.spare_wanted.notify_all();
            }
            if handle.join().is_err() {
                tracing::error!("the WAL segment preparer thread panicked");
            }
        }
        flushed
    }
}

impl<S: Sequencer> Drop for Wal<S> {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "closing the write-ahead log on drop failed");
        }
    }
}

impl Wal<NoSequencer> {
    /// Commits `record` at the log's default durability and waits for its LSN.
    pub fn commit(&self, record: EncodedRecord) -> Result<Lsn> {
        self.commit_with(record, (), None)
    }
}
