//! An in-memory file system that simulates power loss and injects I/O faults,
//! deterministically from a seed.
//!
//! Invariants of the model:
//! - An inode's `durable` is its content as of its last `sync_data`; `pending` lists, in
//!   order, every change since then; applying all of `pending` to `durable` gives `current`.
//! - Each directory has a `current` entry map (what the API sees) and a `durable` one (what
//!   survives power loss); only `sync_dir` copies current into durable. Directories
//!   themselves are always durable.
//! - Inodes are never freed, so open handles stay valid after rename/remove and a removal
//!   that was not dir-synced can be undone by `crash`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::{Fs, FsFile};
use crate::sync::{Arc, Mutex};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;
const EISDIR: i32 = 21;

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO`, no state change.
    Eio,
    /// `ENOSPC`, no state change.
    Enospc,
    /// For a write: the first half of the buffer is written, then `WriteZero`. Else `EIO`.
    ShortWrite,
    /// For a write: the first half of the buffer is written, then `ENOSPC` (a disk that
    /// filled during the write). Else `ENOSPC`.
    ShortEnospc,
}

/// The kinds of counted operations (every trait method except `exists` and `len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// `FsFile::write_at`.
    Write,
    /// `FsFile::sync_data`.
    SyncData,
    /// `Fs::sync_dir`.
    SyncDir,
    /// `FsFile::read_at`.
    Read,
    /// `FsFile::allocate`.
    Allocate,
    /// `FsFile::set_len`.
    SetLen,
    /// `Fs::open`.
    Open,
    /// `Fs::rename`.
    Rename,
    /// `Fs::remove`.
    Remove,
    /// `Fs::list`.
    List,
    /// `Fs::create_dir_all`.
    CreateDir,
}

const OP_KINDS: usize = 11;

/// How [`SimFs::crash`] damages un-synced data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashOptions {
    /// Any subset of a file's pending operations survives, in any order; otherwise a prefix.
    pub reorder: bool,
    /// Tearing granularity in bytes, aligned to absolute file offsets.
    pub sector: usize,
    /// Lost appended ranges may read as garbage instead of zeros.
    pub garbage_fill: bool,
}

impl Default for CrashOptions {
    fn default() -> Self {
        CrashOptions {
            reorder: true,
            sector: 512,
            garbage_fill: true,
        }
    }
}

/// A change to a file since its last `sync_data`.
#[derive(Debug, Clone)]
enum Pending {
    /// `(offset, data)`.
    Write(u64, Vec<u8>),
    /// `set_len` that shrank the file to this length.
    Truncate(u64),
    /// `set_len`/`allocate` that grew the file with zeros; applying it never shrinks.
    Extend(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    /// Open handles; an open unlinked file still takes space.
    open: usize,
}

#[derive(Debug, Clone, Default)]
struct Dir {
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

impl Inode {
    fn synced(data: Vec<u8>) -> Self {
        let current = data.clone();
        Inode {
            current,
            durable: data,
            ..Inode::default()
        }
    }
}

#[derive(Debug, Default)]
struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// Operations attempted so far (including failed ones); operation numbers start at 1.
    ops: u64,
    counts: [u64; OP_KINDS],
    /// Operations numbered above this fail with "simulated crash".
    crash_after: Option<u64>,
    dead: bool,
    /// The kind of the first operation refused because of `crash_after`, and the path it
    /// named (renames and removals: the file renamed to or removed).
    first_refused: Option<(OpKind, Option<PathBuf>)>,
    /// Its operation number.
    first_refused_at: u64,
    /// One-shot faults by absolute operation number.
    nth: Vec<(u64, FaultKind)>,
    /// One-shot faults for the next operation of a kind.
    next: Vec<(OpKind, FaultKind)>,
    always: Vec<(OpKind, FaultKind)>,
    capacity: Option<u64>,
}

fn fault_error(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::Eio | FaultKind::ShortWrite => io::Error::from_raw_os_error(EIO),
        FaultKind::Enospc | FaultKind::ShortEnospc => io::Error::from_raw_os_error(ENOSPC),
    }
}

fn not_found() -> io::Error {
    io::ErrorKind::NotFound.into()
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| invalid("offset too large"))
}

/// Splits a file path into its parent directory and file name.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_owned())),
        _ => Err(invalid("not a file path")),
    }
}

impl State {
    fn with(dirs: BTreeMap<PathBuf, Dir>, inodes: BTreeMap<u64, Inode>, next_ino: u64) -> Self {
        State {
            dirs,
            inodes,
            next_ino,
            ..State::default()
        }
    }

    /// Counts an operation and returns the fault it must suffer, or the crash error.
    fn check(&mut self, op: OpKind) -> io::Result<Option<FaultKind>> {
        self.ops += 1;
        self.counts[op as usize] += 1;
        if self.crash_after.is_some_and(|k| self.ops > k) {
            self.dead = true;
            if self.first_refused.is_none() {
                self.first_refused = Some((op, None));
                self.first_refused_at = self.ops;
            }
            return Err(io::Error::other("simulated crash"));
        }
        let n = self.ops;
        if let Some(i) = self.nth.iter().position(|&(at, _)| at == n) {
            return Ok(Some(self.nth.remove(i).1));
        }
        if let Some(i) = self.next.iter().position(|&(o, _)| o == op) {
            return Ok(Some(self.next.remove(i).1));
        }
        Ok(self.always.iter().find(|&&(o, _)| o == op).map(|&(_, k)| k))
    }

    /// Names the path of the operation just refused, if it was the first refused.
    fn name_refused(&mut self, path: &Path) {
        if self.first_refused_at == self.ops {
            if let Some((_, p)) = &mut self.first_refused {
                *p = Some(path.to_owned());
            }
        }
    }

    /// Like `check`, with every fault turned into its error.
    fn start(&mut self, op: OpKind) -> io::Result<()> {
        match self.check(op)? {
            Some(kind) => Err(fault_error(kind)),
            None => Ok(()),
        }
    }

    fn lookup(&self, path: &Path) -> Option<u64> {
        let (parent, name) = split(path).ok()?;
        self.dirs.get(&parent)?.current.get(&name).copied()
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(not_found)
    }

    /// Handles keep their inode alive: inodes are never removed from `inodes`.
    fn inode(&mut self, ino: u64) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("inodes are never freed")
    }

    /// Creates `dir` and its missing ancestors (always durable).
    fn make_dirs(&mut self, dir: &Path) -> io::Result<()> {
        let mut missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| !self.dirs.contains_key(*a))
            .collect();
        while let Some(d) = missing.pop() {
            if self.lookup(d).is_some() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            self.dirs.insert(d.to_path_buf(), Dir::default());
        }
        Ok(())
    }

    fn names(&self, dir: &Path) -> Option<Vec<String>> {
        let mut names: Vec<String> = self.dirs.get(dir)?.current.keys().cloned().collect();
        for sub in self.dirs.keys().filter(|p| p.parent() == Some(dir)) {
            names.extend(sub.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
        names.sort();
        Some(names)
    }

    /// Fails with ENOSPC when growing inode `ino` to `new_len` would exceed the capacity.
    /// Space is the current length of every linked or open inode.
    fn reserve(&self, ino: u64, new_len: u64) -> io::Result<()> {
        let Some(cap) = self.capacity else {
            return Ok(());
        };
        let linked: BTreeSet<u64> = self
            .dirs
            .values()
            .flat_map(|d| d.current.values().copied())
            .collect();
        let mut used = 0u64;
        for (&i, inode) in &self.inodes {
            if i != ino && (inode.open > 0 || linked.contains(&i)) {
                used += inode.current.len() as u64;
            }
        }
        let old = self.inodes.get(&ino).map_or(0, |i| i.current.len() as u64);
        if new_len > old && used + new_len > cap {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }

    /// Grows or shrinks `ino` to `len` (zeros when growing), recording the change.
    fn resize(&mut self, ino: u64, len: u64, shrink: bool) -> io::Result<()> {
        let cur = self.inode(ino).current.len() as u64;
        if len > cur {
            self.reserve(ino, len)?;
        } else if len == cur || !shrink {
            return Ok(());
        }
        let inode = self.inode(ino);
        inode.current.resize(to_usize(len)?, 0);
        let op = if len > cur {
            Pending::Extend
        } else {
            Pending::Truncate
        };
        inode.pending.push(op(len));
        Ok(())
    }
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `[0, n)`; 0 when `n == 0`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The content of one inode after power loss. The result is never shorter than `durable`
/// nor longer than `max(durable, current)`; bytes below the durable length are durable or
/// written by a pending write; other bytes are written, zeros, or (with `garbage_fill`)
/// garbage.
fn crash_image(inode: &Inode, opts: &CrashOptions, rng: &mut Rng) -> Vec<u8> {
    let sector = opts.sector.max(1) as u64;
    let n = inode.pending.len();
    // (pending index, torn) in the order they reach the disk.
    let mut chosen: Vec<(usize, bool)> = Vec::new();
    if opts.reorder {
        let keep = rng.below(5); // each op survives with probability keep/4
        for i in 0..n {
            if rng.below(4) < keep {
                chosen.push((i, rng.below(4) == 0));
            }
        }
        if rng.below(2) == 0 {
            for i in (1..chosen.len()).rev() {
                chosen.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
    } else {
        let m = rng.below(n as u64 + 1) as usize;
        chosen.extend((0..m).map(|i| (i, false)));
        if m < n && rng.below(2) == 0 {
            chosen.push((m, true));
        }
    }

    let durable = &inode.durable;
    let mut img = durable.clone();
    // Which bytes of `img` hold durable or written data (not holes).
    let mut known = vec![true; img.len()];
    for (i, torn) in chosen {
        match &inode.pending[i] {
            Pending::Write(off, data) => {
                let (off, end) = (*off, *off + data.len() as u64);
                let mut pos = off;
                while pos < end {
                    let next = ((pos / sector + 1) * sector).min(end);
                    if !torn || rng.below(2) == 0 {
                        let (a, b) = (pos as usize, next as usize);
                        if img.len() < b {
                            img.resize(b, 0);
                            known.resize(b, false);
                        }
                        img[a..b].copy_from_slice(&data[a - off as usize..b - off as usize]);
                        known[a..b].fill(true);
                    }
                    pos = next;
                }
            }
            &Pending::Truncate(len) => {
                img.truncate(len as usize);
                known.truncate(len as usize);
            }
            &Pending::Extend(len) => {
                if img.len() < len as usize {
                    img.resize(len as usize, 0);
                    known.resize(len as usize, true);
                }
            }
        }
    }

    // Final length: durable length, a sector boundary in between, or current length.
    let lo = durable.len() as u64;
    let hi = lo.max(inode.current.len() as u64);
    let len = if hi == lo {
        lo
    } else if rng.below(2) == 0 {
        (img.len() as u64).clamp(lo, hi)
    } else {
        let inner = (hi - 1) / sector - lo / sector; // boundaries strictly inside (lo, hi)
        match rng.below(inner + 2) {
            0 => lo,
            k if k > inner => hi,
            k => (lo / sector + k) * sector,
        }
    };

    let mut out = Vec::with_capacity(len as usize);
    let (mut cur_sector, mut garbage) = (u64::MAX, false);
    for i in 0..len as usize {
        out.push(if i < img.len() && known[i] {
            img[i]
        } else if i < durable.len() {
            durable[i] // a pending truncation never cuts into durable data
        } else {
            let s = i as u64 / sector;
            if s != cur_sector {
                cur_sector = s;
                garbage = opts.garbage_fill && rng.below(2) == 0;
            }
            if garbage {
                rng.next() as u8
            } else {
                0
            }
        });
    }
    out
}

/// The simulated file system; clones share state.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFs").finish_non_exhaustive()
    }
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFs {
    /// An empty file system with the roots `/` and `` (for relative paths).
    pub fn new() -> Self {
        let dirs = [PathBuf::from("/"), PathBuf::new()]
            .into_iter()
            .map(|p| (p, Dir::default()))
            .collect();
        Self::from_state(State::with(dirs, BTreeMap::new(), 0))
    }

    fn from_state(state: State) -> Self {
        SimFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The state after power loss, as a new independent file system (fresh counters, no
    /// faults): only durable directory entries survive, and each surviving file keeps its
    /// durable content plus a seeded, possibly torn, subset of its pending changes.
    pub fn crash(&self, seed: u64, opts: CrashOptions) -> SimFs {
        let st = self.state.lock();
        let mut dirs = BTreeMap::new();
        let mut live = BTreeSet::new();
        for (path, dir) in &st.dirs {
            live.extend(dir.durable.values().copied());
            let (current, durable) = (dir.durable.clone(), dir.durable.clone());
            dirs.insert(path.clone(), Dir { current, durable });
        }
        let mut inodes = BTreeMap::new();
        for ino in live {
            let mut rng = Rng(seed ^ ino.wrapping_mul(0xD6E8_FEB8_6659_FD93));
            let data = crash_image(&st.inodes[&ino], &opts, &mut rng);
            inodes.insert(ino, Inode::synced(data));
        }
        Self::from_state(State::with(dirs, inodes, st.next_ino))
    }

    /// The state after a process crash, as a new independent file system (fresh counters,
    /// no faults): everything current is kept, and un-synced changes stay pending so a
    /// later `crash` can still lose them.
    pub fn keep_all_pending(&self) -> SimFs {
        let st = self.state.lock();
        let mut inodes = st.inodes.clone();
        inodes.values_mut().for_each(|i| i.open = 0);
        Self::from_state(State::with(st.dirs.clone(), inodes, st.next_ino))
    }

    /// Operations numbered above `k` (see [`op_count`](Self::op_count)) fail with
    /// "simulated crash" and change nothing.
    pub fn crash_after_ops(&self, k: u64) {
        self.state.lock().crash_after = Some(k);
    }

    /// The `k` of the last `crash_after_ops(k)`.
    pub fn crash_point(&self) -> Option<u64> {
        self.state.lock().crash_after
    }

    /// True once an operation has been refused because of `crash_after_ops`.
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// The first operation refused because of `crash_after_ops`: where the simulated crash
    /// landed. For a rename or a removal, also the path it named (the target of a rename).
    pub fn first_refused(&self) -> Option<(OpKind, Option<PathBuf>)> {
        self.state.lock().first_refused.clone()
    }

    /// Operations attempted so far.
    pub fn op_count(&self) -> u64 {
        self.state.lock().ops
    }

    /// Operations of one kind attempted so far (including failed ones).
    pub fn count(&self, op: OpKind) -> u64 {
        self.state.lock().counts[op as usize]
    }

    /// The `n`-th operation from now (1-based; 0 counts as 1) fails once.
    pub fn fail_nth(&self, n: u64, kind: FaultKind) {
        let mut st = self.state.lock();
        let at = st.ops + n.max(1);
        st.nth.push((at, kind));
    }

    /// The next operation of kind `op` fails once.
    pub fn fail_next(&self, op: OpKind, kind: FaultKind) {
        self.state.lock().next.push((op, kind));
    }

    /// Every operation of kind `op` fails until `clear_faults`.
    pub fn fail_always(&self, op: OpKind, kind: FaultKind) {
        self.state.lock().always.push((op, kind));
    }

    /// Disarms all faults (not `crash_after_ops` nor the capacity).
    pub fn clear_faults(&self) {
        let mut st = self.state.lock();
        st.nth.clear();
        st.next.clear();
        st.always.clear();
    }

    /// Limits the total current length of all linked or open files; `None` is unlimited.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// The current content of a file.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.lock();
        st.lookup(path).map(|ino| st.inodes[&ino].current.clone())
    }

    /// Sets a file's current and durable content and makes its entry durable, creating
    /// the file and its directories as needed. Not an operation: never counted nor faulted.
    pub fn write_file(&self, path: &Path, data: &[u8]) {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let (parent, name) = split(path).expect("SimFs::write_file: not a file path");
        st.make_dirs(&parent)
            .expect("SimFs::write_file: parent is a file");
        let ino = st.lookup(path).unwrap_or_else(|| {
            st.next_ino += 1;
            st.inodes.insert(st.next_ino, Inode::default());
            st.next_ino
        });
        let open = st.inode(ino).open;
        *st.inode(ino) = Inode {
            open,
            ..Inode::synced(data.to_vec())
        };
        let dir = st.dirs.get_mut(&parent).expect("just created");
        dir.current.insert(name.clone(), ino);
        dir.durable.insert(name, ino);
    }

    /// The current entries of `dir` (files and subdirectories), sorted; empty if missing.
    pub fn file_names(&self, dir: &Path) -> Vec<String> {
        self.state.lock().names(dir).unwrap_or_default()
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.start(OpKind::CreateDir)?;
        st.make_dirs(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut st = self.state.lock();
        st.start(OpKind::List)?;
        st.names(dir).ok_or_else(not_found)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn FsFile>> {
        let mut st = self.state.lock();
        st.start(OpKind::Open)?;
        if st.dirs.contains_key(path) {
            return Err(io::Error::from_raw_os_error(EISDIR));
        }
        let (parent, name) = split(path)?;
        let ino = match st.lookup(path) {
            Some(ino) => ino,
            None if create => {
                let ino = st.next_ino + 1;
                st.dir_mut(&parent)?.current.insert(name, ino);
                st.next_ino = ino;
                st.inodes.insert(ino, Inode::default());
                ino
            }
            None => return Err(not_found()),
        };
        st.inode(ino).open += 1;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.start(OpKind::Rename)
            .inspect_err(|_| st.name_refused(to))?;
        if st.dirs.contains_key(from) || st.dirs.contains_key(to) {
            return Err(io::Error::from_raw_os_error(EISDIR));
        }
        let ino = st.lookup(from).ok_or_else(not_found)?;
        let ((from_dir, from_name), (to_dir, to_name)) = (split(from)?, split(to)?);
        st.dir_mut(&to_dir)?; // the target directory must exist before anything changes
        st.dir_mut(&from_dir)?.current.remove(&from_name);
        st.dir_mut(&to_dir)?.current.insert(to_name, ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.start(OpKind::Remove)
            .inspect_err(|_| st.name_refused(path))?;
        if st.dirs.contains_key(path) {
            return Err(io::Error::from_raw_os_error(EISDIR));
        }
        let (parent, name) = split(path)?;
        st.dir_mut(&parent)?
            .current
            .remove(&name)
            .map(drop)
            .ok_or_else(not_found)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.start(OpKind::SyncDir)?;
        let d = st.dir_mut(dir)?;
        d.durable = d.current.clone();
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state.lock();
        st.dirs.contains_key(path) || st.lookup(path).is_some()
    }
}

/// An open file: an inode id plus the shared state, valid after rename/remove.
struct SimFile {
    fs: SimFs,
    ino: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").field("ino", &self.ino).finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.fs.state.lock().inode(self.ino).open -= 1;
    }
}

impl FsFile for SimFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.fs.state.lock();
        let fault = st.check(OpKind::Write)?;
        let data = match fault {
            None => buf,
            Some(FaultKind::ShortWrite | FaultKind::ShortEnospc) => &buf[..buf.len() / 2],
            Some(kind) => return Err(fault_error(kind)),
        };
        if !data.is_empty() {
            let end = offset
                .checked_add(data.len() as u64)
                .ok_or_else(|| invalid("offset overflow"))?;
            let (start, end_us) = (to_usize(offset)?, to_usize(end)?);
            st.reserve(self.ino, end)?;
            let inode = st.inode(self.ino);
            if inode.current.len() < end_us {
                inode.current.resize(end_us, 0);
            }
            inode.current[start..end_us].copy_from_slice(data);
            inode.pending.push(Pending::Write(offset, data.to_vec()));
        }
        match fault {
            Some(FaultKind::ShortEnospc) => Err(fault_error(FaultKind::ShortEnospc)),
            Some(_) => Err(io::Error::new(io::ErrorKind::WriteZero, "short write")),
            None => Ok(()),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.fs.state.lock();
        st.start(OpKind::Read)?;
        let data = &st.inode(self.ino).current;
        let start = to_usize(offset).map_or(data.len(), |o| o.min(data.len()));
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.fs.state.lock();
        st.start(OpKind::SyncData)?;
        let inode = st.inode(self.ino);
        inode.durable = inode.current.clone();
        inode.pending.clear();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.fs.state.lock();
        st.start(OpKind::SetLen)?;
        st.resize(self.ino, len, true)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut st = self.fs.state.lock();
        st.start(OpKind::Allocate)?;
        st.resize(self.ino, len, false)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.fs.state.lock().inode(self.ino).current.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/db/wal";

    fn setup() -> SimFs {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new(DIR)).unwrap();
        fs
    }

    fn path(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    fn power_loss(fs: &SimFs, seed: u64) -> SimFs {
        fs.crash(seed, CrashOptions::default())
    }

    fn content(fs: &SimFs, name: &str) -> Vec<u8> {
        fs.read_file(&path(name)).unwrap()
    }

    fn os_error<T: fmt::Debug>(r: io::Result<T>) -> Option<i32> {
        r.unwrap_err().raw_os_error()
    }

    /// Creates `name` with synced `data` and a synced directory entry.
    fn durable_file(fs: &SimFs, name: &str, data: &[u8]) -> Box<dyn FsFile> {
        let f = fs.open(&path(name), true).unwrap();
        f.write_at(data, 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        f
    }

    #[test]
    fn durable_survives_and_pending_may_not() {
        let fs = setup();
        durable_file(&fs, "a", b"abc").write_at(b"def", 3).unwrap();
        let (mut lost, mut kept) = (false, false);
        for seed in 0..64 {
            let img = content(&power_loss(&fs, seed), "a");
            assert!(img.starts_with(b"abc") && img.len() <= 6, "{img:?}");
            lost |= img == b"abc";
            kept |= img == b"abcdef";
        }
        assert!(lost && kept);
        assert_eq!(content(&fs.keep_all_pending(), "a"), b"abcdef");
    }

    #[test]
    fn unsynced_creation_disappears() {
        let fs = setup();
        let f = fs.open(&path("a"), true).unwrap();
        f.write_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        assert!(!power_loss(&fs, 1).exists(&path("a")));
        fs.sync_dir(Path::new(DIR)).unwrap();
        assert_eq!(content(&power_loss(&fs, 1), "a"), b"x");
    }

    #[test]
    fn rename_without_dir_sync_is_undone() {
        let fs = setup();
        drop(durable_file(&fs, "a.tmp", b"data"));
        fs.rename(&path("a.tmp"), &path("a")).unwrap();
        assert_eq!(fs.file_names(Path::new(DIR)), ["a"]);
        assert_eq!(power_loss(&fs, 7).file_names(Path::new(DIR)), ["a.tmp"]);
        fs.sync_dir(Path::new(DIR)).unwrap();
        assert_eq!(power_loss(&fs, 7).file_names(Path::new(DIR)), ["a"]);
    }

    #[test]
    fn remove_without_dir_sync_is_undone() {
        let fs = setup();
        let f = durable_file(&fs, "a", b"data");
        fs.remove(&path("a")).unwrap();
        assert!(!fs.exists(&path("a")));
        f.write_at(b"more", 4).unwrap(); // the handle stays valid
        assert!(content(&power_loss(&fs, 3), "a").starts_with(b"data"));
        fs.sync_dir(Path::new(DIR)).unwrap();
        assert!(!power_loss(&fs, 3).exists(&path("a")));
    }

    #[test]
    fn crash_is_deterministic() {
        let fs = setup();
        let f = durable_file(&fs, "a", &[1; 700]);
        for i in 0..8u8 {
            f.write_at(&[i + 10; 300], 650 + 97 * i as u64).unwrap();
        }
        fs.open(&path("b"), true)
            .unwrap()
            .write_at(&[9; 2000], 0)
            .unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        let snapshot = |seed| {
            let after = power_loss(&fs, seed);
            let names = after.file_names(Path::new(DIR));
            names
                .iter()
                .map(|n| (n.clone(), content(&after, n)))
                .collect::<Vec<_>>()
        };
        let seen: BTreeSet<_> = (0..20).map(&snapshot).collect();
        assert!(seen.len() > 1);
        assert!((0..20).all(|seed| snapshot(seed) == snapshot(seed)));
    }

    #[test]
    fn fail_nth_and_fault_kinds() {
        let fs = setup();
        let f = fs.open(&path("a"), true).unwrap();
        fs.fail_nth(2, FaultKind::Eio);
        f.write_at(b"a", 0).unwrap();
        assert_eq!(os_error(f.write_at(b"b", 1)), Some(EIO));
        assert_eq!(content(&fs, "a"), b"a");
        f.write_at(b"c", 1).unwrap();
        fs.fail_next(OpKind::SyncData, FaultKind::Enospc);
        assert_eq!(os_error(f.sync_data()), Some(ENOSPC));
        f.sync_data().unwrap();
        assert_eq!(fs.count(OpKind::SyncData), 2);
        fs.fail_always(OpKind::Read, FaultKind::ShortWrite);
        for _ in 0..2 {
            assert_eq!(os_error(f.read_at(&mut [0; 4], 0)), Some(EIO));
        }
        fs.clear_faults();
        assert_eq!(f.read_at(&mut [0; 4], 0).unwrap(), 2);
    }

    #[test]
    fn short_write_applies_a_prefix() {
        let fs = setup();
        let f = fs.open(&path("a"), true).unwrap();
        fs.fail_next(OpKind::Write, FaultKind::ShortWrite);
        let err = f.write_at(b"abcdefgh", 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert_eq!(content(&fs, "a"), b"abcd");
        f.sync_data().unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        assert_eq!(content(&power_loss(&fs, 0), "a"), b"abcd");
    }

    #[test]
    fn capacity_enospc_then_freeing_space() {
        let fs = setup();
        fs.set_capacity(Some(100));
        let a = fs.open(&path("a"), true).unwrap();
        let b = fs.open(&path("b"), true).unwrap();
        a.write_at(&[1; 80], 0).unwrap();
        assert_eq!(os_error(b.write_at(&[2; 30], 0)), Some(ENOSPC));
        assert_eq!(os_error(b.allocate(30)), Some(ENOSPC));
        assert_eq!(b.len().unwrap(), 0);
        a.set_len(60).unwrap();
        b.write_at(&[2; 30], 0).unwrap();
        assert_eq!(os_error(b.write_at(&[2; 30], 30)), Some(ENOSPC));
        drop(a);
        fs.remove(&path("a")).unwrap();
        b.write_at(&[2; 30], 30).unwrap();
        fs.set_capacity(None);
        b.allocate(10_000).unwrap();
    }

    #[test]
    fn crash_after_ops_kills_later_ops() {
        let fs = setup();
        let f = durable_file(&fs, "a", b"abc");
        fs.crash_after_ops(fs.op_count() + 2);
        f.write_at(b"d", 3).unwrap();
        f.sync_data().unwrap();
        assert!(!fs.is_dead());
        let err = f.write_at(b"e", 4).unwrap_err();
        assert_eq!(err.to_string(), "simulated crash");
        assert!(fs.is_dead());
        assert!(fs.sync_dir(Path::new(DIR)).is_err() && fs.open(&path("b"), true).is_err());
        assert_eq!(content(&fs, "a"), b"abcd");
        let after = power_loss(&fs, 5);
        assert_eq!((after.op_count(), after.is_dead()), (0, false));
        assert_eq!(content(&after, "a"), b"abcd");
        after
            .open(&path("a"), false)
            .unwrap()
            .write_at(b"e", 4)
            .unwrap();
    }

    #[test]
    fn torn_writes_contain_only_written_bytes() {
        let writes = [
            (100u64, 600u64, 0x11u8),
            (1400, 1200, 0x22),
            (600, 500, 0x33),
        ];
        let mut torn_seen = false;
        for (reorder, garbage_fill) in [(false, false), (false, true), (true, false), (true, true)]
        {
            let opts = CrashOptions {
                reorder,
                sector: 512,
                garbage_fill,
            };
            let fs = setup();
            let f = durable_file(&fs, "a", &[0xAA; 1500]);
            for &(off, len, byte) in &writes {
                f.write_at(&vec![byte; len as usize], off).unwrap();
            }
            f.allocate(3000).unwrap();
            for seed in 0..300 {
                let img = content(&fs.crash(seed, opts), "a");
                assert!((1500..=3000).contains(&img.len()), "len {}", img.len());
                for (i, &b) in (0u64..).zip(&img) {
                    let written = writes
                        .iter()
                        .any(|&(o, l, w)| w == b && (o..o + l).contains(&i));
                    let filler = if i < 1500 {
                        b == 0xAA
                    } else {
                        garbage_fill || b == 0
                    };
                    assert!(written || filler, "seed {seed} {opts:?}: byte {i} = {b:#x}");
                }
                torn_seen |= img[100] == 0x11 && img[550] == 0xAA;
            }
        }
        assert!(torn_seen);
    }
}
