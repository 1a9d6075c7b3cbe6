//! Tables: their existence over LSNs, their LMDB handle, and the overlay of committed versions
//! LMDB does not hold yet.
//!
//! Invariants:
//! - Versions are added by the flusher (`publish`) in LSN order, before `visible_lsn` moves
//!   past them; they are removed by the applier only at or below the retirement horizon,
//!   which is at most every live snapshot's applied LSN. So a snapshot `(applied A,
//!   visible V)` finds, for every key, either its newest version <= V here, or no version in
//!   (A, V] at all, in which case LMDB at A holds the answer.
//! - A table's LMDB handle is set before LMDB holds any data of it, and never unset (a drop
//!   clears the LMDB table, it does not delete it).

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use heed::types::Bytes;

use crate::error::{Error, Result};
use crate::sync::{DataArc as Arc, RwLock};
use crate::wal::Lsn;

/// An LMDB table handle.
pub(crate) type Dbi = heed::Database<Bytes, Bytes>;

/// The longest table name (LMDB stores it as a key, with a prefix).
pub const MAX_TABLE_NAME_LEN: usize = 255;

/// Refuses empty, overlong or NUL-holding table names.
pub(crate) fn check_table_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_TABLE_NAME_LEN {
        "it is longer than 255 bytes"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidInput {
        what: "table name",
        reason: format!("{name:?}: {reason}"),
    })
}

/// One committed version of a key: its value, or `None` for a delete.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub lsn: Lsn,
    pub value: Option<Arc<[u8]>>,
}

/// Bytes a version is charged against `overlay_max_bytes`.
pub(crate) fn version_cost(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + 64
}

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
    /// Committed versions not yet retired.
    pub overlay: Overlay,
}

/// Keys of an overlay range with their version chains.
pub(crate) type OverlayEntries<'a> = Box<dyn Iterator<Item = (&'a Arc<[u8]>, &'a [Version])> + 'a>;

/// A table's committed versions by key, oldest first: hashed for point reads, ordered for
/// ranges. A key is present while it has a version.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    chains: HashMap<Arc<[u8]>, Vec<Version>>,
    order: BTreeSet<Arc<[u8]>>,
}

impl Overlay {
    pub fn push(&mut self, key: &Arc<[u8]>, version: Version) {
        match self.chains.get_mut(&key[..]) {
            Some(chain) => chain.push(version),
            None => {
                self.chains.insert(key.clone(), vec![version]);
                self.order.insert(key.clone());
            }
        }
    }

    pub fn chain(&self, key: &[u8]) -> Option<&[Version]> {
        if self.chains.is_empty() {
            return None;
        }
        self.chains.get(key).map(Vec::as_slice)
    }

    /// Keys in `range` (ascending, or descending if `reverse`) with their chains.
    pub fn range<'a>(
        &'a self,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        reverse: bool,
    ) -> OverlayEntries<'a> {
        let keys = self.order.range::<[u8], _>(range);
        let with_chain = move |k: &'a Arc<[u8]>| {
            let chain = self.chains.get(&k[..]).map_or(&[][..], Vec::as_slice);
            (k, chain)
        };
        if reverse {
            Box::new(keys.rev().map(with_chain))
        } else {
            Box::new(keys.map(with_chain))
        }
    }

    /// Removes the versions of `key` at or below `horizon`; returns the bytes freed.
    /// Removes the versions at or below `horizon`; returns their bytes and count.
    fn retire(&mut self, key: &[u8], horizon: Lsn) -> (usize, usize) {
        let Some(chain) = self.chains.get_mut(key) else {
            return (0, 0);
        };
        let keep_from = chain.partition_point(|v| v.lsn <= horizon);
        let freed = chain
            .drain(..keep_from)
            .map(|v| version_cost(key, v.value.as_deref()))
            .sum();
        if chain.is_empty() {
            self.chains.remove(key);
            self.order.remove(key);
        }
        (freed, keep_from)
    }
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

    /// Where a snapshot with applied LSN `a` and visible LSN `v` finds `key`'s value.
    pub fn lookup(&self, a: Lsn, v: Lsn, key: &[u8]) -> Lookup<'_> {
        let Some(view) = self.view(a, v) else {
            return Lookup::NoTable;
        };
        match self.version(&view, v, key) {
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

/// Where a snapshot finds a key's value.
#[derive(Debug)]
pub(crate) enum Lookup<'s> {
    /// The table does not exist in the snapshot.
    NoTable,
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
    pub state: RwLock<TableState>,
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
                Arc::new(Table {
                    name: Arc::from(name),
                    state: RwLock::new(TableState::default()),
                })
            })
            .clone()
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

    /// Retires the versions of `keys` at or below `horizon`; returns their bytes and count.
    pub fn retire<'k>(&self, keys: impl Iterator<Item = &'k [u8]>, horizon: Lsn) -> (usize, usize) {
        let mut st = self.state.write();
        let mut freed = (0, 0);
        for key in keys {
            let (bytes, versions) = st.overlay.retire(key, horizon);
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

/// Owned bounds of a key range.
pub(crate) type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Copies borrowed bounds.
pub(crate) fn owned_bounds(range: &impl std::ops::RangeBounds<[u8]>) -> KeyBounds {
    (
        range.start_bound().map(<[u8]>::to_vec),
        range.end_bound().map(<[u8]>::to_vec),
    )
}

/// The bounds of the keys starting with `prefix`.
pub(crate) fn prefix_bounds(prefix: &[u8]) -> KeyBounds {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

/// True if `key` lies inside `bounds`.
pub(crate) fn in_bounds(bounds: &KeyBounds, key: &[u8]) -> bool {
    let lower = match &bounds.0 {
        Bound::Included(b) => key >= b.as_slice(),
        Bound::Excluded(b) => key > b.as_slice(),
        Bound::Unbounded => true,
    };
    let upper = match &bounds.1 {
        Bound::Included(b) => key <= b.as_slice(),
        Bound::Excluded(b) => key < b.as_slice(),
        Bound::Unbounded => true,
    };
    lower && upper
}

/// False for bounds a `BTreeMap::range` refuses (start after end, or equal and both
/// excluded); such a range is empty.
pub(crate) fn bounds_valid(b: &KeyBounds) -> bool {
    match (&b.0, &b.1) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => true,
        (Bound::Excluded(s), Bound::Excluded(e)) => s < e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
            s <= e
        }
    }
}
