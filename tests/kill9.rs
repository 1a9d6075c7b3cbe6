//! Reliability tier T2 (`../shared/reliability.md`): a child process commits from several
//! writers and reports every acknowledged commit on a pipe; the parent kills it with SIGKILL
//! at a random moment (during recovery, writes, segment rotation or a checkpoint), recovers a
//! copy of the directory and checks it with the oracle, then lets the next child recover the
//! original and go on writing, so every state also survives the crashes after it.
//!
//! The oracle. Writer `w` only writes keys `w{w}/...` of table `kv`, and every transaction
//! sets `w{w}/last` to its sequence number, so the recovered state of each writer names the
//! prefix of its transactions it holds. With `m` the recovered visible LSN:
//! 1. each writer's keys equal the model after exactly its transactions 1..last (all or
//!    nothing, no holes in its own order);
//! 2. every acknowledged durable commit is at or below `m` and present (none lost);
//! 3. every acknowledged commit at or below `m` is present and none above it is (the state is
//!    a prefix of the LSN order across writers).
//!
//! `WALMDB_KILLS` sets the number of kills (default 200, as in CI); `WALMDB_KILL_SEED` the
//! seed. A failure prints both, and the directory it kept.

#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine_common::{Contents, Rng};
use walmdb::{Config, Db, Durability, Lsn, WalConfig};

const TABLE: &str = "kv";
const WRITERS: u64 = 3;
const KEYS_PER_WRITER: u64 = 24;
const CHILD_ENV: &str = "WALMDB_KILL9_CHILD";

/// Small segments and frequent checkpoints: rotations and checkpoints happen every few
/// dozen commits, so kills land inside them too.
fn config() -> Config {
    Config::default()
        .wal(WalConfig {
            segment_bytes: 64 << 10,
            max_record_bytes: 32 << 10,
            queue_capacity: 1024,
            queue_max_bytes: 4 << 20,
            prepare_segments: true,
            ..WalConfig::default()
        })
        .apply_max_ops(50)
        .checkpoint_bytes(96 << 10)
        .checkpoint_interval(Duration::from_millis(30))
}

fn data_key(w: u64, k: u64) -> Vec<u8> {
    format!("w{w}/k{k:02}").into_bytes()
}

fn last_key(w: u64) -> Vec<u8> {
    format!("w{w}/last").into_bytes()
}

/// Puts (`Some`) and deletes (`None`), in order.
type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// One transaction of writer `w`, number `seq`: its writes and whether it is committed
/// durably. A pure function of its arguments, so the parent knows what every commit wrote
/// without being told.
fn txn_ops(seed: u64, w: u64, seq: u64) -> (Writes, bool) {
    let mut rng = Rng::new(seed ^ (w << 48) ^ seq.wrapping_mul(0x9E37_79B9));
    let mut ops = Vec::new();
    for _ in 0..rng.between(1, 5) {
        let k = data_key(w, rng.below(KEYS_PER_WRITER as usize) as u64);
        if rng.percent(20) {
            ops.push((k, None));
        } else {
            let mut v = format!("{w}.{seq}:").into_bytes();
            let len = rng.below(1200);
            v.extend(rng.bytes(len));
            ops.push((k, Some(v)));
        }
    }
    ops.push((last_key(w), Some(seq.to_string().into_bytes())));
    (ops, !rng.percent(20))
}

/// The child: writers commit from `start[w]` on until killed, printing `ACK w seq lsn d` after
/// each commit returns (`d` 1 if it was durable).
#[test]
#[ignore = "the child process of kill9_loses_nothing_acknowledged"]
fn kill9_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("WALMDB_KILL_SEED").unwrap().parse().unwrap();
    let start: Vec<u64> = std::env::var("WALMDB_KILL_START")
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let db = Db::open_with(&dir, config()).expect("child open");
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (db, out, first) = (&db, &out, start[w as usize]);
            s.spawn(move || {
                for seq in first.. {
                    let (ops, durable) = txn_ops(seed, w, seq);
                    let mut txn = db.write().expect("write");
                    for (k, v) in &ops {
                        match v {
                            Some(v) => txn.put(TABLE, k, v).expect("put"),
                            None => txn.delete(TABLE, k).expect("delete"),
                        }
                    }
                    let level = if durable {
                        Durability::group_commit()
                    } else {
                        Durability::None
                    };
                    let lsn = txn.commit_with(level).expect("commit");
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ACK {w} {seq} {lsn} {}", durable as u8).unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    w: u64,
    seq: u64,
    lsn: Lsn,
    durable: bool,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut f = line.strip_prefix("ACK ")?.split(' ');
    let mut next = || f.next()?.parse::<u64>().ok();
    Some(Ack {
        w: next()?,
        seq: next()?,
        lsn: next()?,
        durable: next()? == 1,
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// What a recovered directory holds, per writer: the last sequence number and the keys.
fn recover(dir: &Path) -> (Lsn, Vec<u64>, Contents) {
    let db = Db::open_with(dir, config()).expect("recovery");
    let m = db.stats().visible_lsn;
    let contents = engine_common::dump(&db);
    let txn = db.read().unwrap();
    let last = (0..WRITERS)
        .map(|w| {
            txn.get(TABLE, &last_key(w))
                .unwrap()
                .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap())
        })
        .collect();
    drop(txn);
    drop(db);
    (m, last, contents)
}

/// The keys of every writer `w` after exactly its transactions `1..=last[w]`.
fn model(seed: u64, last: &[u64]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for w in 0..WRITERS {
        for seq in 1..=last[w as usize] {
            for (k, v) in txn_ops(seed, w, seq).0 {
                match v {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
        }
    }
    model
}

/// The oracle; `Err` says what broke.
fn check(
    seed: u64,
    m: Lsn,
    last: &[u64],
    contents: &Contents,
    acks: &BTreeMap<(u64, u64), Ack>,
) -> Result<(), String> {
    let model = model(seed, last);
    let got = contents.get(TABLE).cloned().unwrap_or_default();
    if got != model {
        let diff = got
            .iter()
            .find(|(k, v)| model.get(*k) != Some(*v))
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .or_else(|| {
                model
                    .keys()
                    .find(|k| !got.contains_key(*k))
                    .map(|k| String::from_utf8_lossy(k).into_owned())
            });
        return Err(format!(
            "state is not the writers' prefixes {last:?}: first difference at key {diff:?}"
        ));
    }
    for a in acks.values() {
        let present = a.seq <= last[a.w as usize];
        if a.durable && a.lsn > m {
            return Err(format!(
                "acknowledged durable commit {a:?} lost (recovered to LSN {m})"
            ));
        }
        if a.lsn <= m && !present {
            return Err(format!(
                "hole: {a:?} is missing although LSN {m} was recovered"
            ));
        }
        if a.lsn > m && present {
            return Err(format!(
                "{a:?} is present although recovery stopped at LSN {m}"
            ));
        }
    }
    Ok(())
}

#[test]
fn kill9_loses_nothing_acknowledged() {
    let kills: u64 = std::env::var("WALMDB_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
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
        let start: Vec<String> = last.iter().map(|l| (l + 1).to_string()).collect();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "kill9_child", "--nocapture"])
            .env(CHILD_ENV, &dir)
            .env("WALMDB_KILL_SEED", seed.to_string())
            .env("WALMDB_KILL_START", start.join(","))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).split(b'\n') {
                // A line cut by the kill has no newline and is not returned whole: parse fails.
                lines.push(String::from_utf8_lossy(&line.unwrap()).into_owned());
            }
            lines
        });
        // Early kills land in the child's open and recovery; later ones among the writes.
        std::thread::sleep(Duration::from_millis(rng.between(5, 300) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let before = acks.len();
        for a in lines.iter().filter_map(|l| parse_ack(l)) {
            acks.insert((a.w, a.seq), a);
        }
        acked += (acks.len() - before) as u64;
        if acks.len() == before {
            killed_before_ack += 1;
        }
        // Recover a copy; the original is left crashed for the next child to recover.
        let copy = root.path().join("check");
        let _ = std::fs::remove_dir_all(&copy);
        if dir.exists() {
            copy_dir(&dir, &copy);
        }
        let (m, recovered, contents) = recover(&copy);
        if let Err(why) = check(seed, m, &recovered, &contents, &acks) {
            fail(format!("kill {kill} (seed {seed}): {why}"));
        }
        // Commits recovered without an acknowledgement are kept: the next child goes on
        // after them, and later checks expect them.
        last = recovered;
        acks.retain(|_, a| a.seq <= last[a.w as usize]);
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
