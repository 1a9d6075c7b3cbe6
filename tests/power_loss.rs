//! Reliability tier T1 over the engine (`../shared/reliability.md`): simulated power losses
//! and process crashes of a whole database, the log on `SimFs` and LMDB restored from an
//! image of its file.
//!
//! LMDB's own I/O cannot go through the log's `Fs`, so the test keeps an image of LMDB's
//! `data.mdb` at every LMDB commit (`Db::open_observed`, a hidden hook) together with the
//! log's operation count when it was taken. A crash lands after the log's `k`-th I/O
//! operation (`SimFs::crash_after_ops`): in the writers' commits, a group's sync, a segment
//! rotation, a checkpoint's segment retirement, or the next open's recovery and replay.
//! - A *power loss* keeps the log's synced bytes plus a seeded, torn subset of the rest
//!   (`SimFs::crash`), and restores LMDB to any image taken since the last LMDB sync that
//!   finished before the crash: with `NO_META_SYNC`, LMDB's file may come back at any of
//!   those commits (and no earlier one).
//! - A *process crash* keeps every write the log made (`SimFs::keep_all_pending`, so a later
//!   power loss can still lose what was not synced) and LMDB's last image before the crash;
//!   LMDB's commits since its last sync stay candidates for a later power loss.
//!
//! Then the engine is opened (sometimes with a crash inside that recovery, which is crashed
//! again the same way) and checked with the oracle of `tests/common/crash.rs`: the state is
//! the writers' transactions after exactly a prefix of the commit order, with every
//! acknowledged durable commit and no partial transaction; the writers go on from there and
//! the next crash tests the recovered state too.
//!
//! `WALMDB_ENGINE_POWER_LOSSES` sets the number of crashes (default 1,000; `.ci/run` runs
//! 10,000 in a release build);
//! `WALMDB_ENGINE_CRASH_SEED` the first seed. Thread timing is not seeded, so a seed replays
//! the same workload and crash points, not always the same interleaving; a failure prints
//! the seed and keeps the directory.

#[path = "common/crash.rs"]
mod crash;
#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crash::{check, commit_txn, writers_last, Ack, TABLE, WRITERS};
use engine_common::Rng;
use walmdb::{Config, CrashOptions, Db, Error, FsRef, LmdbObserver, Lsn, OpKind, SimFs, WalConfig};

/// Commits each writer makes in one round at most (a round ends earlier at the crash).
const COMMITS_PER_ROUND: u64 = 12;
/// Rounds in one chain of crashes on one database.
const ROUNDS_PER_CHAIN: u64 = 10;

/// Small segments, an applier and a checkpoint that run every few commits, so crash points
/// land inside rotations, LMDB applies and checkpoints.
fn config() -> Config {
    Config::default()
        .wal(WalConfig {
            segment_bytes: 64 << 10,
            max_record_bytes: 16 << 10,
            queue_capacity: 256,
            queue_max_bytes: 4 << 20,
            prepare_segments: false,
            recycle_segments: 1,
            ..WalConfig::default()
        })
        .map_size(1 << 20)
        .apply_max_ops(30)
        .apply_interval(Duration::from_millis(1))
        .checkpoint_bytes(48 << 10)
        .checkpoint_interval(Duration::from_millis(5))
}

/// One chain in three runs with the smallest overlay the log allows: a replay may outgrow
/// it, so open applies the oldest records to LMDB and publishes the rest.
fn chain_config(seed: u64) -> Config {
    if seed % 3 == 2 {
        config().overlay_max_bytes(16 << 10)
    } else {
        config()
    }
}

/// One image of LMDB's file.
#[derive(Debug)]
struct Image {
    /// The process (open) that took it.
    process: u64,
    /// The log's operation count when it was taken: the commit came before operation
    /// `ops + 1`.
    ops: u64,
    /// `data.mdb`, or `None` when it did not exist.
    bytes: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct ImagesState {
    /// The current process's log, for its operation count.
    fs: Option<SimFs>,
    process: u64,
    images: Vec<Image>,
    /// This process's commit `n` is `images[local[n]]` (`local[0]`: the file at open).
    local: Vec<usize>,
    /// LMDB's file durably holds `images[durable]` or a later one, whatever this process did.
    durable: usize,
    /// This process's finished syncs: (log operation count, image index made durable).
    syncs: Vec<(u64, usize)>,
    commits: u64,
    /// Crash this many log operations after the next checkpoint's LMDB sync (the first sync
    /// of a process is the open's, not a checkpoint's): inside its segment retirement.
    crash_in_checkpoint: Option<u64>,
    /// Crashes so aimed.
    aimed_at_checkpoints: u64,
}

/// Keeps an image of LMDB's file at every commit.
#[derive(Debug, Default)]
struct LmdbImages(Mutex<ImagesState>);

fn read_data_file(dir: &Path) -> Option<Vec<u8>> {
    std::fs::read(dir.join("data.mdb")).ok()
}

impl ImagesState {
    /// Keeps an image of LMDB's file now; returns its index.
    fn take_image(&mut self, data_dir: &Path) -> usize {
        let bytes = read_data_file(data_dir);
        let ops = self.fs.as_ref().map_or(0, SimFs::op_count);
        self.images.push(Image {
            process: self.process,
            ops,
            bytes,
        });
        self.images.len() - 1
    }
}

impl LmdbObserver for LmdbImages {
    fn opened(&self, data_dir: &Path) {
        let mut st = self.0.lock().unwrap();
        st.local = vec![st.take_image(data_dir)];
        st.syncs.clear();
    }

    fn committed(&self, data_dir: &Path, n: u64) {
        let mut st = self.0.lock().unwrap();
        let at = st.take_image(data_dir);
        assert_eq!(st.local.len() as u64, n, "commits are numbered in order");
        st.local.push(at);
        st.commits += 1;
    }

    fn synced(&self, n: u64) {
        let mut st = self.0.lock().unwrap();
        let ops = st.fs.as_ref().map_or(0, SimFs::op_count);
        let at = st.local[n as usize];
        st.syncs.push((ops, at));
        if st.syncs.len() > 1 {
            if let (Some(after), Some(fs)) = (st.crash_in_checkpoint.take(), st.fs.clone()) {
                fs.crash_after_ops(ops + after);
                st.aimed_at_checkpoints += 1;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashKind {
    PowerLoss,
    ProcessCrash,
}

impl LmdbImages {
    /// Starts a process whose log is `fs`.
    fn begin_process(&self, fs: &SimFs) {
        let mut st = self.0.lock().unwrap();
        st.fs = Some(fs.clone());
        st.process += 1;
    }

    /// The crash after the log's operation `k` of the current process: picks the LMDB file
    /// it leaves and forgets the commits that came after it. Returns the image's bytes,
    /// whether it is older than LMDB's last commit before the crash, and what it did.
    /// `pick(lo, hi)` chooses a power loss's image among the candidates `lo..=hi`.
    fn crash(
        &self,
        k: u64,
        kind: CrashKind,
        pick: impl FnOnce(usize, usize) -> usize,
    ) -> (Option<Vec<u8>>, bool, String) {
        let mut st = self.0.lock().unwrap();
        let process = st.process;
        let happened = |img: &Image| img.process < process || img.ops <= k;
        let durable = st
            .syncs
            .iter()
            .filter(|(ops, _)| *ops <= k)
            .map(|(_, at)| *at)
            .fold(st.durable, usize::max);
        let last = (0..st.images.len())
            .rev()
            .find(|&i| happened(&st.images[i]))
            .expect("the image at open came before every operation");
        assert!(durable <= last, "a sync covered a commit after the crash");
        let chosen = match kind {
            CrashKind::ProcessCrash => last,
            CrashKind::PowerLoss => pick(durable, last),
        };
        st.images.truncate(chosen + 1);
        st.durable = match kind {
            CrashKind::ProcessCrash => durable,
            // What power loss left on disk is durable.
            CrashKind::PowerLoss => chosen,
        };
        let what = format!(
            "{kind:?} after log op {k} of process {process}: LMDB image {chosen} of {durable}..={last}"
        );
        (st.images[chosen].bytes.clone(), chosen < last, what)
    }
}

/// The log operation a crash stopped: its kind, and for renames and removals what they
/// were part of (a segment's creation, or its retirement by a checkpoint or a recovery).
fn where_it_landed(fs: &SimFs) -> String {
    let Some((op, path)) = fs.first_refused() else {
        return "none (the round ended first)".into();
    };
    let name = path
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match op {
        OpKind::Rename if name.starts_with("spare-") => "Rename (segment retirement)".into(),
        OpKind::Remove if name.starts_with("wal-") => "Remove (segment retirement)".into(),
        OpKind::Rename => "Rename (segment creation)".into(),
        other => format!("{other:?}"),
    }
}

fn fsref(fs: &SimFs) -> FsRef {
    Arc::new(fs.clone())
}

/// Puts LMDB's file back to `bytes` (no file: `None`).
fn restore_lmdb(db_dir: &Path, bytes: &Option<Vec<u8>>) {
    let data = db_dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    if let Some(b) = bytes {
        std::fs::write(data.join("data.mdb"), b).unwrap();
    }
}

fn crash_options(rng: &mut Rng) -> CrashOptions {
    match rng.below(5) {
        0 => CrashOptions {
            reorder: false,
            sector: 4096,
            garbage_fill: true,
        },
        1 => CrashOptions {
            reorder: true,
            sector: 1,
            garbage_fill: true,
        },
        _ => CrashOptions::default(),
    }
}

/// What one chain counted.
#[derive(Debug, Default)]
struct Counts {
    crashes: u64,
    power_losses: u64,
    in_recovery: u64,
    acked: u64,
    acked_durable: u64,
    opens_checked: u64,
    lmdb_older_than_latest: u64,
    unacked_recovered: u64,
    lmdb_images: u64,
    aimed_at_checkpoints: u64,
    /// Opens whose replay outgrew the overlay (part applied at open, part published).
    split_replays: u64,
    /// Opens that left the applier commits to catch up on.
    catch_ups: u64,
    /// Crashes right after an open returned, before anything was written.
    right_after_open: u64,
    /// Crashes by the log operation they stopped (`None`: the round ended first).
    by_op: BTreeMap<String, u64>,
}

/// Runs the writers for a round or until the crash, recording every acknowledgement, while
/// another thread checkpoints every millisecond (the engine's own checkpoint thread looks
/// only every 50 ms, longer than a round).
fn write_round(db: &Db, seed: u64, last: &[u64], acks: &Mutex<Vec<Ack>>) {
    let writing = std::sync::atomic::AtomicUsize::new(WRITERS as usize);
    let writing = &writing;
    std::thread::scope(|s| {
        s.spawn(move || {
            while writing.load(std::sync::atomic::Ordering::Acquire) > 0 {
                if db.checkpoint().is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        for w in 0..WRITERS {
            let first = last[w as usize] + 1;
            s.spawn(move || {
                let _done = Done(writing);
                for seq in first..first + COMMITS_PER_ROUND {
                    match commit_txn(db, seed, w, seq) {
                        Ok(a) => acks.lock().unwrap().push(a),
                        Err(e) => {
                            assert!(
                                !matches!(e, Error::Conflict { .. } | Error::InvalidInput { .. }),
                                "writer {w} seq {seq}: {e:?}"
                            );
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// Counts a writer out when it ends, however it ends.
struct Done<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The recovered state: visible LSN and each writer's last sequence number, checked by the
/// oracle.
fn check_open(
    db: &Db,
    seed: u64,
    acks: &mut BTreeMap<(u64, u64), Ack>,
) -> Result<(Lsn, Vec<u64>), String> {
    let m = db.stats().visible_lsn;
    let contents = engine_common::dump(db);
    let last = writers_last(db);
    check(seed, m, &last, &contents, acks)?;
    acks.retain(|_, a| a.seq <= last[a.w as usize]);
    Ok((m, last))
}

/// One database through `ROUNDS_PER_CHAIN` rounds of writing and crashing.
fn chain(seed: u64, counts: &mut Counts) -> Result<(), String> {
    let root = engine_common::tempdir();
    let dir = root.path().join("db");
    let mut rng = Rng::new(seed);
    let images = Arc::new(LmdbImages::default());
    let mut fs = SimFs::new();
    let mut acks: BTreeMap<(u64, u64), Ack> = BTreeMap::new();
    let mut last = vec![0u64; WRITERS as usize];
    let trace = Mutex::new(Vec::<String>::new());
    let keep = |why: String| -> String {
        let kept: PathBuf = std::env::temp_dir().join(format!("walmdb-power-loss-{seed}"));
        let _ = std::fs::remove_dir_all(&kept);
        if dir.exists() {
            crash::copy_dir(&dir, &kept);
        }
        format!(
            "seed {seed}: {why}\nthe crashes before it:\n  {}\nrerun: WALMDB_ENGINE_CRASH_SEED={seed} \
             WALMDB_ENGINE_POWER_LOSSES={ROUNDS_PER_CHAIN} cargo test --test power_loss; \
             LMDB's file as restored is kept in {}",
            trace.lock().unwrap().join("\n  "),
            kept.display()
        )
    };
    let crash = |fs: &SimFs, k: u64, rng: &mut Rng, counts: &mut Counts| -> SimFs {
        let kind = if rng.percent(75) {
            CrashKind::PowerLoss
        } else {
            CrashKind::ProcessCrash
        };
        let (bytes, older, what) = images.crash(k, kind, |lo, hi| lo + rng.below(hi - lo + 1));
        *counts.by_op.entry(where_it_landed(fs)).or_default() += 1;
        trace.lock().unwrap().push(what);
        counts.lmdb_older_than_latest += older as u64;
        restore_lmdb(&dir, &bytes);
        counts.crashes += 1;
        match kind {
            CrashKind::PowerLoss => {
                counts.power_losses += 1;
                fs.crash(rng.next_u64(), crash_options(rng))
            }
            CrashKind::ProcessCrash => fs.keep_all_pending(),
        }
    };
    for round in 0..ROUNDS_PER_CHAIN {
        // Open, crashing inside recovery now and then.
        let db = loop {
            images.begin_process(&fs);
            let in_recovery = rng.percent(25);
            let k = rng.between(1, 40) as u64;
            if in_recovery {
                fs.crash_after_ops(k);
            }
            let observer: walmdb::LmdbObserverRef = images.clone();
            let opened = Db::open_observed(&dir, chain_config(seed), fsref(&fs), observer);
            trace.lock().unwrap().push(match &opened {
                Ok(db) => {
                    let r = db.recovery_report();
                    format!(
                        "open (crash armed at op {}: {in_recovery}): LMDB applied LSN {}, \
                         replayed {} records to LSN {}, log cut {:?}",
                        k, r.applied_lsn_at_open, r.replayed_records, r.last_lsn, r.wal.cut
                    )
                }
                Err(e) => format!("open (crash armed at op {k}): {e:?}"),
            });
            match opened {
                Ok(db) if !fs.is_dead() => break db,
                Ok(db) => {
                    // The crash point came after recovery: this round's writes die at once.
                    db.simulate_crash();
                    counts.in_recovery += 1;
                    fs = crash(&fs, k, &mut rng, counts);
                }
                Err(e) => {
                    if !fs.is_dead() {
                        return Err(keep(format!("round {round}: open failed: {e:?}")));
                    }
                    counts.in_recovery += 1;
                    fs = crash(&fs, k, &mut rng, counts);
                }
            }
        };
        counts.opens_checked += 1;
        let rep = db.recovery_report();
        counts.split_replays += (rep.applied_records > 0 && rep.overlay_records > 0) as u64;
        counts.catch_ups += (rep.overlay_records > 0) as u64;
        let acked_before = acks.clone();
        let (m, recovered) = match check_open(&db, seed, &mut acks) {
            Ok(r) => r,
            Err(why) => {
                drop(db);
                return Err(keep(format!("round {round}: {why}")));
            }
        };
        counts.unacked_recovered += (0..WRITERS)
            .flat_map(|w| (last[w as usize] + 1..=recovered[w as usize]).map(move |s| (w, s)))
            .filter(|ws| !acked_before.contains_key(ws))
            .count() as u64;
        let _ = m;
        last = recovered;
        // One round in six crashes right after open, the applier catching up (LMDB comes
        // back at any of its commits since its last sync).
        if rng.below(6) == 0 {
            let k = fs.op_count();
            fs.crash_after_ops(k);
            std::thread::sleep(Duration::from_micros(rng.below(2000) as u64));
            db.simulate_crash();
            trace
                .lock()
                .unwrap()
                .push("crashed right after open".into());
            counts.right_after_open += 1;
            fs = crash(&fs, k, &mut rng, counts);
            continue;
        }
        // Write until the crash, after a random number of the log's operations, or (one
        // round in four) inside the first checkpoint's segment retirement.
        let mut k = fs.op_count() + rng.between(1, 60) as u64;
        let aim_at_checkpoint = rng.percent(25);
        if aim_at_checkpoint {
            k += 10_000;
            images.0.lock().unwrap().crash_in_checkpoint = Some(rng.below(3) as u64);
        }
        fs.crash_after_ops(k);
        let round_acks = Mutex::new(Vec::new());
        write_round(&db, seed, &last, &round_acks);
        // A round that ended before its crash point crashes now.
        images.0.lock().unwrap().crash_in_checkpoint = None;
        // (A checkpoint may have brought the crash point forward.)
        let k = fs.crash_point().unwrap_or(k).min(fs.op_count());
        fs.crash_after_ops(k);
        db.simulate_crash();
        let round_acks = round_acks.into_inner().unwrap();
        trace.lock().unwrap().push(format!(
            "wrote to crash point {k}: {} acks, LSNs {:?}",
            round_acks.len(),
            round_acks
                .iter()
                .map(|a| (a.lsn, a.durable))
                .collect::<Vec<_>>()
        ));
        for a in round_acks {
            counts.acked += 1;
            counts.acked_durable += a.durable as u64;
            acks.insert((a.w, a.seq), a);
        }
        fs = crash(&fs, k, &mut rng, counts);
    }
    // The last crash is checked too.
    images.begin_process(&fs);
    let observer: walmdb::LmdbObserverRef = images.clone();
    let db = Db::open_observed(&dir, chain_config(seed), fsref(&fs), observer)
        .map_err(|e| keep(format!("final open: {e:?}")))?;
    counts.opens_checked += 1;
    check_open(&db, seed, &mut acks).map_err(|why| keep(format!("final: {why}")))?;
    db.close().map_err(|e| keep(format!("close: {e:?}")))?;
    counts.lmdb_images += images.0.lock().unwrap().commits;
    counts.aimed_at_checkpoints += images.0.lock().unwrap().aimed_at_checkpoints;
    Ok(())
}

#[test]
fn engine_power_loss_and_process_crash_lose_nothing_acknowledged() {
    let crashes: u64 = std::env::var("WALMDB_ENGINE_POWER_LOSSES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let first: u64 = std::env::var("WALMDB_ENGINE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let mut counts = Counts::default();
    let mut seed = first;
    while counts.crashes < crashes {
        if let Err(why) = chain(seed, &mut counts) {
            panic!("{why}");
        }
        seed += 1;
    }
    eprintln!(
        "engine power loss: {} crashes ({} power losses, {} inside recovery) over seeds \
         {first}..{seed}, {} recovered opens checked, {} acknowledged commits ({} durable), \
         0 lost, 0 partial; LMDB restored older than its latest commit {} times; \
         {} unacknowledged commits recovered; {} LMDB images; {} crashes aimed inside a \
         checkpoint's segment retirement; {} opens left a catch-up to the applier, {} of \
         them after applying the oldest part of a replay that outgrew the overlay; {} crashes \
         right after open; {:.1} s\n\
         crashes by the log operation they stopped: {:?}",
        counts.crashes,
        counts.power_losses,
        counts.in_recovery,
        counts.opens_checked,
        counts.acked,
        counts.acked_durable,
        counts.lmdb_older_than_latest,
        counts.unacked_recovered,
        counts.lmdb_images,
        counts.aimed_at_checkpoints,
        counts.catch_ups,
        counts.split_replays,
        counts.right_after_open,
        started.elapsed().as_secs_f64(),
        counts.by_op
    );
}

/// Found by this tier: after a process crash LMDB's newest commits may sit in the page cache
/// only (`NO_META_SYNC`), yet the next open took LMDB's applied LSN as its checkpoint and
/// the log's recovery retired the segments below it. A power loss before LMDB's next sync
/// then brought LMDB back at an older commit whose records were gone from the log
/// (`SegmentSequence`: acknowledged commits lost). Opening now syncs LMDB first.
#[test]
fn a_reopen_after_a_process_crash_syncs_lmdb_before_the_log_retires_segments() {
    let root = engine_common::tempdir();
    let dir = root.path().join("db");
    // No checkpoint of its own: only opening may sync LMDB.
    let cfg = || {
        config()
            .checkpoint_bytes(1 << 30)
            .checkpoint_interval(Duration::from_secs(3600))
    };
    let images = Arc::new(LmdbImages::default());
    let open = |fs: &SimFs| {
        images.begin_process(fs);
        let observer: walmdb::LmdbObserverRef = images.clone();
        Db::open_observed(&dir, cfg(), fsref(fs), observer)
    };
    let fs = SimFs::new();
    let db = open(&fs).unwrap();
    let mut lsns = Vec::new();
    for i in 0..120u32 {
        let mut txn = db.write().unwrap();
        txn.put(TABLE, &i.to_be_bytes(), &[i as u8; 1000]).unwrap();
        lsns.push(txn.commit().unwrap());
    }
    db.wait_applied(*lsns.last().unwrap()).unwrap();
    assert!(
        fs.file_names(&dir.join("wal")).len() >= 2,
        "the log spans segments"
    );
    // A process crash, then an open that retires the applied segments and dies at once.
    let k = fs.op_count();
    db.simulate_crash();
    let (bytes, _, _) = images.crash(k, CrashKind::ProcessCrash, |_, hi| hi);
    restore_lmdb(&dir, &bytes);
    let fs = fs.keep_all_pending();
    let db = open(&fs).unwrap();
    assert!(db.recovery_report().wal.segments_retired >= 1);
    let k = fs.op_count();
    db.simulate_crash();
    // Power loss, LMDB back at the oldest commit it may come back at.
    let (bytes, _, _) = images.crash(k, CrashKind::PowerLoss, |lo, _| lo);
    restore_lmdb(&dir, &bytes);
    let fs = fs.crash(7, CrashOptions::default());
    let db = open(&fs).unwrap_or_else(|e| panic!("open after the power loss: {e:?}"));
    let txn = db.read().unwrap();
    for i in 0..120u32 {
        assert_eq!(
            txn.get(TABLE, &i.to_be_bytes()).unwrap(),
            Some(&[i as u8; 1000][..]),
            "acknowledged commit {i} lost"
        );
    }
}
