//! Quarantine: the bytes opening cuts from the log (a torn tail, the damage a point-in-time
//! open stops at, later segments dropped with them) are copied into `<log dir>/quarantine/`,
//! written and synced, before anything is zeroed or removed, so nothing recovery discards is
//! gone for good. Recovery never reads them back; `walmdb quarantine list|show` does.
//!
//! ```text
//! Format: quarantine file (version 1) =
//!           { magic: [u8; 8] "WALMDBQ1" | version: u32 | salt: u32 | segment_no: u64
//!           | offset: u64 | time_micros: u64 | reason_len: u32 | reason: [u8; reason_len]
//!           | len: u64 | header_crc: u32 | bytes: [u8; len] | bytes_crc: u32 }
//!         header_crc = crc32(everything before it); bytes_crc = crc32(bytes)
//! ```
//!
//! Files are named `cut-<time_micros:020>-<segment:08>-<offset:010>.bin`, so the oldest sort
//! first; past `WalConfig::quarantine_max_bytes` the oldest are removed.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::fs::{join, Fs};
use crate::error::{Error, Result};

/// The files of a quarantine, oldest first: each name with its parsed entry, or why it does
/// not parse.
pub type QuarantineListing = Vec<(String, std::result::Result<QuarantineEntry, String>)>;

/// The folder, inside the log directory.
pub const QUARANTINE_DIR: &str = "quarantine";
const MAGIC: [u8; 8] = *b"WALMDBQ1";
/// The quarantine file format this build writes and reads.
pub const QUARANTINE_FORMAT_VERSION: u32 = 1;

/// One quarantined run of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantineEntry {
    /// Its file name in the quarantine folder.
    pub file_name: String,
    /// The segment the bytes were cut from.
    pub segment_no: u64,
    /// That segment's salt (frames inside the bytes carry it).
    pub salt: u32,
    /// Where in the segment the bytes began.
    pub offset: u64,
    /// When they were quarantined, microseconds since the Unix epoch.
    pub time_micros: u64,
    /// Why opening cut them.
    pub reason: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// The quarantine folder of the log in `log_dir`.
pub fn quarantine_dir(log_dir: &Path) -> PathBuf {
    join(log_dir, QUARANTINE_DIR)
}

fn encode(e: &QuarantineEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + e.reason.len() + e.bytes.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&QUARANTINE_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&e.salt.to_le_bytes());
    out.extend_from_slice(&e.segment_no.to_le_bytes());
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.time_micros.to_le_bytes());
    out.extend_from_slice(&(e.reason.len() as u32).to_le_bytes());
    out.extend_from_slice(e.reason.as_bytes());
    out.extend_from_slice(&(e.bytes.len() as u64).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&e.bytes);
    out.extend_from_slice(&crc32fast::hash(&e.bytes).to_le_bytes());
    out
}

/// Parses a quarantine file; `Err` says why it is not one.
pub fn decode(file_name: &str, data: &[u8]) -> std::result::Result<QuarantineEntry, String> {
    let mut rest = data;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        if rest.len() < n {
            return Err("the file ends early".to_owned());
        }
        let (s, r) = rest.split_at(n);
        rest = r;
        Ok(s)
    };
    if take(8)? != MAGIC {
        return Err("bad magic bytes".into());
    }
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4"));
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8"));
    let version = u32_of(take(4)?);
    if version != QUARANTINE_FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let salt = u32_of(take(4)?);
    let segment_no = u64_of(take(8)?);
    let offset = u64_of(take(8)?);
    let time_micros = u64_of(take(8)?);
    let reason_len = u32_of(take(4)?) as usize;
    let reason = String::from_utf8_lossy(take(reason_len)?).into_owned();
    let len = usize::try_from(u64_of(take(8)?)).map_err(|_| "impossible length".to_owned())?;
    let header_end = 8 + 4 + 4 + 8 + 8 + 8 + 4 + reason_len + 8;
    let header_crc = u32_of(take(4)?);
    if crc32fast::hash(&data[..header_end]) != header_crc {
        return Err("header CRC mismatch".into());
    }
    let bytes = take(len)?.to_vec();
    if crc32fast::hash(&bytes) != u32_of(take(4)?) {
        return Err("CRC mismatch of the quarantined bytes".into());
    }
    Ok(QuarantineEntry {
        file_name: file_name.to_owned(),
        segment_no,
        salt,
        offset,
        time_micros,
        reason,
        bytes,
    })
}

/// Copies `bytes`, cut from segment `segment_no` (salt `salt`) at `offset`, into the
/// quarantine of `log_dir`, durably; then removes the oldest entries past `max_bytes`
/// (never the one just written). Nothing is written when `max_bytes` is 0.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quarantine(
    fs: &dyn Fs,
    log_dir: &Path,
    max_bytes: u64,
    segment_no: u64,
    salt: u32,
    offset: u64,
    bytes: Vec<u8>,
    reason: &str,
) -> Result<Option<String>> {
    if max_bytes == 0 || bytes.is_empty() {
        return Ok(None);
    }
    let dir = quarantine_dir(log_dir);
    if !fs.exists(&dir) {
        fs.create_dir_all(&dir)?;
        fs.sync_dir(log_dir).map_err(Error::SyncFailed)?;
    }
    // A copy a crash interrupted never got its name: nothing refers to it.
    for stale in fs.list(&dir)?.iter().filter(|n| n.ends_with(".bin.tmp")) {
        fs.remove(&join(&dir, stale))?;
    }
    let time_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let file_name = format!("cut-{time_micros:020}-{segment_no:08}-{offset:010}.bin");
    let entry = QuarantineEntry {
        file_name: file_name.clone(),
        segment_no,
        salt,
        offset,
        time_micros,
        reason: reason.to_owned(),
        bytes,
    };
    let tmp = join(&dir, &format!("{file_name}.tmp"));
    super::archive::write_synced(fs, &tmp, &encode(&entry))?;
    fs.rename(&tmp, &join(&dir, &file_name))?;
    fs.sync_dir(&dir).map_err(Error::SyncFailed)?;
    tracing::warn!(
        segment = segment_no,
        offset,
        bytes = entry.bytes.len(),
        file = %file_name,
        "quarantined bytes opening cut from the write-ahead log"
    );
    prune(fs, &dir, max_bytes, &file_name)?;
    Ok(Some(file_name))
}

/// The quarantine files' names, oldest first.
fn names(fs: &dyn Fs, dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs
        .list(dir)?
        .into_iter()
        .filter(|n| n.starts_with("cut-") && n.ends_with(".bin"))
        .collect();
    names.sort();
    Ok(names)
}

fn prune(fs: &dyn Fs, dir: &Path, max_bytes: u64, keep: &str) -> Result<()> {
    let names = names(fs, dir)?;
    let mut sizes = Vec::with_capacity(names.len());
    for name in &names {
        sizes.push(fs.open(&join(dir, name), false)?.len()?);
    }
    let mut total: u64 = sizes.iter().sum();
    let mut removed = false;
    for (name, size) in names.iter().zip(sizes) {
        if total <= max_bytes || name == keep {
            break;
        }
        fs.remove(&join(dir, name))?;
        total -= size;
        removed = true;
    }
    if removed {
        fs.sync_dir(dir).map_err(Error::SyncFailed)?;
    }
    Ok(())
}

/// Every entry in the quarantine of `log_dir`, oldest first: each parsed, or the reason it
/// does not parse.
pub fn list(fs: &dyn Fs, log_dir: &Path) -> Result<QuarantineListing> {
    let dir = quarantine_dir(log_dir);
    if !fs.exists(&dir) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in names(fs, &dir)? {
        let file = fs.open(&join(&dir, &name), false)?;
        let mut data = vec![0u8; usize::try_from(file.len()?).unwrap_or(0)];
        file.read_exact_at(&mut data, 0)?;
        out.push((name.clone(), decode(&name, &data)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_any_flipped_bit_is_refused() {
        let e = QuarantineEntry {
            file_name: "cut-1.bin".into(),
            segment_no: 3,
            salt: 7,
            offset: 4096,
            time_micros: 99,
            reason: "frame CRC mismatch".into(),
            bytes: b"cut bytes".to_vec(),
        };
        let data = encode(&e);
        assert_eq!(decode("cut-1.bin", &data), Ok(e));
        for bit in 0..data.len() * 8 {
            let mut d = data.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(decode("cut-1.bin", &d).is_err(), "bit {bit}");
        }
        assert!(decode("cut-1.bin", &data[..data.len() - 1]).is_err());
    }

    #[test]
    fn the_oldest_entries_go_past_the_bound_and_the_newest_always_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = crate::wal::log::fs::StdFs;
        let put = |n: u64, len: usize, max: u64| {
            quarantine(&fs, tmp.path(), max, n, 1, 0, vec![n as u8; len], "test")
                .unwrap()
                .unwrap()
        };
        let first = put(1, 1000, 10_000);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = put(2, 1000, 10_000);
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Over the bound: the two older ones go, the new one stays though it alone is over.
        let third = put(3, 20_000, 10_000);
        let left: Vec<String> = list(&fs, tmp.path())
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(left, vec![third.clone()]);
        assert!(![first, second].contains(&third));
        assert_eq!(
            quarantine(&fs, tmp.path(), 0, 4, 1, 0, vec![1], "off").unwrap(),
            None
        );
        // A copy a crash left under its temporary name is removed by the next one.
        let stale = quarantine_dir(tmp.path()).join("cut-0.bin.tmp");
        std::fs::write(&stale, b"half").unwrap();
        put(5, 10, 100_000);
        assert!(!stale.exists());
    }
}
