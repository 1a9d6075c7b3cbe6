//! Admission: a commit request waits for room (the overlay's and the replay bound's), is
//! encoded as a log record and handed to the log's flusher with its ticket.

use std::time::{Duration, Instant};

use super::sequencer::{Check, Ticket, TxnWrites};
use super::{now_micros, Engine, EngineState};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::store::WriteOp;
use crate::sync::DataArc as Arc;
use crate::sync::Ordering;

/// The share of `overlay_max_bytes` past which commits are slowed down.
const SLOWDOWN_AT: f64 = 0.5;

/// The slowest rate commits are slowed down to, overlay bytes per second: a stale or tiny
/// estimate of the applier's rate never holds a commit for long.
const MIN_DELAYED_RATE: f64 = (1 << 20) as f64;

impl EngineState {
    /// Slows a commit of `cost` overlay bytes down while the backlog is past
    /// [`SLOWDOWN_AT`] of `limit`: commits go through at the applier's measured rate at the
    /// threshold, falling to half of it at the bound, so the backlog settles where commits
    /// come in as fast as the applier drains them. Commits take turns (each reserves its
    /// share of time), so the rate holds however many threads commit.
    fn slow_down(&self, cost: usize, limit: usize) {
        let fill = self.overlay_bytes.load(Ordering::Relaxed) as f64 / limit as f64;
        let apply_rate = self.apply_rate.load(Ordering::Relaxed);
        if cost == 0 || fill <= SLOWDOWN_AT || apply_rate == 0 {
            if self.delayed_rate.load(Ordering::Relaxed) != 0 {
                self.delayed_rate.store(0, Ordering::Relaxed);
            }
            return;
        }
        let past = ((fill - SLOWDOWN_AT) / (1.0 - SLOWDOWN_AT)).min(1.0);
        let rate = (apply_rate as f64 * (1.0 - 0.5 * past)).max(MIN_DELAYED_RATE);
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

/// Slows the commit down while the backlog is past the slowdown threshold, then waits (up
/// to `backlog_wait`) while the overlay or the replay estimate is over its bound.
fn wait_for_room(engine: &Engine, cost: usize) -> Result<()> {
    let sh = &engine.state;
    let limit = engine.cfg.overlay_max_bytes;
    sh.slow_down(cost, limit);
    let over = || {
        let bytes = sh.overlay_bytes.load(Ordering::Relaxed);
        if bytes > limit {
            Some(Error::ApplyBacklog {
                what: "unapplied bytes",
                held: bytes as u64,
                limit: limit as u64,
            })
        } else if sh.replay_over.load(Ordering::Relaxed) {
            Some(Error::ApplyBacklog {
                what: "replay bytes",
                held: sh.replay_estimate.load(Ordering::Relaxed),
                limit: engine.cfg.max_replay_bytes,
            })
        } else {
            None
        }
    };
    if over().is_none() {
        return Ok(());
    }
    sh.stats.backlog_waits.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let deadline = crate::limits::deadline(started, engine.cfg.backlog_wait);
    let stalled = || {
        sh.stats
            .backlog_stall_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    };
    loop {
        // Room comes from applying: the applier must not go on gathering for
        // `apply_interval` (asked for outside the room lock).
        sh.hurry_applier();
        let g = sh.room.lock();
        let Some(e) = over() else {
            stalled();
            return Ok(());
        };
        // A failed engine frees no room: its refusal, not a wait that ends in `ApplyBacklog`.
        if let Some(failed) = sh.refusal() {
            stalled();
            return Err(failed);
        }
        if sh.storage_full.load(Ordering::Acquire) {
            stalled();
            return Err(Error::StorageFull {
                map_size: engine.store.map_size.load(Ordering::Relaxed),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            stalled();
            sh.stats.backlog_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        drop(
            sh.room_cv
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(10))),
        );
    }
}

/// Encodes `ops` as a log record and commits it through the flusher.
pub(crate) fn commit_ops(
    engine: &Engine,
    ops: Vec<WriteOp>,
    check: Check,
    snapshot: Lsn,
    durability: Option<Durability>,
) -> Result<Lsn> {
    let sh = &engine.state;
    let started = Instant::now();
    if let Some(e) = sh.refusal() {
        return Err(e);
    }
    if sh.storage_full.load(Ordering::Acquire) {
        return Err(Error::StorageFull {
            map_size: engine.store.map_size.load(Ordering::Relaxed),
        });
    }
    let cost = ops.iter().map(WriteOp::overlay_cost).sum();
    wait_for_room(engine, cost)?;
    let record = crate::wal::log::record::encode_txn(
        now_micros(),
        ops.len(),
        ops.iter().map(WriteOp::as_ref),
    );
    let ticket = Ticket {
        snapshot,
        check,
        writes: Arc::new(TxnWrites { ops }),
    };
    let lsn = engine.wal.commit_with(record, ticket, durability)?;
    let level = durability.unwrap_or(engine.cfg.wal.durability);
    sh.stats.commit_latency.record(level, started.elapsed());
    Ok(lsn)
}
