//! The scrub: a walk of LMDB's file page by page ([`pages`](super::pages), with `pread`, never
//! through LMDB's map, so damage is a finding and never a fault), checking every entry's
//! checksum and the structure around it: every page where its tree says, of the right kind,
//! reached once; keys ascending within the bounds the branch keys give (else a lookup misses
//! them); counts equal to the tree records'; every page in use or free, never both; every
//! listed table present and no unlisted table holding entries.
//! [`Db::scrub`](crate::Db::scrub) runs it online from a read snapshot's meta page (the
//! snapshot keeps LMDB from reusing its pages); [`inspect::scrub_store`](crate::inspect::scrub_store)
//! offline from the newest sound meta page.

use std::path::Path;
use std::time::Instant;

use super::pages::{
    choose_meta, LostKeys, NamedTree, PageFile, TreeKind, TreeRecord, TreeWalk, Walker,
};
use super::tally::{TableRecord, Tally};
use super::{meta_seed, open_stored, stored_format, tables_seed, KEY_FORMAT, META_DB, TABLES_DB};
use crate::error::{Error, Result};
use crate::seal::Seed;

/// Damaged entries a report lists (it counts them all).
pub const MAX_LISTED_DAMAGE: usize = 1000;

/// What a scrub found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScrubReport {
    /// The store format the checksums were checked against.
    pub format: u32,
    /// One line a table walked: walmdb's own two first, then the user tables by name.
    pub tables: Vec<TableScrub>,
    /// Damaged entries, the first [`MAX_LISTED_DAMAGE`] of them.
    pub damaged: Vec<DamagedEntry>,
    /// Pages the walk could not use, the first [`MAX_LISTED_DAMAGE`] of them.
    pub damaged_pages: Vec<DamagedPage>,
    /// Other damage to the structure: a meta page, counts that disagree with LMDB's
    /// records, pages neither in use nor free (or both), a listed table missing or an
    /// unlisted one holding entries.
    pub structure: Vec<String>,
    /// The file's pages, as the meta page walked counts them.
    pub pages: PageFigures,
    /// How long the walk took, microseconds.
    pub micros: u64,
}

impl ScrubReport {
    /// True when no entry and no part of the structure is damaged.
    pub fn is_healthy(&self) -> bool {
        self.damaged_entries() == 0 && self.damaged_pages.is_empty() && self.structure.is_empty()
    }

    /// Damaged entries, damaged pages and other structure findings.
    pub fn findings(&self) -> u64 {
        self.damaged_entries() + (self.damaged_pages.len() + self.structure.len()) as u64
    }

    /// Entries walked.
    pub fn entries(&self) -> u64 {
        self.tables.iter().map(|t| t.entries).sum()
    }

    /// Entries whose checksum failed.
    pub fn damaged_entries(&self) -> u64 {
        self.tables.iter().map(|t| t.damaged).sum()
    }
}

/// One table's walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableScrub {
    /// The user's table name, or `walmdb.meta` / `walmdb.tables`.
    pub name: String,
    /// Entries walked.
    pub entries: u64,
    /// Bytes of keys and stored values walked.
    pub bytes: u64,
    /// Entries whose checksum failed or that a lookup of their key does not find.
    pub damaged: u64,
    /// The entries LMDB's record of the table counts.
    pub lmdb_entries: u64,
    /// The depth of its B-tree as walked.
    pub depth: u32,
    /// Its branch, leaf and overflow pages walked.
    pub pages: u64,
    /// The digest of the entries walked (store format 3 keeps one per table).
    pub digest: u64,
    /// The entries and digest walmdb's own record of the table holds (`None`: not in store
    /// format 3, or no sound record).
    pub recorded: Option<(u64, u64)>,
}

/// LMDB's file as a scrub found it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PageFigures {
    /// The LMDB transaction whose meta page was walked.
    pub txnid: u64,
    /// Bytes per page.
    pub page_size: u32,
    /// The meta page's last page in use.
    pub last_page: u64,
    /// Pages the trees reach.
    pub in_use: u64,
    /// Pages the free list holds.
    pub free: u64,
}

/// A page a scrub could not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedPage {
    /// Its number (bytes `page * page_size ..` of `data.mdb`).
    pub page: u64,
    /// The table whose tree reaches it: a user table, `walmdb.meta`, `walmdb.tables`, or
    /// LMDB's own `(main)` and `(free pages)` trees.
    pub table: String,
    /// What is wrong with it.
    pub reason: String,
    /// The keys whose entries it may hold (and a read of them may miss or fault on).
    pub lost: LostKeys,
}

/// A damaged entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedEntry {
    /// The table.
    pub table: String,
    /// The key as stored.
    pub key: Vec<u8>,
    /// What is wrong with it.
    pub reason: DamageKind,
}

/// What is wrong with a damaged entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// Its checksum fails: the key or the stored value changed.
    Checksum,
    /// A lookup of its key does not find it: a branch page above it is damaged, so reads of
    /// the key miss it.
    Unreachable,
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DamageKind::Checksum => "checksum fails",
            DamageKind::Unreachable => "a lookup of the key does not find it",
        })
    }
}

/// Where a scrub is, for progress reports and rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubProgress<'a> {
    /// The table being walked.
    pub table: &'a str,
    /// Entries walked so far, over all tables.
    pub entries: u64,
    /// Bytes walked so far, over all tables.
    pub bytes: u64,
}

/// How often (in entries) the progress callback runs.
pub(crate) const PROGRESS_EVERY: u64 = 4096;

/// What `scrub_file` walked.
pub(crate) enum Scrubbed {
    Report(ScrubReport),
    /// The meta page of the transaction asked for is already rewritten: begin anew.
    MetaGone,
}

/// The name a report gives LMDB's main tree (where tables are listed).
const MAIN_TREE: &str = "(main)";
/// The name a report gives LMDB's free-page tree.
const FREE_TREE: &str = "(free pages)";

/// Scrubs LMDB's file `path` as of the meta page of LMDB transaction `txnid` (a read
/// transaction the caller keeps open, so LMDB reuses none of its pages), or offline (no
/// `txnid`) as of the newest sound meta page. `Error::Closed` as soon as `stop` says so.
pub(crate) fn scrub_file(
    path: &Path,
    txnid: Option<u64>,
    progress: &mut dyn FnMut(ScrubProgress<'_>),
    stop: &dyn Fn() -> bool,
) -> Result<Scrubbed> {
    let started = Instant::now();
    let file = PageFile::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => Error::Inconsistent {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        _ => Error::Io(e),
    })?;
    let mut report = ScrubReport::default();
    let (meta, faults) = choose_meta(&file, txnid);
    if txnid.is_none() {
        for (page, reason) in faults {
            report
                .structure
                .push(format!("meta page {page} is damaged: {reason}"));
        }
    }
    let Some(meta) = meta else {
        if txnid.is_some() {
            return Ok(Scrubbed::MetaGone);
        }
        report
            .structure
            .push("no meta page is sound: LMDB cannot open the file".into());
        report.micros = started.elapsed().as_micros() as u64;
        return Ok(Scrubbed::Report(report));
    };
    let mut walker = Walker::new(&file, meta).stop_when(stop);
    let mut scrub = Scrub {
        report,
        walked: (0, 0),
        progress,
    };

    // The main tree: one entry per named database.
    let (mut trees, main) = walker.named_trees();
    scrub.tree_damage(MAIN_TREE, main);
    let mut take = |name: &str| {
        let i = trees.iter().position(|t| t.lmdb_name == name)?;
        let tree = trees.remove(i);
        Some((tree.lmdb_name, tree.record))
    };

    // walmdb.meta first: its format record says how every checksum is sealed.
    let mut format = super::STORE_FORMAT_VERSION;
    match take(META_DB) {
        Some((_, Some(record))) => {
            let mut entries = Vec::new();
            let walk = walker.walk(&record, TreeKind::Table, &mut |e| {
                entries.push((e.key.to_vec(), e.data.to_vec(), e.reachable));
            });
            match entries.iter().find(|(k, _, _)| k == KEY_FORMAT) {
                Some((_, stored, _)) => match stored_format(stored) {
                    Some(f) => format = f,
                    None => scrub
                        .report
                        .structure
                        .push("the store's format record is damaged".into()),
                },
                None => scrub
                    .report
                    .structure
                    .push("the store's format record is missing".into()),
            }
            let mut line = scrub.line(META_DB, &record);
            for (key, stored, reachable) in &entries {
                scrub.entry(&mut line, format, meta_seed(), key, stored, *reachable);
            }
            scrub.finish(line, walk);
        }
        _ => scrub
            .report
            .structure
            .push(format!("LMDB does not hold {META_DB}")),
    }
    scrub.report.format = format;

    // The table list, then each table it names.
    let mut listed = Vec::new();
    match take(TABLES_DB) {
        Some((_, Some(record))) => {
            let mut line = scrub.line(TABLES_DB, &record);
            let walk = walker.walk(&record, TreeKind::Table, &mut |e| {
                let tally = TableRecord::decode(format, e.key, e.data).and_then(|r| r.tally);
                listed.push((String::from_utf8_lossy(e.key).into_owned(), tally));
                scrub.entry(&mut line, format, tables_seed(), e.key, e.data, e.reachable);
            });
            scrub.finish(line, walk);
        }
        _ => scrub
            .report
            .structure
            .push(format!("LMDB does not hold {TABLES_DB}")),
    }
    for (name, recorded) in listed {
        match take(&super::lmdb_name(&name)) {
            Some((_, Some(record))) => scrub.table(&mut walker, &name, &record, format, recorded),
            Some((_, None)) => scrub.report.structure.push(format!(
                "table {name:?}: its entry in LMDB's main tree is not a table record"
            )),
            None => scrub.report.structure.push(format!(
                "table {name:?} is listed but LMDB does not hold it"
            )),
        }
    }

    // What is left is not listed: a table emptied by a drop, or damage. Walked all the same,
    // so its pages count as in use.
    for NamedTree { lmdb_name, record } in trees {
        let Some(record) = record else {
            scrub.report.structure.push(format!(
                "LMDB's main tree holds {lmdb_name:?}, which is not a table record"
            ));
            continue;
        };
        let Some(name) = lmdb_name.strip_prefix(crate::layout::LMDB_TABLE_PREFIX) else {
            scrub.report.structure.push(format!(
                "LMDB holds database {lmdb_name:?}, which walmdb does not create"
            ));
            let walk = walker.walk(&record, TreeKind::Table, &mut |_| {});
            scrub.tree_damage(&lmdb_name, walk);
            continue;
        };
        let name = name.to_owned();
        let tables = scrub.report.tables.len();
        scrub.table(&mut walker, &name, &record, format, None);
        let line = scrub.report.tables.remove(tables);
        if line.entries > 0 {
            scrub.report.structure.push(format!(
                "LMDB holds {} entries in table {name:?}, which the table list does not name",
                line.entries
            ));
        }
    }

    if walker.stopped {
        return Err(Error::Closed);
    }
    let account = walker.account();
    scrub.tree_damage(FREE_TREE, account.tree);
    let structure = &mut scrub.report.structure;
    structure.extend(account.problems);
    if !account.both.is_empty() {
        structure.push(format!(
            "{} pages are both in use and listed free (a write may overwrite them): {}",
            account.both.len(),
            first_pages(&account.both)
        ));
    }
    if !account.unaccounted.is_empty() {
        structure.push(format!(
            "{} pages are neither in use nor listed free: {}",
            account.unaccounted.len(),
            first_pages(&account.unaccounted)
        ));
    }
    scrub.report.pages = PageFigures {
        txnid: meta.txnid,
        page_size: file.page_size() as u32,
        last_page: meta.last_page,
        in_use: account.in_use,
        free: account.free,
    };
    scrub.report.micros = started.elapsed().as_micros() as u64;
    Ok(Scrubbed::Report(scrub.report))
}

fn first_pages(pages: &[u64]) -> String {
    let mut s = pages
        .iter()
        .take(10)
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if pages.len() > 10 {
        s.push_str(", ...");
    }
    s
}

struct Scrub<'p> {
    report: ScrubReport,
    /// Entries and bytes walked, over all tables.
    walked: (u64, u64),
    progress: &'p mut dyn FnMut(ScrubProgress<'_>),
}

impl Scrub<'_> {
    fn line(&self, name: &str, record: &TreeRecord) -> TableScrub {
        TableScrub {
            name: name.to_owned(),
            lmdb_entries: record.entries,
            ..TableScrub::default()
        }
    }

    /// Walks user table `name`, and compares what it holds with walmdb's record of it.
    fn table(
        &mut self,
        walker: &mut Walker<'_>,
        name: &str,
        record: &TreeRecord,
        format: u32,
        recorded: Option<Tally>,
    ) {
        let seed = Seed::of_table(name);
        let mut line = self.line(name, record);
        let mut walked = Tally::default();
        let walk = walker.walk(record, TreeKind::Table, &mut |e| {
            walked.add(e.data);
            self.entry(&mut line, format, seed, e.key, e.data, e.reachable);
        });
        line.digest = walked.digest;
        line.recorded = recorded.map(|t| (t.entries, t.digest));
        if let Some(recorded) = recorded.filter(|r| *r != walked) {
            self.report.structure.push(format!(
                "table {name:?}: walmdb's record of it counts {} entries (digest {:016x}), \
                 the walk found {} (digest {:016x}): entries are missing, stray or stale",
                recorded.entries, recorded.digest, walked.entries, walked.digest
            ));
        }
        self.finish(line, walk);
    }

    fn entry(
        &mut self,
        line: &mut TableScrub,
        format: u32,
        seed: Seed,
        key: &[u8],
        stored: &[u8],
        reachable: bool,
    ) {
        line.entries += 1;
        line.bytes += (key.len() + stored.len()) as u64;
        let damage = if open_stored(format, seed, key, stored).is_none() {
            Some(DamageKind::Checksum)
        } else {
            (!reachable).then_some(DamageKind::Unreachable)
        };
        if let Some(reason) = damage {
            line.damaged += 1;
            if self.report.damaged.len() < MAX_LISTED_DAMAGE {
                self.report.damaged.push(DamagedEntry {
                    table: line.name.clone(),
                    key: key.to_vec(),
                    reason,
                });
            }
        }
        self.walked.0 += 1;
        self.walked.1 += (key.len() + stored.len()) as u64;
        if self.walked.0.is_multiple_of(PROGRESS_EVERY) {
            (self.progress)(ScrubProgress {
                table: &line.name,
                entries: self.walked.0,
                bytes: self.walked.1,
            });
        }
    }

    fn finish(&mut self, mut line: TableScrub, walk: TreeWalk) {
        line.depth = u32::from(walk.depth);
        line.pages = walk.branch_pages + walk.leaf_pages + walk.overflow_pages;
        let name = line.name.clone();
        self.report.tables.push(line);
        self.tree_damage(&name, walk);
    }

    fn tree_damage(&mut self, tree: &str, walk: TreeWalk) {
        for damage in walk.damage {
            if self.report.damaged_pages.len() < MAX_LISTED_DAMAGE {
                self.report.damaged_pages.push(DamagedPage {
                    page: damage.page,
                    table: tree.to_owned(),
                    reason: damage.reason,
                    lost: damage.lost,
                });
            } else {
                self.report
                    .structure
                    .push(format!("table {tree:?}: more damaged pages than listed"));
                break;
            }
        }
        for count in walk.counts {
            self.report
                .structure
                .push(format!("table {tree:?}: {count}"));
        }
    }
}
