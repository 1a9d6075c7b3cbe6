//! SQLite in WAL mode: `synchronous=FULL` (a sync per commit) or `NORMAL` (syncs only at
//! checkpoints). A connection per worker thread; writers queue on the database's lock.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, TransactionBehavior};

use crate::engine::{Engine, Worker};

/// How long a connection waits for the write lock (or a checkpoint) before failing: long
/// enough that a queue of 64 writers never fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const CREATE: &str = "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID";
const PUT: &str = "INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)";
const GET: &str = "SELECT v FROM kv WHERE k = ?1";
const SCAN: &str = "SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k LIMIT ?2";
const COUNT: &str = "SELECT COUNT(*) FROM kv";
const POP_FIRST: &str = "DELETE FROM kv WHERE k = (SELECT k FROM kv ORDER BY k ASC LIMIT 1)";
const POP_LAST: &str = "DELETE FROM kv WHERE k = (SELECT k FROM kv ORDER BY k DESC LIMIT 1)";
const DELETE: &str = "DELETE FROM kv WHERE k = ?1";

struct Sqlite {
    path: PathBuf,
    durable: bool,
    /// Kept open for `settle` (and so the WAL outlives the workers' connections).
    main: Mutex<Connection>,
}

pub fn open(dir: &Path, _keys: usize, durable: bool) -> Result<Box<dyn Engine>> {
    let path = dir.join("sqlite.db");
    let conn = connect(&path, durable)?;
    // journal_mode=WAL is persistent, in the file: set it once. It answers with the mode.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("sqlite refused WAL mode (journal_mode is {mode})");
    }
    conn.execute_batch(CREATE)?;
    Ok(Box::new(Sqlite {
        path,
        durable,
        main: Mutex::new(conn),
    }))
}

/// A connection with this configuration's per-connection settings.
fn connect(path: &Path, durable: bool) -> Result<Connection> {
    // Connection::open's flags include NO_MUTEX: each connection stays on one thread.
    let conn =
        Connection::open(path).with_context(|| format!("open sqlite at {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // `synchronous` is per connection.
    conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
    Ok(conn)
}

impl Engine for Sqlite {
    fn worker(&self) -> Result<Box<dyn Worker + '_>> {
        Ok(Box::new(SqliteWorker {
            conn: connect(&self.path, self.durable)?,
        }))
    }

    fn settle(&self) -> Result<()> {
        let conn = self.main.lock().unwrap_or_else(|e| e.into_inner());
        // Copies the WAL into the database file, syncs it, and empties the WAL. Answers
        // (busy, wal frames, frames checkpointed); busy = 1 if a reader or writer held it off.
        let (busy, log, done): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
        if busy != 0 {
            bail!("sqlite checkpoint blocked ({done} of {log} WAL frames checkpointed)");
        }
        Ok(())
    }
}

struct SqliteWorker {
    conn: Connection,
}

impl Worker for SqliteWorker {
    fn write(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        // BEGIN IMMEDIATE: takes the write lock up front (waiting per busy_timeout), so the
        // transaction never fails half-way on a lock upgrade.
        let txn = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut put = txn.prepare_cached(PUT)?;
            for (k, v) in pairs {
                put.execute((k, v))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        let mut get = self.conn.prepare_cached(GET)?;
        let mut rows = get.query([key])?;
        match rows.next()? {
            Some(row) => Ok(Some(row.get_ref(0)?.as_bytes()?.len())),
            None => Ok(None),
        }
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<usize> {
        let mut scan = self.conn.prepare_cached(SCAN)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = scan.query((start, limit))?;
        let mut n = 0;
        let mut bytes = 0;
        while let Some(row) = rows.next()? {
            bytes += row.get_ref(0)?.as_bytes()?.len() + row.get_ref(1)?.as_bytes()?.len();
            n += 1;
        }
        std::hint::black_box(bytes);
        Ok(n)
    }

    fn read_modify_write(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let txn = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut get = txn.prepare_cached(GET)?;
            let mut rows = get.query([key])?;
            let old = match rows.next()? {
                Some(row) => Some(row.get_ref(0)?.as_bytes()?.len()),
                None => None,
            };
            std::hint::black_box(old);
            drop(rows);
            txn.prepare_cached(PUT)?.execute((key, value))?;
        }
        txn.commit()?;
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        // SQLite keeps no count: COUNT(*) walks the table's b-tree.
        let n: i64 = self
            .conn
            .prepare_cached(COUNT)?
            .query_row([], |row| row.get(0))?;
        Ok(u64::try_from(n)?)
    }

    fn pop(&mut self, last: bool) -> Result<bool> {
        let txn = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = txn
            .prepare_cached(if last { POP_LAST } else { POP_FIRST })?
            .execute([])?;
        txn.commit()?;
        Ok(removed > 0)
    }

    fn remove(&mut self, keys: &[&[u8]]) -> Result<()> {
        let txn = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut delete = txn.prepare_cached(DELETE)?;
            for k in keys {
                delete.execute([k])?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}
