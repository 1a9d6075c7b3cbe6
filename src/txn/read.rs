//! Read transactions.

use crate::error::Result;
use crate::keys::{prefix_bounds, KeyRange};
use crate::lsn::Lsn;

use super::{Iter, Snapshot};

/// A read transaction: a consistent snapshot of every commit that returned before it began.
/// Values are borrowed from the transaction without copying. It is `Send`; end it (drop it)
/// soon, since it pins LMDB pages and unapplied versions.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let db = walmdb::Db::open(dir.path())?;
/// db.update(|t| { t.put("users", b"alice", b"1")?; t.put("users", b"bob", b"2") })?;
/// let read = db.read()?;
/// assert_eq!(read.get("users", b"alice")?, Some(&b"1"[..]));
/// for entry in read.range("users", b"a"..b"c")? {
///     let (key, value) = entry?; // borrowed from the snapshot
///     assert!(!key.is_empty() && !value.is_empty());
/// }
/// assert_eq!(read.count("users")?, 2);
/// # Ok::<(), walmdb::Error>(())
/// ```
#[derive(Debug)]
pub struct ReadTxn<'db> {
    snap: Snapshot<'db>,
    /// The handle an owned transaction ([`Db::read_owned`](crate::Db::read_owned)) keeps,
    /// so the engine its snapshot borrows outlives it. Declared after `snap`: dropped after.
    _handle: Option<crate::Db>,
}

impl<'db> ReadTxn<'db> {
    pub(crate) fn new(snap: Snapshot<'db>) -> Self {
        ReadTxn {
            snap,
            _handle: None,
        }
    }

    /// A transaction on `snap` that keeps `handle`, whose engine `snap` borrows.
    pub(crate) fn owning(snap: Snapshot<'db>, handle: crate::Db) -> Self {
        ReadTxn {
            snap,
            _handle: Some(handle),
        }
    }

    /// The LSN of the newest commit this transaction sees.
    pub fn lsn(&self) -> Lsn {
        self.snap.lsn()
    }

    /// The value of `key` in `table`, borrowed from the transaction. A table that does not
    /// exist reads as empty.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<&[u8]>> {
        self.snap.get(table, key)
    }

    /// The number of entries in `table` (0 if it does not exist). LMDB keeps each table's
    /// count with its entries, so this costs a lookup per key of the table that commits
    /// not yet applied to LMDB changed, not a walk of the table. Those keys are walked a
    /// few hundred at a time, so commits are not held up by a count over a large backlog.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = walmdb::Db::open(dir.path())?;
    /// db.update(|t| { t.put("t", b"a", b"1")?; t.put("t", b"b", b"2") })?;
    /// assert_eq!(db.read()?.count("t")?, 2);
    /// # Ok::<(), walmdb::Error>(())
    /// ```
    pub fn count(&self, table: &str) -> Result<u64> {
        self.snap.count(table)
    }

    /// True if `table` exists in this snapshot.
    pub fn table_exists(&self, table: &str) -> Result<bool> {
        self.snap.table_exists(table)
    }

    /// The entries of `table` with keys in `range`, in ascending key order.
    pub fn range(&self, table: &str, range: impl KeyRange) -> Result<Iter<'_>> {
        self.snap.iter(table, range.key_bounds(), false)
    }

    /// The entries of `table` with keys in `range`, in descending key order.
    pub fn rev_range(&self, table: &str, range: impl KeyRange) -> Result<Iter<'_>> {
        self.snap.iter(table, range.key_bounds(), true)
    }

    /// The entries of `table` whose keys start with `prefix`, ascending.
    pub fn prefix(&self, table: &str, prefix: &[u8]) -> Result<Iter<'_>> {
        self.snap.iter(table, prefix_bounds(prefix), false)
    }

    /// The entries of `table` whose keys start with `prefix`, descending.
    pub fn rev_prefix(&self, table: &str, prefix: &[u8]) -> Result<Iter<'_>> {
        self.snap.iter(table, prefix_bounds(prefix), true)
    }

    /// The entry of `table` with the smallest key (`None`: the table is empty or does not
    /// exist).
    pub fn first(&self, table: &str) -> Result<Option<(&[u8], &[u8])>> {
        self.end(table, false)
    }

    /// The entry of `table` with the largest key.
    pub fn last(&self, table: &str) -> Result<Option<(&[u8], &[u8])>> {
        self.end(table, true)
    }

    /// The first entry of a walk from an end, which it teaches to the table (`crate::ends`).
    fn end(&self, table: &str, reverse: bool) -> Result<Option<(&[u8], &[u8])>> {
        let all = (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        let mut walk = self.snap.iter(table, all, reverse)?;
        let entry = walk.next().transpose()?;
        if let Some((key, _)) = entry {
            walk.teach_first(key);
        }
        Ok(entry)
    }
}
