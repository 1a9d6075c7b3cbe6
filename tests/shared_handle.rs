//! `Db` as a shared handle: clones used from threads and tasks, `close(&self)` through any
//! clone (later calls get `Error::Closed`; commits racing it land or get `Closed`), LMDB and
//! the directory released at once or, with a transaction open, when the last of them ends;
//! owned (`'static`) read transactions.

use std::collections::BTreeSet;
use std::time::Duration;

use walmdb::{Config, Db, Error, HealthStatus};

const T: &str = "t";

fn key(i: usize) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

fn assert_closed<T: std::fmt::Debug>(what: &str, r: walmdb::Result<T>) {
    assert!(
        matches!(r, Err(Error::Closed)),
        "{what} on a closed database: {r:?}"
    );
}

#[test]
fn the_handle_is_clone_send_sync_and_an_owned_read_is_static_and_send() {
    fn shared<T: Clone + Send + Sync + 'static>() {}
    fn sendable<T: Send + 'static>() {}
    shared::<Db>();
    sendable::<walmdb::ReadTxn<'static>>();

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    db.update(|t| t.put(T, &key(w * 1000 + i), b"v")).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let owned = db.read_owned().unwrap();
    drop(db);
    // The owned transaction keeps the engine: it reads after every handle is gone.
    let count = std::thread::spawn(move || owned.count(T).unwrap())
        .join()
        .unwrap();
    assert_eq!(count, 200);
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.read().unwrap().count(T).unwrap(), 200);
}

#[test]
fn close_through_one_clone_closes_every_clone_and_the_directory_reopens_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let other = db.clone();
    other.update(|t| t.put(T, b"k", b"v")).unwrap();
    let written = other.write().unwrap();

    db.close().unwrap();

    assert_closed("read", other.read().map(drop));
    assert_closed("read_owned", other.read_owned().map(drop));
    assert_closed("write", other.write().map(drop));
    assert_closed("update", other.update(|t| t.put(T, b"k2", b"v")));
    assert_closed("commit of a transaction begun before", {
        let mut written = written;
        written.put(T, b"k3", b"v").unwrap();
        written.commit()
    });
    assert_closed("sync", other.sync());
    assert_closed("checkpoint", other.checkpoint());
    assert_closed("wait_applied", other.wait_applied(1));
    assert_closed("subscribe", other.subscribe(1).map(drop));
    assert_closed("create_table", other.create_table("u"));
    assert_closed("tables", other.tables());
    assert_closed("table_exists", other.table_exists(T));
    assert_closed("scrub", other.scrub());
    assert_closed("restore point", other.create_restore_point("p"));
    assert_closed("backup", other.backup(dir.path().join("backup")));
    assert_closed("a second close", other.close());
    assert_closed("compact", other.compact());
    let health = other.health();
    assert_eq!(health.status, HealthStatus::Unhealthy);
    assert!(
        health.reasons.iter().any(|(_, why)| why.contains("closed")),
        "{health:?}"
    );

    // Both handles are alive; the directory is free.
    let reopened = Db::open(dir.path()).unwrap();
    assert_eq!(
        reopened.read().unwrap().get(T, b"k").unwrap(),
        Some(&b"v"[..])
    );
    assert_eq!(reopened.recovery_report().replayed_records, 0);
    assert_eq!(reopened.read().unwrap().get(T, b"k3").unwrap(), None);
}

#[test]
fn commits_racing_close_land_or_get_closed_and_every_acknowledged_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let committers: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let k = key(w * 100_000 + i);
                    match db.update(|t| t.put(T, &k, b"v")) {
                        Ok(()) => acknowledged.push(k),
                        Err(Error::Closed) => return acknowledged,
                        Err(e) => panic!("a commit racing close failed with {e}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    db.close().unwrap();
    let acknowledged: BTreeSet<Vec<u8>> = committers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(!acknowledged.is_empty());
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(
        db.recovery_report().replayed_records,
        0,
        "close left commits unapplied"
    );
    let read = db.read().unwrap();
    for k in &acknowledged {
        assert!(read.get(T, k).unwrap().is_some(), "acknowledged {k:?} lost");
    }
    assert_eq!(read.count(T).unwrap(), acknowledged.len() as u64);
}

#[test]
fn close_with_a_transaction_open_releases_the_directory_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.update(|t| t.put(T, b"k", b"v")).unwrap();
    let reading = db.read_owned().unwrap();

    db.close().unwrap();
    // The transaction still reads its snapshot; LMDB and the lock are still held.
    assert_eq!(reading.get(T, b"k").unwrap(), Some(&b"v"[..]));
    assert!(matches!(Db::open(dir.path()), Err(Error::Locked { .. })));
    drop(reading);
    // The handle still refers to the engine: released when it goes too.
    assert!(matches!(Db::open(dir.path()), Err(Error::Locked { .. })));
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.read().unwrap().get(T, b"k").unwrap(), Some(&b"v"[..]));
    assert_eq!(db.recovery_report().replayed_records, 0);
}

#[test]
fn close_waits_a_moment_for_another_threads_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.update(|t| t.put(T, b"k", b"v")).unwrap();
    let (began, begun) = std::sync::mpsc::channel();
    let reader = {
        let db = db.clone();
        std::thread::spawn(move || {
            let txn = db.read().unwrap();
            began.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            txn.get(T, b"k").unwrap().map(<[u8]>::to_vec)
        })
    };
    begun.recv().unwrap();
    db.close().unwrap();
    assert_eq!(reader.join().unwrap(), Some(b"v".to_vec()));
    // The transaction ended within close's wait: released before close returned, with
    // this handle and the reader's clone (gone now) notwithstanding.
    Db::open(dir.path()).unwrap();
}

#[test]
fn compact_with_a_transaction_open_closes_without_compacting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        resize_wait: Duration::from_millis(100),
        ..Config::default()
    };
    let db = Db::open_with(dir.path(), cfg).unwrap();
    db.update(|t| t.put(T, b"k", b"v")).unwrap();
    let reading = db.read_owned().unwrap();
    let refused = db.compact();
    assert!(
        matches!(refused, Err(Error::TransactionsOpen { .. })),
        "{refused:?}"
    );
    assert_closed("read after compact", db.read().map(drop));
    drop((reading, db));
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.read().unwrap().get(T, b"k").unwrap(), Some(&b"v"[..]));
    // With none open, compaction runs through a shared handle.
    let shared = db.clone();
    let report = shared.compact().unwrap();
    assert!(report.bytes_after <= report.bytes_before);
    drop((db, shared));
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.read().unwrap().get(T, b"k").unwrap(), Some(&b"v"[..]));
}

#[test]
fn a_subscription_waiting_for_a_commit_gets_closed_when_the_database_closes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let follower = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut feed = db.subscribe(1).unwrap();
            let first = feed.next_change().map(|c| c.lsn);
            let second = feed.next_change().map(|c| c.lsn);
            (first, second)
        })
    };
    let lsn = db
        .write()
        .and_then(|mut t| {
            t.put(T, b"k", b"v")?;
            t.commit()
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    db.close().unwrap();
    let (first, second) = follower.join().unwrap();
    assert_eq!(first.unwrap(), lsn);
    assert!(matches!(second, Err(Error::Closed)), "{second:?}");
}

#[test]
fn an_owned_read_is_held_across_awaits_in_a_spawned_task() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.update(|t| t.put(T, b"k", b"v1")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = runtime.block_on(async {
        let txn = db.read_owned().unwrap();
        let writer = db.clone();
        let task = tokio::spawn(async move {
            let before = txn.get(T, b"k").unwrap().map(<[u8]>::to_vec);
            tokio::time::sleep(Duration::from_millis(20)).await;
            // The same snapshot after the await, whatever committed meanwhile.
            let after = txn.get(T, b"k").unwrap().map(<[u8]>::to_vec);
            (before, after)
        });
        let mut t = writer.write().unwrap();
        t.put(T, b"k", b"v2").unwrap();
        t.commit_async().await.unwrap();
        task.await.unwrap()
    });
    assert_eq!(seen, (Some(b"v1".to_vec()), Some(b"v1".to_vec())));
    assert_eq!(db.read().unwrap().get(T, b"k").unwrap(), Some(&b"v2"[..]));
}

#[test]
fn async_commits_racing_close_land_or_get_closed_and_every_acknowledged_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // A small backlog bound, so some commits wait in the admitter when close begins.
    let mut cfg = Config {
        overlay_max_bytes: 64 << 10,
        ..Config::default()
    };
    cfg.wal.max_record_bytes = 8 << 10;
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acknowledged: BTreeSet<Vec<u8>> = runtime.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|w| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut acknowledged = Vec::new();
                    for i in 0.. {
                        let k = key(w * 100_000 + i);
                        let committed = match db.write() {
                            Ok(mut t) => {
                                t.put(T, &k, &[7; 100]).unwrap();
                                t.commit_async().await
                            }
                            Err(e) => Err(e),
                        };
                        match committed {
                            Ok(_) => acknowledged.push(k),
                            Err(Error::Closed) => return acknowledged,
                            Err(e) => panic!("an async commit racing close failed with {e}"),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let closer = db.clone();
        tokio::task::spawn_blocking(move || closer.close())
            .await
            .unwrap()
            .unwrap();
        let mut all = BTreeSet::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert!(!acknowledged.is_empty());
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    let read = db.read().unwrap();
    for k in &acknowledged {
        assert!(read.get(T, k).unwrap().is_some(), "acknowledged {k:?} lost");
    }
    assert_eq!(read.count(T).unwrap(), acknowledged.len() as u64);
}
