//! What the applier costs, one committer at `None`: `settled` random 24-byte keys (150-byte
//! values) loaded in one transaction and applied, then `writes` operations in 1,000-key
//! commits (`overwrite`: puts of random settled keys; `insert`: puts of new random keys;
//! `delete`: deletes of random settled keys), then a wait until LMDB holds them all. Prints
//! the applier thread's CPU seconds over that phase (`/proc`, 10 ms ticks) and the phase's
//! keys/s from the first commit to the last applied:
//!
//! ```sh
//! cargo run --release --example apply_rate -- overwrite 2000000 1000000
//! cargo run --release --example apply_rate -- insert 2000000 1000000
//! ```

use std::time::Instant;

use walmdb::{Config, Db, Durability};

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: apply_rate <overwrite|insert|delete> <settled> <writes>";
    let (Some(mode), Some(settled), Some(writes)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (n, m): (u64, u64) = (
        settled.parse().expect("settled"),
        writes.parse().expect("writes"),
    );
    if !["overwrite", "insert", "delete"].contains(&mode.as_str()) || n == 0 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    std::fs::create_dir_all("target").expect("create target/");
    let dir = tempfile::tempdir_in("target").expect("a directory in target/");
    let map = ((n + m) as usize * 600).next_multiple_of(1 << 20);
    let db = Db::open_with(
        dir.path(),
        Config::default()
            .durability(Durability::None)
            .table("t")
            .map_size(map)
            .max_map_size(map * 4),
    )
    .expect("open");
    let mut txn = db.write().expect("write");
    for i in 0..n {
        txn.put("t", &key(i), &[7u8; 150]).expect("put");
    }
    db.wait_applied(txn.commit().expect("commit"))
        .expect("applied");
    let cpu_before = applier_cpu_secs();
    let start = Instant::now();
    let mut x = 7u64;
    let mut last = 0;
    let mut written = 0;
    while written < m {
        let mut txn = db.write().expect("write");
        for _ in 0..1000.min(m - written) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            match mode.as_str() {
                "overwrite" => txn.put("t", &key((x >> 11) % n), &[9u8; 150]),
                "insert" => txn.put("t", &key(n + written), &[9u8; 150]),
                _ => txn.delete("t", &key((x >> 11) % n)),
            }
            .expect("write");
            written += 1;
        }
        last = txn.commit().expect("commit");
    }
    let committed = start.elapsed();
    db.wait_applied(last).expect("applied");
    let applied = start.elapsed();
    let cpu = applier_cpu_secs() - cpu_before;
    println!(
        "{mode}: applier CPU {cpu:.2} s; committed in {:.2} s, applied in {:.2} s: {:.0} keys/s",
        committed.as_secs_f64(),
        applied.as_secs_f64(),
        m as f64 / applied.as_secs_f64()
    );
}

/// The CPU time (user and system) of the thread named `walmdb-applier`, in seconds.
fn applier_cpu_secs() -> f64 {
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("a task").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() != "walmdb-applier" {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).expect("its stat");
        // The fields after the command's closing parenthesis; utime and stime are the
        // 14th and 15th of the line.
        let after = &stat[stat.rfind(')').expect("a command") + 2..];
        let field = |i: usize| -> u64 {
            after
                .split(' ')
                .nth(i)
                .and_then(|f| f.parse().ok())
                .unwrap_or(0)
        };
        return (field(11) + field(12)) as f64 / 100.0;
    }
    0.0
}
