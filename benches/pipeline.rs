//! Throughput and latency of the commit pipeline against a raw fdatasync baseline, measured
//! in one run on one disk.
//!
//! ```text
//! cargo bench --bench pipeline               # full run: 3 s a cell
//! cargo bench --bench pipeline -- --quick    # 1 s a cell, fewer cells
//! WALMDB_BENCH_SECS=5 cargo bench --bench pipeline
//! WALMDB_BENCH_QUICK=1 cargo bench --bench pipeline
//! WALMDB_BENCH_FILTER=GroupCommit/64 cargo bench --bench pipeline   # only matching cells
//! ```
//!
//! Cells are named `level/threads` (`GroupCommit/64`, `None/1`, ...); the raw baseline is
//! `raw`, the interleaved 1-thread latency comparison `paired`.
//!
//! Everything runs in a temporary directory under `./target/bench-tmp` (the disk the build
//! is on, not `/tmp`, which may be tmpfs). Results and their interpretation:
//! `docs/benchmarks.md`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use walmdb::{Durability, Wal, WalConfig, WalStats};

mod common;
use common::{latency, txn, Latency, Overwriter, Rng, RAW_WRITE};

fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 100.0 {
        format!("{us:.0}")
    } else {
        format!("{us:.1}")
    }
}

// ---------------------------------------------------------------------------------------
// Raw baseline.

struct RawResult {
    /// CPU used by everything else on the machine, in cores.
    other_cpu: Option<f64>,
    name: &'static str,
    ops: u64,
    elapsed: Duration,
    lat: Latency,
}

/// 4 KiB overwrites at increasing offsets of a preallocated (zero-written, fsynced) file,
/// each followed by `fdatasync`.
fn raw_overwrite(root: &Path, secs: f64) -> RawResult {
    let dir = common::tempdir(root, "walmdb", "raw-overwrite");
    let mut raw = Overwriter::new(dir.path());
    raw_loop("overwrite preallocated 4 KiB + fdatasync", secs, |i| {
        raw.op(i)
    })
}

/// The 1-thread latency comparison with the disk's drift taken out: raw overwrites and
/// GroupCommit commits alternate in short slices (ABBA order) on the same disk, and each
/// side's samples are pooled. Returns (raw, GroupCommit) latencies.
fn paired_latency(root: &Path, secs: f64) -> (Latency, Latency) {
    let dir = common::tempdir(root, "walmdb", "paired");
    let mut raw = Overwriter::new(dir.path());
    let wal = Wal::open(dir.path().join("wal"), WalConfig::default()).expect("open the log");
    let mut rng = Rng(0x51ce);
    for _ in 0..50 {
        wal.commit(txn(&mut rng).encode()).expect("warm-up commit");
    }
    const ROUNDS: usize = 10;
    let slice = Duration::from_secs_f64(secs / ROUNDS as f64);
    let (mut raw_samples, mut wal_samples) = (Vec::new(), Vec::new());
    let mut i = 0u64;
    for round in 0..ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            let deadline = Instant::now() + slice;
            while Instant::now() < deadline {
                if side == 0 {
                    let t = Instant::now();
                    raw.op(i);
                    raw_samples.push(t.elapsed().as_nanos() as u64);
                    i += 1;
                } else {
                    let record = txn(&mut rng).encode();
                    let t = Instant::now();
                    wal.commit(record).expect("commit");
                    wal_samples.push(t.elapsed().as_nanos() as u64);
                }
            }
        }
    }
    wal.close().expect("close");
    (latency(&mut raw_samples), latency(&mut wal_samples))
}

/// 4 KiB appends to a growing file, each followed by `fdatasync` (which then also has to
/// make the new file size durable).
fn raw_append(root: &Path, secs: f64) -> RawResult {
    let dir = common::tempdir(root, "walmdb", "raw-append");
    let path = dir.path().join("append.dat");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create");
    file.sync_all().expect("fsync");
    File::open(dir.path())
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
    let mut buf = vec![0u8; RAW_WRITE];
    Rng(12).fill(&mut buf);
    raw_loop("append 4 KiB + fdatasync", secs, |i| {
        buf[0..8].copy_from_slice(&i.to_le_bytes());
        file.write_all_at(&buf, i * RAW_WRITE as u64)
            .expect("write");
        file.sync_data().expect("fdatasync");
    })
}

fn raw_loop(name: &'static str, secs: f64, mut op: impl FnMut(u64)) -> RawResult {
    // A short warm-up, not counted.
    let warm = Instant::now() + Duration::from_millis(200);
    let mut i = 0u64;
    while Instant::now() < warm {
        op(i);
        i += 1;
    }
    let mut samples = Vec::with_capacity(1 << 16);
    let process = PathBuf::from("/proc/self/stat");
    let (proc0, machine0) = (cpu_ticks(&process), machine_busy_ticks());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut ops = 0;
    loop {
        let t = Instant::now();
        if t >= deadline {
            break;
        }
        op(i);
        samples.push(t.elapsed().as_nanos() as u64);
        i += 1;
        ops += 1;
    }
    let elapsed = start.elapsed();
    let (proc1, machine1) = (cpu_ticks(&process), machine_busy_ticks());
    let cores = |a: Option<u64>, b: Option<u64>| {
        Some((b? - a?) as f64 / CLOCK_TICKS_PER_SEC / elapsed.as_secs_f64())
    };
    RawResult {
        name,
        ops,
        elapsed,
        lat: latency(&mut samples),
        other_cpu: cores(machine0, machine1)
            .zip(cores(proc0, proc1))
            .map(|(m, p)| (m - p).max(0.0)),
    }
}

// ---------------------------------------------------------------------------------------
// The pipeline.

struct Cell {
    level: String,
    threads: usize,
    /// Time `Wal::open` took on an empty directory: creating the first segment, which is
    /// also what every rotation does.
    open_time: Duration,
    commits: u64,
    elapsed: Duration,
    lat: Latency,
    stats: Delta,
    /// CPU time of the whole process over the window, in cores (2.0 = both cores busy).
    process_cpu: Option<f64>,
    /// CPU used by everything else on the machine over the window, in cores: interference.
    other_cpu: Option<f64>,
    /// CPU time of the flusher thread over the window, as a fraction of one core.
    flusher_cpu: Option<f64>,
}

impl Cell {
    fn per_sec(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64()
    }
}

/// The change of the log's counters over the measured window.
struct Delta {
    commits: u64,
    groups: u64,
    syncs: u64,
    sync_micros: u64,
    bytes_written: u64,
    record_bytes: u64,
    rotations: u64,
}

fn delta(a: &WalStats, b: &WalStats) -> Delta {
    Delta {
        commits: b.commits - a.commits,
        groups: b.groups - a.groups,
        syncs: b.syncs - a.syncs,
        sync_micros: b.sync_micros - a.sync_micros,
        bytes_written: b.bytes_written - a.bytes_written,
        record_bytes: b.record_bytes - a.record_bytes,
        rotations: b.rotations - a.rotations,
    }
}

/// Linux reports thread CPU times in clock ticks of `sysconf(_SC_CLK_TCK)`, 100 on every
/// mainstream architecture; assumed here to avoid a `libc` dependency.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// utime + stime, in clock ticks, from a `/proc/.../stat` file.
fn cpu_ticks(path: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name start with field 3 (state); utime and
    // stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy (not idle, not iowait) clock ticks of all CPUs, from `/proc/stat`: with the process's
/// own ticks it shows how much CPU something else on the machine used during a cell.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    Some(v.get(..8)?.iter().sum::<u64>() - v[3] - v[4])
}

/// The `/proc` stat file of the flusher thread (named `walmdb-flusher`).
fn flusher_stat_path() -> Option<PathBuf> {
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == "walmdb-flusher" {
            return Some(dir.join("stat"));
        }
    }
    None
}

fn level_name(d: Durability) -> &'static str {
    match d {
        Durability::None => "None",
        Durability::Interval(_) => "Interval(10ms)",
        Durability::EveryWrite => "EveryWrite",
        _ => "GroupCommit",
    }
}

fn pipeline_cell(root: &Path, label: String, cfg: WalConfig, threads: usize, secs: f64) -> Cell {
    let dir = common::tempdir(root, "walmdb", "pipeline");
    let opening = Instant::now();
    let wal = Arc::new(Wal::open(dir.path(), cfg).expect("open the log"));
    let open_time = opening.elapsed();
    // Warm-up: a few commits, not counted.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..50 {
        wal.commit(txn(&mut rng).encode()).expect("warm-up commit");
    }
    let before = wal.stats();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let window = Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let wal = wal.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ ((t as u64 + 1) << 32));
                let mut samples = Vec::with_capacity(1 << 14);
                barrier.wait();
                let deadline = Instant::now() + window;
                while Instant::now() < deadline {
                    let record = txn(&mut rng).encode();
                    let t0 = Instant::now();
                    wal.commit(record).expect("commit");
                    samples.push(t0.elapsed().as_nanos() as u64);
                }
                samples
            })
        })
        .collect();
    let flusher = flusher_stat_path();
    let cpu_at = |p: Option<&PathBuf>| p.and_then(|p| cpu_ticks(p));
    let process = PathBuf::from("/proc/self/stat");
    barrier.wait();
    let start = Instant::now();
    let (proc0, flusher0) = (cpu_at(Some(&process)), cpu_at(flusher.as_ref()));
    let machine0 = machine_busy_ticks();
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.join().expect("worker"));
    }
    let elapsed = start.elapsed();
    let (proc1, flusher1) = (cpu_at(Some(&process)), cpu_at(flusher.as_ref()));
    let machine1 = machine_busy_ticks();
    let share = |a: Option<u64>, b: Option<u64>| {
        Some((b? - a?) as f64 / CLOCK_TICKS_PER_SEC / elapsed.as_secs_f64())
    };
    let after = wal.stats();
    let commits = samples.len() as u64;
    let cell = Cell {
        level: label,
        threads,
        open_time,
        commits,
        elapsed,
        lat: latency(&mut samples),
        stats: delta(&before, &after),
        process_cpu: share(proc0, proc1),
        other_cpu: share(machine0, machine1)
            .zip(share(proc0, proc1))
            .map(|(m, p)| (m - p).max(0.0)),
        flusher_cpu: share(flusher0, flusher1),
    };
    assert_eq!(cell.stats.commits, commits, "the log counted every commit");
    match Arc::try_unwrap(wal) {
        Ok(wal) => wal.close().expect("close"),
        Err(_) => unreachable!("every worker has finished"),
    }
    cell
}

fn print_header() {
    println!(
        "| durability | threads | commits/s | p50 µs | p99 µs | p999 µs | max µs | syncs | \
         avg sync µs | groups | commits/group | commits/sync | bytes written / record bytes \
         | rotations | open ms | CPU cores | other CPU cores | flusher CPU % | flusher in sync % |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
}

fn print_row(c: &Cell) {
    let s = &c.stats;
    let per_sync = |x: f64| {
        if s.syncs > 0 {
            format!("{:.1}", x / s.syncs as f64)
        } else {
            "-".into()
        }
    };
    println!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {:.2} | {} | {:.0} \
         | {} | {} | {} | {:.0} |",
        c.level,
        c.threads,
        c.per_sec(),
        us(c.lat.p50),
        us(c.lat.p99),
        us(c.lat.p999),
        us(c.lat.max),
        s.syncs,
        per_sync(s.sync_micros as f64),
        s.groups,
        s.commits as f64 / s.groups.max(1) as f64,
        per_sync(s.commits as f64),
        s.bytes_written as f64 / s.record_bytes.max(1) as f64,
        s.rotations,
        c.open_time.as_secs_f64() * 1e3,
        c.process_cpu.map_or("?".into(), |x| format!("{x:.2}")),
        c.other_cpu.map_or("?".into(), |x| format!("{x:.2}")),
        c.flusher_cpu
            .map_or("?".into(), |x| format!("{:.0}", x * 100.0)),
        s.sync_micros as f64 / 1e4 / c.elapsed.as_secs_f64(),
    );
}

fn main() {
    let opts = common::Options::from_env();
    let root = common::bench_root();
    let thread_counts: &[usize] = if opts.quick {
        &[1, 64]
    } else {
        &[1, 4, 16, 64]
    };
    let levels = [
        Durability::group_commit(),
        Durability::EveryWrite,
        Durability::None,
        Durability::Interval(Duration::from_millis(10)),
    ];

    println!("# walmdb pipeline benchmark\n");
    println!(
        "- {} s a cell{}; directory {}",
        opts.secs,
        if opts.quick { " (quick)" } else { "" },
        root.display()
    );
    println!("- nproc {}", common::run_cmd("nproc", &[]));
    let df = common::run_cmd("df", &["-T", &root.to_string_lossy()]);
    println!("- df -T:\n\n```text\n{df}\n```\n");

    let started = Instant::now();
    let mut raw = Vec::new();
    if opts.wants("raw") {
        raw.push(raw_overwrite(&root, opts.secs));
        raw.push(raw_append(&root, opts.secs));
        println!("## Raw baseline (one thread)\n");
        println!("| operation | ops/s | p50 µs | p99 µs | p999 µs | max µs | other CPU cores |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in &raw {
            println!(
                "| {} | {:.0} | {} | {} | {} | {} | {} |",
                r.name,
                r.ops as f64 / r.elapsed.as_secs_f64(),
                us(r.lat.p50),
                us(r.lat.p99),
                us(r.lat.p999),
                us(r.lat.max),
                r.other_cpu.map_or("?".into(), |x| format!("{x:.2}")),
            );
        }
        println!();
    }

    let paired = opts.wants("paired").then(|| {
        let (raw, wal) = paired_latency(&root, opts.secs);
        println!(
            "## Interleaved 1-thread latency (raw overwrite vs GroupCommit, 10 ABBA rounds, \
             {} s each side)\n",
            opts.secs
        );
        println!("| operation | p50 µs | p99 µs | p999 µs | max µs |");
        println!("|---|---:|---:|---:|---:|");
        for (name, l) in [
            ("raw overwrite 4 KiB + fdatasync", &raw),
            ("GroupCommit commit, 1 thread", &wal),
        ] {
            println!(
                "| {name} | {} | {} | {} | {} |",
                us(l.p50),
                us(l.p99),
                us(l.p999),
                us(l.max)
            );
        }
        println!();
        (raw.p50, wal.p50)
    });

    let grid: Vec<(Durability, usize)> = levels
        .iter()
        .flat_map(|&level| thread_counts.iter().map(move |&threads| (level, threads)))
        .filter(|(level, threads)| opts.wants(&format!("{}/{threads}", level_name(*level))))
        .collect();
    if !grid.is_empty() {
        println!("## Pipeline (1-op txn, 16 B key, 100 B value; default WalConfig)\n");
        print_header();
    }
    let mut cells = Vec::new();
    for (level, threads) in grid {
        let cfg = WalConfig {
            durability: level,
            ..WalConfig::default()
        };
        let c = pipeline_cell(&root, level_name(level).into(), cfg, threads, opts.secs);
        print_row(&c);
        cells.push(c);
    }
    println!();

    if !opts.quick {
        // Variations that show where GroupCommit time goes at 64 threads.
        let variations = [
            (
                "GroupCommit, compression off",
                WalConfig {
                    compress_threshold: None,
                    ..WalConfig::default()
                },
            ),
            (
                "GroupCommit, 4 MiB segments",
                WalConfig {
                    segment_bytes: 4 << 20,
                    max_record_bytes: 1 << 20,
                    ..WalConfig::default()
                },
            ),
        ];
        let variations: Vec<_> = variations
            .into_iter()
            .filter(|(label, _)| opts.wants(&format!("{label}/64")))
            .collect();
        if !variations.is_empty() {
            println!("## GroupCommit variations (64 threads)\n");
            print_header();
        }
        for (label, cfg) in variations {
            let c = pipeline_cell(&root, label.into(), cfg, 64, opts.secs);
            print_row(&c);
            cells.push(c);
        }
        println!();
    }

    let find = |level: &str, threads: usize| {
        cells
            .iter()
            .find(|c| c.level == level && c.threads == threads)
    };
    println!("## Key ratios\n");
    let raw_p50 = raw.first().map(|r| r.lat.p50);
    if let (Some(gc1), Some(raw_p50)) = (find("GroupCommit", 1), raw_p50) {
        let r = gc1.lat.p50.as_secs_f64() / raw_p50.as_secs_f64();
        println!(
            "- GroupCommit 1-thread p50 / raw preallocated 4 KiB fdatasync p50 = {} µs / {} µs \
             = **{r:.2}** (target ≤ 1.2: {})",
            us(gc1.lat.p50),
            us(raw_p50),
            if r <= 1.2 { "met" } else { "NOT met" }
        );
    }
    if let Some((raw_p50, wal_p50)) = paired {
        let r = wal_p50.as_secs_f64() / raw_p50.as_secs_f64();
        println!(
            "- interleaved: GroupCommit 1-thread p50 / raw overwrite p50 = {} µs / {} µs \
             = **{r:.2}** (target ≤ 1.2: {})",
            us(wal_p50),
            us(raw_p50),
            if r <= 1.2 { "met" } else { "NOT met" }
        );
    }
    if let Some(gc64) = find("GroupCommit", 64) {
        let r = gc64.per_sec();
        println!(
            "- GroupCommit 64-thread commits/s = **{r:.0}** (target ≥ 100000: {})",
            if r >= 100_000.0 { "met" } else { "NOT met" }
        );
        if let Some(ew64) = find("EveryWrite", 64) {
            println!(
                "- GroupCommit / EveryWrite commits/s at 64 threads = {:.0} / {:.0} = **{:.1}x**",
                r,
                ew64.per_sec(),
                r / ew64.per_sec()
            );
        }
    }
    if let [overwrite, append] = &raw[..] {
        println!(
            "- raw append / raw overwrite p50 = {:.2}",
            append.lat.p50.as_secs_f64() / overwrite.lat.p50.as_secs_f64()
        );
    }
    println!("\ntotal run time {:.0} s", started.elapsed().as_secs_f64());
}
