//! Reliability tier T6, LMDB limits, as a counted sweep (docs/reliability.md, "T6 and T7").
//!
//! Each run (one seed) opens a real `Db` on a temporary directory with a tiny LMDB map
//! (1-2 MiB, growing to at most 1-4 MiB) and runs 1-4 writer threads that commit multi-key
//! transactions (small, page-sized or overflow-page values, puts, overwrites and deletes over
//! 1-3 tables, blind or after a read) until their byte budget is spent or a commit is refused
//! with `Error::StorageFull` (some writers try again a few times after a pause, in case LMDB
//! found room; one may call `Db::checkpoint` at the end); any other error fails the run. In
//! most runs another thread holds
//! read transactions open across the point where the map fills, for less or more than
//! `Config::resize_wait`, and checks that what it read first it reads again, and that the map
//! is never resized under it. After the run:
//!
//! - every acknowledged commit is visible and the state is exactly the model of the
//!   acknowledged commits in LSN order (an audit counts lost and partial transactions and
//!   refused commits that appeared anyway); every held snapshot equals the model of the
//!   commits at or below its LSN;
//! - `stats()` agrees with what happened: the map size is the initial size doubled once per
//!   counted resize, capped at the maximum; a refusal reports the maximum; the applier either
//!   applies everything or reports `StorageFull` at the maximum with commits unapplied;
//! - the database is closed, dropped or crashed (`simulate_crash`); a full one may first be
//!   reopened with the same maximum (it opens, or answers `StorageFull`); then it is reopened
//!   with a 64 MiB maximum: the state is still exactly the model, new commits succeed, and
//!   they survive a second reopen.
//!
//! A directed test holds one reader past `resize_wait` while the map is full and checks that
//! the resize is postponed (`DbStats::map_resizes_postponed`), nothing is lost, and the map
//! grows once the reader ends.
//!
//! `WALMDB_LIMIT_RUNS` (default 32) sets the number of runs and `WALMDB_LIMIT_SEED` (default 0)
//! the first seed; `WALMDB_LIMIT_VERBOSE=1` prints a line per run. A failure prints its seed
//! and the command that reruns it alone (a stuck run aborts the process, with its seed):
//! `WALMDB_LIMIT_SEED=<seed> WALMDB_LIMIT_RUNS=1 cargo test --test lmdb_limits -- --nocapture`.

#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine_common::*;
use walmdb::{Config, Db, Error, Lsn, ReadTxn};

const MIB: usize = 1 << 20;
/// The maximum map of the reopens: room for everything a run writes, and more.
const REOPEN_MAX_MIB: usize = 64;
/// A run that has not ended after this long is stuck (a deadlock or a lost wake-up): the
/// watchdog aborts the process with the seed. Runs take well under a second.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The tests of this file run one at a time (each fills the disk's page cache with maps).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn rerun(seed: u64) -> String {
    format!(
        "rerun: WALMDB_LIMIT_SEED={seed} WALMDB_LIMIT_RUNS=1 cargo test --test lmdb_limits -- --nocapture"
    )
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// A watchdog: a stuck run fails loudly, with its seed, instead of hanging the test
// ---------------------------------------------------------------------------------------

struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

impl Watchdog {
    /// Aborts the process after `limit` unless dropped first.
    fn arm(what: String, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "{what}: still running after {limit:?}: a deadlock or a lost wake-up; \
                     aborting the process"
                );
                std::process::abort();
            }
        });
        Watchdog { _disarm: tx }
    }
}

// ---------------------------------------------------------------------------------------
// The parameters of a run
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ReaderPlan {
    /// Acknowledged commits before the first hold begins.
    start_after: usize,
    /// How long each read transaction stays open.
    hold: Duration,
    /// Read transactions held one after another.
    holds: usize,
}

#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    map_mib: usize,
    max_mib: usize,
    writers: usize,
    /// Value sizes, inclusive.
    value: (usize, usize),
    keys_per_txn: (usize, usize),
    /// Keys each writer draws from (small: overwrites; large: new keys).
    key_space: usize,
    delete_pct: usize,
    /// Transactions that read before they write (not blind: they take a snapshot).
    read_pct: usize,
    tables: usize,
    /// Value bytes all writers together commit at most.
    budget: usize,
    apply_interval: Duration,
    apply_max_ops: usize,
    resize_wait: Duration,
    /// Background checkpoints during the fill.
    checkpoints: bool,
    reader: Option<ReaderPlan>,
    /// 0: close, 1: drop, 2: simulate_crash, before the reopen.
    shutdown: usize,
    /// A run that ended full first reopens with the same maximum.
    reopen_same: bool,
    /// Commits a writer tries after its first `StorageFull` (after a pause: readers end and
    /// LMDB may find room again), before it stops.
    full_retries: usize,
    /// Writer 0 calls `Db::checkpoint` when done, maybe while the reader still holds.
    checkpoint_at_end: bool,
}

impl Params {
    fn new(seed: u64) -> Params {
        let mut rng = Rng::new(seed ^ 0x7436_6c69_6d69_7473);
        let map_mib = rng.between(1, 2);
        let max_mib = rng.between(map_mib, 4);
        let value = match rng.below(4) {
            0 => (16, 400),
            1 => (1000, 4000),
            2 => (5000, 20_000),
            _ => (16, 20_000),
        };
        let lo = rng.between(2, 4);
        let keys_per_txn = (lo, rng.between(lo, 8));
        let key_space = [24, 400, 1_000_000][rng.below(3)];
        let resize_wait = Duration::from_millis([1, 5, 20, 50][rng.below(4)]);
        let reader = match rng.below(4) {
            0 => None,
            // Shorter than resize_wait: the resize waits for it and goes ahead.
            1 => Some(resize_wait / 3),
            // Longer: the resize is postponed until it ends.
            _ => Some((resize_wait * rng.between(3, 10) as u32).min(Duration::from_millis(400))),
        }
        .map(|hold| ReaderPlan {
            start_after: rng.below(12),
            hold: hold.max(Duration::from_millis(1)),
            holds: rng.between(1, 3),
        });
        Params {
            seed,
            map_mib,
            max_mib,
            writers: rng.between(1, 4),
            value,
            keys_per_txn,
            key_space,
            delete_pct: [0, 5, 20][rng.below(3)],
            read_pct: [0, 30, 100][rng.below(3)],
            tables: rng.between(1, 3),
            budget: max_mib * MIB * rng.between(30, 250) / 100,
            apply_interval: Duration::from_millis(rng.between(1, 40) as u64),
            apply_max_ops: [8, 200, 100_000][rng.below(3)],
            resize_wait,
            checkpoints: rng.percent(30),
            reader,
            shutdown: rng.below(3),
            reopen_same: rng.percent(50),
            full_retries: [0, 0, 1, 3][rng.below(4)],
            checkpoint_at_end: rng.percent(50),
        }
    }

    fn config(&self, max_mib: usize) -> Config {
        let cfg = cfg()
            .map_size(self.map_mib * MIB)
            .max_map_size(max_mib * MIB)
            .resize_wait(self.resize_wait)
            .apply_interval(self.apply_interval)
            .apply_max_ops(self.apply_max_ops);
        if self.checkpoints {
            cfg.checkpoint_bytes(256 << 10)
                .checkpoint_interval(Duration::from_millis(20))
        } else {
            cfg
        }
    }

    fn table(&self, i: usize) -> String {
        format!("t{i}")
    }
}

/// The map size after `resizes` doublings from `initial`, capped at `max` (all MiB multiples).
fn map_after(initial: usize, max: usize, resizes: u64) -> usize {
    (0..resizes).fold(initial, |size, _| (size * 2).min(max))
}

/// Resizes possible from `initial` to `max`.
fn resizes_possible(initial: usize, max: usize) -> u64 {
    let mut n = 0;
    while map_after(initial, max, n) < max {
        n += 1;
    }
    n
}

// ---------------------------------------------------------------------------------------
// The workload and the audit
// ---------------------------------------------------------------------------------------

/// A transaction of writer `w`: distinct keys of its own (so writers never conflict), each
/// value starting with the transaction's tag `w.seq|`, so a value names its transaction.
fn make_txn(rng: &mut Rng, p: &Params, w: usize, seq: usize) -> Vec<Op> {
    let n = rng.between(p.keys_per_txn.0, p.keys_per_txn.1);
    let tag = format!("{w}.{seq}|");
    let mut seen = std::collections::BTreeSet::new();
    let mut ops = Vec::with_capacity(n);
    while ops.len() < n {
        let table = p.table(rng.below(p.tables));
        let key = format!("w{w}/{:07}", rng.below(p.key_space)).into_bytes();
        if !seen.insert((table.clone(), key.clone())) {
            continue;
        }
        if rng.percent(p.delete_pct) {
            ops.push(Op::delete(&table, &key));
        } else {
            let mut value = tag.clone().into_bytes();
            let len = rng.between(p.value.0, p.value.1).max(value.len());
            value.extend(rng.bytes(len - value.len()));
            ops.push(Op::put(&table, &key, &value));
        }
    }
    ops
}

fn value_bytes(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Put { value, .. } => value.len(),
            _ => 0,
        })
        .sum()
}

/// Every table of a run, in one read transaction.
fn dump_txn(p: &Params, r: &ReadTxn<'_>) -> Contents {
    dump_tables(r, (0..p.tables).map(|i| p.table(i)))
}

fn dump_db(p: &Params, db: &Db) -> Contents {
    let r = db.read().expect("begin read");
    dump_txn(p, &r)
}

/// What a state holds of a list of commits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Audit {
    /// Acknowledged commits none of whose surviving writes are in the state.
    lost: usize,
    /// Acknowledged commits some but not all of whose surviving writes are in the state.
    partial: usize,
    /// Refused commits of which a write is in the state.
    refused_seen: usize,
    /// Entries of the state that no commit explains.
    unexplained: usize,
}

impl Audit {
    fn clean(&self) -> bool {
        *self == Audit::default()
    }
}

/// The last write of each (table, key): (commit index, value, or `None` for a delete).
type LastWrites<'a> = BTreeMap<(&'a str, &'a [u8]), (usize, Option<&'a [u8]>)>;

/// Audits `state` against `commits` (in LSN order) and the `refused` ones.
fn audit(state: &Contents, commits: &[(Lsn, Vec<Op>)], refused: &[Vec<Op>]) -> Audit {
    let mut last = LastWrites::new();
    for (i, (_, ops)) in commits.iter().enumerate() {
        for op in ops {
            let (t, k, v) = match op {
                Op::Put { table, key, value } => (table, key, Some(value.as_slice())),
                Op::Delete { table, key } => (table, key, None),
                Op::DropTable { .. } => unreachable!("the workload drops no table"),
            };
            last.insert((t.as_str(), k.as_slice()), (i, v));
        }
    }
    let get = |t: &str, k: &[u8]| state.get(t).and_then(|m| m.get(k)).map(Vec::as_slice);
    let mut expected = vec![0usize; commits.len()];
    let mut found = vec![0usize; commits.len()];
    for (&(t, k), &(i, want)) in &last {
        expected[i] += 1;
        if get(t, k) == want {
            found[i] += 1;
        }
    }
    let mut a = Audit::default();
    for (e, f) in expected.iter().zip(&found) {
        if *e > 0 && *f == 0 {
            a.lost += 1;
        } else if f < e {
            a.partial += 1;
        }
    }
    a.refused_seen = refused
        .iter()
        .filter(|ops| {
            ops.iter().any(|op| match op {
                Op::Put { table, key, value } => get(table, key) == Some(value.as_slice()),
                _ => false,
            })
        })
        .count();
    a.unexplained = state
        .iter()
        .flat_map(|(t, m)| m.keys().map(move |k| (t.as_str(), k.as_slice())))
        .filter(|tk| !last.contains_key(tk))
        .count();
    a
}

/// The model of the commits at or below `lsn`.
fn model_through(commits: &[(Lsn, Vec<Op>)], lsn: Lsn) -> Contents {
    let mut model = Contents::new();
    for (_, ops) in commits.iter().take_while(|(l, _)| *l <= lsn) {
        apply_ops(&mut model, ops);
    }
    model
}

// ---------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------

/// Figures of the whole sweep.
#[derive(Debug, Default)]
struct Totals {
    runs: u64,
    acked: u64,
    refused: u64,
    runs_storage_full: u64,
    runs_all_acked: u64,
    resizes: u64,
    postponed: u64,
    postponed_with_long_reader: u64,
    holds: u64,
    holds_past_resize_wait: u64,
    snapshot_rechecks: u64,
    reopen_checks: u64,
    /// Reopens of a full store with the same maximum that answered `StorageFull`.
    reopens_refused: u64,
    lost: u64,
    partial: u64,
    audits: u64,
}

impl Totals {
    fn add_audit(&mut self, a: Audit) {
        self.audits += 1;
        self.lost += a.lost as u64;
        self.partial += a.partial as u64;
    }
}

/// One held read transaction, as the reader saw it.
struct Hold {
    lsn: Lsn,
    first: Contents,
    rechecks: u64,
}

/// Shared between a run's threads.
#[derive(Default)]
struct RunState {
    log: CommitLog,
    refused: Mutex<Vec<(usize, Vec<Op>)>>,
    acked: AtomicUsize,
    writers_done: AtomicUsize,
    /// Set when a thread fails, so the others stop early.
    abort: AtomicBool,
}

/// Counts a writer as done even when it panics, so the reader does not wait for it.
struct Done<'a>(&'a RunState);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort.store(true, Ordering::Release);
        }
        self.0.writers_done.fetch_add(1, Ordering::AcqRel);
    }
}

fn writer(db: &Db, p: &Params, w: usize, st: &RunState) {
    let _done = Done(st);
    let mut rng = Rng::new(p.seed.wrapping_mul(0x9E37_79B9) ^ ((w as u64 + 1) << 40));
    let budget = p.budget / p.writers;
    let (mut spent, mut seq, mut retries) = (0, 0, p.full_retries);
    while spent < budget && !st.abort.load(Ordering::Acquire) {
        let ops = make_txn(&mut rng, p, w, seq);
        let mut t = db.write().expect("begin write");
        if rng.percent(p.read_pct) {
            let op = &ops[0];
            t.get(op.table(), op.key()).expect("read before writing");
        }
        for op in &ops {
            op.run(&mut t).expect("buffer a write");
        }
        spent += value_bytes(&ops);
        match t.commit_with(rng.durability()) {
            Ok(lsn) => {
                st.log.record(lsn, ops);
                st.acked.fetch_add(1, Ordering::AcqRel);
            }
            Err(Error::StorageFull { map_size }) => {
                st.refused.lock().unwrap().push((map_size, ops));
                if retries == 0 {
                    break;
                }
                retries -= 1;
                std::thread::sleep(Duration::from_millis(rng.between(10, 60) as u64));
            }
            Err(e) => panic!(
                "seed {}: writer {w}, commit {seq}: expected Ok or Error::StorageFull, got {e:?}",
                p.seed
            ),
        }
        seq += 1;
    }
    if w == 0 && p.checkpoint_at_end {
        let r = db.checkpoint();
        assert!(
            matches!(r, Ok(_) | Err(Error::StorageFull { .. })),
            "seed {}: checkpoint at the end of writer 0: expected Ok or StorageFull, got {r:?}",
            p.seed
        );
    }
}

fn reader(db: &Db, p: &Params, plan: &ReaderPlan, st: &RunState) -> Vec<Hold> {
    let mut rng = Rng::new(p.seed ^ 0x5245_4144);
    while st.acked.load(Ordering::Acquire) < plan.start_after
        && st.writers_done.load(Ordering::Acquire) < p.writers
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut holds = Vec::new();
    for h in 0..plan.holds {
        if st.abort.load(Ordering::Acquire) {
            break;
        }
        let r = db.read().expect("begin the long read");
        let size_at_open = db.stats().map_size;
        let first = dump_txn(p, &r);
        let started = Instant::now();
        let mut rechecks = 0;
        while started.elapsed() < plan.hold && !st.abort.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(rng.between(1, 10) as u64));
            let again = dump_txn(p, &r);
            assert!(
                again == first,
                "seed {}: hold {h}: the snapshot at LSN {} changed: {} tables, then {}",
                p.seed,
                r.lsn(),
                first.len(),
                again.len()
            );
            assert_eq!(
                db.stats().map_size,
                size_at_open,
                "seed {}: hold {h}: the map was resized under an open read transaction",
                p.seed
            );
            rechecks += 1;
        }
        holds.push(Hold {
            lsn: r.lsn(),
            first,
            rechecks,
        });
        drop(r);
        std::thread::sleep(Duration::from_millis(rng.below(20) as u64));
    }
    holds
}

/// Fails the run unless the state is exactly the model, after counting the audit.
fn check_state(
    what: &str,
    totals: &mut Totals,
    state: &Contents,
    commits: &[(Lsn, Vec<Op>)],
    refused: &[Vec<Op>],
) {
    let model = model_through(commits, Lsn::MAX);
    let a = audit(state, commits, refused);
    totals.add_audit(a);
    assert!(
        a.clean() && *state == model,
        "{what}: the state is not the model of the acknowledged commits: {a:?}; \
         {} tables with {} entries, the model {} tables with {} entries",
        state.len(),
        state.values().map(BTreeMap::len).sum::<usize>(),
        model.len(),
        model.values().map(BTreeMap::len).sum::<usize>()
    );
}

fn run(p: &Params, totals: &mut Totals) {
    let seed = p.seed;
    let dir = tempdir();
    let db = Db::open_with(dir.path(), p.config(p.max_mib)).expect("open");
    let st = RunState::default();
    let holds = std::thread::scope(|s| {
        let reader = p.reader.as_ref().map(|plan| {
            let (db, st) = (&db, &st);
            s.spawn(move || reader(db, p, plan, st))
        });
        let writers: Vec<_> = (0..p.writers)
            .map(|w| {
                let (db, st) = (&db, &st);
                s.spawn(move || writer(db, p, w, st))
            })
            .collect();
        for w in writers {
            if let Err(e) = w.join() {
                std::panic::resume_unwind(e);
            }
        }
        reader.map_or_else(Vec::new, |r| {
            r.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    });

    let commits = st.log.sorted();
    let refusals = st.refused.into_inner().unwrap();
    let refused: Vec<Vec<Op>> = refusals.iter().map(|(_, ops)| ops.clone()).collect();
    totals.acked += commits.len() as u64;
    totals.refused += refused.len() as u64;
    let postponed = db.stats().map_resizes_postponed;
    totals.postponed += postponed;
    if p.reader.as_ref().is_some_and(|r| r.hold > p.resize_wait) {
        totals.postponed_with_long_reader += postponed;
    }

    // LSNs are contiguous from 1: every commit that got one was acknowledged.
    let lsns: Vec<Lsn> = commits.iter().map(|c| c.0).collect();
    let want: Vec<Lsn> = (1..=commits.len() as Lsn).collect();
    assert_eq!(lsns, want, "seed {seed}: acknowledged LSNs are not 1..=n");

    // Every held snapshot was the model of the commits at or below its LSN.
    for (h, hold) in holds.iter().enumerate() {
        totals.holds += 1;
        if p.reader.as_ref().is_some_and(|r| r.hold > p.resize_wait) {
            totals.holds_past_resize_wait += 1;
        }
        totals.snapshot_rechecks += hold.rechecks;
        check_state(
            &format!("seed {seed}: hold {h} (snapshot at LSN {})", hold.lsn),
            totals,
            &hold.first,
            &commits[..commits.partition_point(|c| c.0 <= hold.lsn)],
            &[],
        );
    }

    // Every acknowledged commit is visible, before the applier is done and after.
    check_state(
        &format!("seed {seed}: after the run"),
        totals,
        &dump_db(p, &db),
        &commits,
        &refused,
    );
    let max = p.max_mib * MIB;
    for (size, _) in &refusals {
        assert_eq!(*size, max, "seed {seed}: StorageFull below the maximum map");
    }
    let visible = db.stats().visible_lsn;
    assert_eq!(visible, commits.len() as Lsn, "seed {seed}: visible LSN");
    let applied = db.wait_applied(visible);
    let s = db.stats();
    let initial = p.map_mib * MIB;
    totals.resizes += s.map_resizes;
    assert!(
        s.map_resizes <= resizes_possible(initial, max),
        "seed {seed}: {} resizes from {initial} to {max}",
        s.map_resizes
    );
    assert_eq!(
        s.map_size,
        map_after(initial, max, s.map_resizes),
        "seed {seed}: the map size is not {initial} doubled {} times",
        s.map_resizes
    );
    if !refusals.is_empty() {
        assert_eq!(s.map_size, max, "seed {seed}: refused below the maximum");
    }
    let full = match applied {
        Ok(()) => {
            assert!(
                !s.storage_full && s.applied_lsn >= visible,
                "seed {seed}: applied everything but {s:?}"
            );
            false
        }
        Err(Error::StorageFull { map_size }) => {
            assert!(
                map_size == max && s.map_size == max && s.storage_full && s.applied_lsn < visible,
                "seed {seed}: StorageFull at map {map_size} (max {max}) with {s:?}"
            );
            // New commits are refused with the typed error; reads go on.
            let mut t = db.write().unwrap();
            t.put(&p.table(0), b"probe", b"refused").unwrap();
            let r = t.commit();
            assert!(
                matches!(r, Err(Error::StorageFull { .. })),
                "seed {seed}: a commit into a full store: {r:?}"
            );
            true
        }
        Err(e) => panic!("seed {seed}: wait_applied: expected Ok or StorageFull, got {e:?}"),
    };
    if std::env::var_os("WALMDB_LIMIT_VERBOSE").is_some() {
        eprintln!(
            "seed {seed}: map {}..{} MiB, {} writers, values {:?}, reader {:?}, resize_wait \
             {:?}: acknowledged {}, refused {}, resizes {}, postponed {postponed}, applied \
             {}/{}, full at the end: {full}",
            p.map_mib,
            p.max_mib,
            p.writers,
            p.value,
            p.reader.as_ref().map(|r| (r.hold, r.holds)),
            p.resize_wait,
            commits.len(),
            refused.len(),
            s.map_resizes,
            s.applied_lsn,
            s.visible_lsn
        );
    }
    if full || !refused.is_empty() {
        totals.runs_storage_full += 1;
    } else {
        totals.runs_all_acked += 1;
    }
    check_state(
        &format!("seed {seed}: after the applier"),
        totals,
        &dump_db(p, &db),
        &commits,
        &refused,
    );
    match p.shutdown {
        0 => {
            let r = db.close();
            assert!(
                matches!(r, Ok(())) || (full && matches!(r, Err(Error::StorageFull { .. }))),
                "seed {seed}: close (full: {full}): {r:?}"
            );
        }
        1 => drop(db),
        _ => db.simulate_crash(),
    }

    // Reopening with the same maximum replays what fits, then answers StorageFull (or
    // opens, if everything fits after all).
    if full && p.reopen_same {
        match Db::open_with(dir.path(), p.config(p.max_mib)) {
            Ok(db) => {
                totals.reopen_checks += 1;
                check_state(
                    &format!("seed {seed}: reopened with the same maximum"),
                    totals,
                    &dump_db(p, &db),
                    &commits,
                    &refused,
                );
                let r = db.close();
                assert!(
                    matches!(r, Ok(()) | Err(Error::StorageFull { .. })),
                    "seed {seed}: close after reopening with the same maximum: {r:?}"
                );
            }
            Err(Error::StorageFull { map_size }) => {
                totals.reopens_refused += 1;
                assert_eq!(
                    map_size, max,
                    "seed {seed}: reopen refused below the maximum"
                );
            }
            Err(e) => panic!(
                "seed {seed}: reopening a full store with the same maximum: expected Ok or \
                 StorageFull, got {e:?}"
            ),
        }
    }

    // Reopen with a larger maximum: exactly the model, and it takes new writes.
    let mut commits = commits;
    let db = Db::open_with(dir.path(), p.config(REOPEN_MAX_MIB)).expect("reopen larger");
    totals.reopen_checks += 1;
    assert!(
        !db.stats().storage_full,
        "seed {seed}: full after reopening larger"
    );
    check_state(
        &format!("seed {seed}: reopened with a {REOPEN_MAX_MIB} MiB maximum"),
        totals,
        &dump_db(p, &db),
        &commits,
        &refused,
    );
    let mut rng = Rng::new(seed ^ 0x4e45_5721);
    let w = p.writers;
    for seq in 0..12 {
        let ops = make_txn(&mut rng, p, w, seq);
        let mut t = db.write().unwrap();
        for op in &ops {
            op.run(&mut t).unwrap();
        }
        let lsn = t
            .commit_with(rng.durability())
            .unwrap_or_else(|e| panic!("seed {seed}: commit {seq} after the reopen: {e:?}"));
        commits.push((lsn, ops));
    }
    db.checkpoint()
        .unwrap_or_else(|e| panic!("seed {seed}: checkpoint after the reopen: {e:?}"));
    check_state(
        &format!("seed {seed}: new commits after the reopen"),
        totals,
        &dump_db(p, &db),
        &commits,
        &refused,
    );
    db.close()
        .unwrap_or_else(|e| panic!("seed {seed}: close after the reopen: {e:?}"));

    // They survive another reopen.
    let db = Db::open_with(dir.path(), p.config(REOPEN_MAX_MIB)).expect("second reopen");
    totals.reopen_checks += 1;
    assert_eq!(
        db.recovery_report().replayed_records,
        0,
        "seed {seed}: a clean close left records to replay"
    );
    check_state(
        &format!("seed {seed}: second reopen"),
        totals,
        &dump_db(p, &db),
        &commits,
        &refused,
    );
    db.close()
        .unwrap_or_else(|e| panic!("seed {seed}: final close: {e:?}"));
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// T6 as a counted sweep: tiny maps filled by 1-4 writers, with and without a long reader.
#[test]
fn lmdb_limits_sweep_loses_nothing_acknowledged() {
    let _serial = serial();
    let runs = env_u64("WALMDB_LIMIT_RUNS", 32);
    let first = env_u64("WALMDB_LIMIT_SEED", 0);
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut failures: Vec<(u64, String)> = Vec::new();
    for seed in first..first + runs {
        let p = Params::new(seed);
        let _watchdog = Watchdog::arm(format!("seed {seed} ({p:?})\n{}", rerun(seed)), RUN_LIMIT);
        totals.runs += 1;
        if let Err(e) = std::panic::catch_unwind(AssertUnwindSafe(|| run(&p, &mut totals))) {
            let msg = panic_message(&*e);
            eprintln!("T6 run failed: seed {seed} ({p:?}): {msg}\n{}", rerun(seed));
            failures.push((seed, msg));
        }
    }
    let postponed = format!(
        " resizes_postponed_by_open_txns={} (in runs with a reader held past resize_wait: {})",
        totals.postponed, totals.postponed_with_long_reader
    );
    eprintln!(
        "T6 lmdb limits: runs={} seeds={first}..{} commits_acknowledged={} \
         commits_refused_storage_full={} runs_ending_storage_full={} runs_all_acknowledged={} \
         map_resizes={}{postponed} reader_holds={} (past resize_wait: {}) snapshot_rechecks={} \
         reopen_checks={} reopens_same_max_refused_storage_full={} audits={} acknowledged_commits_lost={} partial_transactions={} \
         failed_runs={} wall={:.1}s",
        totals.runs,
        first + runs,
        totals.acked,
        totals.refused,
        totals.runs_storage_full,
        totals.runs_all_acked,
        totals.resizes,
        totals.holds,
        totals.holds_past_resize_wait,
        totals.snapshot_rechecks,
        totals.reopen_checks,
        totals.reopens_refused,
        totals.audits,
        totals.lost,
        totals.partial,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(seed, msg)| format!("seed {seed}: {msg}\n  {}", rerun(*seed)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!((totals.lost, totals.partial), (0, 0));
    assert!(
        totals.refused > 0,
        "no run filled its map: the sweep tests nothing"
    );
    assert!(totals.resizes > 0, "no run grew its map");
}

/// A reader held past `resize_wait` while the map is full postpones the resize: commits are
/// still acknowledged (into the overlay), the reader's snapshot does not change, the map is
/// not resized under it; once it ends the map grows, everything is applied, and commits go on.
#[test]
fn a_reader_held_past_resize_wait_postpones_the_resize_and_loses_nothing() {
    let _serial = serial();
    let _watchdog = Watchdog::arm("the directed long-reader test".into(), RUN_LIMIT);
    let p = Params {
        seed: u64::MAX,
        map_mib: 1,
        max_mib: 16,
        writers: 1,
        value: (6000, 6000),
        keys_per_txn: (8, 8),
        key_space: 1_000_000,
        delete_pct: 0,
        read_pct: 0,
        tables: 1,
        budget: 0,
        apply_interval: Duration::from_millis(1),
        apply_max_ops: 100_000,
        resize_wait: Duration::from_millis(5),
        checkpoints: false,
        reader: None,
        shutdown: 0,
        reopen_same: false,
        full_retries: 0,
        checkpoint_at_end: false,
    };
    let dir = tempdir();
    let db = Db::open_with(dir.path(), p.config(p.max_mib)).unwrap();
    let log = CommitLog::default();
    let mut rng = Rng::new(11);
    let commit = |rng: &mut Rng, seq: usize| {
        let ops = make_txn(rng, &p, 0, seq);
        let mut t = db.write().unwrap();
        for op in &ops {
            op.run(&mut t).unwrap();
        }
        let lsn = t
            .commit()
            .unwrap_or_else(|e| panic!("commit {seq}: expected Ok, got {e:?}"));
        log.record(lsn, ops);
    };
    for seq in 0..4 {
        commit(&mut rng, seq);
    }
    db.wait_applied(db.stats().visible_lsn).unwrap();
    let before = db.stats();
    assert_eq!(before.map_size, MIB);

    let opened = AtomicBool::new(false);
    let release = AtomicBool::new(false);
    let postponed_before = db.stats().map_resizes_postponed;
    let (hold, size_while_held) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let r = db.read().unwrap();
            let size = db.stats().map_size;
            let first = dump_txn(&p, &r);
            opened.store(true, Ordering::Release);
            let mut rechecks = 0;
            while !release.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(2));
                assert!(dump_txn(&p, &r) == first, "the held snapshot changed");
                assert_eq!(db.stats().map_size, size, "resized under the reader");
                rechecks += 1;
            }
            let lsn = r.lsn();
            drop(r);
            (
                Hold {
                    lsn,
                    first,
                    rechecks,
                },
                size,
            )
        });
        // Ends the reader if the writer fails, so the scope does not wait forever.
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _release = Release(&release);
        wait_until("the reader opened", || {
            opened.load(Ordering::Acquire) || reader.is_finished()
        });
        // About 3 MiB of values into a 1 MiB map, while the reader is open: all acknowledged.
        for seq in 4..68 {
            commit(&mut rng, seq);
        }
        let visible = db.stats().visible_lsn;
        wait_until("the applier postponed a resize", || {
            db.stats().map_resizes_postponed > postponed_before
        });
        let st = db.stats();
        assert_eq!(st.map_size, MIB, "the map grew under an open reader");
        assert_eq!(st.map_resizes, before.map_resizes, "{st:?}");
        assert!(!st.storage_full, "{st:?}");
        assert!(st.applied_lsn < visible, "3 MiB applied to a 1 MiB map");
        assert_eq!(dump_db(&p, &db), log.model(), "visible while postponed");
        // Issue 21: the reader that holds the map's growth back is reported.
        let health = db.health();
        assert!(
            health
                .reasons
                .iter()
                .any(|r| r.1.contains("map is full") && r.1.contains("1 transaction(s)")),
            "{health:?}"
        );
        release.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    assert_eq!(size_while_held, MIB);
    assert!(hold.rechecks > 0);
    let commits = log.sorted();
    assert_eq!(
        hold.first,
        model_through(&commits, hold.lsn),
        "the held snapshot"
    );
    // The reader is gone: the map grows and everything is applied.
    let visible = db.stats().visible_lsn;
    db.wait_applied(visible).unwrap();
    let st = db.stats();
    assert!(st.map_resizes > before.map_resizes, "{st:?}");
    assert!(st.map_size >= 4 * MIB && !st.storage_full, "{st:?}");
    let health = db.health();
    assert!(
        !health.reasons.iter().any(|r| r.1.contains("map is full")),
        "{health:?}"
    );
    for seq in 68..76 {
        commit(&mut rng, seq);
    }
    db.checkpoint().unwrap();
    assert_eq!(dump_db(&p, &db), log.model());
    db.close().unwrap();
    let db = Db::open_with(dir.path(), p.config(p.max_mib)).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert_eq!(dump_db(&p, &db), log.model());
    db.close().unwrap();
    eprintln!(
        "T6 long reader: resizes postponed while held: {}, then {} resizes to {} MiB",
        st.map_resizes_postponed - postponed_before,
        st.map_resizes - before.map_resizes,
        st.map_size / MIB
    );
}

/// Issue 21: the map grows once LMDB uses half of it, before it is full, so a reader that
/// opens later has room to spare; a reader open at the time puts the growth off without
/// stalling anything.
#[test]
fn the_map_grows_ahead_of_need_when_no_reader_is_open() {
    let _serial = serial();
    let dir = tempdir();
    let cfg = cfg()
        .map_size(MIB)
        .max_map_size(64 * MIB)
        .apply_interval(Duration::from_millis(1));
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let value = vec![7u8; 1000];
    let next = std::cell::Cell::new(0u64);
    // Writes 10 KiB at a time, each until LMDB holds it, until `until` holds.
    let write_until = |db: &Db, until: &dyn Fn(&Db) -> bool| {
        for _ in 0..2000 {
            if until(db) {
                return;
            }
            for _ in 0..10 {
                let key = next.replace(next.get() + 1);
                db.update(|t| t.put("t", &key.to_be_bytes(), &value))
                    .unwrap();
            }
            db.wait_applied(db.stats().visible_lsn).unwrap();
        }
        panic!("20 MB written and still not there: {:?}", db.stats());
    };
    let half_used = |db: &Db| {
        let m = db.metrics();
        m.map_used_bytes * 2 >= m.map_size as u64
    };
    // No reader: the map grows once half of it is used, never waiting on a full one.
    write_until(&db, &|db| db.stats().map_resizes_ahead >= 1);
    let st = db.stats();
    assert!(st.map_size >= 2 * MIB, "{st:?}");
    assert_eq!(st.map_resizes, st.map_resizes_ahead, "{st:?}");
    assert_eq!(st.map_resizes_postponed, 0, "{st:?}");
    // A reader open while the map passes half: no growth under it, and writes go on.
    let reader = db.read().unwrap();
    let held = reader.lsn();
    let size = db.stats().map_size;
    write_until(&db, &half_used);
    let st = db.stats();
    assert_eq!(st.map_size, size, "grown under a reader: {st:?}");
    assert!(st.applied_lsn > held, "{st:?}");
    assert_eq!(
        reader.get("t", &(next.get() - 1).to_be_bytes()).unwrap(),
        None
    );
    drop(reader);
    // Once it ends, a later batch grows the map (at most one attempt a second).
    std::thread::sleep(Duration::from_millis(1100));
    let ahead = st.map_resizes_ahead;
    write_until(&db, &|db| db.stats().map_resizes_ahead > ahead);
    let st = db.stats();
    assert!(st.map_size > size, "{st:?}");
    assert_eq!(st.map_resizes, st.map_resizes_ahead, "{st:?}");
    db.close().unwrap();
}

/// The audit behind the sweep's "lost" and "partial" figures counts what it should.
#[test]
fn the_audit_counts_lost_partial_and_refused_commits() {
    let c = |lsn: Lsn, ops: Vec<Op>| (lsn, ops);
    let commits = vec![
        c(
            1,
            vec![Op::put("t0", b"a", b"1"), Op::put("t0", b"b", b"1")],
        ),
        c(
            2,
            vec![Op::put("t0", b"c", b"2"), Op::put("t1", b"d", b"2")],
        ),
        c(3, vec![Op::put("t0", b"a", b"3"), Op::delete("t0", b"c")]),
    ];
    let refused = vec![vec![Op::put("t0", b"e", b"9")]];
    let model = model_through(&commits, Lsn::MAX);
    assert!(audit(&model, &commits, &refused).clean());
    // Commit 3 only half there: its "a" is, its delete of "c" is not: partial.
    let mut half = model.clone();
    half.get_mut("t0")
        .unwrap()
        .insert(b"c".to_vec(), b"2".to_vec());
    let a = audit(&half, &commits, &refused);
    assert_eq!((a.lost, a.partial), (0, 1), "{a:?}");
    // Commit 3 missing: "a" has 1's value and "c" is back: lost.
    let older = model_through(&commits, 2);
    let a = audit(&older, &commits, &refused);
    assert_eq!((a.lost, a.partial), (1, 0), "{a:?}");
    // A refused commit that appeared, and an entry nobody wrote.
    let mut extra = model;
    extra
        .get_mut("t0")
        .unwrap()
        .insert(b"e".to_vec(), b"9".to_vec());
    extra
        .get_mut("t0")
        .unwrap()
        .insert(b"z".to_vec(), b"?".to_vec());
    let a = audit(&extra, &commits, &refused);
    // (The refused write is unexplained by the acknowledged commits too.)
    assert_eq!((a.refused_seen, a.unexplained), (1, 2), "{a:?}");
}
