//! The one import point for concurrency primitives: atomics, `Arc`, `Mutex`, `RwLock`, `Condvar`,
//! threads and the bounded queue. Under `--cfg walmdb_loom` every item is loom's (and the
//! queue a bounded loom `Mutex<VecDeque>`), so loom models run over the real pipeline code.
//!
//! The lock API is std-shaped and never poisons: `lock()` returns the guard, `wait` takes
//! and returns it.

use std::time::Duration;

#[cfg(not(walmdb_loom))]
mod imp {
    pub use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    pub use std::sync::Arc;
    pub use std::thread::{yield_now, Builder as ThreadBuilder, JoinHandle};

    pub type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    /// A mutex that does not poison.
    #[derive(Debug, Default)]
    pub struct Mutex<T>(parking_lot::Mutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Mutex(parking_lot::Mutex::new(value))
        }
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock()
        }
    }

    pub type RwLockReadGuard<'a, T> = parking_lot::RwLockReadGuard<'a, T>;
    pub type RwLockWriteGuard<'a, T> = parking_lot::RwLockWriteGuard<'a, T>;

    /// A reader-writer lock that does not poison.
    #[derive(Debug, Default)]
    pub struct RwLock<T>(parking_lot::RwLock<T>);

    impl<T> RwLock<T> {
        pub fn new(value: T) -> Self {
            RwLock(parking_lot::RwLock::new(value))
        }
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read()
        }
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write()
        }
        pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
            self.0.try_read()
        }
        /// Waits up to `wait` for the lock; a waiting writer holds off new readers.
        pub fn try_write_for(&self, wait: std::time::Duration) -> Option<RwLockWriteGuard<'_, T>> {
            self.0.try_write_for(wait)
        }
        /// Lets the threads waiting for the lock have it (fairly), then takes it back: a
        /// writer working through a long batch calls it between chunks.
        pub fn yield_write<'a>(
            &'a self,
            mut guard: RwLockWriteGuard<'a, T>,
        ) -> RwLockWriteGuard<'a, T> {
            parking_lot::RwLockWriteGuard::bump(&mut guard);
            guard
        }
    }

    /// A condition variable paired with [`Mutex`].
    #[derive(Debug, Default)]
    pub struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub fn new() -> Self {
            Condvar(parking_lot::Condvar::new())
        }
        pub fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(&mut guard);
            guard
        }
        /// Waits at most `timeout`; spurious and timed-out wake-ups both return the guard.
        pub fn wait_timeout<'a, T>(
            &self,
            mut guard: MutexGuard<'a, T>,
            timeout: super::Duration,
        ) -> MutexGuard<'a, T> {
            self.0.wait_for(&mut guard, timeout);
            guard
        }
        pub fn notify_one(&self) {
            self.0.notify_one();
        }
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    /// The bounded lock-free queue of commit requests.
    #[derive(Debug)]
    pub struct BoundedQueue<T>(crossbeam_queue::ArrayQueue<T>);

    impl<T> BoundedQueue<T> {
        pub fn new(capacity: usize) -> Self {
            BoundedQueue(crossbeam_queue::ArrayQueue::new(capacity))
        }
        /// Pushes, or hands the value back when the queue is full.
        pub fn push(&self, value: T) -> Result<(), T> {
            self.0.push(value)
        }
        pub fn pop(&self) -> Option<T> {
            self.0.pop()
        }
        pub fn len(&self) -> usize {
            self.0.len()
        }
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
        pub fn capacity(&self) -> usize {
            self.0.capacity()
        }
    }
}

#[cfg(walmdb_loom)]
mod imp {
    pub use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    pub use loom::sync::Arc;
    pub use loom::thread::{yield_now, Builder as ThreadBuilder, JoinHandle};
    use std::collections::VecDeque;

    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    #[derive(Debug)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            match self.0.try_lock() {
                Ok(guard) => Some(guard),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Mutex::new(T::default())
        }
    }

    pub type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    pub type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;

    #[derive(Debug)]
    pub struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub fn new(value: T) -> Self {
            RwLock(loom::sync::RwLock::new(value))
        }
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }
        pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
            self.0.try_read().ok()
        }
        /// Loom has no timed lock: one attempt.
        pub fn try_write_for(&self, _wait: std::time::Duration) -> Option<RwLockWriteGuard<'_, T>> {
            self.0.try_write().ok()
        }
        /// Releases the lock and takes it again (loom explores who runs between).
        pub fn yield_write<'a>(
            &'a self,
            guard: RwLockWriteGuard<'a, T>,
        ) -> RwLockWriteGuard<'a, T> {
            drop(guard);
            self.write()
        }
    }

    impl<T: Default> Default for RwLock<T> {
        fn default() -> Self {
            RwLock::new(T::default())
        }
    }

    #[derive(Debug, Default)]
    pub struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }
        pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap_or_else(|e| e.into_inner())
        }
        /// loom does not model time: this waits for a notification.
        pub fn wait_timeout<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            timeout: super::Duration,
        ) -> MutexGuard<'a, T> {
            match self.0.wait_timeout(guard, timeout) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            }
        }
        pub fn notify_one(&self) {
            self.0.notify_one();
        }
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    /// loom cannot see inside crossbeam's `ArrayQueue`; this bounded `Mutex<VecDeque>` has the
    /// same API and semantics.
    #[derive(Debug)]
    pub struct BoundedQueue<T> {
        items: loom::sync::Mutex<VecDeque<T>>,
        capacity: usize,
    }

    impl<T> BoundedQueue<T> {
        pub fn new(capacity: usize) -> Self {
            BoundedQueue {
                items: loom::sync::Mutex::new(VecDeque::with_capacity(capacity)),
                capacity,
            }
        }
        pub fn push(&self, value: T) -> Result<(), T> {
            let mut items = self.items.lock().unwrap();
            if items.len() >= self.capacity {
                return Err(value);
            }
            items.push_back(value);
            Ok(())
        }
        pub fn pop(&self) -> Option<T> {
            self.items.lock().unwrap().pop_front()
        }
        pub fn len(&self) -> usize {
            self.items.lock().unwrap().len()
        }
        pub fn is_empty(&self) -> bool {
            self.items.lock().unwrap().is_empty()
        }
        pub fn capacity(&self) -> usize {
            self.capacity
        }
    }
}

pub(crate) use imp::*;

/// A statistics counter: read and written `Relaxed`, ordering nothing, so even loom builds
/// keep std's (loom need not explore interleavings of counters nobody synchronizes on).
pub(crate) type StatCounter = std::sync::atomic::AtomicU64;

/// Microseconds since the first call in this process, for ages ("time since the last
/// sync"); never 0 once returned, so 0 can mean "never".
pub(crate) fn monotonic_micros() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A number for the calling thread, unique in the process; cheaper than a `ThreadId`
/// (`thread::current()` clones the thread's handle). An identity, not synchronisation: the
/// same under loom.
pub(crate) fn this_thread() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    thread_local! {
        static THIS: u64 = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    THIS.with(|id| *id)
}

/// True once the thread has ended. loom's handles cannot tell: there it is always false.
pub(crate) fn is_finished<T>(handle: &JoinHandle<T>) -> bool {
    #[cfg(not(walmdb_loom))]
    return handle.is_finished();
    #[cfg(walmdb_loom)]
    {
        let _ = handle;
        false
    }
}

/// A value set at most once and then read without a lock (a table's LMDB handle). Built on
/// this module's `AtomicPtr`, so loom checks it where a model uses it.
pub(crate) struct SetOnce<T> {
    ptr: AtomicPtr<T>,
    /// Owns a `T` (for `Send`/`Sync` below and drop checking).
    _owns: std::marker::PhantomData<Box<T>>,
}

// SAFETY: a `SetOnce` hands out `&T` to any thread (needs `T: Sync`) and drops the `T` set
// by another thread (needs `T: Send`), like `std::sync::OnceLock`.
unsafe impl<T: Send + Sync> Sync for SetOnce<T> {}

impl<T> SetOnce<T> {
    pub fn new() -> Self {
        SetOnce {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            _owns: std::marker::PhantomData,
        }
    }

    /// Sets the value unless it is set; returns whether this call set it.
    pub fn set(&self, value: T) -> bool {
        let new = Box::into_raw(Box::new(value));
        match self.ptr.compare_exchange(
            std::ptr::null_mut(),
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(_) => {
                // SAFETY: `new` came from `Box::into_raw` above and was never shared.
                drop(unsafe { Box::from_raw(new) });
                false
            }
        }
    }

    /// The value, once set: the setter's writes before `set` happen before this read.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        let ptr = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Box::into_raw` in `set` and is freed only by
        // `drop`, which `&self` outlives.
        unsafe { ptr.as_ref() }
    }
}

impl<T> Default for SetOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for SetOnce<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SetOnce").field(&self.get()).finish()
    }
}

impl<T> Drop for SetOnce<T> {
    fn drop(&mut self) {
        let ptr = self.ptr.swap(std::ptr::null_mut(), Ordering::Acquire);
        if !ptr.is_null() {
            // SAFETY: set by `set` from `Box::into_raw`; nothing borrows it past `&mut self`.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

/// Shared ownership of trait objects (`Arc<dyn Fs>`). loom's `Arc` cannot coerce to `dyn`;
/// these handles carry no ordering of their own for loom to model.
pub(crate) use std::sync::Arc as DynArc;

/// std's `Arc` for the engine's shared data (byte strings, table names, tables, engine state):
/// loom does not model the engine above the commit pipeline, and these need `Ord`/`Hash`.
pub(crate) use std::sync::Arc as DataArc;
/// The weak handle of [`DataArc`]: metrics and health endpoints that must not keep the
/// engine open.
pub(crate) use std::sync::Weak as DataWeak;

/// Deliberate bugs the loom models (`loom-tests/`) switch on one at a time, to show that each
/// model fails when the invariant it checks is broken. Without `walmdb_loom`, [`bug`] is a
/// constant `false` and the branches compile away.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Bug {
    /// The idle flusher checks for work before it says it is idle: a push in between is
    /// never noticed (a lost wake-up).
    LostWakeup = 1,
    /// A push into a full queue drops the request instead of refusing it.
    DropWhenFull,
    /// A failed log sync is retried, and acknowledged if the retry succeeds.
    AckAfterFailedSync,
    /// The flusher stops once the closed queue is empty, without waiting for committers
    /// still inside `push`.
    StopWhilePushing,
    /// The overlay's eviction horizon ignores live snapshots.
    EvictIgnoringSnapshots,
    /// A checkpoint retires log segments before LMDB's sync.
    RetireBeforeLmdbSync,
    /// A snapshot checks for a resize's pause before it marks its slot open.
    PauseCheckedBeforeOpening,
    /// A commit future checks for its answer and stores its waker under two separate
    /// acquisitions of the lock: an answer in between is never woken for.
    WakerStoredAfterCheck,
    /// Publication reads whether a change-feed subscription is open without the fence
    /// after its store of the visible LSN: a commit can be neither kept nor below `from`.
    FeedCheckedWithoutFence,
    /// Closing scans the snapshot slots for open transactions before it closes the
    /// registry: a transaction that begins in between is open after LMDB closes.
    CloseScannedBeforeClosing,
    /// A commit waiting for room hurries the applier before it checks for room (outside the
    /// room lock): a batch taken in between clears the request, and the commit then waits
    /// out the gathering of the commits published after that batch.
    HurriedBeforeRoomCheck,
    /// A commit written on its committer's thread does not check, under the writer's lock,
    /// that the log is closing: it can be written and acknowledged after close's final sync.
    InlineWriteAfterClose,
}

#[cfg(walmdb_loom)]
impl Bug {
    /// Every deliberate bug.
    pub const ALL: [Bug; 12] = [
        Bug::LostWakeup,
        Bug::DropWhenFull,
        Bug::AckAfterFailedSync,
        Bug::StopWhilePushing,
        Bug::EvictIgnoringSnapshots,
        Bug::RetireBeforeLmdbSync,
        Bug::PauseCheckedBeforeOpening,
        Bug::WakerStoredAfterCheck,
        Bug::FeedCheckedWithoutFence,
        Bug::CloseScannedBeforeClosing,
        Bug::HurriedBeforeRoomCheck,
        Bug::InlineWriteAfterClose,
    ];
}

#[cfg(walmdb_loom)]
static BUG: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// True while the loom models have switched `which` on.
#[inline(always)]
pub(crate) fn bug(which: Bug) -> bool {
    #[cfg(walmdb_loom)]
    {
        BUG.load(std::sync::atomic::Ordering::Relaxed) == which as u32
    }
    #[cfg(not(walmdb_loom))]
    {
        let _ = which;
        false
    }
}

/// Switches a deliberate bug on (`Some`) or every one off (`None`); loom builds only.
#[cfg(walmdb_loom)]
#[doc(hidden)]
pub fn set_bug(which: Option<Bug>) {
    BUG.store(
        which.map_or(0, |b| b as u32),
        std::sync::atomic::Ordering::Relaxed,
    );
}
