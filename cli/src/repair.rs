//! `walmdb repair DIR INTO`: rebuilds a database whose LMDB file is damaged into INTO, from a
//! backup (`--backup`, rolled forward with `--archive` and DIR's own log) or by salvage (every
//! entry that verifies, then DIR's log), and lists what could not be saved. DIR is only read.

use std::path::{Path, PathBuf};

use serde_json::json;
use walmdb::{LostKeys, RepairMethod, RepairOptions};

use crate::scrub::lost_json;
use crate::stats::{database, open_config};
use crate::util::{hex, spinner};
use crate::{Failure, Format, Outcome, EXIT_DAMAGED, EXIT_OK};

fn lost_text(keys: &LostKeys) -> String {
    match keys {
        LostKeys::Nothing => "nothing".into(),
        LostKeys::Key(k) => format!("key (hex) {}", hex(k)),
        LostKeys::Range { from, to } => format!(
            "keys (hex) from {} to before {}",
            from.as_deref().map_or("the first".into(), hex),
            to.as_deref().map_or("the last".into(), hex)
        ),
    }
}

pub fn repair(
    dir: &Path,
    into: &Path,
    backup: Option<PathBuf>,
    archive: Option<PathBuf>,
    format: Format,
) -> Outcome {
    let paths = database(dir)?;
    let options = RepairOptions {
        backup,
        archive,
        config: open_config(&paths),
    };
    let bar = spinner(&format!("repairing {}", dir.display()));
    let report = walmdb::repair(dir, into, &options);
    bar.finish_and_clear();
    let report = report.map_err(|e| match e {
        walmdb::Error::InvalidInput { .. } => Failure::usage(format!("{e}")),
        walmdb::Error::BadBackup { .. } | walmdb::Error::Corruption { .. } => {
            Failure::damaged(format!("{e}"))
        }
        other => Failure::from_error(&other, dir),
    })?;
    let method = match report.method {
        RepairMethod::Backup => "backup",
        RepairMethod::Salvage => "salvage",
    };
    let complete = report.is_complete();
    match format {
        Format::Json => {
            let v = json!({
                "method": method,
                "complete": complete,
                "repaired_lsn": report.repaired_lsn,
                "log_end": report.log_end,
                "salvaged_entries": report.salvaged,
                "salvaged_lsn": report.salvaged_lsn,
                "restored_from_backup_lsn": report.restore.as_ref().map(|r| r.backup_lsn),
                "losses": report.losses.iter().map(|l| json!({
                    "table": l.table,
                    "lost": lost_json(&l.keys),
                    "reason": l.reason,
                    "rewritten_by_log": l.rewritten_by_log,
                    "dropped_by_log": l.dropped_by_log,
                    "recovered": l.is_recovered(),
                })).collect::<Vec<_>>(),
                "scrub_entries": report.scrub.entries(),
            });
            println!("{v}");
        }
        Format::Text => {
            println!(
                "repaired {} into {} ({method})",
                dir.display(),
                into.display()
            );
            println!(
                "  repaired through LSN {} (the log ends at LSN {})",
                report.repaired_lsn, report.log_end
            );
            if let Some(r) = &report.restore {
                println!(
                    "  backup LSN {}, {} records replayed",
                    r.backup_lsn, r.records
                );
            } else {
                println!(
                    "  {} entries salvaged; the log replayed after LSN {}",
                    report.salvaged, report.salvaged_lsn
                );
            }
            println!(
                "  the repaired store scrubs clean: {} entries",
                report.scrub.entries()
            );
            for l in &report.losses {
                let status = if l.is_recovered() {
                    "RECOVERED by the log".to_owned()
                } else if l.rewritten_by_log > 0 {
                    format!(
                        "LOST, {} of its keys written again by the log",
                        l.rewritten_by_log
                    )
                } else {
                    "LOST".to_owned()
                };
                println!(
                    "{status}: table {:?} {}: {}",
                    l.table,
                    lost_text(&l.keys),
                    l.reason
                );
            }
            if report.repaired_lsn < report.log_end {
                println!(
                    "LOST: log records after LSN {} (to {}) could not be replayed",
                    report.repaired_lsn, report.log_end
                );
            }
            println!(
                "verdict: {}",
                if complete {
                    "nothing lost"
                } else {
                    "SOME ENTRIES COULD NOT BE SAVED (listed above)"
                }
            );
        }
    }
    Ok(if complete { EXIT_OK } else { EXIT_DAMAGED })
}
