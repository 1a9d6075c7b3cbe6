//! `walmdb`: inspect, verify and maintain a walmdb database directory from the command line.
//! See `docs/cli.md`.
//!
//! Exit codes: 0 success (healthy), 1 damage found, 2 usage or I/O error (missing directory,
//! not a walmdb directory, bad arguments), 3 the database is in use by another process.

mod backup;
mod dump;
mod quarantine;
mod repair;
mod scrub;
mod stats;
mod util;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code: healthy, or the command did what it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code: damage found (corruption, a gap, LMDB's applied LSN ahead of or behind the log).
pub const EXIT_DAMAGED: u8 = 1;
/// Exit code: a usage or I/O error (clap uses it for bad arguments too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the database is in use by another process.
pub const EXIT_LOCKED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "walmdb",
    version,
    about = "Inspect, verify and maintain a walmdb database directory",
    long_about = "Inspect, verify and maintain a walmdb database directory (<DIR>/wal: the \
                  write-ahead log, <DIR>/data: LMDB).\n\n`verify`, `dump` and `stats --offline` \
                  only read: they never modify, create or lock a file. `stats` and `checkpoint` \
                  open the database (which recovers it, as the engine does).\n\nExit codes: 0 \
                  healthy / done, 1 damage found, 2 usage or I/O error, 3 database in use."
)]
struct Cli {
    /// The WAL archive (`WalConfig::archive`): commands that open the database archive the
    /// segments they retire there (open a database that archives always with it, or the
    /// archive gets a gap); `restore` rolls forward from it.
    #[arg(long, global = true, value_name = "DIR")]
    archive: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// `--archive`, for the commands that open the database.
pub static ARCHIVE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// JSON (`dump`: one object per line).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check every segment's header and frame CRCs, the LSN sequence across segments, and
    /// LMDB's applied LSN against the log, without changing anything.
    ///
    /// Healthy means `Db::open` would open the database without losing a record it should
    /// hold. A torn tail at the end of the last segment (what a crash leaves, cut on open)
    /// is a warning, unless --strict. DIR may also be a bare log directory (wal-*.log files),
    /// judged as `Wal::open` would open it.
    Verify {
        /// The database directory.
        dir: PathBuf,
        /// Treat a torn tail as damage (as `RecoveryMode::Strict` does).
        #[arg(long)]
        strict: bool,
        /// Also scrub LMDB's file: every entry's checksum, key order, entry counts and the
        /// table list, walked in a child process (a page that makes LMDB fault is damage).
        #[arg(long)]
        deep: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// The deep scrub's child process (see `verify --deep`).
    #[command(hide = true)]
    ScrubStore {
        /// The LMDB directory (`<DIR>/data`).
        data_dir: PathBuf,
    },
    /// Print the log's records: one line per operation (LSN, commit time, table, operation,
    /// key, value), or one JSON object per line. Reads only.
    ///
    /// Stops with an error naming the segment file and offset at corruption; a torn tail ends
    /// the dump with a note on stderr. DIR may also be a bare log directory.
    Dump(dump::Options),
    /// Open the database (which replays the log into LMDB, as any open does) and print its
    /// statistics; with --offline, read the files instead, without opening anything.
    Stats {
        /// The database directory.
        dir: PathBuf,
        /// Do not open the database: report segments, LSNs, sizes and LMDB's applied LSN
        /// from the files, changing nothing.
        #[arg(long)]
        offline: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Open the database, checkpoint it (apply everything, sync LMDB, retire the covered log
    /// segments) and close it.
    Checkpoint {
        /// The database directory.
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Back the database up into DEST (new or empty): a compacted LMDB copy, the log after
    /// its applied LSN and a checksummed MANIFEST. Opens the database, so it must not be in
    /// use: a running service backs itself up hot with `Db::backup`.
    Backup {
        /// The database directory.
        dir: PathBuf,
        /// The backup directory to create.
        dest: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Restore BACKUP into INTO (new or empty), rolled forward with the backup's log and
    /// the archive to the target (the latest reachable record without one); or, with
    /// --list, show the points BACKUP and the archive can restore to.
    #[command(group(clap::ArgGroup::new("target").args(["target_time", "target_lsn", "target_name", "list"])))]
    Restore {
        /// The backup directory (made by `walmdb backup` or `Db::backup`).
        backup: PathBuf,
        /// The directory to restore into.
        #[arg(required_unless_present = "list")]
        into: Option<PathBuf>,
        /// Restore every commit up to this time: RFC 3339 (2024-05-01T12:00:00Z,
        /// 2024-05-01T14:00:00.5+02:00), a date (local midnight), a local date and time
        /// without an offset ("2024-05-01 14:30", in the system's time zone), a time before
        /// now ("2 hours ago", "1 day ago", -90m), or microseconds since the Unix epoch.
        #[arg(
            long,
            value_name = "TIME",
            value_parser = util::parse_time,
            allow_hyphen_values = true
        )]
        target_time: Option<u64>,
        /// Restore every commit through this LSN.
        #[arg(long, value_name = "LSN")]
        target_lsn: Option<u64>,
        /// Restore every commit before the restore point of this name.
        #[arg(long, value_name = "NAME")]
        target_name: Option<String>,
        /// List the recovery points instead of restoring.
        #[arg(long)]
        list: bool,
        /// The timeline to follow: the backup's (the default), or a later timeline of the
        /// same database (a restore of it) that descends from it.
        #[arg(long, value_name = "N")]
        timeline: Option<u32>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// The bytes opening cut from the log (a torn tail, damage, later segments), kept in
    /// `<DIR>/wal/quarantine/`: `list` them, or `show` one with the whole records inside it.
    /// Reads only.
    Quarantine {
        #[command(subcommand)]
        action: quarantine::Action,
    },
    /// Rebuild DIR, whose LMDB file is damaged, into INTO (new or empty): from --backup,
    /// rolled forward with --archive and DIR's own log; or, without one, by salvage (every
    /// entry that verifies, then DIR's log), listing what could not be saved. DIR is only
    /// read (and locked meanwhile). Exit 0 when nothing is lost, 1 when something is.
    Repair {
        /// The damaged database directory (closed).
        dir: PathBuf,
        /// The directory to rebuild into.
        into: PathBuf,
        /// A backup of the database (made by `walmdb backup` or `Db::backup`).
        #[arg(long, value_name = "DIR")]
        backup: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Compact LMDB's file (drop free pages) and close: checkpoints, writes a compacted copy
    /// and swaps it in while the database is still locked.
    Compact {
        /// The database directory.
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// Why a command stopped: the message and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What to print on stderr.
    pub message: String,
}

impl Failure {
    /// A usage or I/O error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// Damage (exit code 1).
    pub fn damaged(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_DAMAGED,
            message: message.into(),
        }
    }

    /// An error from the engine or the inspection, with the exit code its kind calls for.
    pub fn from_error(e: &walmdb::Error, dir: &std::path::Path) -> Self {
        use walmdb::Error as E;
        match e {
            E::Locked { path } => Failure {
                code: EXIT_LOCKED,
                message: format!(
                    "database is in use by another process: {} is locked (close the other handle or process, or use `stats --offline`)",
                    path.join("LOCK").display()
                ),
            },
            E::Corruption { .. }
            | E::TornTail { .. }
            | E::SegmentSequence { .. }
            | E::UnsupportedVersion { .. }
            | E::Inconsistent { .. }
            | E::CorruptEntry { .. }
            | E::StoreCorrupted { .. }
            | E::ForeignSegment { .. }
            | E::Lmdb { .. } => Failure::damaged(format!(
                "{}: {e} (run `walmdb verify {}` for details)",
                dir.display(),
                dir.display()
            )),
            other => Failure::usage(format!("{}: {other}", dir.display())),
        }
    }
}

/// The output of a command that succeeded: its exit code (0, or 1 when it found damage).
pub type Outcome = Result<u8, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let archive = cli.archive.clone();
    let _ = ARCHIVE.set(cli.archive);
    let result = match cli.command {
        Command::Verify {
            dir,
            strict,
            deep,
            format,
        } => verify::run(&dir, strict, deep, format),
        Command::ScrubStore { data_dir } => scrub::child(&data_dir),
        Command::Dump(options) => dump::run(&options),
        Command::Stats {
            dir,
            offline,
            format,
        } => {
            if offline {
                stats::offline(&dir, format)
            } else {
                stats::online(&dir, format)
            }
        }
        Command::Checkpoint { dir, format } => stats::checkpoint(&dir, format),
        Command::Backup { dir, dest, format } => backup::backup(&dir, &dest, format),
        Command::Restore {
            backup,
            into,
            target_time,
            target_lsn,
            target_name,
            list,
            timeline,
            format,
        } => match (list, into) {
            (true, _) => backup::list(&backup, archive.as_deref(), timeline, format),
            (false, Some(into)) => backup::restore(
                &backup,
                &into,
                archive,
                backup::Target {
                    time: target_time,
                    lsn: target_lsn,
                    name: target_name,
                },
                timeline,
                format,
            ),
            (false, None) => Err(Failure::usage("restore needs a directory to restore into")),
        },
        Command::Compact { dir, format } => backup::compact(&dir, format),
        Command::Quarantine { action } => quarantine::run(&action),
        Command::Repair {
            dir,
            into,
            backup,
            format,
        } => repair::repair(&dir, &into, backup, archive, format),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("walmdb: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// What a directory given on the command line is.
pub enum Target {
    /// A database directory.
    Database(walmdb::inspect::DbPaths),
    /// A bare log directory (segment files, no `wal/` or `data/`).
    Log(PathBuf),
}

/// Resolves a directory argument: a database directory, or (when `allow_log`) a bare log
/// directory. A missing directory or anything else is a usage error.
pub fn target(dir: &std::path::Path, allow_log: bool) -> Result<Target, Failure> {
    match walmdb::inspect::db_paths(dir) {
        Ok(paths) => Ok(Target::Database(paths)),
        Err(walmdb::Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
            if allow_log && walmdb::inspect::is_log_dir(dir) {
                Ok(Target::Log(dir.to_owned()))
            } else {
                Err(Failure::usage(e.to_string()))
            }
        }
        Err(walmdb::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(
            Failure::usage(format!("{}: no such directory", dir.display())),
        ),
        Err(e) => Err(Failure::usage(e.to_string())),
    }
}
