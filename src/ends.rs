//! What a table is known to hold nothing beyond, at each end: a read from an end (`first`,
//! `last`, the pops of a queue) starts past the keys deleted ahead of it instead of
//! stepping over each deletion, and the entry LMDB still holds for it until the applier
//! applies it (with the applier behind, as many as were popped since).
//!
//! Invariants:
//! - A known front `(key, since)` means every snapshot with visible LSN at or above `since`
//!   sees no key of the table below `key` (a known back: none above it).
//! - A walk teaches a bound ([`Ends::learn`]) when it started at the table's end (or at a
//!   known bound) and met its first key; it is kept only when no commit after the walk's
//!   snapshot put a key that may lie beyond that key: `recent` spans every commit that put
//!   into the table after `forgotten`, by the heads of its lowest and highest key.
//! - Publication notes a commit's puts ([`Ends::put`]) and a creation or drop
//!   ([`Ends::reset`]) before the commit is visible: a bound they cross is forgotten before
//!   any snapshot can see the key that crossed it.

use std::collections::VecDeque;

use crate::keys::head_of;
use crate::lsn::Lsn;

/// Commits that put into a table kept for checking what a walk learned; a walk whose
/// snapshot is older than all of them learns nothing.
const RECENT_PUTS: usize = 64;

/// An end of a table: a forward walk starts at its front, a reverse one at its back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Front,
    Back,
}

#[derive(Debug)]
struct Known {
    key: Box<[u8]>,
    since: Lsn,
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct Ends {
    front: Option<Known>,
    back: Option<Known>,
    /// `(lsn, lowest key's head, highest key's head)` of recent commits that put into the
    /// table (a creation or drop spans every key), ascending.
    recent: VecDeque<(Lsn, u64, u64)>,
    /// The newest LSN `recent` let go of: a commit at or below it is not there.
    forgotten: Lsn,
}

impl Ends {
    /// The key a walk from `end` by a snapshot at `visible` may start at: beyond it, on
    /// `end`'s side, that snapshot sees no key.
    pub fn known(&self, end: End, visible: Lsn) -> Option<&[u8]> {
        let known = self.side(end).as_ref()?;
        (visible >= known.since).then_some(&*known.key)
    }

    /// Notes a commit at `lsn` that put keys from `lowest` to `highest` into the table;
    /// bounds they cross are forgotten.
    pub fn put(&mut self, lsn: Lsn, lowest: &[u8], highest: &[u8]) {
        if self.front.as_ref().is_some_and(|k| lowest < &*k.key) {
            self.front = None;
        }
        if self.back.as_ref().is_some_and(|k| highest > &*k.key) {
            self.back = None;
        }
        self.remember(lsn, head_of(lowest), head_of(highest));
    }

    /// Notes the table created or dropped at `lsn`: nothing is known of it from then on.
    pub fn reset(&mut self, lsn: Lsn) {
        self.front = None;
        self.back = None;
        self.remember(lsn, 0, u64::MAX);
    }

    fn remember(&mut self, lsn: Lsn, lowest: u64, highest: u64) {
        if self.recent.len() == RECENT_PUTS {
            if let Some((oldest, ..)) = self.recent.pop_front() {
                self.forgotten = oldest;
            }
        }
        self.recent.push_back((lsn, lowest, highest));
    }

    /// Learns, from a walk from `end` whose snapshot at `visible` sees no key beyond
    /// `first` on that side, that the table holds none there while no later commit puts
    /// one: unless a commit after `visible` may have put one already. True if it learned.
    pub fn learn(&mut self, end: End, visible: Lsn, first: &[u8]) -> bool {
        // What a newer snapshot taught stays: it serves the snapshots begun now.
        if self.forgotten > visible || self.side(end).as_ref().is_some_and(|k| k.since > visible) {
            return false;
        }
        let head = head_of(first);
        // Heads order as the keys where they differ: an equal head may be either side.
        let crossed = self
            .recent
            .iter()
            .rev()
            .take_while(|(lsn, ..)| *lsn > visible)
            .any(|&(_, lowest, highest)| match end {
                End::Front => lowest <= head,
                End::Back => highest >= head,
            });
        if !crossed {
            *self.side_mut(end) = Some(Known {
                key: first.into(),
                since: visible,
            });
        }
        !crossed
    }

    fn side(&self, end: End) -> &Option<Known> {
        match end {
            End::Front => &self.front,
            End::Back => &self.back,
        }
    }

    fn side_mut(&mut self, end: End) -> &mut Option<Known> {
        match end {
            End::Front => &mut self.front,
            End::Back => &mut self.back,
        }
    }
}

#[cfg(all(test, not(walmdb_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_bound_holds_for_snapshots_from_its_own_until_a_put_crosses_it() {
        let mut ends = Ends::default();
        ends.learn(End::Front, 10, b"m");
        ends.learn(End::Back, 10, b"t");
        assert_eq!(ends.known(End::Front, 9), None, "an older snapshot");
        assert_eq!(ends.known(End::Front, 10), Some(&b"m"[..]));
        // Puts between the bounds cross neither.
        ends.put(11, b"n", b"s");
        assert_eq!(ends.known(End::Front, 12), Some(&b"m"[..]));
        assert_eq!(ends.known(End::Back, 12), Some(&b"t"[..]));
        ends.put(12, b"a", b"b");
        assert_eq!(ends.known(End::Front, 12), None);
        assert_eq!(ends.known(End::Back, 12), Some(&b"t"[..]));
        ends.put(13, b"z", b"z");
        assert_eq!(ends.known(End::Back, 13), None);
        ends.learn(End::Front, 13, b"a");
        ends.learn(End::Front, 12, b"0");
        assert_eq!(ends.known(End::Front, 13), Some(&b"a"[..]), "an older walk");
        ends.reset(14);
        assert_eq!(ends.known(End::Front, 14), None, "a drop forgets");
    }

    #[test]
    fn a_walk_learns_nothing_a_commit_after_its_snapshot_may_have_put_beyond() {
        let mut ends = Ends::default();
        ends.put(11, b"k", b"k");
        // The snapshot at 10 did not see "k".
        ends.learn(End::Front, 10, b"m");
        assert_eq!(ends.known(End::Front, 11), None);
        // Equal heads decide nothing: "k\0" and "k" share one.
        ends.learn(End::Front, 10, b"k\0");
        assert_eq!(ends.known(End::Front, 11), None);
        // Keys above the walk's first do not stop it.
        ends.learn(End::Front, 10, b"j");
        assert_eq!(ends.known(End::Front, 11), Some(&b"j"[..]));
        ends.learn(End::Back, 10, b"j");
        assert_eq!(ends.known(End::Back, 11), None);
        ends.learn(End::Back, 10, b"l");
        assert_eq!(ends.known(End::Back, 11), Some(&b"l"[..]));

        // Too old for what is remembered: the commit at 11 is let go of.
        let mut ends = Ends::default();
        for lsn in 11..12 + RECENT_PUTS as Lsn {
            ends.put(lsn, b"x", b"x");
        }
        ends.learn(End::Front, 10, b"a");
        assert_eq!(ends.known(End::Front, 100), None);
        ends.learn(End::Front, 11, b"a");
        assert_eq!(ends.known(End::Front, 100), Some(&b"a"[..]));
    }
}
