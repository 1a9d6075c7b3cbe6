//! The small walmdb store the `lmdb_scrub` fuzz target damages, shared with the regression
//! tests of its finds (`tests/repair.rs`), which must rebuild the very file a find was made
//! against: two tables (`a` with 400 keys, 57 of them deleted; `b` with values on overflow
//! pages, one deleted), a dropped table `gone`, freed pages, enough log that the first
//! checkpoint retires its first segments.

use std::path::Path;

use walmdb::{Config, Db, WalConfig};

/// 64 KiB segments, 32 KiB records.
pub fn scrub_store_cfg() -> Config {
    Config::default().wal(WalConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 32 << 10,
        recycle_segments: 1,
        ..WalConfig::default()
    })
}

/// Writes the store into `dir` (new), checkpointed and closed.
pub fn write_scrub_store(dir: &Path) {
    let db = Db::open_with(dir, scrub_store_cfg()).unwrap();
    db.update(|txn| {
        for i in 0..400u32 {
            let v = format!("value {i} {}", "x".repeat(i as usize % 50));
            txn.put("a", format!("key{i:04}").as_bytes(), v.as_bytes())?;
        }
        txn.put("gone", b"k", b"v")
    })
    .unwrap();
    // Values on overflow pages; enough log that the checkpoint retires its first segments,
    // so a salvage relies on the file for them.
    for i in 0..6u32 {
        db.update(|txn| txn.put("b", &i.to_be_bytes(), &vec![i as u8; 20_000]))
            .unwrap();
    }
    db.checkpoint().unwrap();
    db.update(|txn| {
        for i in (0..400u32).step_by(7) {
            txn.delete("a", format!("key{i:04}").as_bytes())?;
        }
        txn.delete("b", &3u32.to_be_bytes())
    })
    .unwrap();
    db.drop_table("gone").unwrap();
    db.checkpoint().unwrap();
    db.close().unwrap();
}
