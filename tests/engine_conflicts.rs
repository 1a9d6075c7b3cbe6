//! Optimistic concurrency control: lost updates, blind writes, write skew and phantoms under
//! both isolation levels, conflicts with table drops, `Db::update` retries, and the
//! conflict counter.

#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeSet;
use std::ops::Bound;

use engine_common::*;
use walmdb::{Config, Db, Durability, Error, Isolation};

const BOTH: [Isolation; 2] = [Isolation::Snapshot, Isolation::Serializable];

fn open_with(dir: &tempfile::TempDir, cfg: Config) -> Db {
    Db::open_with(dir.path(), cfg).expect("open")
}

fn put(db: &Db, table: &str, key: &[u8], value: &[u8]) {
    let mut t = db.write().unwrap();
    t.put(table, key, value).unwrap();
    t.commit().unwrap();
}

fn value(db: &Db, table: &str, key: &[u8]) -> Option<Vec<u8>> {
    let r = db.read().unwrap();
    let v = r.get(table, key).unwrap().map(<[u8]>::to_vec);
    v
}

fn number(v: Option<&[u8]>) -> u64 {
    v.map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap())
}

#[test]
fn lost_update_is_refused_and_the_second_committer_writes_nothing() {
    for iso in BOTH {
        let dir = tempdir();
        let db = open_with(&dir, cfg());
        put(&db, "c", b"counter", b"0");
        let conflicts = db.stats().conflicts;

        let mut t1 = db.write_with(iso).unwrap();
        let mut t2 = db.write_with(iso).unwrap();
        let n1 = number(t1.get("c", b"counter").unwrap());
        let n2 = number(t2.get("c", b"counter").unwrap());
        t1.put("c", b"counter", (n1 + 1).to_string().as_bytes())
            .unwrap();
        t1.put("c", b"t1-side", b"1").unwrap();
        t2.put("c", b"counter", (n2 + 1).to_string().as_bytes())
            .unwrap();
        t2.put("c", b"t2-side", b"1").unwrap();
        t2.put("elsewhere", b"t2", b"1").unwrap();
        t1.commit().unwrap();
        let (table, key) = assert_conflict(t2.commit(), &format!("{iso:?}"));
        assert_eq!((table.as_str(), key.as_slice()), ("c", &b"counter"[..]));

        assert_eq!(value(&db, "c", b"counter"), Some(b"1".to_vec()), "{iso:?}");
        assert_eq!(value(&db, "c", b"t1-side"), Some(b"1".to_vec()));
        assert_eq!(
            value(&db, "c", b"t2-side"),
            None,
            "{iso:?}: the loser wrote nothing"
        );
        assert!(
            !db.table_exists("elsewhere").unwrap(),
            "{iso:?}: the loser created nothing"
        );
        assert_eq!(db.stats().conflicts, conflicts + 1);
        // Run again, it succeeds on the new snapshot.
        let mut t2 = db.write_with(iso).unwrap();
        let n = number(t2.get("c", b"counter").unwrap());
        t2.put("c", b"counter", (n + 1).to_string().as_bytes())
            .unwrap();
        t2.commit().unwrap();
        assert_eq!(value(&db, "c", b"counter"), Some(b"2".to_vec()));
    }
}

#[test]
fn blind_writes_never_conflict() {
    for iso in BOTH {
        let dir = tempdir();
        let db = open_with(&dir, cfg());
        put(&db, "b", b"k", b"0");
        let conflicts = db.stats().conflicts;

        // Two blind writers of the same key: both commit, the later LSN wins.
        let mut t1 = db.write_with(iso).unwrap();
        let mut t2 = db.write_with(iso).unwrap();
        t1.put("b", b"k", b"t1").unwrap();
        t2.put("b", b"k", b"t2").unwrap();
        t2.delete("b", b"other").unwrap();
        // Reading its own write reads nothing from the snapshot: still blind.
        assert_eq!(t2.get("b", b"k").unwrap(), Some(&b"t2"[..]));
        let l2 = t2.commit().unwrap();
        let l1 = t1.commit().unwrap();
        assert!(l1 > l2);
        assert_eq!(value(&db, "b", b"k"), Some(b"t1".to_vec()), "{iso:?}");

        // A blind write after a read-modify-write of the same key commits too.
        let mut rmw = db.write_with(iso).unwrap();
        let mut blind = db.write_with(iso).unwrap();
        let n = rmw.get("b", b"k").unwrap().unwrap().to_vec();
        rmw.put("b", b"k", &[n, b"+".to_vec()].concat()).unwrap();
        blind.delete("b", b"k").unwrap();
        rmw.commit().unwrap();
        blind.commit().unwrap();
        assert_eq!(value(&db, "b", b"k"), None, "{iso:?}");
        assert_eq!(db.stats().conflicts, conflicts, "{iso:?}");
    }
}

/// Blind commits' keys are indexed for conflicts only when a check needs them, or once they
/// outgrow a bound while an older transaction may still check them: past the bound (by
/// count and by bytes) a transaction that read before them still finds the key it lost.
#[test]
fn a_reader_older_than_a_flood_of_blind_commits_still_conflicts_with_the_first() {
    for (iso, scan) in [
        (Isolation::Snapshot, Scan::MissingKey),
        (Isolation::Serializable, Scan::Range),
    ] {
        // 80 commits of 1,000 small puts (past the count bound), 40 of 100 4 KiB values
        // (past the bytes bound).
        for (commits, puts, size) in [(80, 1000, 8), (40, 100, 4096)] {
            let what = format!("{iso:?} {scan:?}, {commits} commits of {puts} x {size} B");
            let dir = tempdir();
            let db = open_with(&dir, cfg());
            put(&db, "r", b"b", b"1");
            let mut old = db.write_with(iso).unwrap();
            let _ = scan_count(&old, scan);
            put(&db, "r", b"b2", b"blind");
            for c in 0..commits {
                let mut t = db.write().unwrap();
                for i in 0..puts {
                    t.put("flood", format!("{c:04}-{i:04}").as_bytes(), &vec![1; size])
                        .unwrap();
                }
                t.commit_with(Durability::None).unwrap();
            }
            // Under snapshot isolation a lost update; under serializable the scanned range.
            if iso == Isolation::Snapshot {
                old.put("r", b"b2", b"old").unwrap();
            } else {
                old.put("summary", b"n", b"1").unwrap();
            }
            let (table, key) = assert_conflict(old.commit(), &what);
            assert_eq!(
                (table.as_str(), key.as_slice()),
                ("r", &b"b2"[..]),
                "{what}"
            );
            // Once no older transaction is left, later blind commits are dropped unindexed,
            // and a fresh read-modify-write of the same key commits.
            let mut fresh = db.write_with(iso).unwrap();
            let _ = scan_count(&fresh, scan);
            fresh.put("r", b"b2", b"fresh").unwrap();
            fresh.commit().unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(value(&db, "r", b"b2"), Some(b"fresh".to_vec()), "{what}");
        }
    }
}

/// Two doctors on call; each transaction takes one off call if the other is still on.
/// Returns the results of the two commits (t1 committed first).
fn doctors(
    db: &Db,
    iso1: Isolation,
    iso2: Isolation,
) -> (walmdb::Result<u64>, walmdb::Result<u64>) {
    put(db, "oncall", b"alice", b"on");
    put(db, "oncall", b"bob", b"on");
    let mut t1 = db.write_with(iso1).unwrap();
    let mut t2 = db.write_with(iso2).unwrap();
    let both_on = |t: &walmdb::WriteTxn<'_>| {
        t.get("oncall", b"alice").unwrap() == Some(&b"on"[..])
            && t.get("oncall", b"bob").unwrap() == Some(&b"on"[..])
    };
    assert!(both_on(&t1) && both_on(&t2));
    t1.put("oncall", b"alice", b"off").unwrap();
    t2.put("oncall", b"bob", b"off").unwrap();
    (t1.commit(), t2.commit())
}

fn on_call(db: &Db) -> usize {
    let r = db.read().unwrap();
    let n = collect(r.range("oncall", ..).unwrap())
        .iter()
        .filter(|(_, v)| v == b"on")
        .count();
    n
}

#[test]
fn write_skew_is_allowed_under_snapshot_isolation() {
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    let (r1, r2) = doctors(&db, Isolation::Snapshot, Isolation::Snapshot);
    r1.unwrap();
    r2.expect("Snapshot isolation checks only written keys");
    assert_eq!(
        on_call(&db),
        0,
        "the write skew happened: nobody is on call"
    );
}

#[test]
fn write_skew_is_refused_under_serializable() {
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    let (r1, r2) = doctors(&db, Isolation::Serializable, Isolation::Serializable);
    r1.unwrap();
    let (table, key) = assert_conflict(r2, "second doctor");
    assert_eq!((table.as_str(), key.as_slice()), ("oncall", &b"alice"[..]));
    assert_eq!(on_call(&db), 1);

    // Only the transaction that is Serializable is protected: a Snapshot one committing
    // second still skews, a Serializable one committing second is refused.
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    let (r1, r2) = doctors(&db, Isolation::Serializable, Isolation::Snapshot);
    r1.unwrap();
    r2.unwrap();
    assert_eq!(on_call(&db), 0);
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    let (r1, r2) = doctors(&db, Isolation::Snapshot, Isolation::Serializable);
    r1.unwrap();
    assert_conflict(r2, "serializable second");
    assert_eq!(on_call(&db), 1);
}

/// Kinds of scan a transaction can make over keys `b`..`d` (inclusive) of table "r".
#[derive(Debug, Clone, Copy)]
enum Scan {
    Range,
    RevRange,
    Prefix,
    RevPrefix,
    MissingKey,
}

const SCANS: [Scan; 5] = [
    Scan::Range,
    Scan::RevRange,
    Scan::Prefix,
    Scan::RevPrefix,
    Scan::MissingKey,
];

fn scan_count(t: &walmdb::WriteTxn<'_>, scan: Scan) -> usize {
    let range = (Bound::Included(&b"b"[..]), Bound::Included(&b"d"[..]));
    match scan {
        Scan::Range => t.range("r", range).unwrap().count(),
        Scan::RevRange => t.rev_range("r", range).unwrap().count(),
        // Keys `b...`: the phantom is "b2".
        Scan::Prefix => t.prefix("r", b"b").unwrap().count(),
        Scan::RevPrefix => t.rev_prefix("r", b"b").unwrap().count(),
        Scan::MissingKey => usize::from(t.get("r", b"b2").unwrap().is_some()),
    }
}

/// A transaction scans, another inserts `insert` and commits, the first writes its count
/// elsewhere and commits.
fn phantom(iso: Isolation, scan: Scan, insert: &[u8]) -> walmdb::Result<u64> {
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    for k in [&b"a"[..], b"b", b"c", b"d", b"e"] {
        put(&db, "r", k, b"1");
    }
    let mut t = db.write_with(iso).unwrap();
    let n = scan_count(&t, scan);
    put(&db, "r", insert, b"phantom");
    t.put("summary", b"count", n.to_string().as_bytes())
        .unwrap();
    let r = t.commit();
    // The phantom's insert is committed either way.
    assert_eq!(value(&db, "r", insert), Some(b"phantom".to_vec()));
    assert_eq!(value(&db, "summary", b"count").is_some(), r.is_ok());
    r
}

#[test]
fn phantom_insert_into_a_scanned_range_is_refused_under_serializable() {
    for scan in SCANS {
        let (table, key) = assert_conflict(
            phantom(Isolation::Serializable, scan, b"b2"),
            &format!("{scan:?}"),
        );
        assert_eq!(
            (table.as_str(), key.as_slice()),
            ("r", &b"b2"[..]),
            "{scan:?}"
        );
    }
}

#[test]
fn phantoms_are_allowed_under_snapshot_isolation() {
    for scan in SCANS {
        phantom(Isolation::Snapshot, scan, b"b2").unwrap_or_else(|e| panic!("{scan:?}: {e:?}"));
    }
}

#[test]
fn serializable_range_reads_conflict_only_with_writes_inside_the_range() {
    // Outside the scanned range [b, d], or at an excluded end: no conflict.
    for insert in [&b"a0"[..], b"d0", b"z"] {
        phantom(Isolation::Serializable, Scan::Range, insert)
            .unwrap_or_else(|e| panic!("insert {insert:?}: {e:?}"));
    }
    for insert in [&b"a"[..], b"c0"] {
        phantom(Isolation::Serializable, Scan::Prefix, insert)
            .unwrap_or_else(|e| panic!("prefix b, insert {insert:?}: {e:?}"));
    }
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    put(&db, "r", b"b", b"1");
    let mut t = db.write_with(Isolation::Serializable).unwrap();
    let excl = (Bound::Excluded(&b"b"[..]), Bound::Excluded(&b"d"[..]));
    assert_eq!(t.range("r", excl).unwrap().count(), 0);
    put(&db, "r", b"d", b"end");
    put(&db, "r", b"b", b"start");
    t.put("summary", b"n", b"0").unwrap();
    t.commit()
        .expect("writes at excluded bounds are outside the range");
}

#[test]
fn serializable_commit_after_an_inverted_range_read() {
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    put(&db, "t", b"a", b"1"); // the conflict index now holds table "t"
    let mut t = db.write_with(Isolation::Serializable).unwrap();
    let inverted = (Bound::Included(&b"z"[..]), Bound::Included(&b"a"[..]));
    assert_eq!(t.range("t", inverted).unwrap().count(), 0);
    let empty = (Bound::Excluded(&b"m"[..]), Bound::Excluded(&b"m"[..]));
    assert_eq!(t.rev_range("t", empty).unwrap().count(), 0);
    t.put("t", b"b", b"2").unwrap();
    let r = t.commit();
    assert!(r.is_ok(), "commit after an empty range read: {r:?}");
    // ... and the engine still takes commits.
    put(&db, "t", b"c", b"3");
    assert_eq!(scan(&db, "t").len(), 3);
}

#[test]
fn a_transaction_that_touched_a_table_dropped_concurrently_conflicts() {
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    let setup = |db: &Db| {
        if !db.table_exists("t").unwrap() {
            put(db, "t", b"k", b"1");
        }
    };

    // Read-modify-write of the dropped table.
    setup(&db);
    for iso in BOTH {
        setup(&db);
        let mut t = db.write_with(iso).unwrap();
        assert_eq!(t.get("t", b"k").unwrap(), Some(&b"1"[..]));
        t.put("t", b"k", b"2").unwrap();
        db.drop_table("t").unwrap();
        let (table, key) = assert_conflict(t.commit(), &format!("{iso:?} rmw"));
        assert_eq!(table, "t");
        assert!(key.is_empty(), "a conflict with a drop names no key");
        assert!(
            !db.table_exists("t").unwrap(),
            "{iso:?}: the table stays dropped"
        );
        assert_eq!(value(&db, "t", b"k"), None);
    }

    // Serializable: reading the table (and writing elsewhere) conflicts with its drop.
    setup(&db);
    let mut t = db.write_with(Isolation::Serializable).unwrap();
    assert_eq!(t.range("t", ..).unwrap().count(), 1);
    t.put("u", b"x", b"1").unwrap();
    db.drop_table("t").unwrap();
    assert_conflict(t.commit(), "serializable reader of a dropped table");
    assert!(!db.table_exists("u").unwrap());

    // Snapshot isolation checks only written keys: that one commits.
    setup(&db);
    let mut t = db.write_with(Isolation::Snapshot).unwrap();
    assert_eq!(t.range("t", ..).unwrap().count(), 1);
    t.put("u", b"x", b"1").unwrap();
    db.drop_table("t").unwrap();
    t.commit().unwrap();
    assert_eq!(value(&db, "u", b"x"), Some(b"1".to_vec()));

    // A blind write is ordered after the drop: the table comes back with that key alone.
    setup(&db);
    let mut t = db.write().unwrap();
    t.put("t", b"blind", b"1").unwrap();
    db.drop_table("t").unwrap();
    t.commit().unwrap();
    assert!(db.table_exists("t").unwrap());
    let want: TableMap = [(b"blind".to_vec(), b"1".to_vec())].into_iter().collect();
    assert_eq!(scan(&db, "t"), want);
    db.checkpoint().unwrap();
    assert_eq!(scan(&db, "t"), want);
}

#[test]
fn create_table_of_an_existing_table_does_not_abort_concurrent_transactions() {
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    put(&db, "t", b"k", b"1");
    let mut t = db.write().unwrap();
    assert_eq!(t.get("t", b"k").unwrap(), Some(&b"1"[..]));
    t.put("t", b"k", b"2").unwrap();
    // Documented as "nothing if it exists".
    db.create_table("t").unwrap();
    let r = t.commit();
    assert!(
        r.is_ok(),
        "create_table of an existing table aborted a writer: {r:?}"
    );
    assert_eq!(value(&db, "t", b"k"), Some(b"2".to_vec()));
}

#[test]
fn concurrent_counter_reaches_exactly_threads_times_increments() {
    const THREADS: usize = 4;
    const INCREMENTS: usize = 25;
    for (iso, durability) in [
        (Isolation::Snapshot, Durability::group_commit()),
        (Isolation::Serializable, Durability::None),
    ] {
        let dir = tempdir();
        let cfg = cfg()
            .isolation(iso)
            .durability(durability)
            .update_attempts(100_000);
        let db = open_with(&dir, cfg);
        let seen: Vec<Vec<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let db = &db;
                    s.spawn(move || {
                        (0..INCREMENTS)
                            .map(|_| {
                                db.update(|t| {
                                    let n = number(t.get("c", b"n")?) + 1;
                                    t.put("c", b"n", n.to_string().as_bytes())?;
                                    Ok(n)
                                })
                                .unwrap()
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total = (THREADS * INCREMENTS) as u64;
        assert_eq!(number(value(&db, "c", b"n").as_deref()), total, "{iso:?}");
        // Every increment wrote a different value: none was lost.
        let values: BTreeSet<u64> = seen.into_iter().flatten().collect();
        assert_eq!(values, (1..=total).collect::<BTreeSet<_>>(), "{iso:?}");
        db.close().unwrap();
        let db = Db::open_with(dir.path(), engine_common::cfg()).unwrap();
        assert_eq!(number(value(&db, "c", b"n").as_deref()), total);
    }
}

#[test]
fn conflicts_are_counted_in_stats() {
    let dir = tempdir();
    let db = open_with(&dir, cfg());
    put(&db, "s", b"k", b"0");
    assert_eq!(db.stats().conflicts, 0);
    for n in 1..=3u64 {
        let mut loser = db.write().unwrap();
        loser.get("s", b"k").unwrap();
        loser.put("s", b"k", b"loser").unwrap();
        put(&db, "s", b"k", n.to_string().as_bytes());
        assert_conflict(loser.commit(), "loser");
        assert_eq!(db.stats().conflicts, n);
    }
    // Refusals that are not conflicts are not counted.
    let mut ok = db.write().unwrap();
    ok.get("s", b"k").unwrap();
    ok.put("s", b"k", b"winner").unwrap();
    ok.commit().unwrap();
    assert_eq!(db.stats().conflicts, 3);
    assert_eq!(value(&db, "s", b"k"), Some(b"winner".to_vec()));
}

#[test]
fn update_retries_a_conflict_at_most_update_attempts_times() {
    let dir = tempdir();
    let db = open_with(&dir, cfg().update_attempts(3));
    put(&db, "u", b"k", b"0");

    // Every attempt meets a concurrent commit of its key: three attempts, then Conflict.
    let mut calls = 0;
    let r = db.update(|t| {
        calls += 1;
        t.get("u", b"k")?;
        let mut other = db.write()?;
        other.put("u", b"k", format!("other{calls}").as_bytes())?;
        other.commit()?;
        t.put("u", b"k", b"mine")
    });
    assert_conflict(r, "update");
    assert_eq!(calls, 3);
    assert_eq!(db.stats().conflicts, 3);
    assert_eq!(value(&db, "u", b"k"), Some(b"other3".to_vec()));

    // A conflict on the first attempt only: the second commits.
    let mut calls = 0;
    let out = db
        .update(|t| {
            calls += 1;
            t.get("u", b"k")?;
            if calls == 1 {
                put(&db, "u", b"k", b"interloper");
            }
            t.put("u", b"k", b"mine")?;
            Ok(calls * 10)
        })
        .unwrap();
    assert_eq!((calls, out), (2, 20));
    assert_eq!(value(&db, "u", b"k"), Some(b"mine".to_vec()));

    // Any other error ends it at once, with nothing written.
    let mut calls = 0;
    let r = db.update(|t| {
        calls += 1;
        t.put("u", b"other", b"1")?;
        t.put("u", b"", b"empty key")
    });
    assert!(
        matches!(r, Err(Error::InvalidInput { what: "key", .. })),
        "{r:?}"
    );
    assert_eq!(calls, 1);
    assert_eq!(value(&db, "u", b"other"), None);
}

#[test]
fn a_conflict_is_found_after_the_conflict_index_was_pruned() {
    // A long transaction's snapshot must keep the index entries it needs while thousands
    // of other keys are committed (the index prunes past 4096 entries).
    let dir = tempdir();
    let db = open_with(&dir, cfg().durability(Durability::None));
    put(&db, "p", b"hot", b"0");
    let mut long = db.write().unwrap();
    assert_eq!(long.get("p", b"hot").unwrap(), Some(&b"0"[..]));
    put(&db, "p", b"hot", b"1"); // before the prune
    for batch in 0..60 {
        let mut t = db.write().unwrap();
        for i in 0..100 {
            t.put("filler", format!("{batch:03}-{i:03}").as_bytes(), b"x")
                .unwrap();
        }
        t.commit().unwrap();
    }
    long.put("p", b"hot", b"long").unwrap();
    let (table, key) = assert_conflict(long.commit(), "after the prune");
    assert_eq!((table.as_str(), key.as_slice()), ("p", &b"hot"[..]));
    assert_eq!(value(&db, "p", b"hot"), Some(b"1".to_vec()));

    // The same after the prune, with the competing commit after it too.
    let mut long = db.write().unwrap();
    long.get("p", b"hot").unwrap();
    for batch in 60..110 {
        let mut t = db.write().unwrap();
        for i in 0..100 {
            t.put("filler", format!("{batch:03}-{i:03}").as_bytes(), b"x")
                .unwrap();
        }
        t.commit().unwrap();
    }
    put(&db, "p", b"hot", b"2");
    long.put("p", b"hot", b"long").unwrap();
    assert_conflict(long.commit(), "competing commit after the prune");
    assert_eq!(value(&db, "p", b"hot"), Some(b"2".to_vec()));
}

#[derive(Debug)]
enum AppError {
    Db(walmdb::Error),
    Refused(u32),
}

impl From<walmdb::Error> for AppError {
    fn from(e: walmdb::Error) -> Self {
        AppError::Db(e)
    }
}

#[test]
fn try_update_retries_conflicts_and_returns_the_applications_error_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let db = walmdb::Db::open(dir.path()).unwrap();
    db.update(|t| t.put("t", b"k", b"0")).unwrap();
    let mut attempts = 0;
    let out = db.try_update(|t| -> Result<u32, AppError> {
        attempts += 1;
        let seen = t.get("t", b"k")?.map(<[u8]>::to_vec);
        if attempts == 1 {
            // Another commit changes what this attempt read: its commit conflicts.
            db.update(|o| o.put("t", b"k", b"other"))?;
        }
        t.put("t", b"k", b"mine")?;
        Ok(seen.map_or(0, |v| v.len() as u32))
    });
    assert_eq!(out.unwrap(), 5, "the retry read the other commit's value");
    assert_eq!(attempts, 2);
    let r = db.read().unwrap();
    assert_eq!(r.get("t", b"k").unwrap(), Some(&b"mine"[..]));
    drop(r);

    let refused = db.try_update(|t| -> Result<(), AppError> {
        t.put("t", b"k", b"never")?;
        Err(AppError::Refused(7))
    });
    assert!(matches!(refused, Err(AppError::Refused(7))), "{refused:?}");
    assert_eq!(
        db.read().unwrap().get("t", b"k").unwrap(),
        Some(&b"mine"[..]),
        "an aborted attempt wrote nothing"
    );
    // A walmdb error inside `f` arrives converted, not retried.
    let invalid = db.try_update(|t| -> Result<(), AppError> { Ok(t.put("t", b"", b"v")?) });
    assert!(
        matches!(
            &invalid,
            Err(AppError::Db(Error::InvalidInput { what: "key", .. }))
        ),
        "{invalid:?}"
    );
}
