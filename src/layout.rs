//! The database directory, one place for its names:
//!
//! ```text
//! <dir>/LOCK            an flock held while a Db has the directory open
//! <dir>/wal/            the log's segments (wal-<n>.log, spare-<n>.log)
//! <dir>/data/data.mdb   LMDB's file (and its lock.mdb)
//! ```
//! A backup directory has the same `wal/` and `data/` plus a `MANIFEST`.

use std::path::{Path, PathBuf};

/// The lock file's name.
const LOCK_FILE: &str = "LOCK";
/// The log directory's name.
const WAL_DIR: &str = "wal";
/// LMDB's directory's name.
const DATA_DIR: &str = "data";
/// LMDB's data file's name, inside the data directory.
const LMDB_FILE: &str = "data.mdb";

/// `<dir>/LOCK`.
pub(crate) fn lock_file(dir: impl AsRef<Path>) -> PathBuf {
    dir.as_ref().join(LOCK_FILE)
}

/// `<dir>/wal`.
pub(crate) fn wal_dir(dir: impl AsRef<Path>) -> PathBuf {
    dir.as_ref().join(WAL_DIR)
}

/// `<dir>/data`.
pub(crate) fn data_dir(dir: impl AsRef<Path>) -> PathBuf {
    dir.as_ref().join(DATA_DIR)
}

/// `<data_dir>/data.mdb`.
pub(crate) fn lmdb_file(data_dir: impl AsRef<Path>) -> PathBuf {
    data_dir.as_ref().join(LMDB_FILE)
}

/// `data/data.mdb`: LMDB's file as a path relative to the database (or backup) directory.
pub(crate) fn relative_lmdb_file() -> String {
    format!("{DATA_DIR}/{LMDB_FILE}")
}

/// `wal/<name>`: a log file as a path relative to the database (or backup) directory.
pub(crate) fn relative_wal_file(name: &str) -> String {
    format!("{WAL_DIR}/{name}")
}
