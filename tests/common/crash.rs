//! The crash tests' shared workload and oracle (`tests/kill9.rs`, `tests/failpoints.rs`):
//! writers in a child process that print every acknowledged commit, and the check of a
//! recovered directory against them.
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
//! Declared with `#[path = "common/crash.rs"] mod crash;` next to `common/engine.rs`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::engine_common::{self, Contents, Rng};
use walmdb::{Config, Db, Durability, Lsn, WalConfig};

pub const TABLE: &str = "kv";
pub const WRITERS: u64 = 3;
pub const KEYS_PER_WRITER: u64 = 24;
/// Set in a child process: the database directory.
pub const CHILD_ENV: &str = "WALMDB_CRASH_CHILD";

/// Small segments and frequent checkpoints: rotations and checkpoints happen every few
/// dozen commits, so kills land inside them too.
pub fn config() -> Config {
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

pub fn data_key(w: u64, k: u64) -> Vec<u8> {
    format!("w{w}/k{k:02}").into_bytes()
}

pub fn last_key(w: u64) -> Vec<u8> {
    format!("w{w}/last").into_bytes()
}

/// Puts (`Some`) and deletes (`None`), in order.
pub type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// One transaction of writer `w`, number `seq`: its writes and whether it is committed
/// durably. A pure function of its arguments, so the parent knows what every commit wrote
/// without being told.
pub fn txn_ops(seed: u64, w: u64, seq: u64) -> (Writes, bool) {
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

/// Commits writer `w`'s transaction `seq` (at `GroupCommit` if it is a durable one, else at
/// `None`) and returns its acknowledgement.
pub fn commit_txn(db: &Db, seed: u64, w: u64, seq: u64) -> walmdb::Result<Ack> {
    let (ops, durable) = txn_ops(seed, w, seq);
    let mut txn = db.write()?;
    for (k, v) in &ops {
        match v {
            Some(v) => txn.put(TABLE, k, v)?,
            None => txn.delete(TABLE, k)?,
        }
    }
    let level = if durable {
        Durability::group_commit()
    } else {
        Durability::None
    };
    let lsn = txn.commit_with(level)?;
    Ok(Ack {
        w,
        seq,
        lsn,
        durable,
    })
}

/// [`config`] with the applier held back and the smallest overlay the log allows: the
/// writers fill the overlay and wait for room, and the next open replays more than the
/// overlay holds, so it applies the oldest records before it returns.
pub fn outgrow_overlay_config() -> Config {
    config()
        .overlay_max_bytes(32 << 10)
        .apply_interval(Duration::from_secs(3600))
        .apply_max_ops(1 << 20)
}

/// The child's work: writers commit from `start[w]` on until the process dies, printing
/// `ACK w seq lsn d` after each commit returns (`d` 1 if it was durable). Reads `CHILD_ENV`,
/// `WALMDB_CRASH_SEED` and `WALMDB_CRASH_START`; returns at once without them. With
/// `WALMDB_CRASH_OUTGROW_OVERLAY` set, opens with [`outgrow_overlay_config`]. With
/// `WALMDB_CRASH_CLOSE_AFTER=n`, each writer stops after `n` commits and the database is
/// closed (then the child returns).
pub fn child_writers() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("WALMDB_CRASH_SEED").unwrap().parse().unwrap();
    let start: Vec<u64> = std::env::var("WALMDB_CRASH_START")
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let close_after: Option<u64> = std::env::var("WALMDB_CRASH_CLOSE_AFTER")
        .ok()
        .map(|n| n.parse().unwrap());
    let cfg = if std::env::var_os("WALMDB_CRASH_OUTGROW_OVERLAY").is_some() {
        // Held back for real: commits waiting for room must not hurry the applier.
        fail::cfg("applier-not-hurried", "return").unwrap();
        outgrow_overlay_config()
    } else {
        config()
    };
    let db = Db::open_with(&dir, cfg).expect("child open");
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (db, out, first) = (&db, &out, start[w as usize]);
            s.spawn(move || {
                let end = close_after.map_or(u64::MAX, |n| first + n);
                for seq in first..end {
                    let a = commit_txn(db, seed, w, seq).expect("commit");
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ACK {w} {seq} {} {}", a.lsn, a.durable as u8).unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
    db.close().expect("child close");
}

/// Starts the test binary's `child_test` (an ignored test that calls [`child_writers`]) on
/// `dir`, its writers going on after `last`, with `env` set too.
pub fn spawn_child(
    child_test: &str,
    dir: &Path,
    seed: u64,
    last: &[u64],
    env: &[(&str, String)],
) -> Child {
    let start: Vec<String> = last.iter().map(|l| (l + 1).to_string()).collect();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", child_test, "--nocapture"])
        .env(CHILD_ENV, dir)
        .env("WALMDB_CRASH_SEED", seed.to_string())
        .env("WALMDB_CRASH_START", start.join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn the child")
}

/// Waits for `child` to end, killing it after `kill_after` if given, and returns the
/// acknowledgements it printed and how it ended.
pub fn collect_acks(mut child: Child, kill_after: Option<Duration>) -> (Vec<Ack>, ExitStatus) {
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).split(b'\n') {
            // A line cut by the kill has no newline and is not returned whole: parse fails.
            lines.push(String::from_utf8_lossy(&line.unwrap()).into_owned());
        }
        lines
    });
    if let Some(after) = kill_after {
        let deadline = std::time::Instant::now() + after;
        while std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Killing a child that already ended is harmless.
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    (lines.iter().filter_map(|l| parse_ack(l)).collect(), status)
}

/// Recovers a copy of `dir` (the original stays as it is) and checks it; returns the
/// writers' recovered sequence numbers and drops the acknowledgements recovery did not keep.
pub fn recover_and_check(
    dir: &Path,
    scratch: &Path,
    seed: u64,
    acks: &mut BTreeMap<(u64, u64), Ack>,
) -> Result<Vec<u64>, String> {
    let _ = std::fs::remove_dir_all(scratch);
    if dir.exists() {
        copy_dir(dir, scratch);
    }
    let (m, recovered, contents) = recover(scratch);
    check(seed, m, &recovered, &contents, acks)?;
    // Commits recovered without an acknowledgement are kept: the next child goes on after
    // them, and later checks expect them.
    acks.retain(|_, a| a.seq <= recovered[a.w as usize]);
    Ok(recovered)
}

#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub w: u64,
    pub seq: u64,
    pub lsn: Lsn,
    pub durable: bool,
}

pub fn parse_ack(line: &str) -> Option<Ack> {
    let mut f = line.strip_prefix("ACK ")?.split(' ');
    let mut next = || f.next()?.parse::<u64>().ok();
    Some(Ack {
        w: next()?,
        seq: next()?,
        lsn: next()?,
        durable: next()? == 1,
    })
}

pub fn copy_dir(from: &Path, to: &Path) {
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
pub fn recover(dir: &Path) -> (Lsn, Vec<u64>, Contents) {
    let db = Db::open_with(dir, config()).expect("recovery");
    let m = db.stats().visible_lsn;
    let contents = engine_common::dump(&db);
    let last = writers_last(&db);
    drop(db);
    (m, last, contents)
}

/// Each writer's last sequence number that `db` holds (its `last` key; 0 if none).
pub fn writers_last(db: &Db) -> Vec<u64> {
    let txn = db.read().unwrap();
    (0..WRITERS)
        .map(|w| {
            txn.get(TABLE, &last_key(w))
                .unwrap()
                .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap())
        })
        .collect()
}

/// The keys of every writer `w` after exactly its transactions `1..=last[w]`.
pub fn model(seed: u64, last: &[u64]) -> BTreeMap<Vec<u8>, Vec<u8>> {
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
pub fn check(
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
