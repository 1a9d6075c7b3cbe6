//! walmdb: an embedded transactional key-value engine that puts a group-commit write-ahead
//! log in front of LMDB.
//!
//! Many threads commit write transactions at once; one fsync makes a whole group durable;
//! committed writes are visible at once through an in-memory overlay while one applier
//! thread applies them to LMDB in large transactions; reads are LMDB's zero-copy snapshots.
//! See `docs/design.md`, `docs/durability.md` and `docs/recovery.md`.
//!
//! ```
//! use walmdb::{Config, Db, Isolation};
//! let dir = tempfile::tempdir()?;
//! let db = Db::open_with(dir.path(), Config::default().table("users"))?;
//! let mut txn = db.write()?;
//! txn.put("users", b"alice", b"1")?;
//! txn.commit()?; // durable with its group; visible to every later transaction
//! db.update(|txn| {
//!     // Retried if another transaction wrote "bob" after this one's snapshot.
//!     let n = txn.get("users", b"bob")?.map_or(0, |v| v[0]);
//!     txn.put("users", b"bob", &[n + 1])
//! })?;
//! let read = db.read()?;
//! assert_eq!(read.get("users", b"bob")?, Some(&[1u8][..]));
//! let keys: Vec<&[u8]> = read.range("users", ..)?.map(|e| e.map(|(k, _)| k)).collect::<Result<_, _>>()?;
//! assert_eq!(keys, [&b"alice"[..], &b"bob"[..]]);
//! drop(read);
//! let _ = db.write_with(Isolation::Serializable)?; // dropped: aborted
//! db.close()?;
//! # Ok::<(), walmdb::Error>(())
//! ```
//!
//! The write-ahead log is public on its own too: [`Wal`]. The source is laid out one way
//! down (handle, engine jobs, log pipeline, log files, leaves); `docs/design.md` has the map.

#![warn(missing_docs)]

// Leaves: they import nothing above them.
mod bytes;
mod config;
mod error;
mod histogram;
mod keys;
pub use keys::KeyRange;
mod layout;
mod limits;
mod lsn;
mod seal;
mod sync;

// The log: the group-commit pipeline over the log's files.
mod wal;

// LMDB and the in-memory state over it.
mod catalog;
mod clock;
mod ends;
mod overlay;
mod snapshots;
mod spill;
mod store;

// The engine behind the handle, one file per job; then transactions and the handle.
mod db;
mod engine;
mod ops;
mod txn;
// Typed tables over transactions.
mod typed;
pub use typed::{codec, Codec, ReadTable, TableDef, TypedIter, WriteTable};

// Read-only inspection for tools (`walmdb verify`, `dump`, `stats`).
pub mod inspect;

// Repair of a database whose LMDB file is damaged (`walmdb repair`).
mod repair;

/// What the loom models (`loom-tests/`) need of the internals; loom builds only.
#[cfg(walmdb_loom)]
#[doc(hidden)]
pub mod loom_support;

pub use config::{ArchiveConfig, Config, Durability, Isolation, RecoveryMode, WalConfig};
pub use db::{Db, DbStats};
pub use engine::{Change, CompactReport, DbRecoveryReport, NextChange, RestorePoint, Subscription};
pub use error::{Error, Result};
pub use histogram::{CommitLatency, Histogram};
pub use limits::{MAX_KEY_LEN, MAX_RESTORE_POINT_NAME_LEN, MAX_TABLE_NAME_LEN};
pub use lsn::{Lineage, Lsn};
pub use ops::backup::{BackupFile, BackupManifest, BACKUP_FORMAT_VERSION};
pub use ops::health::{Health, HealthLimits, HealthStatus};
#[cfg(feature = "http")]
pub use ops::http::{MetricsServer, DEFAULT_HTTP_ADDR};
pub use ops::metrics::Metrics;
pub use ops::restore::{
    recovery_points, recovery_points_on, restore, RecoveryPoints, RestoreOptions, RestoreReport,
    RestoreTarget,
};
pub use repair::{repair, Loss, RepairMethod, RepairOptions, RepairReport};
pub use store::pages::LostKeys;
pub use store::scrub::{
    DamageKind, DamagedEntry, DamagedPage, PageFigures, ScrubProgress, ScrubReport, TableScrub,
    MAX_LISTED_DAMAGE,
};
pub use store::STORE_FORMAT_VERSION;
pub use txn::{Iter, ReadTxn, Savepoint, WriteIter, WriteTxn};
pub use wal::{
    CommitFuture, CommitHandle, CutTail, EncodedRecord, LogIter, LogRecord, Op, Record, RecordType,
    RecoveryReport, SegmentMeta, TxnRecord, Wal, WalStats, FORMAT_VERSION,
};

/// The machinery the project's own tests, loom models, fuzz targets and harness drive:
/// the simulated file system and its crash options, the log's I/O trait, the LMDB observer
/// of the power-loss tests, the flusher's sequencer hook and the frame encoding. Not part
/// of the API a user embeds (feature `internals`).
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::store::{LmdbObserver, LmdbObserverRef};
    pub use crate::wal::fs::{CrashOptions, FaultKind, Fs, FsFile, FsRef, OpKind, SimFs, StdFs};
    pub use crate::wal::log::record;
    pub use crate::wal::{NoSequencer, Sequencer};
}
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use internals::*;
