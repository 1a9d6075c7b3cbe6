//! Replicated durable writes against single-node walmdb, in one run on one machine.
//!
//! For 1, 16 and 64 concurrent clients (tokio tasks on a 2-thread runtime): single-node
//! walmdb (`commit_async` at `GroupCommit`: synced before it answers) and a 3-node
//! walmdb-raft cluster on loopback TCP, all three nodes in this process (`Node::write`
//! through the leader: acknowledged once a quorum has the entry synced in its Raft log and
//! the leader has applied it). Each write puts one 16-byte key with a 100-byte value.
//! Reported: writes/s, p50/p99 latency, and the lowest and highest 1-second window.
//! Then fail-over: with 16 clients writing, the leader is stopped; the time from then to
//! the first write acknowledged by the new leader (election included), 3 times.
//!
//!   cargo bench -p walmdb-raft --bench replication
//!   RAFT_BENCH_SECS=180 RAFT_BENCH_CLIENTS=64 cargo bench -p walmdb-raft --bench replication
//!
//! `RAFT_BENCH_SECS` (default 10) per cell; `RAFT_BENCH_CLIENTS` (default "1,16,64");
//! `RAFT_BENCH_FAILOVERS` (default 3); `RAFT_BENCH_WINDOWS=1` prints every 1-second window.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use walmdb_raft::node::{Node, NodeConfig};
use walmdb_raft::Request;

const VALUE: usize = 100;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Latencies and per-second completions of one cell.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    per_second: BTreeMap<u64, u64>,
    errors: u64,
}

struct Row {
    writes_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    windows: (u64, u64),
    errors: u64,
}

fn summarize(tally: Tally, secs: f64) -> Row {
    let mut l = tally.latencies_us;
    l.sort_unstable();
    let q = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    if std::env::var_os("RAFT_BENCH_WINDOWS").is_some() {
        eprintln!(
            "windows: {:?}",
            tally.per_second.values().collect::<Vec<_>>()
        );
    }
    // Whole seconds only (the last one is partial).
    let full: Vec<u64> = tally
        .per_second
        .iter()
        .filter(|(s, _)| (**s as f64) < secs.floor())
        .map(|(_, n)| *n)
        .collect();
    Row {
        writes_per_sec: l.len() as f64 / secs,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        windows: (
            full.iter().copied().min().unwrap_or(0),
            full.iter().copied().max().unwrap_or(0),
        ),
        errors: tally.errors,
    }
}

/// Runs `clients` tasks calling `write(client, i)` for `secs`; every write is timed.
async fn drive<F, Fut>(clients: usize, secs: f64, write: F) -> Row
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let write = Arc::new(write);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (write, tally) = (write.clone(), tally.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < stop {
                    let began = Instant::now();
                    let done = write(c, i).await;
                    let mut t = tally.lock();
                    match done {
                        Ok(()) => {
                            t.latencies_us.push(began.elapsed().as_micros() as u64);
                            *t.per_second.entry(start.elapsed().as_secs()).or_default() += 1;
                        }
                        Err(e) => {
                            if t.errors == 0 {
                                eprintln!("a write failed: {e}");
                            }
                            t.errors += 1;
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock());
    summarize(tally, elapsed)
}

fn key(client: usize, i: u64) -> Vec<u8> {
    format!("c{client:04}-{i:010}").into_bytes()
}

async fn single_node(clients: usize, secs: f64) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let db = walmdb::Db::open(dir.path()).unwrap();
    let writer = db.clone();
    let row = drive(clients, secs, move |c, i| {
        let db = writer.clone();
        async move {
            let mut txn = db.write().map_err(|e| e.to_string())?;
            txn.put("kv", &key(c, i), &[7; VALUE])
                .map_err(|e| e.to_string())?;
            txn.commit_async()
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    db.close().unwrap();
    row
}

/// Three nodes on loopback in `root`, initialized; returns them with the leader first.
async fn cluster(root: &std::path::Path) -> Vec<Arc<Node>> {
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let config = NodeConfig::new(id, root.join(format!("n{id}")), "127.0.0.1:0");
        nodes.push(Arc::new(Node::start(config).await.unwrap()));
    }
    let members = nodes
        .iter()
        .map(|n| (n.id(), n.raft_addr().to_string()))
        .collect();
    nodes[0].initialize(members).await.unwrap();
    let leader = nodes[0]
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    nodes.sort_by_key(|n| n.id() != leader);
    nodes
}

async fn replicated(clients: usize, secs: f64) -> Row {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path()).await;
    let leader = nodes[0].clone();
    let row = drive(clients, secs, move |c, i| {
        let leader = leader.clone();
        async move {
            leader
                .write(Request::put("kv", &key(c, i), &[7; VALUE]))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
    row
}

/// Stops the leader while 16 clients write; the time until a write is acknowledged again.
async fn failover() -> Duration {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path()).await;
    let running = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..16)
        .map(|c| {
            let (nodes, running) = (nodes.clone(), running.clone());
            tokio::spawn(async move {
                let (mut i, mut target) = (0, 0);
                while running.load(Ordering::Relaxed) {
                    let put = Request::put("kv", &key(c, i), &[7; VALUE]);
                    if nodes[target].write(put).await.is_err() {
                        // As a client would: try the next node, after a moment.
                        target = (target + 1) % nodes.len();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = Instant::now();
    nodes[0].shutdown().await.unwrap();
    let took = 'acked: loop {
        for n in &nodes[1..] {
            if n.write(Request::put("kv", b"after", b"1")).await.is_ok() {
                break 'acked stopped.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    running.store(false, Ordering::Relaxed);
    for w in writers {
        w.abort();
    }
    for n in &nodes[1..] {
        n.shutdown().await.unwrap();
    }
    took
}

fn main() {
    let secs: f64 = env_or("RAFT_BENCH_SECS", 10.0);
    let clients: Vec<usize> = std::env::var("RAFT_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let failovers: usize = env_or("RAFT_BENCH_FAILOVERS", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "{secs} s per cell, {}-byte values, durable (fsync) acknowledgements\n",
            VALUE
        );
        println!("| clients | engine | writes/s | p50 ms | p99 ms | 1 s windows | errors |");
        println!("|--:|---|--:|--:|--:|---|--:|");
        for &n in &clients {
            let single = single_node(n, secs).await;
            let raft = replicated(n, secs).await;
            for (name, r) in [("walmdb, 1 node", &single), ("walmdb-raft, 3 nodes", &raft)] {
                println!(
                    "| {n} | {name} | {:.0} | {:.2} | {:.2} | {}-{} | {} |",
                    r.writes_per_sec, r.p50_ms, r.p99_ms, r.windows.0, r.windows.1, r.errors
                );
            }
            println!(
                "| {n} | replicated / single | {:.2}x | | | | |",
                raft.writes_per_sec / single.writes_per_sec.max(1.0)
            );
        }
        for k in 0..failovers {
            let took = failover().await;
            println!(
                "fail-over {}: {} ms from stopping the leader to the next acknowledged write",
                k + 1,
                took.as_millis()
            );
        }
    });
}
