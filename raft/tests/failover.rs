//! Fail-over over real walmdb directories, in process, through a router that can cut links
//! and lose nodes: a leader killed during writes loses no acknowledged write and, restarted
//! from its directory, catches up; a follower that fell behind a purge catches up by a
//! snapshot; a leader cut off in a minority acknowledges nothing. Sizes: `WALMDB_RAFT_KILLS`
//! (default 3) and `WALMDB_RAFT_WRITES` per kill (default 120).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, Cluster};
use openraft::rt::watch::WatchReceiver;
use parking_lot::Mutex;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `key` through whichever node leads, retrying (the same put) until acknowledged.
async fn write_until_acknowledged(cluster: &Cluster, key: &str, value: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leader(Duration::from_secs(15)).await;
        match cluster.write_via(leader, key, value).await {
            Ok(index) => return index,
            Err(e) => {
                assert!(Instant::now() < deadline, "{key} never acknowledged: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_during_writes_loses_no_acknowledged_write_and_catches_up() {
    let kills = env_or("WALMDB_RAFT_KILLS", 3);
    let writes = env_or("WALMDB_RAFT_WRITES", 120);
    const WRITERS: usize = 6;
    let cluster = Arc::new(Cluster::new(3, config()).await);
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut last_index = 0;
    for round in 0..kills {
        let leader = cluster.leader(Duration::from_secs(15)).await;
        let before = acked.lock().len();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (cluster, acked) = (cluster.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut last = 0;
                    for i in (w..writes).step_by(WRITERS) {
                        let (key, value) = (format!("r{round}-{i:05}"), format!("v{round}-{i}"));
                        last = last.max(write_until_acknowledged(&cluster, &key, &value).await);
                        acked.lock().insert(key, value);
                    }
                    last
                })
            })
            .collect();
        // Kill the leader once about half of this round's writes are acknowledged.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().len() < before + writes / 2 {
            assert!(Instant::now() < deadline, "writes stalled before the kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed_at = Instant::now();
        cluster.kill(leader).await;
        let new_leader = cluster.leader(Duration::from_secs(15)).await;
        assert_ne!(new_leader, leader);
        eprintln!(
            "round {round}: killed leader {leader}; node {new_leader} leads after {:?}",
            killed_at.elapsed()
        );
        for w in writers {
            last_index = last_index.max(w.await.unwrap());
        }
        // The old leader restarts from its directory and catches up.
        cluster.start(leader).await;
        cluster
            .wait_applied(leader, last_index, Duration::from_secs(30))
            .await;
    }
    let acked = acked.lock().clone();
    assert_eq!(acked.len(), kills * writes);
    for id in cluster.running() {
        cluster
            .wait_applied(id, last_index, Duration::from_secs(30))
            .await;
        let contents = cluster.contents(id);
        for (key, value) in &acked {
            assert_eq!(
                contents.get(key),
                Some(value),
                "node {id} lost acknowledged {key}"
            );
        }
        assert_eq!(
            contents, acked,
            "node {id} holds writes nobody acknowledged"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_in_a_minority_acknowledges_nothing() {
    let cluster = Cluster::new(3, config()).await;
    write_until_acknowledged(&cluster, "before", "1").await;
    let old = cluster.leader(Duration::from_secs(10)).await;
    cluster.isolate(old, &[1, 2, 3]);
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        cluster.write_via(old, "cut-off", "1"),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a leader without a quorum acknowledged a write"
    );
    let new = cluster.leader(Duration::from_secs(15)).await;
    assert_ne!(new, old);
    let index = write_until_acknowledged(&cluster, "after", "1").await;
    cluster.heal();
    for id in [1, 2, 3] {
        cluster
            .wait_applied(id, index, Duration::from_secs(30))
            .await;
        let contents = cluster.contents(id);
        assert!(contents.contains_key("before") && contents.contains_key("after"));
        assert!(
            !contents.contains_key("cut-off"),
            "node {id} applied the write the cut-off leader never acknowledged"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_purge_catches_up_by_snapshot_and_keeps_it_across_a_restart() {
    let config = openraft::Config {
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(50),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..config()
    };
    let cluster = Cluster::new(3, config).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let behind = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
    cluster.isolate(behind, &[1, 2, 3]);
    let mut last = 0;
    for i in 0..200 {
        last = write_until_acknowledged(&cluster, &format!("k{i:04}"), &format!("v{i}")).await;
    }
    // The leader snapshots and purges its log past everything the follower has.
    let leader = cluster.leader(Duration::from_secs(10)).await;
    assert_ne!(leader, behind);
    let raft = cluster.raft(leader);
    raft.trigger().snapshot().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = raft.metrics().borrow_watched().clone();
        if m.purged.is_some_and(|p| p.index >= 100) {
            break;
        }
        assert!(Instant::now() < deadline, "the leader never purged: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.heal();
    cluster
        .wait_applied(behind, last, Duration::from_secs(30))
        .await;
    let m = cluster.raft(behind).metrics().borrow_watched().clone();
    assert!(
        m.snapshot.is_some(),
        "node {behind} caught up without a snapshot: {m:?}"
    );
    assert_eq!(cluster.contents(behind), cluster.contents(leader));
    assert_eq!(cluster.contents(behind).len(), 200);
    // The installed database is the node's own across a restart.
    cluster.kill(behind).await;
    cluster.start(behind).await;
    cluster
        .wait_applied(behind, last, Duration::from_secs(30))
        .await;
    assert_eq!(cluster.contents(behind).len(), 200);
    cluster.shutdown().await;
}
