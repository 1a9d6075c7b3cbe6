//! Fail-over across processes: three `walmdb-raft-node` processes on loopback, a bounded
//! write loop through the HTTP API, the leader killed with SIGKILL in the middle of it and
//! restarted from its directory later; afterwards every acknowledged write is on every node
//! and the nodes' digests are equal. `WALMDB_RAFT_PROCESS_KILLS` (default 1) leaders are
//! killed, `WALMDB_RAFT_PROCESS_WRITES` (default 300) writes made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A port free now on 127.0.0.1 (kept by the node across restarts: peers know it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    id: u64,
    dir: std::path::PathBuf,
    raft: String,
    http: String,
    child: Option<Child>,
}

impl Proc {
    fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_walmdb-raft-node"))
            .args(["--id", &self.id.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--raft-addr", &self.raft, "--http-addr", &self.http])
            .args(["--snapshot-every", "100"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = lines
                .next()
                .expect("the node exited before serving")
                .unwrap();
            if line.contains("Raft on") {
                break;
            }
            assert!(Instant::now() < deadline, "node {} did not start", self.id);
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

/// (status, JSON body); status 0 when the node did not answer.
fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let request = agent.request(method, url);
    let answer = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let response = match answer {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(_)) => return (0, Value::Null),
    };
    let status = response.status();
    (status, response.into_json().unwrap_or(Value::Null))
}

#[test]
fn a_leader_killed_with_sigkill_during_writes_loses_no_acknowledged_write() {
    let kills = env_or("WALMDB_RAFT_PROCESS_KILLS", 1);
    let writes = env_or("WALMDB_RAFT_PROCESS_WRITES", 300);
    let root = tempfile::tempdir().unwrap();
    let mut procs: Vec<Proc> = (1..=3u64)
        .map(|id| Proc {
            id,
            dir: root.path().join(format!("n{id}")),
            raft: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            child: None,
        })
        .collect();
    for p in &mut procs {
        p.start();
    }
    let agent = agent();
    let members: BTreeMap<String, String> = procs
        .iter()
        .map(|p| (p.id.to_string(), p.raft.clone()))
        .collect();
    let (status, body) = call(
        &agent,
        "POST",
        &format!("http://{}/init", procs[0].http),
        Some(json!(members)),
    );
    assert_eq!(status, 200, "init: {body}");

    let mut target = 0usize;
    let mut acked = BTreeMap::new();
    let kill_at: Vec<usize> = (1..=kills).map(|k| k * writes / (kills + 1)).collect();
    let mut killed: Option<usize> = None;
    let mut retries = 0;
    for i in 0..writes {
        if kill_at.contains(&i) {
            if let Some(k) = killed.take() {
                procs[k].start();
            }
            let leader = leader_of(&agent, &procs);
            eprintln!("write {i}: kill -9 of node {}", procs[leader].id);
            procs[leader].kill9();
            killed = Some(leader);
        }
        let (key, value) = (format!("k{i:05}"), format!("v{i}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = call(
                &agent,
                "POST",
                &format!("http://{}/write", procs[target].http),
                Some(json!({"table": "kv", "key": key, "value": value})),
            );
            if status == 200 {
                acked.insert(key.clone(), value.clone());
                break;
            }
            retries += 1;
            assert!(Instant::now() < deadline, "{key}: never acknowledged");
            // Retry where the answer points, or at the next node.
            let named = body["leader_http"].as_str().and_then(|http| {
                procs
                    .iter()
                    .position(|p| p.http == http && p.child.is_some())
            });
            target = named.unwrap_or((target + 1) % procs.len());
            std::thread::sleep(Duration::from_millis(if named.is_some() { 0 } else { 50 }));
        }
    }
    if let Some(k) = killed.take() {
        procs[k].start();
    }
    eprintln!("{} writes acknowledged ({retries} retries)", acked.len());
    assert_eq!(acked.len(), writes);

    // Every node catches up: equal digests, every acknowledged write readable locally.
    let deadline = Instant::now() + Duration::from_secs(60);
    let digests = loop {
        let digests: Vec<Value> = procs
            .iter()
            .map(|p| call(&agent, "GET", &format!("http://{}/digest", p.http), None).1)
            .collect();
        if digests.iter().all(|d| d["entries"] == json!(writes))
            && digests.windows(2).all(|w| w[0] == w[1])
        {
            break digests;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never converged: {digests:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("digest on all three nodes: {}", digests[0]);
    for p in &procs {
        for (key, value) in &acked {
            let (status, body) = call(
                &agent,
                "GET",
                &format!(
                    "http://{}/read_local?table=kv&key={key}&max_staleness_ms=10000",
                    p.http
                ),
                None,
            );
            assert_eq!(status, 200, "node {}: {key}: {body}", p.id);
            assert_eq!(body["value"], json!(value), "node {} lost {key}", p.id);
        }
    }
}

/// The index in `procs` of the node that leads (asked of every running node).
fn leader_of(agent: &ureq::Agent, procs: &[Proc]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, p) in procs.iter().enumerate().filter(|(_, p)| p.child.is_some()) {
            let (status, m) = call(agent, "GET", &format!("http://{}/metrics", p.http), None);
            if status == 200 && m["state"] == json!("Leader") {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(50));
    }
}
