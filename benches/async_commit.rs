//! Async commits (`WriteTxn::commit_async`) against blocking commits run in
//! `tokio::task::spawn_blocking`, under the same tokio runtime: many concurrent tasks on 2
//! worker threads, each committing 1-key transactions in a loop. Reports commits/s, p50 and
//! p99 latency and the threads the runtime added to the process.
//!
//! ```text
//! cargo bench --bench async_commit                                 # 1,000 tasks, 10 s a run, 2 rounds
//! ASYNC_BENCH_TASKS=1000 ASYNC_BENCH_SECS=10 ASYNC_BENCH_ROUNDS=2 cargo bench --bench async_commit
//! cargo bench --bench async_commit -- --test                       # smoke test: 50 tasks, 0.5 s, 1 round
//! cargo test --benches                                             # the same smoke test
//! ```
//!
//! Modes, run alternately (async, blocking, async, blocking, ...), each run on a fresh
//! database in a temporary directory under `./target/bench-tmp` (the real disk):
//!
//! - `async`: a multi-thread runtime with `worker_threads(2)`; N tasks (`ASYNC_BENCH_TASKS`,
//!   default 1,000) each loop for D seconds (`ASYNC_BENCH_SECS`, default 10): begin a write
//!   transaction, put one key (16 bytes: the task's number and the iteration, so every key is
//!   new) with a 100-byte value, and `commit_async().await`.
//! - `blocking`: the same runtime (`worker_threads(2)`, tokio's default of 512 blocking
//!   threads) and the same N tasks, but each transaction (begin, put, `commit()`) runs in
//!   `spawn_blocking(..).await`, the database shared through an `Arc`.
//!
//! Latency is the whole transaction as its task sees it: from before `db.write()` (before
//! `spawn_blocking` in blocking mode, so it includes the wait for a blocking thread) until
//! the commit's answer. Threads: a std thread reads `Threads:` from `/proc/self/status`
//! every 5 ms while the runtime lives; "threads added" is its peak minus the count read just
//! before the runtime was built (the database's own threads and the sampler are in both).
//! Durability is the default (GroupCommit: one fsync per group). Every run must end with
//! zero errors; the program fails otherwise.
//!
//! Test mode (`--test`, or no `--bench` argument, as `cargo test --benches` runs it): 50
//! tasks for 0.5 s, one round of each mode; the environment variables are ignored.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use walmdb::{Config, Db, Error};

#[allow(dead_code)]
// this benchmark uses the generator, `value`, the directories, `latency` and `run_cmd`
mod common;
use common::{latency, value, Rng};

/// The table every commit writes.
const TABLE: &str = "bench";
/// LMDB map size: large enough that no run grows the map.
/// The map LMDB starts with (no growth in a 10 s run), and the most it may grow to (a
/// sustained run writes ~1 GiB a minute).
const MAP_SIZE: usize = 2 << 30;
const MAX_MAP_SIZE: usize = 48 << 30;
/// Runtime worker threads, both modes.
const WORKERS: usize = 2;
/// How often the sampler reads the process's thread count.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// Error messages kept (and printed) per run.
const KEEP_ERRORS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Async,
    Blocking,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Async => "async",
            Mode::Blocking => "blocking",
        }
    }
}

struct Options {
    tasks: usize,
    secs: f64,
    rounds: usize,
    test: bool,
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Options {
    fn from_env() -> Options {
        // cargo bench passes `--bench`; `cargo bench -- --test` adds `--test`; `cargo test
        // --benches` passes neither. Anything else (a filter) is ignored.
        let args: Vec<String> = std::env::args().skip(1).collect();
        let test = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
        if test {
            return Options {
                tasks: 50,
                secs: 0.5,
                rounds: 1,
                test,
            };
        }
        Options {
            tasks: env_parse::<usize>("ASYNC_BENCH_TASKS")
                .filter(|n| *n > 0)
                .unwrap_or(1000),
            secs: env_parse::<f64>("ASYNC_BENCH_SECS")
                .filter(|s| *s > 0.0)
                .unwrap_or(10.0),
            rounds: env_parse::<usize>("ASYNC_BENCH_ROUNDS")
                .filter(|n| *n > 0)
                .unwrap_or(2),
            test,
        }
    }
}

/// The process's thread count, from `/proc/self/status`.
fn process_threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A std thread recording the process's peak thread count until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    handle: thread::JoinHandle<()>,
}

impl Sampler {
    fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let handle = {
            let (stop, peak) = (stop.clone(), peak.clone());
            thread::Builder::new()
                .name("thread-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        peak.fetch_max(process_threads(), Ordering::Relaxed);
                        thread::sleep(SAMPLE_EVERY);
                    }
                })
                .expect("spawn the sampler")
        };
        Sampler { stop, peak, handle }
    }

    /// Clears the peak (from here on, only what follows counts).
    fn reset(&self) {
        self.peak.store(process_threads(), Ordering::Relaxed);
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler");
        self.peak.load(Ordering::Relaxed)
    }
}

/// What one task did.
#[derive(Default)]
struct TaskOut {
    commits: u64,
    errors: u64,
    messages: Vec<String>,
    /// Transaction latencies, nanoseconds.
    samples: Vec<u64>,
}

impl TaskOut {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.messages.len() < KEEP_ERRORS {
            self.messages.push(e.to_string());
        }
    }

    fn merge(&mut self, other: TaskOut) {
        self.commits += other.commits;
        self.errors += other.errors;
        let room = KEEP_ERRORS.saturating_sub(self.messages.len());
        self.messages.extend(other.messages.into_iter().take(room));
        self.samples.extend(other.samples);
    }
}

/// The key of `task`'s `i`-th commit: unique per task and iteration.
fn key(task: usize, i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(task as u64).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn put_and_commit(db: &Db, key: &[u8], value: &[u8]) -> Result<walmdb::Lsn, Error> {
    let mut txn = db.write()?;
    txn.put(TABLE, key, value)?;
    txn.commit()
}

async fn async_task(db: Arc<Db>, task: usize, deadline: Instant) -> TaskOut {
    let mut out = TaskOut::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (task as u64 + 1));
    let mut i = 0u64;
    while Instant::now() < deadline {
        let (k, v) = (key(task, i), value(&mut rng));
        i += 1;
        let t0 = Instant::now();
        let commit = db.write().and_then(|mut txn| {
            txn.put(TABLE, &k, &v)?;
            Ok(txn.commit_async())
        });
        let answer = match commit {
            Ok(fut) => fut.await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(_) => {
                out.samples.push(t0.elapsed().as_nanos() as u64);
                out.commits += 1;
            }
            Err(e) => {
                out.error(e);
                // An error answered at once must not keep this worker thread to itself.
                tokio::task::yield_now().await;
            }
        }
    }
    out
}

async fn blocking_task(db: Arc<Db>, task: usize, deadline: Instant) -> TaskOut {
    let mut out = TaskOut::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (task as u64 + 1));
    let mut i = 0u64;
    while Instant::now() < deadline {
        let (k, v) = (key(task, i), value(&mut rng));
        i += 1;
        let t0 = Instant::now();
        let db = db.clone();
        let answer = tokio::task::spawn_blocking(move || put_and_commit(&db, &k, &v)).await;
        match answer {
            Ok(Ok(_)) => {
                out.samples.push(t0.elapsed().as_nanos() as u64);
                out.commits += 1;
            }
            Ok(Err(e)) => out.error(e),
            Err(join) => out.error(format!("spawn_blocking: {join}")),
        }
    }
    out
}

struct Run {
    mode: Mode,
    tasks: usize,
    commits_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    peak_threads: usize,
    threads_added: usize,
    errors: u64,
    messages: Vec<String>,
    /// Commits/s in each twelfth of the run.
    window_rates: Vec<f64>,
}

fn run(root: &std::path::Path, mode: Mode, opts: &Options) -> Run {
    let dir = common::tempdir(root, "async-commit", mode.name());
    let cfg = Config::default()
        .map_size(MAP_SIZE)
        .max_map_size(MAX_MAP_SIZE)
        .table(TABLE);
    let db = Arc::new(Db::open_with(dir.path(), cfg).expect("open walmdb"));

    let sampler = Sampler::start();
    // Let the sampler take its first reading, then count what exists before the runtime.
    thread::sleep(4 * SAMPLE_EVERY);
    let before = process_threads();
    sampler.reset();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("build the runtime");
    let secs = opts.secs;
    let tasks = opts.tasks;
    let windows = Windows::start(db.clone(), Duration::from_secs_f64((secs / 12.0).max(0.1)));
    let (mut out, elapsed) = runtime.block_on({
        let db = db.clone();
        async move {
            let started = Instant::now();
            let deadline = started + Duration::from_secs_f64(secs);
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let db = db.clone();
                    match mode {
                        Mode::Async => tokio::spawn(async_task(db, t, deadline)),
                        Mode::Blocking => tokio::spawn(blocking_task(db, t, deadline)),
                    }
                })
                .collect();
            let mut all = TaskOut::default();
            for h in handles {
                match h.await {
                    Ok(out) => all.merge(out),
                    Err(join) => all.error(format!("task: {join}")),
                }
            }
            (all, started.elapsed())
        }
    });
    // Dropping the runtime waits for its blocking threads to finish.
    drop(runtime);
    let peak = sampler.finish();
    let window_rates = windows.finish();

    let db = Arc::into_inner(db).expect("every task let go of the database");
    db.close().expect("close walmdb");

    let lat = latency(&mut out.samples);
    Run {
        mode,
        tasks,
        commits_per_sec: out.commits as f64 / elapsed.as_secs_f64(),
        p50_us: lat.p50.as_secs_f64() * 1e6,
        p99_us: lat.p99.as_secs_f64() * 1e6,
        peak_threads: peak,
        threads_added: peak.saturating_sub(before),
        errors: out.errors,
        messages: out.messages,
        window_rates,
    }
}

/// The commit rate in windows of a run (the log's own count of commits), so a sustained run
/// shows whether the rate holds.
struct Windows {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<f64>>,
}

impl Windows {
    fn start(db: Arc<Db>, every: Duration) -> Windows {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut rates = Vec::new();
                let (mut last, mut at) = (db.stats().wal.commits, Instant::now());
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(every.min(Duration::from_millis(50)));
                    if at.elapsed() >= every {
                        let now = db.stats().wal.commits;
                        rates.push((now - last) as f64 / at.elapsed().as_secs_f64());
                        (last, at) = (now, Instant::now());
                    }
                }
                rates
            })
        };
        Windows { stop, handle }
    }

    fn finish(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the window sampler")
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

fn main() {
    let opts = Options::from_env();
    let root = common::bench_root();
    println!("# walmdb async commits vs spawn_blocking commits\n");
    println!(
        "- {} tasks, {} s a run, {} round(s) of each mode{}, {WORKERS} runtime worker threads; \
         directory {}",
        opts.tasks,
        opts.secs,
        opts.rounds,
        if opts.test { " (test mode)" } else { "" },
        root.display()
    );
    println!("- nproc {}", common::run_cmd("nproc", &[]));
    let df = common::run_cmd("df", &["-T", &root.to_string_lossy()]);
    println!("- df -T:\n\n```text\n{df}\n```\n");

    let mut runs = Vec::new();
    for round in 0..opts.rounds {
        for mode in [Mode::Async, Mode::Blocking] {
            let r = run(&root, mode, &opts);
            println!(
                "- round {} {}: {:.0} commits/s, p50 {:.0} µs, p99 {:.0} µs, peak {} threads \
                 (+{}), {} errors",
                round + 1,
                mode.name(),
                r.commits_per_sec,
                r.p50_us,
                r.p99_us,
                r.peak_threads,
                r.threads_added,
                r.errors
            );
            let windows: Vec<String> = r.window_rates.iter().map(|w| format!("{w:.0}")).collect();
            println!("  - commits/s by window: {}", windows.join(", "));
            for m in &r.messages {
                println!("  - error: {m}");
            }
            runs.push(r);
        }
    }

    println!();
    println!(
        "| mode | tasks | commits/s | p50 µs | p99 µs | peak threads (process) | threads added | \
         errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            r.mode.name(),
            r.tasks,
            r.commits_per_sec,
            r.p50_us,
            r.p99_us,
            r.peak_threads,
            r.threads_added,
            r.errors
        );
    }
    let rate = |m: Mode| {
        mean(
            runs.iter()
                .filter(|r| r.mode == m)
                .map(|r| r.commits_per_sec),
        )
    };
    let (a, b) = (rate(Mode::Async), rate(Mode::Blocking));
    println!(
        "\nasync/blocking throughput ratio (mean over {} round(s)): {:.2} ({a:.0} / {b:.0} \
         commits/s)",
        opts.rounds,
        a / b
    );

    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    assert_eq!(errors, 0, "{errors} commits failed; see the errors above");
    assert!(
        runs.iter().all(|r| r.commits_per_sec > 0.0),
        "a run committed nothing"
    );
}
