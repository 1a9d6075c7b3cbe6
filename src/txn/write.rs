//! Write transactions: buffered puts and deletes read back over the snapshot, savepoints,
//! and commit.

use std::cell::{Cell, OnceCell, RefCell};
use std::time::Instant;

use crate::bytes::{Arena, SharedBytes};
use crate::config::{Durability, Isolation};
use crate::engine::{
    commit_ops, commit_ops_async, too_big_for_overlay, Check, Commit, Engine, ReadSet,
};
use crate::error::{Error, Result};
use crate::keys::{as_slice_bound, bounds_valid, prefix_bounds, HeadKey, KeyBounds, KeyRange};
use crate::limits::{check_key, check_table_name};
use crate::lsn::Lsn;
use crate::overlay::{version_cost, VERSION_OVERHEAD};
use crate::store::WriteOp;
use crate::sync::{DataArc as Arc, Ordering};
use crate::wal::CommitFuture;

use super::buffer::{Buffer, ReadBack, SpilledWalk};
use super::iter::OwnWalk;
use super::{Snapshot, WriteIter};

/// A point in a write transaction to roll back to; see [`WriteTxn::savepoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Savepoint {
    id: u64,
    txn_started: Instant,
}

#[derive(Debug)]
struct Undo {
    table: Arc<str>,
    key: HeadKey,
    /// The buffered write before, `None` if there was none.
    prev: Option<Option<SharedBytes>>,
}

/// A write transaction: buffered puts and deletes over its own snapshot, taken at its first
/// read. It reads its own writes. `commit` makes them durable and visible as one; dropping
/// it aborts.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let db = walmdb::Db::open(dir.path())?;
/// let mut txn = db.write()?;
/// txn.put("users", b"alice", b"1")?;
/// let before_bob = txn.savepoint();
/// txn.put("users", b"bob", b"2")?;
/// txn.rollback_to(&before_bob)?; // bob's put undone
/// assert_eq!(txn.get("users", b"alice")?, Some(&b"1"[..])); // its own write
/// let lsn = txn.commit()?; // durable and visible to every later transaction
/// assert!(db.read()?.lsn() >= lsn);
/// # Ok::<(), walmdb::Error>(())
/// ```
#[derive(Debug)]
pub struct WriteTxn<'db> {
    engine: &'db Engine,
    started: Instant,
    /// Begun at the first read: a transaction that only writes needs none.
    snap: OnceCell<Snapshot<'db>>,
    isolation: Isolation,
    writes: Buffer,
    /// Holds the bytes of the keys and values written, which the commit hands on.
    arena: Arena,
    /// Undo records, kept once a savepoint exists.
    undo: Vec<Undo>,
    has_savepoint: bool,
    /// Live savepoints, oldest first: (id, undo length when taken).
    savepoints: Vec<(u64, usize)>,
    next_savepoint: u64,
    /// Keys and ranges read from the snapshot (`Serializable` only).
    reads: RefCell<ReadSet>,
    /// Whether anything was read from the snapshot.
    read_any: Cell<bool>,
    /// Set once `commit` runs: a drop without it is an abort.
    committing: bool,
    /// Spilled writes read back, lent by reads.
    read_back: ReadBack,
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if !self.committing {
            self.engine
                .state
                .stats
                .aborts
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'db> WriteTxn<'db> {
    pub(crate) fn new(engine: &'db Engine, isolation: Isolation) -> Self {
        WriteTxn {
            engine,
            started: Instant::now(),
            snap: OnceCell::new(),
            isolation,
            writes: Buffer::default(),
            arena: Arena::default(),
            undo: Vec::new(),
            has_savepoint: false,
            savepoints: Vec::new(),
            next_savepoint: 0,
            reads: RefCell::default(),
            read_any: Cell::new(false),
            committing: false,
            read_back: ReadBack::default(),
        }
    }

    /// The LSN of the newest commit this transaction's snapshot sees (taking the snapshot
    /// now if nothing was read yet).
    pub fn snapshot_lsn(&self) -> Result<Lsn> {
        Ok(self.snap()?.lsn())
    }

    fn snap(&self) -> Result<&Snapshot<'db>> {
        if self.snap.get().is_none() {
            let snap = Snapshot::begin(self.engine)?;
            let _ = self.snap.set(snap);
        }
        Ok(self.snap.get().expect("set above"))
    }

    fn check_age(&self) -> Result<()> {
        super::check_age(self.engine, || self.started.elapsed())
    }

    /// Its own write of `key`: `Some(None)` for a delete, `None` for none.
    fn own(&self, table: &str, key: &[u8]) -> Result<Option<Option<&[u8]>>> {
        if let Some(own) = self.writes.table(table).and_then(|w| w.get(key)) {
            return Ok(Some(own.as_deref()));
        }
        let spilled = crate::spill::newest_entry(self.writes.spilled(table), key)?;
        Ok(spilled.map(|value| value.map(|v| self.read_back.keep(v))))
    }

    /// Its own writes to `table` within `bounds` (valid ones), in memory and spilled.
    fn own_walk(&self, table: &str, bounds: &KeyBounds, reverse: bool) -> Option<OwnWalk<'_>> {
        let slices = (as_slice_bound(&bounds.0), as_slice_bound(&bounds.1));
        let memory = self.writes.table(table).map(|w| w.range::<[u8], _>(slices));
        let runs = self.writes.spilled(table);
        let spilled =
            (!runs.is_empty()).then(|| SpilledWalk::new(runs, bounds, reverse, &self.read_back));
        (memory.is_some() || spilled.is_some()).then(|| OwnWalk::new(memory, spilled, reverse))
    }

    /// Spills its writes in memory once they pass the budget (never once a savepoint was
    /// taken: a rollback undoes writes in memory only).
    fn spill_if_due(&mut self) -> Result<()> {
        let budget = self.engine.cfg.txn_spill_bytes;
        if self.has_savepoint || self.writes.bytes() <= budget {
            return Ok(());
        }
        self.read_back.clear();
        let dir = crate::layout::spill_dir(&self.engine.path);
        self.writes.spill(&dir)?;
        Ok(())
    }

    fn note_read(&self, table: &str, read: impl FnOnce(Arc<str>, &mut ReadSet)) {
        self.read_any.set(true);
        if self.isolation == Isolation::Serializable {
            read(Arc::from(table), &mut self.reads.borrow_mut());
        }
    }

    /// The value of `key` in `table`: this transaction's own write, else its snapshot's.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<&[u8]>> {
        self.check_age()?;
        if let Some(own) = self.own(table, key)? {
            return Ok(own);
        }
        let snap = self.snap()?;
        self.note_read(table, |t, r| r.points.push((t, key.to_vec())));
        snap.get(table, key)
    }

    /// The entries of `table` with keys in `range`, ascending, this transaction's writes
    /// merged over its snapshot.
    pub fn range(&self, table: &str, range: impl KeyRange) -> Result<WriteIter<'_>> {
        self.iter(table, range.key_bounds(), false)
    }

    /// As [`WriteTxn::range`], descending.
    pub fn rev_range(&self, table: &str, range: impl KeyRange) -> Result<WriteIter<'_>> {
        self.iter(table, range.key_bounds(), true)
    }

    /// The entries of `table` whose keys start with `prefix`, ascending.
    pub fn prefix(&self, table: &str, prefix: &[u8]) -> Result<WriteIter<'_>> {
        self.iter(table, prefix_bounds(prefix), false)
    }

    /// The entries of `table` whose keys start with `prefix`, descending.
    pub fn rev_prefix(&self, table: &str, prefix: &[u8]) -> Result<WriteIter<'_>> {
        self.iter(table, prefix_bounds(prefix), true)
    }

    /// The number of entries in `table`, this transaction's writes and deletes included (see
    /// [`ReadTxn::count`](crate::ReadTxn::count)). Under `Isolation::Serializable` it reads
    /// the whole table: any commit to it conflicts.
    pub fn count(&self, table: &str) -> Result<u64> {
        self.check_age()?;
        let snap = self.snap()?;
        self.note_read(table, |t, r| {
            r.ranges
                .push((t, (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)))
        });
        let mut n = snap.count(table)?;
        let mut count = |key: &[u8], put: bool| -> Result<()> {
            match (snap.get(table, key)?.is_some(), put) {
                (false, true) => n += 1,
                (true, false) => n = n.saturating_sub(1),
                _ => {}
            }
            Ok(())
        };
        let memory = self.writes.table(table);
        for (key, value) in memory.into_iter().flatten() {
            count(key.bytes(), value.is_some())?;
        }
        // Spilled writes are walked, not kept (as a range's would be): each key once, those
        // memory holds counted above.
        let runs = self.writes.spilled(table);
        for entry in crate::spill::MergedRuns::of(runs, std::ops::Bound::Unbounded, false) {
            let (key, value) = entry?;
            if !memory.is_some_and(|w| w.contains_key(&key[..])) {
                count(&key, value.is_some())?;
            }
        }
        Ok(n)
    }

    /// The entry of `table` with the smallest key, this transaction's writes included. Under
    /// `Isolation::Serializable` it reads the whole table: any commit to it conflicts.
    pub fn first(&self, table: &str) -> Result<Option<(&[u8], &[u8])>> {
        self.end(table, false)
    }

    /// The entry of `table` with the largest key, as [`WriteTxn::first`].
    pub fn last(&self, table: &str) -> Result<Option<(&[u8], &[u8])>> {
        self.end(table, true)
    }

    /// The first entry of a walk from an end. Without writes of its own in the table, it is
    /// the snapshot's, which it teaches to the table (`crate::ends`).
    fn end(&self, table: &str, reverse: bool) -> Result<Option<(&[u8], &[u8])>> {
        let all = (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        let mut walk = self.iter(table, all, reverse)?;
        let entry = walk.next().transpose()?;
        if let (Some((key, _)), None) = (entry, &walk.own) {
            walk.snap.teach_first(key);
        }
        Ok(entry)
    }

    fn iter(&self, table: &str, bounds: KeyBounds, reverse: bool) -> Result<WriteIter<'_>> {
        self.check_age()?;
        let snap = self.snap()?.iter(table, bounds.clone(), reverse)?;
        let own = match bounds_valid(&bounds) {
            true => self.own_walk(table, &bounds, reverse),
            false => None,
        };
        // An empty (or inverted) range reads nothing and is not recorded.
        if bounds_valid(&bounds) {
            self.note_read(table, |t, r| r.ranges.push((t, bounds)));
        }
        Ok(WriteIter {
            snap,
            snap_head: None,
            own,
            own_head: None,
            reverse,
        })
    }

    fn check_write(&self, table: &str, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.check_age()?;
        check_table_name(table)?;
        check_key(key)?;
        let max = self.engine.cfg.wal.max_record_bytes;
        if let Some(v) = value {
            if v.len() + key.len() > max {
                return Err(Error::RecordTooLarge {
                    size: v.len() + key.len(),
                    max,
                });
            }
        }
        Ok(())
    }

    fn buffer(&mut self, table: &str, key: HeadKey, value: Option<SharedBytes>) {
        if !self.has_savepoint {
            self.writes.append(table, key, value);
            return;
        }
        // With a savepoint, each write keeps what it replaced, for its undo.
        self.writes.count_write(key.bytes(), value.as_deref());
        let mut sorted = self.writes.sorted_mut();
        let (table, writes) = sorted.table(table);
        let prev = writes.insert(key.clone(), value);
        self.undo.push(Undo { table, key, prev });
    }

    /// Sets `key` in `table` to `value` (the table is created by the commit if missing).
    pub fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_write(table, key, Some(value))?;
        self.spill_if_due()?;
        let (key, value) = self.arena.pair(key, value);
        self.buffer(table, HeadKey::shared(key), Some(value));
        Ok(())
    }

    /// Removes `key` from `table`.
    pub fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        self.check_write(table, key, None)?;
        self.spill_if_due()?;
        let key = self.arena.copy_of(key);
        self.buffer(table, HeadKey::shared(key), None);
        Ok(())
    }

    /// Deletes every key of `table` in `range` that this transaction sees (its snapshot's
    /// and its own writes); returns how many. Each is a delete in the transaction, so a
    /// large range makes a large commit (`RecordTooLarge` past `max_record_bytes`). Under
    /// `Isolation::Serializable` the range counts as read: a commit into it conflicts.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = walmdb::Db::open(dir.path())?;
    /// db.update(|t| { for k in [b"a", b"b", b"c"] { t.put("t", k, b"v")?; } Ok(()) })?;
    /// let mut txn = db.write()?;
    /// assert_eq!(txn.delete_range("t", b"a"..b"c")?, 2);
    /// txn.commit()?;
    /// assert_eq!(db.read()?.range("t", ..)?.count(), 1);
    /// # Ok::<(), walmdb::Error>(())
    /// ```
    pub fn delete_range(&mut self, table: &str, range: impl KeyRange) -> Result<usize> {
        let keys: Vec<Vec<u8>> = self
            .iter(table, range.key_bounds(), false)?
            .map(|entry| entry.map(|(k, _)| k.to_vec()))
            .collect::<Result<_>>()?;
        for key in &keys {
            self.delete(table, key)?;
        }
        Ok(keys.len())
    }

    /// Deletes every key of `table` (see [`WriteTxn::delete_range`]); the table stays.
    /// [`Db::drop_table`](crate::Db::drop_table) removes the table itself, as a commit of
    /// its own.
    pub fn clear(&mut self, table: &str) -> Result<usize> {
        self.delete_range(table, ..)
    }

    /// Marks the current state of the writes; [`WriteTxn::rollback_to`] returns to it.
    pub fn savepoint(&mut self) -> Savepoint {
        self.has_savepoint = true;
        let id = self.next_savepoint;
        self.next_savepoint += 1;
        self.savepoints.push((id, self.undo.len()));
        Savepoint {
            id,
            txn_started: self.started,
        }
    }

    /// Undoes every write made since `savepoint`, which stays usable; savepoints taken after
    /// it are gone. Reads made since are still checked at commit.
    pub fn rollback_to(&mut self, savepoint: &Savepoint) -> Result<()> {
        let live = (savepoint.txn_started == self.started)
            .then(|| self.savepoints.iter().position(|sp| sp.0 == savepoint.id))
            .flatten();
        let Some(at) = live else {
            return Err(Error::InvalidInput {
                what: "savepoint",
                reason: "it belongs to another transaction or was rolled back past".into(),
            });
        };
        let undo_len = self.savepoints[at].1;
        self.savepoints.truncate(at + 1);
        let mut sorted = self.writes.sorted_mut();
        while self.undo.len() > undo_len {
            let u = self.undo.pop().expect("len checked");
            let writes = sorted.table_named(u.table);
            match u.prev {
                Some(prev) => {
                    writes.insert(u.key, prev);
                }
                None => {
                    writes.remove(&u.key);
                }
            }
        }
        sorted.drop_empty();
        Ok(())
    }

    /// Commits at the configured durability; returns the commit's LSN once it is as durable
    /// as that level promises and visible to every transaction that begins afterwards.
    /// `Error::Conflict` means nothing was written: run the transaction again.
    pub fn commit(self) -> Result<Lsn> {
        self.commit_inner(None)
    }

    /// Commits at `durability`.
    pub fn commit_with(self, durability: Durability) -> Result<Lsn> {
        self.commit_inner(Some(durability))
    }

    fn commit_inner(self, durability: Option<Durability>) -> Result<Lsn> {
        let engine = self.engine;
        match self.prepare_commit(durability)? {
            Prepared::Nothing(lsn) => Ok(lsn),
            Prepared::Commit(commit) => commit_ops(engine, commit),
        }
    }

    /// Commits at the configured durability without blocking the calling thread: the
    /// future answers as [`WriteTxn::commit`] returns, with no thread parked per commit,
    /// so one async runtime thread can have many commits in flight in one group.
    ///
    /// The commit is handed to the engine when this is called, not when the future is
    /// first polled. Dropping the future does not cancel it: a commit handed over is
    /// committed or refused whether or not anyone awaits the answer (an acknowledged
    /// commit is never taken back); await the future to learn which. When the backlog or
    /// the commit queue would make the commit wait, the engine's admitter thread waits in
    /// its place, with the same bounds and errors as a blocking commit. Commits handed over
    /// without awaiting each in turn are concurrent: they may commit in any order (await
    /// one before committing what must follow it).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = walmdb::Db::open(dir.path())?;
    /// let mut txn = db.write()?;
    /// txn.put("t", b"k", b"v")?;
    /// let commit = txn.commit_async();
    /// // ... in an async fn: `let lsn = commit.await?;`
    /// let lsn = futures_lite_block_on(commit)?;
    /// assert!(db.read()?.get("t", b"k")?.is_some());
    /// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::yield_now();
    /// #     }
    /// # }
    /// # let _ = lsn;
    /// # Ok::<(), walmdb::Error>(())
    /// ```
    pub fn commit_async(self) -> CommitFuture {
        self.commit_async_inner(None)
    }

    /// As [`WriteTxn::commit_async`], at `durability`.
    pub fn commit_with_async(self, durability: Durability) -> CommitFuture {
        self.commit_async_inner(Some(durability))
    }

    fn commit_async_inner(self, durability: Option<Durability>) -> CommitFuture {
        let engine = self.engine;
        match self.prepare_commit(durability) {
            Ok(Prepared::Nothing(lsn)) => CommitFuture::answered(Ok(lsn)),
            Ok(Prepared::Commit(commit)) => commit_ops_async(engine, commit),
            Err(e) => CommitFuture::answered(Err(e)),
        }
    }

    /// Ends the transaction for its commit: its writes as log operations, the checks its
    /// reads need, and its snapshot's registration as the conflict pin that travels with
    /// the commit.
    fn prepare_commit(mut self, durability: Option<Durability>) -> Result<Prepared> {
        self.committing = true;
        if let Some(level) = &durability {
            level.validate("the commit's durability")?;
        }
        self.check_age()?;
        // Taken, not read: a transaction that never read its writes back builds no map.
        let taken = std::mem::take(&mut self.writes).into_runs();
        if !taken.spilled.is_empty() {
            return self.prepare_spilled(taken, durability);
        }
        let runs = taken.memory;
        if runs.is_empty() {
            return Ok(Prepared::Nothing(match self.snap.get() {
                Some(snap) => snap.lsn(),
                None => self.engine.state.visible_lsn.load(Ordering::Acquire),
            }));
        }
        let count = runs.iter().map(|(_, run)| run.len()).sum();
        let mut ops = Vec::with_capacity(count);
        let versions_cost: usize = (runs.iter().flat_map(|(_, run)| run))
            .map(|(key, value)| version_cost(key.bytes(), value.as_deref()))
            .sum();
        let op = |table: &Arc<str>, key, value| WriteOp::put_or_delete(table.clone(), key, value);
        // The keys and values are in the arena's blocks, which the operations take as they
        // are: the applier frees a block at a time, not a write (`crate::bytes`). Blocks
        // that hold over an eighth more (a small transaction's, whose blocks were still
        // growing, or one that rewrote its keys) are packed anew, as the overlay charges a
        // version only its own bytes; not when the commit goes through to LMDB (a bulk
        // load), where copies would take its size again at its peak.
        // Each version costs its key's and value's bytes and `VERSION_OVERHEAD`.
        let string_bytes = versions_cost - count * VERSION_OVERHEAD;
        let loose = self.arena.held() > string_bytes + string_bytes / 8;
        if count > 1 && loose && !too_big_for_overlay(versions_cost, self.engine) {
            let strings = runs.iter().flat_map(|(_, run)| {
                run.iter()
                    .flat_map(|(key, value)| std::iter::once(key.bytes()).chain(value.as_deref()))
            });
            let mut packed = crate::bytes::pack(strings);
            let mut next = || packed.next().expect("each key and value was packed");
            for (table, run) in &runs {
                for (_, value) in run {
                    let key = next();
                    let value = value.as_ref().map(|_| next());
                    ops.push(op(table, key, value));
                }
            }
        } else {
            for (table, run) in runs {
                for (key, value) in run {
                    ops.push(op(&table, key.into_shared_bytes(), value));
                }
            }
        }
        self.finish_commit(ops, None, versions_cost, durability)
    }

    /// [`WriteTxn::prepare_commit`] of a transaction that spilled: what memory holds is
    /// spilled too, and the commit carries the runs.
    fn prepare_spilled(
        &mut self,
        taken: super::buffer::Taken,
        durability: Option<Durability>,
    ) -> Result<Prepared> {
        let dir = crate::layout::spill_dir(&self.engine.path);
        let mut tables = taken.spilled;
        for (name, run) in taken.memory {
            let written = super::buffer::write_run(&dir, &run)?;
            tables.entry(name).or_default().push(written);
        }
        let spilled = crate::spill::SpilledWrites::new(tables.into_iter().collect())?;
        let cost = spilled.versions_cost();
        self.finish_commit(Vec::new(), Some(Box::new(spilled)), cost, durability)
    }

    fn finish_commit(
        &mut self,
        ops: Vec<WriteOp>,
        spilled: Option<Box<crate::spill::SpilledWrites>>,
        versions_cost: usize,
        durability: Option<Durability>,
    ) -> Result<Prepared> {
        let check = if !self.read_any.get() {
            Check::Blind
        } else if self.isolation == Isolation::Serializable {
            let reads = self.reads.take();
            let limit = self.engine.cfg.max_conflict_checks;
            if reads.points.len() + reads.ranges.len() > limit {
                return Err(Error::ReadSetTooLarge { limit });
            }
            Check::WritesAndReads(reads)
        } else {
            Check::Writes
        };
        // The snapshot stays registered until the flusher has checked this commit, for
        // conflicts only: it reads no more, so it does not hold back the eviction that
        // makes the room the commit may wait for.
        let (snapshot, pin) = match self.snap.take() {
            Some(snap) => (snap.lsn(), Some(snap.into_conflict_pin())),
            None => (0, None),
        };
        Ok(Prepared::Commit(Commit {
            ops,
            spilled,
            versions_cost,
            check,
            snapshot,
            pin,
            durability,
        }))
    }
}

/// A write transaction ended for its commit.
enum Prepared {
    /// It wrote nothing: its snapshot's LSN (or the visible one) is its answer.
    Nothing(Lsn),
    Commit(Commit),
}
