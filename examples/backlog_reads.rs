//! Reads on the thread that committed a backlog, right after the applier applies it, at
//! `None`: `n` random 24-byte keys (150-byte values) loaded and applied, then `commits`
//! commits of 1,000 random overwrites with the applier held back (`apply_interval` an
//! hour), then `wait_applied` (one or a few full batches) and 2 x 3 s of 10-entry range
//! reads from random keys, printed every 0.25 s. `other` reads on a thread of its own
//! instead. The reproducer of issue 21's slow reads after a full apply batch (the applier
//! freed the batch's allocations into the committing thread's arena):
//!
//! ```sh
//! cargo run --release --example backlog_reads -- 2000000 400 [other]
//! ```

use std::time::{Duration, Instant};
use walmdb::{Config, Db, Durability};

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

fn scans(db: &Db, n: u64) {
    let t = Instant::now();
    let (mut scans, mut shown, mut y) = (0u64, 0u64, 7u64);
    let mut next_sample = 0.25;
    let mut line = String::new();
    while t.elapsed() < Duration::from_secs(3) {
        let txn = db.read().unwrap();
        y = y.wrapping_mul(6364136223846793005).wrapping_add(1);
        let k = key((y >> 11) % n);
        std::hint::black_box(txn.range("t", &k[..]..).unwrap().take(10).count());
        scans += 1;
        if t.elapsed().as_secs_f64() >= next_sample {
            next_sample += 0.25;
            line += &format!(" {}K", (scans - shown) * 4 / 1000);
            shown = scans;
        }
    }
    println!("  scans/s each 0.25 s:{line}");
    println!(
        "  {:.0} scans/s; overlay now {} MiB",
        scans as f64 / 3.0,
        db.stats().unapplied_bytes >> 20
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).map_or(2_000_000, |s| s.parse().unwrap());
    let commits: u64 = args.get(2).map_or(400, |s| s.parse().unwrap());
    let other_thread = args.get(3).is_some_and(|s| s == "other");
    std::fs::create_dir_all("target").unwrap();
    let dir = tempfile::tempdir_in("target").unwrap();
    let map = (n as usize * 1200).next_multiple_of(1 << 20);
    let db = Db::open_with(
        dir.path(),
        Config::default()
            .durability(Durability::None)
            .table("t")
            .map_size(map)
            .max_map_size(map * 4)
            .overlay_max_bytes(4 << 30)
            .apply_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    let mut txn = db.write().unwrap();
    for i in 0..n {
        txn.put("t", &key(i), &[7u8; 150]).unwrap();
    }
    txn.commit().unwrap();
    db.wait_applied(db.stats().visible_lsn).unwrap();
    db.checkpoint().unwrap();
    let mut x = 0x0Fu64;
    for _ in 0..commits {
        let mut txn = db.write().unwrap();
        for _ in 0..1000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            txn.put("t", &key((x >> 11) % n), &[8u8; 150]).unwrap();
        }
        txn.commit().unwrap();
    }
    println!(
        "{commits} commits of 1,000 overwrites held back: {} MiB unapplied",
        db.stats().unapplied_bytes >> 20
    );
    let t = Instant::now();
    db.wait_applied(db.stats().visible_lsn).unwrap();
    println!(
        "applied in {:.2}s ({} batches in all); reads on {}:",
        t.elapsed().as_secs_f64(),
        db.stats().apply_batches,
        if other_thread {
            "another thread"
        } else {
            "the committing thread"
        }
    );
    if other_thread {
        std::thread::scope(|s| {
            s.spawn(|| {
                scans(&db, n);
                scans(&db, n);
            });
        });
    } else {
        scans(&db, n);
        scans(&db, n);
    }
}
