//! The change feed (`Db::subscribe`): every committed transaction once, in LSN order, with
//! its operations; from the log when the subscription is behind, from publication when it
//! keeps up; a clear error for an LSN the log no longer holds; async and cancel-safe.

use std::time::Duration;

use walmdb::{ArchiveConfig, Change, Config, Db, Error, Op, WalConfig};

fn key(i: usize) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

/// Commits `n` transactions, each putting one key of `table` (numbered from `first`).
fn commit_n(db: &Db, table: &str, first: usize, n: usize) -> Vec<u64> {
    (first..first + n)
        .map(|i| {
            let mut t = db.write().unwrap();
            t.put(table, &key(i), format!("v{i}").as_bytes()).unwrap();
            t.commit().unwrap()
        })
        .collect()
}

/// 16 KiB records in 64 KiB segments, so a checkpoint retires segments (to `archive`, if
/// given) and a transaction of more than 16 KiB is logged in pieces.
fn small_log(archive: Option<&std::path::Path>) -> Config {
    Config {
        wal: WalConfig {
            segment_bytes: 64 << 10,
            max_record_bytes: 16 << 10,
            archive: archive.map(ArchiveConfig::new),
            ..WalConfig::default()
        },
        ..Config::default()
    }
}

fn put_of(change: &Change) -> (String, Vec<u8>, Vec<u8>) {
    match &change.ops[..] {
        [Op::Put { table, key, value }] => (table.clone(), key.clone(), value.clone()),
        other => panic!("one put expected at LSN {}: {other:?}", change.lsn),
    }
}

/// Reads `n` changes and checks they are the puts of keys `first..first + n` at `lsns`.
fn expect_puts(feed: &mut walmdb::Subscription<'_>, first: usize, lsns: &[u64]) {
    for (i, lsn) in lsns.iter().enumerate() {
        let change = feed
            .next_timeout(Duration::from_secs(30))
            .unwrap()
            .unwrap_or_else(|| panic!("change {i} (LSN {lsn}) never came"));
        assert_eq!(change.lsn, *lsn, "change {i}");
        let (_, k, v) = put_of(&change);
        assert_eq!(k, key(first + i));
        assert_eq!(v, format!("v{}", first + i).into_bytes());
        assert!(change.commit_micros > 0);
    }
}

#[test]
fn a_subscription_follows_commits_in_lsn_order_as_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut feed = db.subscribe(db.stats().visible_lsn + 1).unwrap();
    assert_eq!(feed.try_next().unwrap(), None, "nothing committed yet");
    let lsns = std::thread::scope(|s| {
        let writer = s.spawn(|| commit_n(&db, "t", 0, 500));
        let mut seen = Vec::new();
        while seen.len() < 500 {
            let change = feed
                .next_timeout(Duration::from_secs(30))
                .unwrap()
                .expect("a change");
            seen.push(change);
        }
        let lsns = writer.join().unwrap();
        for (i, (change, lsn)) in seen.iter().zip(&lsns).enumerate() {
            assert_eq!(change.lsn, *lsn);
            assert_eq!(put_of(change).1, key(i));
        }
        lsns
    });
    assert_eq!(feed.next_lsn(), lsns[499] + 1);
    assert_eq!(feed.next_timeout(Duration::from_millis(50)).unwrap(), None);
}

/// More commits than the engine keeps for subscriptions, made before and while the
/// subscription reads nothing: it reads the older ones from the log, then the rest.
#[test]
fn a_subscription_behind_by_more_than_publication_keeps_reads_the_log_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let before = commit_n(&db, "t", 0, 5_000);
    let mut feed = db.subscribe(before[0]).unwrap();
    let during = commit_n(&db, "t", 5_000, 5_000);
    expect_puts(&mut feed, 0, &before);
    expect_puts(&mut feed, 5_000, &during);
    let after = commit_n(&db, "t", 10_000, 10);
    expect_puts(&mut feed, 10_000, &after);
}

#[test]
fn a_subscription_to_some_tables_skips_the_others_and_empty_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut feed = db
        .subscribe(db.stats().visible_lsn + 1)
        .unwrap()
        .tables(["wanted"]);
    db.update(|t| {
        t.put("other", b"a", b"1")?;
        t.put("wanted", b"b", b"2")?;
        t.delete("wanted", b"c")
    })
    .unwrap();
    db.update(|t| t.put("other", b"x", b"1")).unwrap();
    db.create_restore_point("mark").unwrap();
    db.update(|t| t.put("wanted", b"d", b"4")).unwrap();
    let first = feed.next_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(
        first.ops,
        [
            Op::Put {
                table: "wanted".into(),
                key: b"b".to_vec(),
                value: b"2".to_vec()
            },
            Op::Delete {
                table: "wanted".into(),
                key: b"c".to_vec()
            }
        ]
    );
    let second = feed.next_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(put_of(&second).1, b"d");
    assert!(
        second.lsn > first.lsn + 2,
        "the other table's commit and the mark skipped"
    );
}

#[test]
fn after_a_reopen_a_subscription_reads_the_recovered_log() {
    let dir = tempfile::tempdir().unwrap();
    let lsns = {
        let db = Db::open(dir.path()).unwrap();
        let lsns = commit_n(&db, "t", 0, 100);
        db.simulate_crash();
        lsns
    };
    let db = Db::open(dir.path()).unwrap();
    let mut feed = db.subscribe(lsns[0]).unwrap();
    expect_puts(&mut feed, 0, &lsns);
}

#[test]
fn an_lsn_the_log_no_longer_holds_is_retired_and_the_oldest_one_it_holds_works() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_log(None);
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let lsns = commit_n(&db, "t", 0, 3_000);
    // A subscription that has not read yet when its segments are retired.
    let mut stale = db.subscribe(lsns[0]).unwrap();
    db.checkpoint().unwrap();
    assert!(
        db.stats().wal.segments_retired > 0,
        "the checkpoint retired segments"
    );
    let oldest = match db.subscribe(lsns[0]) {
        Err(Error::Retired { lsn, oldest }) => {
            assert_eq!(lsn, lsns[0]);
            oldest
        }
        other => panic!("expected Retired, got {other:?}"),
    };
    match stale.next_timeout(Duration::from_secs(10)) {
        Err(Error::Retired { lsn, .. }) => assert_eq!(lsn, lsns[0]),
        other => panic!("expected Retired, got {other:?}"),
    }
    let mut feed = db.subscribe(oldest).unwrap();
    let from = lsns
        .iter()
        .position(|&l| l == oldest)
        .expect("a commit's LSN");
    expect_puts(&mut feed, from, &lsns[from..]);
}

#[test]
fn an_async_subscription_is_woken_by_commits_and_a_dropped_wait_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let from = db.stats().visible_lsn + 1;
        let consumer = {
            let db = db.clone();
            tokio::spawn(async move {
                let mut feed = db.subscribe(from)?;
                // A wait given up (dropped) before anything came.
                let early = tokio::time::timeout(Duration::from_millis(20), feed.next_async());
                assert!(early.await.is_err(), "nothing was committed yet");
                let mut keys = Vec::new();
                while keys.len() < 200 {
                    let change = feed.next_async().await?;
                    keys.push(put_of(&change).1);
                }
                Ok::<_, Error>(keys)
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..200 {
            let mut t = db.write().unwrap();
            t.put("t", &key(i), format!("v{i}").as_bytes()).unwrap();
            t.commit_async().await.unwrap();
        }
        let keys = tokio::time::timeout(Duration::from_secs(30), consumer)
            .await
            .expect("the consumer got every change")
            .unwrap()
            .unwrap();
        assert_eq!(keys, (0..200).map(key).collect::<Vec<_>>());
    });
}

/// Commits bigger in all than the bytes publication keeps for subscriptions: the older
/// ones leave the ring and are read from the log, none is missed.
#[test]
fn large_commits_past_the_kept_bytes_are_read_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut feed = db.subscribe(db.stats().visible_lsn + 1).unwrap();
    let value = vec![7u8; 1 << 20];
    let lsns: Vec<u64> = (0..100)
        .map(|i| {
            let mut t = db.write().unwrap();
            t.put("big", &key(i), &value).unwrap();
            t.commit().unwrap()
        })
        .collect();
    for (i, lsn) in lsns.iter().enumerate() {
        let change = feed.next_timeout(Duration::from_secs(30)).unwrap().unwrap();
        assert_eq!(change.lsn, *lsn);
        let (_, k, v) = put_of(&change);
        assert_eq!((k, v.len()), (key(i), 1 << 20));
    }
}

/// With an archive, LSNs retired from the live log are read from the archived segments:
/// a subscription from the first commit, opened after the checkpoint and also before it
/// (reading while the segments are retired), gets every commit once, in order.
#[test]
fn a_subscription_reads_retired_segments_from_the_archive_then_the_live_log() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let cfg = small_log(Some(archive.path()));
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let lsns = commit_n(&db, "t", 0, 3_000);
    let mut before = db.subscribe(lsns[0]).unwrap();
    expect_puts(&mut before, 0, &lsns[..10]);
    db.checkpoint().unwrap();
    let archived = db.metrics().segments_archived;
    assert!(
        db.stats().wal.segments_retired > 0 && archived > 0,
        "segments retired to the archive"
    );
    // Reads on, now from the archive.
    expect_puts(&mut before, 10, &lsns[10..]);
    // Opened after the retirement, from the first commit.
    let mut after = db.subscribe(lsns[0]).unwrap();
    expect_puts(&mut after, 0, &lsns);
    let more = commit_n(&db, "t", 3_000, 5);
    expect_puts(&mut after, 3_000, &more);
    expect_puts(&mut before, 3_000, &more);
}

/// The subscription is a `futures_core::Stream`: polled as one, it yields every commit in
/// order, woken by publication.
#[test]
fn a_subscription_is_a_stream_of_changes() {
    use futures_core::Stream;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut feed = db.subscribe(db.stats().visible_lsn + 1).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| commit_n(&db, "t", 0, 50));
        let changes: Vec<Change> = runtime.block_on(async {
            let mut changes = Vec::new();
            while changes.len() < 50 {
                let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut feed).poll_next(cx));
                changes.push(next.await.expect("a stream of changes never ends").unwrap());
            }
            changes
        });
        let lsns = writer.join().unwrap();
        assert_eq!(changes.iter().map(|c| c.lsn).collect::<Vec<_>>(), lsns);
    });
}

/// Commits one transaction of `n` 1 KiB puts to "split" (over `max_record_bytes`: logged in
/// pieces) between two small commits; returns the LSNs of the three.
fn commit_split(db: &Db, n: usize) -> [u64; 3] {
    let small = |i: usize| {
        let mut t = db.write().unwrap();
        t.put("t", &key(i), b"small").unwrap();
        t.commit().unwrap()
    };
    let before = small(0);
    let mut t = db.write().unwrap();
    for i in 0..n {
        t.put("split", &key(i), &[i as u8; 1024]).unwrap();
    }
    let lsn = t.commit().unwrap();
    [before, lsn, small(1)]
}

/// The first change read and checks it is the split transaction of `n` puts at `lsn`.
fn expect_split(feed: &mut walmdb::Subscription<'_>, lsn: u64, n: usize, ctx: &str) {
    let change = feed
        .next_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap_or_else(|| panic!("{ctx}: the split transaction never came"));
    assert_eq!(change.lsn, lsn, "{ctx}");
    assert_eq!(change.ops.len(), n, "{ctx}");
    for (i, op) in change.ops.iter().enumerate() {
        match op {
            Op::Put {
                table,
                key: k,
                value,
            } => {
                assert_eq!((table.as_str(), k), ("split", &key(i)), "{ctx}");
                assert_eq!(value, &vec![i as u8; 1024], "{ctx}");
            }
            other => panic!("{ctx}: {other:?}"),
        }
    }
}

/// A transaction logged in pieces has its last piece's LSN: a subscription from that LSN,
/// or from one of its parts, gets it whole (it began before the read: read again from its
/// first piece), then the commits after it.
#[test]
fn a_subscription_from_a_split_transactions_lsn_or_one_of_its_parts_gets_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || Config {
        wal: WalConfig {
            max_record_bytes: 16 << 10,
            ..WalConfig::default()
        },
        ..Config::default()
    };
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    let [before, lsn, after] = commit_split(&db, 100);
    assert!(lsn > before + 5, "in pieces: {before}..{lsn}");
    db.close().unwrap();
    // Reopened: the feed keeps no commits, so every subscription reads the log.
    let db = Db::open_with(dir.path(), cfg()).unwrap();
    for from in [lsn, lsn - 1, before + 2, before + 1] {
        let ctx = format!("from {from}");
        let mut feed = db.subscribe(from).unwrap();
        expect_split(&mut feed, lsn, 100, &ctx);
        let next = feed.next_timeout(Duration::from_secs(30)).unwrap().unwrap();
        assert_eq!(next.lsn, after, "{ctx}");
    }
}

/// A split transaction whose first pieces were retired to the archive while its last stays
/// in the live log: a subscription from before it reads the parts from the archive and
/// their end from the live log, and gets it whole.
#[test]
fn a_split_transaction_half_archived_half_live_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let cfg = small_log(Some(archive.path()));
    let db = Db::open_with(dir.path(), cfg).unwrap();
    // 300 KiB in pieces of 16 KiB over 64 KiB segments.
    let [before, lsn, after] = commit_split(&db, 300);
    db.checkpoint().unwrap();
    // The parts' first segments went to the archive; the active one, with the end, stays.
    assert!(db.metrics().segments_archived > 0);
    for from in [before, before + 1, lsn] {
        let ctx = format!("from {from}");
        let mut feed = db.subscribe(from).unwrap();
        if from == before {
            assert_eq!(
                feed.next_timeout(Duration::from_secs(30))
                    .unwrap()
                    .unwrap()
                    .lsn,
                before
            );
        }
        expect_split(&mut feed, lsn, 300, &ctx);
        let next = feed.next_timeout(Duration::from_secs(30)).unwrap().unwrap();
        assert_eq!(next.lsn, after, "{ctx}");
    }
}

/// A split transaction whose first pieces were retired (no archive) while its last stays
/// live cannot be read whole: a subscription from its LSN gets `Retired` for its first
/// piece, on every try, and never skips it for the commits after it.
#[test]
fn a_split_transaction_whose_first_pieces_are_retired_is_retired_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_log(None);
    let db = Db::open_with(dir.path(), cfg).unwrap();
    let [before, lsn, _] = commit_split(&db, 300);
    db.checkpoint().unwrap();
    assert!(matches!(db.subscribe(before), Err(Error::Retired { .. })));
    let mut feed = db.subscribe(lsn).unwrap();
    for _ in 0..2 {
        match feed.next_timeout(Duration::from_secs(10)) {
            Err(Error::Retired { lsn: first, .. }) => assert!(first > before && first < lsn),
            other => panic!("expected Retired, got {other:?}"),
        }
    }
}
