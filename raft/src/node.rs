//! A running node: its storage, its [`Raft`], its RPC server, and the client operations
//! (writes through the leader, linearizable reads, bounded-staleness local reads,
//! membership changes, metrics).
//!
//! A node does not forward: a write or a linearizable read on a follower fails with
//! [`NodeError::NotLeader`], naming the leader if known, and the client retries there.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver as _;
use openraft::error::{
    ClientWriteError, ForwardReason, ForwardToLeader, InitializeError, RaftError,
};
use openraft::{BasicNode, ChangeMembers, Instant as _, ReadPolicy, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::network::{deadline_after, peer_info, NetworkFactory, RpcServer, RpcService};
use crate::state_machine::META_TABLE;
use crate::{
    open_storage_with, LogId, NodeId, Raft, Request, Response, StateMachine, StorageConfig,
    TypeConfig,
};

/// The largest request [`Node::write`] takes, postcard-encoded; less when the storage's
/// records must be smaller (half its logs' `max_record_bytes`): a log entry and the
/// transaction applying it stay well inside walmdb's record limits, and an entry inside a
/// frame.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// How long a linearizable read waits for this node to apply through its read index.
const READ_APPLY_WAIT: Duration = Duration::from_secs(10);
/// How long a blocking `add_learner` waits for the learner to catch up.
const LEARNER_CATCH_UP_WAIT: Duration = Duration::from_secs(60);
/// The longest wait a caller may ask for (openraft's waits overflow on huge ones).
const MAX_WAIT: Duration = Duration::from_secs(86_400);
/// How long a peer has to say what its client address is.
const PEER_INFO_WAIT: Duration = Duration::from_secs(1);
/// How often a write on a leader without a lease is tried again.
const LEASE_RETRY_INTERVAL: Duration = Duration::from_millis(20);
/// Samples of the leader's log growth kept for replica lag in seconds.
const LAG_SAMPLES: usize = 4096;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// This node is not the leader; the leader, if known, is named.
    #[error("this node is not the leader{}", leader_hint(*.leader_id, .leader_addr.as_deref()))]
    NotLeader {
        /// The leader's id, if known.
        leader_id: Option<NodeId>,
        /// The leader's Raft address, if known.
        leader_addr: Option<String>,
    },
    /// The request is malformed (a bad table name or key, an empty membership, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The request is over the node's limit ([`MAX_REQUEST_BYTES`] or less).
    #[error("a request of {size} bytes: over the limit of {limit}")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A local read refused: this node cannot vouch for the staleness bound.
    #[error("a local read refused: {0}")]
    Stale(String),
    /// The write's entry was dropped by a leader change: it may or may not commit.
    #[error("the outcome of the write is unknown (leader changed): {0}")]
    Uncertain(String),
    /// The leader could not reach a quorum.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// `initialize` on a node that already has a membership.
    #[error("already initialized: {0}")]
    AlreadyInitialized(String),
    /// A membership change openraft refused (a change in progress, an unknown learner, ...).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The Raft node has stopped (shut down, or a fatal storage error).
    #[error("the Raft node has stopped: {0}")]
    Stopped(String),
    /// A setting openraft refuses.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The state machine's database failed.
    #[error("storage: {0}")]
    Storage(#[from] walmdb::Error),
    /// Opening storage or binding the RPC address failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

fn leader_hint(id: Option<NodeId>, addr: Option<&str>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("; the leader is node {id} at {addr}"),
        (Some(id), None) => format!("; the leader is node {id}"),
        _ => "; no leader is known".to_owned(),
    }
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Its Raft node id.
    pub id: NodeId,
    /// Its directory (storage: see [`crate::open_storage`]).
    pub dir: PathBuf,
    /// Where it serves Raft RPCs (`127.0.0.1:0`: a free port; see [`Node::raft_addr`]). The
    /// address bound is the one to give peers, so name an interface, not `0.0.0.0`.
    pub raft_addr: String,
    /// Its client address (e.g. an HTTP API), told to peers that ask, so a follower can
    /// name the leader's ([`Node::client_addr_of`]).
    pub client_addr: Option<String>,
    /// openraft's settings ([`default_raft_config`]).
    pub raft: openraft::Config,
    /// How its storage is opened.
    pub storage: StorageConfig,
}

impl NodeConfig {
    /// Node `id` in `dir`, serving Raft RPCs on `raft_addr`, with [`default_raft_config`].
    pub fn new(id: NodeId, dir: impl Into<PathBuf>, raft_addr: impl Into<String>) -> NodeConfig {
        NodeConfig {
            id,
            dir: dir.into(),
            raft_addr: raft_addr.into(),
            client_addr: None,
            raft: default_raft_config(),
            storage: StorageConfig::default(),
        }
    }
}

/// openraft settings for nodes on one host or a LAN: heartbeats every 200 ms, elections
/// after 1 to 2 s without one (slack for a loaded 2-core machine), a snapshot every 200,000
/// applied entries (a snapshot is a hot backup of the whole store: taken often, it costs
/// more than the log it lets go), after which the log keeps 1000 entries; a follower more than 10000
/// entries behind gets a snapshot. Snapshot transfers allow 60 s per step.
pub fn default_raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "walmdb".to_owned(),
        heartbeat_interval: 200,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 60_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(200_000),
        max_in_snapshot_log_to_keep: 1000,
        replication_lag_threshold: 10_000,
        purge_batch_size: 256,
        ..openraft::Config::default()
    }
}

/// A write that committed: its log id and what applying it did on the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The entry's log id (`log_id.index`: its log index).
    pub log_id: LogId,
    /// The response of the leader's state machine (the walmdb LSN of its commit there).
    pub response: Response,
}

/// A digest of a node's data ([`Node::digest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Digest {
    /// The key/value pairs covered.
    pub entries: u64,
    /// FNV-1a (64 bits) over every table's name, keys and values, length-prefixed, tables
    /// by name and keys in order.
    pub hash: u64,
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.hash)
    }
}

/// A node's state, from openraft's metrics.
#[derive(Debug, Clone, Serialize)]
pub struct NodeMetrics {
    /// Its id.
    pub id: NodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    /// The leader it knows of.
    pub current_leader: Option<NodeId>,
    /// Its term.
    pub current_term: u64,
    /// The index of its last log entry.
    pub last_log_index: Option<u64>,
    /// The index of the last entry its state machine applied.
    pub last_applied: Option<u64>,
    /// The last index it knows committed and holds.
    pub committed: Option<u64>,
    /// The last index the leader reported committed (it may not hold it yet).
    pub cluster_committed: Option<u64>,
    /// The last index its snapshot covers.
    pub snapshot: Option<u64>,
    /// The last index purged from its log.
    pub purged: Option<u64>,
    /// The voters of its membership.
    pub voters: Vec<NodeId>,
    /// The learners of its membership.
    pub learners: Vec<NodeId>,
    /// Milliseconds since it last heard from an established leader: as a follower or
    /// learner, since it accepted a message carrying that leader's vote; as the leader,
    /// since a quorum acknowledged it. `None`: no established leader.
    pub leader_contact_ms: Option<u64>,
    /// Entries it knows committed (as the leader reported) and has not applied yet.
    pub apply_lag: u64,
    /// On the leader: how far behind each other member is. Empty elsewhere.
    pub replication: BTreeMap<NodeId, ReplicaLag>,
}

/// How far a member is behind the leader.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaLag {
    /// The last index the member is known to hold.
    pub matched: Option<u64>,
    /// Entries of the leader's log the member is not known to hold.
    pub entries_behind: u64,
    /// How long ago the leader first held the oldest entry the member is not known to hold
    /// (0 when caught up). Times start when this node became leader, so for older entries
    /// it is a lower bound. `None`: not known.
    pub seconds_behind: Option<f64>,
    /// Milliseconds since the member last acknowledged an RPC from the leader.
    pub last_ack_ms: Option<u64>,
}

/// When the leader's log reached each index: `(index, time)` pairs, increasing.
#[derive(Default)]
struct LagClock {
    samples: Mutex<VecDeque<(u64, std::time::Instant)>>,
}

impl LagClock {
    /// Notes that the leader's log holds `index` now; `became_leader` starts over.
    fn note(&self, index: u64, became_leader: bool) {
        let mut samples = self.samples.lock();
        if became_leader {
            samples.clear();
        }
        if samples.back().is_none_or(|(last, _)| index > *last) {
            samples.push_back((index, std::time::Instant::now()));
            if samples.len() > LAG_SAMPLES {
                samples.pop_front();
            }
        }
    }

    /// Seconds since the leader first held an entry after `matched`.
    fn seconds_behind(&self, matched: Option<u64>, last: Option<u64>) -> Option<f64> {
        if matched >= last {
            return Some(0.0);
        }
        let samples = self.samples.lock();
        let (_, first_missing) = samples
            .iter()
            .find(|(index, _)| Some(*index) > matched)
            .or(samples.front())?;
        Some(first_missing.elapsed().as_secs_f64())
    }
}

/// Follows the leader's log growth into `clock` until the metrics end.
async fn watch_log_growth(raft: Raft, clock: Arc<LagClock>) {
    let mut metrics = raft.metrics();
    let mut was_leader = false;
    loop {
        let (is_leader, last) = {
            let m = metrics.borrow_watched();
            (m.state == ServerState::Leader, m.last_log_index)
        };
        if is_leader {
            clock.note(last.unwrap_or(0), !was_leader);
        }
        was_leader = is_leader;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A running node.
pub struct Node {
    id: NodeId,
    raft: Raft,
    sm: StateMachine,
    /// The largest request it takes, encoded.
    max_request_bytes: usize,
    raft_addr: SocketAddr,
    client_addr: Option<String>,
    server: tokio::sync::Mutex<Option<RpcServer>>,
    lag: Arc<LagClock>,
    lag_watch: tokio::task::JoinHandle<()>,
    /// A peer's client address, as it told it: `(id, raft address, client address)`.
    client_addrs: Mutex<BTreeMap<NodeId, (String, Option<String>)>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("raft_addr", &self.raft_addr)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens (creating, or recovering) the node's storage, starts its Raft and serves its
    /// RPCs. A new node waits to be initialized or added to a cluster.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let raft_config = Arc::new(
            config
                .raft
                .validate()
                .map_err(|e| NodeError::Config(e.to_string()))?,
        );
        let (dir, storage) = (config.dir.clone(), config.storage.clone());
        let (log, sm) = tokio::task::spawn_blocking(move || open_storage_with(&dir, &storage))
            .await
            .map_err(io::Error::other)??;
        let listener = TcpListener::bind(&config.raft_addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", config.raft_addr)))?;
        let raft_addr = listener.local_addr()?;
        let raft = Raft::new(
            config.id,
            raft_config,
            NetworkFactory::new(config.id),
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Stopped(e.to_string()))?;
        let service = RpcService {
            id: config.id,
            raft: raft.clone(),
            snapshot_dir: config.dir.join("snapshot"),
            client_addr: config.client_addr.clone(),
        };
        let server = match RpcServer::start(listener, service) {
            Ok(server) => server,
            Err(e) => {
                let _ = raft.shutdown().await;
                return Err(e.into());
            }
        };
        let lag = Arc::new(LagClock::default());
        let lag_watch = tokio::spawn(watch_log_growth(raft.clone(), lag.clone()));
        let max_request_bytes = MAX_REQUEST_BYTES
            .min(config.storage.log.max_record_bytes / 2)
            .min(config.storage.db.wal.max_record_bytes / 2);
        Ok(Node {
            id: config.id,
            raft,
            sm,
            max_request_bytes,
            raft_addr,
            client_addr: config.client_addr,
            server: tokio::sync::Mutex::new(Some(server)),
            lag,
            lag_watch,
            client_addrs: Mutex::new(BTreeMap::new()),
        })
    }

    /// Its id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address it serves Raft RPCs on (the one peers are given).
    pub fn raft_addr(&self) -> SocketAddr {
        self.raft_addr
    }

    /// Its state machine's database now (a snapshot install swaps it: take it per use).
    pub fn db(&self) -> walmdb::Db {
        self.sm.db()
    }

    /// Its Raft, for what this type does not wrap.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Makes this pristine node the first of a cluster of `members` (id → Raft address),
    /// which must include it. Call it on one node only.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), NodeError> {
        if !members.contains_key(&self.id) {
            return Err(NodeError::Invalid(format!(
                "the members must include this node ({})",
                self.id
            )));
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                Err(NodeError::AlreadyInitialized(e.to_string()))
            }
            Err(RaftError::APIError(e)) => Err(NodeError::Invalid(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(NodeError::Stopped(e.to_string())),
        }
    }

    /// Adds node `id` at Raft address `addr` as a learner (on the leader). With `blocking`,
    /// waits (at most a minute) until it has caught up; it stays a learner either way.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: String,
        blocking: bool,
    ) -> Result<LogId, NodeError> {
        let adding = self.raft.add_learner(id, BasicNode { addr }, blocking);
        match tokio::time::timeout(LEARNER_CATCH_UP_WAIT, adding).await {
            Ok(result) => self.membership_result(result),
            Err(_) => Err(NodeError::Timeout(format!(
                "learner {id} did not catch up within {LEARNER_CATCH_UP_WAIT:?} (it was added)"
            ))),
        }
    }

    /// Makes `voters` the voters (on the leader); each must be a member already (add it as
    /// a learner first). A voter left out stays a learner with `retain`, else leaves.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        retain: bool,
    ) -> Result<LogId, NodeError> {
        if voters.is_empty() {
            return Err(NodeError::Invalid("a membership with no voters".into()));
        }
        let result = self.raft.change_membership(voters, retain).await;
        self.membership_result(result)
    }

    /// Removes node `id` from the cluster (on the leader), whether voter or learner.
    pub async fn remove_node(&self, id: NodeId) -> Result<LogId, NodeError> {
        let (is_voter, is_learner) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            let membership = m.membership_config.membership();
            let is_voter = membership.voter_ids().any(|v| v == id);
            let is_learner = membership.learner_ids().any(|l| l == id);
            (is_voter, is_learner)
        };
        let change = match (is_voter, is_learner) {
            (true, _) => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            (false, true) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
            (false, false) => {
                return Err(NodeError::Invalid(format!(
                    "node {id} is not a member of this node's membership"
                )))
            }
        };
        let result = self.raft.change_membership(change, false).await;
        self.membership_result(result)
    }

    fn membership_result(
        &self,
        result: Result<
            openraft::raft::ClientWriteResponse<TypeConfig>,
            RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
        >,
    ) -> Result<LogId, NodeError> {
        match result {
            Ok(resp) => Ok(resp.log_id),
            Err(e) => Err(self.write_error(e)),
        }
    }

    fn write_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> NodeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => not_leader(to),
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(to)) => {
                NodeError::Uncertain(to.to_string())
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                NodeError::Membership(e.to_string())
            }
            RaftError::APIError(e) => NodeError::Membership(e.to_string()),
            RaftError::Fatal(e) => NodeError::Stopped(e.to_string()),
        }
    }

    /// Commits `request` through this node, which must be the leader; returns once it is
    /// committed and applied here.
    ///
    /// A leader whose lease has lapsed (newly elected, or cut off from the quorum) takes no
    /// writes: the write is tried again until the lease is back or an election timeout has
    /// passed, then fails with [`NodeError::NoQuorum`].
    pub async fn write(&self, request: Request) -> Result<Written, NodeError> {
        check_request(&request, self.max_request_bytes)?;
        let patience = Duration::from_millis(self.raft.config().election_timeout_max);
        let deadline = deadline_after(patience);
        loop {
            match self.raft.client_write(request.clone()).await {
                Ok(resp) => {
                    return Ok(Written {
                        log_id: resp.log_id,
                        response: resp.data,
                    })
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to)))
                    if to.reason == ForwardReason::LeaseExpired =>
                {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(NodeError::NoQuorum(format!(
                            "the leader's lease has lapsed for {patience:?}"
                        )));
                    }
                    tokio::time::sleep(LEASE_RETRY_INTERVAL).await;
                }
                Err(e) => return Err(self.write_error(e)),
            }
        }
    }

    /// Reads `key` of `table`, linearizably: this node must be the leader; it confirms its
    /// leadership with a quorum (read index) and waits until it has applied through that
    /// index, so the value reflects every write acknowledged before the read began.
    pub async fn read(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, NodeError> {
        check_read(table, key)?;
        let linearizer = match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(linearizer) => linearizer,
            Err(RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(
                to,
            ))) => return Err(not_leader(to)),
            Err(RaftError::APIError(e)) => return Err(NodeError::NoQuorum(e.to_string())),
            Err(RaftError::Fatal(e)) => return Err(NodeError::Stopped(e.to_string())),
        };
        match linearizer
            .try_await_ready(&self.raft, Some(READ_APPLY_WAIT))
            .await
        {
            Ok(Ok(_)) => self.get(table, key),
            Ok(Err(state)) => Err(NodeError::Timeout(format!(
                "applying through the read index {} (applied: {:?})",
                state.read_log_id().index(),
                state.applied()
            ))),
            Err(e) => Err(NodeError::Stopped(e.to_string())),
        }
    }

    /// Reads `key` of `table` from this node's state machine, whatever its role, if this
    /// node can vouch that the value is at most `max_staleness` stale; else
    /// [`NodeError::Stale`].
    ///
    /// The bound, on this node's monotonic clock (no clocks are compared across nodes):
    /// the read is answered only if
    /// 1. this node heard from an established leader within `max_staleness` before the
    ///    read: as a follower or learner, it accepted a message (a heartbeat, entries or a
    ///    snapshot) carrying that leader's committed vote (openraft's
    ///    `RaftState::vote_last_modified`); as the leader, a quorum acknowledged it
    ///    (`last_quorum_acked`); and
    /// 2. its state machine has applied every entry that leader had reported committed
    ///    (the read waits for that for at most the rest of `max_staleness`, and 10 s).
    ///
    /// The value then reflects every write the leader had committed when it sent that
    /// message: every write acknowledged to its client more than `max_staleness` plus the
    /// one-way network delay before the read began. Later writes may be missing. On a
    /// follower, choose `max_staleness` above the heartbeat interval (200 ms by default), or
    /// most reads are refused between heartbeats.
    ///
    /// It is not linearizable, and the bound holds only while the leader this node follows
    /// is the cluster's leader: a leader cut off from the majority by a partition keeps the
    /// followers on its side in contact and can commit nothing, so writes a newer leader
    /// commits on the other side are missing however small `max_staleness` is. Use
    /// [`Node::read`] where that matters.
    pub async fn read_local(
        &self,
        table: &str,
        key: &[u8],
        max_staleness: Duration,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        check_read(table, key)?;
        let view = self.leader_view().await?;
        let Some(contact) = view.contact_age else {
            return Err(NodeError::Stale("no established leader is known".into()));
        };
        if contact > max_staleness {
            return Err(NodeError::Stale(format!(
                "last heard from leader {} {contact:?} ago; the bound is {max_staleness:?}",
                view.leader.map_or("?".into(), |l| l.to_string())
            )));
        }
        if view.applied < view.committed {
            // openraft's waits overflow on huge timeouts; the wait is short anyway.
            let rest = (max_staleness - contact).min(READ_APPLY_WAIT);
            let applied = self
                .raft
                .wait(Some(rest))
                .applied_index_at_least(view.committed, "read_local catching up")
                .await;
            if applied.is_err() {
                return Err(NodeError::Stale(format!(
                    "applied {:?} of the {:?} the leader reported committed, within the bound",
                    self.raft
                        .metrics()
                        .borrow_watched()
                        .last_applied
                        .map(|l| l.index),
                    view.committed
                )));
            }
        }
        self.get(table, key)
    }

    /// This node's view of its leader, for [`Node::read_local`] and [`Node::metrics`].
    async fn leader_view(&self) -> Result<LeaderView, NodeError> {
        let id = self.id;
        let (leader, contact_age, committed) = self
            .raft
            .with_raft_state(move |state| {
                let vote = state.vote_ref();
                let leader = vote.is_committed().then(|| vote.leader_id().node_id);
                let contact = match leader {
                    Some(leader) if leader != id => {
                        state.vote_last_modified().map(|at| at.elapsed())
                    }
                    _ => None,
                };
                let committed = state.cluster_committed().map(|l| l.index);
                (leader, contact, committed)
            })
            .await
            .map_err(|e| NodeError::Stopped(e.to_string()))?;
        let metrics = self.raft.metrics().borrow_watched().clone();
        let contact_age = match leader {
            // The only voter is its own quorum.
            Some(leader) if leader == id && only_voter(&metrics, id) => Some(Duration::ZERO),
            Some(leader) if leader == id => {
                metrics.last_quorum_acked.as_ref().map(|at| at.elapsed())
            }
            _ => contact_age,
        };
        Ok(LeaderView {
            leader,
            contact_age,
            committed: committed.max(metrics.local_committed.map(|l| l.index)),
            applied: metrics.last_applied.map(|l| l.index),
        })
    }

    /// The value of `key` in `table` in the state machine now.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, NodeError> {
        with_current_db(&self.sm, |db| {
            let txn = db.read()?;
            Ok(txn.get(table, key)?.map(<[u8]>::to_vec))
        })
    }

    /// A digest of every table's key/value pairs in this node's state machine now, but for
    /// the state machine's own tables (`_raft*`): equal on nodes that applied the same
    /// entries. It reads every pair (blocking).
    pub fn digest(&self) -> Result<Digest, NodeError> {
        with_current_db(&self.sm, |db| {
            let txn = db.read()?;
            let mut hasher = Fnv1a::default();
            let mut entries = 0;
            // Tables now: the snapshot's and any created since (those read as empty).
            for table in db.tables()? {
                if table.starts_with(META_TABLE) {
                    continue;
                }
                for pair in txn.range(&table, ..)? {
                    let (key, value) = pair?;
                    hasher.field(table.as_bytes());
                    hasher.field(key);
                    hasher.field(value);
                    entries += 1;
                }
            }
            Ok(Digest {
                entries,
                hash: hasher.0,
            })
        })
    }

    /// Its state, with each member's lag on the leader.
    pub async fn metrics(&self) -> NodeMetrics {
        let m = self.raft.metrics().borrow_watched().clone();
        let view = self.leader_view().await.ok();
        let membership = m.membership_config.membership();
        let index = |l: Option<LogId>| l.map(|l| l.index);
        let last_applied = index(m.last_applied);
        let cluster_committed = index(m.cluster_committed);
        let mut replication = BTreeMap::new();
        if let (Some(matched), Some(acks)) = (&m.replication, &m.heartbeat) {
            for (&id, matched) in matched.iter().filter(|(&id, _)| id != self.id) {
                let matched = index(*matched);
                replication.insert(
                    id,
                    ReplicaLag {
                        matched,
                        entries_behind: m
                            .last_log_index
                            .unwrap_or(0)
                            .saturating_sub(matched.unwrap_or(0)),
                        seconds_behind: self.lag.seconds_behind(matched, m.last_log_index),
                        last_ack_ms: acks
                            .get(&id)
                            .and_then(|at| at.as_ref())
                            .map(|at| millis(at.elapsed())),
                    },
                );
            }
        }
        NodeMetrics {
            id: m.id,
            state: format!("{:?}", m.state),
            current_leader: m.current_leader,
            current_term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied,
            committed: index(m.local_committed),
            cluster_committed,
            snapshot: index(m.snapshot),
            purged: index(m.purged),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            leader_contact_ms: view.and_then(|v| v.contact_age).map(millis),
            apply_lag: cluster_committed
                .unwrap_or(0)
                .saturating_sub(last_applied.unwrap_or(0)),
            replication,
        }
    }

    /// The client address of node `id` (its [`NodeConfig::client_addr`]), asking it over
    /// its Raft address from this node's membership; remembered per Raft address.
    pub async fn client_addr_of(&self, id: NodeId) -> Option<String> {
        if id == self.id {
            return self.client_addr.clone();
        }
        let raft_addr = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config.membership().get_node(&id)?.addr.clone()
        };
        if let Some((known_at, client_addr)) = self.client_addrs.lock().get(&id) {
            if *known_at == raft_addr {
                return client_addr.clone();
            }
        }
        let info = peer_info(&raft_addr, PEER_INFO_WAIT).await.ok()?;
        if info.id != id {
            return None;
        }
        self.client_addrs
            .lock()
            .insert(id, (raft_addr, info.client_addr.clone()));
        info.client_addr
    }

    /// Waits (at most a day) until this node knows a leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, NodeError> {
        let m = self
            .raft
            .wait(Some(timeout.min(MAX_WAIT)))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|e| NodeError::Timeout(e.to_string()))?;
        m.current_leader
            .ok_or_else(|| NodeError::Timeout("no leader".into()))
    }

    /// Waits (at most a day) until this node has applied through log index `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), NodeError> {
        self.raft
            .wait(Some(timeout.min(MAX_WAIT)))
            .applied_index_at_least(Some(index), "applied")
            .await
            .map(drop)
            .map_err(|e| NodeError::Timeout(e.to_string()))
    }

    /// Stops the node: its Raft, then its RPC server, then closes the state machine's
    /// database. Calling it again does nothing more.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let stopped = self.raft.shutdown().await;
        self.lag_watch.abort();
        if let Some(mut server) = self.server.lock().await.take() {
            server.shutdown().await;
        }
        let db = self.sm.db();
        let closed = tokio::task::spawn_blocking(move || db.close())
            .await
            .map_err(io::Error::other)?;
        match closed {
            Ok(()) | Err(walmdb::Error::Closed) => {}
            Err(e) => return Err(e.into()),
        }
        stopped.map_err(|e| NodeError::Stopped(format!("the Raft task failed: {e}")))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.lag_watch.abort();
    }
}

struct LeaderView {
    leader: Option<NodeId>,
    /// Since this node last heard from that leader (as the leader: since a quorum ack).
    contact_age: Option<Duration>,
    /// The last index it knows committed.
    committed: Option<u64>,
    applied: Option<u64>,
}

fn only_voter(metrics: &openraft::RaftMetrics<TypeConfig>, id: NodeId) -> bool {
    let mut voters = metrics.membership_config.membership().voter_ids();
    voters.next() == Some(id) && voters.next().is_none()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn not_leader(to: ForwardToLeader<TypeConfig>) -> NodeError {
    if to.reason == ForwardReason::LeaseExpired {
        return NodeError::NoQuorum("the leader's lease has lapsed".into());
    }
    NodeError::NotLeader {
        leader_id: to.leader_id,
        leader_addr: to.leader_node.map(|n| n.addr),
    }
}

/// Runs `f` on the state machine's database, once more on the new one if a snapshot
/// install closed it meanwhile.
fn with_current_db<T>(
    sm: &StateMachine,
    f: impl Fn(&walmdb::Db) -> walmdb::Result<T>,
) -> Result<T, NodeError> {
    match f(&sm.db()) {
        Err(walmdb::Error::Closed) => Ok(f(&sm.db())?),
        other => Ok(other?),
    }
}

fn check_table(table: &str) -> Result<(), NodeError> {
    if table.is_empty() || table.len() > walmdb::MAX_TABLE_NAME_LEN || table.contains('\0') {
        return Err(NodeError::Invalid(format!(
            "table name {table:?}: 1 to {} bytes, no NUL",
            walmdb::MAX_TABLE_NAME_LEN
        )));
    }
    if table.starts_with(META_TABLE) {
        return Err(NodeError::Invalid(format!(
            "table {table:?}: names beginning {META_TABLE:?} are the state machine's"
        )));
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<(), NodeError> {
    if key.is_empty() || key.len() > walmdb::MAX_KEY_LEN {
        return Err(NodeError::Invalid(format!(
            "a key of {} bytes: keys are 1 to {} bytes",
            key.len(),
            walmdb::MAX_KEY_LEN
        )));
    }
    Ok(())
}

fn check_read(table: &str, key: &[u8]) -> Result<(), NodeError> {
    check_table(table)?;
    check_key(key)
}

/// Refuses a request the state machine could not apply (it would fail on every node).
fn check_request(request: &Request, limit: usize) -> Result<(), NodeError> {
    if request.writes.is_empty() {
        return Err(NodeError::Invalid("a request with no writes".into()));
    }
    for write in &request.writes {
        let (crate::Write::Put { table, key, .. } | crate::Write::Delete { table, key }) = write;
        check_table(table)?;
        check_key(key)?;
    }
    let size = postcard::to_allocvec(request)
        .map_err(|e| NodeError::Invalid(format!("encoding the request: {e}")))?
        .len();
    if size > limit {
        return Err(NodeError::TooLarge { size, limit });
    }
    Ok(())
}

/// 64-bit FNV-1a over length-prefixed fields.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_the_state_machine_cannot_apply_are_refused() {
        let bad = [
            Request::default(),
            Request::put("", b"k", b"v"),
            Request::put("_raft", b"k", b"v"),
            Request::put("t", b"", b"v"),
            Request::put("t", &[0; 512], b"v"),
            Request::put("t", b"k", &vec![0; MAX_REQUEST_BYTES]),
        ];
        for request in &bad {
            assert!(
                check_request(request, MAX_REQUEST_BYTES).is_err(),
                "{request:?}"
            );
        }
        assert!(check_request(&Request::put("t", b"k", b"v"), MAX_REQUEST_BYTES).is_ok());
        assert!(matches!(
            check_request(&Request::put("t", b"k", &[0; 200]), 100),
            Err(NodeError::TooLarge { limit: 100, .. })
        ));
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_missing_entry() {
        let clock = LagClock::default();
        clock.note(10, true);
        std::thread::sleep(Duration::from_millis(20));
        clock.note(20, false);
        assert_eq!(clock.seconds_behind(Some(20), Some(20)), Some(0.0));
        let behind_both = clock.seconds_behind(Some(5), Some(20)).unwrap();
        let behind_one = clock.seconds_behind(Some(15), Some(20)).unwrap();
        assert!(behind_both >= 0.02 && behind_one < behind_both);
    }
}
