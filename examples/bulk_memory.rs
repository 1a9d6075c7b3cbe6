//! What one large transaction costs in memory: `pairs` random 24-byte keys with 150-byte
//! values put in one write transaction at `Config::default()` and committed (the commit goes
//! through to LMDB). Prints the process's resident set (`/proc/self/status`) once the writes
//! are buffered, its peak over the commit (sampled every 100 ms, and `VmHWM`), and the
//! commit's time:
//!
//! ```sh
//! cargo run --release --example bulk_memory -- 5000000
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walmdb::Db;

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

fn main() {
    let pairs: u64 = match std::env::args().nth(1).map(|n| n.parse()) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: bulk_memory <pairs>");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all("target").expect("create target/");
    let dir = tempfile::tempdir_in("target").expect("a directory in target/");
    let db = Db::open(dir.path()).expect("open");
    let before = status_mib("VmRSS:");
    let value = [7u8; 150];
    let started = Instant::now();
    let mut txn = db.write().expect("write");
    for i in 0..pairs {
        txn.put("t", &key(i), &value).expect("put");
    }
    let buffered = status_mib("VmRSS:");
    println!(
        "buffered {pairs} pairs in {:.1} s: resident {buffered} MiB (open: {before} MiB)",
        started.elapsed().as_secs_f64()
    );
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(buffered));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(status_mib("VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let committing = Instant::now();
    txn.commit().expect("commit");
    let commit_secs = committing.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    println!(
        "committed in {commit_secs:.1} s: peak resident {} MiB sampled, VmHWM {} MiB; \
         resident after {} MiB",
        peak.load(Ordering::Relaxed),
        status_mib("VmHWM:"),
        status_mib("VmRSS:")
    );
    db.close().expect("close");
}
