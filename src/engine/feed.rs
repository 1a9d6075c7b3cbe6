//! The change feed: committed transactions in LSN order, from any LSN the log still holds.
//!
//! A subscription reads the log (each segment once, checked as recovery checks it) until it
//! reaches the commits publication keeps for subscribers: while any subscription is open,
//! the flusher's publication also puts each commit into a ring of the newest
//! [`RING_COMMITS`], which subscriptions that keep up read without touching the log.
//! Invariants:
//! - The ring holds every commit published at or after its `from` LSN. It is reset when
//!   the first subscription opens: `from` is then above the visible LSN of that moment, and
//!   commits at or below it are in the log. The handshake is Dekker's: publication stores
//!   the visible LSN, fences, then reads `active`; opening stores `active`, fences, then
//!   reads the visible LSN, so a commit is either pushed or below `from`.
//! - Only published (visible) commits are delivered: a record written but never published
//!   (its group's sync failed) never is.
//! - A subscription waiting for the next commit registers its waker (or waits on the
//!   condition variable) under the ring's lock, which every push holds: no wake-up is lost.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::sequencer::TxnWrites;
use super::Engine;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sync::DataArc as Arc;
use crate::sync::{bug, fence, AtomicBool, Bug, Condvar, Mutex, Ordering};
use crate::wal::log::pieces::Reassembly;
use crate::wal::{LogIter, Op, Record};

/// The newest commits kept for subscriptions while any is open: at most this many, and
/// at most [`RING_BYTES`] of their keys and values (as the overlay counts them).
const RING_COMMITS: usize = 4096;
const RING_BYTES: usize = 64 << 20;

/// One committed transaction, as the change feed delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its LSN: resume after it with [`Db::subscribe`](crate::Db::subscribe)`(lsn + 1)`.
    pub lsn: Lsn,
    /// Its commit time, Unix microseconds.
    pub commit_micros: u64,
    /// What it did, in the order it was committed (of the subscribed tables only).
    pub ops: Vec<Op>,
}

#[derive(Debug, Default)]
struct Ring {
    /// Open subscriptions.
    subscribers: usize,
    /// Every commit published at or after it is in `commits`.
    from: Lsn,
    /// Each commit with its bytes.
    commits: VecDeque<(Lsn, Arc<TxnWrites>, usize)>,
    bytes: usize,
    /// Async subscriptions waiting for the next commit.
    wakers: Vec<Waker>,
    /// The engine closed: a subscription waiting for a commit gets `Error::Closed`.
    closed: bool,
}

impl Ring {
    /// True if a subscription at `next` has something to read since it last found nothing:
    /// a newer commit kept, or commits that left the ring (to read from the log).
    fn has_news_for(&self, next: Lsn) -> bool {
        self.commits.back().is_some_and(|(lsn, _, _)| *lsn >= next)
            || next < self.from
            || self.closed
    }
}

/// The engine's side of the feed.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    /// Mirrors `subscribers > 0`, for publication's check without the lock.
    active: AtomicBool,
    ring: Mutex<Ring>,
    arrived: Condvar,
}

impl Feed {
    /// Publication of commit `lsn` of `bytes` overlay bytes (the flusher, in LSN order,
    /// after the visible LSN is stored).
    pub(crate) fn published(&self, lsn: Lsn, writes: &Arc<TxnWrites>, bytes: usize) {
        if !bug(Bug::FeedCheckedWithoutFence) {
            fence(Ordering::SeqCst);
        }
        if !self.active.load(Ordering::SeqCst) {
            return;
        }
        let wakers = {
            let mut ring = self.ring.lock();
            if ring.subscribers == 0 || lsn < ring.from {
                return;
            }
            if writes.spilled.is_some() {
                // Its writes are not in memory: subscriptions read it, and what came
                // before it, from the log.
                ring.commits.clear();
                ring.bytes = 0;
                ring.from = lsn + 1;
            } else {
                ring.commits.push_back((lsn, writes.clone(), bytes));
                ring.bytes += bytes;
            }
            while ring.commits.len() > RING_COMMITS || ring.bytes > RING_BYTES {
                let Some((oldest, _, freed)) = ring.commits.pop_front() else {
                    break;
                };
                ring.from = oldest + 1;
                ring.bytes -= freed;
            }
            std::mem::take(&mut ring.wakers)
        };
        self.arrived.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Wakes every waiting subscription to find the engine closed.
    pub(crate) fn close_for_good(&self) {
        let wakers = {
            let mut ring = self.ring.lock();
            ring.closed = true;
            std::mem::take(&mut ring.wakers)
        };
        self.arrived.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    fn open(&self, visible: &crate::sync::AtomicU64) {
        let mut ring = self.ring.lock();
        ring.subscribers += 1;
        if ring.subscribers == 1 {
            self.active.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            ring.from = visible.load(Ordering::SeqCst) + 1;
            ring.commits.clear();
            ring.bytes = 0;
        }
    }

    /// [`Feed::open`] for the loom model: the ring's `from` after opening.
    #[cfg(walmdb_loom)]
    pub(crate) fn open_for_model(&self, visible: &crate::sync::AtomicU64) -> Lsn {
        self.open(visible);
        self.ring.lock().from
    }

    /// True if commit `lsn` is in the ring (the loom model).
    #[cfg(walmdb_loom)]
    pub(crate) fn kept(&self, lsn: Lsn) -> bool {
        self.ring.lock().commits.iter().any(|(l, _, _)| *l == lsn)
    }

    fn close(&self) {
        let mut ring = self.ring.lock();
        ring.subscribers -= 1;
        if ring.subscribers == 0 {
            self.active.store(false, Ordering::SeqCst);
            ring.commits.clear();
            ring.bytes = 0;
            ring.wakers.clear();
        }
    }
}

/// What the next step of a subscription is.
enum Step {
    Deliver(Lsn, Arc<TxnWrites>),
    /// Behind the ring: read the log through this LSN.
    ReadLog(Lsn),
    /// Caught up.
    Wait,
}

/// A subscription to committed transactions (see [`Db::subscribe`](crate::Db::subscribe)):
/// a blocking iterator ([`Subscription::next_change`], `Iterator`) and an async one
/// ([`Subscription::next_async`]). Memory stays bounded: it holds at most one log segment's
/// records while it catches up, and the engine keeps at most the newest 4,096 commits (and
/// 64 MiB of their keys and values) for subscriptions that keep up.
pub struct Subscription<'db> {
    engine: &'db Engine,
    next: Lsn,
    /// An error ended the iterator.
    ended: bool,
    tables: Option<BTreeSet<String>>,
    /// Reading the log, through the LSN it was opened for.
    log: Option<LogRead>,
    /// The first LSN of the last split transaction read again from its first piece: one
    /// ending at or after `next` whose first pieces lay before where a read began.
    reread_from: Lsn,
    /// Parts of a split transaction an archive read ended between, and the LSN the read of
    /// the live log that joins them to their end starts at.
    held: Option<(Lsn, Reassembly)>,
}

/// A read of the log in progress.
struct LogRead {
    iter: LogIter,
    /// The last LSN it reads.
    until: Lsn,
    /// It reads the archive, not the live log.
    archived: bool,
}

impl std::fmt::Debug for Subscription<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("next", &self.next)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.engine.state.feed.close();
    }
}

impl<'db> Subscription<'db> {
    pub(crate) fn new(engine: &'db Engine, from: Lsn) -> Result<Subscription<'db>> {
        if let Some(e) = engine.state.refusal() {
            return Err(e);
        }
        engine.state.feed.open(&engine.state.visible_lsn);
        let sub = Subscription {
            engine,
            next: from.max(1),
            ended: false,
            tables: None,
            log: None,
            reread_from: 0,
            held: None,
        };
        // Refuse at once an LSN neither the log nor the archive holds.
        let oldest = sub.oldest_in_log();
        if sub.next < oldest && engine.wal.read_archive_between(sub.next, 0)?.is_none() {
            return Err(Error::Retired {
                lsn: sub.next,
                oldest,
            });
        }
        Ok(sub)
    }

    /// The LSN of the oldest record the live log holds.
    fn oldest_in_log(&self) -> Lsn {
        self.engine
            .wal
            .segments()
            .first()
            .map_or(1, |m| m.first_lsn)
    }

    /// Starts reading the records from `from` through `until`: from the live log, or from
    /// the archive (through the record before the live log's oldest) when the live log no
    /// longer holds `from`. A read of the live log right after an archive read that ended
    /// between a transaction's pieces goes on with the parts it held.
    fn start_reading(&mut self, from: Lsn, until: Lsn) -> Result<()> {
        let oldest = self.oldest_in_log();
        if from >= oldest {
            let (from, held) = match self.held.take() {
                Some((at, held)) if at <= from && at >= oldest => (at, Some(held)),
                _ => (from, None),
            };
            let mut iter = self.engine.wal.read_between(from, until);
            if let Some(held) = held {
                iter = iter.holding(held);
            }
            self.log = Some(LogRead {
                iter,
                until,
                archived: false,
            });
            return Ok(());
        }
        let until = until.min(oldest - 1);
        match self.engine.wal.read_archive_between(from, until)? {
            Some(iter) => {
                self.log = Some(LogRead {
                    iter,
                    until,
                    archived: true,
                });
                Ok(())
            }
            None => Err(Error::Retired { lsn: from, oldest }),
        }
    }

    /// Delivers only the operations on `tables` (and skips transactions with none).
    pub fn tables<S: AsRef<str>>(mut self, tables: impl IntoIterator<Item = S>) -> Self {
        self.tables = Some(tables.into_iter().map(|t| t.as_ref().to_owned()).collect());
        self
    }

    /// The LSN the next change will be at or after: where to resume.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// The next change, waiting for a commit as long as it takes.
    pub fn next_change(&mut self) -> Result<Change> {
        loop {
            if let Some(change) = self.next_timeout(Duration::from_secs(3600))? {
                return Ok(change);
            }
        }
    }

    /// The next change if one comes within `timeout`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Change>> {
        let deadline = crate::limits::deadline(Instant::now(), timeout);
        loop {
            if let Some(change) = self.try_next()? {
                return Ok(Some(change));
            }
            let ring = self.engine.state.feed.ring.lock();
            if ring.has_news_for(self.next) {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            drop(
                self.engine
                    .state
                    .feed
                    .arrived
                    .wait_timeout(ring, deadline - now),
            );
        }
    }

    /// The next change if one is there now.
    pub fn try_next(&mut self) -> Result<Option<Change>> {
        loop {
            if let Some(read) = &mut self.log {
                let item = read.iter.next();
                // A split transaction ending at or after `next` whose first pieces lie before
                // where the read began: read it again from its first piece (once each).
                // Where the log no longer holds its first pieces, every call says so
                // (`Retired`): it is not skipped.
                if let Some(first) = read.iter.began_before().filter(|&f| f > self.reread_from) {
                    let until = read.until.max(self.next);
                    self.log = None;
                    self.held = None;
                    self.start_reading(first, until)?;
                    self.reread_from = first;
                    continue;
                }
                match item {
                    // Pieces read again before `next` are never handed out; a record is
                    // handed out once.
                    Some(Ok(rec)) if rec.lsn < self.next => continue,
                    Some(Ok(rec)) => {
                        self.next = rec.lsn + 1;
                        if let Some(change) = self.change_of_record(rec.lsn, &rec.record)? {
                            return Ok(Some(change));
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        let archived = read.archived;
                        self.log = None;
                        // Its segment was retired while it read: read on from the archive,
                        // or get `Retired` (once: an error reading the archive is returned).
                        if !archived && self.next < self.oldest_in_log() {
                            continue;
                        }
                        return Err(self.gone_or(e));
                    }
                    None => {
                        if read.archived {
                            let pieces = read.iter.take_held_pieces();
                            if pieces.holds_parts() {
                                self.held = Some((read.until + 1, pieces));
                            }
                        }
                        self.next = self.next.max(read.until + 1);
                        self.log = None;
                    }
                }
            }
            match self.step() {
                Step::Deliver(lsn, writes) => {
                    self.next = lsn + 1;
                    self.held = None;
                    if let Some(change) = self.change_of_writes(lsn, &writes) {
                        return Ok(Some(change));
                    }
                }
                Step::ReadLog(until) => self.start_reading(self.next, until)?,
                Step::Wait => {
                    if let Some(e) = self.engine.state.refusal() {
                        return Err(e);
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// The next change, as a future (cancel-safe: dropping it loses no change).
    pub fn next_async(&mut self) -> NextChange<'_, 'db> {
        NextChange { sub: self }
    }

    fn step(&self) -> Step {
        let ring = self.engine.state.feed.ring.lock();
        if self.next < ring.from {
            let visible = self.engine.state.visible_lsn.load(Ordering::Acquire);
            return Step::ReadLog((ring.from - 1).min(visible));
        }
        // The ring is in LSN order: a binary search, not a walk from its oldest commit.
        let at = ring.commits.partition_point(|(lsn, _, _)| *lsn < self.next);
        match ring.commits.get(at) {
            Some((lsn, writes, _)) => Step::Deliver(*lsn, writes.clone()),
            None => Step::Wait,
        }
    }

    fn wants(&self, table: &str) -> bool {
        self.tables.as_ref().is_none_or(|t| t.contains(table))
    }

    fn change_of_writes(&self, lsn: Lsn, writes: &TxnWrites) -> Option<Change> {
        let ops: Vec<Op> = writes
            .ops
            .iter()
            .filter(|op| self.wants(op.table()))
            .map(|op| Op::from(op.as_ref()))
            .collect();
        (!ops.is_empty()).then_some(Change {
            lsn,
            commit_micros: writes.commit_micros,
            ops,
        })
    }

    fn change_of_record(
        &self,
        lsn: Lsn,
        record: &crate::wal::EncodedRecord,
    ) -> Result<Option<Change>> {
        let Record::Txn(txn) = record.decode().map_err(|e| Error::Corruption {
            segment: 0,
            offset: 0,
            reason: format!("record at LSN {lsn} does not decode: {e}"),
        })?
        else {
            return Ok(None);
        };
        let ops: Vec<Op> = txn
            .ops
            .into_iter()
            .filter(|op| self.wants(op.table()))
            .collect();
        Ok((!ops.is_empty()).then_some(Change {
            lsn,
            commit_micros: txn.commit_micros,
            ops,
        }))
    }

    /// `Error::Retired` when the log no longer holds the next LSN (a checkpoint retired its
    /// segment while it was read), else `e`.
    fn gone_or(&self, e: Error) -> Error {
        let oldest = self.oldest_in_log();
        if self.next < oldest {
            Error::Retired {
                lsn: self.next,
                oldest,
            }
        } else {
            e
        }
    }
}

impl Iterator for Subscription<'_> {
    type Item = Result<Change>;

    /// The next change, waiting for it as long as it takes; after an error, `None`.
    fn next(&mut self) -> Option<Result<Change>> {
        if self.ended {
            return None;
        }
        let next = self.next_change();
        self.ended = next.is_err();
        Some(next)
    }
}

/// The future of [`Subscription::next_async`].
#[must_use = "futures do nothing unless polled"]
pub struct NextChange<'s, 'db> {
    sub: &'s mut Subscription<'db>,
}

impl std::fmt::Debug for NextChange<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextChange")
            .field("next", &self.sub.next)
            .finish()
    }
}

impl Future for NextChange<'_, '_> {
    type Output = Result<Change>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Change>> {
        self.get_mut().sub.poll_change(cx)
    }
}

/// The change feed as an async stream: each change, waiting for it as long as it takes;
/// after an error, the end.
impl futures_core::Stream for Subscription<'_> {
    type Item = Result<Change>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Change>>> {
        let sub = self.get_mut();
        if sub.ended {
            return Poll::Ready(None);
        }
        sub.poll_change(cx).map(|next| {
            sub.ended = next.is_err();
            Some(next)
        })
    }
}

impl Subscription<'_> {
    /// The next change, or `Pending` with `cx`'s waker registered for the next commit.
    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Result<Change>> {
        let sub = self;
        loop {
            match sub.try_next() {
                Ok(Some(change)) => return Poll::Ready(Ok(change)),
                Err(e) => return Poll::Ready(Err(e)),
                Ok(None) => {}
            }
            let mut ring = sub.engine.state.feed.ring.lock();
            if ring.has_news_for(sub.next) {
                continue;
            }
            if !ring.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                ring.wakers.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
    }
}
