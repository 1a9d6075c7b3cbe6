//! `walmdb-raft-node`: one node of a walmdb-raft cluster, with a small HTTP key-value API.
//!
//! ```text
//! walmdb-raft-node --id 1 --dir /var/lib/n1 --raft-addr 127.0.0.1:7001 --http-addr 127.0.0.1:8001
//! ```
//!
//! Keys and values are UTF-8 strings here (the library takes bytes). Every reply is JSON;
//! a failure is `{"error": "..."}`. A write or linearizable read sent to a node that is not
//! the leader answers 421 with `leader_id` and `leader_http` (the leader's HTTP address, if
//! known) for the client to retry there.
//!
//! - `POST /write` `{"table","key","value"}` (no `value`, or null: delete) →
//!   `{"log_index","lsn"}`
//! - `GET /read?table=&key=` (linearizable) → `{"found","value"}`
//! - `GET /read_local?table=&key=&max_staleness_ms=` (this node's data, refused with 503 if
//!   it cannot vouch for the bound; default 1000 ms) → `{"found","value"}`
//! - `POST /init` `{"1": "raft addr", ...}` (on one new node)
//! - `POST /add_learner` `{"id","addr","blocking"}`, `POST /change_membership`
//!   `{"voters": [...], "retain"}`, `POST /remove_node` `{"id"}` (on the leader)
//! - `GET /metrics`: role, leader, term, log indexes, replica lag
//! - `GET /health`: `{"status","reasons"}` (503 when unhealthy): the database's health and
//!   the replication's (a leader known and heard from, replicas answering and near)
//! - `GET /digest`: `{"digest","entries"}` over the node's data (not `_raft*` tables)
//!
//! SIGINT or SIGTERM shut the node down cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use openraft::SnapshotPolicy;
use serde::Deserialize;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Response, Server};
use tokio::runtime::Handle;
use walmdb_raft::node::{Node, NodeConfig, NodeError};
use walmdb_raft::{NodeId, Request, Write};

/// The largest request body taken.
const MAX_BODY_BYTES: u64 = 8 << 20;
/// How often an idle HTTP worker looks whether the node is stopping.
const STOP_POLL: Duration = Duration::from_millis(200);
/// `max_staleness_ms` when a local read names none.
const DEFAULT_MAX_STALENESS_MS: u64 = 1000;

/// One node of a walmdb-raft cluster, with an HTTP key-value API.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// This node's Raft id (a positive integer, unique in the cluster).
    #[arg(long)]
    id: NodeId,
    /// This node's directory (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// The address to serve Raft RPCs on (peers are given it).
    #[arg(long)]
    raft_addr: String,
    /// The address to serve the HTTP API on.
    #[arg(long)]
    http_addr: String,
    /// Snapshot after this many applied entries; the log then keeps a tenth of them.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(10..=10_000_000))]
    snapshot_every: u64,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    http_threads: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walmdb-raft-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = Server::http(&args.http_addr)
        .map_err(|e| format!("binding the HTTP address {}: {e}", args.http_addr))?;
    let http_addr = match server.server_addr().to_ip() {
        Some(addr) => addr.to_string(),
        None => args.http_addr.clone(),
    };
    let mut config = NodeConfig::new(args.id, &args.dir, &args.raft_addr);
    config.client_addr = Some(http_addr.clone());
    config.raft.snapshot_policy = SnapshotPolicy::LogsSinceLast(args.snapshot_every);
    config.raft.max_in_snapshot_log_to_keep = args.snapshot_every / 10;
    config.raft.replication_lag_threshold = args.snapshot_every.saturating_mul(2);
    config.raft.purge_batch_size = (args.snapshot_every / 10).max(1);
    let node = Arc::new(runtime.block_on(Node::start(config))?);
    eprintln!(
        "walmdb-raft-node {}: Raft on {}, HTTP on {http_addr}, directory {}",
        args.id,
        node.raft_addr(),
        args.dir.display()
    );

    let server = Arc::new(server);
    let stopping = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..args.http_threads)
        .map(|_| {
            let (server, node, stopping) = (server.clone(), node.clone(), stopping.clone());
            let handle = runtime.handle().clone();
            std::thread::spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match server.recv_timeout(STOP_POLL) {
                        Ok(Some(request)) => serve(request, &node, &handle),
                        Ok(None) => {}
                        Err(e) => eprintln!("walmdb-raft-node: HTTP: {e}"),
                    }
                }
            })
        })
        .collect();

    runtime.block_on(stop_signal())?;
    eprintln!("walmdb-raft-node {}: shutting down", args.id);
    stopping.store(true, Ordering::Relaxed);
    for worker in workers {
        if worker.join().is_err() {
            eprintln!("walmdb-raft-node: an HTTP worker panicked");
        }
    }
    runtime.block_on(node.shutdown())?;
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted,
        _ = terminate.recv() => Ok(()),
    }
}

/// An HTTP reply: a status and a JSON body.
struct Reply {
    status: u16,
    body: Value,
}

fn ok(body: Value) -> Reply {
    Reply { status: 200, body }
}

fn fail(status: u16, message: impl std::fmt::Display) -> Reply {
    Reply {
        status,
        body: json!({ "error": message.to_string() }),
    }
}

fn serve(mut request: tiny_http::Request, node: &Node, rt: &Handle) {
    let reply = route(&mut request, node, rt);
    let body = serde_json::to_vec(&reply.body).unwrap_or_default();
    let mut response = Response::from_data(body).with_status_code(reply.status);
    if let Ok(header) = Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        response.add_header(header);
    }
    if let Err(e) = request.respond(response) {
        eprintln!("walmdb-raft-node: answering an HTTP request: {e}");
    }
}

fn route(request: &mut tiny_http::Request, node: &Node, rt: &Handle) -> Reply {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let query = parse_query(query);
    let method = request.method().clone();
    match (&method, path) {
        (Method::Get, "/metrics") => {
            let metrics = rt.block_on(node.metrics());
            serde_json::to_value(metrics).map_or_else(|e| fail(500, e), ok)
        }
        (Method::Get, "/health") => {
            let health = rt.block_on(node.health());
            let status = if health.status == "unhealthy" {
                503
            } else {
                200
            };
            serde_json::to_value(health)
                .map_or_else(|e| fail(500, e), |body| Reply { status, body })
        }
        (Method::Get, "/digest") => match node.digest() {
            Ok(digest) => ok(json!({
                "digest": digest.to_string(),
                "entries": digest.entries,
            })),
            Err(e) => error_reply(e, node, rt),
        },
        (Method::Get, "/read") => {
            let (table, key) = match table_and_key(&query) {
                Ok(found) => found,
                Err(reply) => return reply,
            };
            value_reply(rt.block_on(node.read(table, key.as_bytes())), node, rt)
        }
        (Method::Get, "/read_local") => {
            let (table, key) = match table_and_key(&query) {
                Ok(found) => found,
                Err(reply) => return reply,
            };
            let max_staleness_ms = match query.get("max_staleness_ms") {
                None => DEFAULT_MAX_STALENESS_MS,
                Some(ms) => match ms.parse::<u64>() {
                    Ok(ms) => ms,
                    Err(_) => return fail(400, "max_staleness_ms: a number of milliseconds"),
                },
            };
            let bound = Duration::from_millis(max_staleness_ms);
            value_reply(
                rt.block_on(node.read_local(table, key.as_bytes(), bound)),
                node,
                rt,
            )
        }
        (Method::Post, "/write") => {
            let body: WriteBody = match json_body(request) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let write = match body.value {
                Some(value) => Write::Put {
                    table: body.table,
                    key: body.key.into_bytes(),
                    value: value.into_bytes(),
                },
                None => Write::Delete {
                    table: body.table,
                    key: body.key.into_bytes(),
                },
            };
            let request = Request {
                writes: vec![write],
            };
            match rt.block_on(node.write(request)) {
                Ok(written) => ok(json!({
                    "log_index": written.log_id.index,
                    "lsn": written.response.lsn,
                })),
                Err(e) => error_reply(e, node, rt),
            }
        }
        (Method::Post, "/init") => {
            let members: BTreeMap<NodeId, String> = match json_body(request) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            match rt.block_on(node.initialize(members)) {
                Ok(()) => ok(json!({ "initialized": true })),
                Err(e) => error_reply(e, node, rt),
            }
        }
        (Method::Post, "/add_learner") => {
            let body: AddLearnerBody = match json_body(request) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let added = rt.block_on(node.add_learner(body.id, body.addr, body.blocking));
            membership_reply(added, node, rt)
        }
        (Method::Post, "/change_membership") => {
            let body: ChangeMembershipBody = match json_body(request) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let changed = rt.block_on(node.change_membership(body.voters, body.retain));
            membership_reply(changed, node, rt)
        }
        (Method::Post, "/remove_node") => {
            let body: RemoveNodeBody = match json_body(request) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            membership_reply(rt.block_on(node.remove_node(body.id)), node, rt)
        }
        (
            _,
            "/metrics" | "/health" | "/digest" | "/read" | "/read_local" | "/write" | "/init"
            | "/add_learner" | "/change_membership" | "/remove_node",
        ) => fail(405, format!("{method} is not served on {path}")),
        _ => fail(404, format!("no such endpoint: {path}")),
    }
}

#[derive(Deserialize)]
struct WriteBody {
    table: String,
    key: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct AddLearnerBody {
    id: NodeId,
    addr: String,
    #[serde(default = "yes")]
    blocking: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct ChangeMembershipBody {
    voters: BTreeSet<NodeId>,
    #[serde(default)]
    retain: bool,
}

#[derive(Deserialize)]
struct RemoveNodeBody {
    id: NodeId,
}

/// The request's body as JSON of type `T` (at most [`MAX_BODY_BYTES`]).
fn json_body<T: serde::de::DeserializeOwned>(request: &mut tiny_http::Request) -> Result<T, Reply> {
    let mut body = Vec::new();
    if let Err(e) = request
        .as_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut body)
    {
        return Err(fail(400, format!("reading the body: {e}")));
    }
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(fail(413, format!("a body over {MAX_BODY_BYTES} bytes")));
    }
    serde_json::from_slice(&body).map_err(|e| fail(400, format!("the body: {e}")))
}

fn table_and_key(query: &BTreeMap<String, String>) -> Result<(&str, &str), Reply> {
    match (query.get("table"), query.get("key")) {
        (Some(table), Some(key)) => Ok((table, key)),
        _ => Err(fail(400, "the query needs table= and key=")),
    }
}

fn value_reply(found: Result<Option<Vec<u8>>, NodeError>, node: &Node, rt: &Handle) -> Reply {
    match found {
        Ok(Some(value)) => ok(json!({
            "found": true,
            "value": String::from_utf8_lossy(&value),
        })),
        Ok(None) => ok(json!({ "found": false, "value": null })),
        Err(e) => error_reply(e, node, rt),
    }
}

fn membership_reply(
    changed: Result<walmdb_raft::LogId, NodeError>,
    node: &Node,
    rt: &Handle,
) -> Reply {
    match changed {
        Ok(log_id) => ok(json!({ "log_index": log_id.index })),
        Err(e) => error_reply(e, node, rt),
    }
}

fn error_reply(e: NodeError, node: &Node, rt: &Handle) -> Reply {
    let status = match &e {
        NodeError::NotLeader { leader_id, .. } => {
            let leader_http = leader_id.and_then(|id| rt.block_on(node.client_addr_of(id)));
            return Reply {
                status: 421,
                body: json!({
                    "error": e.to_string(),
                    "leader_id": leader_id,
                    "leader_http": leader_http,
                }),
            };
        }
        NodeError::Invalid(_) => 400,
        NodeError::TooLarge { .. } => 413,
        NodeError::AlreadyInitialized(_) | NodeError::Membership(_) => 409,
        NodeError::Stale(_)
        | NodeError::NoQuorum(_)
        | NodeError::Timeout(_)
        | NodeError::Uncertain(_)
        | NodeError::Stopped(_) => 503,
        _ => 500,
    };
    fail(status, e)
}

/// `a=1&b=x%20y` as a map (percent-decoded, `+` as space; the last of a repeated name).
fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        let query = parse_query("table=kv&key=a%20b+c%2&x=%zz&&flag");
        assert_eq!(query["table"], "kv");
        assert_eq!(query["key"], "a b c%2");
        assert_eq!(query["x"], "%zz");
        assert_eq!(query["flag"], "");
        assert_eq!(percent_decode("%e2%82%ac%"), "\u{20ac}%");
    }
}
