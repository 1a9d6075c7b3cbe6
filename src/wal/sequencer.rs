//! The flusher's hook into the layer above ([`Sequencer`]) and the requests committers
//! queue for it.

use super::completion::Responder;
use crate::config::Durability;
use crate::error::Result;
use crate::lsn::Lsn;
use crate::wal::log::record::EncodedRecord;

/// The engine's hook into the flusher. The flusher calls it, on its own thread and in commit
/// order, to admit each commit before its LSN is fixed (a conflict check), and to publish
/// each commit once it is written and synced as its durability requires, before the
/// committer is answered.
pub trait Sequencer: Send + 'static {
    /// What a committer hands the sequencer with its record (for example its write set).
    type Ticket: Send + 'static;

    /// Decides whether the commit that would get `lsn` goes ahead. An error is returned to
    /// that committer alone, and the LSN goes to the next commit.
    fn admit(&mut self, ticket: &mut Self::Ticket, lsn: Lsn) -> Result<()>;

    /// The commit at `lsn` is in the log as durable as its level promises; make it visible.
    /// Called in LSN order, before its committer is answered.
    fn publish(&mut self, lsn: Lsn, ticket: Self::Ticket);

    /// An admitted commit failed to reach the log (I/O error); its committer gets the error.
    fn abandon(&mut self, lsn: Lsn, ticket: Self::Ticket) {
        let _ = (lsn, ticket);
    }

    /// Every admitted commit at `lsn` or later is unpublished and will never reach the log:
    /// the flusher panicked with their tickets and is restarting. Undo what admitting them
    /// changed; their LSNs go to the next commits.
    fn abandon_from(&mut self, lsn: Lsn) {
        let _ = lsn;
    }
}

/// The sequencer of a bare log: admits everything, publishes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSequencer;

impl Sequencer for NoSequencer {
    type Ticket = ();
    fn admit(&mut self, _: &mut (), _: Lsn) -> Result<()> {
        Ok(())
    }
    fn publish(&mut self, _: Lsn, _: ()) {}
}

/// What the flusher takes from the queue.
#[derive(Debug)]
pub(crate) enum Request<T> {
    /// Write this record.
    Commit {
        record: EncodedRecord,
        durability: Durability,
        ticket: T,
        done: Responder,
    },
    /// Sync everything written so far, then answer with the durable LSN.
    Sync { done: Responder },
}

impl<T> Request<T> {
    /// Answers the request's committer without queuing it.
    pub(crate) fn answer(self, answer: Result<Lsn>) {
        let (Request::Commit { done, .. } | Request::Sync { done }) = self;
        done.respond(answer);
    }

    /// Bytes counted against the queue's byte bound.
    pub(crate) fn queued_bytes(&self) -> usize {
        match self {
            Request::Commit { record, .. } => record.framed_len(),
            Request::Sync { .. } => 0,
        }
    }
}
