//! A committed transaction's writes, as the flusher logs them, the overlay holds them and
//! the applier applies them: its operations in memory, or the runs it spilled into.

use super::sequencer::table_runs;
use crate::spill::SpilledWrites;
use crate::store::WriteOp;
use crate::sync::DataArc as Arc;
use crate::sync::{AtomicUsize, Ordering};

/// A committed transaction's writes, shared by the overlay and the applier.
#[derive(Debug)]
pub(crate) struct TxnWrites {
    pub ops: Vec<WriteOp>,
    /// Bytes its versions take in the overlay ([`WriteOp::overlay_cost`] summed).
    pub versions_cost: usize,
    /// The commit time its log record carries (Unix microseconds; 0 for none).
    pub commit_micros: u64,
    /// Applied to LMDB before it becomes visible, never held in the overlay: a transaction
    /// too large for it (see [`THROUGH_SHARE`](super::admit::THROUGH_SHARE)).
    pub through: bool,
    /// Whether it was handed to the applier at admission, and what became of its record
    /// since: [`NOT_EARLY`], [`EARLY_PENDING`], [`EARLY_LOGGED`] or [`EARLY_WITHDRAWN`].
    pub early: AtomicUsize,
    /// Its writes in runs instead of `ops` (then empty): a transaction that spilled. It goes
    /// through, and is applied as a batch of its own.
    pub spilled: Option<SpilledWrites>,
}

impl crate::wal::log::record::TxnOps for TxnWrites {
    fn op_count(&self) -> usize {
        TxnWrites::op_count(self)
    }
    fn ops_len(&self) -> usize {
        match &self.spilled {
            Some(spilled) => spilled.ops_len(),
            None => (self.ops.iter())
                .map(|op| crate::wal::log::record::op_len(op.as_ref()))
                .sum(),
        }
    }
    fn encoder(&self) -> Box<dyn crate::wal::log::record::OpEncoder + '_> {
        match &self.spilled {
            Some(spilled) => Box::new(spilled.encoder()),
            None => Box::new(crate::wal::log::record::IndexedEncoder {
                op: |i: usize| self.ops[i].as_ref(),
                count: self.ops.len(),
                next: 0,
            }),
        }
    }
}

/// Bytes the versions of `ops` take in the overlay.
pub(crate) fn versions_cost(ops: &[WriteOp]) -> usize {
    ops.iter().map(WriteOp::overlay_cost).sum()
}

/// [`TxnWrites::early`]: handed to the applier once published, as every commit.
pub(crate) const NOT_EARLY: usize = 0;
/// Handed to the applier at admission (a commit that goes through, first of its group), so
/// LMDB takes it while the flusher writes and syncs its record; not known to be logged yet.
pub(crate) const EARLY_PENDING: usize = 1;
/// Its record is in the log as durably as its level says: the applier may commit it.
pub(crate) const EARLY_LOGGED: usize = 2;
/// Its record never reached the log: the applier must not commit it to LMDB.
pub(crate) const EARLY_WITHDRAWN: usize = 3;

impl TxnWrites {
    /// `versions_cost` is `ops`' [`WriteOp::overlay_cost`] summed (see [`versions_cost`]).
    pub fn new(
        ops: Vec<WriteOp>,
        versions_cost: usize,
        commit_micros: u64,
        through: bool,
    ) -> TxnWrites {
        debug_assert_eq!(versions_cost, self::versions_cost(&ops));
        TxnWrites {
            ops,
            versions_cost,
            commit_micros,
            through,
            early: AtomicUsize::new(NOT_EARLY),
            spilled: None,
        }
    }

    /// A transaction's writes spilled into runs: they go through.
    pub fn spilled(spilled: SpilledWrites, commit_micros: u64) -> TxnWrites {
        TxnWrites {
            ops: Vec::new(),
            versions_cost: spilled.versions_cost(),
            commit_micros,
            through: true,
            early: AtomicUsize::new(NOT_EARLY),
            spilled: Some(spilled),
        }
    }

    /// Its operations, in memory or spilled.
    pub fn op_count(&self) -> usize {
        self.spilled
            .as_ref()
            .map_or(self.ops.len(), SpilledWrites::op_count)
    }

    /// The tables of a commit that goes through, each once, in order.
    pub(super) fn through_tables(&self) -> Vec<&Arc<str>> {
        let mut tables: Vec<&Arc<str>> = Vec::new();
        // A commit names few; its operations come a table's run at a time (a list of every
        // operation's table would be 8 bytes an operation).
        let runs = table_runs(&self.ops).map(|run| run[0].table());
        let spilled = self
            .spilled
            .iter()
            .flat_map(|s| s.tables())
            .map(|t| &t.name);
        for table in runs.chain(spilled) {
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
        tables.sort_unstable();
        tables
    }

    /// Handed to the applier at admission (whatever became of it since).
    pub fn handed_early(&self) -> bool {
        self.early.load(Ordering::Acquire) != NOT_EARLY
    }
}
