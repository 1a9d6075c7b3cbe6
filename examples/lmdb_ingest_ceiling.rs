//! What LMDB alone sustains for random-key ingest, the ceiling of walmdb's applier: one
//! writer, sorted batches of `batch` random 16-byte keys with 100-byte values, one durable
//! LMDB commit (heed's default flags) per batch, for `secs` seconds, printing keys/s per
//! 10 s window. Nothing else runs: no log, no committers, no overlay.
//!
//! ```sh
//! cargo run --release --example lmdb_ingest_ceiling -- target/ceiling 500000 120
//! ```
//! (docs/benchmarks.md, "What LMDB itself sustains").

use std::time::{Duration, Instant};

use heed::types::Bytes;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: lmdb_ingest_ceiling <dir> <keys per batch> <seconds>";
    let (Some(dir), Some(batch), Some(secs)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let batch: usize = batch.parse().expect("keys per batch");
    let secs: u64 = secs.parse().expect("seconds");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create the directory");
    // SAFETY: the environment is opened once in this process.
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .map_size(64 << 30)
            .max_dbs(4)
            .open(dir)
            .expect("open LMDB")
    };
    let mut wtxn = env.write_txn().expect("begin");
    let db: heed::Database<Bytes, Bytes> = env
        .create_database(&mut wtxn, Some("t"))
        .expect("create the table");
    wtxn.commit().expect("commit");

    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let value = [7u8; 100];
    let mut keys = vec![[0u8; 16]; batch];
    let (start, mut window, mut window_keys, mut total) =
        (Instant::now(), Instant::now(), 0u64, 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        for key in &mut keys {
            key[..8].copy_from_slice(&next().to_le_bytes());
            key[8..].copy_from_slice(&next().to_le_bytes());
        }
        keys.sort_unstable();
        let mut wtxn = env.write_txn().expect("begin");
        for key in &keys {
            db.put(&mut wtxn, key, &value).expect("put");
        }
        wtxn.commit().expect("commit");
        total += batch as u64;
        window_keys += batch as u64;
        if window.elapsed() >= Duration::from_secs(10) {
            let rate = window_keys as f64 / window.elapsed().as_secs_f64();
            println!(
                "{:>5.0} s  {rate:>9.0} keys/s  ({total} keys in the store)",
                start.elapsed().as_secs_f64()
            );
            (window, window_keys) = (Instant::now(), 0);
        }
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    println!("overall {rate:.0} keys/s, {total} keys");
}
