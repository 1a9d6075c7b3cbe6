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
//! The write-ahead log is public on its own too: [`Wal`].

#![warn(missing_docs)]

mod backup;
mod catalog;
mod commit;
mod config;
mod conflict;
mod db;
mod error;
mod health;
#[cfg(feature = "http")]
mod http;
pub mod inspect;
mod metrics;
mod restore;
mod snapshots;
mod store;
mod sync;
mod txn;
pub mod wal;

/// What the loom models (`loom-tests/`) need of the internals; loom builds only.
#[cfg(walmdb_loom)]
#[doc(hidden)]
pub mod loom_support;

pub use backup::{BackupFile, BackupManifest, BACKUP_FORMAT_VERSION};
pub use catalog::MAX_TABLE_NAME_LEN;
pub use commit::{NoSequencer, Sequencer};
pub use config::{Config, Durability, Isolation, RecoveryMode, WalConfig};
pub use db::{
    CompactReport, Db, DbRecoveryReport, DbStats, RestorePoint, MAX_RESTORE_POINT_NAME_LEN,
};
pub use error::{Error, Result};
pub use health::{Health, HealthLimits, HealthStatus};
#[cfg(feature = "http")]
pub use http::{MetricsServer, DEFAULT_HTTP_ADDR};
pub use metrics::{CommitLatency, Histogram, Metrics};
pub use restore::{
    recovery_points, restore, RecoveryPoints, RestoreOptions, RestoreReport, RestoreTarget,
};
pub use store::STORE_FORMAT_VERSION;
#[doc(hidden)]
pub use store::{LmdbObserver, LmdbObserverRef};
pub use txn::{Iter, ReadTxn, Savepoint, WriteIter, WriteTxn, MAX_KEY_LEN};
pub use wal::fs::{CrashOptions, FaultKind, Fs, FsFile, FsRef, OpKind, SimFs, StdFs};
pub use wal::{
    ArchiveConfig, CommitHandle, CutTail, EncodedRecord, LogIter, LogRecord, Lsn, Op, Record,
    RecordType, RecoveryReport, SegmentMeta, TxnRecord, Wal, WalStats, FORMAT_VERSION,
};
