//! The one error type of walmdb.

use std::io;
use std::path::PathBuf;

use crate::lsn::Lineage;

/// The `Result` alias used throughout walmdb.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in walmdb.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error outside the durability path (open, read, list).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// A sync (or the write before it) failed. The outcome of the affected commits is
    /// indeterminate: they were not acknowledged, yet they may reappear after recovery.
    /// The log is poisoned from then on.
    #[error("write-ahead log sync failed; the log is now poisoned: {0}")]
    SyncFailed(#[source] io::Error),

    /// An earlier failure (a log sync or write, an LMDB write, an engine thread that
    /// panicked: `cause` says which) stopped writes until the database is reopened.
    /// Reopening replays the log from disk and heals the handle.
    #[error(
        "the database stopped taking writes after an earlier failure ({cause}); reopen to recover"
    )]
    Poisoned {
        /// What poisoned the log.
        cause: String,
    },

    /// The commit queue is full (by count or bytes) and no space freed within the configured wait.
    #[error("commit queue is full ({queued_commits} commits, {queued_bytes} bytes queued)")]
    Backpressure {
        /// Commits waiting in the queue when the commit was refused.
        queued_commits: usize,
        /// Bytes waiting in the queue when the commit was refused.
        queued_bytes: usize,
    },

    /// The disk is full (ENOSPC). The commit was not written; nothing earlier is affected, and
    /// commits succeed again once space is freed.
    #[error("the disk is full: {0}")]
    DiskFull(#[source] io::Error),

    /// A record larger than the configured maximum record size.
    #[error("record of {size} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge {
        /// The encoded size of the record.
        size: usize,
        /// `WalConfig::max_record_bytes`.
        max: usize,
    },

    /// Damaged log data that may not be cut: a bad record with records after it that had been
    /// synced, an unreadable segment header, or damage below the caller's `from_lsn`. Never
    /// silently cut; see `RecoveryMode`.
    #[error("corruption in WAL segment {segment} at offset {offset}: {reason}")]
    Corruption {
        /// The segment number (not the file name).
        segment: u64,
        /// The byte offset inside the segment file.
        offset: u64,
        /// What was found there.
        reason: String,
    },

    /// A damaged tail found while opening in `RecoveryMode::Strict`.
    #[error(
        "torn tail in WAL segment {segment} at offset {offset} (strict recovery refuses to cut it)"
    )]
    TornTail {
        /// The segment number.
        segment: u64,
        /// The byte offset where the damage starts.
        offset: u64,
    },

    /// The set of segment files does not form one sequence (missing, duplicated or out of
    /// order segment, or an LSN gap) above the retirement watermark.
    #[error("WAL segments in {dir} do not form a sequence: {reason}")]
    SegmentSequence {
        /// The WAL directory.
        dir: PathBuf,
        /// What is missing or out of place.
        reason: String,
    },

    /// A file written by a format version this build does not read.
    #[error("unsupported format version {found} in {path} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in its header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// An entry LMDB holds failed its checksum: the store's file is damaged (a flipped bit, a
    /// torn or misdirected page). `table` is the user's table name (or walmdb's own
    /// `walmdb.meta` / `walmdb.tables`).
    #[error(
        "an entry of table {table:?} failed its checksum (key \"{}\"): the LMDB file is damaged; \
         run `walmdb verify --deep` and restore or repair the database",
        key.escape_ascii()
    )]
    CorruptEntry {
        /// The table.
        table: String,
        /// The entry's key as stored.
        key: Vec<u8>,
    },

    /// LMDB met a damaged page (`MDB_CORRUPTED`, `MDB_PAGE_NOTFOUND`): the store's file is
    /// damaged. Commits not yet applied stay in the log; `walmdb repair` rebuilds the store and
    /// applies them.
    #[error(
        "LMDB's file is damaged ({op}: {message}); run `walmdb verify --deep`, then `walmdb \
         repair` (the commits not yet applied stay in the log and are applied by it)"
    )]
    StoreCorrupted {
        /// What was being done.
        op: &'static str,
        /// LMDB's message.
        message: String,
    },

    /// A segment of another database, or of another timeline of this one, where this log's
    /// own belong: in the log directory, in the archive under the name this log's segment
    /// would take, or beside a backup's own segments. Nothing was changed or overwritten.
    #[error(
        "{path} belongs to {found}, not to {expected}: the logs of two databases or of two \
         timelines are never mixed"
    )]
    ForeignSegment {
        /// The segment file.
        path: PathBuf,
        /// The lineage the log (or restore) has.
        expected: Lineage,
        /// The lineage in the file's header.
        found: Lineage,
    },

    /// The WAL archive belongs to another database: its `IDENTITY` file names another
    /// identity, or is damaged. Nothing was archived.
    #[error(
        "the WAL archive {dir} is not database {expected:016x}'s: {}",
        foreign_archive_reason(found)
    )]
    ForeignArchive {
        /// The archive directory.
        dir: PathBuf,
        /// This database's identity.
        expected: u64,
        /// The identity its `IDENTITY` file records (`None`: the file is damaged).
        found: Option<u64>,
    },

    /// The database (or its log) has been closed: no transaction, commit, sync or wait is
    /// served any more. Reopen it.
    #[error("the database is closed")]
    Closed,

    /// The flusher thread died (panicked); commits cannot be written until the log is reopened.
    #[error("the WAL flusher thread died: {0}")]
    FlusherDied(String),

    /// `wait_durable` was asked for an LSN the log has not written.
    #[error("LSN {lsn} has not been written (the log is written through LSN {written})")]
    LsnNotWritten {
        /// The LSN asked for.
        lsn: u64,
        /// The highest LSN written.
        written: u64,
    },

    /// A read asked for records the log no longer holds (retired below a checkpoint).
    #[error("LSN {lsn} was retired from the log; its oldest record is LSN {oldest}")]
    Retired {
        /// The LSN asked for.
        lsn: u64,
        /// The oldest LSN the log holds.
        oldest: u64,
    },

    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Another transaction committed, after this one's snapshot, a key this one wrote (or,
    /// under `Isolation::Serializable`, read). Nothing was written; retry the transaction.
    #[error(
        "transaction conflict on table {table:?}, key \"{}\"; retry the transaction",
        key.escape_ascii()
    )]
    Conflict {
        /// The table of the conflicting key.
        table: String,
        /// The conflicting key (empty for a conflict with a table drop or create).
        key: Vec<u8>,
    },

    /// A serializable transaction's conflict check would visit more than
    /// `Config::max_conflict_checks` keys and ranges' index entries. The check runs on the
    /// log's flusher thread, where every commit waits for it, so it is bounded; nothing was
    /// committed. Read less in one serializable transaction (or use `Isolation::Snapshot`
    /// for large scans), or raise the limit.
    #[error(
        "the transaction's conflict check would visit more than {limit} entries; \
         read less in one serializable transaction or raise max_conflict_checks"
    )]
    ReadSetTooLarge {
        /// `Config::max_conflict_checks`.
        limit: usize,
    },

    /// LMDB's map reached `Config::max_map_size`. Every acknowledged commit stays in the
    /// write-ahead log and is applied once space exists (reopen with a larger maximum);
    /// new commits are refused until then.
    #[error("storage is full: the LMDB map is {map_size} bytes, the configured maximum")]
    StorageFull {
        /// The map size reached.
        map_size: usize,
    },

    /// Every LMDB reader slot is taken (`Config::max_readers`).
    #[error("all {max_readers} LMDB reader slots are in use; end some transactions or raise max_readers")]
    ReadersFull {
        /// `Config::max_readers`.
        max_readers: u32,
    },

    /// The transaction is older than `Config::txn_timeout`; it fails every call from then on.
    #[error("the transaction is {age:?} old, past the limit of {limit:?}")]
    TxnTimeout {
        /// The transaction's age.
        age: std::time::Duration,
        /// `Config::txn_timeout`.
        limit: std::time::Duration,
    },

    /// The commit needs a new table and `Config::max_tables` tables exist (dropped tables
    /// count until the database is reopened). Nothing was written.
    #[error("the commit needs a new table, but the limit of {max_tables} tables is reached")]
    TooManyTables {
        /// `Config::max_tables`.
        max_tables: u32,
    },

    /// No table of that name exists in the transaction's snapshot.
    #[error("no table named {0:?}")]
    TableNotFound(String),

    /// A typed table's codec cannot encode an item, or decode stored bytes (they were
    /// written as another type).
    #[error("codec {codec}: {reason}")]
    Codec {
        /// The codec's name.
        codec: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// A key, value or table name LMDB cannot store.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// "key", "value" or "table name".
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },

    /// The applier or the checkpoint is behind: unapplied versions hold
    /// `Config::overlay_max_bytes`, or recovery would replay more than
    /// `Config::max_replay_bytes`, and neither eased within `Config::backlog_wait`.
    #[error("the apply backlog is full: {what} is {held}, over the limit of {limit}")]
    ApplyBacklog {
        /// Which bound: "unapplied bytes" or "replay bytes".
        what: &'static str,
        /// Its value.
        held: u64,
        /// Its limit.
        limit: u64,
    },

    /// LMDB's map must grow before the applier can go on, and the resize was put off:
    /// transactions (or a backup's copy, or a checkpoint's sync) stayed open past
    /// `Config::resize_wait`. Returned by a wait for the applier (`Db::wait_applied`,
    /// `Db::checkpoint`) at once when the calling thread holds a transaction (it may be the
    /// blocker: the wait could never end), else once nothing was applied for
    /// `Config::backlog_wait`. Commits are unaffected (they wait on the overlay's bound).
    #[error(
        "LMDB's map must grow, but transactions stayed open past resize_wait ({resize_wait:?}); \
         end long-lived transactions (any this thread holds included) and retry"
    )]
    MapResizeBlocked {
        /// `Config::resize_wait`.
        resize_wait: std::time::Duration,
    },

    /// Compaction needs every transaction ended, and some stayed open past
    /// `Config::resize_wait` after the database closed: it is closed, with every commit
    /// applied and checkpointed, but its file was not compacted.
    #[error(
        "transactions stayed open past resize_wait ({wait:?}) after the database closed: \
         it was not compacted; end every transaction first"
    )]
    TransactionsOpen {
        /// `Config::resize_wait`.
        wait: std::time::Duration,
    },

    /// Another handle, in this process or another, has the database open.
    #[error("the database at {path} is in use by another process or handle")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },

    /// A backup directory that cannot be used: a missing or damaged manifest, or a file
    /// that is missing or fails its checksum. Nothing was restored.
    #[error("bad backup at {path}: {reason}")]
    BadBackup {
        /// The manifest or file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A restore target the backup and archive cannot reach (before the backup, after the
    /// archive's last record, an unknown restore point name, or a gap in the archive
    /// before it). Nothing was restored.
    #[error("cannot restore to the target: {0}")]
    RestoreTarget(String),

    /// An LMDB operation failed.
    #[error("LMDB {op} failed: {message}")]
    Lmdb {
        /// What was being done.
        op: &'static str,
        /// LMDB's message.
        message: String,
        /// heed's error, when it came from one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The data directory's LMDB store and write-ahead log disagree (for example, the log
    /// ends before the store's applied LSN), or the store's metadata is damaged.
    #[error("inconsistent database at {path}: {reason}")]
    Inconsistent {
        /// The database directory.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
}

/// The text a panic was raised with.
#[cfg_attr(walmdb_loom, allow(dead_code))]
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn foreign_archive_reason(found: &Option<u64>) -> String {
    match found {
        Some(id) => format!("it holds database {id:016x}'s segments"),
        None => "its IDENTITY file is damaged".into(),
    }
}

impl Error {
    /// True when this error may mean the log must be reopened before it takes writes again.
    /// For `FlusherDied` answered to one commit, the flusher may have been restarted (then
    /// later commits go through): `Db::health().flusher_alive` tells.
    pub fn is_poisoned(&self) -> bool {
        matches!(
            self,
            Error::Poisoned { .. } | Error::SyncFailed(_) | Error::FlusherDied(_)
        )
    }

    /// True for a transaction conflict: running the transaction again may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_prints_its_key_as_text_and_a_poisoned_handle_names_no_cause_it_did_not_have() {
        let conflict = Error::Conflict {
            table: "users".into(),
            key: b"alice\x01".to_vec(),
        };
        assert_eq!(
            conflict.to_string(),
            "transaction conflict on table \"users\", key \"alice\\x01\"; retry the transaction"
        );
        let poisoned = Error::Poisoned {
            cause: "the applier thread panicked".into(),
        };
        let message = poisoned.to_string();
        assert!(message.contains("the applier thread panicked"), "{message}");
        assert!(!message.contains("I/O"), "{message}");
    }
}
