//! Archiving, hot backup and point-in-time restore: restored states are compared with the
//! commit history, exactly.

#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use engine_common::*;
use walmdb::{
    restore, ArchiveConfig, Config, Db, Durability, Error, Lsn, RestoreOptions, RestoreTarget,
    WalConfig,
};

/// One committed transaction: its LSN, commit time upper bound and the key it set.
#[derive(Debug, Clone)]
struct Committed {
    lsn: Lsn,
    after_micros: u64,
    key: Vec<u8>,
    value: Vec<u8>,
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// 64 KiB segments, so a few hundred commits rotate and retire many.
fn small_cfg(archive: Option<&Path>) -> Config {
    let wal = WalConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        recycle_segments: 1,
        archive: archive.map(ArchiveConfig::new),
        ..wal_cfg()
    };
    Config::default().wal(wal)
}

fn commit(db: &Db, i: usize) -> Committed {
    let key = key(i % 97);
    let value = format!("v{i:05}-{}", "x".repeat(400)).into_bytes();
    let mut t = db.write().unwrap();
    t.put("t", &key, &value).unwrap();
    let lsn = t.commit_with(Durability::None).unwrap();
    let after_micros = now_micros();
    // Commit times are in microseconds: the next commit must not share this one, or a
    // restore to `after_micros` takes it too.
    while now_micros() <= after_micros {
        std::hint::spin_loop();
    }
    Committed {
        lsn,
        after_micros,
        key,
        value,
    }
}

/// The table's contents after every commit through `lsn`.
fn model(history: &[Committed], lsn: Lsn) -> BTreeMap<Vec<u8>, Vec<u8>> {
    history
        .iter()
        .filter(|c| c.lsn <= lsn)
        .map(|c| (c.key.clone(), c.value.clone()))
        .collect()
}

fn contents(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let db = Db::open_with(dir, small_cfg(None)).unwrap();
    let r = db.read().unwrap();
    let out = collect(r.range("t", ..).unwrap()).into_iter().collect();
    drop(r);
    db.close().unwrap();
    out
}

/// `root/db` archiving into `root/archive`: commits `0..before`, a backup in `root/backup`,
/// commits up to `total`, a checkpoint (which archives every retired segment), closed.
fn backed_up_and_archived(root: &Path, before: usize, total: usize) -> Vec<Committed> {
    let db = Db::open_with(root.join("db"), small_cfg(Some(&root.join("archive")))).unwrap();
    let mut history: Vec<Committed> = (0..before).map(|i| commit(&db, i)).collect();
    db.backup(root.join("backup")).unwrap();
    history.extend((before..total).map(|i| commit(&db, i)));
    db.checkpoint().unwrap();
    db.close().unwrap();
    history
}

/// An archived segment with at least two before it and one after it.
fn middle_archived_segment(archive: &Path) -> PathBuf {
    let mut archived: Vec<_> = std::fs::read_dir(archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    archived.sort();
    assert!(archived.len() >= 4, "{archived:?}");
    archived.swap_remove(archived.len() / 2)
}

fn opts(archive: Option<&Path>) -> RestoreOptions {
    RestoreOptions {
        archive: archive.map(Path::to_owned),
        ..RestoreOptions::default()
    }
}

#[test]
fn a_hot_backup_holds_every_commit_acknowledged_before_it_began() {
    let root = tempdir();
    let (db_dir, backup_dir, restored) = (
        root.path().join("db"),
        root.path().join("b"),
        root.path().join("r"),
    );
    let db = Db::open_with(&db_dir, small_cfg(None)).unwrap();
    let stop = AtomicBool::new(false);
    let (history, before, manifest) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut history = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) || i < 300 {
                history.push(commit(&db, i));
                i += 1;
            }
            history
        });
        std::thread::sleep(Duration::from_millis(50));
        let before = db.metrics().visible_lsn;
        let manifest = db.backup(&backup_dir).unwrap();
        stop.store(true, Ordering::Relaxed);
        (writer.join().unwrap(), before, manifest)
    });
    assert!(
        manifest.wal_last_lsn >= before,
        "{manifest:?} misses commits before {before}"
    );
    assert!(manifest.files.iter().any(|f| f.path == "data/data.mdb"));
    let report = restore(&backup_dir, &restored, &RestoreTarget::Latest, &opts(None)).unwrap();
    assert_eq!(report.backup_lsn, manifest.lmdb_applied_lsn);
    assert_eq!(report.restored_lsn, manifest.wal_last_lsn);
    assert_eq!(contents(&restored), model(&history, report.restored_lsn));
    db.close().unwrap();
}

#[test]
fn restores_reach_an_lsn_a_time_and_a_restore_point_through_the_archive() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let db = Db::open_with(p("db"), small_cfg(Some(&p("archive")))).unwrap();
    let mut history: Vec<Committed> = (0..50).map(|i| commit(&db, i)).collect();
    db.backup(p("backup")).unwrap();
    history.extend((50..300).map(|i| commit(&db, i)));
    let point = db.create_restore_point("before-migration").unwrap();
    assert_eq!(point.lsn, history.last().unwrap().lsn + 1);
    history.extend((300..500).map(|i| commit(&db, i)));
    let time_target = history[420].after_micros;
    std::thread::sleep(Duration::from_millis(2));
    history.extend((500..800).map(|i| commit(&db, i)));
    db.checkpoint().unwrap();
    let m = db.metrics();
    assert!(m.segments_retired >= 4, "{m:?}");
    assert_eq!(m.segments_archived, m.segments_retired);
    db.close().unwrap();

    let points = walmdb::recovery_points(&p("backup"), Some(&p("archive"))).unwrap();
    assert_eq!(points.restore_points.len(), 1);
    assert_eq!(points.restore_points[0].name, "before-migration");
    assert_eq!(points.restore_points[0].lsn, point.lsn);
    assert!(points.last_lsn >= history[611].lsn, "{points:?}");

    let from_archive = |into: &str, target: RestoreTarget| {
        restore(&p("backup"), &p(into), &target, &opts(Some(&p("archive")))).unwrap()
    };
    let by_name = from_archive("r-name", RestoreTarget::Name("before-migration".into()));
    assert_eq!(by_name.restored_lsn, point.lsn - 1);
    assert_eq!(contents(&p("r-name")), model(&history, point.lsn - 1));

    let lsn = history[611].lsn;
    let by_lsn = from_archive("r-lsn", RestoreTarget::Lsn(lsn));
    assert_eq!(by_lsn.restored_lsn, lsn);
    assert_eq!(contents(&p("r-lsn")), model(&history, lsn));

    let by_time = from_archive("r-time", RestoreTarget::Time(time_target));
    // One writer: commit times rise with LSNs, so the cut is exactly after commit 420.
    assert_eq!(by_time.restored_lsn, history[420].lsn);
    assert!(by_time.restored_micros.unwrap() <= time_target);
    assert_eq!(contents(&p("r-time")), model(&history, history[420].lsn));

    let latest = from_archive("r-latest", RestoreTarget::Latest);
    assert_eq!(latest.restored_lsn, points.last_lsn);
    assert_eq!(contents(&p("r-latest")), model(&history, points.last_lsn));
}

/// Regression: a backup whose LMDB state ends with a transaction written in pieces took
/// its time from the record after it, or from its own creation when none followed, so
/// restores to the times between were refused as before the backup.
#[test]
fn a_backup_whose_state_ends_with_a_split_transaction_is_dated_by_that_commit() {
    let root = tempdir();
    // No background checkpoint retires the commit's first pieces before the backup.
    let cfg = small_cfg(None).checkpoint_interval(Duration::from_secs(3_600));
    let db = Db::open_with(root.path().join("db"), cfg).unwrap();
    commit(&db, 0);
    let before = now_micros();
    let mut t = db.write().unwrap();
    // About 100 KB: pieces of at most `max_record_bytes` (16 KiB).
    for i in 0..100 {
        t.put("t", &key(1_000 + i), &[b'x'; 1_000]).unwrap();
    }
    let lsn = t.commit_with(Durability::None).unwrap();
    let after = now_micros();
    db.wait_applied(lsn).unwrap();
    // The backup's own time is well after the commit's.
    std::thread::sleep(Duration::from_millis(20));
    let manifest = db.backup(root.path().join("backup")).unwrap();
    db.close().unwrap();
    assert_eq!(manifest.lmdb_applied_lsn, lsn);
    assert!(
        (before..=after).contains(&manifest.lmdb_applied_micros),
        "dated {} for a commit between {before} and {after} (backup made at {})",
        manifest.lmdb_applied_micros,
        manifest.created_micros
    );
}

#[test]
fn targets_out_of_reach_are_refused_and_write_nothing() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let db = Db::open_with(p("db"), small_cfg(Some(&p("archive")))).unwrap();
    let history: Vec<Committed> = (0..40).map(|i| commit(&db, i)).collect();
    db.checkpoint().unwrap();
    let manifest = db.backup(p("backup")).unwrap();
    let more: Vec<Committed> = (40..200).map(|i| commit(&db, i)).collect();
    db.checkpoint().unwrap();
    db.close().unwrap();
    let refused = |target: RestoreTarget| {
        let out = p("out");
        let e = restore(&p("backup"), &out, &target, &opts(Some(&p("archive")))).unwrap_err();
        assert!(!out.exists(), "{target:?} wrote {}", out.display());
        e
    };
    assert!(matches!(
        refused(RestoreTarget::Lsn(1)),
        Error::RestoreTarget(_)
    ));
    assert!(manifest.lmdb_applied_lsn >= history.last().unwrap().lsn);
    let e = refused(RestoreTarget::Lsn(more.last().unwrap().lsn + 1_000));
    assert!(
        matches!(&e, Error::RestoreTarget(m) if m.contains("past the reachable log")),
        "{e}"
    );
    let e = refused(RestoreTarget::Name("never-made".into()));
    assert!(
        matches!(&e, Error::RestoreTarget(m) if m.contains("never-made")),
        "{e}"
    );
    let e = refused(RestoreTarget::Time(history[0].after_micros - 1));
    assert!(
        matches!(&e, Error::RestoreTarget(m) if m.contains("before the backup")),
        "{e}"
    );
    let e = refused(RestoreTarget::Time(now_micros() + 3_600_000_000));
    assert!(
        matches!(&e, Error::RestoreTarget(m) if m.contains("past the last commit")),
        "{e}"
    );
    // A non-empty target directory is refused too.
    std::fs::create_dir_all(p("busy")).unwrap();
    std::fs::write(p("busy").join("x"), b"x").unwrap();
    let e = restore(
        &p("backup"),
        &p("busy"),
        &RestoreTarget::Latest,
        &opts(None),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
}

#[test]
fn a_damaged_archived_segment_stops_the_restore_naming_it() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let history = backed_up_and_archived(root.path(), 20, 600);
    let victim = &middle_archived_segment(&p("archive"));
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();

    let e = restore(
        &p("backup"),
        &p("r"),
        &RestoreTarget::Latest,
        &opts(Some(&p("archive"))),
    )
    .unwrap_err();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        matches!(&e, Error::Corruption { reason, .. } if reason.contains(&name)),
        "{e}"
    );
    assert!(!p("r").exists());
    // A target before the damage is still reachable.
    let lsn = history[30].lsn;
    restore(
        &p("backup"),
        &p("r2"),
        &RestoreTarget::Lsn(lsn),
        &opts(Some(&p("archive"))),
    )
    .unwrap();
    assert_eq!(contents(&p("r2")), model(&history, lsn));
}

/// A segment the next one continues at the next LSN lost nothing, whatever lies past its
/// frames (here a stale copy of its own first frame, as a torn write of an earlier life
/// left in a log written before recovery zeroed such bytes): the restore goes on past it,
/// as opening the log does.
#[test]
fn bytes_past_the_frames_of_a_segment_the_next_continues_do_not_stop_the_restore() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let history = backed_up_and_archived(root.path(), 20, 600);
    let victim = &middle_archived_segment(&p("archive"));
    let mut bytes = std::fs::read(victim).unwrap();
    let stale = bytes[64..64 + 200].to_vec();
    bytes.extend_from_slice(&stale);
    std::fs::write(victim, &bytes).unwrap();

    let report = restore(
        &p("backup"),
        &p("r"),
        &RestoreTarget::Latest,
        &opts(Some(&p("archive"))),
    )
    .unwrap();
    assert!(
        report.segments.iter().any(|s| s == victim) && report.segments.last() != Some(victim),
        "{:?}",
        report.segments
    );
    let restored = contents(&p("r"));
    assert!(
        restored == model(&history, report.restored_lsn),
        "restored through LSN {}",
        report.restored_lsn
    );
}

#[test]
fn a_damaged_backup_file_is_refused_naming_it() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let db = Db::open_with(p("db"), small_cfg(None)).unwrap();
    for i in 0..30 {
        commit(&db, i);
    }
    db.backup(p("backup")).unwrap();
    db.close().unwrap();
    let data = p("backup").join("data").join("data.mdb");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[5000] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    let e = restore(&p("backup"), &p("r"), &RestoreTarget::Latest, &opts(None)).unwrap_err();
    assert!(
        matches!(&e, Error::BadBackup { path, .. } if path.ends_with("data/data.mdb")),
        "{e}"
    );
    std::fs::write(
        p("backup").join("MANIFEST"),
        b"walmdb-backup 1\ncrc32 00000000\n",
    )
    .unwrap();
    let e = restore(&p("backup"), &p("r"), &RestoreTarget::Latest, &opts(None)).unwrap_err();
    assert!(
        matches!(&e, Error::BadBackup { reason, .. } if reason.contains("checksum")),
        "{e}"
    );
}

#[test]
fn archive_retention_keeps_the_newest_segments() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let mut cfg = small_cfg(None);
    cfg.wal.archive = Some(ArchiveConfig {
        keep_last: Some(3),
        ..ArchiveConfig::new(p("archive"))
    });
    let db = Db::open_with(p("db"), cfg).unwrap();
    for i in 0..600 {
        commit(&db, i);
    }
    db.checkpoint().unwrap();
    let retired = db.metrics().segments_retired;
    db.close().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(p("archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("wal-"))
        .collect();
    names.sort();
    assert!(retired > 3, "{retired}");
    assert_eq!(names.len(), 3, "{names:?}");
    // The newest: segment numbers just below the live log's, on timeline 1.
    let newest = format!("wal-00000001-{:08}.log", retired);
    assert_eq!(names.last().unwrap(), &newest, "{names:?}");
}

#[test]
fn restore_point_names_are_checked() {
    let dir = tempdir();
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    for bad in ["", "a\nb", &"x".repeat(256)] {
        assert!(matches!(
            db.create_restore_point(bad),
            Err(Error::InvalidInput { .. })
        ));
    }
    let rp = db.create_restore_point("ok").unwrap();
    assert_eq!(rp.name, "ok");
    db.close().unwrap();
}

#[test]
fn an_archived_segment_with_a_damaged_header_stops_the_restore_naming_it() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let history = backed_up_and_archived(root.path(), 10, 600);
    let victim = p("archive").join("wal-00000001-00000003.log");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let e = restore(
        &p("backup"),
        &p("r"),
        &RestoreTarget::Latest,
        &opts(Some(&p("archive"))),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Corruption { segment: 3, reason, .. } if reason.contains("wal-00000001-00000003.log")),
        "{e}"
    );
    let points = walmdb::recovery_points(&p("backup"), Some(&p("archive"))).unwrap();
    assert!(points.end.contains("damaged header"), "{points:?}");
    restore(
        &p("backup"),
        &p("r2"),
        &RestoreTarget::Lsn(points.last_lsn),
        &opts(Some(&p("archive"))),
    )
    .unwrap();
    assert_eq!(contents(&p("r2")), model(&history, points.last_lsn));
}

/// Every file of `dir` with its bytes.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Issue 16, defect 6: a database restored from a backup, run with the archive it was
/// restored from, restarts its log at segment 1. Its archived segments must land beside the
/// original's (another timeline), never over them, and a restore of either history must
/// follow that history only, never the copy of a segment number with the highest LSN.
#[test]
fn a_restored_database_never_overwrites_or_splices_the_original_history_in_a_shared_archive() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    // A: archives into `archive`, backed up early, then writes several segments' worth.
    let a_history = backed_up_and_archived(root.path(), 20, 600);
    let a_archive = files_of(&p("archive"));
    assert!(a_archive.len() >= 4, "{:?}", a_archive.keys());

    // B: A's backup restored to its latest point (with A's small segments), then run with
    // the same archive.
    let small_segments = RestoreOptions {
        config: small_cfg(None),
        ..opts(Some(&p("archive")))
    };
    let report = restore(
        &p("backup"),
        &p("b"),
        &RestoreTarget::Latest,
        &small_segments,
    )
    .unwrap();
    // The archive holds A through its last retired segment (its active one stays live).
    let a_last = report.restored_lsn;
    assert!(a_last > a_history[300].lsn, "{report:?}");
    let b = Db::open_with(p("b"), small_cfg(Some(&p("archive")))).unwrap();
    let mut b_history: Vec<Committed> = a_history
        .iter()
        .filter(|c| c.lsn <= a_last)
        .cloned()
        .collect();
    b_history.extend((0..20).map(|i| commit(&b, 10_000 + i)));
    b.backup(p("b-backup")).unwrap();
    b_history.extend((20..600).map(|i| commit(&b, 10_000 + i)));
    b.checkpoint().unwrap();
    let archived = b.metrics().segments_archived;
    assert!(archived >= 3, "{archived}");
    b.close().unwrap();

    // Every file A archived is still there, byte for byte.
    let now = files_of(&p("archive"));
    for (name, bytes) in &a_archive {
        assert!(
            now.get(name) == Some(bytes),
            "{name}, archived by A, was overwritten or removed by B"
        );
    }
    assert!(now.len() > a_archive.len(), "B archived nothing beside A");

    // A's backup rolled forward to the latest point is exactly A: none of B's commits.
    let a_back = restore(
        &p("backup"),
        &p("a-again"),
        &RestoreTarget::Latest,
        &opts(Some(&p("archive"))),
    )
    .unwrap();
    assert_eq!(a_back.restored_lsn, a_last);
    assert_eq!(contents(&p("a-again")), model(&a_history, a_last));

    // B's backup, rolled forward along B's history (through its archived segments), is
    // exactly B.
    let b_back = restore(
        &p("b-backup"),
        &p("b-again"),
        &RestoreTarget::Latest,
        &opts(Some(&p("archive"))),
    )
    .unwrap();
    assert!(b_back.restored_lsn > a_last + 300, "{b_back:?}");
    assert_eq!(
        contents(&p("b-again")),
        model(&b_history, b_back.restored_lsn)
    );
}

/// A database never archives into another database's archive: the archive records the
/// identity of the database that first archived into it, and a segment of any other is
/// refused (`ForeignArchive`) before a byte is written. The segments stay live and the
/// database loses nothing; with an archive of its own, its checkpoint archives them.
#[test]
fn archiving_into_another_databases_archive_is_refused_and_overwrites_nothing() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    backed_up_and_archived(root.path(), 10, 600);
    let before = files_of(&p("archive"));
    let owner = std::fs::read_to_string(p("archive").join("IDENTITY")).unwrap();

    let c = Db::open_with(p("c"), small_cfg(Some(&p("archive")))).unwrap();
    let history: Vec<Committed> = (0..600).map(|i| commit(&c, 20_000 + i)).collect();
    let e = c.checkpoint().unwrap_err();
    match &e {
        Error::ForeignArchive {
            dir,
            expected,
            found: Some(found),
        } => {
            assert_eq!(dir, &p("archive"));
            assert_eq!(*expected, c.lineage().identity);
            assert!(owner.contains(&format!("{found:016x}")), "{owner}");
            assert_ne!(found, expected);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("is not database"), "{e}");
    assert_eq!(files_of(&p("archive")), before, "the archive is untouched");
    assert_eq!(c.metrics().segments_retired, 0);
    // Closing checkpoints too, and is refused the same way; the log keeps everything.
    assert!(matches!(c.close(), Err(Error::ForeignArchive { .. })));

    // Nothing was lost, and with its own archive the database archives as usual.
    let c = Db::open_with(p("c"), small_cfg(Some(&p("c-archive")))).unwrap();
    c.checkpoint().unwrap();
    assert!(c.metrics().segments_archived > 0);
    let r = c.read().unwrap();
    let got: BTreeMap<_, _> = collect(r.range("t", ..).unwrap()).into_iter().collect();
    assert_eq!(got, model(&history, Lsn::MAX));
    drop(r);
    c.close().unwrap();
    assert_eq!(files_of(&p("archive")), before);
}

/// A restore keeps the database's identity and starts a timeline above every one the
/// archive holds; it can follow a later timeline from an older backup, switching where that
/// timeline branched, and never follows one that does not descend from the backup's.
#[test]
fn a_restore_follows_the_timeline_it_names_and_starts_a_new_one() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let a_history = backed_up_and_archived(root.path(), 20, 600);
    let a_manifest = walmdb::BackupManifest::read_verified(&p("backup")).unwrap();
    let a = a_manifest.lineage;
    assert!(a.is_known());
    assert_eq!((a.timeline, a.parent), (1, 0));
    let small = |archive: &str| RestoreOptions {
        config: small_cfg(None),
        ..opts(Some(&p(archive)))
    };

    // B: A's backup restored to an LSN in the middle of A's archived history.
    let branch = a_history[250].lsn;
    let report = restore(
        &p("backup"),
        &p("b"),
        &RestoreTarget::Lsn(branch),
        &small("archive"),
    )
    .unwrap();
    assert_eq!(report.timeline, 1);
    assert_eq!(report.lineage, a.branch(2));
    // The restore recorded where timeline 2 branched in the archive it read.
    let history = std::fs::read_to_string(p("archive").join("timeline-00000002.history")).unwrap();
    assert!(
        history.contains(&format!("branch_lsn {branch}\n")),
        "{history}"
    );
    let b = Db::open_with(p("b"), small_cfg(Some(&p("archive")))).unwrap();
    assert_eq!(b.lineage(), a.branch(2));
    let mut b_history: Vec<Committed> = a_history
        .iter()
        .filter(|c| c.lsn <= branch)
        .cloned()
        .collect();
    b_history.extend((0..600).map(|i| commit(&b, 30_000 + i)));
    b.checkpoint().unwrap();
    b.close().unwrap();

    // A's backup following timeline 2: A's records to where B began, then B's.
    let opts2 = RestoreOptions {
        timeline: Some(2),
        ..small("archive")
    };
    let points = walmdb::recovery_points_on(&p("backup"), Some(&p("archive")), Some(2)).unwrap();
    assert_eq!(points.timeline, 2);
    assert!(points.last_lsn > branch + 300, "{points:?}");
    let r = restore(&p("backup"), &p("b-again"), &RestoreTarget::Latest, &opts2).unwrap();
    assert_eq!((r.timeline, r.restored_lsn), (2, points.last_lsn));
    // Timelines 1 and 2 are in the archive: the new one is 3, branched from 2.
    assert_eq!(r.lineage, a.branch(2).branch(3));
    assert_eq!(contents(&p("b-again")), model(&b_history, r.restored_lsn));

    // Following timeline 1 still gives A, past the point B branched.
    let r = restore(
        &p("backup"),
        &p("a-again"),
        &RestoreTarget::Latest,
        &small("archive"),
    )
    .unwrap();
    assert_eq!(r.timeline, 1);
    assert!(r.restored_lsn > branch);
    assert_eq!(contents(&p("a-again")), model(&a_history, r.restored_lsn));

    // A timeline the archive does not hold, or one before the backup's, is refused.
    for t in [7, 0] {
        let e = restore(
            &p("backup"),
            &p("nowhere"),
            &RestoreTarget::Latest,
            &RestoreOptions {
                timeline: Some(t),
                ..small("archive")
            },
        )
        .unwrap_err();
        assert!(matches!(e, Error::RestoreTarget(_)), "timeline {t}: {e}");
        assert!(!p("nowhere").exists());
    }
}

/// Archives and backups written before timelines are still restored: archived segments
/// named `wal-<n>.log` are read as timeline 1, and a format-1 manifest (no lineage) takes
/// the archive's identity.
#[test]
fn an_archive_and_backup_of_the_old_naming_and_manifest_are_still_restored() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let history = backed_up_and_archived(root.path(), 20, 600);
    let identity = walmdb::BackupManifest::read_verified(&p("backup"))
        .unwrap()
        .lineage
        .identity;
    for (name, _) in files_of(&p("archive")) {
        if let Some(rest) = name.strip_prefix("wal-00000001-") {
            std::fs::rename(
                p("archive").join(&name),
                p("archive").join(format!("wal-{rest}")),
            )
            .unwrap();
        }
    }
    let manifest = std::fs::read_to_string(p("backup").join("MANIFEST")).unwrap();
    let body: String = manifest
        .lines()
        .filter(|l| {
            !l.starts_with("identity ")
                && !l.starts_with("timeline ")
                && !l.starts_with("parent_timeline ")
                && !l.starts_with("crc32 ")
        })
        .map(|l| format!("{}\n", l.replace("walmdb-backup 2", "walmdb-backup 1")))
        .collect();
    let old = format!("{body}crc32 {:08x}\n", crc32fast::hash(body.as_bytes()));
    std::fs::write(p("backup").join("MANIFEST"), old).unwrap();
    let m = walmdb::BackupManifest::read_verified(&p("backup")).unwrap();
    assert_eq!(m.lineage, walmdb::Lineage::UNKNOWN);

    let r = restore(
        &p("backup"),
        &p("r"),
        &RestoreTarget::Latest,
        &opts(Some(&p("archive"))),
    )
    .unwrap();
    assert!(r.restored_lsn > history[300].lsn);
    assert_eq!(contents(&p("r")), model(&history, r.restored_lsn));
    assert_eq!(
        r.lineage.identity, identity,
        "the archive's identity is kept"
    );
    assert_eq!((r.lineage.timeline, r.lineage.parent), (2, 1));
}

/// A manifest of a format this build does not read is `UnsupportedVersion` naming the
/// manifest, and its message does not call it a WAL file (it did: "unsupported WAL format").
#[test]
fn a_manifest_of_a_newer_format_is_unsupported_version_naming_the_manifest() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    backed_up_and_archived(root.path(), 2, 20);
    let manifest = std::fs::read_to_string(p("backup").join("MANIFEST")).unwrap();
    let body: String = manifest
        .lines()
        .filter(|l| !l.starts_with("crc32 "))
        .map(|l| format!("{}\n", l.replace("walmdb-backup 2", "walmdb-backup 9")))
        .collect();
    let newer = format!("{body}crc32 {:08x}\n", crc32fast::hash(body.as_bytes()));
    std::fs::write(p("backup").join("MANIFEST"), newer).unwrap();
    let e = walmdb::BackupManifest::read_verified(&p("backup")).unwrap_err();
    match &e {
        Error::UnsupportedVersion { path, found, .. } => {
            assert!(path.ends_with("MANIFEST"), "{path:?}");
            assert_eq!(*found, 9);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    let message = e.to_string();
    assert!(!message.contains("WAL"), "{message}");
    assert!(message.contains("MANIFEST"), "{message}");
}

/// A transaction written in pieces (about 100 KB, pieces of at most 16 KiB) in the archived
/// log after the backup restores whole at its end's LSN or later, and not at all to a time
/// before its commit or to an LSN among its pieces: the restore copies its pieces one at a
/// time (never joined) and the open drops the parts a cut leaves without their end. Before,
/// a restore joined it, and a cut among its pieces left the restored log short of the cut
/// (`Inconsistent`). Recovery points date it by its commit.
#[test]
fn a_restore_takes_a_split_transaction_whole_or_not_at_all() {
    let root = tempdir();
    let p = |n: &str| root.path().join(n);
    let db = Db::open_with(p("db"), small_cfg(Some(&p("archive")))).unwrap();
    let mut history: Vec<Committed> = (0..20).map(|i| commit(&db, i)).collect();
    let backup_lsn = db.backup(p("backup")).unwrap().lmdb_applied_lsn;
    history.extend((20..40).map(|i| commit(&db, i)));
    let before_big = history.last().unwrap().after_micros;
    let mut t = db.write().unwrap();
    for i in 0..100 {
        t.put("t", &key(1_000 + i), &[b'y'; 1_000]).unwrap();
    }
    let big = t.commit_with(Durability::None).unwrap();
    let big_micros = now_micros();
    assert!(big > history.last().unwrap().lsn + 2, "written in pieces");
    // Enough after it that the segments holding it retire into the archive.
    history.extend((40..400).map(|i| commit(&db, i)));
    db.checkpoint().unwrap();
    db.close().unwrap();
    let with_big = |lsn: Lsn| {
        let mut m = model(&history, lsn);
        if lsn >= big {
            m.extend((0..100).map(|i| (key(1_000 + i), vec![b'y'; 1_000])));
        }
        m
    };
    let from_archive = |into: &str, target: RestoreTarget| {
        restore(&p("backup"), &p(into), &target, &opts(Some(&p("archive")))).unwrap()
    };
    let points = walmdb::recovery_points(&p("backup"), Some(&p("archive"))).unwrap();
    assert!(points.last_lsn > big, "{points:?}");
    let latest = from_archive("r-latest", RestoreTarget::Latest);
    assert_eq!(latest.restored_lsn, points.last_lsn);
    let commits = history
        .iter()
        .filter(|c| c.lsn > backup_lsn && c.lsn <= points.last_lsn);
    assert_eq!(
        latest.records,
        commits.count() as u64 + 1,
        "the split transaction counts once"
    );
    assert_eq!(contents(&p("r-latest")), with_big(points.last_lsn));
    let at_end = from_archive("r-end", RestoreTarget::Lsn(big));
    assert!(at_end.restored_micros.unwrap() <= big_micros);
    assert_eq!(contents(&p("r-end")), with_big(big));
    let among = from_archive("r-among", RestoreTarget::Lsn(big - 1));
    assert_eq!(among.restored_lsn, big - 1);
    assert_eq!(contents(&p("r-among")), with_big(big - 1));
    let before = from_archive("r-before", RestoreTarget::Time(before_big));
    assert_eq!(before.restored_lsn, big - 1);
    assert_eq!(contents(&p("r-before")), with_big(history[39].lsn));
}
