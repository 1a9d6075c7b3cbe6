//! Read and write transactions.
//!
//! A snapshot pairs an LMDB read transaction (applied LSN `A`) with the overlay's versions
//! at or below the visible LSN `V` read when it registered: it sees exactly the commits at
//! or below `V`. Values are borrowed, zero-copy, from LMDB's map or from overlay versions,
//! which stay alive while the snapshot is registered.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{btree_map, BTreeMap, VecDeque};
use std::ops::{Bound, RangeBounds};
use std::time::Instant;

use heed::types::Bytes;

use crate::catalog::{
    bounds_valid, check_table_name, newest_visible, owned_bounds, prefix_bounds, KeyBounds, Lookup,
    Table, TableView,
};
use crate::config::{Durability, Isolation};
use crate::conflict::{Check, ReadSet};
use crate::db::{commit_ops, Inner};
use crate::error::{Error, Result};
use crate::snapshots::Registration;
use crate::store::{lmdb_err, unseal, WriteOp};
use crate::sync::{DataArc as Arc, Ordering};
use crate::wal::Lsn;

/// The longest key LMDB stores.
pub const MAX_KEY_LEN: usize = 511;

/// Borrows overlay bytes for as long as `_snapshot` lives.
///
/// SAFETY (the caller's): `bytes` belongs to a version with LSN above the snapshot's applied
/// LSN `A` (or is the key of an entry holding one). The applier removes versions only at or
/// below the retirement horizon, which stays at or below `A` while the snapshot is
/// registered (until it drops); a key leaves the overlay only with its last version; and the
/// bytes live in the `Arc`'s heap allocation, which does not move when chains or maps change.
unsafe fn borrow_overlay<'s>(_snapshot: &'s Snapshot<'_>, bytes: &Arc<[u8]>) -> &'s [u8] {
    // SAFETY: see above.
    unsafe { &*Arc::as_ptr(bytes) }
}

/// A consistent view: LMDB at applied LSN `A` plus overlay versions up to visible LSN `V`.
pub(crate) struct Snapshot<'db> {
    inner: &'db Inner,
    /// `Some` until drop, which ends it before releasing the registration.
    lmdb: Option<crate::store::ReadTxn<'db>>,
    reg: Registration,
    started: Instant,
}

impl<'db> Snapshot<'db> {
    pub fn begin(inner: &'db Inner) -> Result<Self> {
        let sh = &inner.shared;
        let (txn, reg) = sh.snapshots.begin(&sh.visible_lsn, || {
            let txn = inner.store.read_txn()?;
            let applied = inner.store.applied_lsn(&txn)?;
            Ok((txn, applied))
        })?;
        Ok(Snapshot {
            inner,
            lmdb: Some(txn),
            started: reg.started,
            reg,
        })
    }

    fn lmdb(&self) -> &crate::store::ReadTxn<'db> {
        self.lmdb
            .as_ref()
            .expect("the LMDB transaction lives until drop")
    }

    pub fn lsn(&self) -> Lsn {
        self.reg.visible
    }

    fn check_age(&self) -> Result<()> {
        if let Some(limit) = self.inner.cfg.txn_timeout {
            let age = self.started.elapsed();
            if age > limit {
                self.inner
                    .shared
                    .stats
                    .txn_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Error::TxnTimeout { age, limit });
            }
        }
        Ok(())
    }

    fn view(&self, table: &Table) -> Option<TableView> {
        table
            .state
            .read()
            .view(self.reg.applied(), self.reg.visible)
    }

    pub fn table_exists(&self, table: &str) -> Result<bool> {
        self.check_age()?;
        Ok(self
            .inner
            .shared
            .catalog
            .get(table)
            .is_some_and(|t| self.view(&t).is_some()))
    }

    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<&[u8]>> {
        self.check_age()?;
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        let Some(t) = self.inner.shared.catalog.get(table) else {
            return Ok(None);
        };
        let dbi = {
            let st = t.state.read();
            match st.lookup(self.reg.applied(), self.reg.visible, key) {
                Lookup::NoTable | Lookup::Lmdb(None) => return Ok(None),
                // SAFETY: the overlay decides only for versions above this snapshot's
                // applied LSN.
                Lookup::Overlay(value) => {
                    return Ok(value.map(|v| unsafe { borrow_overlay(self, v) }))
                }
                Lookup::Lmdb(Some(dbi)) => dbi,
            }
        };
        let stored = dbi.get(self.lmdb(), key).map_err(lmdb_err("get"))?;
        Ok(stored.map(unseal))
    }

    pub fn iter(&self, table: &str, bounds: KeyBounds, reverse: bool) -> Result<Iter<'_>> {
        self.check_age()?;
        let age_limit = self
            .inner
            .cfg
            .txn_timeout
            .map(|limit| (self.started, limit, &self.inner.shared.stats.txn_timeouts));
        let empty = Iter {
            lmdb: None,
            lmdb_head: None,
            overlay: None,
            overlay_head: None,
            reverse,
            failed: false,
            age_limit,
            steps: 0,
        };
        if !bounds_valid(&bounds) {
            return Ok(empty);
        }
        let Some(t) = self.inner.shared.catalog.get(table) else {
            return Ok(empty);
        };
        let Some(view) = self.view(&t) else {
            return Ok(empty);
        };
        let lmdb: Option<LmdbIter<'_>> = match (view.lmdb, lmdb_bounds(&bounds)) {
            (Some(dbi), Some(range)) => {
                let txn = self.lmdb();
                Some(if reverse {
                    LmdbIter::Reverse(dbi.rev_range(txn, &range).map_err(lmdb_err("range"))?)
                } else {
                    LmdbIter::Forward(dbi.range(txn, &range).map_err(lmdb_err("range"))?)
                })
            }
            _ => None,
        };
        Ok(Iter {
            lmdb,
            lmdb_head: None,
            overlay: Some(OverlayCursor {
                table: t,
                view,
                visible: self.reg.visible,
                bounds,
                reverse,
                buf: VecDeque::new(),
                exhausted: false,
                snapshot: self,
            }),
            overlay_head: None,
            reverse,
            failed: false,
            age_limit,
            steps: 0,
        })
    }
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("applied_lsn", &self.reg.applied())
            .field("visible_lsn", &self.reg.visible)
            .finish_non_exhaustive()
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        drop(self.lmdb.take());
        self.inner.shared.snapshots.release(&self.reg);
    }
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Borrowed bounds of a key range.
type SliceBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// `bounds` as LMDB can position a cursor with (keys of 1 to `MAX_KEY_LEN` bytes), over the
/// same stored keys; `None` if no stored key lies inside.
fn lmdb_bounds(bounds: &KeyBounds) -> Option<SliceBounds<'_>> {
    let lower = match &bounds.0 {
        // Every stored key is above the empty key.
        Bound::Included(k) | Bound::Excluded(k) if k.is_empty() => Bound::Unbounded,
        // A stored key is >= (or >) a longer key exactly when it is > its first
        // MAX_KEY_LEN bytes.
        Bound::Included(k) | Bound::Excluded(k) if k.len() > MAX_KEY_LEN => {
            Bound::Excluded(&k[..MAX_KEY_LEN])
        }
        b => as_slice(b),
    };
    let upper = match &bounds.1 {
        Bound::Included(k) | Bound::Excluded(k) if k.is_empty() => return None,
        // ... and <= (or <) a longer key exactly when it is <= its first MAX_KEY_LEN bytes.
        Bound::Included(k) | Bound::Excluded(k) if k.len() > MAX_KEY_LEN => {
            Bound::Included(&k[..MAX_KEY_LEN])
        }
        b => as_slice(b),
    };
    Some((lower, upper))
}

/// LMDB's side of a range walk (an enum, not a trait object: it is called for every key).
enum LmdbIter<'t> {
    Forward(heed::RoRange<'t, Bytes, Bytes>),
    Reverse(heed::RoRevRange<'t, Bytes, Bytes>),
}

impl<'t> LmdbIter<'t> {
    #[inline]
    fn next(&mut self) -> Option<heed::Result<(&'t [u8], &'t [u8])>> {
        match self {
            LmdbIter::Forward(it) => it.next(),
            LmdbIter::Reverse(it) => it.next(),
        }
    }
}

/// Walks a table's overlay in key order, a chunk at a time (the lock is not held between).
struct OverlayCursor<'t> {
    table: Arc<Table>,
    view: TableView,
    visible: Lsn,
    /// What is left to walk.
    bounds: KeyBounds,
    reverse: bool,
    buf: VecDeque<(&'t [u8], Option<&'t [u8]>)>,
    exhausted: bool,
    snapshot: &'t Snapshot<'t>,
}

const OVERLAY_CHUNK: usize = 64;

impl<'t> OverlayCursor<'t> {
    /// True if every overlay entry up to `key` (in walk order) was scanned already.
    fn covers(&self, key: &[u8]) -> bool {
        match (self.reverse, &self.bounds) {
            (false, (Bound::Excluded(k), _)) => key <= k.as_slice(),
            (true, (_, Bound::Excluded(k))) => key >= k.as_slice(),
            _ => false,
        }
    }

    fn refill(&mut self) {
        if !bounds_valid(&self.bounds) {
            self.exhausted = true;
            return;
        }
        let st = self.table.state.read();
        let range = (as_slice(&self.bounds.0), as_slice(&self.bounds.1));
        let applied = self.snapshot.reg.applied();
        let mut scanned = 0;
        let mut last: Option<&Arc<[u8]>> = None;
        for (key, chain) in st.overlay.range(range, self.reverse).take(OVERLAY_CHUNK) {
            scanned += 1;
            last = Some(key);
            match newest_visible(chain, &self.view, self.visible) {
                Some(ver) if ver.lsn > applied => {
                    // SAFETY: the version's LSN is above the snapshot's applied LSN, and the
                    // key is its entry's.
                    let value = ver
                        .value
                        .as_ref()
                        .map(|v| unsafe { borrow_overlay(self.snapshot, v) });
                    let key = unsafe { borrow_overlay(self.snapshot, key) };
                    self.buf.push_back((key, value));
                }
                // LMDB's state at `A` holds it: the LMDB side of the merge yields it.
                _ => {}
            }
        }
        match last {
            Some(key) if scanned == OVERLAY_CHUNK => {
                let after = Bound::Excluded(key.to_vec());
                if self.reverse {
                    self.bounds.1 = after;
                } else {
                    self.bounds.0 = after;
                }
            }
            _ => self.exhausted = true,
        }
    }
}

/// An iterator over a snapshot's keys and values in a range, in key order (or reverse).
pub struct Iter<'t> {
    lmdb: Option<LmdbIter<'t>>,
    lmdb_head: Option<(&'t [u8], &'t [u8])>,
    overlay: Option<OverlayCursor<'t>>,
    overlay_head: Option<(&'t [u8], Option<&'t [u8]>)>,
    reverse: bool,
    failed: bool,
    /// The transaction's start and `txn_timeout`, checked every `AGE_CHECK_STEPS` items.
    /// The transaction's start, `txn_timeout`, and the counter of timeouts.
    age_limit: Option<(Instant, std::time::Duration, &'t crate::sync::StatCounter)>,
    steps: u32,
}

const AGE_CHECK_STEPS: u32 = 1024;

impl std::fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("reverse", &self.reverse)
            .finish_non_exhaustive()
    }
}

impl<'t> Iterator for Iter<'t> {
    type Item = Result<(&'t [u8], &'t [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some((started, limit, timeouts)) = self.age_limit {
            self.steps += 1;
            if self.steps >= AGE_CHECK_STEPS {
                self.steps = 0;
                let age = started.elapsed();
                if age > limit {
                    self.failed = true;
                    timeouts.fetch_add(1, Ordering::Relaxed);
                    return Some(Err(Error::TxnTimeout { age, limit }));
                }
            }
        }
        // Once the overlay is done, LMDB's entries pass straight through.
        if self.overlay.is_none() && self.overlay_head.is_none() && self.lmdb_head.is_none() {
            return match self.lmdb.as_mut()?.next() {
                Some(Ok((k, v))) => Some(Ok((k, unseal(v)))),
                Some(Err(e)) => {
                    self.failed = true;
                    Some(Err(lmdb_err("range")(e)))
                }
                None => {
                    self.lmdb = None;
                    None
                }
            };
        }
        loop {
            if self.lmdb_head.is_none() {
                if let Some(it) = self.lmdb.as_mut() {
                    match it.next() {
                        Some(Ok((k, v))) => self.lmdb_head = Some((k, unseal(v))),
                        Some(Err(e)) => {
                            self.failed = true;
                            return Some(Err(lmdb_err("range")(e)));
                        }
                        None => self.lmdb = None,
                    }
                }
            }
            if self.overlay_head.is_none() {
                if let Some(cur) = self.overlay.as_mut() {
                    loop {
                        if let Some(entry) = cur.buf.pop_front() {
                            self.overlay_head = Some(entry);
                            break;
                        }
                        if cur.exhausted {
                            self.overlay = None;
                            break;
                        }
                        // Scan the overlay only as far as LMDB's walk has come.
                        if self.lmdb_head.is_some_and(|(k, _)| cur.covers(k)) {
                            break;
                        }
                        cur.refill();
                    }
                }
            }
            match merge_step(&mut self.lmdb_head, &mut self.overlay_head, self.reverse)? {
                Some(entry) => return Some(Ok(entry)),
                None => continue, // a deletion
            }
        }
    }
}

/// Takes the next entry, in walk order, of two sorted streams' heads: `older` (LMDB, or a
/// snapshot) and `newer` (the overlay, or a transaction's own writes), whose entries shadow
/// `older`'s with the same key (`None` values are deletions). `None` when both are empty;
/// `Some(None)` when it consumed a deletion.
#[inline]
fn merge_step<'t>(
    older: &mut Option<(&'t [u8], &'t [u8])>,
    newer: &mut Option<(&'t [u8], Option<&'t [u8]>)>,
    reverse: bool,
) -> Option<Option<(&'t [u8], &'t [u8])>> {
    let take_newer = match (*older, *newer) {
        (None, None) => return None,
        (Some(_), None) => false,
        (None, Some(_)) => true,
        (Some((ok, _)), Some((nk, _))) => {
            let ord = if reverse { nk.cmp(ok) } else { ok.cmp(nk) };
            match ord {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => {
                    *older = None;
                    true
                }
            }
        }
    };
    if take_newer {
        let (k, v) = newer.take()?;
        Some(v.map(|v| (k, v)))
    } else {
        older.take().map(Some)
    }
}

/// A read transaction: a consistent snapshot of every commit that returned before it began.
/// Values are borrowed from the transaction without copying. It is `Send`; end it (drop it)
/// soon, since it pins LMDB pages and unapplied versions.
#[derive(Debug)]
pub struct ReadTxn<'db> {
    snap: Snapshot<'db>,
}

impl<'db> ReadTxn<'db> {
    pub(crate) fn new(snap: Snapshot<'db>) -> Self {
        ReadTxn { snap }
    }

    /// The LSN of the newest commit this transaction sees.
    pub fn lsn(&self) -> Lsn {
        self.snap.lsn()
    }

    /// The value of `key` in `table`, borrowed from the transaction. A table that does not
    /// exist reads as empty.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<&[u8]>> {
        self.snap.get(table, key)
    }

    /// True if `table` exists in this snapshot.
    pub fn table_exists(&self, table: &str) -> Result<bool> {
        self.snap.table_exists(table)
    }

    /// The entries of `table` with keys in `range`, in ascending key order.
    pub fn range(&self, table: &str, range: impl RangeBounds<[u8]>) -> Result<Iter<'_>> {
        self.snap.iter(table, owned_bounds(&range), false)
    }

    /// The entries of `table` with keys in `range`, in descending key order.
    pub fn rev_range(&self, table: &str, range: impl RangeBounds<[u8]>) -> Result<Iter<'_>> {
        self.snap.iter(table, owned_bounds(&range), true)
    }

    /// The entries of `table` whose keys start with `prefix`, ascending.
    pub fn prefix(&self, table: &str, prefix: &[u8]) -> Result<Iter<'_>> {
        self.snap.iter(table, prefix_bounds(prefix), false)
    }

    /// The entries of `table` whose keys start with `prefix`, descending.
    pub fn rev_prefix(&self, table: &str, prefix: &[u8]) -> Result<Iter<'_>> {
        self.snap.iter(table, prefix_bounds(prefix), true)
    }
}

/// A write transaction's buffered writes of one table: key -> value, or `None` for delete.
type TableWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A point in a write transaction to roll back to; see [`WriteTxn::savepoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Savepoint {
    id: u64,
    txn_started: Instant,
}

#[derive(Debug)]
struct Undo {
    table: Arc<str>,
    key: Vec<u8>,
    /// The buffered write before, `None` if there was none.
    prev: Option<Option<Vec<u8>>>,
}

/// A write transaction: buffered puts and deletes over its own snapshot, taken at its first
/// read. It reads its own writes. `commit` makes them durable and visible as one; dropping
/// it aborts.
#[derive(Debug)]
pub struct WriteTxn<'db> {
    inner: &'db Inner,
    started: Instant,
    /// Begun at the first read: a transaction that only writes needs none.
    snap: OnceCell<Snapshot<'db>>,
    isolation: Isolation,
    writes: BTreeMap<Arc<str>, TableWrites>,
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
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if !self.committing {
            self.inner
                .shared
                .stats
                .aborts
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'db> WriteTxn<'db> {
    pub(crate) fn new(inner: &'db Inner, isolation: Isolation) -> Self {
        WriteTxn {
            inner,
            started: Instant::now(),
            snap: OnceCell::new(),
            isolation,
            writes: BTreeMap::new(),
            undo: Vec::new(),
            has_savepoint: false,
            savepoints: Vec::new(),
            next_savepoint: 0,
            reads: RefCell::default(),
            read_any: Cell::new(false),
            committing: false,
        }
    }

    /// The LSN of the newest commit this transaction's snapshot sees (taking the snapshot
    /// now if nothing was read yet).
    pub fn snapshot_lsn(&self) -> Result<Lsn> {
        Ok(self.snap()?.lsn())
    }

    fn snap(&self) -> Result<&Snapshot<'db>> {
        if self.snap.get().is_none() {
            let snap = Snapshot::begin(self.inner)?;
            let _ = self.snap.set(snap);
        }
        Ok(self.snap.get().expect("set above"))
    }

    fn check_age(&self) -> Result<()> {
        if let Some(limit) = self.inner.cfg.txn_timeout {
            let age = self.started.elapsed();
            if age > limit {
                self.inner
                    .shared
                    .stats
                    .txn_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Error::TxnTimeout { age, limit });
            }
        }
        Ok(())
    }

    fn own(&self, table: &str, key: &[u8]) -> Option<Option<&[u8]>> {
        self.writes
            .get(table)
            .and_then(|w| w.get(key))
            .map(|v| v.as_deref())
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
        if let Some(own) = self.own(table, key) {
            return Ok(own);
        }
        let snap = self.snap()?;
        self.note_read(table, |t, r| r.points.push((t, key.to_vec())));
        snap.get(table, key)
    }

    /// The entries of `table` with keys in `range`, ascending, this transaction's writes
    /// merged over its snapshot.
    pub fn range(&self, table: &str, range: impl RangeBounds<[u8]>) -> Result<WriteIter<'_>> {
        self.iter(table, owned_bounds(&range), false)
    }

    /// As [`WriteTxn::range`], descending.
    pub fn rev_range(&self, table: &str, range: impl RangeBounds<[u8]>) -> Result<WriteIter<'_>> {
        self.iter(table, owned_bounds(&range), true)
    }

    /// The entries of `table` whose keys start with `prefix`, ascending.
    pub fn prefix(&self, table: &str, prefix: &[u8]) -> Result<WriteIter<'_>> {
        self.iter(table, prefix_bounds(prefix), false)
    }

    /// The entries of `table` whose keys start with `prefix`, descending.
    pub fn rev_prefix(&self, table: &str, prefix: &[u8]) -> Result<WriteIter<'_>> {
        self.iter(table, prefix_bounds(prefix), true)
    }

    fn iter(&self, table: &str, bounds: KeyBounds, reverse: bool) -> Result<WriteIter<'_>> {
        self.check_age()?;
        let snap = self.snap()?.iter(table, bounds.clone(), reverse)?;
        let own = match (self.writes.get(table), bounds_valid(&bounds)) {
            (Some(w), true) => Some(w.range::<[u8], _>((as_slice(&bounds.0), as_slice(&bounds.1)))),
            _ => None,
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
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidInput {
                what: "key",
                reason: format!("{} bytes; keys are 1 to {MAX_KEY_LEN} bytes", key.len()),
            });
        }
        let max = self.inner.cfg.wal.max_record_bytes;
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

    fn buffer(&mut self, table: &str, key: &[u8], value: Option<Vec<u8>>) {
        let writes = match self.writes.get_mut(table) {
            Some(w) => w,
            None => self.writes.entry(Arc::from(table)).or_default(),
        };
        let prev = writes.insert(key.to_vec(), value);
        if self.has_savepoint {
            let table = self
                .writes
                .get_key_value(table)
                .map(|(k, _)| k.clone())
                .expect("inserted above");
            self.undo.push(Undo {
                table,
                key: key.to_vec(),
                prev,
            });
        }
    }

    /// Sets `key` in `table` to `value` (the table is created by the commit if missing).
    pub fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_write(table, key, Some(value))?;
        self.buffer(table, key, Some(value.to_vec()));
        Ok(())
    }

    /// Removes `key` from `table`.
    pub fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        self.check_write(table, key, None)?;
        self.buffer(table, key, None);
        Ok(())
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
        while self.undo.len() > undo_len {
            let u = self.undo.pop().expect("len checked");
            let writes = self.writes.entry(u.table).or_default();
            match u.prev {
                Some(prev) => {
                    writes.insert(u.key, prev);
                }
                None => {
                    writes.remove(&u.key);
                }
            }
        }
        self.writes.retain(|_, w| !w.is_empty());
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

    fn commit_inner(mut self, durability: Option<Durability>) -> Result<Lsn> {
        self.committing = true;
        self.check_age()?;
        if self.writes.is_empty() {
            return Ok(match self.snap.get() {
                Some(snap) => snap.lsn(),
                None => self.inner.shared.visible_lsn.load(Ordering::Acquire),
            });
        }
        let mut ops = Vec::with_capacity(self.writes.values().map(BTreeMap::len).sum());
        for (table, writes) in &self.writes {
            for (key, value) in writes {
                let key: Arc<[u8]> = Arc::from(key.as_slice());
                ops.push(match value {
                    Some(v) => WriteOp::Put {
                        table: table.clone(),
                        key,
                        value: Arc::from(v.as_slice()),
                    },
                    None => WriteOp::Delete {
                        table: table.clone(),
                        key,
                    },
                });
            }
        }
        let check = if !self.read_any.get() {
            Check::Blind
        } else if self.isolation == Isolation::Serializable {
            Check::WritesAndReads(self.reads.take())
        } else {
            Check::Writes
        };
        // The snapshot stays registered until the flusher has checked this commit.
        let snapshot = self.snap.get().map_or(0, Snapshot::lsn);
        commit_ops(self.inner, ops, check, snapshot, durability)
    }
}

/// An iterator over a write transaction's merged view; see [`WriteTxn::range`].
pub struct WriteIter<'t> {
    snap: Iter<'t>,
    snap_head: Option<(&'t [u8], &'t [u8])>,
    own: Option<btree_map::Range<'t, Vec<u8>, Option<Vec<u8>>>>,
    own_head: Option<(&'t [u8], Option<&'t [u8]>)>,
    reverse: bool,
}

impl std::fmt::Debug for WriteIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteIter")
            .field("reverse", &self.reverse)
            .finish_non_exhaustive()
    }
}

impl<'t> Iterator for WriteIter<'t> {
    type Item = Result<(&'t [u8], &'t [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.snap_head.is_none() {
                match self.snap.next() {
                    Some(Ok(kv)) => self.snap_head = Some(kv),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
            if self.own_head.is_none() {
                let next = match self.own.as_mut() {
                    Some(r) if self.reverse => r.next_back(),
                    Some(r) => r.next(),
                    None => None,
                };
                self.own_head = next.map(|(k, v)| (k.as_slice(), v.as_deref()));
            }
            match merge_step(&mut self.snap_head, &mut self.own_head, self.reverse)? {
                Some(entry) => return Some(Ok(entry)),
                None => continue, // a deletion
            }
        }
    }
}
