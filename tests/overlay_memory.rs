//! The overlay's memory accounting against what the process really allocates (issue 16,
//! defect 8): `overlay_max_bytes` bounds memory only if each version is charged what it
//! costs. A counting allocator (this test binary's only test, so nothing else allocates
//! meanwhile) measures the heap a held-back backlog takes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use walmdb::{Config, Db};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Commits `versions` puts of `value_len`-byte values under 16-byte keys, each key put
/// `writes_per_key` times in a row (the last stays), with the applier held back; returns
/// (heap bytes per version, bytes charged per version).
fn measure(versions: u32, value_len: usize, writes_per_key: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let hour = Duration::from_secs(3600);
    let cfg = Config::default()
        .apply_interval(hour)
        .apply_max_ops(usize::MAX / 2)
        .overlay_max_bytes(4 << 30)
        .checkpoint_interval(hour);
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let value = vec![7u8; value_len];
    // Warm up: the first commits allocate the engine's buffers.
    for i in 0..1000u32 {
        db.update(|txn| txn.put("t", &[&[1u8; 12][..], &i.to_be_bytes()].concat(), &value))
            .unwrap();
    }
    let (heap_before, charged_before) = (LIVE.load(Ordering::Relaxed), db.stats().unapplied_bytes);
    for chunk in 0..versions / 100 {
        let mut txn = db.write().unwrap();
        for j in 0..100 {
            let i = 1_000_000 + chunk * 100 + j;
            for _ in 0..writes_per_key {
                txn.put("t", &[&[2u8; 12][..], &i.to_be_bytes()].concat(), &value)
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let heap = LIVE.load(Ordering::Relaxed) - heap_before;
    let charged = db.stats().unapplied_bytes - charged_before;
    db.close().unwrap();
    (
        heap as f64 / f64::from(versions),
        charged as f64 / f64::from(versions),
    )
}

/// Also when a commit rewrote each key (a transaction's arena then holds the older values
/// beside the kept ones, and the commit must not hand those blocks to the overlay).
#[test]
fn a_version_is_charged_at_least_what_it_takes_in_memory() {
    for (value_len, writes_per_key) in [(0, 1), (8, 1), (100, 1), (1000, 1), (100, 2), (1000, 2)] {
        let (heap, charged) = measure(50_000, value_len, writes_per_key);
        eprintln!(
            "value {value_len} B, written {writes_per_key}x: heap {heap:.0} B a version, \
             charged {charged:.0}"
        );
        assert!(
            charged >= heap * 0.9,
            "value {value_len} B written {writes_per_key}x: {heap:.0} bytes of heap a \
             version, charged {charged:.0}"
        );
    }
}
