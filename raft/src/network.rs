//! The Raft RPC transport: openraft's messages over plain TCP.
//!
//! A connection carries frames, one request and then its reply at a time. A frame is
//! `len: u32` little-endian (the bytes after it, at most [`MAX_FRAME_BYTES`]), a version
//! byte ([`WIRE_VERSION`]), the message in postcard, and a CRC32 of the message,
//! little-endian. A request names the node it is for; a node answers a request meant for
//! another node with a failure, so an address now held by another node is unreachable, not a
//! peer.
//!
//! A snapshot goes as `SnapshotBegin` (vote, metadata, size), then `SnapshotChunk`s of at
//! most [`SNAPSHOT_CHUNK_BYTES`] read from the file as they are sent, then `SnapshotEnd`
//! (the CRC32 of the whole file). The receiver writes the chunks to a file of its own
//! (`received-*.tar` in the node's `snapshot/` directory, mode 0600), checks size and CRC,
//! installs it with `Raft::install_full_snapshot`, answers once and removes the file.
//! Neither side holds a whole snapshot in memory.
//!
//! Client side ([`NetworkFactory`], [`PeerClient`]): one connection per openraft client
//! (openraft makes one for each replication stream, heartbeat sender and snapshot sender),
//! kept between RPCs and dropped on any error; an RPC that fails on a kept connection (the
//! peer may have closed it) is tried once more on a new one. Errors: no connection →
//! `Unreachable` (openraft backs off), an I/O error on an open connection → `NetworkError`
//! (openraft retries at once), past `RPCOption::soft_ttl` → `Timeout`, a peer that cannot
//! serve (its Raft stopped, another node at that address) → `Unreachable`.
//!
//! Server side ([`RpcServer`]): an accept loop serving each connection on a task of its own,
//! into a [`Raft`]; stopping it closes every connection. Bad input from a socket closes that
//! connection and nothing else.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::entry::RaftEntry;
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::vote::RaftLeaderId;
use openraft::{BasicNode, ErrorSubject, ErrorVerb, OptionalSend, RPCTypes, StorageError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};

use crate::{LogId, NodeId, Raft, SnapshotFile, SnapshotMeta, TypeConfig, Vote};

/// The largest frame (after its length field) either side sends or accepts.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// The version byte of every frame this build writes and reads.
pub const WIRE_VERSION: u8 = 1;
/// The most snapshot bytes one frame carries.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Connections a server serves at once; it closes those beyond.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection with no request for this long is closed (its client reconnects).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server waits for the next frame of a snapshot, or for a reply to be taken.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Room left in a frame for an AppendEntries request's fields besides its entries.
const ENVELOPE_MARGIN: usize = 64 << 10;
/// The prefix of the files a server writes received snapshots to.
const RECEIVED_PREFIX: &str = "received-";

/// A request as sent: the node it is for (`None`: whichever node serves the address) and
/// the call.
#[derive(Debug, Serialize, Deserialize)]
struct WireRequest {
    to: Option<NodeId>,
    rpc: Rpc,
}

#[derive(Debug, Serialize, Deserialize)]
enum Rpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// Opens a snapshot transfer of `size` bytes; chunks and an end follow, then one reply.
    SnapshotBegin {
        vote: Vote,
        meta: SnapshotMeta,
        size: u64,
    },
    SnapshotChunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Closes a snapshot transfer: the CRC32 of every byte sent.
    SnapshotEnd {
        crc32: u32,
    },
    /// Who serves this address.
    Info,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    Info(PeerInfo),
    /// The node could not serve the request (its Raft stopped, it is another node, ...).
    Failed(String),
}

/// What a node says about itself ([`peer_info`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its Raft node id.
    pub id: NodeId,
    /// The address its clients use (e.g. its HTTP API), if it has one.
    pub client_addr: Option<String>,
}

// ---- frames ----

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

fn over_limit(len: usize) -> String {
    format!("a frame of {len} bytes: over the {MAX_FRAME_BYTES}-byte limit")
}

/// `msg` as one frame, length field included; refuses a frame over [`MAX_FRAME_BYTES`].
fn encode_frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let mut frame = vec![0, 0, 0, 0, WIRE_VERSION];
    let mut frame = postcard::to_extend(msg, std::mem::take(&mut frame))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("encode: {e}")))?;
    let crc = crc32fast::hash(&frame[5..]);
    frame.extend_from_slice(&crc.to_le_bytes());
    let len = frame.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, over_limit(len)));
    }
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

/// A frame's message from the bytes after its length field.
fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(invalid("an empty frame"));
    };
    if version != WIRE_VERSION {
        return Err(invalid(format!(
            "a frame of wire version {version}; this build speaks {WIRE_VERSION}"
        )));
    }
    if rest.len() < 4 {
        return Err(invalid("a frame too short for its CRC"));
    }
    let (body, crc) = rest.split_at(rest.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(invalid("a frame that fails its CRC"));
    }
    postcard::from_bytes(body).map_err(|e| invalid(format!("a malformed frame: {e}")))
}

/// Reads one frame; `None` if the stream ends cleanly before it.
async fn read_frame<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    if r.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(invalid(over_limit(len)));
    }
    // Grows as bytes arrive: a length field alone allocates nothing.
    let mut bytes = Vec::with_capacity(len.min(64 << 10));
    let got = (&mut *r).take(len as u64).read_to_end(&mut bytes).await?;
    if got < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the stream ended {got} bytes into a frame of {len}"),
        ));
    }
    decode_frame(&bytes).map(Some)
}

async fn write_frame<T: Serialize>(w: &mut (impl AsyncWrite + Unpin), msg: &T) -> io::Result<()> {
    w.write_all(&encode_frame(msg)?).await
}

/// The bytes postcard encodes `value` into.
fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    match postcard::to_io(value, Counter(0)) {
        Ok(counter) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// Cuts `rpc`'s entries to a prefix that fits in a frame of `max_frame` bytes; returns the
/// last log id kept if it cut any. An entry too large for a frame alone is an error.
fn fit_in_frame(
    rpc: &mut AppendEntriesRequest<TypeConfig>,
    max_frame: usize,
) -> Result<Option<LogId>, String> {
    if encoded_len(rpc).saturating_add(ENVELOPE_MARGIN) <= max_frame {
        return Ok(None);
    }
    let budget = max_frame.saturating_sub(ENVELOPE_MARGIN);
    let mut total = 0usize;
    let mut keep = 0;
    for entry in &rpc.entries {
        let len = encoded_len(entry);
        if total.saturating_add(len) > budget {
            break;
        }
        total += len;
        keep += 1;
    }
    if keep == 0 {
        let first = rpc.entries.first().map(|e| e.log_id());
        return Err(format!(
            "log entry {first:?} is over the {max_frame}-byte frame limit by itself"
        ));
    }
    rpc.entries.truncate(keep);
    Ok(rpc.entries.last().map(|e| e.log_id()))
}

/// `ttl` from now, or as far as the clock goes: a deadline never overflows.
pub(crate) fn deadline_after(ttl: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

// ---- client ----

/// Makes openraft's clients to other nodes ([`PeerClient`]s); `BasicNode::addr` is the
/// peer's Raft address.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    id: NodeId,
}

impl NetworkFactory {
    /// The factory of node `id` (named in timeouts it reports).
    pub fn new(id: NodeId) -> NetworkFactory {
        NetworkFactory { id }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient::new(self.id, target, node.addr.clone())
    }
}

/// One openraft client to one peer: a connection, opened when first needed, kept while it
/// works.
#[derive(Debug)]
pub struct PeerClient {
    id: NodeId,
    target: NodeId,
    addr: String,
    conn: Option<TcpStream>,
}

/// Why a call failed.
enum CallError {
    /// No connection could be made.
    Connect(io::Error),
    /// The connection failed, or the peer broke the protocol.
    Io(io::Error),
    /// The call was not done by its deadline.
    Timeout,
    /// The peer answered that it cannot serve the call.
    Refused(String),
    /// This side could not make the request.
    Local(String),
}

impl PeerClient {
    /// A client of node `id` to node `target` at `addr`; connects on its first call.
    pub fn new(id: NodeId, target: NodeId, addr: String) -> PeerClient {
        PeerClient {
            id,
            target,
            addr,
            conn: None,
        }
    }

    async fn connect(&self, deadline: Instant) -> Result<TcpStream, CallError> {
        match timeout_at(deadline, TcpStream::connect(&self.addr)).await {
            Ok(Ok(stream)) => {
                // Small frames go at once (Nagle would hold heartbeats back).
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(CallError::Connect(e)),
            Err(_) => Err(CallError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "connecting timed out",
            ))),
        }
    }

    /// Sends `rpc` and returns the reply, on the kept connection (then once more on a new
    /// one if that fails) or on a new one, all by `deadline`. The connection is kept only
    /// after a reply.
    async fn call(&mut self, rpc: Rpc, deadline: Instant) -> Result<Reply, CallError> {
        let request = WireRequest {
            to: Some(self.target),
            rpc,
        };
        let frame = encode_frame(&request).map_err(|e| CallError::Local(e.to_string()))?;
        let mut retry = self.conn.is_some();
        loop {
            let mut stream = match self.conn.take() {
                Some(stream) => stream,
                None => self.connect(deadline).await?,
            };
            match timeout_at(deadline, round_trip(&mut stream, &frame)).await {
                Ok(Ok(Reply::Failed(why))) => return Err(CallError::Refused(why)),
                Ok(Ok(reply)) => {
                    self.conn = Some(stream);
                    return Ok(reply);
                }
                Ok(Err(_)) if retry => retry = false,
                Ok(Err(e)) => return Err(CallError::Io(e)),
                Err(_) => return Err(CallError::Timeout),
            }
        }
    }

    fn rpc_error(&self, e: CallError, action: RPCTypes, ttl: Duration) -> RPCError<TypeConfig> {
        rpc_error(self.id, self.target, &self.addr, e, action, ttl)
    }

    /// A reply of the wrong kind: the connection is dropped.
    fn unexpected(&mut self, reply: &Reply) -> RPCError<TypeConfig> {
        self.conn = None;
        RPCError::Network(NetworkError::from_string(format!(
            "node {} at {}: an unexpected reply {reply:?}",
            self.target, self.addr
        )))
    }

    async fn vote_call(
        &mut self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.soft_ttl();
        match self.call(rpc, deadline_after(ttl)).await {
            Ok(Reply::Vote(resp)) => Ok(resp),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, ttl)),
        }
    }

    /// Streams the snapshot file to the peer and waits for its reply; each step (connect,
    /// each frame written, the reply, which includes the peer's install) within `ttl`.
    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        ttl: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let meta = snapshot.meta;
        let signature = meta.signature();
        let storage_error = |e: io::Error| {
            StreamingError::StorageError(StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(signature.clone())),
                ErrorVerb::Read,
                e,
            ))
        };
        let mut file = tokio::fs::File::open(snapshot.snapshot.path())
            .await
            .map_err(storage_error)?;
        let size = file.metadata().await.map_err(storage_error)?.len();
        // A transfer starts on a new connection: a kept one may have been closed by the peer
        // while idle, and a transfer cannot be retried from the middle.
        self.conn = None;
        let mut stream = self
            .connect(deadline_after(ttl))
            .await
            .map_err(|e| streaming(self.rpc_error(e, RPCTypes::InstallSnapshot, ttl)))?;
        let to = Some(self.target);
        let (id, target, addr) = (self.id, self.target, self.addr.clone());
        let io_error = move |e: CallError| {
            streaming(rpc_error(
                id,
                target,
                &addr,
                e,
                RPCTypes::InstallSnapshot,
                ttl,
            ))
        };
        let begin = WireRequest {
            to,
            rpc: Rpc::SnapshotBegin { vote, meta, size },
        };
        send_within(&mut stream, &begin, ttl)
            .await
            .map_err(&io_error)?;
        let mut crc = crc32fast::Hasher::new();
        let mut sent = 0u64;
        let mut chunk = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        loop {
            let n = read_up_to(&mut file, &mut chunk)
                .await
                .map_err(storage_error)?;
            if n == 0 {
                break;
            }
            crc.update(&chunk[..n]);
            sent += n as u64;
            let frame = WireRequest {
                to,
                rpc: Rpc::SnapshotChunk(chunk[..n].to_vec()),
            };
            send_within(&mut stream, &frame, ttl)
                .await
                .map_err(&io_error)?;
        }
        if sent != size {
            return Err(storage_error(invalid(format!(
                "the snapshot file changed while being sent: {size} bytes, then {sent}"
            ))));
        }
        let end = WireRequest {
            to,
            rpc: Rpc::SnapshotEnd {
                crc32: crc.finalize(),
            },
        };
        send_within(&mut stream, &end, ttl)
            .await
            .map_err(&io_error)?;
        let reply = match timeout(ttl, read_frame::<Reply>(&mut stream)).await {
            Ok(Ok(Some(reply))) => reply,
            Ok(Ok(None)) => {
                return Err(io_error(CallError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection before replying to a snapshot",
                ))))
            }
            Ok(Err(e)) => return Err(io_error(CallError::Io(e))),
            Err(_) => return Err(io_error(CallError::Timeout)),
        };
        match reply {
            Reply::Snapshot(resp) => {
                self.conn = Some(stream);
                Ok(resp)
            }
            Reply::Failed(why) => Err(io_error(CallError::Refused(why))),
            other => Err(streaming(self.unexpected(&other))),
        }
    }
}

/// `e` as openraft's error for a call of node `id` to node `target` at `addr`.
fn rpc_error(
    id: NodeId,
    target: NodeId,
    addr: &str,
    e: CallError,
    action: RPCTypes,
    ttl: Duration,
) -> RPCError<TypeConfig> {
    match e {
        CallError::Connect(e) => RPCError::Unreachable(Unreachable::from_string(format!(
            "node {target} at {addr}: {e}"
        ))),
        CallError::Io(e) => RPCError::Network(NetworkError::from_string(format!(
            "node {target} at {addr}: {e}"
        ))),
        CallError::Timeout => RPCError::Timeout(Timeout {
            action,
            id,
            target,
            timeout: ttl,
        }),
        CallError::Refused(why) | CallError::Local(why) => RPCError::Unreachable(
            Unreachable::from_string(format!("node {target} at {addr}: {why}")),
        ),
    }
}

/// Writes `frame` and reads one reply.
async fn round_trip(stream: &mut TcpStream, frame: &[u8]) -> io::Result<Reply> {
    stream.write_all(frame).await?;
    read_frame(stream).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection before replying",
        )
    })
}

async fn send_within(
    stream: &mut TcpStream,
    request: &WireRequest,
    ttl: Duration,
) -> Result<(), CallError> {
    let frame = encode_frame(request).map_err(|e| CallError::Local(e.to_string()))?;
    match timeout(ttl, stream.write_all(&frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CallError::Io(e)),
        Err(_) => Err(CallError::Timeout),
    }
}

/// Fills `buf` from `file` as far as it goes; returns the bytes read (0: at its end).
async fn read_up_to(file: &mut tokio::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn streaming(e: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Timeout(e) => StreamingError::Timeout(e),
        RPCError::Unreachable(e) => StreamingError::Unreachable(e),
        RPCError::Network(e) => StreamingError::Network(e),
        RPCError::RemoteError(e) => {
            StreamingError::Unreachable(Unreachable::from_string(e.to_string()))
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    /// Sends as many of the entries as fit in a frame; a cut request that succeeds answers
    /// `PartialSuccess` with the last entry sent, and openraft sends the rest next.
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.soft_ttl();
        let cut_at = fit_in_frame(&mut rpc, MAX_FRAME_BYTES)
            .map_err(|why| self.rpc_error(CallError::Local(why), RPCTypes::AppendEntries, ttl))?;
        match self
            .call(Rpc::AppendEntries(rpc), deadline_after(ttl))
            .await
        {
            Ok(Reply::AppendEntries(AppendEntriesResponse::Success)) if cut_at.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(cut_at))
            }
            Ok(Reply::AppendEntries(resp)) => Ok(resp),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, ttl)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(Rpc::Vote(rpc), &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(Rpc::PreVote(rpc), &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let ttl = option.soft_ttl();
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = self.send_snapshot(vote, snapshot, ttl) => sent,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.soft_ttl();
        match self
            .call(Rpc::TransferLeader(req), deadline_after(ttl))
            .await
        {
            Ok(Reply::TransferLeader(resp)) => Ok(resp),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(self.rpc_error(e, RPCTypes::TransferLeader, ttl)),
        }
    }
}

/// Asks whichever node serves the Raft address `addr` who it is, within `ttl`.
pub async fn peer_info(addr: &str, ttl: Duration) -> io::Result<PeerInfo> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let request = WireRequest {
            to: None,
            rpc: Rpc::Info,
        };
        write_frame(&mut stream, &request).await?;
        match round_trip_reply(&mut stream).await? {
            Reply::Info(info) => Ok(info),
            Reply::Failed(why) => Err(io::Error::other(why)),
            other => Err(invalid(format!("an unexpected reply {other:?}"))),
        }
    };
    timeout(ttl, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{addr}: timed out")))?
}

async fn round_trip_reply(stream: &mut TcpStream) -> io::Result<Reply> {
    read_frame(stream).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection before replying",
        )
    })
}

// ---- server ----

/// What an [`RpcServer`] serves: node `id`'s Raft.
#[derive(Clone)]
pub struct RpcService {
    /// The node's id: requests for another id are refused.
    pub id: NodeId,
    /// The Raft the RPCs go to.
    pub raft: Raft,
    /// Where received snapshots are written (the node's `snapshot/` directory).
    pub snapshot_dir: PathBuf,
    /// The node's client address, told to peers that ask ([`peer_info`]).
    pub client_addr: Option<String>,
}

struct Served {
    service: RpcService,
    /// Numbers received snapshot files.
    received: AtomicU64,
}

/// Serves Raft RPCs on a listener until shut down (or dropped).
#[derive(Debug)]
pub struct RpcServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept_loop: Option<tokio::task::JoinHandle<()>>,
}

impl RpcServer {
    /// Serves `service` on `listener`, on the current tokio runtime. Removes received
    /// snapshot files an earlier run left in `service.snapshot_dir`.
    pub fn start(listener: TcpListener, service: RpcService) -> io::Result<RpcServer> {
        let local_addr = listener.local_addr()?;
        remove_received_files(&service.snapshot_dir);
        let (stop, stopped) = watch::channel(false);
        let served = Arc::new(Served {
            service,
            received: AtomicU64::new(0),
        });
        let accept_loop = tokio::spawn(accept_loop(listener, served, stopped));
        Ok(RpcServer {
            local_addr,
            stop,
            accept_loop: Some(accept_loop),
        })
    }

    /// The address it serves.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection (a transfer in progress is abandoned) and
    /// waits until all are closed.
    pub async fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(accept_loop) = self.accept_loop.take() {
            if let Err(e) = accept_loop.await {
                tracing::warn!(error = %e, "the Raft RPC accept loop ended abnormally");
            }
        }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        // The accept loop ends and closes every connection.
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(listener: TcpListener, served: Arc<Served>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, "refusing a Raft connection: {MAX_CONNECTIONS} open");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, peer, served.clone()));
                }
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a Raft connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    // Aborts every connection task (a received file's guard removes it) and waits.
    connections.shutdown().await;
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, served: Arc<Served>) {
    if let Err(e) = serve(&mut stream, &served).await {
        tracing::warn!(%peer, error = %e, "closing a Raft connection");
    }
}

/// Serves requests until the peer closes the connection, idles, or breaks the protocol.
async fn serve(stream: &mut TcpStream, served: &Served) -> io::Result<()> {
    let service = &served.service;
    loop {
        let request: WireRequest = match timeout(IDLE_TIMEOUT, read_frame(stream)).await {
            Err(_) | Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(request))) => request,
            Ok(Err(e)) => return Err(e),
        };
        if let Some(to) = request.to.filter(|to| *to != service.id) {
            let why = format!("this is node {}, not node {to}", service.id);
            reply_within(stream, &Reply::Failed(why)).await?;
            return Ok(());
        }
        let raft = &service.raft;
        let reply = match request.rpc {
            Rpc::AppendEntries(rpc) => match raft.append_entries(rpc).await {
                Ok(resp) => Reply::AppendEntries(resp),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::Vote(rpc) => match raft.vote(rpc).await {
                Ok(resp) => Reply::Vote(resp),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::PreVote(rpc) => match raft.pre_vote(rpc).await {
                Ok(resp) => Reply::Vote(resp),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::TransferLeader(req) => match raft.handle_transfer_leader(req).await {
                Ok(resp) => Reply::TransferLeader(resp),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::SnapshotBegin { vote, meta, size } => {
                receive_snapshot(stream, served, vote, meta, size).await?
            }
            Rpc::SnapshotChunk(_) | Rpc::SnapshotEnd { .. } => {
                return Err(invalid("snapshot data outside a snapshot transfer"))
            }
            Rpc::Info => Reply::Info(PeerInfo {
                id: service.id,
                client_addr: service.client_addr.clone(),
            }),
        };
        reply_within(stream, &reply).await?;
    }
}

async fn reply_within(stream: &mut TcpStream, reply: &Reply) -> io::Result<()> {
    timeout(SERVER_IO_TIMEOUT, write_frame(stream, reply))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the peer took no reply"))?
}

/// A received snapshot's file, removed when dropped (installed, refused, or abandoned).
struct ReceivedFile(PathBuf);

impl Drop for ReceivedFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "removing a received snapshot");
            }
        }
    }
}

fn remove_received_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(RECEIVED_PREFIX)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A new file only this user may read, for a received snapshot.
fn create_private(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Receives the chunks after a `SnapshotBegin` into a file, checks them, installs the
/// snapshot and returns the reply. Bad data is an error (the connection closes).
async fn receive_snapshot(
    stream: &mut TcpStream,
    served: &Served,
    vote: Vote,
    meta: SnapshotMeta,
    size: u64,
) -> io::Result<Reply> {
    let service = &served.service;
    let n = served.received.fetch_add(1, Ordering::Relaxed);
    let path = service
        .snapshot_dir
        .join(format!("{RECEIVED_PREFIX}{}-{n}.tar", std::process::id()));
    let file = create_private(&path)?;
    let received_file = ReceivedFile(path.clone());
    let mut file = tokio::fs::File::from_std(file);
    let mut crc = crc32fast::Hasher::new();
    let mut received = 0u64;
    loop {
        let frame: WireRequest = match timeout(SERVER_IO_TIMEOUT, read_frame(stream)).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the peer closed the connection {received} bytes into a snapshot"),
                ))
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no snapshot data for {SERVER_IO_TIMEOUT:?}"),
                ))
            }
        };
        match frame.rpc {
            Rpc::SnapshotChunk(bytes) => {
                received += bytes.len() as u64;
                if received > size {
                    return Err(invalid(format!(
                        "more snapshot bytes than the {size} announced"
                    )));
                }
                crc.update(&bytes);
                file.write_all(&bytes).await?;
            }
            Rpc::SnapshotEnd { crc32 } => {
                if received != size {
                    return Err(invalid(format!(
                        "a snapshot of {received} bytes; {size} were announced"
                    )));
                }
                if crc.finalize() != crc32 {
                    return Err(invalid("a received snapshot that fails its CRC"));
                }
                break;
            }
            _ => return Err(invalid("another request inside a snapshot transfer")),
        }
    }
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    if let Some(why) = inconsistent(&service.raft, &vote, &meta).await {
        return Ok(Reply::Failed(why));
    }
    let snapshot = openraft::alias::SnapshotOf::<TypeConfig, SnapshotFile> {
        meta,
        snapshot: SnapshotFile::at(&path),
    };
    let reply = match service.raft.install_full_snapshot(vote, snapshot).await {
        Ok(resp) => Reply::Snapshot(resp),
        Err(e) => Reply::Failed(e.to_string()),
    };
    // Installed (copied into place) or refused: the received file goes.
    drop(received_file);
    Ok(reply)
}

/// Why a snapshot no correct leader sends must not reach openraft's install (which panics
/// on one): a last log id beyond the sender's vote, or one past the locally committed log
/// id but not at a greater index.
async fn inconsistent(raft: &Raft, vote: &Vote, meta: &SnapshotMeta) -> Option<String> {
    let last = meta.last_log_id?;
    if last.leader_id > vote.leader_id.to_committed() {
        return Some(format!(
            "a snapshot through {last} sent under vote {vote}: beyond its sender's leadership"
        ));
    }
    let committed = raft
        .with_raft_state(|state| state.local_committed().copied())
        .await
        .ok()
        .flatten();
    match committed {
        Some(committed) if last > committed && last.index <= committed.index => Some(format!(
            "a snapshot through {last} contradicts the committed log through {committed}"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_bytes(bytes: &[u8]) -> io::Result<Option<WireRequest>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let mut reader = bytes;
            read_frame(&mut reader).await
        })
    }

    fn info_frame() -> Vec<u8> {
        encode_frame(&WireRequest {
            to: Some(7),
            rpc: Rpc::Info,
        })
        .expect("encodes")
    }

    #[test]
    fn a_frame_round_trips() {
        let frame = info_frame();
        let request = decode_bytes(&frame).unwrap().unwrap();
        assert_eq!(request.to, Some(7));
        assert!(matches!(request.rpc, Rpc::Info));
        assert!(decode_bytes(&[]).unwrap().is_none());
    }

    #[test]
    fn damaged_frames_are_errors() {
        let frame = info_frame();
        let mut flipped = frame.clone();
        let last = flipped.len() - 5;
        flipped[last] ^= 0x40;
        assert!(decode_bytes(&flipped).is_err());
        let mut versioned = frame.clone();
        versioned[4] = WIRE_VERSION + 1;
        let e = decode_bytes(&versioned).unwrap_err();
        assert!(e.to_string().contains("wire version"), "{e}");
        assert!(decode_bytes(&frame[..frame.len() - 1]).is_err());
        assert!(decode_bytes(&[1, 0, 0, 0, WIRE_VERSION]).is_err());
        assert!(decode_bytes(&[0, 0, 0, 0]).is_err());
    }

    fn entry(index: u64, value_bytes: usize) -> crate::Entry {
        crate::Entry {
            log_id: LogId::new(*Vote::new_committed(1, 1).leader_id(), index),
            payload: openraft::EntryPayload::Normal(crate::Request::put(
                "t",
                b"k",
                &vec![7; value_bytes],
            )),
        }
    }

    #[test]
    fn append_entries_over_a_frame_are_cut_to_a_prefix() {
        let request = |sizes: &[usize]| AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: (1..).zip(sizes).map(|(i, &n)| entry(i, n)).collect(),
            leader_commit: None,
        };
        let max = ENVELOPE_MARGIN + 100_000;
        let mut small = request(&[10, 10]);
        assert_eq!(fit_in_frame(&mut small, max), Ok(None));
        assert_eq!(small.entries.len(), 2);
        let mut big = request(&[40_000, 40_000, 40_000, 10]);
        let cut = fit_in_frame(&mut big, max).unwrap();
        assert_eq!(cut.map(|l| l.index), Some(2));
        assert_eq!(big.entries.len(), 2);
        let mut huge = request(&[200_000]);
        assert!(fit_in_frame(&mut huge, max).is_err());
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_is_read() {
        let e = decode_bytes(&u32::MAX.to_le_bytes()).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        let big = WireRequest {
            to: None,
            rpc: Rpc::SnapshotChunk(vec![0; MAX_FRAME_BYTES]),
        };
        let e = encode_frame(&big).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }
}
