//! The `kv` group: the standard embedded key-value comparison workload, one engine per child
//! process, its rows in a fixed order on one store (see harness/README.md):
//!
//! 1. `kv-bulk-load`: N random 24-byte keys with 150-byte values in ONE write transaction (in
//!    random order), then settle. An engine that refuses a transaction that big (walmdb did,
//!    `RecordTooLarge`, while its log took no record over `max_record_bytes`) has the refusal
//!    recorded by kind, and the same pairs are loaded in the largest pieces that commit
//!    (halving from N), marked as split.
//! 2. `kv-overwrite`: a random 40% of the keys overwritten in 1,000-pair transactions, not
//!    settled (walmdb keeps committed versions in its overlay until applied to LMDB).
//! 3. `kv-scan10-overlay`: 10-key range reads from random loaded keys, 1 thread, right after.
//! 4. `kv-scan10`: the same after a settle.
//! 5. `kv-get`: random point gets of loaded keys, 1 thread.
//! 6. `kv-sorted-insert`: N/5 new keys above every other, ascending, 1,000 a transaction,
//!    then settle.
//! 7. `kv-commit-1`: 1-key write transactions of random new keys, 1 thread.
//! 8. `kv-len`: one `len()` after a settle, checked against the keys written.
//! 9. `kv-pop`: min(100,000, N/10) pops, first and last alternately, each its own transaction.
//! 10. `kv-remove`: a random 10% of the loaded keys removed, 1,000 a transaction.
//!
//! then `kv-total`: the bytes written over the whole workload and the store's size at the end.
//!
//! Every row records the bytes the child process wrote during it (/proc/self/io `write_bytes`,
//! background threads included) in `disk_write_bytes`. No row syncs the file system around
//! it (the other groups' device-level byte count does), so the rows run back to back and
//! walmdb's overlay is not drained by a sync between the overwrite and the scan after it.
//! A failed operation is counted by kind and, for writes, retried; a row that cannot finish
//! is recorded as failed (its note starts with `FAILED`) and the next row runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::engine::{error_kind, Engine, EngineKind, Worker};
use crate::meter::{self, Ticks, Usage};
use crate::results::Cell;
use crate::workloads::{self, Rng};
use crate::ycsb::Histogram;

pub const KEY_LEN: usize = 24;
pub const VALUE_LEN: usize = 150;
/// Pairs (or keys) per transaction of the overwrite, sorted-insert and remove rows.
pub const TXN_KEYS: usize = 1000;
/// Keys a range read of the scan rows reads.
pub const SCAN_LEN: usize = 10;
/// The most pops of `kv-pop` by default (and at most a tenth of the loaded keys).
pub const MAX_POPS: u64 = 100_000;

/// The rows in order: (workload id, what it measures).
pub const ROWS: [(&str, &str); 10] = [
    (
        "kv-bulk-load",
        "all N pairs in one write transaction, then settle",
    ),
    (
        "kv-overwrite",
        "a random 40% of the keys overwritten, 1,000 pairs a transaction, not settled",
    ),
    (
        "kv-scan10-overlay",
        "10-key range reads right after the overwrite",
    ),
    ("kv-scan10", "10-key range reads after a settle"),
    ("kv-get", "point gets of loaded keys"),
    (
        "kv-sorted-insert",
        "N/5 new keys above all others, ascending, 1,000 a transaction, then settle",
    ),
    (
        "kv-commit-1",
        "1-key write transactions at the engine's durability",
    ),
    ("kv-len", "one len() after a settle, checked"),
    (
        "kv-pop",
        "pop first / pop last alternately, one transaction each",
    ),
    (
        "kv-remove",
        "a random 10% of the loaded keys removed, 1,000 a transaction",
    ),
];

/// The whole-workload cell of an engine: bytes written over all rows, size on disk at the end.
pub const TOTAL: &str = "kv-total";

/// How a split bulk load's note starts (the report marks the row with it).
pub const SPLIT: &str = "split:";

/// How a failed row's note starts.
pub const FAILED: &str = "FAILED:";

/// Keys the engine is opened for (map sizes): the load, the sorted inserts, and room for
/// the 1-key commits of a fast non-durable engine.
pub fn size_hint(n: u64) -> usize {
    (n as usize).saturating_mul(2).saturating_add(2_000_000)
}

/// A random 24-byte key.
pub fn key(rng: &mut Rng) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    for chunk in k.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
    }
    k
}

/// The `i`-th key of the sorted inserts: 16 bytes of 0xFF, then `i` big-endian, so above
/// every random key (but with a chance of 2^-128) and ascending in `i`.
pub fn sorted_key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [0xFFu8; KEY_LEN];
    k[16..].copy_from_slice(&i.to_be_bytes());
    k
}

/// A 150-byte value, from a seed.
pub fn value(seed: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    workloads::fill_random(seed, &mut v);
    v
}

/// `count` distinct indices below `n`, in random order (a partial Fisher-Yates shuffle).
pub fn sample(n: usize, count: usize, rng: &mut Rng) -> Vec<usize> {
    let count = count.min(n);
    let mut idx: Vec<u32> = (0..n as u32).collect();
    for i in 0..count {
        let j = i + rng.below((n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(count);
    idx.into_iter().map(|i| i as usize).collect()
}

/// Failures by kind; the first of each kind is printed in full.
#[derive(Default)]
struct Errors {
    by_kind: BTreeMap<String, u64>,
    workload: &'static str,
    engine: &'static str,
}

impl Errors {
    fn new(workload: &'static str, kind: EngineKind) -> Errors {
        Errors {
            by_kind: BTreeMap::new(),
            workload,
            engine: kind.name(),
        }
    }

    fn count(&mut self, e: &anyhow::Error) -> String {
        let what = error_kind(e);
        let n = self.by_kind.entry(what.clone()).or_default();
        if *n == 0 {
            eprintln!(
                "      {} on {}: first {what} failure: {e:#}",
                self.workload, self.engine
            );
        }
        *n += 1;
        what
    }

    fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        kinds.join(", ")
    }
}

/// Consecutive failures of one transaction before a row gives up.
const RETRIES: u32 = 100;

/// Runs `op` on each `per`-item chunk of `items` in order, retrying a failed chunk (after a
/// pause) up to `RETRIES` times; every failure is counted. `done` counts the items of the
/// chunks that went through, also when it gives up.
fn in_chunks<T>(
    items: &[T],
    per: usize,
    errors: &mut Errors,
    done: &mut u64,
    mut op: impl FnMut(&[T]) -> Result<()>,
) -> Result<()> {
    for chunk in items.chunks(per.max(1)) {
        let mut failures = 0;
        loop {
            match op(chunk) {
                Ok(()) => break,
                Err(e) => {
                    errors.count(&e);
                    failures += 1;
                    if failures > RETRIES {
                        return Err(e.context(format!("gave up after {failures} failed tries")));
                    }
                    std::thread::sleep(Duration::from_millis(10 * failures.min(10) as u64));
                }
            }
        }
        *done += chunk.len() as u64;
    }
    Ok(())
}

/// What a row used: wall time, CPU, the bytes the process wrote (by /proc/self/io) and the
/// bytes the data directory's device wrote (no file-system sync around the row).
struct RowMeter {
    started: Instant,
    ticks: Ticks,
    written: Option<u64>,
    device: Option<u64>,
}

impl RowMeter {
    fn start() -> RowMeter {
        RowMeter {
            started: Instant::now(),
            ticks: Ticks::now(),
            written: meter::proc_write_bytes(),
            device: meter::device_written(),
        }
    }

    /// The cell of a row that did `ops` operations; the caller sets the figure.
    fn cell(&self, kind: EngineKind, workload: &str, ops: u64) -> Cell {
        let secs = self.started.elapsed().as_secs_f64();
        let (cpu_secs, other_cpu_cores) = Ticks::now().since(self.ticks, secs);
        let written = match (self.written, meter::proc_write_bytes()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let usage = Usage {
            secs,
            cpu_secs,
            bytes_written: written.unwrap_or(0),
            other_cpu_cores,
        };
        let mut c = workloads::cell(kind, workload, 1, &usage, ops);
        c.disk_write_bytes = written;
        c.device_write_bytes = match (self.device, meter::device_written()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        if written.is_none() {
            c.bytes_written_per_op = None;
        }
        c.write_amplification = None;
        c
    }
}

/// A rate: `n` over `secs`.
fn rate(n: u64, secs: f64) -> f64 {
    n as f64 / secs.max(1e-9)
}

fn mib(bytes: u64) -> String {
    crate::report::num(bytes as f64 / (1u64 << 20) as f64)
}

/// One thread runs `op` for `secs`; returns the successful calls, what they returned summed,
/// their latencies and the time taken. A failed call is counted by kind and the loop goes on.
fn timed(
    secs: f64,
    errors: &mut Errors,
    mut op: impl FnMut() -> Result<u64>,
) -> (u64, u64, Histogram, f64) {
    let (mut calls, mut units, mut lat) = (0u64, 0u64, Histogram::default());
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(secs);
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        match op() {
            Ok(n) => {
                lat.record(t0.elapsed().as_nanos() as u64);
                calls += 1;
                units += n;
            }
            Err(e) => {
                errors.count(&e);
            }
        }
    }
    (calls, units, lat, started.elapsed().as_secs_f64())
}

fn set_latency(c: &mut Cell, lat: &Histogram) {
    if lat.count() > 0 {
        let s = lat.stats();
        (c.p50_us, c.p99_us, c.p999_us) = (Some(s.p50_us), Some(s.p99_us), Some(s.p999_us));
    }
}

/// The state the rows share.
struct Kv<'a> {
    engine: &'a dyn Engine,
    kind: EngineKind,
    n: usize,
    secs: f64,
    pops: u64,
    /// The bulk-loaded keys, in load order (random).
    keys: Vec<[u8; KEY_LEN]>,
    /// Keys written and not removed, by the rows' own count: what `len()` must say.
    expected: u64,
    /// How the expected count was made up, for a mismatch's message.
    made_of: Vec<String>,
}

/// Runs the whole workload on `engine` (open on `dir`, empty): `n` keys loaded, `secs` for
/// each timed row, `pops` pops; hands each row's cell to `emit` as soon as it is done.
pub fn run(
    engine: &dyn Engine,
    kind: EngineKind,
    n: u64,
    secs: f64,
    pops: u64,
    dir: &Path,
    emit: &mut dyn FnMut(Cell),
) -> Result<()> {
    let n = usize::try_from(n)?;
    anyhow::ensure!(
        n >= 10,
        "the kv group needs at least 10 keys (--kv-keys {n})"
    );
    // The whole workload's device figure is taken between two file-system syncs (before the
    // first row and after the final settle), so it holds everything the engine wrote.
    let device_before = meter::synced_device_written();
    let whole = RowMeter::start();
    let mut rng = Rng::new(0x6B76);
    let keys: Vec<[u8; KEY_LEN]> = (0..n).map(|_| key(&mut rng)).collect();
    let mut kv = Kv {
        engine,
        kind,
        n,
        secs,
        pops,
        keys,
        expected: 0,
        made_of: Vec::new(),
    };
    type Row<'r> = fn(&mut Kv<'r>) -> Result<Cell>;
    let rows: [(&str, &str, Row); 10] = [
        ("kv-bulk-load", "keys/s", Kv::bulk_load),
        ("kv-overwrite", "keys/s", Kv::overwrite),
        ("kv-scan10-overlay", "scans/s", Kv::scan_overlay),
        ("kv-scan10", "scans/s", Kv::scan_settled),
        ("kv-get", "gets/s", Kv::get),
        ("kv-sorted-insert", "keys/s", Kv::sorted_insert),
        ("kv-commit-1", "txn/s", Kv::commit_1),
        ("kv-len", "ms", Kv::len),
        ("kv-pop", "pops/s", Kv::pop),
        ("kv-remove", "keys/s", Kv::remove),
    ];
    for (workload, unit, row) in rows {
        let m = RowMeter::start();
        let c = match row(&mut kv) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("      {workload} on {}: FAILED: {e:#}", kind.name());
                let mut c = m.cell(kind, workload, 0);
                c.unit = unit.into();
                c.higher_is_better = unit != "ms";
                c.note = format!("{FAILED} {e:#}");
                *c.errors.entry(error_kind(&e)).or_default() += 1;
                c
            }
        };
        emit(c);
    }

    // The whole workload: bytes written, and the store's size once settled.
    let t0 = Instant::now();
    let settled = engine.settle();
    let settle_secs = t0.elapsed().as_secs_f64();
    let mut c = whole.cell(kind, TOTAL, n as u64);
    c.value = c.disk_write_bytes.unwrap_or(0) as f64 / (1u64 << 20) as f64;
    c.unit = "MiB written".into();
    c.higher_is_better = false;
    c.cpu_secs_per_1000 = None;
    c.bytes_written_per_op = None;
    c.disk_bytes = Some(meter::disk_bytes(dir));
    c.device_write_bytes = match (device_before, meter::synced_device_written()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    c.note = match settled {
        Ok(()) => format!(
            "every row and the settles between them; {} MiB on disk after a final settle \
             ({} s)",
            mib(c.disk_bytes.unwrap_or(0)),
            crate::report::num(settle_secs)
        ),
        Err(e) => {
            *c.errors.entry(error_kind(&e)).or_default() += 1;
            format!("the final settle failed: {e:#}")
        }
    };
    emit(c);
    Ok(())
}

impl<'a> Kv<'a> {
    fn worker(&self) -> Result<Box<dyn Worker + 'a>> {
        self.engine.worker()
    }

    fn settle_timed(&self) -> Result<f64> {
        let t0 = Instant::now();
        self.engine.settle()?;
        Ok(t0.elapsed().as_secs_f64())
    }

    /// All N pairs in one transaction; if refused, in the largest pieces that commit.
    fn bulk_load(&mut self) -> Result<Cell> {
        const W: &str = "kv-bulk-load";
        let m = RowMeter::start();
        let mut errors = Errors::new(W, self.kind);
        let val = value(1);
        let pairs: Vec<(&[u8], &[u8])> = self.keys.iter().map(|k| (&k[..], &val[..])).collect();
        let n = pairs.len();
        let mut w = self.worker()?;
        // Refused attempts before the first commit: (piece size, error kind, seconds).
        let mut refused: Vec<(usize, String, f64)> = Vec::new();
        let mut piece = n;
        let mut loaded = 0usize;
        let mut txns = 0u64;
        let mut load_started: Option<Instant> = None;
        let mut failures = 0;
        while loaded < n {
            let end = (loaded + piece).min(n);
            let t0 = Instant::now();
            match w.write(&pairs[loaded..end]) {
                Ok(()) => {
                    load_started.get_or_insert(t0);
                    loaded = end;
                    txns += 1;
                    failures = 0;
                }
                Err(e) => {
                    let what = errors.count(&e);
                    if load_started.is_none() || what == "RecordTooLarge" {
                        // Not yet a piece that commits: halve.
                        refused.push((piece, what, t0.elapsed().as_secs_f64()));
                        if piece == 1 {
                            return Err(e.context("even a 1-pair transaction was refused"));
                        }
                        piece = piece.div_ceil(2);
                    } else {
                        // A piece of this size committed before: retry it after a pause.
                        failures += 1;
                        if failures > RETRIES {
                            return Err(e.context(format!("gave up after {failures} tries")));
                        }
                        std::thread::sleep(Duration::from_millis(10 * failures.min(10) as u64));
                    }
                }
            }
        }
        drop(w);
        let started = load_started.expect("loaded at least one piece");
        let committed = started.elapsed().as_secs_f64();
        let settle = self.settle_timed()?;
        self.expected += n as u64;
        self.made_of.push(format!("{n} loaded"));

        let mut c = m.cell(self.kind, W, n as u64);
        let secs = committed + settle;
        c.value = rate(n as u64, secs);
        c.unit = "keys/s".into();
        c.secs = secs;
        c.errors = errors.by_kind.clone();
        let figures = format!(
            "commit alone {} keys/s ({} s), then settle {} s",
            crate::report::num(rate(n as u64, committed)),
            crate::report::num(committed),
            crate::report::num(settle)
        );
        c.note = if refused.is_empty() {
            format!("one transaction of {n} pairs; {figures}")
        } else {
            let tried: Vec<String> = refused
                .iter()
                .map(|(p, what, s)| format!("{p} ({what}, {} s)", crate::report::num(*s)))
                .collect();
            let refused_secs: f64 = refused.iter().map(|r| r.2).sum();
            format!(
                "{SPLIT} one transaction of {n} pairs was refused ({}); refused tries: {}; \
                 loaded in {txns} transactions of up to {piece} pairs, the largest that \
                 committed (the rate is of that split load; the refused tries took {} s more); \
                 {figures}",
                refused[0].1,
                tried.join(", "),
                crate::report::num(refused_secs)
            )
        };
        let retried = errors.total() - refused.len() as u64;
        if retried > 0 {
            c.note += &format!("; {retried} failed commits retried");
        }
        Ok(c)
    }

    /// A random 40% of the loaded keys overwritten, 1,000 pairs a transaction, no settle.
    fn overwrite(&mut self) -> Result<Cell> {
        const W: &str = "kv-overwrite";
        let m = RowMeter::start();
        let mut errors = Errors::new(W, self.kind);
        let mut rng = Rng::new(0x0F);
        let chosen = sample(self.n, self.n * 2 / 5, &mut rng);
        let val = value(2);
        let pairs: Vec<(&[u8], &[u8])> = chosen
            .iter()
            .map(|&i| (&self.keys[i][..], &val[..]))
            .collect();
        let mut w = self.worker()?;
        let t0 = Instant::now();
        let mut done = 0;
        let result = in_chunks(&pairs, TXN_KEYS, &mut errors, &mut done, |chunk| {
            w.write(chunk)
        });
        let secs = t0.elapsed().as_secs_f64();
        result?;
        let mut c = m.cell(self.kind, W, done);
        c.value = rate(done, secs);
        c.unit = "keys/s".into();
        c.secs = secs;
        c.errors = errors.by_kind.clone();
        c.note = format!(
            "{done} keys in {} transactions, not settled",
            done.div_ceil(TXN_KEYS as u64)
        );
        if errors.total() > 0 {
            c.note += &format!("; failed commits retried: {}", errors.summary());
        }
        Ok(c)
    }

    /// 10-key range reads from random loaded keys for `secs`.
    fn scan(&self, workload: &'static str, note: String) -> Result<Cell> {
        let m = RowMeter::start();
        let mut errors = Errors::new(workload, self.kind);
        let mut w = self.worker()?;
        let mut rng = Rng::new(0x5C);
        let keys = &self.keys;
        let (scans, read, lat, secs) = timed(self.secs, &mut errors, || {
            let start = &keys[rng.below(keys.len() as u64) as usize];
            Ok(w.scan(start, SCAN_LEN)? as u64)
        });
        let mut c = m.cell(self.kind, workload, scans);
        c.value = rate(scans, secs);
        c.unit = "scans/s".into();
        c.secs = secs;
        set_latency(&mut c, &lat);
        c.errors = errors.by_kind.clone();
        c.note = format!(
            "{} keys read per scan on average; {note}",
            crate::report::num(read as f64 / scans.max(1) as f64)
        );
        if errors.total() > 0 {
            c.note += &format!("; failed: {}", errors.summary());
        }
        Ok(c)
    }

    fn scan_overlay(&mut self) -> Result<Cell> {
        let state = self
            .engine
            .note()
            .map(|s| format!("at the scan's start: {s}"))
            .unwrap_or_else(|| "right after the overwrite, not settled".into());
        self.scan("kv-scan10-overlay", state)
    }

    fn scan_settled(&mut self) -> Result<Cell> {
        let settle = self.settle_timed()?;
        let mut note = format!(
            "after a settle of {} s (not in the row's time)",
            crate::report::num(settle)
        );
        if let Some(s) = self.engine.note() {
            note += &format!("; at the scan's start: {s}");
        }
        self.scan("kv-scan10", note)
    }

    /// Point gets of random loaded keys for `secs`; each must be there with its 150 bytes.
    fn get(&mut self) -> Result<Cell> {
        const W: &str = "kv-get";
        let m = RowMeter::start();
        let mut errors = Errors::new(W, self.kind);
        let mut w = self.worker()?;
        let mut rng = Rng::new(0x6E);
        let keys = &self.keys;
        let (gets, _, lat, secs) = timed(self.secs, &mut errors, || {
            let k = &keys[rng.below(keys.len() as u64) as usize];
            match w.get(k)? {
                Some(VALUE_LEN) => Ok(1),
                other => Err(anyhow!("missing: key {k:02x?} read back as {other:?}")),
            }
        });
        let mut c = m.cell(self.kind, W, gets);
        c.value = rate(gets, secs);
        c.unit = "gets/s".into();
        c.secs = secs;
        set_latency(&mut c, &lat);
        c.errors = errors.by_kind.clone();
        if errors.total() > 0 {
            c.note = format!("failed gets: {}", errors.summary());
        }
        Ok(c)
    }

    /// N/5 keys above all others, ascending, 1,000 a transaction, then settle.
    fn sorted_insert(&mut self) -> Result<Cell> {
        const W: &str = "kv-sorted-insert";
        let m = RowMeter::start();
        let mut errors = Errors::new(W, self.kind);
        let count = (self.n / 5) as u64;
        let val = value(3);
        let keys: Vec<[u8; KEY_LEN]> = (0..count).map(sorted_key).collect();
        let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &val[..])).collect();
        let mut w = self.worker()?;
        let t0 = Instant::now();
        let mut done = 0;
        let result = in_chunks(&pairs, TXN_KEYS, &mut errors, &mut done, |chunk| {
            w.write(chunk)
        });
        self.expected += done;
        self.made_of.push(format!("{done} sorted inserts"));
        result?;
        drop(w);
        let committed = t0.elapsed().as_secs_f64();
        let settle = self.settle_timed()?;
        let secs = committed + settle;
        let mut c = m.cell(self.kind, W, done);
        c.value = rate(done, secs);
        c.unit = "keys/s".into();
        c.secs = secs;
        c.errors = errors.by_kind.clone();
        c.note = format!(
            "{done} keys; commits alone {} keys/s ({} s), then settle {} s",
            crate::report::num(rate(done, committed)),
            crate::report::num(committed),
            crate::report::num(settle)
        );
        if errors.total() > 0 {
            c.note += &format!("; failed commits retried: {}", errors.summary());
        }
        Ok(c)
    }

    /// 1-key write transactions of random new keys for `secs`.
    fn commit_1(&mut self) -> Result<Cell> {
        const W: &str = "kv-commit-1";
        let m = RowMeter::start();
        let mut errors = Errors::new(W, self.kind);
        let mut w = self.worker()?;
        let mut rng = Rng::new(0xC1);
        let val = value(4);
        let (commits, _, lat, secs) = timed(self.secs, &mut errors, || {
            let k = key(&mut rng);
            w.write(&[(&k[..], &val[..])])?;
            Ok(1)
        });
        self.expected += commits;
        self.made_of.push(format!("{commits} 1-key commits"));
        let mut c = m.cell(self.kind, W, commits);
        c.value = rate(commits, secs);
        c.unit = "txn/s".into();
        c.secs = secs;
        set_latency(&mut c, &lat);
        c.errors = errors.by_kind.clone();
        if errors.total() > 0 {
            c.note = format!("failed commits: {}", errors.summary());
        }
        Ok(c)
    }

    /// One `len()` after a settle, which must count every key written.
    fn len(&mut self) -> Result<Cell> {
        const W: &str = "kv-len";
        let settle = self.settle_timed()?;
        let m = RowMeter::start();
        let mut w = self.worker()?;
        let t0 = Instant::now();
        let got = w.len()?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let mut c = m.cell(self.kind, W, 1);
        c.value = ms;
        c.unit = "ms".into();
        c.higher_is_better = false;
        c.secs = ms / 1000.0;
        if got != self.expected {
            c.note = format!(
                "{FAILED} len() returned {got}, expected {} ({}); took {} ms",
                self.expected,
                self.made_of.join(" + "),
                crate::report::num(ms)
            );
            c.errors.insert("WrongCount".into(), 1);
        } else {
            c.note = format!(
                "{got} entries, as written; after a settle of {} s",
                crate::report::num(settle)
            );
        }
        Ok(c)
    }

    /// min(100,000, N/10) pops (or `--kv-pops`), first and last alternately, each its own
    /// transaction.
    fn pop(&mut self) -> Result<Cell> {
        const W: &str = "kv-pop";
        let m = RowMeter::start();
        let mut errors = Errors::new(W, self.kind);
        let pops = self.pops;
        let mut w = self.worker()?;
        let (mut done, mut lat) = (0u64, Histogram::default());
        // (pops, seconds) of the first-key and the last-key pops.
        let mut by_end = [(0u64, 0.0f64); 2];
        let t0 = Instant::now();
        for i in 0..pops {
            let last = i % 2 == 1;
            let t = Instant::now();
            match w.pop(last) {
                Ok(true) => {
                    let ns = t.elapsed().as_nanos() as u64;
                    lat.record(ns);
                    done += 1;
                    by_end[last as usize].0 += 1;
                    by_end[last as usize].1 += ns as f64 / 1e9;
                }
                Ok(false) => {
                    errors.count(&anyhow!("empty: pop found no entry"));
                }
                Err(e) => {
                    errors.count(&e);
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        self.expected = self.expected.saturating_sub(done);
        self.made_of.push(format!("- {done} pops"));
        let mut c = m.cell(self.kind, W, done);
        c.value = rate(done, secs);
        c.unit = "pops/s".into();
        c.secs = secs;
        set_latency(&mut c, &lat);
        c.errors = errors.by_kind.clone();
        c.note = format!(
            "{done} of {pops} pops; first key {} pops/s, last key {} pops/s",
            crate::report::num(rate(by_end[0].0, by_end[0].1)),
            crate::report::num(rate(by_end[1].0, by_end[1].1)),
        );
        if errors.total() > 0 {
            c.note += &format!("; failed: {}", errors.summary());
        }
        Ok(c)
    }

    /// A random 10% of the loaded keys removed, 1,000 a transaction (a key popped already
    /// is removed again: no error, nothing changes).
    fn remove(&mut self) -> Result<Cell> {
        const W: &str = "kv-remove";
        let m = RowMeter::start();
        let mut errors = Errors::new(W, self.kind);
        let mut rng = Rng::new(0x7E);
        let chosen = sample(self.n, self.n / 10, &mut rng);
        let keys: Vec<&[u8]> = chosen.iter().map(|&i| &self.keys[i][..]).collect();
        let mut w = self.worker()?;
        let t0 = Instant::now();
        let mut done = 0;
        let result = in_chunks(&keys, TXN_KEYS, &mut errors, &mut done, |chunk| {
            w.remove(chunk)
        });
        let secs = t0.elapsed().as_secs_f64();
        result?;
        if done != keys.len() as u64 {
            bail!("removed {done} of {} keys", keys.len());
        }
        let mut c = m.cell(self.kind, W, done);
        c.value = rate(done, secs);
        c.unit = "keys/s".into();
        c.secs = secs;
        c.errors = errors.by_kind.clone();
        c.note = format!(
            "{done} keys in {} transactions",
            done.div_ceil(TXN_KEYS as u64)
        );
        if errors.total() > 0 {
            c.note += &format!("; failed commits retried: {}", errors.summary());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        let mut rng = Rng::new(1);
        let (a, b) = (key(&mut rng), key(&mut rng));
        assert_ne!(a, b);
        assert_eq!(value(7), value(7));
        assert_ne!(value(7), value(8));
        // Sorted keys ascend and sit above random ones.
        assert!(sorted_key(0) < sorted_key(1) && sorted_key(255) < sorted_key(256));
        assert!(a < sorted_key(0) && b < sorted_key(0));
        let s = sample(1000, 400, &mut rng);
        let mut d = s.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!((s.len(), d.len()), (400, 400));
        assert!(d.iter().all(|&i| i < 1000));
        assert_eq!(sample(5, 10, &mut rng).len(), 5);
    }

    /// The whole workload at a small size on walmdb and LMDB: every row, a count that checks
    /// out (`kv-len` fails its cell otherwise), nothing failed.
    #[test]
    fn runs_every_row() {
        for kind in [EngineKind::WalmdbNone, EngineKind::HeedNoSync] {
            runs_every_row_on(kind);
        }
    }

    fn runs_every_row_on(kind: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let engine = kind.open(dir.path(), size_hint(2000)).unwrap();
        let mut cells = Vec::new();
        run(
            engine.as_ref(),
            kind,
            2000,
            0.05,
            200,
            dir.path(),
            &mut |c| cells.push(c),
        )
        .unwrap();
        let names: Vec<&str> = cells.iter().map(|c| c.workload.as_str()).collect();
        let mut want: Vec<&str> = ROWS.iter().map(|r| r.0).collect();
        want.push(TOTAL);
        assert_eq!(names, want);
        for c in &cells {
            assert!(!c.note.starts_with(FAILED), "{}: {}", c.workload, c.note);
            assert!(c.errors.is_empty(), "{}: {:?}", c.workload, c.errors);
            assert!(c.value > 0.0, "{}", c.workload);
        }
        assert!(cells[0].note.starts_with("one transaction of 2000 pairs"));
        let pop = cells.iter().find(|c| c.workload == "kv-pop").unwrap();
        assert_eq!(pop.ops, 200);
        assert!(cells.iter().all(|c| c.disk_write_bytes.is_some()));
    }
}
