//! Issue 17: damage in LMDB's file is reported, never read as data. Every entry walmdb keeps
//! in LMDB carries a checksum over its table, its key's length, the key and the value (store
//! format 2); reads check it and fail with `Error::CorruptEntry`. walmdb's record of each
//! table counts its entries and digests them (store format 3), so the scrub finds an entry
//! missing, stray or stale even when every entry left verifies. Format 1 and 2 stores are
//! migrated whole when opened.

use std::ops::Bound;
use std::path::Path;

use heed::types::Bytes;
use walmdb::{Config, Db, Error};

/// A value no other bytes of the file repeat.
const MARKER: &[u8] = b"<<walmdb integrity marker: 0123456789abcdefghijklmnopqrstuv>>";

/// A closed database whose table `t` holds `keys` (value: their index) and `marked`
/// (value: `MARKER`), all applied to LMDB.
fn closed_db(dir: &Path, keys: u32, marked: &[u8]) {
    let db = Db::open(dir).unwrap();
    db.update(|txn| {
        for i in 0..keys {
            txn.put("t", format!("key{i:05}").as_bytes(), &i.to_le_bytes())?;
        }
        txn.put("t", marked, MARKER)
    })
    .unwrap();
    db.checkpoint().unwrap();
    db.close().unwrap();
}

/// Flips bit `bit` of every copy of `needle` in `dir`'s LMDB file; returns the copies.
fn flip_in_lmdb(dir: &Path, needle: &[u8], bit: usize) -> usize {
    let path = dir.join("data").join("data.mdb");
    let mut data = std::fs::read(&path).unwrap();
    let found: Vec<usize> = data
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(at, _)| at)
        .collect();
    for &at in &found {
        data[at + bit / 8] ^= 1 << (bit % 8);
    }
    std::fs::write(&path, data).unwrap();
    found.len()
}

#[test]
fn a_flipped_bit_in_a_stored_value_is_a_corrupt_entry_error_never_wrong_bytes() {
    for bit in [0, 7, 100, MARKER.len() * 8 - 1] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        closed_db(&dir, 100, b"marked");
        assert!(
            flip_in_lmdb(&dir, MARKER, bit) > 0,
            "the value is not in the file"
        );
        let db = Db::open(&dir).unwrap();
        let txn = db.read().unwrap();
        match txn.get("t", b"marked") {
            Err(Error::CorruptEntry { table, key }) => {
                assert_eq!((table.as_str(), key.as_slice()), ("t", &b"marked"[..]));
            }
            other => panic!("bit {bit}: {other:?}"),
        }
        // Every other entry still reads; a walk over the damaged one fails there.
        assert_eq!(
            txn.get("t", b"key00042").unwrap(),
            Some(&42u32.to_le_bytes()[..])
        );
        let walked: Vec<_> = txn.range("t", ..).unwrap().collect();
        let failed = walked.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, 1, "bit {bit}");
        assert!(matches!(
            walked.last(),
            Some(Err(Error::CorruptEntry { .. }))
        ));
        let message = txn.get("t", b"marked").unwrap_err().to_string();
        assert!(
            message.contains("\"t\"") && message.contains("marked"),
            "{message}"
        );
        drop(txn);
        db.close().unwrap();
    }
}

/// A walk checks an LMDB entry when it hands it out: one a newer version in the overlay
/// shadows is passed over unchecked (its bytes never reach the caller; the scrub still
/// finds it), while one handed out between overlay entries fails there.
#[test]
fn a_walk_checks_the_entries_it_hands_out_and_passes_over_shadowed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 100, b"marked");
    assert!(
        flip_in_lmdb(&dir, MARKER, 3) > 0,
        "the value is not in the file"
    );
    // Commits stay in the overlay: nothing is applied while the test reads.
    let cfg = Config::default().apply_interval(std::time::Duration::from_secs(3_600));
    let db = Db::open_with(&dir, cfg).unwrap();
    db.update(|txn| txn.put("t", b"aaa", b"new")).unwrap();
    let before = db.read().unwrap();
    let walked: Vec<_> = before.range("t", ..).unwrap().collect();
    assert_eq!(walked.iter().filter(|r| r.is_err()).count(), 1);
    assert!(matches!(
        walked.last(),
        Some(Err(Error::CorruptEntry { key, .. })) if key.as_slice() == b"marked"
    ));
    drop(before);
    db.update(|txn| txn.put("t", b"marked", b"fresh")).unwrap();
    let after = db.read().unwrap();
    let walked: Vec<(Vec<u8>, Vec<u8>)> = after
        .range("t", ..)
        .unwrap()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect();
    assert_eq!(walked.len(), 102);
    assert_eq!(walked.first().unwrap(), &(b"aaa".to_vec(), b"new".to_vec()));
    assert_eq!(
        walked.last().unwrap(),
        &(b"marked".to_vec(), b"fresh".to_vec())
    );
    let backwards = after
        .rev_range("t", ..)
        .unwrap()
        .filter(Result::is_err)
        .count();
    assert_eq!(backwards, 0);
    drop(after);
    let report = db.scrub().unwrap();
    assert!(
        report.damaged.iter().any(|d| d.key.as_slice() == b"marked"),
        "{report:?}"
    );
    db.close().unwrap();
}

/// A flipped bit in a key leaves an entry whose checksum no longer matches its key: a
/// lookup of the old key finds nothing, but a walk that meets the entry fails.
#[test]
fn a_flipped_bit_in_a_stored_key_fails_the_walk_that_meets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let key = b"zz-the-one-marked-key-zz";
    closed_db(&dir, 10, key);
    assert!(flip_in_lmdb(&dir, key, 12 * 8 + 1) > 0);
    let db = Db::open(&dir).unwrap();
    let txn = db.read().unwrap();
    let walked: Vec<_> = txn.range("t", ..).unwrap().collect();
    assert!(
        walked
            .iter()
            .any(|r| matches!(r, Err(Error::CorruptEntry { table, .. }) if table == "t")),
        "{walked:?}"
    );
    drop(txn);
    db.close().unwrap();
}

/// Format 1 sealed a value with the CRC32 of key ++ value.
fn seal_v1(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(value);
    let mut out = value.to_vec();
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out
}

/// LMDB's environment in `data` (created if missing), opened by hand as walmdb would, for a
/// test to write what an older build or damage would leave.
fn raw_env(data: &Path) -> heed::Env {
    std::fs::create_dir_all(data).unwrap();
    // SAFETY: the environment is opened once, here, and closed before walmdb opens it.
    unsafe {
        heed::EnvOpenOptions::new()
            .max_dbs(8)
            .map_size(64 << 20)
            .open(data)
    }
    .unwrap()
}

/// Writes a store of format `version` (1 or 2) by hand, as a build of that format left it:
/// the tables `listed`, the first of them `t` with `n` keys, applied through LSN 0.
/// `damage` spoils one entry's checksum.
fn write_old_store(dir: &Path, version: u32, listed: &[&str], n: u32, damage: bool) {
    let seal = |lmdb_table: &str, key: &[u8], value: &[u8]| match version {
        1 => seal_v1(key, value),
        _ => seal_v2(lmdb_table, key, value),
    };
    let env = raw_env(&dir.join("data"));
    let mut wtxn = env.write_txn().unwrap();
    let db = |wtxn: &mut heed::RwTxn<'_>, name: &str| -> heed::Database<Bytes, Bytes> {
        env.create_database(wtxn, Some(name)).unwrap()
    };
    let meta = db(&mut wtxn, "walmdb.meta");
    let format = seal("walmdb.meta", b"format", &version.to_le_bytes());
    meta.put(&mut wtxn, b"format", &format).unwrap();
    let applied = seal("walmdb.meta", b"applied_lsn", &0u64.to_le_bytes());
    meta.put(&mut wtxn, b"applied_lsn", &applied).unwrap();
    let tables = db(&mut wtxn, "walmdb.tables");
    for name in listed {
        let record = seal("walmdb.tables", name.as_bytes(), &0u64.to_le_bytes());
        tables.put(&mut wtxn, name.as_bytes(), &record).unwrap();
    }
    let t = db(&mut wtxn, "t.t");
    for i in 0..n {
        let key = format!("key{i:05}");
        let mut stored = seal("t.t", key.as_bytes(), format!("value {i}").as_bytes());
        if damage && i == n / 2 {
            stored[0] ^= 1;
        }
        t.put(&mut wtxn, key.as_bytes(), &stored).unwrap();
    }
    wtxn.commit().unwrap();
    env.prepare_for_closing().wait();
}

#[test]
fn a_format_1_store_is_migrated_whole_when_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    write_old_store(&dir, 1, &["t"], 1000, false);
    let info = walmdb::inspect::read_store(&dir.join("data"))
        .unwrap()
        .unwrap();
    assert_eq!(info.format_version, Some(1));
    let db = Db::open(&dir).unwrap();
    let txn = db.read().unwrap();
    for i in 0..1000u32 {
        let key = format!("key{i:05}");
        let want = format!("value {i}");
        assert_eq!(txn.get("t", key.as_bytes()).unwrap(), Some(want.as_bytes()));
    }
    assert_eq!(txn.range("t", ..).unwrap().count(), 1000);
    drop(txn);
    db.update(|txn| txn.put("t", b"new", b"after the migration"))
        .unwrap();
    db.close().unwrap();
    let info = walmdb::inspect::read_store(&dir.join("data"))
        .unwrap()
        .unwrap();
    assert_eq!(info.format_version, Some(walmdb::STORE_FORMAT_VERSION));
    assert_eq!(info.tables.len(), 1);
    let db = Db::open(&dir).unwrap();
    assert_eq!(
        db.read().unwrap().get("t", b"new").unwrap(),
        Some(&b"after the migration"[..])
    );
    db.close().unwrap();
}

#[test]
fn a_format_1_store_with_a_damaged_entry_is_refused_and_left_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    write_old_store(&dir, 1, &["t"], 1000, true);
    let before = std::fs::read(dir.join("data").join("data.mdb")).unwrap();
    match Db::open(&dir) {
        Err(Error::CorruptEntry { table, key }) => {
            assert_eq!((table.as_str(), key.as_slice()), ("t", &b"key00500"[..]));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let info = walmdb::inspect::read_store(&dir.join("data"))
        .unwrap()
        .unwrap();
    assert_eq!(info.format_version, Some(1));
    // LMDB may have written its own bookkeeping, never an entry: every value is as before.
    let after = std::fs::read(dir.join("data").join("data.mdb")).unwrap();
    let values = |file: &[u8]| {
        (0..1000u32)
            .filter(|i| {
                let v = format!("value {i}");
                file.windows(v.len()).any(|w| w == v.as_bytes())
            })
            .count()
    };
    assert_eq!(values(&after), values(&before));
}

#[test]
fn a_scrub_of_a_healthy_store_counts_every_entry_and_finds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 500, b"marked");
    let offline = walmdb::inspect::scrub_store(&dir.join("data"), &mut |_| {})
        .unwrap()
        .unwrap();
    assert!(offline.is_healthy(), "{offline:?}");
    let t = offline.tables.iter().find(|t| t.name == "t").unwrap();
    assert_eq!((t.entries, t.lmdb_entries, t.damaged), (501, 501, 0));
    let db = Db::open(&dir).unwrap();
    db.update(|txn| txn.put("u", b"k", b"v")).unwrap();
    db.checkpoint().unwrap();
    let mut calls = 0;
    let online = db.scrub_with(Some(u64::MAX), |_| calls += 1).unwrap();
    assert!(online.is_healthy(), "{online:?}");
    let names: Vec<_> = online.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["walmdb.meta", "walmdb.tables", "t", "u"]);
    assert_eq!(
        online.entries(),
        offline.entries() + 2,
        "u's entry and its listing"
    );
    let m = db.metrics();
    assert_eq!((m.scrubs, m.scrub_findings), (1, 0));
    db.close().unwrap();
}

#[test]
fn a_scrub_finds_a_damaged_entry_online_and_offline_and_health_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 500, b"marked");
    assert!(flip_in_lmdb(&dir, MARKER, 3) > 0);
    let offline = walmdb::inspect::scrub_store(&dir.join("data"), &mut |_| {})
        .unwrap()
        .unwrap();
    assert!(!offline.is_healthy());
    assert_eq!(offline.damaged_entries(), 1, "{offline:?}");
    assert_eq!(
        (
            offline.damaged[0].table.as_str(),
            offline.damaged[0].key.as_slice()
        ),
        ("t", &b"marked"[..])
    );
    assert!(offline.structure.is_empty(), "{:?}", offline.structure);
    let db = Db::open(&dir).unwrap();
    let online = db.scrub().unwrap();
    assert_eq!(online.damaged, offline.damaged);
    assert_eq!(db.metrics().scrub_findings, 1);
    let health = db.health();
    assert_eq!(health.status, walmdb::HealthStatus::Unhealthy, "{health:?}");
    db.close().unwrap();
}

#[test]
fn a_scrub_finds_an_entry_whose_key_was_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let key = b"zz-the-one-marked-key-zz";
    closed_db(&dir, 10, key);
    assert!(flip_in_lmdb(&dir, key, 12 * 8 + 1) > 0);
    let report = walmdb::inspect::scrub_store(&dir.join("data"), &mut |_| {})
        .unwrap()
        .unwrap();
    assert_eq!(report.damaged_entries(), 1, "{report:?}");
    assert_eq!(report.damaged[0].table, "t");
}

/// The scrub reads LMDB's file page by page from the snapshot's meta page while the
/// applier commits: every page of a store that grew, shrank, spilled values to overflow
/// pages and dropped a table is in use or free, exactly once, in every scrub.
#[test]
fn an_online_scrub_beside_commits_accounts_for_every_page_and_finds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db")).unwrap();
    let big = vec![7u8; 20_000];
    db.update(|txn| {
        for i in 0..3000u32 {
            txn.put("t", format!("key{i:05}").as_bytes(), &i.to_le_bytes())?;
        }
        for i in 0..20u32 {
            txn.put("big", &i.to_be_bytes(), &big)?;
        }
        txn.put("dropped", b"k", b"v")
    })
    .unwrap();
    db.checkpoint().unwrap();
    db.update(|txn| {
        for i in (0..3000u32).step_by(3) {
            txn.delete("t", format!("key{i:05}").as_bytes())?;
        }
        txn.delete("big", &3u32.to_be_bytes())
    })
    .unwrap();
    db.drop_table("dropped").unwrap();
    db.checkpoint().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.update(|txn| txn.put("busy", &(i % 500).to_be_bytes(), &[1; 300]))
                    .unwrap();
                if i.is_multiple_of(50) {
                    db.checkpoint().unwrap();
                }
                i += 1;
            }
        });
        for _ in 0..8 {
            let report = db.scrub().unwrap();
            assert!(report.is_healthy(), "{report:?}");
            let p = report.pages;
            assert_eq!(p.in_use + p.free + 2, p.last_page + 1, "{p:?}");
            let big = report.tables.iter().find(|t| t.name == "big").unwrap();
            assert_eq!((big.entries, big.damaged), (19, 0));
            assert!(big.pages >= 19 * 5, "overflow pages walked: {big:?}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    db.close().unwrap();
    let offline = walmdb::inspect::scrub_store(&tmp.path().join("db").join("data"), &mut |_| {})
        .unwrap()
        .unwrap();
    assert!(offline.is_healthy(), "{offline:?}");
}

/// A zeroed page under a running database: LMDB would fault or abort on it; the online
/// scrub, which reads the file and not LMDB's map, names the page, its table and the keys
/// it held, and the process goes on.
#[test]
fn a_zeroed_page_is_found_by_the_online_scrub_without_a_fault() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = Db::open(&dir).unwrap();
    db.update(|txn| {
        for i in 0..5000u32 {
            txn.put("t", format!("key{i:05}").as_bytes(), &i.to_le_bytes())?;
        }
        Ok(())
    })
    .unwrap();
    db.checkpoint().unwrap();
    let path = dir.join("data").join("data.mdb");
    let image = std::fs::read(&path).unwrap();
    let at = image
        .windows(8)
        .position(|w| w == b"key02500")
        .expect("the key is in the file");
    let page = at / 4096;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&[0; 4096], (page * 4096) as u64)
        .unwrap();
    let report = db.scrub().unwrap();
    assert!(!report.is_healthy());
    let damaged = report
        .damaged_pages
        .iter()
        .find(|d| d.page == page as u64)
        .unwrap_or_else(|| panic!("page {page} not named: {report:?}"));
    assert_eq!(damaged.table, "t");
    let walmdb::LostKeys::Range { from, to } = &damaged.lost else {
        panic!("{damaged:?}");
    };
    let key = b"key02500".to_vec();
    assert!(from.as_ref().is_none_or(|f| *f <= key) && to.as_ref().is_none_or(|t| key < *t));
    assert_eq!(db.metrics().scrub_findings, report.findings());
    // No close: nothing may write the zeroed page back.
    std::mem::forget(db);
}

/// Format 2 sealed a value with the CRC32 of its LMDB table's name, the key's length, the key
/// and the value (as format 3 still does).
fn seal_v2(lmdb_table: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut h = crc32fast::Hasher::new();
    h.update(lmdb_table.as_bytes());
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key);
    h.update(value);
    let mut out = value.to_vec();
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out
}

/// Runs `edit` on the LMDB environment of closed database `dir`, with table `t`'s handle.
fn edit_lmdb(dir: &Path, edit: impl FnOnce(&mut heed::RwTxn<'_>, heed::Database<Bytes, Bytes>)) {
    let env = raw_env(&dir.join("data"));
    let mut wtxn = env.write_txn().unwrap();
    let t = env.open_database(&wtxn, Some("t.t")).unwrap().unwrap();
    edit(&mut wtxn, t);
    wtxn.commit().unwrap();
    env.prepare_for_closing().wait();
}

/// The structure findings of an offline scrub that name walmdb's record of table `t`.
fn record_findings(dir: &Path) -> Vec<String> {
    let report = walmdb::inspect::scrub_store(&dir.join("data"), &mut |_| {})
        .unwrap()
        .unwrap();
    assert_eq!(report.damaged_entries(), 0, "{report:?}");
    assert!(report.damaged_pages.is_empty(), "{report:?}");
    report
        .structure
        .into_iter()
        .filter(|s| s.contains("walmdb's record"))
        .collect()
}

#[test]
fn a_format_2_store_is_migrated_to_format_3_with_each_tables_count_and_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let data = dir.join("data");
    write_old_store(&dir, 2, &["t", "empty"], 1000, false);
    let before = walmdb::inspect::scrub_store(&data, &mut |_| {})
        .unwrap()
        .unwrap();
    assert_eq!(before.format, 2);
    let line = before.tables.iter().find(|t| t.name == "t").unwrap();
    assert_eq!((line.entries, line.recorded), (1000, None));

    let db = Db::open(&dir).unwrap();
    db.update(|txn| {
        txn.put("t", b"key00001", b"replaced")?;
        txn.delete("t", b"key00002")?;
        txn.put("t", b"new", b"added")
    })
    .unwrap();
    db.close().unwrap();
    let after = walmdb::inspect::scrub_store(&data, &mut |_| {})
        .unwrap()
        .unwrap();
    assert!(after.is_healthy(), "{after:?}");
    assert_eq!(after.format, walmdb::STORE_FORMAT_VERSION);
    let line = after.tables.iter().find(|t| t.name == "t").unwrap();
    assert_eq!(line.entries, 1000);
    assert_eq!(line.recorded, Some((1000, line.digest)));
    let empty = after.tables.iter().find(|t| t.name == "empty");
    assert!(
        empty.is_none_or(|t| t.recorded == Some((0, 0))),
        "{empty:?}"
    );
}

#[test]
fn an_entry_missing_while_every_other_entry_verifies_is_found_by_the_scrub() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 500, b"marked");
    assert_eq!(record_findings(&dir), Vec::<String>::new());
    // LMDB's own structure and counts stay consistent: only walmdb's record can tell.
    edit_lmdb(&dir, |wtxn, t| {
        assert!(t.delete(wtxn, b"key00250").unwrap())
    });
    let found = record_findings(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("counts 501 entries") && found[0].contains("found 500"));
    let db = Db::open(&dir).unwrap();
    let online = db.scrub().unwrap();
    assert!(!online.is_healthy());
    assert!(online
        .structure
        .iter()
        .any(|s| s.contains("walmdb's record")));
    db.close().unwrap();
}

#[test]
fn a_stale_value_whose_checksum_holds_is_found_by_the_scrub() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 500, b"marked");
    // The entry as stored before an update, as a page left behind by a lost write holds it.
    let mut stale = Vec::new();
    edit_lmdb(&dir, |wtxn, t| {
        stale = t.get(wtxn, b"key00100").unwrap().unwrap().to_vec()
    });
    let db = Db::open(&dir).unwrap();
    db.update(|txn| txn.put("t", b"key00100", b"the newer value"))
        .unwrap();
    db.checkpoint().unwrap();
    db.close().unwrap();
    assert_eq!(record_findings(&dir), Vec::<String>::new());
    edit_lmdb(&dir, |wtxn, t| t.put(wtxn, b"key00100", &stale).unwrap());
    let found = record_findings(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("counts 501 entries") && found[0].contains("found 501"));
    // Reads cannot tell: the stale entry's checksum holds.
    let db = Db::open(&dir).unwrap();
    let old = db
        .read()
        .unwrap()
        .get("t", b"key00100")
        .unwrap()
        .map(<[u8]>::to_vec);
    assert_eq!(old, Some(100u32.to_le_bytes().to_vec()));
    db.close().unwrap();
}

#[test]
fn a_stray_entry_whose_checksum_holds_is_found_by_the_scrub() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 500, b"marked");
    let stray = seal_v2("t.t", b"stray", b"a value nobody wrote");
    edit_lmdb(&dir, |wtxn, t| t.put(wtxn, b"stray", &stray).unwrap());
    let found = record_findings(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("counts 501 entries") && found[0].contains("found 502"));
}

#[test]
fn walmdbs_record_of_each_table_follows_puts_overwrites_deletes_drops_and_recreations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for round in 0..3 {
        let db = Db::open(&dir).unwrap();
        for _ in 0..200 {
            let table = ["a", "b", "c"][next(3) as usize];
            if next(40) == 0 {
                if db.table_exists(table).unwrap() {
                    db.drop_table(table).unwrap();
                }
                continue;
            }
            db.update(|txn| {
                for _ in 0..1 + next(20) {
                    let key = format!("k{:03}", next(300));
                    if next(4) == 0 {
                        txn.delete(table, key.as_bytes())?;
                    } else {
                        let len = next(3000) as usize; // some values spill to overflow pages
                        txn.put(table, key.as_bytes(), &vec![round as u8; len])?;
                    }
                }
                Ok(())
            })
            .unwrap();
            if next(25) == 0 {
                db.checkpoint().unwrap();
            }
        }
        db.checkpoint().unwrap();
        let report = db.scrub().unwrap();
        assert!(report.is_healthy(), "round {round}: {report:?}");
        for line in report
            .tables
            .iter()
            .filter(|t| !t.name.starts_with("walmdb."))
        {
            assert_eq!(
                line.recorded,
                Some((line.entries, line.digest)),
                "round {round}, table {}",
                line.name
            );
        }
        db.close().unwrap();
    }
}

#[test]
fn with_verify_scans_off_a_scan_leaves_the_check_to_the_scrub_and_get_still_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 100, b"marked");
    assert!(flip_in_lmdb(&dir, MARKER, 5) > 0);
    let db = Db::open_with(&dir, walmdb::Config::default().verify_scans(false)).unwrap();
    let txn = db.read().unwrap();
    // The scan hands out the damaged value as data: this is what the setting trades.
    let marked: Vec<_> = txn
        .range(
            "t",
            (
                Bound::Included(&b"marked"[..]),
                Bound::Included(&b"marked"[..]),
            ),
        )
        .unwrap()
        .collect::<walmdb::Result<Vec<_>>>()
        .unwrap();
    assert_eq!(marked.len(), 1);
    assert_ne!(marked[0].1, MARKER);
    assert_eq!(marked[0].1.len(), MARKER.len());
    // A get still checks, and the scrub finds it.
    assert!(matches!(
        txn.get("t", b"marked"),
        Err(Error::CorruptEntry { .. })
    ));
    drop(txn);
    let report = db.scrub().unwrap();
    assert_eq!(report.damaged_entries(), 1, "{report:?}");
    db.close().unwrap();
}

/// Where the root branch page of table `t` (the only branch page of `closed_db`'s small
/// store) holds a separator key: its offset in `data.mdb` and the key. LMDB 0.9's page
/// header: page number (8 bytes), pad (2), flags (2; branch = 0x01).
fn a_branch_separator(dir: &Path) -> (usize, Vec<u8>) {
    let data = std::fs::read(dir.join("data").join("data.mdb")).unwrap();
    for page in data.chunks(4096).enumerate().skip(2) {
        let (_, bytes) = page;
        let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
        if flags & 0x01 == 0 {
            continue;
        }
        let hits: Vec<usize> = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"key0")
            .map(|(at, _)| at)
            .collect();
        if hits.len() >= 3 {
            let at = page.0 * 4096 + hits[2];
            return (at, data[at..at + 8].to_vec());
        }
    }
    panic!("no branch page of table t");
}

/// Writes `key` over the separator at `at`.
fn rewrite_separator(dir: &Path, at: usize, key: &[u8]) {
    let path = dir.join("data").join("data.mdb");
    let mut data = std::fs::read(&path).unwrap();
    data[at..at + key.len()].copy_from_slice(key);
    std::fs::write(&path, data).unwrap();
}

#[test]
fn a_lookup_a_damaged_branch_key_sends_to_the_wrong_leaf_is_an_error_never_a_silent_miss() {
    for shift in [2i64, -2] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        closed_db(&dir, 2000, b"marked");
        let (at, separator) = a_branch_separator(&dir);
        let n: i64 = std::str::from_utf8(&separator[3..])
            .unwrap()
            .parse()
            .unwrap();
        // Raised, lookups of the two keys below the new separator go to the leaf on the
        // left; lowered, lookups of the two keys above it go to the leaf on the right.
        rewrite_separator(&dir, at, format!("key{:05}", n + shift).as_bytes());
        let misrouted = if shift > 0 {
            [n, n + 1]
        } else {
            [n + shift, n + shift + 1]
        };
        let db = Db::open(&dir).unwrap();
        let txn = db.read().unwrap();
        for i in misrouted {
            let key = format!("key{i:05}");
            match txn.get("t", key.as_bytes()) {
                Err(Error::StoreCorrupted { op: "get", message }) => {
                    assert!(message.contains("branch page"), "{message}")
                }
                other => panic!("shift {shift}, {key}: {other:?}"),
            }
        }
        // Keys the damage does not touch read as before; keys never written are absent.
        for i in [0, n - 10, n + 10, 1999] {
            let key = format!("key{i:05}");
            let got = txn.get("t", key.as_bytes()).unwrap();
            assert_eq!(got, Some(&(i as u32).to_le_bytes()[..]), "{key}");
        }
        assert_eq!(txn.get("t", b"key02000").unwrap(), None);
        assert_eq!(txn.get("t", b"a").unwrap(), None);
        // A walk from or to a misrouted key starts where it should or is refused; at least
        // one is refused (the one that would skip entries or begin out of its bound).
        let key = |i: i64| format!("key{i:05}").into_bytes();
        let mut refused = 0;
        for i in misrouted {
            let k = key(i);
            let walks = [
                txn.range("t", (Bound::Included(&k[..]), Bound::Unbounded)),
                txn.rev_range("t", (Bound::Unbounded, Bound::Included(&k[..]))),
            ];
            for walk in walks {
                match walk {
                    Ok(mut walk) => assert_eq!(walk.next().unwrap().unwrap().0, &k[..]),
                    Err(Error::StoreCorrupted { op: "range", .. }) => refused += 1,
                    Err(e) => panic!("shift {shift}, from {i}: {e:?}"),
                }
            }
        }
        assert!(refused > 0, "shift {shift}");
        let far = key(n + 10);
        let mut walk = txn
            .range("t", (Bound::Included(&far[..]), Bound::Unbounded))
            .unwrap();
        assert_eq!(walk.next().unwrap().unwrap().0, &far[..]);
        drop(walk);
        drop(txn);
        db.close().unwrap();
    }
}

#[test]
fn an_entry_a_damaged_node_pointer_hides_is_an_error_for_gets_and_walks() {
    for (slot, other) in [(20usize, 60usize), (60, 20)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        closed_db(&dir, 2000, b"marked");
        // A leaf of table `t`: LMDB 0.9's page header (flags at 10, leaf = 0x02), then the
        // node offsets (u16 each, from byte 16); a node: 8 header bytes (key size at 6), key.
        let path = dir.join("data").join("data.mdb");
        let mut data = std::fs::read(&path).unwrap();
        let page = (2..data.len() / 4096)
            .find(|&p| {
                let b = &data[p * 4096..(p + 1) * 4096];
                u16::from_le_bytes([b[10], b[11]]) & 0x02 != 0
                    && u16::from_le_bytes([b[12], b[13]]) > 16 + 2 * 100
                    && b.windows(4).any(|w| w == b"key0")
            })
            .expect("a leaf of table t");
        let base = page * 4096;
        let ptr = |data: &[u8], i: usize| {
            u16::from_le_bytes([data[base + 16 + 2 * i], data[base + 17 + 2 * i]]) as usize
        };
        let node_key = |data: &[u8], i: usize| {
            let at = base + ptr(data, i);
            let len = u16::from_le_bytes([data[at + 6], data[at + 7]]) as usize;
            data[at + 8..at + 8 + len].to_vec()
        };
        let hidden = node_key(&data, slot);
        // Slot `slot` now names the node of slot `other`: the hidden entry verifies, but no
        // lookup reaches it, and a walk meets another key in its place.
        let target = ptr(&data, other) as u16;
        data[base + 16 + 2 * slot..base + 18 + 2 * slot].copy_from_slice(&target.to_le_bytes());
        std::fs::write(&path, data).unwrap();

        let db = Db::open(&dir).unwrap();
        let txn = db.read().unwrap();
        match txn.get("t", &hidden) {
            Err(Error::StoreCorrupted { op: "get", .. }) => {}
            other => panic!("slot {slot}: {other:?}"),
        }
        let walked: Vec<_> = txn.range("t", ..).unwrap().collect();
        assert!(
            matches!(
                walked.last(),
                Some(Err(Error::StoreCorrupted { op: "range", .. }))
            ),
            "slot {slot}: a full walk ends {:?}",
            walked.last()
        );
        match txn.range("t", (Bound::Included(&hidden[..]), Bound::Unbounded)) {
            Err(Error::StoreCorrupted { .. }) => {}
            Ok(mut walk) => assert!(
                matches!(walk.next(), Some(Err(Error::StoreCorrupted { .. }))),
                "slot {slot}: a walk from the hidden key"
            ),
            Err(e) => panic!("slot {slot}: {e:?}"),
        }
        drop(txn);
        db.close().unwrap();
    }
}
