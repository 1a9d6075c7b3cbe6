//! The walmdb benchmark harness: walmdb against LMDB, redb, RocksDB and SQLite, the same
//! workloads on the same disk in one run, reported as ratios. See harness/README.md.
//!
//! The parent process plans the cells and runs each engine's share in a child process (a
//! fresh process per engine and task: no engine's background threads or memory disturb the
//! next, peak RSS is the child's own, and crashes are real `SIGKILL`s).

mod engine;
mod engines;
mod kv;
mod meter;
mod report;
mod results;
mod workloads;
mod ycsb;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use engine::EngineKind;
use results::Cell;

#[derive(Parser)]
#[command(
    name = "walmdb-harness",
    about = "walmdb against its peers, side by side"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark and write the report.
    Run(RunArgs),
    /// Re-render the report from a results.json.
    Report {
        /// results.json of an earlier run.
        #[arg(long)]
        from: PathBuf,
        /// Where to write the report.
        #[arg(long, default_value = "harness/out")]
        out: PathBuf,
    },
    /// Internal: one engine's share of the plan, in a child process.
    #[command(hide = true)]
    Child(ChildArgs),
}

#[derive(Args, Clone)]
struct RunArgs {
    /// About a minute: durable engines, fewer threads, short windows, small key spaces.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Everything at full size (default when neither is given is `--full`).
    #[arg(long)]
    full: bool,
    /// Only these engine configurations (default: every one this build has, except fjall,
    /// which only the `kv` group runs unless named here; the `kv` group's own default is
    /// walmdb-group, walmdb-none, heed-durable, heed-no-sync, redb-immediate, redb-none,
    /// fjall-sync, fjall-none).
    #[arg(long, value_enum, value_delimiter = ',')]
    engines: Vec<EngineKind>,
    /// Only these workload groups.
    #[arg(long, value_enum, value_delimiter = ',')]
    groups: Vec<Group>,
    /// Seconds a timed cell (default: 3, quick 0.5).
    #[arg(long)]
    secs: Option<f64>,
    /// MiB of log a recovery fill writes before SIGKILL, group `recovery` (default: 1024,
    /// quick 16).
    #[arg(long)]
    recovery_mib: Option<u64>,
    /// Seconds each sustained run lasts, group `sustain` (default: 120, quick 20).
    #[arg(long)]
    sustain_secs: Option<f64>,
    /// Seconds each window of a sustained run covers (default: 10, quick 5).
    #[arg(long)]
    sustain_window_secs: Option<f64>,
    /// Only these sustained workloads, group `sustain` (default: all of sustain-100key,
    /// sustain-1key, sustain-sorted).
    #[arg(long, value_delimiter = ',')]
    sustain_workloads: Vec<String>,
    /// Keys the `kv` group bulk-loads (default: 5,000,000, quick 200,000).
    #[arg(long)]
    kv_keys: Option<u64>,
    /// Seconds each timed row of the `kv` group runs (default: 10, quick 3).
    #[arg(long)]
    kv_secs: Option<f64>,
    /// Pops of the `kv` group's `kv-pop` row (default: min(100,000, kv-keys / 10)).
    #[arg(long)]
    kv_pops: Option<u64>,
    /// Where engines put their files (the disk being measured).
    #[arg(long, default_value = "harness/target/bench-data")]
    data: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "harness/out")]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Group {
    /// Durable 1-key transactions at 1, 4, 16, 64 threads.
    Commit,
    /// 1,000-key transactions.
    Bulk,
    /// YCSB A-F.
    Ycsb,
    /// Point gets and 1,000-key scans.
    Reads,
    /// Open after a crash, and after a clean close.
    Recovery,
    /// Sustained durable ingest, in windows: 100-key transactions on 4 threads, 1-key on 16,
    /// 1,000 ascending keys a transaction on 1 (not in the default groups: 3 x 2 minutes per
    /// engine; `--sustain-workloads` picks some).
    Sustain,
    /// The embedded-KV comparison: bulk load, scans, gets, sorted inserts, 1-key commits,
    /// len, pop, remove, with fjall as a peer (not in the default groups).
    Kv,
}

#[derive(Args, Clone)]
struct ChildArgs {
    #[arg(long, value_enum)]
    engine: EngineKind,
    #[arg(long, value_enum)]
    group: Group,
    #[arg(long)]
    secs: f64,
    /// Thread counts.
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Keys loaded (reads, YCSB, kv) or log bytes written (recovery fill).
    #[arg(long)]
    size: u64,
    #[arg(long)]
    dir: PathBuf,
    /// Recovery: fill, print FILLED and wait to be killed; without it, time the open.
    #[arg(long)]
    fill: bool,
    /// Recovery on walmdb: fill with the applier held back (nothing applied or checkpointed,
    /// so the whole fill is left to replay), not at the default configuration.
    #[arg(long)]
    held_back: bool,
    /// Sustain: seconds a window covers.
    #[arg(long, default_value_t = 10.0)]
    window: f64,
    /// Kv: pops of the `kv-pop` row (default: min(100,000, size / 10)).
    #[arg(long)]
    pops: Option<u64>,
    /// Sustain: the workloads to run (default: all).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
}

struct Plan {
    secs: f64,
    commit_threads: Vec<usize>,
    ycsb_threads: Vec<usize>,
    read_threads: Vec<usize>,
    ycsb_records: u64,
    read_keys: u64,
    recovery_bytes: u64,
    sustain_secs: f64,
    sustain_window_secs: f64,
    /// The sustained workloads to run (`workloads::SUSTAIN`'s, all by default).
    sustain_workloads: Vec<&'static str>,
    kv_keys: u64,
    kv_secs: f64,
}

/// Keys per second a sustained run sizes the LMDB maps for (walmdb may grow its map to 4x
/// that; an LMDB map is address space, not disk).
const SUSTAIN_SIZING_KEYS_PER_SEC: f64 = 1_000_000.0;

impl Plan {
    fn new(a: &RunArgs) -> Result<Plan> {
        let sustain_workloads = sustain_workloads(&a.sustain_workloads)?;
        Ok(if a.quick {
            Plan {
                secs: a.secs.unwrap_or(0.5),
                commit_threads: vec![1, 16],
                ycsb_threads: vec![1],
                read_threads: vec![1],
                ycsb_records: 20_000,
                read_keys: 100_000,
                recovery_bytes: a.recovery_mib.unwrap_or(16) << 20,
                sustain_secs: a.sustain_secs.unwrap_or(20.0),
                sustain_window_secs: a
                    .sustain_window_secs
                    .unwrap_or(a.sustain_secs.unwrap_or(20.0).min(5.0)),
                sustain_workloads: sustain_workloads.clone(),
                kv_keys: a.kv_keys.unwrap_or(200_000),
                kv_secs: a.kv_secs.unwrap_or(3.0),
            }
        } else {
            Plan {
                secs: a.secs.unwrap_or(3.0),
                commit_threads: vec![1, 4, 16, 64],
                ycsb_threads: vec![1, 4],
                read_threads: vec![1, 2],
                ycsb_records: 1_000_000,
                read_keys: 1_000_000,
                recovery_bytes: a.recovery_mib.unwrap_or(1024) << 20,
                sustain_secs: a.sustain_secs.unwrap_or(120.0),
                sustain_window_secs: a
                    .sustain_window_secs
                    .unwrap_or(a.sustain_secs.unwrap_or(120.0).min(10.0)),
                sustain_workloads,
                kv_keys: a.kv_keys.unwrap_or(5_000_000),
                kv_secs: a.kv_secs.unwrap_or(10.0),
            }
        })
    }
}

/// The sustained workloads `names` picks, in `workloads::SUSTAIN`'s order (all if none).
fn sustain_workloads(names: &[String]) -> Result<Vec<&'static str>> {
    let known: Vec<&'static str> = workloads::SUSTAIN.iter().map(|w| w.0).collect();
    if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
        bail!(
            "--sustain-workloads: no sustained workload {unknown:?} (there are {})",
            known.join(", ")
        );
    }
    Ok(known
        .into_iter()
        .filter(|w| names.is_empty() || names.iter().any(|n| n == w))
        .collect())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run(args) => run(args),
        Cmd::Report { from, out } => {
            let cells: Vec<Cell> = serde_json::from_str(
                &std::fs::read_to_string(&from).with_context(|| format!("{}", from.display()))?,
            )?;
            write_report(&cells, &out, "re-rendered")
        }
        Cmd::Child(args) => child(args),
    }
}

/// The `kv` group's engines when `--engines` does not name any.
const KV_ENGINES: [EngineKind; 8] = [
    EngineKind::WalmdbGroup,
    EngineKind::WalmdbNone,
    EngineKind::HeedDurable,
    EngineKind::HeedNoSync,
    EngineKind::RedbImmediate,
    EngineKind::RedbNone,
    EngineKind::FjallSync,
    EngineKind::FjallNone,
];

/// Which engines each group runs: writes on every configuration (durable and not, for
/// context); reads, YCSB and recovery on the durable ones (reads do not depend on it);
/// recovery and sustained ingest on one walmdb configuration, the default (group commit).
/// The `kv` group runs `KV_ENGINES` (those this build has), or every engine `--engines`
/// names (`explicit`); the other groups run fjall only when `--engines` names it.
fn engines_for(
    group: Group,
    chosen: &[EngineKind],
    explicit: bool,
    quick: bool,
) -> Vec<EngineKind> {
    if group == Group::Kv {
        return if explicit {
            chosen.to_vec()
        } else {
            KV_ENGINES.into_iter().filter(|k| k.available()).collect()
        };
    }
    chosen
        .iter()
        .copied()
        .filter(|k| explicit || !k.is_fjall())
        .filter(|k| match group {
            Group::Commit | Group::Bulk => !quick || k.durable() || *k == EngineKind::WalmdbNone,
            Group::Ycsb | Group::Reads | Group::Recovery | Group::Sustain => k.durable(),
            Group::Kv => unreachable!("returned above"),
        })
        .filter(|k| {
            !matches!(group, Group::Recovery | Group::Sustain) || *k != EngineKind::WalmdbEveryWrite
        })
        .collect()
}

fn run(args: RunArgs) -> Result<()> {
    let plan = Plan::new(&args)?;
    let chosen: Vec<EngineKind> = if args.engines.is_empty() {
        EngineKind::ALL
            .into_iter()
            .filter(|k| k.available())
            .collect()
    } else {
        args.engines.clone()
    };
    for k in &chosen {
        if !k.available() {
            bail!(
                "{} is not in this build (use harness/run.sh, which builds every peer)",
                k.name()
            );
        }
    }
    let groups = if args.groups.is_empty() {
        vec![
            Group::Commit,
            Group::Bulk,
            Group::Reads,
            Group::Ycsb,
            Group::Recovery,
        ]
    } else {
        args.groups.clone()
    };
    let (secs, window) = (plan.sustain_secs, plan.sustain_window_secs);
    let valid = secs.is_finite() && window.is_finite() && secs > 0.0 && window > 0.0;
    if groups.contains(&Group::Sustain) && !(valid && window <= secs) {
        bail!(
            "--sustain-secs ({secs}) and --sustain-window-secs ({window}) must be positive, \
             the window no longer than the run"
        );
    }
    if groups.contains(&Group::Kv)
        && (plan.kv_keys < 10 || !(plan.kv_secs.is_finite() && plan.kv_secs > 0.0))
    {
        bail!(
            "--kv-keys ({}) must be at least 10 and --kv-secs ({}) positive",
            plan.kv_keys,
            plan.kv_secs
        );
    }
    std::fs::create_dir_all(&args.data)?;
    std::fs::create_dir_all(&args.out)?;
    let mut jobs = Vec::new();
    for &g in &groups {
        for k in engines_for(g, &chosen, !args.engines.is_empty(), args.quick) {
            jobs.push((g, k));
        }
    }
    let started = Instant::now();
    let mut cells = Vec::new();
    for (i, &(group, kind)) in jobs.iter().enumerate() {
        let eta = if i == 0 {
            String::new()
        } else {
            let per = started.elapsed().as_secs_f64() / i as f64;
            format!(", ~{:.0} s left", per * (jobs.len() - i) as f64)
        };
        eprintln!(
            "[{}/{}] {:?} on {}{} ({:.0} s so far)",
            i + 1,
            jobs.len(),
            group,
            kind.name(),
            eta,
            started.elapsed().as_secs_f64()
        );
        match run_job(&args, &plan, group, kind) {
            Ok(mut got) => {
                for c in got.iter().filter(|c| c.window_end_secs.is_none()) {
                    eprintln!(
                        "    {} {} t{}: {:.1} {}",
                        c.workload, c.engine, c.threads, c.value, c.unit
                    );
                    let windows: Vec<String> = got
                        .iter()
                        .filter(|w| w.window_end_secs.is_some() && w.workload == c.workload)
                        .map(|w| report::num(w.value))
                        .collect();
                    if !windows.is_empty() {
                        eprintln!("      {} by window: {}", c.unit, windows.join(" "));
                    }
                }
                cells.append(&mut got);
            }
            Err(e) => eprintln!("    FAILED: {e:#}"),
        }
        // Each step keeps what is done so far.
        std::fs::write(
            args.out.join("results.json"),
            serde_json::to_string_pretty(&cells)?,
        )?;
    }
    let mode = if args.quick { "quick" } else { "full" };
    write_report(
        &cells,
        &args.out,
        &format!("{mode} run, {:.0} s", started.elapsed().as_secs_f64()),
    )?;
    eprintln!("report in {}", args.out.join("report.md").display());
    Ok(())
}

/// Runs one group on one engine in child processes; returns their cells.
fn run_job(args: &RunArgs, plan: &Plan, group: Group, kind: EngineKind) -> Result<Vec<Cell>> {
    let dir = args.data.join(format!(
        "{}-{}",
        format!("{group:?}").to_lowercase(),
        kind.name().replace(' ', "-")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (threads, size) = match group {
        Group::Commit => (plan.commit_threads.clone(), 0),
        Group::Bulk => (vec![1], 0),
        Group::Ycsb => (plan.ycsb_threads.clone(), plan.ycsb_records),
        Group::Reads => (plan.read_threads.clone(), plan.read_keys),
        Group::Recovery => (vec![1], plan.recovery_bytes),
        // The keys the store is sized for.
        Group::Sustain => (
            workloads::SUSTAIN
                .iter()
                .filter(|w| plan.sustain_workloads.contains(&w.0))
                .map(|w| w.1)
                .collect(),
            (plan.sustain_secs * SUSTAIN_SIZING_KEYS_PER_SEC).max(1e6) as u64,
        ),
        Group::Kv => (vec![1], plan.kv_keys),
    };
    let secs = match group {
        Group::Sustain => plan.sustain_secs,
        Group::Kv => plan.kv_secs,
        _ => plan.secs,
    };
    let child_cmd = |fill: bool, held_back: bool| -> Result<Command> {
        let mut cmd = Command::new(std::env::current_exe()?);
        // A child's error is its message; a backtrace per failure buries the progress lines.
        cmd.env("RUST_LIB_BACKTRACE", "0")
            .arg("child")
            .args(["--engine", &enum_name(kind)])
            .args(["--group", &format!("{group:?}").to_lowercase()])
            .args(["--secs", &secs.to_string()])
            .args(["--window", &plan.sustain_window_secs.to_string()])
            .args(["--size", &size.to_string()])
            .arg("--dir")
            .arg(&dir)
            .arg("--threads")
            .arg(
                threads
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        if fill {
            cmd.arg("--fill");
        }
        if held_back {
            cmd.arg("--held-back");
        }
        if group == Group::Sustain {
            cmd.args(["--workloads", &plan.sustain_workloads.join(",")]);
        }
        if let (Group::Kv, Some(pops)) = (group, args.kv_pops) {
            cmd.args(["--pops", &pops.to_string()]);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        Ok(cmd)
    };
    if group == Group::Recovery {
        // At the default configuration; walmdb also with its applier held back.
        let variants: &[bool] = if kind.is_walmdb() {
            &[false, true]
        } else {
            &[false]
        };
        let mut cells = Vec::new();
        for &held_back in variants {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            // Fill in one child and kill it with SIGKILL once it says so.
            let mut filler = child_cmd(true, held_back)?.spawn()?;
            let out = filler.stdout.take().context("child stdout")?;
            let mut filled = false;
            for line in BufReader::new(out).lines() {
                if line?.trim() == "FILLED" {
                    filled = true;
                    break;
                }
            }
            filler.kill()?;
            filler.wait()?;
            if !filled {
                bail!("the filling child ended without filling");
            }
            cells.extend(child_cells(child_cmd(false, held_back)?, group, kind)?);
        }
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(cells);
    }
    let cells = child_cells(child_cmd(false, false)?, group, kind)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(cells)
}

/// Runs a measuring child; returns its cells (those it finished, if it failed after some).
fn child_cells(mut cmd: Command, group: Group, kind: EngineKind) -> Result<Vec<Cell>> {
    let output = cmd.output()?;
    let cells = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("CELL "))
        .map(serde_json::from_str)
        .collect::<Result<Vec<Cell>, _>>()?;
    if !output.status.success() {
        let failed = format!(
            "child for {:?} on {} failed: {}",
            group,
            kind.name(),
            output.status
        );
        if cells.is_empty() {
            bail!(failed);
        }
        // A long group (sustain) keeps the cells its child finished before failing.
        eprintln!("    FAILED after {} cells: {failed}", cells.len());
    }
    Ok(cells)
}

fn enum_name(kind: EngineKind) -> String {
    use clap::ValueEnum;
    kind.to_possible_value()
        .expect("named")
        .get_name()
        .to_string()
}

fn emit(mut c: Cell, dir: &Path) {
    if c.disk_bytes.is_none() {
        c.disk_bytes = Some(meter::disk_bytes(dir));
    }
    println!(
        "CELL {}",
        serde_json::to_string(&c).expect("cell serializes")
    );
    let _ = std::io::stdout().flush();
}

fn child(a: ChildArgs) -> Result<()> {
    let kind = a.engine;
    let dir = &a.dir;
    meter::set_data_dir(dir);
    match a.group {
        Group::Commit | Group::Bulk => {
            let (workload, keys) = match a.group {
                Group::Commit => ("commit-1key", 1),
                _ => ("bulk-1000", 1000),
            };
            for &t in &a.threads {
                // A fresh directory per thread count, so each starts from the same state.
                let sub = dir.join(format!("t{t}"));
                std::fs::create_dir_all(&sub)?;
                let engine = kind.open(&sub, 1_000_000)?;
                meter::reset_peak_rss();
                let c = workloads::commits(engine.as_ref(), kind, workload, t, keys, a.secs)?;
                drop(engine);
                emit(c, &sub);
                let _ = std::fs::remove_dir_all(&sub);
            }
        }
        Group::Reads => {
            let engine = kind.open(dir, a.size as usize)?;
            let keys = workloads::load(engine.as_ref(), a.size as usize, 42)?;
            for scan_len in [0, 1000] {
                for &t in &a.threads {
                    let c = workloads::reads(engine.as_ref(), kind, &keys, t, scan_len, a.secs)?;
                    emit(c, dir);
                }
            }
        }
        Group::Ycsb => {
            let engine = kind.open(dir, a.size as usize)?;
            ycsb::load(engine.as_ref(), a.size, 2)?;
            // YCSB's recommended order: D and E insert, so they run last.
            let order = [
                ycsb::Workload::A,
                ycsb::Workload::B,
                ycsb::Workload::C,
                ycsb::Workload::F,
                ycsb::Workload::D,
                ycsb::Workload::E,
            ];
            for w in order {
                for &t in &a.threads {
                    meter::reset_peak_rss();
                    let m = meter::Meter::start();
                    let r = ycsb::run(engine.as_ref(), w, a.size, t, a.secs, 7)?;
                    let usage = m.stop();
                    let mut c = workloads::cell(kind, w.id(), t, &usage, r.ops);
                    c.value = r.ops_per_sec;
                    c.unit = "ops/s".into();
                    c.note = r.summary();
                    let (p50, p99, p999) = r.overall_percentiles();
                    (c.p50_us, c.p99_us, c.p999_us) = (Some(p50), Some(p99), Some(p999));
                    emit(c, dir);
                }
            }
        }
        Group::Recovery => {
            if a.fill {
                let keys = (a.size / (workloads::KEY_LEN + workloads::VALUE_LEN) as u64) as usize;
                let engine = if kind.is_walmdb() && a.held_back {
                    engines::walmdb::open_unapplied(dir, keys, a.size)?
                } else {
                    kind.open(dir, keys)?
                };
                workloads::fill(engine.as_ref(), a.size)?;
                println!("FILLED");
                std::io::stdout().flush()?;
                // Killed here, engine open, its background work in flight.
                loop {
                    std::thread::park();
                }
            }
            let keys = (a.size / (workloads::KEY_LEN + workloads::VALUE_LEN) as u64) as usize;
            let before = meter::disk_bytes(dir);
            let m = meter::Meter::start();
            let opened = Instant::now();
            let (crash_ms, engine) = workloads::open_time(kind, dir, keys)?;
            let usage = m.stop();
            // Background work after open (walmdb: the applier's catch-up and a checkpoint).
            engine.settle()?;
            let settled_ms = opened.elapsed().as_secs_f64() * 1000.0;
            let workload = if a.held_back {
                "recovery-crash-held-back"
            } else {
                "recovery-crash"
            };
            let mut c = workloads::cell(kind, workload, 1, &usage, 1);
            (c.value, c.unit, c.higher_is_better) = (crash_ms, "ms".into(), false);
            c.note = format!(
                "{} MiB written before SIGKILL{}; {} MiB on disk at open; settled \
                 (caught up) {:.0} ms after open began",
                a.size >> 20,
                if a.held_back {
                    " with the applier held back"
                } else {
                    ""
                },
                before >> 20,
                settled_ms
            );
            emit(c, dir);
            drop(engine);
            if a.held_back {
                return Ok(());
            }
            let m = meter::Meter::start();
            let (clean_ms, engine) = workloads::open_time(kind, dir, keys)?;
            let usage = m.stop();
            drop(engine);
            let mut c = workloads::cell(kind, "recovery-clean", 1, &usage, 1);
            (c.value, c.unit, c.higher_is_better) = (clean_ms, "ms".into(), false);
            c.note = "open after settle and a clean close".into();
            emit(c, dir);
        }
        Group::Sustain => {
            let chosen = sustain_workloads(&a.workloads)?;
            let sustained = workloads::SUSTAIN.into_iter();
            for (workload, threads, keys) in sustained.filter(|w| chosen.contains(&w.0)) {
                // A fresh directory per workload: each starts from an empty store.
                let sub = dir.join(workload);
                std::fs::create_dir_all(&sub)?;
                let engine = kind.open(&sub, a.size as usize)?;
                meter::reset_peak_rss();
                let mut cells = workloads::sustain(
                    engine.as_ref(),
                    kind,
                    workload,
                    threads,
                    keys,
                    a.secs,
                    a.window,
                    &sub,
                )?;
                let t0 = Instant::now();
                drop(engine);
                let close = t0.elapsed().as_secs_f64();
                let run = &mut cells[0];
                if !run.note.is_empty() {
                    run.note += "; ";
                }
                run.note += &format!(
                    "closed in {} s, then {} MiB on disk",
                    report::num(close),
                    report::num(meter::disk_bytes(&sub) as f64 / (1u64 << 20) as f64)
                );
                for c in cells {
                    emit(c, &sub);
                }
                let _ = std::fs::remove_dir_all(&sub);
            }
        }
        Group::Kv => {
            let engine = kind.open(dir, kv::size_hint(a.size))?;
            let pops = a.pops.unwrap_or(kv::MAX_POPS.min(a.size / 10));
            kv::run(engine.as_ref(), kind, a.size, a.secs, pops, dir, &mut |c| {
                emit(c, dir)
            })?;
            let t0 = Instant::now();
            drop(engine);
            eprintln!(
                "      kv on {}: closed in {} s",
                kind.name(),
                report::num(t0.elapsed().as_secs_f64())
            );
        }
    }
    Ok(())
}

fn write_report(cells: &[Cell], out: &Path, what: &str) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let mut md = String::new();
    md += &format!("# walmdb against its peers ({what})\n\n");
    md += &machine_lines();
    md += "\n## Targets\n\n";
    md += &report::targets_markdown(&report::targets(cells));
    md += "\n";
    // The sustained runs have their own section (and their windows are not cells to compare),
    // and so has the kv group.
    let (sustained, others): (Vec<Cell>, Vec<Cell>) =
        cells.iter().cloned().partition(report::is_sustain);
    let (kv_cells, others): (Vec<Cell>, Vec<Cell>) = others.into_iter().partition(report::is_kv);
    if !others.is_empty() || (sustained.is_empty() && kv_cells.is_empty()) {
        md += &report::markdown(&others, EngineKind::WalmdbGroup.name());
    }
    if !sustained.is_empty() {
        md += &report::sustain_markdown(&sustained, EngineKind::WalmdbGroup.name());
    }
    if !kv_cells.is_empty() {
        md += &report::kv_markdown(&kv_cells);
    }
    std::fs::write(out.join("report.md"), md)?;
    std::fs::write(out.join("results.csv"), report::csv(cells))?;
    std::fs::write(out.join("results.json"), report::json(cells))?;
    for w in ["commit-1key"] {
        report::plot_throughput(cells, w, &out.join(format!("{w}-throughput.svg")))?;
        let mut threads: Vec<usize> = cells
            .iter()
            .filter(|c| c.workload == w)
            .map(|c| c.threads)
            .collect();
        threads.sort_unstable();
        threads.dedup();
        for t in threads {
            report::plot_latency(cells, w, t, &out.join(format!("{w}-latency-t{t}.svg")))?;
        }
    }
    for w in report::sustain_workloads(&sustained) {
        report::plot_over_time(&sustained, &w, &out.join(report::over_time_file(&w)))?;
    }
    Ok(())
}

/// The machine the figures came from.
fn machine_lines() -> String {
    let cmd = |c: &str, args: &[&str]| {
        Command::new(c)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!(
        "- machine: {} CPUs ({}), {}\n- kernel: {}\n- data directory file system: {}\n",
        cmd("nproc", &[]),
        cpu,
        cmd(
            "sh",
            &["-c", "free -g | awk '/Mem:/ {print $2 \" GiB RAM\"}'"]
        ),
        cmd("uname", &["-r"]),
        cmd(
            "sh",
            &[
                "-c",
                "df -T harness/target 2>/dev/null | tail -1 | awk '{print $1, $2}'"
            ]
        ),
    )
}
