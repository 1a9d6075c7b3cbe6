//! The `walmdb` tool's `backup`, `restore` (`--target-name`, `--target-lsn`, `--target-time`,
//! `--list`) and `compact`, run as a real process; restored contents are compared with the
//! commit history, exactly.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use walmdb::{ArchiveConfig, Config, Db, Durability, Lsn, WalConfig};

const BIN: &str = env!("CARGO_BIN_EXE_walmdb");

fn cfg(archive: &Path) -> Config {
    Config::default().wal(WalConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        prepare_segments: false,
        archive: Some(ArchiveConfig::new(archive)),
        ..WalConfig::default()
    })
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// (LSN, key, value, time just after the commit returned).
type History = Vec<(Lsn, Vec<u8>, Vec<u8>, u64)>;

fn commit(db: &Db, range: std::ops::Range<usize>, history: &mut History) {
    for i in range {
        let key = format!("k{:03}", i % 101).into_bytes();
        let value = format!("{i:05}{}", "v".repeat(300)).into_bytes();
        let mut t = db.write().unwrap();
        t.put("t", &key, &value).unwrap();
        let lsn = t.commit_with(Durability::None).unwrap();
        history.push((lsn, key, value, now_micros()));
    }
}

fn model(history: &History, lsn: Lsn) -> BTreeMap<Vec<u8>, Vec<u8>> {
    history
        .iter()
        .filter(|h| h.0 <= lsn)
        .map(|h| (h.1.clone(), h.2.clone()))
        .collect()
}

fn contents(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let db = Db::open(dir).unwrap();
    let r = db.read().unwrap();
    let out = r
        .range("t", ..)
        .unwrap()
        .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<walmdb::Result<_>>()
        .unwrap();
    drop(r);
    db.close().unwrap();
    out
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run walmdb")
}

#[track_caller]
fn expect(o: &Output, code: i32) -> Value {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn backup_list_and_restore_to_a_name_an_lsn_and_a_time() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let mut history = History::new();
    let db = Db::open_with(p("db"), cfg(&p("archive"))).unwrap();
    commit(&db, 0..40, &mut history);
    db.close().unwrap();

    let out = expect(
        &run(&[
            "backup",
            s(&p("db")),
            s(&p("bk")),
            "--archive",
            s(&p("archive")),
            "--format",
            "json",
        ]),
        0,
    );
    assert_eq!(out["lmdb_applied_lsn"], history.last().unwrap().0);

    let db = Db::open_with(p("db"), cfg(&p("archive"))).unwrap();
    commit(&db, 40..200, &mut history);
    let point = db.create_restore_point("before-migration").unwrap();
    commit(&db, 200..261, &mut history);
    // The time target is just after commit 260 returned; the next commit's time must be
    // later (commits at `None` take microseconds: two could share one).
    let time_target = history[260].3;
    std::thread::sleep(Duration::from_millis(2));
    commit(&db, 261..600, &mut history);
    db.checkpoint().unwrap();
    db.close().unwrap();

    let list = expect(
        &run(&[
            "restore",
            s(&p("bk")),
            "--list",
            "--archive",
            s(&p("archive")),
            "--format",
            "json",
        ]),
        0,
    );
    assert_eq!(list["restore_points"][0]["name"], "before-migration");
    assert_eq!(list["restore_points"][0]["lsn"], point.lsn);
    let last = list["last_lsn"].as_u64().unwrap();
    assert!(last >= history[400].0, "{list}");
    let text = run(&[
        "restore",
        s(&p("bk")),
        "--list",
        "--archive",
        s(&p("archive")),
    ]);
    expect(&text, 0);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "restore point       \"before-migration\" at LSN {}",
            point.lsn
        )),
        "{text}"
    );

    let by_name = expect(
        &run(&[
            "restore",
            s(&p("bk")),
            s(&p("r-name")),
            "--archive",
            s(&p("archive")),
            "--target-name",
            "before-migration",
            "--format",
            "json",
        ]),
        0,
    );
    assert_eq!(by_name["restored_lsn"], point.lsn - 1);
    assert_eq!(contents(&p("r-name")), model(&history, point.lsn - 1));

    let lsn = history[377].0;
    expect(
        &run(&[
            "restore",
            s(&p("bk")),
            s(&p("r-lsn")),
            "--archive",
            s(&p("archive")),
            "--target-lsn",
            &lsn.to_string(),
        ]),
        0,
    );
    assert_eq!(contents(&p("r-lsn")), model(&history, lsn));

    expect(
        &run(&[
            "restore",
            s(&p("bk")),
            s(&p("r-time")),
            "--archive",
            s(&p("archive")),
            "--target-time",
            &time_target.to_string(),
        ]),
        0,
    );
    assert_eq!(contents(&p("r-time")), model(&history, history[260].0));

    // Without the archive only the backup's own log is reachable.
    let out = run(&[
        "restore",
        s(&p("bk")),
        s(&p("r-far")),
        "--target-lsn",
        &lsn.to_string(),
    ]);
    expect(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("past the reachable log"));
    assert!(!p("r-far").exists());
}

#[test]
fn a_damaged_archive_segment_exits_1_naming_it_and_a_locked_database_exits_3() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let mut history = History::new();
    let db = Db::open_with(p("db"), cfg(&p("archive"))).unwrap();
    commit(&db, 0..10, &mut history);
    db.backup(p("bk")).unwrap();
    // The database is open in this process: the tool cannot open it.
    let out = run(&["backup", s(&p("db")), s(&p("bk2"))]);
    expect(&out, 3);
    commit(&db, 10..500, &mut history);
    db.checkpoint().unwrap();
    db.close().unwrap();
    // The archived segments (the archive's IDENTITY file aside).
    let mut archived: Vec<_> = std::fs::read_dir(p("archive"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("wal-"))
        .collect();
    archived.sort();
    let victim = archived[archived.len() / 2].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&victim, &bytes).unwrap();
    let out = run(&[
        "restore",
        s(&p("bk")),
        s(&p("r")),
        "--archive",
        s(&p("archive")),
    ]);
    expect(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(victim.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert!(!p("r").exists());
}

#[test]
fn compact_shrinks_lmdb_and_keeps_every_commit() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let db = Db::open_with(p("db"), Config::default()).unwrap();
    let big = vec![7u8; 4000];
    for round in 0..4 {
        let mut t = db.write().unwrap();
        for i in 0..500u32 {
            t.put("t", &i.to_be_bytes(), &big).unwrap();
        }
        t.commit().unwrap();
        if round < 3 {
            let mut t = db.write().unwrap();
            for i in 0..500u32 {
                t.delete("t", &i.to_be_bytes()).unwrap();
            }
            t.commit().unwrap();
        }
        db.checkpoint().unwrap();
    }
    let mut t = db.write().unwrap();
    for i in 0..450u32 {
        t.delete("t", &i.to_be_bytes()).unwrap();
    }
    t.commit().unwrap();
    db.close().unwrap();
    let before = contents(&p("db"));
    assert_eq!(before.len(), 50);
    let out = expect(&run(&["compact", s(&p("db")), "--format", "json"]), 0);
    let (b, a) = (
        out["bytes_before"].as_u64().unwrap(),
        out["bytes_after"].as_u64().unwrap(),
    );
    assert!(a < b / 2, "{out}");
    assert_eq!(
        std::fs::metadata(p("db").join("data").join("data.mdb"))
            .unwrap()
            .len(),
        a
    );
    assert!(!p("db").join("data").join("compacting").exists());
    assert_eq!(contents(&p("db")), before);
    let verify = run(&["verify", s(&p("db"))]);
    expect(&verify, 0);
}

#[test]
fn restore_follows_the_timeline_it_is_given_and_verify_shows_the_lineage() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let mut history = History::new();
    let db = Db::open_with(p("db"), cfg(&p("archive"))).unwrap();
    commit(&db, 0..20, &mut history);
    let identity = format!("{:016x}", db.lineage().identity);
    db.backup(p("bk")).unwrap();
    commit(&db, 20..400, &mut history);
    db.checkpoint().unwrap();
    db.close().unwrap();

    // The backup restored to the middle of the archive with the tool: timeline 2, recorded
    // in the archive. (The tool restores with the default 64 MiB segments, whose log would
    // not rotate in this test: B, run with the archive, is restored by the library with
    // small segments, and so takes timeline 3.)
    let branch = history[200].0;
    let b = expect(
        &run(&[
            "restore",
            s(&p("bk")),
            s(&p("b-tool")),
            "--archive",
            s(&p("archive")),
            "--target-lsn",
            &branch.to_string(),
            "--format",
            "json",
        ]),
        0,
    );
    assert_eq!(
        (&b["timeline_followed"], &b["new_timeline"], &b["identity"]),
        (
            &Value::from(1),
            &Value::from(2),
            &Value::from(identity.clone())
        )
    );
    let options = walmdb::RestoreOptions {
        archive: Some(p("archive")),
        config: cfg(&p("archive")),
        ..Default::default()
    };
    let report = walmdb::restore(
        &p("bk"),
        &p("b"),
        &walmdb::RestoreTarget::Lsn(branch),
        &options,
    )
    .unwrap();
    assert_eq!((report.lineage.timeline, report.lineage.parent), (3, 1));
    let mut b_history: History = history.iter().filter(|h| h.0 <= branch).cloned().collect();
    let db = Db::open_with(p("b"), cfg(&p("archive"))).unwrap();
    commit(&db, 1000..1400, &mut b_history);
    db.checkpoint().unwrap();
    db.close().unwrap();
    let v = expect(&run(&["verify", s(&p("b")), "--format", "json"]), 0);
    assert_eq!(v["lineage"]["identity"], Value::from(identity.clone()));
    assert_eq!(
        (&v["lineage"]["timeline"], &v["lineage"]["parent_timeline"]),
        (&Value::from(3), &Value::from(1))
    );
    let text = run(&["verify", s(&p("b"))]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "lineage: database {identity}, timeline 3 (branched from timeline 1)"
        )),
        "{text}"
    );

    // The backup of A, following timeline 3: B.
    let list = expect(
        &run(&[
            "restore",
            s(&p("bk")),
            "--list",
            "--archive",
            s(&p("archive")),
            "--timeline",
            "3",
            "--format",
            "json",
        ]),
        0,
    );
    assert_eq!(list["timeline"], 3);
    let last = list["last_lsn"].as_u64().unwrap();
    assert!(last > branch + 200, "{list}");
    let r = expect(
        &run(&[
            "restore",
            s(&p("bk")),
            s(&p("r2")),
            "--archive",
            s(&p("archive")),
            "--timeline",
            "3",
            "--format",
            "json",
        ]),
        0,
    );
    assert_eq!(
        (
            &r["timeline_followed"],
            &r["new_timeline"],
            &r["restored_lsn"]
        ),
        (&Value::from(3), &Value::from(4), &Value::from(last))
    );
    assert_eq!(contents(&p("r2")), model(&b_history, last));

    // A timeline the archive does not hold is refused, nothing written.
    let out = run(&[
        "restore",
        s(&p("bk")),
        s(&p("r9")),
        "--archive",
        s(&p("archive")),
        "--timeline",
        "9",
    ]);
    expect(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeline 9"));
    assert!(!p("r9").exists());
}
