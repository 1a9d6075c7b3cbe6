//! LMDB through heed: durable (a sync per commit, LMDB's default) or `NO_SYNC`.

use std::path::Path;

use anyhow::{Context, Result};
use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, WithoutTls};

use crate::engine::{read_entries, Engine, Worker};

struct Heed {
    env: Env<WithoutTls>,
    db: Database<Bytes, Bytes>,
}

pub fn open(dir: &Path, keys: usize, durable: bool) -> Result<Box<dyn Engine>> {
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(super::walmdb::map_bytes(keys) * 4);
    if !durable {
        // SAFETY: NO_SYNC trades durability for speed; that is the configuration measured.
        unsafe { opts.flags(EnvFlags::NO_SYNC) };
    }
    // SAFETY: the directory is fresh or the harness's own, opened once in this process.
    let env = unsafe { opts.open(dir) }.context("open heed")?;
    let mut wtxn = env.write_txn()?;
    let db = env.create_database::<Bytes, Bytes>(&mut wtxn, None)?;
    wtxn.commit()?;
    Ok(Box::new(Heed { env, db }))
}

impl Engine for Heed {
    fn worker(&self) -> Result<Box<dyn Worker + '_>> {
        Ok(Box::new(HeedWorker { heed: self }))
    }

    fn settle(&self) -> Result<()> {
        self.env.force_sync()?;
        Ok(())
    }
}

struct HeedWorker<'a> {
    heed: &'a Heed,
}

impl Worker for HeedWorker<'_> {
    fn write(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        let mut wtxn = self.heed.env.write_txn()?;
        for (k, v) in pairs {
            self.heed.db.put(&mut wtxn, k, v)?;
        }
        wtxn.commit()?;
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        let rtxn = self.heed.env.read_txn()?;
        Ok(self.heed.db.get(&rtxn, key)?.map(<[u8]>::len))
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<usize> {
        let rtxn = self.heed.env.read_txn()?;
        let range = (std::ops::Bound::Included(start), std::ops::Bound::Unbounded);
        let n = read_entries(self.heed.db.range(&rtxn, &range)?, limit)?;
        Ok(n)
    }

    fn read_modify_write(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut wtxn = self.heed.env.write_txn()?;
        let old = self.heed.db.get(&wtxn, key)?.map(<[u8]>::len);
        std::hint::black_box(old);
        self.heed.db.put(&mut wtxn, key, value)?;
        wtxn.commit()?;
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        // LMDB keeps the count in the database's header: no walk.
        let rtxn = self.heed.env.read_txn()?;
        Ok(self.heed.db.len(&rtxn)?)
    }

    fn pop(&mut self, last: bool) -> Result<bool> {
        let mut wtxn = self.heed.env.write_txn()?;
        let entry = if last {
            self.heed.db.last(&wtxn)?
        } else {
            self.heed.db.first(&wtxn)?
        };
        let Some(key) = entry.map(|(k, _)| k.to_vec()) else {
            return Ok(false);
        };
        self.heed.db.delete(&mut wtxn, &key)?;
        wtxn.commit()?;
        Ok(true)
    }

    fn remove(&mut self, keys: &[&[u8]]) -> Result<()> {
        let mut wtxn = self.heed.env.write_txn()?;
        for k in keys {
            self.heed.db.delete(&mut wtxn, k)?;
        }
        wtxn.commit()?;
        Ok(())
    }
}
