//! What replaying one large transaction at open costs in memory: `pairs` random 24-byte keys
//! with 150-byte values committed in one write transaction at `Config::default()`, the engine
//! then stopped as a crash would (`Db::simulate_crash`) and LMDB's file put back as it was
//! before the commit, so that the next open replays the whole transaction from the log. The
//! open runs in a child process, which prints its time, what replay did, and its peak
//! resident memory, sampled every 50 ms: anonymous (the heap) and in all (with the pages of
//! LMDB's file it mapped):
//!
//! ```sh
//! cargo run --release --example replay_memory -- 5000000
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walmdb::{Config, Db};

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

/// A `/proc/self/status` field, in MiB.
fn status_mib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib / 1024
}

fn config() -> Config {
    // No checkpoint retires the log's segments while the example runs.
    Config::default().checkpoint_interval(Duration::from_secs(3600))
}

/// The child: opens `dir` (replaying the transaction) and checks it holds `pairs` keys.
fn open(dir: &Path, pairs: u64) {
    let done = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let sampler = {
        let (done, peaks) = (done.clone(), peaks.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peaks[0].fetch_max(status_mib("RssAnon:"), Ordering::Relaxed);
                peaks[1].fetch_max(status_mib("VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let db = Db::open_with(dir, config()).expect("reopen");
    let opened = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let r = db.recovery_report();
    println!(
        "opened in {opened:.1} s: {} records replayed ({} MiB), {} applied at open, {} into \
         the overlay; peak resident {} MiB anonymous, {} MiB in all",
        r.replayed_records,
        r.replayed_bytes >> 20,
        r.applied_records,
        r.overlay_records,
        peaks[0].load(Ordering::Relaxed),
        peaks[1].load(Ordering::Relaxed),
    );
    let count = db.read().expect("read").count("t").expect("count");
    assert_eq!(count, pairs + 1, "the replayed table");
    db.close().expect("close");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "open") {
        open(Path::new(&args[2]), args[3].parse().expect("pairs"));
        return;
    }
    let pairs: u64 = match args.get(1).map(|n| n.parse()) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: replay_memory <pairs>");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all("target").expect("create target/");
    let dir = tempfile::tempdir_in("target").expect("a directory in target/");
    let lmdb = dir.path().join("data").join("data.mdb");
    let saved = dir.path().join("data.mdb.before");
    let db = Db::open_with(dir.path(), config()).expect("open");
    db.update(|t| t.put("t", b"first", b"1")).expect("first");
    db.close().expect("close");
    std::fs::copy(&lmdb, &saved).expect("save LMDB's file");
    let db = Db::open_with(dir.path(), config()).expect("open");
    let started = Instant::now();
    let mut txn = db.write().expect("write");
    for i in 0..pairs {
        txn.put("t", &key(i), &[7u8; 150]).expect("put");
    }
    txn.commit().expect("commit");
    println!(
        "{pairs} pairs committed in {:.1} s; the engine stopped as a crash would",
        started.elapsed().as_secs_f64()
    );
    db.simulate_crash();
    std::fs::copy(&saved, &lmdb).expect("put LMDB's file back");
    let status = std::process::Command::new(std::env::current_exe().expect("this program"))
        .args([
            "open",
            &dir.path().display().to_string(),
            &pairs.to_string(),
        ])
        .status()
        .expect("the child");
    assert!(status.success(), "the open failed: {status}");
}
