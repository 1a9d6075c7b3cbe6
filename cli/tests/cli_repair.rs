//! `walmdb repair` (issue 17): a database whose LMDB file is damaged, rebuilt by the real
//! binary into a new directory, by salvage (what could not be saved listed, exit 1) and from
//! a backup with the archive and the damaged database's own log (nothing lost, exit 0); the
//! result passes `walmdb verify --deep`.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use walmdb::{ArchiveConfig, Config, Db, WalConfig};

const BIN: &str = env!("CARGO_BIN_EXE_walmdb");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run the walmdb binary")
}

fn cfg(archive: &Path) -> Config {
    Config::default().wal(WalConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        recycle_segments: 1,
        archive: Some(ArchiveConfig::new(archive)),
        ..WalConfig::default()
    })
}

fn write(db: &Db, keys: std::ops::Range<u32>, version: u32) {
    for start in keys.clone().step_by(100) {
        db.update(|txn| {
            for i in start..(start + 100).min(keys.end) {
                let value = format!("v{version} {i:05} {}", "x".repeat(80));
                txn.put("t", format!("key{i:05}").as_bytes(), value.as_bytes())?;
            }
            Ok(())
        })
        .unwrap();
    }
}

/// Zeroes every page of the LMDB file that holds `needle` (the page in use and stale copies).
fn zero_pages_holding(dir: &Path, needle: &[u8]) {
    let path = dir.join("data").join("data.mdb");
    let image = std::fs::read(&path).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for (at, _) in image
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
    {
        let page = (at / 4096 * 4096) as u64;
        file.write_all_at(&[0; 4096], page).unwrap();
    }
}

#[test]
fn repair_salvages_or_rebuilds_from_a_backup_and_says_what_it_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    let s = |name: &str| p(name).to_str().unwrap().to_owned();
    let db = Db::open_with(p("db"), cfg(&p("archive"))).unwrap();
    write(&db, 0..2000, 1);
    db.backup(p("backup")).unwrap();
    write(&db, 1000..3000, 2);
    db.checkpoint().unwrap();
    db.close().unwrap();
    zero_pages_holding(&p("db"), b"key00500");

    // Salvage: key00500's page is lost (written before the backup, retired from the log).
    let out = run(&["repair", &s("db"), &s("salvaged")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("(salvage)"), "{text}");
    assert!(
        text.contains("LOST: table \"t\" keys (hex) from "),
        "{text}"
    );
    assert!(text.contains("SOME ENTRIES COULD NOT BE SAVED"), "{text}");
    let out = run(&["verify", "--deep", &s("salvaged")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // From the backup, the archive and the damaged database's log: nothing lost.
    let out = run(&[
        "repair",
        &s("db"),
        &s("rebuilt"),
        "--backup",
        &s("backup"),
        "--archive",
        &s("archive"),
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["method"], "backup");
    assert_eq!(v["complete"], true);
    assert_eq!(v["repaired_lsn"], v["log_end"]);
    let rebuilt = Db::open(p("rebuilt")).unwrap();
    let r = rebuilt.read().unwrap();
    for i in 0..3000u32 {
        let want = format!(
            "v{} {i:05} {}",
            if i < 1000 { 1 } else { 2 },
            "x".repeat(80)
        );
        let got = r.get("t", format!("key{i:05}").as_bytes()).unwrap();
        assert_eq!(got, Some(want.as_bytes()), "key {i}");
    }
    drop(r);
    rebuilt.close().unwrap();

    // A used target is a usage error; the damaged directory was never changed to "repaired".
    let out = run(&["repair", &s("db"), &s("rebuilt")]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
