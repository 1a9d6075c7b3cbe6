//! The workloads, each run in a child process on one engine configuration, producing a `Cell`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::engine::{error_kind, Engine, EngineKind};
use crate::meter::{self, Meter, Usage};
use crate::results::Cell;
use crate::ycsb::Histogram;

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;
/// Unmeasured warm-up before a timed window.
const WARM_UP: Duration = Duration::from_millis(300);

/// splitmix64: seeded, fast, good enough for keys.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn key(&mut self) -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        k[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        k[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        k
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

pub fn value(seed: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    fill_random(seed, &mut v);
    v
}

/// Fills `bytes` with the random stream of `seed` (what `value` holds, at any length).
pub fn fill_random(seed: u64, bytes: &mut [u8]) {
    let mut r = Rng::new(seed);
    for chunk in bytes.chunks_mut(8) {
        let b = r.next_u64().to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// (p50, p99, p999) in microseconds of nanosecond samples.
pub fn percentiles(samples: &mut [u64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i] as f64 / 1000.0
    };
    (at(0.50), at(0.99), at(0.999))
}

/// A cell with the usage filled in; the caller sets the figure.
pub fn cell(kind: EngineKind, workload: &str, threads: usize, usage: &Usage, ops: u64) -> Cell {
    Cell {
        workload: workload.into(),
        engine: kind.name().into(),
        durable: kind.durable(),
        threads,
        value: 0.0,
        unit: String::new(),
        higher_is_better: true,
        p50_us: None,
        p99_us: None,
        p999_us: None,
        cpu_secs_per_1000: (ops > 0).then(|| usage.cpu_secs * 1000.0 / ops as f64),
        bytes_written_per_op: (ops > 0).then(|| usage.bytes_written as f64 / ops as f64),
        write_amplification: None,
        peak_rss_bytes: Some(meter::peak_rss_bytes()),
        disk_bytes: None,
        ops,
        secs: usage.secs,
        other_cpu_cores: Some(usage.other_cpu_cores),
        note: String::new(),
        window_end_secs: None,
        errors: BTreeMap::new(),
        disk_write_bytes: None,
        device_write_bytes: None,
    }
}

/// `threads` threads each run `op` in a loop for `secs` after a warm-up; returns the ops
/// counted, every counted op's latency (ns), the errors and the window's usage.
pub fn timed<'a, F>(threads: usize, secs: f64, op: F) -> (u64, Vec<u64>, u64, Usage)
where
    F: Fn(usize) -> Box<dyn FnMut() -> Result<u64> + 'a> + Sync,
{
    let measuring = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let errors = AtomicU64::new(0);
    let (results, usage) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (op, measuring, stop, errors) = (&op, &measuring, &stop, &errors);
                s.spawn(move || {
                    let mut f = op(t);
                    let (mut ops, mut lat) = (0u64, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let counting = measuring.load(Ordering::Relaxed);
                        let t0 = Instant::now();
                        match f() {
                            Ok(n) if counting => {
                                lat.push(t0.elapsed().as_nanos() as u64);
                                ops += n;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("first error: {e:#}");
                                }
                            }
                        }
                    }
                    (ops, lat)
                })
            })
            .collect();
        std::thread::sleep(WARM_UP);
        let m = Meter::start();
        measuring.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs_f64(secs));
        measuring.store(false, Ordering::Relaxed);
        let usage = m.stop_then(|| stop.store(true, Ordering::Relaxed));
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (results, usage)
    });
    let ops = results.iter().map(|r| r.0).sum();
    let lat = results.into_iter().flat_map(|r| r.1).collect();
    (ops, lat, errors.into_inner(), usage)
}

/// Durable (as configured) transactions of `keys` random pairs: commits/s (keys/s for bulk).
pub fn commits(
    engine: &dyn Engine,
    kind: EngineKind,
    workload: &str,
    threads: usize,
    keys: usize,
    secs: f64,
) -> Result<Cell> {
    let val = value(1);
    let (ops, mut lat, errors, usage) = timed(threads, secs, |t| {
        let mut w = engine.worker().expect("worker");
        let mut rng = Rng::new(t as u64 + 1);
        let mut keybuf: Vec<[u8; KEY_LEN]> = vec![[0; KEY_LEN]; keys];
        Box::new(move || {
            for k in keybuf.iter_mut() {
                *k = rng.key();
            }
            let pairs: Vec<(&[u8], &[u8])> = keybuf.iter().map(|k| (&k[..], &val[..])).collect();
            w.write(&pairs)?;
            Ok(keys as u64)
        })
    });
    let txns = lat.len() as u64;
    let (p50, p99, p999) = percentiles(&mut lat);
    let mut c = cell(kind, workload, threads, &usage, txns);
    c.value = ops as f64 / usage.secs;
    c.unit = if keys == 1 { "commits/s" } else { "keys/s" }.into();
    (c.p50_us, c.p99_us, c.p999_us) = (Some(p50), Some(p99), Some(p999));
    let payload = (keys * (KEY_LEN + VALUE_LEN)) as f64;
    c.write_amplification = c.bytes_written_per_op.map(|b| b / payload);
    if errors > 0 {
        c.note = format!("{errors} failed commits");
    }
    Ok(c)
}

/// Loads `n` random keys in 1,000-key transactions and settles; returns the keys.
pub fn load(engine: &dyn Engine, n: usize, seed: u64) -> Result<Vec<[u8; KEY_LEN]>> {
    let mut rng = Rng::new(seed);
    let keys: Vec<[u8; KEY_LEN]> = (0..n).map(|_| rng.key()).collect();
    let val = value(2);
    let mut w = engine.worker()?;
    for chunk in keys.chunks(1000) {
        let pairs: Vec<(&[u8], &[u8])> = chunk.iter().map(|k| (&k[..], &val[..])).collect();
        w.write(&pairs).context("load")?;
    }
    drop(w);
    engine.settle().context("settle after load")?;
    Ok(keys)
}

/// Random point gets of loaded keys (`scan_len` 0) or `scan_len`-key range scans from loaded
/// keys: ns per get or per key scanned, from the threads' own time.
pub fn reads(
    engine: &dyn Engine,
    kind: EngineKind,
    keys: &[[u8; KEY_LEN]],
    threads: usize,
    scan_len: usize,
    secs: f64,
) -> Result<Cell> {
    meter::reset_peak_rss();
    let (ops, mut lat, errors, usage) = timed(threads, secs, |t| {
        let mut w = engine.worker().expect("worker");
        let mut rng = Rng::new(1000 + t as u64);
        Box::new(move || {
            let key = &keys[rng.below(keys.len() as u64) as usize];
            if scan_len == 0 {
                anyhow::ensure!(w.get(key)?.is_some(), "a loaded key is missing");
                Ok(1)
            } else {
                Ok(w.scan(key, scan_len)? as u64)
            }
        })
    });
    let thread_ns: u64 = lat.iter().sum();
    let calls = lat.len() as u64;
    let (p50, p99, p999) = percentiles(&mut lat);
    let workload = if scan_len == 0 { "get" } else { "scan" };
    let mut c = cell(kind, workload, threads, &usage, calls);
    c.value = thread_ns as f64 / ops.max(1) as f64;
    c.unit = if scan_len == 0 { "ns/op" } else { "ns/key" }.into();
    c.higher_is_better = false;
    (c.p50_us, c.p99_us, c.p999_us) = (Some(p50), Some(p99), Some(p999));
    c.bytes_written_per_op = None;
    c.note = format!("{} keys loaded", keys.len());
    if errors > 0 {
        c.note += &format!("; {errors} errors");
    }
    Ok(c)
}

/// Writes about `bytes` of 1,000-key transactions; returns the keys' count.
pub fn fill(engine: &dyn Engine, bytes: u64) -> Result<u64> {
    let per_txn = (1000 * (KEY_LEN + VALUE_LEN)) as u64;
    let val = value(3);
    let mut rng = Rng::new(77);
    let mut w = engine.worker()?;
    let mut keybuf = vec![[0u8; KEY_LEN]; 1000];
    let mut written = 0;
    while written < bytes {
        for k in keybuf.iter_mut() {
            *k = rng.key();
        }
        let pairs: Vec<(&[u8], &[u8])> = keybuf.iter().map(|k| (&k[..], &val[..])).collect();
        w.write(&pairs)?;
        written += per_txn;
    }
    Ok(written / (KEY_LEN + VALUE_LEN) as u64)
}

/// Time to open an engine directory and read one key, milliseconds.
pub fn open_time(kind: EngineKind, dir: &Path, keys: usize) -> Result<(f64, Box<dyn Engine>)> {
    let t0 = Instant::now();
    let engine = kind.open(dir, keys)?;
    engine.worker()?.get(&[0u8; KEY_LEN])?;
    Ok((t0.elapsed().as_secs_f64() * 1000.0, engine))
}

/// The sustained workloads: (id, writer threads, keys per durable transaction). Random keys,
/// except `sustain-sorted`'s: ascending, each above every key before it (a sorted import).
pub const SUSTAIN: [(&str, usize, usize); 3] = [
    ("sustain-100key", 4, 100),
    ("sustain-1key", 16, 1),
    (SUSTAIN_SORTED, 1, 1000),
];

/// The sustained workload of ascending keys.
pub const SUSTAIN_SORTED: &str = "sustain-sorted";

/// The `seq`-th key of `sustain-sorted`: `seq` big-endian, then zeros (ascending with `seq`).
fn sorted_key(seq: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k
}

/// How many `window`-second windows cover `secs` (the last may be shorter).
pub fn window_count(secs: f64, window: f64) -> usize {
    ((secs / window) - 1e-9).ceil().max(1.0) as usize
}

/// What the writers saw in one window of a sustained run.
#[derive(Default)]
struct Window {
    /// The latency of each successful commit that completed in the window.
    lat: Histogram,
    /// Failed commits by kind.
    errors: BTreeMap<String, u64>,
}

impl Window {
    fn merge(&mut self, other: Window) {
        self.lat.merge(&other.lat);
        for (what, count) in other.errors {
            *self.errors.entry(what).or_default() += count;
        }
    }
}

/// A sustained run: `threads` writers commit transactions of `keys` random pairs (durable as
/// the engine is configured) into a growing store for `secs` seconds, from a cold start (no
/// warm-up: the first window is the first `window` seconds). A writer whose commit fails
/// records the failure's kind and goes on. A commit counts in the window it completes in;
/// one completing after `secs` does not count. Latencies go into the YCSB workloads'
/// histogram (1/64 resolution), so a long run does not grow the process.
///
/// Returns the whole-run cell (keys/s, latency percentiles of every successful commit,
/// failures by kind, CPU and bytes written over the run, the store's size at the end), then
/// a cell per window (its keys/s, latency percentiles, failures, CPU and the store's size at
/// its end).
#[allow(clippy::too_many_arguments)]
pub fn sustain(
    engine: &dyn Engine,
    kind: EngineKind,
    workload: &str,
    threads: usize,
    keys: usize,
    secs: f64,
    window: f64,
    dir: &Path,
) -> Result<Vec<Cell>> {
    anyhow::ensure!(
        secs > 0.0 && window > 0.0 && secs.is_finite() && window.is_finite(),
        "a sustained run needs a positive duration and window ({secs} s, {window} s)"
    );
    let n = window_count(secs, window);
    let window_bounds = |i: usize| (i as f64 * window, ((i + 1) as f64 * window).min(secs));
    let val = value(4);
    let ready = Barrier::new(threads + 1);
    let go = Barrier::new(threads + 1);
    let start_at: OnceLock<Instant> = OnceLock::new();
    let stop = AtomicBool::new(false);
    // Each writer adds what it saw in a window here when it moves on to the next.
    let windows: Vec<Mutex<Window>> = (0..n).map(|_| Mutex::default()).collect();
    // Progress only: keys committed, commits failed.
    let (committed, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let seen: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

    let (joined, usage, ticks, disk) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (ready, go, start_at, stop) = (&ready, &go, &start_at, &stop);
                let (windows, committed, failed, seen) = (&windows, &committed, &failed, &seen);
                let val = &val;
                s.spawn(move || -> Result<()> {
                    let worker = engine.worker();
                    ready.wait();
                    go.wait();
                    let mut w = worker?;
                    let start = *start_at.get().expect("set before go");
                    let mut rng = Rng::new(0x5057 + t as u64);
                    // Sorted keys: thread `t`'s from `t << 40` up.
                    let mut next_sorted = (t as u64) << 40;
                    let sorted = workload == SUSTAIN_SORTED;
                    let mut keybuf = vec![[0u8; KEY_LEN]; keys];
                    let hand_in = |i: usize, mine: &mut Window| {
                        let mine = std::mem::take(mine);
                        windows[i]
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .merge(mine);
                    };
                    let (mut current, mut mine) = (0, Window::default());
                    while !stop.load(Ordering::Relaxed) {
                        for k in keybuf.iter_mut() {
                            *k = if sorted {
                                next_sorted += 1;
                                sorted_key(next_sorted)
                            } else {
                                rng.key()
                            };
                        }
                        let pairs: Vec<(&[u8], &[u8])> =
                            keybuf.iter().map(|k| (&k[..], &val[..])).collect();
                        let t0 = Instant::now();
                        let result = w.write(&pairs);
                        let done = Instant::now();
                        let at = done.duration_since(start).as_secs_f64();
                        if at >= secs {
                            break;
                        }
                        let i = ((at / window) as usize).min(n - 1);
                        if i != current {
                            hand_in(current, &mut mine);
                            current = i;
                        }
                        match result {
                            Ok(()) => {
                                mine.lat.record(done.duration_since(t0).as_nanos() as u64);
                                committed.fetch_add(keys as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                let what = error_kind(&e);
                                failed.fetch_add(1, Ordering::Relaxed);
                                let first = seen
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(what.clone());
                                if first {
                                    eprintln!(
                                        "      {workload} on {}: first {what} failure at \
                                         {at:.1} s: {e:#}",
                                        kind.name()
                                    );
                                }
                                *mine.errors.entry(what).or_default() += 1;
                            }
                        }
                    }
                    hand_in(current, &mut mine);
                    Ok(())
                })
            })
            .collect();
        ready.wait();
        let meter = Meter::start();
        let mut ticks = vec![meter::Ticks::now()];
        let start = Instant::now();
        start_at.set(start).expect("set once");
        go.wait();
        let mut disk = Vec::with_capacity(n);
        let (mut keys_before, mut failed_before) = (0, 0);
        for i in 0..n {
            let (from, to) = window_bounds(i);
            let end = start + Duration::from_secs_f64(to);
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            ticks.push(meter::Ticks::now());
            disk.push(meter::disk_bytes(dir));
            let (k, f) = (
                committed.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
            );
            eprintln!(
                "      {workload} on {}: {to:.1} s, {:.0} keys/s, {} failed",
                kind.name(),
                (k - keys_before) as f64 / (to - from),
                f - failed_before
            );
            (keys_before, failed_before) = (k, f);
        }
        let usage = meter.stop_then(|| stop.store(true, Ordering::Relaxed));
        let joined: Vec<Result<()>> = handles
            .into_iter()
            .map(|h| h.join().expect("writer thread panicked"))
            .collect();
        (joined, usage, ticks, disk)
    });
    joined.into_iter().collect::<Result<Vec<()>>>()?;
    let windows: Vec<Window> = windows
        .into_iter()
        .map(|w| w.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();

    let payload = (keys * (KEY_LEN + VALUE_LEN)) as f64;
    let mut whole = Window::default();
    let mut cells = Vec::with_capacity(n + 1);
    for (i, w) in windows.into_iter().enumerate() {
        let (from, to) = window_bounds(i);
        let len = to - from;
        let commits = w.lat.count();
        let (cpu_secs, other_cpu_cores) = ticks[i + 1].since(ticks[i], len);
        let usage = Usage {
            secs: len,
            cpu_secs,
            bytes_written: 0,
            other_cpu_cores,
        };
        let mut c = cell(kind, workload, threads, &usage, commits);
        c.value = (commits * keys as u64) as f64 / len;
        c.unit = "keys/s".into();
        if commits > 0 {
            let l = w.lat.stats();
            (c.p50_us, c.p99_us, c.p999_us) = (Some(l.p50_us), Some(l.p99_us), Some(l.p999_us));
        }
        // Not read per window: bytes written need a file system sync, which would disturb the
        // run, and peak RSS is the run's.
        (c.bytes_written_per_op, c.peak_rss_bytes) = (None, None);
        c.disk_bytes = Some(disk[i]);
        c.window_end_secs = Some(to);
        c.errors = w.errors.clone();
        whole.merge(w);
        cells.push(c);
    }

    // The whole run, first.
    let commits = whole.lat.count();
    let mut c = cell(kind, workload, threads, &usage, commits);
    c.value = (commits * keys as u64) as f64 / secs;
    c.unit = "keys/s".into();
    c.secs = secs;
    if commits > 0 {
        let l = whole.lat.stats();
        (c.p50_us, c.p99_us, c.p999_us) = (Some(l.p50_us), Some(l.p99_us), Some(l.p999_us));
    }
    c.write_amplification = c.bytes_written_per_op.map(|b| b / payload);
    c.disk_bytes = disk.last().copied();
    c.errors = whole.errors;
    if !c.errors.is_empty() {
        let kinds: Vec<String> = c.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        c.note = format!("{} failed commits ({})", c.failed(), kinds.join(", "));
    }
    cells.insert(0, c);
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Worker;

    /// A fake engine that keeps every key written, in the order written; a flaky one also
    /// takes about a millisecond a write and fails every third of a worker's as walmdb's
    /// `ApplyBacklog` and every fifth as an I/O error.
    #[derive(Default)]
    struct Fake {
        flaky: bool,
        keys: Mutex<Vec<Vec<u8>>>,
    }

    impl Fake {
        fn flaky() -> Fake {
            Fake {
                flaky: true,
                ..Fake::default()
            }
        }
    }

    struct FakeWorker<'a> {
        engine: &'a Fake,
        writes: u64,
    }

    impl Engine for Fake {
        fn worker(&self) -> Result<Box<dyn Worker + '_>> {
            Ok(Box::new(FakeWorker {
                engine: self,
                writes: 0,
            }))
        }

        fn settle(&self) -> Result<()> {
            Ok(())
        }
    }

    impl Worker for FakeWorker<'_> {
        fn write(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
            assert!(pairs
                .iter()
                .all(|(k, v)| k.len() == KEY_LEN && v.len() == VALUE_LEN));
            let mut keys = self.engine.keys.lock().unwrap();
            keys.extend(pairs.iter().map(|(k, _)| k.to_vec()));
            drop(keys);
            if !self.engine.flaky {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
            self.writes += 1;
            if self.writes.is_multiple_of(3) {
                return Err(walmdb::Error::ApplyBacklog {
                    what: "unapplied bytes",
                    held: 2,
                    limit: 1,
                }
                .into());
            }
            if self.writes.is_multiple_of(5) {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull).into());
            }
            Ok(())
        }

        fn get(&mut self, _: &[u8]) -> Result<Option<usize>> {
            unimplemented!()
        }

        fn scan(&mut self, _: &[u8], _: usize) -> Result<usize> {
            unimplemented!()
        }

        fn read_modify_write(&mut self, _: &[u8], _: &[u8]) -> Result<()> {
            unimplemented!()
        }

        fn len(&mut self) -> Result<u64> {
            unimplemented!()
        }

        fn pop(&mut self, _: bool) -> Result<bool> {
            unimplemented!()
        }

        fn remove(&mut self, _: &[&[u8]]) -> Result<()> {
            unimplemented!()
        }
    }

    #[test]
    fn window_counts() {
        assert_eq!(window_count(120.0, 10.0), 12);
        assert_eq!(window_count(10.0, 3.0), 4);
        assert_eq!(window_count(0.6, 0.2), 3, "not 4 from rounding");
        assert_eq!(window_count(5.0, 10.0), 1);
    }

    /// `sustain-sorted` writes each key above every key before it; the random workloads do
    /// not.
    #[test]
    fn sustain_sorted_writes_ascending_keys() {
        let dir = tempfile::tempdir().unwrap();
        let kind = EngineKind::WalmdbGroup;
        let ascending = |keys: &[Vec<u8>]| keys.windows(2).all(|w| w[0] < w[1]);
        let sorted = Fake::default();
        sustain(&sorted, kind, SUSTAIN_SORTED, 1, 10, 0.05, 0.05, dir.path()).unwrap();
        let keys = sorted.keys.into_inner().unwrap();
        assert!(keys.len() >= 20, "{} keys", keys.len());
        assert!(ascending(&keys));
        let random = Fake::default();
        sustain(
            &random,
            kind,
            "sustain-100key",
            1,
            10,
            0.05,
            0.05,
            dir.path(),
        )
        .unwrap();
        let keys = random.keys.into_inner().unwrap();
        assert!(keys.len() >= 20 && !ascending(&keys));
    }

    /// Writers count failures by kind and keep going; the windows add up to the run.
    #[test]
    fn sustain_counts_windows_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data"), [0u8; 8192]).unwrap();
        let kind = EngineKind::WalmdbGroup;
        let cells = sustain(
            &Fake::flaky(),
            kind,
            "sustain-test",
            2,
            10,
            0.6,
            0.25,
            dir.path(),
        )
        .unwrap();
        assert_eq!(cells.len(), 4, "the run, then 3 windows");
        let (run, windows) = (&cells[0], &cells[1..]);
        assert_eq!(run.window_end_secs, None);
        let ends: Vec<f64> = windows.iter().map(|w| w.window_end_secs.unwrap()).collect();
        assert_eq!(ends, [0.25, 0.5, 0.6]);
        let lens: Vec<f64> = windows.iter().map(|w| w.secs).collect();
        assert!((lens[2] - 0.1).abs() < 1e-9, "{lens:?}");
        // About 1 ms a write on 2 threads for 0.6 s: hundreds of commits, a third failing.
        let backlog = run.errors["ApplyBacklog"];
        let io = run.errors["Io(StorageFull)"];
        assert!(backlog > 50 && io > 10, "{:?}", run.errors);
        assert!(run.ops > backlog, "writers went on after failures");
        assert_eq!(
            run.failed(),
            windows.iter().map(|w| w.failed()).sum::<u64>()
        );
        assert!(windows.iter().all(|w| w.failed() > 0 && w.ops > 0));
        assert!(
            run.note.contains("failed commits (ApplyBacklog"),
            "{}",
            run.note
        );
        // Keys: 10 a commit, the run's keys/s the windows' keys over the run.
        let keys: f64 = windows.iter().map(|w| w.value * w.secs).sum();
        assert!((run.value * 0.6 - keys).abs() < 1e-6);
        assert_eq!(run.ops * 10, keys.round() as u64);
        assert!(run.p50_us.unwrap() >= 1000.0 && run.p999_us >= run.p50_us);
        assert!(windows.iter().all(|w| w.disk_bytes == Some(8192)));
        assert_eq!(run.disk_bytes, Some(8192));
    }
}
