//! `walmdb verify --deep` (issue 17): the scrub of LMDB's file, run as a real process on
//! database directories made with the library, healthy and damaged, including whole pages
//! zeroed: damage is exit 1 with the table named, and the tool itself never crashes (the walk
//! runs in a child process; a fault there is reported as damage).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use walmdb::Db;

const BIN: &str = env!("CARGO_BIN_EXE_walmdb");
const MARKER: &[u8] = b"<<walmdb deep scrub marker 0123456789abcdefghijklmnop>>";

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run the walmdb binary")
}

/// A closed database: tables `a` and `b` with `n` keys each, and `a`'s key `marked` holding
/// `MARKER`, all applied to LMDB.
fn closed_db(dir: &Path, n: u32) {
    let db = Db::open(dir).unwrap();
    for table in ["a", "b"] {
        db.update(|txn| {
            for i in 0..n {
                let value = format!("{table} value {i:08} {}", "x".repeat(40));
                txn.put(table, format!("key{i:08}").as_bytes(), value.as_bytes())?;
            }
            Ok(())
        })
        .unwrap();
    }
    db.update(|txn| txn.put("a", b"marked", MARKER)).unwrap();
    db.checkpoint().unwrap();
    db.close().unwrap();
}

fn lmdb_file(dir: &Path) -> std::path::PathBuf {
    dir.join("data").join("data.mdb")
}

#[test]
fn verify_deep_walks_every_entry_of_a_healthy_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 2000);
    let before = std::fs::read(lmdb_file(&dir)).unwrap();
    let out = run(&["verify", "--deep", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("deep scrub: "), "{text}");
    assert!(text.contains(", 0 damaged"), "{text}");
    assert!(text.contains("verdict: healthy"), "{text}");
    let out = run(&[
        "verify",
        "--deep",
        "--format",
        "json",
        dir.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scrub = &v["deep_scrub"];
    assert_eq!(scrub["healthy"], Value::Bool(true), "{v}");
    let entries = |name: &str| {
        scrub["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["entries"].as_u64().unwrap())
    };
    assert_eq!((entries("a"), entries("b")), (Some(2001), Some(2000)));
    // walmdb's record of each table (store format 3) agrees with the walk.
    for table in scrub["tables"].as_array().unwrap() {
        if table["name"].as_str().unwrap().starts_with("walmdb.") {
            continue;
        }
        assert_eq!(table["recorded"]["entries"], table["entries"], "{table}");
        assert_eq!(table["recorded"]["digest"], table["digest"], "{table}");
    }
    // Read only: LMDB's file is as it was.
    assert!(std::fs::read(lmdb_file(&dir)).unwrap() == before);
}

#[test]
fn verify_deep_names_a_damaged_entry_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 200);
    let mut data = std::fs::read(lmdb_file(&dir)).unwrap();
    let at = data
        .windows(MARKER.len())
        .position(|w| w == MARKER)
        .expect("the marker is in the file");
    data[at + 5] ^= 0x10;
    std::fs::write(lmdb_file(&dir), data).unwrap();
    // Without --deep the log alone is judged: healthy.
    assert_eq!(
        run(&["verify", dir.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let out = run(&["verify", "--deep", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DAMAGE: table \"a\" key (hex) 6d61726b6564"),
        "{text}"
    );
    assert!(text.contains("verdict: DAMAGED"), "{text}");
}

/// Every page of a small store zeroed in turn: the tool reports healthy or damage, and never
/// crashes, whatever LMDB does with the page.
#[test]
fn verify_deep_never_crashes_on_a_zeroed_page() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    closed_db(&dir, 300);
    let pristine = std::fs::read(lmdb_file(&dir)).unwrap();
    let page = 4096;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    // Pages 0 and 1 are LMDB's meta pages; zeroing both is a different test (open fails).
    for p in 2..pristine.len() / page {
        let mut data = pristine.clone();
        data[p * page..(p + 1) * page].fill(0);
        std::fs::write(lmdb_file(&dir), &data).unwrap();
        let out = run(&[
            "verify",
            "--deep",
            "--format",
            "json",
            dir.to_str().unwrap(),
        ]);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(1)),
            "page {p}: exit {:?}, stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let scrub = &v["deep_scrub"];
        let kind = if scrub["fault"].is_object() {
            "fault in the child".to_owned()
        } else if scrub["error"].is_string() {
            "store unreadable".to_owned()
        } else if scrub["healthy"] == Value::Bool(true) {
            "healthy (page unused)".to_owned()
        } else {
            let named = scrub["damaged_pages"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["page"] == p);
            // A zeroed free page is missing from no tree: only the free list's account
            // can notice it, and it does not (its contents are not read).
            if named {
                "page named"
            } else {
                "other damage reported"
            }
            .to_owned()
        };
        *outcomes.entry(kind).or_default() += 1;
    }
    println!("zeroed pages: {outcomes:?}");
    // The scrub reads the file, never LMDB's map: a zeroed page is never a fault.
    assert!(!outcomes.contains_key("fault in the child"), "{outcomes:?}");
    assert!(!outcomes.contains_key("store unreadable"), "{outcomes:?}");
    assert!(outcomes.contains_key("page named"), "{outcomes:?}");
}
