//! `walmdb verify`: the per-segment table and the verdict.

use std::path::Path;

use serde_json::{json, Value};
use walmdb::inspect::{self, SegmentEnd, SegmentInfo, Severity, Verification};
use walmdb::{Lineage, RecoveryMode};

use crate::util::{format_micros, progress_bar};
use crate::{target, Failure, Format, Outcome, Target, EXIT_DAMAGED, EXIT_OK};

pub fn run(dir: &Path, strict: bool, deep: bool, format: Format) -> Outcome {
    let target = target(dir, true)?;
    let mode = if strict {
        RecoveryMode::Strict
    } else {
        RecoveryMode::TolerateTornTail
    };
    let wal_dir = match &target {
        Target::Database(p) => p.wal.clone(),
        Target::Log(d) => d.clone(),
    };
    let total: u64 = std::fs::read_dir(&wal_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let bar = progress_bar(total, "verifying");
    let mut progress = |done: u64, _total: u64| bar.set_position(done);
    let v = match &target {
        Target::Database(p) => inspect::verify_with_progress(&p.root, mode, &mut progress),
        Target::Log(d) => inspect::verify_log(d, mode, &mut progress),
    }
    .map_err(|e| Failure::usage(format!("{}: {e}", dir.display())))?;
    bar.finish_and_clear();
    let scrub = match (&target, deep) {
        (Target::Database(p), true) => Some(crate::scrub::deep(&p.data)?),
        _ => None,
    };
    match format {
        Format::Text => print_text(&v, strict, scrub.as_ref()),
        Format::Json => {
            let mut out = to_json(&v, strict);
            if let Some(scrub) = &scrub {
                out["deep_scrub"] = scrub.to_json();
            }
            println!("{out}");
        }
    }
    Ok(
        if v.is_healthy() && scrub.as_ref().is_none_or(|s| s.is_healthy()) {
            EXIT_OK
        } else {
            EXIT_DAMAGED
        },
    )
}

/// The log's database and timeline, as recovery judges them.
fn lineage_text(lineage: &walmdb::Result<Option<Lineage>>) -> String {
    match lineage {
        Ok(Some(l)) if l.parent != 0 => format!("{l} (branched from timeline {})", l.parent),
        Ok(Some(l)) => l.to_string(),
        Ok(None) => "none recorded (format version 1 segments; the next open records one)".into(),
        Err(e) => e.to_string(),
    }
}

/// A segment header's database and timeline, for the JSON output.
fn lineage_json(lineage: Option<Lineage>) -> Value {
    match lineage {
        Some(l) if l.is_known() => json!({
            "format_version": 2,
            "identity": format!("{:016x}", l.identity),
            "timeline": l.timeline,
            "parent_timeline": l.parent,
        }),
        Some(_) => {
            json!({"format_version": 1, "identity": null, "timeline": 1, "parent_timeline": 0})
        }
        None => Value::Null,
    }
}

/// What the END column says of a segment, with its place in the open that would follow.
fn end_text(v: &Verification, i: usize, s: &SegmentInfo) -> String {
    let mut text = s.end.to_string();
    if !s.after.is_empty() && s.end == SegmentEnd::Clean {
        text = format!("{} valid frame(s) after the end", s.after.len());
    }
    if v.start.is_some_and(|start| i < start) {
        text.push_str(" [below the applied LSN: retired on open]");
    }
    text
}

fn print_text(v: &Verification, strict: bool, scrub: Option<&crate::scrub::Deep>) {
    let what = if v.log_only { "log" } else { "database" };
    println!("{what} {}", v.paths.root.display());
    if !v.log_only {
        match &v.store {
            Ok(Some(s)) => println!(
                "LMDB: applied LSN {}, {} table(s), data.mdb {} bytes",
                s.applied_lsn,
                s.tables.len(),
                s.file_bytes
            ),
            Ok(None) => println!("LMDB: no store yet (applied LSN 0)"),
            Err(e) => println!("LMDB: unreadable: {e}"),
        }
    }
    let log = &v.log;
    println!(
        "log: {} segment(s), {} spare(s), {} bytes",
        log.segments.len(),
        log.spares.len(),
        log.segment_bytes()
    );
    if !log.segments.is_empty() {
        println!("lineage: {}", lineage_text(&log.lineage()));
    }
    if !log.segments.is_empty() {
        let rows: Vec<[String; 8]> = log
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
                [
                    s.file_name.clone(),
                    s.segment_no.to_string(),
                    opt(s.first_lsn()),
                    opt(s.last_lsn().filter(|_| !s.frames.is_empty())),
                    s.records().to_string(),
                    s.run_end.to_string(),
                    s.bytes.to_string(),
                    end_text(v, i, s),
                ]
            })
            .collect();
        let heads = [
            "SEGMENT",
            "NO",
            "FIRST LSN",
            "LAST LSN",
            "RECORDS",
            "USED",
            "BYTES",
            "END",
        ];
        let mut widths = heads.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cells: [&str; 8]| {
            let mut out = format!("  {:<w$}", cells[0], w = widths[0]);
            for (k, c) in cells.iter().enumerate().take(7).skip(1) {
                out.push_str(&format!("  {:>w$}", c, w = widths[k]));
            }
            out.push_str(&format!("  {}", cells[7]));
            out
        };
        println!("{}", line(heads));
        for r in &rows {
            println!("{}", line(r.each_ref().map(String::as_str)));
        }
        if let Some(first) = log.segments.iter().find_map(|s| s.commit_micros) {
            let last = log.segments.iter().rev().find_map(|s| s.commit_micros);
            println!(
                "commit times: {} .. {}",
                format_micros(first.0),
                format_micros(last.map_or(first.1, |l| l.1))
            );
        }
    }
    for p in &log.problems {
        println!("problem: {p}");
    }
    for f in &v.findings {
        let label = match f.severity {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Damage => "DAMAGE",
        };
        println!("{label}: {}", f.message);
    }
    if let Some(scrub) = scrub {
        scrub.print_text();
    }
    match &v.open {
        Ok(_) if scrub.is_some_and(|s| !s.is_healthy()) => println!("verdict: DAMAGED"),
        Ok(r) if v.is_healthy() => {
            let range = if r.last_lsn >= r.first_lsn {
                format!("LSNs {}..={}", r.first_lsn, r.last_lsn)
            } else {
                format!("no record; the next LSN is {}", r.first_lsn)
            };
            let opener = if v.log_only { "Wal::open" } else { "Db::open" };
            let replay = if v.log_only || r.last_lsn <= v.applied_lsn {
                String::new()
            } else {
                format!(", {} record(s) to replay", r.last_lsn - v.applied_lsn)
            };
            let mode = if strict { " (strict)" } else { "" };
            println!("verdict: healthy{mode}: {opener} would open {range}{replay}");
        }
        _ => println!("verdict: DAMAGED"),
    }
}

fn to_json(v: &Verification, strict: bool) -> Value {
    let segments: Vec<Value> = v
        .log
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (end, offset, reason) = match &s.end {
                SegmentEnd::Clean => ("clean", None, None),
                SegmentEnd::TornTail { offset, reason, .. } => {
                    ("torn_tail", Some(*offset), Some(reason.clone()))
                }
                SegmentEnd::Corruption { offset, reason, .. } => {
                    ("corruption", Some(*offset), Some(reason.clone()))
                }
                SegmentEnd::BadHeader(reason) => ("bad_header", Some(0), Some(reason.clone())),
                SegmentEnd::UnsupportedVersion(found) => (
                    "unsupported_version",
                    Some(0),
                    Some(format!("format version {found}")),
                ),
            };
            json!({
                "file": s.file_name,
                "segment": s.segment_no,
                "first_lsn": s.first_lsn(),
                "last_lsn": s.last_lsn(),
                "records": s.records(),
                "frames": s.frames.len(),
                "used_bytes": s.run_end,
                "bytes": s.bytes,
                "end": end,
                "end_offset": offset,
                "end_reason": reason,
                "frames_after": s.after.len(),
                "retired_on_open": v.start.is_some_and(|start| i < start),
                "lineage": lineage_json(s.lineage()),
            })
        })
        .collect();
    let findings: Vec<Value> = v
        .findings
        .iter()
        .map(|f| {
            let severity = match f.severity {
                Severity::Note => "note",
                Severity::Warning => "warning",
                Severity::Damage => "damage",
            };
            json!({"severity": severity, "message": f.message})
        })
        .collect();
    let open = match &v.open {
        Ok(r) => json!({
            "ok": true,
            "first_lsn": r.first_lsn,
            "last_lsn": r.last_lsn,
            "segments": r.segments,
            "segments_retired": r.segments_retired,
            "cut": r.cut.as_ref().map(|c| json!({
                "segment": c.segment,
                "offset": c.offset,
                "bytes_cut": c.bytes_cut,
                "frames_dropped": c.frames_dropped,
                "segments_dropped": c.segments_dropped,
                "reason": c.reason,
            })),
        }),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    json!({
        "dir": v.paths.root.display().to_string(),
        "log_only": v.log_only,
        "strict": strict,
        "healthy": v.is_healthy(),
        "applied_lsn": v.applied_lsn,
        "lineage": match v.log.lineage() {
            Ok(l) => lineage_json(l),
            Err(e) => json!({"error": e.to_string()}),
        },
        "store_error": v.store.as_ref().err().map(|e| e.to_string()),
        "segments": segments,
        "spares": v.log.spares.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        "problems": v.log.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "open": open,
        "findings": findings,
        "in_use_by": v.in_use_by,
    })
}
