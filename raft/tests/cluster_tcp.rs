//! Three nodes in this process, over real TCP on 127.0.0.1: initialize, write through the
//! leader, read linearizably and locally, compare every node's data, survive garbage on
//! the Raft port, add a fourth node (learner, then voter: it catches up by snapshot, as the
//! others purged their logs) and remove it, stop a follower (the others go on; it shows as
//! lagging), then shut everything down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use openraft::SnapshotPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use walmdb_raft::node::{Node, NodeConfig, NodeError};
use walmdb_raft::{NodeId, Request, StorageConfig};

const TABLE: &str = "kv";
const WAIT: Duration = Duration::from_secs(20);

/// A node with small log segments whose log is snapshotted and purged after 100 entries, so
/// a late joiner needs a snapshot.
fn config(id: NodeId, dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::new(id, dir, "127.0.0.1:0");
    config.storage = StorageConfig::small();
    config.raft.snapshot_policy = SnapshotPolicy::LogsSinceLast(100);
    config.raft.max_in_snapshot_log_to_keep = 10;
    config.raft.purge_batch_size = 8;
    config.raft.replication_lag_threshold = 1000;
    config
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// Writes keys `range` through `leader`, 50 at a time; returns the last log index.
async fn write_keys(leader: &Node, range: std::ops::Range<usize>) -> u64 {
    let mut last = 0;
    let keys: Vec<usize> = range.collect();
    for batch in keys.chunks(50) {
        let writes = batch
            .iter()
            .map(|&i| leader.write(Request::put(TABLE, &key(i), &value(i))));
        for written in join_all(writes).await {
            last = last.max(written.expect("a write through the leader").log_id.index);
        }
    }
    last
}

async fn leader_of<'a>(nodes: &'a [&'a Node]) -> &'a Node {
    let id = nodes[0].wait_for_leader(WAIT).await.expect("a leader");
    nodes
        .iter()
        .find(|n| n.id() == id)
        .expect("the leader is one of the nodes")
}

/// Waits until every node applied through `index`; asserts their data is the same and
/// holds `entries` pairs.
async fn assert_same_data(nodes: &[&Node], index: u64, entries: u64) {
    for node in nodes {
        node.wait_applied(index, WAIT).await.expect("applied");
    }
    let digests: Vec<_> = nodes.iter().map(|n| n.digest().expect("digest")).collect();
    for (node, digest) in nodes.iter().zip(&digests) {
        assert_eq!(
            (digest.entries, digest.hash),
            (entries, digests[0].hash),
            "node {} differs",
            node.id()
        );
    }
}

/// Sends `bytes` to a Raft port; the node must close the connection, not serve it.
async fn send_garbage(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the node closes a connection that sends garbage");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a reply to garbage: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_cluster_replicates_reads_and_changes_membership() {
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .expect("the cluster test finishes within two minutes");
    eprintln!("cluster test: {:?}", started.elapsed());
}

async fn run() {
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let n1 = Node::start(config(1, dirs[0].path()))
        .await
        .expect("node 1");
    let n2 = Node::start(config(2, dirs[1].path()))
        .await
        .expect("node 2");
    let n3 = Node::start(config(3, dirs[2].path()))
        .await
        .expect("node 3");
    let three = [&n1, &n2, &n3];

    let members: BTreeMap<NodeId, String> = three
        .iter()
        .map(|n| (n.id(), n.raft_addr().to_string()))
        .collect();
    n1.initialize(members.clone()).await.expect("initialize");
    assert!(matches!(
        n1.initialize(members).await,
        Err(NodeError::AlreadyInitialized(_))
    ));
    let leader = leader_of(&three).await;
    let follower = three.iter().find(|n| n.id() != leader.id()).unwrap();

    // Writes go through the leader; a follower names it.
    let last = write_keys(leader, 0..300).await;
    match follower.write(Request::put(TABLE, b"x", b"y")).await {
        Err(NodeError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(leader.id()));
            assert_eq!(leader_addr, Some(leader.raft_addr().to_string()));
        }
        other => panic!("a write on a follower: {other:?}"),
    }
    assert!(matches!(
        leader.write(Request::put("_raft", b"k", b"v")).await,
        Err(NodeError::Invalid(_))
    ));

    // Linearizable reads on the leader; a follower refuses them.
    for i in (0..300).step_by(7) {
        assert_eq!(
            leader.read(TABLE, &key(i)).await.expect("read"),
            Some(value(i))
        );
    }
    assert_eq!(leader.read(TABLE, b"absent").await.expect("read"), None);
    assert!(matches!(
        follower.read(TABLE, &key(0)).await,
        Err(NodeError::NotLeader { .. })
    ));

    assert_same_data(&three, last, 300).await;

    // Local reads within a bound; a bound of zero cannot be met.
    for node in three {
        let found = node
            .read_local(TABLE, &key(299), Duration::from_secs(5))
            .await
            .expect("a local read within 5 s");
        assert_eq!(found, Some(value(299)));
    }
    assert!(matches!(
        follower.read_local(TABLE, &key(1), Duration::ZERO).await,
        Err(NodeError::Stale(_))
    ));

    // Replica lag on the leader; a follower has none to report.
    let metrics = leader.metrics().await;
    assert_eq!(metrics.state, "Leader");
    assert_eq!(metrics.voters, vec![1, 2, 3]);
    assert_eq!(metrics.replication.len(), 2, "{metrics:?}");
    for lag in metrics.replication.values() {
        assert_eq!(lag.entries_behind, 0, "{metrics:?}");
        assert_eq!(lag.seconds_behind, Some(0.0), "{metrics:?}");
    }
    leader
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some() && m.purged.is_some(),
            "snapshot and purge",
        )
        .await
        .expect("a snapshot after 100 entries, and the log purged");
    let follower_metrics = follower.metrics().await;
    assert!(follower_metrics.replication.is_empty());
    assert!(follower_metrics.leader_contact_ms.is_some());

    // Garbage on a Raft port closes that connection only.
    send_garbage(follower.raft_addr(), &u32::MAX.to_le_bytes()).await;
    send_garbage(
        follower.raft_addr(),
        &[9, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    )
    .await;
    send_garbage(follower.raft_addr(), &[6, 0, 0, 0, 77, 1, 0, 0, 0, 0]).await;
    let last = write_keys(leader, 300..320).await;
    assert_same_data(&three, last, 320).await;

    // A fourth node: a learner (caught up by snapshot: the logs are purged), then a voter.
    let n4 = Node::start(config(4, dirs[3].path()))
        .await
        .expect("node 4");
    leader
        .add_learner(4, n4.raft_addr().to_string(), true)
        .await
        .expect("add learner 4");
    leader
        .change_membership(BTreeSet::from([1, 2, 3, 4]), false)
        .await
        .expect("make 4 a voter");
    let four = [&n1, &n2, &n3, &n4];
    let leader = leader_of(&four).await;
    let last = write_keys(leader, 320..350).await;
    assert_same_data(&four, last, 350).await;
    let joined = n4.metrics().await;
    assert!(joined.voters.contains(&4), "{joined:?}");
    assert!(
        joined.snapshot.is_some(),
        "node 4 caught up by snapshot: {joined:?}"
    );

    // And out again.
    leader.remove_node(4).await.expect("remove 4");
    let leader = leader_of(&three).await;
    let metrics = leader.metrics().await;
    assert_eq!(metrics.voters, vec![1, 2, 3], "{metrics:?}");
    assert!(metrics.learners.is_empty(), "{metrics:?}");
    n4.shutdown().await.expect("node 4 shuts down");
    let last = write_keys(leader, 350..370).await;
    assert_same_data(&three, last, 370).await;

    // A stopped follower is unreachable, not an error: the others go on, and it shows as
    // lagging.
    let stopped = three.iter().find(|n| n.id() != leader.id()).unwrap();
    stopped.shutdown().await.expect("a follower shuts down");
    let last = write_keys(leader, 370..380).await;
    let lag = &leader.metrics().await.replication[&stopped.id()];
    assert!(lag.entries_behind >= 10, "{lag:?}");
    assert!(lag.seconds_behind.is_some_and(|s| s > 0.0), "{lag:?}");
    let running: Vec<&Node> = three
        .into_iter()
        .filter(|n| n.id() != stopped.id())
        .collect();
    assert_same_data(&running, last, 380).await;

    for node in three {
        node.shutdown().await.expect("shutdown");
    }
    assert!(matches!(
        n1.read_local(TABLE, &key(0), Duration::from_secs(5)).await,
        Err(NodeError::Stopped(_) | NodeError::Stale(_) | NodeError::Storage(_))
    ));
}
