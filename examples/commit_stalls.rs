//! Where a sustained sorted load's slow commits come from: one thread commits 1,000
//! ascending 16-byte keys (100-byte values) a durable transaction (group commit, the
//! default) into a growing store for `secs` seconds, as the harness's `sustain-sorted`
//! does. Every commit slower than `slow_ms` is printed with what the engine did since the
//! line before (log syncs and their total time, LMDB apply batches, checkpoints, map
//! resizes) and the bytes still unapplied; at the end, the commits' latency quantiles:
//!
//! ```sh
//! cargo run --release --example commit_stalls -- 50 5
//! ```

use std::time::{Duration, Instant};

use walmdb::{Config, Db, Durability};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: f64| -> f64 {
        args.get(i).map_or(default, |s| {
            s.parse()
                .unwrap_or_else(|_| panic!("usage: commit_stalls [secs] [slow_ms]"))
        })
    };
    let (secs, slow_ms) = (arg(1, 50.0), arg(2, 5.0));
    let slow = Duration::from_secs_f64(slow_ms / 1000.0);
    std::fs::create_dir_all("target").unwrap();
    let dir = tempfile::tempdir_in("target").unwrap();
    // Sized as the harness sizes its sustained runs (1M keys/s for 120 s).
    let map = 120_000_000usize * 600;
    let db = Db::open_with(
        dir.path(),
        Config::default()
            .durability(Durability::group_commit())
            .table("t")
            .map_size(map)
            .max_map_size(map * 4),
    )
    .unwrap();
    let value = [7u8; 100];
    let (mut seq, mut latencies) = (0u64, Vec::new());
    let mut before = db.stats();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let mut txn = db.write().unwrap();
        for _ in 0..1000 {
            seq += 1;
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&seq.to_be_bytes());
            txn.put("t", &key, &value).unwrap();
        }
        let t0 = Instant::now();
        txn.commit().unwrap();
        let took = t0.elapsed();
        latencies.push(took.as_micros() as u64);
        if took > slow {
            let now = db.stats();
            println!(
                "{:6.2} s: {:6} us; since the line before: {} log syncs taking {} us, {} apply \
                 batches, {} checkpoints, {} map resizes; {} MiB unapplied",
                start.elapsed().as_secs_f64(),
                took.as_micros(),
                now.wal.syncs - before.wal.syncs,
                now.wal.sync_micros - before.wal.sync_micros,
                now.apply_batches - before.apply_batches,
                now.checkpoints - before.checkpoints,
                now.map_resizes - before.map_resizes,
                now.unapplied_bytes >> 20,
            );
            before = now;
        }
    }
    if latencies.is_empty() {
        println!("no commits in {secs} s");
        return;
    }
    latencies.sort_unstable();
    let q = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{} commits, {:.0} keys/s; latency us: p50 {} p99 {} p99.9 {} max {}",
        latencies.len(),
        seq as f64 / start.elapsed().as_secs_f64(),
        q(0.5),
        q(0.99),
        q(0.999),
        latencies[latencies.len() - 1]
    );
}
