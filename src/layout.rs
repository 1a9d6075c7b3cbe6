//! The database directory, one place for its names:
//!
//! ```text
//! <dir>/LOCK            an flock held while a Db has the directory open
//! <dir>/wal/            the log's segments (wal-<n>.log, spare-<n>.log)
//! <dir>/data/data.mdb   LMDB's file (and its lock.mdb)
//! ```
//! A backup directory has the same `wal/` and `data/` plus a `MANIFEST`.
//!
//! Every file walmdb creates is private to its user (0600) and every directory it creates
//! 0700; a directory that already exists keeps its mode.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of the files walmdb creates.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of the directories walmdb creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents, 0700.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_at(dir))
}

/// Opens `path` to read and write, created 0600 if missing (an existing file keeps its mode
/// and its bytes).
pub(crate) fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_at(path))
}

/// Creates `path` new and empty, 0600, to write; an existing file is an error.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_at(path))
}

/// An I/O error and the path it happened on.
#[derive(Debug)]
struct PathError {
    path: PathBuf,
    source: io::Error,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `e`, naming `path`, of the same kind.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| {
        io::Error::new(
            e.kind(),
            PathError {
                path: path.to_owned(),
                source: e,
            },
        )
    }
}

/// The lock file's name.
const LOCK_FILE: &str = "LOCK";
/// The log directory's name.
const WAL_DIR: &str = "wal";
/// LMDB's directory's name.
const DATA_DIR: &str = "data";
/// LMDB's data file's name, inside the data directory.
const LMDB_FILE: &str = "data.mdb";
/// Prefix of a user table's LMDB database name (`t.<name>`); walmdb's own are `walmdb.*`.
pub(crate) const LMDB_TABLE_PREFIX: &str = "t.";

/// `<dir>/LOCK`.
pub(crate) fn lock_file(dir: impl AsRef<Path>) -> PathBuf {
    dir.as_ref().join(LOCK_FILE)
}

/// `<dir>/wal`.
pub(crate) fn wal_dir(dir: impl AsRef<Path>) -> PathBuf {
    dir.as_ref().join(WAL_DIR)
}

/// `<dir>/spill`: write transactions' spilled writes, in unlinked files (`crate::spill`).
pub(crate) fn spill_dir(dir: impl AsRef<Path>) -> PathBuf {
    dir.as_ref().join("spill")
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
