//! Point reads of a write transaction's own writes once they spilled: `pairs` random
//! 24-byte keys with 150-byte values put in one transaction at `Config::default()` (which
//! spills them past `txn_spill_bytes`), then 20,000 gets of keys it wrote and 20,000 of keys
//! it did not, printing the mean time a get of each:
//!
//! ```sh
//! cargo run --release --example spilled_reads -- 5000000
//! ```

use std::time::Instant;

use walmdb::Db;

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

fn main() {
    let pairs: u64 = match std::env::args().nth(1).map(|n| n.parse()) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: spilled_reads <pairs>");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all("target").expect("create target/");
    let dir = tempfile::tempdir_in("target").expect("a directory in target/");
    let db = Db::open(dir.path()).expect("open");
    let mut txn = db.write().expect("write");
    for i in 0..pairs {
        txn.put("t", &key(i), &[7u8; 150]).expect("put");
    }
    for (which, from) in [("written", 0), ("not written", pairs)] {
        let started = Instant::now();
        let mut found = 0u64;
        for j in 0..20_000u64 {
            let k = key(from + j.wrapping_mul(0x2545_F491_4F6C_DD1D) % pairs);
            found += u64::from(txn.get("t", &k).expect("get").is_some());
        }
        let micros = started.elapsed().as_secs_f64() * 1e6 / 20_000.0;
        println!("a get of a key {which}: {micros:.1} us ({found} of 20,000 found)");
    }
}
