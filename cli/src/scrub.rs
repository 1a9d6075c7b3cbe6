//! `walmdb verify --deep`: the scrub of LMDB's file. The scrub reads the file page by page,
//! never through LMDB's map, so damage is a finding; it still runs in a child process (the
//! hidden `scrub-store` command), so that even a fault would be reported as damage, never as
//! a crash of the tool.
//!
//! The child prints `progress <entries> <table>` lines as it goes, then one `report <json>`
//! line. A child killed by a signal is damage, named by the last table it reported.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use walmdb::inspect;

use crate::util::hex;
use crate::{Failure, Outcome, EXIT_OK};

/// The hidden `scrub-store` command: scrubs `data_dir` and prints the report.
pub fn child(data_dir: &Path) -> Outcome {
    let mut out = std::io::stdout().lock();
    let mut progress = |p: walmdb::ScrubProgress<'_>| {
        let _ = writeln!(out, "progress {} {}", p.entries, p.table);
        let _ = out.flush();
    };
    let report = inspect::scrub_store(data_dir, &mut progress)
        .map_err(|e| Failure::usage(format!("{}: {e}", data_dir.display())))?;
    let value = match report {
        None => Value::Null,
        Some(r) => json!({
            "format": r.format,
            "healthy": r.is_healthy(),
            "entries": r.entries(),
            "damaged_entries": r.damaged_entries(),
            "tables": r.tables.iter().map(|t| json!({
                "name": t.name,
                "entries": t.entries,
                "bytes": t.bytes,
                "damaged": t.damaged,
                "lmdb_entries": t.lmdb_entries,
                "digest": format!("{:016x}", t.digest),
                "recorded": t.recorded.map(|(entries, digest)| json!({
                    "entries": entries,
                    "digest": format!("{digest:016x}"),
                })),
                "depth": t.depth,
                "pages": t.pages,
            })).collect::<Vec<_>>(),
            "damaged": r.damaged.iter().map(|d| json!({
                "table": d.table,
                "key_hex": hex(&d.key),
                "reason": d.reason.to_string(),
            })).collect::<Vec<_>>(),
            "damaged_pages": r.damaged_pages.iter().map(|d| json!({
                "page": d.page,
                "table": d.table,
                "reason": d.reason,
                "lost": lost_json(&d.lost),
            })).collect::<Vec<_>>(),
            "structure": r.structure,
            "pages": {
                "txnid": r.pages.txnid,
                "page_size": r.pages.page_size,
                "last_page": r.pages.last_page,
                "in_use": r.pages.in_use,
                "free": r.pages.free,
            },
            "micros": r.micros,
        }),
    };
    println!("report {value}");
    Ok(EXIT_OK)
}

/// The keys a damaged page or a loss may have held, as the JSON reports give them.
pub fn lost_json(lost: &walmdb::LostKeys) -> Value {
    match lost {
        walmdb::LostKeys::Nothing => json!("nothing"),
        walmdb::LostKeys::Key(k) => json!({"key_hex": hex(k)}),
        walmdb::LostKeys::Range { from, to } => json!({
            "from_hex": from.as_deref().map(hex),
            "to_hex": to.as_deref().map(hex),
        }),
    }
}

/// What the child found: its report (JSON, `null` for no store), or why it has none.
pub enum Deep {
    Report(Value),
    /// The child died of a signal: LMDB faulted on a damaged page.
    Fault {
        signal: i32,
        table: Option<String>,
        entries: u64,
    },
    /// The child failed (it could not open the store) with this message.
    Failed(String),
}

impl Deep {
    pub fn is_healthy(&self) -> bool {
        match self {
            Deep::Report(v) => v.is_null() || v["healthy"] == Value::Bool(true),
            _ => false,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Deep::Report(v) => v.clone(),
            Deep::Fault {
                signal,
                table,
                entries,
            } => {
                json!({"healthy": false, "fault": {"signal": signal, "table": table, "entries_walked": entries}})
            }
            Deep::Failed(e) => json!({"healthy": false, "error": e}),
        }
    }

    pub fn print_text(&self) {
        match self {
            Deep::Report(Value::Null) => println!("deep scrub: no store yet"),
            Deep::Report(v) => {
                println!(
                    "deep scrub: {} entries in {} tables (store format {}), {} damaged",
                    v["entries"],
                    v["tables"].as_array().map_or(0, Vec::len),
                    v["format"],
                    v["damaged_entries"]
                );
                for d in v["damaged"].as_array().into_iter().flatten() {
                    println!(
                        "DAMAGE: table {} key (hex) {}: {}",
                        d["table"],
                        d["key_hex"].as_str().unwrap_or_default(),
                        d["reason"].as_str().unwrap_or_default()
                    );
                }
                for d in v["damaged_pages"].as_array().into_iter().flatten() {
                    println!(
                        "DAMAGE: page {} of table {}: {}; {}",
                        d["page"],
                        d["table"],
                        d["reason"].as_str().unwrap_or_default(),
                        lost_text(&d["lost"])
                    );
                }
                for s in v["structure"].as_array().into_iter().flatten() {
                    println!("DAMAGE: {}", s.as_str().unwrap_or_default());
                }
            }
            Deep::Fault {
                signal,
                table,
                entries,
            } => println!(
                "DAMAGE: LMDB faulted (signal {signal}) walking {} after {entries} entries: a damaged page",
                table.as_deref().map_or("the store".to_owned(), |t| format!("table {t:?}"))
            ),
            Deep::Failed(e) => println!("DAMAGE: the deep scrub could not read the store: {e}"),
        }
    }
}

fn lost_text(lost: &Value) -> String {
    if let Some(key) = lost["key_hex"].as_str() {
        return format!("the value of key (hex) {key} is lost");
    }
    if lost.is_object() {
        let bound = |b: &Value, open: &str| b.as_str().map_or(open.to_owned(), str::to_owned);
        return format!(
            "entries with keys (hex) from {} to before {} may be lost",
            bound(&lost["from_hex"], "the first"),
            bound(&lost["to_hex"], "the last")
        );
    }
    "every entry was still read".into()
}

/// Runs the scrub of `data_dir` in a child process of this executable.
pub fn deep(data_dir: &Path) -> Result<Deep, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::usage(format!("cannot find the walmdb executable: {e}")))?;
    let output = Command::new(exe)
        .arg("scrub-store")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::usage(format!("cannot run the deep scrub: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut table = None;
    let mut entries = 0;
    for line in stdout.lines() {
        if let Some(report) = line.strip_prefix("report ") {
            let v = serde_json::from_str(report)
                .map_err(|e| Failure::usage(format!("the deep scrub's report: {e}")))?;
            return Ok(Deep::Report(v));
        }
        if let Some((n, t)) = line
            .strip_prefix("progress ")
            .and_then(|p| p.split_once(' '))
        {
            entries = n.parse().unwrap_or(entries);
            table = Some(t.to_owned());
        }
    }
    Ok(match output.status.signal() {
        Some(signal) => Deep::Fault {
            signal,
            table,
            entries,
        },
        None => Deep::Failed(
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .trim_start_matches("walmdb: error: ")
                .to_owned(),
        ),
    })
}
