//! What one measured cell records. Cells are written as JSON lines by the child process that
//! ran them and gathered by the parent into the report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One workload on one engine configuration at one thread count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// Workload id: `commit-1key`, `bulk-1000`, `ycsb-a` .. `ycsb-f`, `get`, `scan`,
    /// `recovery-crash`, `recovery-crash-held-back`, `recovery-clean`, `sustain-100key`,
    /// `sustain-1key`, `kv-*` (group `kv`, see `kv::ROWS`).
    pub workload: String,
    /// Engine configuration, as `EngineKind::name()` ("walmdb group", "rocksdb sync", ...).
    pub engine: String,
    /// Whether an acknowledged commit of this configuration survives a power loss.
    pub durable: bool,
    pub threads: usize,
    /// The headline figure and its unit: `commits/s`, `keys/s`, `ops/s`, `ns/op`, `ns/key`, `ms`.
    pub value: f64,
    pub unit: String,
    /// True for rates, false for times.
    pub higher_is_better: bool,
    /// Latency percentiles of one operation (a commit, a get, ...), microseconds.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    /// Process CPU (user + system) seconds per 1,000 operations.
    pub cpu_secs_per_1000: Option<f64>,
    /// Bytes the process caused to be written to storage, per operation (/proc/self/io
    /// `write_bytes`), against the operation's payload bytes: write amplification.
    pub bytes_written_per_op: Option<f64>,
    pub write_amplification: Option<f64>,
    /// Peak resident set size of the process during the cell.
    pub peak_rss_bytes: Option<u64>,
    /// The engine's directory on disk after the cell (allocated blocks).
    pub disk_bytes: Option<u64>,
    /// Operations counted and the measured window.
    pub ops: u64,
    pub secs: f64,
    /// CPU used by other processes during the cell, in cores (noise indicator).
    pub other_cpu_cores: Option<f64>,
    /// Anything a reader must know (errors counted, conflicts retried, ...).
    pub note: String,
    /// One window of a sustained run (`sustain-*`): where the window ends, in seconds from the
    /// run's start; `secs` is the window's length and the figures are the window's own.
    /// `None` for every other cell, including a sustained run's whole-run cell.
    #[serde(default)]
    pub window_end_secs: Option<f64>,
    /// Failed operations by kind: for walmdb the `Error` variant (`ApplyBacklog`, ...), for a
    /// peer its error's kind (see `engine::error_kind`). Counted by the sustained workloads,
    /// whose writers record each failure and go on; empty elsewhere.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Bytes the child process wrote during the cell by its own count (/proc/self/io
    /// `write_bytes`, background threads included): set by the `kv` group, `None` elsewhere
    /// and in results.json files from before it.
    #[serde(default)]
    pub disk_write_bytes: Option<u64>,
    /// Bytes the data directory's block device wrote during the cell (/sys/dev/block stat;
    /// other processes' writes to the device count too): set by the `kv` group, per row
    /// without a file-system sync around it (what an engine leaves in the page cache lands
    /// in a later row), and for the whole workload between two syncs.
    #[serde(default)]
    pub device_write_bytes: Option<u64>,
}

impl Cell {
    /// Failed operations of every kind.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}
