//! Commits beside a reader that counts a table over a large overlay: 1M keys committed at
//! `None` with the applier held back (so `count` walks 1M overlay keys and looks each up in
//! LMDB), then for 5 s one thread counts the table in a loop while another makes 1-key
//! commits at `None` (one every 200 us), printing the commits' latency quantiles and the
//! counts done. The measurement of CHANGELOG.md's chunked `count` walk:
//!
//! ```sh
//! cargo run --release --example count_latency
//! ```

use std::time::{Duration, Instant};
use walmdb::{Config, Db, Durability};
fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}
fn main() {
    std::fs::create_dir_all("target").unwrap();
    let dir = tempfile::tempdir_in("target").unwrap();
    let hour = Duration::from_secs(3600);
    let db = Db::open_with(
        dir.path(),
        Config::default()
            .table("t")
            .apply_interval(hour)
            .apply_max_ops(usize::MAX / 2)
            .checkpoint_interval(hour)
            .overlay_max_bytes(4 << 30),
    )
    .unwrap();
    for c in 0..100u64 {
        let mut txn = db.write().unwrap();
        for i in 0..10_000u64 {
            txn.put("t", &key(c * 10_000 + i), &[8u8; 100]).unwrap();
        }
        txn.commit_with(Durability::None).unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|s| {
        let db = &db;
        s.spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = db.read().unwrap().count("t").unwrap();
                assert!(c >= 1_000_000);
                n += 1;
            }
            println!("counts: {n}");
        });
        let start = Instant::now();
        let mut lat = Vec::new();
        let mut i = 2_000_000u64;
        while start.elapsed() < Duration::from_secs(5) {
            let t = Instant::now();
            let mut txn = db.write().unwrap();
            txn.put("t", &key(i), b"x").unwrap();
            txn.commit_with(Durability::None).unwrap();
            lat.push(t.elapsed());
            i += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        lat.sort();
        let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "commits {}: p50 {:?} p99 {:?} p99.9 {:?} max {:?}",
            lat.len(),
            q(0.5),
            q(0.99),
            q(0.999),
            lat[lat.len() - 1]
        );
    });
}
