//! `inspect::LogScan::would_open` against the recovery code: on every checked-in corrupt
//! fixture, in every recovery mode and for seven `from_lsn` values, it predicts exactly what
//! `Wal::open_with` does (the recovery report, or the error). `walmdb verify` judges a
//! directory with it; the tool's own tests (`cli/tests/cli.rs`) check that its verdicts agree
//! with the outcome.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use walmdb::{NoSequencer, StdFs, Wal, WalConfig};

fn name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// An outcome, comparable: the report without its duration, or the error's text.
fn outcome(r: walmdb::Result<walmdb::RecoveryReport>) -> Result<walmdb::RecoveryReport, String> {
    r.map(|mut rep| {
        rep.duration = Duration::ZERO;
        // Opening names the quarantine files it writes; a prediction cannot (their content
        // is checked in tests/recovery.rs).
        rep.quarantined.clear();
        rep
    })
    .map_err(|e| format!("{e:?}"))
}

#[test]
fn would_open_predicts_wal_open_on_every_corrupt_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-corrupt");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.push(Path::new(common::FIXTURE_DIR).to_owned());
    cases.sort();
    assert!(cases.len() >= 17);
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in &cases {
        for from_lsn in [
            None,
            Some(0),
            Some(68),
            Some(69),
            Some(86),
            Some(110),
            Some(115),
        ] {
            for mode in common::MODES {
                let dir = tmp.path().join(format!("c{checked}"));
                copy_dir(case, &dir);
                let ctx = format!("{} from {from_lsn:?} {mode:?}", name(case));
                let scan = walmdb::inspect::scan_log(&dir).unwrap();
                let predicted = scan.would_open(from_lsn, mode);
                let wal_cfg = WalConfig {
                    recovery_mode: mode,
                    ..common::fixture_cfg()
                };
                let fs: walmdb::FsRef = std::sync::Arc::new(StdFs);
                let actual = Wal::open_with(fs, &dir, wal_cfg, from_lsn, NoSequencer)
                    .map(|w| w.recovery_report().clone());
                let (predicted, actual) = (outcome(predicted), outcome(actual));
                // The error texts name the same directory.
                assert_eq!(predicted, actual, "{ctx}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, cases.len() * 7 * 3);
}
