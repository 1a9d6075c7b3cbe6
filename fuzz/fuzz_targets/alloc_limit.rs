//! A global allocator that aborts on any single allocation above `LIMIT`, so "never
//! allocates absurdly" is checked without a sanitizer (libFuzzer's `-malloc_limit_mb` needs
//! sanitizer hooks, which `-s none` builds lack). libFuzzer reports the abort as a crash
//! and saves the input.
//!
//! The limit is the format's own cap, `MAX_FRAME_BODY` (256 MiB: the decoder may reserve a
//! frame's claimed uncompressed length up to it), plus slack.

use std::alloc::{GlobalAlloc, Layout, System};

const LIMIT: usize = walmdb::internals::record::MAX_FRAME_BODY + (1 << 20);

pub struct LimitAlloc;

fn check(size: usize) {
    if size > LIMIT {
        // No unwinding out of an allocator: say why, then abort.
        eprintln!("alloc_limit: a single allocation of {size} bytes (limit {LIMIT})");
        std::process::abort();
    }
}

// SAFETY: forwards to the system allocator unchanged; only refuses (by aborting) first.
unsafe impl GlobalAlloc for LimitAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: LimitAlloc = LimitAlloc;
