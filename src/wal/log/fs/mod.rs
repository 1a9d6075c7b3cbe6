//! The one I/O trait all log file I/O goes through, so tests can simulate crashes and faults.
//!
//! [`StdFs`] is the real file system. [`SimFs`] keeps durable and pending state apart in
//! memory, simulates power loss and injects errors.

use crate::sync::DynArc;
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(feature = "internals")]
mod sim;
mod std_fs;

#[cfg(feature = "internals")]
pub use sim::{CrashOptions, FaultKind, OpKind, SimFs};
pub use std_fs::StdFs;

/// A shared handle to a file system.
pub type FsRef = DynArc<dyn Fs>;

/// The file-system operations the log uses. Paths are absolute or relative to the process.
pub trait Fs: Send + Sync + Debug + 'static {
    /// Creates the directory and its parents; not durable until `sync_dir` of its parent.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The file names (not paths) directly inside `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for reading and writing. With `create`, a missing file is created empty
    /// (the creation is durable only after `sync_dir`); without, a missing file is `NotFound`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn FsFile>>;
    /// Atomically renames a file; durable only after `sync_dir`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file; durable only after `sync_dir`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals inside `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// True when the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// When the file was last modified (archive retention by age). Default: unsupported.
    fn modified(&self, path: &Path) -> io::Result<std::time::SystemTime> {
        let _ = path;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// An open file. All offsets are absolute; there is no cursor.
#[allow(clippy::len_without_is_empty)]
pub trait FsFile: Send + Sync + Debug {
    /// Writes all of `buf` at `offset`. An error may leave any prefix written.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Makes the written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Sets the file's length: truncates, or extends with zeros.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves real blocks for `[0, len)` so later writes and syncs there do not allocate
    /// (the file may be written with zeros to achieve it). Durable after `sync_data`.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
}

impl dyn FsFile {
    /// Reads exactly `buf.len()` bytes at `offset`, or `UnexpectedEof`.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// Joins a directory and a file name.
pub(crate) fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
