//! The crash, panic, hang and leak paths a review found (issue 16), one named test each.
//!
//! With `--features failpoints` the resize test also holds the map's resizing window open
//! (failpoint `map-resizing`), so a call that slips past the exclusion is caught every run.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use walmdb::{Config, Db};

/// Defect 1: the applier resized LMDB's map while a checkpoint's sync, a metrics scrape
/// (`env.info`/`env.stat`) or a backup's copy could be reading the meta pages the resize
/// unmaps. Drives resizes against all three; none may run inside a resize.
#[test]
fn a_map_resize_never_runs_beside_a_sync_a_scrape_or_a_copy() {
    #[cfg(feature = "failpoints")]
    let _scenario = {
        let scenario = fail::FailScenario::setup();
        fail::cfg("map-resizing", "sleep(20)").unwrap();
        scenario
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default()
        .map_size(1 << 20)
        .max_map_size(1 << 30)
        .apply_interval(Duration::from_millis(1));
    let db = Db::open_with(dir.path().join("db"), cfg).unwrap();
    let done = AtomicBool::new(false);
    let value = [7u8; 100];
    let resizes_wanted = 5;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    let m = db.metrics();
                    assert!(m.map_used_bytes > 0);
                    let _ = db.health();
                }
            });
        }
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                db.checkpoint().unwrap();
            }
        });
        s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Acquire) {
                let backup = dir.path().join(format!("backup-{n}"));
                db.backup(&backup).unwrap();
                std::fs::remove_dir_all(&backup).unwrap();
                n += 1;
            }
        });
        let mut written = 0u64;
        while db.stats().map_resizes < resizes_wanted {
            let mut txn = db.write().unwrap();
            for _ in 0..1000 {
                txn.put("t", &written.to_be_bytes(), &value).unwrap();
                written += 1;
            }
            txn.commit().unwrap();
            assert!(written < 10_000_000, "the map never grew");
        }
        done.store(true, Ordering::Release);
    });
    assert_eq!(db.lmdb_calls_during_resize(), 0);
    let resizes = db.stats().map_resizes;
    db.close().unwrap();
    assert!(resizes >= resizes_wanted);
}
