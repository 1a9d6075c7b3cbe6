//! Tables: their existence over LSNs, their LMDB handle, and their [`Overlay`].
//!
//! Invariants:
//! - A table's LMDB handle is set before LMDB holds any data of it, and never unset (a drop
//!   clears the LMDB table, it does not delete it).

use std::collections::HashMap;

use heed::types::Bytes;

use crate::lsn::Lsn;
use crate::overlay::{Overlay, Version};
use crate::sync::{AtomicUsize, DataArc as Arc, Ordering, RwLock};

/// An LMDB table handle.
pub(crate) type Dbi = heed::Database<Bytes, Bytes>;

/// How a snapshot sees one table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableView {
    /// Versions below this LSN belong to an earlier life of the table (before a drop).
    pub min_lsn: Lsn,
    /// The LMDB handle, when the snapshot's LMDB state holds this life of the table.
    pub lmdb: Option<Dbi>,
}

#[derive(Debug, Default)]
pub(crate) struct TableState {
    /// Changes of existence `(lsn, exists)`, ascending.
    history: Vec<(Lsn, bool)>,
    /// The LMDB handle and the LSN from which LMDB holds the table.
    lmdb: Option<(Dbi, Lsn)>,
    /// Committed versions not yet evicted.
    pub overlay: Overlay,
}

impl TableState {
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
            .lmdb
            .filter(|&(_, since)| since <= a && last_drop <= a)
            .map(|(dbi, _)| dbi);
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
        self.lmdb.map(|(dbi, _)| dbi)
    }
}

/// Where a snapshot finds a key's value in a table it sees.
#[derive(Debug)]
pub(crate) enum Lookup<'s> {
    /// The overlay's version, newer than the snapshot's LMDB state (`None`: deleted).
    Overlay(Option<&'s Arc<[u8]>>),
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
    /// Its overlay's key count, read without the lock ([`Overlay::keys_published`]).
    pub overlay_keys: Arc<AtomicUsize>,
}

/// Every table this process knows, dropped ones included (their names may come back).
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    tables: RwLock<HashMap<Arc<str>, Arc<Table>>>,
}

impl Catalog {
    /// Registers a table LMDB holds at open.
    pub fn add_existing(&self, name: &str, dbi: Dbi) {
        let table = self.get_or_add(name);
        let mut st = table.state.write();
        st.history = vec![(0, true)];
        st.lmdb = Some((dbi, 0));
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
                    overlay_keys: state.overlay.keys_published(),
                    state: RwLock::new(state),
                })
            })
            .clone()
    }

    /// Forgets `name` if nothing ever came of it (registered for a commit that failed): no
    /// existence, no LMDB table, no versions.
    pub fn forget_unused(&self, name: &str) {
        let mut tables = self.tables.write();
        let unused = tables.get(name).is_some_and(|t| {
            let st = t.state.read();
            st.history.is_empty() && st.lmdb.is_none() && st.overlay.is_empty()
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
    /// `key`'s value, handed to `with`. The overlay is read, under its lock, only when its
    /// published key count is not 0 ([`Overlay::keys_published`]).
    pub fn lookup<R>(
        &self,
        view: &TableView,
        a: Lsn,
        v: Lsn,
        key: &[u8],
        with: impl FnOnce(Lookup<'_>) -> R,
    ) -> R {
        if self.overlay_keys.load(Ordering::Acquire) > 0 {
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
        }
    }

    /// Records, at publish, that the table was dropped at `lsn` (if it existed).
    pub fn note_dropped(st: &mut TableState, lsn: Lsn) {
        if st.exists_now() {
            st.history.push((lsn, false));
        }
    }

    /// Sets the LMDB handle before LMDB holds data of the table from `since` on.
    pub fn set_lmdb(&self, dbi: Dbi, since: Lsn) {
        let mut st = self.state.write();
        if st.lmdb.is_none() {
            st.lmdb = Some((dbi, since));
        }
    }

    /// Evicts the versions of `keys` at or below `horizon`; returns their bytes and count.
    pub fn evict<'k>(&self, keys: impl Iterator<Item = &'k [u8]>, horizon: Lsn) -> (usize, usize) {
        let mut st = self.state.write();
        let mut freed = (0, 0);
        for key in keys {
            let (bytes, versions) = st.overlay.evict(key, horizon);
            freed.0 += bytes;
            freed.1 += versions;
        }
        // Existence changes at or below the horizon collapse into the last of them.
        let upto = st.history.partition_point(|e| e.0 <= horizon);
        if upto > 1 {
            st.history.drain(..upto - 1);
        }
        freed
    }
}
