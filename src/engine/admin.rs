//! Administration: compaction and restore points.

use super::sequencer::{Check, Ticket, TxnWrites};
use super::{now_micros, Engine, Exclusive, Running, Shutdown};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sync::DataArc as Arc;
use crate::sync::Ordering;
use crate::wal::Record;

/// What [`Db::compact`](crate::Db::compact) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// LMDB's file size before.
    pub bytes_before: u64,
    /// LMDB's file size after.
    pub bytes_after: u64,
    /// The LSN the compacted file holds every commit through (everything: the log holds
    /// nothing after it).
    pub applied_lsn: Lsn,
}

impl Running {
    /// Closes the database and compacts LMDB's file: once the engine has drained and every
    /// transaction has ended, writes a compacted copy beside the file; once LMDB has closed
    /// (the directory still locked), renames the copy over the file and syncs the
    /// directory. A crash at any point leaves either file, each holding every commit.
    pub(crate) fn compact(&self) -> Result<CompactReport> {
        let mut compaction = Compaction { report: None };
        self.shutdown_then(Shutdown::Drain, Some(&mut compaction))?;
        let report = compaction.report.ok_or(Error::Closed)?;
        tracing::info!(
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            applied_lsn = report.applied_lsn,
            "compacted LMDB"
        );
        Ok(report)
    }
}

/// Compaction's part in closing.
struct Compaction {
    /// Set once the copy is written; the rename follows.
    report: Option<CompactReport>,
}

fn staging_dir(dir: &std::path::Path) -> std::path::PathBuf {
    crate::layout::data_dir(dir).join("compacting")
}

impl Exclusive for Compaction {
    fn before_lmdb_closes(&mut self, engine: &Engine) -> Result<()> {
        let lsn = engine.state.checkpoint_lsn.load(Ordering::Acquire);
        let data = crate::layout::data_dir(&engine.path);
        let staging = staging_dir(&engine.path);
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        crate::layout::create_private_dir(&staging)?;
        let bytes_before = std::fs::metadata(crate::layout::lmdb_file(&data))?.len();
        engine
            .store
            .copy_compacted(&crate::layout::lmdb_file(&staging))?;
        let applied_lsn = crate::store::read_only::applied_lsn(&staging)?;
        if applied_lsn != lsn || engine.state.visible_lsn.load(Ordering::Acquire) != lsn {
            return Err(Error::Inconsistent {
                path: engine.path.clone(),
                reason: format!(
                    "the compacted copy holds LSN {applied_lsn}, the checkpoint LSN {lsn}"
                ),
            });
        }
        let bytes_after = std::fs::metadata(crate::layout::lmdb_file(&staging))?.len();
        self.report = Some(CompactReport {
            bytes_before,
            bytes_after,
            applied_lsn,
        });
        Ok(())
    }

    fn after_lmdb_closed(&mut self, dir: &std::path::Path) -> Result<()> {
        let data = crate::layout::data_dir(dir);
        let staging = staging_dir(dir);
        std::fs::rename(
            crate::layout::lmdb_file(&staging),
            crate::layout::lmdb_file(&data),
        )?;
        crate::store::sync_dir(&data)?;
        std::fs::remove_dir_all(&staging)?;
        crate::store::sync_dir(&data)
    }
}

/// A named point in the log a restore can return to; see [`Db::create_restore_point`](crate::Db::create_restore_point).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestorePoint {
    /// Its name.
    pub name: String,
    /// The LSN of its record: a restore to it holds every commit below this LSN.
    pub lsn: Lsn,
    /// When it was made, microseconds since the Unix epoch.
    pub unix_micros: u64,
}

impl Engine {
    /// Writes a named restore point into the log (a `Timestamp` record, synced before this
    /// returns).
    pub(crate) fn create_restore_point(&self, name: &str) -> Result<RestorePoint> {
        crate::limits::check_restore_point_name(name)?;
        let engine = self;
        if let Some(e) = engine.state.refusal() {
            return Err(e);
        }
        let unix_micros = now_micros();
        let record = Record::Timestamp {
            unix_micros,
            name: name.to_owned(),
        }
        .encode();
        let ticket = Ticket {
            snapshot: 0,
            check: Check::Blind,
            writes: Arc::new(TxnWrites::new(Vec::new(), 0, unix_micros, false)),
            pin: None,
            early: None,
        };
        let lsn = engine
            .wal
            .commit_with(record, ticket, Some(Durability::EveryWrite))?;
        tracing::info!(name, lsn, "created a restore point");
        Ok(RestorePoint {
            name: name.to_owned(),
            lsn,
            unix_micros,
        })
    }
}
