use std::collections::BTreeMap;
use std::ops::Bound;
use std::os::unix::fs::{FileExt, PermissionsExt};

use super::*;
use crate::sync::DataArc as Arc;

fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

type Model = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A random model: keys of 1 to 40 bytes, values of 0 to 300 bytes (a few of 100 KiB,
/// larger than a block), a fifth of the entries deletes.
fn model(seed: u64, entries: usize) -> Model {
    let mut next = xorshift(seed);
    let mut m = Model::new();
    while m.len() < entries {
        let key: Vec<u8> = (0..1 + next() % 40).map(|_| next() as u8).collect();
        let value = match next() % 100 {
            0..=19 => None,
            20 => Some(vec![next() as u8; 100 << 10]),
            _ => Some((0..next() % 300).map(|_| next() as u8).collect()),
        };
        m.insert(key, value);
    }
    m
}

fn write(dir: &Path, m: &Model) -> Run {
    let mut w = RunWriter::create(dir).expect("create");
    for (k, v) in m {
        w.push(k, v.as_deref()).expect("push");
    }
    w.finish().expect("finish")
}

fn collect(it: impl Iterator<Item = io::Result<RunEntry>>) -> Vec<RunEntry> {
    it.map(|e| e.expect("entry")).collect()
}

#[test]
fn a_run_reads_back_what_was_written_whole_from_any_start_and_by_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(7, 3_000);
    let run = write(dir.path(), &m);
    assert_eq!(run.len(), m.len() as u64);
    assert!(run.index.len() > 5, "several blocks: {}", run.index.len());
    let all: Vec<RunEntry> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(collect(run.iter(Bound::Unbounded, false)), all);
    let mut next = xorshift(11);
    for _ in 0..200 {
        // A written key, or a random one (mostly absent).
        let probe: Vec<u8> = if next().is_multiple_of(2) {
            all[(next() % all.len() as u64) as usize].0.clone()
        } else {
            (0..1 + next() % 40).map(|_| next() as u8).collect()
        };
        assert_eq!(
            newest_entry(std::slice::from_ref(&run), &probe).expect("get"),
            m.get(&probe).cloned()
        );
        for from in [Bound::Included(&probe[..]), Bound::Excluded(&probe[..])] {
            let want: Vec<RunEntry> = m
                .range::<[u8], _>((from, Bound::Unbounded))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(collect(run.iter(from, false)), want, "from {from:?}");
            let want_down: Vec<RunEntry> = m
                .range::<[u8], _>((Bound::Unbounded, from))
                .rev()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(
                collect(run.iter(from, true)),
                want_down,
                "down from {from:?}"
            );
        }
    }
    let mut down = all.clone();
    down.reverse();
    assert_eq!(collect(run.iter(Bound::Unbounded, true)), down);
    // Below every key, and above.
    assert_eq!(
        newest_entry(std::slice::from_ref(&run), b"").expect("get"),
        None
    );
    assert_eq!(
        collect(run.iter(Bound::Excluded(&[0xFF; 41]), false)),
        vec![]
    );
    assert_eq!(collect(run.iter(Bound::Excluded(b""), true)), vec![]);
    assert_eq!(collect(run.iter(Bound::Included(&[0xFF; 41]), true)), down);
}

#[test]
fn an_empty_run_holds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = write(dir.path(), &Model::new());
    assert_eq!(run.len(), 0);
    assert_eq!(
        newest_entry(std::slice::from_ref(&run), b"k").expect("get"),
        None
    );
    assert_eq!(collect(run.iter(Bound::Unbounded, false)), vec![]);
}

#[test]
fn keys_out_of_order_are_refused_when_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = RunWriter::create(dir.path()).expect("create");
    w.push(b"b", Some(b"1")).expect("push");
    for key in [&b"b"[..], b"a"] {
        let e = w.push(key, None).expect_err("not above the last key");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

/// Every byte of a run is covered: a flipped byte anywhere in a block (its length, its
/// checksum or its body) is an `InvalidData` error from the block's read, never other data.
#[test]
fn a_damaged_block_is_an_error_not_other_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(3, 600);
    let run = write(dir.path(), &m);
    let mut next = xorshift(5);
    for _ in 0..50 {
        let at = HEADER_LEN as u64 + next() % (run.file_bytes() - HEADER_LEN as u64);
        let mut byte = [0u8];
        run.file.read_exact_at(&mut byte, at).expect("read");
        run.file.write_all_at(&[byte[0] ^ 0x5A], at).expect("write");
        let walked: Vec<io::Result<RunEntry>> = run.iter(Bound::Unbounded, false).collect();
        let err = walked
            .last()
            .expect("entries")
            .as_ref()
            .expect_err("damaged");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(walked.iter().filter(|e| e.is_err()).count(), 1);
        // What was handed out before the damaged block is what was written.
        for (entry, (k, v)) in walked.iter().flatten().zip(&m) {
            assert_eq!(entry, &(k.clone(), v.clone()));
        }
        let down: Vec<io::Result<RunEntry>> = run.iter(Bound::Unbounded, true).collect();
        let err = down.last().expect("entries").as_ref().expect_err("damaged");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        run.file.write_all_at(&byte, at).expect("restore");
    }
    assert_eq!(collect(run.iter(Bound::Unbounded, false)).len(), m.len());
    // A damaged header fails the run's check.
    run.file.write_all_at(&[0], 3).expect("write");
    assert_eq!(
        run.check_header().expect_err("damaged").kind(),
        io::ErrorKind::InvalidData
    );
}

/// The file is private and has no name: its folder is made 0700 and holds nothing.
#[test]
fn a_run_lives_in_an_unlinked_private_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spill = dir.path().join("spill");
    let run = write(&spill, &model(1, 10));
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&spill), 0o700);
    assert_eq!(std::fs::read_dir(&spill).expect("read_dir").count(), 0);
    assert_eq!(
        run.file.metadata().expect("metadata").permissions().mode() & 0o777,
        0o600
    );
}

/// Runs merged: every key once, in order (or reverse), from the newest run that holds it.
#[test]
fn merged_runs_take_each_keys_newest_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models: Vec<Model> = (0..4)
        .map(|i| model(100 + i, 400 + 300 * i as usize))
        .collect();
    // Runs that share keys: each later run rewrites some of the first's.
    let mut models = models;
    let shared: Vec<Vec<u8>> = models[0].keys().step_by(3).cloned().collect();
    for (i, m) in models.iter_mut().enumerate().skip(1) {
        for k in shared.iter().skip(i).step_by(2) {
            m.insert(k.clone(), Some(vec![i as u8; 3]));
        }
    }
    let runs: Vec<Run> = models.iter().map(|m| write(dir.path(), m)).collect();
    let mut want = Model::new();
    for m in &models {
        want.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let want: Vec<RunEntry> = want.into_iter().collect();
    let merged = MergedRuns::new(runs.iter().map(|r| r.iter(Bound::Unbounded, false)), false);
    assert_eq!(collect(merged), want);
    let mid = want.len() / 2;
    let from = want[mid].0.clone();
    let above = runs.iter().map(|r| r.iter(Bound::Excluded(&from), false));
    assert_eq!(
        collect(MergedRuns::new(above, false)),
        want[mid + 1..].to_vec()
    );
    let below = runs.iter().map(|r| r.iter(Bound::Included(&from), true));
    let mut want_down = want[..=mid].to_vec();
    want_down.reverse();
    assert_eq!(collect(MergedRuns::new(below, true)), want_down);
}

/// A spilled commit is its tables' runs merged, table by table: the walk, the count, the
/// measured length and the encoder all agree with the merge of the models; a block damaged
/// before the commit fails it when it is made, and one damaged after, its walk and its
/// encoding, with an `InvalidData` error.
#[test]
fn a_spilled_commit_walks_its_merged_runs_and_a_damaged_run_fails_it() {
    use crate::wal::log::record::{put_op, OpEncoder, OpRef};
    let dir = tempfile::tempdir().expect("tempdir");
    let (older, newer, other) = (model(7, 500), model(8, 300), model(9, 200));
    let mut want: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut merged = older.clone();
    merged.extend(newer.clone());
    want.extend(merged.into_iter().map(|(k, v)| ("a".to_owned(), k, v)));
    want.extend(
        other
            .iter()
            .map(|(k, v)| ("b".to_owned(), k.clone(), v.clone())),
    );
    let runs = |dir: &Path| {
        vec![
            (Arc::from("a"), vec![write(dir, &older), write(dir, &newer)]),
            (Arc::from("b"), vec![write(dir, &other)]),
        ]
    };
    let tables = runs(dir.path());
    let newer_file = tables[0].1[1].file.try_clone().expect("clone");
    let spilled = SpilledWrites::new(tables).expect("made");
    let mut walked = Vec::new();
    spilled
        .for_each(|table, key, value| {
            walked.push((table.to_string(), key.to_vec(), value.map(<[u8]>::to_vec)));
            Ok::<(), io::Error>(())
        })
        .expect("walked");
    assert_eq!(walked, want);
    assert_eq!(spilled.op_count(), want.len());
    let mut expected = Vec::new();
    for (table, key, value) in &want {
        let op = match value {
            Some(value) => OpRef::Put { table, key, value },
            None => OpRef::Delete { table, key },
        };
        put_op(&mut expected, op);
    }
    let mut encoded = Vec::new();
    let mut encoder = spilled.encoder();
    while encoder.encode_next(&mut encoded).expect("encoded") {}
    assert_eq!(encoded, expected);
    assert_eq!(spilled.ops_len(), expected.len());

    // Damaged after the commit was made: its walk and its encoding fail.
    let at = HEADER_LEN as u64 + 20;
    let mut byte = [0u8];
    newer_file.read_exact_at(&mut byte, at).expect("read");
    newer_file
        .write_all_at(&[byte[0] ^ 0x5A], at)
        .expect("write");
    let walk = spilled.for_each(|_, _, _| Ok::<(), io::Error>(()));
    assert_eq!(
        walk.expect_err("damaged").kind(),
        io::ErrorKind::InvalidData
    );
    let mut encoder = spilled.encoder();
    let failed = loop {
        match encoder.encode_next(&mut Vec::new()) {
            Ok(true) => {}
            Ok(false) => panic!("a damaged run encoded whole"),
            Err(e) => break e,
        }
    };
    assert_eq!(failed.kind(), io::ErrorKind::InvalidData);

    // Damaged before: the commit is refused when it is made.
    let tables = runs(dir.path());
    let damaged = &tables[1].1[0].file;
    damaged
        .write_all_at(&[0xFF; 4], HEADER_LEN as u64)
        .expect("write");
    let refused = SpilledWrites::new(tables).expect_err("damaged");
    assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
}

/// A run's key filter passes every key the run holds and few it does not (about 1% by
/// design; under 3% here), so a point read of a key a run lacks rarely reads its block.
#[test]
fn a_runs_key_filter_passes_its_keys_and_few_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(11, 5_000);
    let run = write(dir.path(), &m);
    assert!(m.keys().all(|k| run.filter.may_hold(key_hash(k))));
    let mut next = xorshift(13);
    let absent: Vec<Vec<u8>> = (0..20_000)
        .map(|_| (0..41).map(|_| next() as u8).collect())
        .collect();
    let passed = absent
        .iter()
        .filter(|k| run.filter.may_hold(key_hash(k)))
        .count();
    assert!(passed < 600, "{passed} of 20,000 absent keys passed");
    for k in absent.iter().take(200) {
        assert_eq!(
            newest_entry(std::slice::from_ref(&run), k).expect("get"),
            None
        );
    }
}

/// Writes gathered in random order, keys rewritten and deleted, over many budgets: each
/// table reads back what a model says (each key's last write), from memory while the
/// writes fit and from runs once they did not.
#[test]
fn gathered_writes_read_back_each_keys_last_from_memory_or_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (budget, spills) in [(usize::MAX, false), (64 << 10, true)] {
        let mut gather = Gather::new(dir.path().join("spill"), budget);
        let mut models: BTreeMap<&str, Model> = BTreeMap::new();
        let mut next = xorshift(23);
        for _ in 0..20_000 {
            let table = ["b", "a"][(next() % 2) as usize];
            let key = (next() % 3_000).to_be_bytes().to_vec();
            let value =
                (!next().is_multiple_of(5)).then(|| vec![next() as u8; next() as usize % 64]);
            gather.push(table, &key, value.as_deref()).expect("push");
            models.entry(table).or_default().insert(key, value);
        }
        let read: BTreeMap<String, Model> = match gather.finish().expect("finish") {
            Gathered::Memory(tables) => {
                assert!(!spills, "in memory at a budget of {budget}");
                (tables.into_iter())
                    .map(|(name, writes)| {
                        let writes = writes.into_iter();
                        let model = writes.map(|(k, v)| (k.to_vec(), v.map(|v| v.to_vec())));
                        (name.to_string(), model.collect())
                    })
                    .collect()
            }
            Gathered::Spilled(spilled) => {
                assert!(spills, "spilled at a budget of {budget}");
                let mut read: BTreeMap<String, Model> = BTreeMap::new();
                spilled
                    .for_each(|table, key, value| {
                        let model = read.entry(table.to_string()).or_default();
                        model.insert(key.to_vec(), value.map(<[u8]>::to_vec));
                        Ok::<(), io::Error>(())
                    })
                    .expect("read back");
                assert_eq!(
                    spilled.op_count(),
                    models.values().map(BTreeMap::len).sum::<usize>()
                );
                read
            }
        };
        let expected: BTreeMap<String, Model> = (models.into_iter())
            .map(|(t, m)| (t.to_string(), m))
            .collect();
        assert_eq!(read, expected, "budget {budget}");
    }
}
