//! Models of the engine's handoffs: overlay publication and eviction against a reader
//! taking a snapshot, a commit waiting for room against the applier, and a checkpoint
//! against the applier and segment retirement. The real engine code runs through
//! `walmdb::loom_support::Engine`; LMDB is an in-memory fake with its own committed (and,
//! for the checkpoint, durable) state.

#![cfg(walmdb_loom)]

use std::collections::BTreeMap;
use std::path::Path;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use walmdb::loom_support::{segment_file, Engine};
use walmdb::{
    Durability, EncodedRecord, FsRef, Lsn, NoSequencer, Op, Record, SimFs, TxnRecord, Wal,
    WalConfig,
};
use walmdb_loom_tests::{models, Bug};

/// LMDB's committed state as read transactions see it: the applied LSN and the table.
type LmdbState = (Lsn, BTreeMap<Vec<u8>, Vec<u8>>);

/// Overlay publication and eviction against a reader. Commit 1 (k = v1) is published;
/// the applier applies it to LMDB and evicts what no snapshot needs while the flusher
/// publishes commit 2 (k = v2) and a reader takes a snapshot and reads k. The reader sees
/// the overlay's version or LMDB's applied value, never neither: exactly the value of the
/// newest commit at or below its visible LSN.
fn overlay_against_a_reader() {
    let engine = Engine::new();
    let lmdb: Arc<Mutex<LmdbState>> = Arc::default();
    let first = engine.publish(1, b"k", b"v1");
    let applier = {
        let (engine, lmdb) = (engine.clone(), lmdb.clone());
        thread::spawn(move || {
            {
                let mut state = lmdb.lock().unwrap();
                state.1.insert(b"k".to_vec(), b"v1".to_vec());
                state.0 = 1;
            }
            engine.applied(&[first]);
        })
    };
    let flusher = {
        let engine = engine.clone();
        thread::spawn(move || {
            engine.publish(2, b"k", b"v2");
        })
    };
    let (visible, value) = engine.read(
        || {
            let state = lmdb.lock().unwrap().clone();
            let applied = state.0;
            (state, applied)
        },
        |state, key| state.1.get(key).cloned(),
        b"k",
    );
    assert!(visible >= 1, "a snapshot missed a published commit");
    let want: &[u8] = if visible >= 2 { b"v2" } else { b"v1" };
    assert_eq!(
        value.as_deref(),
        Some(want),
        "a snapshot at visible LSN {visible} read the wrong value"
    );
    applier.join().unwrap();
    flusher.join().unwrap();
}

/// An LMDB read transaction of the fake: counted open while it lives.
struct Txn(Arc<AtomicUsize>);

impl Drop for Txn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A map resize against a reader beginning a snapshot (the registry's pause gate): once
/// the pause says every LMDB transaction has ended, none is open and none begins until the
/// resize resumes them.
fn resize_against_a_reader() {
    let engine = Engine::new();
    let open_txns = Arc::new(AtomicUsize::new(0));
    let resizing = Arc::new(AtomicBool::new(false));
    let resizer = {
        let (engine, open_txns, resizing) = (engine.clone(), open_txns.clone(), resizing.clone());
        thread::spawn(move || {
            assert!(engine.pause_snapshots(), "loom models no timeout");
            resizing.store(true, Ordering::SeqCst);
            assert_eq!(
                open_txns.load(Ordering::SeqCst),
                0,
                "the resize began with an LMDB transaction open"
            );
            resizing.store(false, Ordering::SeqCst);
            engine.resume_snapshots();
        })
    };
    engine.read(
        || {
            assert!(
                !resizing.load(Ordering::SeqCst),
                "an LMDB transaction began during the resize"
            );
            open_txns.fetch_add(1, Ordering::SeqCst);
            (Txn(open_txns.clone()), 0)
        },
        |_, _| None,
        b"k",
    );
    resizer.join().unwrap();
}

/// Closing against a reader beginning a snapshot: once closing's end of the registry says
/// no LMDB transaction is open (so LMDB may close), none is, and none begins after (the
/// reader is refused with `Closed` instead).
fn close_against_a_reader() {
    let engine = Engine::new();
    let open_txns = Arc::new(AtomicUsize::new(0));
    let lmdb_closed = Arc::new(AtomicBool::new(false));
    let closer = {
        let (engine, open_txns, lmdb_closed) =
            (engine.clone(), open_txns.clone(), lmdb_closed.clone());
        thread::spawn(move || {
            assert!(engine.close_snapshots(), "loom models no timeout");
            assert_eq!(
                open_txns.load(Ordering::SeqCst),
                0,
                "LMDB closed with a transaction open"
            );
            lmdb_closed.store(true, Ordering::SeqCst);
        })
    };
    let _refused_or_read = engine.try_read(
        || {
            open_txns.fetch_add(1, Ordering::SeqCst);
            assert!(
                !lmdb_closed.load(Ordering::SeqCst),
                "an LMDB transaction began after LMDB closed"
            );
            (Txn(open_txns.clone()), 0)
        },
        |_, _| None,
        b"k",
    );
    closer.join().unwrap();
}

/// LMDB's state for the checkpoint model: what is committed, and what is durably synced.
#[derive(Debug, Default)]
struct Durable {
    committed: Lsn,
    synced: Lsn,
}

const DIR: &str = "/wal";
const SEGMENT_1: &str = "wal-00000001.log";

fn record(i: u8) -> EncodedRecord {
    Record::Txn(TxnRecord {
        commit_micros: 0,
        ops: vec![Op::Put {
            table: "t".into(),
            key: vec![i],
            value: vec![i],
        }],
    })
    .encode()
}

/// A checkpoint against the applier and segment retirement. The log holds LSNs 1-2 in
/// segment 1 and LSN 3 in segment 2; the applier commits them all to LMDB while a
/// checkpoint runs. No segment is retired before its records are durable in LMDB: whenever
/// segment 1's file is gone, LMDB has synced through LSN 2.
fn checkpoint_against_retirement() {
    const SEGMENT_BYTES: u64 = 64 << 10;
    // The log as the flusher left it, written directly: the model explores what follows.
    let fs = SimFs::new();
    let dir = Path::new(DIR);
    let (r1, r2, r3) = (record(1), record(2), record(3));
    fs.write_file(
        &dir.join(SEGMENT_1),
        &segment_file(1, 1, SEGMENT_BYTES, &[r1, r2]),
    );
    fs.write_file(
        &dir.join("wal-00000002.log"),
        &segment_file(2, 3, SEGMENT_BYTES, &[r3]),
    );
    let cfg = WalConfig {
        segment_bytes: SEGMENT_BYTES,
        max_record_bytes: 1024,
        queue_capacity: 4,
        queue_max_bytes: 4096,
        durability: Durability::group_commit(),
        compress_threshold: None,
        prepare_segments: false,
        recycle_segments: 1,
        ..WalConfig::default()
    };
    let fsref: FsRef = std::sync::Arc::new(fs.clone());
    let wal = Wal::open_with(fsref, dir, cfg, None, NoSequencer).expect("open");
    assert_eq!(wal.written_lsn(), 3);
    let segments = wal.segments();
    assert_eq!(segments.len(), 2, "the records span two segments");
    assert_eq!(segments[1].first_lsn, 3);
    let wal = Arc::new(wal);
    let engine = Engine::new();
    let lmdb: Arc<Mutex<Durable>> = Arc::default();
    let applier = {
        let (engine, lmdb) = (engine.clone(), lmdb.clone());
        thread::spawn(move || {
            lmdb.lock().unwrap().committed = 3;
            engine.set_applied(3);
        })
    };
    let checkpointer = {
        let (engine, lmdb, wal) = (engine.clone(), lmdb.clone(), wal.clone());
        thread::spawn(move || {
            engine
                .checkpoint(&wal, || {
                    let mut state = lmdb.lock().unwrap();
                    state.synced = state.committed;
                    Ok(())
                })
                .expect("checkpoint");
        })
    };
    // Watch the directory: the file first, LMDB's durable LSN after (it only grows).
    let gone = !fs.file_names(Path::new(DIR)).iter().any(|n| n == SEGMENT_1);
    let synced = lmdb.lock().unwrap().synced;
    assert!(
        !gone || synced >= 2,
        "segment 1 was retired while LMDB had synced only through LSN {synced}"
    );
    applier.join().unwrap();
    checkpointer.join().unwrap();
    drop(wal);
}

/// A change-feed subscription opens while commit 1 is published: the commit is either
/// below the LSN from which publication keeps commits for it (the subscription reads it
/// from the log) or kept, never neither (it would be skipped).
fn feed_against_publication() {
    let engine = Engine::new();
    let publisher = {
        let engine = engine.clone();
        thread::spawn(move || {
            engine.publish(1, b"k", b"v");
        })
    };
    let from = engine.open_feed();
    publisher.join().unwrap();
    assert!(
        1 < from || engine.feed_kept(1),
        "commit 1 is neither kept for the feed nor below its start {from}"
    );
}

/// A commit waiting for room in the overlay against the applier and the flusher. Commit 1
/// is published and alone fills the overlay past its bound; the flusher publishes commit 2,
/// as big, while the applier (the real `take_batch` and `evict_applied`) applies and evicts
/// and a committer waits for room (the real `wait_for_room_until`, with no deadline). loom
/// has no time: the applier's gathering ends only when a waiting commit hurries it, when
/// both commits are queued (`apply_max_ops` 2) or when it is stopped, and the committer's
/// 10 ms re-check is a wait for a notification, so only the handshake's own wake-ups end
/// the waits (an execution where both sleep is a deadlock, which loom reports). The
/// committer gets room; once stopped, the applier has applied and evicted both commits.
fn committer_against_the_applier() {
    let engine = Engine::new();
    engine.publish(1, b"a", b"v1");
    let limit = engine.overlay_bytes() - 1;
    let applier = {
        let engine = engine.clone();
        thread::spawn(move || engine.run_applier(2))
    };
    let flusher = {
        let engine = engine.clone();
        thread::spawn(move || {
            engine.publish(2, b"b", b"v2");
        })
    };
    engine
        .wait_for_room(limit)
        .expect("the wait ends with room, not a refusal");
    flusher.join().unwrap();
    engine.stop_applier();
    applier.join().unwrap();
    assert_eq!(
        engine.applied_lsn(),
        2,
        "the applier stopped with commits queued"
    );
    assert_eq!(
        engine.overlay_bytes(),
        0,
        "applied versions stayed in the overlay"
    );
}

models! {
    committer_against_the_applier => a_commit_waiting_for_room_is_woken_once_the_applier_makes_it,
        Bug::HurriedBeforeRoomCheck, a_hurry_before_the_room_check_is_caught,
        committer_against_the_applier_with_the_bug;
    feed_against_publication => a_subscription_gets_every_commit_from_the_log_or_publication,
        Bug::FeedCheckedWithoutFence, a_feed_check_without_a_fence_is_caught,
        feed_against_publication_with_the_bug;
    overlay_against_a_reader => a_reader_sees_the_overlay_or_lmdb_never_neither,
        Bug::EvictIgnoringSnapshots, an_eviction_past_a_snapshot_is_caught,
        overlay_against_a_reader_with_the_bug;
    resize_against_a_reader => no_lmdb_transaction_is_open_while_the_map_is_resized,
        Bug::PauseCheckedBeforeOpening, a_pause_checked_before_opening_is_caught,
        resize_against_a_reader_with_the_bug;
    close_against_a_reader => no_lmdb_transaction_is_open_or_begins_once_lmdb_closes,
        Bug::CloseScannedBeforeClosing, a_close_scanned_before_closing_is_caught,
        close_against_a_reader_with_the_bug;
    checkpoint_against_retirement => no_segment_is_retired_before_lmdb_holds_it_durably,
        Bug::RetireBeforeLmdbSync, a_retirement_before_the_lmdb_sync_is_caught,
        checkpoint_against_retirement_with_the_bug;
}
