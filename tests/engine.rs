//! The engine's data API: reads and writes, ranges and prefixes over LMDB and the overlay,
//! savepoints, tables, visibility and snapshot stability, a multi-threaded model check,
//! transaction timeouts and reader slots.

#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use engine_common::*;
use walmdb::{Config, Db, Durability, Error, Isolation, Lsn, ReadTxn, WalConfig, MAX_KEY_LEN};

fn open(dir: &tempfile::TempDir) -> Db {
    Db::open_with(dir.path(), cfg()).expect("open")
}

fn get(r: &ReadTxn<'_>, table: &str, key: &[u8]) -> Option<Vec<u8>> {
    r.get(table, key).expect("get").map(<[u8]>::to_vec)
}

fn commit_puts(db: &Db, table: &str, kvs: &[(Vec<u8>, Vec<u8>)]) -> Lsn {
    let mut t = db.write().unwrap();
    for (k, v) in kvs {
        t.put(table, k, v).unwrap();
    }
    t.commit().unwrap()
}

// ---------------------------------------------------------------------------------------
// Reads and writes
// ---------------------------------------------------------------------------------------

#[test]
fn put_get_delete_and_read_your_own_writes() {
    let dir = tempdir();
    let db = open(&dir);

    let mut t = db.write().unwrap();
    t.put("users", b"alice", b"1").unwrap();
    t.put("users", b"bob", b"2").unwrap();
    t.put("users", b"carol", b"").unwrap();
    assert_eq!(t.get("users", b"alice").unwrap(), Some(&b"1"[..]));
    t.put("users", b"alice", b"11").unwrap();
    assert_eq!(t.get("users", b"alice").unwrap(), Some(&b"11"[..]));
    t.delete("users", b"bob").unwrap();
    assert_eq!(t.get("users", b"bob").unwrap(), None);
    assert_eq!(
        t.get("users", b"carol").unwrap(),
        Some(&b""[..]),
        "an empty value is a value, not a missing key"
    );
    {
        // Uncommitted writes are invisible to everyone else.
        let r = db.read().unwrap();
        assert_eq!(r.get("users", b"alice").unwrap(), None);
        assert!(!r.table_exists("users").unwrap());
    }
    let lsn1 = t.commit().unwrap();
    assert!(lsn1 >= 1);

    let r = db.read().unwrap();
    assert!(r.lsn() >= lsn1);
    assert!(r.table_exists("users").unwrap());
    assert_eq!(get(&r, "users", b"alice"), Some(b"11".to_vec()));
    assert_eq!(get(&r, "users", b"bob"), None);
    assert_eq!(get(&r, "users", b"carol"), Some(Vec::new()));
    assert_eq!(
        collect(r.range("users", ..).unwrap()),
        vec![
            (b"alice".to_vec(), b"11".to_vec()),
            (b"carol".to_vec(), Vec::new())
        ]
    );
    // A missing table reads as empty.
    assert_eq!(r.get("nope", b"alice").unwrap(), None);
    assert!(collect(r.range("nope", ..).unwrap()).is_empty());
    drop(r);

    // Delete a committed key and a missing one, re-add a deleted one.
    let mut t = db.write().unwrap();
    t.delete("users", b"alice").unwrap();
    t.delete("users", b"nobody").unwrap();
    assert_eq!(t.get("users", b"alice").unwrap(), None);
    t.put("users", b"bob", b"3").unwrap();
    let lsn2 = t.commit().unwrap();
    assert!(lsn2 > lsn1, "LSNs increase: {lsn1} then {lsn2}");

    // A transaction that wrote nothing commits nothing and answers its snapshot's LSN.
    let t = db.write().unwrap();
    let snap = t.snapshot_lsn().unwrap();
    assert_eq!(snap, lsn2);
    assert_eq!(t.commit().unwrap(), snap);
    assert_eq!(db.stats().visible_lsn, lsn2);

    let check = |db: &Db| {
        let r = db.read().unwrap();
        assert_eq!(get(&r, "users", b"alice"), None);
        assert_eq!(get(&r, "users", b"bob"), Some(b"3".to_vec()));
        assert_eq!(get(&r, "users", b"carol"), Some(Vec::new()));
        assert_eq!(get(&r, "users", b"nobody"), None);
    };
    check(&db);
    // The same answers once LMDB holds everything (reads no longer use the overlay).
    db.checkpoint().unwrap();
    check(&db);
    db.close().unwrap();
    let db = open(&dir);
    check(&db);
}

#[test]
fn sync_and_wait_applied_cover_a_commit_made_without_durability() {
    let dir = tempdir();
    let db = open(&dir);
    let mut t = db.write().unwrap();
    t.put("d", b"k", b"v").unwrap();
    let lsn = t.commit_with(Durability::None).unwrap();
    // Visible at once, whatever its durability.
    assert_eq!(get(&db.read().unwrap(), "d", b"k"), Some(b"v".to_vec()));
    assert!(db.stats().visible_lsn >= lsn);
    let durable = db.sync().unwrap();
    assert!(durable >= lsn);
    assert!(db.stats().wal.durable_lsn >= lsn);
    db.wait_applied(lsn).unwrap();
    assert!(db.stats().applied_lsn >= lsn);
    let ck = db.checkpoint().unwrap();
    assert!(ck >= lsn);
    assert_eq!(db.stats().checkpoint_lsn, ck);
}

#[test]
fn binary_keys_the_longest_key_and_large_values_round_trip() {
    let dir = tempdir();
    let db = open(&dir);
    let mut rng = Rng::new(7);
    let mut want = TableMap::new();
    want.insert(vec![0u8], b"zero".to_vec());
    want.insert(vec![0xFF; 3], b"ff".to_vec());
    want.insert(vec![0, 0xFF, 0, 0xFF], rng.bytes(100));
    want.insert(vec![b'x'; MAX_KEY_LEN], b"longest".to_vec());
    want.insert(b"big".to_vec(), rng.bytes(200 * 1024));
    want.insert(b"page".to_vec(), rng.bytes(4096));
    let mut t = db.write().unwrap();
    for (k, v) in &want {
        t.put("bin", k, v).unwrap();
    }
    t.commit().unwrap();
    assert_eq!(scan(&db, "bin"), want);
    db.checkpoint().unwrap();
    assert_eq!(scan(&db, "bin"), want);
    let r = db.read().unwrap();
    for (k, v) in &want {
        assert_eq!(r.get("bin", k).unwrap(), Some(&v[..]));
    }
}

#[test]
fn invalid_keys_table_names_and_values_are_refused() {
    let dir = tempdir();
    let db = open(&dir);
    let mut t = db.write().unwrap();
    let is_invalid = |r: walmdb::Result<()>, what: &str| match r {
        Err(Error::InvalidInput { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected InvalidInput({what}), got {other:?}"),
    };
    is_invalid(t.put("t", b"", b"v"), "key");
    is_invalid(t.delete("t", b""), "key");
    is_invalid(t.put("t", &[1u8; MAX_KEY_LEN + 1], b"v"), "key");
    is_invalid(t.delete("t", &[1u8; MAX_KEY_LEN + 1]), "key");
    is_invalid(t.put("", b"k", b"v"), "table name");
    is_invalid(t.put("a\0b", b"k", b"v"), "table name");
    is_invalid(
        t.put(&"n".repeat(walmdb::MAX_TABLE_NAME_LEN + 1), b"k", b"v"),
        "table name",
    );
    let max = wal_cfg().max_record_bytes;
    assert!(matches!(
        t.put("t", b"k", &vec![0u8; max + 1]),
        Err(Error::RecordTooLarge { .. })
    ));
    // The refused calls left nothing behind; the transaction still works.
    t.put(&"n".repeat(walmdb::MAX_TABLE_NAME_LEN), b"k", b"long name")
        .unwrap();
    t.put("t", &[1u8; MAX_KEY_LEN], b"v").unwrap();
    // Reads refuse the keys writes refuse (they used to answer "missing").
    let get_is_invalid = |r: walmdb::Result<Option<&[u8]>>| {
        assert!(
            matches!(r, Err(Error::InvalidInput { what: "key", .. })),
            "{r:?}"
        )
    };
    get_is_invalid(t.get("t", b""));
    get_is_invalid(t.get("t", &[1u8; MAX_KEY_LEN + 1]));
    {
        let r = db.read().unwrap();
        get_is_invalid(r.get("t", b""));
        get_is_invalid(r.get("t", &[1u8; MAX_KEY_LEN + 1]));
    }
    t.commit().unwrap();
    assert_eq!(
        scan(&db, "t").into_iter().collect::<Vec<_>>(),
        vec![(vec![1u8; MAX_KEY_LEN], b"v".to_vec())]
    );
    assert_eq!(db.tables().unwrap().len(), 2);

    assert!(matches!(
        db.create_table(""),
        Err(Error::InvalidInput {
            what: "table name",
            ..
        })
    ));
    drop(db);
    let dir2 = tempdir();
    assert!(matches!(
        Db::open_with(dir2.path(), cfg().table("bad\0name")),
        Err(Error::InvalidInput {
            what: "table name",
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------
// Ranges and prefixes
// ---------------------------------------------------------------------------------------

/// Points for the bound cases: present keys, gaps, before the first and after the last.
fn range_points() -> Vec<Vec<u8>> {
    vec![
        b"a".to_vec(),
        b"k".to_vec(),
        key(0),
        key(1),
        key(40),
        key(41),
        key(98),
        key(99),
        b"z".to_vec(),
    ]
}

fn read_scan(r: &ReadTxn<'_>, table: &str, s: Bound<&[u8]>, e: Bound<&[u8]>, rev: bool) -> Vec<Kv> {
    if rev {
        collect(r.rev_range(table, (s, e)).unwrap())
    } else {
        collect(r.range(table, (s, e)).unwrap())
    }
}

#[test]
fn range_and_rev_range_match_a_btreemap_for_every_bound_kind() {
    let dir = tempdir();
    let db = open(&dir);
    let points = range_points();

    // Even keys 0..100, applied to LMDB.
    let mut model = TableMap::new();
    let kvs: Vec<Kv> = (0..100)
        .step_by(2)
        .map(|i| (key(i), format!("v{i}").into_bytes()))
        .collect();
    model.extend(kvs.iter().cloned());
    commit_puts(&db, "r", &kvs);
    db.checkpoint().unwrap();
    {
        let r = db.read().unwrap();
        check_ranges("LMDB only", &model, &points, |s, e, rev| {
            read_scan(&r, "r", s, e, rev)
        });
        // A table that does not exist is empty for every range.
        check_ranges("missing table", &TableMap::new(), &points, |s, e, rev| {
            read_scan(&r, "missing", s, e, rev)
        });
    }

    // An old reader pins the overlay: newer versions stay there and shadow LMDB.
    let old = db.read().unwrap();
    let old_model = model.clone();
    let mut t = db.write().unwrap();
    for i in 0..100 {
        match i % 6 {
            0 => {
                t.delete("r", &key(i)).unwrap();
                model.remove(&key(i));
            }
            1 | 2 => {
                let v = format!("new{i}").into_bytes();
                t.put("r", &key(i), &v).unwrap();
                model.insert(key(i), v);
            }
            _ => {}
        }
    }
    t.commit().unwrap();
    db.checkpoint().unwrap();
    assert!(
        db.stats().unapplied_bytes > 0,
        "the old reader pins versions"
    );
    {
        let r = db.read().unwrap();
        check_ranges("LMDB and overlay", &model, &points, |s, e, rev| {
            read_scan(&r, "r", s, e, rev)
        });
    }
    check_ranges("old snapshot", &old_model, &points, |s, e, rev| {
        read_scan(&old, "r", s, e, rev)
    });

    // A write transaction's merged view over both.
    let mut t = db.write().unwrap();
    let mut merged = model.clone();
    for i in [0, 1, 3, 7, 40, 41, 60, 98, 99] {
        let v = format!("own{i}").into_bytes();
        t.put("r", &key(i), &v).unwrap();
        merged.insert(key(i), v);
    }
    for i in [2, 4, 5, 42, 97] {
        t.delete("r", &key(i)).unwrap();
        merged.remove(&key(i));
    }
    check_ranges("write txn", &merged, &points, |s, e, rev| {
        if rev {
            collect(t.rev_range("r", (s, e)).unwrap())
        } else {
            collect(t.range("r", (s, e)).unwrap())
        }
    });
    drop(t);
    drop(old);
}

#[test]
fn range_over_more_overlay_keys_than_one_chunk_in_both_directions() {
    // 300 overlay versions pinned by an old reader: the overlay is walked in chunks.
    let dir = tempdir();
    let db = open(&dir);
    let mut model = TableMap::new();
    let base: Vec<Kv> = (0..300)
        .step_by(3)
        .map(|i| (key(i), b"lmdb".to_vec()))
        .collect();
    model.extend(base.iter().cloned());
    commit_puts(&db, "c", &base);
    db.checkpoint().unwrap();
    let _pin = db.read().unwrap();
    for chunk in (0..300).collect::<Vec<_>>().chunks(50) {
        let mut t = db.write().unwrap();
        for &i in chunk {
            if i % 7 == 0 {
                t.delete("c", &key(i)).unwrap();
                model.remove(&key(i));
            } else {
                t.put("c", &key(i), b"overlay").unwrap();
                model.insert(key(i), b"overlay".to_vec());
            }
        }
        t.commit().unwrap();
    }
    let r = db.read().unwrap();
    let all: Vec<Kv> = model.clone().into_iter().collect();
    assert_eq!(collect(r.range("c", ..).unwrap()), all);
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(collect(r.rev_range("c", ..).unwrap()), rev);
    let points = vec![
        key(0),
        key(63),
        key(64),
        key(65),
        key(128),
        key(200),
        key(299),
    ];
    check_ranges("chunked overlay", &model, &points, |s, e, rev| {
        read_scan(&r, "c", s, e, rev)
    });
}

fn prefix_keys() -> Vec<Vec<u8>> {
    vec![
        vec![0x01],
        vec![0x01, 0xFF],
        vec![0x01, 0xFF, 0xFF],
        vec![0x02],
        vec![0xFE, 0xFF],
        vec![0xFF],
        vec![0xFF, 0x00],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0x01],
        vec![0xFF, 0xFF, 0xFF],
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"abd".to_vec(),
        b"ac".to_vec(),
    ]
}

fn prefixes() -> Vec<Vec<u8>> {
    vec![
        vec![0xFF],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0xFF],
        vec![0xFF, 0xFF, 0xFF, 0xFF],
        vec![0x01, 0xFF],
        vec![0x01],
        vec![0xFE],
        b"ab".to_vec(),
        b"a".to_vec(),
        b"b".to_vec(),
    ]
}

#[test]
fn prefix_and_rev_prefix_including_0xff_bytes() {
    let dir = tempdir();
    let db = open(&dir);
    let keys = prefix_keys();
    let mut model = TableMap::new();
    // Half in LMDB, half in the overlay (pinned by an old reader).
    let (first, second) = keys.split_at(keys.len() / 2);
    let kvs: Vec<Kv> = first.iter().map(|k| (k.clone(), k.clone())).collect();
    model.extend(kvs.iter().cloned());
    commit_puts(&db, "p", &kvs);
    db.checkpoint().unwrap();
    let _pin = db.read().unwrap();
    let kvs: Vec<Kv> = second.iter().map(|k| (k.clone(), b"o".to_vec())).collect();
    model.extend(kvs.iter().cloned());
    commit_puts(&db, "p", &kvs);

    let r = db.read().unwrap();
    for p in prefixes() {
        for rev in [false, true] {
            let got = if rev {
                collect(r.rev_prefix("p", &p).unwrap())
            } else {
                collect(r.prefix("p", &p).unwrap())
            };
            assert_eq!(got, model_prefix(&model, &p, rev), "prefix {p:?} rev={rev}");
        }
    }

    // The merged view of a write transaction, with own puts and deletes under the prefixes.
    let mut t = db.write().unwrap();
    let mut merged = model.clone();
    for k in [
        vec![0xFF, 0xFF, 0xFF, 0xFF],
        vec![0xFF, 0x01],
        b"abz".to_vec(),
    ] {
        t.put("p", &k, b"own").unwrap();
        merged.insert(k, b"own".to_vec());
    }
    for k in [vec![0xFF, 0xFF], vec![0x01, 0xFF], b"ab".to_vec()] {
        t.delete("p", &k).unwrap();
        merged.remove(&k);
    }
    for p in prefixes() {
        for rev in [false, true] {
            let got = if rev {
                collect(t.rev_prefix("p", &p).unwrap())
            } else {
                collect(t.prefix("p", &p).unwrap())
            };
            assert_eq!(
                got,
                model_prefix(&merged, &p, rev),
                "write txn prefix {p:?} rev={rev}"
            );
        }
    }
}

#[test]
fn empty_prefix_and_empty_key_bounds_scan_lmdb_data() {
    let dir = tempdir();
    let db = open(&dir);
    let kvs = vec![
        (b"a".to_vec(), b"1".to_vec()),
        (b"b".to_vec(), b"2".to_vec()),
    ];
    commit_puts(&db, "e", &kvs);
    db.checkpoint().unwrap(); // the data is in LMDB now
    let r = db.read().unwrap();
    let mut rev = kvs.clone();
    rev.reverse();
    let empty: &[u8] = b"";
    // The overlay-only path and rev_prefix answer correctly; the LMDB cursor refuses the
    // zero-length key that the start bound hands it.
    assert_eq!(try_collect(r.rev_prefix("e", empty).unwrap()).unwrap(), rev);
    assert_eq!(try_collect(r.prefix("e", empty).unwrap()).unwrap(), kvs);
    assert_eq!(
        try_collect(
            r.range("e", (Bound::Included(empty), Bound::Unbounded))
                .unwrap()
        )
        .unwrap(),
        kvs
    );
    assert_eq!(
        try_collect(
            r.range("e", (Bound::Excluded(empty), Bound::Unbounded))
                .unwrap()
        )
        .unwrap(),
        kvs
    );
    assert_eq!(
        try_collect(
            r.rev_range("e", (Bound::Unbounded, Bound::Excluded(empty)))
                .unwrap()
        )
        .unwrap(),
        Vec::<Kv>::new()
    );
}

/// Waits until the applier has given up on a batch LMDB cannot hold (`map_size` is the
/// maximum), so the snapshot's newest commits stay in the overlay for good.
fn stall_applier(db: &Db) {
    wait_until("the applier reports the map full", || {
        db.stats().storage_full
    });
    let st = db.stats();
    assert!(
        st.applied_lsn < st.visible_lsn,
        "the newest commit is not in LMDB: applied {} visible {}",
        st.applied_lsn,
        st.visible_lsn
    );
}

#[test]
fn write_txn_merged_view_over_snapshot_split_between_lmdb_and_overlay() {
    let dir = tempdir();
    let cfg = Config::default()
        .wal(WalConfig {
            segment_bytes: 4 << 20,
            max_record_bytes: 2 << 20,
            ..wal_cfg()
        })
        .map_size(1 << 20)
        .max_map_size(1 << 20);
    let db = Db::open_with(dir.path(), cfg).unwrap();
    // LMDB part: even keys 0..100.
    let mut model = TableMap::new();
    let base: Vec<Kv> = (0..100)
        .step_by(2)
        .map(|i| (key(i), format!("lmdb{i}").into_bytes()))
        .collect();
    model.extend(base.iter().cloned());
    commit_puts(&db, "m", &base);
    db.checkpoint().unwrap();
    // Overlay part: one commit LMDB's 1 MiB map cannot take (a big filler table), which
    // also overwrites and deletes LMDB keys and adds odd keys.
    let mut t = db.write().unwrap();
    let mut rng = Rng::new(11);
    for i in 0..160 {
        t.put("filler", &key(i), &rng.bytes(8 * 1024)).unwrap();
    }
    for i in 0..100 {
        let k = key(i);
        match i % 5 {
            0 => {
                t.delete("m", &k).unwrap();
                model.remove(&k);
            }
            1 | 3 => {
                let v = format!("ovl{i}").into_bytes();
                t.put("m", &k, &v).unwrap();
                model.insert(k, v);
            }
            2 if i % 4 == 0 => {
                let v = format!("ovl{i}").into_bytes();
                t.put("m", &k, &v).unwrap();
                model.insert(k, v);
            }
            _ => {}
        }
    }
    t.commit().unwrap();
    stall_applier(&db);

    let points = range_points();
    let r = db.read().unwrap();
    check_ranges(
        "read txn over LMDB + overlay",
        &model,
        &points,
        |s, e, rev| read_scan(&r, "m", s, e, rev),
    );
    drop(r);

    let mut w = db.write().unwrap();
    let mut merged = model.clone();
    // Own puts: a new key, over an LMDB-only key, over an overlay key, over a key the
    // overlay deleted; own deletes: of an LMDB-only key, an overlay key, an overlay-deleted
    // key and a missing key; a put then a delete, and a delete then a put.
    let puts = [
        (201, "new"),
        (4, "over-lmdb"),
        (1, "over-ovl"),
        (10, "over-del"),
    ];
    for (i, v) in puts {
        w.put("m", &key(i), v.as_bytes()).unwrap();
        merged.insert(key(i), v.as_bytes().to_vec());
    }
    for i in [14, 3, 20, 150] {
        w.delete("m", &key(i)).unwrap();
        merged.remove(&key(i));
    }
    w.put("m", &key(41), b"gone").unwrap();
    w.delete("m", &key(41)).unwrap();
    merged.remove(&key(41));
    w.delete("m", &key(98)).unwrap();
    w.put("m", &key(98), b"back").unwrap();
    merged.insert(key(98), b"back".to_vec());
    for i in 0..210 {
        assert_eq!(
            w.get("m", &key(i)).unwrap(),
            merged.get(&key(i)).map(Vec::as_slice),
            "get {i}"
        );
    }
    check_ranges("write txn merged view", &merged, &points, |s, e, rev| {
        if rev {
            collect(w.rev_range("m", (s, e)).unwrap())
        } else {
            collect(w.range("m", (s, e)).unwrap())
        }
    });
    for p in [
        b"k00".to_vec(),
        b"k004".to_vec(),
        b"k".to_vec(),
        b"k02".to_vec(),
    ] {
        assert_eq!(
            collect(w.prefix("m", &p).unwrap()),
            model_prefix(&merged, &p, false)
        );
        assert_eq!(
            collect(w.rev_prefix("m", &p).unwrap()),
            model_prefix(&merged, &p, true)
        );
    }
    // The map is full: the commit is refused and nothing changes.
    assert!(matches!(w.commit(), Err(Error::StorageFull { .. })));
    assert_eq!(scan(&db, "m"), model);
}

// ---------------------------------------------------------------------------------------
// Savepoints and abort
// ---------------------------------------------------------------------------------------

#[test]
fn rollback_to_savepoint_restores_overwritten_and_deleted_values() {
    let dir = tempdir();
    let db = open(&dir);
    commit_puts(
        &db,
        "s",
        &[
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ],
    );
    let mut t = db.write().unwrap();
    t.put("s", b"c", b"3").unwrap(); // an own write before the savepoint
    let sp = t.savepoint();
    t.put("s", b"a", b"10").unwrap(); // overwrite a snapshot value
    t.delete("s", b"b").unwrap(); // delete a snapshot value
    t.put("s", b"c", b"30").unwrap(); // overwrite an own value
    t.delete("s", b"c").unwrap(); // ... then delete it
    t.put("s", b"d", b"4").unwrap(); // a new key
    t.put("other", b"x", b"y").unwrap(); // a new table
    assert_eq!(t.get("s", b"b").unwrap(), None);
    t.rollback_to(&sp).unwrap();
    assert_eq!(t.get("s", b"a").unwrap(), Some(&b"1"[..]));
    assert_eq!(t.get("s", b"b").unwrap(), Some(&b"2"[..]));
    assert_eq!(t.get("s", b"c").unwrap(), Some(&b"3"[..]));
    assert_eq!(t.get("s", b"d").unwrap(), None);
    assert_eq!(t.get("other", b"x").unwrap(), None);
    let view = collect(t.range("s", ..).unwrap());
    assert_eq!(
        view,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
            (b"c".to_vec(), b"3".to_vec())
        ]
    );
    t.commit().unwrap();
    let want: TableMap = view.into_iter().collect();
    assert_eq!(scan(&db, "s"), want);
    assert_eq!(
        db.tables().unwrap(),
        vec!["s".to_string()],
        "the rolled-back table was not created"
    );
}

#[test]
fn nested_savepoints_and_rolling_back_twice_to_the_same_one() {
    let dir = tempdir();
    let db = open(&dir);
    let mut t = db.write().unwrap();
    let sp1 = t.savepoint();
    t.put("n", b"x", b"1").unwrap();
    let sp2 = t.savepoint();
    t.put("n", b"x", b"2").unwrap();
    t.put("n", b"y", b"2").unwrap();
    let sp3 = t.savepoint();
    t.put("n", b"x", b"3").unwrap();
    t.delete("n", b"y").unwrap();

    t.rollback_to(&sp3).unwrap();
    assert_eq!(t.get("n", b"x").unwrap(), Some(&b"2"[..]));
    assert_eq!(t.get("n", b"y").unwrap(), Some(&b"2"[..]));
    t.rollback_to(&sp3).unwrap(); // nothing to undo: same state
    assert_eq!(t.get("n", b"x").unwrap(), Some(&b"2"[..]));

    t.rollback_to(&sp2).unwrap();
    assert_eq!(t.get("n", b"x").unwrap(), Some(&b"1"[..]));
    assert_eq!(t.get("n", b"y").unwrap(), None);
    // The savepoint stays usable: write again, roll back to it again.
    t.put("n", b"z", b"9").unwrap();
    t.put("n", b"x", b"9").unwrap();
    t.rollback_to(&sp2).unwrap();
    assert_eq!(t.get("n", b"x").unwrap(), Some(&b"1"[..]));
    assert_eq!(t.get("n", b"z").unwrap(), None);
    t.rollback_to(&sp2).unwrap();
    assert_eq!(
        collect(t.range("n", ..).unwrap()),
        vec![(b"x".to_vec(), b"1".to_vec())]
    );

    t.rollback_to(&sp1).unwrap();
    assert_eq!(t.get("n", b"x").unwrap(), None);
    // sp3 was rolled back past (nothing was written since).
    assert!(matches!(
        t.rollback_to(&sp3),
        Err(Error::InvalidInput {
            what: "savepoint",
            ..
        })
    ));
    t.put("n", b"w", b"1").unwrap();
    let lsn = t.commit().unwrap();
    assert!(lsn > 0);
    assert_eq!(
        scan(&db, "n").into_iter().collect::<Vec<_>>(),
        vec![(b"w".to_vec(), b"1".to_vec())]
    );
}

#[test]
fn a_savepoint_of_another_transaction_is_refused() {
    let dir = tempdir();
    let db = open(&dir);
    let mut a = db.write().unwrap();
    a.put("s", b"a", b"1").unwrap();
    let sp_a = a.savepoint();
    std::thread::sleep(Duration::from_millis(2)); // distinct start instants
    let mut b = db.write().unwrap();
    b.savepoint();
    b.put("s", b"b", b"1").unwrap();
    b.put("s", b"c", b"1").unwrap();
    assert!(matches!(
        b.rollback_to(&sp_a),
        Err(Error::InvalidInput {
            what: "savepoint",
            ..
        })
    ));
    assert_eq!(b.get("s", b"b").unwrap(), Some(&b"1"[..]));
    drop(a);
    b.commit().unwrap();
    assert_eq!(scan(&db, "s").len(), 2);
}

#[test]
fn a_savepoint_rolled_back_past_is_refused_even_after_new_writes() {
    let dir = tempdir();
    let db = open(&dir);
    let mut t = db.write().unwrap();
    let sp1 = t.savepoint();
    t.put("s", b"a", b"1").unwrap();
    let sp2 = t.savepoint(); // the state {a=1}
    t.rollback_to(&sp1).unwrap(); // sp2 is gone now
    t.put("s", b"b", b"1").unwrap();
    t.put("s", b"c", b"1").unwrap();
    let r = t.rollback_to(&sp2);
    let state: Vec<Kv> = collect(t.range("s", ..).unwrap());
    // Either refused (as it is when nothing was written since), or back to {a=1}; never a
    // state the transaction was never in.
    assert!(
        matches!(
            r,
            Err(Error::InvalidInput {
                what: "savepoint",
                ..
            })
        ) || state == vec![(b"a".to_vec(), b"1".to_vec())],
        "rollback_to(stale savepoint) = {r:?}, leaving {state:?}"
    );
}

#[test]
fn dropping_a_write_txn_aborts_it() {
    let dir = tempdir();
    let db = open(&dir);
    commit_puts(&db, "t", &[(b"keep".to_vec(), b"1".to_vec())]);
    {
        let mut t = db.write().unwrap();
        assert_eq!(
            db.stats().open_snapshots,
            0,
            "a write txn takes its snapshot at its first read"
        );
        assert_eq!(t.get("t", b"keep").unwrap(), Some(&b"1"[..]));
        t.put("t", b"keep", b"changed").unwrap();
        t.put("t", b"new", b"1").unwrap();
        t.delete("t", b"keep").unwrap();
        t.put("fresh", b"k", b"v").unwrap();
        let _sp = t.savepoint();
        t.put("t", b"after-sp", b"1").unwrap();
        assert_eq!(db.stats().open_snapshots, 1);
        // dropped here
    }
    assert_eq!(db.stats().open_snapshots, 0);
    let visible = db.stats().visible_lsn;
    let r = db.read().unwrap();
    assert_eq!(r.lsn(), visible);
    assert_eq!(get(&r, "t", b"keep"), Some(b"1".to_vec()));
    assert_eq!(get(&r, "t", b"new"), None);
    assert!(!r.table_exists("fresh").unwrap());
    assert_eq!(db.tables().unwrap(), vec!["t".to_string()]);
    drop(r);
    db.close().unwrap();
    let db = open(&dir);
    assert_eq!(
        db.recovery_report().last_lsn,
        visible,
        "the aborted txn never reached the log"
    );
    assert_eq!(scan(&db, "t").len(), 1);
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

#[test]
fn tables_declared_created_on_first_write_listed_and_dropped() {
    let dir = tempdir();
    let db = Db::open_with(dir.path(), cfg().table("declared")).unwrap();
    assert_eq!(db.tables().unwrap(), vec!["declared".to_string()]);
    assert!(db.table_exists("declared").unwrap());
    assert!(!db.table_exists("auto").unwrap());

    // Created on first write.
    let mut t = db.write().unwrap();
    for i in 0..50 {
        t.put("auto", &key(i), b"old").unwrap();
    }
    t.commit().unwrap();
    assert!(db.table_exists("auto").unwrap());
    assert_eq!(
        db.tables().unwrap(),
        vec!["auto".to_string(), "declared".to_string()]
    );
    // A delete alone creates nothing.
    let mut t = db.write().unwrap();
    t.delete("ghost", b"k").unwrap();
    t.commit().unwrap();
    assert!(!db.table_exists("ghost").unwrap());
    // An explicit create makes an empty table.
    db.create_table("empty").unwrap();
    assert!(db.table_exists("empty").unwrap());
    assert!(scan(&db, "empty").is_empty());

    // Some of "auto" in LMDB, some still in the overlay, when it is dropped.
    db.checkpoint().unwrap();
    let before_drop = db.read().unwrap();
    let mut t = db.write().unwrap();
    for i in 50..60 {
        t.put("auto", &key(i), b"old").unwrap();
    }
    t.commit().unwrap();
    db.drop_table("auto").unwrap();
    db.checkpoint().unwrap(); // LMDB's copy is cleared under the old snapshot
    assert!(!db.table_exists("auto").unwrap());
    assert_eq!(
        db.tables().unwrap(),
        vec!["declared".to_string(), "empty".to_string()]
    );
    {
        let r = db.read().unwrap();
        assert!(!r.table_exists("auto").unwrap());
        assert_eq!(get(&r, "auto", &key(3)), None);
        assert!(collect(r.range("auto", ..).unwrap()).is_empty());
    }
    // A snapshot from before the drop still sees the table.
    assert!(before_drop.table_exists("auto").unwrap());
    assert_eq!(collect(before_drop.range("auto", ..).unwrap()).len(), 50);
    drop(before_drop);

    assert!(matches!(db.drop_table("auto"), Err(Error::TableNotFound(ref n)) if n == "auto"));
    assert!(matches!(db.drop_table("never"), Err(Error::TableNotFound(ref n)) if n == "never"));

    // Recreated under the same name: empty but for what is written now.
    let mut t = db.write().unwrap();
    t.put("auto", &key(99), b"new").unwrap();
    t.commit().unwrap();
    let want: TableMap = [(key(99), b"new".to_vec())].into_iter().collect();
    assert_eq!(scan(&db, "auto"), want);
    db.checkpoint().unwrap();
    assert_eq!(scan(&db, "auto"), want);

    db.close().unwrap();
    let db = Db::open_with(dir.path(), cfg().table("declared")).unwrap();
    assert_eq!(
        db.tables().unwrap(),
        vec![
            "auto".to_string(),
            "declared".to_string(),
            "empty".to_string()
        ]
    );
    assert_eq!(scan(&db, "auto"), want);
    // Dropping a declared table works; the next open declares it again, empty.
    commit_puts(&db, "declared", &[(b"d".to_vec(), b"1".to_vec())]);
    db.drop_table("declared").unwrap();
    db.drop_table("empty").unwrap();
    assert_eq!(db.tables().unwrap(), vec!["auto".to_string()]);
    db.close().unwrap();
    let db = Db::open_with(dir.path(), cfg().table("declared")).unwrap();
    assert_eq!(
        db.tables().unwrap(),
        vec!["auto".to_string(), "declared".to_string()]
    );
    assert!(scan(&db, "declared").is_empty());
}

#[test]
fn more_tables_than_max_tables_is_refused_without_poisoning() {
    let dir = tempdir();
    let small = || cfg().max_tables(2);
    let db = Db::open_with(dir.path(), small()).unwrap();
    let acked = CommitLog::default();
    for i in 0..4 {
        let table = format!("t{i}");
        let mut t = db.write().unwrap();
        t.put(&table, b"k", b"v").unwrap();
        match t.commit() {
            Ok(lsn) => acked.record(lsn, vec![Op::put(&table, b"k", b"v")]),
            Err(e) => assert!(
                i >= 2 && matches!(e, walmdb::Error::TooManyTables { max_tables: 2 }),
                "table {i}: {e}"
            ),
        }
        // Let the applier reach (and fail on) a table LMDB cannot create.
        let _ = db.checkpoint();
    }
    // Whatever happens past the limit, the engine keeps taking commits to existing tables,
    let mut t = db.write().unwrap();
    t.put("t0", b"after", b"1").unwrap();
    let after = t
        .commit()
        .expect("a commit to an existing table after the limit");
    acked.record(after, vec![Op::put("t0", b"after", b"1")]);
    let _ = db.close();
    // ... and a reopen with the same configuration finds every acknowledged commit.
    let db = Db::open_with(dir.path(), small()).expect("reopen with the same configuration");
    assert_eq!(dump(&db), acked.model());
}

// ---------------------------------------------------------------------------------------
// Threads, visibility, snapshots
// ---------------------------------------------------------------------------------------

fn assert_send<T: Send>(_: &T) {}

#[test]
fn read_txn_is_send_and_reads_its_snapshot_in_another_thread() {
    let dir = tempdir();
    let db = open(&dir);
    commit_puts(&db, "t", &[(b"a".to_vec(), b"1".to_vec())]);
    let r = db.read().unwrap();
    assert_send(&r);
    // Commits after the snapshot began are not in it, wherever it is read.
    commit_puts(
        &db,
        "t",
        &[
            (b"a".to_vec(), b"2".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ],
    );
    db.checkpoint().unwrap();
    let lsn = r.lsn();
    let seen = std::thread::scope(|s| {
        s.spawn(move || {
            assert_eq!(r.lsn(), lsn);
            let a = r.get("t", b"a").unwrap().map(<[u8]>::to_vec);
            let all = collect(r.range("t", ..).unwrap());
            (a, all)
            // r is dropped on this thread
        })
        .join()
        .unwrap()
    });
    assert_eq!(seen.0, Some(b"1".to_vec()));
    assert_eq!(seen.1, vec![(b"a".to_vec(), b"1".to_vec())]);
    assert_eq!(db.stats().open_snapshots, 0);
    let r = db.read().unwrap();
    assert_eq!(get(&r, "t", b"a"), Some(b"2".to_vec()));
}

#[test]
fn a_new_read_txn_sees_every_commit_acknowledged_before_it_began() {
    // Each thread commits a key (at a random durability), hands it to the next thread,
    // which opens a new read transaction and must see it.
    const THREADS: usize = 4;
    const ROUNDS: usize = 75;
    let dir = tempdir();
    let db = open(&dir);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::channel::<(Vec<u8>, Vec<u8>, Lsn)>())
        .unzip();
    std::thread::scope(|s| {
        for (i, rx) in rxs.into_iter().enumerate() {
            let tx = txs[(i + 1) % THREADS].clone();
            let db = &db;
            s.spawn(move || {
                let mut rng = Rng::new(100 + i as u64);
                for round in 0..ROUNDS {
                    let k = format!("t{i}-{}", rng.below(10)).into_bytes();
                    let v = format!("{i}-{round}").into_bytes();
                    let mut t = db.write().unwrap();
                    t.put("vis", &k, &v).unwrap();
                    let lsn = t.commit_with(rng.durability()).unwrap();
                    tx.send((k, v, lsn)).unwrap();

                    let (k, v, lsn) = rx.recv().unwrap();
                    let r = db.read().unwrap();
                    assert!(r.lsn() >= lsn, "snapshot {} before commit {lsn}", r.lsn());
                    // The sender may have overwritten the key since; only its own later
                    // rounds can have, so the value is this one or a later one of its.
                    let got = r.get("vis", &k).unwrap().expect("acknowledged key visible");
                    let round_of = |v: &[u8]| -> usize {
                        let s = std::str::from_utf8(v).unwrap();
                        s.split('-').nth(1).unwrap().parse().unwrap()
                    };
                    assert!(round_of(got) >= round_of(&v), "{got:?} older than {v:?}");
                }
            });
        }
        drop(txs);
    });
}

/// The snapshot registry grows past its first chunk of 32 slots when that many snapshots
/// are open at once; the slots beyond it are counted and hold back eviction as the first
/// ones do. With the applier held back, 80 snapshots each see a different commit while
/// LMDB holds none; the first 32 (the first chunk) end, the applier applies everything, and
/// every snapshot left still reads its own commit's value, which only the overlay holds for
/// it.
#[test]
fn snapshots_past_the_registrys_first_chunk_are_counted_and_hold_back_eviction() {
    let dir = tempdir();
    let hour = Duration::from_secs(3600);
    let held_back = cfg()
        .apply_interval(hour)
        .apply_max_ops(usize::MAX / 2)
        .checkpoint_interval(hour);
    let db = Db::open_with(dir.path(), held_back).unwrap();
    let mut readers = Vec::new();
    for i in 0..80u32 {
        commit_puts(&db, "t", &[(b"k".to_vec(), i.to_be_bytes().to_vec())]);
        readers.push((i, db.read().unwrap()));
    }
    assert_eq!(db.stats().applied_lsn, 0, "the applier is held back");
    assert_eq!(db.stats().open_snapshots, 80);
    let rest = readers.split_off(32);
    drop(readers);
    assert_eq!(db.stats().open_snapshots, 48);
    db.wait_applied(db.stats().visible_lsn).unwrap();
    for (i, r) in &rest {
        assert_eq!(
            get(r, "t", b"k"),
            Some(i.to_be_bytes().to_vec()),
            "snapshot {i}"
        );
    }
    drop(rest);
    assert_eq!(db.stats().open_snapshots, 0);
    db.close().unwrap();
}

#[test]
fn snapshot_is_stable_across_commits_and_checkpoints() {
    let dir = tempdir();
    let db = open(&dir);
    let base: Vec<Kv> = (0..50).map(|i| (key(i), b"v0".to_vec())).collect();
    commit_puts(&db, "s", &base);
    let base: TableMap = base.into_iter().collect();
    let old = db.read().unwrap();
    let old_lsn = old.lsn();
    let old_w = db.write().unwrap(); // a write txn's snapshot is stable too
    old_w.snapshot_lsn().unwrap(); // taken now

    let mut model = base.clone();
    let mut rng = Rng::new(5);
    for round in 1..=30 {
        let mut t = db.write().unwrap();
        for _ in 0..5 {
            let i = rng.below(70);
            if rng.percent(25) {
                t.delete("s", &key(i)).unwrap();
                model.remove(&key(i));
            } else {
                let v = format!("v{round}").into_bytes();
                t.put("s", &key(i), &v).unwrap();
                model.insert(key(i), v);
            }
        }
        t.commit().unwrap();
        if round % 10 == 0 {
            // The applier applies the newer versions and retires what no snapshot needs.
            db.checkpoint().unwrap();
            let st = db.stats();
            assert_eq!(st.applied_lsn, st.visible_lsn);
            assert_eq!(st.open_snapshots, 2);
        }
    }
    let check_old = |what: &str| {
        assert_eq!(old.lsn(), old_lsn);
        assert_eq!(
            collect(old.range("s", ..).unwrap()),
            base.clone().into_iter().collect::<Vec<_>>(),
            "{what}"
        );
        for i in 0..70 {
            assert_eq!(
                get(&old, "s", &key(i)),
                base.get(&key(i)).cloned(),
                "{what}: {i}"
            );
            assert_eq!(
                old_w.get("s", &key(i)).unwrap().map(<[u8]>::to_vec),
                base.get(&key(i)).cloned(),
                "{what}: write txn {i}"
            );
        }
    };
    check_old("after 30 commits and 3 checkpoints");
    assert_eq!(scan(&db, "s"), model);
    db.checkpoint().unwrap();
    check_old("after another checkpoint");
    assert_eq!(scan(&db, "s"), model);
    assert!(
        db.stats().unapplied_bytes > 0,
        "old snapshots pin overlay versions"
    );

    drop(old);
    drop(old_w);
    // With the pins gone, the applier retires the overlay.
    db.checkpoint().unwrap();
    wait_until("the overlay is retired", || db.stats().unapplied_bytes == 0);
    assert_eq!(scan(&db, "s"), model);
    assert_eq!(db.stats().open_snapshots, 0);
}

#[test]
fn concurrent_readers_never_see_a_partial_transaction() {
    // Every commit sets all keys of one group, across three tables, to the same value.
    const TABLES: [&str; 3] = ["g1", "g2", "g3"];
    const COMMITS: u64 = 60;
    let dir = tempdir();
    let db = Db::open_with(dir.path(), cfg().apply_max_ops(3)).unwrap();
    let stop = AtomicBool::new(false);
    let checks: u64 = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (db, stop) = (&db, &stop);
                s.spawn(move || {
                    let mut checks = 0u64;
                    while !stop.load(Ordering::Relaxed) || checks == 0 {
                        let r = db.read().unwrap();
                        for g in 0..4 {
                            let mut vals = Vec::new();
                            for table in TABLES {
                                for k in 0..3 {
                                    vals.push(get(&r, table, format!("g{g}-{k}").as_bytes()));
                                }
                            }
                            assert!(
                                vals.windows(2).all(|w| w[0] == w[1]),
                                "group {g} torn at snapshot {}: {vals:?}",
                                r.lsn()
                            );
                            let scanned =
                                collect(r.prefix("g2", format!("g{g}-").as_bytes()).unwrap());
                            assert!(scanned.iter().all(|(_, v)| Some(v) == vals[0].as_ref()));
                        }
                        checks += 1;
                    }
                    checks
                })
            })
            .collect();
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let db = &db;
                s.spawn(move || {
                    let mut rng = Rng::new(w);
                    for n in 0..COMMITS {
                        let g = rng.below(4);
                        let v = format!("w{w}-{n}").into_bytes();
                        let mut t = db.write().unwrap();
                        for table in TABLES {
                            for k in 0..3 {
                                t.put(table, format!("g{g}-{k}").as_bytes(), &v).unwrap();
                            }
                        }
                        t.commit_with(Durability::None).unwrap();
                    }
                })
            })
            .collect();
        let writers_ok = writers.into_iter().all(|h| h.join().is_ok());
        stop.store(true, Ordering::Relaxed);
        let checks = readers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(writers_ok, "a writer failed");
        checks
    });
    assert!(checks > 0);
    assert_eq!(db.stats().visible_lsn, 2 * COMMITS);
    db.checkpoint().unwrap();
    let r = db.read().unwrap();
    for g in 0..4 {
        let vals: Vec<_> = TABLES
            .iter()
            .flat_map(|t| {
                (0..3)
                    .map(|k| get(&r, t, format!("g{g}-{k}").as_bytes()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(vals.windows(2).all(|w| w[0] == w[1]), "group {g}: {vals:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The multi-threaded model check
// ---------------------------------------------------------------------------------------

const SHARED: [&str; 2] = ["m", "n"];
const PRIVATE: &str = "p";

#[derive(Debug, Clone)]
enum Step {
    Write(Op),
    Get {
        table: &'static str,
        key: Vec<u8>,
        seen: Option<Vec<u8>>,
    },
    Scan {
        table: &'static str,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        rev: bool,
        seen: Vec<Kv>,
    },
}

/// One transaction's record: what it read at its snapshot, what it wrote, when it committed.
#[derive(Debug, Clone)]
struct TxnRecord {
    snapshot: Lsn,
    isolation: Option<Isolation>,
    steps: Vec<Step>,
    /// `None` for a read-only transaction.
    commit: Option<Lsn>,
}

fn model_key(rng: &mut Rng) -> (&'static str, Vec<u8>) {
    let table = SHARED[rng.below(2)];
    (table, key(rng.below(if table == "m" { 16 } else { 8 })))
}

/// Random scan bounds. Write transactions get only bounds a `BTreeMap` accepts: an
/// inverted range read by a Serializable transaction kills the flusher (see
/// `engine_conflicts::serializable_commit_after_an_inverted_range_read`).
fn random_bounds(rng: &mut Rng, ordered: bool) -> OwnedBounds {
    let bound = |rng: &mut Rng| match rng.below(3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(key(rng.below(18))),
        _ => Bound::Excluded(key(rng.below(18))),
    };
    loop {
        let (s, e) = (bound(rng), bound(rng));
        let valid = match (&s, &e) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => true,
            (Bound::Excluded(a), Bound::Excluded(b)) => a < b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a <= b
            }
        };
        if valid || !ordered {
            return (s, e);
        }
    }
}

/// Runs random reads and writes in `txn`, recording them.
fn random_steps(rng: &mut Rng, txn: &mut walmdb::WriteTxn<'_>, tag: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for n in 0..rng.between(1, 5) {
        let (table, k) = model_key(rng);
        let step = match rng.below(10) {
            0..=3 => Step::Write(Op::put(table, &k, format!("{tag}.{n}").as_bytes())),
            4 | 5 => Step::Write(Op::delete(table, &k)),
            6..=8 => Step::Get {
                table,
                seen: txn.get(table, &k).unwrap().map(<[u8]>::to_vec),
                key: k,
            },
            _ => {
                let (start, end) = random_bounds(rng, true);
                let rev = rng.percent(50);
                let b = (as_ref_bound(&start), as_ref_bound(&end));
                let seen = if rev {
                    collect(txn.rev_range(table, b).unwrap())
                } else {
                    collect(txn.range(table, b).unwrap())
                };
                Step::Scan {
                    table,
                    start,
                    end,
                    rev,
                    seen,
                }
            }
        };
        if let Step::Write(op) = &step {
            op.run(txn).unwrap();
        }
        steps.push(step);
    }
    steps
}

/// The model state after every commit at or below each LSN.
struct History {
    states: Vec<(Lsn, Contents)>,
}

impl History {
    fn new(commits: &[(Lsn, Vec<Op>)]) -> History {
        let mut states = vec![(0, Contents::new())];
        let mut model = Contents::new();
        for (lsn, ops) in commits {
            apply_ops(&mut model, ops);
            states.push((*lsn, model.clone()));
        }
        History { states }
    }

    fn at(&self, lsn: Lsn) -> &Contents {
        let i = self.states.partition_point(|(l, _)| *l <= lsn);
        &self.states[i - 1].1
    }

    /// LSNs of commits in `(after, before)` that wrote `table`/`key`.
    fn wrote_between(
        &self,
        commits: &[(Lsn, Vec<Op>)],
        after: Lsn,
        before: Lsn,
    ) -> Vec<(String, Vec<u8>)> {
        commits
            .iter()
            .filter(|(l, _)| *l > after && *l < before)
            .flat_map(|(_, ops)| {
                ops.iter()
                    .map(|op| (op.table().to_string(), op.key().to_vec()))
            })
            .collect()
    }
}

/// Checks a transaction's reads against `state` plus its own earlier writes.
fn check_reads(state: &Contents, steps: &[Step], ctx: &str) {
    let mut view = state.clone();
    for step in steps {
        match step {
            Step::Write(op) => {
                if SHARED.contains(&op.table()) {
                    apply_ops(&mut view, std::slice::from_ref(op));
                }
            }
            Step::Get { table, key, seen } => {
                let want = view.get(*table).and_then(|t| t.get(key)).cloned();
                assert_eq!(*seen, want, "{ctx}: get {table}/{key:?}");
            }
            Step::Scan {
                table,
                start,
                end,
                rev,
                seen,
            } => {
                let empty = TableMap::new();
                let t = view.get(*table).unwrap_or(&empty);
                let want = model_range(t, as_ref_bound(start), as_ref_bound(end), *rev);
                assert_eq!(
                    *seen, want,
                    "{ctx}: scan {table} {start:?}..{end:?} rev={rev}"
                );
            }
        }
    }
}

/// True if the transaction read anything from its snapshot (a get answered by an own
/// earlier write reads nothing; a scan always reads).
fn reads_snapshot(steps: &[Step]) -> bool {
    let mut own = std::collections::BTreeSet::new();
    for step in steps {
        match step {
            Step::Write(op) => {
                own.insert((op.table().to_string(), op.key().to_vec()));
            }
            Step::Get { table, key, .. } => {
                if !own.contains(&(table.to_string(), key.clone())) {
                    return true;
                }
            }
            Step::Scan { .. } => return true,
        }
    }
    false
}

#[test]
fn model_check_four_threads_of_random_transactions_against_a_btreemap() {
    // Db::update runs at the configured isolation: once each.
    model_check(Isolation::Snapshot, 0xC0FFEE);
    model_check(Isolation::Serializable, 0xBEEF);
}

fn model_check(config_isolation: Isolation, seed: u64) {
    const THREADS: u64 = 4;
    const TXNS: usize = 50;
    let dir = tempdir();
    let cfg = cfg()
        .isolation(config_isolation)
        .apply_max_ops(4)
        .update_attempts(1000);
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let log = CommitLog::default();
    // Per thread: its transactions, and its private table's writes in program order.
    let per_thread: Vec<(Vec<TxnRecord>, Vec<Op>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|th| {
                let (db, log) = (&db, &log);
                s.spawn(move || {
                    let mut rng = Rng::new(seed + th);
                    let mut records = Vec::new();
                    let mut private = Vec::new();
                    for n in 0..TXNS {
                        let tag = format!("t{th}.{n}");
                        match rng.below(10) {
                            // A read-only transaction.
                            0 | 1 => {
                                let r = db.read().unwrap();
                                let mut steps = Vec::new();
                                for _ in 0..rng.between(1, 4) {
                                    let (table, k) = model_key(&mut rng);
                                    if rng.percent(50) {
                                        steps.push(Step::Get {
                                            table,
                                            seen: r.get(table, &k).unwrap().map(<[u8]>::to_vec),
                                            key: k,
                                        });
                                    } else {
                                        let (start, end) = random_bounds(&mut rng, false);
                                        let rev = rng.percent(50);
                                        let b = (as_ref_bound(&start), as_ref_bound(&end));
                                        let seen = if rev {
                                            collect(r.rev_range(table, b).unwrap())
                                        } else {
                                            collect(r.range(table, b).unwrap())
                                        };
                                        steps.push(Step::Scan {
                                            table,
                                            start,
                                            end,
                                            rev,
                                            seen,
                                        });
                                    }
                                }
                                records.push(TxnRecord {
                                    snapshot: r.lsn(),
                                    isolation: None,
                                    steps,
                                    commit: None,
                                });
                            }
                            // Db::update: reads shared tables, writes this thread's keys of
                            // the private table (so program order is commit order for them).
                            2 | 3 => {
                                let mut last = (0, Vec::new());
                                let mut attempt = 0;
                                db.update(|txn| {
                                    attempt += 1;
                                    let (table, k) = model_key(&mut rng);
                                    let seen = txn.get(table, &k)?.map(<[u8]>::to_vec);
                                    let v = format!("{tag}.{attempt}").into_bytes();
                                    let pk = format!("{th}-{}", rng.below(4)).into_bytes();
                                    let op = if seen.is_some() && rng.percent(30) {
                                        Op::delete(PRIVATE, &pk)
                                    } else {
                                        Op::put(PRIVATE, &pk, &v)
                                    };
                                    op.run(txn)?;
                                    last = (
                                        txn.snapshot_lsn()?,
                                        vec![
                                            Step::Get {
                                                table,
                                                key: k,
                                                seen,
                                            },
                                            Step::Write(op),
                                        ],
                                    );
                                    Ok(())
                                })
                                .unwrap();
                                if let Step::Write(op) = &last.1[1] {
                                    private.push(op.clone());
                                }
                                records.push(TxnRecord {
                                    snapshot: last.0,
                                    isolation: Some(config_isolation),
                                    steps: last.1,
                                    commit: None,
                                });
                            }
                            // A read-write transaction over the shared tables.
                            _ => {
                                let isolation = rng.isolation();
                                let durability = rng.durability();
                                let mut attempt = 0;
                                let ((snapshot, steps), lsn) =
                                    commit_retry(db, isolation, durability, 1000, |txn| {
                                        attempt += 1;
                                        let steps = random_steps(
                                            &mut rng,
                                            txn,
                                            &format!("{tag}.{attempt}"),
                                        );
                                        Ok((txn.snapshot_lsn()?, steps))
                                    })
                                    .unwrap();
                                let ops: Vec<Op> = steps
                                    .iter()
                                    .filter_map(|s| match s {
                                        Step::Write(op) => Some(op.clone()),
                                        _ => None,
                                    })
                                    .collect();
                                // Later writes of a key win inside a transaction.
                                let mut last_ops: BTreeMap<(String, Vec<u8>), Op> = BTreeMap::new();
                                for op in ops {
                                    last_ops.insert((op.table().into(), op.key().to_vec()), op);
                                }
                                if !last_ops.is_empty() {
                                    log.record(lsn, last_ops.into_values().collect());
                                }
                                records.push(TxnRecord {
                                    snapshot,
                                    isolation: Some(isolation),
                                    steps,
                                    commit: Some(lsn),
                                });
                            }
                        }
                    }
                    (records, private)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let commits = log.sorted();
    let history = History::new(&commits);
    let mut checked = 0;
    for (th, (records, _)) in per_thread.iter().enumerate() {
        for (n, rec) in records.iter().enumerate() {
            let ctx = format!(
                "thread {th} txn {n} ({:?}, snapshot {})",
                rec.isolation, rec.snapshot
            );
            // Reads see exactly the commits at or below the snapshot, plus own writes.
            check_reads(history.at(rec.snapshot), &rec.steps, &ctx);
            checked += 1;
            let Some(lsn) = rec.commit else { continue };
            let wrote: Vec<(String, Vec<u8>)> = rec
                .steps
                .iter()
                .filter_map(|s| match s {
                    Step::Write(op) => Some((op.table().to_string(), op.key().to_vec())),
                    _ => None,
                })
                .collect();
            let read_snapshot = reads_snapshot(&rec.steps);
            if !read_snapshot || wrote.is_empty() {
                continue;
            }
            // No lost update: nobody committed a key this one wrote between its snapshot
            // and its commit.
            let between = history.wrote_between(&commits, rec.snapshot, lsn);
            for w in &wrote {
                assert!(
                    !between.contains(w),
                    "{ctx}: lost update on {w:?} (commit {lsn})"
                );
            }
            // Serializable: its reads would read the same just before its commit.
            if rec.isolation == Some(Isolation::Serializable) {
                check_reads(
                    history.at(lsn - 1),
                    &rec.steps,
                    &format!("{ctx} at commit {lsn}"),
                );
            }
        }
    }
    assert!(checked >= (THREADS as usize) * TXNS);

    let mut want = log.model();
    let mut private = Contents::new();
    for (_, ops) in &per_thread {
        apply_ops(&mut private, ops);
    }
    want.extend(private);
    assert_eq!(dump(&db), want);
    db.checkpoint().unwrap();
    assert_eq!(dump(&db), want);
    db.close().unwrap();
    let db = open(&dir);
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert_eq!(dump(&db), want);
}

// ---------------------------------------------------------------------------------------
// Limits: timeouts and reader slots
// ---------------------------------------------------------------------------------------

#[test]
fn transactions_older_than_txn_timeout_fail_every_call() {
    let dir = tempdir();
    let limit = Duration::from_millis(50);
    let db = Db::open_with(dir.path(), cfg().txn_timeout(Some(limit))).unwrap();
    commit_puts(&db, "t", &[(b"a".to_vec(), b"1".to_vec())]);
    let r = db.read().unwrap();
    let mut w = db.write().unwrap();
    // On a stalled machine this may already time out; the checks below hold either way.
    let _ = w.get("t", b"a");
    let _ = w.put("t", b"b", b"2");
    std::thread::sleep(Duration::from_millis(100));

    let timed_out = |e: Error| match e {
        Error::TxnTimeout { age, limit: l } => {
            assert_eq!(l, limit);
            // A read transaction's age comes from a coarse clock: a kernel tick (at most
            // 4 ms) short at worst.
            assert!(age >= Duration::from_millis(95), "age {age:?}");
        }
        other => panic!("expected TxnTimeout, got {other:?}"),
    };
    timed_out(r.get("t", b"a").unwrap_err());
    timed_out(r.range("t", ..).unwrap_err());
    timed_out(r.prefix("t", b"a").unwrap_err());
    timed_out(r.table_exists("t").unwrap_err());
    timed_out(w.get("t", b"a").unwrap_err());
    timed_out(w.range("t", ..).unwrap_err());
    timed_out(w.put("t", b"c", b"3").unwrap_err());
    timed_out(w.delete("t", b"a").unwrap_err());
    let st = db.stats();
    assert_eq!(st.open_snapshots, 2);
    assert_eq!(st.long_lived_snapshots, 2);
    assert!(st.oldest_snapshot_age >= Duration::from_millis(95));
    timed_out(w.commit().unwrap_err());
    drop(r);
    let st = db.stats();
    assert_eq!((st.open_snapshots, st.long_lived_snapshots), (0, 0));

    // Nothing of the timed-out write was committed; new transactions work.
    let r = db.read().unwrap();
    assert_eq!(get(&r, "t", b"b"), None);
    assert_eq!(get(&r, "t", b"a"), Some(b"1".to_vec()));
    drop(r);
    // Db::update does not retry a timeout.
    let mut calls = 0;
    let e = db
        .update(|t| {
            calls += 1;
            std::thread::sleep(Duration::from_millis(60));
            t.put("t", b"u", b"1")
        })
        .unwrap_err();
    timed_out_any(e);
    assert_eq!(calls, 1);
    assert_eq!(scan(&db, "t").len(), 1);
}

fn timed_out_any(e: Error) {
    assert!(
        matches!(e, Error::TxnTimeout { .. }),
        "expected TxnTimeout, got {e:?}"
    );
}

#[test]
fn read_slots_exhausted_is_readers_full_until_one_ends() {
    const SLOTS: u32 = 4;
    let dir = tempdir();
    let db = Db::open_with(dir.path(), cfg().max_readers(SLOTS)).unwrap();
    commit_puts(&db, "t", &[(b"a".to_vec(), b"1".to_vec())]);
    let mut open: Vec<ReadTxn<'_>> = (0..SLOTS - 1).map(|_| db.read().unwrap()).collect();
    let w = db.write().unwrap(); // a write transaction takes a slot at its first read
    w.snapshot_lsn().unwrap();
    let full = |r: walmdb::Result<()>| match r {
        Err(Error::ReadersFull { max_readers }) => assert_eq!(max_readers, SLOTS),
        other => panic!("expected ReadersFull, got {other:?}"),
    };
    full(db.read().map(drop));
    full(db.write().and_then(|w| w.snapshot_lsn()).map(drop));
    full(db.update(|t| t.get("t", b"a").map(drop)));
    assert_eq!(db.stats().open_snapshots, SLOTS as usize);
    // The open ones keep working, and commits that need no new slot too.
    assert_eq!(get(&open[0], "t", b"a"), Some(b"1".to_vec()));
    db.create_table("other").unwrap();
    drop(w);
    let r = db.read().expect("a slot is free again");
    assert_eq!(get(&r, "t", b"a"), Some(b"1".to_vec()));
    full(db.read().map(drop));
    open.pop();
    let mut t = db.write().unwrap();
    t.put("t", b"b", b"2").unwrap();
    t.commit().unwrap();
    drop(open);
    drop(r);
    assert_eq!(scan(&db, "t").len(), 2);
}

/// One apply batch holding many versions of the same keys (the applier writes each key once)
/// leaves each key's newest version: puts over puts, a delete after puts, a put after a
/// delete. LMDB after a checkpoint and a reopen agrees with the last commit of each key.
#[test]
fn a_batch_that_overwrites_keys_applies_the_newest_version_of_each() {
    let dir = tempdir();
    // One long gathering window: every commit below lands in one LMDB transaction.
    let cfg = || cfg().apply_interval(Duration::from_secs(5));
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    let commit = |ops: &[(&[u8], Option<&[u8]>)]| {
        let mut txn = db.write().unwrap();
        for (k, v) in ops {
            match v {
                Some(v) => txn.put("t", k, v).unwrap(),
                None => {
                    txn.delete("t", k).unwrap();
                }
            }
        }
        txn.commit_with(Durability::None).unwrap();
    };
    for round in 0..50u8 {
        commit(&[(b"a", Some(&[round])), (b"b", Some(&[round, round]))]);
    }
    commit(&[(b"b", None), (b"c", Some(b"1"))]);
    commit(&[(b"c", None)]);
    commit(&[(b"c", Some(b"2")), (b"d", Some(b"x"))]);
    commit(&[(b"d", None)]);
    let want: TableMap = [(b"a".to_vec(), vec![49]), (b"c".to_vec(), b"2".to_vec())].into();
    assert_eq!(db.stats().apply_batches, 0, "still gathering");
    assert_eq!(scan(&db, "t"), want);
    db.checkpoint().unwrap();
    let stats = db.stats();
    assert_eq!(
        stats.apply_batches, 1,
        "one batch took every commit: {stats:?}"
    );
    assert_eq!(stats.unapplied_bytes, 0);
    assert_eq!(scan(&db, "t"), want);
    db.close().unwrap();
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert_eq!(scan(&db, "t"), want);
    db.close().unwrap();
}

#[test]
fn first_and_last_see_lmdb_the_overlay_deletes_and_a_transactions_own_writes() {
    let dir = tempdir();
    let db = open(&dir);
    let kv = |k: &str| (k.as_bytes().to_vec(), format!("v{k}").into_bytes());
    let lsn = commit_puts(&db, "t", &[kv("b"), kv("c"), kv("d")]);
    db.wait_applied(lsn).unwrap();
    let mut w = db.write().unwrap();
    w.delete("t", b"b").unwrap();
    w.put("t", b"e", b"ve").unwrap();
    w.commit().unwrap();

    let r = db.read().unwrap();
    assert_eq!(r.first("t").unwrap(), Some((&b"c"[..], &b"vc"[..])));
    assert_eq!(r.last("t").unwrap(), Some((&b"e"[..], &b"ve"[..])));
    assert_eq!(r.first("missing").unwrap(), None);
    assert_eq!(r.last("missing").unwrap(), None);

    let mut w = db.write().unwrap();
    w.put("t", b"a", b"va").unwrap();
    w.delete("t", b"e").unwrap();
    assert_eq!(w.first("t").unwrap(), Some((&b"a"[..], &b"va"[..])));
    assert_eq!(w.last("t").unwrap(), Some((&b"d"[..], &b"vd"[..])));
    for k in [&b"a"[..], b"c", b"d"] {
        w.delete("t", k).unwrap();
    }
    assert_eq!(w.first("t").unwrap(), None);
    assert_eq!(w.last("t").unwrap(), None);
    // The read transaction's snapshot is unchanged by the writer.
    assert_eq!(r.first("t").unwrap(), Some((&b"c"[..], &b"vc"[..])));
}

#[test]
fn ranges_take_byte_string_literals_arrays_vecs_and_strs() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.update(|t| {
        for k in ["a", "b", "c", "d"] {
            t.put("t", k.as_bytes(), b"v")?;
        }
        Ok(())
    })
    .unwrap();
    let keys =
        |it: walmdb::Iter<'_>| -> Vec<Vec<u8>> { it.map(|e| e.unwrap().0.to_vec()).collect() };
    let r = db.read().unwrap();
    assert_eq!(keys(r.range("t", b"b"..b"d").unwrap()), [b"b", b"c"]);
    assert_eq!(keys(r.range("t", b"b"..=b"d").unwrap()), [b"b", b"c", b"d"]);
    assert_eq!(keys(r.range("t", [b'c']..).unwrap()), [b"c", b"d"]);
    assert_eq!(keys(r.range("t", ..b"b".to_vec()).unwrap()), [b"a"]);
    assert_eq!(keys(r.rev_range("t", ..="b").unwrap()), [b"b", b"a"]);
    assert_eq!(
        keys(r.range("t", &b"a"[..]..&b"bb"[..]).unwrap()),
        [b"a", b"b"]
    );
    let mut w = db.write().unwrap();
    w.put("t", b"bb", b"v").unwrap();
    let own: Vec<Vec<u8>> = w
        .range("t", "b".."c")
        .unwrap()
        .map(|e| e.unwrap().0.to_vec())
        .collect();
    assert_eq!(own, [&b"b"[..], b"bb"]);
}

#[test]
fn delete_range_and_clear_delete_what_the_transaction_sees_in_lmdb_the_overlay_and_its_own_writes()
{
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.update(|t| {
        for k in ["a", "b", "c"] {
            t.put("t", k.as_bytes(), b"applied")?;
        }
        t.put("u", b"a", b"other table")
    })
    .unwrap();
    db.checkpoint().unwrap(); // a, b, c in LMDB
    db.update(|t| t.put("t", b"d", b"in the overlay")).unwrap();
    let mut t = db.write().unwrap();
    t.put("t", b"e", b"own write").unwrap();
    assert_eq!(t.delete_range("t", b"b"..=b"d").unwrap(), 3);
    let left: Vec<Vec<u8>> = t
        .range("t", ..)
        .unwrap()
        .map(|e| e.unwrap().0.to_vec())
        .collect();
    assert_eq!(left, [b"a".to_vec(), b"e".to_vec()]);
    let sp = t.savepoint();
    assert_eq!(t.clear("t").unwrap(), 2);
    assert!(t.first("t").unwrap().is_none());
    t.rollback_to(&sp).unwrap();
    assert_eq!(t.range("t", ..).unwrap().count(), 2);
    t.commit().unwrap();
    let r = db.read().unwrap();
    let keys: Vec<Vec<u8>> = r
        .range("t", ..)
        .unwrap()
        .map(|e| e.unwrap().0.to_vec())
        .collect();
    assert_eq!(keys, [b"a".to_vec(), b"e".to_vec()]);
    assert_eq!(r.get("u", b"a").unwrap(), Some(&b"other table"[..]));
}

/// `count` against a walk of the table, after every step of a random mix of puts,
/// overwrites, deletes, checkpoints (so counts come from LMDB's tally and the overlay both),
/// table drops and re-creations, in read and write transactions, and after a reopen.
#[test]
fn count_agrees_with_a_walk_of_the_table_through_applies_drops_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(dir.path()).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let check = |db: &Db, step: usize| {
        let r = db.read().unwrap();
        for table in ["a", "b"] {
            let walked = r.range(table, ..).unwrap().count() as u64;
            let counted = r
                .count(table)
                .unwrap_or_else(|e| panic!("step {step}, table {table}: {e:?}"));
            assert_eq!(counted, walked, "step {step}, table {table}");
        }
    };
    let mut reopens = 0;
    for step in 0..400 {
        match next(20) {
            0 => {
                db.checkpoint().unwrap();
            }
            1 => {
                // A table that does not exist is TableNotFound: nothing to check.
                let _ = db.drop_table(["a", "b"][next(2) as usize]);
            }
            2 if step % 100 > 90 => {
                // Reopened without a checkpoint: the overlay is rebuilt by replay.
                db.simulate_crash();
                db = Db::open(dir.path()).unwrap();
                reopens += 1;
            }
            _ => {
                let mut t = db.write().unwrap();
                for _ in 0..next(8) {
                    let table = ["a", "b"][next(2) as usize];
                    let key = [b'k', next(30) as u8];
                    if next(3) == 0 {
                        t.delete(table, &key).unwrap();
                    } else {
                        t.put(table, &key, b"v").unwrap();
                    }
                }
                for table in ["a", "b"] {
                    let walked = t.range(table, ..).unwrap().count() as u64;
                    assert_eq!(t.count(table).unwrap(), walked, "step {step}, own writes");
                }
                t.commit().unwrap();
            }
        }
        check(&db, step);
    }
    assert!(reopens > 0, "the mix never reopened the database");
}

/// `count` walks the overlay a chunk of keys a hold of the table's lock: with thousands of
/// unapplied keys (new, deleted and overwritten ones), readers of three ages each count
/// what their walk sees.
#[test]
fn count_walks_an_overlay_of_many_chunks_as_its_snapshot_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = |i: u32| i.to_be_bytes();
    let db = Db::open(dir.path()).unwrap();
    let mut t = db.write().unwrap();
    for i in 0..3_000 {
        t.put("t", &key(i), b"settled").unwrap();
    }
    t.commit().unwrap();
    db.wait_applied(db.stats().visible_lsn).unwrap();
    db.close().unwrap();
    let hour = Duration::from_secs(3600);
    let held_back = Config::default()
        .apply_interval(hour)
        .apply_max_ops(usize::MAX / 2)
        .checkpoint_interval(hour);
    let db = Db::open_with(dir.path(), held_back).unwrap();
    let oldest = db.read().unwrap();
    let mut t = db.write().unwrap();
    for i in 10_000..12_500 {
        t.put("t", &key(i), b"new").unwrap();
    }
    for i in 0..700 {
        t.delete("t", &key(i)).unwrap();
    }
    for i in 1_000..1_500 {
        t.put("t", &key(i), b"overwritten").unwrap();
    }
    t.commit().unwrap();
    let middle = db.read().unwrap();
    let mut t = db.write().unwrap();
    for i in 10_000..10_300 {
        t.delete("t", &key(i)).unwrap();
    }
    for i in 20_000..20_100 {
        t.put("t", &key(i), b"newer").unwrap();
    }
    t.commit().unwrap();
    let newest = db.read().unwrap();
    assert_eq!(
        db.stats().applied_lsn,
        oldest.lsn(),
        "the applier is held back: every change is in the overlay"
    );
    for (reader, want) in [(&oldest, 3_000), (&middle, 4_800), (&newest, 4_600)] {
        assert_eq!(reader.count("t").unwrap(), want);
        assert_eq!(reader.range("t", ..).unwrap().count() as u64, want);
    }
}

/// Once LMDB holds every version of a table, `count` is LMDB's count without a walk of the
/// overlay, also while an older reader holds those versions there (applied, not evicted):
/// deletes, new keys and overwrites all counted once.
#[test]
fn count_is_lmdbs_count_once_applied_while_an_older_reader_keeps_the_versions() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut t = db.write().unwrap();
    for i in 0..100u32 {
        t.put("t", &i.to_be_bytes(), b"v").unwrap();
    }
    t.commit().unwrap();
    db.wait_applied(db.stats().visible_lsn).unwrap();
    let older = db.read().unwrap();
    let mut t = db.write().unwrap();
    for i in 0..10u32 {
        t.delete("t", &i.to_be_bytes()).unwrap();
    }
    for i in 50..120u32 {
        t.put("t", &i.to_be_bytes(), b"w").unwrap();
    }
    t.commit().unwrap();
    db.wait_applied(db.stats().visible_lsn).unwrap();
    assert!(
        db.stats().unapplied_bytes > 0,
        "the older reader keeps the applied versions in the overlay"
    );
    let r = db.read().unwrap();
    assert_eq!(r.count("t").unwrap(), 110);
    assert_eq!(r.range("t", ..).unwrap().count(), 110);
    assert_eq!(
        older.count("t").unwrap(),
        100,
        "the older reader's own view"
    );
    // Gets and walks of either reader, the newer one's from LMDB alone.
    let value =
        |s: &walmdb::ReadTxn, i: u32| s.get("t", &i.to_be_bytes()).unwrap().map(<[u8]>::to_vec);
    assert_eq!(value(&r, 5), None);
    assert_eq!(value(&older, 5).as_deref(), Some(&b"v"[..]));
    assert_eq!(value(&r, 60).as_deref(), Some(&b"w"[..]));
    assert_eq!(value(&older, 60).as_deref(), Some(&b"v"[..]));
    assert_eq!(value(&r, 110).as_deref(), Some(&b"w"[..]));
    assert_eq!(value(&older, 110), None);
    let walk = |s: &walmdb::ReadTxn, reverse: bool| -> Vec<(u32, Vec<u8>)> {
        let iter = if reverse {
            s.rev_range("t", ..)
        } else {
            s.range("t", ..)
        };
        let mut all: Vec<_> = iter
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (u32::from_be_bytes(k[..].try_into().unwrap()), v.to_vec())
            })
            .collect();
        if reverse {
            all.reverse();
        }
        all
    };
    let expect_new: Vec<_> = (10..120u32)
        .map(|i| (i, if i < 50 { b"v".to_vec() } else { b"w".to_vec() }))
        .collect();
    let expect_old: Vec<_> = (0..100u32).map(|i| (i, b"v".to_vec())).collect();
    for reverse in [false, true] {
        assert_eq!(walk(&r, reverse), expect_new);
        assert_eq!(walk(&older, reverse), expect_old);
    }
}

/// A walk that passes many deletions the applier has not applied yet asks it to apply them
/// now. Before, a queue drained at `None` stepped over every pop of the last
/// `apply_interval` on each pop (here, held back for an hour, over every pop before it);
/// pops now start past what is known deleted (`tests/table_ends.rs`), so the deletions here
/// are blind and one walk from the table's start meets them all.
#[test]
fn a_walk_over_many_unapplied_deletions_hurries_the_applier() {
    let dir = tempdir();
    let hour = Duration::from_secs(3600);
    let db = Db::open_with(
        dir.path(),
        cfg()
            .apply_interval(hour)
            .apply_max_ops(usize::MAX / 2)
            .checkpoint_interval(hour),
    )
    .unwrap();
    let mut t = db.write().unwrap();
    for i in 0..1000 {
        t.put("q", &key(i), b"v").unwrap();
    }
    let loaded = t.commit().unwrap();
    db.wait_applied(loaded).unwrap();
    for i in 0..200 {
        let mut t = db.write().unwrap();
        t.delete("q", &key(i)).unwrap();
        t.commit_with(Durability::None).unwrap();
    }
    assert_eq!(db.stats().applied_lsn, loaded, "held back");
    let r = db.read().unwrap();
    let first = r.first("q").unwrap().map(|(k, _)| k.to_vec());
    assert_eq!(first.as_deref(), Some(&key(200)[..]));
    drop(r);
    // The walk asked; the applier applies in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while db.stats().applied_lsn < loaded + 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the applier was not hurried: applied LSN {} after deletions through LSN {}",
            db.stats().applied_lsn,
            loaded + 200
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    db.close().unwrap();
}
