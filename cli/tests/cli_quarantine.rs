//! `walmdb quarantine list|show` (issue 17) on a database whose torn tail opening cut: the cut
//! bytes are listed, and the whole records inside them printed as `dump` prints records.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use walmdb::{Config, Db, Durability};

const BIN: &str = env!("CARGO_BIN_EXE_walmdb");

#[test]
fn quarantine_lists_what_opening_cut_and_shows_the_records_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let cfg = || {
        Config::default()
            .wal(common::cfg())
            .apply_interval(Duration::from_secs(3600))
            .checkpoint_interval(Duration::from_secs(3600))
    };
    let db = Db::open_with(&dir, cfg()).unwrap();
    for i in 0..10u32 {
        db.update(|txn| txn.put("t", format!("key{i}").as_bytes(), b"value"))
            .unwrap();
    }
    // Three more commits in separate frames; the first of them is then damaged. Opening in
    // `CutAtFirstDamage` mode stops there and cuts it with the two valid frames after it.
    for i in 10..13u32 {
        let mut txn = db.write().unwrap();
        txn.put("t", format!("key{i}").as_bytes(), b"late").unwrap();
        txn.commit_with(Durability::None).unwrap();
    }
    db.simulate_crash();
    let seg = dir.join("wal").join(common::seg_name(1));
    let mut data = std::fs::read(&seg).unwrap();
    let frames = common::frames(&data);
    let damaged = frames[frames.len() - 3];
    data[damaged.offset + common::FRAME_HEADER + 3] ^= 0x01;
    std::fs::write(&seg, &data).unwrap();
    let point_in_time = cfg().wal(walmdb::WalConfig {
        recovery_mode: walmdb::RecoveryMode::CutAtFirstDamage,
        ..common::cfg()
    });
    let db = Db::open_with(&dir, point_in_time).unwrap();
    let report = db.recovery_report().wal.clone();
    assert!(report.cut.is_some(), "{report:?}");
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    db.close().unwrap();

    let out = Command::new(BIN)
        .args(["quarantine", "list", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&report.quarantined[0]), "{text}");
    assert!(text.contains("segment 1"), "{text}");

    // The damaged frame's record does not decode; the two valid ones after it do.
    let out = Command::new(BIN)
        .args([
            "quarantine",
            "show",
            dir.to_str().unwrap(),
            &report.quarantined[0],
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("opening cut the log at segment 1"), "{text}");
    assert!(!text.contains("key=\"key10\""), "{text}");
    assert!(text.contains("key=\"key11\" value=\"late\""), "{text}");
    assert!(text.contains("key=\"key12\" value=\"late\""), "{text}");
    let missing = Command::new(BIN)
        .args(["quarantine", "show", dir.to_str().unwrap(), "cut-nope.bin"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}
