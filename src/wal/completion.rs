//! One-shot completions: the committer waits on its own, the flusher answers it exactly once.

use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sync::{Arc, Condvar, Mutex};

/// The committer's side: waits for the answer.
#[derive(Debug, Default)]
pub(crate) struct Completion {
    slot: Mutex<Option<Result<Lsn>>>,
    ready: Condvar,
}

impl Completion {
    /// A new completion and the responder that answers it.
    pub(crate) fn pair() -> (Arc<Completion>, Responder) {
        let completion = Arc::new(Completion::default());
        let responder = Responder {
            completion: Some(completion.clone()),
        };
        (completion, responder)
    }

    /// Blocks until the answer arrives.
    pub(crate) fn wait(&self) -> Result<Lsn> {
        let mut slot = self.slot.lock();
        loop {
            if let Some(answer) = slot.take() {
                return answer;
            }
            slot = self.ready.wait(slot);
        }
    }

    /// The answer, if it has arrived.
    pub(crate) fn try_take(&self) -> Option<Result<Lsn>> {
        self.slot.lock().take()
    }

    fn set(&self, answer: Result<Lsn>) {
        *self.slot.lock() = Some(answer);
        self.ready.notify_all();
    }
}

/// The flusher's side. Answers exactly once: dropping it unanswered (the flusher panicked or
/// a request was discarded) answers `FlusherDied`, so no committer waits forever. Such a
/// commit was not acknowledged: if the flusher is restarted, its record is taken out of
/// the log first.
#[derive(Debug)]
pub(crate) struct Responder {
    completion: Option<Arc<Completion>>,
}

impl Responder {
    /// Answers the committer.
    pub(crate) fn respond(mut self, answer: Result<Lsn>) {
        if let Some(c) = self.completion.take() {
            c.set(answer);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(c) = self.completion.take() {
            c.set(Err(Error::FlusherDied(
                "the commit was dropped without an answer (see the log for the panic); it was not \
                 acknowledged"
                    .into(),
            )));
        }
    }
}
