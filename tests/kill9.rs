//! Reliability tier T2 (`../shared/reliability.md`): a child process commits from several
//! writers and reports every acknowledged commit on a pipe; the parent kills it with SIGKILL
//! at a random moment (during recovery, writes, segment rotation or a checkpoint), recovers a
//! copy of the directory and checks it with the oracle, then lets the next child recover the
//! original and go on writing, so every state also survives the crashes after it.
//!
//! The workload and the oracle (no lost acknowledged commit, no partial transaction, a
//! prefix of the commit order) are `tests/common/crash.rs`'s.
//!
//! `WALMDB_KILLS` sets the number of kills (default 50; `.ci/run` runs 200 in a release
//! build); `WALMDB_KILL_SEED` the seed. A failure prints both, and the directory it kept.

#[path = "common/crash.rs"]
mod crash;
#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crash::*;
use engine_common::{Contents, Rng};

#[test]
#[ignore = "the child process of kill9_loses_nothing_acknowledged"]
fn kill9_child() {
    child_writers();
}

#[test]
fn kill9_loses_nothing_acknowledged() {
    let kills: u64 = std::env::var("WALMDB_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("WALMDB_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b69_6c6c);
    let root = engine_common::tempdir();
    let dir = root.path().join("db");
    let fail = |why: String| -> ! {
        let kept: PathBuf = std::env::temp_dir().join(format!("walmdb-kill9-{seed}"));
        let _ = std::fs::remove_dir_all(&kept);
        copy_dir(&dir, &kept);
        panic!(
            "{why}\nrerun: WALMDB_KILL_SEED={seed} WALMDB_KILLS={kills} cargo test --test kill9; \
             the directory before that recovery is kept in {}",
            kept.display()
        );
    };
    let mut rng = Rng::new(seed);
    let mut acks: BTreeMap<(u64, u64), Ack> = BTreeMap::new();
    let mut last = vec![0u64; WRITERS as usize];
    let (mut acked, mut killed_before_ack) = (0u64, 0u64);
    let started = Instant::now();
    for kill in 0..kills {
        let child = spawn_child("kill9_child", &dir, seed, &last, &[]);
        // Early kills land in the child's open and recovery; later ones among the writes.
        let after = Duration::from_millis(rng.between(5, 300) as u64);
        let before = acks.len();
        for a in collect_acks(child, Some(after)).0 {
            acks.insert((a.w, a.seq), a);
        }
        acked += (acks.len() - before) as u64;
        if acks.len() == before {
            killed_before_ack += 1;
        }
        // A copy is recovered; the original is left crashed for the next child to recover.
        match recover_and_check(&dir, &root.path().join("check"), seed, &mut acks) {
            Ok(recovered) => last = recovered,
            Err(why) => fail(format!("kill {kill} (seed {seed}): {why}")),
        }
    }
    eprintln!(
        "kill9: {kills} kills (seed {seed}) in {:.1} s: {acked} acknowledged commits, \
         0 lost, 0 partial; {killed_before_ack} kills came before any acknowledgement",
        started.elapsed().as_secs_f64()
    );
}

/// The oracle is not vacuous: a lost durable acknowledgement, a hole in the LSN order, a
/// commit past the recovered LSN and a partial transaction are each refused.
#[test]
fn the_oracle_refuses_loss_holes_and_partial_transactions() {
    let seed = 7;
    let state = |last: &[u64]| Contents::from([(TABLE.to_string(), model(seed, last))]);
    let ack = |w, seq, lsn, durable| {
        (
            (w, seq),
            Ack {
                w,
                seq,
                lsn,
                durable,
            },
        )
    };
    let last = [2, 1, 0];
    let acks = BTreeMap::from([ack(0, 1, 1, true), ack(1, 1, 2, true), ack(0, 2, 3, false)]);
    assert_eq!(check(seed, 3, &last, &state(&last), &acks), Ok(()));

    let lost = BTreeMap::from([ack(0, 1, 1, true), ack(1, 1, 2, true), ack(1, 2, 4, true)]);
    assert!(check(seed, 3, &last, &state(&last), &lost)
        .unwrap_err()
        .contains("lost"));
    let hole = BTreeMap::from([ack(0, 1, 1, true), ack(2, 1, 2, false), ack(1, 1, 3, true)]);
    assert!(check(seed, 3, &last, &state(&last), &hole)
        .unwrap_err()
        .contains("hole"));
    let beyond = BTreeMap::from([ack(0, 1, 1, true), ack(1, 1, 2, true), ack(0, 2, 4, false)]);
    assert!(check(seed, 3, &last, &state(&last), &beyond)
        .unwrap_err()
        .contains("present although"));
    let mut partial = state(&last);
    let (k, _) = txn_ops(seed, 0, 2).0.remove(0);
    partial.get_mut(TABLE).unwrap().insert(k, b"torn".to_vec());
    assert!(check(seed, 3, &last, &partial, &acks)
        .unwrap_err()
        .contains("not the writers' prefixes"));
}
