//! The scrub and the salvage over an LMDB file the fuzzer damaged (issue 17).
//!
//! Input: a list of edits `[offset: u16] [len: u8] [mode: u8] [bytes...]` applied to a
//! pristine `data.mdb` (a small walmdb store of two tables, a dropped table, values on
//! overflow pages and freed pages, built once per process): `mode & 1` writes the bytes,
//! else XORs them in; offsets wrap around the file's length.
//!
//! Properties:
//! * the scrub (`inspect::scrub_store`, which reads the file page by page and never through
//!   LMDB's map) never panics, hangs or allocates absurdly, whatever the bytes;
//! * an unchanged file scrubs healthy;
//! * the salvage (`walmdb::repair` without a backup) either refuses, or gives a database
//!   whose every key of the pristine model is right or inside a listed loss, and no key the
//!   model lacks.

#![no_main]

mod alloc_limit;
mod bytes;
#[path = "../../tests/common/scrub_store.rs"]
mod scrub_store;
use bytes::Bytes;
use scrub_store::scrub_store_cfg as cfg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use walmdb::{Db, LostKeys, RepairOptions};

type Model = BTreeMap<(String, Vec<u8>), Vec<u8>>;

struct Pristine {
    /// A closed database directory to copy from.
    dir: PathBuf,
    image: Vec<u8>,
    model: Model,
    _keep: tempfile::TempDir,
}

fn pristine() -> &'static Pristine {
    static P: OnceLock<Pristine> = OnceLock::new();
    P.get_or_init(|| {
        let keep = tempfile::tempdir().unwrap();
        let dir = keep.path().join("db");
        scrub_store::write_scrub_store(&dir);
        let mut model = Model::new();
        let r = Db::open_with(&dir, cfg()).unwrap();
        let txn = r.read().unwrap();
        for table in ["a", "b"] {
            for item in txn.range(table, ..).unwrap() {
                let (k, v) = item.unwrap();
                model.insert((table.to_owned(), k.to_vec()), v.to_vec());
            }
        }
        drop(txn);
        r.close().unwrap();
        let image = std::fs::read(dir.join("data").join("data.mdb")).unwrap();
        Pristine {
            dir,
            image,
            model,
            _keep: keep,
        }
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn listed(losses: &[walmdb::Loss], table: &str, k: &[u8]) -> bool {
    losses.iter().any(|l| {
        (l.table != "a" && l.table != "b" && l.table != "walmdb.meta")
            || (l.table == table
                && match &l.keys {
                    LostKeys::Key(lost) => lost == k,
                    LostKeys::Range { from, to } => {
                        from.as_deref().is_none_or(|f| f <= k)
                            && to.as_deref().is_none_or(|t| k < t)
                    }
                    _ => false,
                })
    })
}

fuzz_target!(|data: &[u8]| {
    let p = pristine();
    let mut image = p.image.clone();
    let mut input = Bytes(data);
    for _ in 0..16 {
        if input.is_empty() {
            break;
        }
        let at = input.u16() as usize * 64 % image.len();
        let len = input.u8() as usize % 16 + 1;
        let write = input.u8() & 1 == 1;
        for (i, &b) in input.take(len).iter().enumerate() {
            let Some(byte) = image.get_mut(at + i) else {
                break;
            };
            if write {
                *byte = b;
            } else {
                *byte ^= b;
            }
        }
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("db");
    copy_dir(&p.dir, &dir);
    std::fs::write(dir.join("data").join("data.mdb"), &image).unwrap();

    let report = walmdb::inspect::scrub_store(&dir.join("data"), &mut |_| {});
    if image == p.image {
        let report = report.unwrap().unwrap();
        assert!(report.is_healthy(), "the pristine file: {report:?}");
    }

    let into = root.path().join("repaired");
    let options = RepairOptions {
        config: cfg(),
        ..RepairOptions::default()
    };
    let Ok(repaired) = walmdb::repair(&dir, &into, &options) else {
        return;
    };
    let db = Db::open_with(&into, cfg()).unwrap();
    let txn = db.read().unwrap();
    for ((table, k), v) in &p.model {
        match txn.get(table, k).unwrap() {
            Some(found) => assert_eq!(found, v.as_slice(), "{table} {k:?}: a wrong value"),
            None => assert!(
                listed(&repaired.losses, table, k),
                "{table} {k:?} missing, not listed: {:?}",
                repaired.losses
            ),
        }
    }
    for table in ["a", "b"] {
        for item in txn.range(table, ..).unwrap() {
            let (k, _) = item.unwrap();
            assert!(
                p.model.contains_key(&(table.to_owned(), k.to_vec())),
                "{table} {k:?}: a key the model lacks"
            );
        }
    }
    drop(txn);
    db.close().unwrap();
});
