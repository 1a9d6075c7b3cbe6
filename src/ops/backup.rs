//! Hot backup: a compacted, consistent copy of LMDB plus the log after its applied LSN, with
//! a manifest of LSNs, times and checksums. See `docs/operations.md`, "Backup and restore".
//!
//! Layout of a backup directory:
//! ```text
//! MANIFEST              the manifest below
//! data/data.mdb         LMDB, copied at one LMDB transaction (compacted)
//! wal/wal-NNNNNNNN.log  the segments holding the records after LMDB's applied LSN
//! ```
//! Manifest format 2 (text, one field a line; format 1 lacks the three lineage lines and is
//! still read, as timeline 1 without an identity):
//! ```text
//! walmdb-backup 2
//! identity <16 hex digits>
//! timeline <u32>
//! parent_timeline <u32>
//! created_micros <u64>
//! lmdb_applied_lsn <u64>
//! lmdb_applied_micros <u64>
//! wal_last_lsn <u64>
//! file <bytes> <crc32, 8 hex digits> <path relative to the backup>
//! ...
//! crc32 <8 hex digits: CRC32 of every byte above this line>
//! ```

use std::path::{Path, PathBuf};

use crate::engine::{now_micros, Engine};
use crate::error::{Error, Result};
use crate::lsn::{Lineage, Lsn};
use crate::store::sync_dir;
use crate::wal::log::txn_payload::{header_commit_micros, piece_parts};
use crate::wal::RecordType;

/// The manifest's format version. Version 1 (without the lineage) is still read.
pub const BACKUP_FORMAT_VERSION: u32 = 2;
const MANIFEST: &str = "MANIFEST";
const MAGIC: &str = "walmdb-backup";

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupFile {
    /// Its path inside the backup directory (`data/data.mdb`, `wal/wal-00000003.log`).
    pub path: String,
    /// Its length.
    pub bytes: u64,
    /// CRC32 of its bytes.
    pub crc32: u32,
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupManifest {
    /// The database and timeline backed up ([`Lineage::UNKNOWN`] for a format-1 manifest):
    /// a restore follows this timeline unless told another, and its database keeps the
    /// identity on a new timeline.
    pub lineage: Lineage,
    /// When the backup began, microseconds since the Unix epoch.
    pub created_micros: u64,
    /// The LSN LMDB's copy holds every commit through.
    pub lmdb_applied_lsn: Lsn,
    /// The commit time of that LSN's record (the backup's start time when the log no longer
    /// held it): a restore cannot target an earlier time.
    pub lmdb_applied_micros: u64,
    /// The last LSN in the backup's log: every commit acknowledged before the backup began
    /// is at or below it.
    pub wal_last_lsn: Lsn,
    /// Every file with its length and checksum.
    pub files: Vec<BackupFile>,
}

impl BackupManifest {
    fn encode(&self) -> String {
        let l = self.lineage;
        let mut text = format!(
            "{MAGIC} {BACKUP_FORMAT_VERSION}\nidentity {:016x}\ntimeline {}\nparent_timeline {}\n",
            l.identity, l.timeline, l.parent
        );
        text.push_str(&format!(
            "created_micros {}\nlmdb_applied_lsn {}\nlmdb_applied_micros {}\nwal_last_lsn {}\n",
            self.created_micros, self.lmdb_applied_lsn, self.lmdb_applied_micros, self.wal_last_lsn
        ));
        for f in &self.files {
            text.push_str(&format!("file {} {:08x} {}\n", f.bytes, f.crc32, f.path));
        }
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!("crc32 {crc:08x}\n"));
        text
    }

    fn decode(text: &str, path: &Path) -> Result<BackupManifest> {
        let bad = |reason: String| Error::BadBackup {
            path: path.to_owned(),
            reason,
        };
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or_else(|| bad("the manifest is truncated".into()))?;
        let (body, last) = text.split_at(body_end);
        let stored = last
            .trim_end()
            .strip_prefix("crc32 ")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("the manifest has no checksum line".into()))?;
        if crc32fast::hash(body.as_bytes()) != stored {
            return Err(bad("the manifest fails its checksum".into()));
        }
        let mut lines = body.lines();
        let head = lines.next().unwrap_or_default();
        let version = head
            .strip_prefix(MAGIC)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| bad("not a walmdb backup manifest".into()))?;
        if version != BACKUP_FORMAT_VERSION && version != 1 {
            return Err(Error::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: BACKUP_FORMAT_VERSION,
            });
        }
        let mut text_field = |name: &str| -> Result<&str> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .map(str::trim)
                .ok_or_else(|| bad(format!("the manifest lacks {name}")))
        };
        let lineage = if version == 1 {
            Lineage::UNKNOWN
        } else {
            let identity = u64::from_str_radix(text_field("identity ")?, 16).ok();
            let timeline = text_field("timeline ")?.parse().ok();
            let parent = text_field("parent_timeline ")?.parse().ok();
            match (identity, timeline, parent) {
                (Some(identity), Some(timeline), Some(parent))
                    if identity != 0 && timeline >= 1 && parent < timeline =>
                {
                    Lineage {
                        identity,
                        timeline,
                        parent,
                    }
                }
                _ => return Err(bad("the manifest's identity or timeline is invalid".into())),
            }
        };
        let mut field = |name: &str| -> Result<u64> {
            text_field(name)?
                .parse()
                .map_err(|_| bad(format!("the manifest's {name} is invalid")))
        };
        let created_micros = field("created_micros ")?;
        let lmdb_applied_lsn = field("lmdb_applied_lsn ")?;
        let lmdb_applied_micros = field("lmdb_applied_micros ")?;
        let wal_last_lsn = field("wal_last_lsn ")?;
        let mut files = Vec::new();
        for line in lines {
            let mut parts = line.splitn(4, ' ');
            let (Some("file"), Some(bytes), Some(crc), Some(rel)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(format!("bad manifest line {line:?}")));
            };
            if rel.contains("..") || rel.starts_with('/') {
                return Err(bad(format!("a file path leaves the backup: {rel:?}")));
            }
            files.push(BackupFile {
                path: rel.to_owned(),
                bytes: bytes
                    .parse()
                    .map_err(|_| bad(format!("bad length in {line:?}")))?,
                crc32: u32::from_str_radix(crc, 16)
                    .map_err(|_| bad(format!("bad checksum in {line:?}")))?,
            });
        }
        Ok(BackupManifest {
            lineage,
            created_micros,
            lmdb_applied_lsn,
            lmdb_applied_micros,
            wal_last_lsn,
            files,
        })
    }

    /// Reads the manifest of the backup in `dir` and checks every file against it (length
    /// and CRC32). A missing or damaged file is `Error::BadBackup` naming it.
    pub fn read_verified(dir: &Path) -> Result<BackupManifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::BadBackup {
            path: path.clone(),
            reason: format!("cannot read the manifest: {e}"),
        })?;
        let manifest = BackupManifest::decode(&text, &path)?;
        for f in &manifest.files {
            let file = dir.join(&f.path);
            let (bytes, crc) = file_crc(&file).map_err(|e| Error::BadBackup {
                path: file.clone(),
                reason: format!("cannot read it: {e}"),
            })?;
            if bytes != f.bytes || crc != f.crc32 {
                return Err(Error::BadBackup {
                    path: file,
                    reason: format!(
                        "{bytes} bytes with CRC32 {crc:08x}; the manifest says {} bytes, {:08x}",
                        f.bytes, f.crc32
                    ),
                });
            }
        }
        Ok(manifest)
    }
}

/// The length and CRC32 of the file at `path`, read in 1 MiB pieces.
fn file_crc(path: &Path) -> std::io::Result<(u64, u32)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        match file.read(&mut buf)? {
            0 => return Ok((len, hasher.finalize())),
            n => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
        }
    }
}

/// `dir` must not exist, or be an empty directory.
pub(crate) fn require_empty(dir: &Path, what: &'static str) -> Result<()> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(Error::InvalidInput {
            what,
            reason: format!("{} is not empty", dir.display()),
        }),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io(e)),
    }
}

/// Backs the engine's database up into `dir`; see `Db::backup`.
pub(crate) fn backup(engine: &Engine, dir: &Path) -> Result<BackupManifest> {
    require_empty(dir, "backup directory")?;
    let span = tracing::info_span!("walmdb.backup", dir = %dir.display());
    let _entered = span.enter();
    let created_micros = now_micros();
    crate::layout::create_private_dir(&crate::layout::data_dir(dir))?;
    let sh = &engine.state;
    let (lmdb_applied_lsn, segments) = {
        let _no_retirement = sh.retirement.lock();
        engine
            .store
            .copy_compacted(&crate::layout::lmdb_file(crate::layout::data_dir(dir)))?;
        let applied = crate::store::read_only::applied_lsn(&crate::layout::data_dir(dir))?;
        // Every commit acknowledged before this call is durable in the log now.
        engine.wal.sync()?;
        let segments = engine
            .wal
            .copy_segments(&crate::layout::wal_dir(dir), applied + 1)?;
        (applied, segments)
    };
    let lmdb_applied_micros = record_time(engine, lmdb_applied_lsn).unwrap_or(created_micros);
    let (bytes, crc32) = file_crc(&crate::layout::lmdb_file(crate::layout::data_dir(dir)))?;
    let mut files = vec![BackupFile {
        path: crate::layout::relative_lmdb_file(),
        bytes,
        crc32,
    }];
    files.extend(segments.iter().map(|s| BackupFile {
        path: crate::layout::relative_wal_file(&s.name),
        bytes: s.bytes,
        crc32: s.crc32,
    }));
    let manifest = BackupManifest {
        lineage: engine.wal.lineage(),
        created_micros,
        lmdb_applied_lsn,
        lmdb_applied_micros,
        wal_last_lsn: segments.last().map_or(lmdb_applied_lsn, |s| s.last_lsn),
        files,
    };
    sync_dir(&crate::layout::data_dir(dir))?;
    write_synced(&dir.join(MANIFEST), manifest.encode().as_bytes())?;
    sync_dir(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    tracing::info!(
        lmdb_applied_lsn,
        wal_last_lsn = manifest.wal_last_lsn,
        files = manifest.files.len(),
        "backed up the database"
    );
    Ok(manifest)
}

/// The commit time of the record at `lsn`, if the log still holds it. The log is read
/// unjoined: a split transaction's time is in its first piece's header, so it is never
/// read whole.
fn record_time(engine: &Engine, lsn: Lsn) -> Option<u64> {
    if lsn == 0 {
        return None;
    }
    let rec = engine.wal.read_from(lsn).unjoined().next()?.ok()?;
    if rec.lsn != lsn {
        return None;
    }
    if rec.record.kind() != RecordType::TxnEnd {
        return rec.record.decode().ok()?.time_micros();
    }
    // `lsn` ends a split transaction; its number is the count of parts before it.
    let (parts, _) = piece_parts(rec.record.payload())?;
    let first = match parts {
        0 => rec,
        parts => engine
            .wal
            .read_from(lsn - Lsn::from(parts))
            .unjoined()
            .next()?
            .ok()?,
    };
    // Its first piece: number 0, its chunk starting with the payload's header.
    let (number, chunk) = piece_parts(first.record.payload())?;
    if first.lsn + Lsn::from(parts) != lsn || number != 0 {
        return None;
    }
    header_commit_micros(chunk)
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp: PathBuf = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = crate::layout::create_private_file(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
