//! YCSB core workloads A–F against any `Engine`, with YCSB's key choosers.
//!
//! What follows YCSB (core/src/main/java/site/ycsb/{generator,workloads/CoreWorkload}.java):
//!
//! - Records are numbered; a record's key is a scrambling hash of its number, so loaded keys
//!   are spread over the key space (YCSB's `buildKeyName` with hashed inserts).
//! - `ScrambledZipfian` is YCSB's `ScrambledZipfianGenerator`: a zipfian rank (constant 0.99)
//!   drawn by Gray et al.'s algorithm over YCSB's 10^10 items with their precomputed zeta
//!   (`ZETAN`), then `fnvhash64(rank) % records`, so the hot records are scattered and every
//!   record can be drawn.
//! - `Latest` is YCSB's `SkewedLatestGenerator`: `last - zipfian(last)`, where `last` is the
//!   highest record number below which every insert is acknowledged (YCSB's
//!   `AcknowledgedCounterGenerator`) and the zipfian's zeta grows incrementally with it.
//! - Scan lengths are uniform over 1..=100 (YCSB's `maxscanlength` 100, uniform).
//! - The operation mixes are those of workloads/workload[a-f].
//!
//! Where it differs: a run lasts a fixed time instead of a fixed operation count, so E's scan
//! starts are drawn over the loaded records only (YCSB widens the range by the inserts it
//! expects and redraws numbers above the acknowledged limit); there is no warm-up (the
//! caller's resource meter spans exactly the run); and a latency is kept in a log-linear
//! histogram of 1/64 relative resolution rather than as a sample, so a long run at many
//! threads does not grow the process's memory (peak RSS is part of every cell).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::engine::{Engine, Worker};

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;
/// YCSB's zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;
/// Keys per transaction while loading.
const LOAD_BATCH: u64 = 1000;
/// YCSB's `maxscanlength`.
const MAX_SCAN: u64 = 100;

// ---------------------------------------------------------------------------------------------
// Keys, values, randomness

/// splitmix64's output function: a bijection on u64 that scrambles its input.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64's increment.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The key of record `n`: two rounds of splitmix64 from `n`, big-endian. The first half is a
/// bijection of `n`, so distinct records always have distinct keys.
pub fn key(n: u64) -> [u8; KEY_LEN] {
    let a = mix64(n.wrapping_add(GAMMA));
    let b = mix64(a.wrapping_add(GAMMA));
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

/// The value loaded for record `n`: 100 pseudo-random (incompressible) bytes.
pub fn value(n: u64) -> [u8; VALUE_LEN] {
    let mut rng = Rng::new(n ^ 0x5EED_0F0A_1E5E_ED00);
    let mut v = [0u8; VALUE_LEN];
    rng.fill(&mut v);
    v
}

/// YCSB's `Utils.fnvhash64`: FNV-1a over the 8 little-end octets, then `Math.abs`.
pub fn fnvhash64(mut val: u64) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for _ in 0..8 {
        h ^= val & 0xff;
        h = h.wrapping_mul(1_099_511_628_211);
        val >>= 8;
    }
    (h as i64).unsigned_abs()
}

/// splitmix64: seeded, small, fast.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix64(seed ^ GAMMA))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix64(self.0)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + ((self.next_u64() as u128 * (hi - lo + 1) as u128) >> 64) as u64
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let b = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Distributions

/// YCSB's `ZipfianGenerator`: items `0..items`, item 0 the most popular, drawn by the
/// algorithm of Gray et al., "Quickly Generating Billion-Record Synthetic Databases"
/// (SIGMOD 1994), with zeta(n) precomputed and grown incrementally when `n` grows.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    zeta2theta: f64,
    eta: f64,
    /// The item count `zetan` was computed for.
    count_for_zeta: u64,
}

/// sum_{i=st}^{n-1} 1 / (i+1)^theta, added to `initial`: zeta(n) from zeta(st).
pub fn zeta(st: u64, n: u64, theta: f64, initial: f64) -> f64 {
    let mut sum = initial;
    for i in st..n {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

impl Zipfian {
    /// Items `0..items` with the zipfian constant `theta`; computes zeta(items) (O(items)).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        Zipfian::with_zetan(items, theta, zeta(0, items, theta, 0.0))
    }

    /// Items `0..items` with a precomputed zeta(items).
    pub fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        let items = items.max(1);
        let zeta2theta = zeta(0, 2, theta, 0.0);
        let mut z = Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            zeta2theta,
            eta: 0.0,
            count_for_zeta: items,
        };
        z.eta = z.eta_for(items);
        z
    }

    fn eta_for(&self, items: u64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2theta / self.zetan)
    }

    pub fn items(&self) -> u64 {
        self.items
    }

    /// A draw over the constructed item count.
    pub fn next(&mut self, rng: &mut Rng) -> u64 {
        self.next_of(rng, self.items)
    }

    /// A draw over `0..itemcount`. A larger count than before grows zeta incrementally, as
    /// YCSB does; a smaller one keeps the larger zeta (YCSB's default,
    /// `allowitemcountdecrease = false`). YCSB recomputes eta from the constructed item
    /// count here; this uses the current one, as the formula means.
    pub fn next_of(&mut self, rng: &mut Rng, itemcount: u64) -> u64 {
        let itemcount = itemcount.max(1);
        if itemcount > self.count_for_zeta {
            self.zetan = zeta(self.count_for_zeta, itemcount, self.theta, self.zetan);
            self.count_for_zeta = itemcount;
            self.eta = self.eta_for(itemcount);
        }
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(itemcount - 1);
        }
        let r = (itemcount as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(itemcount - 1)
    }
}

/// YCSB's `ScrambledZipfianGenerator`: a zipfian rank over 10^10 items (zeta precomputed by
/// YCSB as `ZETAN`), hashed with `fnvhash64` onto `0..records`.
#[derive(Clone, Debug)]
pub struct ScrambledZipfian {
    gen: Zipfian,
    records: u64,
}

impl ScrambledZipfian {
    /// YCSB's `ITEM_COUNT` (the value `ZETAN` was computed for).
    pub const ITEM_COUNT: u64 = 10_000_000_000;
    /// zeta(10^10, 0.99), YCSB's `ZETAN`.
    pub const ZETAN: f64 = 26.469_028_201_783_02;

    pub fn new(records: u64) -> ScrambledZipfian {
        // YCSB: new ZipfianGenerator(0, ITEM_COUNT, 0.99, ZETAN), i.e. ITEM_COUNT + 1 items.
        let gen = Zipfian::with_zetan(Self::ITEM_COUNT + 1, ZIPFIAN_CONSTANT, Self::ZETAN);
        ScrambledZipfian {
            gen,
            records: records.max(1),
        }
    }

    pub fn next(&mut self, rng: &mut Rng) -> u64 {
        fnvhash64(self.gen.next(rng)) % self.records
    }
}

/// YCSB's `SkewedLatestGenerator`: record `last - zipfian(last)`, favouring the newest.
#[derive(Clone, Debug)]
pub struct Latest {
    zipf: Zipfian,
}

impl Latest {
    /// `last` is the highest record number when the run starts (YCSB: `recordcount - 1`).
    pub fn new(last: u64) -> Latest {
        Latest {
            zipf: Zipfian::new(last.max(1), ZIPFIAN_CONSTANT),
        }
    }

    /// A record number in `1..=last` (`0` when `last` is 0), skewed towards `last`.
    pub fn next(&mut self, rng: &mut Rng, last: u64) -> u64 {
        last - self.zipf.next_of(rng, last).min(last)
    }
}

/// YCSB's `AcknowledgedCounterGenerator`: insert numbers are handed out in order and the
/// limit readers see advances only over numbers whose inserts have all completed.
struct Acknowledged {
    next: AtomicU64,
    limit: AtomicU64,
    done: Mutex<BTreeSet<u64>>,
}

impl Acknowledged {
    fn new(records: u64) -> Acknowledged {
        Acknowledged {
            next: AtomicU64::new(records),
            limit: AtomicU64::new(records.saturating_sub(1)),
            done: Mutex::new(BTreeSet::new()),
        }
    }

    fn take(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The highest record number such that it and every record below it are present.
    fn last(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    fn acknowledge(&self, n: u64) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.insert(n);
        let mut limit = self.limit.load(Ordering::Relaxed);
        while done.remove(&(limit + 1)) {
            limit += 1;
        }
        self.limit.store(limit, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Workload {
    A,
    B,
    C,
    D,
    E,
    F,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Read,
    Update,
    Insert,
    Scan,
    Rmw,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Read, Op::Update, Op::Insert, Op::Scan, Op::Rmw];

    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::Scan => "scan",
            Op::Rmw => "rmw",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a workload picks the record an operation reads, updates or scans from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyChooser {
    /// `ScrambledZipfian` over the loaded records (A, B, C, E, F).
    Zipfian,
    /// `Latest` over the acknowledged records (D).
    Latest,
}

impl Workload {
    pub fn all() -> [Workload; 6] {
        [
            Workload::A,
            Workload::B,
            Workload::C,
            Workload::D,
            Workload::E,
            Workload::F,
        ]
    }

    pub fn id(&self) -> &'static str {
        match self {
            Workload::A => "ycsb-a",
            Workload::B => "ycsb-b",
            Workload::C => "ycsb-c",
            Workload::D => "ycsb-d",
            Workload::E => "ycsb-e",
            Workload::F => "ycsb-f",
        }
    }

    /// The operation proportions (they sum to 1).
    pub fn mix(&self) -> &'static [(Op, f64)] {
        match self {
            Workload::A => &[(Op::Read, 0.5), (Op::Update, 0.5)],
            Workload::B => &[(Op::Read, 0.95), (Op::Update, 0.05)],
            Workload::C => &[(Op::Read, 1.0)],
            Workload::D => &[(Op::Read, 0.95), (Op::Insert, 0.05)],
            Workload::E => &[(Op::Scan, 0.95), (Op::Insert, 0.05)],
            Workload::F => &[(Op::Read, 0.5), (Op::Rmw, 0.5)],
        }
    }

    pub fn chooser(&self) -> KeyChooser {
        match self {
            Workload::D => KeyChooser::Latest,
            _ => KeyChooser::Zipfian,
        }
    }

    fn pick(&self, u: f64) -> Op {
        let mix = self.mix();
        let mut acc = 0.0;
        for &(op, p) in mix {
            acc += p;
            if u < acc {
                return op;
            }
        }
        mix[mix.len() - 1].0
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram

/// Values below this are counted exactly.
const EXACT: u64 = 128;
/// Buckets per power of two above `EXACT`: a bucket is at most 1/64 of its values wide.
const SUB_BITS: u32 = 6;
/// The highest power of two with its own buckets (2^43 ns is over 2 hours).
const MAX_EXP: u32 = 42;
const BUCKETS: usize = EXACT as usize + (((MAX_EXP - 7 + 1) as usize) << SUB_BITS);

/// Nanosecond latencies in log-linear buckets (HdrHistogram's layout, 1/64 resolution).
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < EXACT {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        if e > MAX_EXP {
            return BUCKETS - 1;
        }
        let sub = (v >> (e - SUB_BITS)) - (1 << SUB_BITS);
        EXACT as usize + (((e - 7) as usize) << SUB_BITS) + sub as usize
    }

    /// The midpoint of bucket `i`.
    fn value_of(i: usize) -> u64 {
        if i < EXACT as usize {
            return i as u64;
        }
        let j = i - EXACT as usize;
        let e = 7 + (j >> SUB_BITS) as u32;
        let sub = (j & ((1 << SUB_BITS) - 1)) as u64;
        let width = 1u64 << (e - SUB_BITS);
        (((1 << SUB_BITS) + sub) << (e - SUB_BITS)) + (width - 1) / 2
    }

    pub fn record(&mut self, ns: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
            self.min = u64::MAX;
        }
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The nearest-rank `q` quantile (0 < q <= 1) in nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value_of(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    pub fn stats(&self) -> OpStats {
        let us = |q| self.quantile(q) as f64 / 1000.0;
        OpStats {
            count: self.total,
            p50_us: us(0.50),
            p99_us: us(0.99),
            p999_us: us(0.999),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Results

/// One operation type's count and latency percentiles (microseconds; 0 when count is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct OpStats {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct YcsbResult {
    pub workload: Workload,
    pub threads: usize,
    /// Operations completed, every type.
    pub ops: u64,
    /// From the threads' start to the last thread's last operation.
    pub secs: f64,
    pub ops_per_sec: f64,
    pub read: OpStats,
    pub update: OpStats,
    pub insert: OpStats,
    pub scan: OpStats,
    pub rmw: OpStats,
    /// Every operation together.
    pub overall: OpStats,
    /// Reads that found no value: expected 0 (D reads stop at the acknowledged inserts).
    pub not_found: u64,
    /// Entries returned by all scans (E).
    pub scanned: u64,
}

impl YcsbResult {
    pub fn op(&self, op: Op) -> &OpStats {
        match op {
            Op::Read => &self.read,
            Op::Update => &self.update,
            Op::Insert => &self.insert,
            Op::Scan => &self.scan,
            Op::Rmw => &self.rmw,
        }
    }

    /// (p50, p99, p999) of every operation together, microseconds.
    pub fn overall_percentiles(&self) -> (f64, f64, f64) {
        (
            self.overall.p50_us,
            self.overall.p99_us,
            self.overall.p999_us,
        )
    }

    /// One line: each operation type's share and p50/p99/p999.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for op in Op::ALL {
            let s = self.op(op);
            if s.count == 0 {
                continue;
            }
            parts.push(format!(
                "{} {:.1}% p50/p99/p999 {}/{}/{} µs",
                op.name(),
                100.0 * s.count as f64 / self.ops.max(1) as f64,
                short(s.p50_us),
                short(s.p99_us),
                short(s.p999_us)
            ));
        }
        let mut line = parts.join("; ");
        if self.scanned > 0 {
            line += &format!(
                "; {:.1} entries per scan",
                self.scanned as f64 / self.scan.count.max(1) as f64
            );
        }
        if self.not_found > 0 {
            line += &format!("; {} reads found no value", self.not_found);
        }
        line
    }
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

// ---------------------------------------------------------------------------------------------
// Load and run

/// Inserts records `0..records` in 1,000-key transactions, the range split between `threads`
/// threads, then settles the engine.
pub fn load(engine: &dyn Engine, records: u64, threads: usize) -> Result<()> {
    let threads = threads.max(1) as u64;
    let per = records.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (lo, hi) = ((t * per).min(records), ((t + 1) * per).min(records));
                s.spawn(move || -> Result<()> {
                    let mut w = engine.worker()?;
                    let mut start = lo;
                    while start < hi {
                        let end = (start + LOAD_BATCH).min(hi);
                        let kv: Vec<([u8; KEY_LEN], [u8; VALUE_LEN])> =
                            (start..end).map(|n| (key(n), value(n))).collect();
                        let pairs: Vec<(&[u8], &[u8])> =
                            kv.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                        w.write(&pairs)
                            .with_context(|| format!("load records {start}..{end}"))?;
                        start = end;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("load thread panicked"))
    })?;
    engine.settle().context("settle after load")
}

/// One thread's tallies.
#[derive(Default)]
struct Tally {
    lat: [Histogram; 5],
    not_found: u64,
    scanned: u64,
}

/// The record chooser of one thread.
#[derive(Clone)]
enum Chooser {
    Scrambled(ScrambledZipfian),
    Latest(Latest),
}

impl Chooser {
    fn next(&mut self, rng: &mut Rng, acked: &Acknowledged) -> u64 {
        match self {
            Chooser::Scrambled(z) => z.next(rng),
            Chooser::Latest(l) => l.next(rng, acked.last()),
        }
    }
}

/// One thread's operations until `stop`; only the engine call is timed.
fn thread_loop(
    w: &mut dyn Worker,
    workload: Workload,
    mut rng: Rng,
    mut chooser: Chooser,
    acked: &Acknowledged,
    stop: &AtomicBool,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut val = [0u8; VALUE_LEN];
    while !stop.load(Ordering::Relaxed) {
        let op = workload.pick(rng.next_f64());
        let ns = match op {
            Op::Read => {
                let k = key(chooser.next(&mut rng, acked));
                let t0 = Instant::now();
                let found = w.get(&k)?;
                let ns = t0.elapsed().as_nanos() as u64;
                tally.not_found += found.is_none() as u64;
                ns
            }
            Op::Update => {
                let k = key(chooser.next(&mut rng, acked));
                rng.fill(&mut val);
                let t0 = Instant::now();
                w.write(&[(&k[..], &val[..])])?;
                t0.elapsed().as_nanos() as u64
            }
            Op::Insert => {
                let n = acked.take();
                let k = key(n);
                rng.fill(&mut val);
                let t0 = Instant::now();
                w.write(&[(&k[..], &val[..])])?;
                let ns = t0.elapsed().as_nanos() as u64;
                acked.acknowledge(n);
                ns
            }
            Op::Scan => {
                let k = key(chooser.next(&mut rng, acked));
                let len = rng.between(1, MAX_SCAN) as usize;
                let t0 = Instant::now();
                let got = w.scan(&k, len)?;
                let ns = t0.elapsed().as_nanos() as u64;
                tally.scanned += got as u64;
                ns
            }
            Op::Rmw => {
                let k = key(chooser.next(&mut rng, acked));
                rng.fill(&mut val);
                let t0 = Instant::now();
                w.read_modify_write(&k, &val)?;
                t0.elapsed().as_nanos() as u64
            }
        };
        tally.lat[op.index()].record(ns);
    }
    Ok(tally)
}

/// Runs `workload` on `threads` threads for `secs` seconds over `records` loaded records
/// (`load` first). Each thread has its own worker and its own generator, seeded from `seed`
/// and its index. Throughput is the operations completed over the time from the common start
/// to the last thread's last operation.
pub fn run(
    engine: &dyn Engine,
    workload: Workload,
    records: u64,
    threads: usize,
    secs: f64,
    seed: u64,
) -> Result<YcsbResult> {
    anyhow::ensure!(records > 0, "YCSB needs loaded records");
    let threads = threads.max(1);
    let acked = Acknowledged::new(records);
    // zeta over the loaded records is O(records): computed once, cloned per thread.
    let chooser = match workload.chooser() {
        KeyChooser::Zipfian => Chooser::Scrambled(ScrambledZipfian::new(records)),
        KeyChooser::Latest => Chooser::Latest(Latest::new(records - 1)),
    };
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);

    let (tallies, secs_taken) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (acked, stop, barrier) = (&acked, &stop, &barrier);
                let chooser = chooser.clone();
                let rng = Rng::new(seed.wrapping_mul(GAMMA).wrapping_add(t as u64));
                s.spawn(move || -> Result<Tally> {
                    let worker = engine.worker();
                    barrier.wait();
                    let r = worker
                        .and_then(|mut w| {
                            thread_loop(w.as_mut(), workload, rng, chooser, acked, stop)
                        })
                        .with_context(|| format!("{} thread {t}", workload.id()));
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs.max(0.0));
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
        stop.store(true, Ordering::Relaxed);
        let tallies: Vec<Result<Tally>> = handles
            .into_iter()
            .map(|h| h.join().expect("YCSB thread panicked"))
            .collect();
        (tallies, start.elapsed().as_secs_f64())
    });

    let mut lat: [Histogram; 5] = Default::default();
    let (mut not_found, mut scanned) = (0, 0);
    for tally in tallies {
        let tally = tally?;
        for (a, b) in lat.iter_mut().zip(&tally.lat) {
            a.merge(b);
        }
        not_found += tally.not_found;
        scanned += tally.scanned;
    }
    let mut overall = Histogram::default();
    for h in &lat {
        overall.merge(h);
    }
    let ops = overall.count();
    Ok(YcsbResult {
        workload,
        threads,
        ops,
        secs: secs_taken,
        ops_per_sec: ops as f64 / secs_taken,
        read: lat[Op::Read.index()].stats(),
        update: lat[Op::Update.index()].stats(),
        insert: lat[Op::Insert.index()].stats(),
        scan: lat[Op::Scan.index()].stats(),
        rmw: lat[Op::Rmw.index()].stats(),
        overall: overall.stats(),
        not_found,
        scanned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineKind;

    fn skew(counts: &[u64]) -> (u64, u64) {
        let mut sorted = counts.to_vec();
        sorted.sort_unstable();
        (sorted[sorted.len() - 1], sorted[sorted.len() / 2])
    }

    #[test]
    fn zipfian_in_range_and_skewed() {
        let items = 1000;
        let mut rng = Rng::new(1);
        let mut z = Zipfian::new(items, ZIPFIAN_CONSTANT);
        let mut counts = vec![0u64; items as usize];
        for _ in 0..100_000 {
            let v = z.next(&mut rng);
            assert!(v < items, "{v} out of range");
            counts[v as usize] += 1;
        }
        let (top, median) = skew(&counts);
        assert_eq!(counts[0], top, "item 0 is the most popular");
        assert!(top > 50 * median.max(1), "top {top} median {median}");
        // p(0) = 1 / zeta(1000) ≈ 0.134.
        let p0 = counts[0] as f64 / 100_000.0;
        assert!((0.12..0.15).contains(&p0), "p(0) = {p0}");
    }

    #[test]
    fn scrambled_zipfian_in_range_and_skewed() {
        let records = 10_000;
        let mut rng = Rng::new(2);
        let mut z = ScrambledZipfian::new(records);
        let mut counts = vec![0u64; records as usize];
        for _ in 0..100_000 {
            let v = z.next(&mut rng);
            assert!(v < records, "{v} out of range");
            counts[v as usize] += 1;
        }
        let (top, median) = skew(&counts);
        assert!(top > 50 * median.max(1), "top {top} median {median}");
        // The hottest record is not record 0: ranks are scattered.
        let hottest = counts.iter().position(|&c| c == top).unwrap() as u64;
        assert_eq!(hottest, fnvhash64(0) % records);
    }

    #[test]
    fn ycsb_zetan_is_zeta_of_its_item_count() {
        // zeta(10^10) = zeta(10^6) + the tail, by the midpoint rule (error far below 1e-6).
        let n0 = 1_000_000u64;
        let head = zeta(0, n0, ZIPFIAN_CONSTANT, 0.0);
        let s = 1.0 - ZIPFIAN_CONSTANT;
        let integral = |x: f64| x.powf(s) / s;
        let tail = integral(ScrambledZipfian::ITEM_COUNT as f64 + 0.5) - integral(n0 as f64 + 0.5);
        let z = head + tail;
        assert!((z - ScrambledZipfian::ZETAN).abs() < 1e-3, "{z}");
    }

    #[test]
    fn latest_favours_newest() {
        let mut rng = Rng::new(3);
        let mut l = Latest::new(9_999);
        let mut counts = vec![0u64; 10_001];
        for _ in 0..100_000 {
            let v = l.next(&mut rng, 9_999);
            assert!((1..=9_999).contains(&v), "{v}");
            counts[v as usize] += 1;
        }
        assert_eq!(counts.iter().max(), Some(&counts[9_999]));
        // The limit grows: draws follow it, and zeta grows incrementally.
        let mut hits_new = 0;
        for _ in 0..10_000 {
            let v = l.next(&mut rng, 10_000);
            assert!(v <= 10_000);
            hits_new += (v == 10_000) as u32;
        }
        assert!(hits_new > 1000, "{hits_new}");
    }

    #[test]
    fn keys_are_injective() {
        let mut keys: Vec<[u8; KEY_LEN]> = (0..100_000).map(key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 100_000);
        // Spread: record order says nothing about key order.
        let ascending = (0..100_000u64).filter(|&n| key(n) < key(n + 1)).count();
        assert!((45_000..55_000).contains(&ascending), "{ascending}");
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 1.0 / 64.0, "q {q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        let mut small = Histogram::default();
        small.record(7);
        small.record(90);
        assert_eq!(small.quantile(0.5), 7);
        assert_eq!(small.quantile(0.99), 90);
        for v in [0, 1, 127, 128, 129, 1 << 20, (1 << 20) + 12_345, u64::MAX] {
            let i = Histogram::index(v);
            assert!(i < BUCKETS);
            let m = Histogram::value_of(i);
            if v < (1 << 40) {
                assert!((m as f64 - v as f64).abs() <= v as f64 / 64.0, "{v} -> {m}");
            }
        }
    }

    fn run_one(w: Workload) -> YcsbResult {
        let dir = tempfile::tempdir().unwrap();
        let engine = EngineKind::HeedNoSync.open(dir.path(), 10_000).unwrap();
        load(engine.as_ref(), 10_000, 2).unwrap();
        let r = run(engine.as_ref(), w, 10_000, 2, 0.2, 7).unwrap();
        eprintln!("{}: {:.0} ops/s; {}", w.id(), r.ops_per_sec, r.summary());
        assert!(r.ops > 0, "{w:?}: no ops");
        assert!(r.secs >= 0.2 && r.ops_per_sec > 0.0);
        let sum: u64 = Op::ALL.iter().map(|&op| r.op(op).count).sum();
        assert_eq!(sum, r.ops);
        for op in Op::ALL {
            let in_mix = w.mix().iter().any(|&(o, _)| o == op);
            let s = r.op(op);
            if !in_mix {
                assert_eq!(s.count, 0, "{w:?} ran {op:?}: {}", r.summary());
            } else if s.count > 0 {
                assert!(s.p50_us > 0.0 && s.p50_us <= s.p99_us && s.p99_us <= s.p999_us);
            }
            // Every type in the mix shows up once there are enough operations.
            if in_mix && r.ops >= 2000 {
                assert!(s.count > 0, "{w:?} never ran {op:?}: {}", r.summary());
            }
        }
        for &(op, p) in w.mix() {
            if r.ops >= 2000 {
                let share = r.op(op).count as f64 / r.ops as f64;
                assert!((share - p).abs() < 0.05, "{w:?} {op:?} {share} vs {p}");
            }
        }
        r
    }

    #[test]
    fn load_writes_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let engine = EngineKind::HeedNoSync.open(dir.path(), 10_000).unwrap();
        load(engine.as_ref(), 10_001, 3).unwrap();
        let mut w = engine.worker().unwrap();
        for n in 0..10_001 {
            assert_eq!(w.get(&key(n)).unwrap(), Some(VALUE_LEN), "record {n}");
        }
        assert_eq!(w.get(&key(10_001)).unwrap(), None);
        assert_eq!(w.scan(&[0u8; KEY_LEN], 20_000).unwrap(), 10_001);
    }

    #[test]
    fn workload_a() {
        let r = run_one(Workload::A);
        assert_eq!(r.not_found, 0);
    }

    #[test]
    fn workload_b() {
        let r = run_one(Workload::B);
        assert_eq!(r.not_found, 0);
    }

    #[test]
    fn workload_c() {
        let r = run_one(Workload::C);
        assert_eq!(r.read.count, r.ops, "C only reads");
        assert_eq!(r.not_found, 0);
    }

    #[test]
    fn workload_d() {
        let r = run_one(Workload::D);
        assert_eq!(r.not_found, 0, "reads stay within acknowledged inserts");
        assert_eq!(r.read.count + r.insert.count, r.ops);
    }

    #[test]
    fn workload_e() {
        let r = run_one(Workload::E);
        assert!(r.scanned >= r.scan.count, "scans return entries");
        let per_scan = r.scanned as f64 / r.scan.count.max(1) as f64;
        if r.scan.count >= 1000 {
            assert!((40.0..61.0).contains(&per_scan), "{per_scan}");
        }
    }

    #[test]
    fn workload_f() {
        let r = run_one(Workload::F);
        assert_eq!(r.read.count + r.rmw.count, r.ops);
    }

    #[test]
    fn ids() {
        let ids: Vec<&str> = Workload::all().iter().map(|w| w.id()).collect();
        assert_eq!(
            ids,
            ["ycsb-a", "ycsb-b", "ycsb-c", "ycsb-d", "ycsb-e", "ycsb-f"]
        );
        for w in Workload::all() {
            let total: f64 = w.mix().iter().map(|m| m.1).sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
    }
}
