//! Sorted runs of a write transaction's buffered writes in private temporary files, read
//! back a block at a time: where a write transaction's writes go past its memory budget
//! (`Config::txn_spill_bytes`).
//!
//! A run file is unlinked from the start (`O_TMPFILE` in `<db>/spill/`, 0700; or created
//! 0600 under a unique name and unlinked at once where the file system lacks it), so it
//! needs no cleaning after a crash and its space is freed when its last handle closes.
//!
//! Format (version [`RUN_FORMAT_VERSION`]; docs/wal-format.md, "Spill runs"):
//!
//! ```text
//! run    = header block*
//! header = magic "WALMRUN\0" | format_version: u32 | crc: u32     (crc of the 12 bytes before)
//! block  = body_len: u32 | crc: u32 | body                         (crc of body_len and body)
//! body   = entry+
//! entry  = kind: u8 (1 put, 2 delete) | key_len: u32 | key | [value_len: u32 | value]
//! ```
//! Keys ascend strictly through a run. The writer keeps each block's first key and offset
//! in memory, so a point read or a range's start reads one block, and a filter of its keys
//! ([`KeyFilter`]), so a point read of a key the run lacks nearly always reads none.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::layout::{create_private_dir, create_private_file, io_at, FILE_MODE};

mod commit;
mod gather;
pub(crate) use commit::SpilledWrites;
pub(crate) use gather::{Gather, Gathered};

/// The first bytes of every run file.
pub(crate) const RUN_MAGIC: [u8; 8] = *b"WALMRUN\0";
/// The version of the run format this build writes and reads.
pub(crate) const RUN_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 16;
/// A block is written as soon as its body reaches this many bytes (so it holds at most one
/// entry past it).
pub(crate) const BLOCK_TARGET: usize = 64 << 10;
const BLOCK_HEADER_LEN: usize = 8;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;

/// What a write held in memory is counted besides its key and value (its entry, and its
/// map's or list's share), against a transaction's spill budget.
pub(crate) const ENTRY_OVERHEAD: usize = 48;

/// `writes`, in the order made, sorted by key keeping each key's last write, in place.
/// Writes made in ascending key order (sorted loads) are checked, not sorted.
pub(crate) fn last_writes<K: Ord, V>(mut writes: Vec<(K, V)>) -> Vec<(K, V)> {
    if !writes.is_sorted_by(|a, b| a.0 < b.0) {
        // Stable: equal keys stay in the order made.
        writes.sort_by(|a, b| a.0.cmp(&b.0));
        // `dedup_by` keeps the first of equal neighbours and hands the later one first:
        // swapped, the kept entry holds the later write.
        writes.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
    }
    writes
}

/// An owned entry of a run: a key and its value, or `None` for a delete.
pub(crate) type RunEntry = (Vec<u8>, Option<Vec<u8>>);

/// Where a block starts and the first key it holds.
#[derive(Debug)]
struct BlockRef {
    first_key: Box<[u8]>,
    offset: u64,
    body_len: u32,
}

/// An unlinked file, 0600, in `dir` (created 0700 if missing).
fn unlinked_file(dir: &Path) -> io::Result<File> {
    create_private_dir(dir)?;
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(FILE_MODE),
    ) {
        Ok(fd) => return Ok(File::from(fd)),
        // Not supported by this file system (or kernel): a named file, unlinked at once.
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL) => {
        }
        Err(e) => return Err(io_at(dir)(e.into())),
    }
    // A name, not synchronisation: a counter nobody orders anything on.
    static NEXT: crate::sync::StatCounter = crate::sync::StatCounter::new(0);
    let n = NEXT.fetch_add(1, crate::sync::Ordering::Relaxed);
    let path = dir.join(format!("run-{}-{n}.tmp", std::process::id()));
    let file = create_private_file(&path)?;
    std::fs::remove_file(&path).map_err(io_at(&path))?;
    Ok(file)
}

/// Writes one run: entries pushed in strictly ascending key order, then [`RunWriter::finish`].
pub(crate) struct RunWriter {
    file: File,
    offset: u64,
    body: Vec<u8>,
    body_first: Option<Box<[u8]>>,
    /// The key pushed last (empty before the first: `entries` tells).
    last_key: Vec<u8>,
    index: Vec<BlockRef>,
    entries: u64,
    /// Each key's [`key_hash`], for the run's [`KeyFilter`].
    hashes: Vec<u64>,
}

/// Which keys a run may hold: a Bloom filter of its keys (10 bits a key, 7 probes: about 1%
/// of the keys it does not hold pass), so that a point read skips, without reading a block,
/// nearly every run that cannot hold its key. In memory only.
#[derive(Debug)]
struct KeyFilter {
    bits: Vec<u64>,
}

const FILTER_BITS_PER_KEY: usize = 10;
const FILTER_PROBES: u64 = 7;

/// A key's hash for [`KeyFilter`]s.
fn key_hash(key: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write(key);
    h.finish()
}

impl KeyFilter {
    fn of(hashes: &[u64]) -> KeyFilter {
        let words = (hashes.len() * FILTER_BITS_PER_KEY).div_ceil(64).max(1);
        let mut filter = KeyFilter {
            bits: vec![0; words],
        };
        for &hash in hashes {
            for bit in filter.probes(hash) {
                filter.bits[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        filter
    }

    /// The bits a hash sets (double hashing).
    fn probes(&self, hash: u64) -> impl Iterator<Item = u64> {
        let len = self.bits.len() as u64 * 64;
        let (h1, h2) = (hash & 0xFFFF_FFFF, (hash >> 32) | 1);
        (0..FILTER_PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % len)
    }

    fn may_hold(&self, hash: u64) -> bool {
        self.probes(hash)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

impl RunWriter {
    /// A new run in an unlinked private file in `dir`.
    pub(crate) fn create(dir: &Path) -> io::Result<RunWriter> {
        let file = unlinked_file(dir)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&RUN_MAGIC);
        header.extend_from_slice(&RUN_FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
        file.write_all_at(&header, 0)?;
        Ok(RunWriter {
            file,
            offset: HEADER_LEN as u64,
            body: Vec::with_capacity(BLOCK_TARGET + 1024),
            body_first: None,
            last_key: Vec::new(),
            index: Vec::new(),
            entries: 0,
            hashes: Vec::new(),
        })
    }

    /// Appends an entry; `key` must lie above every key pushed before it.
    pub(crate) fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> io::Result<()> {
        if self.entries > 0 && key <= self.last_key.as_slice() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a spill run's keys must ascend strictly",
            ));
        }
        if self.body_first.is_none() {
            self.body_first = Some(key.into());
        }
        let len = |n: usize| {
            u32::try_from(n)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry of 4 GiB or more"))
        };
        match value {
            Some(value) => {
                self.body.push(KIND_PUT);
                self.body.extend_from_slice(&len(key.len())?.to_le_bytes());
                self.body.extend_from_slice(key);
                self.body
                    .extend_from_slice(&len(value.len())?.to_le_bytes());
                self.body.extend_from_slice(value);
            }
            None => {
                self.body.push(KIND_DELETE);
                self.body.extend_from_slice(&len(key.len())?.to_le_bytes());
                self.body.extend_from_slice(key);
            }
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.hashes.push(key_hash(key));
        self.entries += 1;
        if self.body.len() >= BLOCK_TARGET {
            self.write_block()?;
        }
        Ok(())
    }

    /// Writes the block being filled, if any. A failed write leaves it unwritten (and the
    /// run unfinished: the caller drops the writer).
    fn write_block(&mut self) -> io::Result<()> {
        if self.body_first.is_none() {
            return Ok(());
        }
        let body_len = u32::try_from(self.body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "block of 4 GiB or more"))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&body_len.to_le_bytes());
        crc.update(&self.body);
        let mut head = [0u8; BLOCK_HEADER_LEN];
        head[..4].copy_from_slice(&body_len.to_le_bytes());
        head[4..].copy_from_slice(&crc.finalize().to_le_bytes());
        self.file.write_all_at(&head, self.offset)?;
        self.file
            .write_all_at(&self.body, self.offset + BLOCK_HEADER_LEN as u64)?;
        self.index.push(BlockRef {
            first_key: self.body_first.take().expect("checked above"),
            offset: self.offset,
            body_len,
        });
        self.offset += (BLOCK_HEADER_LEN + self.body.len()) as u64;
        self.body.clear();
        Ok(())
    }

    /// The run, its last block written and its header read back and checked.
    pub(crate) fn finish(mut self) -> io::Result<Run> {
        self.write_block()?;
        let run = Run {
            file: self.file,
            index: self.index,
            filter: KeyFilter::of(&self.hashes),
            entries: self.entries,
            bytes: self.offset,
        };
        run.check_header()?;
        Ok(run)
    }
}

/// A finished run: its file and the index of its blocks.
#[derive(Debug)]
pub(crate) struct Run {
    file: File,
    index: Vec<BlockRef>,
    filter: KeyFilter,
    entries: u64,
    bytes: u64,
}

/// A damaged run file: an I/O error of kind `InvalidData` saying where.
fn damaged(offset: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a transaction's spill run is damaged at offset {offset}: {what}"),
    )
}

impl Run {
    /// Entries in the run.
    pub(crate) fn len(&self) -> u64 {
        self.entries
    }

    /// Bytes of its file.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.bytes
    }

    fn check_header(&self) -> io::Result<()> {
        let mut header = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut header, 0)?;
        let crc = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if crc32fast::hash(&header[..12]) != crc || header[..8] != RUN_MAGIC {
            return Err(damaged(0, "bad header"));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != RUN_FORMAT_VERSION {
            return Err(damaged(8, &format!("format version {version}")));
        }
        Ok(())
    }

    /// Block `i`'s body, its checksum checked.
    fn block(&self, i: usize) -> io::Result<Block> {
        let b = &self.index[i];
        let mut buf = vec![0u8; BLOCK_HEADER_LEN + b.body_len as usize];
        self.file.read_exact_at(&mut buf, b.offset)?;
        let body_len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&buf[..4]);
        hasher.update(&buf[BLOCK_HEADER_LEN..]);
        if body_len != b.body_len || hasher.finalize() != crc {
            return Err(damaged(b.offset, "a block failed its checksum"));
        }
        buf.drain(..BLOCK_HEADER_LEN);
        Ok(Block {
            body: buf,
            at: 0,
            offset: b.offset + BLOCK_HEADER_LEN as u64,
        })
    }

    /// The index of the block that would hold `key` (the last whose first key is at or
    /// below it), if any.
    fn block_of(&self, key: &[u8]) -> Option<usize> {
        self.index
            .partition_point(|b| &*b.first_key <= key)
            .checked_sub(1)
    }

    /// `key`'s entry: `Some(Some(value))` for a put, `Some(None)` for a delete, `None` if the
    /// run holds no entry of it; `hash` is the key's [`key_hash`].
    fn get(&self, key: &[u8], hash: u64) -> io::Result<Option<Option<Vec<u8>>>> {
        if !self.filter.may_hold(hash) {
            return Ok(None);
        }
        let Some(i) = self.block_of(key) else {
            return Ok(None);
        };
        let mut block = self.block(i)?;
        while let Some((k, v)) = block.next_entry()? {
            match k.cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(Some(v.map(<[u8]>::to_vec))),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// Its entries from `from` on, in ascending key order (`reverse`: from `from` down, in
    /// descending order).
    pub(crate) fn iter(&self, from: Bound<&[u8]>, reverse: bool) -> RunIter<'_> {
        let blocks = self.index.len();
        let (block, skip) = match from {
            Bound::Unbounded => (if reverse { blocks } else { 0 }, None),
            Bound::Included(k) | Bound::Excluded(k) => {
                let at = self.block_of(k);
                let block = match at {
                    Some(at) if reverse => at + 1,
                    Some(at) => at,
                    None => 0,
                };
                (block, Some(bound_to_owned(from)))
            }
        };
        RunIter {
            run: self,
            reverse,
            next_block: block,
            block: None,
            skip,
            last: None,
            failed: false,
        }
    }
}

/// `key`'s entry in the newest of `runs` (oldest first) that holds one: `Some(Some(value))`
/// for a put, `Some(None)` for a delete, `None` if none does. The key is hashed once.
pub(crate) fn newest_entry(runs: &[Run], key: &[u8]) -> io::Result<Option<Option<Vec<u8>>>> {
    let hash = key_hash(key);
    for run in runs.iter().rev() {
        if let Some(entry) = run.get(key, hash)? {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

fn bound_to_owned(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A block's body being decoded.
struct Block {
    body: Vec<u8>,
    at: usize,
    /// The body's offset in the file (for errors).
    offset: u64,
}

impl Block {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.body.len())
            .ok_or_else(|| damaged(self.offset + self.at as u64, "an entry runs past its block"))?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn take_len(&mut self) -> io::Result<usize> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    }

    /// The next entry, as ranges into the body.
    fn next_range(&mut self) -> io::Result<Option<EntryRange>> {
        if self.at == self.body.len() {
            return Ok(None);
        }
        let kind = self.take(1)?[0];
        let key_len = self.take_len()?;
        let key = self.at..self.at + key_len;
        self.take(key_len)?;
        let value = match kind {
            KIND_PUT => {
                let value_len = self.take_len()?;
                let value = self.at..self.at + value_len;
                self.take(value_len)?;
                Some(value)
            }
            KIND_DELETE => None,
            _ => {
                return Err(damaged(
                    self.offset + key.start as u64,
                    &format!("unknown entry kind {kind}"),
                ))
            }
        };
        Ok(Some((key, value)))
    }

    fn next_entry(&mut self) -> io::Result<Option<EntryRef<'_>>> {
        Ok(self
            .next_range()?
            .map(|(k, v)| (&self.body[k], v.map(|v| &self.body[v]))))
    }
}

/// An entry borrowed from its block: key, and value or `None` for a delete.
type EntryRef<'b> = (&'b [u8], Option<&'b [u8]>);

type EntryRange = (std::ops::Range<usize>, Option<std::ops::Range<usize>>);

/// A run's entries in key order (or reverse), a block read (and checked) at a time; the
/// keys' order is checked too.
pub(crate) struct RunIter<'r> {
    run: &'r Run,
    reverse: bool,
    /// The block to read next: its index (reverse: one past it).
    next_block: usize,
    /// The block being walked, its entries, and the next of them (reverse: one past it).
    block: Option<(Block, Vec<EntryRange>, usize)>,
    /// The range's start, until the walk has passed it.
    skip: Option<Bound<Vec<u8>>>,
    /// The key handed out last (the next must lie beyond it).
    last: Option<Vec<u8>>,
    failed: bool,
}

impl RunIter<'_> {
    fn read_block(&mut self) -> io::Result<bool> {
        let at = match self.reverse {
            false if self.next_block < self.run.index.len() => self.next_block,
            true if self.next_block > 0 => self.next_block - 1,
            _ => return Ok(false),
        };
        let mut block = self.run.block(at)?;
        let mut entries = Vec::new();
        while let Some(entry) = block.next_range()? {
            entries.push(entry);
        }
        let next = if self.reverse { entries.len() } else { 0 };
        self.block = Some((block, entries, next));
        self.next_block = if self.reverse { at } else { at + 1 };
        Ok(true)
    }

    fn next_entry(&mut self) -> io::Result<Option<RunEntry>> {
        loop {
            if self.block.is_none() && !self.read_block()? {
                return Ok(None);
            }
            let (block, entries, next) = self.block.as_mut().expect("read above");
            let (k, v) = match self.reverse {
                false if *next < entries.len() => {
                    *next += 1;
                    entries[*next - 1].clone()
                }
                true if *next > 0 => {
                    *next -= 1;
                    entries[*next].clone()
                }
                _ => {
                    self.block = None;
                    continue;
                }
            };
            let key = &block.body[k.clone()];
            let before_start = match (&self.skip, self.reverse) {
                (Some(Bound::Included(from)), false) => key < from.as_slice(),
                (Some(Bound::Excluded(from)), false) => key <= from.as_slice(),
                (Some(Bound::Included(from)), true) => key > from.as_slice(),
                (Some(Bound::Excluded(from)), true) => key >= from.as_slice(),
                _ => false,
            };
            if before_start {
                continue;
            }
            self.skip = None;
            let beyond = |last: &[u8]| if self.reverse { key < last } else { key > last };
            if !self.last.as_deref().is_none_or(beyond) {
                return Err(damaged(block.offset + k.start as u64, "keys out of order"));
            }
            let last = self.last.get_or_insert_with(Vec::new);
            last.clear();
            last.extend_from_slice(key);
            return Ok(Some((key.to_vec(), v.map(|v| block.body[v].to_vec()))));
        }
    }
}

impl Iterator for RunIter<'_> {
    type Item = io::Result<RunEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let entry = self.next_entry().transpose();
        self.failed = matches!(entry, Some(Err(_)));
        entry
    }
}

/// Runs' entries merged in key order (or reverse, as the walks go), each key's entry from
/// the newest run that holds it (runs are given oldest first).
pub(crate) struct MergedRuns<'r> {
    /// Each run's walk, oldest run first.
    walks: Vec<RunIter<'r>>,
    /// Each run's next entry, the first in walk order on top (a heap: a transaction of
    /// many spills merges many runs).
    heads: std::collections::BinaryHeap<Head>,
    reverse: bool,
    started: bool,
    failed: bool,
}

/// A run's next entry in a merge.
struct Head {
    entry: RunEntry,
    run: usize,
    reverse: bool,
}

impl Ord for Head {
    /// Greatest (the heap's top) is the first in walk order; of equal keys, the newest
    /// run's.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let by_key = self.entry.0.cmp(&other.entry.0);
        let by_key = if self.reverse {
            by_key
        } else {
            by_key.reverse()
        };
        by_key.then(self.run.cmp(&other.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Head {}

impl<'r> MergedRuns<'r> {
    /// `runs` (oldest first) merged from `from` on, up or (`reverse`) down.
    pub(crate) fn of(runs: &'r [Run], from: Bound<&[u8]>, reverse: bool) -> Self {
        MergedRuns::new(runs.iter().map(|r| r.iter(from, reverse)), reverse)
    }

    /// `runs`' walks, oldest run first, all in the direction `reverse` says.
    pub(crate) fn new(runs: impl IntoIterator<Item = RunIter<'r>>, reverse: bool) -> Self {
        let walks: Vec<_> = runs.into_iter().collect();
        debug_assert!(walks.iter().all(|it| it.reverse == reverse));
        MergedRuns {
            heads: std::collections::BinaryHeap::with_capacity(walks.len()),
            walks,
            reverse,
            started: false,
            failed: false,
        }
    }

    /// Puts run `run`'s next entry, if any, among the heads.
    fn advance(&mut self, run: usize) -> io::Result<()> {
        if let Some(entry) = self.walks[run].next().transpose()? {
            let reverse = self.reverse;
            self.heads.push(Head {
                entry,
                run,
                reverse,
            });
        }
        Ok(())
    }

    fn next_entry(&mut self) -> io::Result<Option<RunEntry>> {
        if !self.started {
            self.started = true;
            for run in 0..self.walks.len() {
                self.advance(run)?;
            }
        }
        let Some(Head { entry, run, .. }) = self.heads.pop() else {
            return Ok(None);
        };
        self.advance(run)?;
        // Older runs' entries of the same key are shadowed.
        while let Some(older) = self.heads.peek().filter(|h| h.entry.0 == entry.0) {
            let older = older.run;
            self.heads.pop();
            self.advance(older)?;
        }
        Ok(Some(entry))
    }
}

impl Iterator for MergedRuns<'_> {
    type Item = io::Result<RunEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let entry = self.next_entry().transpose();
        self.failed = matches!(entry, Some(Err(_)));
        entry
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests;
