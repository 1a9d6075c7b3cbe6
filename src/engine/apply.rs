//! The applier (`walmdb-applier`, the only LMDB writer): applies published commits to LMDB
//! in LSN order, in large transactions with the applied LSN in the same transaction, grows
//! the map when full, and evicts overlay versions no snapshot needs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::sequencer::{TxnWrites, EARLY_LOGGED, EARLY_PENDING};
use super::{Engine, EngineState, Shutdown};
use crate::bytes::SharedBytes;
use crate::error::{Error, Result};
use crate::keys::HeadKey;
use crate::lsn::Lsn;
use crate::spill::SpilledWrites;
use crate::store::{ApplyOps, WriteOp};
use crate::sync::DataArc as Arc;
use crate::sync::Ordering;

#[derive(Debug, Default)]
pub(crate) struct ApplyQueue {
    /// Published commits with the time each was published.
    items: VecDeque<(Lsn, Arc<TxnWrites>, Instant)>,
    /// When the oldest commit of the batch being applied was published.
    applying_since: Option<Instant>,
    ops: usize,
    /// When the oldest queued item arrived.
    oldest_at: Option<Instant>,
    /// The applier sleeps until an item arrives.
    applier_waiting: bool,
    /// The applier gathers a batch; wake it when `ops` reaches this.
    wake_at_ops: Option<usize>,
    /// Someone waits for the applier: apply without gathering.
    urgent: bool,
    stop: Option<Shutdown>,
    /// Applied commits whose overlay versions are not evicted yet (snapshots may need
    /// them). Held here, not on the applier's stack, so a restarted applier evicts them.
    applied: VecDeque<(Lsn, Arc<TxnWrites>)>,
}

impl ApplyQueue {
    /// When the oldest commit not yet applied to LMDB was published.
    pub(crate) fn unapplied_since(&self) -> Option<Instant> {
        self.applying_since
            .or_else(|| self.items.front().map(|item| item.2))
    }
}

impl EngineState {
    /// Hands the published commit at `lsn` to the applier, waking it when it sleeps or its
    /// batch is full.
    pub(crate) fn enqueue_for_apply(&self, lsn: Lsn, writes: Arc<TxnWrites>) {
        let n = writes.op_count();
        let now = Instant::now();
        let mut q = self.apply.lock();
        if q.items.is_empty() {
            q.oldest_at = Some(now);
        }
        q.items.push_back((lsn, writes, now));
        q.ops += n;
        let full = q.wake_at_ops.is_some_and(|at| q.ops >= at);
        if q.applier_waiting || full {
            q.applier_waiting = false;
            q.wake_at_ops = None;
            self.apply_cv.notify_one();
        }
    }

    /// Marks a commit handed to the applier at admission as logged (its group is written
    /// and synced as its level says) and wakes the applier, which may now commit it.
    pub(crate) fn note_logged(&self, writes: &TxnWrites) {
        let _q = self.apply.lock();
        writes.early.store(EARLY_LOGGED, Ordering::Release);
        self.apply_cv.notify_all();
    }

    /// For the applier, holding an early hand-off applied in an uncommitted LMDB
    /// transaction: waits until its record is logged (true) or withdrawn, or the applier
    /// must stop without applying (false: LMDB must not take it).
    fn wait_logged(&self, writes: &TxnWrites) -> bool {
        let mut q = self.apply.lock();
        loop {
            match writes.early.load(Ordering::Acquire) {
                EARLY_LOGGED => return true,
                EARLY_PENDING if q.stop != Some(Shutdown::Abandon) && self.failure().is_none() => {
                    // A withdrawal (a dropped ticket) does not notify: re-checked every 5 ms.
                    q = self.apply_cv.wait_timeout(q, Duration::from_millis(5));
                }
                _ => return false,
            }
        }
    }

    /// Folds a batch that applied `cost` overlay bytes in `busy` (preparing it included) into
    /// the applier's measured rate: the rate commits are slowed down to under a backlog.
    fn note_apply_rate(&self, cost: usize, busy: Duration) {
        if cost == 0 || busy.is_zero() {
            return;
        }
        let sample = (cost as f64 / busy.as_secs_f64()) as u64;
        let old = self.apply_rate.load(Ordering::Relaxed);
        let rate = if old == 0 { sample } else { (old + sample) / 2 };
        self.apply_rate.store(rate, Ordering::Relaxed);
    }

    /// True when the applier will apply nothing more: the engine failed, or is stopping
    /// without applying what is queued.
    pub(crate) fn applier_gone(&self) -> bool {
        self.failure().is_some() || self.apply.lock().stop == Some(Shutdown::Abandon)
    }

    /// Asks the applier to apply what it has without gathering more.
    pub(crate) fn hurry_applier(&self) {
        // Crash tests that need the applier held back turn hurrying off.
        fail::fail_point!("applier-not-hurried", |_| {});
        let mut q = self.apply.lock();
        q.urgent = true;
        self.apply_cv.notify_all();
    }

    /// The applier's wait for work: sleeps while nothing is queued (`evicting`: at most
    /// 5 ms, to evict what it applied), gathers for `apply_interval` from the oldest item or
    /// up to `apply_max_ops` unless hurried, then moves a batch of at most `cap(pending
    /// operations)` operations into `batch`. Returns the stop asked for; on `Abandon` it
    /// takes nothing.
    pub(crate) fn take_batch(
        &self,
        evicting: bool,
        apply_max_ops: usize,
        apply_interval: Duration,
        cap: impl FnOnce(usize) -> usize,
        batch: &mut Vec<(Lsn, Arc<TxnWrites>, Instant)>,
    ) -> Option<Shutdown> {
        let mut q = self.apply.lock();
        while q.items.is_empty() && q.stop.is_none() {
            q.applier_waiting = true;
            let wait = if evicting { 5 } else { 200 };
            q = self.apply_cv.wait_timeout(q, Duration::from_millis(wait));
            q.applier_waiting = false;
            if evicting {
                break;
            }
        }
        // Gather for `apply_interval` from the oldest item, or up to `apply_max_ops`.
        while q.stop.is_none() && !q.urgent && q.ops < apply_max_ops {
            let Some(oldest) = q.oldest_at else { break };
            let Some(left) = apply_interval.checked_sub(oldest.elapsed()) else {
                break;
            };
            if left.is_zero() {
                break;
            }
            q.wake_at_ops = Some(apply_max_ops);
            q = self.apply_cv.wait_timeout(q, left);
            q.wake_at_ops = None;
        }
        if q.stop == Some(Shutdown::Abandon) {
            return q.stop;
        }
        let cap = cap(q.ops);
        let mut ops = 0;
        q.applying_since = q.items.front().map(|item| item.2);
        while let Some((_, w, _)) = q.items.front() {
            // A commit handed over at admission, or spilled, is a batch of its own.
            let alone = w.handed_early() || w.spilled.is_some();
            if !batch.is_empty() && (alone || ops + w.op_count() > cap) {
                break;
            }
            ops += w.op_count();
            batch.push(q.items.pop_front().expect("front exists"));
            if alone {
                break;
            }
        }
        q.ops -= ops;
        q.urgent = false;
        q.oldest_at = if q.items.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        q.stop
    }

    /// Tells the applier to stop (after applying what is durable, or at once).
    pub(crate) fn stop_applier(&self, how: Shutdown) {
        let mut q = self.apply.lock();
        q.stop = Some(how);
        self.apply_cv.notify_all();
    }
}

/// Puts a batch's key operations in (table, key) order, keeping LSN order per key (a stable
/// sort), and keeps only the last operation of each key, so LMDB writes its pages in order
/// and each key once: the same result, fewer page visits, and leaves laid out for scans. A
/// batch with a table create or drop keeps LSN order and every operation.
///
/// The sort moves 16-byte entries that carry each key's first 8 bytes and its table's rank,
/// so most comparisons read neither the operation nor the key's bytes.
pub(crate) fn key_order(ops: &mut Vec<(Lsn, &WriteOp)>) {
    if keeps_order(ops.iter().map(|(_, op)| *op)) {
        return;
    }
    let Ok(count) = u32::try_from(ops.len()) else {
        ops.sort_by(|a, b| (a.1.table(), a.1.key()).cmp(&(b.1.table(), b.1.key())));
        return dedup_sorted(ops);
    };
    // Tables by name: a batch names few, mostly one (its operations share its name's
    // allocation, compared first).
    let same = |a: &str, b: &str| std::ptr::eq(a, b) || a == b;
    let mut tables: Vec<&str> = Vec::new();
    for (_, op) in ops.iter() {
        let table: &str = op.table();
        if !tables.iter().any(|t| same(t, table)) {
            tables.push(table);
        }
    }
    tables.sort_unstable();
    let rank = |table: &str| tables.iter().position(|t| same(t, table)).unwrap_or(0) as u32;
    let key = |at: u32| ops[at as usize].1.key().unwrap_or_default();
    let mut order: Vec<SortEntry> = (0..count)
        .map(|at| SortEntry {
            head: crate::keys::head_of(key(at)),
            table: rank(ops[at as usize].1.table()),
            at,
        })
        .collect();
    // Stable: a key's operations stay in LSN order.
    order.sort_by(|a, b| {
        (a.table, a.head)
            .cmp(&(b.table, b.head))
            .then_with(|| key(a.at).cmp(key(b.at)))
    });
    // Of each run of one (table, key), the last: the heads tell most neighbours apart.
    let same_key = |a: &SortEntry, b: &SortEntry| {
        (a.table, a.head) == (b.table, b.head) && key(a.at) == key(b.at)
    };
    let kept: Vec<(Lsn, &WriteOp)> = order
        .iter()
        .enumerate()
        .filter(|&(i, e)| order.get(i + 1).is_none_or(|next| !same_key(e, next)))
        .map(|(_, e)| ops[e.at as usize])
        .collect();
    *ops = kept;
}

/// True when [`key_order`] leaves `ops` as they are: one has no key (a table create or
/// drop), or they are in order already, each key once (a bulk commit's, from its sorted
/// buffer: no sort entries the size of the batch beside it).
pub(crate) fn keeps_order<'a>(ops: impl Iterator<Item = &'a WriteOp> + Clone) -> bool {
    !ops.clone().all(|op| op.key().is_some())
        || ops.is_sorted_by(|a, b| (&**a.table(), a.key()) < (&**b.table(), b.key()))
}

/// One operation's place in [`key_order`]'s sort.
struct SortEntry {
    head: u64,
    table: u32,
    at: u32,
}

/// Keeps the last of each run of operations on one (table, key) of `ops`, sorted.
fn dedup_sorted(ops: &mut Vec<(Lsn, &WriteOp)>) {
    let mut kept = 0;
    for i in 0..ops.len() {
        let overwritten = ops.get(i + 1).is_some_and(|next| {
            (next.1.table(), next.1.key()) == (ops[i].1.table(), ops[i].1.key())
        });
        if !overwritten {
            ops[kept] = ops[i];
            kept += 1;
        }
    }
    ops.truncate(kept);
}

/// Applies `ops` through `last` in one LMDB transaction, growing the map when full. While
/// the map is at its maximum (or the disk is full) it waits and tries again, until `give_up`.
/// `None` when `logged` said no and nothing was committed.
pub(crate) fn apply_growing(
    engine: &Engine,
    ops: ApplyOps<'_>,
    last: Lsn,
    give_up: impl Fn() -> bool,
    logged: &dyn Fn() -> bool,
) -> Result<Option<crate::store::BatchApplied>> {
    use crate::store::ApplyError;
    let sh = &engine.state;
    let store = &engine.store;
    loop {
        let attempt = store
            .create_missing_tables(ops, &sh.catalog)
            .and_then(|()| store.apply(ops, last, &sh.catalog, logged));
        let full = match attempt {
            Ok(committed) => {
                sh.stats.map_full_since.store(0, Ordering::Relaxed);
                if sh.storage_full.swap(false, Ordering::AcqRel) {
                    tracing::info!("LMDB has space again; applying resumed");
                }
                return Ok(committed);
            }
            Err(ApplyError::MapFull) => match store.next_map_size() {
                Some(size) => {
                    if sh.stats.map_full_since.load(Ordering::Relaxed) == 0 {
                        let now = crate::sync::monotonic_micros().max(1);
                        sh.stats.map_full_since.store(now, Ordering::Relaxed);
                    }
                    if resize_map(engine, size, engine.cfg.resize_wait)? {
                        sh.stats.map_full_since.store(0, Ordering::Relaxed);
                        tracing::info!(map_size = size, "grew the LMDB map");
                    } else {
                        sh.stats
                            .map_resizes_postponed
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "map resize postponed: transactions, a backup's copy or a \
                             checkpoint's sync stayed open"
                        );
                    }
                    continue;
                }
                None => Error::StorageFull {
                    map_size: store.map_size.load(Ordering::Relaxed),
                },
            },
            Err(ApplyError::Other(Error::Io(e))) if is_disk_full(&e) => Error::Io(e),
            Err(ApplyError::Other(e)) => return Err(e),
        };
        if !sh.storage_full.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %full, "LMDB is full; commits are refused until space exists");
            sh.notify_room();
        }
        if give_up() {
            return Err(full);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Grows the map to `size`, waiting up to `wait` at each step; false when something stayed
/// open. First the transactions open now end (new ones go on), then a pause waits for the
/// younger ones only: a long reader postpones the resize but never holds every new reader
/// off.
fn resize_map(engine: &Engine, size: usize, wait: Duration) -> Result<bool> {
    let sh = &engine.state;
    let drained = sh
        .snapshots
        .wait_for_earlier(crate::clock::CoarseInstant::now(), wait);
    let paused = || sh.snapshots.pause(wait);
    if !(drained
        && engine
            .store
            .resize(size, wait, paused, || sh.snapshots.resume())?)
    {
        return Ok(false);
    }
    sh.stats.map_resizes.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}

/// How long a resize made ahead waits for open transactions (first for those open now to
/// end, then, new ones held off, for the rest): a reader open longer puts it off, at this
/// cost to the applier (and to new readers) at most once every [`GROW_AHEAD_EVERY`].
const GROW_AHEAD_WAIT: Duration = Duration::from_millis(5);
const GROW_AHEAD_EVERY: Duration = Duration::from_secs(1);

/// Grows the map once LMDB uses half of it, if no transaction stays open for
/// [`GROW_AHEAD_WAIT`]: LMDB cannot remap under open transactions, so a full map waits for
/// every one of them to end; growing early leaves a long reader that much room before it
/// can stall the applier. `last_try` rate-limits the attempts that a reader puts off.
fn grow_ahead(engine: &Engine, last_try: &mut Option<Instant>) -> Result<()> {
    let (sh, store) = (&engine.state, &engine.store);
    let size = store.map_size.load(Ordering::Relaxed) as u64;
    if store.env_figures().map_used_bytes.saturating_mul(2) < size
        || last_try.is_some_and(|t| t.elapsed() < GROW_AHEAD_EVERY)
    {
        return Ok(());
    }
    let Some(next) = store.next_map_size() else {
        return Ok(());
    };
    *last_try = Some(Instant::now());
    if resize_map(engine, next, GROW_AHEAD_WAIT.min(engine.cfg.resize_wait))? {
        sh.stats.map_resizes_ahead.fetch_add(1, Ordering::Relaxed);
        *last_try = None;
        tracing::debug!(map_size = next, "grew the LMDB map ahead of need");
    }
    Ok(())
}

/// The applier: applies published commits to LMDB in LSN order, in large transactions, and
/// evicts overlay versions no snapshot needs. Never applies what the log does not hold
/// durably (LMDB must never be ahead of the log).
pub(crate) fn applier_loop(engine: &Engine) {
    let sh = &engine.state;
    let mut backlog = Applied::take(sh);
    let backlog = &mut backlog.1;
    let mut grew_ahead_at = None;
    // The last batch appended nearly every put: gather fewer operations (see
    // `APPEND_BATCH_OPS`).
    let mut appending = false;
    loop {
        // Declared before the queue's lock is taken: unwinding drops the lock first.
        let mut batch = Taken(sh, Vec::new());
        let gather_ops = if appending {
            engine.cfg.apply_max_ops.min(APPEND_BATCH_OPS)
        } else {
            engine.cfg.apply_max_ops
        };
        let stop = sh.take_batch(
            !backlog.is_empty(),
            gather_ops,
            engine.cfg.apply_interval,
            |pending| batch_cap(engine, pending),
            &mut batch.1,
        );
        if stop == Some(Shutdown::Abandon) {
            return;
        }
        fail::fail_point!("applier-batch-taken");
        // A commit handed over at admission comes alone; it is committed to LMDB once
        // logged (`wait_logged`), so it waits for no sync here.
        let early = match batch.1.as_slice() {
            [(_, writes, _)] if writes.handed_early() => Some(writes.clone()),
            _ => None,
        };
        if let Some((last, _, _)) = batch.1.last() {
            let last = *last;
            let mut space_error_seen = false;
            while early.is_none() && engine.wal.durable_lsn() < last {
                match engine.wal.sync_through(last) {
                    Ok(_) => {}
                    // A full queue only delays the sync.
                    Err(Error::Backpressure { .. }) => std::thread::sleep(Duration::from_millis(1)),
                    // The log is closing: its flusher writes and syncs everything queued
                    // before it ends.
                    Err(Error::Closed)
                        if engine.wal.flusher_alive() || engine.wal.durable_lsn() >= last =>
                    {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    // The sync shared a group whose append failed for space (or whose new
                    // segment could not be made): that failed the group's commits only, and
                    // the log goes on. Try again until space exists (or the engine stops).
                    Err(e) if !engine.wal.is_poisoned() && !matches!(e, Error::Closed) => {
                        if !space_error_seen {
                            space_error_seen = true;
                            tracing::warn!(error = %e, "the log could not be synced for the applier; retrying");
                        }
                        if sh.apply.lock().stop.is_some() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        sh.fail(format!("the log could not be synced for the applier: {e}"));
                        return;
                    }
                }
            }
            let prepared = Instant::now();
            let batch_ops = batch.1.iter().flat_map(|(_, w, _)| &w.ops);
            let spilled = batch.1.iter().filter_map(|(_, w, _)| w.spilled.as_ref());
            // What the batch covers, before overwritten keys are dropped.
            let covered = batch_ops.clone().count()
                + spilled.clone().map(SpilledWrites::op_count).sum::<usize>();
            let covered_bytes: usize = batch_ops.clone().map(op_bytes).sum::<usize>()
                + spilled.clone().map(SpilledWrites::op_bytes).sum::<usize>();
            let covered_cost: usize = batch_ops.map(WriteOp::overlay_cost).sum::<usize>()
                + spilled.map(SpilledWrites::versions_cost).sum::<usize>();
            // One commit whose operations stay in their order (a bulk load's, above all) is
            // applied from them as they are, a spilled one (a batch of its own) from its
            // runs; a batch of several is listed and put in order.
            let listed: Vec<(Lsn, &WriteOp)>;
            let ops = match &batch.1[..] {
                [(lsn, w, _)] if w.spilled.is_some() => {
                    ApplyOps::Spilled(*lsn, w.spilled.as_ref().expect("spilled"))
                }
                [(lsn, w, _)] if keeps_order(w.ops.iter()) => ApplyOps::OneCommit(*lsn, &w.ops),
                commits => {
                    let mut all: Vec<(Lsn, &WriteOp)> = commits
                        .iter()
                        .flat_map(|(lsn, w, _)| w.ops.iter().map(move |op| (*lsn, op)))
                        .collect();
                    key_order(&mut all);
                    listed = all;
                    ApplyOps::Listed(&listed)
                }
            };
            let give_up = || sh.apply.lock().stop.is_some();
            let span = tracing::debug_span!(
                "walmdb.apply",
                first_lsn = batch.1.first().map_or(last, |b| b.0),
                last_lsn = last,
                ops = ops.len()
            );
            let _entered = span.enter();
            let started = Instant::now();
            let logged = || early.as_ref().is_none_or(|writes| sh.wait_logged(writes));
            match apply_growing(engine, ops, last, give_up, &logged) {
                Ok(Some(applied)) => appending = applied.appending(),
                // Withdrawn (its record never reached the log), or the applier stops
                // without applying: LMDB did not take it, and nothing waits for it. Also
                // when applying it failed: a withdrawn commit's new tables are forgotten,
                // even while they are being created, so it can meet a table without a handle.
                Ok(None) => {
                    batch.1.clear();
                    continue;
                }
                Err(e) if !logged() => {
                    tracing::debug!(error = %e, "a withdrawn commit failed to apply; dropped");
                    batch.1.clear();
                    continue;
                }
                Err(e) => {
                    // Giving up on a full store to stop is no failure; any other error is,
                    // and nothing here retries it: the engine refuses commits until reopened.
                    let full = match &e {
                        Error::StorageFull { .. } => true,
                        Error::Io(io) => is_disk_full(io),
                        _ => false,
                    };
                    if !full {
                        sh.fail(format!("applying to LMDB failed: {e}"));
                    }
                    return;
                }
            }
            if let Err(e) = grow_ahead(engine, &mut grew_ahead_at) {
                // The next batch grows it when full, or fails the engine as that fails.
                tracing::warn!(error = %e, "growing the LMDB map ahead of need failed");
            }
            fail::fail_point!("applied-in-lmdb-before-published");
            // Before `applied_lsn`: whoever waits for it sees the catch-up's end too.
            sh.catch_up.applied(last);
            sh.applied_lsn.store(last, Ordering::Release);
            if batch.1.iter().any(|(_, writes, _)| writes.through) {
                // The flusher waits for it to publish it (`publish_through`).
                sh.notify_room();
            }
            let took = started.elapsed();
            sh.apply.lock().applying_since = None;
            let st = &sh.stats;
            st.apply_batches.fetch_add(1, Ordering::Relaxed);
            st.applied_ops.fetch_add(covered as u64, Ordering::Relaxed);
            st.apply_latency.record_duration(took);
            st.apply_micros
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            st.applied_op_bytes
                .fetch_add(covered_bytes as u64, Ordering::Relaxed);
            sh.note_apply_rate(covered_cost, prepared.elapsed());
            drop(_entered);
            let applied = std::mem::take(&mut batch.1);
            backlog.extend(applied.into_iter().map(|(lsn, writes, _)| (lsn, writes)));
        }
        evict_applied(sh, backlog);
        if stop == Some(Shutdown::Drain) && sh.apply.lock().items.is_empty() {
            return;
        }
    }
}

/// The applier's applied-but-not-evicted commits, taken from the queue's state while it
/// runs and given back however it ends (a panic included), for a restarted applier.
struct Applied<'a>(&'a EngineState, VecDeque<(Lsn, Arc<TxnWrites>)>);

impl<'a> Applied<'a> {
    fn take(sh: &'a EngineState) -> Self {
        Applied(sh, std::mem::take(&mut sh.apply.lock().applied))
    }
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        let mut q = self.0.apply.lock();
        let newer = std::mem::replace(&mut q.applied, std::mem::take(&mut self.1));
        q.applied.extend(newer);
    }
}

/// A batch taken from the queue. What was not applied when it is dropped (the applier
/// stopped, failed or panicked) goes back to the queue's front, in order.
struct Taken<'a>(&'a EngineState, Vec<(Lsn, Arc<TxnWrites>, Instant)>);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.1.is_empty() {
            return;
        }
        let mut q = self.0.apply.lock();
        for item in self.1.drain(..).rev() {
            q.ops += item.1.op_count();
            q.items.push_front(item);
        }
        q.oldest_at = Some(
            q.oldest_at
                .map_or_else(Instant::now, |t| t.min(Instant::now())),
        );
        q.applying_since = None;
    }
}

/// Operations the applier gathers at most after a batch that appended nearly every put:
/// such a batch writes only its table's last pages, so a small one costs LMDB little more a
/// key than a large one, while a smaller overlay keeps the flusher's and the applier's
/// indexes in cache (docs/design.md, "The applier").
const APPEND_BATCH_OPS: usize = 8_192;

/// How many times `apply_max_ops` one batch may take when more than that is pending.
const BACKLOG_BATCH_FACTOR: usize = 4;

/// The most operations the next batch takes, with `pending` queued: `apply_max_ops`, or, when
/// more than that is pending, [`BACKLOG_BATCH_FACTOR`] times it: a sorted batch writes each
/// leaf page it touches once, so bigger batches write fewer pages per key and the applier
/// catches up faster (`docs/design.md`). Not while the map is at its maximum, where a
/// smaller transaction may fit when a bigger one does not.
pub(crate) fn batch_cap(engine: &Engine, pending: usize) -> usize {
    let base = engine.cfg.apply_max_ops;
    if pending > base && engine.store.next_map_size().is_some() {
        base.saturating_mul(BACKLOG_BATCH_FACTOR)
    } else {
        base
    }
}

/// Evicts from the overlay the versions of applied commits no snapshot needs.
pub(crate) fn evict_applied(sh: &EngineState, backlog: &mut VecDeque<(Lsn, Arc<TxnWrites>)>) {
    if backlog.is_empty() {
        return;
    }
    let applied = sh.applied_lsn.load(Ordering::Acquire);
    let horizon = if crate::sync::bug(crate::sync::Bug::EvictIgnoringSnapshots) {
        applied
    } else {
        sh.snapshots.eviction_horizon(applied)
    };
    let mut freed = (0, 0);
    let mut evicted = Vec::new();
    while backlog.front().is_some_and(|(lsn, _)| *lsn <= horizon) {
        let (_, writes) = backlog.pop_front().expect("front exists");
        // A commit that went through was never in the overlay.
        if !writes.through {
            evicted.push(writes);
        }
    }
    // Tables whose whole overlay was at or below the horizon, emptied at once (a settled
    // backlog: no lookup a key), and tables that held newer versions, evicted key by key:
    // each key once, in key order (the ordered index's nodes stay in cache), under one lock.
    let mut emptied: Vec<Arc<str>> = Vec::new();
    let mut newer: Vec<(Arc<str>, Vec<&SharedBytes>)> = Vec::new();
    for writes in &evicted {
        let mut ops = writes.ops.iter().peekable();
        while let Some(first) = ops.next() {
            let name = first.table();
            let mut keys: Vec<&SharedBytes> = first.shared_key().into_iter().collect();
            while let Some(op) = ops.next_if(|op| op.table() == name) {
                keys.extend(op.shared_key());
            }
            if emptied.contains(name) {
                continue;
            }
            if let Some((_, held)) = newer.iter_mut().find(|(t, _)| t == name) {
                held.append(&mut keys);
                continue;
            }
            let Some(table) = sh.catalog.get(name) else {
                continue;
            };
            match table.evict_all(horizon) {
                Some((bytes, versions)) => {
                    freed.0 += bytes;
                    freed.1 += versions;
                    emptied.push(name.clone());
                }
                None => newer.push((name.clone(), keys)),
            }
        }
    }
    for (name, keys) in newer {
        let Some(table) = sh.catalog.get(&name) else {
            continue;
        };
        // Headed (a count each, taken before the table's lock), in key order: the ordered
        // index's search compares inline heads, and its nodes stay in cache key to key.
        let mut keys: Vec<HeadKey> = keys.into_iter().cloned().map(HeadKey::shared).collect();
        keys.sort_unstable();
        keys.dedup_by(|a, b| a.bytes() == b.bytes());
        let (bytes, versions) = table.evict(&keys, horizon);
        drop(keys);
        freed.0 += bytes;
        freed.1 += versions;
    }
    if freed.1 > 0 {
        sh.stats
            .overlay_versions
            .fetch_sub(freed.1 as u64, Ordering::Relaxed);
    }
    if freed.0 > 0 {
        sh.overlay_bytes.fetch_sub(freed.0, Ordering::Relaxed);
        sh.notify_room();
    }
}

/// Key and value bytes of an operation.
fn op_bytes(op: &WriteOp) -> usize {
    match op {
        WriteOp::Put { key, value, .. } => key.len() + value.len(),
        WriteOp::Delete { key, .. } => key.len(),
        WriteOp::CreateTable { table } | WriteOp::DropTable { table } => table.len(),
    }
}

/// `ENOSPC`: the disk is full, which may pass.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::SharedBytes;
    use crate::wal::log::record::OpRef;

    /// The sort by inline heads and table ranks orders as the plain stable sort by
    /// (table name, key) does, and keeps the same operation of each key: keys that share
    /// their first 8 bytes, are prefixes of others or are shorter than 8 bytes, and tables
    /// named by different allocations of one name.
    #[test]
    fn key_order_sorts_as_the_plain_sort_by_table_and_key_and_keeps_each_keys_last() {
        let names: Vec<Arc<str>> = vec![Arc::from("b"), Arc::from("a"), Arc::from("b")];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            let count = 1 + (next() % 300) as usize;
            let ops: Vec<WriteOp> = (0..count)
                .map(|_| {
                    let len = (next() % 12) as usize;
                    let key: Vec<u8> = (0..len)
                        .map(|_| [0u8, 1, 0xff][(next() % 3) as usize])
                        .collect();
                    let table = names[(next() % 3) as usize].clone();
                    let key = SharedBytes::copy_of(&key);
                    if next() % 4 == 0 {
                        WriteOp::Delete { table, key }
                    } else {
                        let value = SharedBytes::copy_of(&next().to_le_bytes());
                        WriteOp::Put { table, key, value }
                    }
                })
                .collect();
            let batch: Vec<(Lsn, &WriteOp)> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| (i as Lsn + 1, op))
                .collect();
            let mut expected = batch.clone();
            expected.sort_by(|a, b| (a.1.table(), a.1.key()).cmp(&(b.1.table(), b.1.key())));
            dedup_sorted(&mut expected);
            let mut sorted = batch;
            key_order(&mut sorted);
            let lsns =
                |ops: &[(Lsn, &WriteOp)]| ops.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>();
            assert_eq!(lsns(&sorted), lsns(&expected), "round {round}");
        }
        // In order already: left as it is, unless a key comes twice (its last kept).
        let delete = |key: &[u8]| WriteOp::Delete {
            table: names[1].clone(),
            key: SharedBytes::copy_of(key),
        };
        let ops = [delete(b"a"), delete(b"b"), delete(b"b"), delete(b"c")];
        let mut in_order: Vec<(Lsn, &WriteOp)> = vec![(1, &ops[0]), (2, &ops[1]), (4, &ops[3])];
        key_order(&mut in_order);
        assert_eq!(in_order.iter().map(|o| o.0).collect::<Vec<_>>(), [1, 2, 4]);
        let mut twice: Vec<(Lsn, &WriteOp)> = (0..4).map(|i| (i as Lsn + 1, &ops[i])).collect();
        key_order(&mut twice);
        assert_eq!(twice.iter().map(|o| o.0).collect::<Vec<_>>(), [1, 3, 4]);
    }

    /// A one-commit batch the applier applies from the commit's operations as they are
    /// (`keeps_order`) is the list `key_order` would have applied: in key order, a key
    /// twice, out of order, or with a table's creation among them.
    #[test]
    fn a_commit_applied_as_it_is_is_what_its_sorted_list_would_apply() {
        let table: Arc<str> = Arc::from("t");
        let put = |key: &[u8]| WriteOp::Put {
            table: table.clone(),
            key: SharedBytes::copy_of(key),
            value: SharedBytes::copy_of(b"v"),
        };
        let commits: [(Vec<WriteOp>, bool); 4] = [
            (vec![put(b"a"), put(b"b"), put(b"c")], true),
            (vec![put(b"a"), put(b"b"), put(b"b")], false),
            (vec![put(b"b"), put(b"a")], false),
            (
                vec![
                    WriteOp::CreateTable {
                        table: table.clone(),
                    },
                    put(b"b"),
                    put(b"a"),
                ],
                true,
            ),
        ];
        for (ops, kept) in &commits {
            assert_eq!(keeps_order(ops.iter()), *kept);
            let mut as_it_is = Vec::new();
            ApplyOps::OneCommit(7, ops)
                .try_for_each(|lsn, op| {
                    let key = match op {
                        OpRef::Put { key, .. } | OpRef::Delete { key, .. } => Some(key.to_vec()),
                        OpRef::CreateTable { .. } | OpRef::DropTable { .. } => None,
                    };
                    as_it_is.push((lsn, key));
                    Ok::<(), std::io::Error>(())
                })
                .unwrap();
            let mut listed: Vec<(Lsn, &WriteOp)> = ops.iter().map(|op| (7, op)).collect();
            key_order(&mut listed);
            let listed: Vec<_> = (listed.iter())
                .map(|(lsn, op)| (*lsn, op.key().map(<[u8]>::to_vec)))
                .collect();
            assert_eq!(as_it_is == listed, *kept);
            assert_eq!(ApplyOps::OneCommit(7, ops).len(), ops.len());
        }
    }
}
