//! Keys' and values' bytes, shared by reference count: a commit's packed into a few blocks.
//!
//! A write's key and value share one block ([`SharedBytes::pair`]), and a commit's keys and
//! values are copied into blocks of up to [`BLOCK_BYTES`] each ([`pack`]), so a commit of
//! thousands of writes is a few allocations, freed together, rather than two a write. The applier frees what it evicted on its own thread, and
//! glibc's allocator takes hundreds of thousands of frees into another thread's arena as
//! a stall of that thread's next allocations: reads on the thread that committed a
//! 400,000-write backlog ran at 0-31K scans/s (against ~370K) for half a second after it
//! was applied, and slower for half a second more (`examples/backlog_reads.rs`).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::ptr::NonNull;

use crate::sync::DataArc as Arc;

/// Bytes in a shared block: 16 bytes (a key in the overlay's ordered index and hash map,
/// a value in a version) that read their bytes without touching the block.
pub(crate) struct SharedBytes {
    /// The first byte, inside a block: an `Arc<[u8]>` whose first [`PREFIX`] bytes hold its
    /// length, of which this holds one strong count.
    data: NonNull<u8>,
    /// Keys and values are below 4 GiB (the log's format stores their lengths as `u32`).
    len: u32,
    /// Bytes from the block's start to `data`.
    offset: u32,
}

// SAFETY: a `SharedBytes` is a strong count of an `Arc<[u8]>` (which is `Send` and `Sync`)
// and a view of bytes in it that are never written again.
unsafe impl Send for SharedBytes {}
// SAFETY: as above.
unsafe impl Sync for SharedBytes {}

/// The bytes at a block's start that hold its length (with them), so a `SharedBytes` finds
/// the `Arc<[u8]>` it counts from a thin pointer.
const PREFIX: usize = 8;

/// The largest block [`pack`] fills with more than one string (prefix aside): small enough
/// that a key still in the overlay long after the rest of its commit was evicted (a key
/// rewritten all the time) keeps little else alive with it; large enough that a write of a
/// 24-byte key and a 150-byte value is one allocation in about 90.
pub(crate) const BLOCK_BYTES: usize = 16 << 10;

/// A new block of `PREFIX + payload` bytes, its prefix written, its payload filled by
/// `fill` (which must write all of it).
fn new_block(payload: usize, fill: impl FnOnce(*mut u8)) -> Arc<[u8]> {
    let size = PREFIX + payload;
    let mut block = Arc::<[u8]>::new_uninit_slice(size);
    let buf = Arc::get_mut(&mut block).expect("a new block is not shared");
    let start = buf.as_mut_ptr().cast::<u8>();
    // SAFETY: `start` points at `size` bytes, `PREFIX` of them first.
    unsafe {
        start.cast::<u64>().write_unaligned(size as u64);
        fill(start.add(PREFIX));
    }
    // SAFETY: the prefix is written above, the payload by `fill`.
    unsafe { block.assume_init() }
}

/// Copies `s` to `dst` and returns the end.
///
/// SAFETY (the caller's): `dst` has room for `s.len()` bytes that `s` does not overlap.
unsafe fn copy_to(dst: *mut u8, s: &[u8]) -> *mut u8 {
    // SAFETY: see above.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), dst, s.len());
        dst.add(s.len())
    }
}

impl SharedBytes {
    /// `len` bytes at `offset` of `block` (at least `PREFIX`), taking one strong count.
    fn in_block(block: &Arc<[u8]>, offset: usize, len: usize) -> Self {
        assert!(offset >= PREFIX && offset + len <= block.len());
        let offset = u32::try_from(offset).expect("blocks of packed strings are small");
        let len = u32::try_from(len).expect("keys and values are below 4 GiB");
        let start = Arc::into_raw(block.clone()).cast::<u8>();
        SharedBytes {
            // SAFETY: within the block (asserted above), which is not null.
            data: unsafe { NonNull::new_unchecked(start.add(offset as usize).cast_mut()) },
            len,
            offset,
        }
    }

    /// The block, as `Arc::into_raw` gave it.
    fn block(&self) -> *const [u8] {
        // SAFETY: `data - offset` is the block's start, whose first `PREFIX` bytes hold its
        // length (`new_block`); the block lives while this holds its count.
        unsafe {
            let start = self.data.as_ptr().sub(self.offset as usize).cast_const();
            let size = start.cast::<u64>().read_unaligned() as usize;
            std::ptr::slice_from_raw_parts(start, size)
        }
    }

    /// A copy of `bytes` in a block of its own.
    pub(crate) fn copy_of(bytes: &[u8]) -> Self {
        // SAFETY: the payload is `bytes.len()` bytes.
        let block = new_block(bytes.len(), |dst| unsafe {
            copy_to(dst, bytes);
        });
        SharedBytes::in_block(&block, PREFIX, bytes.len())
    }

    /// Copies of `a` and `b` in one block (a key and its value: one allocation a write).
    pub(crate) fn pair(a: &[u8], b: &[u8]) -> (Self, Self) {
        // SAFETY: the payload is `a.len() + b.len()` bytes.
        let block = new_block(a.len() + b.len(), |dst| unsafe {
            copy_to(copy_to(dst, a), b);
        });
        (
            SharedBytes::in_block(&block, PREFIX, a.len()),
            SharedBytes::in_block(&block, PREFIX + a.len(), b.len()),
        )
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes from `data` lie in the block (`in_block`), which lives while
        // this holds its count, and are never written again.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len as usize) }
    }
}

/// Asks the CPU to bring the cache line at `at` in (a hint: nothing on other
/// architectures), so that a walk that reads it soon does not stall on it then.
#[inline]
pub(crate) fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and faults on no address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

impl Clone for SharedBytes {
    fn clone(&self) -> Self {
        // SAFETY: `block()` is the pointer `Arc::into_raw` gave, and its count is held.
        unsafe { Arc::increment_strong_count(self.block()) };
        SharedBytes {
            data: self.data,
            len: self.len,
            offset: self.offset,
        }
    }
}

impl Drop for SharedBytes {
    fn drop(&mut self) {
        // SAFETY: as in `clone`; this gives back the count it held.
        drop(unsafe { Arc::from_raw(self.block()) });
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Maps keyed by `SharedBytes` are searched by `&[u8]`: equality, order and hash are the
/// bytes'.
impl Borrow<[u8]> for SharedBytes {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SharedBytes {}

impl PartialOrd for SharedBytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedBytes {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for SharedBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_bytes().fmt(f)
    }
}

/// Copies of `strings`, in order, packed into blocks: consecutive strings share a block
/// while they fit in [`BLOCK_BYTES`]; a longer one gets a block of its own. Lazy: a block
/// is filled when its first string is asked for.
pub(crate) fn pack<'a, I>(strings: I) -> Packed<'a, I>
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    Packed {
        ahead: strings.clone().peekable(),
        copy: strings.clone(),
        hand_out: strings,
        block: None,
        left_in_block: 0,
        at: 0,
    }
}

/// The iterator [`pack`] returns: three cursors over the same strings, one sizing the next
/// block, one copying into it, one handing its strings out.
pub(crate) struct Packed<'a, I: Iterator<Item = &'a [u8]> + Clone> {
    ahead: std::iter::Peekable<I>,
    copy: I,
    hand_out: I,
    block: Option<Arc<[u8]>>,
    /// Strings of the current block not handed out yet.
    left_in_block: usize,
    /// Where the next one starts in it.
    at: usize,
}

impl<'a, I: Iterator<Item = &'a [u8]> + Clone> Packed<'a, I> {
    /// Fills the next block; false when no string is left.
    fn fill(&mut self) -> bool {
        let (mut size, mut count) = (0usize, 0usize);
        while let Some(s) =
            (self.ahead).next_if(|s: &&[u8]| count == 0 || size + s.len() <= BLOCK_BYTES)
        {
            size += s.len();
            count += 1;
            if size > BLOCK_BYTES {
                // A string longer than a block, alone.
                break;
            }
        }
        if count == 0 {
            return false;
        }
        let copy = &mut self.copy;
        let block = new_block(size, |mut dst| {
            let mut left = size;
            for _ in 0..count {
                let s = copy.next().expect("sized ahead");
                // The block's bounds hold whatever the iterator does.
                assert!(s.len() <= left, "the strings changed between passes");
                left -= s.len();
                // SAFETY: `dst` has `left + s.len()` bytes of the new block left.
                dst = unsafe { copy_to(dst, s) };
            }
            assert_eq!(left, 0, "the strings changed between passes");
        });
        self.block = Some(block);
        self.left_in_block = count;
        self.at = PREFIX;
        true
    }
}

impl<'a, I: Iterator<Item = &'a [u8]> + Clone> Iterator for Packed<'a, I> {
    type Item = SharedBytes;

    fn next(&mut self) -> Option<SharedBytes> {
        if self.left_in_block == 0 && !self.fill() {
            return None;
        }
        let len = self.hand_out.next().expect("copied").len();
        let block = self.block.as_ref().expect("filled");
        let bytes = SharedBytes::in_block(block, self.at, len);
        self.left_in_block -= 1;
        self.at += len;
        Some(bytes)
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;

    /// Packed strings read back as they were, in order, sharing blocks of at most
    /// `BLOCK_BYTES` (a longer string alone); an empty string is one too.
    #[test]
    fn packed_strings_read_back_in_order_and_share_bounded_blocks() {
        let long = vec![9u8; BLOCK_BYTES + 1];
        let mut strings: Vec<Vec<u8>> = Vec::new();
        for i in 0..300u32 {
            strings.push(i.to_be_bytes().to_vec());
            strings.push(vec![i as u8; 150]);
            if i % 97 == 0 {
                strings.push(Vec::new());
                strings.push(long.clone());
            }
        }
        let packed: Vec<SharedBytes> = pack(strings.iter().map(Vec::as_slice)).collect();
        assert_eq!(packed.len(), strings.len());
        let mut blocks: Vec<*const u8> = Vec::new();
        for (p, s) in packed.iter().zip(&strings) {
            assert_eq!(p.as_bytes(), &s[..]);
            let payload = p.block().len() - PREFIX;
            assert!(payload <= BLOCK_BYTES || payload == s.len());
            let block = p.block() as *const u8;
            if blocks.last() != Some(&block) {
                blocks.push(block);
            }
        }
        let total: usize = strings.iter().map(Vec::len).sum();
        assert!(
            blocks.len() <= total / (BLOCK_BYTES / 2) + 8,
            "{} blocks for {total} bytes",
            blocks.len()
        );
        assert_eq!(pack(std::iter::empty()).count(), 0);
    }

    /// Each `SharedBytes` holds one count of its block: clones add one, drops give it back.
    #[test]
    fn shared_bytes_count_their_block() {
        let count = |b: &SharedBytes| {
            // SAFETY: `block()` is the pointer `Arc::into_raw` gave; the count taken here
            // is given back by the drop.
            let arc = unsafe {
                Arc::increment_strong_count(b.block());
                Arc::from_raw(b.block())
            };
            Arc::strong_count(&arc) - 1
        };
        let mut packed: Vec<SharedBytes> = pack([&b"k"[..], b"value", b""].into_iter()).collect();
        assert_eq!(count(&packed[0]), 3, "the packer let go of its own");
        let copy = packed[1].clone();
        assert_eq!(count(&copy), 4);
        packed.truncate(1);
        assert_eq!(count(&copy), 2);
        assert_eq!(copy.as_bytes(), b"value");
        let (key, value) = SharedBytes::pair(b"key", b"v");
        assert_eq!(
            (key.as_bytes(), value.as_bytes(), count(&key)),
            (&b"key"[..], &b"v"[..], 2)
        );
        assert_eq!(count(&SharedBytes::copy_of(b"")), 1);
    }

    #[test]
    fn shared_bytes_compare_and_hash_as_their_bytes() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |b: &[u8]| {
            let mut h = DefaultHasher::new();
            b.hash(&mut h);
            h.finish()
        };
        let packed: Vec<SharedBytes> = pack([&b"ab"[..], b"a", b"ab"].into_iter()).collect();
        let own = SharedBytes::copy_of(b"ab");
        assert_eq!(packed[0], own);
        assert_eq!(packed[0], packed[2]);
        assert!(packed[1] < packed[0]);
        let mut h = DefaultHasher::new();
        packed[0].hash(&mut h);
        assert_eq!(h.finish(), hash(b"ab"));
        assert_eq!(format!("{own:?}"), format!("{:?}", &b"ab"[..]));
    }
}
