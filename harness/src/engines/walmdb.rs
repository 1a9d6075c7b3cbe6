//! walmdb at each durability level.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use walmdb::{Config, Db, Durability};

use crate::engine::{read_entries, Engine, Worker};

const TABLE: &str = "bench";

#[derive(Clone, Copy, Debug)]
pub enum Level {
    Group,
    EveryWrite,
    Interval,
    None,
}

struct Walmdb {
    db: Db,
}

/// LMDB's map: room for `keys` entries of the workloads' sizes, several times over, in
/// whole MiB (LMDB wants a multiple of the page size).
pub fn map_bytes(keys: usize) -> usize {
    (keys * 600).max(256 << 20).next_multiple_of(1 << 20)
}

pub fn open(dir: &Path, keys: usize, level: Level) -> Result<Box<dyn Engine>> {
    let durability = match level {
        Level::Group => Durability::group_commit(),
        Level::EveryWrite => Durability::EveryWrite,
        Level::Interval => Durability::Interval(Duration::from_millis(10)),
        Level::None => Durability::None,
    };
    let map = map_bytes(keys);
    let cfg = Config::default()
        .durability(durability)
        .table(TABLE)
        .map_size(map)
        .max_map_size(map * 4);
    let db = Db::open_with(dir, cfg).context("open walmdb")?;
    Ok(Box::new(Walmdb { db }))
}

impl Engine for Walmdb {
    fn worker(&self) -> Result<Box<dyn Worker + '_>> {
        Ok(Box::new(WalmdbWorker { db: &self.db }))
    }

    fn settle(&self) -> Result<()> {
        let visible = self.db.stats().visible_lsn;
        self.db.wait_applied(visible)?;
        self.db.checkpoint()?;
        // The applier evicts what it applied from the overlay right after, in the
        // background: settled is with the overlay empty too (the rows' notes say what a
        // snapshot that pins it, if any, left). Polled: no API waits for eviction.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.db.stats().unapplied_bytes > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(())
    }

    fn note(&self) -> Option<String> {
        let s = self.db.stats();
        Some(format!(
            "{:.1} MiB of committed versions in the overlay (unapplied_bytes); visible LSN {}, \
             applied to LMDB {}, checkpointed {}; replay estimate {:.1} MiB",
            s.unapplied_bytes as f64 / (1u64 << 20) as f64,
            s.visible_lsn,
            s.applied_lsn,
            s.checkpoint_lsn,
            s.replay_estimate_bytes as f64 / (1u64 << 20) as f64,
        ))
    }
}

struct WalmdbWorker<'a> {
    db: &'a Db,
}

impl Worker for WalmdbWorker<'_> {
    fn write(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        let mut txn = self.db.write()?;
        for (k, v) in pairs {
            txn.put(TABLE, k, v)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        let txn = self.db.read()?;
        Ok(txn.get(TABLE, key)?.map(<[u8]>::len))
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<usize> {
        let txn = self.db.read()?;
        let range = (std::ops::Bound::Included(start), std::ops::Bound::Unbounded);
        let n = read_entries(txn.range(TABLE, range)?, limit)?;
        Ok(n)
    }

    fn read_modify_write(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.update(|txn| {
            let old = txn.get(TABLE, key)?.map(<[u8]>::len);
            std::hint::black_box(old);
            txn.put(TABLE, key, value)
        })?;
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        // LMDB's entry count, corrected for the keys the overlay holds versions of.
        Ok(self.db.read()?.count(TABLE)?)
    }

    fn pop(&mut self, last: bool) -> Result<bool> {
        let mut txn = self.db.write()?;
        let entry = if last {
            txn.last(TABLE)?
        } else {
            txn.first(TABLE)?
        };
        let Some(key) = entry.map(|(k, _)| k.to_vec()) else {
            return Ok(false);
        };
        txn.delete(TABLE, &key)?;
        txn.commit()?;
        Ok(true)
    }

    fn remove(&mut self, keys: &[&[u8]]) -> Result<()> {
        let mut txn = self.db.write()?;
        for k in keys {
            txn.delete(TABLE, k)?;
        }
        txn.commit()?;
        Ok(())
    }
}

/// walmdb configured to keep everything in the log: nothing is applied to LMDB or
/// checkpointed while the process lives, so a crash leaves all of it to replay.
pub fn open_unapplied(dir: &Path, keys: usize, log_bytes: u64) -> Result<Box<dyn Engine>> {
    let map = map_bytes(keys);
    let hour = Duration::from_secs(3600);
    let cfg = Config::default()
        .table(TABLE)
        .map_size(map)
        .max_map_size(map * 4)
        .apply_interval(hour)
        .apply_max_ops(usize::MAX / 2)
        .overlay_max_bytes(usize::MAX / 2)
        .checkpoint_interval(hour)
        .checkpoint_bytes(log_bytes * 4)
        .max_replay_bytes(log_bytes * 4);
    let db = Db::open_with(dir, cfg).context("open walmdb")?;
    Ok(Box::new(Walmdb { db }))
}
