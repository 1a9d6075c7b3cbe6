//! Typed tables: a table's name with the codecs of its keys and values, defined once
//! ([`TableDef`]) and opened in a transaction ([`ReadTxn::open_table`],
//! [`WriteTxn::open_table`]). The byte-level API stays beside it.
//!
//! ```
//! use walmdb::codec::{Str, U64};
//! use walmdb::TableDef;
//!
//! const VISITS: TableDef<Str, U64> = TableDef::new("visits");
//!
//! # let dir = tempfile::tempdir()?;
//! # let db = walmdb::Db::open(dir.path())?;
//! db.update(|txn| {
//!     let mut visits = txn.open_table(&VISITS)?;
//!     let n = visits.get("/home")?.unwrap_or(0);
//!     visits.put("/home", &(n + 1))
//! })?;
//! let read = db.read()?;
//! let visits = read.open_table(&VISITS)?;
//! assert_eq!(visits.get("/home")?, Some(1));
//! for entry in visits.range("/a".."/z")? {
//!     let (page, n) = entry?;
//!     println!("{page}: {n}");
//! }
//! # Ok::<(), walmdb::Error>(())
//! ```

use std::borrow::Cow;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use crate::error::{Error, Result};
use crate::limits::check_table_name;
use crate::txn::{Iter, ReadTxn, WriteIter, WriteTxn};

/// How one kind of key or value is stored as bytes.
///
/// Keys are kept in the order of their encoded bytes: a key codec whose bytes sort as its
/// values do (the built-in integers, `Str`, `Bytes`, `Array`) gives ranges in value order.
pub trait Codec {
    /// What is written (`put` borrows it).
    type Item: ?Sized;
    /// What a read returns; it may borrow the stored bytes (as `&str` does).
    type Decoded<'a>;
    /// The item's bytes.
    fn encode(item: &Self::Item) -> Result<Cow<'_, [u8]>>;
    /// The item stored as `bytes`; `Error::Codec` when they are not one.
    fn decode(bytes: &[u8]) -> Result<Self::Decoded<'_>>;
}

/// The built-in codecs.
pub mod codec {
    use super::*;

    /// The error of bytes a codec cannot decode.
    pub(crate) fn undecodable(codec: &'static str, reason: String) -> Error {
        Error::Codec { codec, reason }
    }

    /// Bytes as they are.
    #[derive(Debug, Clone, Copy)]
    pub enum Bytes {}

    impl Codec for Bytes {
        type Item = [u8];
        type Decoded<'a> = &'a [u8];
        fn encode(item: &[u8]) -> Result<Cow<'_, [u8]>> {
            Ok(Cow::Borrowed(item))
        }
        fn decode(bytes: &[u8]) -> Result<&[u8]> {
            Ok(bytes)
        }
    }

    /// UTF-8 text, read back borrowed.
    #[derive(Debug, Clone, Copy)]
    pub enum Str {}

    impl Codec for Str {
        type Item = str;
        type Decoded<'a> = &'a str;
        fn encode(item: &str) -> Result<Cow<'_, [u8]>> {
            Ok(Cow::Borrowed(item.as_bytes()))
        }
        fn decode(bytes: &[u8]) -> Result<&str> {
            std::str::from_utf8(bytes).map_err(|e| undecodable("Str", e.to_string()))
        }
    }

    /// Exactly `N` bytes, read back borrowed.
    #[derive(Debug, Clone, Copy)]
    pub enum Array<const N: usize> {}

    impl<const N: usize> Codec for Array<N> {
        type Item = [u8; N];
        type Decoded<'a> = &'a [u8; N];
        fn encode(item: &[u8; N]) -> Result<Cow<'_, [u8]>> {
            Ok(Cow::Borrowed(item))
        }
        fn decode(bytes: &[u8]) -> Result<&[u8; N]> {
            bytes
                .try_into()
                .map_err(|_| undecodable("Array", format!("{} bytes, not {N}", bytes.len())))
        }
    }

    macro_rules! big_endian {
        ($($codec:ident: $int:ty, $flip:expr, $doc:literal;)*) => {$(
            #[doc = $doc]
            #[derive(Debug, Clone, Copy)]
            pub enum $codec {}

            impl Codec for $codec {
                type Item = $int;
                type Decoded<'a> = $int;
                fn encode(item: &$int) -> Result<Cow<'_, [u8]>> {
                    Ok(Cow::Owned((*item ^ $flip).to_be_bytes().to_vec()))
                }
                fn decode(bytes: &[u8]) -> Result<$int> {
                    let raw = bytes.try_into().map_err(|_| {
                        undecodable(
                            stringify!($codec),
                            format!("{} bytes, not {}", bytes.len(), size_of::<$int>()),
                        )
                    })?;
                    Ok(<$int>::from_be_bytes(raw) ^ $flip)
                }
            }
        )*};
    }

    big_endian! {
        U8: u8, 0, "A `u8`, one byte.";
        U16: u16, 0, "A `u16`, big-endian: keys sort in numeric order.";
        U32: u32, 0, "A `u32`, big-endian: keys sort in numeric order.";
        U64: u64, 0, "A `u64`, big-endian: keys sort in numeric order.";
        U128: u128, 0, "A `u128`, big-endian: keys sort in numeric order.";
        I8: i8, i8::MIN, "An `i8`, its sign bit flipped: keys sort in numeric order.";
        I16: i16, i16::MIN, "An `i16`, big-endian with its sign bit flipped: keys sort in numeric order.";
        I32: i32, i32::MIN, "An `i32`, big-endian with its sign bit flipped: keys sort in numeric order.";
        I64: i64, i64::MIN, "An `i64`, big-endian with its sign bit flipped: keys sort in numeric order.";
        I128: i128, i128::MIN, "An `i128`, big-endian with its sign bit flipped: keys sort in numeric order.";
    }

    /// Any serde type as JSON (feature `serde`). As a key codec it sorts by the JSON text,
    /// not by value.
    #[cfg(feature = "serde")]
    #[derive(Debug, Clone, Copy)]
    pub struct Json<T>(PhantomData<fn() -> T>);

    #[cfg(feature = "serde")]
    impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec for Json<T> {
        type Item = T;
        type Decoded<'a> = T;
        fn encode(item: &T) -> Result<Cow<'_, [u8]>> {
            serde_json::to_vec(item)
                .map(Cow::Owned)
                .map_err(|e| undecodable("Json", format!("cannot encode: {e}")))
        }
        fn decode(bytes: &[u8]) -> Result<T> {
            serde_json::from_slice(bytes).map_err(|e| undecodable("Json", e.to_string()))
        }
    }
}

/// A table's name and the codecs of its keys (`K`) and values (`V`); define it once, as a
/// constant, and open it in transactions. Reads through it refuse a table that does not
/// exist (`Error::TableNotFound`), so a misspelled name cannot read as empty.
pub struct TableDef<K: Codec, V: Codec> {
    name: &'static str,
    codecs: PhantomData<fn() -> (K, V)>,
}

impl<K: Codec, V: Codec> TableDef<K, V> {
    /// The definition of table `name` (checked when opened).
    pub const fn new(name: &'static str) -> Self {
        TableDef {
            name,
            codecs: PhantomData,
        }
    }

    /// The table's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<K: Codec, V: Codec> Clone for TableDef<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: Codec, V: Codec> Copy for TableDef<K, V> {}

impl<K: Codec, V: Codec> std::fmt::Debug for TableDef<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableDef")
            .field("name", &self.name)
            .finish()
    }
}

/// Byte bounds of a key range.
type ByteBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// A range of typed keys as byte bounds.
fn encode_bounds<'k, K: Codec>(range: &impl RangeBounds<&'k K::Item>) -> Result<ByteBounds>
where
    K::Item: 'k,
{
    let bound = |b: Bound<&&K::Item>| -> Result<Bound<Vec<u8>>> {
        Ok(match b {
            Bound::Included(k) => Bound::Included(K::encode(k)?.into_owned()),
            Bound::Excluded(k) => Bound::Excluded(K::encode(k)?.into_owned()),
            Bound::Unbounded => Bound::Unbounded,
        })
    };
    Ok((bound(range.start_bound())?, bound(range.end_bound())?))
}

/// Typed entries of a range: each key and value decoded.
pub struct TypedIter<'t, I, K, V> {
    inner: I,
    codecs: PhantomData<Codecs<'t, K, V>>,
}

/// What a [`TypedIter`] decodes with, for how long.
type Codecs<'t, K, V> = fn() -> (&'t (), K, V);

impl<'t, I, K, V> Iterator for TypedIter<'t, I, K, V>
where
    I: Iterator<Item = Result<(&'t [u8], &'t [u8])>>,
    K: Codec,
    V: Codec,
{
    type Item = Result<(K::Decoded<'t>, V::Decoded<'t>)>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.inner.next()?.and_then(decode::<K, V>))
    }
}

/// An entry decoded.
fn decode<'t, K: Codec, V: Codec>(
    (key, value): (&'t [u8], &'t [u8]),
) -> Result<(K::Decoded<'t>, V::Decoded<'t>)> {
    Ok((K::decode(key)?, V::decode(value)?))
}

fn typed<'t, I, K, V>(inner: I) -> TypedIter<'t, I, K, V> {
    TypedIter {
        inner,
        codecs: PhantomData,
    }
}

/// A typed table open in a read transaction.
pub struct ReadTable<'t, K: Codec, V: Codec> {
    txn: &'t ReadTxn<'t>,
    name: &'static str,
    codecs: PhantomData<fn() -> (K, V)>,
}

impl<'t, K: Codec, V: Codec> ReadTable<'t, K, V> {
    /// The value of `key`, decoded.
    pub fn get(&self, key: &K::Item) -> Result<Option<V::Decoded<'t>>> {
        let key = K::encode(key)?;
        self.txn.get(self.name, &key)?.map(V::decode).transpose()
    }

    /// The entries with keys in `range`, ascending.
    pub fn range<'k>(
        &self,
        range: impl RangeBounds<&'k K::Item>,
    ) -> Result<TypedIter<'t, Iter<'t>, K, V>>
    where
        K::Item: 'k,
    {
        Ok(typed(
            self.txn.range(self.name, encode_bounds::<K>(&range)?)?,
        ))
    }

    /// The entries with keys in `range`, descending.
    pub fn rev_range<'k>(
        &self,
        range: impl RangeBounds<&'k K::Item>,
    ) -> Result<TypedIter<'t, Iter<'t>, K, V>>
    where
        K::Item: 'k,
    {
        Ok(typed(
            self.txn.rev_range(self.name, encode_bounds::<K>(&range)?)?,
        ))
    }

    /// The entry with the smallest key.
    pub fn first(&self) -> Result<Option<(K::Decoded<'t>, V::Decoded<'t>)>> {
        self.txn.first(self.name)?.map(decode::<K, V>).transpose()
    }

    /// The number of entries (see [`ReadTxn::count`]).
    pub fn count(&self) -> Result<u64> {
        self.txn.count(self.name)
    }

    /// The entry with the largest key.
    pub fn last(&self) -> Result<Option<(K::Decoded<'t>, V::Decoded<'t>)>> {
        self.txn.last(self.name)?.map(decode::<K, V>).transpose()
    }
}

/// A typed table open in a write transaction: reads see the transaction's own writes.
pub struct WriteTable<'t, 'db, K: Codec, V: Codec> {
    txn: &'t mut WriteTxn<'db>,
    name: &'static str,
    codecs: PhantomData<fn() -> (K, V)>,
}

impl<'db, K: Codec, V: Codec> WriteTable<'_, 'db, K, V> {
    /// The value of `key`, decoded: this transaction's own write, else its snapshot's.
    pub fn get(&self, key: &K::Item) -> Result<Option<V::Decoded<'_>>> {
        let key = K::encode(key)?;
        self.txn.get(self.name, &key)?.map(V::decode).transpose()
    }

    /// Writes `value` under `key`.
    pub fn put(&mut self, key: &K::Item, value: &V::Item) -> Result<()> {
        let key = K::encode(key)?;
        let value = V::encode(value)?;
        self.txn.put(self.name, &key, &value)
    }

    /// Deletes `key` (nothing if it is not there).
    pub fn delete(&mut self, key: &K::Item) -> Result<()> {
        let key = K::encode(key)?;
        self.txn.delete(self.name, &key)
    }

    /// The entries with keys in `range`, ascending, this transaction's writes included.
    pub fn range<'k>(
        &self,
        range: impl RangeBounds<&'k K::Item>,
    ) -> Result<TypedIter<'_, WriteIter<'_>, K, V>>
    where
        K::Item: 'k,
    {
        Ok(typed(
            self.txn.range(self.name, encode_bounds::<K>(&range)?)?,
        ))
    }

    /// The entries with keys in `range`, descending, this transaction's writes included.
    pub fn rev_range<'k>(
        &self,
        range: impl RangeBounds<&'k K::Item>,
    ) -> Result<TypedIter<'_, WriteIter<'_>, K, V>>
    where
        K::Item: 'k,
    {
        Ok(typed(
            self.txn.rev_range(self.name, encode_bounds::<K>(&range)?)?,
        ))
    }

    /// The number of entries, this transaction's writes included.
    pub fn count(&self) -> Result<u64> {
        self.txn.count(self.name)
    }

    /// Deletes the keys in `range`; returns how many (see [`WriteTxn::delete_range`]).
    pub fn delete_range<'k>(&mut self, range: impl RangeBounds<&'k K::Item>) -> Result<usize>
    where
        K::Item: 'k,
    {
        let bounds = encode_bounds::<K>(&range)?;
        self.txn.delete_range(self.name, bounds)
    }

    /// The write transaction the table is open in.
    pub fn txn(&mut self) -> &mut WriteTxn<'db> {
        self.txn
    }
}

impl<'db> ReadTxn<'db> {
    /// Opens a typed table; `Error::TableNotFound` if it does not exist in this snapshot.
    pub fn open_table<K: Codec, V: Codec>(
        &self,
        def: &TableDef<K, V>,
    ) -> Result<ReadTable<'_, K, V>> {
        check_table_name(def.name)?;
        if !self.table_exists(def.name)? {
            return Err(Error::TableNotFound(def.name.to_owned()));
        }
        Ok(ReadTable {
            txn: self,
            name: def.name,
            codecs: PhantomData,
        })
    }
}

impl<'db> WriteTxn<'db> {
    /// Opens a typed table for reads and writes; a table that does not exist yet is
    /// created by its first write, as with the byte-level calls.
    pub fn open_table<K: Codec, V: Codec>(
        &mut self,
        def: &TableDef<K, V>,
    ) -> Result<WriteTable<'_, 'db, K, V>> {
        check_table_name(def.name)?;
        Ok(WriteTable {
            txn: self,
            name: def.name,
            codecs: PhantomData,
        })
    }
}
