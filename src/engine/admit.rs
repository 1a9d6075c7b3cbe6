//! Admission: a commit request waits for room (the overlay's and the replay bound's), is
//! encoded as a log record and handed to the log's flusher with its ticket.

use std::time::{Duration, Instant};

use super::sequencer::{Check, Ticket, TxnWrites};
use super::{now_micros, Engine};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::store::WriteOp;
use crate::sync::DataArc as Arc;
use crate::sync::Ordering;

/// Waits while the overlay or the replay estimate is over its bound.
fn wait_for_room(engine: &Engine) -> Result<()> {
    let sh = &engine.state;
    let limit = engine.cfg.overlay_max_bytes;
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
    let deadline = Instant::now() + engine.cfg.wal.backpressure_wait;
    let mut g = sh.room.lock();
    loop {
        let Some(e) = over() else { return Ok(()) };
        if sh.storage_full.load(Ordering::Acquire) {
            return Err(Error::StorageFull {
                map_size: engine.store.map_size.load(Ordering::Relaxed),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            sh.stats.backlog_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        g = sh
            .room_cv
            .wait_timeout(g, (deadline - now).min(Duration::from_millis(10)));
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
    wait_for_room(engine)?;
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
