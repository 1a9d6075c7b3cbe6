//! The real file system. Every error names the path it happened on (its kind, and so
//! `ENOSPC`'s `StorageFull`, is kept).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Fs, FsFile};
use crate::layout::io_at as at;

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        crate::layout::create_private_dir(dir).map_err(at(dir))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(at(dir))? {
            let entry = entry.map_err(at(dir))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(crate::layout::FILE_MODE)
            .open(path)
            .map_err(at(path))?;
        Ok(Box::new(StdFile {
            file,
            path: path.to_owned(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to).map_err(at(from))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path).map_err(at(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn modified(&self, path: &Path) -> io::Result<std::time::SystemTime> {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(at(path))
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
    path: PathBuf,
}

/// Zeros written per call when allocating.
const ZERO_CHUNK: usize = 1 << 20;

impl FsFile for StdFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset).map_err(at(&self.path))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(at(&self.path)),
            }
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data().map_err(at(&self.path))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len).map_err(at(&self.path))
    }

    /// Writes zeros over `[current length, len)`: unlike `fallocate`, which leaves unwritten
    /// extents that each later fdatasync must convert, written blocks make a later overwrite
    /// plus fdatasync a pure data flush.
    fn allocate(&self, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK];
        let mut offset = self.len()?;
        while offset < len {
            let n = ZERO_CHUNK.min((len - offset) as usize);
            self.write_at(&zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata().map_err(at(&self.path))?.len())
    }
}
