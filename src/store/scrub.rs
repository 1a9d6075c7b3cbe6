//! The scrub: a walk of every entry LMDB holds for walmdb, in one read transaction, checking
//! each entry's checksum and the structure around it: keys in strictly ascending order, each
//! key found again by a lookup (a walk goes from leaf to leaf, a lookup down the branch pages:
//! a damaged branch key hides entries from lookups only), the entries walked equal to the
//! count LMDB keeps for the table, every listed table present and no unlisted table holding
//! entries. [`Db::scrub`](crate::Db::scrub) runs it online from a
//! snapshot; [`inspect::scrub_store`](crate::inspect::scrub_store) offline.

use std::time::Instant;

use super::{lmdb_err, meta_seed, open_stored, tables_seed, Dbi, LmdbReadTxn, META_DB, TABLES_DB};
use crate::error::Result;
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
    /// Damage to the structure: counts that disagree, keys out of order, LMDB errors, a
    /// listed table missing or an unlisted one holding entries.
    pub structure: Vec<String>,
    /// How long the walk took, microseconds.
    pub micros: u64,
}

impl ScrubReport {
    /// True when no entry and no part of the structure is damaged.
    pub fn is_healthy(&self) -> bool {
        self.damaged_entries() == 0 && self.structure.is_empty()
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
    /// The entries LMDB counts for the table.
    pub lmdb_entries: u64,
    /// The depth of its B-tree.
    pub depth: u32,
    /// Its branch, leaf and overflow pages.
    pub pages: u64,
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

/// A table to walk: its name in reports, its checksum seed and its handle, if LMDB has it.
pub(crate) struct ToWalk {
    pub name: String,
    pub seed: Seed,
    pub dbi: Option<Dbi>,
}

/// Walks walmdb's two tables and `user` (the tables the snapshot's table list names, each
/// with its handle) in `txn`, checking entries as store `format` seals them. `unlisted` are
/// user tables LMDB holds that the list does not name (emptied by a drop, or damage).
pub(crate) fn scrub(
    txn: &LmdbReadTxn<'_>,
    format: u32,
    meta: Dbi,
    tables: Dbi,
    user: Vec<ToWalk>,
    unlisted: Vec<ToWalk>,
    progress: &mut dyn FnMut(ScrubProgress<'_>),
) -> Result<ScrubReport> {
    let started = Instant::now();
    let mut report = ScrubReport {
        format,
        ..ScrubReport::default()
    };
    let mut walked = (0u64, 0u64);
    let own = [
        ToWalk {
            name: META_DB.into(),
            seed: meta_seed(),
            dbi: Some(meta),
        },
        ToWalk {
            name: TABLES_DB.into(),
            seed: tables_seed(),
            dbi: Some(tables),
        },
    ];
    for table in own.into_iter().chain(user) {
        let Some(dbi) = table.dbi else {
            report.structure.push(format!(
                "table {:?} is listed but LMDB does not hold it",
                table.name
            ));
            continue;
        };
        let line = walk(txn, format, &table, dbi, &mut report, &mut walked, progress)?;
        report.tables.push(line);
    }
    for table in unlisted {
        let Some(dbi) = table.dbi else { continue };
        let entries = dbi.len(txn).map_err(lmdb_err("stat"))?;
        if entries > 0 {
            report.structure.push(format!(
                "LMDB holds {entries} entries in table {:?}, which the table list does not name",
                table.name
            ));
        }
    }
    report.micros = started.elapsed().as_micros() as u64;
    Ok(report)
}

fn walk(
    txn: &LmdbReadTxn<'_>,
    format: u32,
    table: &ToWalk,
    dbi: Dbi,
    report: &mut ScrubReport,
    walked: &mut (u64, u64),
    progress: &mut dyn FnMut(ScrubProgress<'_>),
) -> Result<TableScrub> {
    let stat = dbi.stat(txn).map_err(lmdb_err("stat"))?;
    let mut line = TableScrub {
        name: table.name.clone(),
        lmdb_entries: stat.entries as u64,
        depth: stat.depth,
        pages: (stat.branch_pages + stat.leaf_pages + stat.overflow_pages) as u64,
        ..TableScrub::default()
    };
    let mut previous: Option<&[u8]> = None;
    let mut out_of_order = 0u64;
    let mut failed = None;
    for item in dbi.iter(txn).map_err(lmdb_err("scrub"))? {
        let (key, stored) = match item {
            Ok(entry) => entry,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        line.entries += 1;
        line.bytes += (key.len() + stored.len()) as u64;
        if previous.is_some_and(|p| p >= key) {
            out_of_order += 1;
        }
        previous = Some(key);
        let damage = if open_stored(format, table.seed, key, stored).is_none() {
            Some(DamageKind::Checksum)
        } else {
            // The same entry, at the same place in the map, or the lookup went astray.
            let found = dbi.get(txn, key).ok().flatten();
            (found.map(<[u8]>::as_ptr) != Some(stored.as_ptr())).then_some(DamageKind::Unreachable)
        };
        if let Some(reason) = damage {
            line.damaged += 1;
            if report.damaged.len() < MAX_LISTED_DAMAGE {
                report.damaged.push(DamagedEntry {
                    table: table.name.clone(),
                    key: key.to_vec(),
                    reason,
                });
            }
        }
        walked.0 += 1;
        walked.1 += (key.len() + stored.len()) as u64;
        if walked.0.is_multiple_of(PROGRESS_EVERY) {
            progress(ScrubProgress {
                table: &table.name,
                entries: walked.0,
                bytes: walked.1,
            });
        }
    }
    if let Some(e) = failed {
        report.structure.push(format!(
            "LMDB failed walking table {:?} after {} entries: {e}",
            table.name, line.entries
        ));
    } else if line.entries != line.lmdb_entries {
        report.structure.push(format!(
            "table {:?}: {} entries walked, LMDB counts {}",
            table.name, line.entries, line.lmdb_entries
        ));
    }
    if out_of_order > 0 {
        report.structure.push(format!(
            "table {:?}: {out_of_order} keys out of order",
            table.name
        ));
    }
    Ok(line)
}
