//! Issue 17: `walmdb::repair` rebuilds a database whose LMDB file is damaged, into a new
//! directory, and compares key by key with the model of the commit history: from a backup
//! rolled forward with the archive and the damaged database's own log, nothing is lost; by
//! salvage, every key is right or listed as lost, never wrong, and the log gives back what
//! it still holds.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[path = "common/scrub_store.rs"]
mod scrub_store;

use walmdb::{
    ArchiveConfig, Config, Db, Durability, LostKeys, RepairMethod, RepairOptions, WalConfig,
};

type Model = BTreeMap<(String, Vec<u8>), Vec<u8>>;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn value(i: u32, version: u32) -> Vec<u8> {
    format!("v{version}-{i:05}-{}", "x".repeat(90)).into_bytes()
}

fn put_all(db: &Db, model: &mut Model, table: &str, keys: impl Iterator<Item = u32>, version: u32) {
    let keys: Vec<u32> = keys.collect();
    for chunk in keys.chunks(100) {
        let mut t = db.write().unwrap();
        for &i in chunk {
            t.put(table, &key(i), &value(i, version)).unwrap();
            model.insert((table.to_owned(), key(i)), value(i, version));
        }
        t.commit_with(Durability::None).unwrap();
    }
}

/// Where `needle` is in `dir`'s LMDB file: in the page in use and in stale copies.
fn offsets_of(dir: &Path, needle: &[u8]) -> Vec<usize> {
    let image = std::fs::read(dir.join("data").join("data.mdb")).unwrap();
    let found: Vec<usize> = image
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(at, _)| at)
        .collect();
    assert!(!found.is_empty(), "the needle is in the file");
    found
}

/// Where the node pointer lies that points at the leaf node whose key starts at `at` in
/// `image` (`None`: the bytes are no node's key, e.g. left over in a page's free space).
fn node_pointer_of(image: &[u8], at: usize) -> Option<usize> {
    let page = at / 4096 * 4096;
    let node = u16::try_from(at.checked_sub(8 + page)?).ok()?;
    let lower = u16::from_le_bytes([image[page + 12], image[page + 13]]) as usize;
    (page + 16..page + lower.min(4096))
        .step_by(2)
        .find(|&p| u16::from_le_bytes([image[p], image[p + 1]]) == node)
}

/// Zeroes every page of `dir`'s LMDB file where a node's key is `needle` (the page in use
/// and stale copies, not bytes left over in another page's free space); returns their
/// numbers.
fn zero_pages_holding(dir: &Path, needle: &[u8]) -> Vec<u64> {
    let path = dir.join("data").join("data.mdb");
    let image = std::fs::read(&path).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut pages: Vec<u64> = offsets_of(dir, needle)
        .into_iter()
        .filter(|&at| node_pointer_of(&image, at).is_some())
        .map(|at| (at / 4096) as u64)
        .collect();
    assert!(!pages.is_empty(), "a node holds the needle");
    pages.dedup();
    for &page in &pages {
        file.write_all_at(&[0; 4096], page * 4096).unwrap();
    }
    file.sync_all().unwrap();
    pages
}

/// A closed, checkpointed database holding keys 0..4000 of `t` at version 1, in `db` under
/// `tmp`; returns its directory, a repair target beside it and the model.
fn checkpointed_store(tmp: &tempfile::TempDir) -> (PathBuf, PathBuf, Model) {
    let (dir, target) = (tmp.path().join("db"), tmp.path().join("repaired"));
    let mut model = Model::new();
    let db = Db::open_with(&dir, small_cfg(None)).unwrap();
    put_all(&db, &mut model, "t", 0..4000, 1);
    db.checkpoint().unwrap();
    db.close().unwrap();
    (dir, target, model)
}

/// Applies `damage` to every leaf node (in use or a stale copy) of key `i` at version 1 in
/// `dir`'s LMDB file, given the file and the key's offset in it.
fn damage_nodes_of(dir: &Path, i: u32, mut damage: impl FnMut(&mut Vec<u8>, usize)) {
    let path = dir.join("data").join("data.mdb");
    let mut image = std::fs::read(&path).unwrap();
    let value = value(i, 1);
    let mut damaged = 0;
    for at in offsets_of(dir, &key(i)) {
        // A leaf node: `lo hi flags ksize`, the key, then its value.
        if image[at + 8..].starts_with(&value[..8]) {
            damage(&mut image, at);
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no node holds key {i}");
    std::fs::write(&path, &image).unwrap();
}

fn in_loss(loss: &walmdb::Loss, table: &str, k: &[u8]) -> bool {
    loss.table == table
        && match &loss.keys {
            LostKeys::Key(lost) => lost == k,
            LostKeys::Range { from, to } => {
                from.as_deref().is_none_or(|f| f <= k) && to.as_deref().is_none_or(|t| k < t)
            }
            _ => false,
        }
}

/// Every key of the model: in the repaired database with its value, or absent and inside a
/// listed loss. Nothing the model lacks. Returns the keys missing.
fn compare(repaired: &Path, model: &Model, losses: &[walmdb::Loss]) -> usize {
    let db = Db::open(repaired).unwrap();
    let r = db.read().unwrap();
    let mut missing = 0;
    for ((table, k), v) in model {
        match r.get(table, k).unwrap() {
            Some(found) => assert_eq!(found, v.as_slice(), "{table} {k:?}: a wrong value"),
            None => {
                assert!(
                    losses.iter().any(|l| in_loss(l, table, k)),
                    "{table} {:?} is missing and no loss lists it: {losses:?}",
                    String::from_utf8_lossy(k)
                );
                missing += 1;
            }
        }
    }
    for table in ["t", "u"] {
        for item in r.range(table, ..).unwrap() {
            let (k, _) = item.unwrap();
            assert!(
                model.contains_key(&(table.to_owned(), k.to_vec())),
                "{table} {k:?} is not in the model"
            );
        }
    }
    drop(r);
    db.close().unwrap();
    missing
}

#[test]
fn a_salvage_keeps_every_entry_that_verifies_and_lists_exactly_what_it_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, target) = (tmp.path().join("db"), tmp.path().join("repaired"));
    let mut model = Model::new();
    let db = Db::open_with(&dir, small_cfg(None)).unwrap();
    put_all(&db, &mut model, "t", 0..4000, 1);
    put_all(&db, &mut model, "u", 0..300, 1);
    db.checkpoint().unwrap();
    db.close().unwrap();
    // One value damaged (a flipped bit), one leaf page zeroed.
    let path = dir.join("data").join("data.mdb");
    let mut image = std::fs::read(&path).unwrap();
    for at in offsets_of(&dir, b"v1-00123-xxx") {
        image[at + 20] ^= 0x04;
    }
    std::fs::write(&path, &image).unwrap();
    let pages = zero_pages_holding(&dir, b"key03000");
    let before = std::fs::read(&path).unwrap();

    let report = walmdb::repair(&dir, &target, &RepairOptions::default()).unwrap();
    assert_eq!(report.method, RepairMethod::Salvage);
    assert!(!report.is_complete(), "{report:?}");
    assert!(report.scrub.is_healthy(), "{:?}", report.scrub);
    // The damaged entry's key may be what changed: the loss is the range between its
    // neighbours.
    assert!(
        report.losses.iter().any(|l| in_loss(l, "t", &key(123))
            && !in_loss(l, "t", &key(122))
            && !in_loss(l, "t", &key(124))),
        "{:?}",
        report.losses
    );
    let zeroed = report
        .losses
        .iter()
        .find(|l| in_loss(l, "t", &key(3000)))
        .unwrap_or_else(|| panic!("pages {pages:?} not listed: {:?}", report.losses));
    assert!(
        pages
            .iter()
            .any(|p| zeroed.reason.contains(&format!("page {p}"))),
        "{zeroed:?}"
    );
    let missing = compare(&target, &model, &report.losses);
    assert!((2..200).contains(&missing), "{missing} keys missing");
    // The same damaged value in `u`, written after the last checkpoint, came back from the
    // log; `t`'s, retired from the log, did not.
    for loss in &report.losses {
        assert_eq!(
            loss.rewritten_by_log,
            u64::from(loss.table == "u"),
            "{loss:?}"
        );
    }
    assert_eq!(
        report.salvaged as usize + 1,
        model.len() - missing,
        "{report:?}"
    );
    // The damaged database is only read.
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_salvage_replays_the_log_over_what_it_saved_and_says_what_the_log_gave_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, target) = (tmp.path().join("db"), tmp.path().join("repaired"));
    let mut model = Model::new();
    let db = Db::open_with(&dir, small_cfg(None)).unwrap();
    put_all(&db, &mut model, "t", 0..4000, 1);
    db.checkpoint().unwrap();
    // Even keys rewritten after the checkpoint: applied to LMDB, still in the log.
    put_all(&db, &mut model, "t", (0..4000).step_by(2), 2);
    // A table created explicitly: the replay creates it again over what was salvaged, and
    // walmdb's record of it must still count what it holds (the scrub below checks).
    db.create_table("v").unwrap();
    put_all(&db, &mut model, "v", 0..50, 1);
    let last = db.sync().unwrap();
    db.wait_applied(last).unwrap();
    db.simulate_crash();
    let pages = zero_pages_holding(&dir, b"key02001");

    let report = walmdb::repair(&dir, &target, &RepairOptions::default()).unwrap();
    assert!(report.scrub.is_healthy(), "{:?}", report.scrub);
    assert_eq!(report.repaired_lsn, last);
    let loss = report
        .losses
        .iter()
        .find(|l| in_loss(l, "t", &key(2001)))
        .unwrap_or_else(|| panic!("pages {pages:?} not listed: {:?}", report.losses));
    assert!(loss.rewritten_by_log > 0, "{loss:?}");
    let missing = compare(&target, &model, &report.losses);
    // The page's even keys came back from the log; its odd keys are lost.
    let r = Db::open(&target).unwrap();
    let txn = r.read().unwrap();
    let (mut back, mut lost) = (0, 0);
    for i in 0..4000u32 {
        if in_loss(loss, "t", &key(i)) {
            match txn.get("t", &key(i)).unwrap() {
                Some(v) => {
                    assert_eq!(i % 2, 0);
                    assert_eq!(v, value(i, 2).as_slice());
                    back += 1;
                }
                None => lost += 1,
            }
        }
    }
    assert_eq!(back, loss.rewritten_by_log);
    assert_eq!(lost, missing);
    drop(txn);
    r.close().unwrap();
}

/// Small segments, so a checkpoint retires the log's older records.
fn small_cfg(archive: Option<&Path>) -> Config {
    Config::default().wal(WalConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        recycle_segments: 1,
        archive: archive.map(ArchiveConfig::new),
        ..WalConfig::default()
    })
}

#[test]
fn a_repair_from_a_backup_rolls_forward_with_the_archive_and_the_live_log_losing_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    let mut model = Model::new();
    let db = Db::open_with(p("db"), small_cfg(Some(&p("archive")))).unwrap();
    put_all(&db, &mut model, "t", 0..1000, 1);
    db.backup(p("backup")).unwrap();
    // Several segments archived after the backup, the last ones only in the live log.
    put_all(&db, &mut model, "t", 500..2500, 2);
    db.checkpoint().unwrap();
    put_all(&db, &mut model, "u", 0..200, 1);
    put_all(&db, &mut model, "t", 2000..2600, 3);
    let last = db.sync().unwrap();
    db.wait_applied(last).unwrap();
    db.simulate_crash();
    for needle in [&b"key00100"[..], b"key01700", b"key02500"] {
        zero_pages_holding(&p("db"), needle);
    }
    let damaged = walmdb::inspect::scrub_store(&p("db").join("data"), &mut |_| {})
        .unwrap()
        .unwrap();
    assert!(!damaged.is_healthy());

    let options = RepairOptions {
        backup: Some(p("backup")),
        archive: Some(p("archive")),
        config: small_cfg(Some(&p("archive"))),
    };
    let report = walmdb::repair(&p("db"), &p("repaired"), &options).unwrap();
    assert_eq!(report.method, RepairMethod::Backup);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.repaired_lsn, report.log_end), (last, last));
    let restore = report.restore.as_ref().unwrap();
    assert!(
        restore.segments.iter().any(|s| s.starts_with(p("archive")))
            && restore.segments.iter().any(|s| s.starts_with(p("db"))),
        "read from the archive and the live log: {:?}",
        restore.segments
    );
    assert_eq!(compare(&p("repaired"), &model, &[]), 0);
}

#[test]
fn a_repair_refuses_an_open_database_and_a_used_target() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db")).unwrap();
    let e = walmdb::repair(
        &tmp.path().join("db"),
        &tmp.path().join("repaired"),
        &RepairOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, walmdb::Error::Locked { .. }), "{e}");
    db.close().unwrap();
    std::fs::create_dir(tmp.path().join("used")).unwrap();
    std::fs::write(tmp.path().join("used").join("x"), b"x").unwrap();
    let e = walmdb::repair(
        &tmp.path().join("db"),
        &tmp.path().join("used"),
        &RepairOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, walmdb::Error::InvalidInput { .. }), "{e}");
}

/// A commit whose apply meets a damaged page: the applier fails with `StoreCorrupted` (the
/// engine refuses commits until reopened), the commit stays in the log (never retired
/// unapplied), and the salvage applies it.
#[test]
fn a_commit_that_fails_to_apply_on_a_damaged_page_stays_in_the_log_and_the_repair_applies_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, target) = (tmp.path().join("db"), tmp.path().join("repaired"));
    let mut model = Model::new();
    let db = Db::open_with(&dir, small_cfg(None)).unwrap();
    put_all(&db, &mut model, "t", 0..3000, 1);
    db.checkpoint().unwrap();
    zero_pages_holding(&dir, b"key01500");
    // Acknowledged (durable in the log); the applier then meets the zeroed page.
    let mut t = db.write().unwrap();
    t.put("t", &key(1500), &value(1500, 2)).unwrap();
    t.put("t", &key(1501), &value(1501, 2)).unwrap();
    let lsn = t.commit().unwrap();
    model.insert(("t".into(), key(1500)), value(1500, 2));
    model.insert(("t".into(), key(1501)), value(1501, 2));
    let e = db.wait_applied(lsn).unwrap_err();
    assert!(
        e.to_string().contains("walmdb repair"),
        "the failure points at the repair: {e}"
    );
    let health = db.health();
    assert_eq!(health.status, walmdb::HealthStatus::Unhealthy, "{health:?}");
    let _ = db.close();
    // Opening replays the commit (into the overlay; the applier catches up behind it) and
    // meets the page again.
    let reopened = Db::open_with(&dir, small_cfg(None)).unwrap();
    let e = reopened.wait_applied(lsn).unwrap_err();
    assert!(e.to_string().contains("walmdb repair"), "{e}");
    let _ = reopened.close();

    let report = walmdb::repair(&dir, &target, &RepairOptions::default()).unwrap();
    assert!(report.scrub.is_healthy(), "{:?}", report.scrub);
    assert_eq!(report.repaired_lsn, lsn, "the failed commit was replayed");
    compare(&target, &model, &report.losses);
    let r = Db::open(&target).unwrap();
    let txn = r.read().unwrap();
    for i in [1500, 1501] {
        assert_eq!(
            txn.get("t", &key(i)).unwrap(),
            Some(value(i, 2).as_slice()),
            "key {i}"
        );
    }
    drop(txn);
    r.close().unwrap();
}

/// LMDB's file unreadable (both meta pages zeroed, or the file gone): the salvage rebuilds
/// from the log alone, complete when the log still starts at LSN 1, else saying that only
/// what the log holds is back.
#[test]
fn a_salvage_of_an_unreadable_file_rebuilds_from_the_log_and_says_what_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    // The whole history in the log: nothing lost.
    let mut model = Model::new();
    let db = Db::open(p("whole")).unwrap();
    put_all(&db, &mut model, "t", 0..500, 1);
    db.close().unwrap();
    std::fs::remove_file(p("whole").join("data").join("data.mdb")).unwrap();
    let report =
        walmdb::repair(&p("whole"), &p("whole-repaired"), &RepairOptions::default()).unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(compare(&p("whole-repaired"), &model, &[]), 0);

    // The log's first segments retired: what they held is lost, and said so.
    let mut model = Model::new();
    let db = Db::open_with(p("part"), small_cfg(None)).unwrap();
    put_all(&db, &mut model, "t", 0..3000, 1);
    db.checkpoint().unwrap();
    put_all(&db, &mut model, "t", 3000..3200, 1);
    db.simulate_crash();
    let path = p("part").join("data").join("data.mdb");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0; 8192], 0).unwrap();
    let report =
        walmdb::repair(&p("part"), &p("part-repaired"), &RepairOptions::default()).unwrap();
    assert!(!report.is_complete());
    assert_eq!(report.losses.len(), 1, "{:?}", report.losses);
    assert!(
        report.losses[0].reason.contains("meta page"),
        "{:?}",
        report.losses
    );
    let r = Db::open(p("part-repaired")).unwrap();
    let txn = r.read().unwrap();
    for i in 3000..3200 {
        assert_eq!(txn.get("t", &key(i)).unwrap(), Some(value(i, 1).as_slice()));
    }
    drop(txn);
    r.close().unwrap();
}

/// Found by the `lmdb_scrub` fuzz target (CI run of c9a49e5): bits flipped in a leaf node's
/// header marked a small entry as a value on overflow pages and lengthened its key over the
/// value's bytes. The salvage listed the loss under that damaged key, which is not the key
/// that was lost. The loss of an unreadable overflow value is the range between its
/// neighbours, as for any damaged entry.
#[test]
fn a_node_header_damaged_into_an_overflow_entry_loses_the_range_between_its_neighbours() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, target, model) = checkpointed_store(&tmp);
    damage_nodes_of(&dir, 123, |image, at| {
        const F_BIGDATA: u8 = 0x01;
        image[at - 4] |= F_BIGDATA;
        image[at - 2] += 20;
    });

    let report = walmdb::repair(&dir, &target, &RepairOptions::default()).unwrap();
    assert!(!report.is_complete(), "{report:?}");
    assert!(
        report.losses.iter().any(|l| in_loss(l, "t", &key(123))
            && !in_loss(l, "t", &key(122))
            && !in_loss(l, "t", &key(124))),
        "{:?}",
        report.losses
    );
    assert_eq!(compare(&target, &model, &report.losses), 1);
}

/// Found by the `lmdb_scrub` fuzz target: one byte of a leaf's node pointer zeroed made it
/// point at another entry, so the entry it pointed at before was reachable no more, while
/// every entry the walk met verified. The salvage reported nothing lost. A leaf whose entries
/// are out of key order loses the range its parent gives it.
#[test]
fn a_node_pointer_pointing_at_another_entry_loses_the_range_of_its_leaf() {
    for shift in [-1i64, 2] {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, target, model) = checkpointed_store(&tmp);
        damage_nodes_of(&dir, 123, |image, at| {
            let slot = node_pointer_of(image, at).expect("the entry's node pointer");
            let other = (slot as i64 + 2 * shift) as usize;
            assert_eq!(other / 4096, slot / 4096);
            image.copy_within(other..other + 2, slot);
        });

        let report = walmdb::repair(&dir, &target, &RepairOptions::default()).unwrap();
        assert!(!report.is_complete(), "{report:?}");
        assert!(
            report.losses.iter().any(|l| in_loss(l, "t", &key(123))),
            "shift {shift}: {:?}",
            report.losses
        );
        assert_eq!(compare(&target, &model, &report.losses), 1, "shift {shift}");
    }
}

/// Found by the `lmdb_scrub` fuzz target: a damaged key in LMDB's main tree named a table
/// with a NUL byte in it, and the salvage panicked creating it (heed refuses such names by
/// panicking). A name walmdb could not have created is listed lost, never created.
#[test]
fn a_table_name_damaged_into_an_impossible_one_is_listed_lost_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, target) = (tmp.path().join("db"), tmp.path().join("repaired"));
    let mut model = Model::new();
    let db = Db::open_with(&dir, small_cfg(None)).unwrap();
    put_all(&db, &mut model, "t", 0..300, 1);
    put_all(&db, &mut model, "uu", 0..300, 1);
    db.checkpoint().unwrap();
    db.close().unwrap();
    let path = dir.join("data").join("data.mdb");
    let mut image = std::fs::read(&path).unwrap();
    for at in offsets_of(&dir, b"t.uu") {
        image[at + 3] = 0;
    }
    std::fs::write(&path, &image).unwrap();

    let report = walmdb::repair(&dir, &target, &RepairOptions::default()).unwrap();
    assert!(!report.is_complete(), "{report:?}");
    assert!(
        report.losses.iter().any(|l| l.table == "u\0"),
        "{:?}",
        report.losses
    );
    // `uu`'s entries came back from the log (all of it is still there), or are listed.
    compare(&target, &model, &report.losses);
}

/// Found by the `lmdb_scrub` fuzz target (CI run of 65cc4bd): one byte XORed into the main
/// tree's root in the newest meta page pointed it at a stale copy of the main tree, which
/// named no user table. The salvage lost table `a` whole and listed only the applied LSN.
/// A main tree that reaches pages listed free may be a stale copy: what it lists is not
/// trusted, and the store is rebuilt from the log with that loss said.
#[test]
fn a_main_tree_root_pointing_at_a_stale_copy_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, target) = (tmp.path().join("db"), tmp.path().join("repaired"));
    // The fuzz target's own store: the find was made against this file.
    scrub_store::write_scrub_store(&dir);
    let path = dir.join("data").join("data.mdb");
    let mut image = std::fs::read(&path).unwrap();
    // Meta page 0: the main tree's record ends with its root page number.
    image[128] ^= 0x06;
    std::fs::write(&path, &image).unwrap();

    let report = walmdb::repair(&dir, &target, &RepairOptions::default()).unwrap();
    let repaired = Db::open(&target).unwrap();
    let r = repaired.read().unwrap();
    for i in (0..400u32).filter(|i| i % 7 != 0) {
        let k = format!("key{i:04}").into_bytes();
        if r.get("a", &k).unwrap().is_none() {
            assert!(
                report
                    .losses
                    .iter()
                    .any(|l| l.table == "(every table)" || in_loss(l, "a", &k)),
                "key{i:04} missing, not listed: {:?}",
                report.losses
            );
        }
    }
    drop(r);
    repaired.close().unwrap();
}
