//! The Raft log on walmdb's write-ahead log.
//!
//! Each entry is one log record of type `Entry` (its payload the entry with its log id),
//! each vote one `Vote` record, each truncation one `TruncateSuffix` record (the log id
//! kept last) and each purge one `PurgePrefix` record (the log id purged through). Entries
//! are queued at the log's group-commit level: the flusher writes a whole group of them
//! (many appends, many nodes' worth of traffic) with one fsync, and `append`'s callback is
//! answered once the sync covering its last entry is done. Votes, truncations and purges
//! are durable before their calls return.
//!
//! Opening replays every record in LSN order into memory: the vote, the last purged log id
//! and the entries after it (an entry overwrites every entry at or after its index, a
//! truncation drops those after its log id, a purge those through its log id). A purge
//! retires the log's segments below the first entry kept, after writing the vote again if
//! its record lies there.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use parking_lot::Mutex;
use walmdb::{Durability, EncodedRecord, Lsn, RecordType, Wal, WalConfig};

use crate::records::{decode, encode};
use crate::{io_err, Entry, LogId, TypeConfig, Vote};

/// The Raft log of a node; clones share it (each reader is one).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

struct Shared {
    wal: Wal,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The vote and the LSN of its record.
    vote: Option<(Vote, Lsn)>,
    last_purged: Option<LogId>,
    /// Entries after `last_purged`, by index.
    entries: BTreeMap<u64, Stored>,
    /// Numbers each append, so an LSN learned late lands only on the entry it belongs to.
    appends: u64,
}

struct Stored {
    entry: Entry,
    /// Its record's LSN, once the log has answered (0 before).
    lsn: Lsn,
    append: u64,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("LogStore")
            .field("last_purged", &state.last_purged)
            .field("entries", &state.entries.len())
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (creating, or recovering) the Raft log in directory `dir`.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        Self::open_with(dir, WalConfig::default())
    }

    /// [`LogStore::open`] with the log's settings (its durability must be `GroupCommit`
    /// or `EveryWrite`: an entry is acknowledged only once it is synced).
    pub fn open_with(dir: &Path, cfg: WalConfig) -> io::Result<LogStore> {
        if matches!(cfg.durability, Durability::None | Durability::Interval(_)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the Raft log needs a durable level (GroupCommit or EveryWrite)",
            ));
        }
        let wal = Wal::open(dir, cfg).map_err(io_err)?;
        let mut state = State::default();
        let first = wal.recovery_report().first_lsn.max(1);
        for record in wal.read_from(first) {
            let record = record.map_err(io_err)?;
            state.replay(record.lsn, &record.record)?;
        }
        Ok(LogStore {
            shared: Arc::new(Shared {
                wal,
                state: Mutex::new(state),
            }),
        })
    }

    /// Writes `record` and waits until it is durable; returns its LSN.
    async fn write_durably(&self, record: EncodedRecord) -> io::Result<Lsn> {
        let handle = self.shared.wal.submit(record, (), None).map_err(io_err)?;
        handle.await.map_err(io_err)
    }

    /// The entries in `range`, cloned.
    fn entries_in(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        let state = self.shared.state.lock();
        state
            .entries
            .range(range)
            .map(|(_, s)| s.entry.clone())
            .collect()
    }

    /// Retires the log's segments no replay needs: those below the first entry kept and
    /// below the purge record at `purge_lsn` (after writing the vote again if its record
    /// lies below them).
    async fn retire_purged(&self, purge_lsn: Lsn) -> io::Result<()> {
        let (keep_from, vote) = {
            let state = self.shared.state.lock();
            let keep_from = match state.entries.values().next() {
                // Not answered yet: nothing is retired this time.
                Some(s) if s.lsn == 0 => return Ok(()),
                Some(s) => s.lsn.min(purge_lsn),
                None => purge_lsn,
            };
            (keep_from, state.vote)
        };
        if let Some((vote, lsn)) = vote {
            if lsn < keep_from {
                let again = self
                    .write_durably(EncodedRecord::raw(RecordType::Vote, encode(&vote)?))
                    .await?;
                let mut state = self.shared.state.lock();
                if state.vote.as_ref().is_some_and(|(v, _)| *v == vote) {
                    state.vote = Some((vote, again));
                }
            }
        }
        // The purge record, the vote and every entry kept lie at or above `keep_from`.
        self.shared
            .wal
            .retire_below(keep_from)
            .map(drop)
            .map_err(io_err)
    }
}

impl State {
    /// Applies one record of the log, read at open.
    fn replay(&mut self, lsn: Lsn, record: &EncodedRecord) -> io::Result<()> {
        match record.kind() {
            RecordType::Entry => {
                let entry: Entry = decode("log entry", record.payload())?;
                let index = entry.index();
                if self
                    .last_purged
                    .as_ref()
                    .is_some_and(|p| index <= p.index())
                {
                    return Ok(());
                }
                self.entries.split_off(&index);
                self.entries.insert(
                    index,
                    Stored {
                        entry,
                        lsn,
                        append: 0,
                    },
                );
            }
            RecordType::Vote => {
                let vote: Vote = decode("vote", record.payload())?;
                self.vote = Some((vote, lsn));
            }
            RecordType::TruncateSuffix => {
                let after: Option<LogId> = decode("truncation", record.payload())?;
                self.truncate_after(after.as_ref());
            }
            RecordType::PurgePrefix => {
                let through: LogId = decode("purge", record.payload())?;
                self.purge(through);
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a {other:?} record in a Raft log (LSN {lsn}): not a Raft log"),
                ))
            }
        }
        Ok(())
    }

    fn truncate_after(&mut self, after: Option<&LogId>) {
        match after {
            Some(id) => drop(self.entries.split_off(&(id.index() + 1))),
            None => self.entries.clear(),
        }
    }

    fn purge(&mut self, through: LogId) {
        if self
            .last_purged
            .as_ref()
            .is_some_and(|p| p.index() >= through.index())
        {
            return;
        }
        self.entries = self.entries.split_off(&(through.index() + 1));
        self.last_purged = Some(through);
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        Ok(self.entries_in(range))
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.shared.state.lock().vote.as_ref().map(|(v, _)| *v))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let state = self.shared.state.lock();
        let last_log_id = state
            .entries
            .values()
            .next_back()
            .map(|s| s.entry.log_id())
            .or(state.last_purged);
        Ok(LogState {
            last_purged_log_id: state.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let lsn = self
            .write_durably(EncodedRecord::raw(RecordType::Vote, encode(vote)?))
            .await?;
        self.shared.state.lock().vote = Some((*vote, lsn));
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut pending = Vec::new();
        let append = {
            let mut state = self.shared.state.lock();
            state.appends += 1;
            state.appends
        };
        for entry in entries {
            let index = entry.index();
            let record = EncodedRecord::raw(RecordType::Entry, encode(&entry)?);
            let handle = self.shared.wal.submit(record, (), None).map_err(io_err)?;
            let mut state = self.shared.state.lock();
            // An entry replaces every entry at or after its index (openraft truncates first;
            // this keeps the memory image the same as a replay's).
            state.entries.split_off(&index);
            state.entries.insert(
                index,
                Stored {
                    entry,
                    lsn: 0,
                    append,
                },
            );
            pending.push((index, handle));
        }
        let shared = self.shared.clone();
        // Answered from the flusher's wake-up once the sync covering the last entry is done
        // (LSNs become durable in order: so are all the others).
        tokio::spawn(async move {
            let mut answered = Vec::with_capacity(pending.len());
            for (index, handle) in pending {
                match handle.await {
                    Ok(lsn) => answered.push((index, lsn)),
                    Err(e) => {
                        callback.io_completed(Err(io_err(e)));
                        return;
                    }
                }
            }
            {
                let mut state = shared.state.lock();
                for (index, lsn) in answered {
                    if let Some(s) = state.entries.get_mut(&index) {
                        if s.append == append {
                            s.lsn = lsn;
                        }
                    }
                }
            }
            callback.io_completed(Ok(()));
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let record = EncodedRecord::raw(RecordType::TruncateSuffix, encode(&last_log_id)?);
        self.write_durably(record).await?;
        self.shared
            .state
            .lock()
            .truncate_after(last_log_id.as_ref());
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let record = EncodedRecord::raw(RecordType::PurgePrefix, encode(&log_id)?);
        let lsn = self.write_durably(record).await?;
        self.shared.state.lock().purge(log_id);
        self.retire_purged(lsn).await
    }
}
