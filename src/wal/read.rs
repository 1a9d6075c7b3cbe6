//! Reading the log back: from the live segments or from the archive, in LSN order, every
//! frame checked as recovery checks it: one segment's bytes in memory at a time, its frames
//! decoded one at a time (a segment of compressed frames decodes to many times its size).

use super::log::fs::{self, FsRef};
use super::log::pieces::Reassembly;
use super::log::segment::{read_header, read_segment, FrameWalk, SegmentHeader};
use super::{LogRecord, Lsn, SegmentMeta, Sequencer, Wal};
use crate::error::{Error, Result};

impl<S: Sequencer> Wal<S> {
    /// Reads the records from `lsn` through the highest LSN written when called, checking
    /// every CRC.
    pub fn read_from(&self, lsn: Lsn) -> LogIter {
        self.read_between(lsn, self.written_lsn())
    }

    /// Reads the records from `lsn` through `until` (at most the highest LSN written).
    pub(crate) fn read_between(&self, lsn: Lsn, until: Lsn) -> LogIter {
        LogIter {
            fs: self.fs.clone(),
            segments: self.segments(),
            next_lsn: lsn.max(1),
            until_lsn: until.min(self.written_lsn()),
            buffered: Default::default(),
            done: false,
            pieces: Default::default(),
            join: true,
            reading: None,
        }
    }

    /// Reads the records from `lsn` through `until` from the archive's segments of this
    /// log's database and timeline; `None` without an archive, or when it holds no segment
    /// starting at or before `lsn`. A gap in the archive is an error when read.
    pub(crate) fn read_archive_between(&self, lsn: Lsn, until: Lsn) -> Result<Option<LogIter>> {
        let Some(archive) = &self.cfg.archive else {
            return Ok(None);
        };
        if !self.fs.exists(&archive.dir) {
            return Ok(None);
        }
        let mut segments = Vec::new();
        for name in self.fs.list(&archive.dir)? {
            let Some((timeline, segment_no)) = super::log::archive::parse_archive_file_name(&name)
            else {
                continue;
            };
            if timeline != self.lineage.timeline {
                continue;
            }
            let path = fs::join(&archive.dir, &name);
            let Ok(header) = read_header(self.fs.as_ref(), &path)? else {
                continue;
            };
            if header.lineage.is_known() && header.lineage != self.lineage {
                continue;
            }
            segments.push(SegmentMeta {
                segment_no,
                first_lsn: header.first_lsn,
                path,
            });
        }
        segments.sort_by_key(|m| m.segment_no);
        if segments.first().is_none_or(|m| m.first_lsn > lsn) {
            return Ok(None);
        }
        Ok(Some(LogIter {
            fs: self.fs.clone(),
            segments,
            next_lsn: lsn.max(1),
            until_lsn: until,
            buffered: Default::default(),
            done: false,
            pieces: Default::default(),
            join: true,
            reading: None,
        }))
    }
}

/// An iterator over log records in LSN order; see [`Wal::read_from`].
#[derive(Debug)]
pub struct LogIter {
    fs: FsRef,
    segments: Vec<SegmentMeta>,
    next_lsn: Lsn,
    until_lsn: Lsn,
    buffered: std::collections::VecDeque<LogRecord>,
    done: bool,
    /// Joins the pieces of split transactions.
    pieces: Reassembly,
    /// Whether it does (see [`LogIter::unjoined`]).
    join: bool,
    /// The segment being read, a frame at a time.
    reading: Option<SegmentRead>,
}

/// A segment a [`LogIter`] reads: its bytes, and its frames decoded one at a time.
#[derive(Debug)]
struct SegmentRead {
    segment_no: u64,
    data: Vec<u8>,
    header: SegmentHeader,
    walk: FrameWalk,
    /// The LSN its run of frames must reach: the next segment's first less one, or the
    /// read's end.
    wanted_end: Lsn,
}

impl LogIter {
    /// The last LSN read so far, records handed out or not (parts of a transaction whose
    /// end never came are read and not handed out).
    pub(crate) fn read_through(&self) -> Lsn {
        (self.next_lsn - 1).min(self.until_lsn)
    }

    /// The first LSN of the split transaction whose end was the first skipped so far, as
    /// one begun before the read (read it whole from there).
    pub(crate) fn began_before(&self) -> Option<Lsn> {
        self.pieces.began_before()
    }

    /// Takes the parts of a split transaction this read holds without their end (a read
    /// that ended between its pieces), for the read that goes on from the next LSN
    /// ([`LogIter::holding`]).
    pub(crate) fn take_held_pieces(&mut self) -> Reassembly {
        std::mem::take(&mut self.pieces)
    }

    /// Goes on with the parts an earlier read ending right before this one's start held, so
    /// a transaction whose pieces the two reads share is read whole.
    pub(crate) fn holding(mut self, pieces: Reassembly) -> Self {
        self.pieces = pieces.holding_only();
        self
    }

    /// Hands out the pieces of split transactions as they are read (`TxnPart` and
    /// `TxnEnd` records), not joined: for a reader that takes a transaction a piece at a
    /// time, so that it is never whole in memory.
    pub(crate) fn unjoined(mut self) -> Self {
        self.join = false;
        self
    }

    /// Opens the segment holding `next_lsn` for [`LogIter::read_frame`].
    fn open_segment(&mut self) -> Result<()> {
        // The segment holding `next_lsn`: the last one starting at or before it.
        let Some(idx) = self
            .segments
            .iter()
            .rposition(|m| m.first_lsn <= self.next_lsn)
        else {
            return Err(Error::Retired {
                lsn: self.next_lsn,
                oldest: self.segments.first().map_or(0, |m| m.first_lsn),
            });
        };
        let m = self.segments[idx].clone();
        let file = self.fs.open(&m.path, false)?;
        let data = read_segment(file.as_ref())?;
        let header = SegmentHeader::decode(&data).map_err(|e| Error::Corruption {
            segment: m.segment_no,
            offset: 0,
            reason: format!("{e:?}"),
        })?;
        let wanted_end = self.segments.get(idx + 1).map_or(self.until_lsn, |next| {
            (next.first_lsn - 1).min(self.until_lsn)
        });
        self.reading = Some(SegmentRead {
            segment_no: m.segment_no,
            walk: FrameWalk::new(&header),
            data,
            header,
            wanted_end,
        });
        Ok(())
    }

    /// Decodes the open segment's next frame into `buffered`, or closes the segment once
    /// its run of frames ended (an error if it ended short of what the log holds).
    fn read_frame(&mut self) -> Result<()> {
        let r = self.reading.as_mut().expect("a segment is open");
        match r
            .walk
            .next_frame(&r.data, &r.header, self.next_lsn, self.until_lsn)?
        {
            Some(records) => {
                self.next_lsn = self.next_lsn.max(r.walk.last_lsn() + 1);
                self.buffered.extend(records);
            }
            None => {
                let last = r.walk.last_lsn();
                if last < r.wanted_end {
                    return Err(Error::Corruption {
                        segment: r.segment_no,
                        offset: 0,
                        reason: format!(
                            "the segment ends at LSN {last}, before LSN {}",
                            r.wanted_end
                        ),
                    });
                }
                self.next_lsn = self.next_lsn.max(last + 1);
                self.reading = None;
            }
        }
        Ok(())
    }
}

impl Iterator for LogIter {
    type Item = Result<LogRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.buffered.pop_front() {
                if !self.join {
                    return Some(Ok(r));
                }
                match self.pieces.feed(r) {
                    Ok(Some(r)) => return Some(Ok(r)),
                    Ok(None) => continue,
                    Err(e) => {
                        self.done = true;
                        self.buffered.clear();
                        return Some(Err(Error::Corruption {
                            segment: 0,
                            offset: 0,
                            reason: e.0,
                        }));
                    }
                }
            }
            if self.done {
                return None;
            }
            if self.reading.is_none() {
                if self.next_lsn > self.until_lsn {
                    return None;
                }
                if let Err(e) = self.open_segment() {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            if let Err(e) = self.read_frame() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
