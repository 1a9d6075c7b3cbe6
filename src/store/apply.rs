//! [`Store::apply`]: a batch of committed writes, and its highest LSN, in one LMDB
//! transaction; the tables it writes to are created in one before. A put above every key
//! of its table takes the append path ([`append`](super::append)).

use heed::RwTxn;

use super::append::{self, Greatest};
use super::tally::{self, TableRecord, Tally};
use super::{apply_err, lmdb_name, meta_seed, ApplyError, Seed, Store, WriteOp, KEY_APPLIED};
use crate::catalog::{Catalog, Dbi};
use crate::error::Error;
use crate::lsn::Lsn;
use crate::spill::SpilledWrites;
use crate::wal::log::record::OpRef;

/// A table an apply batch touches: its record as the batch leaves it (`None`: not listed),
/// and its greatest key in LMDB as far as the batch knows.
struct Listed {
    name: Box<str>,
    record: Option<(Lsn, Tally)>,
    changed: bool,
    greatest: Greatest,
}

/// What a committed apply batch wrote: its puts, and how many of them took the append path.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchApplied {
    pub puts: usize,
    pub appended: usize,
}

impl BatchApplied {
    /// Nearly every put was appended (a sorted load, sequential ids, a time series).
    pub fn appending(&self) -> bool {
        self.puts > 0 && self.appended >= self.puts - self.puts / 16
    }
}

/// Operations to apply in order, each with its commit's LSN: a batch's list of them, one
/// commit's operations as they are (a bulk load's list would take 16 bytes an operation
/// beside them), or a spilled commit's, read from its runs as they are applied.
#[derive(Clone, Copy)]
pub(crate) enum ApplyOps<'a> {
    Listed(&'a [(Lsn, &'a WriteOp)]),
    OneCommit(Lsn, &'a [WriteOp]),
    Spilled(Lsn, &'a SpilledWrites),
}

impl<'a> ApplyOps<'a> {
    /// Calls `f` with each operation in order (and its commit's LSN).
    pub fn try_for_each<E: From<std::io::Error>>(
        self,
        mut f: impl FnMut(Lsn, OpRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            ApplyOps::Listed(listed) => {
                listed.iter().try_for_each(|(lsn, op)| f(*lsn, op.as_ref()))
            }
            ApplyOps::OneCommit(lsn, ops) => ops.iter().try_for_each(|op| f(lsn, op.as_ref())),
            ApplyOps::Spilled(lsn, spilled) => spilled
                .for_each(|table, key, value| f(lsn, OpRef::put_or_delete(table, key, value))),
        }
    }

    pub fn len(self) -> usize {
        match self {
            ApplyOps::Listed(listed) => listed.len(),
            ApplyOps::OneCommit(_, ops) => ops.len(),
            ApplyOps::Spilled(_, spilled) => spilled.op_count(),
        }
    }

    /// The tables its puts and creates write to, with the first such operation's LSN, in
    /// order (a table may come more than once).
    fn created_tables(self) -> Vec<(Lsn, &'a str)> {
        let mut tables: Vec<(Lsn, &'a str)> = Vec::new();
        let mut note = |lsn: Lsn, op: &'a WriteOp| {
            let creates = matches!(op, WriteOp::Put { .. } | WriteOp::CreateTable { .. });
            // A run of writes to one table (a transaction's, in key order) is noted once.
            if creates && tables.last().is_none_or(|(_, t)| *t != &**op.table()) {
                tables.push((lsn, op.table()));
            }
        };
        match self {
            ApplyOps::Listed(listed) => listed.iter().for_each(|(lsn, op)| note(*lsn, op)),
            ApplyOps::OneCommit(lsn, ops) => ops.iter().for_each(|op| note(lsn, op)),
            ApplyOps::Spilled(lsn, spilled) => {
                let puts = spilled.tables().iter().filter(|t| t.put_span.is_some());
                tables.extend(puts.map(|t| (lsn, &*t.name)));
            }
        }
        tables
    }
}

impl Store {
    /// Creates, in an LMDB transaction of their own, the tables `ops` write to that LMDB
    /// does not hold yet, and sets their handles. Their data comes in a later transaction.
    pub fn create_missing_tables(
        &self,
        ops: ApplyOps<'_>,
        catalog: &Catalog,
    ) -> Result<(), ApplyError> {
        let mut missing: Vec<(crate::sync::DataArc<crate::catalog::Table>, Lsn)> = Vec::new();
        for (lsn, name) in ops.created_tables() {
            let table = catalog.get_or_add(name);
            if table.state.read().lmdb().is_none()
                && !missing.iter().any(|(t, _)| t.name == table.name)
            {
                missing.push((table, lsn));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut wtxn = self.write_txn()?;
        let mut created = Vec::with_capacity(missing.len());
        for (table, lsn) in missing {
            let dbi: Dbi = self
                .env
                .get()
                .map_err(ApplyError::Other)?
                .create_database(&mut wtxn, Some(&lmdb_name(&table.name)))
                .map_err(apply_err("create table"))?;
            created.push((table, dbi, lsn));
        }
        fail::fail_point!("applier-creating-tables");
        wtxn.commit().map_err(apply_err("commit"))?;
        self.note_commit();
        for (table, dbi, lsn) in created {
            table.set_lmdb(dbi, lsn);
        }
        Ok(())
    }

    fn write_txn(&self) -> Result<RwTxn<'_>, ApplyError> {
        let env = self.env.get().map_err(ApplyError::Other)?;
        env.write_txn().map_err(apply_err("begin write"))
    }

    /// Applies `ops` (in order) and sets the applied LSN to `last_lsn`, in one LMDB
    /// transaction, committed only if `logged()` says so just before (false: nothing is
    /// committed: `None`). Every table written must have its handle already. A put above
    /// every key of its table is appended ([`append`]); key-sorted batches are where that
    /// pays.
    pub fn apply(
        &self,
        ops: ApplyOps<'_>,
        last_lsn: Lsn,
        catalog: &Catalog,
        logged: &dyn Fn() -> bool,
    ) -> Result<Option<BatchApplied>, ApplyError> {
        let mut wtxn = self.write_txn()?;
        let mut applied = BatchApplied::default();
        let mut buf = Vec::new();
        // (its handle, its seed, its place in `listed`) of the table written last
        let mut current: Option<(Option<Dbi>, Seed, usize)> = None;
        // The records of the tables this batch touches, written back once at its end.
        let mut listed: Vec<Listed> = Vec::new();
        ops.try_for_each(|lsn, op| -> Result<(), ApplyError> {
            let name = op.table();
            let switched = current.is_none_or(|(_, _, at)| &*listed[at].name != name);
            if switched {
                let table = catalog.get(name);
                let dbi = table.as_ref().and_then(|t| t.state.read().lmdb());
                let seed = table.map_or_else(|| Seed::of_table(name), |t| t.seed);
                let at = match listed.iter().position(|l| &*l.name == name) {
                    Some(at) => at,
                    None => {
                        let record = self.table_record(&wtxn, name)?;
                        listed.push(Listed {
                            name: name.into(),
                            record,
                            changed: false,
                            greatest: Greatest::Unknown,
                        });
                        listed.len() - 1
                    }
                };
                current = Some((dbi, seed, at));
            }
            let (dbi, seed, at) = current.expect("set above");
            let table = &mut listed[at];
            match op {
                OpRef::Put { key, value, .. } => {
                    let dbi = dbi.ok_or_else(|| missing_handle(name))?;
                    seed.seal(&mut buf, key, value);
                    // A put creates its table: list it.
                    let (_, tally) = table.record.get_or_insert((lsn, Tally::default()));
                    let above = table
                        .greatest
                        .is_below(key, dbi, &wtxn)
                        .map_err(apply_err("read"))?;
                    applied.puts += 1;
                    if above {
                        applied.appended += 1;
                        let greatest = &mut table.greatest;
                        append::append_tallied(dbi, &mut wtxn, key, &buf, tally, greatest)
                            .map_err(apply_err("append"))?;
                    } else {
                        // Not above the bound: after a normal put it still holds.
                        tally::put_tallied(dbi, &mut wtxn, key, &buf, tally)
                            .map_err(apply_err("put"))?;
                    }
                    table.changed = true;
                }
                OpRef::Delete { key, .. } => {
                    let Some(dbi) = dbi else { return Ok(()) };
                    let above = table
                        .greatest
                        .is_below(key, dbi, &wtxn)
                        .map_err(apply_err("read"))?;
                    if above {
                        // Nothing to delete.
                        return Ok(());
                    }
                    if let Some((_, tally)) = table.record.as_mut() {
                        tally::delete_tallied(dbi, &mut wtxn, key, tally)
                            .map_err(apply_err("delete"))?;
                        table.changed = true;
                    } else {
                        dbi.delete(&mut wtxn, key).map_err(apply_err("delete"))?;
                    }
                }
                OpRef::CreateTable { .. } => {
                    let tally = table.record.map(|(_, t)| t).unwrap_or_default();
                    table.record = Some((lsn, tally));
                    table.changed = true;
                }
                OpRef::DropTable { .. } => {
                    if let Some(dbi) = dbi {
                        dbi.clear(&mut wtxn).map_err(apply_err("drop table"))?;
                    }
                    table.greatest.cleared();
                    table.record = None;
                    table.changed = true;
                }
            }
            Ok(())
        })?;
        for table in listed.iter().filter(|t| t.changed) {
            let name = table.name.as_bytes();
            match table.record {
                Some((created, tally)) => {
                    TableRecord::seal(created, tally, name, &mut buf);
                    self.tables
                        .put(&mut wtxn, name, &buf)
                        .map_err(apply_err("list table"))?;
                }
                None => {
                    self.tables
                        .delete(&mut wtxn, name)
                        .map_err(apply_err("drop table"))?;
                }
            }
        }
        meta_seed().seal(&mut buf, KEY_APPLIED, &last_lsn.to_le_bytes());
        self.meta
            .put(&mut wtxn, KEY_APPLIED, &buf)
            .map_err(apply_err("write applied LSN"))?;
        if !logged() {
            // Aborted: LMDB is never ahead of the log.
            return Ok(None);
        }
        let txn_id = wtxn.id() as u64;
        wtxn.commit().map_err(apply_err("commit"))?;
        self.note_commit();
        self.remember_applied(txn_id, last_lsn);
        Ok(Some(applied))
    }
}

fn missing_handle(table: &str) -> ApplyError {
    ApplyError::Other(Error::Lmdb {
        op: "apply",
        message: format!("table {table:?} has no LMDB handle"),
        source: None,
    })
}
