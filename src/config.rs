//! Configuration of the write-ahead log: durability levels, recovery modes and limits.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// What `commit()` waits for before it returns. Chosen per log and per transaction.
///
/// | level | on disk when `commit()` returns | lost by a process crash | lost by a power loss |
/// |---|---|---|---|
/// | `None` | written to the OS page cache | nothing | everything since the last sync |
/// | `Interval(d)` | written to the OS; synced about `d` later (not a hard deadline) | nothing | about the last `d` |
/// | `EveryWrite` | written and synced, alone | nothing | nothing |
/// | `GroupCommit` | written and synced with its group | nothing | nothing |
///
/// ```
/// use walmdb::{Config, Db, Durability};
/// # let dir = tempfile::tempdir()?;
/// // The engine's level, for every commit that names none ...
/// let db = Db::open_with(dir.path(), Config::default().durability(Durability::group_commit()))?;
/// // ... and one transaction's own.
/// let mut txn = db.write()?;
/// txn.put("audit", b"event", b"must not be lost alone")?;
/// txn.commit_with(Durability::EveryWrite)?;
/// # Ok::<(), walmdb::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// The record is written to the operating system and never synced by the commit; a later
    /// sync (segment rotation, `sync()`, a durable commit, close) makes it durable. Grouped
    /// with a durable commit, it is answered after that group's sync.
    None,
    /// The record is written to the operating system; the flusher syncs in the background
    /// about this long after the write (later by at most one group's write time).
    /// `commit()` returns after the write.
    Interval(Duration),
    /// The record is written and synced in its own group: one sync per transaction, shared
    /// with no other. For comparison and for callers that want the isolation.
    EveryWrite,
    /// The default. The record is written with every other commit waiting at the same time,
    /// and `commit()` returns after the one sync that covers the whole group.
    GroupCommit {
        /// How long the flusher may wait for more commits to join a group before it writes.
        /// Zero (the default) batches only what queued during the previous sync.
        max_wait: Duration,
        /// The most commits one group holds. Default: 4096.
        max_batch: usize,
    },
}

impl Durability {
    /// `GroupCommit` with its defaults: no added wait, up to 4096 commits a group.
    pub const fn group_commit() -> Self {
        Durability::GroupCommit {
            max_wait: Duration::ZERO,
            max_batch: 4096,
        }
    }

    /// True when `commit()` returns only after a sync that covers the record.
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            Durability::EveryWrite | Durability::GroupCommit { .. }
        )
    }
}

impl Durability {
    /// Refuses a level whose parameters are out of bounds: a group of at most 0 commits, or
    /// a wait above [`crate::limits::MAX_SETTING_DURATION`]. `field` names the setting.
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        match *self {
            Durability::GroupCommit { max_batch: 0, .. } => Err(Error::InvalidConfig(format!(
                "{field}: GroupCommit max_batch must be at least 1"
            ))),
            Durability::GroupCommit { max_wait, .. } => {
                crate::limits::check_duration(&format!("{field}: GroupCommit max_wait"), max_wait)
            }
            Durability::Interval(d) => {
                crate::limits::check_duration(&format!("{field}: Interval"), d)
            }
            Durability::None | Durability::EveryWrite => Ok(()),
        }
    }
}

impl Default for Durability {
    fn default() -> Self {
        Durability::group_commit()
    }
}

/// What opening the log does with a damaged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// The default. A damaged record with nothing valid after it (a write torn by a crash) is
    /// cut with a warning; a damaged record followed by valid, previously synced records is
    /// `Error::Corruption`.
    #[default]
    TolerateTornTail,
    /// Any damaged record, even a torn tail, refuses to open (`Error::TornTail` or
    /// `Error::Corruption`). Nothing is cut.
    Strict,
    /// Stop before the first damaged record, wherever it is, and cut the log there: recovers
    /// the longest intact prefix. Records after the damage are discarded. (Recovering to a
    /// chosen time or LSN is a restore: `walmdb::restore`.)
    CutAtFirstDamage,
}

impl RecoveryMode {
    /// The former name of [`RecoveryMode::CutAtFirstDamage`], which read as point-in-time
    /// restore (that is `walmdb::restore`).
    #[deprecated(since = "0.1.0", note = "renamed `RecoveryMode::CutAtFirstDamage`")]
    #[allow(non_upper_case_globals)]
    pub const PointInTime: RecoveryMode = RecoveryMode::CutAtFirstDamage;
}

/// Configuration of the write-ahead log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Size a segment file is preallocated to. Default: 64 MiB.
    pub segment_bytes: u64,
    /// Largest record written in one piece. A larger transaction is written as a sequence of
    /// pieces of at most this size (up to 64 GiB in all); other records above it fail with
    /// `Error::RecordTooLarge`. Default: 16 MiB. At most `segment_bytes / 2`.
    pub max_record_bytes: usize,
    /// Durability of commits that do not choose their own. Default: `Durability::GroupCommit`.
    pub durability: Durability,
    /// What opening does with damaged records. Default: `RecoveryMode::TolerateTornTail`.
    pub recovery_mode: RecoveryMode,
    /// Commits the queue holds at most. Default: 65536.
    pub queue_capacity: usize,
    /// Bytes of encoded records the queue holds at most. Default: 64 MiB.
    pub queue_max_bytes: usize,
    /// How long a commit waits for queue space before `Error::Backpressure`; zero refuses at
    /// once. Default: 1 s.
    pub backpressure_wait: Duration,
    /// Bytes one group writes at most (it may exceed this by one record). Default: 4 MiB.
    /// Capped at `segment_bytes / 2`, so a group fits in one segment.
    pub group_max_bytes: usize,
    /// Frames whose body is at least this large are compressed with zstd when that saves
    /// space; `None` turns compression off. Default: `Some(32768)`: small groups are written
    /// as they are, since compressing them costs the flusher more than the bytes it saves.
    pub compress_threshold: Option<usize>,
    /// zstd level for compressed frames. Default: 1.
    pub compress_level: i32,
    /// Retired segments kept for reuse (recycled instead of deleted). Default: 4.
    pub recycle_segments: usize,
    /// Keep one spare segment preallocated by a background thread, so a rotation does not
    /// write a segment of zeros on the commit path. Turn off for tests that need the exact
    /// order of I/O operations. Default: true.
    pub prepare_segments: bool,
    /// Copy retired segments into an archive (for point-in-time restore) before they are
    /// recycled or removed. Default: `None`.
    pub archive: Option<ArchiveConfig>,
    /// Bytes the quarantine (`<log>/quarantine/`, what opening cuts from the log, copied
    /// there first) keeps at most: past it the oldest entries are removed. 0 turns the
    /// quarantine off. Default: 256 MiB.
    pub quarantine_max_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            durability: Durability::default(),
            recovery_mode: RecoveryMode::default(),
            queue_capacity: 65536,
            queue_max_bytes: 64 << 20,
            backpressure_wait: Duration::from_secs(1),
            group_max_bytes: 4 << 20,
            compress_threshold: Some(32 * 1024),
            compress_level: 1,
            recycle_segments: 4,
            prepare_segments: true,
            archive: None,
            quarantine_max_bytes: 256 << 20,
        }
    }
}

impl WalConfig {
    /// The group byte bound in force: `group_max_bytes`, at most half a segment.
    pub(crate) fn effective_group_bytes(&self) -> usize {
        self.group_max_bytes
            .min(usize::try_from(self.segment_bytes / 2).unwrap_or(usize::MAX))
    }
}

impl WalConfig {
    /// Checks the values against each other.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.segment_bytes < crate::limits::MIN_SEGMENT_BYTES {
            return bad(format!(
                "segment_bytes {} is below 64 KiB",
                self.segment_bytes
            ));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes as u64 > self.segment_bytes / 2 {
            return bad(format!(
                "max_record_bytes {} must be between 1 and segment_bytes / 2 ({})",
                self.max_record_bytes,
                self.segment_bytes / 2
            ));
        }
        if self.max_record_bytes > crate::limits::MAX_FRAME_BODY {
            return bad(format!(
                "max_record_bytes {} exceeds the format's limit of {}",
                self.max_record_bytes,
                crate::limits::MAX_FRAME_BODY
            ));
        }
        if self.segment_bytes > crate::limits::MAX_FRAME_BODY as u64 {
            return bad(format!(
                "segment_bytes {} exceeds the format's limit of {}",
                self.segment_bytes,
                crate::limits::MAX_FRAME_BODY
            ));
        }
        if self.group_max_bytes == 0 {
            return bad("group_max_bytes must be at least 1".into());
        }
        if let Some(a) = &self.archive {
            if a.keep_last == Some(0) {
                return bad("archive keep_last must be at least 1 (or None)".into());
            }
        }
        crate::limits::check_count(
            "queue_capacity",
            self.queue_capacity as u64,
            crate::limits::MAX_QUEUE_CAPACITY as u64,
        )?;
        if self.queue_max_bytes < self.max_record_bytes {
            return bad(format!(
                "queue_max_bytes {} is below max_record_bytes {}",
                self.queue_max_bytes, self.max_record_bytes
            ));
        }
        self.durability.validate("durability")?;
        crate::limits::check_duration("backpressure_wait", self.backpressure_wait)?;
        let levels = zstd::compression_level_range();
        if !levels.contains(&self.compress_level) {
            return bad(format!(
                "compress_level {} is outside zstd's levels {}..={}",
                self.compress_level,
                levels.start(),
                levels.end()
            ));
        }
        Ok(())
    }
}

/// How a write transaction's reads are protected against concurrent commits. Checked by the
/// flusher at commit, optimistically; a loser gets `Error::Conflict` and nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// A transaction that read anything fails if a key it writes was committed by another
    /// after its snapshot (first committer wins: no lost updates). Write skew is possible.
    #[default]
    Snapshot,
    /// As `Snapshot`, and also fails if a key it read, or a key inside a range it scanned,
    /// was committed by another after its snapshot: the result is serializable.
    Serializable,
}

/// Configuration of the engine ([`crate::Db`]). Build it with the setters:
///
/// ```
/// use std::time::Duration;
/// let cfg = walmdb::Config::default()
///     .isolation(walmdb::Isolation::Serializable)
///     .table("users")
///     .txn_timeout(Some(Duration::from_secs(30)));
/// assert_eq!(cfg.tables, ["users"]);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// The write-ahead log's configuration (durability default, segment size, queue bounds).
    /// Default: `WalConfig::default()`.
    pub wal: WalConfig,
    /// Isolation of write transactions that do not choose their own. Default: `Snapshot`.
    pub isolation: Isolation,
    /// Tables created at open if missing. Default: none (tables are created on first write).
    pub tables: Vec<String>,
    /// Initial size of LMDB's memory map; it doubles once LMDB uses half of it (when no
    /// transaction stays open), or when full. Default: 64 MiB.
    pub map_size: usize,
    /// The map never grows past this; a full map at this size is `Error::StorageFull`.
    /// Default: 64 GiB.
    pub max_map_size: usize,
    /// LMDB reader slots: read and write transactions open at once, at most. Default: 1022.
    pub max_readers: u32,
    /// Tables at most (LMDB named databases). Every read transaction allocates and clears a
    /// slot per possible table (about 50 bytes each), so keep it near what you use. Default: 62.
    pub max_tables: u32,
    /// Bytes of committed versions not yet applied to LMDB, at most. Past half of it, commits
    /// are slowed down to the rate the applier sustains (less as the backlog grows), so the
    /// backlog settles instead of filling; at the bound they wait for room, up to
    /// `backlog_wait`, then get `Error::ApplyBacklog`. A version is charged its key, its value
    /// and 200 bytes, about what it takes in memory. Default: 512 MiB.
    pub overlay_max_bytes: usize,
    /// A write transaction's writes in memory past this many bytes (each write counted as
    /// its key, its value and 48 bytes) are moved, sorted, into an unlinked file in
    /// `<dir>/spill` and read back from there, so a transaction of any size takes about this
    /// much memory. A transaction that spilled goes through to LMDB when it commits (visible
    /// once LMDB holds it, as any transaction over a quarter of `overlay_max_bytes`). It does
    /// not spill once it has taken a savepoint. At least 64 KiB. Default: 64 MiB.
    pub txn_spill_bytes: usize,
    /// How long a commit waits for room when the apply backlog (`overlay_max_bytes`, or the
    /// replay bound `max_replay_bytes`) is full before `Error::ApplyBacklog`; zero refuses at
    /// once. Default: 60 s.
    pub backlog_wait: Duration,
    /// Operations one LMDB apply transaction holds at most; while more are pending (and the
    /// map can still grow), up to 4 times as many, so the applier catches up. After a batch
    /// that appended nearly every put (keys above every key of their table), the applier
    /// gathers at most 8,192 (or this, if lower) until a batch does not. Default: 100,000.
    pub apply_max_ops: usize,
    /// The applier gathers commits this long (or until `apply_max_ops`) before an LMDB
    /// transaction, so LMDB's syncs stay few and off the log's way; commits are visible
    /// meanwhile through the overlay. Default: 100 ms.
    pub apply_interval: Duration,
    /// A checkpoint starts once this many WAL bytes were written since the last. Default: 64 MiB.
    pub checkpoint_bytes: u64,
    /// A checkpoint starts at least this often while anything was written. Default: 30 s.
    pub checkpoint_interval: Duration,
    /// Commits wait while recovery would replay more than this many WAL bytes (the applier or
    /// checkpoint is behind). Default: 1 GiB.
    pub max_replay_bytes: u64,
    /// Read and write transactions older than this fail their next call with
    /// `Error::TxnTimeout` (an iterator checks every 1024 items). A read transaction's age
    /// is read from a coarse clock, a few milliseconds late at most (the kernel's tick).
    /// A timed-out transaction still pins its snapshot until dropped. Default: `None` (no
    /// limit).
    pub txn_timeout: Option<Duration>,
    /// How long each of a map resize's waits (for the transactions open when it starts, for a
    /// backup's copy or a checkpoint's sync, then for transactions begun since) lasts before
    /// the resize is put off and retried: one attempt can take up to 3× this. Default: 10 s.
    pub resize_wait: Duration,
    /// Attempts `Db::update` makes before returning `Error::Conflict`. Default: 100.
    pub update_attempts: u32,
    /// The most entries one serializable commit's conflict check may visit on the flusher
    /// thread (keys it read, plus the conflict index's entries inside ranges it scanned of
    /// tables written since its snapshot); past it the commit fails with
    /// `Error::ReadSetTooLarge`. Bounds how long one commit's check holds up the others.
    /// Default: 1,000,000.
    pub max_conflict_checks: usize,
    /// How long the `walmdb-scrubber` thread waits between scrubs (`Db::scrub`, from a read
    /// snapshot that postpones map resizes while it lasts); `None` starts no thread. At most
    /// 24 h, not zero. Default: `None`.
    pub scrub_interval: Option<Duration>,
    /// Entry bytes (keys and values walked) per second the background scrub reads at most,
    /// checked every 4,096 entries; `None` or 0 reads unthrottled. Default: `Some(64 MiB)`.
    pub scrub_max_bytes_per_sec: Option<u64>,
    /// Whether range steps check each entry's checksum, as `get` always does. `false` leaves
    /// the entries a scan meets to the scrub (run one in the background with
    /// `scrub_interval`): a damaged value can then come back from a scan as data, never from
    /// a `get`. Saves the check's cost on scans (`docs/benchmarks.md`). Default: `true`.
    pub verify_scans: bool,
}

/// The least [`Config::txn_spill_bytes`]: a spill file's block.
const MIN_TXN_SPILL_BYTES: usize = 64 << 10;

impl Default for Config {
    fn default() -> Self {
        Config {
            wal: WalConfig::default(),
            isolation: Isolation::default(),
            tables: Vec::new(),
            map_size: 64 << 20,
            max_map_size: 64 << 30,
            max_readers: 1022,
            max_tables: 62,
            overlay_max_bytes: 512 << 20,
            txn_spill_bytes: 64 << 20,
            backlog_wait: Duration::from_secs(60),
            apply_max_ops: 100_000,
            apply_interval: Duration::from_millis(100),
            checkpoint_bytes: 64 << 20,
            checkpoint_interval: Duration::from_secs(30),
            max_replay_bytes: 1 << 30,
            txn_timeout: None,
            resize_wait: Duration::from_secs(10),
            update_attempts: 100,
            max_conflict_checks: 1_000_000,
            scrub_interval: None,
            scrub_max_bytes_per_sec: Some(64 << 20),
            verify_scans: true,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = value;
                self
            }
        )*
    };
}

impl Config {
    setters! {
        /// Sets [`Config::wal`].
        wal: WalConfig;
        /// Sets [`Config::isolation`].
        isolation: Isolation;
        /// Sets [`Config::map_size`].
        map_size: usize;
        /// Sets [`Config::max_map_size`].
        max_map_size: usize;
        /// Sets [`Config::max_readers`].
        max_readers: u32;
        /// Sets [`Config::max_tables`].
        max_tables: u32;
        /// Sets [`Config::overlay_max_bytes`].
        overlay_max_bytes: usize;
        /// Sets [`Config::txn_spill_bytes`].
        txn_spill_bytes: usize;
        /// Sets [`Config::backlog_wait`].
        backlog_wait: Duration;
        /// Sets [`Config::apply_max_ops`].
        apply_max_ops: usize;
        /// Sets [`Config::apply_interval`].
        apply_interval: Duration;
        /// Sets [`Config::checkpoint_bytes`].
        checkpoint_bytes: u64;
        /// Sets [`Config::checkpoint_interval`].
        checkpoint_interval: Duration;
        /// Sets [`Config::max_replay_bytes`].
        max_replay_bytes: u64;
        /// Sets [`Config::txn_timeout`].
        txn_timeout: Option<Duration>;
        /// Sets [`Config::resize_wait`].
        resize_wait: Duration;
        /// Sets [`Config::update_attempts`].
        update_attempts: u32;
        /// Sets [`Config::max_conflict_checks`].
        max_conflict_checks: usize;
        /// Sets [`Config::scrub_interval`].
        scrub_interval: Option<Duration>;
        /// Sets [`Config::scrub_max_bytes_per_sec`].
        scrub_max_bytes_per_sec: Option<u64>;
        /// Sets [`Config::verify_scans`].
        verify_scans: bool;
    }

    /// Sets the default durability of commits ([`WalConfig::durability`]).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.wal.durability = durability;
        self
    }

    /// Declares a table, created at open if missing.
    #[must_use]
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.tables.push(name.into());
        self
    }

    /// Checks the values against each other.
    pub fn validate(&self) -> Result<()> {
        self.wal.validate()?;
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.map_size == 0 || self.max_map_size < self.map_size {
            return bad(format!(
                "map_size {} must be at least 1 and at most max_map_size {}",
                self.map_size, self.max_map_size
            ));
        }
        let limits = [
            ("max_readers", self.max_readers, crate::limits::MAX_READERS),
            ("max_tables", self.max_tables, crate::limits::MAX_TABLES),
        ];
        for (field, value, max) in limits {
            crate::limits::check_count(field, value.into(), max.into())?;
        }
        if self.apply_max_ops == 0 {
            return bad("apply_max_ops must be at least 1".into());
        }
        for (field, value) in [
            ("backlog_wait", self.backlog_wait),
            ("apply_interval", self.apply_interval),
            ("checkpoint_interval", self.checkpoint_interval),
            ("resize_wait", self.resize_wait),
        ] {
            crate::limits::check_duration(field, value)?;
        }
        if let Some(interval) = self.scrub_interval {
            if interval.is_zero() {
                return bad("scrub_interval must not be zero (None turns it off)".into());
            }
            crate::limits::check_duration("scrub_interval", interval)?;
        }
        if self.overlay_max_bytes < self.wal.max_record_bytes {
            return bad(format!(
                "overlay_max_bytes {} is below the WAL's max_record_bytes {}",
                self.overlay_max_bytes, self.wal.max_record_bytes
            ));
        }
        if self.txn_spill_bytes < MIN_TXN_SPILL_BYTES {
            return bad(format!(
                "txn_spill_bytes {} is below {MIN_TXN_SPILL_BYTES}",
                self.txn_spill_bytes
            ));
        }
        if self.checkpoint_bytes == 0 || self.max_replay_bytes < self.checkpoint_bytes {
            return bad(format!(
                "checkpoint_bytes {} must be at least 1 and at most max_replay_bytes {}",
                self.checkpoint_bytes, self.max_replay_bytes
            ));
        }
        if self.update_attempts == 0 {
            return bad("update_attempts must be at least 1".into());
        }
        if self.max_conflict_checks == 0 {
            return bad("max_conflict_checks must be at least 1".into());
        }
        for t in &self.tables {
            crate::limits::check_table_name(t)?;
        }
        Ok(())
    }
}

/// Where retired segments go, and how long they stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// The archive directory (created if missing). Keep it on another disk than the
    /// database if it is to survive the loss of that disk.
    pub dir: PathBuf,
    /// Keep at least the newest this many archived segments. Default: `None`.
    pub keep_last: Option<usize>,
    /// Keep at least the segments archived within this long. Default: `None`.
    pub keep_for: Option<Duration>,
}

impl ArchiveConfig {
    /// Archive into `dir`, keeping everything (no retention rule).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ArchiveConfig {
            dir: dir.into(),
            keep_last: None,
            keep_for: None,
        }
    }
}
