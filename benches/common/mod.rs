//! What the benchmarks share: the workload (1-op transactions of a random 16-byte key and a
//! 100-byte value: 50 random bytes, then 50 bytes of text, from a deterministic generator) and
//! the raw baseline (4 KiB overwrites of a preallocated file, each followed by fdatasync).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use walmdb::{Op, Record, TxnRecord};

/// xorshift64*: a small deterministic generator, so the crate needs no `rand` dev-dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

const TEXT: &[u8] = b"user profile: status=active; plan=standard; region=eu-west; \
                      flags=none; the quick brown fox jumps over the lazy dog. ";

/// What `cmd args` prints (trimmed), for a report's machine details.
pub fn run_cmd(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| format!("({cmd} unavailable)"))
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A 100-byte value: 50 random bytes, then 50 bytes of repetitive text.
pub fn value(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![0u8; 100];
    rng.fill(&mut v[..50]);
    v[50..].copy_from_slice(&TEXT[..50]);
    v
}

/// A 1-op transaction: a put of a random 16-byte key and a 100-byte value.
pub fn txn(rng: &mut Rng) -> Record {
    let mut key = vec![0u8; 16];
    rng.fill(&mut key);
    Record::Txn(TxnRecord {
        commit_micros: now_micros(),
        ops: vec![Op::Put {
            table: "users".into(),
            key,
            value: value(rng),
        }],
    })
}

/// Size of the preallocated file the raw baseline overwrites.
pub const RAW_FILE_BYTES: u64 = 64 << 20;
/// Bytes the raw baseline writes before each fdatasync.
pub const RAW_WRITE: usize = 4096;

/// A preallocated (zero-written, fsynced) file overwritten 4 KiB at a time.
pub struct Overwriter {
    file: File,
    buf: Vec<u8>,
}

impl Overwriter {
    pub fn new(dir: &Path) -> Self {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("prealloc.dat"))
            .expect("create");
        let zeros = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < RAW_FILE_BYTES {
            file.write_all_at(&zeros, off).expect("preallocate");
            off += zeros.len() as u64;
        }
        file.sync_all().expect("fsync");
        File::open(dir)
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
        let mut buf = vec![0u8; RAW_WRITE];
        Rng(11).fill(&mut buf);
        Overwriter { file, buf }
    }

    /// Overwrites the `i`-th 4 KiB block (wrapping around) and fdatasyncs.
    pub fn op(&mut self, i: u64) {
        let offset = (i * RAW_WRITE as u64) % RAW_FILE_BYTES;
        self.buf[0..8].copy_from_slice(&i.to_le_bytes());
        self.file.write_all_at(&self.buf, offset).expect("write");
        self.file.sync_data().expect("fdatasync");
    }
}

/// The knobs every benchmark reads: `WALMDB_BENCH_SECS`, `WALMDB_BENCH_QUICK` (or `--quick`)
/// and `WALMDB_BENCH_FILTER`.
pub struct Options {
    pub secs: f64,
    pub quick: bool,
    /// Run only figures whose name contains it.
    pub filter: Option<String>,
}

impl Options {
    pub fn from_env() -> Options {
        // cargo passes `--bench` (and maybe a filter); anything but `--quick` is ignored.
        let quick_flag = std::env::args().skip(1).any(|a| a == "--quick");
        let quick_env =
            std::env::var("WALMDB_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let quick = quick_flag || quick_env;
        let secs = std::env::var("WALMDB_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .unwrap_or(if quick { 1.0 } else { 3.0 });
        let filter = std::env::var("WALMDB_BENCH_FILTER")
            .ok()
            .filter(|f| !f.is_empty());
        Options {
            secs,
            quick,
            filter,
        }
    }

    pub fn wants(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }
}

/// `target/bench-tmp`, on the real disk (not tmpfs), created if missing.
pub fn bench_root() -> PathBuf {
    let root = std::env::current_dir()
        .expect("current directory")
        .join("target")
        .join("bench-tmp");
    std::fs::create_dir_all(&root).expect("create target/bench-tmp");
    root
}

/// A temporary directory `<prefix>-<what>-*` under `root`.
pub fn tempdir(root: &Path, prefix: &str, what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-{what}-"))
        .tempdir_in(root)
        .expect("tempdir")
}

/// Latency percentiles, from nanosecond samples.
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

pub fn latency(samples: &mut [u64]) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            return Duration::ZERO;
        }
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        Duration::from_nanos(samples[i])
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    }
}
