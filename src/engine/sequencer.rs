//! The engine's sequencer: on the flusher thread, in commit order, it checks each commit for
//! conflicts (optimistic concurrency control) and publishes committed writes to the overlay.
//!
//! Invariants:
//! - The conflict index maps each key to the LSN of its last admitted write; a commit is
//!   admitted only if no key it must check has an LSN above its snapshot's visible LSN.
//! - Entries at or below the conflict horizon are pruned: no live or later snapshot is older.
//! - Keys of commits of only puts and deletes are indexed lazily: before the next check that
//!   looks keys up, or once the deferred commits outgrow a bound; deferred commits at or
//!   below the horizon are dropped unindexed. Blind commits (most bulk writes) thus never
//!   pay for an index no check reads.
//! - What an admitted commit changed (index entries, table names) is undone if its group
//!   fails to reach the log: its LSN goes to the next commit, which must not find it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::EngineState;
use crate::bytes::SharedBytes;
use crate::catalog::{Table, LOCK_CHUNK};
use crate::error::{Error, Result};
use crate::keys::{as_slice_bound, in_bounds, KeyBounds};
use crate::lsn::Lsn;
use crate::overlay::{CountedKey, Version};
use crate::snapshots::Registration;
use crate::spill::SpilledWrites;
use crate::store::WriteOp;
use crate::sync::DataArc as Arc;
use crate::sync::Ordering;
use crate::wal::Sequencer;

pub(crate) use super::writes::{
    versions_cost, TxnWrites, EARLY_LOGGED, EARLY_PENDING, EARLY_WITHDRAWN,
};

/// What a transaction read, for `Isolation::Serializable`.
#[derive(Debug, Default)]
pub(crate) struct ReadSet {
    pub points: Vec<(Arc<str>, Vec<u8>)>,
    pub ranges: Vec<(Arc<str>, KeyBounds)>,
}

/// Which checks a commit needs.
#[derive(Debug)]
pub(crate) enum Check {
    /// It read nothing: its writes do not depend on its snapshot.
    Blind,
    /// Keys it writes.
    Writes,
    /// Keys it writes and keys and ranges it read.
    WritesAndReads(ReadSet),
}

/// Withdraws an early hand-off whose ticket is dropped unpublished (a conflict cannot come
/// after admission; a failed write, a flusher that panicked, a close can).
#[derive(Debug)]
pub(crate) struct EarlyHandOff(Arc<TxnWrites>);

impl Drop for EarlyHandOff {
    fn drop(&mut self) {
        // A no-op once published (logged).
        let _ = self.0.early.compare_exchange(
            EARLY_PENDING,
            EARLY_WITHDRAWN,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

/// What a committer hands the flusher.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub snapshot: Lsn,
    pub check: Check,
    pub writes: Arc<TxnWrites>,
    /// Holds the conflict horizon at or below `snapshot` until the commit is checked:
    /// it travels with the request, so a committer that stops waiting (a dropped commit
    /// future) cannot let the index entries its check needs be pruned.
    pub pin: Option<ConflictPin>,
    /// Set when admission handed the writes to the applier early.
    pub early: Option<EarlyHandOff>,
}

/// A committing snapshot's registration, pinning only the conflict horizon; released when
/// dropped.
#[derive(Debug)]
pub(crate) struct ConflictPin {
    state: Arc<EngineState>,
    reg: Registration,
}

impl ConflictPin {
    /// Takes over `reg`, which must already have stopped reading.
    pub fn new(state: Arc<EngineState>, reg: Registration) -> ConflictPin {
        ConflictPin { state, reg }
    }
}

impl Drop for ConflictPin {
    fn drop(&mut self) {
        self.state.snapshots.release(&self.reg);
    }
}

#[derive(Debug, Default)]
struct TableConflicts {
    /// Shares the key bytes of the committed writes (no copy on the flusher).
    keys: BTreeMap<SharedBytes, Lsn>,
    /// The last create or drop, or commit applied through LMDB (whose keys are not indexed:
    /// every later commit from an older snapshot that touches the table conflicts with it).
    ddl: Lsn,
    /// At least the LSN of the last key write admitted (not lowered when a failed commit's
    /// entries are undone): a range check skips a table not written since its snapshot.
    last_write: Lsn,
}

/// One change an admitted, unpublished commit made to the conflict index.
#[derive(Debug)]
struct Undo {
    lsn: Lsn,
    table: Arc<str>,
    /// The key written, or `None` for the table's `ddl`.
    key: Option<SharedBytes>,
    /// What the entry held before.
    previous: Option<Lsn>,
}

#[derive(Debug)]
pub(crate) struct EngineSequencer {
    state: Arc<EngineState>,
    max_tables: u32,
    max_checks: usize,
    tables: HashMap<Arc<str>, TableConflicts>,
    entries: usize,
    prune_at: usize,
    /// Changes of admitted commits not yet published, in LSN order.
    undo: VecDeque<Undo>,
    /// Table names admitted commits not yet published registered in the catalog.
    new_tables: VecDeque<(Lsn, Arc<str>)>,
    /// Admitted commits not yet published or abandoned: a commit handed to the applier at
    /// admission must have none before it, or the applier would see LSNs out of order.
    unpublished: usize,
    /// The last LSN published: index entries of commits at or below it need no undo.
    published: Lsn,
    /// Admitted commits whose keys are not indexed yet, in LSN order, each later than every
    /// commit indexed at admission (so `undo` stays in LSN order).
    deferred: VecDeque<Deferred>,
    /// Writes and overlay bytes of `deferred` (what it keeps alive).
    deferred_ops: usize,
    deferred_bytes: usize,
}

/// A commit whose keys are not indexed yet.
#[derive(Debug)]
struct Deferred {
    lsn: Lsn,
    writes: Arc<TxnWrites>,
}

const MIN_PRUNE_AT: usize = 4096;
/// Bounds on `deferred` before it is trimmed to the horizon (and indexed if that is not
/// enough).
const DEFERRED_MAX_OPS: usize = 64 * 1024;
const DEFERRED_MAX_BYTES: usize = 16 << 20;

impl EngineSequencer {
    pub fn new(state: Arc<EngineState>, max_tables: u32, max_checks: usize) -> Self {
        EngineSequencer {
            state,
            max_tables,
            max_checks,
            tables: HashMap::new(),
            entries: 0,
            prune_at: MIN_PRUNE_AT,
            undo: VecDeque::new(),
            new_tables: VecDeque::new(),
            unpublished: 0,
            published: 0,
            deferred: VecDeque::new(),
            deferred_ops: 0,
            deferred_bytes: 0,
        }
    }

    fn check(&self, ticket: &Ticket) -> Result<()> {
        let snap = ticket.snapshot;
        let conflict = |table: &str, key: &[u8]| Error::Conflict {
            table: table.to_owned(),
            key: key.to_vec(),
        };
        let check_key = |table: &Arc<str>, key: &[u8]| -> Result<()> {
            let Some(t) = self.tables.get(table) else {
                return Ok(());
            };
            if t.ddl > snap {
                return Err(conflict(table, &[]));
            }
            match t.keys.get(key) {
                Some(&lsn) if lsn > snap => Err(conflict(table, key)),
                _ => Ok(()),
            }
        };
        let reads = match &ticket.check {
            Check::Blind => return Ok(()),
            Check::Writes => None,
            Check::WritesAndReads(reads) => Some(reads),
        };
        if let Some(spilled) = &ticket.writes.spilled {
            spilled.for_each(|table, key, _| check_key(table, key))?;
        }
        for op in &ticket.writes.ops {
            match op.key() {
                Some(key) => check_key(op.table(), key)?,
                None => {
                    if self.tables.get(op.table()).is_some_and(|t| t.ddl > snap) {
                        return Err(conflict(op.table(), &[]));
                    }
                }
            }
        }
        let Some(reads) = reads else { return Ok(()) };
        // Every key read and index entry visited counts against the bound.
        let mut budget = self.max_checks;
        let too_large = || Error::ReadSetTooLarge {
            limit: self.max_checks,
        };
        for (table, key) in &reads.points {
            budget = budget.checked_sub(1).ok_or_else(too_large)?;
            check_key(table, key)?;
        }
        for (table, bounds) in &reads.ranges {
            budget = budget.checked_sub(1).ok_or_else(too_large)?;
            let Some(t) = self.tables.get(table) else {
                continue;
            };
            if t.ddl > snap {
                return Err(conflict(table, &[]));
            }
            if t.last_write <= snap || !crate::keys::bounds_valid(bounds) {
                // Nothing written since the snapshot, or an empty range (which
                // `BTreeMap::range` would panic on).
                continue;
            }
            let range = (as_slice_bound(&bounds.0), as_slice_bound(&bounds.1));
            for (key, &lsn) in t.keys.range::<[u8], _>(range) {
                budget = budget.checked_sub(1).ok_or_else(too_large)?;
                if lsn > snap && in_bounds(bounds, key) {
                    return Err(conflict(table, key));
                }
            }
        }
        Ok(())
    }

    /// Refuses a commit that would need more LMDB tables than `max_tables`; registers the
    /// new names of one that does not, so later commits count them.
    fn admit_tables(&mut self, writes: &TxnWrites, lsn: Lsn) -> Result<()> {
        let catalog = &self.state.catalog;
        let mut new: Vec<&Arc<str>> = Vec::new();
        // A commit's operations come table by table: each table is looked up once.
        let mut looked_up: Option<&Arc<str>> = None;
        for op in &writes.ops {
            let creates = matches!(op, WriteOp::Put { .. } | WriteOp::CreateTable { .. });
            if !creates || looked_up == Some(op.table()) {
                continue;
            }
            looked_up = Some(op.table());
            if !new.contains(&op.table()) && catalog.get(op.table()).is_none() {
                new.push(op.table());
            }
        }
        let spilled = writes.spilled.iter().flat_map(|s| s.tables());
        for table in spilled.filter(|t| t.put_span.is_some()) {
            if !new.contains(&&table.name) && catalog.get(&table.name).is_none() {
                new.push(&table.name);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        if catalog.len() + new.len() > self.max_tables as usize {
            return Err(Error::TooManyTables {
                max_tables: self.max_tables,
            });
        }
        for name in new {
            catalog.get_or_add(name);
            self.new_tables.push_back((lsn, name.clone()));
        }
        Ok(())
    }

    fn record(&mut self, writes: &Arc<TxnWrites>, lsn: Lsn) {
        let keys_only = !writes.through
            && !writes
                .ops
                .iter()
                .any(|op| matches!(op, WriteOp::DropTable { .. }));
        if keys_only {
            self.deferred_ops += writes.ops.len();
            self.deferred_bytes += writes.versions_cost;
            self.deferred.push_back(Deferred {
                lsn,
                writes: writes.clone(),
            });
            if self.deferred_ops > DEFERRED_MAX_OPS || self.deferred_bytes > DEFERRED_MAX_BYTES {
                self.trim_deferred();
            }
            return;
        }
        self.index_deferred();
        if writes.through {
            for table in writes.through_tables() {
                let t = self.tables.entry(table.clone()).or_default();
                t.last_write = t.last_write.max(lsn);
                self.undo.push_back(Undo {
                    lsn,
                    table: table.clone(),
                    key: None,
                    previous: Some(std::mem::replace(&mut t.ddl, lsn)),
                });
            }
            return;
        }
        self.index(writes, lsn);
    }

    /// Enters a commit's keys (and drops) in the index, with their undo while unpublished.
    fn index(&mut self, writes: &TxnWrites, lsn: Lsn) {
        let undoable = lsn > self.published;
        for op in &writes.ops {
            let t = self.tables.entry(op.table().clone()).or_default();
            let (key, previous) = match op {
                WriteOp::Put { key, .. } | WriteOp::Delete { key, .. } => {
                    t.last_write = t.last_write.max(lsn);
                    let previous = t.keys.insert(key.clone(), lsn);
                    if previous.is_none() {
                        self.entries += 1;
                    }
                    (Some(key.clone()), previous)
                }
                // Creating a table changes no key a transaction could have read.
                WriteOp::CreateTable { .. } => continue,
                WriteOp::DropTable { .. } => (None, Some(std::mem::replace(&mut t.ddl, lsn))),
            };
            if undoable {
                self.undo.push_back(Undo {
                    lsn,
                    table: op.table().clone(),
                    key,
                    previous,
                });
            }
        }
    }

    /// Indexes every deferred commit's keys: a check is about to look keys up.
    fn index_deferred(&mut self) {
        while let Some(d) = self.deferred.pop_front() {
            self.index(&d.writes, d.lsn);
        }
        self.deferred_ops = 0;
        self.deferred_bytes = 0;
    }

    fn forget_deferred(&mut self, d: &Deferred) {
        self.deferred_ops -= d.writes.ops.len();
        self.deferred_bytes -= d.writes.versions_cost;
    }

    /// Drops deferred commits no live or later snapshot is older than; indexes the rest if
    /// they still outgrow the bounds.
    fn trim_deferred(&mut self) {
        let horizon = self.conflict_horizon();
        while self.deferred.front().is_some_and(|d| d.lsn <= horizon) {
            let d = self.deferred.pop_front().expect("front exists");
            self.forget_deferred(&d);
        }
        if self.deferred_ops > DEFERRED_MAX_OPS || self.deferred_bytes > DEFERRED_MAX_BYTES {
            self.index_deferred();
        }
    }

    /// Undoes what the commits at `lsn` and later, all unpublished, changed: their group
    /// failed, and their LSNs go to the next commits.
    fn undo_from(&mut self, lsn: Lsn) {
        while self.deferred.back().is_some_and(|d| d.lsn >= lsn) {
            let d = self.deferred.pop_back().expect("back exists");
            self.forget_deferred(&d);
        }
        while self.undo.back().is_some_and(|u| u.lsn >= lsn) {
            let u = self.undo.pop_back().expect("back exists");
            let t = self.tables.entry(u.table).or_default();
            match (u.key, u.previous) {
                (Some(key), Some(previous)) => {
                    t.keys.insert(key, previous);
                }
                (Some(key), None) => {
                    if t.keys.remove(&key).is_some() {
                        self.entries -= 1;
                    }
                }
                (None, previous) => t.ddl = previous.unwrap_or(0),
            }
        }
        while self.new_tables.back().is_some_and(|(at, _)| *at >= lsn) {
            let (_, name) = self.new_tables.pop_back().expect("back exists");
            self.state.catalog.forget_unused(&name);
        }
    }

    /// Commits at or below it can conflict with no live or later transaction.
    fn conflict_horizon(&self) -> Lsn {
        self.state
            .snapshots
            .conflict_horizon(&self.state.visible_lsn)
    }

    fn prune(&mut self) {
        let horizon = self.conflict_horizon();
        let mut entries = 0;
        self.tables.retain(|_, t| {
            t.keys.retain(|_, lsn| *lsn > horizon);
            entries += t.keys.len();
            !t.keys.is_empty() || t.ddl > horizon
        });
        self.entries = entries;
        self.prune_at = (entries * 2).max(MIN_PRUNE_AT);
    }
}

impl Sequencer for EngineSequencer {
    type Ticket = Ticket;

    fn admit(&mut self, ticket: &mut Ticket, lsn: Lsn) -> Result<()> {
        if !matches!(ticket.check, Check::Blind) {
            self.index_deferred();
        }
        // Checked before its tables are registered: a refused commit registers none.
        let checked = self.check(ticket);
        // Checked: the index entries its snapshot needed may go.
        drop(ticket.pin.take());
        if let Err(e) = checked {
            self.state.stats.conflicts.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        self.admit_tables(&ticket.writes, lsn)?;
        self.record(&ticket.writes, lsn);
        if self.entries >= self.prune_at {
            self.prune();
        }
        if ticket.writes.through && self.unpublished == 0 {
            // Every earlier commit is published, so on the apply queue: LMDB may take this
            // one while its record is written (committed only once it is logged).
            let writes = &ticket.writes;
            writes.early.store(EARLY_PENDING, Ordering::Release);
            ticket.early = Some(EarlyHandOff(writes.clone()));
            self.state.enqueue_for_apply(lsn, writes.clone());
        }
        self.unpublished += 1;
        Ok(())
    }

    fn publish(&mut self, lsn: Lsn, mut ticket: Ticket) {
        self.published = lsn;
        while self.undo.front().is_some_and(|u| u.lsn <= lsn) {
            self.undo.pop_front();
        }
        while self.new_tables.front().is_some_and(|(at, _)| *at <= lsn) {
            self.new_tables.pop_front();
        }
        self.unpublished -= 1;
        if let Some(early) = ticket.early.take() {
            self.state.note_logged(&early.0);
        }
        publish(&self.state, lsn, ticket.writes);
    }

    fn abandon(&mut self, lsn: Lsn, _ticket: Ticket) {
        // Dropping the ticket withdraws an early hand-off.
        self.unpublished -= 1;
        self.undo_from(lsn);
    }

    fn abandon_from(&mut self, lsn: Lsn) {
        // Every unpublished commit is abandoned (their tickets, dropped, withdrew theirs).
        self.unpublished = 0;
        self.undo_from(lsn);
    }
}

/// Makes the commit at `lsn` visible: versions into the overlay, the writes onto the
/// apply queue, then `visible_lsn`. Runs on the flusher thread, in LSN order. A commit that
/// goes through is applied to LMDB first, and no later commit is published meanwhile.
pub(crate) fn publish(sh: &EngineState, lsn: Lsn, writes: Arc<TxnWrites>) {
    note_ends(sh, lsn, &writes.ops);
    if let Some(spilled) = &writes.spilled {
        note_spilled_ends(sh, lsn, spilled);
    }
    if writes.through {
        publish_through(sh, lsn, &writes);
    } else {
        publish_to_overlay(sh, lsn, writes);
    }
}

/// Tells each table the commit at `lsn` puts into, creates or drops what it puts, before
/// any snapshot can see it: what was known of its ends and the commit crosses is forgotten
/// (see [`crate::ends`]).
fn note_ends(sh: &EngineState, lsn: Lsn, ops: &[WriteOp]) {
    for run in table_runs(ops) {
        let name = run[0].table();
        let mut span: Option<(&[u8], &[u8])> = None;
        let mut reset = false;
        for op in run {
            match op {
                WriteOp::Put { key, .. } => {
                    let key = &key[..];
                    span =
                        Some(span.map_or((key, key), |(low, high)| (low.min(key), high.max(key))));
                }
                WriteOp::Delete { .. } => {}
                WriteOp::CreateTable { .. } | WriteOp::DropTable { .. } => reset = true,
            }
        }
        if span.is_none() && !reset {
            continue;
        }
        // A table never known has nothing known of its ends.
        let Some(table) = sh.catalog.get(name) else {
            continue;
        };
        let mut ends = table.ends.lock();
        if reset {
            ends.reset(lsn);
        }
        if let Some((lowest, highest)) = span {
            ends.put(lsn, lowest, highest);
        }
    }
}

/// A spilled commit's operations read back into memory: for a commit LMDB cannot take now,
/// which the overlay holds instead ([`publish_through`]).
fn read_back(spilled: &SpilledWrites) -> std::io::Result<Vec<WriteOp>> {
    let mut ops = Vec::with_capacity(spilled.op_count());
    spilled.for_each(|table, key, value| {
        let (key, value) = (SharedBytes::copy_of(key), value.map(SharedBytes::copy_of));
        ops.push(WriteOp::put_or_delete(table.clone(), key, value));
        Ok::<(), std::io::Error>(())
    })?;
    Ok(ops)
}

/// [`note_ends`] of a spilled commit's puts.
fn note_spilled_ends(sh: &EngineState, lsn: Lsn, spilled: &SpilledWrites) {
    for spilled in spilled.tables() {
        if let (Some((lowest, highest)), Some(table)) =
            (&spilled.put_span, sh.catalog.get(&spilled.name))
        {
            table.ends.lock().put(lsn, lowest, highest);
        }
    }
}

/// A commit's operations table by table: they come a run of one table's at a time.
pub(super) fn table_runs(ops: &[WriteOp]) -> impl Iterator<Item = &[WriteOp]> {
    ops.chunk_by(|a, b| a.table() == b.table())
}

/// [`publish`] of a commit whose versions the overlay holds.
fn publish_to_overlay(sh: &EngineState, lsn: Lsn, writes: Arc<TxnWrites>) {
    let mut bytes = 0;
    let mut versions = 0;
    for run in table_runs(&writes.ops) {
        let name = run[0].table();
        // A delete from a table never known changes nothing visible: skip it.
        let Some(table) = sh.catalog.get(name) else {
            continue;
        };
        // Counted before the lock, in one pass (see `CountedKey`).
        let mut counted = run
            .iter()
            .filter_map(|op| match op {
                WriteOp::Put { key, value, .. } => Some((CountedKey::of(key), Some(value.clone()))),
                WriteOp::Delete { key, .. } => Some((CountedKey::of(key), None)),
                WriteOp::CreateTable { .. } | WriteOp::DropTable { .. } => None,
            })
            .collect::<Vec<_>>()
            .into_iter();
        let mut there_already = Vec::new();
        let mut st = table.state.write();
        for (held, op) in run.iter().enumerate() {
            // Versions above `visible_lsn` are seen by no snapshot yet: readers may come in
            // between chunks.
            if held > 0 && held % LOCK_CHUNK == 0 {
                st = table.state.yield_write(st);
            }
            match op {
                WriteOp::Put { .. } | WriteOp::Delete { .. } => {
                    if matches!(op, WriteOp::Put { .. }) {
                        Table::note_exists(&mut st, lsn);
                    }
                    bytes += op.overlay_cost();
                    versions += 1;
                    let (key, value) = counted.next().expect("a count for each version");
                    there_already.extend(st.overlay.push(key, Version { lsn, value }));
                }
                WriteOp::CreateTable { .. } => Table::note_exists(&mut st, lsn),
                WriteOp::DropTable { .. } => Table::note_dropped(&mut st, lsn),
            }
        }
        drop(st);
        drop(there_already);
    }
    sh.overlay_bytes.fetch_add(bytes, Ordering::Relaxed);
    sh.stats
        .overlay_versions
        .fetch_add(versions, Ordering::Relaxed);
    // Visible before the applier can take it: LMDB never holds a commit that is not
    // visible, so every snapshot has applied LSN <= visible LSN.
    sh.visible_lsn.store(lsn, Ordering::Release);
    sh.feed.published(lsn, &writes, bytes);
    sh.enqueue_for_apply(lsn, writes);
}

/// Publishes a commit that goes through: hands it to the applier, waits until LMDB holds it
/// (its group is synced, so the applier waits for no sync of the flusher's), then makes it
/// visible. Until then `visible_lsn` stays below it, and a snapshot begun after LMDB took it
/// sees it whole (its visible LSN is at least its applied LSN). When the applier cannot
/// apply it (the engine failed, a close abandons what is queued, LMDB's map is full at its
/// limit) it is published to the overlay after all, by a copy that is evicted as any commit
/// once applied, so reads stay consistent and `close()` does not hang.
fn publish_through(sh: &EngineState, lsn: Lsn, writes: &Arc<TxnWrites>) {
    let stuck = || sh.applier_gone() || sh.storage_full.load(Ordering::Acquire);
    let held_instead = || {
        let ops = match writes.spilled.as_ref().map(read_back) {
            None => writes.ops.clone(),
            Some(Ok(ops)) => ops,
            Some(Err(e)) => {
                // Logged, but neither LMDB nor the overlay can hold it: reads would miss
                // it, so the engine stops (reopening replays it from the log).
                sh.fail(format!("a spilled commit could not be read back: {e}"));
                Vec::new()
            }
        };
        let cost = versions_cost(&ops);
        Arc::new(TxnWrites::new(ops, cost, writes.commit_micros, false))
    };
    if stuck() {
        return publish_to_overlay(sh, lsn, held_instead());
    }
    // Its tables' existence, as its versions would record it (once per run of puts).
    let mut last_put: Option<&Arc<str>> = None;
    for op in &writes.ops {
        match op {
            WriteOp::Delete { .. } => continue,
            WriteOp::Put { table, .. } if last_put == Some(table) => continue,
            WriteOp::Put { table, .. } => last_put = Some(table),
            _ => last_put = None,
        }
        if let Some(table) = sh.catalog.get(op.table()) {
            let mut st = table.state.write();
            match op {
                WriteOp::DropTable { .. } => Table::note_dropped(&mut st, lsn),
                _ => Table::note_exists(&mut st, lsn),
            }
        }
    }
    let spilled = writes.spilled.iter().flat_map(|s| s.tables());
    for spilled in spilled.filter(|t| t.put_span.is_some()) {
        if let Some(table) = sh.catalog.get(&spilled.name) {
            Table::note_exists(&mut table.state.write(), lsn);
        }
    }
    if !writes.handed_early() {
        sh.enqueue_for_apply(lsn, writes.clone());
    }
    loop {
        let g = sh.room.lock();
        if sh.applied_lsn.load(Ordering::Acquire) >= lsn {
            break;
        }
        if stuck() {
            drop(g);
            // This one, queued first, is applied (if ever) and never evicted; the copy is.
            return publish_to_overlay(sh, lsn, held_instead());
        }
        // After the check, under the room lock, which the applier takes to notify once it
        // has applied: no wake-up is lost (the wait re-checks every 5 ms all the same).
        sh.hurry_applier();
        drop(
            sh.room_cv
                .wait_timeout(g, std::time::Duration::from_millis(5)),
        );
    }
    sh.visible_lsn.store(lsn, Ordering::Release);
    sh.feed.published(lsn, writes, writes.versions_cost);
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;

    /// The cancel-safety of async commits rests on this: a committing snapshot's
    /// registration, handed to the commit's ticket, keeps the conflict horizon at the
    /// snapshot's visible LSN after the snapshot itself is gone, until the ticket drops it.
    #[test]
    fn a_handed_over_registration_pins_the_conflict_horizon_until_its_pin_drops() {
        let state = Arc::new(EngineState::default());
        state.visible_lsn.store(5, Ordering::Release);
        let ((), mut reg) = state
            .snapshots
            .begin(&state.visible_lsn, || Ok(((), 5)))
            .unwrap();
        state.snapshots.stop_reading(&mut reg);
        let pin = ConflictPin::new(state.clone(), reg.hand_over());
        // What the snapshot's own drop does: its registration was handed over.
        state.snapshots.release(&reg);
        state.visible_lsn.store(10, Ordering::Release);
        assert_eq!(state.snapshots.conflict_horizon(&state.visible_lsn), 5);
        drop(pin);
        assert_eq!(state.snapshots.conflict_horizon(&state.visible_lsn), 10);
    }
}
