//! Key ranges: owned bounds, prefixes, and membership.

use std::ops::Bound;

/// Owned bounds of a key range.
pub(crate) type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Copies borrowed bounds.
pub(crate) fn owned_bounds(range: &impl std::ops::RangeBounds<[u8]>) -> KeyBounds {
    (
        range.start_bound().map(<[u8]>::to_vec),
        range.end_bound().map(<[u8]>::to_vec),
    )
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
