//! `walmdb stats` (opened, or `--offline` from the files) and `walmdb checkpoint`.

use std::path::Path;

use serde_json::{json, Value};
use walmdb::inspect::{self, DbPaths, LogScan, StoreInfo};
use walmdb::{Config, Db, RecoveryMode};

use crate::util::size;
use crate::{target, Failure, Format, Outcome, Target, EXIT_OK};

/// The database directory, or a usage error (a bare log cannot be opened as a database).
pub fn database(dir: &Path) -> Result<DbPaths, Failure> {
    match target(dir, false)? {
        Target::Database(p) => Ok(p),
        Target::Log(_) => unreachable!("target(_, false) resolves databases only"),
    }
}

/// A configuration that opens this database as it is: the log's segment size, no spare
/// preallocated in the background, room for every table LMDB lists.
pub fn open_config(paths: &DbPaths) -> Config {
    let mut cfg = Config::default();
    // New segments keep the size of the newest one.
    let newest = std::fs::read_dir(&paths.wal).ok().and_then(|rd| {
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let no = inspect::segment_number(&name)?;
                Some((no, e.path()))
            })
            .max()
    });
    if let Some((_, path)) = newest {
        if let Ok(inspect::HeaderState::Valid { segment_bytes, .. }) =
            inspect::segment_header(&path)
        {
            cfg.wal.segment_bytes = segment_bytes;
            cfg.wal.max_record_bytes = cfg
                .wal
                .max_record_bytes
                .min(usize::try_from(segment_bytes / 2).unwrap_or(usize::MAX));
        }
    }
    cfg.wal.prepare_segments = false;
    cfg.wal.archive = crate::ARCHIVE
        .get()
        .cloned()
        .flatten()
        .map(walmdb::ArchiveConfig::new);
    if let Ok(Some(store)) = inspect::read_store(&paths.data) {
        let tables = u32::try_from(store.tables.len()).unwrap_or(u32::MAX);
        cfg.max_tables = cfg.max_tables.max(tables.saturating_add(64));
    }
    cfg
}

pub fn open(paths: &DbPaths) -> Result<Db, Failure> {
    Db::open_with(&paths.root, open_config(paths)).map_err(|e| Failure::from_error(&e, &paths.root))
}

/// Prints `(name, value)` pairs aligned, or as one JSON object.
pub fn print(format: Format, title: &str, fields: &[(&str, Value)]) {
    match format {
        Format::Json => {
            let obj: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            println!("{}", Value::Object(obj));
        }
        Format::Text => {
            println!("{title}");
            let w = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in fields {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => "-".to_owned(),
                    other => other.to_string(),
                };
                println!("  {k:<w$}  {v}");
            }
        }
    }
}

pub fn online(dir: &Path, format: Format) -> Outcome {
    let paths = database(dir)?;
    let db = open(&paths)?;
    let tables = db
        .tables()
        .map_err(|e| Failure::from_error(&e, &paths.root))?;
    let s = db.stats();
    let r = db.recovery_report().clone();
    let w = &s.wal;
    let fields = [
        ("path", json!(paths.root.display().to_string())),
        ("applied_lsn_at_open", json!(r.applied_lsn_at_open)),
        ("replayed_records", json!(r.replayed_records)),
        ("replayed_bytes", json!(r.replayed_bytes)),
        ("applied_records_at_open", json!(r.applied_records)),
        ("overlay_records_at_open", json!(r.overlay_records)),
        ("recovery_micros", json!(r.duration.as_micros() as u64)),
        ("segments_retired_at_open", json!(r.wal.segments_retired)),
        (
            "tail_cut_at_open",
            r.wal.cut.as_ref().map_or(Value::Null, |c| {
                json!(format!(
                    "segment {} offset {} ({} bytes): {}",
                    c.segment, c.offset, c.bytes_cut, c.reason
                ))
            }),
        ),
        ("visible_lsn", json!(s.visible_lsn)),
        ("applied_lsn", json!(s.applied_lsn)),
        ("checkpoint_lsn", json!(s.checkpoint_lsn)),
        ("unapplied_bytes", json!(s.unapplied_bytes)),
        ("replay_estimate_bytes", json!(s.replay_estimate_bytes)),
        ("open_snapshots", json!(s.open_snapshots)),
        (
            "oldest_snapshot_age_micros",
            json!(s.oldest_snapshot_age.as_micros() as u64),
        ),
        ("long_lived_snapshots", json!(s.long_lived_snapshots)),
        ("map_size", json!(s.map_size)),
        ("storage_full", json!(s.storage_full)),
        ("conflicts", json!(s.conflicts)),
        ("apply_batches", json!(s.apply_batches)),
        ("applied_ops", json!(s.applied_ops)),
        ("map_resizes", json!(s.map_resizes)),
        ("map_resizes_postponed", json!(s.map_resizes_postponed)),
        ("checkpoints", json!(s.checkpoints)),
        ("tables", json!(tables)),
        ("wal_commits", json!(w.commits)),
        ("wal_groups", json!(w.groups)),
        ("wal_syncs", json!(w.syncs)),
        ("wal_sync_micros", json!(w.sync_micros)),
        ("wal_bytes_written", json!(w.bytes_written)),
        ("wal_record_bytes", json!(w.record_bytes)),
        ("wal_rotations", json!(w.rotations)),
        ("wal_segments_retired", json!(w.segments_retired)),
        ("wal_written_lsn", json!(w.written_lsn)),
        ("wal_durable_lsn", json!(w.durable_lsn)),
        ("wal_queued_commits", json!(w.queued_commits)),
        ("wal_queued_bytes", json!(w.queued_bytes)),
    ];
    print(
        format,
        &format!("database {} (opened)", paths.root.display()),
        &fields,
    );
    db.close()
        .map_err(|e| Failure::from_error(&e, &paths.root))?;
    Ok(EXIT_OK)
}

pub fn offline(dir: &Path, format: Format) -> Outcome {
    let (root, wal, data) = match target(dir, true)? {
        Target::Database(p) => (p.root, p.wal, Some(p.data)),
        Target::Log(d) => (d.clone(), d, None),
    };
    let store: Option<StoreInfo> = match &data {
        None => None,
        Some(data) => inspect::read_store(data).map_err(|e| match e {
            walmdb::Error::Io(io) => Failure::usage(format!("{}: {io}", data.display())),
            other => Failure::damaged(format!(
                "{}: {other} (run `walmdb verify {}` for details)",
                data.display(),
                dir.display()
            )),
        })?,
    };
    let scan: LogScan =
        inspect::scan_log(&wal).map_err(|e| Failure::usage(format!("{}: {e}", wal.display())))?;
    let applied = store.as_ref().map_or(0, |s| s.applied_lsn);
    let from_lsn = data.as_ref().map(|_| applied);
    let readable = scan.readable(from_lsn);
    let open = scan.would_open(from_lsn, RecoveryMode::TolerateTornTail);
    let first = scan.segments.iter().find_map(|s| s.first_lsn());
    let last = readable.last_lsn;
    let records: u64 = scan.segments.iter().map(|s| s.records()).sum();
    let to_replay = match (&open, data.is_some()) {
        (Ok(r), true) => json!(r.last_lsn.saturating_sub(applied)),
        _ => Value::Null,
    };
    let mut fields = vec![
        ("path", json!(root.display().to_string())),
        ("in_use_by_pid", json!(inspect::lock_holder(&root))),
        ("segments", json!(scan.segments.len())),
        ("log_bytes", json!(scan.segment_bytes())),
        ("log_size", json!(size(scan.segment_bytes()))),
        (
            "used_bytes",
            json!(scan.segments.iter().map(|s| s.run_end).sum::<u64>()),
        ),
        ("spare_segments", json!(scan.spares.len())),
        (
            "spare_bytes",
            json!(scan.spares.iter().map(|f| f.bytes).sum::<u64>()),
        ),
        ("records", json!(records)),
        ("first_lsn", json!(first)),
        ("last_lsn", json!(last)),
        (
            "first_segment",
            json!(scan.segments.first().map(|s| s.file_name.clone())),
        ),
        (
            "last_segment",
            json!(scan.segments.last().map(|s| s.file_name.clone())),
        ),
        (
            "log_opens",
            json!(match &open {
                Ok(r) if r.cut.is_some() => "yes, cutting a torn tail".to_owned(),
                Ok(_) => "yes".to_owned(),
                Err(e) => format!("no: {e}"),
            }),
        ),
    ];
    if let Some(data) = &data {
        fields.push(("applied_lsn", json!(applied)));
        fields.push(("records_to_replay", to_replay));
        fields.push((
            "lmdb_bytes",
            json!(store.as_ref().map_or(0, |s| s.file_bytes)),
        ));
        fields.push((
            "lmdb_size",
            json!(size(store.as_ref().map_or(0, |s| s.file_bytes))),
        ));
        fields.push((
            "tables",
            json!(store.as_ref().map_or_else(Vec::new, |s| s
                .tables
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>())),
        ));
        if store.is_none() {
            fields.push(("lmdb", json!(format!("no store in {}", data.display()))));
        }
    }
    print(
        format,
        &format!("{} (offline: nothing opened)", root.display()),
        &fields,
    );
    Ok(EXIT_OK)
}

pub fn checkpoint(dir: &Path, format: Format) -> Outcome {
    let paths = database(dir)?;
    let db = open(&paths)?;
    let report = db.recovery_report().clone();
    // Opening retires segments too: those below LMDB's applied LSN, and those covered by
    // the checkpoint after a replay that outgrew the overlay applied its oldest part.
    let at_open = report.wal.segments_retired as u64 + db.stats().wal.segments_retired;
    let lsn = db
        .checkpoint()
        .map_err(|e| Failure::from_error(&e, &paths.root))?;
    let total = report.wal.segments_retired as u64 + db.stats().wal.segments_retired;
    db.close()
        .map_err(|e| Failure::from_error(&e, &paths.root))?;
    let live = inspect::scan_log(&paths.wal).map_or(0, |s| s.segments.len());
    let fields = [
        ("path", json!(paths.root.display().to_string())),
        ("checkpoint_lsn", json!(lsn)),
        ("segments_retired", json!(total)),
        ("segments_retired_at_open", json!(at_open)),
        ("segments_retired_by_checkpoint", json!(total - at_open)),
        ("replayed_records_at_open", json!(report.replayed_records)),
        ("live_segments", json!(live)),
    ];
    print(
        format,
        &format!("checkpointed {}", paths.root.display()),
        &fields,
    );
    Ok(EXIT_OK)
}
