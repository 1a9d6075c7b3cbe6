//! Reads from a table's ends start past the keys their snapshot is known to see none of
//! (`src/ends.rs`): pops of a queue no longer step over every deletion the applier has not
//! applied yet. What is known must never hide a key: from a snapshot older than what taught
//! it, after a put beyond it, after a put the teaching walk's snapshot missed, or across a
//! table's drop and re-creation.

#[path = "common/engine.rs"]
mod engine_common;

use std::ops::Bound;
use std::time::Duration;

use engine_common::*;
use walmdb::{Config, Db, Durability, ReadTxn};

/// The applier held back: deletions stay in the overlay, over LMDB's entries.
fn held(c: Config) -> Config {
    let hour = Duration::from_secs(3600);
    c.apply_interval(hour)
        .apply_max_ops(usize::MAX / 2)
        .checkpoint_interval(hour)
}

fn load(db: &Db, table: &str, keys: impl IntoIterator<Item = usize>) {
    let mut t = db.write().unwrap();
    for i in keys {
        t.put(table, &key(i), b"v").unwrap();
    }
    t.commit().unwrap();
}

fn first(r: &ReadTxn<'_>, table: &str) -> Option<Vec<u8>> {
    r.first(table).unwrap().map(|(k, _)| k.to_vec())
}

fn last(r: &ReadTxn<'_>, table: &str) -> Option<Vec<u8>> {
    r.last(table).unwrap().map(|(k, _)| k.to_vec())
}

/// Pops the first (or last) key in its own commit at `None`.
fn pop(db: &Db, table: &str, back: bool) -> Option<Vec<u8>> {
    let mut t = db.write().unwrap();
    let end = if back { t.last(table) } else { t.first(table) };
    let key = end.unwrap().map(|(k, _)| k.to_vec())?;
    t.delete(table, &key).unwrap();
    t.commit_with(Durability::None).unwrap();
    Some(key)
}

/// A walk whose snapshot did not see a put below (above) its first key must not teach that
/// key as the table's front (back): the put's commit came after the snapshot. Also with
/// keys whose first 8 bytes are the same (what is remembered of a put is its keys' heads).
#[test]
fn a_walk_whose_snapshot_missed_a_put_beyond_its_first_key_teaches_nothing() {
    for (applier_held, long) in [(true, false), (false, false), (true, true)] {
        let name = |i: usize| {
            let k = key(i);
            if long {
                [&b"one-head"[..], &k].concat()
            } else {
                k
            }
        };
        let dir = tempdir();
        let c = if applier_held { held(cfg()) } else { cfg() };
        let db = Db::open_with(dir.path(), c).unwrap();
        let put = |keys: &[usize]| {
            let mut t = db.write().unwrap();
            for &i in keys {
                t.put("q", &name(i), b"v").unwrap();
            }
            t.commit().unwrap();
        };
        put(&(10..20).collect::<Vec<_>>());
        let before = db.read().unwrap();
        put(&[1, 99]);
        assert_eq!(first(&before, "q"), Some(name(10)));
        assert_eq!(last(&before, "q"), Some(name(19)));
        drop(before);
        let r = db.read().unwrap();
        let case = format!("held {applier_held}, long {long}");
        assert_eq!(first(&r, "q"), Some(name(1)), "{case}");
        assert_eq!(last(&r, "q"), Some(name(99)), "{case}");
        drop(r);
        db.close().unwrap();
    }
}

/// Pops teach a newer front; a snapshot older than them still reads every key it saw.
#[test]
fn an_older_snapshot_reads_its_own_ends_after_pops_moved_the_known_ones() {
    let dir = tempdir();
    let db = Db::open_with(dir.path(), held(cfg())).unwrap();
    load(&db, "q", 0..100);
    let older = db.read().unwrap();
    for i in 0..40 {
        assert_eq!(pop(&db, "q", false), Some(key(i)));
        assert_eq!(pop(&db, "q", true), Some(key(99 - i)));
    }
    assert_eq!(first(&older, "q"), Some(key(0)));
    assert_eq!(last(&older, "q"), Some(key(99)));
    let keys: Vec<Vec<u8>> = collect(older.range("q", ..).unwrap())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, (0..100).map(key).collect::<Vec<_>>());
    // A range from a start below the known front, in the newer snapshot and the older one.
    let r = db.read().unwrap();
    let from = |r: &ReadTxn<'_>, start: &[u8]| {
        collect(r.range("q", start..).unwrap().take(2))
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(from(&r, &key(3)), vec![key(40), key(41)]);
    assert_eq!(from(&older, &key(3)), vec![key(3), key(4)]);
    // A transaction's own deletions are not the table's: its first key past them is not
    // the front it teaches, nor is what it reads once it gives up.
    let mut t = db.write().unwrap();
    t.delete("q", &key(40)).unwrap();
    assert_eq!(
        t.first("q").unwrap().map(|(k, _)| k.to_vec()),
        Some(key(41))
    );
    drop(t);
    assert_eq!(first(&db.read().unwrap(), "q"), Some(key(40)));
    // A put below the known front, and one above the known back.
    load(&db, "q", [5, 98]);
    let r = db.read().unwrap();
    assert_eq!(first(&r, "q"), Some(key(5)));
    assert_eq!(last(&r, "q"), Some(key(98)));
    db.close().unwrap();
}

/// Random pops from both ends, puts and deletes anywhere (keys that share their first 8
/// bytes among them), ranges from every kind of start, older snapshots, a table dropped and
/// created again: every read matches a model, with the applier held back and running.
#[test]
fn reads_from_the_ends_match_a_model_through_pops_puts_and_a_drop() {
    for (seed, applier_held) in [(1u64, true), (2, false), (3, true)] {
        let dir = tempdir();
        let c = if applier_held { held(cfg()) } else { cfg() };
        let db = Db::open_with(dir.path(), c).unwrap();
        let mut rng = Rng::new(seed);
        // Short keys and long ones with one 8-byte head.
        let key_of = |i: usize| {
            if i.is_multiple_of(3) {
                format!("same-hd-{i:05}").into_bytes()
            } else {
                format!("k{i:05}").into_bytes()
            }
        };
        let mut model = TableMap::new();
        let mut t = db.write().unwrap();
        for i in 0..600 {
            t.put("q", &key_of(i), b"0").unwrap();
            model.insert(key_of(i), b"0".to_vec());
        }
        t.commit().unwrap();
        let mut older: Option<(ReadTxn<'_>, TableMap)> = None;
        for step in 0..1500 {
            match rng.below(20) {
                0..=7 => {
                    let back = rng.below(2) == 1;
                    let want = if back {
                        model.keys().next_back().cloned()
                    } else {
                        model.keys().next().cloned()
                    };
                    assert_eq!(pop(&db, "q", back), want, "seed {seed} step {step}");
                    if let Some(k) = want {
                        model.remove(&k);
                    }
                }
                8..=10 => {
                    let k = key_of(rng.below(700));
                    let v = format!("{step}").into_bytes();
                    let mut t = db.write().unwrap();
                    t.put("q", &k, &v).unwrap();
                    t.commit_with(Durability::None).unwrap();
                    model.insert(k, v);
                }
                11 => {
                    let k = key_of(rng.below(700));
                    let mut t = db.write().unwrap();
                    t.delete("q", &k).unwrap();
                    t.commit_with(Durability::None).unwrap();
                    model.remove(&k);
                }
                12..=15 => {
                    let r = db.read().unwrap();
                    let k = key_of(rng.below(700));
                    let start = match rng.below(3) {
                        0 => Bound::Unbounded,
                        1 => Bound::Included(&k[..]),
                        _ => Bound::Excluded(&k[..]),
                    };
                    let reverse = rng.below(2) == 1;
                    let (bounds, got) = if reverse {
                        let b = (Bound::Unbounded, start);
                        (b, collect(r.rev_range("q", b).unwrap().take(3)))
                    } else {
                        let b = (start, Bound::Unbounded);
                        (b, collect(r.range("q", b).unwrap().take(3)))
                    };
                    let in_model = model.range::<[u8], _>(bounds);
                    let want: Vec<Kv> = if reverse {
                        in_model
                            .rev()
                            .take(3)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    } else {
                        in_model
                            .take(3)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    };
                    assert_eq!(got, want, "seed {seed} step {step} reverse {reverse}");
                }
                16 => {
                    if let Some((r, then)) = &older {
                        assert_eq!(first(r, "q"), then.keys().next().cloned(), "seed {seed}");
                        assert_eq!(last(r, "q"), then.keys().next_back().cloned());
                    }
                    older = Some((db.read().unwrap(), model.clone()));
                }
                17..=18 => {
                    if let Some((r, then)) = &older {
                        let all = collect(r.range("q", ..).unwrap());
                        let want: Vec<Kv> =
                            then.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        assert_eq!(all, want, "seed {seed} step {step}: an older snapshot");
                    }
                }
                _ => {
                    if step % 7 == 0 {
                        db.drop_table("q").unwrap();
                        model.clear();
                        let k = key_of(rng.below(700));
                        let mut t = db.write().unwrap();
                        t.put("q", &k, b"new").unwrap();
                        t.commit_with(Durability::None).unwrap();
                        model.insert(k, b"new".to_vec());
                    }
                }
            }
        }
        drop(older);
        db.close().unwrap();
    }
}
