//! Checksums of stored entries. In store formats 2 and 3 every value walmdb keeps in LMDB ends in a
//! CRC32 over, in order: its LMDB database's name, the key's length (u32, little-endian),
//! the key and the value. The name makes an entry moved into another table fail, the length
//! makes a shifted key/value boundary fail. Reads check it and hand out the value without
//! it, still borrowed from LMDB's map.
//!
//! ```text
//! Format: stored value = { value: [u8] | crc: u32 }
//!         crc = crc32(db_name ++ u32_le(key.len()) ++ key ++ value)
//! ```
//!
//! Format 1 had `crc = crc32(key ++ value)`; it is read only to migrate a store.

/// Bytes of the checksum after every stored value.
pub const CRC_LEN: usize = 4;

/// The checksum state after a database's name: where every checksum in it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seed(u32);

impl Seed {
    /// The seed of the LMDB database named `lmdb_name`.
    pub fn of(lmdb_name: &str) -> Seed {
        Seed(crc32fast::hash(lmdb_name.as_bytes()))
    }

    /// The seed of user table `table`'s LMDB database.
    pub fn of_table(table: &str) -> Seed {
        let mut h = crc32fast::Hasher::new();
        h.update(crate::layout::LMDB_TABLE_PREFIX.as_bytes());
        h.update(table.as_bytes());
        Seed(h.finalize())
    }

    fn crc(self, key: &[u8], value: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new_with_initial(self.0);
        h.update(&(key.len() as u32).to_le_bytes());
        h.update(key);
        h.update(value);
        h.finalize()
    }

    /// Writes `value` and its checksum into `out`.
    pub fn seal(self, out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        out.clear();
        out.extend_from_slice(value);
        out.extend_from_slice(&self.crc(key, value).to_le_bytes());
    }

    /// The value stored under `key`, or `None` if its checksum does not hold.
    #[inline]
    pub fn open<'a>(self, key: &[u8], stored: &'a [u8]) -> Option<&'a [u8]> {
        let split = stored.len().checked_sub(CRC_LEN)?;
        let (value, crc) = stored.split_at(split);
        (crc == self.crc(key, value).to_le_bytes()).then_some(value)
    }
}

/// The value stored, its checksum cut off unchecked; `None` if too short to hold one.
#[inline]
pub(crate) fn strip(stored: &[u8]) -> Option<&[u8]> {
    stored.get(..stored.len().checked_sub(CRC_LEN)?)
}

/// A format 1 value, if its checksum (CRC32 of key ++ value) holds.
pub(crate) fn open_v1<'a>(key: &[u8], stored: &'a [u8]) -> Option<&'a [u8]> {
    let split = stored.len().checked_sub(CRC_LEN)?;
    let (value, crc) = stored.split_at(split);
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(value);
    (crc == h.finalize().to_le_bytes()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_under_its_own_table_and_key_split() {
        let t = Seed::of_table("a");
        assert_eq!(t, Seed::of("t.a"));
        let mut stored = Vec::new();
        t.seal(&mut stored, b"ab", b"c");
        assert_eq!(t.open(b"ab", &stored), Some(&b"c"[..]));
        // Another table, or the same bytes split differently between key and value.
        assert_eq!(Seed::of("t.b").open(b"ab", &stored), None);
        assert_eq!(t.open(b"a", &stored[..]), None);
        for bit in 0..stored.len() * 8 {
            let mut flipped = stored.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(t.open(b"ab", &flipped), None, "bit {bit}");
        }
        assert_eq!(t.open(b"ab", &stored[..3]), None);
    }

    #[test]
    fn a_format_1_value_opens_with_the_old_checksum() {
        let mut stored = b"value".to_vec();
        let mut h = crc32fast::Hasher::new();
        h.update(b"key");
        h.update(b"value");
        stored.extend_from_slice(&h.finalize().to_le_bytes());
        assert_eq!(open_v1(b"key", &stored), Some(&b"value"[..]));
        assert_eq!(Seed::of("t.x").open(b"key", &stored), None);
    }
}
