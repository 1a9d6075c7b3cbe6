//! Live snapshots: which LMDB states readers and writers hold, so the overlay and the
//! conflict index keep what they need; and the gate that empties the process of LMDB
//! transactions while the map is resized.
//!
//! Invariants:
//! - A snapshot registers its applied LSN `A` only if nothing above `A` was evicted from
//!   the overlay yet (`evicted_through <= A`, checked under the same lock that raises
//!   `evicted_through`), so the eviction horizon never passes a registered snapshot's `A`.
//! - Its visible LSN `V` is read under that lock, after registering: a conflict horizon
//!   computed under the lock is <= the `V` of every snapshot registered later.
//! - A committing snapshot (`stop_reading`: it reads no more) holds back only the conflict
//!   horizon, at its `V`; it pins neither eviction nor a resize.
//! - While `paused`, no LMDB transaction begins; `resize` runs only with `open == 0`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::lsn::Lsn;
use crate::sync::{this_thread, AtomicU64, Condvar, Mutex, Ordering};

#[derive(Debug, Default)]
struct State {
    /// Registered snapshots by (applied LSN, id), with their start time and thread.
    live: BTreeMap<(Lsn, u64), (Instant, u64)>,
    /// Snapshots of transactions that read no more (committing) by (visible LSN, id): they
    /// hold back the conflict horizon, not eviction, and hold no LMDB transaction.
    committing: BTreeMap<(Lsn, u64), Instant>,
    next_id: u64,
    /// LMDB transactions open (registered or about to be).
    open: usize,
    paused: bool,
    /// A resize waits for the transactions begun before it to end (without blocking new
    /// ones): every release wakes it.
    draining: bool,
    evicted_through: Lsn,
    /// Transactions that had to wait for a pause to end (for the tests of fairness).
    held_off: u64,
}

/// A registered snapshot; hand it back to [`Snapshots::release`].
#[derive(Debug)]
pub(crate) struct Registration {
    key: (Lsn, u64),
    pub visible: Lsn,
    pub started: Instant,
    /// Moved to `committing` by [`Snapshots::stop_reading`].
    reads_done: bool,
}

impl Registration {
    pub fn applied(&self) -> Lsn {
        self.key.0
    }
}

#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    state: Mutex<State>,
    changed: Condvar,
}

impl Snapshots {
    /// Waits while a resize is under way, then counts one more open LMDB transaction.
    pub fn enter(&self) {
        let mut st = self.state.lock();
        if st.paused {
            st.held_off += 1;
        }
        while st.paused {
            st = self.changed.wait(st);
        }
        st.open += 1;
    }

    /// Undoes `enter` for a transaction that was not registered.
    pub fn leave(&self) {
        let mut st = self.state.lock();
        st.open -= 1;
        if st.paused {
            self.changed.notify_all();
        }
    }

    /// Registers a snapshot whose LMDB state is at applied LSN `applied`; `None` if versions
    /// above it were evicted meanwhile (begin again with a newer LMDB transaction).
    pub fn register(&self, applied: Lsn, visible: &AtomicU64) -> Option<Registration> {
        let mut st = self.state.lock();
        if st.evicted_through > applied {
            return None;
        }
        let id = st.next_id;
        st.next_id += 1;
        let started = Instant::now();
        st.live.insert((applied, id), (started, this_thread()));
        // The overlay holds every version up to the visible LSN, so a snapshot never sees
        // less than its LMDB state holds.
        Some(Registration {
            key: (applied, id),
            visible: visible.load(Ordering::Acquire).max(applied),
            started,
            reads_done: false,
        })
    }

    /// Begins a snapshot: waits out a resize, opens an LMDB read transaction with `open`
    /// (which returns it with its applied LSN), and registers it; when versions above that
    /// LMDB state were evicted meanwhile, drops it and opens a newer one.
    pub fn begin<T>(
        &self,
        visible: &AtomicU64,
        mut open: impl FnMut() -> crate::Result<(T, Lsn)>,
    ) -> crate::Result<(T, Registration)> {
        loop {
            self.enter();
            let (txn, applied) = match open() {
                Ok(opened) => opened,
                Err(e) => {
                    self.leave();
                    return Err(e);
                }
            };
            match self.register(applied, visible) {
                Some(reg) => return Ok((txn, reg)),
                None => {
                    drop(txn);
                    self.leave();
                }
            }
        }
    }

    /// Ends a registered snapshot (its LMDB transaction is already gone).
    pub fn release(&self, reg: &Registration) {
        let mut st = self.state.lock();
        if reg.reads_done {
            st.committing.remove(&(reg.visible, reg.key.1));
            return;
        }
        st.live.remove(&reg.key);
        st.open -= 1;
        if st.paused || st.draining {
            self.changed.notify_all();
        }
    }

    /// A transaction that will read no more (it is committing; its LMDB transaction is
    /// already gone) keeps holding back the conflict horizon at its visible LSN, which its
    /// commit is checked against, but no longer eviction or a map resize: a commit waiting
    /// for room in the overlay must not hold the versions whose eviction makes that room.
    pub fn stop_reading(&self, reg: &mut Registration) {
        if reg.reads_done {
            return;
        }
        let mut st = self.state.lock();
        st.live.remove(&reg.key);
        st.committing.insert((reg.visible, reg.key.1), reg.started);
        st.open -= 1;
        if st.paused || st.draining {
            self.changed.notify_all();
        }
        reg.reads_done = true;
    }

    /// The eviction horizon: at most `applied` and every live snapshot's applied LSN.
    /// Versions at or below it may be evicted from the overlay.
    pub fn eviction_horizon(&self, applied: Lsn) -> Lsn {
        let mut st = self.state.lock();
        let oldest = st.live.keys().next().map_or(applied, |k| k.0);
        let horizon = applied.min(oldest).max(st.evicted_through);
        st.evicted_through = horizon;
        horizon
    }

    /// The conflict horizon: commits at or below it can conflict with no live or later
    /// transaction.
    pub fn conflict_horizon(&self, visible: &AtomicU64) -> Lsn {
        let st = self.state.lock();
        let now = visible.load(Ordering::Acquire);
        let reading = st.live.keys().next().map_or(now, |k| k.0);
        let committing = st.committing.keys().next().map_or(now, |k| k.0);
        now.min(reading).min(committing)
    }

    /// Waits up to `wait` for every registered transaction begun before `before` to end,
    /// without holding new ones off. A resize calls it before [`Snapshots::pause`], so a
    /// long-lived reader postpones the resize without stalling every new reader: the pause
    /// then waits only for transactions younger than `before`.
    pub fn wait_for_earlier(&self, before: Instant, wait: Duration) -> bool {
        let deadline = crate::limits::deadline(Instant::now(), wait);
        let mut st = self.state.lock();
        loop {
            if st.live.values().all(|(started, _)| *started >= before) {
                st.draining = false;
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                st.draining = false;
                return false;
            }
            st.draining = true;
            st = self.changed.wait_timeout(st, deadline - now);
        }
    }

    /// Stops new LMDB transactions and waits up to `wait` for the open ones to end. Returns
    /// false (and resumes) if some stayed open.
    pub fn pause(&self, wait: Duration) -> bool {
        let deadline = crate::limits::deadline(Instant::now(), wait);
        let mut st = self.state.lock();
        st.paused = true;
        while st.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                st.paused = false;
                self.changed.notify_all();
                return false;
            }
            st = self.changed.wait_timeout(st, deadline - now);
        }
        true
    }

    /// Lets LMDB transactions begin again.
    pub fn resume(&self) {
        let mut st = self.state.lock();
        st.paused = false;
        self.changed.notify_all();
    }

    /// True when the calling thread has a registered (reading) snapshot open.
    pub fn held_by_this_thread(&self) -> bool {
        let me = this_thread();
        self.state
            .lock()
            .live
            .values()
            .any(|(_, thread)| *thread == me)
    }

    /// Transactions that began while a resize had them paused.
    #[cfg(feature = "internals")]
    pub fn held_off(&self) -> u64 {
        self.state.lock().held_off
    }

    /// (open snapshots, age of the oldest, snapshots older than `older_than`).
    pub fn census(&self, older_than: Duration) -> (usize, Duration, usize) {
        let st = self.state.lock();
        let now = Instant::now();
        let ages = (st.live.values().map(|(started, _)| started))
            .chain(st.committing.values())
            .map(|t| now.saturating_duration_since(*t));
        let (mut oldest, mut old) = (Duration::ZERO, 0);
        for age in ages {
            oldest = oldest.max(age);
            old += usize::from(age >= older_than);
        }
        (st.live.len() + st.committing.len(), oldest, old)
    }
}
