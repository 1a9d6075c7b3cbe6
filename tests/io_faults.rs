//! Reliability tier T5 (`../shared/reliability.md`), on the log: fail the n-th I/O call, for
//! every n until a run completes without reaching it, with each fault kind (EIO, ENOSPC, a
//! short write), so every call site of open, append, sync, rotation and recovery fails once.
//!
//! After each run: an error is typed (never a panic); a poisoned log acknowledges nothing
//! more; a failure that did not poison it (ENOSPC, or an error while making the next segment
//! before any of the group was written) leaves it taking commits; reopened (process restart), it holds every acknowledged commit at its LSN; and after
//! a simulated power loss instead, every acknowledged durable commit.

mod common;

use common::*;
use walmdb::{CrashOptions, Durability, EncodedRecord, Error, FaultKind, Lsn, SimFs};

const COMMITS: u64 = 60;

/// The durability of commit `i`: a mix, so groups, single syncs and unsynced tails all occur.
fn level(i: u64) -> Durability {
    match i % 4 {
        0 => Durability::EveryWrite,
        1 | 2 => Durability::group_commit(),
        _ => Durability::None,
    }
}

#[derive(Default, Debug)]
struct Tally {
    runs: u64,
    fired: u64,
    acked: u64,
    failed_commits: u64,
    poisoned_runs: u64,
    failed_opens: u64,
}

/// One run with the `n`-th I/O operation failing with `kind`; adds to `tally`.
fn run(kind: FaultKind, n: u64, tally: &mut Tally) {
    let ctx = format!("{kind:?} at I/O operation {n}");
    let fs = SimFs::new();
    fs.fail_nth(n, kind);
    // (LSN, record, durable) of every acknowledged commit.
    let mut acked: Vec<(Lsn, EncodedRecord, bool)> = Vec::new();
    match open(&fs, cfg()) {
        Err(e) => {
            assert!(
                matches!(e, Error::Io(_) | Error::DiskFull(_) | Error::SyncFailed(_)),
                "{ctx}: open failed with {e:?}"
            );
            tally.failed_opens += 1;
        }
        Ok(wal) => {
            let mut i = 0;
            while acked.len() < COMMITS as usize && i < 2 * COMMITS {
                i += 1;
                // Sizes that fill a 64 KiB segment every ~25 commits: rotations happen.
                let r = rec(i, 500 + (i as usize * 331) % 2500);
                let l = level(i);
                match wal.commit_with(r.clone(), (), Some(l)) {
                    Ok(lsn) => {
                        assert!(!wal.is_poisoned(), "{ctx}: acknowledged by a poisoned log");
                        acked.push((lsn, r, l.is_durable()));
                    }
                    Err(e) => {
                        tally.failed_commits += 1;
                        if wal.is_poisoned() {
                            // Nothing more is acknowledged until the log is reopened.
                            let again = wal.commit(rec(999_999, 10));
                            assert!(
                                matches!(again, Err(Error::Poisoned { .. })),
                                "{ctx}: after {e:?} a poisoned log answered {again:?}"
                            );
                            tally.poisoned_runs += 1;
                            break;
                        }
                        // ENOSPC, or any error while making the next segment before any of
                        // the group was written (docs/durability.md): only the group fails.
                        assert!(
                            matches!(e, Error::DiskFull(_) | Error::Io(_)),
                            "{ctx}: {e:?} failed a commit without poisoning the log"
                        );
                    }
                }
            }
            if !wal.is_poisoned() {
                // The fault fails once: a log it did not poison goes on taking commits.
                assert_eq!(
                    acked.len() as u64,
                    COMMITS,
                    "{ctx}: the log stopped taking commits"
                );
            }
            drop(wal);
        }
    }
    tally.runs += 1;
    if fs.op_count() >= n {
        tally.fired += 1;
    }
    tally.acked += acked.len() as u64;

    // A process restart: every acknowledged commit is there, at its LSN.
    fs.clear_faults();
    let check = |fs: &SimFs, durable_only: bool, what: &str| {
        let wal = open(fs, cfg()).unwrap_or_else(|e| panic!("{ctx}: {what} reopen: {e:?}"));
        let got = try_read_all(&wal).unwrap_or_else(|e| panic!("{ctx}: {what} read: {e:?}"));
        for (lsn, r, durable) in &acked {
            if durable_only && !durable {
                continue;
            }
            let found = got.iter().find(|g| g.lsn == *lsn);
            assert!(
                found.is_some_and(|g| g.record == *r),
                "{ctx}: {what}: acknowledged commit at LSN {lsn} lost"
            );
        }
        // LSNs are dense from 1: no holes.
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.lsn, i as u64 + 1, "{ctx}: {what}: LSN hole");
        }
        // The reopened log takes new commits.
        let next = wal.commit(rec(777_777, 10)).unwrap_or_else(|e| {
            panic!("{ctx}: {what}: commit after reopen: {e:?}");
        });
        assert_eq!(next, got.len() as u64 + 1, "{ctx}: {what}");
    };
    let image = snapshot(&fs);
    check(&restore(&image), false, "restart");
    // A power loss instead: the acknowledged durable commits are there.
    check(&fs.crash(n, CrashOptions::default()), true, "power loss");
}

fn sweep(kind: FaultKind) -> Tally {
    let mut tally = Tally::default();
    let mut n = 1;
    loop {
        let before = tally.fired;
        run(kind, n, &mut tally);
        if tally.fired == before {
            // The run completed without reaching its n-th operation: every call site has failed.
            break;
        }
        n += 1;
    }
    eprintln!("{kind:?}: {tally:?}");
    assert!(
        tally.fired > 50,
        "{kind:?}: too few I/O calls to mean anything"
    );
    tally
}

#[test]
fn every_io_call_failing_with_eio_loses_nothing_acknowledged() {
    sweep(FaultKind::Eio);
}

#[test]
fn every_io_call_failing_with_enospc_loses_nothing_acknowledged() {
    sweep(FaultKind::Enospc);
}

#[test]
fn every_io_call_failing_with_a_short_write_loses_nothing_acknowledged() {
    sweep(FaultKind::ShortWrite);
}

/// Recovery's own I/O: the n-th call of opening (and reading) an existing log fails, for every
/// n. The open and the read either succeed with every record or fail with a typed error, and
/// a later open without the fault has every record.
fn recovery_sweep(kind: FaultKind) -> (u64, u64) {
    let records: Vec<EncodedRecord> = (1..=COMMITS)
        .map(|i| rec(i, 500 + (i as usize * 331) % 2500))
        .collect();
    let image = snapshot(&build_log(cfg(), &records));
    let (mut n, mut failed) = (1, 0);
    loop {
        let ctx = format!("{kind:?} at recovery I/O operation {n}");
        let fs = restore(&image);
        let base = fs.op_count();
        fs.fail_nth(n, kind);
        let outcome = open(&fs, cfg()).and_then(|wal| try_read_all(&wal));
        match outcome {
            Ok(got) => assert_records(&got, &records, 1, &ctx),
            Err(e) => {
                assert!(
                    matches!(e, Error::Io(_) | Error::DiskFull(_) | Error::SyncFailed(_)),
                    "{ctx}: {e:?}"
                );
                failed += 1;
            }
        }
        let fired = fs.op_count() - base >= n;
        fs.clear_faults();
        let wal = open(&fs, cfg()).unwrap_or_else(|e| panic!("{ctx}: reopen: {e:?}"));
        assert_records(&read_all(&wal), &records, 1, &ctx);
        if !fired {
            break;
        }
        n += 1;
    }
    eprintln!(
        "{kind:?} during recovery: {} calls failed, {failed} opens or reads refused",
        n - 1
    );
    assert!(
        n > 10,
        "{kind:?}: too few recovery I/O calls to mean anything"
    );
    (n - 1, failed)
}

#[test]
fn every_recovery_io_call_failing_loses_nothing() {
    for kind in [FaultKind::Eio, FaultKind::Enospc, FaultKind::ShortWrite] {
        recovery_sweep(kind);
    }
}

/// The engine over a faulty log: `Db` with its log on `SimFs` (LMDB on disk), the n-th log
/// I/O call failing once, for every n. One writer commits transactions of a few keys; after a
/// restart the tables are the model after every acknowledged transaction, plus at most the
/// one whose commit failed as the log was poisoned (its outcome is indeterminate).
fn engine_sweep(kind: FaultKind) -> (u64, u64) {
    use std::collections::BTreeMap;
    use walmdb::{Config, Db};
    type Writes = Vec<(Vec<u8>, Vec<u8>)>;
    let writes = |i: u64| -> Writes {
        (0..1 + i % 3)
            .map(|j| {
                let k = format!("k{:02}", (i * 7 + j * 13) % 40).into_bytes();
                (k, noise(i * 10 + j, 200 + (i as usize * 97) % 900))
            })
            .collect()
    };
    let model = |txns: &[Writes]| {
        let mut m = BTreeMap::new();
        for t in txns {
            for (k, v) in t {
                m.insert(k.clone(), v.clone());
            }
        }
        m
    };
    let cfg = || {
        Config::default()
            .wal(walmdb::WalConfig {
                queue_capacity: 256,
                ..cfg()
            })
            .apply_max_ops(20)
    };
    let (mut n, mut acked_total) = (1, 0u64);
    loop {
        let ctx = format!("{kind:?} at engine log I/O operation {n}");
        let dir = tempfile::tempdir().unwrap();
        let fs = SimFs::new();
        fs.fail_nth(n, kind);
        let mut acked: Vec<Writes> = Vec::new();
        let mut indeterminate: Option<Writes> = None;
        match Db::open_with_fs(dir.path(), cfg(), fsref(&fs)) {
            Err(e) => assert!(
                matches!(e, Error::Io(_) | Error::DiskFull(_) | Error::SyncFailed(_)),
                "{ctx}: open failed with {e:?}"
            ),
            Ok(db) => {
                for i in 1..=COMMITS {
                    let w = writes(i);
                    let mut txn = db.write().unwrap();
                    for (k, v) in &w {
                        txn.put("t", k, v).unwrap();
                    }
                    match txn.commit_with(level(i)) {
                        Ok(_) => acked.push(w),
                        Err(Error::DiskFull(_) | Error::Io(_)) => {}
                        Err(e) => {
                            // The log is poisoned: nothing more is acknowledged.
                            assert!(
                                matches!(e, Error::SyncFailed(_) | Error::Poisoned { .. }),
                                "{ctx}: commit {i}: {e:?}"
                            );
                            indeterminate = Some(w);
                            let mut again = db.write().unwrap();
                            again.put("t", b"after", b"poison").unwrap();
                            let r = again.commit();
                            assert!(
                                matches!(r, Err(Error::Poisoned { .. })),
                                "{ctx}: a poisoned engine answered {r:?}"
                            );
                            // Reads keep working.
                            if let Some((k, v)) = acked.last().and_then(|t| t.last()) {
                                let txn = db.read().unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                                let got =
                                    txn.get("t", k).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                                assert_eq!(got, Some(&v[..]), "{ctx}: read after poisoning");
                            }
                            break;
                        }
                    }
                }
                drop(db);
            }
        }
        let fired = fs.op_count() >= n;
        fs.clear_faults();
        acked_total += acked.len() as u64;
        let db = Db::open_with_fs(dir.path(), cfg(), fsref(&fs))
            .unwrap_or_else(|e| panic!("{ctx}: reopen: {e:?}"));
        let got: BTreeMap<Vec<u8>, Vec<u8>> = {
            let txn = db.read().unwrap();
            let it = txn.range("t", ..);
            match it {
                Ok(it) => it
                    .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
                    .collect::<walmdb::Result<_>>()
                    .unwrap(),
                Err(_) => BTreeMap::new(),
            }
        };
        let without = model(&acked);
        let with = indeterminate.map(|w| {
            let mut all = acked.clone();
            all.push(w);
            model(&all)
        });
        assert!(
            got == without || Some(&got) == with.as_ref(),
            "{ctx}: after a restart the table is not the acknowledged transactions' result \
             ({} keys, expected {})",
            got.len(),
            without.len()
        );
        drop(db);
        if !fired {
            break;
        }
        n += 1;
    }
    eprintln!("{kind:?} under the engine: {} log I/O calls failed, {acked_total} acknowledged transactions checked", n - 1);
    assert!(n > 50, "{kind:?}: too few I/O calls to mean anything");
    (n - 1, acked_total)
}

#[test]
fn every_log_io_call_of_the_engine_failing_loses_nothing_acknowledged() {
    for kind in [FaultKind::Eio, FaultKind::Enospc, FaultKind::ShortWrite] {
        engine_sweep(kind);
    }
}
