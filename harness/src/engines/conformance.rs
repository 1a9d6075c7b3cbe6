//! Every engine configuration behaves the same through `Engine` and `Worker`: what one writes,
//! the others' workloads read back, so their figures measure the same work.

use std::collections::BTreeMap;
use std::ops::Bound;

use anyhow::{ensure, Context, Result};

use crate::engine::{Engine, EngineKind};

/// Keys written, with their values' lengths: what every read is checked against.
#[derive(Default)]
struct Model(BTreeMap<Vec<u8>, usize>);

impl Model {
    fn write(&mut self, engine: &dyn Engine, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let borrowed: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        engine.worker()?.write(&borrowed)?;
        for (k, v) in pairs {
            self.0.insert(k.clone(), v.len());
        }
        Ok(())
    }

    /// How many entries a scan from `start` reading up to `limit` must read.
    fn scan(&self, start: &[u8], limit: usize) -> usize {
        let range = (Bound::Included(start), Bound::Unbounded);
        self.0.range::<[u8], _>(range).take(limit).count()
    }

    /// Every key reads back with its value's length, through one worker.
    fn check_all(&self, engine: &dyn Engine) -> Result<()> {
        let mut worker = engine.worker()?;
        for (k, len) in &self.0 {
            let got = worker.get(k)?;
            ensure!(got == Some(*len), "get {k:?}: {got:?}, want Some({len})");
        }
        let got = worker.scan(&[0x00], usize::MAX)?;
        ensure!(
            got == self.0.len(),
            "full scan read {got}, want {}",
            self.0.len()
        );
        Ok(())
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// Values of varied lengths, so a length read back shows which value it was.
fn value(i: usize, len: usize) -> Vec<u8> {
    vec![(i % 251) as u8; len]
}

fn conform(kind: EngineKind) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = kind.open(dir.path(), 10_000)?;
    let engine = &*engine;
    let mut model = Model::default();

    // Three transactions: 100 pairs; 2 pairs, one overwriting a key of the first; and keys at
    // the ends of the byte order (a 0x00 byte, 0xff bytes: order is unsigned, as memcmp).
    // No empty key: LMDB refuses it (MDB_BAD_VALSIZE), even to look up, so scans start at
    // [0x00], before every key written.
    let first: Vec<_> = (0..100).map(|i| (key(i), value(i, 10 + i))).collect();
    model.write(engine, &first)?;
    model.write(
        engine,
        &[(key(100), value(100, 7)), (key(50), value(50, 300))],
    )?;
    model.write(
        engine,
        &[
            (vec![0x00, 1], value(1, 1)),
            (vec![0xff], value(2, 2)),
            (vec![0xff, 0xff, 0x80], value(3, 1000)),
        ],
    )?;

    let mut w = engine.worker()?;
    ensure!(w.get(&key(0))? == Some(10), "get key 0");
    ensure!(w.get(&key(99))? == Some(109), "get key 99");
    ensure!(w.get(&key(50))? == Some(300), "get key 50, overwritten");
    ensure!(w.get(&key(100))? == Some(7), "get key 100");
    ensure!(
        w.get(&[0xff, 0xff, 0x80])? == Some(1000),
        "get 0xff 0xff 0x80"
    );
    ensure!(w.get(b"key-0101")?.is_none(), "get an absent key");
    ensure!(w.get(b"key-005")?.is_none(), "get a prefix of a key");
    ensure!(w.get(&[0xff, 0xff])?.is_none(), "get 0xff 0xff");

    // Scans: from a key, from between keys, past the end, limits below and above what is left.
    let starts: [&[u8]; 8] = [
        &[0x00],
        b"key-0050",
        b"key-00505",
        b"key-",
        b"key-0100",
        &[0x80],
        &[0xff, 0xff],
        &[0xff, 0xff, 0xff],
    ];
    for start in starts {
        for limit in [0, 1, 10, 51, 1000, usize::MAX] {
            let got = w.scan(start, limit)?;
            let want = model.scan(start, limit);
            ensure!(
                got == want,
                "scan {start:?} limit {limit}: read {got}, want {want}"
            );
        }
    }
    ensure!(w.scan(b"key-0050", 10)? == 10, "scan mid-way, limit 10");
    ensure!(w.scan(b"key-0050", 1000)? == 53, "scan mid-way to the end");

    // Read-modify-write replaces a value, and creates an absent key.
    w.read_modify_write(&key(20), &value(20, 555))?;
    model.0.insert(key(20), 555);
    ensure!(
        w.get(&key(20))? == Some(555),
        "value replaced by read_modify_write"
    );
    w.read_modify_write(b"key-0200", &value(200, 3))?;
    model.0.insert(b"key-0200".to_vec(), 3);
    ensure!(
        w.get(b"key-0200")? == Some(3),
        "key created by read_modify_write"
    );
    drop(w);

    engine.settle().context("settle")?;
    model.check_all(engine).context("after settle")?;

    // Four writers at once, each on its own worker, 50 one-pair transactions each.
    const THREADS: usize = 4;
    const EACH: usize = 50;
    let concurrent_key = |t: usize, i: usize| format!("conc-{t}-{i:03}").into_bytes();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || -> Result<()> {
                    let mut w = engine.worker()?;
                    for i in 0..EACH {
                        let k = concurrent_key(t, i);
                        let v = value(i, 20 + t);
                        w.write(&[(&k, &v)])?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer thread panicked")?;
        }
        Ok(())
    })
    .context("concurrent writers")?;
    for t in 0..THREADS {
        for i in 0..EACH {
            model.0.insert(concurrent_key(t, i), 20 + t);
        }
    }
    let mut w = engine.worker()?;
    // The "conc-" keys are exactly those from "conc-" (inclusive) up to "conc." ('.' follows
    // '-'): count them by two unbounded scans.
    let landed = w
        .scan(b"conc-", usize::MAX)?
        .saturating_sub(w.scan(b"conc.", usize::MAX)?);
    ensure!(
        landed == THREADS * EACH,
        "{landed} of {} concurrent writes landed",
        THREADS * EACH
    );
    for start in [&b"conc-"[..], b"conc-2-", b"conc."] {
        let got = w.scan(start, usize::MAX)?;
        let want = model.scan(start, usize::MAX);
        ensure!(
            got == want,
            "scan {start:?} after the concurrent writes: read {got}, want {want}"
        );
    }
    drop(w);
    model.check_all(engine).context("after concurrent writes")?;

    engine.settle().context("second settle")?;
    model.check_all(engine).context("after second settle")?;

    // len, pop (first and last) and remove agree with the model.
    let mut w = engine.worker()?;
    let want = model.0.len() as u64;
    ensure!(w.len()? == want, "len {}, want {want}", w.len()?);
    for last in [false, true] {
        ensure!(w.pop(last)?, "pop (last: {last}) of a table with entries");
        let end = if last {
            model.0.keys().next_back()
        } else {
            model.0.keys().next()
        };
        let end = end.cloned().expect("entries");
        model.0.remove(&end);
        ensure!(w.get(&end)?.is_none(), "{end:?} still there after its pop");
    }
    // Two present keys and an absent one, in one transaction.
    w.remove(&[&key(10), &key(11), b"absent"])?;
    model.0.remove(&key(10));
    model.0.remove(&key(11));
    ensure!(w.get(&key(10))?.is_none(), "key 10 removed");
    let want = model.0.len() as u64;
    ensure!(
        w.len()? == want,
        "len after pops and removes {}, want {want}",
        w.len()?
    );
    drop(w);
    model.check_all(engine).context("after pops and removes")?;
    engine.settle().context("third settle")?;
    model.check_all(engine).context("after third settle")?;

    // Popped empty, alternately from each end; then a pop finds nothing.
    let mut w = engine.worker()?;
    for i in 0..model.0.len() {
        ensure!(w.pop(i % 2 == 1)?, "pop {i} of {}", model.0.len());
    }
    ensure!(!w.pop(false)? && !w.pop(true)?, "a pop of an empty table");
    ensure!(w.len()? == 0, "len of an empty table");
    ensure!(
        w.scan(&[0x00], usize::MAX)? == 0,
        "a scan of an empty table"
    );
    Ok(())
}

fn run(kind: EngineKind) {
    if !kind.available() {
        eprintln!("{}: not in this build (skipped)", kind.name());
        return;
    }
    if let Err(e) = conform(kind) {
        panic!("{}: {e:#}", kind.name());
    }
}

macro_rules! conformance_tests {
    ($($test:ident: $kind:ident,)*) => {
        $(
            #[test]
            fn $test() {
                run(EngineKind::$kind);
            }
        )*

        /// A configuration added to `EngineKind::ALL` needs its test here.
        #[test]
        fn every_kind_has_a_test() {
            let tested = [$(EngineKind::$kind),*];
            for kind in EngineKind::ALL {
                assert!(tested.contains(&kind), "no conformance test for {}", kind.name());
            }
        }
    };
}

conformance_tests! {
    walmdb_group: WalmdbGroup,
    walmdb_every_write: WalmdbEveryWrite,
    walmdb_interval: WalmdbInterval,
    walmdb_none: WalmdbNone,
    heed_durable: HeedDurable,
    heed_no_sync: HeedNoSync,
    redb_immediate: RedbImmediate,
    redb_none: RedbNone,
    rocksdb_sync: RocksdbSync,
    rocksdb_no_sync: RocksdbNoSync,
    sqlite_full: SqliteFull,
    sqlite_normal: SqliteNormal,
    fjall_sync: FjallSync,
    fjall_none: FjallNone,
}
