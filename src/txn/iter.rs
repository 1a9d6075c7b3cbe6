//! Iterators: LMDB's and the overlay's entries merged in key order, and a write
//! transaction's own writes merged over them.

use std::collections::{btree_map, VecDeque};
use std::ops::Bound;

use heed::types::Bytes;

use crate::catalog::newest_visible;
use crate::catalog::{Table, TableView};
use crate::error::{Error, Result};
use crate::keys::{as_slice_bound, bounds_valid, cmp_headed, HeadKey, KeyBounds};
use crate::limits::MAX_KEY_LEN;
use crate::lsn::Lsn;
use crate::store::lmdb_err;
use crate::sync::Ordering;

use super::{borrow_overlay, Snapshot};

/// Borrowed bounds of a key range.
pub(super) type SliceBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// `bounds` as LMDB can position a cursor with (keys of 1 to `MAX_KEY_LEN` bytes), over the
/// same stored keys; `None` if no stored key lies inside.
pub(super) fn lmdb_bounds(bounds: &KeyBounds) -> Option<SliceBounds<'_>> {
    let lower = match &bounds.0 {
        // Every stored key is above the empty key.
        Bound::Included(k) | Bound::Excluded(k) if k.is_empty() => Bound::Unbounded,
        // A stored key is >= (or >) a longer key exactly when it is > its first
        // MAX_KEY_LEN bytes.
        Bound::Included(k) | Bound::Excluded(k) if k.len() > MAX_KEY_LEN => {
            Bound::Excluded(&k[..MAX_KEY_LEN])
        }
        b => as_slice_bound(b),
    };
    let upper = match &bounds.1 {
        Bound::Included(k) | Bound::Excluded(k) if k.is_empty() => return None,
        // ... and <= (or <) a longer key exactly when it is <= its first MAX_KEY_LEN bytes.
        Bound::Included(k) | Bound::Excluded(k) if k.len() > MAX_KEY_LEN => {
            Bound::Included(&k[..MAX_KEY_LEN])
        }
        b => as_slice_bound(b),
    };
    Some((lower, upper))
}

/// LMDB's side of a range walk: entries with their checksums checked.
pub(super) struct LmdbIter<'t> {
    walk: LmdbWalk<'t>,
    table: &'t Table,
    /// `Config::verify_scans`: when false, the checksum is cut off unchecked and the order
    /// of keys is not checked.
    verify: bool,
    /// The key last handed out: the next must lie beyond it in the walk's direction.
    last: Option<&'t [u8]>,
    reverse: bool,
    /// An entry read ahead (and checked), handed out next.
    ahead: Option<(&'t [u8], &'t [u8])>,
}

/// An enum, not a trait object: it is called for every key.
pub(super) enum LmdbWalk<'t> {
    Forward(heed::RoRange<'t, Bytes, Bytes>),
    Reverse(heed::RoRevRange<'t, Bytes, Bytes>),
}

impl<'t> LmdbIter<'t> {
    pub(super) fn new(walk: LmdbWalk<'t>, table: &'t Table, verify: bool) -> Self {
        let reverse = matches!(walk, LmdbWalk::Reverse(_));
        LmdbIter {
            walk,
            table,
            verify,
            last: None,
            reverse,
            ahead: None,
        }
    }

    /// Reads the next entry ahead (as [`LmdbIter::next`] reads it): `next` hands it out.
    pub(super) fn read_ahead(&mut self) -> Result<()> {
        debug_assert!(self.ahead.is_none());
        self.ahead = self.next().transpose()?;
        Ok(())
    }

    /// Notes `key` as the last handed out, which must lie beyond the one before it.
    #[inline]
    fn in_order(&mut self, key: &'t [u8]) -> Result<()> {
        let Some(last) = self.last.replace(key) else {
            return Ok(());
        };
        let beyond = if self.reverse { key < last } else { key > last };
        if beyond {
            Ok(())
        } else {
            Err(super::disordered("range", &self.table.name, last, key))
        }
    }

    /// The next entry as stored: its key, beyond the last one's (unless scans are left to
    /// the scrub), and its value with the checksum, which [`LmdbIter::open`] checks when the
    /// entry is handed out (an entry a newer version shadows never is).
    #[inline]
    pub(super) fn next(&mut self) -> Option<Result<(&'t [u8], &'t [u8])>> {
        if let Some(entry) = self.ahead.take() {
            return Some(Ok(entry));
        }
        let item = match &mut self.walk {
            LmdbWalk::Forward(it) => it.next(),
            LmdbWalk::Reverse(it) => it.next(),
        }?;
        Some(match item {
            Ok((key, stored)) => {
                if self.verify {
                    if let Err(e) = self.in_order(key) {
                        return Some(Err(e));
                    }
                }
                Ok((key, stored))
            }
            Err(e) => Err(lmdb_err("range")(e)),
        })
    }

    /// The value of an entry [`LmdbIter::next`] read, without its checksum, which must hold
    /// (unless scans are left to the scrub; a value too short to hold one fails all the
    /// same).
    #[inline]
    pub(super) fn open(&self, key: &'t [u8], stored: &'t [u8]) -> Result<(&'t [u8], &'t [u8])> {
        let value = if self.verify {
            self.table.seed.open(key, stored)
        } else {
            crate::seal::strip(stored)
        };
        value
            .map(|value| (key, value))
            .ok_or_else(|| super::corrupt(&self.table.name, key))
    }
}

/// Walks a table's overlay in key order, a chunk at a time (the lock is not held between).
/// Each refill starts with a search of the ordered index, so chunks grow with the walk.
pub(super) struct OverlayCursor<'t> {
    pub(super) table: &'t Table,
    pub(super) view: TableView,
    pub(super) visible: Lsn,
    /// What is left to walk (a refill's end shares the last key scanned: no allocation).
    pub(super) bounds: (Bound<HeadKey>, Bound<HeadKey>),
    pub(super) reverse: bool,
    pub(super) buf: VecDeque<Newer<'t>>,
    pub(super) exhausted: bool,
    pub(super) snapshot: &'t Snapshot<'t>,
    /// Keys the next refill scans: small first (a short scan touches few keys of a large
    /// overlay, each a few cache misses), doubling up to [`OVERLAY_CHUNK_MAX`].
    pub(super) chunk: usize,
}

pub(super) const OVERLAY_CHUNK_FIRST: usize = 8;
const OVERLAY_CHUNK_MAX: usize = 256;
/// Chains a refill prefetches at once.
const CHAIN_PREFETCH: usize = 8;

impl<'t> OverlayCursor<'t> {
    /// True if every overlay entry up to `key` (in walk order) was scanned already.
    fn covers(&self, key: &[u8]) -> bool {
        match (self.reverse, &self.bounds) {
            (false, (Bound::Excluded(k), _)) => cmp_headed(key, k.head(), k.bytes()).is_le(),
            (true, (_, Bound::Excluded(k))) => cmp_headed(key, k.head(), k.bytes()).is_ge(),
            _ => false,
        }
    }

    fn refill(&mut self) {
        if !bounds_valid(&self.bounds) {
            self.exhausted = true;
            return;
        }
        let st = self.table.state.read();
        let range = (self.bounds.0.as_ref(), self.bounds.1.as_ref());
        let applied = self.snapshot.reg.applied();
        let mut scanned = 0;
        let mut last: Option<&HeadKey> = None;
        let chunk = self.chunk;
        self.chunk = (chunk * 2).min(OVERLAY_CHUNK_MAX);
        let mut entries = st.overlay.range(range, self.reverse).take(chunk);
        loop {
            // A window's chains are prefetched before any is read: their misses overlap.
            let mut window = [None; CHAIN_PREFETCH];
            for (at, entry) in window.iter_mut().zip(entries.by_ref()) {
                entry.1.prefetch();
                *at = Some(entry);
            }
            if window[0].is_none() {
                break;
            }
            for (key, chain) in window.into_iter().flatten() {
                scanned += 1;
                last = Some(key);
                match newest_visible(chain.versions(), &self.view, self.visible) {
                    Some(ver) if ver.lsn > applied => {
                        // SAFETY: the version's LSN is above the snapshot's applied LSN, and
                        // the key is its entry's.
                        let value = ver
                            .value
                            .as_ref()
                            .map(|v| unsafe { borrow_overlay(self.snapshot, v) });
                        let key_bytes =
                            unsafe { borrow_overlay(self.snapshot, key.shared_bytes()) };
                        // The merge compares it with LMDB's key when their heads tie (the
                        // same key, rewritten): the chunk's misses overlap, not one at a time.
                        crate::bytes::prefetch(key_bytes.as_ptr());
                        self.buf.push_back(Newer {
                            head: key.head(),
                            key: key_bytes,
                            value,
                        });
                    }
                    // LMDB's state at `A` holds it: the LMDB side of the merge yields it.
                    _ => {}
                }
            }
        }
        match last {
            Some(key) if scanned == chunk => {
                let after = Bound::Excluded(key.clone());
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
    pub(super) lmdb: Option<LmdbIter<'t>>,
    /// LMDB's next entry as stored, its checksum checked when it is handed out (`lmdb` is
    /// `Some` while it is).
    pub(super) lmdb_head: Option<(&'t [u8], &'t [u8])>,
    pub(super) overlay: Option<OverlayCursor<'t>>,
    pub(super) overlay_head: Option<Newer<'t>>,
    pub(super) reverse: bool,
    pub(super) failed: bool,
    /// The transaction's start, `txn_timeout` and the counter of timeouts, checked every
    /// `AGE_CHECK_STEPS` items.
    pub(super) age_limit: Option<(
        crate::clock::CoarseInstant,
        std::time::Duration,
        &'t crate::sync::StatCounter,
    )>,
    pub(super) steps: u32,
    pub(super) engine: &'t crate::engine::EngineState,
    /// Deletions in the overlay the walk passed (each an LMDB entry stepped over for
    /// nothing until the applier applies it).
    pub(super) deletions_passed: u32,
    /// The table, end and snapshot that the walk's first entry teaches when it started at
    /// the end, or at what is known of it (see [`crate::ends`] and [`Iter::teach_first`]).
    pub(super) learn: Option<(&'t crate::catalog::Table, crate::ends::End, crate::lsn::Lsn)>,
}

const AGE_CHECK_STEPS: u32 = 1024;

/// Deletions a walk passes before it asks the applier to apply now rather than at its
/// interval: reads from an end of a table that is being popped (a queue) would otherwise
/// step over every deletion of up to `apply_interval`, as many as were committed in it.
const HURRY_AFTER_DELETIONS: u32 = 64;

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
            let lmdb = self.lmdb.as_mut()?;
            let opened = match lmdb.next() {
                Some(Ok((key, stored))) => lmdb.open(key, stored),
                Some(Err(e)) => Err(e),
                None => {
                    self.lmdb = None;
                    return None;
                }
            };
            self.failed = opened.is_err();
            return Some(opened);
        }
        loop {
            if self.lmdb_head.is_none() {
                if let Some(it) = self.lmdb.as_mut() {
                    match it.next() {
                        Some(Ok(entry)) => self.lmdb_head = Some(entry),
                        Some(Err(e)) => {
                            self.failed = true;
                            return Some(Err(e));
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
                Taken::Older(key, stored) => {
                    let lmdb = self.lmdb.as_ref().expect("a head of a walk that goes on");
                    let opened = lmdb.open(key, stored);
                    self.failed = opened.is_err();
                    return Some(opened);
                }
                Taken::Newer(Newer {
                    key,
                    value: Some(value),
                    ..
                }) => return Some(Ok((key, value))),
                Taken::Newer(_) => {
                    // A deletion.
                    self.deletions_passed = self.deletions_passed.saturating_add(1);
                    if self.deletions_passed == HURRY_AFTER_DELETIONS {
                        self.engine.hurry_applier();
                    }
                }
            }
        }
    }
}

impl Iter<'_> {
    /// Teaches `first`, the first entry this walk handed out, to the table's end it started
    /// at. Called by the reads of an end (`first`, `last`), not from `next`: a branch there
    /// slowed every range step measurably.
    pub(super) fn teach_first(&mut self, first: &[u8]) {
        if let Some((table, end, visible)) = self.learn.take() {
            if table.ends.lock().learn(end, visible, first) {
                table.ends_taught.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// An entry of the newer stream of a merge: its key's head (so most comparisons with the
/// older stream's keys do not touch its bytes), key, and value or `None` for a deletion.
#[derive(Clone, Copy)]
pub(super) struct Newer<'t> {
    pub(super) head: u64,
    pub(super) key: &'t [u8],
    pub(super) value: Option<&'t [u8]>,
}

/// What [`merge_step`] took: the older stream's entry, or the newer one's.
pub(super) enum Taken<'t> {
    Older(&'t [u8], &'t [u8]),
    Newer(Newer<'t>),
}

/// Takes the next entry, in walk order, of two sorted streams' heads: `older` (LMDB, or a
/// snapshot) and `newer` (the overlay, or a transaction's own writes), whose entries shadow
/// `older`'s with the same key, which is dropped (`None` values are deletions). `None` when
/// both are empty.
#[inline]
pub(super) fn merge_step<'t>(
    older: &mut Option<(&'t [u8], &'t [u8])>,
    newer: &mut Option<Newer<'t>>,
    reverse: bool,
) -> Option<Taken<'t>> {
    let take_newer = match (*older, *newer) {
        (None, None) => return None,
        (Some(_), None) => false,
        (None, Some(_)) => true,
        (Some((ok, _)), Some(n)) => {
            let ord = cmp_headed(ok, n.head, n.key);
            let ord = if reverse { ord.reverse() } else { ord };
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
        Some(Taken::Newer(newer.take()?))
    } else {
        let (k, v) = older.take()?;
        Some(Taken::Older(k, v))
    }
}

/// An iterator over a write transaction's merged view; see [`WriteTxn::range`](crate::WriteTxn::range).
pub struct WriteIter<'t> {
    pub(super) snap: Iter<'t>,
    pub(super) snap_head: Option<(&'t [u8], &'t [u8])>,
    pub(super) own: Option<OwnWalk<'t>>,
    pub(super) own_head: Option<Newer<'t>>,
    pub(super) reverse: bool,
}

/// A write transaction's own writes to a table within bounds: those in memory merged over
/// those it spilled (which they shadow), in walk order.
pub(super) struct OwnWalk<'t> {
    memory: Option<btree_map::Range<'t, HeadKey, Option<crate::bytes::SharedBytes>>>,
    memory_head: Option<Newer<'t>>,
    spilled: Option<super::buffer::SpilledWalk<'t>>,
    spilled_head: Option<Newer<'t>>,
    reverse: bool,
}

impl<'t> OwnWalk<'t> {
    pub(super) fn new(
        memory: Option<btree_map::Range<'t, HeadKey, Option<crate::bytes::SharedBytes>>>,
        spilled: Option<super::buffer::SpilledWalk<'t>>,
        reverse: bool,
    ) -> Self {
        OwnWalk {
            memory,
            memory_head: None,
            spilled,
            spilled_head: None,
            reverse,
        }
    }
}

impl<'t> Iterator for OwnWalk<'t> {
    type Item = Result<Newer<'t>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.memory_head.is_none() {
            let next = match self.memory.as_mut() {
                Some(r) if self.reverse => r.next_back(),
                Some(r) => r.next(),
                None => None,
            };
            self.memory_head = next.map(|(k, v)| Newer {
                head: k.head(),
                key: k.bytes(),
                value: v.as_deref(),
            });
        }
        if self.spilled_head.is_none() {
            match self.spilled.as_mut().and_then(Iterator::next) {
                Some(Ok((key, value))) => {
                    self.spilled_head = Some(Newer {
                        head: crate::keys::head_of(key),
                        key,
                        value,
                    })
                }
                Some(Err(e)) => {
                    // The walk ends at its first error.
                    self.memory = None;
                    self.memory_head = None;
                    return Some(Err(Error::Io(e)));
                }
                None => {}
            }
        }
        let spilled_first = match (&self.memory_head, &self.spilled_head) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(m), Some(s)) => {
                let ord = (m.head, m.key).cmp(&(s.head, s.key));
                let ord = if self.reverse { ord.reverse() } else { ord };
                if ord == std::cmp::Ordering::Equal {
                    // Shadowed by the newer write in memory.
                    self.spilled_head = None;
                }
                ord == std::cmp::Ordering::Greater
            }
        };
        let head = if spilled_first {
            self.spilled_head.take()
        } else {
            self.memory_head.take()
        };
        head.map(Ok)
    }
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
                match self.own.as_mut().and_then(Iterator::next) {
                    Some(Ok(newer)) => self.own_head = Some(newer),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
            match merge_step(&mut self.snap_head, &mut self.own_head, self.reverse)? {
                Taken::Older(key, value)
                | Taken::Newer(Newer {
                    key,
                    value: Some(value),
                    ..
                }) => return Some(Ok((key, value))),
                Taken::Newer(_) => continue, // a deletion
            }
        }
    }
}
