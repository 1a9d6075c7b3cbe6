//! RocksDB (Debian's librocksdb 7.8, see harness/setup.sh): each write a `WriteBatch` with
//! `sync = true` (the WAL synced before the write returns; concurrent writers share a sync,
//! RocksDB's group commit) or `sync = false` (the WAL written to the OS, not synced).

use std::path::Path;

use anyhow::{Context, Result};
use rocksdb::{Options, WriteBatch, WriteOptions, DB};

use crate::engine::{Engine, Worker};

struct Rocksdb {
    db: DB,
    durable: bool,
}

pub fn open(dir: &Path, _keys: usize, durable: bool) -> Result<Box<dyn Engine>> {
    let path = dir.join("rocksdb");
    // RocksDB's defaults otherwise: one column family, default block cache and memtables.
    let mut opts = Options::default();
    opts.create_if_missing(true);
    let db =
        DB::open(&opts, &path).with_context(|| format!("open rocksdb at {}", path.display()))?;
    Ok(Box::new(Rocksdb { db, durable }))
}

impl Engine for Rocksdb {
    fn worker(&self) -> Result<Box<dyn Worker + '_>> {
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(self.durable);
        Ok(Box::new(RocksdbWorker {
            db: &self.db,
            write_opts,
        }))
    }

    fn settle(&self) -> Result<()> {
        // Memtables to SST files (reads then measure the LSM on disk), and the WAL synced, so
        // `sync = false` writes are on disk too.
        self.db.flush()?;
        self.db.flush_wal(true)?;
        Ok(())
    }
}

struct RocksdbWorker<'a> {
    db: &'a DB,
    write_opts: WriteOptions,
}

impl Worker for RocksdbWorker<'_> {
    fn write(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, v) in pairs {
            batch.put(k, v);
        }
        self.db.write_opt(batch, &self.write_opts)?;
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.db.get_pinned(key)?.map(|v| v.len()))
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<usize> {
        // The raw iterator: keys and values are borrowed from RocksDB's blocks, as the other
        // engines' scans borrow theirs. (`DB::iterator` would copy each into two `Box<[u8]>`,
        // charging RocksDB for allocations the adapter made.)
        let mut it = self.db.raw_iterator();
        it.seek(start);
        let mut n = 0;
        let mut bytes = 0;
        while n < limit {
            let Some((k, v)) = it.item() else { break };
            bytes += k.len() + v.len();
            n += 1;
            it.next();
        }
        // An iterator that stops being valid because of an error (not the end) says so here.
        it.status()?;
        std::hint::black_box(bytes);
        Ok(n)
    }

    fn read_modify_write(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        // Not one transaction: a plain `DB` has no multi-operation transactions (that takes
        // `TransactionDB`), so this is a get, then a put with the same write options. Another
        // writer may write the key in between; the workloads do not depend on it.
        let old = self.db.get_pinned(key)?.map(|v| v.len());
        std::hint::black_box(old);
        self.db.put_opt(key, value, &self.write_opts)?;
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        // RocksDB keeps only an estimate (`rocksdb.estimate-num-keys`), so this walks every
        // key with the raw iterator: O(entries), reading the whole LSM.
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        let mut n = 0u64;
        while it.valid() {
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    fn pop(&mut self, last: bool) -> Result<bool> {
        // Not one transaction (a plain `DB` has none, see read_modify_write): the first (or
        // last) key from an iterator, then its delete, with the configured write options.
        let key = {
            let mut it = self.db.raw_iterator();
            if last {
                it.seek_to_last();
            } else {
                it.seek_to_first();
            }
            let key = it.key().map(<[u8]>::to_vec);
            it.status()?;
            key
        };
        let Some(key) = key else {
            return Ok(false);
        };
        self.db.delete_opt(&key, &self.write_opts)?;
        Ok(true)
    }

    fn remove(&mut self, keys: &[&[u8]]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for k in keys {
            batch.delete(k);
        }
        self.db.write_opt(batch, &self.write_opts)?;
        Ok(())
    }
}
