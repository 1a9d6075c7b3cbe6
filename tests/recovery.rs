//! Reopening the log: round trips of every record type, rotation, recycled segments, torn
//! tails followed by new writes, oversized records, simulated power loss at every point of a
//! run, and a checked-in log written by format version 1.

mod common;

use std::path::Path;

use common::*;
use walmdb::{
    CrashOptions, Durability, EncodedRecord, Error, LogRecord, Lsn, Op, Record, RecordType,
    RecoveryMode, SimFs, TxnRecord, Wal, WalConfig, FORMAT_VERSION,
};

fn read_range(wal: &Wal, from: Lsn) -> Vec<LogRecord> {
    wal.read_from(from)
        .collect::<walmdb::Result<_>>()
        .unwrap_or_else(|e| panic!("read_from({from}): {e:?}"))
}

fn segment_numbers(wal: &Wal) -> Vec<u64> {
    wal.segments().iter().map(|m| m.segment_no).collect()
}

/// Asserts the live segments are numbered consecutively and start at increasing LSNs.
#[track_caller]
fn assert_segment_chain(wal: &Wal) {
    let segs = wal.segments();
    for w in segs.windows(2) {
        assert_eq!(w[1].segment_no, w[0].segment_no + 1, "{segs:?}");
        assert!(w[1].first_lsn > w[0].first_lsn, "{segs:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Round trips and rotation
// ---------------------------------------------------------------------------------------

/// Spec 1: every record type (Txn with all four operations, Checkpoint, Timestamp, the three
/// consensus types) through commit -> close -> reopen -> read_from, at every durability.
#[test]
fn every_record_type_round_trips() {
    let records = every_record_type();
    let levels = [
        Durability::group_commit(),
        Durability::EveryWrite,
        Durability::None,
        Durability::Interval(std::time::Duration::from_millis(1)),
    ];
    for level in levels {
        let fs = SimFs::new();
        let wal = open(&fs, cfg()).unwrap();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                wal.commit_with(r.clone(), (), Some(level)).unwrap(),
                i as u64 + 1
            );
        }
        let ctx = format!("{level:?}, before close");
        assert_records(&read_all(&wal), &records, 1, &ctx);
        wal.close().unwrap();

        let wal = open(&fs, cfg()).unwrap();
        let got = read_all(&wal);
        let ctx = format!("{level:?}, reopened");
        assert_records(&got, &records, 1, &ctx);
        for (g, want) in got.iter().zip(&records) {
            assert_eq!(g.record.kind(), want.kind(), "{ctx}");
            assert_eq!(g.record.decode().unwrap(), want.decode().unwrap(), "{ctx}");
        }
        let kinds: Vec<RecordType> = got.iter().map(|r| r.record.kind()).collect();
        for kind in [
            RecordType::Txn,
            RecordType::Checkpoint,
            RecordType::Timestamp,
            RecordType::Vote,
            RecordType::TruncateSuffix,
            RecordType::PurgePrefix,
        ] {
            assert!(kinds.contains(&kind), "{kind:?} missing");
        }
        assert_eq!(wal.recovery_report().last_lsn, records.len() as u64);
    }
}

/// Spec 1 with compression: large compressible records go to zstd frames and come back.
#[test]
fn compressed_frames_round_trip() {
    let cfg = WalConfig {
        compress_threshold: Some(256),
        ..common::cfg()
    };
    let records: Vec<EncodedRecord> = (0..30u64)
        .map(|i| {
            Record::Txn(TxnRecord {
                commit_micros: i,
                ops: vec![Op::Put {
                    table: "docs".into(),
                    key: i.to_le_bytes().to_vec(),
                    value: format!("document {i} ")
                        .repeat(50 + i as usize * 20)
                        .into_bytes(),
                }],
            })
            .encode()
        })
        .chain((0..5).map(|i| rec(500 + i, 2000))) // incompressible: stored raw
        .collect();
    let fs = build_log(cfg.clone(), &records);
    let image = snapshot(&fs);
    let all: Vec<Frame> = image.iter().flat_map(|(_, d)| frames(d)).collect();
    let zstd = all.iter().filter(|f| f.flags & FLAG_ZSTD != 0).count();
    assert!(zstd >= 25, "only {zstd} compressed frames");
    assert!(all.iter().any(|f| f.flags == 0), "no uncompressed frame");
    let wal = open(&fs, cfg).unwrap();
    assert_records(&read_all(&wal), &records, 1, "compressed, reopened");
}

/// A large frame whose middle does not compress (random values) is stored raw without
/// compressing all of it; a large compressible one is still compressed; both read back.
#[test]
fn a_large_incompressible_frame_is_stored_raw_and_a_compressible_one_compressed() {
    let cfg = WalConfig {
        segment_bytes: 16 << 20,
        max_record_bytes: 4 << 20,
        compress_threshold: Some(1024),
        ..common::cfg()
    };
    let text = Record::Txn(TxnRecord {
        commit_micros: 1,
        ops: vec![Op::Put {
            table: "docs".into(),
            key: b"text".to_vec(),
            value: "a line of text, again and again. "
                .repeat(40_000)
                .into_bytes(),
        }],
    })
    .encode();
    let records = vec![rec(1, 1 << 20), text, rec(3, 1 << 20)];
    let fs = build_log(cfg.clone(), &records);
    let image = snapshot(&fs);
    let flags: Vec<u8> = image
        .iter()
        .flat_map(|(_, d)| frames(d))
        .map(|f| f.flags & FLAG_ZSTD)
        .collect();
    assert_eq!(flags, [0, FLAG_ZSTD, 0]);
    let wal = open(&fs, cfg).unwrap();
    assert_records(&read_all(&wal), &records, 1, "reopened");
}

/// Spec 2: many records with 64 KiB segments rotate through several segments; reopening
/// reads them all in order, and `read_from` starts anywhere, including at segment starts.
#[test]
fn records_rotate_across_segments_and_read_back_in_order() {
    let records: Vec<_> = (1..=240u64)
        .map(|i| rec(i, 200 + (i as usize * 37) % 1800))
        .collect();
    let fs = SimFs::new();
    let wal = open(&fs, cfg()).unwrap();
    commit_all(&wal, &records);
    let before = wal.segments();
    assert!(before.len() >= 4, "only {} segments", before.len());
    assert_segment_chain(&wal);
    assert_eq!(wal.stats().rotations, before.len() as u64 - 1);
    wal.close().unwrap();

    let wal = open(&fs, cfg()).unwrap();
    assert_eq!(wal.segments(), before);
    assert_eq!(wal.recovery_report().segments, before.len());
    assert_records(&read_all(&wal), &records, 1, "reopened");
    let mut starts: Vec<Lsn> = vec![0, 1, 2, 119, 239, 240, 241];
    for m in &before {
        starts.extend([m.first_lsn - 1, m.first_lsn, m.first_lsn + 1]);
    }
    for from in starts {
        let first = from.max(1);
        let want = records.get(first as usize - 1..).unwrap_or(&[]);
        assert_records(
            &read_range(&wal, from),
            want,
            first,
            &format!("read_from({from})"),
        );
    }
    // The files on disk are exactly the live segments, each preallocated.
    let names = fs.file_names(dir());
    let want: Vec<String> = before.iter().map(|m| seg_name(m.segment_no)).collect();
    assert_eq!(names, want);
    for n in &names {
        assert_eq!(fs.read_file(&dir().join(n)).unwrap().len() as u64, SEG);
    }
}

/// Spec 2 with grouping: commits queued together share frames, groups span rotations, and
/// concurrent committers each see their records in order.
#[test]
fn grouped_and_concurrent_commits_rotate_and_read_back() {
    let fs = SimFs::new();
    let wal = open(&fs, cfg()).unwrap();
    let records: Vec<_> = (1..=400u64)
        .map(|i| rec(i, 100 + (i as usize * 53) % 900))
        .collect();
    let handles: Vec<_> = records
        .iter()
        .map(|r| wal.submit(r.clone(), (), None).unwrap())
        .collect();
    let lsns: Vec<Lsn> = handles.into_iter().map(|h| h.wait().unwrap()).collect();
    assert_eq!(lsns, (1..=400).collect::<Vec<_>>());

    // Two threads committing at once.
    let tagged = |t: u64, i: u64| rec(10_000 * (t + 1) + i, 50 + (i as usize % 7) * 100);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let wal = &wal;
            s.spawn(move || {
                for i in 0..150u64 {
                    wal.commit(tagged(t, i)).unwrap();
                }
            });
        }
    });
    wal.close().unwrap();

    let image = snapshot(&fs);
    let all: Vec<Frame> = image.iter().flat_map(|(_, d)| frames(d)).collect();
    let multi = all.iter().filter(|f| f.count > 1).count();
    eprintln!(
        "grouping: {} records in {} frames ({} with several records), {} segments",
        700,
        all.len(),
        multi,
        image.len()
    );
    assert!(image.len() >= 5);

    let wal = open(&fs, cfg()).unwrap();
    assert_segment_chain(&wal);
    let got = read_all(&wal);
    assert_eq!(got.len(), 700);
    assert_records(&got[..400], &records, 1, "submitted batch");
    for t in 0..2u64 {
        let want: Vec<_> = (0..150).map(|i| tagged(t, i)).collect();
        let mine: Vec<EncodedRecord> = got[400..]
            .iter()
            .filter(|r| want.contains(&r.record))
            .map(|r| r.record.clone())
            .collect();
        assert!(mine == want, "thread {t}: records missing or out of order");
    }
}

// ---------------------------------------------------------------------------------------
// Recycled segments
// ---------------------------------------------------------------------------------------

/// Regression (found by the engine's power-loss tier in CI): a crash left torn frames of
/// the active segment's life past the log's end; the writer after it wrote the same records
/// again, so its frames ended exactly where a stale header began, and rotated there. The
/// next open took that header for damage under frames synced after it and refused the log
/// (`Error::Corruption`). Recovery now zeroes such bytes before anything is written after
/// the log's end.
#[test]
fn torn_frames_past_the_end_cannot_pass_for_damage_once_the_log_goes_on() {
    let went_on = write_past_torn_frames();
    let wal = open(&went_on.fs, cfg()).unwrap();
    assert!(wal.recovery_report().cut.is_none());
    assert_records(
        &read_range(&wal, 1),
        &went_on.expected,
        1,
        "after the writer went on",
    );
}

/// A log as a build before that fix left it: the torn frames still lie past the end of
/// segment 1's run, and segment 2 goes on at the next LSN. A segment the next one continues
/// at the next LSN is complete (a lost record would leave a gap), so what lies past its run
/// is stale bytes, not damage: the log opens whole, in every mode.
#[test]
fn a_segment_the_next_continues_is_complete_whatever_lies_past_its_run() {
    let went_on = write_past_torn_frames();
    went_on.put_back_stale_frames();
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let wal = open(&went_on.fs, cfg_mode(mode)).unwrap();
        assert!(wal.recovery_report().cut.is_none(), "{mode:?}");
        assert_records(
            &read_range(&wal, 1),
            &went_on.expected,
            1,
            &format!("stale torn frames left in place, {mode:?}"),
        );
        wal.close().unwrap();
    }
}

/// Archiving such a segment when it retires keeps its run and raises no alarm: the bytes
/// past the run are stale, as recovery judged them (the archiver logged "archiving a damaged
/// segment" at error level for them before).
#[test]
fn archiving_a_segment_the_next_continues_logs_no_damage() {
    let went_on = write_past_torn_frames();
    let seg = went_on.put_back_stale_frames();
    let archive = dir().join("archive");
    let wal = open(
        &went_on.fs,
        WalConfig {
            archive: Some(walmdb::ArchiveConfig::new(&archive)),
            ..cfg()
        },
    )
    .unwrap();
    let errors = ErrorEvents::default();
    let retired = tracing::subscriber::with_default(errors.clone(), || wal.retire_below(8));
    assert_eq!(retired.unwrap(), 1);
    assert_eq!(
        errors.count(),
        0,
        "an error was logged archiving a complete segment"
    );
    let archived = went_on
        .fs
        .read_file(&archive.join("wal-00000001-00000001.log"))
        .unwrap();
    assert_eq!(
        archived[..],
        seg[..went_on.stale.start],
        "the run, not the stale bytes"
    );
    wal.close().unwrap();
}

/// Counts the error-level events logged on the thread it is the default subscriber of.
#[derive(Clone, Default)]
struct ErrorEvents(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl ErrorEvents {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl tracing::Subscriber for ErrorEvents {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() == tracing::Level::ERROR
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A log whose writer went on after a crash tore frames past its end (see the two tests
/// above).
struct WentOn {
    fs: SimFs,
    /// Segment 1 as the crash left it.
    torn: Vec<u8>,
    /// Where its torn frames past the log's end lay.
    stale: std::ops::Range<usize>,
    /// The records the log holds.
    expected: Vec<EncodedRecord>,
}

impl WentOn {
    /// Puts the torn frames back past segment 1's run, as a build before recovery's zeroing
    /// left them; returns the segment's bytes.
    fn put_back_stale_frames(&self) -> Vec<u8> {
        let mut seg = self.fs.read_file(&seg_path(1)).unwrap();
        seg[self.stale.clone()].copy_from_slice(&self.torn[self.stale.clone()]);
        self.fs.write_file(&seg_path(1), &seg);
        seg
    }
}

fn write_past_torn_frames() -> WentOn {
    // 7079-byte frames: nine fill segment 1 to offset 63,775.
    let records: Vec<EncodedRecord> = (1..=9).map(|i| rec(i, 7000)).collect();
    let fs = build_log(cfg(), &records);
    let mut seg = fs.read_file(&seg_path(1)).unwrap();
    let written = frames(&seg);
    assert_eq!(written.len(), 9);
    // A crash lost record 6 and tore 7 to 9: their headers whole, their bodies not.
    seg[written[5].offset..written[5].end()].fill(0);
    for f in &written[6..] {
        seg[f.end() - 1] ^= 0xFF;
    }
    fs.write_file(&seg_path(1), &seg);

    let wal = open(&fs, cfg()).unwrap();
    assert_eq!(wal.recovery_report().last_lsn, 5);
    // The same records 6 and 7 again: the next frame would start at record 8's stale
    // header. Record 8 is now too large for the rest of the segment, so it goes into
    // segment 2, and record 9's frame there says the log was synced through LSN 8.
    let mut again = records[5..7].to_vec();
    again.push(rec(8, 16_000));
    again.push(rec(9, 100));
    assert_eq!(commit_all(&wal, &again), [6, 7, 8, 9]);
    assert_eq!(segment_numbers(&wal), [1, 2]);
    assert_eq!(
        frames(&fs.read_file(&seg_path(1)).unwrap())
            .last()
            .unwrap()
            .end(),
        written[7].offset
    );
    wal.close().unwrap();
    let mut expected = records[..7].to_vec();
    expected.extend_from_slice(&again[2..]);
    WentOn {
        fs,
        torn: seg,
        stale: written[7].offset..written[8].end(),
        expected,
    }
}

/// Spec 8: retired segments are recycled as spares; a reused file still holds whole, valid
/// frames from its earlier life (different salt) right after this life's frames, and
/// reopening reads exactly this life's records.
#[test]
fn recycled_segments_never_yield_stale_frames() {
    let cfg = WalConfig {
        recycle_segments: 4,
        ..common::cfg()
    };
    // 3079-byte frames: 21 per segment.
    let big = |i: u64| rec(i, 3000);
    let fs = SimFs::new();
    let wal = open(&fs, cfg.clone()).unwrap();
    let mut records: Vec<EncodedRecord> = (1..=70).map(big).collect();
    commit_all(&wal, &records);
    assert_eq!(segment_numbers(&wal), [1, 2, 3, 4]);
    assert_eq!(wal.retire_below(64).unwrap(), 3);
    assert_eq!(segment_numbers(&wal), [4]);

    // 20 more: segment 4 fills at LSN 84, segment 5 reuses a spare for LSNs 85..=90.
    let more: Vec<EncodedRecord> = (71..=90).map(big).collect();
    commit_all(&wal, &more);
    records.extend(more);
    assert_eq!(segment_numbers(&wal), [4, 5]);
    wal.close().unwrap();

    let names = fs.file_names(dir());
    let spares = names.iter().filter(|n| n.starts_with("spare-")).count();
    assert_eq!(
        spares, 2,
        "one of three spares must have been reused: {names:?}"
    );
    let seg5 = fs.read_file(&seg_path(5)).unwrap();
    let this_life = frames(&seg5);
    assert_eq!(this_life.len(), 6);
    // The earlier life's frames, same sizes, so the next one starts where this life ends.
    let stale_at = this_life.last().unwrap().end();
    assert_eq!(
        seg5[stale_at..stale_at + 4],
        3039u32.to_le_bytes(),
        "no stale frame"
    );
    let stale_salt = u32::from_le_bytes(seg5[stale_at + 8..stale_at + 12].try_into().unwrap());
    assert_ne!(stale_salt, parse_seg_header(&seg5).unwrap().salt);

    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let wal = open(&fs, cfg_mode(mode)).unwrap();
        let ctx = format!("reused spare, {mode:?}");
        assert_records(&read_range(&wal, 64), &records[63..], 64, &ctx);
        assert!(wal.recovery_report().cut.is_none(), "{ctx}");
        assert_eq!(wal.recovery_report().last_lsn, 90, "{ctx}");
    }
    // After power loss too (everything was synced).
    for seed in 0..8 {
        let img = fs.crash(seed, CrashOptions::default());
        let wal = open(&img, cfg.clone()).unwrap();
        assert_records(&read_range(&wal, 64), &records[63..], 64, "after a crash");
    }

    // Smaller frames in the reused files: the stale bytes now start mid-frame. Fill 5 and
    // rotate into 6 and 7 (the other two spares) and 8 (new).
    let wal = open(&fs, cfg.clone()).unwrap();
    let small: Vec<EncodedRecord> = (91..=400)
        .map(|i| rec(i, 300 + (i as usize % 5) * 211))
        .collect();
    commit_all(&wal, &small);
    records.extend(small);
    let segs = segment_numbers(&wal);
    assert!(segs.len() >= 4 && segs[0] == 4, "{segs:?}");
    wal.close().unwrap();
    let names = fs.file_names(dir());
    assert!(
        !names.iter().any(|n| n.starts_with("spare-")),
        "every spare should have been reused: {names:?}"
    );
    let wal = open(&fs, cfg.clone()).unwrap();
    assert_records(
        &read_range(&wal, 64),
        &records[63..],
        64,
        "after reusing every spare",
    );

    // Retire again and reopen with from_lsn at the new oldest segment.
    let first_kept = wal.segments()[2].first_lsn;
    assert_eq!(wal.retire_below(first_kept).unwrap(), 2);
    drop(wal);
    let wal = open_from(&fs, cfg.clone(), Some(first_kept - 1)).unwrap();
    let want = &records[first_kept as usize - 1..];
    assert_records(
        &read_range(&wal, first_kept),
        want,
        first_kept,
        "after a second retirement",
    );
}

/// Retirement keeps at most `recycle_segments` spares and removes the rest; reopening sees
/// the spares, and nothing of a retired segment is read.
#[test]
fn retirement_keeps_at_most_recycle_segments_spares() {
    for keep in [0usize, 1, 2] {
        let cfg = WalConfig {
            recycle_segments: keep,
            ..common::cfg()
        };
        let fs = SimFs::new();
        let wal = open(&fs, cfg.clone()).unwrap();
        let records: Vec<_> = (1..=70).map(|i| rec(i, 3000)).collect();
        commit_all(&wal, &records);
        assert_eq!(wal.retire_below(64).unwrap(), 3);
        assert_eq!(wal.stats().segments_retired, 3);
        drop(wal);
        let names = fs.file_names(dir());
        let spares = names.iter().filter(|n| n.starts_with("spare-")).count();
        assert_eq!(spares, keep, "recycle_segments {keep}: {names:?}");
        assert_eq!(
            names.iter().filter(|n| n.starts_with("wal-")).count(),
            1,
            "{names:?}"
        );
        let wal = open(&fs, cfg.clone()).unwrap();
        assert_eq!(wal.recovery_report().first_lsn, 64);
        assert_records(
            &read_range(&wal, 64),
            &records[63..],
            64,
            &format!("keep {keep}"),
        );
        // Asking for retired records is an error, not a silent skip.
        assert!(matches!(
            wal.read_from(1).next().unwrap(),
            Err(walmdb::Error::Retired { lsn: 1, .. })
        ));
    }
}

// ---------------------------------------------------------------------------------------
// Torn tails followed by new writes
// ---------------------------------------------------------------------------------------

/// Spec 9, deterministic: the last frame is torn (truncated mid-frame, or a bit flipped);
/// the reopened log takes new commits after the intact prefix; a power loss after them
/// keeps exactly that prefix plus every acknowledged new commit.
#[test]
fn torn_tail_then_new_commits_then_power_loss() {
    let records: Vec<_> = (1..=30u64)
        .map(|i| rec(i, 40 + (i as usize * 31) % 400))
        .collect();
    let fs = build_log(cfg(), &records);
    let image = snapshot(&fs);
    let last = *frames(file(&image, &seg_name(1))).last().unwrap();
    let damages: Vec<(String, Image)> = {
        let mut v = Vec::new();
        for cut in [
            last.offset + 41,
            last.offset + last.total_len / 2,
            last.end() - 1,
        ] {
            let mut img = image.clone();
            file_mut(&mut img, &seg_name(1)).truncate(cut);
            v.push((format!("truncated at {cut}"), img));
        }
        for bit in [7, 8 * 20, 8 * 45 + 1, last.total_len * 8 - 1] {
            let mut img = image.clone();
            flip_bit(&mut file_mut(&mut img, &seg_name(1))[last.offset..], bit);
            v.push((format!("bit {bit} of the last frame flipped"), img));
        }
        v
    };
    let mut runs = 0;
    for (what, img) in &damages {
        let fs = restore(img);
        let wal = open(&fs, cfg()).unwrap();
        assert!(wal.recovery_report().cut.is_some(), "{what}");
        assert_records(&read_all(&wal), &records[..29], 1, what);
        // Three durable commits, then two that are only written.
        let new: Vec<_> = (0..5u64)
            .map(|i| rec(900 + i, 10 + i as usize * 150))
            .collect();
        for (i, r) in new.iter().enumerate() {
            let level = if i < 3 { None } else { Some(Durability::None) };
            assert_eq!(
                wal.commit_with(r.clone(), (), level).unwrap(),
                30 + i as u64
            );
        }
        for seed in 0..24 {
            runs += 1;
            let ctx = format!("{what}, power loss seed {seed}");
            let after = fs.crash(seed, CrashOptions::default());
            let wal2 = open(&after, cfg()).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            let got = read_all(&wal2);
            assert!(
                (32..=34).contains(&got.len()),
                "{ctx}: {} records",
                got.len()
            );
            let mut want = records[..29].to_vec();
            want.extend(new[..got.len() - 29].iter().cloned());
            assert_records(&got, &want, 1, &ctx);
        }
        drop(wal);
    }
    eprintln!("torn tail + new commits + power loss: {runs} crash images checked");
}

/// A process crash keeps written but unsynced commits (they are in the page cache); the
/// recovery that reads them syncs them, so a power loss after it keeps them too, and the
/// commits made after it.
#[test]
fn process_crash_then_power_loss_keeps_what_recovery_read() {
    let records: Vec<_> = (1..=100u64).map(|i| rec(i, 1500)).collect();
    let fs = SimFs::new();
    let wal = open(&fs, cfg()).unwrap();
    for r in &records {
        wal.commit_with(r.clone(), (), Some(Durability::None))
            .unwrap();
    }
    let process_crash = fs.keep_all_pending();
    drop(wal);
    let wal = open(&process_crash, cfg()).unwrap();
    assert_eq!(segment_numbers(&wal), [1, 2, 3]);
    assert_records(&read_all(&wal), &records, 1, "after a process crash");
    assert!(wal.recovery_report().cut.is_none());
    let extra = rec(101, 10);
    assert_eq!(wal.commit(extra.clone()).unwrap(), 101);
    let mut want = records.clone();
    want.push(extra);
    for seed in 0..16 {
        let after = process_crash.crash(seed, CrashOptions::default());
        let wal = open(&after, cfg()).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        assert_records(
            &read_all(&wal),
            &want,
            1,
            &format!("power loss seed {seed}"),
        );
    }
}

/// Spec 9, randomized: synced commits, then unsynced ones, power loss (tearing the tail),
/// reopen, more commits, power loss again: each time exactly a prefix of what was issued,
/// holding every durable acknowledgement.
#[test]
fn repeated_power_loss_with_unsynced_tails() {
    let mut cut_seen = 0;
    for seed in 0..120u64 {
        let mut rng = Rng(seed);
        let fs = SimFs::new();
        let wal = open(&fs, cfg()).unwrap();
        let mut issued: Vec<EncodedRecord> = Vec::new();
        let mut durable = 0usize;
        let mut next = 1u64;
        let mut commit =
            |wal: &Wal, issued: &mut Vec<EncodedRecord>, durable: &mut usize, sync: bool| {
                let r = rec(next, 20 + (next as usize * 131) % 1500);
                next += 1;
                let level = if sync { None } else { Some(Durability::None) };
                let lsn = wal.commit_with(r.clone(), (), level).unwrap();
                issued.push(r);
                assert_eq!(lsn, issued.len() as u64, "seed {seed}");
                if sync {
                    *durable = issued.len();
                }
            };
        for _ in 0..(10 + rng.below(30)) {
            commit(&wal, &mut issued, &mut durable, true);
        }
        for _ in 0..(1 + rng.below(12)) {
            commit(&wal, &mut issued, &mut durable, false);
        }
        let mut image = fs.crash(seed, CrashOptions::default());
        drop(wal);
        for round in 0..3 {
            let ctx = format!("seed {seed}, power loss {}", round + 1);
            let wal = open(&image, cfg()).unwrap_or_else(|e| panic!("{ctx}: open: {e:?}"));
            if wal.recovery_report().cut.is_some() {
                cut_seen += 1;
            }
            let got = read_all(&wal);
            assert!(
                got.len() >= durable,
                "{ctx}: lost durable commits ({} < {durable})",
                got.len()
            );
            assert!(got.len() <= issued.len(), "{ctx}: records never issued");
            assert_records(&got, &issued[..got.len()], 1, &ctx);
            issued.truncate(got.len());
            for _ in 0..(1 + rng.below(6)) {
                commit(&wal, &mut issued, &mut durable, true);
            }
            for _ in 0..rng.below(6) {
                commit(&wal, &mut issued, &mut durable, false);
            }
            image = image.crash(seed.wrapping_mul(31) + round, CrashOptions::default());
            drop(wal);
        }
    }
    eprintln!("repeated power loss: 120 seeds x 3 crashes, {cut_seen} torn tails cut");
    assert!(
        cut_seen > 0,
        "no crash image had a torn tail: the test exercises nothing"
    );
}

// ---------------------------------------------------------------------------------------
// Oversized records
// ---------------------------------------------------------------------------------------

/// Spec 10: a record over `max_record_bytes` is refused with `RecordTooLarge` (by `commit`,
/// `commit_with` and `submit`), nothing is written for it, and the log goes on.
#[test]
fn oversized_records_are_refused_and_the_log_stays_usable() {
    let cfg = WalConfig {
        max_record_bytes: 4096,
        ..common::cfg()
    };
    let fs = SimFs::new();
    let wal = open(&fs, cfg.clone()).unwrap();
    let r1 = rec(1, 10);
    assert_eq!(wal.commit(r1.clone()).unwrap(), 1);
    // framed_len = 5-byte record header + payload.
    let too_big = EncodedRecord::raw(RecordType::Vote, vec![7; 4092]);
    assert_eq!(too_big.framed_len(), 4097);
    let fits = EncodedRecord::raw(RecordType::Vote, vec![8; 4091]);
    let huge = EncodedRecord::raw(RecordType::PurgePrefix, vec![0; 3 << 20]);
    for (what, r) in [
        ("commit", wal.commit(too_big.clone())),
        (
            "commit_with",
            wal.commit_with(too_big.clone(), (), Some(Durability::EveryWrite)),
        ),
        ("submit", wal.submit(too_big.clone(), (), None).map(|_| 0)),
        ("commit of 3 MiB", wal.commit(huge)),
    ] {
        match r {
            Err(Error::RecordTooLarge { size, max }) => {
                assert_eq!(max, 4096, "{what}");
                assert!(size > 4096, "{what}");
            }
            other => panic!("{what}: expected RecordTooLarge, got {other:?}"),
        }
    }
    assert!(!wal.is_poisoned());
    assert_eq!(wal.commit(fits.clone()).unwrap(), 2);
    let r3 = rec(3, 30);
    assert_eq!(wal.commit(r3.clone()).unwrap(), 3);
    wal.close().unwrap();
    let wal = open(&fs, cfg).unwrap();
    assert_records(&read_all(&wal), &[r1, fits, r3], 1, "reopened");

    // The largest record allowed (half a segment) takes a segment of its own.
    let cfg = WalConfig {
        max_record_bytes: (SEG / 2) as usize,
        ..common::cfg()
    };
    let fs = SimFs::new();
    let wal = open(&fs, cfg.clone()).unwrap();
    let max_records: Vec<_> = (0..4u8)
        .map(|i| EncodedRecord::raw(RecordType::Vote, vec![i; SEG as usize / 2 - 5]))
        .collect();
    commit_all(&wal, &max_records);
    assert_eq!(segment_numbers(&wal), [1, 2, 3, 4]);
    assert!(matches!(
        wal.commit(EncodedRecord::raw(
            RecordType::Vote,
            vec![0; SEG as usize / 2 - 4]
        )),
        Err(Error::RecordTooLarge { .. })
    ));
    wal.close().unwrap();
    let wal = open(&fs, cfg).unwrap();
    assert_records(&read_all(&wal), &max_records, 1, "half-segment records");

    // A maximum above half a segment is a configuration error.
    let bad = WalConfig {
        max_record_bytes: (SEG / 2) as usize + 1,
        ..common::cfg()
    };
    assert!(matches!(
        open(&SimFs::new(), bad),
        Err(Error::InvalidConfig(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Power loss at every point
// ---------------------------------------------------------------------------------------

/// One run of spec 11: `commits` commits at `level(i)` from one thread, the file system dying
/// after `k` operations, then power loss with `seed`. Returns (issued, durable acks, records
/// recovered).
fn power_loss_run(
    k: u64,
    seed: u64,
    opts: CrashOptions,
    commits: u64,
    level: impl Fn(u64) -> Option<Durability>,
) -> (usize, usize, usize) {
    let ctx = format!("seed {seed}, crash after {k} ops, {opts:?}");
    let fs = SimFs::new();
    fs.crash_after_ops(k);
    let mut issued: Vec<EncodedRecord> = Vec::new();
    let mut durable = 0usize;
    if let Ok(wal) = open(&fs, cfg()) {
        for i in 1..=commits {
            let r = rec(i, 400 + (i as usize * 997) % 2600);
            issued.push(r.clone());
            let l = level(i);
            match wal.commit_with(r, (), l) {
                Ok(lsn) => {
                    assert_eq!(lsn, i, "{ctx}");
                    if l.is_none_or(|d| d.is_durable()) {
                        durable = i as usize;
                    }
                }
                Err(_) => break,
            }
        }
        drop(wal);
    }
    let after = fs.crash(seed, opts);
    let wal = open(&after, cfg()).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e:?}"));
    let got = try_read_all(&wal).unwrap_or_else(|e| panic!("{ctx}: read failed: {e:?}"));
    assert!(
        got.len() >= durable,
        "{ctx}: {} records recovered but {durable} were acknowledged durable",
        got.len()
    );
    assert!(got.len() <= issued.len(), "{ctx}: more records than issued");
    assert_records(&got, &issued[..got.len()], 1, &ctx);
    // The recovered log takes the next LSN and keeps it.
    let n = got.len() as u64;
    let extra = rec(77_777, 33);
    assert_eq!(wal.commit(extra.clone()).unwrap(), n + 1, "{ctx}");
    drop(wal);
    let wal = open(&after, cfg()).unwrap_or_else(|e| panic!("{ctx}: second reopen: {e:?}"));
    let again = read_all(&wal);
    assert_eq!(again.len() as u64, n + 1, "{ctx}");
    assert!(again[n as usize].record == extra, "{ctx}");
    (issued.len(), durable, got.len())
}

/// The operations a whole run takes, to spread crash points over it.
fn ops_of_a_full_run(commits: u64) -> u64 {
    let fs = SimFs::new();
    let wal = open(&fs, cfg()).unwrap();
    for i in 1..=commits {
        wal.commit(rec(i, 400 + (i as usize * 997) % 2600)).unwrap();
    }
    wal.close().unwrap();
    fs.op_count()
}

/// Spec 11: power loss at every point of a run of GroupCommit commits from one thread. The
/// records read back are a prefix of those issued that holds every acknowledged commit.
#[test]
fn power_loss_at_any_point_keeps_every_acknowledged_commit() {
    const COMMITS: u64 = 60;
    // 2,000 simulated power losses by default; `.ci/run` runs 10,000 in a release build,
    // `WALMDB_POWER_LOSSES=1000000` the full size. 60% with default crash options, 20% each
    // with the two variants below.
    let n: u64 = std::env::var("WALMDB_POWER_LOSSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let (a, b) = (n * 6 / 10, n * 8 / 10);
    let total = ops_of_a_full_run(COMMITS);
    let variants = [
        (0..a, CrashOptions::default()),
        (
            a..b,
            CrashOptions {
                reorder: false,
                sector: 4096,
                garbage_fill: true,
            },
        ),
        (
            b..n,
            CrashOptions {
                reorder: true,
                sector: 1,
                garbage_fill: true,
            },
        ),
    ];
    let (mut runs, mut lost_unacked, mut kept_all) = (0, 0, 0);
    for (seeds, opts) in variants {
        for seed in seeds {
            let k = seed % (total + 2);
            let (issued, durable, got) = power_loss_run(k, seed, opts, COMMITS, |_| None);
            runs += 1;
            if got < issued {
                lost_unacked += 1;
            }
            if got == issued && durable == issued {
                kept_all += 1;
            }
        }
    }
    eprintln!(
        "power loss: {runs} seeds (0..{n}) over crash points 0..={} of {total} ops; 0 \
         acknowledged durable commits lost; {lost_unacked} runs lost an unacknowledged commit, \
         {kept_all} completed",
        total + 1
    );
}

/// Spec 11 with mixed durability: every third commit is `Durability::None`; the recovered
/// records are a prefix that holds every commit acknowledged at GroupCommit (and so every
/// record before it).
#[test]
fn power_loss_with_mixed_durability_keeps_every_durable_acknowledgement() {
    const COMMITS: u64 = 60;
    let total = ops_of_a_full_run(COMMITS);
    let level = |i: u64| i.is_multiple_of(3).then_some(Durability::None);
    for seed in 1000..1150u64 {
        let k = (seed * 7) % (total + 2);
        power_loss_run(k, seed, CrashOptions::default(), COMMITS, level);
    }
}

// ---------------------------------------------------------------------------------------
// The checked-in format version 1 fixture
// ---------------------------------------------------------------------------------------

/// Writes the fixture's log into `dir` with the real file system.
fn write_fixture_log(dir: &Path) {
    let (records, burst_from) = fixture_records();
    let wal = Wal::open(dir, fixture_cfg()).unwrap();
    commit_all(&wal, &records[..burst_from]);
    let handles: Vec<_> = records[burst_from..]
        .iter()
        .map(|r| wal.submit(r.clone(), (), Some(Durability::None)).unwrap())
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait().unwrap(), (burst_from + i + 1) as u64);
    }
    wal.close().unwrap();
}

fn copy_segments(from: &Path, to: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("wal-") && n.ends_with(".log"))
        .collect();
    names.sort();
    for n in &names {
        std::fs::copy(from.join(n), to.join(n)).unwrap();
    }
    names
}

/// The current writer produces the fixture's records; with `WALMDB_WRITE_FIXTURES=1` this
/// also (re)wrote `tests/fixtures/v1` while the writer wrote version 1 (run it alone:
/// `WALMDB_WRITE_FIXTURES=1 cargo test --test recovery fixture_writer`); the version-1
/// images are frozen since version 2.
#[test]
fn fixture_writer_produces_the_v1_records() {
    let tmp = tempfile::tempdir().unwrap();
    write_fixture_log(tmp.path());
    let wal = Wal::open(tmp.path(), fixture_cfg()).unwrap();
    assert_records(
        &read_all(&wal),
        &fixture_records().0,
        1,
        "freshly written fixture",
    );
    assert_eq!(segment_numbers(&wal), [1, 2]);
    drop(wal);
    if std::env::var_os("WALMDB_WRITE_FIXTURES").is_some() {
        // The checked-in version-1 images prove old logs stay readable: never rewrite them
        // with a newer format.
        assert_eq!(
            FORMAT_VERSION, 1,
            "tests/fixtures/v1 is frozen; this build writes format version {FORMAT_VERSION}"
        );
        let out = Path::new(FIXTURE_DIR);
        std::fs::create_dir_all(out).unwrap();
        for entry in std::fs::read_dir(out).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                std::fs::remove_file(path).unwrap();
            }
        }
        let written = copy_segments(tmp.path(), out);
        eprintln!("wrote {written:?} to {}", out.display());
    }
}

/// The records of `tests/fixtures/v2`, written by the format-2 build (64 KiB segments,
/// uncompressed, one record a commit): 60 transactions of a 1.5 KiB put and a delete, a
/// restore point after the 21st, then one record of each consensus type it knew.
fn v2_fixture_records() -> Vec<EncodedRecord> {
    let mut out = Vec::new();
    for i in 0..60u32 {
        out.push(
            Record::Txn(TxnRecord {
                commit_micros: 1_700_000_000_000_000 + u64::from(i),
                ops: vec![
                    Op::Put {
                        table: "fixture".into(),
                        key: format!("key{i:04}").into_bytes(),
                        value: vec![(i % 251) as u8; 1500],
                    },
                    Op::Delete {
                        table: "fixture".into(),
                        key: format!("gone{i:04}").into_bytes(),
                    },
                ],
            })
            .encode(),
        );
        if i == 20 {
            out.push(
                Record::Timestamp {
                    unix_micros: 1_700_000_000_500_000,
                    name: "v2-point".into(),
                }
                .encode(),
            );
        }
    }
    out.extend([
        EncodedRecord::raw(RecordType::Vote, b"vote".to_vec()),
        EncodedRecord::raw(RecordType::TruncateSuffix, b"truncate".to_vec()),
        EncodedRecord::raw(RecordType::PurgePrefix, b"purge".to_vec()),
    ]);
    out
}

/// Format compatibility: the checked-in log written by format version 2 (frozen) opens
/// cleanly, reads back exactly its records, keeps its lineage, and takes new records
/// (record type `Entry` included) after them.
#[test]
fn v2_fixture_opens_and_reads_back_exactly() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2");
    let records = v2_fixture_records();
    let header = |dir: &Path, n: u64| {
        parse_seg_header(&std::fs::read(dir.join(seg_name(n))).unwrap()).expect("a header")
    };
    let (h1, h2) = (header(&src, 1), header(&src, 2));
    assert_eq!((h1.version, h2.version), (2, 2));
    assert_eq!(h1.identity, h2.identity);
    assert_ne!(h1.identity, 0);
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(copy_segments(&src, tmp.path()), [seg_name(1), seg_name(2)]);
    let cfg = WalConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        compress_threshold: None,
        ..WalConfig::default()
    };
    let wal = Wal::open(tmp.path(), cfg.clone()).unwrap();
    assert!(wal.recovery_report().cut.is_none());
    assert_records(&read_all(&wal), &records, 1, "v2 fixture");
    assert_eq!(wal.lineage().identity, h1.identity);
    let entry = EncodedRecord::raw(RecordType::Entry, b"term 1, index 1".to_vec());
    let lsn = wal.commit(entry.clone()).unwrap();
    assert_eq!(lsn, records.len() as u64 + 1);
    wal.close().unwrap();
    // Segment 1 keeps version 2; the active one, which took the new record, was rewritten
    // at version 3 when the log opened (salt, lineage and frames kept).
    assert_eq!(header(tmp.path(), 1), h1);
    let active = header(tmp.path(), 2);
    assert_eq!(active.version, FORMAT_VERSION);
    assert_eq!(
        (active.salt, active.identity, active.first_lsn),
        (h2.salt, h2.identity, h2.first_lsn)
    );
    let wal = Wal::open(tmp.path(), cfg).unwrap();
    let mut all = records.clone();
    all.push(entry);
    assert_records(&read_all(&wal), &all, 1, "v2 fixture continued");
}

/// Format compatibility: a copy of the checked-in log written by format version 1 opens
/// cleanly and reads back exactly the expected records, on the real and the simulated file
/// system; new commits continue it.
#[test]
fn v1_fixture_opens_and_reads_back_exactly() {
    let (records, _) = fixture_records();
    let src = Path::new(FIXTURE_DIR);

    // The checked-in files themselves.
    let mut image: Image = Vec::new();
    for n in [seg_name(1), seg_name(2)] {
        let data = std::fs::read(src.join(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(data.len() as u64, SEG, "{n}");
        image.push((n, data));
    }
    let h1 = parse_seg_header(file(&image, &seg_name(1))).expect("segment 1 header");
    let h2 = parse_seg_header(file(&image, &seg_name(2))).expect("segment 2 header");
    assert_eq!((h1.version, h2.version), (1, 1));
    assert_eq!(
        FORMAT_VERSION, 4,
        "this build writes version 4 and reads versions 1 to 3"
    );
    assert_eq!((h1.segment_no, h2.segment_no), (1, 2));
    assert_eq!((h1.segment_bytes, h2.segment_bytes), (SEG, SEG));
    let (f1, f2) = (
        frames(file(&image, &seg_name(1))),
        frames(file(&image, &seg_name(2))),
    );
    assert_eq!(h1.first_lsn, 1);
    assert_eq!(h2.first_lsn, f1.last().unwrap().last_lsn() + 1);
    assert_eq!(f2.last().unwrap().last_lsn(), records.len() as u64);
    let all: Vec<&Frame> = f1.iter().chain(&f2).collect();
    assert!(all.iter().all(|f| f.synced_lsn < f.first_lsn));
    assert!(
        all.iter().any(|f| f.flags & FLAG_ZSTD != 0),
        "no compressed frame"
    );
    assert!(
        all.iter().any(|f| f.count > 1),
        "no frame with several records"
    );

    // On the real file system.
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(copy_segments(src, tmp.path()), [seg_name(1), seg_name(2)]);
    let wal = Wal::open(tmp.path(), fixture_cfg()).unwrap();
    let report = wal.recovery_report().clone();
    assert_eq!((report.segments, report.first_lsn), (2, 1));
    assert_eq!(report.last_lsn, records.len() as u64);
    assert!(report.cut.is_none());
    let got = read_all(&wal);
    assert_records(&got, &records, 1, "v1 fixture");
    for r in &got {
        r.record.decode().expect("every fixture record decodes");
    }
    let mid = h2.first_lsn;
    assert_records(
        &read_range(&wal, mid),
        &records[mid as usize - 1..],
        mid,
        "from segment 2",
    );
    // The log is adopted: its active segment's header is rewritten at this build's version
    // with a new
    // identity on timeline 1 (salt and frames kept); the earlier segment stays version 1.
    let lineage = wal.lineage();
    assert!(lineage.is_known());
    assert_eq!((lineage.timeline, lineage.parent), (1, 0));
    let header =
        |n: u64| parse_seg_header(&std::fs::read(tmp.path().join(seg_name(n))).unwrap()).unwrap();
    assert_eq!(header(1), h1);
    let upgraded = header(2);
    assert_eq!(
        (upgraded.version, upgraded.identity, upgraded.timeline),
        (FORMAT_VERSION, lineage.identity, 1)
    );
    assert_eq!(
        (upgraded.salt, upgraded.first_lsn, upgraded.segment_bytes),
        (h2.salt, h2.first_lsn, h2.segment_bytes)
    );
    let extra = rec(4242, 42);
    assert_eq!(wal.commit(extra.clone()).unwrap(), records.len() as u64 + 1);
    wal.close().unwrap();
    let wal = Wal::open(tmp.path(), fixture_cfg()).unwrap();
    assert_eq!(wal.lineage(), lineage, "the adopted identity is kept");
    let mut want = records.clone();
    want.push(extra);
    assert_records(&read_all(&wal), &want, 1, "v1 fixture continued");

    // With the default 64 MiB segment size configured: the files' own size governs them.
    let fs = restore(&image);
    let cfg = WalConfig {
        queue_capacity: 256,
        prepare_segments: false,
        ..WalConfig::default()
    };
    let wal = open(&fs, cfg).unwrap();
    assert_records(
        &read_all(&wal),
        &records,
        1,
        "v1 fixture, default configuration",
    );
    assert_eq!(wal.commit(rec(4243, 43)).unwrap(), records.len() as u64 + 1);
    drop(wal);
    assert_eq!(fs.read_file(&seg_path(2)).unwrap().len() as u64, SEG);

    // On the simulated file system, in every recovery mode.
    for mode in MODES {
        let fs = restore(&image);
        let cfg = WalConfig {
            recovery_mode: mode,
            ..fixture_cfg()
        };
        let wal = open(&fs, cfg).unwrap();
        assert_records(
            &read_all(&wal),
            &records,
            1,
            &format!("v1 fixture on SimFs, {mode:?}"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Groups that span a rotation
// ---------------------------------------------------------------------------------------

/// Commits 38 records one at a time (38 frames of 1579 bytes leave 5470 bytes of segment
/// 1), then `batch` records of the same size in one group, all acknowledged; then power
/// loss with 24 seeds. Returns what went wrong, per seed.
fn group_after_rotation_run(batch: u64, segments: &[u64]) -> Vec<String> {
    // Large groups: the flusher waits briefly for the batch to queue (the byte cap still
    // splits it; the last group waits out `max_wait`, so keep it short).
    let gather = Durability::GroupCommit {
        max_wait: std::time::Duration::from_millis(100),
        max_batch: batch as usize,
    };
    let last = 38 + batch;
    let mut lost = Vec::new();
    for seed in 0..24u64 {
        let fs = SimFs::new();
        let wal = open(&fs, cfg()).unwrap();
        let mut records: Vec<_> = (1..=38).map(|i| rec(i, 1500)).collect();
        commit_all(&wal, &records);
        let group: Vec<_> = (39..=last).map(|i| rec(i, 1500)).collect();
        let handles: Vec<_> = group
            .iter()
            .map(|r| wal.submit(r.clone(), (), Some(gather)).unwrap())
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.wait().unwrap(), 39 + i as u64, "seed {seed}");
        }
        records.extend(group);
        assert_eq!(segment_numbers(&wal), segments);
        assert_eq!(wal.stats().durable_lsn, last);
        if seed == 0 {
            // Groups are capped at half a segment, so this batch goes out as several
            // groups; the part written before each rotation must still be synced by it.
            let counts: Vec<Vec<u16>> = snapshot(&fs)
                .iter()
                .map(|(_, d)| {
                    frames(d)
                        .iter()
                        .map(|f| f.count)
                        .filter(|&c| c > 1)
                        .collect()
                })
                .collect();
            assert!(
                counts
                    .iter()
                    .flatten()
                    .all(|&c| usize::from(c) * 1539 <= 32 * 1024 + 1539),
                "no group larger than half a segment: {counts:?}"
            );
        }

        let after = fs.crash(seed, CrashOptions::default());
        drop(wal);
        let ctx = format!("seed {seed}");
        match open(&after, cfg()) {
            Ok(wal) => {
                let got = read_all(&wal);
                assert_records(&got, &records[..got.len()], 1, &ctx);
                if got.len() < records.len() {
                    lost.push(format!(
                        "{ctx}: {} of {last} acknowledged records recovered (cut: {:?})",
                        got.len(),
                        wal.recovery_report().cut
                    ));
                }
            }
            Err(e) => lost.push(format!("{ctx}: reopen failed: {e}")),
        }
    }
    lost
}

/// A group that does not fit the rest of segment 1 but fits an empty segment moves whole to
/// segment 2; power loss after its acknowledgement keeps it all.
#[test]
fn power_loss_after_a_group_moved_to_a_new_segment_keeps_every_acknowledged_commit() {
    let lost = group_after_rotation_run(10, &[1, 2]);
    assert!(
        lost.is_empty(),
        "acknowledged commits lost:\n{}",
        lost.join("\n")
    );
}

/// A group bigger than a segment (60 records, 92 KiB, here under the default
/// `group_max_bytes` of 4 MiB) fills segment 1, then 2, and ends in 3: power loss after its
/// acknowledgement must keep it all.
#[test]
fn power_loss_after_a_group_spanning_a_rotation_keeps_every_acknowledged_commit() {
    let lost = group_after_rotation_run(60, &[1, 2, 3]);
    assert!(
        lost.is_empty(),
        "acknowledged commits lost:\n{}",
        lost.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Power loss during recovery
// ---------------------------------------------------------------------------------------

/// Interrupts the recovery of `image` after each of its operations, loses power, and checks
/// that the next recovery still yields exactly `want` records.
fn interrupt_recovery_everywhere(
    image: &Image,
    mode: RecoveryMode,
    want: &[EncodedRecord],
    what: &str,
) -> u64 {
    let fs = restore(image);
    let wal = open(&fs, cfg_mode(mode)).unwrap();
    let ops = fs.op_count();
    assert_records(&read_all(&wal), want, 1, what);
    drop(wal);
    for k in 0..ops {
        let ctx = format!("{what}: recovery interrupted after {k} of {ops} ops");
        let fs = restore(image);
        fs.crash_after_ops(k);
        if let Ok(wal) = open(&fs, cfg_mode(mode)) {
            drop(wal);
        }
        let after = fs.crash(k, CrashOptions::default());
        let wal = open(&after, cfg_mode(mode)).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
        assert_records(&read_all(&wal), want, 1, &ctx);
        assert_eq!(
            wal.commit(rec(31_337, 3)).unwrap(),
            want.len() as u64 + 1,
            "{ctx}"
        );
    }
    ops
}

/// Recovery that cuts a torn tail (default mode) or damage followed by a later segment
/// (CutAtFirstDamage) writes zeros and removes files; power loss at any point of it changes
/// nothing the next recovery decides.
#[test]
fn power_loss_during_recovery_is_harmless() {
    let mut checked = 0;
    // Torn tails from real power loss: 30 durable commits, then 6 that were only written.
    let mut torn_images = 0;
    for seed in 0..64u64 {
        let fs = SimFs::new();
        let wal = open(&fs, cfg()).unwrap();
        let records: Vec<_> = (1..=36u64)
            .map(|i| rec(i, 100 + (i as usize * 71) % 900))
            .collect();
        for (i, r) in records.iter().enumerate() {
            let level = (i >= 30).then_some(Durability::None);
            wal.commit_with(r.clone(), (), level).unwrap();
        }
        let image = snapshot(&fs.crash(seed, CrashOptions::default()));
        drop(wal);
        let probe = restore(&image);
        let wal = open(&probe, cfg()).unwrap();
        if wal.recovery_report().cut.is_none() {
            continue;
        }
        let n = read_all(&wal).len();
        drop(wal);
        let what = format!("torn tail from power-loss seed {seed} ({n} records kept)");
        checked += interrupt_recovery_everywhere(
            &image,
            RecoveryMode::TolerateTornTail,
            &records[..n],
            &what,
        );
        torn_images += 1;
        if torn_images == 4 {
            break;
        }
    }
    assert_eq!(torn_images, 4, "too few crash images with a torn tail");

    // CutAtFirstDamage: a damaged frame in segment 1 of 2; everything after it goes.
    let records: Vec<_> = (1..=60u64).map(|i| rec(i, 1500)).collect();
    let fs = build_log(cfg(), &records);
    let mut image = snapshot(&fs);
    let f = frames(file(&image, &seg_name(1)))[10];
    file_mut(&mut image, &seg_name(1))[f.offset + 100] ^= 0x04;
    checked += interrupt_recovery_everywhere(
        &image,
        RecoveryMode::CutAtFirstDamage,
        &records[..10],
        "CutAtFirstDamage cut",
    );
    eprintln!("power loss during recovery: {checked} interruption points checked");
}

/// A group of more than 65535 records is split into frames of at most 65535 records (the
/// frame header's count is a u16) and reads back whole.
#[test]
fn a_group_of_more_than_65535_records_reads_back() {
    let cfg = WalConfig {
        segment_bytes: 4 << 20,
        queue_capacity: 70_000,
        ..cfg()
    };
    let n = 66_000usize;
    // One group: the flusher waits (up to 5 s) until all of them are queued.
    let gather = Durability::GroupCommit {
        max_wait: std::time::Duration::from_secs(5),
        max_batch: n,
    };
    let fs = SimFs::new();
    let wal = open(&fs, cfg.clone()).unwrap();
    let record = |i: usize| EncodedRecord::raw(RecordType::Vote, (i as u32).to_le_bytes().to_vec());
    let handles: Vec<_> = (0..n)
        .map(|i| wal.submit(record(i), (), Some(gather)).unwrap())
        .collect();
    let last = handles.into_iter().map(|h| h.wait().unwrap()).last();
    assert_eq!(last, Some(n as u64));
    wal.close().unwrap();
    let seg = fs.read_file(&seg_path(1)).unwrap();
    let counts: Vec<u16> = frames(&seg).iter().map(|f| f.count).collect();
    assert_eq!(counts.iter().map(|&c| c as usize).sum::<usize>(), n);
    assert!(counts.contains(&u16::MAX), "frames: {counts:?}");
    let wal = open(&fs, cfg).unwrap();
    let got = read_all(&wal);
    assert_eq!(got.len(), n);
    for (i, r) in got.iter().enumerate() {
        assert!(r.lsn == i as u64 + 1 && r.record == record(i), "record {i}");
    }
}

// ---------------------------------------------------------------------------------------
// Lineage: one database, one timeline per log directory
// ---------------------------------------------------------------------------------------

/// Rewrites a (version 2 or later) header's identity, timeline and parent timeline, with a valid CRC.
fn rewrite_lineage(b: &mut [u8], identity: u64, timeline: u32, parent: u32) {
    b[40..48].copy_from_slice(&identity.to_le_bytes());
    b[48..52].copy_from_slice(&timeline.to_le_bytes());
    b[52..56].copy_from_slice(&parent.to_le_bytes());
    let crc = crc32fast::hash(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Every segment a log writes records its database and timeline; they stay across reopens.
#[test]
fn every_segment_records_the_database_and_its_timeline() {
    let records: Vec<_> = (1..=70u64).map(|i| rec(i, 3000)).collect();
    let fs = build_log(cfg(), &records);
    let image = snapshot(&fs);
    assert!(image.len() >= 3);
    let headers: Vec<_> = image
        .iter()
        .map(|(n, b)| parse_seg_header(b).unwrap_or_else(|| panic!("{n}")))
        .collect();
    let identity = headers[0].identity;
    assert_ne!(identity, 0);
    for h in &headers {
        assert_eq!(
            (h.version, h.identity, h.timeline, h.parent_timeline),
            (FORMAT_VERSION, identity, 1, 0)
        );
    }
    let wal = open(&restore(&image), cfg()).unwrap();
    assert_eq!(
        (wal.lineage().identity, wal.lineage().timeline),
        (identity, 1)
    );
    // Another log is another database.
    let other = build_log(cfg(), &records[..3]);
    let other = parse_seg_header(&snapshot(&other)[0].1).unwrap();
    assert_ne!(other.identity, identity);
}

/// A segment of another database, of another timeline, or a version-1 segment after a
/// version-2 one in the log directory is refused with `ForeignSegment` naming the file, in
/// every recovery mode, whether the segment is live or obsolete; nothing is changed.
#[test]
fn a_log_directory_mixing_databases_or_timelines_is_refused() {
    let records: Vec<_> = (1..=70u64).map(|i| rec(i, 3000)).collect();
    let image = snapshot(&build_log(cfg(), &records));
    let mine = parse_seg_header(&image[0].1).unwrap().identity;
    let foreign = mine ^ 0x5555;
    let to_v1 = |b: &mut [u8]| {
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[40..60].fill(0);
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
    };
    type Edit = fn(&mut [u8], u64, u64);
    let cases: [(&str, u64, Edit); 5] = [
        ("another database, last segment", 4, |b, _, f| {
            rewrite_lineage(b, f, 1, 0)
        }),
        ("another database, first segment", 1, |b, _, f| {
            rewrite_lineage(b, f, 1, 0)
        }),
        ("another timeline", 2, |b, m, _| rewrite_lineage(b, m, 2, 1)),
        ("version 1 after version 2", 3, |b, _, _| {
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
            b[40..60].fill(0);
            let crc = crc32fast::hash(&b[0..60]);
            b[60..64].copy_from_slice(&crc.to_le_bytes());
        }),
        ("another timeline, obsolete", 1, |b, m, _| {
            rewrite_lineage(b, m, 3, 1)
        }),
    ];
    for (what, seg, edit) in cases {
        let mut img = image.clone();
        edit(file_mut(&mut img, &seg_name(seg)), mine, foreign);
        for mode in MODES {
            for from in [None, Some(30)] {
                let fs = restore(&img);
                match open_from(&fs, cfg_mode(mode), from) {
                    Err(Error::ForeignSegment {
                        path,
                        expected,
                        found,
                    }) => {
                        assert_ne!(expected, found, "{what}");
                        assert!(
                            path.ends_with(seg_name(seg)) || path.ends_with(seg_name(4)),
                            "{what}: {path:?}"
                        );
                    }
                    Err(e) => panic!("{what}, {mode:?}, from {from:?}: {e:?}"),
                    Ok(_) => panic!("{what}, {mode:?}, from {from:?}: opened"),
                }
                assert_eq!(snapshot(&fs), img, "{what}: nothing is changed");
            }
        }
    }
    // Version-1 segments before version-2 ones are an upgraded log's: it opens.
    let mut img = image.clone();
    for seg in [1, 2] {
        to_v1(file_mut(&mut img, &seg_name(seg)));
    }
    let wal = open(&restore(&img), cfg()).unwrap();
    assert_eq!(wal.lineage().identity, mine);
    assert_records(&read_all(&wal), &records, 1, "v1 then v2");
}

/// Issue 17: what opening cuts is copied into `<log>/quarantine/` first, written and synced:
/// the active segment's bytes from the cut on and every later segment whole, each with its
/// segment, offset, salt and reason under a CRC. `quarantine_max_bytes: 0` turns it off.
#[test]
fn opening_quarantines_the_bytes_it_cuts_before_cutting_them() {
    let records: Vec<_> = (1..=60u64).map(|i| rec(i, 1500)).collect();
    let fs = build_log(cfg(), &records);
    let mut image = snapshot(&fs);
    let f = frames(file(&image, &seg_name(1)))[10];
    file_mut(&mut image, &seg_name(1))[f.offset + 100] ^= 0x04;
    let seg1 = file(&image, &seg_name(1)).clone();
    let seg2 = file(&image, &seg_name(2)).clone();
    let fs = restore(&image);
    let wal = open(&fs, cfg_mode(RecoveryMode::CutAtFirstDamage)).unwrap();
    let report = wal.recovery_report().clone();
    assert_eq!(report.quarantined.len(), 2, "{report:?}");
    drop(wal);
    let entries = walmdb::inspect::list_quarantine(&fs, dir()).unwrap();
    assert_eq!(entries.len(), 2);
    let names: Vec<_> = entries.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, report.quarantined);
    let first = entries[0].1.as_ref().unwrap();
    assert_eq!((first.segment_no, first.offset), (1, f.offset as u64));
    assert!(first.reason.contains("segment 1"), "{}", first.reason);
    assert_eq!(
        first.bytes[..],
        seg1[f.offset..f.offset + first.bytes.len()]
    );
    assert!(first.bytes.len() >= f.total_len);
    let second = entries[1].1.as_ref().unwrap();
    assert_eq!((second.segment_no, second.offset), (2, 0));
    let used = seg2.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert_eq!(second.bytes[..], seg2[..used]);

    // A torn tail in the default mode, with the quarantine turned off: nothing written.
    let fs = restore(&image);
    let off = WalConfig {
        quarantine_max_bytes: 0,
        ..cfg_mode(RecoveryMode::CutAtFirstDamage)
    };
    let wal = open(&fs, off).unwrap();
    assert!(wal.recovery_report().cut.is_some());
    assert!(wal.recovery_report().quarantined.is_empty());
    drop(wal);
    assert!(walmdb::inspect::list_quarantine(&fs, dir())
        .unwrap()
        .is_empty());
}

/// The old name of `RecoveryMode::CutAtFirstDamage` still compiles, as a deprecated alias.
#[test]
#[allow(deprecated)]
fn the_old_name_of_cut_at_first_damage_is_the_same_mode() {
    assert_eq!(
        walmdb::RecoveryMode::PointInTime,
        walmdb::RecoveryMode::CutAtFirstDamage
    );
    assert!(matches!(
        walmdb::RecoveryMode::CutAtFirstDamage,
        walmdb::RecoveryMode::PointInTime
    ));
}
