//! An in-process cluster of walmdb-raft nodes, each on its own directory, joined by a router
//! that can cut links (a partition) and lose nodes (a kill): the network is in memory, the
//! storage is real.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    ClientWriteError, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::rt::watch::WatchReceiver;
use openraft::{BasicNode, ServerState};
use parking_lot::Mutex;
use walmdb_raft::{
    open_storage_with, NodeId, Raft, Request, SnapshotFile, StateMachine, StorageConfig,
    TypeConfig, Vote,
};

pub const TABLE: &str = "kv";

#[derive(Clone)]
struct Running {
    raft: Raft,
    sm: StateMachine,
}

#[derive(Default)]
struct Net {
    nodes: BTreeMap<NodeId, Running>,
    /// Links cut, both ways: (lower id, higher id).
    cut: BTreeSet<(NodeId, NodeId)>,
    snapshots_sent: u64,
}

/// The cluster's shared network.
#[derive(Clone, Default)]
pub struct Router {
    net: Arc<Mutex<Net>>,
}

#[derive(Debug)]
struct Down(String);

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Down {}

impl Router {
    /// The target's Raft, if the link from `from` to it is up and it runs.
    fn reach(&self, from: NodeId, to: NodeId) -> Result<Raft, Unreachable<TypeConfig>> {
        let net = self.net.lock();
        if net.cut.contains(&(from.min(to), from.max(to))) {
            return Err(Unreachable::new(&Down(format!("link {from}-{to} is cut"))));
        }
        net.nodes
            .get(&to)
            .map(|r| r.raft.clone())
            .ok_or_else(|| Unreachable::new(&Down(format!("node {to} is down"))))
    }

    fn dir_of(&self, root: &std::path::Path, id: NodeId) -> PathBuf {
        root.join(format!("node-{id}"))
    }
}

/// A node's view of the network.
pub struct Link {
    router: Router,
    from: NodeId,
    to: NodeId,
    /// Where received snapshots are copied: the target's directory.
    target_dir: PathBuf,
}

pub struct Factory {
    router: Router,
    from: NodeId,
    root: PathBuf,
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Link;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Link {
        Link {
            router: self.router.clone(),
            from: self.from,
            to: target,
            target_dir: self.router.dir_of(&self.root, target),
        }
    }
}

fn net_err(e: &impl std::error::Error) -> NetworkError<TypeConfig> {
    NetworkError::new(&Down(e.to_string()))
}

impl RaftNetworkV2<TypeConfig> for Link {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.reach(self.from, self.to)?;
        let response = raft.append_entries(rpc).await.map_err(|e| net_err(&e))?;
        // The answer crosses the link too.
        self.router.reach(self.from, self.to)?;
        Ok(response)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.reach(self.from, self.to)?;
        let response = raft.vote(rpc).await.map_err(|e| net_err(&e))?;
        self.router.reach(self.from, self.to)?;
        Ok(response)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.router.reach(self.from, self.to)?;
        // The receiver's copy, as a transport would write it.
        let n = {
            let mut net = self.router.net.lock();
            net.snapshots_sent += 1;
            net.snapshots_sent
        };
        let copy = self
            .target_dir
            .join("snapshot")
            .join(format!("received-{n}.tar"));
        std::fs::copy(snapshot.snapshot.path(), &copy).map_err(|e| net_err(&e))?;
        let received = openraft::alias::SnapshotOf::<TypeConfig, SnapshotFile> {
            meta: snapshot.meta,
            snapshot: SnapshotFile::at(&copy),
        };
        let response = raft
            .install_full_snapshot(vote, received)
            .await
            .map_err(|e| net_err(&e));
        let _ = std::fs::remove_file(&copy);
        let response = response?;
        self.router.reach(self.from, self.to)?;
        Ok(response)
    }
}

/// A cluster of nodes with ids 1..=n under one temporary root.
pub struct Cluster {
    pub router: Router,
    pub root: tempfile::TempDir,
    pub config: Arc<openraft::Config>,
}

pub fn config() -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Default::default()
    }
}

impl Cluster {
    /// Starts nodes `1..=n` and makes them one cluster of voters.
    pub async fn new(n: u64, config: openraft::Config) -> Cluster {
        let cluster = Cluster {
            router: Router::default(),
            root: tempfile::tempdir().unwrap(),
            config: Arc::new(config.validate().unwrap()),
        };
        for id in 1..=n {
            cluster.start(id).await;
        }
        let members: BTreeMap<NodeId, BasicNode> = (1..=n)
            .map(|id| (id, BasicNode::new(format!("node-{id}"))))
            .collect();
        cluster.raft(1).initialize(members).await.unwrap();
        cluster.leader(Duration::from_secs(10)).await;
        cluster
    }

    /// Starts node `id` from its directory (new or left by an earlier run).
    pub async fn start(&self, id: NodeId) {
        let dir = self.router.dir_of(self.root.path(), id);
        // A killed node's storage may take a moment to be dropped by its last task.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (log, sm) = loop {
            match open_storage_with(&dir, &StorageConfig::small()) {
                Ok(opened) => break opened,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("node {id}: {e}"),
            }
        };
        let factory = Factory {
            router: self.router.clone(),
            from: id,
            root: self.root.path().to_owned(),
        };
        let raft = Raft::new(id, self.config.clone(), factory, log, sm.clone())
            .await
            .unwrap();
        self.router
            .net
            .lock()
            .nodes
            .insert(id, Running { raft, sm });
    }

    /// Kills node `id` as a crash would: it drops off the network at once, its database
    /// stops with no final apply and no checkpoint (`Db::simulate_crash`: what it wrote to
    /// its log stays, as a killed process's writes stay in the OS), and its Raft stops.
    pub async fn kill(&self, id: NodeId) {
        let running = self.router.net.lock().nodes.remove(&id);
        if let Some(running) = running {
            running.sm.db().simulate_crash();
            let _ = running.raft.shutdown().await;
        }
    }

    pub fn raft(&self, id: NodeId) -> Raft {
        self.router.net.lock().nodes[&id].raft.clone()
    }

    pub fn sm(&self, id: NodeId) -> StateMachine {
        self.router.net.lock().nodes[&id].sm.clone()
    }

    pub fn running(&self) -> Vec<NodeId> {
        self.router.net.lock().nodes.keys().copied().collect()
    }

    /// Cuts every link of `id`.
    pub fn isolate(&self, id: NodeId, all: &[NodeId]) {
        let mut net = self.router.net.lock();
        for &other in all.iter().filter(|&&o| o != id) {
            net.cut.insert((id.min(other), id.max(other)));
        }
    }

    pub fn heal(&self) {
        self.router.net.lock().cut.clear();
    }

    /// The leader a majority of running nodes can reach, once there is one.
    pub async fn leader(&self, within: Duration) -> NodeId {
        let deadline = Instant::now() + within;
        loop {
            for id in self.running() {
                let m = self.raft(id).metrics().borrow_watched().clone();
                if m.state == ServerState::Leader && m.current_leader == Some(id) {
                    let reachable = {
                        let net = self.router.net.lock();
                        net.nodes
                            .keys()
                            .filter(|&&o| o == id || !net.cut.contains(&(id.min(o), id.max(o))))
                            .count()
                    };
                    let voters = m.membership_config.membership().voter_ids().count();
                    if reachable * 2 > voters {
                        return id;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes `key` = `value` through node `id`; the log index of the entry on success.
    pub async fn write_via(&self, id: NodeId, key: &str, value: &str) -> Result<u64, String> {
        let raft = self
            .router
            .net
            .lock()
            .nodes
            .get(&id)
            .map(|r| r.raft.clone());
        let Some(raft) = raft else {
            return Err(format!("node {id} is down"));
        };
        match raft
            .client_write(Request::put(TABLE, key.as_bytes(), value.as_bytes()))
            .await
        {
            Ok(r) => Ok(r.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(format!("not the leader; leader {:?}", f.leader_id))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until node `id` has applied everything through log index `index`.
    pub async fn wait_applied(&self, id: NodeId, index: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let applied = self
                .raft(id)
                .metrics()
                .borrow_watched()
                .last_applied
                .map(|l| l.index);
            if applied >= Some(index) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} applied {applied:?}, not {index}, within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every key and value of the data table in node `id`'s database.
    pub fn contents(&self, id: NodeId) -> BTreeMap<String, String> {
        let db = self.sm(id).db();
        let txn = db.read().unwrap();
        txn.range(TABLE, ..)
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    pub async fn shutdown(&self) {
        for id in self.running() {
            self.kill(id).await;
        }
    }
}
