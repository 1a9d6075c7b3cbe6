//! Keeps one spare segment file ready, preallocated and synced, so a rotation only writes a
//! header and renames instead of writing a whole segment of zeros on the commit path.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::log::fs::{Fs, FsRef};
use super::PipelineState;
use crate::sync::{Arc, JoinHandle, Ordering, ThreadBuilder};

fn prepare(fs: &dyn Fs, path: &Path, segment_bytes: u64) -> io::Result<()> {
    let file = fs.open(path, true)?;
    file.allocate(segment_bytes)?;
    fail::fail_point!("spare-zeroed-before-sync");
    // Spares need no directory fsync: a spare lost in a crash is only a missed reuse.
    file.sync_data()
}

/// Starts the preparer. It sleeps while a spare exists and stops once `preparer_stop` is set
/// (under the segments lock) and `spare_wanted` notified.
pub(crate) fn spawn_preparer<T: Send + 'static>(
    shared: Arc<PipelineState<T>>,
    fs: FsRef,
    dir: PathBuf,
    segment_bytes: u64,
) -> io::Result<JoinHandle<()>> {
    ThreadBuilder::new()
        .name("walmdb-preparer".into())
        .spawn(move || {
            let mut failures = 0u32;
            loop {
                {
                    let mut set = shared.segments.lock();
                    while !set.spares.is_empty() && !shared.preparer_stop.load(Ordering::SeqCst) {
                        set = shared.spare_wanted.wait(set);
                    }
                    if shared.preparer_stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let path = dir.join(format!("spare-t{nanos:020}.log"));
                match prepare(fs.as_ref(), &path, segment_bytes) {
                    Ok(()) => {
                        shared.segments.lock().spares.push(path);
                        failures = 0;
                    }
                    Err(e) => {
                        // The flusher creates segments itself meanwhile; retry later.
                        let _ = fs.remove(&path);
                        failures = failures.saturating_add(1);
                        let backoff = Duration::from_secs(1 << failures.min(6));
                        tracing::warn!(error = %e, retry_in = ?backoff, "could not prepare a spare WAL segment");
                        let set = shared.segments.lock();
                        if !shared.preparer_stop.load(Ordering::SeqCst) {
                            drop(shared.spare_wanted.wait_timeout(set, backoff));
                        }
                    }
                }
            }
        })
}
