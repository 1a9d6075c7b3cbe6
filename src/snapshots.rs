//! Live snapshots: which LMDB states readers and writers hold, so the overlay and the
//! conflict index keep what they need; and the gate that empties the process of LMDB
//! transactions while the map is resized.
//!
//! Readers take no lock and touch no shared counter: as LMDB's own reader table, each
//! snapshot claims a slot (its own cache line; a thread starts looking at the slot its
//! number picks, so it usually finds the one it used last) and publishes its LSNs there.
//! Those who need a horizon scan the slots.
//!
//! Each handshake below is a store, a `SeqCst` fence, then a load, on both sides (Dekker's
//! pattern): of two fences one comes first, and the side after it sees the other's store.
//! Invariants:
//! - A snapshot pins its applied LSN `A` (eviction) only if nothing above `A` was evicted
//!   from the overlay yet: it stores its pin, then reads `evicted_through`; the evictor
//!   stores `evicted_through`, then scans the pins again, so one of them sees the other and
//!   the eviction horizon never passes a pinned `A`.
//! - Its visible LSN `V` is read after its conflict pin is stored and fenced; the conflict
//!   horizon reads the visible LSN, fences, then scans, so a horizon that misses the pin is
//!   <= `V`.
//! - A committing snapshot (`stop_reading`: it reads no more) pins only the conflict
//!   horizon, at its `V`; it pins neither eviction nor a resize.
//! - While `paused`, no LMDB transaction begins: a snapshot marks its slot open, then reads
//!   `paused`; a resize sets `paused`, then scans for open slots. A slot that closes reads
//!   `paused` and `draining` after it, and wakes the waiter under `gate`, so no wake-up is
//!   lost.
//! - Closing is a pause that never ends: `closed` is stored before `paused`, so an opener
//!   that sees the pause sees it is for good, and gives up with `Error::Closed`.

use std::time::{Duration, Instant};

use crate::clock::CoarseInstant;

use crate::lsn::Lsn;
use crate::sync::{
    bug, fence, this_thread, AtomicBool, AtomicPtr, AtomicU64, Bug, Condvar, Mutex, MutexGuard,
    Ordering, StatCounter,
};

/// A pin that holds nothing back.
const UNPINNED: Lsn = Lsn::MAX;
/// Slots per chunk; the first chunk is allocated with the registry, more as needed (loom
/// models, with few threads, get small chunks: they grow, and every scan stays short).
#[cfg(not(walmdb_loom))]
const CHUNK_SLOTS: usize = 32;
#[cfg(walmdb_loom)]
const CHUNK_SLOTS: usize = 2;

/// One snapshot's published state.
#[derive(Debug)]
#[repr(align(128))] // its own cache line (and the adjacent-line prefetch's pair)
struct Slot {
    /// Owned by a snapshot (claimed by compare-and-swap).
    claimed: AtomicBool,
    /// Holds, or is about to begin, an LMDB transaction: a resize waits for it.
    open: AtomicBool,
    /// The applied LSN while reading (eviction keeps versions above it).
    evict_pin: AtomicU64,
    /// The applied LSN while reading, the visible LSN while committing (conflicts).
    conflict_pin: AtomicU64,
    /// When the snapshot began ([`CoarseInstant::as_nanos`]).
    started: AtomicU64,
    /// The thread that began it.
    thread: AtomicU64,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            claimed: AtomicBool::new(false),
            open: AtomicBool::new(false),
            evict_pin: AtomicU64::new(UNPINNED),
            conflict_pin: AtomicU64::new(UNPINNED),
            started: AtomicU64::new(0),
            thread: AtomicU64::new(0),
        }
    }
}

/// A run of slots, and the next one once this one filled up (never freed before the
/// registry drops).
#[derive(Debug)]
struct Chunk {
    slots: Box<[Slot]>,
    next: AtomicPtr<Chunk>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            slots: (0..CHUNK_SLOTS).map(|_| Slot::new()).collect(),
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

/// A registered snapshot; hand it back to [`Snapshots::release`].
#[derive(Debug)]
pub(crate) struct Registration {
    slot: usize,
    applied: Lsn,
    pub visible: Lsn,
    pub started: CoarseInstant,
    /// Pins only conflicts, after [`Snapshots::stop_reading`].
    reads_done: bool,
}

/// The slot of a registration handed over to another owner: releasing it does nothing.
const HANDED_OVER: usize = usize::MAX;

impl Registration {
    pub fn applied(&self) -> Lsn {
        self.applied
    }

    /// Moves the registration to a new owner (a committing snapshot's conflict pin, which
    /// must outlive the snapshot); this one no longer holds its slot.
    pub fn hand_over(&mut self) -> Registration {
        let moved = Registration {
            slot: self.slot,
            applied: self.applied,
            visible: self.visible,
            started: self.started,
            reads_done: self.reads_done,
        };
        self.slot = HANDED_OVER;
        moved
    }
}

#[derive(Debug)]
pub(crate) struct Snapshots {
    first: Chunk,
    paused: AtomicBool,
    /// The engine is closing: no LMDB transaction begins again (`paused` stays set).
    closed: AtomicBool,
    /// A resize waits for the transactions begun before it to end (without blocking new
    /// ones): every slot that closes wakes it.
    draining: AtomicBool,
    /// Nothing above it has been evicted from the overlay.
    evicted_through: AtomicU64,
    /// Transactions that had to wait for a pause to end (for the tests of fairness).
    held_off: StatCounter,
    /// Serializes the evictors' horizon updates (readers never take it).
    evicting: Mutex<()>,
    /// Waiters for a pause to end, for slots to close: taken only by them and by a slot
    /// closing while one may wait.
    gate: Mutex<()>,
    changed: Condvar,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            first: Chunk::new(),
            paused: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            evicted_through: AtomicU64::new(0),
            held_off: StatCounter::new(0),
            evicting: Mutex::new(()),
            gate: Mutex::new(()),
            changed: Condvar::new(),
        }
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        let mut next = self.first.next.load(Ordering::Acquire);
        while !next.is_null() {
            // SAFETY: chunks are leaked boxes, owned by the registry and freed only here.
            let chunk = unsafe { Box::from_raw(next) };
            next = chunk.next.load(Ordering::Acquire);
        }
    }
}

impl Snapshots {
    /// Every slot in order, with its index.
    fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> {
        let mut chunk = Some(&self.first);
        std::iter::from_fn(move || {
            let this = chunk?;
            let next = this.next.load(Ordering::Acquire);
            // SAFETY: a chunk, once linked, lives as long as the registry.
            chunk = unsafe { next.as_ref() };
            Some(this.slots.iter())
        })
        .flatten()
        .enumerate()
    }

    fn slot(&self, index: usize) -> &Slot {
        let mut chunk = &self.first;
        for _ in 0..index / CHUNK_SLOTS {
            let next = chunk.next.load(Ordering::Acquire);
            // SAFETY: a chunk, once linked, lives as long as the registry.
            chunk = unsafe { next.as_ref() }.expect("a registration's slot exists");
        }
        &chunk.slots[index % CHUNK_SLOTS]
    }

    /// Claims a free slot, starting at the one the calling thread's number picks; links a
    /// new chunk when every slot is taken.
    fn claim(&self) -> usize {
        let home = (this_thread() as usize) % CHUNK_SLOTS;
        loop {
            let mut last = &self.first;
            let mut base = 0;
            loop {
                let n = last.slots.len();
                for i in (0..n).map(|i| (home + i) % n) {
                    let free = last.slots[i]
                        .claimed
                        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok();
                    if free {
                        return base + i;
                    }
                }
                base += n;
                let next = last.next.load(Ordering::Acquire);
                // SAFETY: a chunk, once linked, lives as long as the registry.
                match unsafe { next.as_ref() } {
                    Some(chunk) => last = chunk,
                    None => break,
                }
            }
            let fresh = Box::into_raw(Box::new(Chunk::new()));
            let linked = last.next.compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if linked.is_err() {
                // SAFETY: not linked, so still only ours.
                drop(unsafe { Box::from_raw(fresh) });
            }
        }
    }

    /// Marks `slot` closed and wakes a resize that may wait for it.
    fn close(&self, slot: &Slot) {
        slot.open.store(false, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.paused.load(Ordering::Acquire) || self.draining.load(Ordering::Acquire) {
            let _gate = self.gate.lock();
            self.changed.notify_all();
        }
    }

    /// Opens `slot` for an LMDB transaction once no resize holds transactions off;
    /// `Error::Closed` (the slot closed) once the engine closes.
    fn open(&self, slot: &Slot) -> crate::Result<()> {
        loop {
            let checked_early =
                bug(Bug::PauseCheckedBeforeOpening) && !self.paused.load(Ordering::Acquire);
            slot.open.store(true, Ordering::Release);
            fence(Ordering::SeqCst);
            if checked_early || !self.paused.load(Ordering::Acquire) {
                return Ok(());
            }
            self.close(slot);
            if self.closed.load(Ordering::Acquire) {
                return Err(crate::Error::Closed);
            }
            self.held_off.fetch_add(1, Ordering::Relaxed);
            let mut gate = self.gate.lock();
            while self.paused.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire) {
                gate = self.changed.wait(gate);
            }
        }
    }

    /// Pins `slot` at applied LSN `applied` and returns the visible LSN it sees; `None`
    /// (unpinned) if versions above `applied` were evicted meanwhile.
    fn pin(&self, slot: &Slot, applied: Lsn, visible: &AtomicU64) -> Option<Lsn> {
        slot.evict_pin.store(applied, Ordering::Release);
        slot.conflict_pin.store(applied, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.evicted_through.load(Ordering::Acquire) <= applied {
            return Some(visible.load(Ordering::Acquire));
        }
        slot.evict_pin.store(UNPINNED, Ordering::Release);
        slot.conflict_pin.store(UNPINNED, Ordering::Release);
        None
    }

    /// Begins a snapshot: waits out a resize, opens an LMDB read transaction with `open`
    /// (which returns it with its applied LSN), and registers it; when versions above that
    /// LMDB state were evicted meanwhile, drops it and opens a newer one.
    pub fn begin<T>(
        &self,
        visible: &AtomicU64,
        mut open: impl FnMut() -> crate::Result<(T, Lsn)>,
    ) -> crate::Result<(T, Registration)> {
        let index = self.claim();
        let slot = self.slot(index);
        let started = CoarseInstant::now();
        slot.started.store(started.as_nanos(), Ordering::Relaxed);
        slot.thread.store(this_thread(), Ordering::Relaxed);
        loop {
            if let Err(closed) = self.open(slot) {
                slot.claimed.store(false, Ordering::Release);
                return Err(closed);
            }
            let (txn, applied) = match open() {
                Ok(opened) => opened,
                Err(e) => {
                    self.close(slot);
                    slot.claimed.store(false, Ordering::Release);
                    return Err(e);
                }
            };
            if let Some(now_visible) = self.pin(slot, applied, visible) {
                // The overlay holds every version up to the visible LSN, so a snapshot
                // never sees less than its LMDB state holds.
                let reg = Registration {
                    slot: index,
                    applied,
                    visible: now_visible.max(applied),
                    started,
                    reads_done: false,
                };
                return Ok((txn, reg));
            }
            drop(txn);
            self.close(slot);
        }
    }

    /// Ends a registered snapshot (its LMDB transaction is already gone).
    pub fn release(&self, reg: &Registration) {
        if reg.slot == HANDED_OVER {
            return;
        }
        let slot = self.slot(reg.slot);
        slot.evict_pin.store(UNPINNED, Ordering::Release);
        slot.conflict_pin.store(UNPINNED, Ordering::Release);
        if !reg.reads_done {
            self.close(slot);
        }
        slot.claimed.store(false, Ordering::Release);
    }

    /// A transaction that will read no more (it is committing; its LMDB transaction is
    /// already gone) keeps holding back the conflict horizon at its visible LSN, which its
    /// commit is checked against, but no longer eviction or a map resize: a commit waiting
    /// for room in the overlay must not hold the versions whose eviction makes that room.
    pub fn stop_reading(&self, reg: &mut Registration) {
        if reg.reads_done {
            return;
        }
        let slot = self.slot(reg.slot);
        slot.conflict_pin.store(reg.visible, Ordering::Release);
        slot.evict_pin.store(UNPINNED, Ordering::Release);
        self.close(slot);
        reg.reads_done = true;
    }

    /// A snapshot that reads only LMDB (a scrub), never the overlay or for a commit: it
    /// holds back neither eviction nor the conflict horizon, only a map resize (its slot
    /// stays open). A long throttled scrub must not keep the versions whose eviction makes
    /// room for commits.
    pub fn read_lmdb_only(&self, reg: &Registration) {
        let slot = self.slot(reg.slot);
        slot.evict_pin.store(UNPINNED, Ordering::Release);
        slot.conflict_pin.store(UNPINNED, Ordering::Release);
    }

    /// The lowest pin of `which` over every slot (`UNPINNED` when none).
    fn lowest(&self, which: impl Fn(&Slot) -> &AtomicU64) -> Lsn {
        self.slots()
            .map(|(_, slot)| which(slot).load(Ordering::Acquire))
            .min()
            .unwrap_or(UNPINNED)
    }

    /// The eviction horizon: at most `applied` and every live snapshot's applied LSN.
    /// Versions at or below it may be evicted from the overlay.
    pub fn eviction_horizon(&self, applied: Lsn) -> Lsn {
        let _one_evictor = self.evicting.lock();
        let before = self.evicted_through.load(Ordering::Acquire);
        let wanted = applied.min(self.lowest(|s| &s.evict_pin)).max(before);
        self.evicted_through.store(wanted, Ordering::Release);
        fence(Ordering::SeqCst);
        // A snapshot that pinned below `wanted` before it could see the store above.
        let horizon = wanted.min(self.lowest(|s| &s.evict_pin)).max(before);
        if horizon < wanted {
            self.evicted_through.store(horizon, Ordering::Release);
        }
        horizon
    }

    /// The conflict horizon: commits at or below it can conflict with no live or later
    /// transaction.
    pub fn conflict_horizon(&self, visible: &AtomicU64) -> Lsn {
        let now = visible.load(Ordering::Acquire);
        fence(Ordering::SeqCst);
        now.min(self.lowest(|s| &s.conflict_pin))
    }

    /// Slots of reading snapshots (they hold, or are about to begin, an LMDB transaction).
    fn reading(&self) -> impl Iterator<Item = &Slot> {
        self.slots()
            .map(|(_, slot)| slot)
            .filter(|slot| slot.open.load(Ordering::Acquire))
    }

    /// Waits up to `wait` for every registered transaction begun before `before` (and any of
    /// `before`'s clock tick) to end,
    /// without holding new ones off. A resize calls it before [`Snapshots::pause`], so a
    /// long-lived reader postpones the resize without stalling every new reader: the pause
    /// then waits only for transactions younger than `before`.
    pub fn wait_for_earlier(&self, before: CoarseInstant, wait: Duration) -> bool {
        let deadline = crate::limits::deadline(Instant::now(), wait);
        let before = before.as_nanos();
        let mut gate = self.gate.lock();
        self.draining.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        let drained = loop {
            if self
                .reading()
                // The coarse clock cannot order two events within one tick: a snapshot of
                // `before`'s tick may be older, and is waited for.
                .all(|slot| slot.started.load(Ordering::Relaxed) > before)
            {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            gate = self.changed.wait_timeout(gate, deadline - now);
        };
        self.draining.store(false, Ordering::Release);
        drained
    }

    /// Stops new LMDB transactions and waits up to `wait` for the open ones to end. Returns
    /// false (and resumes) if some stayed open.
    pub fn pause(&self, wait: Duration) -> bool {
        let deadline = crate::limits::deadline(Instant::now(), wait);
        let gate = self.gate.lock();
        self.paused.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        let (_gate, none_open) = self.wait_none_open(gate, deadline);
        if !none_open {
            self.paused
                .store(self.closed.load(Ordering::Acquire), Ordering::Release);
            self.changed.notify_all();
        }
        none_open
    }

    /// True when no slot holds (or is about to begin) an LMDB transaction.
    fn none_open(&self) -> bool {
        self.slots()
            .all(|(_, slot)| !slot.open.load(Ordering::Acquire))
    }

    /// Waits under `gate` until no slot is open (true) or `deadline` passes (false). A slot
    /// that closes wakes it (`close`), so the caller must have stored `paused` (or
    /// `draining`) and fenced first.
    fn wait_none_open<'a>(
        &self,
        mut gate: MutexGuard<'a, ()>,
        deadline: Instant,
    ) -> (MutexGuard<'a, ()>, bool) {
        loop {
            if self.none_open() {
                return (gate, true);
            }
            let now = Instant::now();
            if now >= deadline {
                return (gate, false);
            }
            gate = self.changed.wait_timeout(gate, deadline - now);
        }
    }

    /// Lets LMDB transactions begin again (unless the engine closed meanwhile).
    pub fn resume(&self) {
        let _gate = self.gate.lock();
        self.paused
            .store(self.closed.load(Ordering::Acquire), Ordering::Release);
        self.changed.notify_all();
    }

    /// Closes for good: every LMDB transaction that would begin gets `Error::Closed`, and
    /// those waiting out a resize are woken to get it. Waits up to `wait` for the open ones
    /// to end; true when none is open (none can open again: LMDB may be closed).
    pub fn close_for_good(&self, wait: Duration) -> bool {
        let deadline = crate::limits::deadline(Instant::now(), wait);
        let gate = self.gate.lock();
        let scanned_early = bug(Bug::CloseScannedBeforeClosing) && self.none_open();
        self.closed.store(true, Ordering::Release);
        self.paused.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        self.changed.notify_all();
        scanned_early || self.wait_none_open(gate, deadline).1
    }

    /// True when the calling thread has a registered (reading) snapshot open.
    pub fn held_by_this_thread(&self) -> bool {
        let me = this_thread();
        self.reading()
            .any(|slot| slot.thread.load(Ordering::Relaxed) == me)
    }

    /// Transactions that began while a resize had them paused.
    #[cfg(feature = "internals")]
    pub fn held_off(&self) -> u64 {
        self.held_off.load(Ordering::Relaxed)
    }

    /// (open snapshots, age of the oldest, snapshots older than `older_than`).
    pub fn census(&self, older_than: Duration) -> (usize, Duration, usize) {
        let now = CoarseInstant::now().as_nanos();
        let (mut count, mut oldest, mut old) = (0, Duration::ZERO, 0);
        for (_, slot) in self.slots() {
            let registered = slot.conflict_pin.load(Ordering::Acquire) != UNPINNED
                || slot.open.load(Ordering::Acquire);
            if !registered {
                continue;
            }
            let age =
                Duration::from_nanos(now.saturating_sub(slot.started.load(Ordering::Relaxed)));
            count += 1;
            oldest = oldest.max(age);
            old += usize::from(age >= older_than);
        }
        (count, oldest, old)
    }
}
