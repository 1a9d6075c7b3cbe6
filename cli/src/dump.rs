//! `walmdb dump`: the log's records as text or JSON lines.

use std::io::{BufWriter, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde_json::{json, Map, Value};
use walmdb::inspect::{self, LogEntry, LogScan};
use walmdb::{Op, Record, RecordType, RecoveryMode};

use crate::util::{escape, format_micros, hex, progress_bar};
use crate::{target, Failure, Format, Outcome, Target, EXIT_DAMAGED, EXIT_OK};

/// The flags of `walmdb dump`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// The database directory.
    pub dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Keys, values and opaque payloads as hex instead of escaped text.
    #[arg(long)]
    pub hex: bool,
    /// Only records with this LSN or a later one.
    #[arg(long, value_name = "LSN")]
    pub from_lsn: Option<u64>,
    /// Only records with this LSN or an earlier one.
    #[arg(long, value_name = "LSN")]
    pub to_lsn: Option<u64>,
    /// Only records at or after this time; records without a time (checkpoint, consensus)
    /// are left out. RFC 3339 (2024-05-01T12:00:00Z), a date (local midnight), a local date
    /// and time without an offset ("2024-05-01 14:30"), a time before now ("2 hours ago",
    /// -90m), or microseconds since the Unix epoch.
    #[arg(
        long,
        value_name = "TIME",
        value_parser = crate::util::parse_time,
        allow_hyphen_values = true
    )]
    pub since: Option<u64>,
    /// Only records at or before this time (the forms --since takes).
    #[arg(
        long,
        value_name = "TIME",
        value_parser = crate::util::parse_time,
        allow_hyphen_values = true
    )]
    pub until: Option<u64>,
    /// Only operations on this table (other record types are left out).
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,
    /// Write to this file instead of standard output (a progress bar shows on a terminal).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(o: &Options) -> Outcome {
    let lsns = o.from_lsn.unwrap_or(0)..=o.to_lsn.unwrap_or(u64::MAX);
    if lsns.is_empty() {
        return Err(Failure::usage(format!(
            "--from-lsn {} is after --to-lsn {}",
            lsns.start(),
            lsns.end()
        )));
    }
    if let (Some(since), Some(until)) = (o.since, o.until) {
        if since > until {
            return Err(Failure::usage(format!(
                "--since {} is after --until {}",
                format_micros(since),
                format_micros(until)
            )));
        }
    }
    let io_err = |e: std::io::Error| Failure::usage(format!("{}: {e}", o.dir.display()));
    // The log as the engine would open it: from LMDB's applied LSN when there is a store.
    let (wal_dir, from_lsn) = match target(&o.dir, true)? {
        Target::Database(p) => {
            let applied = inspect::read_store(&p.data).ok().flatten();
            (p.wal, Some(applied.map_or(0, |s| s.applied_lsn)))
        }
        Target::Log(d) => (d, None),
    };
    let scan = inspect::scan_log(&wal_dir)
        .map_err(|e| Failure::usage(format!("{}: {e}", wal_dir.display())))?;
    let to_terminal = o.output.is_none() && std::io::stdout().is_terminal();
    let mut out: Box<dyn Write> = match &o.output {
        Some(path) => {
            // The dump holds the database's data: private to the user, as walmdb's files are.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
            Box::new(BufWriter::new(file))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut records = scan.records(from_lsn, lsns);
    let bar = if to_terminal {
        indicatif::ProgressBar::hidden()
    } else {
        progress_bar(records.progress().1, "dumping")
    };
    let mut failure = None;
    while let Some(item) = records.next() {
        let entry = match item {
            Ok(e) => e,
            Err(e) => {
                failure = Some(error_at(&scan, &e));
                break;
            }
        };
        if !wanted_time(&entry, o) {
            continue;
        }
        let lines = match o.format {
            Format::Text => text_lines(&entry, o),
            Format::Json => json_lines(&entry, o),
        };
        for line in lines {
            if let Err(e) = writeln!(out, "{line}") {
                // A closed pipe (`| head`) ends the dump quietly.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(EXIT_OK);
                }
                return Err(io_err(e));
            }
        }
        bar.set_position(records.progress().0);
    }
    bar.finish_and_clear();
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(EXIT_OK),
        other => other.map_err(io_err)?,
    }
    drop(out);
    if let Some(f) = failure {
        return Err(f);
    }
    // How the readable log ends, judged as opening would judge it.
    let readable = scan.readable(from_lsn);
    match scan.would_open(from_lsn, RecoveryMode::TolerateTornTail) {
        Ok(report) => {
            if let Some(cut) = &report.cut {
                eprintln!(
                    "walmdb: note: the log ends with a torn tail in {} at offset {} ({}); the readable log ends at LSN {}; opening would cut the rest",
                    scan.file_name(cut.segment),
                    cut.offset,
                    cut.reason,
                    report.last_lsn
                );
            }
            Ok(EXIT_OK)
        }
        Err(e) => {
            let mut message = match &e {
                walmdb::Error::Corruption {
                    segment,
                    offset,
                    reason,
                } => format!(
                    "corruption in {} at offset {offset}: {reason}",
                    scan.file_name(*segment)
                ),
                other => other.to_string(),
            };
            let same_place = matches!(
                (&e, &readable.stop),
                (walmdb::Error::Corruption { segment, offset, .. }, Some(stop))
                    if stop.segment_no == *segment && stop.offset == *offset
            );
            if let Some(stop) = readable.stop.as_ref().filter(|_| !same_place) {
                message.push_str(&format!(
                    "; the dump stopped at {} offset {} ({})",
                    scan.file_name(stop.segment_no),
                    stop.offset,
                    stop.reason
                ));
            }
            message.push_str(&format!(
                " (run `walmdb verify {}` for details)",
                o.dir.display()
            ));
            Err(Failure::damaged(message))
        }
    }
}

/// An error met while reading the records back: damage, named by file and offset.
fn error_at(scan: &LogScan, e: &walmdb::Error) -> Failure {
    match e {
        walmdb::Error::Corruption {
            segment,
            offset,
            reason,
        } => Failure {
            code: EXIT_DAMAGED,
            message: format!(
                "corruption in {} at offset {offset}: {reason}",
                scan.file_name(*segment)
            ),
        },
        other => Failure::usage(other.to_string()),
    }
}

fn wanted_time(e: &LogEntry, o: &Options) -> bool {
    if o.since.is_none() && o.until.is_none() {
        return true;
    }
    let Some(t) = e.time_micros() else {
        return false;
    };
    o.since.is_none_or(|s| t >= s) && o.until.is_none_or(|u| t <= u)
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Put { .. } => "put",
        Op::Delete { .. } => "delete",
        Op::CreateTable { .. } => "create-table",
        Op::DropTable { .. } => "drop-table",
    }
}

fn kind_name(kind: RecordType) -> &'static str {
    match kind {
        RecordType::Vote => "vote",
        RecordType::TruncateSuffix => "truncate-suffix",
        RecordType::PurgePrefix => "purge-prefix",
        RecordType::Entry => "entry",
        RecordType::TxnPart => "txn-part",
        RecordType::TxnEnd => "txn-end",
        RecordType::Txn => "txn",
        RecordType::Checkpoint => "checkpoint",
        RecordType::Timestamp => "timestamp",
        _ => "unknown",
    }
}

/// Bytes for a text line: quoted escaped text, or bare hex.
fn text_bytes(bytes: &[u8], hex_out: bool) -> String {
    if hex_out {
        hex(bytes)
    } else {
        format!("\"{}\"", escape(bytes, true))
    }
}

/// A name for a text line: bare when it is plain, quoted and escaped otherwise.
fn text_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'=');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", escape(name.as_bytes(), true))
    }
}

/// The operations of a record that pass `--table`, with their index in the transaction.
fn ops<'a>(e: &'a LogEntry, o: &'a Options) -> Option<Vec<(usize, &'a Op)>> {
    match &e.record {
        Record::Txn(txn) => Some(
            txn.ops
                .iter()
                .enumerate()
                .filter(|(_, op)| o.table.as_deref().is_none_or(|t| op.table() == t))
                .collect(),
        ),
        _ => None,
    }
}

/// One record's lines as `dump` prints them (every table, text escaped).
pub fn entry_lines(e: &LogEntry, format: Format) -> Vec<String> {
    let o = Options {
        dir: PathBuf::new(),
        format,
        hex: false,
        from_lsn: None,
        to_lsn: None,
        since: None,
        until: None,
        table: None,
        output: None,
    };
    match format {
        Format::Text => text_lines(e, &o),
        Format::Json => json_lines(e, &o),
    }
}

fn text_lines(e: &LogEntry, o: &Options) -> Vec<String> {
    let time = e
        .time_micros()
        .map_or_else(|| "-".to_owned(), format_micros);
    let head = format!("lsn={} time={time}", e.lsn);
    if let Some(ops) = ops(e, o) {
        let Record::Txn(txn) = &e.record else {
            unreachable!("ops are a transaction's")
        };
        if txn.ops.is_empty() && o.table.is_none() {
            return vec![format!("{head} op=txn ops=0")];
        }
        return ops
            .into_iter()
            .map(|(_, op)| {
                let mut line = format!("{head} table={} op={}", text_name(op.table()), op_name(op));
                match op {
                    Op::Put { key, value, .. } => line.push_str(&format!(
                        " key={} value={} value_len={}",
                        text_bytes(key, o.hex),
                        text_bytes(value, o.hex),
                        value.len()
                    )),
                    Op::Delete { key, .. } => {
                        line.push_str(&format!(" key={}", text_bytes(key, o.hex)))
                    }
                    _ => {}
                }
                line
            })
            .collect();
    }
    if o.table.is_some() {
        return Vec::new();
    }
    let line = match &e.record {
        Record::Checkpoint { applied_lsn } => {
            format!("{head} op=checkpoint applied_lsn={applied_lsn}")
        }
        Record::Timestamp { name, .. } => {
            format!(
                "{head} op=timestamp name={}",
                text_bytes(name.as_bytes(), false)
            )
        }
        Record::Consensus { kind, payload } => format!(
            "{head} op={} payload={} payload_len={}",
            kind_name(*kind),
            text_bytes(payload, o.hex),
            payload.len()
        ),
        Record::TxnPiece {
            kind,
            number,
            chunk,
        } => format!(
            "{head} op={} number={number} chunk_len={}",
            kind_name(*kind),
            chunk.len()
        ),
        _ => format!("{head} op=unknown"),
    };
    vec![line]
}

fn json_bytes(bytes: &[u8], hex_out: bool) -> Value {
    Value::String(if hex_out {
        hex(bytes)
    } else {
        escape(bytes, false)
    })
}

fn json_lines(e: &LogEntry, o: &Options) -> Vec<String> {
    let mut base = Map::new();
    base.insert("lsn".into(), json!(e.lsn));
    base.insert(
        "time".into(),
        e.time_micros()
            .map_or(Value::Null, |t| json!(format_micros(t))),
    );
    base.insert("time_micros".into(), json!(e.time_micros()));
    base.insert("segment".into(), json!(e.segment_no));
    base.insert("frame_offset".into(), json!(e.frame_offset));
    let with = |fields: Value| {
        let mut obj = base.clone();
        if let Value::Object(extra) = fields {
            obj.extend(extra);
        }
        Value::Object(obj).to_string()
    };
    if let Some(ops) = ops(e, o) {
        let Record::Txn(txn) = &e.record else {
            unreachable!("ops are a transaction's")
        };
        if txn.ops.is_empty() && o.table.is_none() {
            return vec![with(json!({"type": "txn", "op": null, "ops": 0}))];
        }
        return ops
            .into_iter()
            .map(|(i, op)| {
                let mut fields = json!({
                    "type": "txn",
                    "op": op_name(op),
                    "op_index": i,
                    "ops": txn.ops.len(),
                    "table": op.table(),
                });
                let obj = fields.as_object_mut().expect("an object");
                match op {
                    Op::Put { key, value, .. } => {
                        obj.insert("key".into(), json_bytes(key, o.hex));
                        obj.insert("value".into(), json_bytes(value, o.hex));
                        obj.insert("value_len".into(), json!(value.len()));
                    }
                    Op::Delete { key, .. } => {
                        obj.insert("key".into(), json_bytes(key, o.hex));
                    }
                    _ => {}
                }
                with(fields)
            })
            .collect();
    }
    if o.table.is_some() {
        return Vec::new();
    }
    let fields = match &e.record {
        Record::Checkpoint { applied_lsn } => {
            json!({"type": "checkpoint", "applied_lsn": applied_lsn})
        }
        Record::Timestamp { name, .. } => json!({"type": "timestamp", "name": name}),
        Record::Consensus { kind, payload } => json!({
            "type": kind_name(*kind),
            "payload": json_bytes(payload, o.hex),
            "payload_len": payload.len(),
        }),
        Record::TxnPiece {
            kind,
            number,
            chunk,
        } => json!({
            "type": kind_name(*kind),
            "number": number,
            "chunk_len": chunk.len(),
        }),
        _ => json!({"type": "unknown"}),
    };
    vec![with(fields)]
}
