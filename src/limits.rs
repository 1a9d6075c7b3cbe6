//! The engine's hard limits, in one place: what the formats can hold and what a user may
//! name. Checked where input enters (`Config::validate`, `Db`, transactions).

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Every duration setting (waits, intervals, a durability level's deadline) is at most this.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `Config::max_readers` at most (LMDB's lock file holds a slot for each).
pub const MAX_READERS: u32 = 1 << 16;

/// `Config::max_tables` at most (every read transaction allocates a slot for each).
pub const MAX_TABLES: u32 = 32_767;

/// `WalConfig::queue_capacity` at most (the queue allocates a slot for each).
pub const MAX_QUEUE_CAPACITY: usize = 1 << 24;

/// Restarts of one engine thread (flusher, applier, checkpoint) after panics before the
/// engine fails instead of restarting it again.
#[cfg_attr(walmdb_loom, allow(dead_code))]
pub const MAX_THREAD_RESTARTS: u64 = 3;

/// How long `Db::close` waits for transactions still open (in other threads) to end
/// before it returns and leaves LMDB and the directory to be released when they end.
pub const CLOSE_WAITS_FOR_TRANSACTIONS: Duration = Duration::from_secs(1);

/// `now + wait`, or as far ahead as the clock allows: computing a deadline never panics.
pub(crate) fn deadline(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(MAX_SETTING_DURATION))
        .unwrap_or(now)
}

/// Refuses a count setting `field` outside `1..=max`.
pub(crate) fn check_count(field: &str, value: u64, max: u64) -> Result<()> {
    if value == 0 || value > max {
        return Err(Error::InvalidConfig(format!(
            "{field} {value} must be between 1 and {max}"
        )));
    }
    Ok(())
}

/// Refuses a duration setting `field` above [`MAX_SETTING_DURATION`].
pub(crate) fn check_duration(field: &str, value: Duration) -> Result<()> {
    if value > MAX_SETTING_DURATION {
        return Err(Error::InvalidConfig(format!(
            "{field} {value:?} is above the limit of {MAX_SETTING_DURATION:?}"
        )));
    }
    Ok(())
}

/// The largest frame body (stored or uncompressed) the log's decoder accepts. Caps
/// allocation when a length field is damaged.
pub const MAX_FRAME_BODY: usize = 256 << 20;

/// The largest transaction record the log takes (written in pieces of at most
/// `max_record_bytes` each when over that): 64 GiB, far beyond what a transaction buffered in
/// memory can reach on the machines walmdb runs on.
pub const MAX_TXN_RECORD_BYTES: usize = 64 << 30;

/// The smallest segment `WalConfig` allows.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

/// The longest table name (LMDB stores it as a key, with a prefix).
pub const MAX_TABLE_NAME_LEN: usize = 255;

/// The longest key LMDB stores.
pub const MAX_KEY_LEN: usize = 511;

/// Longest restore point name, in bytes.
pub const MAX_RESTORE_POINT_NAME_LEN: usize = 255;

/// Refuses empty, overlong or NUL-holding table names.
/// Refuses a key LMDB cannot hold: empty, or longer than [`MAX_KEY_LEN`]. Reads and writes
/// refuse the same keys.
#[inline]
pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(bad_key(key.len()));
    }
    Ok(())
}

#[cold]
fn bad_key(len: usize) -> Error {
    Error::InvalidInput {
        what: "key",
        reason: format!("{len} bytes; keys are 1 to {MAX_KEY_LEN} bytes"),
    }
}

pub(crate) fn check_table_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_TABLE_NAME_LEN {
        "it is longer than 255 bytes"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidInput {
        what: "table name",
        reason: format!("{name:?}: {reason}"),
    })
}

/// Refuses empty, overlong or control-character-holding restore point names.
pub(crate) fn check_restore_point_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidInput {
            what: "restore point name",
            reason: reason.into(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_RESTORE_POINT_NAME_LEN {
        return bad("it is longer than 255 bytes");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}
