//! Answers the tail of large groups off the flusher thread. The flusher answers the first
//! `INLINE_ANSWERS` committers itself: that delay lets them queue their next commits before
//! it takes the next group (handing every answer off made groups alternate between a few
//! early committers and the rest, which cost a quarter of the throughput at 16 threads). The
//! remainder of a larger group is woken here in parallel, so the flusher's share stays bounded.

use std::fmt;
use std::io;

use super::Responder;
use crate::lsn::Lsn;
use crate::sync::{Arc, Condvar, JoinHandle, Mutex, ThreadBuilder};

/// The flusher answers this many committers of a group itself; the completer wakes the rest.
pub(crate) const INLINE_ANSWERS: usize = 32;

#[derive(Default)]
struct Inbox {
    batches: Vec<Vec<(Responder, Lsn)>>,
    closed: bool,
}

#[derive(Default)]
struct State {
    inbox: Mutex<Inbox>,
    ready: Condvar,
}

/// The completer thread. Dropping it answers everything handed over, then joins it.
pub(crate) struct Completer {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Completer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

impl Completer {
    pub(crate) fn spawn() -> io::Result<Self> {
        let state = Arc::new(State::default());
        let worker = state.clone();
        let thread = ThreadBuilder::new()
            .name("walmdb-completer".into())
            .spawn(move || loop {
                let (batches, closed) = {
                    let mut inbox = worker.inbox.lock();
                    while inbox.batches.is_empty() && !inbox.closed {
                        inbox = worker.ready.wait(inbox);
                    }
                    (std::mem::take(&mut inbox.batches), inbox.closed)
                };
                for (done, lsn) in batches.into_iter().flatten() {
                    done.respond(Ok(lsn));
                }
                if closed {
                    // Nothing is handed over after close: the flusher has stopped.
                    let rest = std::mem::take(&mut worker.inbox.lock().batches);
                    for (done, lsn) in rest.into_iter().flatten() {
                        done.respond(Ok(lsn));
                    }
                    return;
                }
            })?;
        Ok(Completer {
            state,
            thread: Some(thread),
        })
    }

    /// Answers each committer with its LSN, on the completer thread.
    pub(crate) fn answer(&self, batch: Vec<(Responder, Lsn)>) {
        self.state.inbox.lock().batches.push(batch);
        self.state.ready.notify_one();
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.state.inbox.lock().closed = true;
        self.state.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the WAL completer thread panicked");
            }
        }
    }
}
