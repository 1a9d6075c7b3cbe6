//! Typed tables: every built-in codec round-trips and keeps key order; reads through a
//! typed handle refuse a table that does not exist; bytes of another type are a `Codec`
//! error, not a panic or garbage.

use walmdb::codec::{Array, Bytes, Str, I128, I16, I32, I64, I8, U128, U16, U32, U64, U8};
use walmdb::{Codec, Db, Error, TableDef};

fn open() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    (dir, db)
}

/// Writes `items` as keys of table `name` with their index as value, then reads them back
/// through the typed range (ascending and descending) and one by one, keys decoded.
fn round_trip_in_order<K>(db: &Db, name: &'static str, items: &[&K::Item])
where
    K: Codec,
    K::Item: PartialEq + std::fmt::Debug,
    for<'a> K::Decoded<'a>: std::borrow::Borrow<K::Item> + std::fmt::Debug,
{
    use std::borrow::Borrow;
    let def: TableDef<K, U32> = TableDef::new(name);
    db.update(|txn| {
        let mut t = txn.open_table(&def)?;
        for (i, item) in items.iter().enumerate() {
            t.put(item, &(i as u32))?;
        }
        Ok(())
    })
    .unwrap();
    let read = db.read().unwrap();
    let t = read.open_table(&def).unwrap();
    let ascending: Vec<u32> = t.range(..).unwrap().map(|e| e.unwrap().1).collect();
    assert_eq!(ascending.len(), items.len(), "{name}: every key read back");
    let descending: Vec<u32> = t.rev_range(..).unwrap().map(|e| e.unwrap().1).collect();
    let mut reversed = ascending.clone();
    reversed.reverse();
    assert_eq!(
        descending, reversed,
        "{name}: descending is ascending reversed"
    );
    for (i, item) in items.iter().enumerate() {
        assert_eq!(t.get(item).unwrap(), Some(i as u32), "{name}: get {item:?}");
    }
    for entry in t.range(..).unwrap() {
        let (k, v) = entry.unwrap();
        assert_eq!(k.borrow(), items[v as usize], "{name}: key decoded");
    }
}

/// The positions of `items` in ascending order of the table's keys.
fn key_order<K: Codec>(db: &Db, name: &'static str) -> Vec<u32> {
    let def: TableDef<K, U32> = TableDef::new(name);
    let read = db.read().unwrap();
    let t = read.open_table(&def).unwrap();
    t.range(..).unwrap().map(|e| e.unwrap().1).collect()
}

#[test]
fn integer_codecs_round_trip_and_sort_keys_in_numeric_order() {
    let (_dir, db) = open();
    // Items listed in ascending numeric order: the table must return them as listed.
    macro_rules! check {
        ($codec:ty, $name:literal, [$($v:expr),*]) => {{
            let items = [$($v),*];
            let refs: Vec<_> = items.iter().collect();
            round_trip_in_order::<$codec>(&db, $name, &refs);
            let order = key_order::<$codec>(&db, $name);
            assert_eq!(order, (0..items.len() as u32).collect::<Vec<_>>(), "{}", $name);
        }};
    }
    check!(U8, "u8", [0u8, 1, 127, 128, 255]);
    check!(U16, "u16", [0u16, 1, 255, 256, u16::MAX]);
    check!(U32, "u32", [0u32, 1, 256, 65_536, u32::MAX]);
    check!(U64, "u64", [0u64, 1, 1 << 32, u64::MAX - 1, u64::MAX]);
    check!(U128, "u128", [0u128, 1, 1 << 64, u128::MAX]);
    check!(I8, "i8", [i8::MIN, -1, 0, 1, i8::MAX]);
    check!(I16, "i16", [i16::MIN, -256, -1, 0, 1, i16::MAX]);
    check!(I32, "i32", [i32::MIN, -65_536, -1, 0, 1, i32::MAX]);
    check!(
        I64,
        "i64",
        [i64::MIN, -(1 << 40), -1, 0, 1, 1 << 40, i64::MAX]
    );
    check!(I128, "i128", [i128::MIN, -1, 0, 1, i128::MAX]);
}

#[test]
fn text_bytes_and_array_codecs_round_trip_and_sort_as_bytes() {
    let (_dir, db) = open();
    round_trip_in_order::<Str>(&db, "str", &["a", "ab", "b", "é", "日本"]);
    assert_eq!(key_order::<Str>(&db, "str"), [0, 1, 2, 3, 4]);
    round_trip_in_order::<Bytes>(&db, "bytes", &[&[0u8][..], &[0, 0], &[1], &[255, 0]]);
    assert_eq!(key_order::<Bytes>(&db, "bytes"), [0, 1, 2, 3]);
    round_trip_in_order::<Array<4>>(&db, "array", &[&[0, 0, 0, 1], &[0, 1, 0, 0], &[9; 4]]);
    assert_eq!(key_order::<Array<4>>(&db, "array"), [0, 1, 2]);
}

#[test]
fn typed_ranges_take_typed_bounds() {
    let (_dir, db) = open();
    const T: TableDef<I64, Str> = TableDef::new("events");
    db.update(|txn| {
        let mut t = txn.open_table(&T)?;
        for k in -5i64..5 {
            t.put(&k, &format!("event {k}"))?;
        }
        Ok(())
    })
    .unwrap();
    let read = db.read().unwrap();
    let t = read.open_table(&T).unwrap();
    let keys = |it: walmdb::TypedIter<'_, walmdb::Iter<'_>, I64, Str>| -> Vec<i64> {
        it.map(|e| e.unwrap().0).collect()
    };
    assert_eq!(keys(t.range(&-2..&2).unwrap()), [-2, -1, 0, 1]);
    assert_eq!(keys(t.range(&3..).unwrap()), [3, 4]);
    assert_eq!(keys(t.rev_range(..=&-4).unwrap()), [-4, -5]);
    assert_eq!(t.first().unwrap(), Some((-5, "event -5")));
    assert_eq!(t.last().unwrap(), Some((4, "event 4")));
    assert_eq!(t.count().unwrap(), 10);
    drop(read);
    let mut txn = db.write().unwrap();
    let mut w = txn.open_table(&T).unwrap();
    assert_eq!(w.delete_range(&-5..&0).unwrap(), 5);
    assert_eq!(w.count().unwrap(), 5);
    txn.commit().unwrap();
    assert_eq!(
        db.read().unwrap().open_table(&T).unwrap().count().unwrap(),
        5
    );
}

#[test]
fn a_write_table_reads_its_own_writes_and_deletes() {
    let (_dir, db) = open();
    const T: TableDef<Str, U64> = TableDef::new("counts");
    let mut txn = db.write().unwrap();
    let mut t = txn.open_table(&T).unwrap();
    t.put("a", &1).unwrap();
    t.put("b", &2).unwrap();
    assert_eq!(t.get("a").unwrap(), Some(1));
    t.delete("a").unwrap();
    assert_eq!(t.get("a").unwrap(), None);
    let all: Vec<(String, u64)> = t
        .range(..)
        .unwrap()
        .map(|e| e.map(|(k, v)| (k.to_owned(), v)).unwrap())
        .collect();
    assert_eq!(all, [("b".to_owned(), 2)]);
    // The byte-level calls work on the same transaction.
    t.txn().put("counts", b"c", &3u64.to_be_bytes()).unwrap();
    assert_eq!(t.get("c").unwrap(), Some(3));
    txn.commit().unwrap();
    let read = db.read().unwrap();
    assert_eq!(read.open_table(&T).unwrap().get("c").unwrap(), Some(3));
}

#[test]
fn a_typed_read_of_a_table_that_does_not_exist_is_an_error() {
    let (_dir, db) = open();
    const MISSPELLED: TableDef<Str, Str> = TableDef::new("userz");
    db.update(|t| t.put("users", b"alice", b"1")).unwrap();
    let read = db.read().unwrap();
    match read.open_table(&MISSPELLED) {
        Err(Error::TableNotFound(name)) => assert_eq!(name, "userz"),
        other => panic!("expected TableNotFound, got {:?}", other.err()),
    }
    const BAD_NAME: TableDef<Str, Str> = TableDef::new("");
    assert!(matches!(
        read.open_table(&BAD_NAME).err(),
        Some(Error::InvalidInput {
            what: "table name",
            ..
        })
    ));
}

#[test]
fn bytes_of_another_type_are_a_codec_error() {
    let (_dir, db) = open();
    db.update(|t| {
        t.put("mixed", b"k", &[0xff, 0xfe])?;
        t.put("mixed", b"eight", &[1u8; 8])
    })
    .unwrap();
    let read = db.read().unwrap();
    let as_text = read
        .open_table(&TableDef::<Bytes, Str>::new("mixed"))
        .unwrap();
    assert!(matches!(
        as_text.get(b"k"),
        Err(Error::Codec { codec: "Str", .. })
    ));
    let as_u32 = read
        .open_table(&TableDef::<Bytes, U32>::new("mixed"))
        .unwrap();
    assert!(matches!(
        as_u32.get(b"eight"),
        Err(Error::Codec { codec: "U32", .. })
    ));
    assert_eq!(
        read.open_table(&TableDef::<Bytes, U64>::new("mixed"))
            .unwrap()
            .get(b"eight")
            .unwrap(),
        Some(u64::from_be_bytes([1; 8]))
    );
    // A range stops at nothing: each entry answers for itself.
    let entries: Vec<_> = as_u32.range(..).unwrap().collect();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.is_err()));
}

#[cfg(feature = "serde")]
#[test]
fn the_json_codec_round_trips_serde_types() {
    use walmdb::codec::Json;
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct User {
        name: String,
        visits: u32,
    }
    let (_dir, db) = open();
    const USERS: TableDef<U64, Json<User>> = TableDef::new("users");
    db.update(|txn| {
        txn.open_table(&USERS)?.put(
            &7,
            &User {
                name: "alice".into(),
                visits: 3,
            },
        )
    })
    .unwrap();
    let read = db.read().unwrap();
    let users = read.open_table(&USERS).unwrap();
    assert_eq!(
        users.get(&7).unwrap(),
        Some(User {
            name: "alice".into(),
            visits: 3
        })
    );
    db.update(|t| t.put("users", &8u64.to_be_bytes(), b"{not json"))
        .unwrap();
    let read = db.read().unwrap();
    assert!(matches!(
        read.open_table(&USERS).unwrap().get(&8),
        Err(Error::Codec { codec: "Json", .. })
    ));
}
