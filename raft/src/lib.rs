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

pub mod log_store;
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

/// Opens (creating, or recovering) a node's storage in `dir`: its Raft log and its state
/// machine.
pub fn open_storage(dir: &Path) -> std::io::Result<(LogStore, StateMachine)> {
    std::fs::create_dir_all(dir)?;
    let log = LogStore::open(&dir.join("raft-log"))?;
    let sm = StateMachine::open(dir)?;
    Ok((log, sm))
}

/// A walmdb error as the `io::Error` openraft's storage traits return.
pub(crate) fn io_err(e: walmdb::Error) -> std::io::Error {
    match e {
        walmdb::Error::Io(io) => io,
        other => std::io::Error::other(other),
    }
}
