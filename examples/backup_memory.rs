//! What a backup right after a large transaction costs in memory: `pairs` random 24-byte keys
//! with 150-byte values committed in one write transaction (logged in pieces), then
//! `Db::backup`, whose manifest dates LMDB's state by that transaction's commit time. Prints
//! the process's anonymous resident memory (`RssAnon`, the heap) before the backup and its
//! peak during it (sampled every 20 ms), and the backup's time:
//!
//! ```sh
//! cargo run --release --example backup_memory -- 5000000
//! ```

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

/// The process's anonymous resident memory, in MiB.
fn rss_anon_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("RssAnon in kB");
    kib / 1024
}

fn main() {
    let pairs: u64 = match std::env::args().nth(1).map(|n| n.parse()) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: backup_memory <pairs>");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all("target").expect("create target/");
    let dir = tempfile::tempdir_in("target").expect("a directory in target/");
    // No checkpoint retires the transaction's pieces before the backup reads them.
    let cfg = Config::default().checkpoint_interval(Duration::from_secs(3600));
    let db = Db::open_with(dir.path().join("db"), cfg).expect("open");
    let mut txn = db.write().expect("write");
    for i in 0..pairs {
        txn.put("t", &key(i), &[7u8; 150]).expect("put");
    }
    txn.commit().expect("commit");
    let before = rss_anon_mib();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon_mib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let manifest = db.backup(dir.path().join("backup")).expect("backup");
    let secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    println!(
        "backup of {pairs} pairs in {secs:.1} s: anonymous resident {before} MiB before, peak \
         {} MiB during it; LMDB's state dated {} (Unix microseconds)",
        peak.load(Ordering::Relaxed),
        manifest.lmdb_applied_micros
    );
    db.close().expect("close");
}
