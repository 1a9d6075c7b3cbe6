//! The commit pipeline: durability levels (syncs counted through the I/O trait), group
//! commit, backpressure, poisoning, flusher death, close, and the sequencer hook.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walmdb::{
    Durability, Error, FaultKind, FsRef, NoSequencer, Op, OpKind, Record, Sequencer, SimFs,
    TxnRecord, Wal, WalConfig,
};

fn put(i: u64) -> walmdb::EncodedRecord {
    Record::Txn(TxnRecord {
        commit_micros: i,
        ops: vec![Op::Put {
            table: "t".into(),
            key: i.to_be_bytes().to_vec(),
            value: vec![7; 100],
        }],
    })
    .encode()
}

fn small_cfg() -> WalConfig {
    WalConfig {
        segment_bytes: 256 * 1024,
        max_record_bytes: 64 * 1024,
        queue_max_bytes: 1 << 20,
        group_max_bytes: 64 * 1024,
        // Syncs are counted: no background spare preparation.
        prepare_segments: false,
        ..WalConfig::default()
    }
}

const DIR: &str = "/db/wal";

fn open_sim(fs: &SimFs, cfg: WalConfig) -> Wal {
    let fsref: FsRef = Arc::new(fs.clone());
    Wal::open_with(fsref, Path::new(DIR), cfg, None, NoSequencer).expect("open")
}

fn read_all(wal: &Wal) -> Vec<u64> {
    wal.read_from(1)
        .map(|r| r.expect("read").lsn)
        .collect::<Vec<_>>()
}

#[test]
fn none_durability_never_syncs_until_asked() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, small_cfg());
    let before = fs.count(OpKind::SyncData);
    for i in 0..20 {
        wal.commit_with(put(i), (), Some(Durability::None)).unwrap();
    }
    assert_eq!(fs.count(OpKind::SyncData), before, "None must not sync");
    assert_eq!(wal.written_lsn(), 20);
    assert!(wal.durable_lsn() < 20);
    assert_eq!(wal.sync().unwrap(), 20);
    assert_eq!(fs.count(OpKind::SyncData), before + 1);
    assert_eq!(wal.durable_lsn(), 20);
}

#[test]
fn every_write_syncs_once_per_commit() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, small_cfg());
    let before = fs.count(OpKind::SyncData);
    for i in 0..15 {
        let lsn = wal
            .commit_with(put(i), (), Some(Durability::EveryWrite))
            .unwrap();
        assert_eq!(wal.durable_lsn(), lsn, "acknowledged before its sync");
    }
    assert_eq!(fs.count(OpKind::SyncData), before + 15);
    assert_eq!(wal.stats().groups, 15);
}

#[test]
fn group_commit_acknowledges_only_durable_records() {
    let fs = SimFs::new();
    let wal = Arc::new(open_sim(&fs, small_cfg()));
    let before = fs.count(OpKind::SyncData);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut lsns = Vec::new();
                for i in 0..50 {
                    let lsn = wal.commit(put(t * 1000 + i)).unwrap();
                    assert!(wal.durable_lsn() >= lsn, "ack before the sync covering it");
                    lsns.push(lsn);
                }
                lsns
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<_>>(), "every LSN exactly once");
    let syncs = fs.count(OpKind::SyncData) - before;
    assert!(syncs <= 400, "at most one sync per commit, got {syncs}");
    let stats = wal.stats();
    assert_eq!(stats.commits, 400);
    assert!(stats.groups <= 400);
    assert_eq!(read_all(&wal), (1..=400).collect::<Vec<_>>());
}

#[test]
fn interval_durability_returns_before_sync_and_syncs_in_background() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, small_cfg());
    let before = fs.count(OpKind::SyncData);
    let lsn = wal
        .commit_with(
            put(1),
            (),
            Some(Durability::Interval(Duration::from_millis(20))),
        )
        .unwrap();
    assert_eq!(lsn, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.durable_lsn() < lsn {
        assert!(
            Instant::now() < deadline,
            "background interval sync never came"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(fs.count(OpKind::SyncData) > before);
}

#[test]
fn wait_durable_syncs_a_fast_commit() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, small_cfg());
    let lsn = wal.commit_with(put(1), (), Some(Durability::None)).unwrap();
    assert!(wal.durable_lsn() < lsn);
    wal.wait_durable(lsn).unwrap();
    assert!(wal.durable_lsn() >= lsn);
    assert!(
        matches!(wal.wait_durable(lsn + 10), Err(Error::LsnNotWritten { .. })),
        "an unwritten LSN cannot become durable"
    );
}

/// A sequencer that blocks the flusher until released, and rejects odd tickets.
struct Gate {
    open: Arc<AtomicBool>,
    entered: Arc<AtomicBool>,
    published: Arc<parking_lot::Mutex<Vec<u64>>>,
}

/// Opens the gate when dropped, so a failing test cannot leave the flusher blocked.
struct OpenOnDrop(Arc<AtomicBool>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Sequencer for Gate {
    type Ticket = u64;
    fn admit(&mut self, ticket: &mut u64, _lsn: u64) -> walmdb::Result<()> {
        self.entered.store(true, Ordering::SeqCst);
        while !self.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if *ticket == u64::MAX {
            panic!("ticket of death");
        }
        if *ticket % 2 == 1 {
            return Err(Error::InvalidConfig(format!("odd ticket {ticket}")));
        }
        Ok(())
    }
    fn publish(&mut self, lsn: u64, _ticket: u64) {
        self.published.lock().push(lsn);
    }
}

type Gated = (
    Wal<Gate>,
    Arc<AtomicBool>,
    Arc<AtomicBool>,
    Arc<parking_lot::Mutex<Vec<u64>>>,
);

fn open_gated(fs: &SimFs, cfg: WalConfig, open: bool) -> Gated {
    let gate = Arc::new(AtomicBool::new(open));
    let entered = Arc::new(AtomicBool::new(false));
    let published = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let fsref: FsRef = Arc::new(fs.clone());
    let wal = Wal::open_with(
        fsref,
        Path::new(DIR),
        cfg,
        None,
        Gate {
            open: gate.clone(),
            entered: entered.clone(),
            published: published.clone(),
        },
    )
    .unwrap();
    (wal, gate, entered, published)
}

#[test]
fn sequencer_rejects_alone_and_publishes_in_lsn_order() {
    let fs = SimFs::new();
    let (wal, _gate, _, published) = open_gated(&fs, small_cfg(), true);
    let mut accepted = Vec::new();
    for t in 0..10u64 {
        match wal.commit_with(put(t), t, None) {
            Ok(lsn) => accepted.push(lsn),
            Err(Error::InvalidConfig(msg)) => assert!(msg.contains("odd")),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(
        accepted,
        vec![1, 2, 3, 4, 5],
        "rejected commits take no LSN"
    );
    assert_eq!(*published.lock(), accepted);
}

#[test]
fn full_queue_refuses_with_backpressure_and_loses_nothing() {
    let fs = SimFs::new();
    let cfg = WalConfig {
        queue_capacity: 4,
        backpressure_wait: Duration::ZERO,
        ..small_cfg()
    };
    let (wal, gate, entered, _) = open_gated(&fs, cfg, false);
    let _release = OpenOnDrop(gate.clone());
    // The flusher takes the first commit and blocks in admit; four more fill the queue.
    let mut handles = vec![wal.submit(put(0), 0, None).unwrap()];
    while !entered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut refused = 0;
    for t in 1..20u64 {
        match wal.submit(put(t), t * 2, None) {
            Ok(h) => handles.push(h),
            Err(Error::Backpressure { queued_commits, .. }) => {
                assert!(queued_commits <= 4);
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(handles.len(), 5, "one in the flusher, four queued");
    assert_eq!(refused, 15, "a full queue refuses at once");
    gate.store(true, Ordering::SeqCst);
    let lsns: Vec<u64> = handles.into_iter().map(|h| h.wait().unwrap()).collect();
    assert_eq!(lsns, (1..=lsns.len() as u64).collect::<Vec<_>>());
}

#[test]
fn full_queue_waits_for_space_when_configured() {
    let fs = SimFs::new();
    let cfg = WalConfig {
        queue_capacity: 2,
        backpressure_wait: Duration::from_secs(30),
        ..small_cfg()
    };
    let (wal, gate, _, _) = open_gated(&fs, cfg, false);
    let _release = OpenOnDrop(gate.clone());
    let wal = Arc::new(wal);
    let pusher = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            (0..10u64)
                .map(|t| wal.submit(put(t), t * 2, None).unwrap())
                .collect::<Vec<_>>()
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    gate.store(true, Ordering::SeqCst);
    let handles = pusher.join().unwrap();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait().unwrap(), i as u64 + 1);
    }
}

#[test]
fn sync_failure_poisons_fails_the_group_and_heals_on_reopen() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, small_cfg());
    let acked: Vec<u64> = (0..5).map(|i| wal.commit(put(i)).unwrap()).collect();
    fs.fail_next(OpKind::SyncData, FaultKind::Eio);
    match wal.commit(put(99)) {
        Err(Error::SyncFailed(_)) => {}
        other => panic!("expected SyncFailed, got {other:?}"),
    }
    assert!(wal.is_poisoned());
    match wal.commit(put(100)) {
        Err(e @ Error::Poisoned { .. }) => assert!(e.is_poisoned()),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    // Reads keep working.
    assert!(read_all(&wal).starts_with(&acked));
    // close() cannot promise durability on a poisoned log, and says so.
    assert!(matches!(wal.close(), Err(Error::Poisoned { .. })));
    let wal = open_sim(&fs, small_cfg());
    let lsns = read_all(&wal);
    assert!(lsns.starts_with(&acked), "acknowledged commits survive");
    let next = wal.commit(put(7)).unwrap();
    assert_eq!(next, *lsns.last().unwrap() + 1);
}

#[test]
fn write_error_poisons() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, small_cfg());
    wal.commit(put(0)).unwrap();
    fs.fail_next(OpKind::Write, FaultKind::Eio);
    assert!(matches!(wal.commit(put(1)), Err(Error::SyncFailed(_))));
    assert!(matches!(wal.commit(put(2)), Err(Error::Poisoned { .. })));
}

#[test]
fn enospc_on_write_fails_the_group_without_poisoning() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, small_cfg());
    assert_eq!(wal.commit(put(0)).unwrap(), 1);
    fs.fail_next(OpKind::Write, FaultKind::Enospc);
    assert!(matches!(wal.commit(put(1)), Err(Error::DiskFull(_))));
    assert!(!wal.is_poisoned());
    assert_eq!(
        wal.commit(put(2)).unwrap(),
        2,
        "the failed commit took no LSN"
    );
    drop(wal);
    let wal = open_sim(&fs, small_cfg());
    assert_eq!(read_all(&wal), vec![1, 2]);
}

#[test]
fn enospc_on_rotation_fails_the_group_and_recovers_when_space_frees() {
    let fs = SimFs::new();
    let cfg = WalConfig {
        segment_bytes: 64 * 1024,
        max_record_bytes: 8 * 1024,
        ..small_cfg()
    };
    let wal = open_sim(&fs, cfg.clone());
    fs.set_capacity(Some(64 * 1024 + 1024));
    let mut acked = Vec::new();
    let mut full = false;
    for i in 0..2000 {
        match wal.commit(put(i)) {
            Ok(lsn) => acked.push(lsn),
            Err(Error::DiskFull(_)) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(full, "the second segment cannot be allocated");
    assert!(!wal.is_poisoned());
    fs.set_capacity(None);
    let lsn = wal.commit(put(5000)).unwrap();
    assert_eq!(lsn, acked.len() as u64 + 1);
    acked.push(lsn);
    drop(wal);
    let wal = open_sim(&fs, cfg);
    assert_eq!(read_all(&wal), acked);
    assert!(wal.segments().len() >= 2);
}

/// A panic on the flusher answers its group's commit with `FlusherDied` and the flusher
/// resumes at the log's settled tail (the LSN goes to the next commit); after three
/// restarts the next panic ends it, and every later commit gets `FlusherDied`.
#[test]
fn a_flusher_panic_fails_its_group_and_the_flusher_resumes_until_it_has_restarted_three_times() {
    let fs = SimFs::new();
    let (wal, _gate, _, _) = open_gated(&fs, small_cfg(), true);
    assert_eq!(wal.commit_with(put(0), 0, None).unwrap(), 1);
    for restart in 1..=4 {
        match wal.commit_with(put(1), u64::MAX, None) {
            Err(Error::FlusherDied(_)) => {}
            other => panic!("restart {restart}: expected FlusherDied, got {other:?}"),
        }
        if restart <= 3 {
            // Answered as the flusher unwound: the restart may still be under way.
            assert_eq!(wal.commit_with(put(2), 2, None).unwrap(), restart + 1);
        }
    }
    for t in 0..3 {
        assert!(matches!(
            wal.commit_with(put(t), 2, None),
            Err(Error::FlusherDied(_))
        ));
    }
    assert!(matches!(wal.close(), Err(Error::FlusherDied(_))));
    let wal = open_sim(&fs, small_cfg());
    assert_eq!(read_all(&wal), vec![1, 2, 3, 4]);
}

#[test]
fn close_answers_queued_commits_and_syncs_them() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, small_cfg());
    let handles: Vec<_> = (0..100)
        .map(|i| wal.submit(put(i), (), Some(Durability::None)).unwrap())
        .collect();
    wal.close().unwrap();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait().unwrap(), i as u64 + 1);
    }
    // Everything closed is durable: a power loss right after close loses nothing.
    let after = fs.crash(7, Default::default());
    let wal = open_sim(&after, small_cfg());
    assert_eq!(read_all(&wal), (1..=100).collect::<Vec<_>>());
}

#[test]
fn oversized_record_is_a_typed_error() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, small_cfg());
    // A transaction this large is written in pieces (tests/split_txn.rs); other records are
    // refused.
    let big = walmdb::EncodedRecord::raw(walmdb::RecordType::Vote, vec![0; 65 * 1024]);
    assert!(matches!(wal.commit(big), Err(Error::RecordTooLarge { .. })));
    assert_eq!(wal.commit(put(1)).unwrap(), 1);
}

#[test]
fn compressed_groups_round_trip() {
    let fs = SimFs::new();
    let cfg = WalConfig {
        compress_threshold: Some(512),
        ..small_cfg()
    };
    let wal = open_sim(&fs, cfg.clone());
    let lsns: Vec<u64> = (0..50).map(|i| wal.commit(put(i)).unwrap()).collect();
    // One group of all 250: the first request holds the group open until the rest arrive
    // (submitting them takes far less than the wait), so compression does not hang on timing.
    let gather = Durability::GroupCommit {
        max_wait: std::time::Duration::from_secs(5),
        max_batch: 250,
    };
    let handles: Vec<_> = (50..300)
        .map(|i| wal.submit(put(i), (), Some(gather)).unwrap())
        .collect();
    for h in handles {
        h.wait().unwrap();
    }
    let stats = wal.stats();
    assert!(
        stats.bytes_written < stats.record_bytes,
        "groups of similar records compress"
    );
    drop(wal);
    let wal = open_sim(&fs, cfg);
    let back: Vec<_> = wal.read_from(1).map(|r| r.unwrap()).collect();
    assert_eq!(back.len(), 300);
    assert_eq!(back[0].record, put(0));
    assert_eq!(back[299].record, put(299));
    assert_eq!(&back[..50].iter().map(|r| r.lsn).collect::<Vec<_>>(), &lsns);
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn rotation_uses_the_prepared_spare_and_a_new_one_is_prepared() {
    let fs = SimFs::new();
    let cfg = WalConfig {
        segment_bytes: 64 * 1024,
        max_record_bytes: 8 * 1024,
        prepare_segments: true,
        ..small_cfg()
    };
    let spares = |fs: &SimFs| -> Vec<String> {
        fs.file_names(Path::new(DIR))
            .into_iter()
            .filter(|n| n.starts_with("spare-t"))
            .collect()
    };
    let wal = open_sim(&fs, cfg.clone());
    wait_for("the first spare", || spares(&fs).len() == 1);
    let first = spares(&fs);
    let mut n = 0;
    while wal.segments().len() < 2 {
        wal.commit_with(put(n), (), Some(Durability::None)).unwrap();
        n += 1;
    }
    assert!(
        !spares(&fs).contains(&first[0]),
        "the rotation took the prepared spare"
    );
    wait_for("a replacement spare", || spares(&fs).len() == 1);
    wal.close().unwrap();
    let wal = open_sim(
        &fs,
        WalConfig {
            prepare_segments: false,
            ..cfg
        },
    );
    assert_eq!(read_all(&wal), (1..=n).collect::<Vec<_>>());
}

/// A gated log with a 64 KiB queue whose flusher is blocked admitting commit 1 while commit
/// 2 stays queued, and a 200 KiB transaction (over the queue's bytes) submitted on its own
/// thread and waiting for the queue to empty.
struct LargeCommitWaiting {
    wal: Arc<Wal<Gate>>,
    gate: Arc<AtomicBool>,
    _release: OpenOnDrop,
    first: walmdb::CommitHandle,
    queued: walmdb::CommitHandle,
    /// The large commit's answer: its LSN, or the refusal of its submission.
    big: std::thread::JoinHandle<walmdb::Result<u64>>,
    /// `queue_full_waits` before the large commit started waiting.
    waits_before: u64,
}

fn large_commit_waiting(backpressure_wait: Duration) -> LargeCommitWaiting {
    let fs = SimFs::new();
    let cfg = WalConfig {
        queue_max_bytes: 64 * 1024,
        backpressure_wait,
        ..small_cfg()
    };
    let (wal, gate, entered, _) = open_gated(&fs, cfg, false);
    let release = OpenOnDrop(gate.clone());
    let wal = Arc::new(wal);
    let first = wal.submit(put(0), 0, None).unwrap();
    while !entered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let queued = wal.submit(put(2), 2, None).unwrap();
    let record = Record::Txn(TxnRecord {
        commit_micros: 1,
        ops: vec![Op::Put {
            table: "t".into(),
            key: b"big".to_vec(),
            value: vec![9; 200 * 1024],
        }],
    })
    .encode();
    let waits_before = wal.stats().queue_full_waits;
    let big = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.submit(record, 4, None).and_then(|h| h.wait()))
    };
    while wal.stats().queue_full_waits == waits_before {
        std::thread::sleep(Duration::from_millis(1));
    }
    LargeCommitWaiting {
        wal,
        gate,
        _release: release,
        first,
        queued,
        big,
        waits_before,
    }
}

/// Found in review (issue 21): a record over `queue_max_bytes` enters only an empty queue,
/// and a steady stream of small commits could keep the queue from ever emptying, so the
/// large commit waited out `backpressure_wait` and failed with `Backpressure`. Once it
/// waits, later commits that carry bytes wait behind it.
#[test]
fn a_commit_larger_than_the_queue_is_not_starved_by_smaller_ones() {
    let LargeCommitWaiting {
        wal,
        gate,
        _release,
        first,
        queued,
        big,
        waits_before,
    } = large_commit_waiting(Duration::from_secs(30));
    // A small commit after it: the queue has room for it, but it waits behind the big one.
    let queued_later = Arc::new(AtomicBool::new(false));
    let later = {
        let (wal, queued_later) = (wal.clone(), queued_later.clone());
        std::thread::spawn(move || {
            let handle = wal.submit(put(6), 6, None);
            queued_later.store(true, Ordering::SeqCst);
            handle.map(|h| h.wait())
        })
    };
    // It is queued (the starvation) or waits for space (a second full-queue wait).
    while !queued_later.load(Ordering::SeqCst) && wal.stats().queue_full_waits < waits_before + 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    gate.store(true, Ordering::SeqCst);
    let big_lsn = big.join().unwrap().unwrap();
    let later_lsn = later.join().unwrap().unwrap().unwrap();
    assert_eq!(first.wait().unwrap(), 1);
    assert_eq!(queued.wait().unwrap(), 2);
    assert!(
        big_lsn < later_lsn,
        "the large commit ({big_lsn}) went after a later small one ({later_lsn})"
    );
}

/// The other side of `a_commit_larger_than_the_queue_is_not_starved_by_smaller_ones`: a
/// large commit that gives up (its `backpressure_wait` runs out) lets the commits it held
/// back in; they are not refused for it.
#[test]
fn commits_held_back_by_a_large_one_go_on_when_it_gives_up() {
    let LargeCommitWaiting {
        wal,
        gate,
        _release,
        first,
        queued,
        big,
        ..
    } = large_commit_waiting(Duration::from_millis(500));
    let held = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.submit(put(6), 6, None))
    };
    // The flusher stays blocked: the queue never empties, and the large commit gives up.
    assert!(matches!(
        big.join().unwrap(),
        Err(Error::Backpressure { .. })
    ));
    // The small one was held back behind it and started waiting later: it gets in.
    let held = held
        .join()
        .unwrap()
        .expect("queued once the large commit gave up");
    gate.store(true, Ordering::SeqCst);
    assert_eq!(
        [
            first.wait().unwrap(),
            queued.wait().unwrap(),
            held.wait().unwrap()
        ],
        [1, 2, 3]
    );
}
