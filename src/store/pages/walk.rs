//! The walk of one meta page's trees over a [`PageFile`]: every page checked as it is
//! reached, every leaf entry handed to a visitor, and the account of every page (see the
//! parent module for the invariants).

use super::*;

/// One bit per page.
pub(crate) struct PageSet(Vec<u64>);

impl PageSet {
    fn new(pages: u64) -> PageSet {
        PageSet(vec![0; pages.div_ceil(64) as usize])
    }

    /// Adds `page`; false if it was there.
    fn insert(&mut self, page: u64) -> bool {
        let (word, bit) = ((page / 64) as usize, 1u64 << (page % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    pub fn contains(&self, page: u64) -> bool {
        self.0[(page / 64) as usize] & (1u64 << (page % 64)) != 0
    }
}

/// A page the walk could not use, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageDamage {
    pub page: u64,
    pub reason: String,
    pub lost: LostKeys,
}

/// A leaf entry as the walk found it.
pub(crate) struct LeafEntry<'a> {
    /// The leaf page it is on.
    pub page: u64,
    pub key: &'a [u8],
    pub flags: u16,
    pub data: &'a [u8],
    /// Whether a lookup of the key finds this entry: the key ascends from the page's
    /// previous key and lies within the bounds the branch keys above it give.
    pub reachable: bool,
}

/// What one tree's walk counted, and the pages it could not use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TreeWalk {
    pub depth: u16,
    pub branch_pages: u64,
    pub leaf_pages: u64,
    pub overflow_pages: u64,
    pub entries: u64,
    pub damage: Vec<PageDamage>,
    /// Disagreements with the tree's record, when no page was damaged (a damaged page
    /// explains them).
    pub counts: Vec<String>,
}

/// A named database LMDB's main tree lists.
pub(crate) struct NamedTree {
    pub lmdb_name: String,
    /// Its tree's record; `None` when the entry is not a table record.
    pub record: Option<TreeRecord>,
}

/// Which tree a walk is of: how it orders its keys and what its entries may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeKind {
    /// LMDB's main tree: bytewise keys, entries are table records (`F_SUBDATA`).
    Main,
    /// A table: bytewise keys (`memcmp`, then length), plain entries.
    Table,
    /// The free-page tree: native `u64` keys (transaction ids).
    Free,
}

impl TreeKind {
    fn cmp(self, a: &[u8], b: &[u8]) -> Ordering {
        match self {
            TreeKind::Main | TreeKind::Table => a.cmp(b),
            TreeKind::Free => match (u64_at(a, 0), u64_at(b, 0)) {
                (Some(x), Some(y)) if a.len() == 8 && b.len() == 8 => x.cmp(&y),
                _ => a.cmp(b),
            },
        }
    }
}

struct Visit {
    page: u64,
    level: u16,
    from: Option<Vec<u8>>,
    to: Option<Vec<u8>>,
}

/// Walks the trees of one meta page, marking every page it reaches.
pub(crate) struct Walker<'f> {
    file: &'f PageFile,
    pub meta: Meta,
    used: PageSet,
    /// Asked before each page: true ends every walk at once.
    stop: Option<&'f dyn Fn() -> bool>,
    /// A walk was ended by `stop`: what it found is partial.
    pub stopped: bool,
}

impl<'f> Walker<'f> {
    pub fn new(file: &'f PageFile, meta: Meta) -> Walker<'f> {
        Walker {
            file,
            meta,
            used: PageSet::new(meta.last_page + 1),
            stop: None,
            stopped: false,
        }
    }

    /// Ends the walks as soon as `stop` says so (a closing engine).
    pub fn stop_when(mut self, stop: &'f dyn Fn() -> bool) -> Walker<'f> {
        self.stop = Some(stop);
        self
    }

    /// Walks the tree `record` describes in key order, handing `visit` each leaf entry it
    /// can read (a value on overflow pages read whole).
    pub fn walk(
        &mut self,
        record: &TreeRecord,
        kind: TreeKind,
        visit: &mut dyn FnMut(LeafEntry<'_>),
    ) -> TreeWalk {
        let mut walk = TreeWalk::default();
        if let Some(fault) = record.fault(self.meta.last_page) {
            walk.damage.push(PageDamage {
                page: record.root,
                reason: format!("the tree's record is damaged: {fault}"),
                lost: LostKeys::Range {
                    from: None,
                    to: None,
                },
            });
            return walk;
        }
        if record.root == NO_ROOT {
            return walk;
        }
        let mut stack = vec![Visit {
            page: record.root,
            level: 1,
            from: None,
            to: None,
        }];
        while let Some(v) = stack.pop() {
            if self.stopped || self.stop.is_some_and(|stop| stop()) {
                self.stopped = true;
                break;
            }
            let lost = || LostKeys::Range {
                from: v.from.clone(),
                to: v.to.clone(),
            };
            let read = self.claim(v.page, 1).and_then(|()| {
                let page = self.file.read(v.page, 1)?;
                let (nodes, ignored) = self.nodes(&page, v.page, kind)?;
                Ok((page, nodes, ignored))
            });
            let (page, nodes) = match read {
                Ok((page, nodes, ignored)) => {
                    if let Some(reason) = ignored {
                        walk.damage.push(PageDamage {
                            page: v.page,
                            reason,
                            lost: LostKeys::Nothing,
                        });
                    }
                    (page, nodes)
                }
                Err(reason) => {
                    walk.damage.push(PageDamage {
                        page: v.page,
                        reason,
                        lost: lost(),
                    });
                    continue;
                }
            };
            let flags = u16_at(&page, 10).unwrap_or(0);
            let is_leaf = flags & P_LEAF != 0;
            if is_leaf != (v.level == record.depth) {
                walk.damage.push(PageDamage {
                    page: v.page,
                    reason: format!(
                        "a {} page at level {} of a tree of depth {}",
                        if is_leaf { "leaf" } else { "branch" },
                        v.level,
                        record.depth
                    ),
                    lost: lost(),
                });
                continue;
            }
            walk.depth = walk.depth.max(v.level);
            let in_bounds = |key: &[u8]| {
                v.from
                    .as_deref()
                    .is_none_or(|f| kind.cmp(key, f) != Ordering::Less)
                    && v.to
                        .as_deref()
                        .is_none_or(|t| kind.cmp(key, t) == Ordering::Less)
            };
            if is_leaf {
                walk.leaf_pages += 1;
                let key_of = |&(at, ksize, _): &(usize, usize, usize)| {
                    &page[at + NODE_HEADER..at + NODE_HEADER + ksize]
                };
                let mut previous: Option<&[u8]> = None;
                let (mut strays, mut disordered) = (0usize, 0usize);
                for (i, node) in nodes.iter().enumerate() {
                    let &(at, ksize, dsize) = node;
                    let node_flags = u16_at(&page, at + 4).unwrap_or(0);
                    let key = key_of(node);
                    let before = previous;
                    let in_order = previous.is_none_or(|p| kind.cmp(p, key) == Ordering::Less);
                    if in_order {
                        previous = Some(key);
                    }
                    let fits = in_bounds(key);
                    strays += usize::from(!fits);
                    disordered += usize::from(!in_order);
                    let reachable = in_order && fits;
                    walk.entries += 1;
                    let data_at = at + NODE_HEADER + ksize;
                    if node_flags & F_BIGDATA != 0 {
                        let first = u64_at(&page, data_at).unwrap_or(0);
                        match self.overflow(first, dsize) {
                            Ok(value) => {
                                walk.overflow_pages += overflow_pages(dsize, self.file.page_size);
                                visit(LeafEntry {
                                    page: v.page,
                                    key,
                                    flags: node_flags,
                                    data: &value,
                                    reachable,
                                });
                            }
                            Err(reason) => {
                                // The node's header may be what is damaged, its key with it:
                                // the loss lies between the keys around it.
                                let after = nodes.get(i + 1).map(key_of).filter(|next| {
                                    in_bounds(next)
                                        && before.is_none_or(|b| kind.cmp(b, next).is_lt())
                                });
                                walk.damage.push(PageDamage {
                                    page: first,
                                    reason: format!("the overflow value at page {first}: {reason}"),
                                    lost: LostKeys::Range {
                                        from: before.map(key_after).or_else(|| v.from.clone()),
                                        to: after.map(<[u8]>::to_vec).or_else(|| v.to.clone()),
                                    },
                                })
                            }
                        }
                    } else {
                        visit(LeafEntry {
                            page: v.page,
                            key,
                            flags: node_flags,
                            data: &page[data_at..data_at + dsize],
                            reachable,
                        });
                    }
                }
                if disordered > 0 {
                    // A node pointer may point at another entry: the one it pointed at is
                    // reachable no more, though every entry left may verify.
                    walk.damage.push(PageDamage {
                        page: v.page,
                        reason: format!(
                            "{disordered} of its entries are out of key order (a node pointer \
                             may point at the wrong entry)"
                        ),
                        lost: lost(),
                    });
                }
                if strays > 0 {
                    // The parent's pointer may be misdirected: the page it meant is unread.
                    walk.damage.push(PageDamage {
                        page: v.page,
                        reason: format!(
                            "{strays} of its keys lie outside the bounds its parent gives (the \
                             parent may point at the wrong page)"
                        ),
                        lost: lost(),
                    });
                }
            } else {
                walk.branch_pages += 1;
                let keys: Vec<&[u8]> = nodes
                    .iter()
                    .map(|&(at, ksize, _)| &page[at + NODE_HEADER..at + NODE_HEADER + ksize])
                    .collect();
                // Branch key 0 is never compared: child 0 takes everything below key 1.
                let ordered = keys
                    .windows(2)
                    .skip(1)
                    .all(|w| kind.cmp(w[0], w[1]) == Ordering::Less)
                    && keys.iter().skip(1).all(|k| in_bounds(k));
                if !ordered {
                    walk.damage.push(PageDamage {
                        page: v.page,
                        reason: "its branch keys are out of order or outside its bounds".into(),
                        lost: lost(),
                    });
                    continue;
                }
                for (i, &(at, _, _)) in nodes.iter().enumerate().rev() {
                    let child = u64::from(u16_at(&page, at).unwrap_or(0))
                        | u64::from(u16_at(&page, at + 2).unwrap_or(0)) << 16
                        | u64::from(u16_at(&page, at + 4).unwrap_or(0)) << 32;
                    stack.push(Visit {
                        page: child,
                        level: v.level + 1,
                        from: if i == 0 {
                            v.from.clone()
                        } else {
                            Some(keys[i].to_vec())
                        },
                        to: keys.get(i + 1).map(|k| k.to_vec()).or_else(|| v.to.clone()),
                    });
                }
            }
        }
        if walk.damage.iter().all(|d| d.lost == LostKeys::Nothing) {
            let counted = [
                ("entries", walk.entries, record.entries),
                ("branch pages", walk.branch_pages, record.branch_pages),
                ("leaf pages", walk.leaf_pages, record.leaf_pages),
                ("overflow pages", walk.overflow_pages, record.overflow_pages),
                ("levels", u64::from(walk.depth), u64::from(record.depth)),
            ];
            for (what, found, recorded) in counted {
                if found != recorded {
                    walk.counts.push(format!(
                        "{found} {what} walked, its record counts {recorded}"
                    ));
                }
            }
        }
        walk
    }

    /// Walks the main tree: the named databases it lists, each with its tree's record
    /// (`None` when the entry is not a table record).
    pub fn named_trees(&mut self) -> (Vec<NamedTree>, TreeWalk) {
        let mut trees = Vec::new();
        let main = self.meta.main;
        let walk = self.walk(&main, TreeKind::Main, &mut |e| {
            let record = (e.flags & F_SUBDATA != 0 && e.data.len() == TREE_RECORD_LEN)
                .then(|| TreeRecord::parse(e.data))
                .flatten();
            trees.push(NamedTree {
                lmdb_name: String::from_utf8_lossy(e.key).into_owned(),
                record,
            });
        });
        (trees, walk)
    }

    /// Marks pages `first..first + count` in use; an error if one is not a data page of
    /// this meta's file or is already in use.
    fn claim(&mut self, first: u64, count: u64) -> Result<(), String> {
        let last = first.saturating_add(count - 1);
        if first < NUM_METAS || last > self.meta.last_page {
            return Err(format!(
                "page {first} is not a data page (pages 2..={})",
                self.meta.last_page
            ));
        }
        for page in first..=last {
            if !self.used.insert(page) {
                return Err(format!("page {page} is reached twice"));
            }
        }
        Ok(())
    }

    /// The nodes of branch or leaf page `pgno`: (offset, key size, inline data size), and
    /// damage in bytes LMDB ignores when it reads (the page is read all the same).
    #[allow(clippy::type_complexity)]
    pub(crate) fn nodes(
        &self,
        page: &[u8],
        pgno: u64,
        tree: TreeKind,
    ) -> Result<(Vec<(usize, usize, usize)>, Option<String>), String> {
        let size = page.len();
        let header = (
            u64_at(page, 0).unwrap_or(0),
            u16_at(page, 10).unwrap_or(0),
            u16_at(page, 12).unwrap_or(0) as usize,
            u16_at(page, 14).unwrap_or(0) as usize,
        );
        let (named, flags, lower, upper) = header;
        if named != pgno {
            return Err(format!("its header names page {named}"));
        }
        let kind = flags & !P_HARMLESS;
        if kind != P_BRANCH && kind != P_LEAF {
            return Err(format!(
                "its flags {flags:#06x} are not a branch's or a leaf's"
            ));
        }
        if lower < PAGE_HEADER || !lower.is_multiple_of(2) || lower > upper || upper > size {
            return Err(format!("its free space {lower}..{upper} is impossible"));
        }
        let count = (lower - PAGE_HEADER) / 2;
        if count == 0 {
            return Err("it holds no entries".into());
        }
        let mut nodes = Vec::with_capacity(count);
        let mut ignored = None;
        for i in 0..count {
            let at = u16_at(page, PAGE_HEADER + 2 * i).unwrap_or(0) as usize;
            if at < upper || !at.is_multiple_of(2) || at + NODE_HEADER > size {
                return Err(format!("entry {i} lies at impossible offset {at}"));
            }
            let node_flags = u16_at(page, at + 4).unwrap_or(0);
            let ksize = u16_at(page, at + 6).unwrap_or(0) as usize;
            let dsize = u16_at(page, at).unwrap_or(0) as usize
                | (u16_at(page, at + 2).unwrap_or(0) as usize) << 16;
            // LMDB reads only the flags it knows; F_DUPDATA would make it read a sub-tree.
            if kind == P_LEAF && node_flags & F_DUPDATA != 0 {
                return Err(format!("entry {i} is marked as holding duplicates"));
            }
            if kind == P_LEAF && node_flags & !(F_BIGDATA | F_SUBDATA) != 0 && ignored.is_none() {
                ignored = Some(format!("entry {i} has unknown flags {node_flags:#06x}"));
            }
            // Reads ignore it outside the main tree; a write of the key fails.
            if kind == P_LEAF && tree != TreeKind::Main && node_flags & F_SUBDATA != 0 {
                ignored = Some(format!("entry {i} of a table is marked as a table record"));
            }
            let inline = match kind {
                P_BRANCH => 0,
                _ if node_flags & F_BIGDATA != 0 => 8,
                _ => dsize,
            };
            if at + NODE_HEADER + ksize + inline > size {
                return Err(format!("entry {i} runs past the end of the page"));
            }
            nodes.push((at, ksize, dsize));
        }
        Ok((nodes, ignored))
    }

    /// The value of `len` bytes on the overflow pages from `first`.
    fn overflow(&mut self, first: u64, len: usize) -> Result<Vec<u8>, String> {
        let count = overflow_pages(len, self.file.page_size);
        self.claim(first, count)?;
        let mut pages = self.file.read(first, count)?;
        let named = u64_at(&pages, 0).unwrap_or(0);
        let flags = u16_at(&pages, 10).unwrap_or(0);
        let run = u32_at(&pages, 12).unwrap_or(0);
        if named != first || flags & !P_HARMLESS != P_OVERFLOW || u64::from(run) != count {
            return Err(format!(
                "its header (page {named}, flags {flags:#06x}, {run} pages) is not an overflow run of {count}"
            ));
        }
        pages.truncate(PAGE_HEADER + len);
        pages.drain(..PAGE_HEADER);
        Ok(pages)
    }

    /// Walks the free-page tree and checks that every page up to the last is either in use
    /// by a tree walked so far or listed free, never both. Call after walking every tree.
    pub fn account(&mut self) -> FreeAccount {
        let mut account = FreeAccount::default();
        let mut free = PageSet::new(self.meta.last_page + 1);
        let mut listed = Vec::new();
        let record = self.meta.free_tree();
        let walk = self.walk(&record, TreeKind::Free, &mut |e| {
            // An id list: a count, then that many page numbers.
            let count = u64_at(e.data, 0).unwrap_or(u64::MAX);
            let fits = count
                .checked_add(1)
                .and_then(|n| n.checked_mul(8))
                .is_some_and(|n| n as usize == e.data.len());
            if !fits {
                listed.push(Err(format!(
                    "a free list of transaction {} is {} bytes for {count} pages",
                    u64_at(e.key, 0).unwrap_or(0),
                    e.data.len()
                )));
                return;
            }
            for i in 1..=count as usize {
                listed.push(Ok(u64_at(e.data, i * 8).unwrap_or(0)));
            }
        });
        account.tree = walk;
        for entry in listed {
            match entry {
                Ok(page) if page < NUM_METAS || page > self.meta.last_page => account
                    .problems
                    .push(format!("page {page} is listed free but is not a data page")),
                Ok(page) if !free.insert(page) => account
                    .problems
                    .push(format!("page {page} is listed free twice")),
                Ok(page) if self.used.contains(page) => {
                    account.both.push(page);
                }
                Ok(_) => account.free += 1,
                Err(problem) => account.problems.push(problem),
            }
        }
        for page in NUM_METAS..=self.meta.last_page {
            if self.used.contains(page) {
                account.in_use += 1;
            } else if !free.contains(page) {
                account.unaccounted.push(page);
            }
        }
        account
    }
}

/// The pages of a file: in use, free, and neither or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FreeAccount {
    pub tree: TreeWalk,
    pub in_use: u64,
    pub free: u64,
    /// Pages in use and listed free: a write could overwrite data that is still read, or a
    /// damaged pointer reaches a stale page.
    pub both: Vec<u64>,
    /// Pages neither in use nor free: lost to a damaged tree or free list.
    pub unaccounted: Vec<u64>,
    pub problems: Vec<String>,
}

/// Pages an overflow value of `len` bytes spans (LMDB's `OVPAGES`).
fn overflow_pages(len: usize, page_size: usize) -> u64 {
    ((PAGE_HEADER - 1 + len) / page_size + 1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_runs_match_lmdbs_arithmetic() {
        // OVPAGES(size, psize) = (PAGEHDRSZ - 1 + size) / psize + 1
        assert_eq!(overflow_pages(1, 4096), 1);
        assert_eq!(overflow_pages(4096 - 16, 4096), 1);
        assert_eq!(overflow_pages(4096 - 15, 4096), 2);
    }

    #[test]
    fn integer_keys_order_as_numbers() {
        let (a, b) = (2u64.to_le_bytes(), 256u64.to_le_bytes());
        assert_eq!(TreeKind::Free.cmp(&a, &b), Ordering::Less);
        assert_eq!(TreeKind::Table.cmp(&a, &b), Ordering::Greater);
    }
}

#[cfg(test)]
mod walk_tests {
    use super::*;
    use heed::types::Bytes;

    /// A file with one named tree `x` of 3,000 keys (a root branch over leaves).
    fn file_with_tree(dir: &Path) -> std::path::PathBuf {
        let mut opts = heed::EnvOpenOptions::new();
        opts.map_size(64 << 20).max_dbs(4);
        // SAFETY: a new environment in a fresh directory, opened once.
        let env = unsafe { opts.open(dir) }.unwrap();
        let mut txn = env.write_txn().unwrap();
        let db = env
            .create_database::<Bytes, Bytes>(&mut txn, Some("x"))
            .unwrap();
        for i in 0..3000u32 {
            db.put(&mut txn, format!("key{i:05}").as_bytes(), &[7; 40])
                .unwrap();
        }
        txn.commit().unwrap();
        env.prepare_for_closing().wait();
        dir.join("data.mdb")
    }

    fn tree_x(file: &PageFile) -> (Meta, TreeRecord) {
        let (meta, _) = choose_meta(file, None);
        let meta = meta.unwrap();
        let mut walker = Walker::new(file, meta);
        let mut x = None;
        walker.walk(&meta.main, TreeKind::Main, &mut |e| {
            if e.key == b"x" {
                x = TreeRecord::parse(e.data);
            }
        });
        (meta, x.unwrap())
    }

    #[test]
    fn a_healthy_tree_walks_clean_and_every_page_is_accounted() {
        let tmp = tempfile::tempdir().unwrap();
        let path = file_with_tree(tmp.path());
        let file = PageFile::open(&path).unwrap();
        let (meta, x) = tree_x(&file);
        assert!(x.depth >= 2, "{x:?}");
        let mut walker = Walker::new(&file, meta);
        walker.walk(&meta.main, TreeKind::Main, &mut |_| {});
        let mut keys = 0;
        let walk = walker.walk(&x, TreeKind::Table, &mut |e| {
            assert!(e.reachable);
            keys += 1;
        });
        assert_eq!((keys, walk.damage.len(), walk.counts.len()), (3000, 0, 0));
        let account = walker.account();
        assert!(
            account.both.is_empty() && account.unaccounted.is_empty(),
            "{account:?}"
        );
    }

    /// A branch pointer that names another leaf of the same tree: the page it meant is
    /// never read, so the range that pointer covers is lost, whichever of the two visits
    /// comes first.
    #[test]
    fn a_misdirected_branch_pointer_loses_the_range_it_covers() {
        let tmp = tempfile::tempdir().unwrap();
        let path = file_with_tree(tmp.path());
        let file = PageFile::open(&path).unwrap();
        let (_, x) = tree_x(&file);
        let size = file.page_size();
        let mut image = std::fs::read(&path).unwrap();
        let root = &image[x.root as usize * size..][..size];
        let lower = u16_at(root, 12).unwrap() as usize;
        let slot = |i: usize| u16_at(root, PAGE_HEADER + 2 * i).unwrap() as usize;
        assert!((lower - PAGE_HEADER) / 2 >= 4, "a root with a few children");
        let (first, third) = (slot(1), slot(3));
        let child = |at: usize| {
            u16_at(root, at).unwrap() as u64 | (u16_at(root, at + 2).unwrap() as u64) << 16
        };
        let meant = child(first);
        let other = child(third);
        // Child 1 now points at child 3's page (visited first, out of its bounds).
        let base = x.root as usize * size;
        image.copy_within(base + third..base + third + 4, base + first);
        std::fs::write(&path, &image).unwrap();
        let file = PageFile::open(&path).unwrap();
        let (meta, x) = tree_x(&file);
        let mut walker = Walker::new(&file, meta);
        walker.walk(&meta.main, TreeKind::Main, &mut |_| {});
        let walk = walker.walk(&x, TreeKind::Table, &mut |_| {});
        // Every key of the page child 1 meant is inside a listed loss.
        let meant_page = &image[meant as usize * size..][..size];
        let (nodes, _) = walker.nodes(meant_page, meant, TreeKind::Table).unwrap();
        for (at, ksize, _) in nodes {
            let key = &meant_page[at + NODE_HEADER..at + NODE_HEADER + ksize];
            let listed = walk.damage.iter().any(|d| match &d.lost {
                LostKeys::Range { from, to } => {
                    from.as_deref().is_none_or(|f| f <= key)
                        && to.as_deref().is_none_or(|t| key < t)
                }
                _ => false,
            });
            assert!(
                listed,
                "key {key:?} of page {meant} (now unread; {other} read twice) not listed: {:?}",
                walk.damage
            );
        }
    }
}
