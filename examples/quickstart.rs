//! Opens a write-ahead log in a temporary directory, commits from several threads at the
//! default durability (group commit), reopens it and checks that every acknowledged commit
//! is there, in order, then prints the throughput.
//!
//! Run: `cargo run --release --example quickstart`

use std::sync::Arc;
use std::time::Instant;

use walmdb::{Op, Record, TxnRecord, Wal, WalConfig};

const THREADS: u64 = 16;
const COMMITS_PER_THREAD: u64 = 2_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix("walmdb-quickstart")
        .tempdir_in(std::env::current_dir()?)?;
    let wal = Arc::new(Wal::open(dir.path(), WalConfig::default())?);

    let started = Instant::now();
    let writers: Vec<_> = (0..THREADS)
        .map(|writer| {
            let wal = wal.clone();
            std::thread::spawn(move || -> walmdb::Result<Vec<(u64, u64)>> {
                let mut acked = Vec::new();
                for seq in 0..COMMITS_PER_THREAD {
                    let record = Record::Txn(TxnRecord {
                        commit_micros: 0,
                        ops: vec![Op::Put {
                            table: "accounts".into(),
                            key: format!("w{writer:02}-{seq:06}").into_bytes(),
                            value: seq.to_le_bytes().to_vec(),
                        }],
                    });
                    // Returns once the record is on disk, synced with its whole group.
                    let lsn = wal.commit(record.encode())?;
                    acked.push((lsn, writer * COMMITS_PER_THREAD + seq));
                }
                Ok(acked)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.join().expect("writer thread")?);
    }
    let elapsed = started.elapsed();
    let stats = wal.stats();
    Arc::try_unwrap(wal).expect("writers are done").close()?;

    // Reopen (recovery) and check every acknowledged commit is there, in LSN order.
    let wal = Wal::open(dir.path(), WalConfig::default())?;
    let records: Vec<_> = wal.read_from(1).collect::<Result<_, _>>()?;
    acked.sort_unstable();
    assert_eq!(
        records.len(),
        acked.len(),
        "every acknowledged commit survives"
    );
    for (record, (lsn, _)) in records.iter().zip(&acked) {
        assert_eq!(record.lsn, *lsn);
        assert!(matches!(record.record.decode()?, Record::Txn(_)));
    }
    wal.close()?;

    let commits = acked.len() as f64;
    println!(
        "{} durable commits from {THREADS} threads in {:.2?}: {:.0} commits/s, {} syncs ({:.1} commits per sync)",
        acked.len(),
        elapsed,
        commits / elapsed.as_secs_f64(),
        stats.syncs,
        commits / stats.syncs.max(1) as f64,
    );
    println!("reopened and verified {} records", records.len());
    Ok(())
}
