//! A write transaction's buffered writes: a sorted map per table for reads, and the writes
//! made since the last read appended in order and sorted in at the next read, savepoint
//! use or commit. A transaction that only writes sorts its writes once instead of inserting
//! each into a map of millions (a cache miss a level).

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::bytes::SharedBytes;
use crate::keys::{as_slice_bound, in_bounds, HeadKey, KeyBounds};
use crate::spill::{last_writes, MergedRuns, Run, RunWriter, ENTRY_OVERHEAD};
use crate::sync::DataArc as Arc;

/// A table's buffered writes: key -> value, or `None` for delete. Keys and values are
/// shared with the commit's operations, not copied into them.
pub(super) type TableWrites = BTreeMap<HeadKey, Option<SharedBytes>>;

/// A table's writes in key order, each key's last: what a commit takes.
pub(super) type TableRun = Vec<(HeadKey, Option<SharedBytes>)>;

type Tables = BTreeMap<Arc<str>, TableBuffer>;

#[derive(Debug, Default)]
struct TableBuffer {
    sorted: TableWrites,
    /// Writes after those in `sorted`, in the order they were made.
    appended: Vec<(HeadKey, Option<SharedBytes>)>,
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub(super) struct Buffer {
    tables: UnsafeCell<Tables>,
    /// Some table's `appended` holds writes.
    unsorted: Cell<bool>,
    /// Writes moved out of memory ([`Buffer::spill`]): each table's runs, oldest first,
    /// each older than what memory holds of the table.
    spilled: BTreeMap<Arc<str>, Vec<Run>>,
    /// What the writes in memory take (each its key, value and [`ENTRY_OVERHEAD`]).
    bytes: usize,
}

/// Where spilled writes are taken for a commit: what memory holds, table by table, and the
/// runs spilled before.
pub(super) struct Taken {
    pub memory: Vec<(Arc<str>, TableRun)>,
    pub spilled: BTreeMap<Arc<str>, Vec<Run>>,
}

impl Buffer {
    /// Bytes the writes in memory take (see [`ENTRY_OVERHEAD`]).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counts a write made in place (with a savepoint, through [`Buffer::sorted_mut`]).
    pub(super) fn count_write(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.bytes += key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD;
    }

    /// `table`'s spilled runs, oldest first.
    pub(super) fn spilled(&self, table: &str) -> &[Run] {
        self.spilled.get(table).map_or(&[], Vec::as_slice)
    }

    /// Moves every write in memory into a run a table, in an unlinked file in `dir`. On
    /// error the writes of the table that failed (and of those after it) stay in memory.
    pub(super) fn spill(&mut self, dir: &Path) -> io::Result<()> {
        let tables = std::mem::take(self.tables.get_mut());
        self.unsorted.set(false);
        let mut tables = tables.into_iter();
        while let Some((name, t)) = tables.next() {
            let run = t.into_run();
            if run.is_empty() {
                continue;
            }
            match write_run(dir, &run) {
                Ok(written) => {
                    tracing::debug!(
                        table = &*name,
                        entries = written.len(),
                        bytes = written.file_bytes(),
                        "a transaction's writes spilled"
                    );
                    self.spilled.entry(name).or_default().push(written);
                }
                Err(e) => {
                    // Put back as a sorted list, which the next read or commit takes as is.
                    let kept = std::iter::once((name, run))
                        .chain(tables.map(|(name, t)| (name, t.into_run())))
                        .map(|(name, run)| {
                            let table = TableBuffer {
                                sorted: TableWrites::new(),
                                appended: run,
                            };
                            (name, table)
                        });
                    *self.tables.get_mut() = kept.collect();
                    self.unsorted.set(true);
                    self.bytes = self.count_memory();
                    return Err(e);
                }
            }
        }
        self.bytes = 0;
        Ok(())
    }

    fn count_memory(&mut self) -> usize {
        let tables = self.tables.get_mut();
        let sorted = tables.values().flat_map(|t| t.sorted.iter());
        let appended = tables
            .values()
            .flat_map(|t| t.appended.iter().map(|(k, v)| (k, v)));
        (sorted.chain(appended))
            .map(|(k, v)| k.bytes().len() + v.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD)
            .sum()
    }

    /// Appends a write (it is sorted in when the buffer is next read).
    pub(super) fn append(&mut self, table: &str, key: HeadKey, value: Option<SharedBytes>) {
        self.count_write(key.bytes(), value.as_deref());
        let tables = self.tables.get_mut();
        let t = match tables.get_mut(table) {
            Some(t) => t,
            None => tables.entry(Arc::from(table)).or_default(),
        };
        t.appended.push((key, value));
        self.unsorted.set(true);
    }

    /// A table's writes, sorted.
    pub(super) fn table(&self, table: &str) -> Option<&TableWrites> {
        self.sort_in();
        // SAFETY: as in `sorted`.
        let tables = unsafe { &*self.tables.get() };
        tables.get(table).map(|t| &t.sorted)
    }

    /// The tables' writes, sorted, to change in place (savepoints and their undo).
    pub(super) fn sorted_mut(&mut self) -> SortedMut<'_> {
        self.sort_in();
        SortedMut(self.tables.get_mut())
    }

    /// The tables' writes in key order, each key's last, taken for a commit (tables left
    /// without writes are left out): a table whose writes were never read back is sorted
    /// from its appended list alone, in place, with no map built.
    pub(super) fn into_runs(self) -> Taken {
        let memory = (self.tables.into_inner().into_iter())
            .map(|(name, t)| (name, t.into_run()))
            .filter(|(_, run)| !run.is_empty())
            .collect();
        Taken {
            memory,
            spilled: self.spilled,
        }
    }

    /// Sorts every table's appended writes in (each key's last write wins).
    ///
    /// It changes the tables through a shared reference, which is sound because it does so
    /// only while `unsorted` is set: only `&mut self` methods set it, and a `&mut self` call
    /// ends every borrow handed out before it, while this clears it before handing out any.
    /// So no reference into the tables (a `&TableWrites`, a range over one) is alive when
    /// they change.
    fn sort_in(&self) {
        if !self.unsorted.get() {
            return;
        }
        // SAFETY: see above.
        let tables = unsafe { &mut *self.tables.get() };
        for t in tables.values_mut() {
            sort_in_table(t);
        }
        self.unsorted.set(false);
    }
}

impl TableBuffer {
    fn into_run(self) -> TableRun {
        let appended = last_writes(self.appended);
        if self.sorted.is_empty() {
            return appended;
        }
        MergeNewer {
            old: self.sorted.into_iter().peekable(),
            new: appended.into_iter().peekable(),
        }
        .collect()
    }
}

/// A table's appended writes sorted into its map.
fn sort_in_table(t: &mut TableBuffer) {
    if t.appended.is_empty() {
        return;
    }
    let appended = std::mem::take(&mut t.appended);
    if appended.len() < t.sorted.len() / 4 {
        // Few into many: each where it goes, in the order made (the last wins).
        for (key, value) in appended {
            t.sorted.insert(key, value);
        }
        return;
    }
    // Merged with the map's (an appended write wins), built at once from the sorted run.
    let last = last_writes(appended);
    let old = std::mem::take(&mut t.sorted);
    t.sorted = MergeNewer {
        old: old.into_iter().peekable(),
        new: last.into_iter().peekable(),
    }
    .collect();
}

/// A sorted run of a table's writes written into a run file in `dir`.
pub(super) fn write_run(dir: &Path, run: &TableRun) -> io::Result<Run> {
    let mut writer = RunWriter::create(dir)?;
    for (key, value) in run {
        writer.push(key.bytes(), value.as_deref())?;
    }
    writer.finish()
}

/// Entries read back from spilled runs, kept so that reads can lend them for as long as
/// the transaction is borrowed; emptied only through `&mut`, which ends every such loan.
#[derive(Debug, Default)]
pub(super) struct ReadBack(RefCell<Vec<Box<[u8]>>>);

impl ReadBack {
    pub(super) fn keep(&self, bytes: Vec<u8>) -> &[u8] {
        let kept = bytes.into_boxed_slice();
        let at: *const [u8] = &*kept;
        self.0.borrow_mut().push(kept);
        // SAFETY: a box's bytes do not move when the list grows, and stay until `clear`,
        // which takes `&mut self`: no loan handed out here outlives it.
        unsafe { &*at }
    }

    pub(super) fn clear(&mut self) {
        self.0.get_mut().clear();
    }
}

/// A walk over a table's spilled runs within bounds, its entries kept in a [`ReadBack`].
pub(super) struct SpilledWalk<'t> {
    merged: MergedRuns<'t>,
    /// The walk's bounds: it starts inside them, so it ends at the first key outside.
    bounds: KeyBounds,
    kept: &'t ReadBack,
    ended: bool,
}

impl<'t> SpilledWalk<'t> {
    pub(super) fn new(
        runs: &'t [Run],
        bounds: &KeyBounds,
        reverse: bool,
        kept: &'t ReadBack,
    ) -> Self {
        let from = if reverse { &bounds.1 } else { &bounds.0 };
        SpilledWalk {
            merged: MergedRuns::of(runs, as_slice_bound(from), reverse),
            bounds: bounds.clone(),
            kept,
            ended: false,
        }
    }
}

impl<'t> Iterator for SpilledWalk<'t> {
    /// A key, and its value or `None` for a delete.
    type Item = io::Result<(&'t [u8], Option<&'t [u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let (key, value) = match self.merged.next()? {
            Ok(entry) => entry,
            Err(e) => return Some(Err(e)),
        };
        if !in_bounds(&self.bounds, &key) {
            self.ended = true;
            return None;
        }
        let key = self.kept.keep(key);
        let value = value.map(|v| self.kept.keep(v));
        Some(Ok((key, value)))
    }
}

/// Two sorted runs of distinct keys merged in order, `new`'s entry where both hold a key.
struct MergeNewer<A: Iterator, B: Iterator> {
    old: std::iter::Peekable<A>,
    new: std::iter::Peekable<B>,
}

impl<A, B> Iterator for MergeNewer<A, B>
where
    A: Iterator<Item = (HeadKey, Option<SharedBytes>)>,
    B: Iterator<Item = (HeadKey, Option<SharedBytes>)>,
{
    type Item = (HeadKey, Option<SharedBytes>);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.old.peek(), self.new.peek()) {
            (Some(o), Some(n)) => match o.0.cmp(&n.0) {
                std::cmp::Ordering::Less => self.old.next(),
                std::cmp::Ordering::Equal => {
                    self.old.next();
                    self.new.next()
                }
                std::cmp::Ordering::Greater => self.new.next(),
            },
            (Some(_), None) => self.old.next(),
            (None, _) => self.new.next(),
        }
    }
}

/// The sorted tables, borrowed to change (see [`Buffer::sorted_mut`]).
pub(super) struct SortedMut<'a>(&'a mut Tables);

impl SortedMut<'_> {
    /// A table's writes, created empty if missing, and the table's name as kept.
    pub(super) fn table(&mut self, table: &str) -> (Arc<str>, &mut TableWrites) {
        let name = match self.0.get_key_value(table) {
            Some((name, _)) => name.clone(),
            None => Arc::from(table),
        };
        (name.clone(), self.table_named(name))
    }

    /// As [`SortedMut::table`], by the name as kept.
    pub(super) fn table_named(&mut self, table: Arc<str>) -> &mut TableWrites {
        &mut self.0.entry(table).or_default().sorted
    }

    /// Drops tables left without writes.
    pub(super) fn drop_empty(&mut self) {
        self.0.retain(|_, t| !t.sorted.is_empty());
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;

    fn key(i: u64) -> HeadKey {
        HeadKey::new(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes()[..(i % 8 + 1) as usize])
    }

    /// Random writes appended, read back in between (a few, or many, since the last read),
    /// and changed in place: the buffer always holds what a map written in order holds.
    #[test]
    fn appended_writes_read_back_as_a_map_written_in_order() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut buffer = Buffer::default();
        let mut model: BTreeMap<String, ModelTable> = BTreeMap::new();
        for round in 0..300 {
            let writes = if round % 10 == 0 { 2_000 } else { next() % 40 };
            for _ in 0..writes {
                let table = ["a", "b"][(next() % 2) as usize];
                let k = key(next() % 700);
                let value = (next() % 5 != 0).then(|| next().to_be_bytes().to_vec());
                let shared = value.as_deref().map(SharedBytes::copy_of);
                // Some rounds change the map in place too (which sorts the appended in).
                if round % 7 == 3 && next() % 3 == 0 {
                    let mut sorted = buffer.sorted_mut();
                    sorted.table(table).1.insert(k.clone(), shared);
                } else {
                    buffer.append(table, k.clone(), shared);
                }
                model.entry(table.into()).or_default().insert(k, value);
            }
            for (table, want) in &model {
                let got: Vec<(HeadKey, Option<Vec<u8>>)> = buffer
                    .table(table)
                    .expect("written")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_deref().map(<[u8]>::to_vec)))
                    .collect();
                let want: Vec<_> = want.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                assert_eq!(got, want, "round {round}, table {table}");
            }
        }
        // Writes appended after the last read, then taken for a commit.
        for _ in 0..500 {
            let table = ["a", "b", "c"][(next() % 3) as usize];
            let k = key(next() % 700);
            let value = (next() % 5 != 0).then(|| next().to_be_bytes().to_vec());
            buffer.append(table, k.clone(), value.as_deref().map(SharedBytes::copy_of));
            model.entry(table.into()).or_default().insert(k, value);
        }
        assert_runs(buffer, &model);
    }

    /// What a model table holds: each key's last write.
    type ModelTable = BTreeMap<HeadKey, Option<Vec<u8>>>;

    fn assert_runs(buffer: Buffer, model: &BTreeMap<String, ModelTable>) {
        let got: Vec<(String, Vec<_>)> = buffer
            .into_runs()
            .memory
            .into_iter()
            .map(|(table, run)| {
                let run = run
                    .into_iter()
                    .map(|(k, v)| (k, v.as_deref().map(<[u8]>::to_vec)));
                (table.to_string(), run.collect())
            })
            .collect();
        let want: Vec<_> = model
            .iter()
            .map(|(t, w)| {
                (
                    t.clone(),
                    w.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                )
            })
            .collect();
        assert_eq!(got, want);
    }

    /// A commit takes each key's last write in key order, however the writes came: in
    /// ascending order (checked, not sorted), ascending with repeats, descending, or into
    /// a table whose map holds writes already.
    #[test]
    fn a_commit_takes_each_keys_last_write_in_key_order() {
        let k = |i: u64| HeadKey::new(&i.to_be_bytes());
        let orders: [&[u64]; 4] = [&[1, 2, 3, 9], &[1, 2, 2, 3, 3, 3], &[9, 3, 2, 1, 3], &[]];
        for (case, order) in orders.iter().enumerate() {
            for read_first in [false, true] {
                let mut buffer = Buffer::default();
                let mut model: BTreeMap<String, ModelTable> = BTreeMap::new();
                if read_first {
                    for i in [2, 5] {
                        buffer.append("t", k(i), None);
                        model.entry("t".into()).or_default().insert(k(i), None);
                    }
                    assert!(buffer.table("t").is_some());
                }
                for (at, &i) in order.iter().enumerate() {
                    let value = vec![case as u8, at as u8];
                    buffer.append("t", k(i), Some(SharedBytes::copy_of(&value)));
                    model
                        .entry("t".into())
                        .or_default()
                        .insert(k(i), Some(value));
                }
                assert_runs(buffer, &model);
            }
        }
    }
}
