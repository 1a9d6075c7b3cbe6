//! The overlay: committed versions LMDB does not hold yet, per table, snapshot-consistent
//! with LMDB.
//!
//! Invariants:
//! - Versions are added by the flusher (publication) in LSN order, before `visible_lsn`
//!   moves past them; the applier evicts them only at or below the eviction horizon, which
//!   is at most every live snapshot's applied LSN. So a snapshot `(applied A, visible V)`
//!   finds, for every key, either its newest version <= V here, or no version in (A, V] at
//!   all, in which case LMDB at A holds the answer.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use crate::lsn::Lsn;
use crate::sync::{AtomicUsize, DataArc as Arc, Ordering};

/// One committed version of a key: its value, or `None` for a delete.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub lsn: Lsn,
    pub value: Option<Arc<[u8]>>,
}

/// Bytes a version is charged against `overlay_max_bytes`: its key and value and what
/// holding it costs besides (the write op in its transaction, the key's and value's shared
/// allocations, the overlay's hash entry, chain and ordered index, the conflict index):
/// 200-205 bytes of heap measured by `tests/overlay_memory.rs` (before: 64, a third of it).
pub(crate) fn version_cost(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + VERSION_OVERHEAD
}

/// Heap bytes a version takes besides its key and value.
pub(crate) const VERSION_OVERHEAD: usize = 208;

/// Keys of an overlay range with their version chains.
pub(crate) type OverlayEntries<'a> = Box<dyn Iterator<Item = (&'a Arc<[u8]>, &'a [Version])> + 'a>;

/// A table's committed versions by key, oldest first: hashed for point reads, ordered for
/// ranges. A key is present while it has a version.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    chains: HashMap<Arc<[u8]>, Vec<Version>>,
    order: BTreeSet<Arc<[u8]>>,
    /// The number of keys, stored (`Release`) after every change, for readers that do not
    /// take the table's lock (see [`Overlay::keys_published`]).
    keys: Arc<AtomicUsize>,
    /// At least the LSN of every version held (the newest ever added).
    newest: Lsn,
}

/// Every version an overlay held, taken out at once by [`Overlay::take_all`]: counted and
/// freed by the caller after it lets go of the table's lock.
pub(crate) struct TakenVersions {
    chains: HashMap<Arc<[u8]>, Vec<Version>>,
    order: BTreeSet<Arc<[u8]>>,
}

impl TakenVersions {
    /// Frees them; returns their bytes and count (as [`Overlay::evict`] counts them).
    pub fn free(self) -> (usize, usize) {
        let mut freed = (0, 0);
        for (key, chain) in &self.chains {
            freed.0 += chain
                .iter()
                .map(|v| version_cost(key, v.value.as_deref()))
                .sum::<usize>();
            freed.1 += chain.len();
        }
        drop(self.order);
        freed
    }
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// The overlay's key count, readable without its lock. Versions are added before
    /// `visible_lsn` passes them and evicted only at or below every snapshot's applied LSN,
    /// so a snapshot (applied `A`, visible `V`) that reads 0 here (`Acquire`) after it read
    /// `V` knows that no version in `(A, V]` exists: LMDB at `A` decides every key.
    pub fn keys_published(&self) -> Arc<AtomicUsize> {
        self.keys.clone()
    }

    fn publish_keys(&self) {
        self.keys.store(self.chains.len(), Ordering::Release);
    }

    pub fn push(&mut self, key: &Arc<[u8]>, version: Version) {
        self.newest = self.newest.max(version.lsn);
        match self.chains.get_mut(&key[..]) {
            Some(chain) => chain.push(version),
            None => {
                self.chains.insert(key.clone(), vec![version]);
                self.order.insert(key.clone());
                self.publish_keys();
            }
        }
    }

    /// Appends many versions at once (each key's in LSN order, newer than any it holds):
    /// the new keys enter the ordered index sorted, built in one pass when it is empty (a
    /// replay at open), rather than one tree insert each.
    pub fn extend(&mut self, versions: Vec<(Arc<[u8]>, Version)>) {
        self.chains.reserve(versions.len());
        let mut new_keys = Vec::new();
        for (key, version) in versions {
            self.newest = self.newest.max(version.lsn);
            match self.chains.get_mut(&key[..]) {
                Some(chain) => chain.push(version),
                None => {
                    self.chains.insert(key.clone(), vec![version]);
                    new_keys.push(key);
                }
            }
        }
        new_keys.sort_unstable();
        if self.order.is_empty() {
            self.order = new_keys.into_iter().collect();
        } else {
            self.order.extend(new_keys);
        }
        self.publish_keys();
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

    /// Takes every version out when all are at or below `horizon` (what evicting each of
    /// their keys would do, without a lookup each); `None` when some are above it.
    pub fn take_all(&mut self, horizon: Lsn) -> Option<TakenVersions> {
        if self.chains.is_empty() || self.newest > horizon {
            return None;
        }
        let taken = TakenVersions {
            chains: std::mem::take(&mut self.chains),
            order: std::mem::take(&mut self.order),
        };
        self.publish_keys();
        Some(taken)
    }

    /// Evicts the versions at or below `horizon`; returns their bytes and count.
    pub fn evict(&mut self, key: &[u8], horizon: Lsn) -> (usize, usize) {
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
            self.publish_keys();
        }
        (freed, keep_from)
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;

    fn version(lsn: Lsn, value: &[u8]) -> Version {
        Version {
            lsn,
            value: Some(Arc::from(value)),
        }
    }

    #[test]
    fn take_all_empties_only_an_overlay_wholly_at_or_below_the_horizon_and_counts_as_evict() {
        let fill = || {
            let mut o = Overlay::default();
            o.push(&Arc::from(&b"a"[..]), version(1, b"1"));
            o.push(&Arc::from(&b"b"[..]), version(2, b"22"));
            o.push(&Arc::from(&b"a"[..]), version(3, b"333"));
            o
        };
        let mut o = fill();
        let keys = o.keys_published();
        assert!(o.take_all(2).is_none(), "version 3 is above the horizon");
        assert_eq!(keys.load(Ordering::Acquire), 2);
        let taken = o.take_all(3).expect("every version is at or below 3");
        assert!(o.is_empty());
        assert!(o
            .range((Bound::Unbounded, Bound::Unbounded), false)
            .next()
            .is_none());
        assert_eq!(
            keys.load(Ordering::Acquire),
            0,
            "readers without the lock see it empty"
        );
        let mut by_key = fill();
        let a = by_key.evict(b"a", 3);
        let b = by_key.evict(b"b", 3);
        assert_eq!(taken.free(), (a.0 + b.0, a.1 + b.1));
        assert!(
            Overlay::default().take_all(Lsn::MAX).is_none(),
            "nothing to take"
        );
    }
}
