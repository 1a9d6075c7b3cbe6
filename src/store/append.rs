//! The append path of [`Store::apply`](super::Store::apply): a put whose key is above every
//! key its table holds is written in LMDB's append mode, which finds its place by walking
//! the tree's right edge (no key search) and, when the last page is full, moves the new key
//! alone to a new page (a plain put there splits off the page's last entry with it), so a
//! sorted load leaves its pages fuller. It replaces nothing, so the tally counts it without
//! a lookup; a delete above that key has nothing to delete.

use heed::{PutFlags, RoTxn};

use super::tally::Tally;
use super::Dbi;

/// What an apply batch knows of the greatest key one table holds in LMDB.
///
/// Keys compare as LMDB's default comparator orders them (bytes as `memcmp` does, then the
/// shorter first), which is the order of Rust's `[u8]`.
#[derive(Debug)]
pub(super) enum Greatest {
    /// Not looked up yet in this batch.
    Unknown,
    /// No key of the table is above this one (`None`: the table is empty). It may be above
    /// the true greatest key once that key is deleted; a key between the two then takes the
    /// normal path, which is only slower. Copied from the batch's ops after an append, into
    /// the buffer it holds already.
    AtMost(Option<Vec<u8>>),
}

impl Greatest {
    /// True when `key` is above every key of table `db`; looks the greatest key up the
    /// first time in a batch.
    pub fn is_below(&mut self, key: &[u8], db: Dbi, txn: &RoTxn<'_>) -> heed::Result<bool> {
        if let Greatest::Unknown = self {
            let last = db.last(txn)?.map(|(k, _)| k.to_vec());
            *self = Greatest::AtMost(last);
        }
        Ok(match self {
            Greatest::AtMost(Some(greatest)) => key > &greatest[..],
            _ => true,
        })
    }

    /// The table was emptied: every key is above.
    pub fn cleared(&mut self) {
        *self = Greatest::AtMost(None);
    }

    fn set(&mut self, key: &[u8]) {
        match self {
            Greatest::AtMost(Some(greatest)) => {
                greatest.clear();
                greatest.extend_from_slice(key);
            }
            _ => *self = Greatest::AtMost(Some(key.to_vec())),
        }
    }
}

/// Appends `stored` under `key`, which is above every key of table `db` ([`Greatest`] says
/// so), counts it in `tally`, and makes it `greatest`. LMDB refuses (`MDB_KEYEXIST`) an
/// append that is not above its last key, so a wrong bound fails the batch, never
/// misplaces a key.
pub(super) fn append_tallied(
    db: Dbi,
    txn: &mut heed::RwTxn<'_>,
    key: &[u8],
    stored: &[u8],
    tally: &mut Tally,
    greatest: &mut Greatest,
) -> heed::Result<()> {
    db.put_with_flags(txn, PutFlags::APPEND, key, stored)?;
    tally.add(stored);
    greatest.set(key);
    Ok(())
}
