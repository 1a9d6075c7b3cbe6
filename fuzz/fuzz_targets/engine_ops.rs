//! Operations on a `walmdb::Db`, checked against a `BTreeMap` model.
//!
//! The database lives in a fresh temporary directory (under `/dev/shm` when it exists, so
//! LMDB's syncs cost nothing); its log is on a `SimFs`, so power loss can be simulated.
//! Each input byte picks an operation, the following bytes its arguments: put, delete, get
//! and range inside a write transaction (forward and reverse, with savepoints), commit at
//! any durability, abort, reads in read transactions, drop table, checkpoint, clean reopen,
//! `simulate_crash` (a process crash) and reopen, and power loss of the log and reopen.
//!
//! Properties:
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
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

type Table = BTreeMap<Vec<u8>, Vec<u8>>;
type Contents = BTreeMap<&'static str, Table>;

fn config() -> Config {
    Config::default()
        .map_size(8 << 20)
        .max_tables(8)
        .max_readers(16)
        .apply_interval(Duration::from_millis(2))
        .checkpoint_bytes(16 << 10)
        .wal(WalConfig {
            segment_bytes: 64 << 10,
            max_record_bytes: 16 << 10,
            queue_capacity: 256,
            prepare_segments: false,
            compress_threshold: None,
            ..WalConfig::default()
        })
}

/// `WALMDB_FUZZ_DEBUG=1`: print each operation (to replay one input in a unit test).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("WALMDB_FUZZ_DEBUG").is_some_and(|v| v == "1"))
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
    fn durability(&mut self) -> Durability {
        match self.u8() % 4 {
            0 => Durability::EveryWrite,
            1 => Durability::group_commit(),
            2 => Durability::Interval(Duration::from_millis(1)),
            _ => Durability::None,
        }
    }
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
) -> Vec<(Vec<u8>, Vec<u8>)> {
    it.map(|e| {
        let (k, v) = e.expect("range item");
        (k.to_vec(), v.to_vec())
    })
    .collect()
}

fn dump(db: &Db) -> Contents {
    let r = db.read().expect("begin read");
    let mut out = Contents::new();
    for t in TABLES {
        let entries: Table = collect(r.range(t, ..).expect("range"))
            .into_iter()
            .collect();
        if !entries.is_empty() {
            out.insert(t, entries);
        }
    }
    out
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
}

impl Model {
    fn committed(&mut self, durable: bool) {
        self.state = normalized(std::mem::take(&mut self.state));
        if durable {
            self.history.clear();
        }
        self.history.push(self.state.clone());
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

fn run(db: &Db, b: &mut Bytes, m: &mut Model, ops: &mut usize) -> End {
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
                if op % 16 == 4 {
                    trace!("delete({table:?}, {key:?})");
                    t.txn.delete(table, key).expect("delete");
                    t.writes.insert((table, key), None);
                } else {
                    let value = b.value(m.counter);
                    trace!("put({table:?}, {key:?}, {value:?})");
                    t.txn.put(table, key, &value).expect("put");
                    t.writes.insert((table, key), Some(value));
                }
            }
            // Get inside the write transaction.
            5 => {
                if let Some(t) = &txn {
                    let (table, key) = (b.table(), b.key());
                    trace!("txn get({table:?}, {key:?})");
                    let got = t.txn.get(table, key).expect("get").map(<[u8]>::to_vec);
                    let want = t.view(&m.state, table).get(key).cloned();
                    assert_eq!(got, want, "write txn get {table}/{key:?}");
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
                    let got = collect(it.expect("range"));
                    let want = model_range(&t.view(&m.state, table), bounds, reverse);
                    assert_eq!(
                        got, want,
                        "write txn range {table} {bounds:?} rev={reverse}"
                    );
                }
            }
            // Commit.
            7 | 8 => {
                let durability = b.durability();
                if let Some(t) = txn.take() {
                    let changed = !t.writes.is_empty();
                    for ((table, key), v) in &t.writes {
                        let entries = m.state.entry(table).or_default();
                        match v {
                            Some(v) => entries.insert(key.to_vec(), v.clone()),
                            None => entries.remove(*key),
                        };
                    }
                    trace!("commit_with({durability:?})");
                    t.txn.commit_with(durability).expect("commit");
                    if changed {
                        m.committed(durability.is_durable());
                    }
                    assert_eq!(dump(db), m.state, "state after a commit");
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
                let r = db.read().expect("begin read");
                let table = b.table();
                let key = b.key();
                trace!("read: get({table:?}, {key:?}), then a range");
                let want_t = m.state.get(table).cloned().unwrap_or_default();
                assert_eq!(
                    r.get(table, key).expect("get").map(<[u8]>::to_vec),
                    want_t.get(key).cloned(),
                    "read txn get {table}/{key:?}"
                );
                let bounds = (b.bound(), b.bound());
                let reverse = b.u8() & 1 != 0;
                let it = if reverse {
                    r.rev_range(table, bounds)
                } else {
                    r.range(table, bounds)
                };
                assert_eq!(
                    collect(it.expect("range")),
                    model_range(&want_t, bounds, reverse),
                    "read txn range {table} {bounds:?} rev={reverse}"
                );
            }
            // Drop a table, checkpoint (outside a write transaction).
            12 => {
                if txn.is_none() {
                    if b.u8() & 1 == 0 {
                        let table = b.table();
                        trace!("drop_table({table:?})");
                        match db.drop_table(table) {
                            Ok(_) => {
                                // A durable commit of its own (the default level).
                                m.state.remove(table);
                                m.committed(true);
                            }
                            Err(Error::TableNotFound(_)) => {
                                assert!(
                                    !m.state.contains_key(table),
                                    "drop_table({table}): not found but it holds entries"
                                );
                            }
                            Err(e) => panic!("drop_table({table}): {e:?}"),
                        }
                        assert_eq!(dump(db), m.state, "state after drop_table");
                    } else {
                        trace!("checkpoint");
                        db.checkpoint().expect("checkpoint");
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

fn open(path: &Path, fs: &SimFs) -> Db {
    let fsref: FsRef = Arc::new(fs.clone());
    Db::open_with_fs(path, config(), fsref).unwrap_or_else(|e| panic!("open: {e:?}"))
}

fuzz_target!(|input: &[u8]| {
    let base = Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory");
    let mut fs = SimFs::new();
    let mut db = open(dir.path(), &fs);
    let mut m = Model {
        state: Contents::new(),
        history: vec![Contents::new()],
        counter: 0,
    };
    let mut b = Bytes(input);
    let mut ops = 0;
    let mut reopens = 0;
    loop {
        let end = run(&db, &mut b, &mut m, &mut ops);
        if reopens >= MAX_REOPENS {
            break;
        }
        reopens += 1;
        match end {
            End::Input => break,
            End::Close => {
                db.close().expect("close");
                db = open(dir.path(), &fs);
                assert_eq!(dump(&db), m.state, "state after a clean reopen");
            }
            End::ProcessCrash => {
                db.simulate_crash();
                db = open(dir.path(), &fs);
                assert_eq!(dump(&db), m.state, "state after a process crash");
            }
            End::PowerLoss(seed, opts) => {
                // The log's file system dies first: nothing the dying engine does after
                // this reaches it. LMDB (on the real file system) keeps what it applied,
                // which the applier takes only from the durable log.
                fs.crash_after_ops(fs.op_count());
                db.simulate_crash();
                fs = fs.crash(seed, opts);
                db = open(dir.path(), &fs);
                let got = dump(&db);
                let at = m.history.iter().position(|h| *h == got);
                assert!(
                    at.is_some(),
                    "after power loss the state is none of the {} states since the last \
                     durable point (durable: {:?}, latest: {:?}, got: {:?})",
                    m.history.len(),
                    m.history.first(),
                    m.state,
                    got
                );
                m.state = got;
            }
        }
        // A reopen syncs what it recovered: the new durable point.
        m.history = vec![m.state.clone()];
    }
    db.close().expect("final close");
});
