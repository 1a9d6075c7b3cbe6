//! walmdb: an embedded transactional key-value engine that puts a group-commit write-ahead
//! log in front of LMDB.
//!
//! This release holds the write-ahead log and its commit pipeline: segmented,
//! CRC-checked log files, a bounded lock-free commit queue, one flusher thread that makes a
//! whole group durable with one sync, four durability levels, and recovery that cuts only a
//! torn tail. See `docs/design.md`, `docs/wal-format.md` and `docs/durability.md`.
//!
//! ```
//! use walmdb::{Durability, Op, Record, TxnRecord, Wal, WalConfig};
//! let dir = tempfile::tempdir()?;
//! let wal = Wal::open(dir.path(), WalConfig::default())?;
//! let put = |k: &str| Record::Txn(TxnRecord {
//!     commit_micros: 0,
//!     ops: vec![Op::Put { table: "users".into(), key: k.into(), value: b"1".to_vec() }],
//! });
//! let a = wal.commit(put("alice").encode())?; // returns after the group's sync
//! let b = wal.commit_with(put("bob").encode(), (), Some(Durability::None))?;
//! wal.wait_durable(b)?; // commit fast, wait later
//! assert_eq!((a, b), (1, 2));
//! wal.close()?;
//! # Ok::<(), walmdb::Error>(())
//! ```

#![warn(missing_docs)]

mod catalog;
mod commit;
mod config;
mod conflict;
mod db;
mod error;
mod snapshots;
mod store;
mod sync;
mod txn;
pub mod wal;

pub use catalog::MAX_TABLE_NAME_LEN;
pub use commit::{NoSequencer, Sequencer};
pub use config::{Config, Durability, Isolation, RecoveryMode, WalConfig};
pub use db::{Db, DbRecoveryReport, DbStats};
pub use error::{Error, Result};
pub use store::STORE_FORMAT_VERSION;
pub use txn::{Iter, ReadTxn, Savepoint, WriteIter, WriteTxn, MAX_KEY_LEN};
pub use wal::fs::{CrashOptions, FaultKind, Fs, FsFile, FsRef, OpKind, SimFs, StdFs};
pub use wal::{
    CommitHandle, CutTail, EncodedRecord, LogIter, LogRecord, Lsn, Op, Record, RecordType,
    RecoveryReport, SegmentMeta, TxnRecord, Wal, WalStats, FORMAT_VERSION,
};
