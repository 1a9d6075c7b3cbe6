//! `walmdb quarantine list|show`: what opening cut from the log, kept in
//! `<log>/quarantine/` (`docs/operations.md`, "Quarantine").

use std::path::PathBuf;

use serde_json::json;
use walmdb::inspect::{self, QuarantineListing};

use crate::util::{format_micros, size};
use crate::{target, Failure, Format, Outcome, Target, EXIT_DAMAGED, EXIT_OK};

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// One line per quarantined cut: file, segment, offset, bytes, time, whole records
    /// inside, reason.
    List {
        /// The database directory (or a bare log directory).
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// One cut: its header, then the whole records inside it, as `dump` prints them.
    Show {
        /// The database directory (or a bare log directory).
        dir: PathBuf,
        /// The quarantine file's name (from `list`).
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

fn entries(dir: &std::path::Path) -> Result<QuarantineListing, Failure> {
    let log = match target(dir, true)? {
        Target::Database(p) => p.wal,
        Target::Log(d) => d,
    };
    inspect::quarantine_entries(&log).map_err(|e| Failure::usage(format!("{}: {e}", dir.display())))
}

pub fn run(action: &Action) -> Outcome {
    match action {
        Action::List { dir, format } => {
            let all = entries(dir)?;
            let mut damaged = false;
            for (name, entry) in &all {
                match (entry, format) {
                    (Ok(e), Format::Text) => println!(
                        "{name}  segment {}  offset {}  {}  {}  {} record(s)  {}",
                        e.segment_no,
                        e.offset,
                        size(e.bytes.len() as u64),
                        format_micros(e.time_micros),
                        inspect::quarantined_records(e).len(),
                        e.reason
                    ),
                    (Ok(e), Format::Json) => println!(
                        "{}",
                        json!({
                            "file": name,
                            "segment": e.segment_no,
                            "offset": e.offset,
                            "bytes": e.bytes.len(),
                            "time_micros": e.time_micros,
                            "records": inspect::quarantined_records(e).len(),
                            "reason": e.reason,
                        })
                    ),
                    (Err(why), _) => {
                        damaged = true;
                        match format {
                            Format::Text => println!("{name}  DAMAGED: {why}"),
                            Format::Json => {
                                println!("{}", json!({"file": name, "damaged": why}))
                            }
                        }
                    }
                }
            }
            if all.is_empty() && *format == Format::Text {
                println!("the quarantine is empty");
            }
            Ok(if damaged { EXIT_DAMAGED } else { EXIT_OK })
        }
        Action::Show { dir, name, format } => {
            let all = entries(dir)?;
            let Some((_, entry)) = all.iter().find(|(n, _)| n == name) else {
                return Err(Failure::usage(format!(
                    "{}: no quarantine file named {name}",
                    dir.display()
                )));
            };
            let e = entry
                .as_ref()
                .map_err(|why| Failure::damaged(format!("{name}: {why}")))?;
            if *format == Format::Text {
                println!(
                    "{name}: segment {} offset {}, {} cut at {}: {}",
                    e.segment_no,
                    e.offset,
                    size(e.bytes.len() as u64),
                    format_micros(e.time_micros),
                    e.reason
                );
            }
            for record in inspect::quarantined_records(e) {
                for line in crate::dump::entry_lines(&record, *format) {
                    println!("{line}");
                }
            }
            Ok(EXIT_OK)
        }
    }
}
