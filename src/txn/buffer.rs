//! A write transaction's buffered writes: a sorted map per table for reads, and the writes
//! made since the last read appended in order and sorted in at the next read, savepoint
//! use or commit. A transaction that only writes sorts its writes once instead of inserting
//! each into a map of millions (a cache miss a level).

use std::cell::{Cell, UnsafeCell};
use std::collections::BTreeMap;

use crate::bytes::SharedBytes;
use crate::keys::HeadKey;
use crate::sync::DataArc as Arc;

/// A table's buffered writes: key -> value, or `None` for delete. Keys and values are
/// shared with the commit's operations, not copied into them.
pub(super) type TableWrites = BTreeMap<HeadKey, Option<SharedBytes>>;

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
}

impl Buffer {
    /// Appends a write (it is sorted in when the buffer is next read).
    pub(super) fn append(&mut self, table: &str, key: HeadKey, value: Option<SharedBytes>) {
        let tables = self.tables.get_mut();
        let t = match tables.get_mut(table) {
            Some(t) => t,
            None => tables.entry(Arc::from(table)).or_default(),
        };
        t.appended.push((key, value));
        self.unsorted.set(true);
    }

    /// The tables' writes, sorted.
    pub(super) fn sorted(&self) -> impl Iterator<Item = (&Arc<str>, &TableWrites)> + Clone {
        self.sort_in();
        // SAFETY: see `sort_in`; nothing mutates the tables while this borrow lives.
        let tables = unsafe { &*self.tables.get() };
        tables.iter().map(|(name, t)| (name, &t.sorted))
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

/// A table's appended writes sorted into its map.
fn sort_in_table(t: &mut TableBuffer) {
    if t.appended.is_empty() {
        return;
    }
    let mut appended = std::mem::take(&mut t.appended);
    if appended.len() < t.sorted.len() / 4 {
        // Few into many: each where it goes, in the order made (the last wins).
        for (key, value) in appended {
            t.sorted.insert(key, value);
        }
        return;
    }
    // Sorted by key keeping the order made among equal keys, then each key's last.
    appended.sort_by(|a, b| a.0.cmp(&b.0));
    let mut last: Vec<(HeadKey, Option<SharedBytes>)> = Vec::with_capacity(appended.len());
    for entry in appended {
        match last.last_mut() {
            Some(prev) if prev.0 == entry.0 => *prev = entry,
            _ => last.push(entry),
        }
    }
    // Merged with the map's (an appended write wins), built at once from the sorted run.
    let old = std::mem::take(&mut t.sorted);
    t.sorted = MergeNewer {
        old: old.into_iter().peekable(),
        new: last.into_iter().peekable(),
    }
    .collect();
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
        let mut model: BTreeMap<String, BTreeMap<HeadKey, Option<Vec<u8>>>> = BTreeMap::new();
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
            assert_eq!(buffer.sorted().count(), model.len());
        }
    }
}
