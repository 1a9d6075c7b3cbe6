//! LMDB's data file read page by page with `pread`, never through LMDB's map: the scrub and
//! the salvage walk a damaged file with this, so a damaged page is a finding, never a fault
//! (LMDB trusts its pages: a zeroed or misdirected one makes it read out of bounds or abort).
//!
//! The format is LMDB 0.9's (`mdb.c` of the `lmdb-master-sys` heed links) on a 64-bit
//! little-endian machine:
//!
//! ```text
//! page header (16 bytes): pgno u64 | pad u16 | flags u16 | lower u16 | upper u16
//!                         (an overflow page: pgno u64 | pad u16 | flags u16 | pages u32)
//!                         then u16 offsets of its nodes, (lower - 16) / 2 of them
//! node (8 bytes + key + data): lo u16 | hi u16 | flags u16 | ksize u16 | key | data
//!   leaf: data size = lo | hi << 16; F_BIGDATA: data is the u64 first page of its overflow run
//!   branch: child page = lo | hi << 16 | flags << 32
//! meta (pages 0 and 1, at byte 16): magic u32 | version u32 | address u64 | mapsize u64 |
//!   free tree | main tree | last_pg u64 | txnid u64
//! tree record (48 bytes): pad u32 | flags u16 | depth u16 | branch u64 | leaf u64 |
//!   overflow u64 | entries u64 | root u64
//! ```
//!
//! Invariants a healthy file keeps, which the walk checks: every page a tree reaches is in
//! `2..=last_pg`, names itself in its header, has the kind its place calls for and is
//! reached once; keys ascend within a page and lie within the bounds the branch keys above
//! give; every leaf is at the tree's depth; the pages and entries counted equal the tree
//! record's; every page is in use by a tree or listed free, never both (LMDB's own
//! `mdb_audit`).

use std::cmp::Ordering;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

mod walk;
pub(crate) use walk::{NamedTree, PageDamage, TreeKind, TreeWalk, Walker};

pub(crate) const PAGE_HEADER: usize = 16;
const NODE_HEADER: usize = 8;
const META_LEN: usize = 136;
pub(crate) const TREE_RECORD_LEN: usize = 48;
const MAGIC: u32 = 0xBEEF_C0DE;
const DATA_VERSION: u32 = 1;
/// The root of an empty tree.
pub(crate) const NO_ROOT: u64 = u64::MAX;
const NUM_METAS: u64 = 2;

const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;
/// Flags a page on disk may carry besides its kind (`P_DIRTY`, `P_KEEP` are left set at
/// times; `P_LOOSE` never reaches the file in a tree).
const P_HARMLESS: u16 = 0x10 | 0x8000;

const F_BIGDATA: u16 = 0x01;
pub(crate) const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;

/// Tree flags walmdb never sets (`MDB_REVERSEKEY`, `MDB_DUPSORT`, `MDB_INTEGERKEY`,
/// `MDB_DUPFIXED`, `MDB_INTEGERDUP`, `MDB_REVERSEDUP`): a tree that has one is damaged.
const FOREIGN_TREE_FLAGS: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x20 | 0x40;

/// LMDB's cursors stop at this depth.
const MAX_DEPTH: u16 = 32;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A B-tree's record: in a meta page (the free and main trees) or a main-tree entry (a
/// named database).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TreeRecord {
    pub flags: u16,
    pub depth: u16,
    pub branch_pages: u64,
    pub leaf_pages: u64,
    pub overflow_pages: u64,
    pub entries: u64,
    pub root: u64,
}

impl TreeRecord {
    pub fn parse(b: &[u8]) -> Option<TreeRecord> {
        Some(TreeRecord {
            flags: u16_at(b, 4)?,
            depth: u16_at(b, 6)?,
            branch_pages: u64_at(b, 8)?,
            leaf_pages: u64_at(b, 16)?,
            overflow_pages: u64_at(b, 24)?,
            entries: u64_at(b, 32)?,
            root: u64_at(b, 40)?,
        })
    }

    pub fn pages(&self) -> u64 {
        self.branch_pages
            .saturating_add(self.leaf_pages)
            .saturating_add(self.overflow_pages)
    }

    /// Why the record cannot describe a tree of a file whose last page is `last_page`.
    fn fault(&self, last_page: u64) -> Option<String> {
        if self.flags & FOREIGN_TREE_FLAGS != 0 {
            return Some(format!(
                "its flags {:#06x} are ones walmdb never sets",
                self.flags
            ));
        }
        if self.root == NO_ROOT {
            let empty = self.depth == 0 && self.entries == 0 && self.pages() == 0;
            return (!empty).then(|| "an empty tree's record counts pages or entries".into());
        }
        if self.root < NUM_METAS || self.root > last_page {
            return Some(format!("its root, page {}, is not a data page", self.root));
        }
        if self.depth == 0 || self.depth > MAX_DEPTH {
            return Some(format!("its depth {} is impossible", self.depth));
        }
        None
    }
}

/// A meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// 0 or 1.
    pub page: u64,
    pub txnid: u64,
    pub last_page: u64,
    pub free: TreeRecord,
    pub main: TreeRecord,
}

impl Meta {
    /// The free-page tree's record (its flags field holds the environment's flags).
    pub fn free_tree(&self) -> TreeRecord {
        TreeRecord {
            flags: 0,
            ..self.free
        }
    }
}

/// `data.mdb`, read with `pread`.
pub(crate) struct PageFile {
    file: File,
    page_size: usize,
    pages_in_file: u64,
}

impl PageFile {
    /// Opens `path` read-only and finds its page size in a meta page.
    pub fn open(path: &Path) -> io::Result<PageFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut file = PageFile {
            file,
            page_size: 4096,
            pages_in_file: 0,
        };
        // Meta 0's page size, else the size at which meta 1 is found.
        let from_meta_0 = file
            .read_at_most(PAGE_HEADER as u64, 32)
            .ok()
            .filter(|b| u32_at(b, 0) == Some(MAGIC))
            .and_then(|b| u32_at(&b, 24))
            .filter(|&s| s.is_power_of_two() && (512..=65536).contains(&s));
        let size = from_meta_0.or_else(|| {
            (9..=16).map(|shift| 1u32 << shift).find(|&s| {
                file.read_at_most(s as u64 + PAGE_HEADER as u64, 4)
                    .is_ok_and(|b| u32_at(&b, 0) == Some(MAGIC))
            })
        });
        let Some(size) = size else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "neither meta page of LMDB's file holds LMDB's magic number",
            ));
        };
        file.page_size = size as usize;
        file.pages_in_file = len / size as u64;
        Ok(file)
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    fn read_at_most(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        let mut done = 0;
        while done < len {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Pages `first..first + count`, whole.
    pub(crate) fn read(&self, first: u64, count: u64) -> Result<Vec<u8>, String> {
        let end = first
            .checked_add(count)
            .filter(|&e| e <= self.pages_in_file);
        if end.is_none() {
            return Err(format!(
                "pages {first}..{} lie past the end of the file ({} pages)",
                first.saturating_add(count),
                self.pages_in_file
            ));
        }
        let len = count as usize * self.page_size;
        let buf = self
            .read_at_most(first * self.page_size as u64, len)
            .map_err(|e| format!("reading page {first}: {e}"))?;
        if buf.len() < len {
            return Err(format!("page {first} is cut short by the end of the file"));
        }
        Ok(buf)
    }

    /// Meta page `page` (0 or 1), or why it is not one.
    pub fn meta(&self, page: u64) -> Result<Meta, String> {
        let buf = self.read(page, 1)?;
        let at = PAGE_HEADER;
        let field = |off: usize| u64_at(&buf, at + off).unwrap_or(0);
        if u64_at(&buf, 0) != Some(page) || u16_at(&buf, 10).map(|f| f & P_META) != Some(P_META) {
            return Err("its header does not mark it as a meta page".into());
        }
        if u32_at(&buf, at) != Some(MAGIC) {
            return Err("it lacks LMDB's magic number".into());
        }
        if u32_at(&buf, at + 4) != Some(DATA_VERSION) {
            return Err(format!(
                "it names LMDB data version {}",
                u32_at(&buf, at + 4).unwrap_or(0)
            ));
        }
        let record = |off: usize| TreeRecord::parse(&buf[at + off..at + off + TREE_RECORD_LEN]);
        let (Some(free), Some(main)) = (record(24), record(72)) else {
            return Err("it is cut short".into());
        };
        if u32_at(&buf, at + 24) != Some(self.page_size as u32) {
            return Err(format!(
                "it names page size {}, the other meta page {}",
                u32_at(&buf, at + 24).unwrap_or(0),
                self.page_size
            ));
        }
        let meta = Meta {
            page,
            txnid: field(128),
            last_page: field(120),
            free,
            main,
        };
        debug_assert!(at + META_LEN <= buf.len());
        if meta.last_page < NUM_METAS - 1 || meta.last_page >= self.pages_in_file {
            return Err(format!(
                "its last page {} is not in the file ({} pages)",
                meta.last_page, self.pages_in_file
            ));
        }
        // The free tree's flags field holds the environment's flags.
        let free_shape = TreeRecord { flags: 0, ..free };
        if let Some(fault) = free_shape.fault(meta.last_page) {
            return Err(format!("its free-page tree is impossible: {fault}"));
        }
        if let Some(fault) = main.fault(meta.last_page) {
            return Err(format!("its main tree is impossible: {fault}"));
        }
        Ok(meta)
    }
}

/// Keys a damaged page or value may have held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostKeys {
    /// None: the damage is in bytes LMDB ignores when it reads, and every entry was read.
    Nothing,
    /// This key's value.
    Key(Vec<u8>),
    /// Any key from `from` (inclusive, `None`: the first) to `to` (exclusive, `None`: the
    /// last).
    Range {
        /// The first key the range may hold.
        from: Option<Vec<u8>>,
        /// The key the range ends before.
        to: Option<Vec<u8>>,
    },
}

/// The first key after `key` in bytewise order.
pub(crate) fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// The meta page to walk: the one of transaction `txnid` when given (read twice, equal,
/// so a meta being rewritten is never used), else the newest sound one. Also the reasons
/// each unsound meta page is.
pub(crate) fn choose_meta(
    file: &PageFile,
    txnid: Option<u64>,
) -> (Option<Meta>, Vec<(u64, String)>) {
    let mut sound = Vec::new();
    let mut faults = Vec::new();
    for page in 0..NUM_METAS {
        match file.meta(page) {
            Ok(meta) => sound.push(meta),
            Err(reason) => faults.push((page, reason)),
        }
    }
    let chosen = match txnid {
        Some(id) => sound
            .into_iter()
            .find(|m| m.txnid == id && file.meta(m.page).as_ref() == Ok(m)),
        None => sound.into_iter().max_by_key(|m| m.txnid),
    };
    (chosen, faults)
}
