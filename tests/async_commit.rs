//! Async commits (`WriteTxn::commit_async`) under a real runtime: many commits in flight on
//! two runtime threads, futures dropped before their answer, commits that must wait for
//! room (the admitter thread), and a close while commits wait.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use walmdb::{Config, Db, Durability, Error};

const T: &str = "t";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Records of at most 8 KiB, so the backlog bound may be small.
fn small_records() -> Config {
    let mut cfg = Config::default();
    cfg.wal.max_record_bytes = 8 << 10;
    cfg
}

/// A backlog bound a few commits fill, and an applier that gathers for long unless
/// hurried: most commits find no room and go to the admitter thread.
fn backlogged() -> Config {
    Config {
        overlay_max_bytes: 16 << 10,
        apply_interval: Duration::from_secs(3600),
        ..small_records()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

/// Waits (up to 10 s) until `key` reads as `value`.
fn eventually_reads(db: &Db, key: &[u8], value: Option<&[u8]>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = db.read().unwrap().get(T, key).unwrap().map(<[u8]>::to_vec);
        if now.as_deref() == value {
            return;
        }
        assert!(Instant::now() < deadline, "{key:?} still reads {now:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn five_hundred_tasks_on_two_runtime_threads_all_commit_and_are_visible_when_answered() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let lsns = runtime().block_on(async {
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut txn = db.write()?;
                    txn.put(T, &key(i), b"v")?;
                    let lsn = txn.commit_async().await?;
                    // Visible to every transaction begun after the answer.
                    assert_eq!(db.read()?.get(T, &key(i))?, Some(&b"v"[..]));
                    Ok::<_, Error>(lsn)
                })
            })
            .collect();
        let mut lsns = BTreeSet::new();
        for t in tasks {
            assert!(lsns.insert(t.await.unwrap().unwrap()), "an LSN twice");
        }
        lsns
    });
    assert_eq!(lsns.len(), 500);
    db.close().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let r = db.read().unwrap();
    for i in 0..500 {
        assert_eq!(r.get(T, &key(i)).unwrap(), Some(&b"v"[..]), "key {i}");
    }
}

#[test]
fn a_commit_whose_future_is_dropped_unpolled_still_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut txn = db.write().unwrap();
    txn.put(T, b"dropped", b"v").unwrap();
    drop(txn.commit_with_async(Durability::EveryWrite));
    eventually_reads(&db, b"dropped", Some(b"v"));
    db.close().unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(
        db.read().unwrap().get(T, b"dropped").unwrap(),
        Some(&b"v"[..])
    );
}

/// The commit's conflict check does not depend on its future: a transaction that read a
/// key another commit then changed is refused even when nobody awaits its answer, and
/// the many commits after it (which prune the conflict index) do not let it through.
#[test]
fn a_conflicting_commit_whose_future_was_dropped_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.update(|t| t.put(T, b"k", b"0")).unwrap();
    let mut stale = db.write().unwrap();
    assert_eq!(stale.get(T, b"k").unwrap(), Some(&b"0"[..]));
    db.update(|t| t.put(T, b"k", b"other")).unwrap();
    stale.put(T, b"k", b"stale").unwrap();
    drop(stale.commit_async());
    // Enough commits of other keys for the conflict index to be pruned several times.
    for batch in 0..20 {
        let mut t = db.write().unwrap();
        for i in 0..1000 {
            t.put("other", &key(batch * 1000 + i), b"x").unwrap();
        }
        t.commit().unwrap();
    }
    assert_eq!(
        db.read().unwrap().get(T, b"k").unwrap(),
        Some(&b"other"[..])
    );
    assert_eq!(db.stats().conflicts, 1);
}

#[test]
fn async_commits_that_must_wait_for_room_are_admitted_in_turn_and_all_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = backlogged();
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let value = vec![7u8; 1024];
    runtime().block_on(async {
        // 100 tasks of 4 commits each: every wave after the first finds the backlog over
        // its bound (the wave before it went in at once: a commit is counted in the
        // backlog when published, not when queued).
        let tasks: Vec<_> = (0..100)
            .map(|task| {
                let (db, value) = (db.clone(), value.clone());
                tokio::spawn(async move {
                    for i in (0..4).map(|wave| wave * 100 + task) {
                        let mut txn = db.write()?;
                        txn.put(T, &key(i), &value)?;
                        txn.commit_async().await?;
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    assert!(
        db.metrics().async_admissions > 0,
        "no commit had to wait: the test did not reach the admitter"
    );
    let r = db.read().unwrap();
    for i in 0..400 {
        assert_eq!(r.get(T, &key(i)).unwrap(), Some(&value[..]), "key {i}");
    }
}

/// Futures do not borrow the database: commits handed over and not yet answered when the
/// database closes are admitted and made durable by the close, and their futures answer
/// afterwards.
#[test]
fn close_admits_every_commit_handed_over_and_their_futures_answer_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), backlogged()).unwrap();
    let value = vec![1u8; 1024];
    let futures: Vec<_> = (0..100)
        .map(|i| {
            let mut txn = db.write().unwrap();
            txn.put(T, &key(i), &value).unwrap();
            txn.commit_async()
        })
        .collect();
    db.close().unwrap();
    let lsns: BTreeSet<_> = runtime().block_on(async {
        let mut lsns = BTreeSet::new();
        for f in futures {
            lsns.insert(f.await.unwrap());
        }
        lsns
    });
    assert_eq!(lsns.len(), 100);
    let db = Db::open(dir.path()).unwrap();
    let r = db.read().unwrap();
    for i in 0..100 {
        assert_eq!(r.get(T, &key(i)).unwrap(), Some(&value[..]), "key {i}");
    }
}

#[test]
fn a_refused_async_commit_answers_its_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut txn = db.write().unwrap();
    txn.put(T, b"k", b"v").unwrap();
    let bad = Durability::GroupCommit {
        max_batch: 0,
        max_wait: Duration::ZERO,
    };
    let answer = runtime().block_on(txn.commit_with_async(bad));
    assert!(matches!(answer, Err(Error::InvalidConfig(_))), "{answer:?}");
    assert_eq!(db.read().unwrap().get(T, b"k").unwrap(), None);
    // A transaction that wrote nothing answers its snapshot's LSN.
    let lsn = runtime()
        .block_on(db.write().unwrap().commit_async())
        .unwrap();
    assert_eq!(lsn, db.stats().visible_lsn);
}
