//! `walmdb backup`, `walmdb restore` (and `restore --list`) and `walmdb compact`.

use std::path::{Path, PathBuf};

use serde_json::json;
use walmdb::{RestoreOptions, RestoreTarget};

use crate::stats::{database, open, print};
use crate::util::{format_micros, size, spinner};
use crate::{Failure, Format, Outcome, EXIT_OK};

/// Errors of a backup or restore: damage is exit 1, a target out of reach or a bad
/// argument exit 2, a locked database exit 3.
fn failure(e: &walmdb::Error, dir: &Path) -> Failure {
    use walmdb::Error as E;
    match e {
        E::BadBackup { .. } => Failure::damaged(format!("{e}")),
        E::Corruption { .. } => Failure::damaged(format!("{e}")),
        E::RestoreTarget(_) | E::InvalidInput { .. } => Failure::usage(format!("{e}")),
        other => Failure::from_error(other, dir),
    }
}

pub fn backup(dir: &Path, dest: &Path, format: Format) -> Outcome {
    let paths = database(dir)?;
    let db = open(&paths)?;
    let bar = spinner(&format!("backing up {}", dir.display()));
    let manifest = db.backup(dest).map_err(|e| failure(&e, dir));
    bar.finish_and_clear();
    let manifest = manifest?;
    db.close().map_err(|e| Failure::from_error(&e, dir))?;
    let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    print(
        format,
        &format!("backed up {} to {}", dir.display(), dest.display()),
        &[
            ("backup", json!(dest.display().to_string())),
            ("created", json!(format_micros(manifest.created_micros))),
            ("lmdb_applied_lsn", json!(manifest.lmdb_applied_lsn)),
            ("wal_last_lsn", json!(manifest.wal_last_lsn)),
            ("files", json!(manifest.files.len())),
            ("bytes", json!(bytes)),
            ("size", json!(size(bytes))),
        ],
    );
    Ok(EXIT_OK)
}

/// Which `--target-*` was given.
pub struct Target {
    pub time: Option<u64>,
    pub lsn: Option<u64>,
    pub name: Option<String>,
}

impl Target {
    fn resolve(self) -> RestoreTarget {
        match (self.time, self.lsn, self.name) {
            (Some(t), _, _) => RestoreTarget::Time(t),
            (_, Some(l), _) => RestoreTarget::Lsn(l),
            (_, _, Some(n)) => RestoreTarget::Name(n),
            _ => RestoreTarget::Latest,
        }
    }
}

pub fn restore(
    backup: &Path,
    into: &Path,
    archive: Option<PathBuf>,
    target: Target,
    timeline: Option<u32>,
    format: Format,
) -> Outcome {
    let target = target.resolve();
    let options = RestoreOptions {
        archive,
        timeline,
        ..RestoreOptions::default()
    };
    let bar = spinner(&format!("restoring {}", backup.display()));
    let report = walmdb::restore(backup, into, &target, &options);
    bar.finish_and_clear();
    let report = report.map_err(|e| failure(&e, backup))?;
    print(
        format,
        &format!("restored {} into {}", backup.display(), into.display()),
        &[
            ("target", json!(format!("{target:?}"))),
            ("backup_lsn", json!(report.backup_lsn)),
            ("restored_lsn", json!(report.restored_lsn)),
            (
                "restored_time",
                json!(report.restored_micros.map(format_micros)),
            ),
            ("records_replayed", json!(report.records)),
            ("segments_read", json!(report.segments.len())),
            ("timeline_followed", json!(report.timeline)),
            (
                "identity",
                json!(format!("{:016x}", report.lineage.identity)),
            ),
            ("new_timeline", json!(report.lineage.timeline)),
        ],
    );
    Ok(EXIT_OK)
}

pub fn list(
    backup: &Path,
    archive: Option<&Path>,
    timeline: Option<u32>,
    format: Format,
) -> Outcome {
    let points =
        walmdb::recovery_points_on(backup, archive, timeline).map_err(|e| failure(&e, backup))?;
    let b = &points.backup;
    let named: Vec<serde_json::Value> = points
        .restore_points
        .iter()
        .map(|p| json!({"name": p.name, "lsn": p.lsn, "time": format_micros(p.unix_micros)}))
        .collect();
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "backup": backup.display().to_string(),
                "identity": b.lineage.is_known().then(|| format!("{:016x}", b.lineage.identity)),
                "backup_timeline": b.lineage.timeline,
                "timeline": points.timeline,
                "created": format_micros(b.created_micros),
                "first_lsn": b.lmdb_applied_lsn,
                "first_time": format_micros(b.lmdb_applied_micros),
                "last_lsn": points.last_lsn,
                "last_time": points.last_micros.map(format_micros),
                "restore_points": named,
                "end": points.end,
                "segments": points.segments.len(),
            })
        ),
        Format::Text => {
            println!("recovery points of {}", backup.display());
            println!("  backup of           {}", b.lineage);
            println!("  following timeline  {}", points.timeline);
            println!("  backup created      {}", format_micros(b.created_micros));
            println!(
                "  earliest            LSN {} ({})",
                b.lmdb_applied_lsn,
                format_micros(b.lmdb_applied_micros)
            );
            println!(
                "  latest              LSN {} ({})",
                points.last_lsn,
                points
                    .last_micros
                    .map_or("no commit after the backup".into(), format_micros)
            );
            println!("  log ends because    {}", points.end);
            println!("  segments            {}", points.segments.len());
            if points.restore_points.is_empty() {
                println!("  restore points      none");
            }
            for p in &points.restore_points {
                println!(
                    "  restore point       {:?} at LSN {} ({})",
                    p.name,
                    p.lsn,
                    format_micros(p.unix_micros)
                );
            }
        }
    }
    Ok(EXIT_OK)
}

pub fn compact(dir: &Path, format: Format) -> Outcome {
    let paths = database(dir)?;
    let db = open(&paths)?;
    let bar = spinner(&format!("compacting {}", dir.display()));
    let report = db.compact();
    bar.finish_and_clear();
    let report = report.map_err(|e| Failure::from_error(&e, dir))?;
    print(
        format,
        &format!("compacted {}", dir.display()),
        &[
            ("applied_lsn", json!(report.applied_lsn)),
            ("bytes_before", json!(report.bytes_before)),
            ("bytes_after", json!(report.bytes_after)),
            ("size_before", json!(size(report.bytes_before))),
            ("size_after", json!(size(report.bytes_after))),
        ],
    );
    Ok(EXIT_OK)
}
