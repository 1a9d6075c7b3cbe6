//! Admission: a commit request waits for room (the overlay's and the replay bound's), is
//! encoded as a log record and handed to the log's flusher with its ticket.
//!
//! An async commit never waits on its caller's thread: when it would (the backlog slows
//! commits down or is full, the commit queue is full), it goes to the admitter thread,
//! which admits waiting commits in turn exactly as a blocking commit is admitted (same
//! pacing, same bounds, same errors) and answers each through its future.

use std::time::{Duration, Instant};

use std::collections::VecDeque;

use super::sequencer::{versions_cost, Check, ConflictPin, Ticket, TxnWrites};
use super::{now_micros, Engine, EngineState, Shutdown};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::spill::SpilledWrites;
use crate::store::WriteOp;
use crate::sync::DataArc as Arc;
use crate::sync::Ordering;
use crate::wal::log::record::{encode_txn, lazy_txn};
use crate::wal::{CommitFuture, Completion, Request, Responder};

/// A commit whose versions would take more than `overlay_max_bytes / THROUGH_SHARE` goes
/// through: the flusher hands it to the applier and makes it visible once LMDB holds it,
/// instead of holding its versions in the overlay (a bulk load, a transaction of any size).
pub(crate) const THROUGH_SHARE: usize = 4;

/// True when versions costing `cost` go through rather than into the overlay.
pub(crate) fn too_big_for_overlay(cost: usize, engine: &Engine) -> bool {
    cost > engine.cfg.overlay_max_bytes / THROUGH_SHARE
}

/// The share of `overlay_max_bytes` past which commits are slowed down.
const SLOWDOWN_AT: f64 = 0.5;

/// The slowest rate commits are slowed down to, overlay bytes per second: a stale or tiny
/// estimate of the applier's rate never holds a commit for long.
const MIN_DELAYED_RATE: f64 = (1 << 20) as f64;

impl EngineState {
    /// The rate a commit of `cost` overlay bytes is let through at while the backlog is past
    /// [`SLOWDOWN_AT`] of `limit`; `None` (and the published rate cleared) when it is not
    /// slowed down.
    fn slowdown_rate(&self, cost: usize, limit: usize) -> Option<f64> {
        let fill = self.overlay_bytes.load(Ordering::Relaxed) as f64 / limit as f64;
        let apply_rate = self.apply_rate.load(Ordering::Relaxed);
        if cost == 0 || fill <= SLOWDOWN_AT || apply_rate == 0 {
            if self.delayed_rate.load(Ordering::Relaxed) != 0 {
                self.delayed_rate.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let past = ((fill - SLOWDOWN_AT) / (1.0 - SLOWDOWN_AT)).min(1.0);
        Some((apply_rate as f64 * (1.0 - 0.5 * past)).max(MIN_DELAYED_RATE))
    }

    /// Slows a commit of `cost` overlay bytes down while the backlog is past
    /// [`SLOWDOWN_AT`] of `limit`: commits go through at the applier's measured rate at the
    /// threshold, falling to half of it at the bound, so the backlog settles where commits
    /// come in as fast as the applier drains them. Commits take turns (each reserves its
    /// share of time), so the rate holds however many threads commit.
    fn slow_down(&self, cost: usize, limit: usize) {
        let Some(rate) = self.slowdown_rate(cost, limit) else {
            return;
        };
        self.delayed_rate.store(rate as u64, Ordering::Relaxed);
        let turn = Duration::from_secs_f64(cost as f64 / rate);
        let now = Instant::now();
        let go_at = {
            let mut next = self.throttle.lock();
            let go_at = next.map_or(now, |n| n.max(now));
            *next = Some(crate::limits::deadline(go_at, turn));
            go_at
        };
        self.stats.backlog_delays.fetch_add(1, Ordering::Relaxed);
        if go_at > now {
            std::thread::sleep(go_at - now);
        }
        self.stats
            .backlog_stall_micros
            .fetch_add(now.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// Why the backlog has no room now (`ApplyBacklog`: the overlay or the replay estimate is
/// over its bound), or `None`.
fn backlog_over(engine: &Engine) -> Option<Error> {
    let cfg = &engine.cfg;
    engine
        .state
        .backlog_over(cfg.overlay_max_bytes, cfg.max_replay_bytes)
}

/// True if a commit of `cost` overlay bytes goes through now: not slowed down, not over a
/// bound (what `wait_for_room` would let through without waiting).
fn has_room_now(engine: &Engine, cost: usize) -> bool {
    let limit = engine.cfg.overlay_max_bytes;
    engine.state.slowdown_rate(cost, limit).is_none() && backlog_over(engine).is_none()
}

/// Slows the commit down while the backlog is past the slowdown threshold, then waits (up
/// to `backlog_wait` from `since`, or from the start of the wait) while the overlay or the
/// replay estimate is over its bound.
fn wait_for_room(engine: &Engine, cost: usize, since: Option<Instant>) -> Result<()> {
    let sh = &engine.state;
    sh.slow_down(cost, engine.cfg.overlay_max_bytes);
    let over = || backlog_over(engine);
    if over().is_none() {
        return Ok(());
    }
    sh.stats.backlog_waits.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let deadline = crate::limits::deadline(since.unwrap_or(started), engine.cfg.backlog_wait);
    let waited = sh.wait_for_room_until(over, deadline, || Error::StorageFull {
        map_size: engine.store.map_size.load(Ordering::Relaxed),
    });
    sh.stats
        .backlog_stall_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    waited
}

impl EngineState {
    /// Why the backlog has no room now: the overlay is over `limit` bytes or the replay
    /// estimate over `max_replay` (`ApplyBacklog`); `None` when it has room.
    pub(crate) fn backlog_over(&self, limit: usize, max_replay: u64) -> Option<Error> {
        let bytes = self.overlay_bytes.load(Ordering::Relaxed);
        if bytes > limit {
            Some(Error::ApplyBacklog {
                what: "unapplied bytes",
                held: bytes as u64,
                limit: limit as u64,
            })
        } else if self.replay_over.load(Ordering::Relaxed) {
            Some(Error::ApplyBacklog {
                what: "replay bytes",
                held: self.replay_estimate.load(Ordering::Relaxed),
                limit: max_replay,
            })
        } else {
            None
        }
    }

    /// Waits until `over` finds room, the engine fails or closes (its refusal), LMDB is
    /// full (`full()`) or `deadline` passes (`over`'s error). Each check is made under the
    /// room lock, which whoever makes room (eviction, a checkpoint) or refuses takes to
    /// notify, so no wake-up is lost (loom model
    /// `a_commit_waiting_for_room_is_woken_once_the_applier_makes_it`); the wait re-checks
    /// every 10 ms all the same.
    pub(crate) fn wait_for_room_until(
        &self,
        over: impl Fn() -> Option<Error>,
        deadline: Instant,
        full: impl Fn() -> Error,
    ) -> Result<()> {
        let hurry_first = crate::sync::bug(crate::sync::Bug::HurriedBeforeRoomCheck);
        loop {
            if hurry_first {
                self.hurry_applier();
            }
            let g = self.room.lock();
            let Some(e) = over() else {
                return Ok(());
            };
            // A failed engine frees no room: its refusal, not a wait that ends in `ApplyBacklog`.
            if let Some(failed) = self.refusal() {
                return Err(failed);
            }
            if self.storage_full.load(Ordering::Acquire) {
                return Err(full());
            }
            let now = Instant::now();
            if now >= deadline {
                self.stats.backlog_refusals.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            // Room comes from applying: the applier must not go on gathering for
            // `apply_interval`. Asked for after the check, under the room lock: a batch the
            // applier takes from now on clears the request, and that batch's eviction
            // notifies under this lock, so after this wait begins: this wait then asks
            // again. Asked for before the check, a batch taken in between cleared it, and
            // commits published after that batch waited out a gathering.
            if !hurry_first {
                self.hurry_applier();
            }
            drop(
                self.room_cv
                    .wait_timeout(g, (deadline - now).min(Duration::from_millis(10))),
            );
        }
    }
}

/// A transaction's commit, ready for admission.
#[derive(Debug)]
pub(crate) struct Commit {
    pub ops: Vec<WriteOp>,
    /// Its writes in runs instead (`ops` then empty): it goes through.
    pub spilled: Option<Box<SpilledWrites>>,
    /// Bytes its versions would take in the overlay ([`versions_cost`] of `ops`, or the
    /// spilled writes').
    pub versions_cost: usize,
    pub check: Check,
    /// The visible LSN of its snapshot (0 with none).
    pub snapshot: Lsn,
    /// Its snapshot's registration, held until the flusher checks it.
    pub pin: Option<ConflictPin>,
    pub durability: Option<Durability>,
}

impl Commit {
    /// A commit of `ops` that read nothing, at the engine's durability.
    pub fn blind(ops: Vec<WriteOp>) -> Commit {
        Commit {
            versions_cost: versions_cost(&ops),
            ops,
            spilled: None,
            check: Check::Blind,
            snapshot: 0,
            pin: None,
            durability: None,
        }
    }

    /// True when it is applied through LMDB rather than held in the overlay.
    fn goes_through(&self, engine: &Engine) -> bool {
        self.spilled.is_some() || too_big_for_overlay(self.versions_cost, engine)
    }

    /// What it takes of the overlay's room: nothing when it goes through.
    fn cost(&self, engine: &Engine) -> usize {
        if self.goes_through(engine) {
            0
        } else {
            self.versions_cost
        }
    }

    /// Encodes the commit as a log record and its request to the flusher, answered through
    /// `done`; a record the log refuses gives `done` back with why.
    fn into_request(
        self,
        engine: &Engine,
        done: Responder,
    ) -> std::result::Result<Request<Ticket>, (Error, Responder)> {
        let commit_micros = now_micros();
        let through = self.goes_through(engine);
        // Applying it waits for nothing the log has not synced (the applier would ask the
        // flusher, which waits for the applier): at least a group commit's sync.
        let durability = match self.durability.unwrap_or(engine.cfg.wal.durability) {
            level if through && !level.is_durable() => Some(Durability::group_commit()),
            _ => self.durability,
        };
        let writes = Arc::new(match self.spilled {
            Some(spilled) => TxnWrites::spilled(*spilled, commit_micros),
            None => TxnWrites::new(self.ops, self.versions_cost, commit_micros, through),
        });
        // A commit that goes through is encoded a piece at a time as the log writes it: its
        // payload (as large as its writes) is never whole in memory beside them.
        let record = if through {
            lazy_txn(commit_micros, writes.clone())
        } else {
            encode_txn(
                commit_micros,
                writes.ops.len(),
                writes.ops.iter().map(WriteOp::as_ref),
            )
        };
        if let Err(e) = engine.wal.check_commit(&record, durability.as_ref()) {
            return Err((e, done));
        }
        let ticket = Ticket {
            snapshot: self.snapshot,
            check: self.check,
            writes,
            pin: self.pin,
            early: None,
        };
        Ok(engine.wal.commit_request(record, ticket, durability, done))
    }
}

/// Refuses a commit a failed or full engine cannot take, before it waits for anything.
fn refuse_early(engine: &Engine) -> Result<()> {
    let sh = &engine.state;
    if let Some(e) = sh.refusal() {
        return Err(e);
    }
    if sh.storage_full.load(Ordering::Acquire) {
        return Err(Error::StorageFull {
            map_size: engine.store.map_size.load(Ordering::Relaxed),
        });
    }
    Ok(())
}

/// Admits `commit` (waiting for room and queue space as needed) and waits for its answer.
pub(crate) fn commit_ops(engine: &Engine, commit: Commit) -> Result<Lsn> {
    let started = Instant::now();
    refuse_early(engine)?;
    wait_for_room(engine, commit.cost(engine), None)?;
    let level = commit.durability.unwrap_or(engine.cfg.wal.durability);
    let (completion, done) = Completion::pair();
    let request = commit.into_request(engine, done).map_err(|(e, done)| {
        done.respond(Err(Error::Closed));
        e
    })?;
    engine.wal.write_or_queue(request)?;
    let lsn = completion.wait()?;
    engine
        .state
        .stats
        .commit_latency
        .record(level, started.elapsed());
    Ok(lsn)
}

/// Admits `commit` without waiting on this thread: queued at once when there is room,
/// else handed to the admitter thread. The future answers either way; dropping it cancels
/// nothing.
pub(crate) fn commit_ops_async(engine: &Engine, commit: Commit) -> CommitFuture {
    let started = Instant::now();
    if let Err(e) = refuse_early(engine) {
        return CommitFuture::answered(Err(e));
    }
    let sh = &engine.state;
    let level = commit.durability.unwrap_or(engine.cfg.wal.durability);
    let (completion, done) = Completion::pair();
    let waiting = if has_room_now(engine, commit.cost(engine)) {
        let request = match commit.into_request(engine, done) {
            Ok(request) => request,
            Err((e, done)) => {
                done.respond(Err(Error::Closed));
                return CommitFuture::answered(Err(e));
            }
        };
        match engine
            .wal
            .push(request, None)
            .map_err(|not_queued| *not_queued)
        {
            Ok(()) => None,
            Err((Error::Backpressure { .. }, request)) => Some(Waiting::Queue(request)),
            Err((e, request)) => {
                request.answer(Err(Error::Closed));
                return CommitFuture::answered(Err(e));
            }
        }
    } else {
        Some(Waiting::Admit {
            commit,
            since: started,
            done,
        })
    };
    if let Some(waiting) = waiting {
        sh.stats.async_admissions.fetch_add(1, Ordering::Relaxed);
        sh.hand_to_admitter(waiting);
    }
    let stats = engine.state.clone();
    CommitFuture::waiting(completion).on_success(move || {
        stats.stats.commit_latency.record(level, started.elapsed());
    })
}

/// An async commit the admitter admits on its behalf.
#[derive(Debug)]
pub(crate) enum Waiting {
    /// Waits for room in the backlog (paced as a blocking commit is), then for queue space.
    Admit {
        commit: Commit,
        since: Instant,
        done: Responder,
    },
    /// Had room, found the commit queue full: waits for queue space.
    Queue(Request<Ticket>),
}

/// The admitter's queue.
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    waiting: VecDeque<Waiting>,
    stop: Option<Shutdown>,
    /// The admitter thread has ended: nothing handed over would be answered.
    ended: bool,
}

impl EngineState {
    fn hand_to_admitter(&self, waiting: Waiting) {
        let mut q = self.admissions.lock();
        if q.ended {
            drop(q);
            waiting.answer(Err(self.refusal().unwrap_or(Error::Closed)));
            return;
        }
        q.waiting.push_back(waiting);
        self.admissions_cv.notify_one();
    }

    /// The admitter thread ended (stopped, or gave up after panics): every commit still
    /// handed to it, and every later one, is answered with the engine's refusal or
    /// `Closed`, so no future waits forever.
    pub(crate) fn admitter_ended(&self) {
        let waiting = {
            let mut q = self.admissions.lock();
            q.ended = true;
            std::mem::take(&mut q.waiting)
        };
        for w in waiting {
            w.answer(Err(self.refusal().unwrap_or(Error::Closed)));
        }
    }

    /// Stops the admitter: on `Drain` once it has admitted every commit handed to it, on
    /// `Abandon` answering each waiting one `Closed`.
    pub(crate) fn stop_admitter(&self, how: Shutdown) {
        let mut q = self.admissions.lock();
        q.stop = Some(how);
        self.admissions_cv.notify_all();
    }

    /// The next commit to admit; `None` once stopped (and, on `Drain`, emptied).
    fn next_admission(&self) -> Option<Waiting> {
        let mut q = self.admissions.lock();
        loop {
            match q.stop {
                Some(Shutdown::Abandon) => {
                    for waiting in q.waiting.drain(..) {
                        waiting.answer(Err(Error::Closed));
                    }
                    return None;
                }
                Some(Shutdown::Drain) if q.waiting.is_empty() => return None,
                _ => {}
            }
            if let Some(waiting) = q.waiting.pop_front() {
                return Some(waiting);
            }
            q = self.admissions_cv.wait(q);
        }
    }
}

impl Waiting {
    fn answer(self, answer: Result<Lsn>) {
        match self {
            Waiting::Admit { done, .. } => done.respond(answer),
            Waiting::Queue(request) => request.answer(answer),
        }
    }
}

/// The admitter thread: admits the async commits handed to it, in turn, until stopped.
pub(crate) fn admitter_loop(engine: &Engine) {
    while let Some(waiting) = engine.state.next_admission() {
        let request = match waiting {
            Waiting::Queue(request) => request,
            Waiting::Admit {
                commit,
                since,
                done,
            } => {
                let admitted = refuse_early(engine)
                    .and_then(|()| wait_for_room(engine, commit.cost(engine), Some(since)));
                if let Err(e) = admitted {
                    done.respond(Err(e));
                    continue;
                }
                match commit.into_request(engine, done) {
                    Ok(request) => request,
                    Err((e, done)) => {
                        done.respond(Err(e));
                        continue;
                    }
                }
            }
        };
        if let Err(not_queued) = engine
            .wal
            .push(request, Some(engine.cfg.wal.backpressure_wait))
        {
            let (e, request) = *not_queued;
            request.answer(Err(e));
        }
    }
}
