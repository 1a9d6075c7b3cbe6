//! Keys' and values' bytes, shared by reference count: a commit's in a few blocks.
//!
//! A write transaction copies its keys and values into its [`Arena`]'s blocks as they are
//! written, and its commit's operations take those blocks as they are; a commit whose
//! blocks hold much besides its writes, and replay, copy theirs into blocks of up to
//! [`BLOCK_BYTES`] each ([`pack`]). So a commit of thousands of writes is a few
//! allocations, freed together, rather than two a write. The applier frees what it evicted
//! on its own thread, and
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

/// Strings of at most this many bytes go into an [`Arena`]'s blocks; a longer one gets a
/// block of its own.
const ARENA_STRING_MAX: usize = BLOCK_BYTES / 4;

/// Keys and values copied, as they come, into shared blocks: a write transaction's, which
/// its commit hands on as they are, with no copy into blocks as [`pack`] makes. The first
/// block holds the first write exactly (a transaction of one write takes no more than its
/// bytes); each next one doubles, up to [`BLOCK_BYTES`], so a large transaction allocates
/// once in about 90 writes.
#[derive(Default)]
pub(crate) struct Arena {
    /// The block being filled and where its free bytes start. Its bytes are written only
    /// past every string handed out of it, through the block's own pointer, never while a
    /// reference to them is alive.
    block: Option<(Arc<[u8]>, usize)>,
    /// Bytes of every block it filled (prefixes aside).
    held: usize,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.block.as_ref().map(|(block, at)| (*at, block.len()));
        f.debug_struct("Arena").field("used", &used).finish()
    }
}

impl Arena {
    /// Bytes of the blocks it filled, used or not (strings with blocks of their own aside).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Copies of `a` and `b`, side by side.
    pub(crate) fn pair(&mut self, a: &[u8], b: &[u8]) -> (SharedBytes, SharedBytes) {
        let Some((block, at)) = self.take(a.len() + b.len()) else {
            return SharedBytes::pair(a, b);
        };
        // SAFETY: `take` gave `a.len() + b.len()` bytes at `at` inside the block, past every
        // string handed out of it; no reference to them is alive.
        unsafe {
            copy_to(copy_to(Self::start(block).add(at), a), b);
        }
        (
            SharedBytes::in_block(block, at, a.len()),
            SharedBytes::in_block(block, at + a.len(), b.len()),
        )
    }

    /// A copy of `s`.
    pub(crate) fn copy_of(&mut self, s: &[u8]) -> SharedBytes {
        let Some((block, at)) = self.take(s.len()) else {
            return SharedBytes::copy_of(s);
        };
        // SAFETY: as in `pair`.
        unsafe {
            copy_to(Self::start(block).add(at), s);
        }
        SharedBytes::in_block(block, at, s.len())
    }

    /// The block's first byte, to write through: the pointer `Arc` holds, not one derived
    /// from a reference, so that the counts' updates by the strings handed out (which
    /// reference the block's header) leave it valid.
    fn start(block: &Arc<[u8]>) -> *mut u8 {
        Arc::as_ptr(block).cast::<u8>().cast_mut()
    }

    /// `n` bytes of the current block (or of a new one, when they do not fit), as its
    /// offset; `None` for a string that gets a block of its own.
    fn take(&mut self, n: usize) -> Option<(&Arc<[u8]>, usize)> {
        if n > ARENA_STRING_MAX {
            return None;
        }
        let fits = self
            .block
            .as_ref()
            .is_some_and(|(block, at)| at + n <= block.len());
        if !fits {
            let payload = match &self.block {
                Some((block, _)) => ((block.len() - PREFIX) * 2).min(BLOCK_BYTES),
                None => 0,
            }
            .max(n);
            self.held += payload;
            // Zeroed, so every byte is initialized before the block is shared.
            // SAFETY: the payload is `payload` bytes.
            let block = new_block(payload, |dst| unsafe { dst.write_bytes(0, payload) });
            self.block = Some((block, PREFIX));
        }
        let (block, at) = self.block.as_mut().expect("a block with room");
        let start = *at;
        *at += n;
        Some((block, start))
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

    /// An arena's strings read back as written; its blocks start at the first write's size
    /// and double up to `BLOCK_BYTES`, a string over `ARENA_STRING_MAX` gets a block of its
    /// own, and `held` counts the arena's blocks' bytes. Written while earlier strings of
    /// the same block are held and read.
    #[test]
    fn arena_strings_read_back_in_blocks_that_double() {
        let mut arena = Arena::default();
        let mut held: Vec<(SharedBytes, Vec<u8>)> = Vec::new();
        let (key, value) = arena.pair(b"first", &[1; 95]);
        assert_eq!(
            arena.held(),
            100,
            "the first block is the first write's size"
        );
        assert_eq!(key.block().len() - PREFIX, 100);
        held.push((key, b"first".to_vec()));
        held.push((value, vec![1; 95]));
        let mut sizes = vec![100];
        for i in 0..2_000u32 {
            let key = i.to_be_bytes().to_vec();
            let value = vec![i as u8; (i % 300) as usize];
            let (k, v) = arena.pair(&key, &value);
            for s in [&k, &v] {
                let payload = s.block().len() - PREFIX;
                if Some(&payload) != sizes.last() && payload != key.len() + value.len() {
                    sizes.push(payload);
                }
            }
            held.push((k, key));
            held.push((v, value));
            if i % 7 == 0 {
                let deleted = arena.copy_of(&i.to_le_bytes());
                held.push((deleted, i.to_le_bytes().to_vec()));
            }
            // Everything handed out so far still reads as written.
            if i % 250 == 0 {
                for (shared, want) in &held {
                    assert_eq!(shared.as_bytes(), &want[..]);
                }
            }
        }
        assert_eq!(
            sizes,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, BLOCK_BYTES],
            "blocks double up to BLOCK_BYTES"
        );
        let long = vec![5u8; ARENA_STRING_MAX + 1];
        let before = arena.held();
        let (k, v) = arena.pair(b"k", &long);
        assert_eq!(arena.held(), before, "a long string is not the arena's");
        assert_eq!(k.block().len() - PREFIX, 1 + long.len());
        assert_eq!((k.as_bytes(), v.as_bytes()), (&b"k"[..], &long[..]));
        for (shared, want) in &held {
            assert_eq!(shared.as_bytes(), &want[..]);
        }
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
