//! The bounded commit queue: lock-free push and pop, bounded in count and bytes, with
//! backpressure, a wake-up for the idle flusher and an orderly close.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sync::{
    bug, fence, AtomicBool, AtomicUsize, BoundedQueue, Bug, Condvar, Mutex, Ordering, StatCounter,
};

/// The queue between committers and the flusher.
#[derive(Debug)]
pub(crate) struct CommitQueue<T> {
    items: BoundedQueue<(T, usize)>,
    bytes: AtomicUsize,
    max_bytes: usize,
    /// Committers between their closed-check and the end of their push. The flusher may
    /// stop only when the queue is closed, this is zero and the queue is empty.
    pushing: AtomicUsize,
    closed: AtomicBool,
    flusher_idle: AtomicBool,
    wake_lock: Mutex<()>,
    wake: Condvar,
    space_lock: Mutex<()>,
    space: Condvar,
    space_waiters: AtomicUsize,
    /// Pushes over `max_bytes` waiting for the empty queue they need. While one waits, other
    /// pushes that carry bytes wait too, so a stream of small commits cannot keep the queue
    /// from ever emptying (bytes-free requests, syncs, still pass: a sync the applier waits
    /// on must not queue behind a record that waits on the applier).
    oversized_waiting: AtomicUsize,
    /// Pushes that found the queue full and waited (a statistic, not synchronisation).
    full_waits: StatCounter,
}

impl<T> CommitQueue<T> {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        CommitQueue {
            items: BoundedQueue::new(capacity),
            bytes: AtomicUsize::new(0),
            max_bytes,
            pushing: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            flusher_idle: AtomicBool::new(false),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
            space_lock: Mutex::new(()),
            space: Condvar::new(),
            space_waiters: AtomicUsize::new(0),
            oversized_waiting: AtomicUsize::new(0),
            full_waits: StatCounter::new(0),
        }
    }

    /// Enqueues `item` of `bytes` bytes. When the queue is full, waits up to `wait` for space
    /// (`None`: does not wait, and counts no wait), then gives the item back with
    /// `Error::Backpressure`. A closed queue gives it back with `Error::Closed`.
    pub(crate) fn push(
        &self,
        item: T,
        bytes: usize,
        wait: Option<Duration>,
    ) -> Result<(), (Error, T)> {
        self.pushing.fetch_add(1, Ordering::SeqCst);
        // Lowers `pushing` however the push ends, a panic included: a count left raised
        // would keep the flusher from ever stopping (`close()` would hang).
        struct Pushed<'a>(&'a AtomicUsize);
        impl Drop for Pushed<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let pushed = Pushed(&self.pushing);
        // Pairs with the fence in `is_drained`: either the flusher sees this committer as
        // pushing, or this committer sees the queue closed. (SeqCst accesses alone order
        // this too; the fences are what loom checks, as it treats them as AcqRel.)
        fence(Ordering::SeqCst);
        fail::fail_point!("commit-queue-push");
        let result = self.push_inner(item, bytes, wait);
        drop(pushed);
        if result.is_ok() {
            self.wake_flusher();
        }
        result
    }

    fn push_inner(&self, item: T, bytes: usize, wait: Option<Duration>) -> Result<(), (Error, T)> {
        /// Counts an oversized push as waiting until it ends, however it ends; then wakes
        /// the pushes it held back.
        struct Oversized<'a, T>(Option<&'a CommitQueue<T>>);
        impl<T> Drop for Oversized<'_, T> {
            fn drop(&mut self) {
                if let Some(q) = self.0 {
                    q.oversized_waiting.fetch_sub(1, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    q.wake_space_waiters();
                }
            }
        }
        let mut oversized = Oversized(None);
        let mut item = item;
        let mut deadline = None;
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err((Error::Closed, item));
            }
            match self.try_push(item, bytes) {
                Ok(()) => return Ok(()),
                Err(back) => item = back,
            }
            let full = || Error::Backpressure {
                queued_commits: self.items.len(),
                queued_bytes: self.bytes.load(Ordering::Relaxed),
            };
            let Some(wait) = wait else {
                return Err((full(), item));
            };
            let now = Instant::now();
            if deadline.is_none() {
                self.full_waits.fetch_add(1, Ordering::Relaxed);
            }
            let deadline = *deadline.get_or_insert_with(|| crate::limits::deadline(now, wait));
            if now >= deadline {
                return Err((full(), item));
            }
            if bytes > self.max_bytes && oversized.0.is_none() {
                self.oversized_waiting.fetch_add(1, Ordering::SeqCst);
                oversized.0 = Some(self);
            }
            let guard = self.space_lock.lock();
            self.space_waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.is_full_for(bytes) && !self.closed.load(Ordering::SeqCst) {
                drop(self.space.wait_timeout(guard, deadline - now));
            } else {
                drop(guard);
            }
            self.space_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// An item over `max_bytes` fits an empty queue (as `try_push` takes it).
    fn is_full_for(&self, bytes: usize) -> bool {
        let queued = self.bytes.load(Ordering::SeqCst);
        self.items.len() >= self.items.capacity()
            || (queued > 0 && queued + bytes > self.max_bytes)
            || self.held_back(bytes)
    }

    /// True when a push of `bytes` waits for an oversized one waiting before it.
    fn held_back(&self, bytes: usize) -> bool {
        bytes > 0 && bytes <= self.max_bytes && self.oversized_waiting.load(Ordering::SeqCst) > 0
    }

    fn try_push(&self, item: T, bytes: usize) -> Result<(), T> {
        if bug(Bug::DropWhenFull) && self.is_full_for(bytes) {
            drop(item);
            return Ok(());
        }
        if self.held_back(bytes) {
            return Err(item);
        }
        let before = self.bytes.fetch_add(bytes, Ordering::SeqCst);
        if before + bytes > self.max_bytes && before > 0 {
            self.bytes.fetch_sub(bytes, Ordering::SeqCst);
            return Err(item);
        }
        match self.items.push((item, bytes)) {
            Ok(()) => Ok(()),
            Err((item, _)) => {
                self.bytes.fetch_sub(bytes, Ordering::SeqCst);
                Err(item)
            }
        }
    }

    /// Takes the oldest request, releasing its bytes and waking one committer waiting for
    /// space.
    pub(crate) fn pop(&self) -> Option<T> {
        let (item, bytes) = self.items.pop()?;
        self.bytes.fetch_sub(bytes, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.wake_space_waiters();
        Some(item)
    }

    /// Wakes committers waiting for space (after a change that may make some).
    fn wake_space_waiters(&self) {
        if self.space_waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.space_lock.lock();
            self.space.notify_all();
        }
    }

    /// True when no request is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Commits and bytes waiting.
    pub(crate) fn depth(&self) -> (usize, usize) {
        (self.items.len(), self.bytes.load(Ordering::Relaxed))
    }

    /// Pushes that found the queue full and waited.
    pub(crate) fn full_waits(&self) -> u64 {
        self.full_waits.load(Ordering::Relaxed)
    }

    fn wake_flusher(&self) {
        fence(Ordering::SeqCst);
        if self.flusher_idle.load(Ordering::SeqCst) {
            let _guard = self.wake_lock.lock();
            self.wake.notify_one();
        }
    }

    /// The flusher waits here for a request, for `timeout` at most (forever when `None`).
    /// Returns at once when the queue holds requests or is closed.
    pub(crate) fn wait_for_work(&self, timeout: Option<Duration>) {
        let empty_before_idle = bug(Bug::LostWakeup) && self.items.is_empty();
        let guard = self.wake_lock.lock();
        self.flusher_idle.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let empty = empty_before_idle || self.items.is_empty();
        let guard = if empty && !self.closed.load(Ordering::SeqCst) {
            match timeout {
                Some(t) => self.wake.wait_timeout(guard, t),
                None => self.wake.wait(guard),
            }
        } else {
            guard
        };
        self.flusher_idle.store(false, Ordering::SeqCst);
        drop(guard);
    }

    /// Refuses every later push and wakes the flusher and every committer waiting for space.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        {
            let _guard = self.wake_lock.lock();
            self.wake.notify_all();
        }
        let _guard = self.space_lock.lock();
        self.space.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// True once the queue is closed and no request is queued or being pushed: nothing more
    /// can arrive.
    pub(crate) fn is_drained(&self) -> bool {
        if !self.closed.load(Ordering::SeqCst) {
            return false;
        }
        fence(Ordering::SeqCst);
        (bug(Bug::StopWhilePushing) || self.pushing.load(Ordering::SeqCst) == 0)
            && self.items.is_empty()
    }
}
