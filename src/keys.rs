//! Key ranges: owned bounds, prefixes, and membership.

use std::ops::Bound;

use crate::bytes::SharedBytes;

/// Owned bounds of a key range.
pub(crate) type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// A range of keys, as `range` and `rev_range` take it: `..`, `a..b`, `a..=b`, `a..`,
/// `..b`, `..=b` or a pair of [`Bound`]s, whose bounds are anything that is bytes: byte
/// string literals (`b"a"..b"c"`), `&[u8]`, arrays, `Vec<u8>`, `&str`. (Both ends of a
/// `Range` have one type: `b"a"..b"cc"` mixes two array sizes; write
/// `&b"a"[..]..&b"cc"[..]`.)
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let db = walmdb::Db::open(dir.path())?;
/// # db.update(|t| { for k in [b"a", b"b", b"c"] { t.put("t", k, b"v")?; } Ok(()) })?;
/// let r = db.read()?;
/// assert_eq!(r.range("t", b"a"..b"c")?.count(), 2);
/// assert_eq!(r.range("t", b"b".to_vec()..)?.count(), 2);
/// assert_eq!(r.rev_range("t", ..="b")?.count(), 2);
/// assert_eq!(r.range("t", ..)?.count(), 3);
/// # Ok::<(), walmdb::Error>(())
/// ```
pub trait KeyRange {
    /// The range's bounds, copied.
    fn key_bounds(&self) -> KeyBounds;
}

fn owned(bound: Bound<&impl AsRef<[u8]>>) -> Bound<Vec<u8>> {
    bound.map(|k| k.as_ref().to_vec())
}

impl KeyRange for std::ops::RangeFull {
    fn key_bounds(&self) -> KeyBounds {
        (Bound::Unbounded, Bound::Unbounded)
    }
}

impl<K: AsRef<[u8]>> KeyRange for std::ops::Range<K> {
    fn key_bounds(&self) -> KeyBounds {
        (
            Bound::Included(self.start.as_ref().to_vec()),
            Bound::Excluded(self.end.as_ref().to_vec()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for std::ops::RangeInclusive<K> {
    fn key_bounds(&self) -> KeyBounds {
        (
            Bound::Included(self.start().as_ref().to_vec()),
            Bound::Included(self.end().as_ref().to_vec()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for std::ops::RangeFrom<K> {
    fn key_bounds(&self) -> KeyBounds {
        (
            Bound::Included(self.start.as_ref().to_vec()),
            Bound::Unbounded,
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for std::ops::RangeTo<K> {
    fn key_bounds(&self) -> KeyBounds {
        (
            Bound::Unbounded,
            Bound::Excluded(self.end.as_ref().to_vec()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for std::ops::RangeToInclusive<K> {
    fn key_bounds(&self) -> KeyBounds {
        (
            Bound::Unbounded,
            Bound::Included(self.end.as_ref().to_vec()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for (Bound<K>, Bound<K>) {
    fn key_bounds(&self) -> KeyBounds {
        (owned(self.0.as_ref()), owned(self.1.as_ref()))
    }
}

/// The bounds of the keys starting with `prefix`.
pub(crate) fn prefix_bounds(prefix: &[u8]) -> KeyBounds {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

/// True if `key` lies inside `bounds`.
pub(crate) fn in_bounds(bounds: &KeyBounds, key: &[u8]) -> bool {
    let lower = match &bounds.0 {
        Bound::Included(b) => key >= b.as_slice(),
        Bound::Excluded(b) => key > b.as_slice(),
        Bound::Unbounded => true,
    };
    let upper = match &bounds.1 {
        Bound::Included(b) => key <= b.as_slice(),
        Bound::Excluded(b) => key < b.as_slice(),
        Bound::Unbounded => true,
    };
    lower && upper
}

/// False for bounds a `BTreeMap::range` refuses (start after end, or equal and both
/// excluded); such a range is empty.
pub(crate) fn bounds_valid<K: Ord>(b: &(Bound<K>, Bound<K>)) -> bool {
    match (&b.0, &b.1) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => true,
        (Bound::Excluded(s), Bound::Excluded(e)) => s < e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
            s <= e
        }
    }
}

/// Borrows an owned bound.
pub(crate) fn as_slice_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The first 8 bytes of `key`, zero-padded, as a big-endian word: heads order as the keys
/// do where they differ, and equal heads leave the order to the whole keys.
#[inline]
pub(crate) fn head_of(key: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    let n = key.len().min(8);
    head[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(head)
}

/// `a` (whose head is `a_head`) against `b` (whose head is `b_head`), as their bytes
/// compare; the heads decide without touching `b` when they differ.
#[inline]
pub(crate) fn cmp_headed(a: &[u8], b_head: u64, b: &[u8]) -> std::cmp::Ordering {
    head_of(a).cmp(&b_head).then_with(|| a.cmp(b))
}

/// A key with its first 8 bytes held inline (big-endian, zero-padded), for a large ordered
/// map (a write transaction's buffer, the overlay's ordered index): ordered exactly as its bytes,
/// but most comparisons decide on the inline prefix and touch no other memory, where a
/// key behind a pointer costs a cache miss a comparison.
#[derive(Debug, Clone)]
pub(crate) struct HeadKey {
    head: u64,
    key: SharedBytes,
}

impl HeadKey {
    pub(crate) fn new(key: &[u8]) -> Self {
        Self::shared(SharedBytes::copy_of(key))
    }

    /// The key, sharing its allocation.
    pub(crate) fn shared(key: SharedBytes) -> Self {
        HeadKey {
            head: head_of(&key),
            key,
        }
    }

    /// Its inline head ([`head_of`] its bytes).
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.key
    }

    pub(crate) fn shared_bytes(&self) -> &SharedBytes {
        &self.key
    }

    pub(crate) fn into_shared_bytes(self) -> SharedBytes {
        self.key
    }
}

impl Ord for HeadKey {
    /// The bytes' order: heads compare as the zero-padded first 8 bytes do, and equal
    /// heads fall back to the whole keys.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head
            .cmp(&other.head)
            .then_with(|| self.key[..].cmp(&other.key[..]))
    }
}

impl PartialOrd for HeadKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for HeadKey {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && self.key == other.key
    }
}

impl Eq for HeadKey {}

impl std::borrow::Borrow<[u8]> for HeadKey {
    fn borrow(&self) -> &[u8] {
        &self.key
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::HeadKey;

    /// The buffer's keys order and compare exactly as their bytes do: short keys, keys
    /// that are prefixes of others, zero bytes (the inline head's padding), long keys that
    /// share their first 8 bytes; and a key against a headed one ([`super::cmp_headed`]).
    #[test]
    fn buffered_keys_order_as_their_bytes() {
        let alphabet = [0x00u8, 0x01, 0x7f, 0xff];
        let mut keys: Vec<Vec<u8>> = vec![vec![]];
        for len in 1..=3 {
            let mut more = Vec::new();
            for k in keys.iter().filter(|k| k.len() == len - 1) {
                for b in alphabet {
                    let mut k = k.clone();
                    k.push(b);
                    more.push(k);
                }
            }
            keys.extend(more);
        }
        for tail in [&[][..], &[0], &[0, 0], &[1], &[0xff, 0]] {
            for head in [[0u8; 8], [0xff; 8], *b"abcdefgh"] {
                let mut k = head.to_vec();
                k.extend_from_slice(tail);
                keys.push(k.clone());
                keys.push(k[..7].to_vec());
            }
        }
        for a in &keys {
            for b in &keys {
                let (x, y) = (HeadKey::new(a), HeadKey::new(b));
                assert_eq!(x.cmp(&y), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(x == y, a == b, "{a:?} vs {b:?}");
                assert_eq!(
                    super::cmp_headed(a, y.head(), b),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
