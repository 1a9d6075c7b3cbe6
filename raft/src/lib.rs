//! walmdb replicated with [openraft](https://docs.rs/openraft): the Raft log on walmdb's
//! write-ahead log ([`LogStore`]: entries, votes, truncations and purges as log records, one
//! fsync for a whole group of appended entries) and the state machine on a walmdb database
//! ([`StateMachine`]: each applied batch one walmdb transaction that records the last applied
//! log id and the membership with the data; snapshots are walmdb's hot backups).
//!
//! A node's directory holds `raft-log/` (the Raft log), `sm/` (the state machine's
//! databases and its `CURRENT` pointer) and `snapshot/` (the current snapshot). See
//! `docs/replication.md`.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod files;
pub mod health;
pub mod log_store;
pub mod network;
pub mod node;
mod records;
pub mod snapshot;
pub mod state_machine;

pub use log_store::LogStore;
pub use snapshot::SnapshotFile;
pub use state_machine::StateMachine;

/// One write of a replicated transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Sets `key` in `table` to `value`.
    Put {
        table: String,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key` from `table`.
    Delete {
        table: String,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// A replicated transaction: its writes are applied atomically, in log order, on every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub writes: Vec<Write>,
}

impl Request {
    /// A transaction of one put.
    pub fn put(table: &str, key: &[u8], value: &[u8]) -> Request {
        Request {
            writes: vec![Write::Put {
                table: table.into(),
                key: key.into(),
                value: value.into(),
            }],
        }
    }
}

impl Request {
    /// Bytes of its keys and values.
    pub fn bytes(&self) -> usize {
        self.writes
            .iter()
            .map(|w| match w {
                Write::Put { key, value, .. } => key.len() + value.len(),
                Write::Delete { key, .. } => key.len(),
            })
            .sum()
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} write(s)", self.writes.len())
    }
}

/// What applying an entry did on the node that answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The LSN of the walmdb commit that applied it on that node (0: nothing to apply).
    pub lsn: walmdb::Lsn,
}

openraft::declare_raft_types!(
    /// walmdb's Raft types: node ids are `u64`, nodes `BasicNode { addr }`.
    pub TypeConfig:
        D = Request,
        R = Response,
);

/// A Raft node over walmdb.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;
/// A node's id.
pub type NodeId = u64;
/// A log id of this configuration.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote of this configuration.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry of this configuration.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A membership as stored with the state.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// How a node's storage is opened.
#[derive(Debug, Clone, Default)]
pub struct StorageConfig {
    /// The Raft log's settings (its durability must be `GroupCommit` or `EveryWrite`).
    pub log: walmdb::WalConfig,
    /// The state machine's databases' settings.
    pub db: walmdb::Config,
}

impl StorageConfig {
    /// Small log segments (1 MiB) for both logs: for tests and small nodes, where the
    /// default 64 MiB preallocated segments cost more than they save.
    pub fn small() -> StorageConfig {
        let mut cfg = StorageConfig::default();
        cfg.log.segment_bytes = 1 << 20;
        cfg.log.max_record_bytes = 256 << 10;
        cfg.db.wal.segment_bytes = 1 << 20;
        cfg.db.wal.max_record_bytes = 256 << 10;
        cfg.db.overlay_max_bytes = 64 << 20;
        cfg
    }
}

/// Opens (creating, or recovering) a node's storage in `dir`: its Raft log and its state
/// machine.
pub fn open_storage(dir: &Path) -> std::io::Result<(LogStore, StateMachine)> {
    open_storage_with(dir, &StorageConfig::default())
}

/// [`open_storage`] with settings.
pub fn open_storage_with(
    dir: &Path,
    cfg: &StorageConfig,
) -> std::io::Result<(LogStore, StateMachine)> {
    files::private_dir(dir)?;
    let log = LogStore::open_with(&dir.join("raft-log"), cfg.log.clone())?;
    let sm = StateMachine::open_with(dir, cfg.db.clone())?;
    Ok((log, sm))
}

/// A walmdb error as the `io::Error` openraft's storage traits return.
pub(crate) fn io_err(e: walmdb::Error) -> std::io::Error {
    match e {
        walmdb::Error::Io(io) => io,
        other => std::io::Error::other(other),
    }
}
