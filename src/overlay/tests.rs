//! The overlay's unit tests.

use super::*;

fn version(lsn: Lsn, value: &[u8]) -> Version {
    Version {
        lsn,
        value: Some(SharedBytes::copy_of(value)),
    }
}

/// Evicting a chunk of keys (their slots found first) does what evicting them one at a
/// time does: keys absent or given twice, keys with versions above the horizon left,
/// keys emptied (their slots reused once each), the last key emptying the overlay.
#[test]
fn evicting_a_chunk_of_keys_matches_evicting_them_one_by_one() {
    let key = |k: &[u8]| CountedKey::of(&SharedBytes::copy_of(k));
    let fill = || {
        let mut o = Overlay::default();
        for i in 0..10u8 {
            assert!(o
                .push(key(&[b'k', i]), version(u64::from(i) + 1, b"v"))
                .is_none());
        }
        assert!(o.push(key(b"k\x05"), version(20, b"newer")).is_some());
        o
    };
    let first: Vec<&[u8]> = vec![b"a", b"k\x00", b"k\x03", b"k\x03", b"k\x05", b"k\x09"];
    let mut first: Vec<HeadKey> = first.into_iter().map(HeadKey::new).collect();
    first.sort_unstable();
    let walk = |o: &Overlay| -> Vec<(Vec<u8>, Vec<Lsn>)> {
        let all = o.range((Bound::Unbounded, Bound::Unbounded), false);
        all.map(|(k, c)| {
            (
                k.bytes().to_vec(),
                c.versions().iter().map(|v| v.lsn).collect(),
            )
        })
        .collect()
    };
    let (mut chunked, mut single) = (fill(), fill());
    let (mut evicted, mut slots) = (Evicted::default(), Vec::new());
    let got = chunked.evict_keys(&first, 15, &mut evicted, &mut slots);
    let one_by_one = first.iter().fold((0, 0), |(b, n), k| {
        let (bytes, versions) = single.evict(k, 15, &mut Evicted::default());
        (b + bytes, n + versions)
    });
    assert_eq!(
        (got, got.1),
        (one_by_one, 4),
        "k0, k3, k9 and k5's older version"
    );
    for (o, lsn) in [(&mut chunked, 30), (&mut single, 30)] {
        for new in [&b"n1"[..], b"n2", b"n3"] {
            assert!(o.push(key(new), version(lsn, new)).is_none());
        }
    }
    assert_eq!(walk(&chunked), walk(&single));
    assert_eq!(chunked.summary().keys(), 10);
    let rest: Vec<HeadKey> = (0..10u8).map(|i| HeadKey::new(&[b'k', i])).collect();
    let got = chunked.evict_keys(&rest, Lsn::MAX, &mut evicted, &mut slots);
    let new: Vec<HeadKey> = [&b"n1"[..], b"n2", b"n3"].map(HeadKey::new).to_vec();
    let got_new = chunked.evict_keys(&new, Lsn::MAX, &mut evicted, &mut slots);
    assert_eq!((got.1, got_new.1), (7, 3));
    assert!(chunked.is_empty() && chunked.summary().keys() == 0);
    assert_eq!(evicted.structures.len(), 1, "the emptied overlay's indexes");
}

#[test]
fn take_all_empties_only_an_overlay_wholly_at_or_below_the_horizon_and_counts_as_evict() {
    let fill = || {
        let mut o = Overlay::default();
        let key = |k: &[u8]| CountedKey::of(&SharedBytes::copy_of(k));
        assert!(o.push(key(b"a"), version(1, b"1")).is_none());
        assert!(o.push(key(b"b"), version(2, b"22")).is_none());
        assert!(
            o.push(key(b"a"), version(3, b"333")).is_some(),
            "a was there"
        );
        o
    };
    let mut o = fill();
    let summary = o.summary();
    assert!(summary.holds_above(2), "version 3 is above 2");
    assert!(
        !summary.holds_above(3),
        "no version above 3: LMDB at 3 decides"
    );
    assert!(o.take_all(2).is_none(), "version 3 is above the horizon");
    assert_eq!(summary.keys(), 2);
    let taken = o.take_all(3).expect("every version is at or below 3");
    assert!(o.is_empty());
    assert!(o
        .range((Bound::Unbounded, Bound::Unbounded), false)
        .next()
        .is_none());
    assert_eq!(summary.keys(), 0, "readers without the lock see it empty");
    assert!(!summary.holds_above(0));
    let mut by_key = fill();
    let mut evicted = Evicted::default();
    let a = by_key.evict(&HeadKey::new(b"a"), 3, &mut evicted);
    let b = by_key.evict(&HeadKey::new(b"b"), 3, &mut evicted);
    assert_eq!(evicted.versions.len(), 3, "a's two and b's one");
    assert_eq!((evicted.keys.len(), evicted.ordered.len()), (2, 2));
    assert_eq!(taken.free(), (a.0 + b.0, a.1 + b.1));
    assert!(
        Overlay::default().take_all(Lsn::MAX).is_none(),
        "nothing to take"
    );
}

/// The ordered index (tree and tail) walks, finds and drops keys exactly as one sorted
/// set does, whatever order keys come and go in: appends, appends with jitter, two
/// interleaved ascending runs, random keys; evictions from the front, the middle (deep
/// enough to move keys into the tree) and at random.
#[test]
fn the_ordered_index_walks_as_one_sorted_set_under_appends_and_evictions() {
    use std::collections::BTreeSet;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    // Keys sharing their 8-byte head, so every comparison reaches their bytes.
    let key_of = |n: u64| {
        let mut k = vec![0xFF; 8];
        k.extend_from_slice(&n.to_be_bytes());
        k
    };
    for pattern in 0..4u64 {
        let mut o = Overlay::default();
        let mut model = BTreeSet::new();
        let mut lsn = 0;
        let (mut next, mut other) = (1_000u64, 500_000u64);
        for step in 0..6_000u64 {
            let n = match pattern {
                0 => {
                    next += 1;
                    next
                }
                1 => {
                    next += 3;
                    next - rand(200)
                }
                2 if step % 2 == 0 => {
                    next += 1;
                    next
                }
                2 => {
                    other += 1;
                    other
                }
                _ => rand(1_000_000),
            };
            let key = key_of(n);
            if model.insert(key.clone()) {
                lsn += 1;
                let shared = SharedBytes::copy_of(&key);
                assert!(o
                    .push(CountedKey::of(&shared), version(lsn, b"v"))
                    .is_none());
            } else {
                let mut evicted = Evicted::default();
                assert_eq!(o.evict(&HeadKey::new(&key), Lsn::MAX, &mut evicted).1, 1);
                model.remove(&key);
            }
            if step % 3 == 0 && !model.is_empty() {
                // The oldest key (front), one deep inside, or any.
                let keys: Vec<&Vec<u8>> = model.iter().collect();
                let at = match rand(3) {
                    0 => 0,
                    1 => (keys.len() / 2).min(keys.len() - 1),
                    _ => rand(keys.len() as u64) as usize,
                };
                let gone = keys[at].clone();
                let mut evicted = Evicted::default();
                assert_eq!(o.evict(&HeadKey::new(&gone), Lsn::MAX, &mut evicted).1, 1);
                model.remove(&gone);
            }
            if step % 97 == 0 {
                let walked: Vec<Vec<u8>> = o
                    .range((Bound::Unbounded, Bound::Unbounded), false)
                    .map(|(k, _)| k.bytes().to_vec())
                    .collect();
                assert!(
                    walked.iter().eq(model.iter()),
                    "pattern {pattern} step {step}"
                );
                let (a, b) = (key_of(rand(1_000_000)), key_of(rand(1_000_000)));
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                let (lo_h, hi_h) = (HeadKey::new(&lo), HeadKey::new(&hi));
                let bounds = [
                    (Bound::Included(&lo_h), Bound::Excluded(&hi_h)),
                    (Bound::Excluded(&lo_h), Bound::Included(&hi_h)),
                    (Bound::Included(&lo_h), Bound::Unbounded),
                    (Bound::Unbounded, Bound::Excluded(&hi_h)),
                ];
                for range in bounds {
                    if matches!(range, (Bound::Excluded(_), Bound::Included(_)) if lo == hi) {
                        continue;
                    }
                    let slices = (
                        range.0.map(|k: &HeadKey| k.bytes()),
                        range.1.map(|k: &HeadKey| k.bytes()),
                    );
                    for reverse in [false, true] {
                        let got: Vec<Vec<u8>> = o
                            .range(range, reverse)
                            .map(|(k, _)| k.bytes().to_vec())
                            .collect();
                        let mut want: Vec<Vec<u8>> =
                            model.range::<[u8], _>(slices).cloned().collect();
                        if reverse {
                            want.reverse();
                        }
                        assert_eq!(got, want, "pattern {pattern} step {step} {range:?}");
                    }
                }
            }
        }
        assert_eq!(o.summary().keys(), model.len());
    }
}
