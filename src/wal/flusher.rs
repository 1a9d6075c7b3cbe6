//! The flusher thread: takes groups from the queue, admits them through the sequencer,
//! assigns LSNs, writes each group with as few writes as possible, syncs as the group's
//! durability levels say, publishes and answers every committer.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::completer::INLINE_ANSWERS;
use super::{Completer, Request, Responder, Sequencer};
use crate::config::{Durability, WalConfig};
use crate::error::{Error, Result};
use crate::sync::{bug, Arc, Bug, JoinHandle, Mutex, Ordering, ThreadBuilder};
use crate::wal::log::fs::FsRef;
use crate::wal::log::record::{EncodedRecord, FrameBuilder, Lsn, FRAME_HEADER_LEN};
use crate::wal::log::recovery::meta;
use crate::wal::log::segment::{create_segment, segment_file_name, Segment, SEGMENT_HEADER_LEN};
use crate::wal::PipelineState;

/// The log's tail, held in [`Core`]: written under its lock, by the flusher or inline.
#[derive(Debug)]
pub(crate) struct LogWriter {
    pub fs: FsRef,
    pub dir: PathBuf,
    pub cfg: WalConfig,
    pub active: Segment,
    pub offset: u64,
    pub next_lsn: Lsn,
    /// Every LSN up to here is written to the active segment (or an earlier one).
    pub written_lsn: Lsn,
    /// Every LSN up to here is durable. Never ahead of `written_lsn`.
    pub synced_lsn: Lsn,
    /// When unsynced `Interval` writes must be synced by.
    pub interval_deadline: Option<Instant>,
    /// Zeros written over a failed write's range and not yet synced: the active segment
    /// must be synced before the log rotates away from it, or a power loss could bring the
    /// failed write's bytes back, as damage, before the next segment's records.
    pub cleared_unsynced: bool,
    pub frame: FrameBuilder,
    pub buf: Vec<u8>,
    /// Answers large groups while the flusher goes on; dropped (and so drained) with it.
    pub completer: Completer,
    /// The tail after the last group whose outcome is settled (published, or failed with
    /// nothing left in the log): a flusher restarted after a panic resumes here.
    pub settled: Tail,
    /// True while a group is being published: a panic then leaves the overlay in an unknown
    /// state, so the flusher is not restarted.
    pub publishing: bool,
}

/// A position at the log's tail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tail {
    pub segment_no: u64,
    pub offset: u64,
    pub next_lsn: Lsn,
}

/// The log's writer and the sequencer, under one lock: the flusher thread's, lent to a
/// committer that writes its own commit while the flusher is idle ([`write_inline`]).
pub(crate) struct Core<S> {
    pub writer: LogWriter,
    pub seq: S,
    /// Panics survived while writing groups, on any thread.
    #[cfg_attr(walmdb_loom, allow(dead_code))]
    pub restarts: u64,
}

impl<S> Core<S> {
    pub(crate) fn new(mut writer: LogWriter, seq: S) -> Self {
        writer.settle();
        Core {
            writer,
            seq,
            restarts: 0,
        }
    }
}

impl<S> std::fmt::Debug for Core<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

struct Admitted<T> {
    lsn: Lsn,
    ticket: T,
    durability: Durability,
    done: Responder,
}

/// An error for one waiter of a failed group.
fn error_copy(e: &Error) -> Error {
    let io_copy = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
    match e {
        Error::SyncFailed(e) => Error::SyncFailed(io_copy(e)),
        Error::DiskFull(e) => Error::DiskFull(io_copy(e)),
        Error::Io(e) => Error::Io(io_copy(e)),
        Error::Poisoned { cause } => Error::Poisoned {
            cause: cause.clone(),
        },
        other => Error::Poisoned {
            cause: other.to_string(),
        },
    }
}

fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull
}

impl LogWriter {
    fn poison<T>(&self, shared: &PipelineState<T>, what: &str, e: &io::Error) -> Error {
        shared.poison(format!("{what}: {e}"));
        Error::SyncFailed(io::Error::new(e.kind(), format!("{what}: {e}")))
    }

    /// Syncs the active segment (earlier ones were synced when the log rotated away).
    fn sync<T>(&mut self, shared: &PipelineState<T>) -> Result<()> {
        let target = self.written_lsn;
        let started = Instant::now();
        if let Err(e) = self.active.file.sync_data() {
            let retried = crate::sync::bug(crate::sync::Bug::AckAfterFailedSync)
                && self.active.file.sync_data().is_ok();
            if !retried {
                return Err(self.poison(shared, "sync of the write-ahead log failed", &e));
            }
        }
        self.synced_lsn = target;
        self.interval_deadline = None;
        self.cleared_unsynced = false;
        shared.durable_lsn.store(target, Ordering::SeqCst);
        let took = started.elapsed();
        shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .sync_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        shared.stats.sync_latency.record_duration(took);
        shared
            .stats
            .last_sync_at
            .store(crate::sync::monotonic_micros(), Ordering::Relaxed);
        Ok(())
    }

    /// Syncs the current segment, then opens the next one for records from `first_lsn`.
    fn rotate<T>(&mut self, shared: &PipelineState<T>, first_lsn: Lsn) -> Result<()> {
        if self.synced_lsn < self.written_lsn || self.cleared_unsynced {
            self.sync(shared)?;
        }
        fail::fail_point!("rotation-old-segment-synced");
        let segment_no = self.active.header.segment_no + 1;
        let header = self.active.header.next(first_lsn, self.cfg.segment_bytes);
        let tmp = self
            .dir
            .join(format!("{}.tmp", segment_file_name(segment_no)));
        let spare = {
            let mut set = shared.segments.lock();
            // A failed attempt at this segment left its file under the temporary name: reuse
            // it, or renaming another spare over it would leave a path to nothing listed.
            let spare = match set.spares.iter().position(|p| *p == tmp) {
                Some(i) => Some(set.spares.remove(i)),
                None => set.spares.pop(),
            };
            if set.spares.is_empty() {
                shared.spare_wanted.notify_one();
            }
            spare
        };
        match create_segment(self.fs.as_ref(), &self.dir, header, spare) {
            Ok(segment) => {
                shared.segments.lock().live.push(meta(&segment));
                self.active = segment;
                self.offset = SEGMENT_HEADER_LEN as u64;
                shared.stats.rotations.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    segment = segment_no,
                    first_lsn,
                    "rotated to a new WAL segment"
                );
                Ok(())
            }
            Err(e) => {
                // A half-made segment stays under its temporary name, to be reused.
                if self.fs.exists(&tmp) {
                    shared.segments.lock().spares.push(tmp);
                }
                match e {
                    Error::SyncFailed(e) => Err(self.poison(shared, "segment creation", &e)),
                    Error::Io(e) if is_enospc(&e) => Err(Error::DiskFull(e)),
                    other => Err(other),
                }
            }
        }
    }

    /// Writes `self.buf`, which ends with the record at `last_lsn`.
    fn write_buf<T>(
        &mut self,
        shared: &PipelineState<T>,
        first_write_of_group: bool,
        last_lsn: Lsn,
    ) -> Result<()> {
        match self.active.file.write_at(&self.buf, self.offset) {
            Ok(()) => {
                self.offset += self.buf.len() as u64;
                // Set at every write, so a rotation inside a group syncs what it wrote.
                self.written_lsn = last_lsn;
                shared
                    .stats
                    .bytes_written
                    .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if is_enospc(&e) && first_write_of_group => {
                // Clear whatever part landed so it can never be read as records, then fail
                // only this group; the space is preallocated, so the zeros overwrite.
                let zeros = vec![0u8; self.buf.len()];
                match self.active.file.write_at(&zeros, self.offset) {
                    Ok(()) => {
                        self.cleared_unsynced = true;
                        Err(Error::DiskFull(e))
                    }
                    Err(e2) => Err(self.poison(shared, "clearing a failed write", &e2)),
                }
            }
            Err(e) => Err(self.poison(shared, "write to the write-ahead log failed", &e)),
        }
    }

    /// Writes `records` as frames from `self.next_lsn` on, rotating when a segment is full.
    /// On error nothing was acknowledged; unless the log is poisoned, nothing was written.
    fn append<T>(&mut self, shared: &PipelineState<T>, records: &[EncodedRecord]) -> Result<()> {
        let segment_bytes = self.active.header.segment_bytes;
        let fits = |offset: u64, bytes: usize| offset + bytes as u64 <= segment_bytes;
        let whole: usize = records.iter().map(|r| r.framed_len()).sum::<usize>()
            + FRAME_HEADER_LEN * (records.len() / usize::from(u16::MAX) + 1);
        if !fits(self.offset, whole) && fits(SEGMENT_HEADER_LEN as u64, whole) {
            self.rotate(shared, self.next_lsn)?;
        }
        let compress = self
            .cfg
            .compress_threshold
            .map(|t| (t, self.cfg.compress_level));
        let salt = |w: &LogWriter| w.active.header.salt;
        let mut frame_first = self.next_lsn;
        let mut lsn = self.next_lsn;
        let mut written_any = false;
        self.buf.clear();
        let max_framed = self.cfg.max_record_bytes;
        for record in records.iter().flat_map(|r| r.pieces(max_framed)) {
            let record = match record {
                Ok(piece) => piece,
                // A spilled transaction's run did not read back: its group fails (nothing
                // was acknowledged), and the log is poisoned if a part of it is written.
                Err(e) if written_any => {
                    self.frame.discard();
                    return Err(self.poison(shared, "reading a spilled transaction back", &e));
                }
                Err(e) => {
                    self.frame.discard();
                    return Err(Error::Io(e));
                }
            };
            let pending = self.buf.len() + FRAME_HEADER_LEN + self.frame.body_len();
            // A piece of a split transaction is a frame of its own.
            if self.frame.count() > 0
                && (!self.frame.has_room()
                    || record.number.is_some()
                    || !fits(self.offset, pending + record.framed_len()))
            {
                let (s, synced) = (salt(self), self.synced_lsn);
                self.frame
                    .finish(&mut self.buf, s, frame_first, synced, compress);
                frame_first = lsn;
            }
            if self.frame.count() == 0
                && !fits(
                    self.offset,
                    self.buf.len() + FRAME_HEADER_LEN + record.framed_len(),
                )
            {
                if !self.buf.is_empty() {
                    self.write_buf(shared, !written_any, lsn - 1)?;
                    written_any = true;
                    self.buf.clear();
                }
                if let Err(e) = self.rotate(shared, lsn) {
                    if written_any {
                        shared.poison(format!("rotation failed inside a group: {e}"));
                    }
                    return Err(e);
                }
            }
            let split = record.number.is_some();
            self.frame.push_piece(record);
            lsn += 1;
            if split {
                let (s, synced) = (salt(self), self.synced_lsn);
                self.frame
                    .finish(&mut self.buf, s, frame_first, synced, compress);
                frame_first = lsn;
                if self.buf.len() >= max_framed {
                    self.write_buf(shared, !written_any, lsn - 1)?;
                    written_any = true;
                    self.buf.clear();
                }
            }
        }
        if self.frame.count() > 0 {
            let (s, synced) = (salt(self), self.synced_lsn);
            self.frame
                .finish(&mut self.buf, s, frame_first, synced, compress);
        }
        if !self.buf.is_empty() {
            self.write_buf(shared, !written_any, lsn - 1)?;
        }
        let raw: usize = records.iter().map(|r| r.payload.len()).sum();
        shared
            .stats
            .record_bytes
            .fetch_add(raw as u64, Ordering::Relaxed);
        self.next_lsn = lsn;
        shared.written_lsn.store(self.written_lsn, Ordering::SeqCst);
        Ok(())
    }

    /// Admits, writes, syncs, publishes and answers one group.
    fn write_group<S: Sequencer>(
        &mut self,
        shared: &PipelineState<S::Ticket>,
        seq: &mut S,
        group: &mut Vec<Request<S::Ticket>>,
    ) {
        let span = tracing::debug_span!(
            "walmdb.group",
            segment = self.active.header.segment_no,
            first_lsn = self.next_lsn,
            commits = tracing::field::Empty,
            synced = tracing::field::Empty
        );
        let _entered = span.enter();
        self.settle();
        let poisoned = shared.poison_error();
        let mut admitted: Vec<Admitted<S::Ticket>> = Vec::with_capacity(group.len());
        let mut records = Vec::with_capacity(group.len());
        let mut sync_waiters = Vec::new();
        // Answered after the group is published: a retry must see the write it conflicted with.
        let mut rejected: Vec<(Responder, Error)> = Vec::new();
        let mut lsn = self.next_lsn;
        for request in group.drain(..) {
            match request {
                Request::Sync { done } => sync_waiters.push(done),
                Request::Commit {
                    record,
                    durability,
                    mut ticket,
                    done,
                } => {
                    if let Some(e) = &poisoned {
                        done.respond(Err(error_copy(e)));
                        continue;
                    }
                    // A transaction split into pieces takes an LSN each; its own is its
                    // last piece's.
                    let takes = record.lsns(self.cfg.max_record_bytes);
                    let commit_lsn = lsn + takes - 1;
                    match seq.admit(&mut ticket, commit_lsn) {
                        Ok(()) => {
                            records.push(record);
                            admitted.push(Admitted {
                                lsn: commit_lsn,
                                ticket,
                                durability,
                                done,
                            });
                            lsn += takes;
                        }
                        Err(e) => rejected.push((done, e)),
                    }
                }
            }
        }
        let fail_all = |e: &Error,
                        seq: &mut S,
                        admitted: Vec<Admitted<S::Ticket>>,
                        sync_waiters: Vec<Responder>,
                        rejected: Vec<(Responder, Error)>| {
            for (done, why) in rejected {
                done.respond(Err(why));
            }
            for a in admitted {
                seq.abandon(a.lsn, a.ticket);
                a.done.respond(Err(error_copy(e)));
            }
            for w in sync_waiters {
                w.respond(Err(error_copy(e)));
            }
        };
        if let Some(e) = poisoned {
            return fail_all(&e, seq, admitted, sync_waiters, rejected);
        }
        if !records.is_empty() {
            if let Err(e) = self.append(shared, &records) {
                return fail_all(&e, seq, admitted, sync_waiters, rejected);
            }
            shared.stats.groups.fetch_add(1, Ordering::Relaxed);
            shared.stats.group_size.record(records.len() as u64);
            shared
                .stats
                .commits
                .fetch_add(records.len() as u64, Ordering::Relaxed);
        }
        let mut need_sync = !sync_waiters.is_empty();
        for a in &admitted {
            match a.durability {
                Durability::Interval(d) => {
                    let due = crate::limits::deadline(Instant::now(), d);
                    self.interval_deadline =
                        Some(self.interval_deadline.map_or(due, |t| t.min(due)));
                }
                d if d.is_durable() => need_sync = true,
                _ => {}
            }
        }
        if self.interval_deadline.is_some_and(|t| Instant::now() >= t) {
            need_sync = true;
        }
        fail::fail_point!("group-written-before-sync");
        let sync_now = need_sync && self.synced_lsn < self.written_lsn;
        span.record("commits", admitted.len());
        span.record("synced", sync_now);
        if sync_now {
            if let Err(e) = self.sync(shared) {
                return fail_all(&e, seq, admitted, sync_waiters, rejected);
            }
        }
        fail::fail_point!("group-synced-before-answer");
        // Published in LSN order before any answer: an answered commit is visible.
        let mut answers = Vec::with_capacity(admitted.len() + sync_waiters.len());
        self.publishing = true;
        for a in admitted {
            seq.publish(a.lsn, a.ticket);
            fail::fail_point!("group-publishing");
            answers.push((a.done, a.lsn));
        }
        self.publishing = false;
        self.settle();
        answers.extend(sync_waiters.into_iter().map(|w| (w, self.synced_lsn)));
        for (done, why) in rejected {
            done.respond(Err(why));
        }
        // The first answers are given here: the time it takes lets their committers queue
        // again before the next group is taken, so groups stay whole instead of alternating
        // between a few stragglers and the rest. The remainder is woken in parallel.
        if answers.len() > INLINE_ANSWERS {
            self.completer.answer(answers.split_off(INLINE_ANSWERS));
        }
        for (done, lsn) in answers {
            done.respond(Ok(lsn));
        }
    }

    /// Marks the current tail as settled: everything before it is published.
    fn settle(&mut self) {
        self.settled = Tail {
            segment_no: self.active.header.segment_no,
            offset: self.offset,
            next_lsn: self.next_lsn,
        };
    }

    /// Syncs the `Interval` writes whose deadline has passed (an error poisons the log,
    /// and a poisoned log keeps no deadline); returns how long until the next one is due.
    fn sync_interval_writes<T>(&mut self, shared: &PipelineState<T>) -> Option<Duration> {
        let due = |w: &LogWriter| {
            w.interval_deadline
                .map(|t| t.saturating_duration_since(Instant::now()))
        };
        if due(self) == Some(Duration::ZERO) && shared.poison_error().is_none() {
            let _ = self.sync(shared);
        }
        if shared.poison_error().is_some() {
            self.interval_deadline = None;
        }
        due(self)
    }
}

/// The group limits the first request sets: (max commits, max wait, alone).
fn limits<T>(cfg: &WalConfig, first: &Request<T>) -> (usize, Duration, bool) {
    let default_batch = match cfg.durability {
        Durability::GroupCommit { max_batch, .. } => max_batch,
        _ => 4096,
    };
    match first {
        Request::Commit {
            durability: Durability::EveryWrite,
            ..
        } => (1, Duration::ZERO, true),
        Request::Commit {
            durability:
                Durability::GroupCommit {
                    max_wait,
                    max_batch,
                },
            ..
        } => ((*max_batch).max(1), *max_wait, false),
        _ => (default_batch.max(1), Duration::ZERO, false),
    }
}

fn is_every_write<T>(r: &Request<T>) -> bool {
    matches!(
        r,
        Request::Commit {
            durability: Durability::EveryWrite,
            ..
        }
    )
}

fn flusher_loop<S: Sequencer>(
    shared: &PipelineState<S::Ticket>,
    core: &Mutex<Core<S>>,
    cfg: &WalConfig,
) -> Result<()> {
    let mut carry = None;
    let mut group = Vec::new();
    loop {
        let Some(first) = carry.take().or_else(|| shared.queue.pop()) else {
            // Background sync of `Interval` writes.
            let next_sync = core.lock().writer.sync_interval_writes(shared);
            if shared.queue.is_drained() {
                break;
            }
            if shared.queue.is_closed() {
                // A committer is still inside `push`: its request is moments away.
                crate::sync::yield_now();
                continue;
            }
            shared.queue.wait_for_work(next_sync);
            continue;
        };
        let (max_batch, max_wait, alone) = limits(cfg, &first);
        let group_bytes = cfg.effective_group_bytes();
        let mut bytes = first.queued_bytes();
        group.push(first);
        if !alone {
            let deadline = crate::limits::deadline(Instant::now(), max_wait);
            'gather: loop {
                while group.len() < max_batch && bytes < group_bytes {
                    match shared.queue.pop() {
                        Some(r) if is_every_write(&r) => {
                            carry = Some(r);
                            break 'gather;
                        }
                        Some(r) => {
                            bytes += r.queued_bytes();
                            group.push(r);
                        }
                        None => break,
                    }
                }
                let now = Instant::now();
                if group.len() >= max_batch
                    || bytes >= group_bytes
                    || now >= deadline
                    || shared.queue.is_closed()
                {
                    break;
                }
                shared.queue.wait_for_work(Some(deadline - now));
            }
        }
        let mut core = core.lock();
        let Core { writer, seq, .. } = &mut *core;
        writer.write_group(shared, seq, &mut group);
    }
    // The queue is closed: a committer writing inline sees it under this lock and queues
    // instead (to be refused), so nothing is written after the final sync.
    let mut core = core.lock();
    if let Some(e) = shared.dead_error().or_else(|| shared.poison_error()) {
        // Nothing written after the failure can be made durable by this handle.
        return Err(e);
    }
    let writer = &mut core.writer;
    if writer.synced_lsn < writer.written_lsn {
        fail::fail_point!("flusher-before-final-sync");
        writer.sync(shared)?;
    }
    Ok(())
}

/// Writes `request` on the calling committer's thread, as a group of its own, when that
/// saves two thread hand-offs: a commit at `Durability::None` (it waits for no sync, so the
/// flusher keeps no deadline for it) while nothing is queued and no group is being written.
/// Otherwise gives the request back, to be queued. Answered through its responder either way
/// it ends, a panic included (as on the flusher thread, the log then resumes at its settled
/// tail or the flusher is marked dead).
pub(crate) fn write_inline<S: Sequencer>(
    shared: &PipelineState<S::Ticket>,
    core: &Mutex<Core<S>>,
    request: Request<S::Ticket>,
) -> std::result::Result<(), Request<S::Ticket>> {
    let at_none = matches!(
        request,
        Request::Commit {
            durability: Durability::None,
            ..
        }
    );
    if !at_none || !shared.queue.is_empty() {
        return Err(request);
    }
    let Some(mut core) = core.try_lock() else {
        return Err(request);
    };
    // Closed: the flusher may have made its final sync; a queued request is refused.
    let closing = !bug(Bug::InlineWriteAfterClose) && shared.queue.is_closed();
    if closing || shared.dead_error().is_some() {
        return Err(request);
    }
    let mut group = vec![request];
    let run = catch_unwind(AssertUnwindSafe(|| {
        let Core { writer, seq, .. } = &mut *core;
        writer.write_group(shared, seq, &mut group);
    }));
    if let Err(panic) = run {
        // Whatever the group still held is answered `FlusherDied` as it drops.
        drop(group);
        #[cfg(walmdb_loom)]
        std::panic::resume_unwind(panic);
        #[cfg(not(walmdb_loom))]
        if super::resume::recover(shared, &mut core, panic.as_ref()).is_err() {
            // The flusher thread answers what is queued: the log is poisoned.
            shared.queue.close();
        }
    }
    Ok(())
}

/// Starts the flusher thread. It runs until the queue is closed and drained, then syncs.
/// If a group's writing panics outside publishing, the log is put back at its settled tail
/// and the loop restarts, up to [`MAX_THREAD_RESTARTS`](crate::limits::MAX_THREAD_RESTARTS)
/// times (the commits of the group in flight get `FlusherDied`, never an acknowledgement).
/// Otherwise the log is poisoned and every queued or later commit gets `FlusherDied`.
#[cfg_attr(walmdb_loom, allow(clippy::never_loop))]
pub(crate) fn spawn_flusher<S: Sequencer>(
    shared: Arc<PipelineState<S::Ticket>>,
    core: Arc<Mutex<Core<S>>>,
    cfg: WalConfig,
) -> io::Result<JoinHandle<Result<()>>> {
    ThreadBuilder::new()
        .name("walmdb-flusher".into())
        .spawn(move || loop {
            let run = catch_unwind(AssertUnwindSafe(|| flusher_loop(&shared, &core, &cfg)));
            let panic = match run {
                Ok(result) => return result,
                Err(panic) => panic,
            };
            // Under loom a panic is the model checker's own (a failed model): let it
            // through untouched.
            #[cfg(walmdb_loom)]
            std::panic::resume_unwind(panic);
            #[cfg(not(walmdb_loom))]
            {
                let recovered = super::resume::recover(&shared, &mut core.lock(), panic.as_ref());
                if let Err(msg) = recovered {
                    shared.queue.close();
                    // Answer everything queued now or by committers still pushing.
                    while !shared.queue.is_drained() {
                        match shared.queue.pop() {
                            Some(r) => drop(r),
                            None => crate::sync::yield_now(),
                        }
                    }
                    return Err(Error::FlusherDied(msg));
                }
            }
        })
}
