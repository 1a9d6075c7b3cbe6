//! A commit's keys and values are freed in a few blocks, not one allocation a write (issue 21:
//! the applier freed a 400,000-write batch's 800,000 allocations into the committing
//! thread's glibc arena, and that thread's reads ran 100x slower for half a second). A
//! counting allocator (this binary's only test) counts the frees of one value's allocation
//! size while the applier applies and evicts a backlog, through the close.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use walmdb::{Config, Db};

struct Counting;

/// The allocation size of a value on its own: an `Arc<[u8]>` of `VALUE_LEN` bytes (two
/// counts before the bytes, padded to their alignment).
const VALUE_ALLOC: usize = (16 + VALUE_LEN).next_multiple_of(8);
const VALUE_LEN: usize = 150;

static COUNTING: AtomicBool = AtomicBool::new(false);
static VALUE_SIZED_FREES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == VALUE_ALLOC && COUNTING.load(Ordering::Relaxed) {
            VALUE_SIZED_FREES.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn an_applied_backlog_is_freed_a_block_at_a_time_not_a_write_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let hour = Duration::from_secs(3600);
    let db = Db::open_with(
        dir.path(),
        Config::default()
            .apply_interval(hour)
            .checkpoint_interval(hour),
    )
    .unwrap();
    let (commits, writes) = (50u32, 1000u32);
    let value = [7u8; VALUE_LEN];
    for c in 0..commits {
        let mut txn = db.write().unwrap();
        for w in 0..writes {
            txn.put("t", &(c * writes + w).to_be_bytes(), &value)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(db.stats().unapplied_bytes > 0, "the applier waits an hour");
    COUNTING.store(true, Ordering::Relaxed);
    db.wait_applied(db.stats().visible_lsn).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.stats().unapplied_bytes > 0 {
        assert!(Instant::now() < deadline, "the backlog is never evicted");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        db.read().unwrap().get("t", &7u32.to_be_bytes()).unwrap(),
        Some(&value[..])
    );
    // The last of the evicted commits may be dropped after the count of unapplied bytes
    // falls: what is left goes by the close.
    db.close().unwrap();
    COUNTING.store(false, Ordering::Relaxed);
    let frees = VALUE_SIZED_FREES.load(Ordering::Relaxed);
    let total = u64::from(commits * writes);
    assert!(
        frees < total / 100,
        "{frees} frees of a value's size while {total} writes were applied and evicted"
    );
}
