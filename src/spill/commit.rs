//! A committed transaction's writes as runs: table by table, each table's runs merged (a
//! key's entry from the newest run). The log's encoder, the flusher's conflict check and
//! the applier each walk them in order, so a spilled commit's writes are never in memory
//! whole.

use std::io;
use std::ops::Bound;

use super::{MergedRuns, Run};
use crate::overlay::version_cost;
use crate::sync::DataArc as Arc;
use crate::wal::log::record::{op_len, put_op, OpEncoder, OpRef};

/// One table's spilled writes.
#[derive(Debug)]
pub(crate) struct SpilledTable {
    pub name: Arc<str>,
    /// Oldest first.
    runs: Vec<Run>,
    /// Its lowest and highest put keys (`None`: it only deletes).
    pub put_span: Option<(Vec<u8>, Vec<u8>)>,
}

impl SpilledTable {
    /// Its writes in key order, each key's last.
    fn entries(&self) -> MergedRuns<'_> {
        MergedRuns::of(&self.runs, Bound::Unbounded, false)
    }
}

/// A commit's writes in runs (see the module's documentation).
#[derive(Debug)]
pub(crate) struct SpilledWrites {
    tables: Vec<SpilledTable>,
    ops: usize,
    ops_len: usize,
    op_bytes: usize,
    versions_cost: usize,
}

impl SpilledWrites {
    /// `tables` in name order, each with its runs oldest first. Reads every run once to
    /// count and measure the operations: a block that fails its checksum fails the commit
    /// here, before its record is written.
    pub fn new(tables: Vec<(Arc<str>, Vec<Run>)>) -> io::Result<SpilledWrites> {
        let mut writes = SpilledWrites {
            tables: Vec::with_capacity(tables.len()),
            ops: 0,
            ops_len: 0,
            op_bytes: 0,
            versions_cost: 0,
        };
        for (name, runs) in tables {
            let mut table = SpilledTable {
                name,
                runs,
                put_span: None,
            };
            let mut put_span: Option<(Vec<u8>, Vec<u8>)> = None;
            for entry in table.entries() {
                let (key, value) = entry?;
                writes.ops += 1;
                writes.ops_len += op_len(OpRef::put_or_delete(&table.name, &key, value.as_deref()));
                writes.op_bytes += key.len() + value.as_ref().map_or(0, Vec::len);
                writes.versions_cost += version_cost(&key, value.as_deref());
                if value.is_some() {
                    match &mut put_span {
                        None => put_span = Some((key.clone(), key)),
                        // Keys ascend: the last put is the highest.
                        Some((_, high)) => *high = key,
                    }
                }
            }
            table.put_span = put_span;
            writes.tables.push(table);
        }
        Ok(writes)
    }

    pub fn tables(&self) -> &[SpilledTable] {
        &self.tables
    }

    /// Its operations (each key's last write in each table).
    pub fn op_count(&self) -> usize {
        self.ops
    }

    /// Bytes its operations take in a log record.
    pub fn ops_len(&self) -> usize {
        self.ops_len
    }

    /// Bytes of its keys and values.
    pub fn op_bytes(&self) -> usize {
        self.op_bytes
    }

    /// What its versions would take in the overlay ([`version_cost`] summed).
    pub fn versions_cost(&self) -> usize {
        self.versions_cost
    }

    /// Calls `f` with each operation in order: table by table, keys ascending.
    pub fn for_each<E: From<io::Error>>(
        &self,
        mut f: impl FnMut(&Arc<str>, &[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        for table in &self.tables {
            for entry in table.entries() {
                let (key, value) = entry?;
                f(&table.name, &key, value.as_deref())?;
            }
        }
        Ok(())
    }

    /// Encodes its operations into a log record's payload, one at a time.
    pub fn encoder(&self) -> SpilledEncoder<'_> {
        SpilledEncoder {
            writes: self,
            table: 0,
            walk: None,
        }
    }
}

/// See [`SpilledWrites::encoder`].
pub(crate) struct SpilledEncoder<'a> {
    writes: &'a SpilledWrites,
    table: usize,
    walk: Option<MergedRuns<'a>>,
}

impl OpEncoder for SpilledEncoder<'_> {
    fn encode_next(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        fail::fail_point!("spill-read-back", |_| Err(io::Error::other(
            "injected: a spill run read back failed"
        )));
        while let Some(table) = self.writes.tables.get(self.table) {
            let walk = self.walk.get_or_insert_with(|| table.entries());
            match walk.next().transpose()? {
                Some((key, value)) => {
                    put_op(
                        out,
                        OpRef::put_or_delete(&table.name, &key, value.as_deref()),
                    );
                    return Ok(true);
                }
                None => {
                    self.walk = None;
                    self.table += 1;
                }
            }
        }
        Ok(false)
    }
}
