//! Key ranges: owned bounds, prefixes, and membership.

use std::ops::Bound;

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
pub(crate) fn bounds_valid(b: &KeyBounds) -> bool {
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
