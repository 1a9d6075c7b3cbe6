//! Reads right after a settle that follows a burst of overwrites, one thread, at `None`:
//! 5M random 24-byte keys (150-byte values) loaded in one transaction, 2M of them
//! overwritten in 1,000-key commits (stats printed each second: the applied LSN, the
//! overlay's bytes, map resizes, apply batches), then 3 s of 10-entry range reads from
//! random keys (over the overlay), a settle (`wait_applied` and a checkpoint), and 3 s of
//! the same reads twice more, each sampled every 0.25 s (scans, the overlay's bytes, the
//! process's minor faults) and with the overlay's bytes before and after. The
//! reproducer of docs/benchmarks.md's slow settled reads (issue 21):
//!
//! ```sh
//! cargo run --release --example settle_reads
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
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
    let n = 5_000_000u64;
    let map = (n as usize * 600).next_multiple_of(1 << 20);
    let db = Db::open_with(
        dir.path(),
        Config::default()
            .durability(Durability::None)
            .table("t")
            .map_size(map)
            .max_map_size(map * 4),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut txn = db.write().unwrap();
    for i in 0..n {
        txn.put("t", &key(i), &[7u8; 150]).unwrap();
    }
    txn.commit().unwrap();
    db.wait_applied(db.stats().visible_lsn).unwrap();
    db.checkpoint().unwrap();
    println!("loaded in {:.1}s", t0.elapsed().as_secs_f64());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let st = db.stats();
                println!("{:>5.1}s visible {} applied {} unapplied {} MiB resizes {} postponed {} ahead {} batches {} snapshots {}",
                    t.elapsed().as_secs_f64(), st.visible_lsn, st.applied_lsn, st.unapplied_bytes >> 20,
                    st.map_resizes, st.map_resizes_postponed, st.map_resizes_ahead, st.apply_batches, st.open_snapshots);
                std::thread::sleep(Duration::from_millis(1000));
            }
        });
        let t = Instant::now();
        let mut x = 0x0Fu64;
        for _ in 0..2000 {
            let mut txn = db.write().unwrap();
            for _ in 0..1000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                txn.put("t", &key((x >> 11) % n), &[8u8; 150]).unwrap();
            }
            txn.commit().unwrap();
        }
        println!("overwrite {:.1}s", t.elapsed().as_secs_f64());
        let scan = |label: &str| {
            let before = db.stats().unapplied_bytes;
            let faults_before = minor_faults();
            let t = Instant::now();
            let mut scans = 0u64;
            let mut next_sample = 0.25;
            let mut y = 7u64;
            while t.elapsed() < Duration::from_secs(3) {
                let txn = db.read().unwrap();
                y = y.wrapping_mul(6364136223846793005).wrapping_add(1);
                let k = key((y >> 11) % n);
                let c = txn.range("t", &k[..]..).unwrap().take(10).count();
                std::hint::black_box(c);
                scans += 1;
                if t.elapsed().as_secs_f64() >= next_sample {
                    next_sample += 0.25;
                    println!(
                        "  {:.2}s: {} scans, overlay {} MiB, minor faults {}",
                        t.elapsed().as_secs_f64(),
                        scans,
                        db.stats().unapplied_bytes >> 20,
                        minor_faults() - faults_before
                    );
                }
            }
            let st = db.stats();
            println!(
                "{label}: {:.0} scans/s; overlay before {} MiB, after {} MiB, applied {}",
                scans as f64 / 3.0,
                before >> 20,
                st.unapplied_bytes >> 20,
                st.applied_lsn
            );
        };
        scan("overlay scans");
        let t = Instant::now();
        db.wait_applied(db.stats().visible_lsn).unwrap();
        db.checkpoint().unwrap();
        println!("settle {:.1}s", t.elapsed().as_secs_f64());
        scan("settled scans");
        scan("settled scans again");
        stop.store(true, Ordering::Relaxed);
    });
}

fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    after
        .split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}
