//! One-shot completions: the committer waits on its own (blocking, or as a future), the
//! flusher answers it exactly once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sync::{bug, Arc, Bug, Condvar, Mutex};

/// The answer and who waits for it. Invariant: the answer is stored and the waker taken
/// under the one lock, and a poll checks for the answer and stores its waker under that
/// same lock, so an answer never falls between a poll's check and its waker (no lost
/// wake-up).
#[derive(Debug, Default)]
struct Slot {
    answer: Option<Result<Lsn>>,
    waker: Option<Waker>,
}

/// The committer's side: waits for the answer.
#[derive(Debug, Default)]
pub(crate) struct Completion {
    slot: Mutex<Slot>,
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
            if let Some(answer) = slot.answer.take() {
                return answer;
            }
            slot = self.ready.wait(slot);
        }
    }

    /// Blocks until the answer arrives (`Some`) or up to `wait` (`None`).
    pub(crate) fn wait_timeout(&self, wait: std::time::Duration) -> Option<Result<Lsn>> {
        let mut slot = self.slot.lock();
        if slot.answer.is_none() {
            slot = self.ready.wait_timeout(slot, wait);
        }
        slot.answer.take()
    }

    /// The answer, if it has arrived.
    pub(crate) fn try_take(&self) -> Option<Result<Lsn>> {
        self.slot.lock().answer.take()
    }

    /// The answer, or `Pending` with `cx`'s waker kept to be woken when it arrives.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        let mut slot = self.slot.lock();
        if let Some(answer) = slot.answer.take() {
            return Poll::Ready(answer);
        }
        if bug(Bug::WakerStoredAfterCheck) {
            // The check and the store under two acquisitions: an answer between them is
            // never woken for.
            drop(slot);
            slot = self.slot.lock();
        }
        match &mut slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn set(&self, answer: Result<Lsn>) {
        let waker = {
            let mut slot = self.slot.lock();
            slot.answer = Some(answer);
            slot.waker.take()
        };
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A commit's answer as a future: the commit's LSN once it is as durable as its level
/// promises, or why it failed. Dropping it does not cancel the commit (see
/// [`WriteTxn::commit_async`](crate::WriteTxn::commit_async)).
#[must_use = "a commit's future tells whether it committed; dropping it does not cancel it"]
pub struct CommitFuture {
    state: FutureState,
    /// Run once, when the future returns a successful answer.
    on_success: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for CommitFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitFuture")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum FutureState {
    /// Answered before it was queued (refused, or nothing to commit).
    Answered(Option<Result<Lsn>>),
    Waiting(Arc<Completion>),
}

impl CommitFuture {
    pub(crate) fn waiting(completion: Arc<Completion>) -> CommitFuture {
        CommitFuture {
            state: FutureState::Waiting(completion),
            on_success: None,
        }
    }

    pub(crate) fn answered(answer: Result<Lsn>) -> CommitFuture {
        CommitFuture {
            state: FutureState::Answered(Some(answer)),
            on_success: None,
        }
    }

    /// Runs `f` when the future completes with a successful answer.
    pub(crate) fn on_success(mut self, f: impl FnOnce() + Send + 'static) -> CommitFuture {
        self.on_success = Some(Box::new(f));
        self
    }
}

impl Future for CommitFuture {
    type Output = Result<Lsn>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        let this = self.get_mut();
        let answer = match &mut this.state {
            FutureState::Answered(answer) => answer.take().unwrap_or(Err(Error::InvalidInput {
                what: "commit future",
                reason: "polled after it completed".into(),
            })),
            FutureState::Waiting(completion) => match completion.poll_take(cx) {
                Poll::Ready(answer) => {
                    this.state = FutureState::Answered(None);
                    answer
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        if answer.is_ok() {
            if let Some(f) = this.on_success.take() {
                f();
            }
        }
        Poll::Ready(answer)
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
