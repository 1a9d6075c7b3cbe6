//! A snapshot on disk: one file, a tar of a walmdb hot backup (`backup/`, every file of it
//! checksummed by its `MANIFEST`) and `walmdb-raft-snapshot`, which names what the backup is a
//! snapshot of: `"walmdb-raft-snapshot 1\n"`, then the payload (version byte and postcard of
//! the snapshot's metadata and the backup's LSN of its last applied entry), then a CRC32 of
//! everything before it, little-endian.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::records::{decode, encode};
use crate::SnapshotMeta;

const META_FILE: &str = "walmdb-raft-snapshot";
const META_MAGIC: &[u8] = b"walmdb-raft-snapshot 1\n";
const BACKUP_DIR: &str = "backup";

/// A packed snapshot file. The state machine's snapshot data: built by it, sent by the
/// network layer as bytes, installed from a file the receiver wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    path: PathBuf,
}

/// What a snapshot holds: openraft's metadata and the LSN, in the backup's log, of the commit
/// that applied its last log id (the restore stops there).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Contents {
    pub meta: SnapshotMeta,
    pub lsn: walmdb::Lsn,
}

impl SnapshotFile {
    /// A snapshot file at `path` (written by [`SnapshotFile::pack`], or received whole).
    pub fn at(path: impl Into<PathBuf>) -> SnapshotFile {
        SnapshotFile { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Packs the backup in `backup` with `contents` into a new file at `path`, synced.
    pub(crate) fn pack(
        path: &Path,
        backup: &Path,
        contents: &Contents,
    ) -> io::Result<SnapshotFile> {
        let file = crate::files::private_file(path)?;
        let mut tar = tar::Builder::new(file);
        let mut meta = META_MAGIC.to_vec();
        meta.extend(encode(contents)?);
        let crc = crc32fast::hash(&meta);
        meta.extend(crc.to_le_bytes());
        let mut header = tar::Header::new_gnu();
        header.set_size(meta.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, META_FILE, &meta[..])?;
        tar.append_dir_all(BACKUP_DIR, backup)?;
        let file = tar.into_inner()?;
        file.sync_all()?;
        Ok(SnapshotFile::at(path))
    }

    /// Reads what the snapshot holds (its first member), checking its CRC.
    pub(crate) fn contents(&self) -> io::Result<Contents> {
        let mut archive = tar::Archive::new(std::fs::File::open(&self.path)?);
        let mut first = archive
            .entries()?
            .next()
            .ok_or_else(|| invalid("an empty snapshot file"))??;
        if first.path()?.as_ref() != Path::new(META_FILE) {
            return Err(invalid("a snapshot file without its description first"));
        }
        let mut bytes = Vec::new();
        first.by_ref().take(1 << 20).read_to_end(&mut bytes)?;
        parse_meta(&bytes)
    }

    /// Unpacks the backup into `dir/backup` (which must not exist) and returns that path
    /// with what the snapshot holds.
    pub(crate) fn unpack(&self, dir: &Path) -> io::Result<(PathBuf, Contents)> {
        let contents = self.contents()?;
        crate::files::private_dir(dir)?;
        let mut archive = tar::Archive::new(std::fs::File::open(&self.path)?);
        // `unpack` refuses members that would land outside `dir`.
        archive.unpack(dir)?;
        Ok((dir.join(BACKUP_DIR), contents))
    }

    /// Copies the snapshot into `out`.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<u64> {
        io::copy(&mut std::fs::File::open(&self.path)?, out)
    }
}

fn parse_meta(bytes: &[u8]) -> io::Result<Contents> {
    if bytes.len() < META_MAGIC.len() + 4 || !bytes.starts_with(META_MAGIC) {
        return Err(invalid(
            "not a walmdb-raft snapshot (or of another version)",
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(invalid("the snapshot's description fails its CRC"));
    }
    decode("snapshot description", &body[META_MAGIC.len()..])
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}
