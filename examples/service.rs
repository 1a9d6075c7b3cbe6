//! A key-value service on tokio with async commits: one task serves requests from a
//! channel, each request in a task of its own, on a runtime of 2 threads; 500 clients put
//! and read back their keys concurrently. Every `put` awaits its commit (`commit_async`):
//! no thread is parked per commit, and one fsync makes a whole group of them durable.
//! A change-feed consumer (`Db::subscribe`, awaited with `next_async`) follows the commits
//! as they happen, as a cache or a search index would, and must see every put once, in
//! commit order. Then the database is reopened and every acknowledged put is checked.
//!
//! Run: `cargo run --release --example service` (CI runs it).

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use walmdb::{Db, Lsn};

const TABLE: &str = "kv";
const CLIENTS: usize = 500;
const PUTS_PER_CLIENT: usize = 20;

/// What a client asks the service.
enum Request {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        reply: oneshot::Sender<walmdb::Result<Lsn>>,
    },
    Get {
        key: Vec<u8>,
        reply: oneshot::Sender<walmdb::Result<Option<Vec<u8>>>>,
    },
}

/// Serves requests until every client has hung up.
async fn serve(db: Db, mut requests: mpsc::Receiver<Request>) {
    while let Some(request) = requests.recv().await {
        let db = db.clone();
        tokio::spawn(async move {
            match request {
                Request::Put { key, value, reply } => {
                    let commit = db.write().and_then(|mut txn| {
                        txn.put(TABLE, &key, &value)?;
                        Ok(txn.commit_async())
                    });
                    let answer = match commit {
                        Ok(commit) => commit.await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(answer);
                }
                Request::Get { key, reply } => {
                    // A read transaction is short and never waits: it stays on this thread.
                    let value = db
                        .read()
                        .and_then(|txn| Ok(txn.get(TABLE, &key)?.map(<[u8]>::to_vec)));
                    let _ = reply.send(value);
                }
            }
        });
    }
}

/// Follows the feed until it has seen `puts` puts of the table: each once, in LSN order.
async fn follow(
    db: Db,
    from: Lsn,
    puts: usize,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let mut feed = db.subscribe(from)?.tables([TABLE]);
    let mut seen = std::collections::HashSet::new();
    let mut last = 0;
    while seen.len() < puts {
        let change = feed.next_async().await?;
        assert!(change.lsn > last, "LSN order");
        last = change.lsn;
        for op in change.ops {
            if let walmdb::Op::Put { key, .. } = op {
                assert!(seen.insert(key), "a put delivered twice");
            }
        }
    }
    Ok(seen.len())
}

fn key(client: usize, i: usize) -> Vec<u8> {
    format!("client{client:04}/{i:03}").into_bytes()
}

async fn client(
    id: usize,
    service: mpsc::Sender<Request>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for i in 0..PUTS_PER_CLIENT {
        let value = format!("value {id} {i}").into_bytes();
        let (reply, answer) = oneshot::channel();
        service
            .send(Request::Put {
                key: key(id, i),
                value: value.clone(),
                reply,
            })
            .await?;
        answer.await??;
        // Acknowledged: every read that starts now sees it.
        let (reply, answer) = oneshot::channel();
        service
            .send(Request::Get {
                key: key(id, i),
                reply,
            })
            .await?;
        let read = answer.await??;
        assert_eq!(read.as_deref(), Some(&value[..]), "read back {id}/{i}");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?; // a cheap handle: each task gets a clone
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let from = db.stats().visible_lsn + 1;
    let followed = runtime.block_on(async {
        let consumer = tokio::spawn(follow(db.clone(), from, CLIENTS * PUTS_PER_CLIENT));
        let (service, requests) = mpsc::channel(1024);
        let server = tokio::spawn(serve(db.clone(), requests));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| tokio::spawn(client(id, service.clone())))
            .collect();
        drop(service);
        for c in clients {
            c.await??;
        }
        server.await?;
        let followed = consumer.await??;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(followed)
    })?;
    let elapsed = started.elapsed();
    let puts = CLIENTS * PUTS_PER_CLIENT;
    let stats = db.stats();
    println!(
        "{puts} durable puts (each read back) from {CLIENTS} concurrent clients on 2 runtime \
         threads in {:.2} s: {:.0} puts/s, {} log syncs",
        elapsed.as_secs_f64(),
        puts as f64 / elapsed.as_secs_f64(),
        stats.wal.syncs,
    );
    // Closes it for every clone; the directory is free to reopen at once.
    db.close()?;

    let db = Db::open(dir.path())?;
    let txn = db.read()?;
    for id in 0..CLIENTS {
        for i in 0..PUTS_PER_CLIENT {
            let expected = format!("value {id} {i}").into_bytes();
            assert_eq!(
                txn.get(TABLE, &key(id, i))?,
                Some(&expected[..]),
                "after reopening: {id}/{i}"
            );
        }
    }
    println!(
        "change feed: followed all {} puts, in LSN order, each once",
        followed
    );
    println!("reopened: all {puts} acknowledged puts are there");
    Ok(())
}
