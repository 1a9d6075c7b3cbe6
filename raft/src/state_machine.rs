//! The state machine on a walmdb database.
//!
//! Each batch of entries openraft hands over is applied as walmdb transactions (one per
//! 4 MiB of writes) that also record, in table `_raft`, the last applied log id and the
//! membership: walmdb commits a transaction whole, and its applier puts it in one LMDB
//! transaction, so the data and the log id it covers never part. Tables whose names begin
//! with `_raft` are the state machine's own; writes to them in a request are ignored.
//!
//! A snapshot is a hot backup of the database (`Db::backup`), taken while entries go on
//! being applied, with the LSN of the commit that applied its last log id: installing it
//! restores the backup through exactly that LSN into a new database directory, then points
//! `sm/CURRENT` at it (written whole and renamed) and swaps it in.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};
use walmdb::{Db, Lsn, RestoreOptions, RestoreTarget};

use crate::records::{decode, encode};
use crate::snapshot::{Contents, SnapshotFile};
use crate::{io_err, LogId, Response, SnapshotMeta, StoredMembership, TypeConfig, Write};

/// The state machine's table.
pub const META_TABLE: &str = "_raft";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
/// A batch's transaction holds at most this many bytes of keys and values (less when the
/// database's records must be smaller), so it stays far under the log's record limit.
const TXN_BYTES: usize = 4 << 20;
const CURRENT_MAGIC: &str = "walmdb-raft-current 1";

/// The state machine of a node; clones share it (the snapshot builder is one).
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

struct Shared {
    /// The node's directory.
    dir: PathBuf,
    /// The database now (swapped when a snapshot is installed).
    db: RwLock<Db>,
    /// Its directory's name under `sm/`.
    current: Mutex<String>,
    /// The databases' configuration.
    cfg: walmdb::Config,
    applied: Mutex<Applied>,
    /// One snapshot is built at a time.
    building: tokio::sync::Mutex<()>,
}

/// The last applied log id, the membership then, and the LSN of the commit that applied
/// them: a consistent triple, updated after each commit.
#[derive(Clone, Default)]
struct Applied {
    log_id: Option<LogId>,
    membership: StoredMembership,
    lsn: Lsn,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let applied = self.shared.applied.lock();
        f.debug_struct("StateMachine")
            .field("dir", &self.shared.dir)
            .field("applied", &applied.log_id)
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// Opens (creating, or recovering) the state machine of the node in `dir`.
    pub fn open(dir: &Path) -> io::Result<StateMachine> {
        Self::open_with(dir, walmdb::Config::default())
    }

    /// [`StateMachine::open`] with the databases' configuration (also for one a snapshot
    /// installs).
    pub fn open_with(dir: &Path, cfg: walmdb::Config) -> io::Result<StateMachine> {
        let sm = dir.join("sm");
        crate::files::private_dir(&sm)?;
        crate::files::private_dir(&dir.join("snapshot"))?;
        let current = match read_current(&sm)? {
            Some(name) => name,
            None => {
                let name = "db-00000001".to_owned();
                write_current(&sm, &name)?;
                name
            }
        };
        // A directory a crash left behind: an install that never became current, or the
        // database an install replaced.
        for entry in std::fs::read_dir(&sm)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() && name != current {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        let db = Db::open_with(sm.join(&current), cfg.clone()).map_err(io_err)?;
        let applied = read_applied(&db)?;
        Ok(StateMachine {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                db: RwLock::new(db),
                current: Mutex::new(current),
                cfg,
                applied: Mutex::new(applied),
                building: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The database now: for reads (a snapshot install swaps it; take it again per request).
    pub fn db(&self) -> Db {
        self.shared.db.read().clone()
    }

    /// The last log id applied.
    pub fn applied(&self) -> Option<LogId> {
        self.shared.applied.lock().log_id
    }

    fn snapshot_path(&self) -> PathBuf {
        self.shared.dir.join("snapshot").join("current.tar")
    }
}

fn read_applied(db: &Db) -> io::Result<Applied> {
    let txn = db.read().map_err(io_err)?;
    let log_id: Option<LogId> = match txn.get(META_TABLE, KEY_APPLIED).map_err(io_err)? {
        Some(bytes) => decode("applied log id", bytes)?,
        None => None,
    };
    let membership = match txn.get(META_TABLE, KEY_MEMBERSHIP).map_err(io_err)? {
        Some(bytes) => decode("membership", bytes)?,
        None => StoredMembership::default(),
    };
    Ok(Applied {
        log_id,
        membership,
        lsn: txn.lsn(),
    })
}

/// `sm/CURRENT`: the magic line, the database directory's name, its CRC32 (hex).
fn read_current(sm: &Path) -> io::Result<Option<String>> {
    let text = match std::fs::read_to_string(sm.join("CURRENT")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines();
    let (Some(CURRENT_MAGIC), Some(name), Some(crc)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a walmdb-raft CURRENT file", sm.display()),
        ));
    };
    if format!("{:08x}", crc32fast::hash(name.as_bytes())) != crc
        || name.contains('/')
        || name.starts_with('.')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: a damaged CURRENT file", sm.display()),
        ));
    }
    Ok(Some(name.to_owned()))
}

/// Points `sm/CURRENT` at `name`: written whole to a temporary file, synced, renamed over,
/// and the directory synced.
fn write_current(sm: &Path, name: &str) -> io::Result<()> {
    let tmp = sm.join("CURRENT.tmp");
    let text = format!(
        "{CURRENT_MAGIC}\n{name}\n{:08x}\n",
        crc32fast::hash(name.as_bytes())
    );
    let mut file = crate::files::private_file(&tmp)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, sm.join("CURRENT"))?;
    std::fs::File::open(sm)?.sync_all()
}

/// The next database directory's name after `name` (`db-00000001` → `db-00000002`).
fn next_name(name: &str) -> String {
    let n: u64 = name
        .strip_prefix("db-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("db-{:08}", n + 1)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> io::Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>> {
        let _one_at_a_time = self.shared.building.lock().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build_blocking())
            .await
            .map_err(io::Error::other)?
    }
}

impl StateMachine {
    fn build_blocking(&self) -> io::Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>> {
        // The triple first: the backup holds at least every commit through its LSN.
        let applied = self.shared.applied.lock().clone();
        let db = self.db();
        let work = self.shared.dir.join("snapshot").join("building");
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        crate::files::private_dir(&work)?;
        let backup = work.join("backup");
        db.backup(&backup).map_err(io_err)?;
        let meta = SnapshotMeta {
            last_log_id: applied.log_id,
            last_membership: applied.membership,
        };
        let contents = Contents {
            meta: meta.clone(),
            lsn: applied.lsn,
        };
        let packed = work.join("snapshot.tar");
        SnapshotFile::pack(&packed, &backup, &contents)?;
        let path = self.snapshot_path();
        std::fs::rename(&packed, &path)?;
        std::fs::File::open(path.parent().expect("in snapshot/"))?.sync_all()?;
        std::fs::remove_dir_all(&work)?;
        Ok(openraft::alias::SnapshotOf::<TypeConfig, SnapshotFile> {
            meta,
            snapshot: SnapshotFile::at(path),
        })
    }

    /// Restores `file` into a new database directory, points `sm/CURRENT` at it and swaps it
    /// in; the snapshot becomes the current one.
    fn install_blocking(&self, meta: &SnapshotMeta, file: &SnapshotFile) -> io::Result<()> {
        let dir = &self.shared.dir;
        let incoming = dir.join("snapshot").join("incoming");
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming)?;
        }
        let (backup, contents) = file.unpack(&incoming)?;
        if contents.meta.last_log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the snapshot file holds log id {:?}, its metadata says {:?}",
                    contents.meta.last_log_id, meta.last_log_id
                ),
            ));
        }
        let sm = dir.join("sm");
        let name = next_name(&self.shared.current.lock());
        let target = sm.join(&name);
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        walmdb::restore(
            &backup,
            &target,
            &RestoreTarget::Lsn(contents.lsn),
            &RestoreOptions {
                config: self.shared.cfg.clone(),
                ..RestoreOptions::default()
            },
        )
        .map_err(io_err)?;
        let db = Db::open_with(&target, self.shared.cfg.clone()).map_err(io_err)?;
        let applied = read_applied(&db)?;
        if applied.log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the restored snapshot applied {:?}, not {:?}",
                    applied.log_id, meta.last_log_id
                ),
            ));
        }
        write_current(&sm, &name)?;
        let old = std::mem::replace(&mut *self.shared.db.write(), db);
        let old_name = std::mem::replace(&mut *self.shared.current.lock(), name);
        *self.shared.applied.lock() = applied;
        // Readers holding the old handle get `Closed` and take the new one.
        if let Err(e) = old.close() {
            tracing::warn!(error = %e, "closing the replaced state machine database");
        }
        drop(old);
        if let Err(e) = std::fs::remove_dir_all(sm.join(old_name)) {
            tracing::warn!(error = %e, "removing the replaced state machine database");
        }
        let path = self.snapshot_path();
        if file.path() != path {
            std::fs::copy(file.path(), &path)?;
            std::fs::File::open(path.parent().expect("in snapshot/"))?.sync_all()?;
        }
        std::fs::remove_dir_all(&incoming)?;
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let applied = self.shared.applied.lock();
        Ok((applied.log_id, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let db = self.db();
        let mut membership = self.shared.applied.lock().membership.clone();
        let mut batch = Batch {
            txn: None,
            bytes: 0,
            last: None,
            responders: Vec::new(),
        };
        let txn_bytes = TXN_BYTES.min(self.shared.cfg.wal.max_record_bytes / 2);
        while let Some((entry, responder)) = entries.try_next().await? {
            if let EntryPayload::Normal(request) = &entry.payload {
                let bytes = request.bytes();
                if batch.bytes > 0 && batch.bytes + bytes > txn_bytes {
                    self.commit(&mut batch, &membership)?;
                }
            }
            let txn = match &mut batch.txn {
                Some(txn) => txn,
                None => batch.txn.insert(db.write().map_err(io_err)?),
            };
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(request) => {
                    for write in request.writes {
                        match write {
                            Write::Put { table, .. } | Write::Delete { table, .. }
                                if table.starts_with(META_TABLE) => {}
                            Write::Put { table, key, value } => {
                                batch.bytes += key.len() + value.len();
                                txn.put(&table, &key, &value).map_err(io_err)?;
                            }
                            Write::Delete { table, key } => {
                                batch.bytes += key.len();
                                txn.delete(&table, &key).map_err(io_err)?;
                            }
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            batch.last = Some(entry.log_id);
            batch.responders.extend(responder);
        }
        self.commit(&mut batch, &membership)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> io::Result<()> {
        let _no_build = self.shared.building.lock().await;
        let (this, meta) = (self.clone(), meta.clone());
        tokio::task::spawn_blocking(move || this.install_blocking(&meta, &snapshot))
            .await
            .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>> {
        let path = self.snapshot_path();
        if !path.exists() {
            return Ok(None);
        }
        let file = SnapshotFile::at(path);
        let contents = file.contents()?;
        Ok(Some(openraft::alias::SnapshotOf::<
            TypeConfig,
            SnapshotFile,
        > {
            meta: contents.meta,
            snapshot: file,
        }))
    }
}

/// The entries applied since the last commit.
struct Batch<'db> {
    txn: Option<walmdb::WriteTxn<'db>>,
    bytes: usize,
    last: Option<LogId>,
    responders: Vec<openraft::storage::ApplyResponder<TypeConfig>>,
}

impl StateMachine {
    /// Commits the batch's transaction with the last applied log id and the membership.
    fn commit(&self, batch: &mut Batch<'_>, membership: &StoredMembership) -> io::Result<()> {
        let Some(mut txn) = batch.txn.take() else {
            return Ok(());
        };
        txn.put(META_TABLE, KEY_APPLIED, &encode(&batch.last)?)
            .map_err(io_err)?;
        txn.put(META_TABLE, KEY_MEMBERSHIP, &encode(membership)?)
            .map_err(io_err)?;
        // Not synced: the Raft log is the durable record. A crash may undo the newest
        // applies; openraft then applies them again from the log (after installing the
        // current snapshot if the database fell behind it, as for any state machine that
        // loses its tail).
        let lsn = txn.commit_with(walmdb::Durability::None).map_err(io_err)?;
        *self.shared.applied.lock() = Applied {
            log_id: batch.last,
            membership: membership.clone(),
            lsn,
        };
        batch.bytes = 0;
        for responder in batch.responders.drain(..) {
            responder.send(Response { lsn });
        }
        Ok(())
    }
}
