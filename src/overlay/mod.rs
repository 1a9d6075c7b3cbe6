//! The overlay: committed versions LMDB does not hold yet, per table, snapshot-consistent
//! with LMDB.
//!
//! Invariants:
//! - Versions are added by the flusher (publication) in LSN order, before `visible_lsn`
//!   moves past them; the applier evicts them only at or below the eviction horizon, which
//!   is at most every live snapshot's applied LSN. So a snapshot `(applied A, visible V)`
//!   finds, for every key, either its newest version <= V here, or no version in (A, V] at
//!   all, in which case LMDB at A holds the answer.

use std::collections::{btree_map, vec_deque, BTreeMap, HashMap, VecDeque};
use std::ops::Bound;

use crate::bytes::SharedBytes;
use crate::keys::HeadKey;
use crate::lsn::Lsn;
use crate::sync::{AtomicU64, AtomicUsize, DataArc as Arc, Ordering};

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
pub(crate) struct OverlayEntries<'a, 'b> {
    tree: btree_map::Range<'a, HeadKey, usize>,
    /// The tail's part (see [`OrderedKeys`]), found when the walk reaches it: a forward
    /// walk of a few keys does not touch the tail at all.
    tail: Option<vec_deque::Iter<'a, (HeadKey, usize)>>,
    keys: &'a OrderedKeys,
    range: (Bound<&'b HeadKey>, Bound<&'b HeadKey>),
    slots: &'a [Chain],
    reverse: bool,
}

impl<'a> OverlayEntries<'a, '_> {
    fn tail(&mut self) -> &mut vec_deque::Iter<'a, (HeadKey, usize)> {
        let (keys, range) = (self.keys, self.range);
        self.tail.get_or_insert_with(|| keys.tail_range(range))
    }

    /// The next entry of a forward walk past the tree's part (out of line: most walks end
    /// before it).
    #[cold]
    #[inline(never)]
    fn next_in_tail(&mut self) -> Option<(&'a HeadKey, &'a usize)> {
        self.tail().next().map(|(key, slot)| (key, slot))
    }

    fn next_back_entry(&mut self) -> Option<(&'a HeadKey, &'a usize)> {
        match self.tail().next_back() {
            Some((key, slot)) => Some((key, slot)),
            None => self.tree.next_back(),
        }
    }
}

impl<'a> Iterator for OverlayEntries<'a, '_> {
    type Item = (&'a HeadKey, ChainAt<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (key, &slot) = if self.reverse {
            self.next_back_entry()?
        } else {
            match self.tree.next() {
                Some(entry) => entry,
                None => self.next_in_tail()?,
            }
        };
        Some((key, ChainAt(&self.slots[slot])))
    }
}

/// The overlay's keys in order, each with its slot: a B-tree, and above every key in it a
/// sorted run that takes a key added above every key held with one comparison (sorted
/// loads, sequential ids, time series) where a tree insert compares it with a dozen keys or
/// more, each a cache miss when their inline heads tie. Every key of `tail` is above every
/// key of `tree`; each key moves from the tail to the tree at most once.
#[derive(Debug, Default)]
struct OrderedKeys {
    tree: BTreeMap<HeadKey, usize>,
    tail: VecDeque<(HeadKey, usize)>,
}

/// Entries a change inside the tail shifts at most; one deeper moves the keys before it
/// into the tree instead (at once: a key out of order in a long run costs the tree inserts
/// the run saved, under the same lock hold).
const TAIL_SHIFT_MAX: usize = 64;

impl OrderedKeys {
    fn len(&self) -> usize {
        self.tree.len() + self.tail.len()
    }

    fn is_empty(&self) -> bool {
        self.tree.is_empty() && self.tail.is_empty()
    }

    /// Adds `key` (not held).
    fn insert(&mut self, key: HeadKey, slot: usize) {
        let above_all = match self.tail.back() {
            Some((back, _)) => key > *back,
            None => self
                .tree
                .last_key_value()
                .is_none_or(|(last, _)| key > *last),
        };
        if above_all {
            self.tail.push_back((key, slot));
            return;
        }
        if self.tail.front().is_none_or(|(front, _)| key < *front) {
            self.tree.insert(key, slot);
            return;
        }
        let at = self.tail.partition_point(|(k, _)| *k < key);
        if self.tail.len() - at <= TAIL_SHIFT_MAX {
            self.tail.insert(at, (key, slot));
        } else {
            self.spill(at);
            self.tree.insert(key, slot);
        }
    }

    /// Removes `key` if held; returns the index's own copy of it.
    fn remove(&mut self, key: &HeadKey) -> Option<HeadKey> {
        let Some((front, _)) = self.tail.front() else {
            return self.tree.remove_entry(key).map(|(k, _)| k);
        };
        match key.cmp(front) {
            std::cmp::Ordering::Less => self.tree.remove_entry(key).map(|(k, _)| k),
            std::cmp::Ordering::Equal => self.tail.pop_front().map(|(k, _)| k),
            std::cmp::Ordering::Greater => {
                let at = self.tail.partition_point(|(k, _)| k < key);
                if self.tail.get(at).is_none_or(|(k, _)| k != key) {
                    return None;
                }
                if at <= TAIL_SHIFT_MAX || self.tail.len() - at <= TAIL_SHIFT_MAX {
                    self.tail.remove(at).map(|(k, _)| k)
                } else {
                    self.spill(at);
                    self.tail.pop_front().map(|(k, _)| k)
                }
            }
        }
    }

    /// Moves the tail's first `n` keys into the tree.
    fn spill(&mut self, n: usize) {
        for (key, slot) in self.tail.drain(..n) {
            self.tree.insert(key, slot);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&HeadKey, &usize)> {
        self.tree
            .iter()
            .chain(self.tail.iter().map(|(k, s)| (k, s)))
    }

    /// The tail's entries within `range`.
    fn tail_range(
        &self,
        range: (Bound<&HeadKey>, Bound<&HeadKey>),
    ) -> vec_deque::Iter<'_, (HeadKey, usize)> {
        if self.tail.is_empty() {
            return self.tail.range(..);
        }
        let lo = match range.0 {
            Bound::Included(b) => self.tail.partition_point(|(k, _)| k < b),
            Bound::Excluded(b) => self.tail.partition_point(|(k, _)| k <= b),
            Bound::Unbounded => 0,
        };
        let hi = match range.1 {
            Bound::Included(b) => self.tail.partition_point(|(k, _)| k <= b),
            Bound::Excluded(b) => self.tail.partition_point(|(k, _)| k < b),
            Bound::Unbounded => self.tail.len(),
        };
        self.tail.range(lo..hi.max(lo))
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

    /// Moves the versions at or below `horizon` into `evicted`; returns their bytes and
    /// count, and whether none is left.
    fn evict(&mut self, key: &[u8], horizon: Lsn, evicted: &mut Evicted) -> (usize, usize, bool) {
        match self {
            Chain::One(v) if v.lsn <= horizon => {
                let cost = version_cost(key, v.value.as_deref());
                if let Chain::One(v) = std::mem::replace(self, Chain::Many(Vec::new())) {
                    evicted.versions.push(v);
                }
                (cost, 1, true)
            }
            Chain::One(_) => (0, 0, false),
            Chain::Many(vs) => {
                let keep_from = vs.partition_point(|v| v.lsn <= horizon);
                let freed = vs[..keep_from]
                    .iter()
                    .map(|v| version_cost(key, v.value.as_deref()))
                    .sum();
                evicted.versions.extend(vs.drain(..keep_from));
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
    order: OrderedKeys,
    slots: Vec<Chain>,
    /// Slots of evicted keys, reused first.
    free: Vec<usize>,
    /// What readers that do not take the table's lock know of it ([`OverlaySummary`]).
    summary: Arc<OverlaySummary>,
}

/// An overlay's key count and newest LSN, each stored (`Release`) when it changes, for
/// readers that do not take the table's lock. Versions are added before `visible_lsn`
/// passes them and evicted only at or below every snapshot's applied LSN, so a snapshot
/// (applied `A`, visible `V`) that reads them (`Acquire`) after it read `V` and finds no key,
/// or no version ever added above `A`, knows that no version in `(A, V]` exists: LMDB at `A`
/// decides every key.
#[derive(Debug, Default)]
pub(crate) struct OverlaySummary {
    keys: AtomicUsize,
    newest: AtomicU64,
}

impl OverlaySummary {
    /// False when LMDB's state at `applied` decides every key for a snapshot that read its
    /// visible LSN before this call (see [`OverlaySummary`]).
    pub fn holds_above(&self, applied: Lsn) -> bool {
        self.keys.load(Ordering::Acquire) > 0 && self.newest.load(Ordering::Acquire) > applied
    }

    #[cfg(test)]
    pub fn keys(&self) -> usize {
        self.keys.load(Ordering::Acquire)
    }
}

/// A key as the overlay's two indexes hold it, its two counts taken before the table's lock
/// is: a count is a locked increment, which waits for the stores before it (the indexes'
/// inserts, cache misses in a large overlay) to land, so the flusher takes a commit's
/// counts in one pass first, then inserts.
pub(crate) struct CountedKey {
    hashed: SharedBytes,
    ordered: HeadKey,
}

impl CountedKey {
    pub fn of(key: &SharedBytes) -> Self {
        CountedKey {
            hashed: key.clone(),
            ordered: HeadKey::shared(key.clone()),
        }
    }
}

/// Slots by key. Seeded per map (keys can come from anyone), and a few times faster than
/// the standard SipHash on short keys: point reads and the flusher hash every key.
type KeyMap = HashMap<SharedBytes, usize, foldhash::quality::RandomState>;

/// Every version an overlay held, taken out at once by [`Overlay::take_all`]: counted and
/// freed by the caller after it lets go of the table's lock.
pub(crate) struct TakenVersions {
    order: OrderedKeys,
    slot_of: KeyMap,
    slots: Vec<Chain>,
}

impl TakenVersions {
    /// Frees them; returns their bytes and count (as [`Overlay::evict`] counts them).
    pub fn free(self) -> (usize, usize) {
        let mut freed = (0, 0);
        for (key, &slot) in self.order.iter() {
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

    /// The overlay's key count and newest LSN, readable without its lock.
    pub fn summary(&self) -> Arc<OverlaySummary> {
        self.summary.clone()
    }

    fn publish_keys(&self) {
        self.summary.keys.store(self.order.len(), Ordering::Release);
    }

    /// Raises the newest LSN held to `lsn` (published before the key count of a new key).
    fn note_newest(&mut self, lsn: Lsn) {
        if lsn > self.newest() {
            self.summary.newest.store(lsn, Ordering::Release);
        }
    }

    /// At least the LSN of every version held (the newest ever added). Stored only under
    /// the table's write lock, which its caller holds.
    fn newest(&self) -> Lsn {
        self.summary.newest.load(Ordering::Relaxed)
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

    /// Adds `version` of `key`; gives the key's counts back when the key was there already
    /// (its caller drops them after it lets go of the table's lock).
    pub fn push(&mut self, key: CountedKey, version: Version) -> Option<CountedKey> {
        self.note_newest(version.lsn);
        match self.slot_of.get(key.hashed.as_bytes()) {
            Some(&slot) => {
                self.slots[slot].push(version);
                Some(key)
            }
            None => {
                let slot = self.new_slot(Chain::One(version));
                self.slot_of.insert(key.hashed, slot);
                self.order.insert(key.ordered, slot);
                self.publish_keys();
                None
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
            self.note_newest(version.lsn);
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
            self.order.tree = new_keys.into_iter().collect();
        } else {
            for (key, slot) in new_keys {
                self.order.insert(key, slot);
            }
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
    pub fn range<'a, 'b>(
        &'a self,
        range: (Bound<&'b HeadKey>, Bound<&'b HeadKey>),
        reverse: bool,
    ) -> OverlayEntries<'a, 'b> {
        OverlayEntries {
            tree: self.order.tree.range::<HeadKey, _>(range),
            tail: None,
            keys: &self.order,
            range,
            slots: &self.slots,
            reverse,
        }
    }

    /// Takes every version out when all are at or below `horizon` (what evicting each of
    /// their keys would do, without a lookup each); `None` when some are above it.
    pub fn take_all(&mut self, horizon: Lsn) -> Option<TakenVersions> {
        if self.order.is_empty() || self.newest() > horizon {
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

    /// [`Overlay::evict_keys`] of `key` alone (tests' shorthand).
    #[cfg(test)]
    pub fn evict(&mut self, key: &HeadKey, horizon: Lsn, evicted: &mut Evicted) -> (usize, usize) {
        match self.slot_of.get(key.bytes()) {
            Some(&slot) => self.evict_slot(key, slot, horizon, evicted),
            None => (0, 0),
        }
    }

    /// Evicts the versions of each of `keys` at or below `horizon` into `evicted`; returns
    /// their bytes and count. All their slots are found (and prefetched) before any is
    /// evicted, so the hash probes' misses overlap instead of coming one a key. `slots` is
    /// room for the lookups, kept by the caller from chunk to chunk.
    pub fn evict_keys(
        &mut self,
        keys: &[HeadKey],
        horizon: Lsn,
        evicted: &mut Evicted,
        slots: &mut Vec<Option<usize>>,
    ) -> (usize, usize) {
        slots.clear();
        slots.extend(keys.iter().map(|key| {
            let slot = self.slot_of.get(key.bytes()).copied();
            if let Some(slot) = slot {
                crate::bytes::prefetch(&self.slots[slot]);
            }
            slot
        }));
        let mut freed = (0, 0);
        for (key, slot) in keys.iter().zip(slots.iter()) {
            let Some(slot) = *slot else { continue };
            // Eviction moves no key's slot, and the overlay empties only with its last key;
            // a slot emptied above (a key given twice) holds no version.
            if self.slots[slot].as_slice().is_empty() {
                continue;
            }
            let (bytes, versions) = self.evict_slot(key, slot, horizon, evicted);
            freed.0 += bytes;
            freed.1 += versions;
        }
        freed
    }

    /// Evicts the versions at or below `horizon` of `key`, held in `slot`.
    fn evict_slot(
        &mut self,
        key: &HeadKey,
        slot: usize,
        horizon: Lsn,
        evicted: &mut Evicted,
    ) -> (usize, usize) {
        let (freed, count, emptied) = self.slots[slot].evict(key.bytes(), horizon, evicted);
        if emptied {
            evicted
                .keys
                .extend(self.slot_of.remove_entry(key.bytes()).map(|(k, _)| k));
            evicted.ordered.extend(self.order.remove(key));
            // The slot's allocation goes now, not when the slot is reused.
            evicted.chains.push(std::mem::replace(
                &mut self.slots[slot],
                Chain::Many(Vec::new()),
            ));
            self.free.push(slot);
            if self.order.is_empty() {
                // Memory held for the largest the overlay was goes with its last key.
                evicted.structures.push((
                    std::mem::take(&mut self.slots),
                    std::mem::take(&mut self.free),
                    std::mem::take(&mut self.slot_of),
                    std::mem::take(&mut self.order),
                ));
            }
            self.publish_keys();
        }
        (freed, count)
    }
}

/// What evictions took out of an overlay, dropped by the caller after it lets go of the
/// table's lock: each key and value dropped gives back a count (a locked instruction on its
/// block's first cache line, a miss), and an emptied overlay frees its indexes.
#[derive(Default)]
pub(crate) struct Evicted {
    versions: Vec<Version>,
    chains: Vec<Chain>,
    keys: Vec<SharedBytes>,
    ordered: Vec<HeadKey>,
    #[allow(clippy::type_complexity)]
    structures: Vec<(Vec<Chain>, Vec<usize>, KeyMap, OrderedKeys)>,
}

impl Evicted {
    /// Drops what it holds, keeping its room for more.
    pub fn drop_all(&mut self) {
        self.versions.clear();
        self.chains.clear();
        self.keys.clear();
        self.ordered.clear();
        self.structures.clear();
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests;
