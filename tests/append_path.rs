//! Issue 21 (part): the applier writes a put whose key is above every key its table holds
//! with LMDB's append mode, and counts it in the table's tally without a lookup; a delete
//! above that key is a no-op. Checked against a `BTreeMap` model after each apply batch,
//! after a reopen, and by a scrub (each table's entry count and digest against its
//! entries), through key-sorted batches and through LSN-ordered ones (a table create or
//! drop in a batch keeps LSN order), around deletes of the greatest key and table drops;
//! and that after a batch of appends the applier gathers a few thousand operations.

use std::path::Path;
use std::time::Duration;

use walmdb::{Config, Db, Durability};

#[path = "common/engine.rs"]
mod engine_common;
use engine_common::{apply_ops, dump, tempdir, Contents, Op, Rng};

/// Commits stay queued until a wait for them hurries the applier: the commits between two
/// waits are applied in one LMDB transaction.
fn config() -> Config {
    engine_common::cfg()
        .table("t")
        .table("u")
        .durability(Durability::None)
        .apply_interval(Duration::from_secs(60))
}

/// `k000042`: keys that sort like their numbers.
fn key(n: u64) -> Vec<u8> {
    format!("k{n:06}").into_bytes()
}

fn value(n: u64, round: u64) -> Vec<u8> {
    format!("value {n} of round {round}").into_bytes()
}

/// A database and the model of what it holds.
struct Checked {
    db: Db,
    model: Contents,
}

impl Checked {
    fn open(dir: &Path) -> Checked {
        Checked {
            db: Db::open_with(dir, config()).unwrap(),
            model: Contents::new(),
        }
    }

    /// Commits `ops` as one transaction (applied with the batch).
    fn commit(&mut self, ops: Vec<Op>) {
        let mut txn = self.db.write().unwrap();
        for op in &ops {
            op.run(&mut txn).unwrap();
        }
        txn.commit().unwrap();
        apply_ops(&mut self.model, &ops);
    }

    fn drop_table(&mut self, table: &str) {
        self.db.drop_table(table).unwrap();
        apply_ops(
            &mut self.model,
            &[Op::DropTable {
                table: table.into(),
            }],
        );
    }

    /// Applies every commit so far (one batch) and checks the contents, the counts and the
    /// scrub against the model.
    fn apply_and_check(&self, what: &str) {
        self.db.wait_applied(self.db.stats().visible_lsn).unwrap();
        self.check(what);
    }

    fn check(&self, what: &str) {
        assert_eq!(dump(&self.db), self.model, "{what}: contents");
        let r = self.db.read().unwrap();
        for table in ["t", "u"] {
            let want = self.model.get(table).map_or(0, |t| t.len() as u64);
            // A dropped table, not written since, has no count.
            if r.table_exists(table).unwrap() || want > 0 {
                assert_eq!(r.count(table).unwrap(), want, "{what}: count of {table}");
            }
        }
        drop(r);
        let report = self.db.scrub().unwrap();
        assert!(report.is_healthy(), "{what}: {report:?}");
        for line in report
            .tables
            .iter()
            .filter(|l| l.name == "t" || l.name == "u")
        {
            let want = self.model.get(&line.name).map_or(0, |t| t.len() as u64);
            assert_eq!(line.entries, want, "{what}: entries of {}", line.name);
            assert_eq!(
                line.recorded,
                Some((line.entries, line.digest)),
                "{what}: tally of {}",
                line.name
            );
        }
    }

    fn reopen(self, dir: &Path, what: &str) -> Checked {
        self.db.close().unwrap();
        let reopened = Checked {
            db: Db::open_with(dir, config()).unwrap(),
            model: self.model,
        };
        reopened.check(what);
        reopened
    }
}

fn puts(table: &str, keys: impl IntoIterator<Item = u64>, round: u64) -> Vec<Op> {
    keys.into_iter()
        .map(|n| Op::put(table, &key(n), &value(n, round)))
        .collect()
}

fn delete(table: &str, n: u64) -> Op {
    Op::delete(table, &key(n))
}

#[test]
fn appends_among_overwrites_deletes_and_a_drop_match_the_model() {
    let dir = tempdir();
    let mut c = Checked::open(dir.path());

    // An empty table: every key appends; three transactions in one batch.
    c.commit(puts("t", (0..100).map(|i| i * 10), 1));
    c.commit(puts("t", (100..200).map(|i| i * 10), 1));
    let mut third = puts("t", (200..210).map(|i| i * 10), 1);
    third.push(Op::put("t", &key(500), b"overwritten in its batch"));
    c.commit(third);
    c.apply_and_check("sorted load");

    // Overwrites and deletes below the last key, a delete above it, appends.
    let mut ops = puts("t", [100, 2090], 2);
    ops.extend([delete("t", 50), delete("t", 2095), delete("t", 9000)]);
    ops.extend(puts("t", (210..220).map(|i| i * 10), 2));
    c.commit(ops);
    c.commit(puts("t", [2205, 3000], 2));
    c.apply_and_check("sorted batch around the last key");

    // The greatest key deleted, then keys between the new last and the deleted one, in a
    // key-sorted batch.
    c.commit(vec![delete("t", 3000), delete("t", 2205)]);
    c.commit(puts("t", [2195, 2200, 2204, 2999], 3));
    c.apply_and_check("sorted: greatest deleted, keys below it put");

    // The same in LSN order (a table create in the batch keeps it): the batch's idea of the
    // greatest key stays above the true one.
    c.commit(vec![delete("t", 2999), delete("t", 2204)]);
    c.commit(puts("t", [2202, 2999, 2998, 3100], 4));
    c.db.create_table("scratch").unwrap();
    c.commit(vec![delete("t", 3100), delete("t", 3200)]);
    c.commit(puts("t", [3050, 3300, 3300, 3250], 4));
    c.apply_and_check("LSN order: greatest deleted, keys below it put");
    c.db.drop_table("scratch").unwrap();
    c.apply_and_check("scratch dropped");

    // A drop empties the table: keys below its old last key append after it, in the batch
    // that drops it and in the next.
    c.commit(puts("t", [5000, 4000], 5));
    c.commit(puts("u", [7, 3, 9], 5));
    c.drop_table("t");
    c.commit(puts("t", [20, 30, 10, 30], 5));
    c.commit(vec![delete("t", 40), delete("t", 30)]);
    c.apply_and_check("dropped, then written in the same batch");
    c.commit(puts("t", [25, 30, 40, 35], 6));
    c.commit(puts("u", [1, 10, 11], 6));
    c.apply_and_check("written after the drop");
    c.drop_table("t");
    c.apply_and_check("dropped alone");
    c.commit(puts("t", (0..50).rev(), 7));
    c.apply_and_check("descending into an empty table");

    let c = c.reopen(dir.path(), "reopened");
    c.db.close().unwrap();
}

/// Appends fill leaf pages: LMDB splits a full page for an append by moving the new key
/// alone to the new page. A plain put at a page's end is split with a bias (the new page
/// takes the page's last entry too), so a sorted load of plain puts holds one entry less a
/// page: 20 of these entries instead of 21, a fill of 0.86 instead of 0.90.
#[test]
fn a_sorted_load_fills_its_leaf_pages() {
    let dir = tempdir();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let value = [7u8; 150];
    for txn in 0..20u64 {
        let mut w = db.write().unwrap();
        for i in txn * 1000..(txn + 1) * 1000 {
            w.put("t", format!("{i:024}").as_bytes(), &value).unwrap();
        }
        w.commit().unwrap();
        if txn % 3 == 2 {
            db.wait_applied(db.stats().visible_lsn).unwrap();
        }
    }
    db.checkpoint().unwrap();
    let report = db.scrub().unwrap();
    assert!(report.is_healthy(), "{report:?}");
    let t = report.tables.iter().find(|l| l.name == "t").unwrap();
    assert_eq!(t.entries, 20_000);
    let fill = t.bytes as f64 / (t.pages * u64::from(report.pages.page_size)) as f64;
    assert!(
        fill > 0.88,
        "pages {}, bytes {}: fill {fill:.2}",
        t.pages,
        t.bytes
    );
    db.close().unwrap();
}

/// Waits up to `limit` for the applier to apply through `lsn` by itself (nothing here
/// waits for it, which would hurry it); true if it did.
fn applied_unhurried(db: &Db, lsn: u64, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if db.stats().applied_lsn >= lsn {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    db.stats().applied_lsn >= lsn
}

/// After a batch that appended every put, the applier gathers a few thousand operations,
/// not `apply_max_ops` or `apply_interval`'s worth (a small overlay keeps a sorted load's
/// indexes in cache); after a batch of random puts it gathers as configured again.
#[test]
fn after_an_appending_batch_the_applier_gathers_few_operations() {
    let dir = tempdir();
    let db = Db::open_with(dir.path(), config().apply_max_ops(50_000)).unwrap();
    let value = [7u8; 100];
    let commit = |keys: &mut dyn Iterator<Item = u64>| {
        let mut w = db.write().unwrap();
        for i in keys {
            w.put("t", &key(i), &value).unwrap();
        }
        w.commit().unwrap();
        db.stats().visible_lsn
    };
    // 50,000 sorted puts: gathered up to `apply_max_ops`, then applied, every put appended.
    let mut last = 0;
    for txn in 0..50u64 {
        last = commit(&mut (txn * 1000..(txn + 1) * 1000));
    }
    assert!(applied_unhurried(&db, last, Duration::from_secs(60)));
    // 9,000 more: applied without a wait, where the interval is a minute.
    for txn in 50..59u64 {
        last = commit(&mut (txn * 1000..(txn + 1) * 1000));
    }
    assert!(applied_unhurried(&db, last, Duration::from_secs(30)));
    // 9,000 puts among the keys held (none appended): applied the same way...
    for txn in 0..9u64 {
        last = commit(&mut (0..1000).map(|i| i * 59 + txn));
    }
    assert!(applied_unhurried(&db, last, Duration::from_secs(30)));
    // ...after which 9,000 more wait for `apply_max_ops` or the interval again.
    for txn in 9..18u64 {
        last = commit(&mut (0..1000).map(|i| i * 59 + txn));
    }
    assert!(!applied_unhurried(&db, last, Duration::from_millis(500)));
    db.wait_applied(last).unwrap();
    db.close().unwrap();
}

/// What a random transaction mostly does.
#[derive(Clone, Copy)]
enum Kind {
    /// Puts above every key of its table.
    Ascending,
    /// Puts and deletes anywhere.
    Random,
    /// Deletes: of the greatest key, of existing keys, of keys above them all.
    Deleting,
}

/// One random op of a `kind` transaction over tables `t` and `u`, applied to `ahead` (the
/// model as the transaction leaves it so far); `next`: each table's next unused number.
fn random_op(rng: &mut Rng, kind: Kind, ahead: &mut Contents, next: &mut [u64; 2]) -> Op {
    let which = rng.below(2);
    let table = ["t", "u"][which];
    let held = ahead.get(table);
    let greatest = held.and_then(|t| t.keys().next_back().cloned());
    let roll = rng.below(10);
    let op = match (kind, roll) {
        // Above every key: a number not used yet, or the greatest key with a byte more
        // (greater by its length alone when that byte is 0).
        (Kind::Ascending, 0..=8) | (Kind::Random, 0..=1) => {
            let k = match greatest {
                Some(mut g) if g.len() < 16 && rng.percent(30) => {
                    g.push(rng.below(3) as u8);
                    g
                }
                _ => {
                    next[which] += rng.between(1, 5) as u64;
                    key(next[which])
                }
            };
            {
                let len = rng.between(0, 64);
                Op::put(table, &k, &rng.bytes(len))
            }
        }
        (Kind::Ascending | Kind::Random, _) if roll < 7 => {
            let mut k = key(rng.below(next[which] as usize + 8) as u64);
            if rng.percent(20) {
                k.push(0);
            }
            {
                let len = rng.between(0, 64);
                Op::put(table, &k, &rng.bytes(len))
            }
        }
        (_, 0..=3) => Op::delete(table, &greatest.unwrap_or_else(|| key(0))),
        (_, 4..=7) => match held.filter(|t| !t.is_empty()) {
            Some(t) => Op::delete(table, t.keys().nth(rng.below(t.len())).unwrap()),
            None => Op::delete(table, &key(1)),
        },
        _ => Op::delete(table, &key(next[which] + rng.between(1, 3) as u64)),
    };
    apply_ops(ahead, std::slice::from_ref(&op));
    op
}

#[test]
fn random_appends_puts_and_deletes_over_two_tables_match_the_model() {
    let dir = tempdir();
    let mut c = Checked::open(dir.path());
    let mut rng = Rng::new(0x21_a9e7d);
    let mut next = [0u64; 2];
    for round in 0..120 {
        for _ in 0..rng.between(1, 4) {
            let kind = [Kind::Ascending, Kind::Random, Kind::Deleting][rng.below(3)];
            let mut ahead = c.model.clone();
            let ops = (0..rng.between(1, 60))
                .map(|_| random_op(&mut rng, kind, &mut ahead, &mut next))
                .collect();
            c.commit(ops);
        }
        // A batch holding a table create or drop keeps LSN order.
        match rng.below(10) {
            0 => {
                c.db.create_table("scratch").unwrap();
                c.db.drop_table("scratch").unwrap();
            }
            1 => {
                let table = ["t", "u"][rng.below(2)];
                if c.db.table_exists(table).unwrap() {
                    c.drop_table(table);
                }
            }
            _ => {}
        }
        if rng.percent(30) {
            // This round's commits are applied with the next round's, in one batch.
            continue;
        }
        c.apply_and_check(&format!("round {round}"));
        if round % 40 == 39 {
            c = c.reopen(dir.path(), &format!("reopened after round {round}"));
        }
    }
    c.apply_and_check("the end");
    let c = c.reopen(dir.path(), "reopened at the end");
    c.db.close().unwrap();
}
