//! Resuming the log after a panic while a group was written: the log goes back to its
//! settled tail, as if the group had never been written, or the flusher is marked dead.
#![cfg_attr(walmdb_loom, allow(dead_code, unused_imports))]

use super::flusher::{Core, LogWriter};
use super::{PipelineState, Sequencer};
use crate::error::{Error, Result};
use crate::sync::Ordering;
use crate::wal::log::record::FrameBuilder;
use crate::wal::log::segment::{read_header, read_segment, scan_segment, Segment};

impl LogWriter {
    /// After a panic outside publishing: puts the log back at the settled tail, as if the
    /// group in flight had never been written, so its LSNs go to the next commits and its
    /// records can never be replayed. Segments it rotated into are removed, the frames it
    /// wrote after the tail are zeroed and synced (which also makes everything before the
    /// tail durable), and the sequencer forgets what it admitted.
    #[cfg_attr(walmdb_loom, allow(dead_code))]
    pub(super) fn resume_after_panic<S: Sequencer>(
        &mut self,
        shared: &PipelineState<S::Ticket>,
        seq: &mut S,
    ) -> Result<()> {
        let tail = self.settled;
        seq.abandon_from(tail.next_lsn);
        let (later, tail_path) = {
            let mut set = shared.segments.lock();
            let later: Vec<_> = set
                .live
                .iter()
                .filter(|m| m.segment_no > tail.segment_no)
                .cloned()
                .collect();
            set.live.retain(|m| m.segment_no <= tail.segment_no);
            let path = set
                .live
                .last()
                .filter(|m| m.segment_no == tail.segment_no)
                .map(|m| m.path.clone());
            (later, path)
        };
        let tail_path = tail_path.ok_or_else(|| Error::Poisoned {
            cause: format!("segment {} is no longer live", tail.segment_no),
        })?;
        // Removed first: the group's records there continue the LSN sequence from the tail.
        for m in &later {
            self.fs.remove(&m.path)?;
        }
        if !later.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(Error::SyncFailed)?;
        }
        if self.active.header.segment_no != tail.segment_no {
            let file = self.fs.open(&tail_path, false)?;
            let header =
                read_header(self.fs.as_ref(), &tail_path)?.map_err(|e| Error::Poisoned {
                    cause: format!("{}: bad header: {e:?}", tail_path.display()),
                })?;
            self.active = Segment {
                header,
                path: tail_path,
                file,
            };
        }
        let data = read_segment(self.active.file.as_ref())?;
        let scan = scan_segment(&data, &self.active.header);
        let end = scan.end as u64;
        if end < tail.offset {
            return Err(Error::Poisoned {
                cause: format!(
                    "segment {} holds valid frames only up to {end}, before its tail at {}",
                    tail.segment_no, tail.offset
                ),
            });
        }
        if end > tail.offset {
            let zeros = vec![0u8; (end - tail.offset) as usize];
            self.active.file.write_at(&zeros, tail.offset)?;
        }
        self.active.file.sync_data().map_err(Error::SyncFailed)?;
        let last = tail.next_lsn - 1;
        self.offset = tail.offset;
        self.next_lsn = tail.next_lsn;
        self.written_lsn = last;
        self.synced_lsn = last;
        self.interval_deadline = None;
        self.cleared_unsynced = false;
        self.frame = FrameBuilder::default();
        self.buf.clear();
        self.publishing = false;
        shared.written_lsn.store(last, Ordering::SeqCst);
        shared.durable_lsn.store(last, Ordering::SeqCst);
        Ok(())
    }
}

/// After a panic while a group was written (on the flusher thread or inline): resumes the
/// log at its settled tail, or, when it cannot, marks the flusher dead and gives the
/// panic's message.
#[cfg(not(walmdb_loom))]
pub(super) fn recover<S: Sequencer>(
    shared: &PipelineState<S::Ticket>,
    core: &mut Core<S>,
    panic: &(dyn std::any::Any + Send),
) -> std::result::Result<(), String> {
    let msg = crate::error::panic_message(panic);
    core.restarts += 1;
    let Core {
        writer,
        seq,
        restarts,
    } = core;
    match restart_after_panic(shared, writer, seq, *restarts) {
        Ok(()) => {
            shared
                .stats
                .flusher_restarts
                .fetch_add(1, Ordering::Relaxed);
            *shared.last_flusher_panic.lock() = Some(msg.clone());
            tracing::error!(
                restarts = *restarts,
                panic = %msg,
                resumed_at = writer.next_lsn,
                "writing a WAL group panicked; the log resumed at its settled tail"
            );
            Ok(())
        }
        Err(why) => {
            tracing::error!(
                panic = %msg,
                why = %why,
                "writing a WAL group panicked and the log cannot resume"
            );
            shared.mark_dead(msg.clone());
            Err(msg)
        }
    }
}

/// Whether the flusher may resume after a panic, and resumes it if so.
#[cfg(not(walmdb_loom))]
fn restart_after_panic<S: Sequencer>(
    shared: &PipelineState<S::Ticket>,
    writer: &mut LogWriter,
    seq: &mut S,
    restarts: u64,
) -> std::result::Result<(), String> {
    if restarts > crate::limits::MAX_THREAD_RESTARTS {
        return Err(format!("it panicked {restarts} times"));
    }
    if writer.publishing {
        return Err("it panicked while publishing a group".into());
    }
    if let Some(e) = shared.poison_error() {
        return Err(format!("the log is poisoned: {e}"));
    }
    writer.resume_after_panic(shared, seq).map_err(|e| {
        shared.poison(format!("restarting the flusher failed: {e}"));
        format!("putting the log back at its settled tail failed: {e}")
    })
}
