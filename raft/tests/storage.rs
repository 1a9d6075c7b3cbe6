//! walmdb-raft's storage beyond openraft's suite: what a reopen replays from the Raft log,
//! what a purge retires, and snapshots moved between two nodes' directories.

use futures_util::stream;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{blank_ent, log_id};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, RaftLogReader};
use walmdb::WalConfig;
use walmdb_raft::{Entry, LogId, LogStore, Request, SnapshotFile, StateMachine, TypeConfig, Vote};

async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

fn lid(term: u64, index: u64) -> LogId {
    log_id::<TypeConfig>(term, 1, index)
}

fn put_entry(term: u64, index: u64, key: &str, value_len: usize) -> Entry {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(Request::put("kv", key.as_bytes(), &vec![7; value_len])),
    }
}

async fn indexes(log: &mut LogStore) -> Vec<(u64, u64)> {
    log.try_get_log_entries(0..)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

#[tokio::test]
async fn a_reopened_log_holds_its_vote_entries_truncation_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new(2, 1);
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        append(
            &mut log,
            (1..=10).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect(),
        )
        .await;
        log.truncate_after(Some(lid(1, 7))).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        append(
            &mut log,
            (8..=12).map(|i| blank_ent::<TypeConfig>(2, 1, i)).collect(),
        )
        .await;
        log.purge(lid(1, 3)).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(1, 3)));
    assert_eq!(state.last_log_id, Some(lid(2, 12)));
    let want: Vec<(u64, u64)> = (4..=7)
        .map(|i| (1, i))
        .chain((8..=12).map(|i| (2, i)))
        .collect();
    assert_eq!(indexes(&mut log).await, want);
}

#[tokio::test]
async fn a_purge_retires_segments_and_the_vote_and_purge_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WalConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        // Uncompressed, so the segments written do not depend on how entries were grouped
        // into frames (large frames of these repetitive values compress to little: a
        // segment count of 8 or 9, not 10 and more, in 2 runs out of 10).
        compress_threshold: None,
        ..WalConfig::default()
    };
    let segments = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with("wal-") && name.ends_with(".log")
            })
            .count()
    };
    {
        let mut log = LogStore::open_with(dir.path(), cfg.clone()).unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        for chunk in 0..20u64 {
            let entries = (chunk * 50 + 1..=chunk * 50 + 50)
                .map(|i| put_entry(1, i, &format!("k{i}"), 1000))
                .collect();
            append(&mut log, entries).await;
        }
        let before = segments(dir.path());
        assert!(before >= 10, "{before} segments");
        log.purge(lid(1, 990)).await.unwrap();
        let after = segments(dir.path());
        assert!(after <= 2, "{after} segments left of {before}");
    }
    let mut log = LogStore::open_with(dir.path(), cfg).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(1, 990)));
    assert_eq!(state.last_log_id, Some(lid(1, 1000)));
    assert_eq!(
        indexes(&mut log).await,
        (991..=1000).map(|i| (1, i)).collect::<Vec<_>>()
    );
    // Purging everything keeps the purge itself.
    log.purge(lid(1, 1000)).await.unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(1, 1000)));
    assert_eq!(state.last_log_id, Some(lid(1, 1000)));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
}

async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) {
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
        .await
        .unwrap();
}

fn table(sm: &StateMachine) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = sm.db();
    let txn = db.read().unwrap();
    txn.range("kv", ..)
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_moves_the_database_to_another_node_and_survives_its_restart() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = StateMachine::open(a.path()).unwrap();
    apply(
        &mut leader,
        (1..=300)
            .map(|i| put_entry(1, i, &format!("k{i:04}"), 100))
            .collect(),
    )
    .await;
    let snapshot = leader.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(lid(1, 300)));
    // Entries applied after the snapshot are not in it.
    apply(&mut leader, vec![put_entry(1, 301, "later", 1)]).await;

    let mut follower = StateMachine::open(b.path()).unwrap();
    apply(&mut follower, vec![put_entry(1, 1, "stale", 1)]).await;
    let received = b.path().join("received.tar");
    std::fs::copy(snapshot.snapshot.path(), &received).unwrap();
    follower
        .install_snapshot(&snapshot.meta, SnapshotFile::at(&received))
        .await
        .unwrap();
    let (applied, _) = follower.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(1, 300)));
    let rows = table(&follower);
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().all(|(k, _)| k != b"stale" && k != b"later"));
    let current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(lid(1, 300)));
    drop(follower);

    let follower = StateMachine::open(b.path()).unwrap();
    assert_eq!(follower.applied(), Some(lid(1, 300)));
    assert_eq!(table(&follower).len(), 300);
    let dbs: Vec<_> = std::fs::read_dir(b.path().join("sm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db-"))
        .collect();
    assert_eq!(dbs, ["db-00000002"], "the replaced database is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_refused_and_the_database_stays() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = StateMachine::open(a.path()).unwrap();
    apply(
        &mut leader,
        (1..=20)
            .map(|i| put_entry(1, i, &format!("k{i}"), 10))
            .collect(),
    )
    .await;
    let snapshot = leader.build_snapshot().await.unwrap();
    let mut follower = StateMachine::open(b.path()).unwrap();
    apply(&mut follower, vec![put_entry(1, 1, "mine", 1)]).await;
    let mut bytes = std::fs::read(snapshot.snapshot.path()).unwrap();
    // A bit of the description (the tar's first member, after its 512-byte header).
    bytes[512 + 30] ^= 0x01;
    let received = b.path().join("received.tar");
    std::fs::write(&received, &bytes).unwrap();
    let refused = follower
        .install_snapshot(&snapshot.meta, SnapshotFile::at(&received))
        .await;
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(table(&follower), vec![(b"mine".to_vec(), vec![7])]);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_files_and_folders_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let node = root.path().join("node");
    let (_log, mut sm) = walmdb_raft::open_storage(&node).unwrap();
    apply(&mut sm, vec![put_entry(1, 1, "k", 10)]).await;
    sm.build_snapshot().await.unwrap();
    let mut seen = 0;
    let mut stack = vec![node];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        seen += 1;
    }
    assert!(seen > 10, "{seen} paths");
}
