//! walmdb's own record of each user table (store format 3): the LSN that created it, the
//! entries it holds and an order-independent digest of them, written in the same LMDB
//! transaction as the entries they count. A scrub compares them with what it walks, so a
//! lost entry, a stray one or a stale copy shows up even when every entry left verifies.
//!
//! ```text
//! Format: walmdb.tables value = { created_lsn: u64 | entries: u64 | digest: u64 | crc: u32 }
//!         digest = wrapping sum over the table's entries of mix64(the entry's stored crc)
//! ```
//!
//! The stored CRC already covers the table, the key and the value, so the digest needs no
//! hashing of its own; `mix64` spreads its 32 bits so that sums of different sets differ.
//! Formats 1 and 2 held `created_lsn` alone.

use heed::RoTxn;

use super::{
    apply_err, lmdb_err, open_stored, tables_seed, ApplyError, Dbi, LmdbReadTxn, Store,
    STORE_FORMAT_VERSION, TABLES_DB,
};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::seal::CRC_LEN;

/// A table's entries and their digest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub entries: u64,
    pub digest: u64,
}

impl Tally {
    /// Counts stored entry `stored` (value and CRC, as LMDB holds it).
    pub fn add(&mut self, stored: &[u8]) {
        self.entries = self.entries.wrapping_add(1);
        self.digest = self.digest.wrapping_add(entry_digest(stored));
    }

    /// Uncounts an entry whose [`entry_digest`] is `digest`.
    fn remove(&mut self, digest: u64) {
        self.entries = self.entries.wrapping_sub(1);
        self.digest = self.digest.wrapping_sub(digest);
    }
}

/// One entry's share of a table's digest: its stored CRC, mixed (all of it when shorter).
pub(crate) fn entry_digest(stored: &[u8]) -> u64 {
    let tail = &stored[stored.len().saturating_sub(CRC_LEN)..];
    let mut crc = [0u8; 8];
    crc[..tail.len()].copy_from_slice(tail);
    mix64(u64::from_le_bytes(crc) | ((tail.len() as u64) << 40))
}

/// SplitMix64's finalizer: a bijection on u64 with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A table's entry in `walmdb.tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableRecord {
    pub created: Lsn,
    /// `None` in formats 1 and 2, which did not keep one.
    pub tally: Option<Tally>,
}

impl TableRecord {
    /// The record stored under table name `name`, if its checksum holds as store format
    /// `format` seals it and its length is that format's.
    pub fn decode(format: u32, name: &[u8], stored: &[u8]) -> Option<TableRecord> {
        let value = open_stored(format, tables_seed(), name, stored)?;
        let word = |i: usize| {
            Some(u64::from_le_bytes(
                value.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        match (format, value.len()) {
            (1 | 2, 8) => Some(TableRecord {
                created: word(0)?,
                tally: None,
            }),
            (3.., 24) => Some(TableRecord {
                created: word(0)?,
                tally: Some(Tally {
                    entries: word(1)?,
                    digest: word(2)?,
                }),
            }),
            _ => None,
        }
    }

    /// Writes the record of table `name` into `out`, as this build's format seals it.
    pub fn seal(created: Lsn, tally: Tally, name: &[u8], out: &mut Vec<u8>) {
        let mut value = [0u8; 24];
        value[..8].copy_from_slice(&created.to_le_bytes());
        value[8..16].copy_from_slice(&tally.entries.to_le_bytes());
        value[16..].copy_from_slice(&tally.digest.to_le_bytes());
        tables_seed().seal(out, name, &value);
    }
}

/// Puts `stored` under `key` and counts the change in `tally`: one lookup when the key is
/// new, two when it replaces an entry (whose share the tally loses).
pub(crate) fn put_tallied(
    db: Dbi,
    txn: &mut heed::RwTxn<'_>,
    key: &[u8],
    stored: &[u8],
    tally: &mut Tally,
) -> heed::Result<()> {
    let replaced = db.get_or_put(txn, key, stored)?.map(entry_digest);
    if let Some(old) = replaced {
        db.put(txn, key, stored)?;
        tally.remove(old);
    }
    tally.add(stored);
    Ok(())
}

/// Deletes `key`, if present, and uncounts it in `tally`.
pub(crate) fn delete_tallied(
    db: Dbi,
    txn: &mut heed::RwTxn<'_>,
    key: &[u8],
    tally: &mut Tally,
) -> heed::Result<()> {
    let Some(old) = db.get(txn, key)?.map(entry_digest) else {
        return Ok(());
    };
    db.delete(txn, key)?;
    tally.remove(old);
    Ok(())
}

impl Store {
    /// The entries LMDB holds in table `name` as `txn` sees it, from the table's tally
    /// (kept in the LMDB transaction that changes them); `None` when the table is not listed
    /// (never created, or dropped: its handle is then empty).
    pub(crate) fn entries(&self, txn: &LmdbReadTxn<'_>, name: &str) -> Result<Option<u64>> {
        let Some(stored) = self
            .tables
            .get(txn, name.as_bytes())
            .map_err(lmdb_err("read"))?
        else {
            return Ok(None);
        };
        match TableRecord::decode(STORE_FORMAT_VERSION, name.as_bytes(), stored) {
            Some(TableRecord {
                tally: Some(tally), ..
            }) => Ok(Some(tally.entries)),
            _ => Err(Error::CorruptEntry {
                table: TABLES_DB.into(),
                key: name.as_bytes().to_vec(),
            }),
        }
    }

    /// Table `name`'s record as `txn` sees it: `(created LSN, tally)`, `None` when not listed.
    pub(super) fn table_record(
        &self,
        txn: &RoTxn<'_>,
        name: &str,
    ) -> Result<Option<(Lsn, Tally)>, ApplyError> {
        let Some(stored) = self
            .tables
            .get(txn, name.as_bytes())
            .map_err(apply_err("read"))?
        else {
            return Ok(None);
        };
        match TableRecord::decode(STORE_FORMAT_VERSION, name.as_bytes(), stored) {
            Some(TableRecord {
                created,
                tally: Some(tally),
            }) => Ok(Some((created, tally))),
            _ => Err(ApplyError::Other(Error::CorruptEntry {
                table: TABLES_DB.into(),
                key: name.as_bytes().to_vec(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_every_flipped_bit_is_refused() {
        let tally = Tally {
            entries: 7,
            digest: 0xdead_beef_0123_4567,
        };
        let mut stored = Vec::new();
        TableRecord::seal(42, tally, b"users", &mut stored);
        let want = TableRecord {
            created: 42,
            tally: Some(tally),
        };
        assert_eq!(TableRecord::decode(3, b"users", &stored), Some(want));
        assert_eq!(TableRecord::decode(3, b"other", &stored), None);
        for bit in 0..stored.len() * 8 {
            let mut flipped = stored.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                TableRecord::decode(3, b"users", &flipped),
                None,
                "bit {bit}"
            );
        }
        // A format 2 record holds the created LSN alone.
        let mut v2 = Vec::new();
        tables_seed().seal(&mut v2, b"users", &42u64.to_le_bytes());
        let old = TableRecord::decode(2, b"users", &v2).unwrap();
        assert_eq!((old.created, old.tally), (42, None));
        assert_eq!(TableRecord::decode(3, b"users", &v2), None);
    }

    #[test]
    fn the_digest_depends_on_the_set_of_entries_not_their_order() {
        let entries: Vec<Vec<u8>> = (0u32..100)
            .map(|i| {
                let mut stored = Vec::new();
                crate::seal::Seed::of_table("t").seal(&mut stored, &i.to_be_bytes(), b"v");
                stored
            })
            .collect();
        let tally_of = |set: &mut dyn Iterator<Item = &Vec<u8>>| {
            let mut t = Tally::default();
            set.for_each(|s| t.add(s));
            t
        };
        let all = tally_of(&mut entries.iter());
        assert_eq!(all, tally_of(&mut entries.iter().rev()));
        assert_eq!(all.entries, 100);
        // Any one entry missing, or replaced by another, changes the digest.
        for skip in 0..entries.len() {
            let mut without = entries
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, s)| s);
            assert_ne!(tally_of(&mut without).digest, all.digest);
        }
        let mut removed = all;
        removed.remove(entry_digest(&entries[3]));
        let mut without_3 = entries
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, s)| s);
        assert_eq!(removed, tally_of(&mut without_3));
    }
}
