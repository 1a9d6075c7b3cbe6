//! Tables: their existence over LSNs, their LMDB handle, and their [`Overlay`].
//!
//! Invariants:
//! - A table's LMDB handle is set before LMDB holds any data of it, and never unset (a drop
//!   clears the LMDB table, it does not delete it).
//! - A table whose history is not empty stays in the catalog while the catalog lives, so
//!   readers borrow it (`&Table`) through [`Catalog::find`] without a lock or a count.

use std::collections::HashMap;

use heed::types::Bytes;

use crate::ends::Ends;
use crate::keys::HeadKey;
use crate::lsn::Lsn;
use crate::overlay::{Evicted, Overlay, OverlaySummary, Version};
use crate::sync::{
    AtomicBool, AtomicPtr, AtomicU64, DataArc as Arc, Mutex, Ordering, RwLock, SetOnce,
};

/// An LMDB table handle.
pub(crate) type Dbi = heed::Database<Bytes, Bytes>;

/// How a snapshot sees one table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableView {
    /// Versions below this LSN belong to an earlier life of the table (before a drop): the
    /// birth of the life the snapshot sees, or any LSN from there up to its applied LSN (only
    /// versions above that are read from the overlay).
    pub min_lsn: Lsn,
    /// The LMDB handle, when the snapshot's LMDB state holds this life of the table.
    pub lmdb: Option<Dbi>,
}

#[derive(Debug, Default)]
pub(crate) struct TableState {
    /// Changes of existence `(lsn, exists)`, ascending.
    history: Vec<(Lsn, bool)>,
    /// The LSN from which LMDB holds the table; its handle is `settled.dbi`, set with it.
    lmdb_since: Option<Lsn>,
    /// Committed versions not yet evicted.
    pub overlay: Overlay,
    /// What readers see of the above without the lock (and the LMDB handle itself);
    /// updated with every change of it.
    settled: Arc<Settled>,
}

/// Keys a writer (publication, eviction) handles per hold of a table's lock before it lets
/// waiting readers in: a scan or a get waits for at most this many.
pub(crate) const LOCK_CHUNK: usize = 256;

/// Not settled: readers take the table's lock.
const UNSETTLED: Lsn = Lsn::MAX;

/// A table's view for snapshots that see its current life whole, published for readers that
/// take no lock: every snapshot with applied LSN at or above `from` sees the table existing,
/// in LMDB under `dbi`, and no change of its existence after `from` (`UNSETTLED` when there
/// is no such LSN: the table is dropped or not in LMDB yet).
#[derive(Debug)]
struct Settled {
    from: AtomicU64,
    dbi: SetOnce<Dbi>,
}

impl Default for Settled {
    fn default() -> Self {
        Settled {
            from: AtomicU64::new(UNSETTLED),
            dbi: SetOnce::new(),
        }
    }
}

impl TableState {
    /// Publishes the settled view after a change of existence or of the LMDB handle. It is
    /// `UNSETTLED` from the moment a change is published until readers can see it (the
    /// visible LSN is stored after this, with `Release`).
    fn publish_settled(&self) {
        let from = match (self.history.last(), self.lmdb_since) {
            (Some(&(born, true)), Some(since)) => born.max(since),
            _ => UNSETTLED,
        };
        self.settled.from.store(from, Ordering::Release);
    }

    pub fn exists_now(&self) -> bool {
        self.history.last().is_some_and(|e| e.1)
    }

    /// The table as a snapshot with applied LSN `a` and visible LSN `v` sees it, or `None`
    /// if it does not exist there.
    pub fn view(&self, a: Lsn, v: Lsn) -> Option<TableView> {
        let upto = self.history.partition_point(|e| e.0 <= v);
        let (born, exists) = *self.history[..upto].last()?;
        if !exists {
            return None;
        }
        let last_drop = self.history[..upto]
            .iter()
            .rev()
            .find(|e| !e.1)
            .map_or(0, |e| e.0);
        let lmdb = self
            .lmdb_since
            .filter(|&since| since <= a && last_drop <= a)
            .and_then(|_| self.settled.dbi.get().copied());
        Some(TableView {
            min_lsn: born,
            lmdb,
        })
    }

    /// The newest version of `key` the view sees, if the overlay decides it.
    pub fn version(&self, view: &TableView, v: Lsn, key: &[u8]) -> Option<&Version> {
        newest_visible(self.overlay.chain(key)?, view, v)
    }

    /// Where a snapshot with applied LSN `a`, visible LSN `v` and `view` of the table finds
    /// `key`'s value.
    fn lookup(&self, view: &TableView, a: Lsn, v: Lsn, key: &[u8]) -> Lookup<'_> {
        match self.version(view, v, key) {
            // Newer than LMDB's state: the overlay decides.
            Some(ver) if ver.lsn > a => Lookup::Overlay(ver.value.as_ref()),
            // LMDB's state at `a` holds it (or nothing newer exists).
            _ => Lookup::Lmdb(view.lmdb),
        }
    }

    pub fn lmdb(&self) -> Option<Dbi> {
        self.lmdb_since
            .and_then(|_| self.settled.dbi.get().copied())
    }
}

/// Where a snapshot finds a key's value in a table it sees.
#[derive(Debug)]
pub(crate) enum Lookup<'s> {
    /// The overlay's version, newer than the snapshot's LMDB state (`None`: deleted).
    Overlay(Option<&'s crate::bytes::SharedBytes>),
    /// LMDB's state holds the answer, in this table (`None`: LMDB does not hold the table).
    Lmdb(Option<Dbi>),
}

/// The newest version in `chain` at or below `v`, if it belongs to the table's current life.
pub(crate) fn newest_visible<'c>(
    chain: &'c [Version],
    view: &TableView,
    v: Lsn,
) -> Option<&'c Version> {
    chain
        .iter()
        .rev()
        .find(|ver| ver.lsn <= v)
        .filter(|ver| ver.lsn >= view.min_lsn)
}

/// A named table.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: Arc<str>,
    /// Where the checksums of its LMDB entries start.
    pub seed: crate::seal::Seed,
    pub state: RwLock<TableState>,
    /// Its overlay's key count and newest LSN, read without the lock ([`OverlaySummary`]).
    pub overlay: Arc<OverlaySummary>,
    /// Its settled view, read without the lock ([`TableState::publish_settled`]).
    settled: Arc<Settled>,
    /// What it is known to hold nothing beyond, at each end ([`crate::ends`]).
    pub ends: Mutex<Ends>,
    /// Set once a walk taught `ends` something: until then a walk from inside the table
    /// does not take its lock. A hint: a walk that misses what is known only walks further.
    pub ends_taught: AtomicBool,
}

/// Every table this process knows, dropped ones included (their names may come back).
#[derive(Debug)]
pub(crate) struct Catalog {
    tables: RwLock<HashMap<Arc<str>, Arc<Table>>>,
    /// Tables with a history, by a hash of their names (open addressing, probed from
    /// `name_hash % len`, filled once and never emptied): readers find them without the
    /// lock. A table that finds no free slot is found under the lock.
    index: Box<[AtomicPtr<Table>]>,
}

#[cfg(not(walmdb_loom))]
const INDEX_SLOTS: usize = 256;
#[cfg(walmdb_loom)]
const INDEX_SLOTS: usize = 4;
/// Slots probed for a name before the lock is taken.
const INDEX_PROBES: usize = 8;

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            tables: RwLock::default(),
            index: (0..INDEX_SLOTS)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        }
    }
}

/// FNV-1a of a table name: where its probe starts.
fn name_hash(name: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h as usize
}

impl Catalog {
    /// The table named `name` if it has a history (it exists, or existed, at some LSN);
    /// `None` for a name with none, which every snapshot reads as empty: a table's first
    /// existence is recorded before any snapshot can see it. Takes no lock once the table
    /// is in the index.
    pub fn find(&self, name: &str) -> Option<&Table> {
        let start = name_hash(name);
        for probe in 0..INDEX_PROBES {
            let slot = &self.index[(start + probe) % self.index.len()];
            // SAFETY: the index holds only tables with a history, which the catalog never
            // removes (`forget_unused`), so they live as long as `self`.
            match unsafe { slot.load(Ordering::Acquire).as_ref() } {
                Some(table) if *table.name == *name => return Some(table),
                Some(_) => continue,
                None => break,
            }
        }
        let tables = self.tables.read();
        let table = tables.get(name)?;
        if table.state.read().history.is_empty() {
            return None;
        }
        let ptr = Arc::as_ptr(table).cast_mut();
        for probe in 0..INDEX_PROBES {
            let slot = &self.index[(start + probe) % self.index.len()];
            match slot.compare_exchange(
                std::ptr::null_mut(),
                ptr,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(held) if held == ptr => break,
                Err(_) => {}
            }
        }
        // SAFETY: as above, the table has a history.
        Some(unsafe { &*ptr })
    }

    /// Registers a table LMDB holds at open.
    pub fn add_existing(&self, name: &str, dbi: Dbi) {
        let table = self.get_or_add(name);
        let mut st = table.state.write();
        st.history = vec![(0, true)];
        st.settled.dbi.set(dbi);
        st.lmdb_since = Some(0);
        st.publish_settled();
    }

    /// Table names known: existing, dropped, or admitted for a commit.
    pub fn len(&self) -> usize {
        self.tables.read().len()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Table>> {
        self.tables.read().get(name).cloned()
    }

    pub fn get_or_add(&self, name: &str) -> Arc<Table> {
        if let Some(t) = self.get(name) {
            return t;
        }
        let mut tables = self.tables.write();
        tables
            .entry(Arc::from(name))
            .or_insert_with(|| {
                let state = TableState::default();
                Arc::new(Table {
                    name: Arc::from(name),
                    seed: crate::seal::Seed::of_table(name),
                    overlay: state.overlay.summary(),
                    settled: state.settled.clone(),
                    state: RwLock::new(state),
                    ends: Mutex::default(),
                    ends_taught: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Forgets `name` if nothing ever came of it (registered for a commit that failed): no
    /// existence, no LMDB table, no versions.
    pub fn forget_unused(&self, name: &str) {
        let mut tables = self.tables.write();
        // A table with a history is never removed: `find` lends it out.
        let unused = tables.get(name).is_some_and(|t| {
            let st = t.state.read();
            st.history.is_empty() && st.lmdb_since.is_none() && st.overlay.is_empty()
        });
        if unused {
            tables.remove(name);
        }
    }

    /// Tables existing at visible LSN `v`, sorted.
    pub fn names_at(&self, v: Lsn) -> Vec<String> {
        let mut names: Vec<String> = self
            .tables
            .read()
            .values()
            .filter(|t| {
                let st = t.state.read();
                let upto = st.history.partition_point(|e| e.0 <= v);
                st.history[..upto].last().is_some_and(|e| e.1)
            })
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        names
    }
}

impl Table {
    /// Where a snapshot (applied LSN `a`, visible LSN `v`, its `view` of this table) finds
    /// `key`'s value, handed to `with`. The overlay is read, under its lock, only when it
    /// may hold a version above `a` ([`OverlaySummary::holds_above`]).
    pub fn lookup<R>(
        &self,
        view: &TableView,
        a: Lsn,
        v: Lsn,
        key: &[u8],
        with: impl FnOnce(Lookup<'_>) -> R,
    ) -> R {
        if self.overlay.holds_above(a) {
            let st = self.state.read();
            if let found @ Lookup::Overlay(_) = st.lookup(view, a, v, key) {
                return with(found);
            }
        }
        with(Lookup::Lmdb(view.lmdb))
    }

    /// Records, at publish, that the table exists from `lsn` on (if it did not).
    pub fn note_exists(st: &mut TableState, lsn: Lsn) {
        if !st.exists_now() {
            st.history.push((lsn, true));
            st.publish_settled();
        }
    }

    /// Records, at publish, that the table was dropped at `lsn` (if it existed).
    pub fn note_dropped(st: &mut TableState, lsn: Lsn) {
        if st.exists_now() {
            st.history.push((lsn, false));
            st.publish_settled();
        }
    }

    /// Sets the LMDB handle before LMDB holds data of the table from `since` on.
    pub fn set_lmdb(&self, dbi: Dbi, since: Lsn) {
        let mut st = self.state.write();
        if st.lmdb_since.is_none() {
            st.settled.dbi.set(dbi);
            st.lmdb_since = Some(since);
            st.publish_settled();
        }
    }

    /// How a snapshot with applied LSN `a` and visible LSN `v` sees the table (`None`: it
    /// does not exist there). Without a lock when the table's current life is settled at
    /// or below `a`.
    #[inline]
    pub fn view(&self, a: Lsn, v: Lsn) -> Option<TableView> {
        let from = self.settled.from.load(Ordering::Acquire);
        if from <= a {
            if let Some(&dbi) = self.settled.dbi.get() {
                let view = TableView {
                    min_lsn: from,
                    lmdb: Some(dbi),
                };
                debug_assert!(self.state.read().view(a, v).is_some_and(|locked| {
                    locked.lmdb.is_some() && locked.min_lsn <= from && from <= a
                }));
                return Some(view);
            }
        }
        self.state.read().view(a, v)
    }

    /// Evicts every version of the table's overlay when all are at or below `horizon`
    /// (the lock is held for two moves, the versions are counted and freed after it);
    /// returns their bytes and count, or `None` (nothing done) when some are above it.
    pub fn evict_all(&self, horizon: Lsn) -> Option<(usize, usize)> {
        let mut st = self.state.write();
        let taken = st.overlay.take_all(horizon)?;
        Self::collapse_history(&mut st, horizon);
        drop(st);
        Some(taken.free())
    }

    /// Existence changes at or below the eviction horizon collapse into the last of them.
    fn collapse_history(st: &mut TableState, horizon: Lsn) {
        let upto = st.history.partition_point(|e| e.0 <= horizon);
        if upto > 1 {
            st.history.drain(..upto - 1);
            st.publish_settled();
        }
    }

    /// Evicts the versions of `keys` at or below `horizon`; returns their bytes and count.
    /// The lock is let go every [`LOCK_CHUNK`] keys, and what those keys' eviction took
    /// out is dropped then, while waiting readers have the lock: each key's versions at or
    /// below the horizon are in LMDB for every snapshot, so readers may see any mix of
    /// evicted and not yet evicted keys.
    pub fn evict(&self, keys: &[HeadKey], horizon: Lsn) -> (usize, usize) {
        let mut evicted = Evicted::default();
        let mut slots = Vec::with_capacity(LOCK_CHUNK.min(keys.len()));
        let mut freed = (0, 0);
        let mut chunks = keys.chunks(LOCK_CHUNK).peekable();
        loop {
            let mut st = self.state.write();
            if let Some(chunk) = chunks.next() {
                let (bytes, versions) =
                    st.overlay
                        .evict_keys(chunk, horizon, &mut evicted, &mut slots);
                freed.0 += bytes;
                freed.1 += versions;
            }
            let done = chunks.peek().is_none();
            if done {
                Self::collapse_history(&mut st, horizon);
            }
            drop(st);
            evicted.drop_all();
            if done {
                return freed;
            }
        }
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;

    fn exists(catalog: &Catalog, name: &str, lsn: Lsn) {
        let table = catalog.get_or_add(name);
        Table::note_exists(&mut table.state.write(), lsn);
    }

    #[test]
    fn a_name_without_history_is_not_found_and_can_be_forgotten() {
        let catalog = Catalog::default();
        assert!(catalog.find("t").is_none());
        catalog.get_or_add("t");
        assert!(catalog.find("t").is_none(), "admitted, never published");
        catalog.forget_unused("t");
        assert_eq!(catalog.len(), 0);
    }

    #[test]
    fn more_tables_than_the_index_holds_are_all_found_and_none_is_forgotten() {
        let catalog = Catalog::default();
        let names: Vec<String> = (0..INDEX_SLOTS * 2).map(|i| format!("t{i}")).collect();
        for (lsn, name) in (1..).zip(&names) {
            exists(&catalog, name, lsn);
        }
        // Twice: the first finds insert into the index, the second read it.
        for _ in 0..2 {
            for name in &names {
                let table = catalog.find(name).expect("a table with a history");
                assert_eq!(*table.name, **name);
                assert!(std::ptr::eq(
                    table,
                    Arc::as_ptr(&catalog.get(name).unwrap())
                ));
            }
        }
        for name in &names {
            catalog.forget_unused(name);
        }
        assert_eq!(catalog.len(), names.len());
    }

    #[test]
    fn a_table_in_the_index_is_found_while_the_catalog_is_locked() {
        let catalog = Arc::new(Catalog::default());
        exists(&catalog, "t", 1);
        assert!(catalog.find("t").is_some());
        let locked = catalog.tables.write();
        let (tx, rx) = std::sync::mpsc::channel();
        let finder = {
            let catalog = catalog.clone();
            std::thread::spawn(move || tx.send(catalog.find("t").is_some()).unwrap())
        };
        let found = rx.recv_timeout(std::time::Duration::from_secs(30));
        drop(locked);
        finder.join().unwrap();
        assert_eq!(found, Ok(true), "find waited for the catalog's lock");
    }

    #[test]
    fn a_table_not_in_lmdb_is_never_settled() {
        let catalog = Catalog::default();
        exists(&catalog, "t", 5);
        let table = catalog.find("t").unwrap();
        let view = table.view(7, 9).expect("exists at 9");
        assert_eq!((view.min_lsn, view.lmdb.is_none()), (5, true));
        assert!(table.view(2, 4).is_none());
        assert_eq!(table.settled.from.load(Ordering::Relaxed), UNSETTLED);
        Table::note_dropped(&mut table.state.write(), 10);
        assert!(table.view(10, 10).is_none());
        assert!(
            table.view(7, 9).is_some(),
            "a snapshot before the drop still sees it"
        );
    }
}
