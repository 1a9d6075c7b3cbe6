//! Models of the commit pipeline: the real `Wal` (queue, flusher, completer, completions) on
//! the in-memory `SimFs`, driven by committer threads. Each model's invariant is written
//! above it; each has a broken variant that loom must catch.

#![cfg(walmdb_loom)]

use std::future::IntoFuture;
use std::path::Path;
use std::time::Duration;

use loom::sync::{Arc, Mutex};
use loom::thread;
use walmdb::{
    Durability, EncodedRecord, Error, FaultKind, FsRef, Lsn, Op, OpKind, Record, Sequencer, SimFs,
    TxnRecord, Wal, WalConfig,
};
use walmdb_loom_tests::{models, Bug};

const DIR: &str = "/wal";

/// Small, cheap to open; group commit with no gathering wait (loom has no time).
fn cfg() -> WalConfig {
    WalConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 1024,
        queue_capacity: 4,
        queue_max_bytes: 4096,
        durability: Durability::group_commit(),
        compress_threshold: None,
        prepare_segments: false,
        ..WalConfig::default()
    }
}

fn record(i: u8) -> EncodedRecord {
    Record::Txn(TxnRecord {
        commit_micros: 0,
        ops: vec![Op::Put {
            table: "t".into(),
            key: vec![i],
            value: b"v".to_vec(),
        }],
    })
    .encode()
}

/// Records the LSNs the flusher publishes, in order.
#[derive(Clone, Default)]
struct Published(Arc<Mutex<Vec<Lsn>>>);

impl Sequencer for Published {
    type Ticket = ();
    fn admit(&mut self, _: &mut (), _: Lsn) -> walmdb::Result<()> {
        Ok(())
    }
    fn publish(&mut self, lsn: Lsn, _: ()) {
        self.0.lock().unwrap().push(lsn);
    }
}

fn open(fs: &SimFs, cfg: WalConfig, seq: Published) -> Wal<Published> {
    let fs: FsRef = std::sync::Arc::new(fs.clone());
    Wal::open_with(fs, Path::new(DIR), cfg, None, seq).expect("open")
}

/// Two committers and the flusher. Every commit is answered exactly once, with its own LSN;
/// a commit is acknowledged only after the durable watermark has passed its LSN and after it
/// was published; the watermarks never go back and the durable one never passes the
/// written one; no wake-up of the idle flusher is lost (loom reports a deadlock if one is).
fn two_committers() {
    let fs = SimFs::new();
    let published = Published::default();
    let wal = Arc::new(open(&fs, cfg(), published.clone()));
    let committer = |wal: Arc<Wal<Published>>, published: Published, i: u8| {
        let lsn = wal
            .commit_with(record(i), (), None)
            .expect("a healthy log acknowledges");
        assert!(wal.durable_lsn() >= lsn, "acknowledged before durable");
        assert!(
            published.0.lock().unwrap().contains(&lsn),
            "acknowledged before published"
        );
        lsn
    };
    let other = {
        let (wal, published) = (wal.clone(), published.clone());
        thread::spawn(move || committer(wal, published, 2))
    };
    // The watermarks, read while the other committer may still be in flight; durable first,
    // so that `d <= w` must hold even if the flusher moves both in between.
    let watermarks = |wal: &Wal<Published>| {
        let d = wal.durable_lsn();
        (wal.written_lsn(), d)
    };
    let mine = committer(wal.clone(), published.clone(), 1);
    let (w1, d1) = watermarks(&wal);
    let theirs = other.join().unwrap();
    let (w2, d2) = watermarks(&wal);
    for (w, d) in [(w1, d1), (w2, d2)] {
        assert!(d <= w, "durable {d} passed written {w}");
    }
    assert!(d1 >= mine && w1 <= w2 && d1 <= d2, "a watermark went back");
    let mut lsns = [mine, theirs];
    lsns.sort();
    assert_eq!(lsns, [1, 2], "each commit has its own LSN, without gaps");
    assert_eq!(
        *published.0.lock().unwrap(),
        [1, 2],
        "published once each, in LSN order"
    );
    Arc::try_unwrap(wal)
        .ok()
        .expect("sole owner")
        .close()
        .unwrap();
}

/// Backpressure: with room for one request, a second committer is refused
/// (`Error::Backpressure`, when it may not wait) or waits for room (when it may), and no
/// request is ever dropped: each commit is acknowledged or refused, never lost
/// (`FlusherDied` would mean a dropped request).
fn full_queue_refusing() {
    full_queue(Duration::ZERO)
}

fn full_queue_waiting() {
    full_queue(Duration::from_secs(3600))
}

fn full_queue(wait: Duration) {
    {
        let fs = SimFs::new();
        let cfg = WalConfig {
            queue_capacity: 1,
            backpressure_wait: wait,
            ..cfg()
        };
        let wal = Arc::new(open(&fs, cfg, Published::default()));
        let commit = move |wal: &Wal<Published>, i: u8| match wal.commit_with(record(i), (), None) {
            Ok(lsn) => Some(lsn),
            Err(Error::Backpressure { .. }) => {
                assert!(wait.is_zero(), "refused although it could wait");
                None
            }
            Err(e) => panic!("commit {i}: {e:?}"),
        };
        let other = {
            let wal = wal.clone();
            thread::spawn(move || commit(&wal, 2))
        };
        let mine = commit(&wal, 1);
        let theirs = other.join().unwrap();
        let acked = [mine, theirs].into_iter().flatten().count() as u64;
        assert!(acked >= 1, "an empty queue refused a commit");
        assert_eq!(
            wal.written_lsn(),
            acked,
            "a refused commit was written, or an acknowledged one not"
        );
        Arc::try_unwrap(wal)
            .ok()
            .expect("sole owner")
            .close()
            .unwrap();
    }
}

/// A failed sync: every commit waiting on the group whose sync failed gets an error, none an
/// acknowledgement; every later commit gets `Poisoned`. (The log's first sync after open
/// fails once; a retry would succeed, which is what makes acknowledging after it wrong.)
fn failed_sync() {
    let fs = SimFs::new();
    let wal = Arc::new(open(&fs, cfg(), Published::default()));
    fs.fail_next(OpKind::SyncData, FaultKind::Eio);
    let commit = |wal: &Wal<Published>, i: u8| {
        let r = wal.commit_with(record(i), (), None);
        assert!(
            matches!(r, Err(Error::SyncFailed(_) | Error::Poisoned { .. })),
            "commit {i} after the failed sync: {r:?}"
        );
    };
    let other = {
        let wal = wal.clone();
        thread::spawn(move || commit(&wal, 2))
    };
    commit(&wal, 1);
    other.join().unwrap();
    let later = wal.commit_with(record(3), (), None);
    assert!(matches!(later, Err(Error::Poisoned { .. })), "{later:?}");
    assert!(wal.is_poisoned());
    drop(wal);
}

/// Shutdown while commits are in flight: a committer submits two commits and then waits
/// for both while the log closes. Every waiter is answered, with its LSN (queued before the
/// close) or with `Closed` (after it); none hangs and none gets `FlusherDied`; an
/// acknowledged commit is durable when the close returns, and only acknowledged ones were
/// written.
fn shutdown_in_flight() {
    let fs = SimFs::new();
    let wal = Arc::new(open(&fs, cfg(), Published::default()));
    let committer = {
        let wal = wal.clone();
        thread::spawn(move || {
            let handles: Vec<_> = (1..=2).map(|i| wal.submit(record(i), (), None)).collect();
            handles
                .into_iter()
                .map(|h| match h.and_then(|h| h.wait()) {
                    Ok(lsn) => Some(lsn),
                    Err(Error::Closed) => None,
                    Err(e) => panic!("commit during shutdown: {e:?}"),
                })
                .collect::<Vec<_>>()
        })
    };
    wal.close_shared().expect("close");
    let durable = wal.durable_lsn();
    let acked: Vec<Lsn> = committer.join().unwrap().into_iter().flatten().collect();
    for lsn in &acked {
        assert!(
            *lsn <= durable,
            "acknowledged {lsn} but durable {durable} at close"
        );
    }
    assert_eq!(wal.written_lsn(), acked.len() as u64);
    drop(wal);
}

/// An async committer: it awaits its commit's future (loom's executor parks it while the
/// future is pending) while the flusher answers. The answer is its LSN, and it is woken
/// for it: an answer that arrives between the future's check and the storing of its waker
/// would leave it parked forever, which loom reports as a deadlock.
fn async_committer() {
    let fs = SimFs::new();
    let published = Published::default();
    let wal = Arc::new(open(&fs, cfg(), published.clone()));
    let handle = wal.submit(record(1), (), None).expect("queued");
    let lsn = loom::future::block_on(handle.into_future()).expect("acknowledged");
    assert_eq!(lsn, 1);
    assert!(wal.durable_lsn() >= lsn, "answered before durable");
    assert_eq!(
        *published.0.lock().unwrap(),
        [1],
        "answered before published"
    );
    Arc::try_unwrap(wal)
        .ok()
        .expect("sole owner")
        .close()
        .unwrap();
}

/// Commits at `Durability::None` are written on their committers' threads while the
/// flusher is idle, racing each other, the flusher and a close: each is answered once with
/// its own LSN or `Closed`, published once and in LSN order, and every acknowledged one is
/// durable when the close returns (nothing is written after its final sync).
fn inline_at_none_and_close() {
    let fs = SimFs::new();
    let published = Published::default();
    let cfg = WalConfig {
        durability: Durability::None,
        ..cfg()
    };
    let wal = Arc::new(open(&fs, cfg, published.clone()));
    let commit = |wal: &Wal<Published>, i: u8| match wal.commit_with(record(i), (), None) {
        Ok(lsn) => Some(lsn),
        Err(Error::Closed) => None,
        Err(e) => panic!("commit {i}: {e:?}"),
    };
    let other = {
        let wal = wal.clone();
        thread::spawn(move || commit(&wal, 1))
    };
    let mine = commit(&wal, 2).expect("the log is open");
    wal.close_shared().expect("close");
    let durable = wal.durable_lsn();
    let mut acked: Vec<Lsn> = [Some(mine), other.join().unwrap()]
        .into_iter()
        .flatten()
        .collect();
    acked.sort();
    for lsn in &acked {
        assert!(
            *lsn <= durable,
            "acknowledged {lsn} but durable {durable} at close"
        );
    }
    let expected: Vec<Lsn> = (1..=acked.len() as Lsn).collect();
    assert_eq!(acked, expected, "each commit has its own LSN, without gaps");
    assert_eq!(
        *published.0.lock().unwrap(),
        expected,
        "published once each, in order"
    );
    assert_eq!(wal.written_lsn(), acked.len() as u64);
    drop(wal);
}

models! {
    async_committer => an_async_commit_is_woken_with_its_answer, Bug::WakerStoredAfterCheck,
        a_lost_commit_wakeup_is_caught, async_committer_with_the_bug;
    two_committers => two_committers_and_the_flusher, Bug::LostWakeup,
        a_lost_wakeup_is_caught, two_committers_with_the_bug;
    full_queue_refusing => a_full_queue_refuses_and_drops_nothing, Bug::DropWhenFull,
        a_dropped_request_is_caught, full_queue_refusing_with_the_bug;
    full_queue_waiting => a_full_queue_waits_and_drops_nothing, Bug::DropWhenFull,
        a_dropped_waiting_request_is_caught, full_queue_waiting_with_the_bug;
    failed_sync => a_failed_sync_fails_its_group_and_poisons, Bug::AckAfterFailedSync,
        an_acknowledgement_after_a_failed_sync_is_caught, failed_sync_with_the_bug;
    shutdown_in_flight => shutdown_answers_every_waiter, Bug::StopWhilePushing,
        a_flusher_that_stops_under_a_push_is_caught, shutdown_in_flight_with_the_bug;
    inline_at_none_and_close => commits_at_none_written_inline_race_close_safely,
        Bug::InlineWriteAfterClose, an_inline_write_after_close_is_caught,
        inline_at_none_and_close_with_the_bug;
}
