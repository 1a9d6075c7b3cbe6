//! Reliability tier: damage in LMDB's file (issue 17). A closed database of 20,000 keys is
//! damaged, trial by trial, by one flipped bit at a random offset of `data.mdb` or one page
//! zeroed; then, each in a child process (a damaged page can make LMDB fault):
//!
//! - the database is opened and every key read back (a `get` each, then one range over all),
//!   against the model: the read pass is *correct*, *errored* (some call returned an error;
//!   nothing wrong was returned without one), *silently wrong* (a wrong value or a missing or
//!   extra key, and no error anywhere in the pass), *crashed* (a signal), or the open failed;
//! - the offline scrub (`inspect::scrub_store`, what `walmdb verify --deep` runs) is run:
//!   *found* damage (a finding, an error, or a fault, which `verify --deep` reports as damage)
//!   or *healthy*.
//!
//! The targets: no read pass is silently wrong (a read may fail or crash on damage, never
//! answer wrongly without an error); every trial whose damage the read pass met (wrong
//! bytes, an error, a crash, a refused open) is found by the scrub; the scrub, which reads the file page by page and
//! never through LMDB's map, never crashes; the counts by outcome are printed (and recorded
//! in docs/reliability.md).
//!
//! `WALMDB_LMDB_FLIPS` sets the bit flips (default 12; `.ci/run` runs 300 in release),
//! `WALMDB_LMDB_PAGES` the zeroed pages (default 4; CI 60), `WALMDB_LMDB_SEED` the seed.

#[path = "common/crash.rs"]
mod crash;
#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crash::copy_dir;
use engine_common::Rng;
use walmdb::Db;

const CHILD_ENV: &str = "WALMDB_LMDB_CORRUPTION_DIR";
const KEYS: u32 = 20_000;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    let mut rng = Rng::new(u64::from(i) + 1);
    (0..100).map(|_| rng.below(256) as u8).collect()
}

/// Small segments: every trial copies the directory, and the checkpoint retires most of the
/// log, so a repair has to salvage the file rather than replay the log.
fn cfg() -> walmdb::Config {
    walmdb::Config::default().wal(walmdb::WalConfig {
        segment_bytes: 256 << 10,
        max_record_bytes: 128 << 10,
        recycle_segments: 1,
        ..walmdb::WalConfig::default()
    })
}

fn build(dir: &Path) {
    let db = Db::open_with(dir, cfg()).unwrap();
    for chunk in 0..KEYS / 500 {
        db.update(|txn| {
            for i in chunk * 500..(chunk + 1) * 500 {
                txn.put("t", &key(i), &value(i))?;
            }
            Ok(())
        })
        .unwrap();
    }
    db.checkpoint().unwrap();
    db.close().unwrap();
}

/// The child: reads every key of the database in `$WALMDB_LMDB_CORRUPTION_DIR` and prints
/// one line: `open-failed`, `correct`, `errored` or `silently-wrong`.
#[test]
#[ignore = "the child process of damage_in_lmdbs_file_is_never_read_as_data"]
fn lmdb_corruption_read_child() {
    let dir = std::env::var(CHILD_ENV).expect("the parent sets the directory");
    let Ok(db) = Db::open_with(&dir, cfg()) else {
        println!("outcome open-failed");
        return;
    };
    let (mut wrong, mut errors) = (0u64, 0u64);
    match db.read() {
        Err(_) => errors += 1,
        Ok(txn) => {
            for i in 0..KEYS {
                match txn.get("t", &key(i)) {
                    Ok(Some(v)) if v == value(i).as_slice() => {}
                    Ok(_) => wrong += 1,
                    Err(_) => errors += 1,
                }
            }
            match txn.range("t", ..) {
                Err(_) => errors += 1,
                Ok(iter) => {
                    let mut expected = 0u32;
                    for item in iter {
                        match item {
                            Ok((k, v)) if k == key(expected) && v == value(expected) => {
                                expected += 1
                            }
                            Ok(_) => {
                                wrong += 1;
                                break;
                            }
                            Err(_) => {
                                errors += 1;
                                break;
                            }
                        }
                    }
                    if expected != KEYS && wrong == 0 && errors == 0 {
                        wrong += 1;
                    }
                }
            }
        }
    }
    let outcome = match (wrong, errors) {
        (0, 0) => "correct",
        (_, 0) => "silently-wrong",
        _ => "errored",
    };
    println!("outcome {outcome}");
    std::mem::forget(db); // no close: nothing may be written back
}

/// The second child: the offline scrub; prints `found` (findings), `refused` (an error:
/// the file is not one LMDB could open) or `healthy`.
#[test]
#[ignore = "the child process of damage_in_lmdbs_file_is_never_read_as_data"]
fn lmdb_corruption_scrub_child() {
    let dir = std::env::var(CHILD_ENV).expect("the parent sets the directory");
    let data = Path::new(&dir).join("data");
    let outcome = match walmdb::inspect::scrub_store(&data, &mut |_| {}) {
        Ok(Some(report)) if report.is_healthy() => "healthy",
        Ok(Some(_)) => "found",
        Ok(None) | Err(_) => "refused",
    };
    println!("outcome {outcome}");
}

/// Runs child test `name` on `dir`: its outcome line, or `crashed` if a signal ended it.
fn child(name: &str, dir: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture"])
        .env(CHILD_ENV, dir)
        .stderr(Stdio::null())
        .output()
        .expect("spawn the child");
    if out.status.signal().is_some() {
        return "crashed".into();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("outcome "))
        .unwrap_or("no-outcome")
        .to_owned()
}

/// Salvages the damaged database in `dir` (`walmdb::repair` without a backup) into `into`
/// and compares it with the model key by key: `complete` (nothing lost), `losses-listed`
/// (every key right, or missing and inside a listed loss) or `refused` (an error: nothing
/// could be salvaged). A wrong value, an extra key or a missing key no loss lists is an
/// error.
fn repair_outcome(dir: &Path, into: &Path) -> Result<&'static str, String> {
    let _ = std::fs::remove_dir_all(into);
    let report = match walmdb::repair(dir, into, &walmdb::RepairOptions::default()) {
        Ok(report) => report,
        Err(_) => return Ok("refused"),
    };
    let db = Db::open_with(into, cfg()).map_err(|e| format!("the repaired database: {e}"))?;
    let txn = db.read().map_err(|e| e.to_string())?;
    let listed = |k: &[u8]| {
        report.losses.iter().any(|l| {
            l.table == "t"
                && match &l.keys {
                    walmdb::LostKeys::Key(lost) => lost == k,
                    walmdb::LostKeys::Range { from, to } => {
                        from.as_deref().is_none_or(|f| f <= k)
                            && to.as_deref().is_none_or(|t| k < t)
                    }
                    _ => false,
                }
        }) || report
            .losses
            .iter()
            .any(|l| l.table != "t" && l.table != "walmdb.meta")
    };
    for i in 0..KEYS {
        match txn.get("t", &key(i)).map_err(|e| e.to_string())? {
            Some(v) if v == value(i).as_slice() => {}
            Some(_) => return Err(format!("key {i}: a wrong value")),
            None if listed(&key(i)) => {}
            None => {
                return Err(format!(
                    "key {i} missing and not listed: {:?}",
                    report.losses
                ))
            }
        }
    }
    let count = txn.range("t", ..).map_err(|e| e.to_string())?.count();
    if count > KEYS as usize {
        return Err(format!("{count} keys, the model has {KEYS}"));
    }
    drop(txn);
    db.close().map_err(|e| e.to_string())?;
    Ok(if report.is_complete() {
        "complete"
    } else {
        "losses-listed"
    })
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn damage_in_lmdbs_file_is_never_read_as_data() {
    let flips = env_u64("WALMDB_LMDB_FLIPS", 12);
    let pages = env_u64("WALMDB_LMDB_PAGES", 4);
    let seed = env_u64("WALMDB_LMDB_SEED", 0x6c6d_6462);
    let root = tempfile::tempdir().unwrap();
    let pristine = root.path().join("pristine");
    build(&pristine);
    let data_file = |dir: &Path| dir.join("data").join("data.mdb");
    let image = std::fs::read(data_file(&pristine)).unwrap();
    let page = 4096;
    let mut rng = Rng::new(seed);
    let mut counts: BTreeMap<(&str, String, String, &str), u64> = BTreeMap::new();
    let mut silent = Vec::new();
    for trial in 0..flips + pages {
        let (kind, damaged) = if trial < flips {
            let bit = rng.below(image.len() * 8);
            let mut d = image.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            ("bit flip", (d, format!("bit {bit}")))
        } else {
            // Not pages 0 and 1, LMDB's two meta pages: zeroing one of them makes LMDB fall
            // back to the other (an older state the log replays from).
            let p = 2 + rng.below(image.len() / page - 2);
            let mut d = image.clone();
            d[p * page..(p + 1) * page].fill(0);
            ("zeroed page", (d, format!("page {p}")))
        };
        let (bytes, what) = damaged;
        let dir = root.path().join("trial");
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&pristine, &dir);
        std::fs::write(data_file(&dir), &bytes).unwrap();
        let read = child("lmdb_corruption_read_child", &dir);
        // The read child may have replayed the log into LMDB: scrub the damaged image as
        // the read found it, from a fresh copy.
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&pristine, &dir);
        std::fs::write(data_file(&dir), &bytes).unwrap();
        let scrub = child("lmdb_corruption_scrub_child", &dir);
        let repair = repair_outcome(&dir, &root.path().join("repaired"));
        if let Err(e) = &repair {
            silent.push(format!("{what}: repair: {e}"));
        }
        let repair = repair.unwrap_or("WRONG");
        // Damage that changed what a read saw (wrong bytes, an error, a crash, a refused
        // open) is damage in bytes that matter: the scrub must find it, and never crash.
        if (read != "correct" && scrub == "healthy") || scrub == "crashed" {
            silent.push(format!("{what}: read {read}, scrub {scrub}"));
        }
        // A read may fail or crash on damage, never return a wrong answer without an error.
        if read == "silently-wrong" {
            silent.push(format!(
                "{what}: a read returned a wrong answer without an error"
            ));
        }
        *counts.entry((kind, read, scrub, repair)).or_default() += 1;
    }
    println!("LMDB corruption tier: {flips} bit flips, {pages} zeroed pages, seed {seed:#x}");
    println!("| damage | read pass | offline scrub | salvage | trials |");
    println!("|---|---|---|---|--:|");
    for ((kind, read, scrub, repair), n) in &counts {
        println!("| {kind} | {read} | {scrub} | {repair} | {n} |");
    }
    assert!(
        silent.is_empty(),
        "a silently wrong read, damage the reads met and the scrub did not find, or a crashed \
         scrub: {silent:?} \
         (seed {seed:#x})"
    );
    assert!(
        !counts
            .keys()
            .any(|(_, r, s, _)| r == "no-outcome" || s == "no-outcome"),
        "a child ended without an outcome: {counts:?}"
    );
}
