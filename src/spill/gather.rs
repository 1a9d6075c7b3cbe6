//! A transaction's writes gathered one at a time, in any order, within a memory budget: a
//! split transaction's record read back at replay. They stay in memory while they fit;
//! past the budget each table's are sorted into a run, as a write transaction spills.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use super::{last_writes, Run, RunWriter, SpilledWrites, ENTRY_OVERHEAD};
use crate::bytes::{Arena, SharedBytes};
use crate::sync::DataArc as Arc;

/// A table's writes in key order, each key's last (`None`: a delete).
pub(crate) type SortedWrites = Vec<(SharedBytes, Option<SharedBytes>)>;

/// See the module's documentation.
pub(crate) struct Gather {
    dir: PathBuf,
    budget: usize,
    /// What the writes in memory take (each its key, value and [`ENTRY_OVERHEAD`]).
    held: usize,
    /// The keys' and values' blocks (dropped at each spill, with the writes in them).
    arena: Arena,
    tables: BTreeMap<Arc<str>, TableGather>,
}

#[derive(Default)]
struct TableGather {
    /// In the order gathered.
    writes: Vec<(SharedBytes, Option<SharedBytes>)>,
    /// Oldest first, each older than `writes`.
    runs: Vec<Run>,
}

/// What a [`Gather`] holds once every write is in.
pub(crate) enum Gathered {
    /// They fit the budget: each table's writes, tables in name order.
    Memory(Vec<(Arc<str>, SortedWrites)>),
    /// They did not: every write is in runs.
    Spilled(SpilledWrites),
}

impl Gather {
    /// Runs go to unlinked files in `dir`, each time the writes in memory pass `budget`.
    pub fn new(dir: PathBuf, budget: usize) -> Gather {
        Gather {
            dir,
            budget,
            held: 0,
            arena: Arena::default(),
            tables: BTreeMap::new(),
        }
    }

    /// Adds a write of `key` in `table` (`None`: a delete), newer than every one before it.
    pub fn push(&mut self, table: &str, key: &[u8], value: Option<&[u8]>) -> io::Result<()> {
        let write = match value {
            Some(value) => {
                let (key, value) = self.arena.pair(key, value);
                (key, Some(value))
            }
            None => (self.arena.copy_of(key), None),
        };
        self.held += key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD;
        if !self.tables.contains_key(table) {
            self.tables.insert(Arc::from(table), TableGather::default());
        }
        let gathering = self.tables.get_mut(table).expect("inserted above");
        gathering.writes.push(write);
        if self.held > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts each table's writes in memory into a run, and frees them.
    fn spill(&mut self) -> io::Result<()> {
        for (name, table) in &mut self.tables {
            if table.writes.is_empty() {
                continue;
            }
            let writes = last_writes(std::mem::take(&mut table.writes));
            let mut run = RunWriter::create(&self.dir)?;
            for (key, value) in &writes {
                run.push(key, value.as_deref())?;
            }
            let run = run.finish()?;
            tracing::debug!(
                table = &**name,
                entries = run.len(),
                bytes = run.file_bytes(),
                "a replayed transaction's writes spilled"
            );
            table.runs.push(run);
        }
        self.arena = Arena::default();
        self.held = 0;
        Ok(())
    }

    /// Every write gathered: in memory if none was spilled, else all in runs (each block
    /// read back and checked once, by [`SpilledWrites::new`]).
    pub fn finish(mut self) -> io::Result<Gathered> {
        if self.tables.values().all(|t| t.runs.is_empty()) {
            let tables = self.tables.into_iter();
            return Ok(Gathered::Memory(
                tables
                    .map(|(name, table)| (name, last_writes(table.writes)))
                    .collect(),
            ));
        }
        self.spill()?;
        let tables = self.tables.into_iter();
        SpilledWrites::new(tables.map(|(name, table)| (name, table.runs)).collect())
            .map(Gathered::Spilled)
    }
}
