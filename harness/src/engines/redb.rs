//! redb: `Durability::Immediate` (an fsync per commit) or `Durability::None`.

use std::ops::Bound;
use std::path::Path;

use anyhow::{Context, Result};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::engine::{Engine, Worker};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

struct Redb {
    db: Database,
    durability: Durability,
}

pub fn open(dir: &Path, _keys: usize, durable: bool) -> Result<Box<dyn Engine>> {
    let path = dir.join("redb.db");
    let db = Database::create(&path).with_context(|| format!("open redb at {}", path.display()))?;
    // Create the table up front (a durable commit), so readers never find it missing.
    let txn = db.begin_write()?;
    txn.open_table(TABLE)?;
    txn.commit()?;
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    Ok(Box::new(Redb { db, durability }))
}

impl Redb {
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.durability)?;
        Ok(txn)
    }
}

impl Engine for Redb {
    fn worker(&self) -> Result<Box<dyn Worker + '_>> {
        Ok(Box::new(RedbWorker { redb: self }))
    }

    fn settle(&self) -> Result<()> {
        // An empty commit at `Immediate` makes every earlier `None` commit durable too.
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
}

struct RedbWorker<'a> {
    redb: &'a Redb,
}

impl Worker for RedbWorker<'_> {
    fn write(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        let txn = self.redb.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for (k, v) in pairs {
                table.insert(*k, *v)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        let txn = self.redb.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        Ok(table.get(key)?.map(|v| v.value().len()))
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<usize> {
        let txn = self.redb.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let range = (Bound::Included(start), Bound::Unbounded);
        let mut n = 0;
        let mut bytes = 0;
        for item in table.range::<&[u8]>(range)?.take(limit) {
            let (k, v) = item?;
            bytes += k.value().len() + v.value().len();
            n += 1;
        }
        std::hint::black_box(bytes);
        Ok(n)
    }

    fn read_modify_write(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let txn = self.redb.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            let old = table.get(key)?.map(|v| v.value().len());
            std::hint::black_box(old);
            table.insert(key, value)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        let txn = self.redb.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        Ok(table.len()?)
    }

    fn pop(&mut self, last: bool) -> Result<bool> {
        let txn = self.redb.begin_write()?;
        let popped = {
            let mut table = txn.open_table(TABLE)?;
            let entry = if last {
                table.pop_last()?
            } else {
                table.pop_first()?
            };
            entry.is_some()
        };
        if !popped {
            txn.abort()?;
            return Ok(false);
        }
        txn.commit()?;
        Ok(true)
    }

    fn remove(&mut self, keys: &[&[u8]]) -> Result<()> {
        let txn = self.redb.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for k in keys {
                table.remove(*k)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}
