//! Operations on a `walmdb::Db`, checked against a `BTreeMap` model, under a drawn
//! configuration.
//!
//! The input first draws a configuration (`draw_config`): each setting is the target's usual
//! value three times in four, else one of a small menu holding the default, small valid
//! values, the exact documented bound and values past it (`Duration::MAX`, `u32::MAX`,
//! `usize::MAX`, 0). `Db::open_with_fs` must refuse it with `Error::InvalidConfig` exactly
//! when the target's mirror of `Config::validate` (`out_of_bounds`) says it is out of bounds;
//! a refused configuration ends the input.
//!
//! The database lives in a fresh temporary directory (under `/dev/shm` when it exists, so
//! LMDB's syncs cost nothing); its log is on a `SimFs`, so power loss can be simulated.
//! Each following byte picks an operation, the bytes after it its arguments: put, delete,
//! get and range inside a write transaction (forward and reverse, with savepoints), commit at
//! the configured or a drawn durability (in bounds or not), abort, reads in read
//! transactions, drop table, checkpoint, clean reopen, `simulate_crash` (a process crash)
//! and reopen, and power loss of the log and reopen.
//!
//! Properties:
//! * nothing panics and nothing waits long (`PROMPT`); only refusals the configuration
//!   explains (`allowed`: a value past `max_record_bytes`, too many tables, a full overlay,
//!   a timed-out transaction, ...) are errors, and a refused commit writes nothing;
//! * a commit at a level out of bounds gets `Error::InvalidConfig` (that commit only);
//! * a write transaction sees the committed state with its own writes over it;
//! * after each commit, a new read transaction sees exactly the model;
//! * after a clean reopen or a process crash, every acknowledged commit is there;
//! * after power loss, the state is the model as of some commit at or after the last one
//!   acknowledged at a durable level (or the last reopen): never a partial transaction,
//!   never a lost durable commit.

#![no_main]

mod alloc_limit;
mod bytes;
use bytes::Bytes;

use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use walmdb::{
    Config, CrashOptions, Db, Durability, Error, FsRef, Isolation, SimFs, WalConfig, WriteTxn,
};

const TABLES: [&str; 3] = ["a", "b", "c"];

/// A small key space with awkward neighbours: prefixes, zero bytes, 0xFF.
const KEYS: [&[u8]; 16] = [
    b"a",
    b"a\0",
    b"aa",
    b"ab",
    b"b",
    b"\xff",
    b"\xff\xff",
    b"\0",
    b"\0\0",
    b"k01",
    b"k02",
    b"k03",
    b"k04",
    b"k05",
    b"k06",
    b"k07",
];

/// At most this many operations and reopens per input keep an iteration cheap.
const MAX_OPS: usize = 96;
const MAX_REOPENS: usize = 4;

/// A commit, checkpoint or close taking longer than this is a hang (libFuzzer's `-timeout`
/// would catch it too; this names the call and the configuration).
const PROMPT: Duration = Duration::from_secs(10);

// The engine's bounds (`src/limits.rs`, `src/config.rs`), hard-coded: the crate does not
// export them.
/// Every duration setting is at most this (`limits::MAX_SETTING_DURATION`, 24 h).
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The shortest duration past it.
const PAST_MAX_DURATION: Duration = Duration::new(24 * 3600, 1);
/// `limits::MAX_READERS`.
const MAX_READERS: u32 = 1 << 16;
/// `limits::MAX_TABLES`.
const MAX_TABLES: u32 = 32_767;
/// `limits::MAX_QUEUE_CAPACITY`.
const MAX_QUEUE_CAPACITY: usize = 1 << 24;
/// `limits::MIN_SEGMENT_BYTES`.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// `limits::MAX_FRAME_BODY`: `segment_bytes` and `max_record_bytes` at most.
const MAX_FRAME_BODY: usize = 256 << 20;
/// `zstd::compression_level_range()` with the zstd 1.5 the engine links (this crate does not
/// depend on zstd).
const ZSTD_LEVELS: RangeInclusive<i32> = -131_072..=22;

/// An overlay this small fills within one input (`overlay_max_bytes`): commits then wait for
/// the applier to make room, and `Error::ApplyBacklog` is a refusal the target accepts.
const SMALL_OVERLAY: usize = 1 << 20;
/// A map this small may have to grow within one input (resizes wait for `resize_wait`).
const SMALL_MAP: usize = 8 << 20;

type Table = BTreeMap<Vec<u8>, Vec<u8>>;
type Contents = BTreeMap<&'static str, Table>;

/// `WALMDB_FUZZ_DEBUG=1`: print the configuration and each operation (to replay one input in
/// a unit test).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("WALMDB_FUZZ_DEBUG").is_some_and(|v| v == "1"))
}

/// `WALMDB_FUZZ_LONG_WAITS=1`: keep the accepted long waits `draw_config` and
/// `Bytes::level` otherwise shorten (to reproduce a stall they would cause).
fn long_waits() -> bool {
    static LONG: OnceLock<bool> = OnceLock::new();
    *LONG.get_or_init(|| std::env::var_os("WALMDB_FUZZ_LONG_WAITS").is_some_and(|v| v == "1"))
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if debug() {
            eprintln!($($arg)*);
        }
    };
}

impl Bytes<'_> {
    fn table(&mut self) -> &'static str {
        TABLES[usize::from(self.u8()) % TABLES.len()]
    }
    fn key(&mut self) -> &'static [u8] {
        KEYS[usize::from(self.u8()) % KEYS.len()]
    }
    fn value(&mut self, counter: u64) -> Vec<u8> {
        let len = usize::from(self.u8()) % 201;
        let seed = self.u8();
        (0..len)
            .map(|i| seed.wrapping_add(i as u8).wrapping_add(counter as u8))
            .collect()
    }
    fn bound(&mut self) -> Bound<&'static [u8]> {
        let b = self.u8();
        let key = KEYS[usize::from(b >> 2) % KEYS.len()];
        match b & 3 {
            0 | 3 => Bound::Unbounded,
            1 => Bound::Included(key),
            _ => Bound::Excluded(key),
        }
    }

    /// `menu[0]` (the target's usual value) three times in four, else any entry of `menu`:
    /// most inputs open, and the fuzzer finds the rest.
    fn pick<T: Copy>(&mut self, menu: &[T]) -> T {
        let b = self.u8();
        if b < 192 {
            menu[0]
        } else {
            menu[usize::from(b) % menu.len()]
        }
    }

    /// A duration setting: `usual`, or zero, 1 ms, the bound (24 h) or past it.
    fn duration(&mut self, usual: Duration) -> Duration {
        self.pick(&[
            usual,
            Duration::ZERO,
            Duration::from_millis(1),
            MAX_DURATION,
            PAST_MAX_DURATION,
            Duration::MAX,
        ])
    }

    /// A durability level with drawn parameters, in bounds or not.
    fn level(&mut self) -> Durability {
        match self.u8() % 4 {
            0 => {
                let max_wait = self.pick(&[
                    Duration::ZERO,
                    Duration::from_millis(1),
                    MAX_DURATION,
                    PAST_MAX_DURATION,
                    Duration::MAX,
                ]);
                let mut max_batch = self.pick(&[4096, 1, 2, usize::MAX, 0]);
                // A group waits up to `max_wait` for more commits, and this target commits
                // from one thread: every commit would wait the whole `max_wait` (24 h). An
                // accepted wait above 1 ms therefore comes with groups of one, which close
                // at once: the bound itself is still drawn and must not make anything wait.
                if max_wait > Duration::from_millis(1)
                    && max_wait <= MAX_DURATION
                    && max_batch > 1
                    && !long_waits()
                {
                    max_batch = 1;
                }
                Durability::GroupCommit {
                    max_wait,
                    max_batch,
                }
            }
            1 => Durability::Interval(self.pick(&[
                Duration::from_millis(1),
                Duration::ZERO,
                MAX_DURATION,
                PAST_MAX_DURATION,
                Duration::MAX,
            ])),
            2 => Durability::EveryWrite,
            _ => Durability::None,
        }
    }

    /// The level a commit asks for; `None`: `commit()`, at the configured level.
    fn commit_level(&mut self) -> Option<Durability> {
        match self.u8() % 8 {
            0 => Some(Durability::EveryWrite),
            1 => Some(Durability::group_commit()),
            2 => Some(Durability::Interval(Duration::from_millis(1))),
            3 => Some(Durability::None),
            4 | 5 => None,
            6 => Some(self.level()),
            // The bounds themselves and past them, often enough that every input meets one.
            _ => Some(match self.u8() % 7 {
                0 => Durability::GroupCommit {
                    max_wait: MAX_DURATION,
                    max_batch: 1, // a group of one waits for nobody (see `level`)
                },
                1 => Durability::Interval(MAX_DURATION),
                2 => Durability::GroupCommit {
                    max_wait: Duration::ZERO,
                    max_batch: 0,
                },
                3 => Durability::GroupCommit {
                    max_wait: PAST_MAX_DURATION,
                    max_batch: 4096,
                },
                4 => Durability::GroupCommit {
                    max_wait: Duration::MAX,
                    max_batch: usize::MAX,
                },
                5 => Durability::Interval(PAST_MAX_DURATION),
                _ => Durability::Interval(Duration::MAX),
            }),
        }
    }
}

/// Draws the configuration: each setting from a menu whose first entry is what the target
/// used before configurations were drawn (small segments and maps, a 2 ms apply interval,
/// no compression), then the default, small valid values, the exact bound (where cheap) and
/// values past it. Relative choices (`queue_max_bytes`, `overlay_max_bytes`,
/// `max_map_size`) follow the draws they depend on.
fn draw_config(b: &mut Bytes) -> Config {
    let d = Config::default();
    let w = WalConfig::default();
    // Neither the default (64 MiB) nor the bound (`MAX_FRAME_BODY`, 256 MiB) is drawn as an
    // accepted value: `SimFs` holds each preallocated segment in memory, twice (written and
    // durable), copies it at every sync and builds a power loss's image of it byte by byte,
    // so a 64 MiB segment costs about a second per reopen and two per power loss (the
    // fuzzer's throughput fell from ~240 to 13 inputs a second). The default
    // `max_record_bytes` (16 MiB) is therefore always past `segment_bytes / 2` here.
    let segment_bytes = b.pick(&[
        MIN_SEGMENT_BYTES,
        128 << 10,
        1 << 20,
        MIN_SEGMENT_BYTES - 1,
        MAX_FRAME_BODY as u64 + 1,
        u64::MAX,
        0,
    ]);
    let half_segment = usize::try_from(segment_bytes / 2).unwrap_or(usize::MAX);
    let max_record_bytes = b.pick(&[
        16 << 10,
        w.max_record_bytes,
        64,
        4096,
        half_segment,
        half_segment.saturating_add(1),
        MAX_FRAME_BODY + 1,
        usize::MAX,
        0,
    ]);
    let durability = if b.u8() < 192 {
        Durability::group_commit()
    } else {
        b.level()
    };
    // The bound (2^24) is not drawn: the queue allocates a slot per commit it may hold (GiBs
    // there). Values past it are refused before anything is allocated.
    let queue_capacity = b.pick(&[
        256,
        w.queue_capacity,
        1,
        2,
        MAX_QUEUE_CAPACITY + 1,
        usize::MAX,
        0,
    ]);
    let queue_max_bytes = b.pick(&[
        w.queue_max_bytes,
        max_record_bytes,
        max_record_bytes.saturating_sub(1),
        usize::MAX,
        0,
    ]);
    let backpressure_wait = b.duration(w.backpressure_wait);
    let group_max_bytes = b.pick(&[w.group_max_bytes, 1, 4096, usize::MAX, 0]);
    // Not a drawn setting of the list, but `compress_level` only matters with it.
    let compress_threshold = b.pick(&[None, w.compress_threshold, Some(64)]);
    let compress_level = b.pick(&[
        w.compress_level,
        0,
        3,
        *ZSTD_LEVELS.end(),
        *ZSTD_LEVELS.start(),
        *ZSTD_LEVELS.end() + 1,
        *ZSTD_LEVELS.start() - 1,
        i32::MAX,
        i32::MIN,
    ]);
    let wal = WalConfig {
        segment_bytes,
        max_record_bytes,
        durability,
        queue_capacity,
        queue_max_bytes,
        backpressure_wait,
        group_max_bytes,
        compress_threshold,
        compress_level,
        prepare_segments: false,
        ..w
    };

    // LMDB maps are virtual: 1 GiB is cheap, and the data of one input is tiny.
    let map_size = b.pick(&[8 << 20, d.map_size, 1, 1 << 20, 1 << 30, usize::MAX, 0]);
    let mut max_map_size = b.pick(&[
        d.max_map_size,
        usize::MAX,
        map_size.max(SMALL_MAP), // the bound itself when the map is not tiny
        map_size.saturating_sub(1),
        0,
    ]);
    if map_size == usize::MAX && max_map_size == usize::MAX {
        // An accepted 16 EiB map is no test of bounds, only of mmap.
        max_map_size = d.max_map_size;
    }
    let max_readers = b.pick(&[
        16,
        d.max_readers,
        1,
        2,
        MAX_READERS,
        MAX_READERS + 1,
        u32::MAX,
        0,
    ]);
    let max_tables = b.pick(&[
        8,
        d.max_tables,
        1,
        2,
        3,
        MAX_TABLES,
        MAX_TABLES + 1,
        u32::MAX,
        0,
    ]);
    let overlay_max_bytes = b.pick(&[
        d.overlay_max_bytes,
        max_record_bytes,
        max_record_bytes.saturating_sub(1),
        1 << 16,
        usize::MAX,
        0,
    ]);
    let backlog_wait = b.duration(d.backlog_wait);
    let apply_max_ops = b.pick(&[d.apply_max_ops, 1, 2, usize::MAX, 0]);
    let mut apply_interval = b.pick(&[
        Duration::from_millis(2),
        d.apply_interval,
        Duration::ZERO,
        MAX_DURATION,
        PAST_MAX_DURATION,
        Duration::MAX,
    ]);
    // checkpoint(), wait_applied() and close() cut the applier's gathering short, so a 24 h
    // `apply_interval` must not slow them. A commit waiting for room in a full overlay does
    // not (it waits up to `backlog_wait` for the applier, which gathers on): with an overlay
    // an input can fill, an accepted interval is at most 100 ms, so the waits stay short.
    if overlay_max_bytes < SMALL_OVERLAY
        && apply_interval > Duration::from_millis(100)
        && apply_interval <= MAX_DURATION
        && !long_waits()
    {
        apply_interval = Duration::from_millis(100);
    }
    let checkpoint_interval = b.duration(d.checkpoint_interval);
    // No bound (`validate` checks none; it is only compared with a transaction's age).
    let txn_timeout = b.pick(&[
        None,
        Some(Duration::ZERO),
        Some(Duration::from_secs(60)),
        Some(MAX_DURATION),
        Some(PAST_MAX_DURATION),
        Some(Duration::MAX),
    ]);
    let mut resize_wait = b.duration(d.resize_wait);
    // A resize waits up to `resize_wait` for open transactions while new ones wait for it:
    // this single thread, holding a write transaction's snapshot and beginning a read,
    // would wait it out each time. With a map small enough to grow within an input, an
    // accepted wait is at most 10 ms.
    if map_size < SMALL_MAP
        && resize_wait > Duration::from_millis(10)
        && resize_wait <= MAX_DURATION
        && !long_waits()
    {
        resize_wait = Duration::from_millis(10);
    }
    let update_attempts = b.pick(&[d.update_attempts, 1, u32::MAX, 0]);
    Config::default()
        .map_size(map_size)
        .max_map_size(max_map_size)
        .max_readers(max_readers)
        .max_tables(max_tables)
        .overlay_max_bytes(overlay_max_bytes)
        .backlog_wait(backlog_wait)
        .apply_max_ops(apply_max_ops)
        .apply_interval(apply_interval)
        .checkpoint_bytes(16 << 10)
        .checkpoint_interval(checkpoint_interval)
        .txn_timeout(txn_timeout)
        .resize_wait(resize_wait)
        .update_attempts(update_attempts)
        .wal(wal)
}

/// Why `level` is out of bounds (`Durability::validate`), if it is.
fn level_out_of_bounds(level: &Durability) -> Option<String> {
    match *level {
        Durability::GroupCommit { max_batch: 0, .. } => Some("GroupCommit max_batch 0".into()),
        Durability::GroupCommit { max_wait, .. } if max_wait > MAX_DURATION => {
            Some(format!("GroupCommit max_wait {max_wait:?}"))
        }
        Durability::Interval(d) if d > MAX_DURATION => Some(format!("Interval({d:?})")),
        _ => None,
    }
}

/// Every rule of `Config::validate` (and `WalConfig::validate`) that `cfg` breaks: the
/// target's own mirror of them.
fn out_of_bounds(cfg: &Config) -> Vec<String> {
    let w = &cfg.wal;
    let mut out = Vec::new();
    let mut rule = |broken: bool, what: String| {
        if broken {
            out.push(what);
        }
    };
    rule(
        w.segment_bytes < MIN_SEGMENT_BYTES || w.segment_bytes > MAX_FRAME_BODY as u64,
        format!("segment_bytes {}", w.segment_bytes),
    );
    rule(
        w.max_record_bytes == 0
            || w.max_record_bytes as u64 > w.segment_bytes / 2
            || w.max_record_bytes > MAX_FRAME_BODY,
        format!("max_record_bytes {}", w.max_record_bytes),
    );
    rule(w.group_max_bytes == 0, "group_max_bytes 0".into());
    rule(
        w.queue_capacity == 0 || w.queue_capacity > MAX_QUEUE_CAPACITY,
        format!("queue_capacity {}", w.queue_capacity),
    );
    rule(
        w.queue_max_bytes < w.max_record_bytes,
        format!("queue_max_bytes {}", w.queue_max_bytes),
    );
    if let Some(why) = level_out_of_bounds(&w.durability) {
        rule(true, format!("durability: {why}"));
    }
    rule(
        !ZSTD_LEVELS.contains(&w.compress_level),
        format!("compress_level {}", w.compress_level),
    );
    rule(
        cfg.map_size == 0 || cfg.max_map_size < cfg.map_size,
        format!(
            "map_size {} / max_map_size {}",
            cfg.map_size, cfg.max_map_size
        ),
    );
    rule(
        cfg.max_readers == 0 || cfg.max_readers > MAX_READERS,
        format!("max_readers {}", cfg.max_readers),
    );
    rule(
        cfg.max_tables == 0 || cfg.max_tables > MAX_TABLES,
        format!("max_tables {}", cfg.max_tables),
    );
    rule(cfg.apply_max_ops == 0, "apply_max_ops 0".into());
    for (field, value) in [
        ("backpressure_wait", w.backpressure_wait),
        ("backlog_wait", cfg.backlog_wait),
        ("apply_interval", cfg.apply_interval),
        ("checkpoint_interval", cfg.checkpoint_interval),
        ("resize_wait", cfg.resize_wait),
    ] {
        rule(value > MAX_DURATION, format!("{field} {value:?}"));
    }
    rule(
        cfg.overlay_max_bytes < w.max_record_bytes,
        format!("overlay_max_bytes {}", cfg.overlay_max_bytes),
    );
    rule(
        cfg.checkpoint_bytes == 0 || cfg.max_replay_bytes < cfg.checkpoint_bytes,
        format!("checkpoint_bytes {}", cfg.checkpoint_bytes),
    );
    rule(cfg.update_attempts == 0, "update_attempts 0".into());
    out
}

/// Whether `e` is a refusal that `cfg` explains: nothing was written and the engine goes on.
fn allowed(cfg: &Config, e: &Error) -> bool {
    match e {
        Error::TxnTimeout { age, limit } => cfg.txn_timeout == Some(*limit) && age > limit,
        Error::RecordTooLarge { size, max } => *max == cfg.wal.max_record_bytes && size > max,
        Error::TooManyTables { max_tables } => {
            *max_tables == cfg.max_tables && (*max_tables as usize) < TABLES.len()
        }
        Error::ApplyBacklog { what, limit, .. } => {
            cfg.overlay_max_bytes < SMALL_OVERLAY
                && *what == "unapplied bytes"
                && *limit == cfg.overlay_max_bytes as u64
        }
        // One committer: only the engine's own syncs share the queue with it.
        Error::Backpressure { .. } => cfg.wal.queue_capacity <= 2,
        // The target holds at most two LMDB readers: a write transaction's and a read's.
        Error::ReadersFull { max_readers } => *max_readers == cfg.max_readers && *max_readers < 2,
        _ => false,
    }
}

/// Panics unless `cfg` allows the refusal `e` of `what`; true when it ends the transaction
/// (a timed-out transaction fails every call from then on).
fn refused(cfg: &Config, e: &Error, what: &str) -> bool {
    assert!(
        allowed(cfg, e),
        "{what}: {e:?} is no refusal this configuration explains: {cfg:?}"
    );
    trace!("  refused: {e}");
    matches!(e, Error::TxnTimeout { .. })
}

/// Panics when `what`, begun at `started`, took longer than [`PROMPT`].
fn prompt(started: Instant, what: &str, cfg: &Config) {
    let took = started.elapsed();
    assert!(took < PROMPT, "{what} took {took:?} with {cfg:?}");
}

/// The entries of `t` inside the bounds (filtered by hand: `BTreeMap::range` panics on inverted
/// bounds, which the engine must answer with nothing).
fn model_range(
    t: &Table,
    (lo, hi): (Bound<&[u8]>, Bound<&[u8]>),
    reverse: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let inside = |k: &[u8]| {
        (match lo {
            Bound::Unbounded => true,
            Bound::Included(l) => k >= l,
            Bound::Excluded(l) => k > l,
        }) && (match hi {
            Bound::Unbounded => true,
            Bound::Included(h) => k <= h,
            Bound::Excluded(h) => k < h,
        })
    };
    let mut out: Vec<_> = t
        .iter()
        .filter(|(k, _)| inside(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if reverse {
        out.reverse();
    }
    out
}

fn collect<'a>(
    it: impl Iterator<Item = walmdb::Result<(&'a [u8], &'a [u8])>>,
) -> walmdb::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    it.map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect()
}

fn dump(db: &Db) -> walmdb::Result<Contents> {
    let r = db.read()?;
    let mut out = Contents::new();
    for t in TABLES {
        let entries: Table = collect(r.range(t, ..)?)?.into_iter().collect();
        if !entries.is_empty() {
            out.insert(t, entries);
        }
    }
    Ok(out)
}

fn normalized(mut c: Contents) -> Contents {
    c.retain(|_, t| !t.is_empty());
    c
}

/// What ends a run of operations on one open database.
enum End {
    Input,
    Close,
    ProcessCrash,
    PowerLoss(u64, CrashOptions),
}

/// The committed state and its history since the last point known durable.
struct Model {
    state: Contents,
    /// States after each commit since `history[0]`, which is known durable.
    history: Vec<Contents>,
    counter: u64,
    /// The state is unknown: after a power loss the database could not be read (every
    /// transaction timed out, `txn_timeout` zero). No comparisons until a reopen reads it.
    blind: bool,
}

impl Model {
    fn committed(&mut self, durable: bool) {
        self.state = normalized(std::mem::take(&mut self.state));
        if durable {
            self.history.clear();
        }
        self.history.push(self.state.clone());
    }

    /// Compares the database with the model, unless the model is blind or reading is a
    /// refusal `cfg` explains.
    fn check(&self, db: &Db, cfg: &Config, what: &str) {
        match dump(db) {
            Ok(got) => {
                if !self.blind {
                    assert_eq!(got, self.state, "{what}");
                }
            }
            Err(e) => {
                refused(cfg, &e, what);
            }
        }
    }
}

/// A transaction's own writes by (table, key); `None`: deleted.
type Writes = BTreeMap<(&'static str, &'static [u8]), Option<Vec<u8>>>;

/// A write transaction and its own writes, with copies of them at each savepoint.
struct Txn<'db> {
    txn: WriteTxn<'db>,
    writes: Writes,
    savepoints: Vec<(walmdb::Savepoint, Writes)>,
}

impl Txn<'_> {
    /// The transaction's view of `table`: the committed state with its writes over it.
    fn view(&self, state: &Contents, table: &str) -> Table {
        let mut t = state.get(table).cloned().unwrap_or_default();
        for ((tb, k), v) in &self.writes {
            if *tb == table {
                match v {
                    Some(v) => t.insert(k.to_vec(), v.clone()),
                    None => t.remove(*k),
                };
            }
        }
        t
    }
}

fn run(db: &Db, cfg: &Config, b: &mut Bytes, m: &mut Model, ops: &mut usize) -> End {
    let mut txn: Option<Txn<'_>> = None;
    while !b.is_empty() && *ops < MAX_OPS {
        *ops += 1;
        m.counter += 1;
        let op = b.u8();
        match op % 16 {
            // Begin (explicitly, with an isolation level).
            0 => {
                if txn.is_none() {
                    let iso = if b.u8() & 1 == 0 {
                        Isolation::Snapshot
                    } else {
                        Isolation::Serializable
                    };
                    trace!("begin write_with({iso:?})");
                    txn = Some(Txn {
                        txn: db.write_with(iso).expect("begin write"),
                        writes: BTreeMap::new(),
                        savepoints: Vec::new(),
                    });
                }
            }
            // Put, delete.
            1..=4 => {
                let t = txn.get_or_insert_with(|| {
                    trace!("begin write()");
                    Txn {
                        txn: db.write().expect("begin write"),
                        writes: BTreeMap::new(),
                        savepoints: Vec::new(),
                    }
                });
                let (table, key) = (b.table(), b.key());
                let (result, write) = if op % 16 == 4 {
                    trace!("delete({table:?}, {key:?})");
                    (t.txn.delete(table, key), None)
                } else {
                    let value = b.value(m.counter);
                    trace!("put({table:?}, {key:?}, {value:?})");
                    (t.txn.put(table, key, &value), Some(value))
                };
                match result {
                    Ok(()) => {
                        t.writes.insert((table, key), write);
                    }
                    Err(e) => {
                        if refused(cfg, &e, "put/delete") {
                            txn = None;
                        }
                    }
                }
            }
            // Get inside the write transaction.
            5 => {
                if let Some(t) = &txn {
                    let (table, key) = (b.table(), b.key());
                    trace!("txn get({table:?}, {key:?})");
                    let got = t.txn.get(table, key).map(|v| v.map(<[u8]>::to_vec));
                    match got {
                        Ok(got) => {
                            if !m.blind {
                                let want = t.view(&m.state, table).get(key).cloned();
                                assert_eq!(got, want, "write txn get {table}/{key:?}");
                            }
                        }
                        Err(e) => {
                            if refused(cfg, &e, "write txn get") {
                                txn = None;
                            }
                        }
                    }
                }
            }
            // Range inside the write transaction.
            6 => {
                if let Some(t) = &txn {
                    let table = b.table();
                    let bounds = (b.bound(), b.bound());
                    let reverse = b.u8() & 1 != 0;
                    trace!("txn range({table:?}, {bounds:?}, reverse: {reverse})");
                    let it = if reverse {
                        t.txn.rev_range(table, bounds)
                    } else {
                        t.txn.range(table, bounds)
                    };
                    match it.and_then(collect) {
                        Ok(got) => {
                            if !m.blind {
                                let want = model_range(&t.view(&m.state, table), bounds, reverse);
                                assert_eq!(
                                    got, want,
                                    "write txn range {table} {bounds:?} rev={reverse}"
                                );
                            }
                        }
                        Err(e) => {
                            if refused(cfg, &e, "write txn range") {
                                txn = None;
                            }
                        }
                    }
                }
            }
            // Commit, at a drawn level or the configured one.
            7 | 8 => {
                let level = b.commit_level();
                if let Some(Txn { txn: w, writes, .. }) = txn.take() {
                    let changed = !writes.is_empty();
                    let bad_level = level.as_ref().and_then(level_out_of_bounds);
                    trace!("commit, level {level:?} (out of bounds: {bad_level:?})");
                    let started = Instant::now();
                    let result = match level {
                        Some(level) => w.commit_with(level),
                        None => w.commit(),
                    };
                    prompt(started, "a commit", cfg);
                    match result {
                        Ok(_) => {
                            // The level is checked first, even when nothing was written.
                            assert!(
                                bad_level.is_none(),
                                "a commit at a level out of bounds ({bad_level:?}) was accepted"
                            );
                            if changed {
                                for ((table, key), v) in &writes {
                                    let entries = m.state.entry(table).or_default();
                                    match v {
                                        Some(v) => entries.insert(key.to_vec(), v.clone()),
                                        None => entries.remove(*key),
                                    };
                                }
                                let level = level.unwrap_or(cfg.wal.durability);
                                m.committed(level.is_durable());
                            }
                        }
                        Err(Error::InvalidConfig(why)) => {
                            assert!(
                                bad_level.is_some(),
                                "a commit at {level:?}, in bounds, was refused: {why}"
                            );
                            trace!("  refused: {why}");
                        }
                        Err(e) => {
                            refused(cfg, &e, "commit");
                        }
                    }
                    m.check(db, cfg, "state after a commit");
                }
            }
            // Abort.
            9 => {
                if txn.is_some() {
                    trace!("abort");
                }
                txn = None;
            }
            // Savepoint, rollback.
            10 => {
                if let Some(t) = &mut txn {
                    if b.u8() & 1 == 0 || t.savepoints.is_empty() {
                        trace!("savepoint");
                        let sp = t.txn.savepoint();
                        t.savepoints.push((sp, t.writes.clone()));
                    } else {
                        let (sp, writes) = t.savepoints.last().expect("not empty");
                        trace!("rollback_to(last savepoint)");
                        t.txn.rollback_to(sp).expect("rollback_to");
                        t.writes = writes.clone();
                    }
                }
            }
            // Reads in a read transaction.
            11 => {
                let table = b.table();
                let key = b.key();
                let bounds = (b.bound(), b.bound());
                let reverse = b.u8() & 1 != 0;
                trace!("read: get({table:?}, {key:?}), range({bounds:?}, reverse: {reverse})");
                match db.read() {
                    Ok(r) => {
                        let want_t = m.state.get(table).cloned().unwrap_or_default();
                        match r.get(table, key) {
                            Ok(got) => {
                                if !m.blind {
                                    assert_eq!(
                                        got.map(<[u8]>::to_vec),
                                        want_t.get(key).cloned(),
                                        "read txn get {table}/{key:?}"
                                    );
                                }
                            }
                            Err(e) => {
                                refused(cfg, &e, "read txn get");
                            }
                        }
                        let it = if reverse {
                            r.rev_range(table, bounds)
                        } else {
                            r.range(table, bounds)
                        };
                        match it.and_then(collect) {
                            Ok(got) => {
                                if !m.blind {
                                    assert_eq!(
                                        got,
                                        model_range(&want_t, bounds, reverse),
                                        "read txn range {table} {bounds:?} rev={reverse}"
                                    );
                                }
                            }
                            Err(e) => {
                                refused(cfg, &e, "read txn range");
                            }
                        }
                    }
                    Err(e) => {
                        refused(cfg, &e, "begin read");
                    }
                }
            }
            // Drop a table, checkpoint (outside a write transaction).
            12 => {
                if txn.is_none() {
                    if b.u8() & 1 == 0 {
                        let table = b.table();
                        trace!("drop_table({table:?})");
                        let started = Instant::now();
                        let result = db.drop_table(table);
                        prompt(started, "drop_table", cfg);
                        match result {
                            Ok(_) => {
                                // A commit of its own, at the configured level.
                                m.state.remove(table);
                                m.committed(cfg.wal.durability.is_durable());
                            }
                            Err(Error::TableNotFound(_)) => {
                                assert!(
                                    m.blind || !m.state.contains_key(table),
                                    "drop_table({table}): not found but it holds entries"
                                );
                            }
                            Err(e) => {
                                refused(cfg, &e, "drop_table");
                            }
                        }
                        m.check(db, cfg, "state after drop_table");
                    } else {
                        trace!("checkpoint");
                        let started = Instant::now();
                        db.checkpoint().expect("checkpoint");
                        prompt(started, "checkpoint", cfg);
                        // What LMDB holds: every entry verifies, and each table's record
                        // (count, digest) matches its entries.
                        match db.scrub() {
                            Ok(report) => assert!(report.is_healthy(), "scrub: {report:?}"),
                            Err(e) => {
                                refused(cfg, &e, "scrub");
                            }
                        }
                    }
                }
            }
            // Reopen: clean, after a process crash, after power loss of the log.
            13 => {
                trace!("close and reopen");
                return End::Close;
            }
            14 => {
                trace!("simulate_crash and reopen");
                return End::ProcessCrash;
            }
            _ => {
                let seed = u64::from(b.u8());
                let opts = CrashOptions {
                    reorder: b.u8() & 1 != 0,
                    sector: 512,
                    garbage_fill: b.u8() & 1 != 0,
                };
                trace!("power loss of the log (seed {seed}, {opts:?}) and reopen");
                return End::PowerLoss(seed, opts);
            }
        }
    }
    End::Input
}

fn open(path: &Path, fs: &SimFs, cfg: &Config) -> walmdb::Result<Db> {
    let fsref: FsRef = Arc::new(fs.clone());
    let db = Db::open_with_fs(path, cfg.clone(), fsref)?;
    // What reads the settings outside the operations (ages against `txn_timeout`, the
    // segment size against free space) must not panic on any accepted value.
    let _ = db.stats();
    let _ = db.health();
    let _ = db.metrics();
    Ok(db)
}

/// Reopens with the configuration the first open accepted.
fn reopen(path: &Path, fs: &SimFs, cfg: &Config) -> Db {
    open(path, fs, cfg).unwrap_or_else(|e| panic!("reopen: {e:?} with {cfg:?}"))
}

fn close(db: Db, cfg: &Config) {
    let started = Instant::now();
    if let Err(e) = db.close() {
        refused(cfg, &e, "close");
    }
    prompt(started, "close", cfg);
}

fuzz_target!(|input: &[u8]| {
    let mut b = Bytes(input);
    let cfg = draw_config(&mut b);
    let broken = out_of_bounds(&cfg);
    trace!("config: {cfg:?}");
    trace!("out of bounds: {broken:?}");
    let base = Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory");
    let mut fs = SimFs::new();
    let mut db = match open(dir.path(), &fs, &cfg) {
        Ok(db) => {
            assert!(
                broken.is_empty(),
                "open accepted a configuration out of bounds ({broken:?}): {cfg:?}"
            );
            db
        }
        Err(Error::InvalidConfig(why)) => {
            assert!(
                !broken.is_empty(),
                "open refused a configuration in bounds ({why}): {cfg:?}"
            );
            trace!("refused: {why}");
            return;
        }
        Err(e) => panic!("open: {e:?} (out of bounds: {broken:?}) with {cfg:?}"),
    };
    let mut m = Model {
        state: Contents::new(),
        history: vec![Contents::new()],
        counter: 0,
        blind: false,
    };
    let mut ops = 0;
    let mut reopens = 0;
    loop {
        let end = run(&db, &cfg, &mut b, &mut m, &mut ops);
        if reopens >= MAX_REOPENS {
            break;
        }
        reopens += 1;
        let what = match end {
            End::Input => break,
            End::Close => {
                close(db, &cfg);
                db = reopen(dir.path(), &fs, &cfg);
                "state after a clean reopen"
            }
            End::ProcessCrash => {
                db.simulate_crash();
                db = reopen(dir.path(), &fs, &cfg);
                "state after a process crash"
            }
            End::PowerLoss(seed, opts) => {
                // The log's file system dies first: nothing the dying engine does after
                // this reaches it. LMDB (on the real file system) keeps what it applied,
                // which the applier takes only from the durable log.
                fs.crash_after_ops(fs.op_count());
                db.simulate_crash();
                fs = fs.crash(seed, opts);
                db = reopen(dir.path(), &fs, &cfg);
                match dump(&db) {
                    Ok(got) => {
                        let at = m.history.iter().position(|h| *h == got);
                        assert!(
                            m.blind || at.is_some(),
                            "after power loss the state is none of the {} states since the \
                             last durable point (durable: {:?}, latest: {:?}, got: {:?})",
                            m.history.len(),
                            m.history.first(),
                            m.state,
                            got
                        );
                        m.state = got;
                        m.blind = false;
                    }
                    Err(e) => {
                        refused(&cfg, &e, "reading after power loss");
                        m.blind = true;
                    }
                }
                m.history = vec![m.state.clone()];
                continue;
            }
        };
        match dump(&db) {
            Ok(got) => {
                if m.blind {
                    m.state = got;
                    m.blind = false;
                } else {
                    assert_eq!(got, m.state, "{what}");
                }
            }
            Err(e) => {
                refused(&cfg, &e, what);
            }
        }
        // A reopen syncs what it recovered: the new durable point.
        m.history = vec![m.state.clone()];
    }
    close(db, &cfg);
});
