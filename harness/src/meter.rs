//! Process resource readings from /proc: CPU, bytes written, peak RSS, other processes' CPU.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// Clock ticks a second in /proc (USER_HZ; 100 on Linux).
const TICKS: f64 = 100.0;

fn own_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Busy ticks of the whole machine (all CPUs).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    v.iter().sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0)
}

/// The directory whose block device is measured; set once per child process.
static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

pub fn set_data_dir(dir: &Path) {
    let _ = DATA_DIR.set(dir.to_owned());
}

/// Bytes written to the block device holding the data directory, from
/// /sys/dev/block/MAJOR:MINOR/stat; `None` if it is not a block device.
///
/// Not /proc/self/io: its `write_bytes` counts a whole page-cache folio each time one byte of
/// it is dirtied, and with large folios a 200-byte log append after an fdatasync counted
/// 1 MiB although the disk received a few KiB.
pub fn device_written() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(DATA_DIR.get()?).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// Writes back everything dirty on the data directory's file system, so writes an engine
/// left in the page cache are counted in the window that made them.
fn sync_data_fs() {
    use std::os::fd::AsRawFd;
    if let Some(Ok(dir)) = DATA_DIR.get().map(std::fs::File::open) {
        // SAFETY: a valid open descriptor for the call's duration.
        unsafe { libc::syncfs(dir.as_raw_fd()) };
    }
}

fn write_bytes() -> u64 {
    sync_data_fs();
    device_written().unwrap_or(0)
}

/// [`device_written`] after a sync of the data directory's file system, so everything
/// written so far is counted.
pub fn synced_device_written() -> Option<u64> {
    sync_data_fs();
    device_written()
}

/// Bytes this process (every thread of it) has caused to be written to storage so far, by
/// its own count: /proc/self/io `write_bytes`. `None` where the kernel does not keep it.
///
/// The `kv` group records it per row (as asked of that group). Mind what it counts: the bytes
/// are charged when a page-cache page is dirtied (or a direct write issued), not when the
/// device receives them, and with large folios a whole folio (up to 1 MiB) may be charged for
/// one small append after an fsync; see `device_written` for the device's own figure.
pub fn proc_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resets the process's peak RSS (VmHWM) to its current RSS.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Allocated bytes of every file under `dir`.
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        total += if m.is_dir() {
            disk_bytes(&e.path())
        } else {
            m.blocks() * 512
        };
    }
    total
}

/// This process's CPU ticks and the machine's busy ticks at one moment: CPU over a span
/// without the file system sync a `Meter` makes (the sustained workloads read one per window).
#[derive(Clone, Copy)]
pub struct Ticks {
    own: u64,
    busy: u64,
}

impl Ticks {
    pub fn now() -> Ticks {
        Ticks {
            own: own_ticks(),
            busy: machine_busy_ticks(),
        }
    }

    /// From `earlier` to `self`, `secs` apart: this process's CPU seconds, and the cores
    /// other processes used.
    pub fn since(self, earlier: Ticks, secs: f64) -> (f64, f64) {
        let own = self.own.saturating_sub(earlier.own);
        let busy = self.busy.saturating_sub(earlier.busy);
        (
            own as f64 / TICKS,
            busy.saturating_sub(own) as f64 / TICKS / secs.max(1e-9),
        )
    }
}

/// Readings taken at the start of a measured window.
pub struct Meter {
    started: Instant,
    own: u64,
    busy: u64,
    written: u64,
}

/// What a window used.
pub struct Usage {
    pub secs: f64,
    pub cpu_secs: f64,
    pub bytes_written: u64,
    pub other_cpu_cores: f64,
}

impl Meter {
    pub fn start() -> Meter {
        Meter {
            started: Instant::now(),
            own: own_ticks(),
            busy: machine_busy_ticks(),
            written: write_bytes(),
        }
    }

    /// Ends the window; the bytes written include what a file system sync right after it
    /// writes back (so engines that leave writes in the page cache are charged for them).
    pub fn stop(&self) -> Usage {
        self.stop_then(|| {})
    }

    /// [`Meter::stop`], running `halt` (which stops the workload) between reading the clock
    /// and CPU and counting the bytes.
    pub fn stop_then(&self, halt: impl FnOnce()) -> Usage {
        let secs = self.started.elapsed().as_secs_f64();
        let own = own_ticks().saturating_sub(self.own);
        let busy = machine_busy_ticks().saturating_sub(self.busy);
        halt();
        Usage {
            secs,
            cpu_secs: own as f64 / TICKS,
            bytes_written: write_bytes().saturating_sub(self.written),
            other_cpu_cores: busy.saturating_sub(own) as f64 / TICKS / secs.max(1e-9),
        }
    }
}
