//! Archiving, hot backup and point-in-time restore: restored states are compared with the
//! commit history, exactly.

#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::path::Path;
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
    Committed {
        lsn,
        after_micros: now_micros(),
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
    let mut archived: Vec<_> = std::fs::read_dir(p("archive"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    archived.sort();
    assert!(archived.len() >= 4, "{archived:?}");
    let victim = &archived[archived.len() / 2];
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
        .collect();
    names.sort();
    assert!(retired > 3, "{retired}");
    assert_eq!(names.len(), 3, "{names:?}");
    // The newest: segment numbers just below the live log's.
    let newest = format!("wal-{:08}.log", retired);
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
    let victim = p("archive").join("wal-00000003.log");
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
        matches!(&e, Error::Corruption { segment: 3, reason, .. } if reason.contains("wal-00000003.log")),
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
