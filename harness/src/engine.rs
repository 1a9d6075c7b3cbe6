//! What every engine under test offers the workloads, and the list of configurations.

use std::path::Path;

use anyhow::{bail, Result};

/// One engine, opened on one directory. Shared by the worker threads of a run.
pub trait Engine: Send + Sync {
    /// A handle for one worker thread (SQLite needs a connection per thread).
    fn worker(&self) -> Result<Box<dyn Worker + '_>>;

    /// Returns once everything committed is in the engine's main store and on disk (walmdb:
    /// applied to LMDB, checkpointed, and evicted from its overlay, which the applier does
    /// in the background after it applies), so reads and on-disk sizes measure the settled
    /// state.
    fn settle(&self) -> Result<()>;

    /// Anything about the engine's state right now that a reader of a cell should know (walmdb:
    /// how much committed data its overlay holds, not yet applied to LMDB). `None` by default.
    fn note(&self) -> Option<String> {
        None
    }
}

/// The operations of the workloads, on one thread.
pub trait Worker {
    /// Writes every pair in one transaction, committed as durably as the engine's
    /// configuration says.
    fn write(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<()>;

    /// Reads `key`; the value's length, or `None` when absent.
    fn get(&mut self, key: &[u8]) -> Result<Option<usize>>;

    /// Reads up to `limit` entries in key order from `start` (inclusive); returns how many
    /// entries were read. Each entry's key and value are touched (lengths summed).
    fn scan(&mut self, start: &[u8], limit: usize) -> Result<usize>;

    /// Reads `key` and writes `value` under it in one transaction (YCSB F).
    fn read_modify_write(&mut self, key: &[u8], value: &[u8]) -> Result<()>;

    /// The number of entries in the table (exact; some engines count by walking them all).
    fn len(&mut self) -> Result<u64>;

    /// Removes the first entry in key order (the last when `last`) in one write transaction,
    /// committed as durably as the engine's configuration says; false when the table is empty.
    fn pop(&mut self, last: bool) -> Result<bool>;

    /// Removes every key in one write transaction (a key that is absent is no error).
    fn remove(&mut self, keys: &[&[u8]]) -> Result<()>;
}

/// Every engine configuration the harness runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// walmdb, `Durability::GroupCommit` (the default).
    WalmdbGroup,
    /// walmdb, `Durability::EveryWrite`.
    WalmdbEveryWrite,
    /// walmdb, `Durability::Interval(10 ms)`.
    WalmdbInterval,
    /// walmdb, `Durability::None`.
    WalmdbNone,
    /// LMDB through heed, default flags: a sync per commit.
    HeedDurable,
    /// LMDB through heed with `NO_SYNC`.
    HeedNoSync,
    /// redb, `Durability::Immediate`.
    RedbImmediate,
    /// redb, `Durability::None`.
    RedbNone,
    /// RocksDB, `WriteOptions::set_sync(true)`.
    RocksdbSync,
    /// RocksDB, `sync = false` (WAL written, not synced).
    RocksdbNoSync,
    /// SQLite, WAL mode, `synchronous=FULL`.
    SqliteFull,
    /// SQLite, WAL mode, `synchronous=NORMAL`.
    SqliteNormal,
    /// fjall, each write transaction persisted with `PersistMode::SyncAll`.
    FjallSync,
    /// fjall, no persist per write transaction (the journal stays in its buffer).
    FjallNone,
}

impl EngineKind {
    pub const ALL: [EngineKind; 14] = [
        EngineKind::WalmdbGroup,
        EngineKind::WalmdbEveryWrite,
        EngineKind::WalmdbInterval,
        EngineKind::WalmdbNone,
        EngineKind::HeedDurable,
        EngineKind::HeedNoSync,
        EngineKind::RedbImmediate,
        EngineKind::RedbNone,
        EngineKind::RocksdbSync,
        EngineKind::RocksdbNoSync,
        EngineKind::SqliteFull,
        EngineKind::SqliteNormal,
        EngineKind::FjallSync,
        EngineKind::FjallNone,
    ];

    /// The name in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::WalmdbGroup => "walmdb group",
            EngineKind::WalmdbEveryWrite => "walmdb every-write",
            EngineKind::WalmdbInterval => "walmdb interval-10ms",
            EngineKind::WalmdbNone => "walmdb none",
            EngineKind::HeedDurable => "lmdb durable",
            EngineKind::HeedNoSync => "lmdb no-sync",
            EngineKind::RedbImmediate => "redb immediate",
            EngineKind::RedbNone => "redb none",
            EngineKind::RocksdbSync => "rocksdb sync",
            EngineKind::RocksdbNoSync => "rocksdb no-sync",
            EngineKind::SqliteFull => "sqlite full",
            EngineKind::SqliteNormal => "sqlite normal",
            EngineKind::FjallSync => "fjall sync",
            EngineKind::FjallNone => "fjall none",
        }
    }

    /// Whether an acknowledged commit survives a power loss.
    pub fn durable(self) -> bool {
        matches!(
            self,
            EngineKind::WalmdbGroup
                | EngineKind::WalmdbEveryWrite
                | EngineKind::HeedDurable
                | EngineKind::RedbImmediate
                | EngineKind::RocksdbSync
                | EngineKind::SqliteFull
                | EngineKind::FjallSync
        )
    }

    pub fn is_walmdb(self) -> bool {
        self.name().starts_with("walmdb")
    }

    /// fjall runs in the `kv` group by default; the other groups run it only when asked for
    /// by `--engines`, so their default engine lists stay as they were.
    pub fn is_fjall(self) -> bool {
        matches!(self, EngineKind::FjallSync | EngineKind::FjallNone)
    }

    /// Whether this build can run it (peers are cargo features).
    pub fn available(self) -> bool {
        let (redb, rocksdb, sqlite, fjall) = (
            cfg!(feature = "redb"),
            cfg!(feature = "rocksdb"),
            cfg!(feature = "sqlite"),
            cfg!(feature = "fjall"),
        );
        match self {
            EngineKind::RedbImmediate | EngineKind::RedbNone => redb,
            EngineKind::RocksdbSync | EngineKind::RocksdbNoSync => rocksdb,
            EngineKind::SqliteFull | EngineKind::SqliteNormal => sqlite,
            EngineKind::FjallSync | EngineKind::FjallNone => fjall,
            _ => true,
        }
    }

    /// Opens (creating) the engine in `dir`, sized for about `keys` keys.
    pub fn open(self, dir: &Path, keys: usize) -> Result<Box<dyn Engine>> {
        use crate::engines;
        if !self.available() {
            bail!(
                "{} is not in this build: build the harness with `--features peers` \
                 (harness/run.sh does, after harness/setup.sh)",
                self.name()
            );
        }
        Ok(match self {
            EngineKind::WalmdbGroup => {
                engines::walmdb::open(dir, keys, engines::walmdb::Level::Group)?
            }
            EngineKind::WalmdbEveryWrite => {
                engines::walmdb::open(dir, keys, engines::walmdb::Level::EveryWrite)?
            }
            EngineKind::WalmdbInterval => {
                engines::walmdb::open(dir, keys, engines::walmdb::Level::Interval)?
            }
            EngineKind::WalmdbNone => {
                engines::walmdb::open(dir, keys, engines::walmdb::Level::None)?
            }
            EngineKind::HeedDurable => engines::heed::open(dir, keys, true)?,
            EngineKind::HeedNoSync => engines::heed::open(dir, keys, false)?,
            #[cfg(feature = "redb")]
            EngineKind::RedbImmediate => engines::redb::open(dir, keys, true)?,
            #[cfg(feature = "redb")]
            EngineKind::RedbNone => engines::redb::open(dir, keys, false)?,
            #[cfg(feature = "rocksdb")]
            EngineKind::RocksdbSync => engines::rocksdb::open(dir, keys, true)?,
            #[cfg(feature = "rocksdb")]
            EngineKind::RocksdbNoSync => engines::rocksdb::open(dir, keys, false)?,
            #[cfg(feature = "sqlite")]
            EngineKind::SqliteFull => engines::sqlite::open(dir, keys, true)?,
            #[cfg(feature = "sqlite")]
            EngineKind::SqliteNormal => engines::sqlite::open(dir, keys, false)?,
            #[cfg(feature = "fjall")]
            EngineKind::FjallSync => engines::fjall::open(dir, keys, true)?,
            #[cfg(feature = "fjall")]
            EngineKind::FjallNone => engines::fjall::open(dir, keys, false)?,
            #[allow(unreachable_patterns)]
            _ => unreachable!("checked by available()"),
        })
    }
}

/// Reads up to `limit` entries of a borrowed-slice range, summing their lengths (so every byte
/// is touched, as each engine's scan must), and returns how many there were.
pub fn read_entries<'a, E>(
    entries: impl Iterator<Item = std::result::Result<(&'a [u8], &'a [u8]), E>>,
    limit: usize,
) -> Result<usize>
where
    anyhow::Error: From<E>,
{
    let (mut n, mut bytes) = (0, 0);
    for item in entries.take(limit) {
        let (k, v) = item?;
        bytes += k.len() + v.len();
        n += 1;
    }
    std::hint::black_box(bytes);
    Ok(n)
}

/// The kind of a failed operation, for counting failures by kind: walmdb's `Error` variant
/// (`ApplyBacklog`, `Backpressure`, ...; its messages start with ordinary words, so the
/// variant, not the message's first word), RocksDB's status (`Busy`, `IOError`, ...), SQLite's
/// result code (`DatabaseBusy`, `DiskFull`, ...), an I/O error's kind (`Io(StorageFull)`), and
/// otherwise the variant of the innermost error (heed's `Mdb(MapFull)`, redb's), or failing
/// that the first word of the message.
pub fn error_kind(e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(w) = cause.downcast_ref::<walmdb::Error>() {
            // The variant alone: `Io`, not `Io(Kind)` from `Io(Kind(NotFound))`.
            let debug = format!("{w:?}");
            let end = debug
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(debug.len());
            return debug[..end].to_string();
        }
        #[cfg(feature = "rocksdb")]
        if let Some(r) = cause.downcast_ref::<rocksdb::Error>() {
            return format!("{:?}", r.kind());
        }
        #[cfg(feature = "sqlite")]
        if let Some(s) = cause.downcast_ref::<rusqlite::Error>() {
            return match s {
                rusqlite::Error::SqliteFailure(f, _) => format!("{:?}", f.code),
                other => variant(&format!("{other:?}")),
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("Io({:?})", io.kind());
        }
    }
    let kind = variant(&format!("{:?}", e.root_cause()));
    if !kind.is_empty() {
        return kind;
    }
    let message = e.to_string();
    let word = message
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches([':', ',', '.']);
    if word.is_empty() {
        "error".into()
    } else {
        word.into()
    }
}

/// The enum variant a `Debug` rendering starts with, and the variant inside it when it holds
/// another enum's unit variant or tuple variant: `ApplyBacklog { .. }` -> `ApplyBacklog`,
/// `Mdb(MapFull)` -> `Mdb(MapFull)`, `Storage(Io(..))` -> `Storage(Io)`, `"text"` -> ``.
fn variant(debug: &str) -> String {
    let ident = |s: &str| -> usize {
        s.char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphanumeric() || c == '_') || (i == 0 && c.is_ascii_digit())
            })
            .map_or(s.len(), |(i, _)| i)
    };
    let n = ident(debug);
    let outer = &debug[..n];
    if outer.is_empty() {
        return String::new();
    }
    if let Some(rest) = debug[n..].strip_prefix('(') {
        let m = ident(rest);
        let inner = &rest[..m];
        let first_upper = inner.starts_with(|c: char| c.is_ascii_uppercase());
        if first_upper && matches!(rest[m..].chars().next(), Some(')' | '(')) {
            return format!("{outer}({inner})");
        }
    }
    outer.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
        let backlog = walmdb::Error::ApplyBacklog {
            what: "unapplied bytes",
            held: 300 << 20,
            limit: 256 << 20,
        };
        // Its message starts "the apply backlog is full": the variant names it instead.
        assert!(backlog.to_string().starts_with("the "));
        assert_eq!(error_kind(&anyhow::Error::from(backlog)), "ApplyBacklog");
        let pressure = walmdb::Error::Backpressure {
            queued_commits: 1,
            queued_bytes: 2,
        };
        let wrapped = anyhow::Error::from(pressure).context("commit");
        assert_eq!(error_kind(&wrapped), "Backpressure");
        let io = walmdb::Error::Io(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(error_kind(&anyhow::Error::from(io)), "Io");
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(error_kind(&anyhow::Error::from(io)), "Io(StorageFull)");
        let mdb = heed::Error::Mdb(heed::MdbError::MapFull);
        assert_eq!(error_kind(&anyhow::Error::from(mdb)), "Mdb(MapFull)");
        assert_eq!(error_kind(&anyhow::anyhow!("lost: a key")), "lost");
        assert_eq!(error_kind(&anyhow::anyhow!("")), "error");
        #[cfg(feature = "sqlite")]
        {
            let busy = rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            );
            assert_eq!(error_kind(&anyhow::Error::from(busy)), "DatabaseBusy");
        }
        assert_eq!(variant("Storage(Io(Os { code: 28 }))"), "Storage(Io)");
        assert_eq!(variant("Io(Os { code: 28 })"), "Io");
        assert_eq!(variant("\"text\""), "");
    }
}
