//! The workloads, each run in a child process on one engine configuration, producing a `Cell`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::engine::{Engine, EngineKind};
use crate::meter::{self, Meter, Usage};
use crate::results::Cell;

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
    let mut r = Rng::new(seed);
    for chunk in v.chunks_mut(8) {
        let b = r.next_u64().to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    v
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
