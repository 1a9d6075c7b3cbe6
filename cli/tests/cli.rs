//! The `walmdb` command-line tool, run as a real process on real database directories made
//! with the library: `verify` (healthy, a flipped byte with synced frames after it, damage
//! below LMDB's applied LSN, a truncated tail with and without `--strict`, a missing middle
//! segment, bad directories), `dump` (text and JSON, LSN, time and table filters, checked
//! against what was committed), `stats` (opened, offline, and on a database another handle
//! holds: exit 3) and `checkpoint`; times on the command line (RFC 3339, local civil times in
//! the process's `TZ`, "2 hours ago") for `dump` and `restore --target-time`. The read-only
//! commands must leave every byte of the directory as it was. `walmdb verify` agrees with
//! what opening does on every checked-in corrupt fixture (the library's `tests/inspect.rs`
//! checks that `inspect::LogScan::would_open`, which verify is built on, predicts
//! `Wal::open_with` exactly).

// The library's shared test helpers, not a copy (the library's tests use the rest of them;
// the module allows dead code itself).
#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use walmdb::{Config, Db, Lsn};

const BIN: &str = env!("CARGO_BIN_EXE_walmdb");

/// The library's checked-in corrupt fixtures (`tests/fixtures/v1-corrupt` at the top of the
/// repository).
const CORRUPT_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/v1-corrupt");

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// 64 KiB segments, no compression, no background spare; the applier and the checkpointer
/// wait (an hour) unless asked, so a simulated crash leaves the log unapplied.
fn cfg() -> Config {
    Config::default()
        .wal(common::cfg())
        .apply_interval(Duration::from_secs(3600))
        .checkpoint_interval(Duration::from_secs(3600))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// One operation as committed: (table, op, key, value).
type ModelOp = (String, &'static str, Vec<u8>, Option<Vec<u8>>);

/// A committed transaction: its LSN, operations, and the clock around its commit.
#[derive(Debug, Clone)]
struct Committed {
    lsn: Lsn,
    ops: Vec<ModelOp>,
    before: u64,
    after: u64,
}

/// Commits `n` transactions: transaction `i` puts `users/u{i}` (a value of `value_len`
/// bytes) and, every third one, `orders/o{i}`; every fifth deletes `users/u{i-1}`.
/// Transaction 0 writes a key and value with quotes, a newline and a non-UTF-8 byte.
fn commit_some(db: &Db, first: usize, n: usize, value_len: usize) -> Vec<Committed> {
    let mut out = Vec::new();
    for i in first..first + n {
        let mut ops: Vec<ModelOp> = Vec::new();
        if i == 0 {
            ops.push((
                "users".into(),
                "put",
                b"k\"q\n\xff".to_vec(),
                Some(b"v=\"1\"\t\x00".to_vec()),
            ));
        }
        let value: Vec<u8> = (0..value_len).map(|b| b"abcdefgh"[(b + i) % 8]).collect();
        ops.push((
            "users".into(),
            "put",
            format!("u{i:04}").into_bytes(),
            Some(value),
        ));
        if i % 3 == 0 {
            ops.push((
                "orders".into(),
                "put",
                format!("o{i:04}").into_bytes(),
                Some(format!("order {i}").into_bytes()),
            ));
        }
        if i % 5 == 4 {
            ops.push((
                "users".into(),
                "delete",
                format!("u{:04}", i - 1).into_bytes(),
                None,
            ));
        }
        // A transaction logs its writes by table, then key.
        ops.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
        let before = now_micros();
        let mut txn = db.write().unwrap();
        for (table, op, key, value) in &ops {
            match *op {
                "put" => txn.put(table, key, value.as_ref().unwrap()).unwrap(),
                "delete" => txn.delete(table, key).unwrap(),
                _ => unreachable!(),
            }
        }
        let lsn = txn.commit().unwrap();
        let after = now_micros();
        out.push(Committed {
            lsn,
            ops,
            before,
            after,
        });
    }
    out
}

/// A database with the tables created, `n` transactions committed and closed cleanly.
fn closed_db(dir: &Path, n: usize, value_len: usize) -> Vec<Committed> {
    let db = Db::open_with(dir, cfg()).unwrap();
    db.create_table("users").unwrap();
    db.create_table("orders").unwrap();
    let committed = commit_some(&db, 0, n, value_len);
    db.close().unwrap();
    committed
}

/// A database whose engine stopped as a crash would: every commit in the log, LMDB holding
/// at most the table creations.
fn crashed_db(dir: &Path, n: usize, value_len: usize) -> Vec<Committed> {
    let db = Db::open_with(dir, cfg()).unwrap();
    db.create_table("users").unwrap();
    db.create_table("orders").unwrap();
    let committed = commit_some(&db, 0, n, value_len);
    db.simulate_crash();
    committed
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run the walmdb binary")
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
fn expect_code(o: &Output, code: i32, ctx: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{ctx}: exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", stdout(o)))
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every file under `dir` (relative path) and its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The segment files of `<db>/wal`, oldest first.
fn segments(db: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(db.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with("wal-") && n.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

fn name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

/// Runs a read-only command and checks it left every file as it was.
#[track_caller]
fn run_read_only(dir: &Path, args: &[&str]) -> Output {
    let before = tree(dir);
    let out = run(args);
    let after = tree(dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{args:?} created or removed files"
    );
    for (p, bytes) in &before {
        assert!(after[p] == *bytes, "{args:?} changed {}", p.display());
    }
    out
}

// ---------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------

#[test]
fn verify_a_healthy_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let committed = closed_db(&dir, 200, 400);
    let last = committed.last().unwrap().lsn;
    let d = path_str(&dir);

    let out = run_read_only(&dir, &["verify", d]);
    expect_code(&out, 0, "verify");
    let text = stdout(&out);
    assert!(text.contains("verdict: healthy"), "{text}");
    assert!(text.contains(&format!("applied LSN {last}")), "{text}");
    for seg in segments(&dir) {
        assert!(
            text.contains(name(&seg)),
            "the table lists {}:\n{text}",
            name(&seg)
        );
    }
    assert!(!text.contains("DAMAGE"), "{text}");

    let out = run_read_only(&dir, &["verify", d, "--format", "json"]);
    expect_code(&out, 0, "verify --format json");
    let v = json(&out);
    assert_eq!(v["healthy"], true);
    assert_eq!(v["applied_lsn"], last);
    assert_eq!(v["open"]["ok"], true);
    assert_eq!(v["open"]["last_lsn"], last);
    assert!(v["open"]["cut"].is_null());
    let segs = v["segments"].as_array().unwrap();
    assert_eq!(segs.len(), segments(&dir).len());
    assert!(segs.iter().all(|s| s["end"] == "clean"), "{segs:?}");
    assert_eq!(segs.last().unwrap()["last_lsn"], last);

    // --strict changes nothing for a clean log.
    expect_code(
        &run_read_only(&dir, &["verify", "--strict", d]),
        0,
        "verify --strict",
    );
}

#[test]
fn verify_a_crashed_database_with_an_unapplied_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let committed = crashed_db(&dir, 300, 400);
    let last = committed.last().unwrap().lsn;
    let applied = walmdb::inspect::applied_lsn(&dir.join("data")).unwrap();
    assert!(
        applied < committed[0].lsn,
        "LMDB applied {applied}: the crash must leave work"
    );
    assert!(
        segments(&dir).len() >= 3,
        "the log must span several segments"
    );

    let out = run_read_only(&dir, &["verify", path_str(&dir), "--format", "json"]);
    expect_code(&out, 0, "verify");
    let v = json(&out);
    assert_eq!(v["healthy"], true, "{v}");
    assert_eq!(v["applied_lsn"], applied);
    assert_eq!(v["open"]["last_lsn"], last);
    let text = stdout(&run(&["verify", path_str(&dir)]));
    assert!(
        text.contains(&format!("{} record(s) to replay", last - applied)),
        "{text}"
    );

    // And the database opens with everything.
    let db = Db::open_with(&dir, cfg()).unwrap();
    assert_eq!(db.recovery_report().applied_lsn_at_open, applied);
    assert_eq!(db.recovery_report().last_lsn, last);
    assert!(db.recovery_report().wal.cut.is_none());
    db.close().unwrap();
}

#[test]
fn verify_names_the_segment_and_offset_of_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let committed = crashed_db(&dir, 300, 400);
    let segs = segments(&dir);
    assert!(segs.len() >= 3);
    // A frame in the middle of segment 1: every commit was synced alone, so the frames
    // after it prove it had been synced.
    let mut data = std::fs::read(&segs[0]).unwrap();
    let frames = common::frames(&data);
    assert!(frames.len() > 20);
    let f = frames[frames.len() / 2];
    let byte = f.offset + common::FRAME_HEADER + 10;
    data[byte] ^= 0x20;
    std::fs::write(&segs[0], &data).unwrap();

    let out = run_read_only(&dir, &["verify", path_str(&dir)]);
    expect_code(&out, 1, "verify");
    let text = stdout(&out);
    let want = format!("corruption in {} at offset {}", name(&segs[0]), f.offset);
    assert!(text.contains(&want), "expected {want:?} in:\n{text}");
    assert!(text.contains("verdict: DAMAGED"), "{text}");

    // The engine agrees.
    match Db::open_with(&dir, cfg()) {
        Err(walmdb::Error::Corruption {
            segment, offset, ..
        }) => assert_eq!((segment, offset), (1, f.offset as u64)),
        other => panic!("Db::open: expected Corruption, got {other:?}"),
    }

    // dump prints the records before the damage, then stops naming the file and offset.
    let out = run_read_only(&dir, &["dump", path_str(&dir), "--format", "json"]);
    expect_code(&out, 1, "dump");
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    let lines = json_lines(&out);
    let last_dumped = lines.last().unwrap()["lsn"].as_u64().unwrap();
    assert_eq!(last_dumped, f.first_lsn - 1);
    assert!(committed.iter().any(|c| c.lsn == last_dumped));
}

#[test]
fn verify_refuses_damage_below_the_applied_lsn() {
    // After a clean close LMDB holds everything; the last segment is still live (it is the
    // active one) and its records are at or below the applied LSN.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 60, 400);
    let segs = segments(&dir);
    let last_seg = segs.last().unwrap();
    let mut data = std::fs::read(last_seg).unwrap();
    let frames = common::frames(&data);
    assert!(frames.len() >= 3, "{frames:?}");
    let f = frames[1];
    data[f.offset + common::FRAME_HEADER + 3] ^= 1;
    std::fs::write(last_seg, &data).unwrap();

    let out = run_read_only(&dir, &["verify", path_str(&dir)]);
    expect_code(&out, 1, "verify");
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "corruption in {} at offset {}",
            name(last_seg),
            f.offset
        )),
        "{text}"
    );
    assert!(text.contains("below LMDB's applied LSN"), "{text}");
    assert!(matches!(
        Db::open_with(&dir, cfg()),
        Err(walmdb::Error::Corruption { .. })
    ));
}

#[test]
fn verify_warns_of_a_truncated_tail_and_strict_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let committed = crashed_db(&dir, 150, 400);
    let last_seg = segments(&dir).pop().unwrap();
    let data = std::fs::read(&last_seg).unwrap();
    let frames = common::frames(&data);
    let torn = *frames.last().unwrap();
    // The file ends in the middle of its last frame, as a crash during its write leaves it.
    std::fs::write(&last_seg, &data[..torn.offset + torn.total_len / 2]).unwrap();

    let d = path_str(&dir);
    let out = run_read_only(&dir, &["verify", d]);
    expect_code(&out, 0, "verify");
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "warning: torn tail in {} at offset {}",
            name(&last_seg),
            torn.offset
        )),
        "{text}"
    );
    assert!(text.contains("opening would cut it"), "{text}");
    assert!(text.contains("verdict: healthy"), "{text}");

    let out = run_read_only(&dir, &["verify", "--strict", d]);
    expect_code(&out, 1, "verify --strict");
    assert!(
        stdout(&out).contains("verdict: DAMAGED"),
        "{}",
        stdout(&out)
    );

    // The dump ends before the torn frame, with a note.
    let out = run_read_only(&dir, &["dump", d, "--format", "json"]);
    expect_code(&out, 0, "dump");
    assert!(stderr(&out).contains("torn tail"), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(
        lines.last().unwrap()["lsn"].as_u64().unwrap(),
        torn.first_lsn - 1
    );

    // What verify predicted is what opening does.
    let v = json(&run(&["verify", d, "--format", "json"]));
    let db = Db::open_with(&dir, cfg()).unwrap();
    let cut = db
        .recovery_report()
        .wal
        .cut
        .clone()
        .expect("opening cuts the tail");
    assert_eq!(v["open"]["cut"]["segment"], cut.segment);
    assert_eq!(v["open"]["cut"]["offset"], cut.offset);
    assert_eq!(v["open"]["cut"]["bytes_cut"], cut.bytes_cut);
    assert_eq!(v["open"]["last_lsn"], db.recovery_report().last_lsn);
    assert_eq!(db.recovery_report().last_lsn, torn.first_lsn - 1);
    assert!(committed.iter().any(|c| c.lsn == torn.first_lsn));
    db.close().unwrap();
    // Once cut, the log is clean again.
    expect_code(
        &run(&["verify", "--strict", d]),
        0,
        "verify --strict after the cut",
    );
}

#[test]
fn verify_finds_a_missing_middle_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    crashed_db(&dir, 300, 400);
    let segs = segments(&dir);
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).unwrap();

    let out = run_read_only(&dir, &["verify", path_str(&dir)]);
    expect_code(&out, 1, "verify");
    let text = stdout(&out);
    assert!(text.contains("segment 2 is missing"), "{text}");
    assert!(text.contains("verdict: DAMAGED"), "{text}");
    assert!(matches!(
        Db::open_with(&dir, cfg()),
        Err(walmdb::Error::SegmentSequence { .. })
    ));
}

#[test]
fn verify_finds_lmdb_behind_the_log() {
    // The oldest segment gone: the log no longer holds the records after LMDB's applied LSN.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    crashed_db(&dir, 300, 400);
    let segs = segments(&dir);
    std::fs::remove_file(&segs[0]).unwrap();
    let out = run_read_only(&dir, &["verify", path_str(&dir)]);
    expect_code(&out, 1, "verify");
    let text = stdout(&out);
    assert!(text.contains("is behind the log"), "{text}");
    assert!(matches!(
        Db::open_with(&dir, cfg()),
        Err(walmdb::Error::SegmentSequence { .. })
    ));
}

#[test]
fn verify_finds_lmdb_ahead_of_the_log() {
    // An older copy of the log put back under a newer LMDB.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let old = closed_db(&dir, 20, 100);
    let old_wal = tmp.path().join("old-wal");
    std::fs::create_dir(&old_wal).unwrap();
    for seg in segments(&dir) {
        std::fs::copy(&seg, old_wal.join(name(&seg))).unwrap();
    }
    let db = Db::open_with(&dir, cfg()).unwrap();
    let newer = commit_some(&db, 20, 20, 100);
    db.close().unwrap();
    std::fs::remove_dir_all(dir.join("wal")).unwrap();
    std::fs::rename(&old_wal, dir.join("wal")).unwrap();
    let applied = newer.last().unwrap().lsn;
    assert_eq!(
        walmdb::inspect::applied_lsn(&dir.join("data")).unwrap(),
        applied
    );

    let out = run_read_only(&dir, &["verify", path_str(&dir)]);
    expect_code(&out, 1, "verify");
    let text = stdout(&out);
    let want = format!(
        "the log ends at LSN {} but records through LSN {applied} were expected: LMDB's applied LSN {applied} is ahead of the log",
        old.last().unwrap().lsn
    );
    assert!(text.contains(&want), "{want} in\n{text}");
    assert!(Db::open_with(&dir, cfg()).is_err());
}

#[test]
fn bad_directories_and_arguments_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    for cmd in ["verify", "dump", "stats", "checkpoint"] {
        let out = run(&[cmd, path_str(&missing)]);
        expect_code(&out, 2, cmd);
        assert!(
            stderr(&out).contains("no such directory"),
            "{cmd}: {}",
            stderr(&out)
        );
        assert!(!missing.exists(), "{cmd} created the directory");
    }
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for cmd in ["verify", "dump", "stats", "checkpoint"] {
        let out = run(&[cmd, path_str(&empty)]);
        expect_code(&out, 2, cmd);
        assert!(
            stderr(&out).contains("not a walmdb database directory"),
            "{cmd}: {}",
            stderr(&out)
        );
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{cmd} wrote");
    }
    expect_code(&run(&["verify"]), 2, "no directory");
    expect_code(&run(&["frobnicate", "x"]), 2, "unknown subcommand");
    expect_code(&run(&["dump", "x", "--since", "yesterday"]), 2, "bad time");
    expect_code(&run(&["dump", "x", "--format", "xml"]), 2, "bad format");
}

// ---------------------------------------------------------------------------------------
// dump
// ---------------------------------------------------------------------------------------

/// A dumped operation: (lsn, table, op, key, value).
type Row = (u64, String, String, Vec<u8>, Option<Vec<u8>>);

/// The rows a dump of `committed` prints, filtered.
fn model_rows(
    committed: &[Committed],
    keep: impl Fn(&Committed) -> bool,
    table: Option<&str>,
) -> Vec<Row> {
    committed
        .iter()
        .filter(|c| keep(c))
        .flat_map(|c| {
            c.ops
                .iter()
                .filter(|(t, ..)| table.is_none_or(|want| t == want))
                .map(|(t, op, k, v)| (c.lsn, t.clone(), op.to_string(), k.clone(), v.clone()))
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The txn rows of a `dump --format json --hex`.
fn dumped_rows(lines: &[Value]) -> Vec<Row> {
    lines
        .iter()
        .filter(|l| l["type"] == "txn" && !l["op"].is_null())
        .filter(|l| l["op"] == "put" || l["op"] == "delete")
        .map(|l| {
            (
                l["lsn"].as_u64().unwrap(),
                l["table"].as_str().unwrap().to_owned(),
                l["op"].as_str().unwrap().to_owned(),
                unhex(l["key"].as_str().unwrap()),
                l["value"].as_str().map(unhex),
            )
        })
        .collect()
}

#[test]
fn dump_prints_what_was_committed_with_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = Db::open_with(&dir, cfg()).unwrap();
    let users = db.create_table("users").unwrap();
    let orders = db.create_table("orders").unwrap();
    let mut committed = commit_some(&db, 0, 40, 50);
    std::thread::sleep(Duration::from_millis(20));
    let split = now_micros();
    std::thread::sleep(Duration::from_millis(20));
    committed.extend(commit_some(&db, 40, 40, 50));
    db.simulate_crash();
    let d = path_str(&dir);

    // Everything, as JSON with hex bytes: exactly the committed operations, in LSN order.
    let out = run_read_only(&dir, &["dump", d, "--format", "json", "--hex"]);
    expect_code(&out, 0, "dump");
    assert_eq!(stderr(&out), "", "a clean log ends the dump silently");
    let lines = json_lines(&out);
    assert_eq!(dumped_rows(&lines), model_rows(&committed, |_| true, None));
    let creates: Vec<(u64, &str)> = lines
        .iter()
        .filter(|l| l["op"] == "create-table")
        .map(|l| (l["lsn"].as_u64().unwrap(), l["table"].as_str().unwrap()))
        .collect();
    assert_eq!(creates, [(users, "users"), (orders, "orders")]);
    for l in &lines {
        let t = l["time_micros"].as_u64().unwrap();
        assert_eq!(l["time"].as_str().unwrap().len(), 27, "{l}");
        if let Some(c) = committed
            .iter()
            .find(|c| c.lsn == l["lsn"].as_u64().unwrap())
        {
            assert!(
                c.before <= t && t <= c.after,
                "{l}: commit time outside its commit"
            );
        }
    }

    // LSN range and table.
    let (lo, hi) = (committed[10].lsn, committed[30].lsn);
    let out = run_read_only(
        &dir,
        &[
            "dump",
            d,
            "--format",
            "json",
            "--hex",
            "--from-lsn",
            &lo.to_string(),
            "--to-lsn",
            &hi.to_string(),
            "--table",
            "orders",
        ],
    );
    expect_code(&out, 0, "dump --from-lsn --to-lsn --table");
    let lines = json_lines(&out);
    let want = model_rows(&committed, |c| (lo..=hi).contains(&c.lsn), Some("orders"));
    assert!(!want.is_empty());
    assert_eq!(dumped_rows(&lines), want);
    assert!(lines.iter().all(|l| l["table"] == "orders"));

    // Time: --since the split is exactly the second batch, --until it the first (and the
    // table creations before it), given as RFC 3339 and as microseconds.
    let since = run_read_only(
        &dir,
        &[
            "dump",
            d,
            "--format",
            "json",
            "--hex",
            "--since",
            &split.to_string(),
        ],
    );
    expect_code(&since, 0, "dump --since");
    assert_eq!(
        dumped_rows(&json_lines(&since)),
        model_rows(&committed[40..], |_| true, None)
    );
    let rfc = format_rfc3339(split);
    let until = run_read_only(
        &dir,
        &["dump", d, "--format", "json", "--hex", "--until", &rfc],
    );
    expect_code(&until, 0, "dump --until");
    let until_lines = json_lines(&until);
    assert_eq!(
        dumped_rows(&until_lines),
        model_rows(&committed[..40], |_| true, None)
    );
    assert_eq!(until_lines.first().unwrap()["lsn"], users);

    // Text: one line per operation, escaped bytes, LSN and RFC 3339 time first.
    let out = run_read_only(
        &dir,
        &["dump", d, "--to-lsn", &committed[0].lsn.to_string()],
    );
    expect_code(&out, 0, "dump text");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let first = &committed[0];
    assert_eq!(lines.len(), 2 + first.ops.len(), "{text}");
    assert!(
        lines[0].starts_with(&format!("lsn={users} time=")),
        "{text}"
    );
    assert!(lines[0].ends_with("table=users op=create-table"), "{text}");
    assert!(lines[1].ends_with("table=orders op=create-table"), "{text}");
    assert!(
        lines[2..]
            .iter()
            .all(|l| l.starts_with(&format!("lsn={} time=20", first.lsn))),
        "{text}"
    );
    let want = r#" table=users op=put key="k\"q\n\xff" value="v=\"1\"\t\x00" value_len=7"#;
    assert!(lines.iter().any(|l| l.ends_with(want)), "{want} in\n{text}");
    assert!(
        lines.iter().any(
            |l| l.ends_with(" table=orders op=put key=\"o0000\" value=\"order 0\" value_len=7")
        ),
        "{text}"
    );
    let out = run_read_only(
        &dir,
        &[
            "dump",
            d,
            "--to-lsn",
            &first.lsn.to_string(),
            "--hex",
            "--table",
            "users",
        ],
    );
    let text = stdout(&out);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with("table=users op=create-table"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l
                .ends_with(" table=users op=put key=6b22710aff value=763d2231220900 value_len=7")),
        "{text}"
    );
    assert!(!text.contains("orders"), "{text}");

    // --output writes a file (and nothing to stdout).
    let file = tmp.path().join("dump.txt");
    let out = run(&["dump", d, "--output", path_str(&file)]);
    expect_code(&out, 0, "dump --output");
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&file).unwrap();
    let rows: usize = committed.iter().map(|c| c.ops.len()).sum();
    assert_eq!(written.lines().count(), rows + 2);
}

/// RFC 3339 in UTC, computed independently of the tool (via days since the epoch).
fn format_rfc3339(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let (mut days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let mut year = 1970;
    loop {
        let len = if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
            366
        } else {
            365
        };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let months = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= months[month] {
        days -= months[month];
        month += 1;
    }
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        month + 1,
        days + 1,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        micros % 1_000_000
    )
}

// ---------------------------------------------------------------------------------------
// times on the command line: --since, --until, restore --target-time
// ---------------------------------------------------------------------------------------

/// A time zone for the tool's process, five and a half hours east of UTC all year (POSIX TZ
/// rule), so a local time that was read as UTC misses by hours.
const EAST_5_30: &str = "XST-5:30";

/// Runs the tool in time zone `tz` (a `TZ` value), or in the test's own when `None`.
fn run_in_zone(tz: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("NO_COLOR", "1");
    if let Some(tz) = tz {
        cmd.env("TZ", tz);
    }
    cmd.output().expect("run the walmdb binary")
}

/// The times `dump` read for `--since` and `--until`, from its usage error when the first is
/// after the second (given before it looks at the directory).
#[track_caller]
fn read_times(tz: Option<&str>, since: &str, until: &str) -> (jiff::Timestamp, jiff::Timestamp) {
    let out = run_in_zone(
        tz,
        &["dump", "/nonexistent", "--since", since, "--until", until],
    );
    expect_code(&out, 2, "--since after --until");
    let err = stderr(&out);
    let times = err
        .split_once("--since ")
        .and_then(|(_, rest)| rest.split_once(" is after --until "))
        .unwrap_or_else(|| panic!("no times in {err:?}"));
    let parse = |t: &str| {
        t.trim()
            .parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{t:?}: {e}"))
    };
    (parse(times.0), parse(times.1))
}

#[test]
fn times_are_read_as_rfc_3339_local_civil_and_relative_times() {
    use jiff::{civil::DateTime, tz::TimeZone, Span, Timestamp, ToSpan};
    let east = Some(EAST_5_30);

    // RFC 3339: the same whatever the local zone; a date alone is its local midnight
    // (00:00 at +05:30 is 18:30 UTC the day before).
    let (t, u) = read_times(east, "2024-05-01T14:00:00.25+02:00", "2024-05-01");
    assert_eq!(t, "2024-05-01T12:00:00.25Z".parse::<Timestamp>().unwrap());
    assert_eq!(u, "2024-04-30T18:30:00Z".parse::<Timestamp>().unwrap());

    // A civil time without an offset is local: 14:30 at +05:30 is 09:00 UTC.
    for civil in [
        "2026-12-05 14:30:00",
        "2026-12-05T14:30",
        "2026-12-05 14:30",
    ] {
        let (t, _) = read_times(east, civil, "0");
        assert_eq!(
            t,
            "2026-12-05T09:00:00Z".parse::<Timestamp>().unwrap(),
            "{civil}"
        );
    }
    // And in the test's own zone, whichever it is, as jiff converts it with the system's.
    for civil in ["2026-07-01 02:30", "2026-12-05T14:30:00.5"] {
        let (t, _) = read_times(None, civil, "0");
        let want = civil
            .parse::<DateTime>()
            .unwrap()
            .to_zoned(TimeZone::system())
            .unwrap()
            .timestamp();
        assert_eq!(t, want, "{civil}");
    }

    // Relative times count back from now ("1 day ago" is a calendar day in the local zone:
    // 24 hours at a fixed offset).
    for (since, back_since, until, back_until) in [
        ("2 hours ago", 2.hours(), "3 hours ago", 3.hours()),
        ("-90m", 90.minutes(), "91 minutes ago", 91.minutes()),
        ("now", Span::new(), "1 day ago", 24.hours()),
    ] {
        let before = Timestamp::now();
        let (t, u) = read_times(east, since, until);
        let after = Timestamp::now();
        for (got, back, what) in [(t, back_since, since), (u, back_until, until)] {
            let (lo, hi) = (before - back, after - back);
            assert!(lo <= got && got <= hi, "{what}: {lo} <= {got} <= {hi}");
        }
    }
}

#[test]
fn dump_filters_by_local_and_relative_times() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = Db::open_with(&dir, cfg()).unwrap();
    db.create_table("users").unwrap();
    db.create_table("orders").unwrap();
    let mut committed = commit_some(&db, 0, 10, 20);
    std::thread::sleep(Duration::from_millis(20));
    let split = now_micros();
    std::thread::sleep(Duration::from_millis(20));
    committed.extend(commit_some(&db, 10, 10, 20));
    db.simulate_crash();
    let d = path_str(&dir);

    // The split as a clock on the wall at +05:30 reads it, without an offset.
    let local = jiff::Timestamp::from_microsecond(split as i64)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::fixed(
            jiff::tz::Offset::from_seconds(5 * 3600 + 1800).unwrap(),
        ))
        .datetime()
        .strftime("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    let out = run_in_zone(
        Some(EAST_5_30),
        &["dump", d, "--format", "json", "--hex", "--since", &local],
    );
    expect_code(&out, 0, "dump --since a local time");
    assert_eq!(
        dumped_rows(&json_lines(&out)),
        model_rows(&committed[10..], |_| true, None),
        "--since {local}"
    );

    // Everything was committed within the last hour, nothing before it.
    let out = run_in_zone(
        Some(EAST_5_30),
        &[
            "dump",
            d,
            "--format",
            "json",
            "--hex",
            "--since",
            "1 hour ago",
        ],
    );
    expect_code(&out, 0, "dump --since 1 hour ago");
    assert_eq!(
        dumped_rows(&json_lines(&out)),
        model_rows(&committed, |_| true, None)
    );
    let out = run_in_zone(Some(EAST_5_30), &["dump", d, "--until", "-1h"]);
    expect_code(&out, 0, "dump --until -1h");
    assert_eq!(stdout(&out), "");
}

#[test]
fn restore_target_time_takes_every_form_and_names_them_when_it_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("no-backup");
    let into = tmp.path().join("into");
    let (b, i) = (path_str(&backup), path_str(&into));
    // Each is read, so the restore gets as far as the (missing) backup's manifest.
    for time in [
        "2024-05-01T12:00:00Z",
        "2024-05-01T14:00:00.5+02:00",
        "2024-05-01",
        "2024-05-01 14:30",
        "2024-05-01T14:30:00",
        "2 hours ago",
        "1 day ago",
        "-2h",
        "1714564800000000",
    ] {
        let out = run(&["restore", b, i, "--target-time", time]);
        let err = stderr(&out);
        assert!(err.contains("cannot read the manifest"), "{time}: {err}");
        assert!(!err.contains("invalid value"), "{time}: {err}");
        assert!(!into.exists(), "{time}");
    }
    for bad in [
        "next tuesday",
        "2024-13-01",
        "2024-05-01T25:00",
        "2 hours",
        "yesterday",
    ] {
        let out = run(&["restore", b, i, "--target-time", bad]);
        expect_code(&out, 2, bad);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("invalid value '{bad}' for '--target-time <TIME>'")),
            "{bad}: {err}"
        );
        assert!(!into.exists(), "{bad}");
    }
    let err = stderr(&run(&["restore", b, i, "--target-time", "next tuesday"]));
    for form in [
        "RFC 3339",
        "2024-05-01 14:30",
        "2 hours ago",
        "microseconds since the Unix epoch",
    ] {
        assert!(err.contains(form), "{form}: {err}");
    }
    let err = stderr(&run(&["restore", b, i, "--target-time", "2 hours"]));
    assert!(err.contains("\"2 hours ago\""), "{err}");
}

// ---------------------------------------------------------------------------------------
// stats and checkpoint
// ---------------------------------------------------------------------------------------

#[test]
fn stats_on_a_database_in_use_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let committed = closed_db(&dir, 20, 100);
    let db = Db::open_with(&dir, cfg()).unwrap();
    let d = path_str(&dir);
    for cmd in ["stats", "checkpoint"] {
        let out = run(&[cmd, d]);
        expect_code(&out, 3, cmd);
        assert!(
            stderr(&out).contains("database is in use by another process"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    // Offline statistics read the files without opening anything.
    let out = run(&["stats", "--offline", "--format", "json", d]);
    expect_code(&out, 0, "stats --offline");
    let v = json(&out);
    assert_eq!(v["last_lsn"], committed.last().unwrap().lsn);
    if cfg!(target_os = "linux") {
        assert_eq!(v["in_use_by_pid"], std::process::id(), "{v}");
    }
    db.close().unwrap();
    expect_code(&run(&["stats", d]), 0, "stats once closed");
}

/// True when a line of `text` is `name value` (the text format's aligned fields).
fn has_field(text: &str, name: &str, value: &str) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == [name, value])
}

#[test]
fn stats_open_and_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let committed = crashed_db(&dir, 120, 400);
    let last = committed.last().unwrap().lsn;
    let applied = walmdb::inspect::applied_lsn(&dir.join("data")).unwrap();
    let d = path_str(&dir);

    let out = run_read_only(&dir, &["stats", "--offline", "--format", "json", d]);
    expect_code(&out, 0, "stats --offline");
    let v = json(&out);
    assert_eq!(v["applied_lsn"], applied);
    assert_eq!(v["last_lsn"], last);
    assert_eq!(v["first_lsn"], 1);
    assert_eq!(v["records_to_replay"], last - applied);
    assert_eq!(v["segments"], segments(&dir).len());
    assert_eq!(v["in_use_by_pid"], Value::Null);
    let text = stdout(&run(&["stats", "--offline", d]));
    assert!(text.contains("(offline: nothing opened)"), "{text}");

    // Opening replays the log.
    let out = run(&["stats", "--format", "json", d]);
    expect_code(&out, 0, "stats");
    let v = json(&out);
    assert_eq!(v["applied_lsn_at_open"], applied);
    assert_eq!(v["replayed_records"], last - applied);
    // All of it fits in the overlay: the applier applies it after open returns.
    assert_eq!(v["applied_records_at_open"], 0);
    assert_eq!(v["overlay_records_at_open"], last - applied);
    let applied_now = v["applied_lsn"].as_u64().unwrap();
    assert!((applied..=last).contains(&applied_now), "{v}");
    assert_eq!(v["visible_lsn"], last);
    assert_eq!(v["tables"], serde_json::json!(["orders", "users"]));
    let text = stdout(&run(&["stats", d]));
    assert!(has_field(&text, "applied_lsn", &last.to_string()), "{text}");
    assert!(has_field(&text, "replayed_records", "0"), "{text}");
    assert_eq!(
        walmdb::inspect::applied_lsn(&dir.join("data")).unwrap(),
        last
    );
}

#[test]
fn checkpoint_retires_covered_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    // A live engine, so its applier has applied nothing: no checkpoint yet.
    let db = Db::open_with(&dir, cfg()).unwrap();
    db.create_table("users").unwrap();
    db.create_table("orders").unwrap();
    let committed = commit_some(&db, 0, 300, 400);
    db.simulate_crash();
    let last = committed.last().unwrap().lsn;
    let before = segments(&dir).len();
    assert!(before >= 3);
    let applied = walmdb::inspect::applied_lsn(&dir.join("data")).unwrap();
    assert!(applied < last);
    let d = path_str(&dir);

    let out = run(&["checkpoint", "--format", "json", d]);
    expect_code(&out, 0, "checkpoint");
    let v = json(&out);
    assert_eq!(v["checkpoint_lsn"], last);
    // Opening replays into the overlay; the checkpoint applies it and retires all but the
    // active segment.
    assert_eq!(v["segments_retired"], before - segments(&dir).len());
    assert_eq!(v["segments_retired"], before - 1);
    assert_eq!(
        v["segments_retired_at_open"].as_u64().unwrap()
            + v["segments_retired_by_checkpoint"].as_u64().unwrap(),
        before as u64 - 1
    );
    assert_eq!(v["replayed_records_at_open"], last - applied);
    assert_eq!(v["live_segments"], segments(&dir).len());
    assert_eq!(segments(&dir).len(), 1);
    assert_eq!(
        walmdb::inspect::applied_lsn(&dir.join("data")).unwrap(),
        last
    );
    let text = stdout(&run(&["checkpoint", d]));
    assert!(
        has_field(&text, "checkpoint_lsn", &last.to_string()),
        "{text}"
    );
    assert!(has_field(&text, "segments_retired", "0"), "{text}");
    expect_code(
        &run(&["verify", "--strict", d]),
        0,
        "verify after checkpoint",
    );
}

// ---------------------------------------------------------------------------------------
// verify against the recovery code, on the checked-in corrupt fixtures
// ---------------------------------------------------------------------------------------

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn verify_agrees_with_wal_open_on_the_fixtures() {
    let root = Path::new(CORRUPT_FIXTURES);
    let tmp = tempfile::tempdir().unwrap();
    // (case, exit code, text in the output)
    let cases = [
        (
            "torn-tail",
            0,
            "warning: torn tail in wal-00000002.log at offset 2103",
        ),
        (
            "last-frame-bit-flip",
            0,
            "warning: torn tail in wal-00000002.log at offset 2103",
        ),
        (
            "unsynced-frame-bit-flip",
            0,
            "2 valid frame(s) after it, written after the last sync",
        ),
        (
            "earlier-frame-bit-flip",
            1,
            "corruption in wal-00000001.log at offset 21566",
        ),
        ("zeros-after-tail", 0, "verdict: healthy"),
        ("garbage-after-tail", 0, "verdict: healthy"),
        (
            "segment-1-header-damaged",
            1,
            "corruption in wal-00000001.log at offset 0",
        ),
        ("missing-segment-1", 0, "Wal::open would open LSNs 70..=110"),
        ("missing-middle-segment", 1, "segment 2 is missing"),
        ("duplicate-segment-name", 1, "segment 2 appears twice"),
        (
            "length-0xffffffff",
            1,
            "corruption in wal-00000002.log at offset 64",
        ),
        ("newer-version", 1, "format version 5"),
        (
            "lsn-gap",
            1,
            "corruption in wal-00000001.log at offset 64726",
        ),
        ("lsn-gap-empty-segment", 1, "LSN gap"),
    ];
    for (case, code, text) in cases {
        let dir = tmp.path().join(case);
        copy_dir(&root.join(case), &dir);
        let out = run_read_only(&dir, &["verify", path_str(&dir)]);
        expect_code(&out, code, case);
        assert!(
            stdout(&out).contains(text),
            "{case}: expected {text:?} in\n{}",
            stdout(&out)
        );
        let out = run(&["verify", "--strict", path_str(&dir)]);
        let strict_ok = matches!(
            case,
            "zeros-after-tail" | "garbage-after-tail" | "missing-segment-1"
        );
        expect_code(
            &out,
            if strict_ok { 0 } else { 1 },
            &format!("{case} --strict"),
        );
    }
}
