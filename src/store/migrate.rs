//! Migrations of older store formats, each inside the opening LMDB transaction, so a store
//! is migrated whole or not at all (`docs/wal-format.md`, "The LMDB store").

use std::path::Path;

use heed::RwTxn;

use super::tally::{TableRecord, Tally};
use super::{
    inconsistent, lmdb_err, lmdb_name, meta_seed, Dbi, Env, KEY_FORMAT, META_DB, TABLES_DB,
};
use crate::error::{Error, Result};
use crate::seal::{open_v1, Seed};

/// Rewrites every entry of a format 1 store with format 2's checksum, inside the opening
/// transaction, so the store is migrated whole or not at all. An entry whose format 1
/// checksum fails stops it with `Error::CorruptEntry`. Returns the entries rewritten.
pub(super) fn migrate_from_format_1(
    env: &Env,
    wtxn: &mut RwTxn<'_>,
    meta: Dbi,
    tables: Dbi,
) -> Result<u64> {
    // (the name errors give, the LMDB name, the handle)
    let mut dbs = vec![
        (META_DB.to_owned(), META_DB.to_owned(), meta),
        (TABLES_DB.to_owned(), TABLES_DB.to_owned(), tables),
    ];
    let mut names = Vec::new();
    for item in tables.iter(wtxn).map_err(lmdb_err("read"))? {
        let (name, _) = item.map_err(lmdb_err("read"))?;
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    for name in names {
        let lmdb = lmdb_name(&name);
        let dbi: Option<Dbi> = env
            .open_database(wtxn, Some(&lmdb))
            .map_err(lmdb_err("open table"))?;
        dbs.extend(dbi.map(|dbi| (name, lmdb, dbi)));
    }
    let mut rewritten = 0;
    let mut buf = Vec::new();
    for (label, lmdb, dbi) in dbs {
        let seed = Seed::of(&lmdb);
        let mut it = dbi.iter_mut(wtxn).map_err(lmdb_err("read"))?;
        while let Some(item) = it.next() {
            let (key, stored) = item.map_err(lmdb_err("read"))?;
            let value = open_v1(key, stored).ok_or_else(|| Error::CorruptEntry {
                table: label.clone(),
                key: key.to_vec(),
            })?;
            seed.seal(&mut buf, key, value);
            let key = key.to_vec();
            // SAFETY: nothing borrowed from the map (`stored`, the old key) is used after
            // this write; the key and value written are owned copies.
            unsafe { it.put_current(&key, &buf) }.map_err(lmdb_err("migrate"))?;
            rewritten += 1;
        }
    }
    write_format(wtxn, meta, 2)?;
    Ok(rewritten)
}

/// Gives every table of a format 2 store its entry count and digest (format 3), inside the
/// opening transaction: a walk of every table, so the store is migrated whole or not at all.
/// Entries are counted as stored; a damaged one stays for reads and the scrub to report.
/// Returns the tables migrated.
pub(super) fn migrate_from_format_2(
    env: &Env,
    wtxn: &mut RwTxn<'_>,
    meta: Dbi,
    tables: Dbi,
    dir: &Path,
) -> Result<u64> {
    let mut records = Vec::new();
    for item in tables.iter(wtxn).map_err(lmdb_err("read"))? {
        let (name, stored) = item.map_err(lmdb_err("read"))?;
        let record = TableRecord::decode(2, name, stored)
            .ok_or_else(|| inconsistent(dir, "a table list entry is damaged"))?;
        records.push((name.to_vec(), record.created));
    }
    let mut buf = Vec::new();
    for (name, created) in &records {
        let lmdb = lmdb_name(&String::from_utf8_lossy(name));
        let dbi: Option<Dbi> = env
            .open_database(wtxn, Some(&lmdb))
            .map_err(lmdb_err("open table"))?;
        let mut tally = Tally::default();
        if let Some(dbi) = dbi {
            for item in dbi.iter(wtxn).map_err(lmdb_err("read"))? {
                tally.add(item.map_err(lmdb_err("read"))?.1);
            }
        }
        TableRecord::seal(*created, tally, name, &mut buf);
        tables.put(wtxn, name, &buf).map_err(lmdb_err("migrate"))?;
    }
    write_format(wtxn, meta, 3)?;
    Ok(records.len() as u64)
}

pub(super) fn write_format(wtxn: &mut RwTxn<'_>, meta: Dbi, version: u32) -> Result<()> {
    let mut v = Vec::new();
    meta_seed().seal(&mut v, KEY_FORMAT, &version.to_le_bytes());
    meta.put(wtxn, KEY_FORMAT, &v)
        .map_err(lmdb_err("write format"))
}
