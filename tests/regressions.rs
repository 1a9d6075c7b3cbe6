//! Bugs found outside the topic suites, one named test each.

use std::sync::atomic::{AtomicBool, Ordering};

use walmdb::{Config, Db};

fn amount(v: &[u8]) -> u64 {
    u64::from_le_bytes(v.try_into().expect("8-byte balance"))
}

/// Found by the quickstart: `publish` queued a commit for the applier before raising the
/// visible LSN, so a snapshot could begin with LMDB already holding a commit its visible LSN
/// did not cover, and see that transaction only in part (a transfer's credit without its
/// debit).
#[test]
fn a_snapshot_never_sees_part_of_a_transaction_the_applier_is_applying() {
    const WRITERS: u64 = 16;
    const ACCOUNTS: u64 = 32;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), Config::default().update_attempts(1000)).unwrap();
    let mut setup = db.write().unwrap();
    for i in 0..ACCOUNTS {
        setup
            .put("acct", &i.to_be_bytes(), &100u64.to_le_bytes())
            .unwrap();
    }
    setup.commit().unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut checked = 0u64;
                    while !done.load(Ordering::Acquire) || checked == 0 {
                        let txn = db.read().unwrap();
                        let sum: u64 = txn
                            .range("acct", ..)
                            .unwrap()
                            .map(|e| amount(e.unwrap().1))
                            .sum();
                        assert_eq!(sum, 100 * ACCOUNTS, "a snapshot saw part of a transfer");
                        checked += 1;
                    }
                    checked
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let db = &db;
                s.spawn(move || {
                    // Transfers between random accounts; conflicting ones are run again.
                    let mut seed = (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    for _ in 0..300u64 {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let (from, to) = (seed % ACCOUNTS, (seed >> 32) % ACCOUNTS);
                        if from == to {
                            continue;
                        }
                        let (from, to) = (from.to_be_bytes(), to.to_be_bytes());
                        db.update(|txn| {
                            let a = amount(txn.get("acct", &from)?.unwrap());
                            let b = amount(txn.get("acct", &to)?.unwrap());
                            let moved = a.min(7);
                            txn.put("acct", &from, &(a - moved).to_le_bytes())?;
                            txn.put("acct", &to, &(b + moved).to_le_bytes())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    db.close().unwrap();
}
