//! The overlay: committed versions LMDB does not hold yet, per table, snapshot-consistent
//! with LMDB.
//!
//! Invariants:
//! - Versions are added by the flusher (publication) in LSN order, before `visible_lsn`
//!   moves past them; the applier evicts them only at or below the eviction horizon, which
//!   is at most every live snapshot's applied LSN. So a snapshot `(applied A, visible V)`
//!   finds, for every key, either its newest version <= V here, or no version in (A, V] at
//!   all, in which case LMDB at A holds the answer.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::bytes::SharedBytes;
use crate::keys::HeadKey;
use crate::lsn::Lsn;
use crate::sync::{AtomicUsize, DataArc as Arc, Ordering};

/// One committed version of a key: its value, or `None` for a delete.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub lsn: Lsn,
    pub value: Option<SharedBytes>,
}

/// Bytes a version is charged against `overlay_max_bytes`: its key and value and what
/// holding it costs besides (the write op in its transaction, the key's and value's shared
/// allocations, the overlay's hash entry, chain slot and ordered index, the conflict index):
/// 195 bytes of heap measured by `tests/overlay_memory.rs` with 16-byte keys.
pub(crate) fn version_cost(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + VERSION_OVERHEAD
}

/// Heap bytes a version takes besides its key and value.
pub(crate) const VERSION_OVERHEAD: usize = 200;

/// Keys of an overlay range with their version chains, in walk order.
pub(crate) struct OverlayEntries<'a> {
    keys: std::collections::btree_map::Range<'a, HeadKey, usize>,
    slots: &'a [Chain],
    reverse: bool,
}

impl<'a> Iterator for OverlayEntries<'a> {
    type Item = (&'a HeadKey, ChainAt<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (key, &slot) = if self.reverse {
            self.keys.next_back()
        } else {
            self.keys.next()
        }?;
        Some((key, ChainAt(&self.slots[slot])))
    }
}

/// A key's chain as a range walk reaches it, not read yet: a walk can prefetch a few before
/// it reads them (each is a cache miss in a large overlay).
#[derive(Clone, Copy)]
pub(crate) struct ChainAt<'a>(&'a Chain);

impl<'a> ChainAt<'a> {
    #[inline]
    pub fn prefetch(self) {
        crate::bytes::prefetch(self.0);
    }

    #[inline]
    pub fn versions(self) -> &'a [Version] {
        self.0.as_slice()
    }
}

/// A key's versions, oldest first: most keys have one, held without an allocation of its
/// own.
#[derive(Debug)]
enum Chain {
    One(Version),
    Many(Vec<Version>),
}

impl Chain {
    fn as_slice(&self) -> &[Version] {
        match self {
            Chain::One(v) => std::slice::from_ref(v),
            Chain::Many(vs) => vs,
        }
    }

    fn push(&mut self, version: Version) {
        match self {
            Chain::Many(vs) => vs.push(version),
            Chain::One(_) => {
                let Chain::One(first) = std::mem::replace(self, Chain::Many(Vec::new())) else {
                    unreachable!("matched One");
                };
                *self = Chain::Many(vec![first, version]);
            }
        }
    }

    /// Removes the versions at or below `horizon`; returns their bytes and count, and
    /// whether none is left.
    fn evict(&mut self, key: &[u8], horizon: Lsn) -> (usize, usize, bool) {
        match self {
            Chain::One(v) if v.lsn <= horizon => (version_cost(key, v.value.as_deref()), 1, true),
            Chain::One(_) => (0, 0, false),
            Chain::Many(vs) => {
                let keep_from = vs.partition_point(|v| v.lsn <= horizon);
                let freed = vs
                    .drain(..keep_from)
                    .map(|v| version_cost(key, v.value.as_deref()))
                    .sum();
                (freed, keep_from, vs.is_empty())
            }
        }
    }

    fn cost(&self, key: &[u8]) -> usize {
        self.as_slice()
            .iter()
            .map(|v| version_cost(key, v.value.as_deref()))
            .sum()
    }
}

/// A table's committed versions by key, oldest first: each key's chain sits in a slot,
/// found by hash for point reads and from the ordered index for ranges (a range walk
/// reaches a key's chain without a hash probe). A key is present while it has a version.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    slot_of: KeyMap,
    order: BTreeMap<HeadKey, usize>,
    slots: Vec<Chain>,
    /// Slots of evicted keys, reused first.
    free: Vec<usize>,
    /// The number of keys, stored (`Release`) after every change, for readers that do not
    /// take the table's lock (see [`Overlay::keys_published`]).
    keys: Arc<AtomicUsize>,
    /// At least the LSN of every version held (the newest ever added).
    newest: Lsn,
}

/// Slots by key. Seeded per map (keys can come from anyone), and a few times faster than
/// the standard SipHash on short keys: point reads and the flusher hash every key.
type KeyMap = HashMap<SharedBytes, usize, foldhash::quality::RandomState>;

/// Every version an overlay held, taken out at once by [`Overlay::take_all`]: counted and
/// freed by the caller after it lets go of the table's lock.
pub(crate) struct TakenVersions {
    order: BTreeMap<HeadKey, usize>,
    slot_of: KeyMap,
    slots: Vec<Chain>,
}

impl TakenVersions {
    /// Frees them; returns their bytes and count (as [`Overlay::evict`] counts them).
    pub fn free(self) -> (usize, usize) {
        let mut freed = (0, 0);
        for (key, &slot) in &self.order {
            let chain = &self.slots[slot];
            freed.0 += chain.cost(key.bytes());
            freed.1 += chain.as_slice().len();
        }
        drop(self.slot_of);
        freed
    }
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The overlay's key count, readable without its lock. Versions are added before
    /// `visible_lsn` passes them and evicted only at or below every snapshot's applied LSN,
    /// so a snapshot (applied `A`, visible `V`) that reads 0 here (`Acquire`) after it read
    /// `V` knows that no version in `(A, V]` exists: LMDB at `A` decides every key.
    pub fn keys_published(&self) -> Arc<AtomicUsize> {
        self.keys.clone()
    }

    fn publish_keys(&self) {
        self.keys.store(self.order.len(), Ordering::Release);
    }

    /// A slot holding `chain` (a free one if any).
    fn new_slot(&mut self, chain: Chain) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = chain;
                slot
            }
            None => {
                self.slots.push(chain);
                self.slots.len() - 1
            }
        }
    }

    pub fn push(&mut self, key: &SharedBytes, version: Version) {
        self.newest = self.newest.max(version.lsn);
        match self.slot_of.get(&key[..]) {
            Some(&slot) => self.slots[slot].push(version),
            None => {
                let slot = self.new_slot(Chain::One(version));
                self.slot_of.insert(key.clone(), slot);
                self.order.insert(HeadKey::shared(key.clone()), slot);
                self.publish_keys();
            }
        }
    }

    /// Appends many versions at once (each key's in LSN order, newer than any it holds):
    /// the new keys enter the ordered index sorted, built in one pass when it is empty (a
    /// replay at open), rather than one tree insert each.
    pub fn extend(&mut self, versions: Vec<(SharedBytes, Version)>) {
        self.slot_of.reserve(versions.len());
        let mut new_keys = Vec::new();
        for (key, version) in versions {
            self.newest = self.newest.max(version.lsn);
            match self.slot_of.get(&key[..]) {
                Some(&slot) => self.slots[slot].push(version),
                None => {
                    let slot = self.new_slot(Chain::One(version));
                    self.slot_of.insert(key.clone(), slot);
                    new_keys.push((HeadKey::shared(key), slot));
                }
            }
        }
        new_keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if self.order.is_empty() {
            self.order = new_keys.into_iter().collect();
        } else {
            self.order.extend(new_keys);
        }
        self.publish_keys();
    }

    pub fn chain(&self, key: &[u8]) -> Option<&[Version]> {
        if self.slot_of.is_empty() {
            return None;
        }
        let &slot = self.slot_of.get(key)?;
        Some(self.slots[slot].as_slice())
    }

    /// Keys in `range` (ascending, or descending if `reverse`) with their chains. The
    /// bounds carry inline heads, so most comparisons of the search skip the keys' bytes;
    /// they must be valid for `BTreeMap::range` ([`crate::keys::bounds_valid`]).
    pub fn range<'a>(
        &'a self,
        range: (Bound<&HeadKey>, Bound<&HeadKey>),
        reverse: bool,
    ) -> OverlayEntries<'a> {
        OverlayEntries {
            keys: self.order.range::<HeadKey, _>(range),
            slots: &self.slots,
            reverse,
        }
    }

    /// Takes every version out when all are at or below `horizon` (what evicting each of
    /// their keys would do, without a lookup each); `None` when some are above it.
    pub fn take_all(&mut self, horizon: Lsn) -> Option<TakenVersions> {
        if self.order.is_empty() || self.newest > horizon {
            return None;
        }
        let taken = TakenVersions {
            order: std::mem::take(&mut self.order),
            slot_of: std::mem::take(&mut self.slot_of),
            slots: std::mem::take(&mut self.slots),
        };
        self.free = Vec::new();
        self.publish_keys();
        Some(taken)
    }

    /// Evicts the versions at or below `horizon`; returns their bytes and count.
    pub fn evict(&mut self, key: &[u8], horizon: Lsn) -> (usize, usize) {
        let Some(&slot) = self.slot_of.get(key) else {
            return (0, 0);
        };
        let (freed, count, emptied) = self.slots[slot].evict(key, horizon);
        if emptied {
            self.slot_of.remove(key);
            // By the key's bytes (the order is theirs): no allocation for a headed key.
            self.order.remove(key);
            // The slot's last version goes now, not when the slot is reused.
            self.slots[slot] = Chain::Many(Vec::new());
            self.free.push(slot);
            if self.order.is_empty() {
                // Memory held for the largest the overlay was goes with its last key.
                (self.slots, self.free, self.slot_of) = Default::default();
            }
            self.publish_keys();
        }
        (freed, count)
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;

    fn version(lsn: Lsn, value: &[u8]) -> Version {
        Version {
            lsn,
            value: Some(SharedBytes::copy_of(value)),
        }
    }

    #[test]
    fn take_all_empties_only_an_overlay_wholly_at_or_below_the_horizon_and_counts_as_evict() {
        let fill = || {
            let mut o = Overlay::default();
            o.push(&SharedBytes::copy_of(b"a"), version(1, b"1"));
            o.push(&SharedBytes::copy_of(b"b"), version(2, b"22"));
            o.push(&SharedBytes::copy_of(b"a"), version(3, b"333"));
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
