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

/// A table an apply batch touches: its record as the batch leaves it (`None`: not listed),
/// and its greatest key in LMDB as far as the batch knows (keys of the batch's ops, `'k`).
struct Listed<'k> {
    name: crate::sync::DataArc<str>,
    record: Option<(Lsn, Tally)>,
    changed: bool,
    greatest: Greatest<'k>,
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

/// Operations to apply in order, each with its commit's LSN: a batch's list of them, or one
/// commit's operations as they are (a bulk load's list would take 16 bytes an operation
/// beside them).
#[derive(Clone, Copy)]
pub(crate) enum ApplyOps<'a> {
    Listed(&'a [(Lsn, &'a WriteOp)]),
    OneCommit(Lsn, &'a [WriteOp]),
}

impl<'a> ApplyOps<'a> {
    pub fn iter(self) -> impl Iterator<Item = (Lsn, &'a WriteOp)> {
        let (listed, one): (&[(Lsn, &WriteOp)], _) = match self {
            ApplyOps::Listed(listed) => (listed, None),
            ApplyOps::OneCommit(lsn, ops) => (&[], Some((lsn, ops))),
        };
        let one = one
            .into_iter()
            .flat_map(|(lsn, ops)| ops.iter().map(move |op| (lsn, op)));
        listed.iter().copied().chain(one)
    }

    pub fn len(self) -> usize {
        match self {
            ApplyOps::Listed(listed) => listed.len(),
            ApplyOps::OneCommit(_, ops) => ops.len(),
        }
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
        let mut previous: Option<&str> = None;
        for (lsn, op) in ops.iter() {
            if matches!(op, WriteOp::Delete { .. } | WriteOp::DropTable { .. }) {
                continue;
            }
            // A run of writes to one table (a transaction's, in key order) is looked up once.
            if previous == Some(&**op.table()) {
                continue;
            }
            previous = Some(op.table());
            let table = catalog.get_or_add(op.table());
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
        // (table, its handle, its seed, its place in `listed`)
        let mut current: Option<(crate::sync::DataArc<str>, Option<Dbi>, Seed, usize)> = None;
        // The records of the tables this batch touches, written back once at its end.
        let mut listed: Vec<Listed> = Vec::new();
        for (lsn, op) in ops.iter() {
            let name = op.table();
            if current.as_ref().is_none_or(|c| c.0 != *name) {
                let table = catalog.get(name);
                let dbi = table.as_ref().and_then(|t| t.state.read().lmdb());
                let seed = table.map_or_else(|| Seed::of_table(name), |t| t.seed);
                let at = match listed.iter().position(|l| l.name == *name) {
                    Some(at) => at,
                    None => {
                        let record = self.table_record(&wtxn, name)?;
                        listed.push(Listed {
                            name: name.clone(),
                            record,
                            changed: false,
                            greatest: Greatest::Unknown,
                        });
                        listed.len() - 1
                    }
                };
                current = Some((name.clone(), dbi, seed, at));
            }
            let (dbi, seed, at) = current
                .as_ref()
                .map_or((None, Seed::default(), 0), |c| (c.1, c.2, c.3));
            let table = &mut listed[at];
            match op {
                WriteOp::Put { key, value, .. } => {
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
                WriteOp::Delete { key, .. } => {
                    let Some(dbi) = dbi else { continue };
                    let above = table
                        .greatest
                        .is_below(key, dbi, &wtxn)
                        .map_err(apply_err("read"))?;
                    if above {
                        // Nothing to delete.
                        continue;
                    }
                    if let Some((_, tally)) = table.record.as_mut() {
                        tally::delete_tallied(dbi, &mut wtxn, key, tally)
                            .map_err(apply_err("delete"))?;
                        table.changed = true;
                    } else {
                        dbi.delete(&mut wtxn, key).map_err(apply_err("delete"))?;
                    }
                }
                WriteOp::CreateTable { .. } => {
                    let tally = table.record.map(|(_, t)| t).unwrap_or_default();
                    table.record = Some((lsn, tally));
                    table.changed = true;
                }
                WriteOp::DropTable { .. } => {
                    if let Some(dbi) = dbi {
                        dbi.clear(&mut wtxn).map_err(apply_err("drop table"))?;
                    }
                    table.greatest.cleared();
                    table.record = None;
                    table.changed = true;
                }
            }
        }
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
