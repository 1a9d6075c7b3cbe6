//! What the loom models (`loom-tests/`) drive of the engine: thin handles over the real code
//! of publication, snapshots, overlay eviction, the applier's batches, the wait for room and
//! checkpoints, with LMDB left to the model's in-memory fake. Built only with
//! `--cfg walmdb_loom`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::catalog::Lookup;
use crate::engine::sequencer::TxnWrites;
use crate::engine::{EngineState, Shutdown};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::store::WriteOp;
use crate::sync::{Arc, DataArc, Ordering};
use crate::wal::log::record::FrameBuilder;
use crate::wal::log::segment::SegmentHeader;
use crate::wal::{EncodedRecord, Sequencer, Wal};

pub use crate::sync::{set_bug, Bug};

/// The table every model writes.
pub const TABLE: &str = "t";

/// A published commit, as the applier receives it.
#[derive(Debug, Clone)]
pub struct Published(Lsn, DataArc<TxnWrites>);

/// The engine's shared state (overlay, snapshots, watermarks) without LMDB.
#[derive(Debug, Clone)]
pub struct Engine(Arc<EngineState>);

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// A fresh engine that knows table [`TABLE`].
    pub fn new() -> Engine {
        let state = EngineState::default();
        state.catalog.get_or_add(TABLE);
        Engine(Arc::new(state))
    }

    /// The flusher's `publish` of commit `lsn`, which puts `value` at `key` (commits come
    /// in LSN order).
    pub fn publish(&self, lsn: Lsn, key: &[u8], value: &[u8]) -> Published {
        let writes = DataArc::new(TxnWrites::new(
            vec![WriteOp::Put {
                table: DataArc::from(TABLE),
                key: crate::bytes::SharedBytes::copy_of(key),
                value: crate::bytes::SharedBytes::copy_of(value),
            }],
            crate::overlay::version_cost(key, Some(value)),
            0,
            false,
        ));
        crate::engine::sequencer::publish(&self.0, lsn, writes.clone());
        Published(lsn, writes)
    }

    /// A change-feed subscription opens: returns the LSN from which publication keeps
    /// commits for it (every commit below it is left to the log).
    pub fn open_feed(&self) -> Lsn {
        self.0.feed.open_for_model(&self.0.visible_lsn)
    }

    /// True if the change feed kept commit `lsn` for subscriptions.
    pub fn feed_kept(&self, lsn: Lsn) -> bool {
        self.0.feed.kept(lsn)
    }

    /// The applier's steps once its LMDB transaction holding `commits` has committed:
    /// raises the applied LSN, then evicts the overlay versions no snapshot needs.
    pub fn applied(&self, commits: &[Published]) {
        let Some(last) = commits.last() else { return };
        self.0.applied_lsn.store(last.0, Ordering::Release);
        let mut backlog: VecDeque<_> = commits.iter().map(|p| (p.0, p.1.clone())).collect();
        crate::engine::apply::evict_applied(&self.0, &mut backlog);
    }

    /// The applier's step of raising the applied LSN alone (its LMDB transaction through
    /// `lsn` committed).
    pub fn set_applied(&self, lsn: Lsn) {
        self.0.applied_lsn.store(lsn, Ordering::Release);
    }

    /// Bytes of the versions in the overlay (what its bound counts).
    pub fn overlay_bytes(&self) -> usize {
        self.0.overlay_bytes.load(Ordering::Relaxed)
    }

    /// The applied LSN.
    pub fn applied_lsn(&self) -> Lsn {
        self.0.applied_lsn.load(Ordering::Acquire)
    }

    /// A commit's wait for room (the real `wait_for_room_until` over the real
    /// `backlog_over`) while the overlay holds more than `limit` bytes, with no deadline:
    /// returns once it has room (or the engine refuses).
    pub fn wait_for_room(&self, limit: usize) -> Result<()> {
        let sh = &self.0;
        let forever = crate::limits::deadline(Instant::now(), Duration::MAX);
        sh.wait_for_room_until(
            || sh.backlog_over(limit, u64::MAX),
            forever,
            || Error::StorageFull { map_size: 0 },
        )
    }

    /// The applier thread (`apply::applier_loop`) without LMDB and the log: takes each
    /// batch through the real `take_batch` (its idle wait; its gathering, here for an hour,
    /// so that only `apply_max_ops` queued operations, a hurry or a stop end it; batches of
    /// at most `apply_max_ops`), raises the applied LSN for it (its LMDB transaction
    /// committed) and evicts through the real `evict_applied`, which wakes commits waiting
    /// for room. Mirrored, not shared: the loop itself, and its end on a stop once a batch
    /// takes nothing (the real loop ends on `Drain` once the queue is empty: the same turn
    /// when no batch leaves operations behind).
    pub fn run_applier(&self, apply_max_ops: usize) {
        const GATHER: Duration = Duration::from_secs(3600);
        let sh = &self.0;
        let mut backlog = VecDeque::new();
        loop {
            let mut batch = Vec::new();
            let stop = sh.take_batch(
                !backlog.is_empty(),
                apply_max_ops,
                GATHER,
                |_| apply_max_ops,
                &mut batch,
            );
            if stop == Some(Shutdown::Abandon) {
                return;
            }
            let took = !batch.is_empty();
            if let Some((last, _, _)) = batch.last() {
                sh.applied_lsn.store(*last, Ordering::Release);
            }
            backlog.extend(batch.into_iter().map(|(lsn, writes, _)| (lsn, writes)));
            crate::engine::apply::evict_applied(sh, &mut backlog);
            if stop.is_some() && !took {
                return;
            }
        }
    }

    /// Tells the applier to stop once it has applied what is queued.
    pub fn stop_applier(&self) {
        self.0.stop_applier(Shutdown::Drain);
    }

    /// A map resize's pause: holds new LMDB transactions off and waits for the open ones to
    /// end (loom models no time: it waits until they have).
    pub fn pause_snapshots(&self) -> bool {
        self.0.snapshots.pause(std::time::Duration::MAX)
    }

    /// Ends a pause.
    pub fn resume_snapshots(&self) {
        self.0.snapshots.resume();
    }

    /// Closing's end of the snapshot registry: refuses every LMDB transaction from now on
    /// and waits for the open ones to end (loom models no time: until they have). After
    /// it, LMDB may be closed.
    pub fn close_snapshots(&self) -> bool {
        self.0.snapshots.close_for_good(std::time::Duration::MAX)
    }

    /// A read transaction's `get` of `key`: begins a snapshot over the LMDB state `open`
    /// returns (with its applied LSN), reads through the overlay and, where LMDB decides,
    /// through `lmdb_get`, and ends the snapshot. Returns the snapshot's visible LSN and the
    /// value.
    pub fn read<T>(
        &self,
        open: impl FnMut() -> (T, Lsn),
        lmdb_get: impl Fn(&T, &[u8]) -> Option<Vec<u8>>,
        key: &[u8],
    ) -> (Lsn, Option<Vec<u8>>) {
        self.try_read(open, lmdb_get, key)
            .expect("the registry is open")
    }

    /// [`Engine::read`], or `None` when the registry refuses the snapshot (it is closed).
    pub fn try_read<T>(
        &self,
        mut open: impl FnMut() -> (T, Lsn),
        lmdb_get: impl Fn(&T, &[u8]) -> Option<Vec<u8>>,
        key: &[u8],
    ) -> Option<(Lsn, Option<Vec<u8>>)> {
        let sh = &self.0;
        let (lmdb, reg) = match sh.snapshots.begin(&sh.visible_lsn, || Ok(open())) {
            Ok(begun) => begun,
            Err(crate::Error::Closed) => return None,
            Err(e) => panic!("the fake LMDB opens: {e}"),
        };
        let (a, v) = (reg.applied(), reg.visible);
        let table = sh.catalog.find(TABLE);
        let view = table.and_then(|table| Some((table, table.view(a, v)?)));
        let value = view.and_then(|(table, view)| {
            table.lookup(&view, a, v, key, |found| match found {
                Lookup::Overlay(value) => value.map(|v| v.to_vec()),
                // The fake holds no table handles: LMDB's answer is the fake's.
                Lookup::Lmdb(_) => lmdb_get(&lmdb, key),
            })
        });
        drop(lmdb);
        sh.snapshots.release(&reg);
        Some((reg.visible, value))
    }

    /// A checkpoint with `force_sync` as LMDB's sync: syncs, then retires the log segments
    /// below the applied LSN it read.
    pub fn checkpoint<S: Sequencer>(
        &self,
        wal: &Wal<S>,
        force_sync: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        crate::engine::checkpoint::checkpoint_with(&self.0, wal, force_sync)
    }
}

/// The bytes of a synced segment file holding `records` from `first_lsn` on, one record a
/// frame, in the format the flusher writes: for models that start from a written log
/// rather than spend their exploration writing it.
pub fn segment_file(
    segment_no: u64,
    first_lsn: Lsn,
    segment_bytes: u64,
    records: &[EncodedRecord],
) -> Vec<u8> {
    // One fixed database, so the segments of a model form one log.
    let lineage = crate::lsn::Lineage {
        identity: 0x100F,
        timeline: 1,
        parent: 0,
    };
    let header = SegmentHeader::new(segment_no, first_lsn, segment_bytes, lineage);
    let mut out = header.encode().to_vec();
    let mut frame = FrameBuilder::new();
    for (lsn, record) in (first_lsn..).zip(records) {
        frame.push(record);
        frame.finish(&mut out, header.salt, lsn, lsn - 1, None);
    }
    out.resize(segment_bytes as usize, 0);
    out
}
