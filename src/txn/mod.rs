//! Read and write transactions.
//!
//! A snapshot pairs an LMDB read transaction (applied LSN `A`) with the overlay's versions
//! at or below the visible LSN `V` read when it registered: it sees exactly the commits at
//! or below `V`. Values are borrowed, zero-copy, from LMDB's map or from overlay versions,
//! which stay alive while the snapshot is registered.

mod buffer;
mod iter;
mod read;
mod write;

pub use iter::{Iter, WriteIter};
pub use read::ReadTxn;
pub use write::{Savepoint, WriteTxn};

use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::Bound;
use std::ptr::NonNull;

use crate::bytes::SharedBytes;
use crate::catalog::{newest_visible, Dbi, Lookup, Table, TableView, LOCK_CHUNK};
use crate::ends::End;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::keys::{bounds_valid, HeadKey, KeyBounds};
use crate::limits::check_key;
use crate::lsn::Lsn;
use crate::snapshots::Registration;
use crate::store::{lmdb_err, LmdbReadTxn};
use crate::sync::Ordering;

use iter::{lmdb_bounds, LmdbIter, LmdbWalk, OverlayCursor};

/// Borrows overlay bytes for as long as `_snapshot` lives.
///
/// SAFETY (the caller's): `bytes` belongs to a version with LSN above the snapshot's applied
/// LSN `A` (or is the key of an entry holding one). The applier removes versions only at or
/// below the eviction horizon, which stays at or below `A` while the snapshot is
/// registered (until it drops); a key leaves the overlay only with its last version; and the
/// bytes live in their block's heap allocation, which does not move when chains or maps change.
unsafe fn borrow_overlay<'s>(_snapshot: &'s Snapshot<'_>, bytes: &SharedBytes) -> &'s [u8] {
    // SAFETY: see above.
    unsafe { &*(bytes.as_bytes() as *const [u8]) }
}

/// A consistent view: LMDB at applied LSN `A` plus overlay versions up to visible LSN `V`.
pub(crate) struct Snapshot<'db> {
    engine: &'db Engine,
    /// `Some` until `stop_reading` or drop, which end it before the registration changes.
    lmdb: Option<crate::store::LmdbReadTxn<'db>>,
    reg: Registration,
    /// The table read last (a `KnownTable<'db>`; a pointer keeps `Snapshot` covariant),
    /// so reads of one table find it and its view once.
    last_table: Cell<Option<(TablePtr, Option<TableView>)>>,
}

/// A `&'db Table` without its lifetime.
#[derive(Clone, Copy)]
struct TablePtr(NonNull<Table>);

// SAFETY: it stands for a `&Table`, which is `Send` (`Table` is `Sync`).
unsafe impl Send for TablePtr {}

/// A table with this snapshot's view of it. The view is fixed for the snapshot: the
/// history it reads changes only above `V` (publication) and at or below `A` (eviction,
/// which keeps the answer for every LSN at or above the horizon), and the LMDB handle is
/// set before LMDB holds the table.
#[derive(Clone, Copy)]
struct KnownTable<'db> {
    table: &'db Table,
    view: Option<TableView>,
}

impl<'db> Snapshot<'db> {
    pub fn begin(engine: &'db Engine) -> Result<Self> {
        let (txn, reg) = engine.begin_snapshot()?;
        Ok(Snapshot {
            engine,
            lmdb: Some(txn),
            reg,
            last_table: Cell::new(None),
        })
    }

    /// The table named `name` with this snapshot's view of it; `None` for a name with no
    /// history (it reads as empty). No lock once the catalog's index holds the table and
    /// its current life is settled below this snapshot.
    fn table(&self, name: &str) -> Option<KnownTable<'db>> {
        if let Some((table, view)) = self.last_table.get() {
            // SAFETY: set below from a `&'db Table`.
            let table: &'db Table = unsafe { table.0.as_ref() };
            if *table.name == *name {
                return Some(KnownTable { table, view });
            }
        }
        let engine: &'db Engine = self.engine;
        let table = engine.state.catalog.find(name)?;
        let view = table.view(self.reg.applied(), self.reg.visible);
        self.last_table
            .set(Some((TablePtr(NonNull::from(table)), view)));
        Some(KnownTable { table, view })
    }

    fn lmdb(&self) -> &crate::store::LmdbReadTxn<'db> {
        self.lmdb
            .as_ref()
            .expect("no read after stop_reading: the LMDB transaction lives until then")
    }

    pub fn lsn(&self) -> Lsn {
        self.reg.visible
    }

    fn check_age(&self) -> Result<()> {
        check_age(self.engine, || self.reg.started.elapsed())
    }

    pub fn table_exists(&self, table: &str) -> Result<bool> {
        self.check_age()?;
        Ok(self.table(table).is_some_and(|k| k.view.is_some()))
    }

    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<&[u8]>> {
        self.check_age()?;
        check_key(key)?;
        let Some(known) = self.table(table) else {
            return Ok(None);
        };
        let Some(view) = known.view else {
            return Ok(None);
        };
        let t = known.table;
        let (a, v) = (self.reg.applied(), self.reg.visible);
        let found = t.lookup(&view, a, v, key, |found| match found {
            // SAFETY: the overlay decides only for versions above this snapshot's applied
            // LSN.
            Lookup::Overlay(value) => Err(value.map(|v| unsafe { borrow_overlay(self, v) })),
            Lookup::Lmdb(dbi) => Ok(dbi),
        });
        let dbi = match found {
            Err(in_overlay) => return Ok(in_overlay),
            Ok(None) => return Ok(None),
            Ok(Some(dbi)) => dbi,
        };
        match dbi.get(self.lmdb(), key).map_err(lmdb_err("get"))? {
            Some(stored) => t
                .seed
                .open(key, stored)
                .map(Some)
                .ok_or_else(|| corrupt(&t.name, key)),
            None => check_absent(dbi, self.lmdb(), &t.name, key).map(|()| None),
        }
    }

    /// The entries of `table` this snapshot sees: the count LMDB keeps with the table, then,
    /// for each key whose newest version it sees is in the overlay and not yet in LMDB's
    /// state, what that version changes of it. Costs a walk of the table's overlay (none
    /// when LMDB's state holds all of it) and an LMDB lookup per such key, not a walk of the
    /// table.
    pub fn count(&self, table: &str) -> Result<u64> {
        self.check_age()?;
        let Some(known) = self.table(table) else {
            return Ok(0);
        };
        let Some(view) = known.view else {
            return Ok(0);
        };
        let t = known.table;
        let (v, applied) = (self.reg.visible, self.reg.applied());
        // Each key whose newest version this snapshot sees is above LMDB's state `A` (one
        // at or below it is in LMDB's count already, as the walks skip it): is it a value?
        let mut changed: Vec<(SharedBytes, bool)> = Vec::new();
        if t.overlay.holds_above(applied) {
            // `LOCK_CHUNK` keys a hold of the table's lock, so commits are published
            // between holds: their versions are above this snapshot's visible LSN, and
            // evictions take only versions at or below its applied LSN, both of which it
            // skips (every version held is in LMDB's state `A` otherwise: none to walk).
            let mut after: Option<HeadKey> = None;
            loop {
                let st = t.state.read();
                let from = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
                let mut walked = 0;
                let mut last = None;
                let keys = st.overlay.range((from, Bound::Unbounded), false);
                for (key, chain) in keys.take(LOCK_CHUNK) {
                    walked += 1;
                    last = Some(key);
                    let newest = newest_visible(chain.versions(), &view, v);
                    if let Some(ver) = newest.filter(|ver| ver.lsn > applied) {
                        changed.push((key.shared_bytes().clone(), ver.value.is_some()));
                    }
                }
                match last {
                    Some(key) if walked == LOCK_CHUNK => after = Some(key.clone()),
                    _ => break,
                }
            }
        }
        let Some(dbi) = view.lmdb else {
            return Ok(changed.iter().filter(|(_, exists)| *exists).count() as u64);
        };
        let txn = self.lmdb();
        // Not listed: LMDB applied a drop of the table (clearing it) and not yet its
        // re-creation, whose entries are all in the overlay.
        let mut entries = self.engine.store.entries(txn, &t.name)?.unwrap_or(0);
        for (key, exists) in changed {
            let in_lmdb = dbi.get(txn, &key).map_err(lmdb_err("get"))?.is_some();
            match (in_lmdb, exists) {
                (false, true) => entries += 1,
                (true, false) => entries = entries.saturating_sub(1),
                _ => {}
            }
        }
        Ok(entries)
    }

    pub fn iter(&self, table: &str, bounds: KeyBounds, reverse: bool) -> Result<Iter<'_>> {
        self.check_age()?;
        let age_limit = self.engine.cfg.txn_timeout.map(|limit| {
            (
                self.reg.started,
                limit,
                &self.engine.state.stats.txn_timeouts,
            )
        });
        let empty = Iter {
            lmdb: None,
            lmdb_head: None,
            overlay: None,
            overlay_head: None,
            reverse,
            failed: false,
            age_limit,
            steps: 0,
            engine: &self.engine.state,
            deletions_passed: 0,
            learn: None,
        };
        if !bounds_valid(&bounds) {
            return Ok(empty);
        }
        let Some((t, view)) = self.table(table).and_then(|k| Some((k.table, k.view?))) else {
            return Ok(empty);
        };
        let (bounds, learn) = from_known_end(t, bounds, reverse, self.reg.visible);
        if !bounds_valid(&bounds) {
            return Ok(empty);
        }
        // The bounds over stored keys (1 to `MAX_KEY_LEN` bytes), the overlay's as LMDB's.
        let Some(range) = lmdb_bounds(&bounds) else {
            return Ok(empty);
        };
        let mut lmdb_head = None;
        let lmdb: Option<LmdbIter<'_>> = match view.lmdb {
            Some(dbi) => {
                let txn = self.lmdb();
                let verify = self.engine.cfg.verify_scans;
                let walk = if reverse {
                    LmdbWalk::Reverse(dbi.rev_range(txn, &range).map_err(lmdb_err("range"))?)
                } else {
                    LmdbWalk::Forward(dbi.range(txn, &range).map_err(lmdb_err("range"))?)
                };
                let mut walk = LmdbIter::new(walk, t, verify);
                if verify {
                    // The first two entries now, as the probe of the other side: the first
                    // within the bound, the second beyond it, before anything is handed out.
                    match walk.next().transpose()? {
                        Some(first) => {
                            first_within(&t.name, &range, reverse, first.0)?;
                            // A walk that starts at its bound's own key passed no entry.
                            if !at_bound(&range, reverse, first.0) {
                                check_range_start(dbi, txn, &t.name, &range, reverse)?;
                            }
                            walk.read_ahead()?;
                            lmdb_head = Some(first);
                            Some(walk)
                        }
                        None => {
                            check_range_start(dbi, txn, &t.name, &range, reverse)?;
                            None
                        }
                    }
                } else {
                    Some(walk)
                }
            }
            None => None,
        };
        // An overlay without keys, or without versions above `applied`, holds none in
        // (applied, visible] (see `OverlaySummary`): LMDB's walk is the whole answer.
        let overlay_empty = !t.overlay.holds_above(self.reg.applied());
        Ok(Iter {
            lmdb,
            lmdb_head,
            overlay: (!overlay_empty).then(|| OverlayCursor {
                table: t,
                view,
                visible: self.reg.visible,
                bounds: (range.0.map(HeadKey::new), range.1.map(HeadKey::new)),
                reverse,
                // The first refill's room at once (growing it costs a reallocation a scan).
                buf: VecDeque::with_capacity(iter::OVERLAY_CHUNK_FIRST),
                exhausted: false,
                snapshot: self,
                chunk: iter::OVERLAY_CHUNK_FIRST,
            }),
            overlay_head: None,
            reverse,
            failed: false,
            age_limit,
            steps: 0,
            engine: &self.engine.state,
            deletions_passed: 0,
            learn: learn.map(|end| (t, end, self.reg.visible)),
        })
    }
}

/// `bounds` of a walk of `t` by a snapshot at `visible`, its start moved up to what that
/// snapshot is known to see no key before (see [`crate::ends`]), and the end the walk
/// teaches its first key to when it starts at one (the table's end, or that bound).
fn from_known_end(
    t: &Table,
    mut bounds: KeyBounds,
    reverse: bool,
    visible: Lsn,
) -> (KeyBounds, Option<End>) {
    let end = if reverse { End::Back } else { End::Front };
    let start = if reverse {
        &mut bounds.1
    } else {
        &mut bounds.0
    };
    let from_end = matches!(start, Bound::Unbounded);
    // Nothing taught yet: no lock (a walk that misses what is known only walks further).
    if !t.ends_taught.load(Ordering::Relaxed) {
        return (bounds, from_end.then_some(end));
    }
    let ends = t.ends.lock();
    let (from_end, moved) = match (ends.known(end, visible), &*start) {
        (known, Bound::Unbounded) => (true, known.map(<[u8]>::to_vec)),
        (None, _) => (false, None),
        (Some(known), Bound::Included(key) | Bound::Excluded(key)) => {
            let before = if reverse {
                &key[..] > known
            } else {
                &key[..] < known
            };
            let at = matches!(start, Bound::Included(key) if &key[..] == known);
            (before || at, before.then(|| known.to_vec()))
        }
    };
    drop(ends);
    if let Some(known) = moved {
        *start = Bound::Included(known);
    }
    (bounds, from_end.then_some(end))
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("applied_lsn", &self.reg.applied())
            .field("visible_lsn", &self.reg.visible)
            .finish_non_exhaustive()
    }
}

impl Snapshot<'_> {
    /// Ends the snapshot's reads (see [`Snapshots::stop_reading`](crate::snapshots::Snapshots::stop_reading)):
    /// its LMDB transaction ends; its visible LSN stays registered for conflict checks.
    pub fn stop_reading(&mut self) {
        drop(self.lmdb.take());
        self.engine.state.snapshots.stop_reading(&mut self.reg);
    }
}

impl Snapshot<'_> {
    /// Ends the snapshot for a commit: it reads no more, and its registration, now pinning
    /// only the conflict horizon at its visible LSN, goes with the commit's ticket.
    pub(crate) fn into_conflict_pin(mut self) -> crate::engine::ConflictPin {
        self.stop_reading();
        let reg = self.reg.hand_over();
        crate::engine::ConflictPin::new(self.engine.state.clone(), reg)
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        drop(self.lmdb.take());
        self.engine.state.snapshots.release(&self.reg);
    }
}

/// `Error::TxnTimeout` (counted) once a transaction's age (read only when there is a
/// limit) is over `Config::txn_timeout`.
fn check_age(engine: &Engine, age: impl FnOnce() -> std::time::Duration) -> Result<()> {
    if let Some(limit) = engine.cfg.txn_timeout {
        let age = age();
        if age > limit {
            engine
                .state
                .stats
                .txn_timeouts
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::TxnTimeout { age, limit });
        }
    }
    Ok(())
}

/// Checks a lookup of `key` that found nothing: see [`check_position`].
fn check_absent(dbi: Dbi, txn: &LmdbReadTxn<'_>, table: &str, key: &[u8]) -> Result<()> {
    check_position(dbi, txn, table, key, "get", true)
}

/// Checks where a bounded range walk starts: see [`check_position`]. The walk itself checks
/// the side it walks (its first two entries are read at its start: the first within its
/// bound, see [`first_within`], the second beyond the first), so only the other side is
/// probed here: one descent more, not two, and none when the walk's first entry is the key
/// its bound includes (no entry lies between the two).
fn check_range_start(
    dbi: Dbi,
    txn: &LmdbReadTxn<'_>,
    table: &str,
    range: &iter::SliceBounds<'_>,
    reverse: bool,
) -> Result<()> {
    match (reverse, range) {
        (false, (Bound::Included(key) | Bound::Excluded(key), _)) => {
            check_before(dbi, txn, table, key, "range")
        }
        (true, (_, Bound::Included(key) | Bound::Excluded(key))) => {
            check_from(dbi, txn, table, key, "range", false)
        }
        _ => Ok(()),
    }
}

/// True when a walk of `range` starts at the key its start bound includes.
fn at_bound(range: &iter::SliceBounds<'_>, reverse: bool, first: &[u8]) -> bool {
    let start = if reverse { range.1 } else { range.0 };
    matches!(start, Bound::Included(key) if key == first)
}

/// Checks the first entry of a checked walk of `range`: it must lie within the bound the walk
/// starts from (a damaged branch key can send the walk's descent to an earlier leaf).
fn first_within(
    table: &str,
    range: &iter::SliceBounds<'_>,
    reverse: bool,
    first: &[u8],
) -> Result<()> {
    let (bound, within) = if reverse {
        match range.1 {
            Bound::Included(key) => (key, first <= key),
            Bound::Excluded(key) => (key, first < key),
            Bound::Unbounded => return Ok(()),
        }
    } else {
        match range.0 {
            Bound::Included(key) => (key, first >= key),
            Bound::Excluded(key) => (key, first > key),
            Bound::Unbounded => return Ok(()),
        }
    };
    if within {
        Ok(())
    } else {
        Err(misrouted("range", table, bound, first))
    }
}

/// A damaged branch key sends a lookup of `key` to the wrong leaf, and a damaged node
/// pointer in a leaf hides an entry from the binary search there, while every entry still
/// verifies: a get misses a key that is there, a range walk starts past entries or before
/// its bound. A cursor's positioning (LMDB's `MDB_SET_RANGE`) moves on to the next leaf when
/// the one it reaches ends, so two probes of two entries each show it: the entries at and
/// after that position must not lie below `key` (nor be `key`, after a get found nothing:
/// `missed`) and must ascend ([`check_from`]); the two before it must lie below `key` and
/// descend ([`check_before`]). Two more descents: only misses pay them (a bounded walk, one).
fn check_position(
    dbi: Dbi,
    txn: &LmdbReadTxn<'_>,
    table: &str,
    key: &[u8],
    op: &'static str,
    missed: bool,
) -> Result<()> {
    check_from(dbi, txn, table, key, op, missed)?;
    check_before(dbi, txn, table, key, op)
}

/// The entries at and after the position of `key`: see [`check_position`].
fn check_from(
    dbi: Dbi,
    txn: &LmdbReadTxn<'_>,
    table: &str,
    key: &[u8],
    op: &'static str,
    missed: bool,
) -> Result<()> {
    let err = lmdb_err(op);
    let mut after = dbi
        .range(txn, &(Bound::Included(key), Bound::Unbounded))
        .map_err(&err)?;
    let first = after.next().transpose().map_err(&err)?;
    if let Some((found, _)) = first {
        if found < key || (missed && found == key) {
            return Err(misrouted(op, table, key, found));
        }
        if let Some((next, _)) = after.next().transpose().map_err(&err)? {
            if next <= found {
                return Err(disordered(op, table, found, next));
            }
        }
    }
    Ok(())
}

/// The two entries before the position of `key`: see [`check_position`].
fn check_before(
    dbi: Dbi,
    txn: &LmdbReadTxn<'_>,
    table: &str,
    key: &[u8],
    op: &'static str,
) -> Result<()> {
    let err = lmdb_err(op);
    // heed positions at the first entry >= key and steps back one, without checking the
    // bound on that first step.
    let mut before = dbi
        .rev_range(txn, &(Bound::Unbounded, Bound::Excluded(key)))
        .map_err(&err)?;
    let first = before.next().transpose().map_err(&err)?;
    if let Some((found, _)) = first {
        if found >= key {
            return Err(misrouted(op, table, key, found));
        }
        if let Some((prev, _)) = before.next().transpose().map_err(&err)? {
            if prev >= found {
                return Err(disordered(op, table, prev, found));
            }
        }
    }
    Ok(())
}

/// Entries of `table` that LMDB hands out in the wrong order (`first` before `second`): a
/// leaf's node pointers are damaged.
pub(super) fn disordered(op: &'static str, table: &str, first: &[u8], second: &[u8]) -> Error {
    Error::StoreCorrupted {
        op,
        message: format!(
            "table {table:?} yields key \"{}\" before key \"{}\", out of order: a leaf \
             page's node pointers are damaged",
            first.escape_ascii(),
            second.escape_ascii()
        ),
    }
}

/// A lookup of `key` in `table` that a cursor's positioning contradicts (`found`).
fn misrouted(op: &'static str, table: &str, key: &[u8], found: &[u8]) -> Error {
    Error::StoreCorrupted {
        op,
        message: format!(
            "a lookup of key \"{}\" in table {table:?} reached the wrong place (a cursor \
             finds \"{}\" there): a branch page above it or its leaf's node pointers are \
             damaged",
            key.escape_ascii(),
            found.escape_ascii()
        ),
    }
}

/// The error for an LMDB entry of `table` whose checksum failed.
pub(crate) fn corrupt(table: &str, key: &[u8]) -> Error {
    Error::CorruptEntry {
        table: table.to_owned(),
        key: key.to_vec(),
    }
}
