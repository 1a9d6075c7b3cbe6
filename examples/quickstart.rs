//! Opens a database in a temporary directory and runs concurrent writers and readers at the
//! default durability (group commit): transfers between accounts that conflict with each
//! other and are retried, and readers that check every snapshot they see is consistent (the
//! total never changes). Then it reopens the database, verifies the result and prints the
//! throughput.
//!
//! Run: `cargo run --release --example quickstart`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use walmdb::{Config, Db};

const ACCOUNTS: u64 = 64;
const INITIAL: u64 = 1_000;
const WRITERS: u64 = 16;
const TRANSFERS_PER_WRITER: u64 = 1_000;
const READERS: usize = 2;

fn account(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// The example's own errors: the database's, and a stored balance of the wrong size.
#[derive(Debug)]
enum BankError {
    Db(walmdb::Error),
    BadBalance(usize),
}

impl From<walmdb::Error> for BankError {
    fn from(e: walmdb::Error) -> Self {
        BankError::Db(e)
    }
}

impl std::fmt::Display for BankError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BankError::Db(e) => e.fmt(f),
            BankError::BadBalance(len) => write!(f, "a balance is 8 bytes, found {len}"),
        }
    }
}

impl std::error::Error for BankError {}

fn balance(bytes: &[u8]) -> Result<u64, BankError> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| BankError::BadBalance(bytes.len()))?;
    Ok(u64::from_le_bytes(raw))
}

/// Sums every balance in one snapshot.
fn total(db: &Db) -> Result<(u64, usize), BankError> {
    let txn = db.read()?;
    let mut sum = 0;
    let mut n = 0;
    for entry in txn.range("accounts", ..)? {
        let (_, value) = entry?;
        sum += balance(value)?;
        n += 1;
    }
    Ok((sum, n))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix("walmdb-quickstart")
        .tempdir_in(std::env::current_dir()?)?;
    let db = Db::open_with(dir.path(), Config::default().table("accounts"))?;
    let mut setup = db.write()?;
    for i in 0..ACCOUNTS {
        setup.put("accounts", &account(i), &INITIAL.to_le_bytes())?;
    }
    setup.commit()?;

    let transfers = AtomicU64::new(0);
    let snapshots_checked = AtomicU64::new(0);
    let writers_done = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                s.spawn(|| -> Result<(), BankError> {
                    while !writers_done.load(Ordering::Acquire) {
                        let (sum, n) = total(&db)?;
                        assert_eq!((sum, n), (ACCOUNTS * INITIAL, ACCOUNTS as usize));
                        snapshots_checked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (db, transfers) = (&db, &transfers);
                s.spawn(move || -> Result<(), BankError> {
                    let mut seed = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..TRANSFERS_PER_WRITER {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let (from, to) = (seed % ACCOUNTS, (seed >> 32) % ACCOUNTS);
                        if from == to {
                            continue;
                        }
                        // Read-modify-write: a concurrent transfer touching the same
                        // account makes this commit conflict, and `try_update` runs it
                        // again; a bad balance aborts it with the example's own error.
                        db.try_update(|txn| -> Result<(), BankError> {
                            let a =
                                balance(txn.get("accounts", &account(from))?.unwrap_or(&[0; 8]))?;
                            let b = balance(txn.get("accounts", &account(to))?.unwrap_or(&[0; 8]))?;
                            let amount = a.min(1 + seed % 10);
                            txn.put("accounts", &account(from), &(a - amount).to_le_bytes())?;
                            txn.put("accounts", &account(to), &(b + amount).to_le_bytes())?;
                            Ok(())
                        })?;
                        transfers.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        // Stop the readers before reporting any writer's error: they run until told.
        let written: Vec<_> = writers
            .into_iter()
            .map(|w| w.join().expect("writer thread"))
            .collect();
        writers_done.store(true, Ordering::Release);
        for r in readers {
            r.join().expect("reader thread")?;
        }
        written
            .into_iter()
            .collect::<Result<Vec<()>, BankError>>()?;
        Ok(())
    })?;
    let elapsed = started.elapsed();
    let stats = db.stats();
    db.close()?;

    let db = Db::open(dir.path())?;
    let (sum, n) = total(&db)?;
    assert_eq!((sum, n), (ACCOUNTS * INITIAL, ACCOUNTS as usize));
    let replayed = db.recovery_report().replayed_records;
    db.close()?;

    let done = transfers.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    println!(
        "{WRITERS} writers: {done} durable transfers in {:.2} s = {:.0} commits/s, {} conflicts retried",
        secs,
        done as f64 / secs,
        stats.conflicts
    );
    println!(
        "{READERS} readers: {} consistent snapshots checked ({:.0}/s)",
        snapshots_checked.load(Ordering::Relaxed),
        snapshots_checked.load(Ordering::Relaxed) as f64 / secs
    );
    println!(
        "log: {} commits in {} groups ({:.1} commits per sync); LMDB: {} ops in {} apply transactions",
        stats.wal.commits,
        stats.wal.groups,
        stats.wal.commits as f64 / stats.wal.syncs.max(1) as f64,
        stats.applied_ops,
        stats.apply_batches
    );
    println!("reopened: total {sum} across {n} accounts, as before; {replayed} records replayed");
    Ok(())
}
