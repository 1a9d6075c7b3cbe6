//! A node's health: healthy in a working cluster; on the leader, degraded once a member stops
//! answering; on a lone follower, unhealthy once no leader is known.

use std::time::{Duration, Instant};

use walmdb_raft::node::{Node, NodeConfig};
use walmdb_raft::StorageConfig;

async fn start(root: &std::path::Path, id: u64) -> Node {
    let mut config = NodeConfig::new(id, root.join(format!("n{id}")), "127.0.0.1:0");
    config.storage = StorageConfig::small();
    config.raft.heartbeat_interval = 50;
    config.raft.election_timeout_min = 300;
    config.raft.election_timeout_max = 600;
    Node::start(config).await.unwrap()
}

async fn until(node: &Node, want: &str, within: Duration) -> walmdb_raft::health::NodeHealth {
    let deadline = Instant::now() + within;
    loop {
        let health = node.health().await;
        if health.status == want {
            return health;
        }
        assert!(Instant::now() < deadline, "not {want}: {health:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_leader_and_the_replicas() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(root.path(), id).await);
    }
    let members = nodes
        .iter()
        .map(|n| (n.id(), n.raft_addr().to_string()))
        .collect();
    nodes[0].initialize(members).await.unwrap();
    let leader = nodes[0]
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let leader = nodes.iter().position(|n| n.id() == leader).unwrap();
    until(&nodes[leader], "healthy", Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    until(&nodes[follower], "healthy", Duration::from_secs(10)).await;

    // A member stops: the leader is degraded, naming it.
    let stopped = (leader + 2) % 3;
    nodes[stopped].shutdown().await.unwrap();
    let health = until(&nodes[leader], "degraded", Duration::from_secs(10)).await;
    let id = nodes[stopped].id();
    assert!(
        health
            .reasons
            .iter()
            .any(|(_, why)| why.contains(&format!("node {id}"))),
        "{health:?}"
    );

    // The leader stops too: the last follower knows no leader.
    nodes[leader].shutdown().await.unwrap();
    let health = until(&nodes[follower], "unhealthy", Duration::from_secs(20)).await;
    assert!(!health.reasons.is_empty());
    nodes[follower].shutdown().await.unwrap();
}
