//! fjall 2 (an LSM tree): one transactional keyspace with one partition, single-writer
//! transactions (the crate's default feature). Each write transaction is persisted with
//! `PersistMode::SyncAll` (fsync of the journal before the commit returns) or, not durable,
//! with no persist at all (`durability(None)`: the journal is left in its write buffer, not
//! even handed to the OS, until the buffer fills or something persists it).
//!
//! fjall's defaults otherwise: 32 MiB block cache, 64 MiB write buffer, 512 MiB journal,
//! background flush and compaction workers.

use std::ops::Bound;
use std::path::Path;

use anyhow::{Context, Result};
use fjall::{Config, PartitionCreateOptions, PersistMode, TxKeyspace, TxPartitionHandle};

use crate::engine::{Engine, Worker};

const PARTITION: &str = "bench";

struct Fjall {
    keyspace: TxKeyspace,
    partition: TxPartitionHandle,
    /// Persist mode of each write transaction: `Some(SyncAll)` or `None`.
    persist: Option<PersistMode>,
}

pub fn open(dir: &Path, _keys: usize, durable: bool) -> Result<Box<dyn Engine>> {
    let path = dir.join("fjall");
    let keyspace = Config::new(&path)
        .open_transactional()
        .with_context(|| format!("open fjall at {}", path.display()))?;
    let partition = keyspace.open_partition(PARTITION, PartitionCreateOptions::default())?;
    // The partition's creation made durable, as the other engines create their table.
    keyspace.persist(PersistMode::SyncAll)?;
    let persist = durable.then_some(PersistMode::SyncAll);
    Ok(Box::new(Fjall {
        keyspace,
        partition,
        persist,
    }))
}

impl Fjall {
    fn write_tx(&self) -> fjall::WriteTransaction<'_> {
        self.keyspace.write_tx().durability(self.persist)
    }
}

impl Engine for Fjall {
    fn worker(&self) -> Result<Box<dyn Worker + '_>> {
        Ok(Box::new(FjallWorker { fjall: self }))
    }

    fn settle(&self) -> Result<()> {
        // The journal synced (every earlier commit durable), then the active memtable flushed
        // into a disk segment, waiting for the flush workers: reads then measure the LSM on
        // disk, as RocksDB's settle flushes its memtables. (`rotate_memtable_and_wait` is
        // public but hidden from fjall's docs; it is what its tests use for this.)
        self.keyspace.persist(PersistMode::SyncAll)?;
        self.partition.inner().rotate_memtable_and_wait()?;
        self.keyspace.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

struct FjallWorker<'a> {
    fjall: &'a Fjall,
}

impl Worker for FjallWorker<'_> {
    fn write(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        let p = &self.fjall.partition;
        let mut tx = self.fjall.write_tx();
        for (k, v) in pairs {
            tx.insert(p, *k, *v);
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        let tx = self.fjall.keyspace.read_tx();
        Ok(tx.get(&self.fjall.partition, key)?.map(|v| v.len()))
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<usize> {
        let tx = self.fjall.keyspace.read_tx();
        let range: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Included(start), Bound::Unbounded);
        let (mut n, mut bytes) = (0, 0);
        for item in tx
            .range::<&[u8], _>(&self.fjall.partition, range)
            .take(limit)
        {
            let (k, v) = item?;
            bytes += k.len() + v.len();
            n += 1;
        }
        std::hint::black_box(bytes);
        Ok(n)
    }

    fn read_modify_write(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let p = &self.fjall.partition;
        let mut tx = self.fjall.write_tx();
        let old = tx.get(p, key)?.map(|v| v.len());
        std::hint::black_box(old);
        tx.insert(p, key, value);
        tx.commit()?;
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        // Exact, and a full scan: fjall keeps no count (`approximate_len` counts tombstones
        // and overwrites too), so `len` reads every entry of the partition.
        let tx = self.fjall.keyspace.read_tx();
        Ok(tx.len(&self.fjall.partition)? as u64)
    }

    fn pop(&mut self, last: bool) -> Result<bool> {
        let p = &self.fjall.partition;
        let mut tx = self.fjall.write_tx();
        let entry = if last {
            tx.last_key_value(p)?
        } else {
            tx.first_key_value(p)?
        };
        let Some((key, _)) = entry else {
            tx.rollback();
            return Ok(false);
        };
        tx.remove(p, key);
        tx.commit()?;
        Ok(true)
    }

    fn remove(&mut self, keys: &[&[u8]]) -> Result<()> {
        let p = &self.fjall.partition;
        let mut tx = self.fjall.write_tx();
        for k in keys {
            tx.remove(p, *k);
        }
        tx.commit()?;
        Ok(())
    }
}
