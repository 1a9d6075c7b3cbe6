//! LMDB's environment in a slot that closing empties through a shared reference, so a
//! closed database releases LMDB's file (and then its directory) while handles to it, or
//! to its engine, remain.

use std::cell::UnsafeCell;

use super::Env;
use crate::error::{Error, Result};

/// The environment until [`EnvSlot::close`].
pub(crate) struct EnvSlot {
    env: UnsafeCell<Option<Env>>,
}

// SAFETY: `Env` is `Send + Sync`. The cell is written once, by `close`, whose contract
// keeps every reader off it (see there); until then it is only read.
unsafe impl Sync for EnvSlot {}

impl EnvSlot {
    pub fn new(env: Env) -> EnvSlot {
        EnvSlot {
            env: UnsafeCell::new(Some(env)),
        }
    }

    /// The environment; `Error::Closed` once closed.
    pub fn get(&self) -> Result<&Env> {
        // SAFETY: only `close` writes the cell, and its contract orders every read before
        // it (none in flight) or after it (synchronized with it).
        unsafe { &*self.env.get() }.as_ref().ok_or(Error::Closed)
    }

    /// Closes the environment and waits until LMDB has closed it, so this process can open
    /// the directory again.
    ///
    /// # Safety
    /// No reference [`EnvSlot::get`] returned is alive (no LMDB transaction, no call on the
    /// environment), and every later `get` happens after this call (it synchronizes with
    /// it through a lock, a thread join or an atomic handshake).
    pub unsafe fn close(&self) {
        // SAFETY: the caller's contract: nothing reads the cell now.
        let env = unsafe { (*self.env.get()).take() };
        if let Some(env) = env {
            env.prepare_for_closing().wait();
        }
    }
}

impl std::fmt::Debug for EnvSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvSlot")
    }
}
