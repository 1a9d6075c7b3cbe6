//! Helpers of the engine tests (`tests/engine.rs`, `tests/engine_conflicts.rs`,
//! `tests/engine_recovery.rs`): a seeded PRNG, small-footprint configurations, scans that
//! copy out of a transaction, a model of committed transactions replayed in LSN order, and
//! a reader of the WAL's segment and frame headers (for aiming damage at the log's tail).
//!
//! Declared from each test file with `#[path = "common/engine.rs"] mod engine_common;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use walmdb::{Config, Db, Durability, Error, Isolation, Lsn, WalConfig, WriteTxn};

/// splitmix64: deterministic randomness without a `rand` dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n >= 1`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    pub fn isolation(&mut self) -> Isolation {
        if self.percent(50) {
            Isolation::Snapshot
        } else {
            Isolation::Serializable
        }
    }

    /// A durability level for one commit: every level, the non-syncing ones more often
    /// (they keep the tests fast; visibility and recovery must not depend on the level).
    pub fn durability(&mut self) -> Durability {
        match self.below(8) {
            0 => Durability::EveryWrite,
            1 | 2 => Durability::group_commit(),
            3 => Durability::Interval(Duration::from_millis(5)),
            _ => Durability::None,
        }
    }
}

/// A small WAL: 1 MiB segments, no background spare, a small preallocated queue (cheap to
/// open in debug builds).
pub fn wal_cfg() -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        max_record_bytes: 256 << 10,
        queue_capacity: 4096,
        queue_max_bytes: 16 << 20,
        prepare_segments: false,
        ..WalConfig::default()
    }
}

/// The engine's defaults over [`wal_cfg`].
pub fn cfg() -> Config {
    Config::default().wal(wal_cfg())
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// `k0000`, `k0001`, ...: keys that sort like their numbers.
pub fn key(i: usize) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

pub type Kv = (Vec<u8>, Vec<u8>);

/// Copies a range iterator's entries out, failing the test on an error.
pub fn collect<'a>(it: impl Iterator<Item = walmdb::Result<(&'a [u8], &'a [u8])>>) -> Vec<Kv> {
    it.map(|item| {
        let (k, v) = item.expect("range item");
        (k.to_vec(), v.to_vec())
    })
    .collect()
}

/// Copies a range iterator's entries out, or returns its first error.
pub fn try_collect<'a>(
    it: impl Iterator<Item = walmdb::Result<(&'a [u8], &'a [u8])>>,
) -> walmdb::Result<Vec<Kv>> {
    it.map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect()
}

/// A table's contents in one map.
pub type TableMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every non-empty table's contents, by table name.
pub type Contents = BTreeMap<String, TableMap>;

/// Every entry of `table` in a new read transaction.
pub fn scan(db: &Db, table: &str) -> TableMap {
    let r = db.read().expect("begin read");
    let out = collect(r.range(table, ..).expect("range"))
        .into_iter()
        .collect();
    out
}

/// Every non-empty table's contents, read in one read transaction.
pub fn dump(db: &Db) -> Contents {
    let tables = db.tables().unwrap();
    let r = db.read().expect("begin read");
    dump_tables(&r, tables)
}

/// The contents of the non-empty tables among `tables`, as `r` sees them.
pub fn dump_tables(r: &walmdb::ReadTxn<'_>, tables: impl IntoIterator<Item = String>) -> Contents {
    let mut out = Contents::new();
    for t in tables {
        let entries: TableMap = collect(r.range(&t, ..).expect("range"))
            .into_iter()
            .collect();
        if !entries.is_empty() {
            out.insert(t, entries);
        }
    }
    out
}

/// One write of a committed transaction, as the model replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        table: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: String,
        key: Vec<u8>,
    },
    /// `Db::drop_table`, a commit of its own.
    DropTable {
        table: String,
    },
}

impl Op {
    pub fn put(table: &str, key: &[u8], value: &[u8]) -> Op {
        Op::Put {
            table: table.into(),
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    pub fn delete(table: &str, key: &[u8]) -> Op {
        Op::Delete {
            table: table.into(),
            key: key.to_vec(),
        }
    }

    pub fn table(&self) -> &str {
        match self {
            Op::Put { table, .. } | Op::Delete { table, .. } | Op::DropTable { table } => table,
        }
    }

    /// The key written (empty for a table drop).
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
            Op::DropTable { .. } => &[],
        }
    }

    /// Buffers the op in a write transaction.
    pub fn run(&self, txn: &mut WriteTxn<'_>) -> walmdb::Result<()> {
        match self {
            Op::Put { table, key, value } => txn.put(table, key, value),
            Op::Delete { table, key } => txn.delete(table, key),
            Op::DropTable { .. } => panic!("a table drop is not part of a transaction"),
        }
    }
}

/// Applies `ops` in order to `model` (empty tables disappear, as in [`dump`]).
pub fn apply_ops(model: &mut Contents, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Put { table, key, value } => {
                model
                    .entry(table.clone())
                    .or_default()
                    .insert(key.clone(), value.clone());
            }
            Op::Delete { table, key } => {
                if let Some(t) = model.get_mut(table) {
                    t.remove(key);
                    if t.is_empty() {
                        model.remove(table);
                    }
                }
            }
            Op::DropTable { table } => {
                model.remove(table);
            }
        }
    }
}

/// Acknowledged commits, recorded from any thread.
#[derive(Debug, Default)]
pub struct CommitLog(Mutex<Vec<(Lsn, Vec<Op>)>>);

impl CommitLog {
    pub fn record(&self, lsn: Lsn, ops: Vec<Op>) {
        self.0.lock().unwrap().push((lsn, ops));
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The commits in LSN order; fails the test if two share an LSN.
    pub fn sorted(&self) -> Vec<(Lsn, Vec<Op>)> {
        let mut all = self.0.lock().unwrap().clone();
        all.sort_by_key(|(lsn, _)| *lsn);
        for w in all.windows(2) {
            assert!(
                w[0].0 < w[1].0,
                "two commits acknowledged with LSN {}",
                w[0].0
            );
        }
        all
    }

    /// The contents the commits produce, replayed in LSN order.
    pub fn model(&self) -> Contents {
        let mut model = Contents::new();
        for (_, ops) in self.sorted() {
            apply_ops(&mut model, &ops);
        }
        model
    }

    pub fn max_lsn(&self) -> Lsn {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0)
            .max()
            .unwrap_or(0)
    }
}

/// Runs `f` in a write transaction at `isolation` and commits it at `durability`, again
/// while the commit meets a conflict (at most `attempts` times): `Db::update`, but it also
/// returns the commit's LSN, which the models need to order commits.
pub fn commit_retry<T>(
    db: &Db,
    isolation: Isolation,
    durability: Durability,
    attempts: u32,
    mut f: impl FnMut(&mut WriteTxn<'_>) -> walmdb::Result<T>,
) -> walmdb::Result<(T, Lsn)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut txn = db.write_with(isolation)?;
        let out = f(&mut txn)?;
        match txn.commit_with(durability) {
            Ok(lsn) => return Ok((out, lsn)),
            Err(e) if e.is_conflict() && attempt < attempts => {
                std::thread::sleep(Duration::from_micros(50 * u64::from(attempt.min(20))));
            }
            Err(e) => return Err(e),
        }
    }
}

/// True if `key` lies inside the bounds.
pub fn in_bounds(start: Bound<&[u8]>, end: Bound<&[u8]>, key: &[u8]) -> bool {
    let lower = match start {
        Bound::Included(b) => key >= b,
        Bound::Excluded(b) => key > b,
        Bound::Unbounded => true,
    };
    let upper = match end {
        Bound::Included(b) => key <= b,
        Bound::Excluded(b) => key < b,
        Bound::Unbounded => true,
    };
    lower && upper
}

/// The model's answer to a range scan (empty for empty and inverted bounds).
pub fn model_range(model: &TableMap, start: Bound<&[u8]>, end: Bound<&[u8]>, rev: bool) -> Vec<Kv> {
    let mut out: Vec<Kv> = model
        .iter()
        .filter(|(k, _)| in_bounds(start, end, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if rev {
        out.reverse();
    }
    out
}

/// The model's answer to a prefix scan.
pub fn model_prefix(model: &TableMap, prefix: &[u8], rev: bool) -> Vec<Kv> {
    let mut out: Vec<Kv> = model
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if rev {
        out.reverse();
    }
    out
}

/// Owned (start, end) bounds of a key range.
pub type OwnedBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

pub fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Every (start, end) pair of bound kinds over `points`: included, excluded and unbounded
/// at each end, so equal, empty and inverted ranges are all among them.
pub fn bound_cases(points: &[Vec<u8>]) -> Vec<OwnedBounds> {
    let mut ends = vec![Bound::Unbounded];
    for p in points {
        ends.push(Bound::Included(p.clone()));
        ends.push(Bound::Excluded(p.clone()));
    }
    let mut out = Vec::new();
    for s in &ends {
        for e in &ends {
            out.push((s.clone(), e.clone()));
        }
    }
    out
}

/// Checks `scan(start, end, rev)` against the model for every bound case, both directions.
pub fn check_ranges(
    what: &str,
    model: &TableMap,
    points: &[Vec<u8>],
    mut scan: impl FnMut(Bound<&[u8]>, Bound<&[u8]>, bool) -> Vec<Kv>,
) {
    for (s, e) in bound_cases(points) {
        for rev in [false, true] {
            let (s, e) = (as_ref_bound(&s), as_ref_bound(&e));
            let got = scan(s, e, rev);
            let want = model_range(model, s, e, rev);
            assert_eq!(
                got,
                want,
                "{what}: range ({s:?}, {e:?}) rev={rev}: got {} entries, want {}",
                got.len(),
                want.len()
            );
        }
    }
}

/// Polls `done` until it holds; fails the test after a generous limit (a liveness check,
/// not a timing assertion).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < limit, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The database's WAL segment files (`<path>/wal/wal-*.log`), in segment order.
pub fn wal_segments(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(path.join("wal"))
        .expect("list the WAL directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .collect();
    out.sort();
    out
}

/// Bytes of a segment header and of a frame header (docs/wal-format.md).
pub const SEGMENT_HEADER: usize = 64;
pub const FRAME_HEADER: usize = 40;

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Where a segment's frames end: (salt, end offset, LSN the next frame would carry).
/// Walks the frame headers from offset 64 while their salt is the segment's.
pub fn frames_end(segment: &[u8]) -> (u32, usize, Lsn) {
    assert_eq!(&segment[..8], b"WALMDBLG", "segment magic");
    let salt = u32_at(segment, 12);
    let mut next_lsn = u64_at(segment, 24);
    let mut off = SEGMENT_HEADER;
    while off + FRAME_HEADER <= segment.len() && u32_at(segment, off + 8) == salt {
        let len = u32_at(segment, off) as usize;
        let count = u64::from(u16::from_le_bytes(
            segment[off + 14..off + 16].try_into().unwrap(),
        ));
        next_lsn = u64_at(segment, off + 16) + count;
        off += FRAME_HEADER + len;
    }
    (salt, off, next_lsn)
}

/// Asserts that `r` is `Error::Conflict`.
pub fn assert_conflict<T: std::fmt::Debug>(r: walmdb::Result<T>, what: &str) -> (String, Vec<u8>) {
    match r {
        Err(Error::Conflict { table, key }) => (table, key),
        other => panic!("{what}: expected Error::Conflict, got {other:?}"),
    }
}
