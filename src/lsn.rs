//! Log sequence numbers: the one ordering every layer shares.

/// A log sequence number: the position of a record in the log. The first record is LSN 1;
/// LSN 0 means "nothing".
pub type Lsn = u64;

/// True when a segment whose first record is `next_first` continues one whose last record is
/// `last`: LSNs are contiguous, so the earlier segment lost no record (bytes past its run are
/// stale, not damage).
pub(crate) fn continues(last: Lsn, next_first: Lsn) -> bool {
    last.checked_add(1) == Some(next_first)
}

/// Which database a log belongs to, and which of its histories: what a segment header, an
/// archived segment's name and a backup manifest record, so that the logs of two databases,
/// or of a database and a restore of it, are never mixed (`docs/wal-format.md`).
///
/// A database gets a random `identity` when it is created, on timeline 1. A restore keeps
/// the identity and starts a new timeline, numbered above every timeline of the database
/// its restore saw, whose `parent` is the timeline it followed (as PostgreSQL's timelines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lineage {
    /// The database's identity, never 0 once known. 0 only where it is unknown: a segment
    /// or backup manifest written by format version 1.
    pub identity: u64,
    /// The timeline: 1 for a database as created, higher for each restore of it.
    pub timeline: u32,
    /// The timeline this one branched from; 0 for timeline 1.
    pub parent: u32,
}

impl Lineage {
    /// What a version-1 segment or manifest stands for: no identity, timeline 1.
    pub const UNKNOWN: Lineage = Lineage {
        identity: 0,
        timeline: 1,
        parent: 0,
    };

    /// A new database: a fresh random identity, timeline 1.
    pub fn new_database() -> Lineage {
        Lineage {
            identity: random_identity(),
            timeline: 1,
            parent: 0,
        }
    }

    /// True when the identity is known (not a version-1 file's).
    pub fn is_known(&self) -> bool {
        self.identity != 0
    }

    /// The lineage of a restore that followed this timeline and starts `timeline`.
    pub fn branch(&self, timeline: u32) -> Lineage {
        Lineage {
            identity: self.identity,
            timeline,
            parent: self.timeline,
        }
    }
}

impl std::fmt::Display for Lineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_known() {
            write!(
                f,
                "database {:016x}, timeline {}",
                self.identity, self.timeline
            )
        } else {
            write!(
                f,
                "no recorded identity (format version 1), timeline {}",
                self.timeline
            )
        }
    }
}

/// A random non-zero 64-bit number, without a random-number crate: the standard library's
/// `RandomState` keys its SipHash from the operating system's randomness once a thread and
/// varies them per call; the clock, the process id, a stack address and a counter are
/// hashed in as well.
fn random_identity() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    let local = 0u8;
    h.write_usize(std::ptr::addr_of!(local) as usize);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish().max(1)
}
