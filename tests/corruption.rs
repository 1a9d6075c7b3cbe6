//! Damage to the log's files: truncation at every offset, single-bit flips, garbage, huge
//! length fields, and broken sets of segments. Recovery must keep exactly the intact prefix
//! where the damage is a torn tail, and refuse to open (never cut silently) where valid,
//! previously synced records follow the damage.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use walmdb::{EncodedRecord, Error, RecoveryMode, SimFs, FORMAT_VERSION};

/// Tracks the largest single allocation, to show a damaged length field never makes the
/// reader allocate what it claims.
struct LargestAlloc;

static LARGEST_ALLOC: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for LargestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOC.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOC.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOC.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: LargestAlloc = LargestAlloc;

/// 64 records in two segments: 40 large ones fill segment 1, 24 small ones (82..=110-byte
/// frames) sit in segment 2. One commit per frame, each synced.
fn two_segment_records() -> Vec<EncodedRecord> {
    (1..=64u64)
        .map(|i| {
            if i <= 40 {
                rec(i, 1557)
            } else {
                rec(i, 3 + (i as usize * 7) % 29)
            }
        })
        .collect()
}

fn two_segment_log() -> (Vec<EncodedRecord>, Image) {
    let records = two_segment_records();
    let fs = build_log(cfg(), &records);
    let image = snapshot(&fs);
    let names: Vec<&str> = image.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [seg_name(1), seg_name(2)],
        "the log must span exactly 2 segments"
    );
    let (s1, s2) = (
        frames(file(&image, &seg_name(1))),
        frames(file(&image, &seg_name(2))),
    );
    assert_eq!((s1.len(), s2.len()), (40, 24));
    // One commit per frame, each synced before the next was written.
    for f in s1.iter().chain(&s2) {
        assert_eq!((f.count, f.synced_lsn), (1, f.first_lsn - 1), "{f:?}");
    }
    (records, image)
}

/// The two-segment log with segment 2 trimmed to 2 KiB past its last frame, so the
/// thousands of reopens stay fast (the trailing zeros only make the probe slower).
fn trimmed_two_segment_log() -> (Vec<EncodedRecord>, Image) {
    let (records, mut image) = two_segment_log();
    let seg2 = file_mut(&mut image, &seg_name(2));
    let end = frames(seg2).last().unwrap().end();
    seg2.truncate(end + 2048);
    (records, image)
}

/// 20 small records in one segment; the image is trimmed to 1 KiB past the last frame so the
/// thousands of reopens stay fast (the trailing zeros only make the probe slower).
fn small_log() -> (Vec<EncodedRecord>, Image) {
    let records: Vec<_> = (1..=20u64)
        .map(|i| rec(i, 1 + (i as usize * 13) % 48))
        .collect();
    let fs = build_log(cfg(), &records);
    let mut image = snapshot(&fs);
    let seg = file_mut(&mut image, &seg_name(1));
    let end = frames(seg).last().unwrap().end();
    seg.truncate(end + 1024);
    (records, image)
}

/// 70 records of 3079-byte frames: segments 1..=4 hold LSNs 1-21, 22-42, 43-63, 64-70.
fn four_segment_log() -> (Vec<EncodedRecord>, Image) {
    let records: Vec<_> = (1..=70u64).map(|i| rec(i, 3000)).collect();
    let fs = build_log(cfg(), &records);
    let image = snapshot(&fs);
    let firsts: Vec<u64> = (1..=4)
        .map(|n| {
            parse_seg_header(file(&image, &seg_name(n)))
                .unwrap()
                .first_lsn
        })
        .collect();
    assert_eq!(firsts, [1, 22, 43, 64]);
    assert_eq!(image.len(), 4);
    (records, image)
}

/// Opens `image` in `mode`, expecting success, and returns the log and its records.
#[track_caller]
fn open_ok(
    image: &Image,
    mode: RecoveryMode,
    ctx: &str,
) -> (SimFs, walmdb::Wal, Vec<walmdb::LogRecord>) {
    let fs = restore(image);
    let wal = open(&fs, cfg_mode(mode)).unwrap_or_else(|e| panic!("{ctx}: open failed: {e:?}"));
    let got = try_read_all(&wal).unwrap_or_else(|e| panic!("{ctx}: read failed: {e:?}"));
    (fs, wal, got)
}

/// The records from LSN `from` on. The per-case checks of the two-segment log read from
/// segment 2 only (LSN 41 on), with the recovered last LSN showing nothing more is there:
/// segment 1 is never touched by those cases, and its records are checked in full once.
fn read_range(wal: &walmdb::Wal, from: u64) -> Vec<walmdb::LogRecord> {
    wal.read_from(from)
        .collect::<walmdb::Result<_>>()
        .unwrap_or_else(|e| panic!("read_from({from}): {e:?}"))
}

/// Opens `image` in `mode` and checks it holds exactly `want` (the two-segment log's records
/// from LSN 1), reading segment 1 in full only when `full`.
#[track_caller]
fn open_expecting(
    image: &Image,
    mode: RecoveryMode,
    want: &[EncodedRecord],
    full: bool,
    ctx: &str,
) -> (SimFs, walmdb::Wal) {
    let fs = restore(image);
    let wal = open(&fs, cfg_mode(mode)).unwrap_or_else(|e| panic!("{ctx}: open failed: {e:?}"));
    assert_eq!(wal.recovery_report().last_lsn, want.len() as u64, "{ctx}");
    if full {
        assert_records(&read_all(&wal), want, 1, ctx);
    } else {
        assert_records(&read_range(&wal, 41), &want[40..], 41, ctx);
    }
    (fs, wal)
}

// ---------------------------------------------------------------------------------------
// Truncation
// ---------------------------------------------------------------------------------------

/// Spec 3: the last segment cut at every byte offset of its written part (and at a stride
/// beyond it, where only zeros are cut). Default recovery keeps exactly the frames complete
/// before the cut; the next commit takes the next LSN and survives another reopen.
#[test]
fn truncating_the_last_segment_at_every_offset_keeps_whole_frames() {
    let (records, image) = two_segment_log();
    let seg2 = file(&image, &seg_name(2)).clone();
    let seg2_frames = frames(&seg2);
    let data_end = seg2_frames.last().unwrap().end();
    let mut cuts: Vec<usize> = (0..=data_end + FRAME_HEADER + 8).collect();
    cuts.extend((data_end + FRAME_HEADER + 9..seg2.len()).step_by(509));
    cuts.push(seg2.len());

    let (mut header_cuts, mut torn_cuts, mut clean_cuts) = (0, 0, 0);
    for &cut in &cuts {
        let ctx = format!("segment 2 cut at {cut}");
        let mut img = image.clone();
        file_mut(&mut img, &seg_name(2)).truncate(cut);
        if cut < SEG_HEADER {
            // A named segment always has a whole header (it is written under a temporary
            // name first), so a cut inside it is damage, not a torn write.
            let fs = restore(&img);
            assert_eq!(expect_corruption(open(&fs, cfg()), &ctx), (2, 0), "{ctx}");
            header_cuts += 1;
            continue;
        }
        let whole = 40 + seg2_frames.iter().filter(|f| f.end() <= cut).count();
        let full = cut % 97 == 0;
        let (fs, wal) = open_expecting(
            &img,
            RecoveryMode::TolerateTornTail,
            &records[..whole],
            full,
            &ctx,
        );
        if wal.recovery_report().cut.is_some() {
            torn_cuts += 1;
        } else {
            clean_cuts += 1;
        }
        let extra = rec(1000 + cut as u64, 11);
        assert_eq!(
            wal.commit(extra.clone()).unwrap(),
            whole as u64 + 1,
            "{ctx}"
        );
        wal.close().unwrap();

        let wal = open(&fs, cfg()).unwrap_or_else(|e| panic!("{ctx}: second open: {e:?}"));
        let mut want = records[..whole].to_vec();
        want.push(extra);
        let ctx2 = format!("{ctx}, after a new commit");
        assert_eq!(wal.recovery_report().last_lsn, want.len() as u64, "{ctx2}");
        if full {
            assert_records(&read_all(&wal), &want, 1, &ctx2);
        } else {
            assert_records(&read_range(&wal, 41), &want[40..], 41, &ctx2);
        }
        assert!(
            wal.recovery_report().cut.is_none(),
            "{ctx}: second open cut again"
        );
    }
    eprintln!(
        "truncation: {} cut offsets of segment 2 ({} inside its header -> Corruption, \
         {} torn tails cut, {} clean ends)",
        cuts.len(),
        header_cuts,
        torn_cuts,
        clean_cuts
    );
}

/// Cutting the log's byte stream in segment 1 (segment 2 gone with it) is a torn tail too.
#[test]
fn truncating_a_single_remaining_segment_keeps_whole_frames() {
    let (records, image) = two_segment_log();
    let seg1 = file(&image, &seg_name(1)).clone();
    let seg1_frames = frames(&seg1);
    let mut cuts: Vec<usize> = (SEG_HEADER..seg1.len()).step_by(61).collect();
    for f in &seg1_frames {
        cuts.extend([
            f.offset - 1,
            f.offset,
            f.offset + 1,
            f.offset + FRAME_HEADER,
        ]);
    }
    cuts.retain(|&c| c >= SEG_HEADER);
    cuts.sort_unstable();
    cuts.dedup();
    for &cut in &cuts {
        let ctx = format!("segment 1 cut at {cut}, segment 2 removed");
        let img: Image = vec![(seg_name(1), seg1[..cut].to_vec())];
        let whole = seg1_frames.iter().filter(|f| f.end() <= cut).count();
        let (_fs, wal, got) = open_ok(&img, RecoveryMode::TolerateTornTail, &ctx);
        assert_records(&got, &records[..whole], 1, &ctx);
        assert_eq!(wal.commit(rec(7, 7)).unwrap(), whole as u64 + 1, "{ctx}");
    }
    eprintln!("truncation: {} cut offsets of a lone segment 1", cuts.len());
}

/// Truncating segment 1 while segment 2 (synced after it) survives is corruption.
#[test]
fn truncating_an_earlier_segment_is_corruption() {
    let (records, image) = two_segment_log();
    let seg1_frames = frames(file(&image, &seg_name(1)));
    let last_end = seg1_frames.last().unwrap().end();
    let mut tried = 0;
    for cut in (SEG_HEADER..=SEG as usize)
        .step_by(127)
        .chain([last_end - 1, last_end])
    {
        let ctx = format!("segment 1 cut at {cut}");
        let mut img = image.clone();
        file_mut(&mut img, &seg_name(1)).truncate(cut);
        tried += 1;
        if cut >= last_end {
            let (_fs, _wal, got) = open_ok(&img, RecoveryMode::TolerateTornTail, &ctx);
            assert_records(&got, &records, 1, &ctx);
            continue;
        }
        let boundary = seg1_frames
            .iter()
            .take_while(|f| f.end() <= cut)
            .last()
            .map_or(SEG_HEADER, |f| f.end());
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            let fs = restore(&img);
            let at = expect_corruption(open(&fs, cfg_mode(mode)), &format!("{ctx}, {mode:?}"));
            assert_eq!(at, (1, boundary as u64), "{ctx}, {mode:?}");
        }
    }
    eprintln!("truncation: {tried} cut offsets of segment 1 with segment 2 intact");
}

// ---------------------------------------------------------------------------------------
// Bit flips
// ---------------------------------------------------------------------------------------

/// Bit positions of a frame's `salt` field (bytes 8..12).
fn is_salt_bit(bit: usize) -> bool {
    (64..96).contains(&bit)
}

fn check_last_frame_flip(records: &[EncodedRecord], image: &Image, bit: usize) {
    let seg2 = frames(file(image, &seg_name(2)));
    let last = *seg2.last().unwrap();
    let mut img = image.clone();
    flip_bit(&mut file_mut(&mut img, &seg_name(2))[last.offset..], bit);
    let ctx = format!("last frame (offset {}), bit {bit} flipped", last.offset);
    let before = &records[..records.len() - 1];

    // Default: the torn tail is cut, the records before it stay, the LSN is reused.
    let full = bit.is_multiple_of(64);
    let (fs, wal) = open_expecting(&img, RecoveryMode::TolerateTornTail, before, full, &ctx);
    let cut = wal.recovery_report().cut.clone();
    assert!(
        cut.is_some(),
        "{ctx}: the damaged tail was not reported as cut"
    );
    assert_eq!(cut.unwrap().offset, last.offset as u64, "{ctx}");
    let extra = rec(5000 + bit as u64, 9);
    assert_eq!(
        wal.commit(extra.clone()).unwrap(),
        records.len() as u64,
        "{ctx}"
    );
    wal.close().unwrap();
    let wal = open(&fs, cfg()).unwrap();
    let mut want = before.to_vec();
    want.push(extra);
    let ctx2 = format!("{ctx}, reopened after a commit");
    assert_eq!(wal.recovery_report().last_lsn, want.len() as u64, "{ctx2}");
    assert_records(&read_range(&wal, 41), &want[40..], 41, &ctx2);
    drop(wal);

    // Strict: refuses.
    let fs = restore(&img);
    match open(&fs, cfg_mode(RecoveryMode::Strict)) {
        Err(Error::TornTail { segment, offset })
        | Err(Error::Corruption {
            segment, offset, ..
        }) => {
            assert_eq!((segment, offset), (2, last.offset as u64), "{ctx}, Strict")
        }
        other => panic!("{ctx}, Strict: expected TornTail or Corruption, got {other:?}"),
    }

    // CutAtFirstDamage: the intact prefix.
    let ctx = format!("{ctx}, CutAtFirstDamage");
    open_expecting(&img, RecoveryMode::CutAtFirstDamage, before, full, &ctx);
}

/// Spec 4: every single-bit flip of the last record's frame, apart from its salt field (see
/// the next test), is a torn tail: cut in default mode, refused in Strict mode.
#[test]
fn last_frame_bit_flips_are_cut_as_a_torn_tail() {
    let (records, image) = trimmed_two_segment_log();
    let last = *frames(file(&image, &seg_name(2))).last().unwrap();
    let bits: Vec<usize> = (0..last.total_len * 8)
        .filter(|&b| !is_salt_bit(b))
        .collect();
    for &bit in &bits {
        check_last_frame_flip(&records, &image, bit);
    }
    eprintln!(
        "last-frame flips: {}/{} detected and cut (salt bits tested separately)",
        bits.len(),
        bits.len()
    );
}

/// Spec 4, the salt field of the last frame: a flipped salt bit makes the damaged frame look
/// like a leftover of the file's earlier life, so it is read as a clean end.
#[test]
fn last_frame_salt_bit_flips_are_cut_as_a_torn_tail() {
    let (records, image) = trimmed_two_segment_log();
    for bit in (0..FRAME_HEADER * 8).filter(|&b| is_salt_bit(b)) {
        check_last_frame_flip(&records, &image, bit);
    }
}

/// Spec 5: every single-bit flip of every frame but the last, and of the segment header, is
/// `Error::Corruption` at that frame in default and Strict mode; CutAtFirstDamage keeps the
/// records before the damaged frame.
#[test]
fn earlier_frame_and_header_bit_flips_are_corruption() {
    let (records, image) = small_log();
    let seg = file(&image, &seg_name(1)).clone();
    let fr = frames(&seg);
    assert_eq!(fr.len(), records.len());
    let (mut tried, mut detected) = (0usize, 0usize);

    for bit in 0..SEG_HEADER * 8 {
        let mut img = image.clone();
        flip_bit(file_mut(&mut img, &seg_name(1)), bit);
        for mode in MODES {
            tried += 1;
            let ctx = format!("segment header bit {bit}, {mode:?}");
            let r = open(&restore(&img), cfg_mode(mode));
            // CutAtFirstDamage has no intact record to keep: the damage is the header itself.
            assert_eq!(expect_corruption(r, &ctx), (1, 0), "{ctx}");
            detected += 1;
        }
    }

    for (i, f) in fr[..fr.len() - 1].iter().enumerate() {
        for bit in 0..f.total_len * 8 {
            let mut img = image.clone();
            flip_bit(&mut file_mut(&mut img, &seg_name(1))[f.offset..], bit);
            for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
                tried += 1;
                let ctx = format!("frame {} (LSN {}) bit {bit}, {mode:?}", i, f.first_lsn);
                let r = open(&restore(&img), cfg_mode(mode));
                assert_eq!(expect_corruption(r, &ctx), (1, f.offset as u64), "{ctx}");
                detected += 1;
            }
            tried += 1;
            let ctx = format!(
                "frame {} (LSN {}) bit {bit}, CutAtFirstDamage",
                i, f.first_lsn
            );
            let (_fs, wal, got) = open_ok(&img, RecoveryMode::CutAtFirstDamage, &ctx);
            assert_records(&got, &records[..i], 1, &ctx);
            assert!(
                wal.recovery_report().cut.is_some(),
                "{ctx}: no cut reported"
            );
            detected += 1;
        }
    }
    eprintln!("bit flips before the tail: {detected}/{tried} detected");
    assert_eq!(detected, tried);
}

/// Spec 5 across segments: flips in segment 1 are corruption because segment 2 follows;
/// four bits of every frame (length, salt, CRC, body) and every 7th bit of segment 2's first frame.
#[test]
fn bit_flips_in_an_earlier_segment_are_corruption() {
    let (records, image) = two_segment_log();
    let mut cases = Vec::new();
    for f in frames(file(&image, &seg_name(1))) {
        // length, salt, CRC, and a body bit
        for bit in [3, 8 * 8 + 3, 8 * 4 + 6, 8 * FRAME_HEADER + 8 * 800 + 5] {
            cases.push((1u64, f, bit));
        }
    }
    let first2 = frames(file(&image, &seg_name(2)))[0];
    cases.extend(
        (0..first2.total_len * 8)
            .step_by(7)
            .map(|b| (2u64, first2, b)),
    );
    for &(seg, f, bit) in &cases {
        let mut img = image.clone();
        flip_bit(&mut file_mut(&mut img, &seg_name(seg))[f.offset..], bit);
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            let ctx = format!("segment {seg} frame at {} bit {bit}, {mode:?}", f.offset);
            let r = open(&restore(&img), cfg_mode(mode));
            assert_eq!(expect_corruption(r, &ctx), (seg, f.offset as u64), "{ctx}");
        }
        let ctx = format!(
            "segment {seg} frame at {} bit {bit}, CutAtFirstDamage",
            f.offset
        );
        let (_fs, wal, got) = open_ok(&img, RecoveryMode::CutAtFirstDamage, &ctx);
        let keep = (f.first_lsn - 1) as usize;
        assert_records(&got, &records[..keep], 1, &ctx);
        // Whatever followed the damage, later segments included, is gone for good.
        assert_eq!(wal.commit(rec(9, 9)).unwrap(), keep as u64 + 1, "{ctx}");
    }
    eprintln!(
        "bit flips in segment 1 / start of segment 2: {} cases detected",
        cases.len()
    );
}

/// A whole frame zeroed in the middle of the log is not a clean end: synced frames follow.
#[test]
fn a_zeroed_frame_in_the_middle_is_corruption() {
    let (records, image) = two_segment_log();
    for (seg, idx) in [(1u64, 0usize), (1, 17), (1, 39), (2, 0), (2, 12)] {
        let f = frames(file(&image, &seg_name(seg)))[idx];
        let mut img = image.clone();
        file_mut(&mut img, &seg_name(seg))[f.offset..f.end()].fill(0);
        let ctx = format!("segment {seg} frame {idx} zeroed");
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            let r = open(&restore(&img), cfg_mode(mode));
            assert_eq!(
                expect_corruption(r, &ctx),
                (seg, f.offset as u64),
                "{ctx}, {mode:?}"
            );
        }
        let (_fs, _wal, got) = open_ok(&img, RecoveryMode::CutAtFirstDamage, &ctx);
        assert_records(&got, &records[..(f.first_lsn - 1) as usize], 1, &ctx);
    }
}

// ---------------------------------------------------------------------------------------
// Zeros, garbage, huge lengths
// ---------------------------------------------------------------------------------------

fn contains_salt(data: &[u8], salt: u32) -> bool {
    data.windows(4).any(|w| w == salt.to_le_bytes())
}

/// Spec 6: zeros (the preallocated space) and garbage after the last frame are a clean end
/// in every mode, and new commits go after the last record.
#[test]
fn zeros_and_garbage_after_the_tail_are_a_clean_end() {
    let (records, image) = two_segment_log();
    let seg2 = file(&image, &seg_name(2)).clone();
    let salt = parse_seg_header(&seg2).unwrap().salt;
    let end = frames(&seg2).last().unwrap().end();
    assert!(seg2[end..].iter().all(|&b| b == 0));

    let mut variants = vec![("zeros", image.clone())];
    for (name, len) in [
        ("one garbage byte", 1),
        ("39 garbage bytes", 39),
        ("4 KiB of garbage", 4096),
    ] {
        let mut img = image.clone();
        file_mut(&mut img, &seg_name(2))[end..end + len].copy_from_slice(&noise(len as u64, len));
        variants.push((name, img));
    }
    let mut img = image.clone();
    let rest = SEG as usize - end;
    let mut seed = 0;
    let garbage = loop {
        let g = noise(0xBAD + seed, rest);
        if !contains_salt(&g, salt) {
            break g;
        }
        seed += 1;
    };
    file_mut(&mut img, &seg_name(2))[end..].copy_from_slice(&garbage);
    variants.push(("garbage to the end of the file", img));
    // The same over a file shorter than its preallocated size.
    let mut img = image.clone();
    let short = file_mut(&mut img, &seg_name(2));
    short.truncate(end);
    short.extend_from_slice(&noise(77, 100));
    variants.push(("garbage past a short file's end", img));

    for (name, img) in &variants {
        for mode in MODES {
            let ctx = format!("{name}, {mode:?}");
            let (fs, wal, got) = open_ok(img, mode, &ctx);
            assert_records(&got, &records, 1, &ctx);
            assert!(
                wal.recovery_report().cut.is_none(),
                "{ctx}: a clean end was cut"
            );
            let extra = rec(64_000, 20);
            assert_eq!(wal.commit(extra.clone()).unwrap(), 65, "{ctx}");
            wal.close().unwrap();
            let wal = open(&fs, cfg_mode(mode)).unwrap();
            let mut want = records.clone();
            want.push(extra);
            assert_records(&read_all(&wal), &want, 1, &format!("{ctx}, reopened"));
        }
    }
}

/// Spec 6: length fields of 0xFFFFFFFF (stored length, raw length) and a record count of
/// 0xFFFF are handled as damage, with no huge allocation and no panic.
#[test]
fn huge_length_fields_are_damage_without_huge_allocations() {
    let (records, image) = two_segment_log();
    let seg2 = frames(file(&image, &seg_name(2)));
    let last = *seg2.last().unwrap();
    let earlier = seg2[5];
    // (what, field offset in the frame header, new bytes, recompute the CRC)
    let edits: [(&str, usize, &[u8], bool); 5] = [
        ("len = 0xFFFFFFFF", 0, &[0xFF; 4], false),
        ("len = 0x7FFFFFFF", 0, &[0xFF, 0xFF, 0xFF, 0x7F], false),
        ("raw_len = 0xFFFFFFFF", 32, &[0xFF; 4], false),
        ("raw_len = 0xFFFFFFFF, CRC recomputed", 32, &[0xFF; 4], true),
        ("count = 0xFFFF", 14, &[0xFF; 2], false),
    ];
    for (what, at, bytes, fix_crc) in edits {
        let edit = |f: &Frame| {
            let mut img = image.clone();
            let seg = file_mut(&mut img, &seg_name(2));
            seg[f.offset + at..f.offset + at + bytes.len()].copy_from_slice(bytes);
            if fix_crc {
                fix_frame_crc(seg, f.offset);
            }
            img
        };

        // In the last frame: a torn tail.
        let img = edit(&last);
        let ctx = format!("last frame: {what}");
        let (_fs, wal, got) = open_ok(&img, RecoveryMode::TolerateTornTail, &ctx);
        assert_records(&got, &records[..63], 1, &ctx);
        assert!(
            wal.recovery_report().cut.is_some(),
            "{ctx}: no cut reported"
        );
        drop(wal);
        let r = open(&restore(&img), cfg_mode(RecoveryMode::Strict));
        assert!(
            matches!(
                r,
                Err(Error::TornTail { .. }) | Err(Error::Corruption { .. })
            ),
            "{ctx}, Strict: {r:?}"
        );

        // In an earlier frame: corruption.
        let img = edit(&earlier);
        let ctx = format!("frame at {}: {what}", earlier.offset);
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            let r = open(&restore(&img), cfg_mode(mode));
            assert_eq!(
                expect_corruption(r, &ctx),
                (2, earlier.offset as u64),
                "{ctx}"
            );
        }
        let (_fs, _wal, got) = open_ok(&img, RecoveryMode::CutAtFirstDamage, &ctx);
        assert_records(&got, &records[..(earlier.first_lsn - 1) as usize], 1, &ctx);
    }
    let largest = LARGEST_ALLOC.load(Ordering::Relaxed);
    eprintln!("largest single allocation in this test binary so far: {largest} bytes");
    assert!(largest < 16 << 20, "an allocation of {largest} bytes");
}

// ---------------------------------------------------------------------------------------
// The set of segments
// ---------------------------------------------------------------------------------------

fn segment_numbers(wal: &walmdb::Wal) -> Vec<u64> {
    wal.segments().iter().map(|m| m.segment_no).collect()
}

#[track_caller]
fn expect_sequence_error<T>(r: walmdb::Result<T>, ctx: &str) {
    match r {
        Err(Error::SegmentSequence { .. }) => {}
        Err(e) => panic!("{ctx}: expected SegmentSequence, got {e:?}"),
        Ok(_) => panic!("{ctx}: expected SegmentSequence, but the log opened"),
    }
}

#[track_caller]
fn expect_damage_error<T>(r: walmdb::Result<T>, ctx: &str) {
    match r {
        Err(e) if is_damage_error(&e) => {}
        Err(e) => panic!("{ctx}: expected Corruption/SegmentSequence, got {e:?}"),
        Ok(_) => panic!("{ctx}: expected Corruption/SegmentSequence, but the log opened"),
    }
}

/// Spec 7: a damaged header of a middle or the last segment is `Corruption` at offset 0.
#[test]
fn a_bad_header_of_a_later_segment_is_corruption() {
    let (_records, image) = four_segment_log();
    for seg in [2u64, 3, 4] {
        for byte in [0usize, 9, 13, 20, 27, 35, 45, 62] {
            let mut img = image.clone();
            file_mut(&mut img, &seg_name(seg))[byte] ^= 0x10;
            for mode in MODES {
                let ctx = format!("segment {seg} header byte {byte}, {mode:?}");
                let r = open(&restore(&img), cfg_mode(mode));
                assert_eq!(expect_corruption(r, &ctx), (seg, 0), "{ctx}");
            }
        }
    }
}

/// Spec 7: a damaged header of the oldest segment, opened without `from_lsn` ("keep every
/// record of the oldest segment on"), must be an error, not a reason to start later.
#[test]
fn a_bad_header_of_the_first_segment_is_an_error() {
    let (_records, image) = four_segment_log();
    let mut img = image.clone();
    file_mut(&mut img, &seg_name(1))[20] ^= 0x01;
    for mode in MODES {
        let fs = restore(&img);
        let r = open(&fs, cfg_mode(mode));
        let opened = r
            .as_ref()
            .ok()
            .map(|w| (segment_numbers(w), w.recovery_report().clone()));
        expect_damage_error(
            r,
            &format!("segment 1 header damaged, {mode:?}: {opened:?}"),
        );
        assert!(
            fs.read_file(&seg_path(1)).is_some(),
            "segment 1 was renamed or removed"
        );
    }
}

/// Spec 7: the same damage wholly below `from_lsn` is retired while opening.
#[test]
fn a_bad_header_below_from_lsn_is_retired() {
    let (records, image) = four_segment_log();
    let mut img = image.clone();
    file_mut(&mut img, &seg_name(1))[20] ^= 0x01;

    let fs = restore(&img);
    let wal = open_from(&fs, cfg(), Some(21)).expect("open from LSN 21");
    assert_eq!(segment_numbers(&wal), [2, 3, 4]);
    assert_eq!(wal.recovery_report().segments_retired, 1);
    let got: Vec<_> = wal.read_from(22).collect::<walmdb::Result<_>>().unwrap();
    assert_records(&got, &records[21..], 22, "read from LSN 22");
    assert_eq!(wal.commit(rec(71, 5)).unwrap(), 71);
    drop(wal);
    assert!(!fs.file_names(dir()).contains(&seg_name(1)));

    // Needing a record of the damaged segment is an error.
    expect_damage_error(open_from(&restore(&img), cfg(), Some(20)), "from LSN 20");
}

/// Spec 7: a missing middle segment is `SegmentSequence`, unless wholly below `from_lsn`.
#[test]
fn a_missing_middle_segment_is_a_sequence_error() {
    let (records, image) = four_segment_log();
    let img: Image = image
        .into_iter()
        .filter(|(n, _)| *n != seg_name(2))
        .collect();
    for mode in MODES {
        expect_sequence_error(open(&restore(&img), cfg_mode(mode)), &format!("{mode:?}"));
    }
    expect_sequence_error(open_from(&restore(&img), cfg(), Some(41)), "from LSN 41");

    let fs = restore(&img);
    let wal = open_from(&fs, cfg(), Some(42)).expect("open from LSN 42");
    assert_eq!(segment_numbers(&wal), [3, 4]);
    assert_eq!(wal.recovery_report().segments_retired, 1);
    let got: Vec<_> = wal.read_from(43).collect::<walmdb::Result<_>>().unwrap();
    assert_records(&got, &records[42..], 43, "read from LSN 43");
}

/// Spec 7: a copy of a segment under a higher number is corruption.
#[test]
fn a_duplicated_segment_under_a_higher_number_is_an_error() {
    let (_records, image) = four_segment_log();
    for (src, dst) in [(2u64, 5u64), (4, 5), (1, 9)] {
        let mut img = image.clone();
        img.push((seg_name(dst), file(&image, &seg_name(src)).clone()));
        for mode in MODES {
            let ctx = format!("copy of segment {src} as segment {dst}, {mode:?}");
            expect_damage_error(open(&restore(&img), cfg_mode(mode)), &ctx);
        }
    }
}

/// Spec 7: a copy of a segment under a lower number than the oldest is an error when
/// opening without `from_lsn`.
#[test]
fn a_duplicated_segment_under_a_lower_number_is_an_error() {
    let (_records, image) = four_segment_log();
    for src in [2u64, 1] {
        let mut img = image.clone();
        img.push((seg_name(0), file(&image, &seg_name(src)).clone()));
        let fs = restore(&img);
        let r = open(&fs, cfg());
        let opened = r
            .as_ref()
            .ok()
            .map(|w| (segment_numbers(w), w.recovery_report().clone()));
        let ctx = format!("copy of segment {src} as segment 0: {opened:?}");
        expect_damage_error(r, &ctx);
        assert!(
            fs.read_file(&seg_path(1)).is_some(),
            "{ctx}: segment 1 was retired"
        );
    }
}

/// Spec 7: the same copy wholly below `from_lsn` is retired.
#[test]
fn a_duplicated_segment_below_from_lsn_is_retired() {
    let (records, image) = four_segment_log();
    let mut img = image.clone();
    img.push((seg_name(0), file(&image, &seg_name(1)).clone()));
    let fs = restore(&img);
    let wal = open_from(&fs, cfg(), Some(21)).expect("open from LSN 21");
    assert_eq!(segment_numbers(&wal), [2, 3, 4]);
    assert_eq!(wal.recovery_report().segments_retired, 2);
    let got: Vec<_> = wal.read_from(22).collect::<walmdb::Result<_>>().unwrap();
    assert_records(&got, &records[21..], 22, "read from LSN 22");
}

/// Spec 7: segments out of order, by file swap (names disagree with headers) or with
/// consistent headers whose LSNs go backwards.
#[test]
fn out_of_order_segments_are_an_error() {
    let (_records, image) = four_segment_log();
    let (s2, s3) = (
        file(&image, &seg_name(2)).clone(),
        file(&image, &seg_name(3)).clone(),
    );

    let mut swapped = image.clone();
    *file_mut(&mut swapped, &seg_name(2)) = s3.clone();
    *file_mut(&mut swapped, &seg_name(3)) = s2.clone();
    for mode in MODES {
        let r = open(&restore(&swapped), cfg_mode(mode));
        expect_corruption(r, &format!("files of segments 2 and 3 swapped, {mode:?}"));
    }

    let mut renumbered = swapped.clone();
    rewrite_seg_header(file_mut(&mut renumbered, &seg_name(2)), 2, 43);
    rewrite_seg_header(file_mut(&mut renumbered, &seg_name(3)), 3, 22);
    for mode in MODES {
        let r = open(&restore(&renumbered), cfg_mode(mode));
        expect_sequence_error(
            r,
            &format!("segments 2 and 3 renumbered out of LSN order, {mode:?}"),
        );
    }
}

/// Spec 7: an LSN gap between segments is an error, unless wholly below `from_lsn`.
#[test]
fn an_lsn_gap_between_segments_is_an_error() {
    let (records, image) = four_segment_log();
    let mut img = image.clone();
    shift_lsns(file_mut(&mut img, &seg_name(3)), 5);
    shift_lsns(file_mut(&mut img, &seg_name(4)), 5);
    assert_eq!(frames(file(&img, &seg_name(3))).len(), 21);
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        expect_damage_error(
            open(&restore(&img), cfg_mode(mode)),
            &format!("gap 43..=47, {mode:?}"),
        );
    }
    // CutAtFirstDamage stops before the first damage wherever it is: an error, or the prefix.
    if let Ok(wal) = open(&restore(&img), cfg_mode(RecoveryMode::CutAtFirstDamage)) {
        assert_records(
            &read_all(&wal),
            &records[..42],
            1,
            "gap 43..=47, CutAtFirstDamage",
        );
    }

    let fs = restore(&img);
    let wal = open_from(&fs, cfg(), Some(47)).expect("open from LSN 47, above the gap");
    assert_eq!(segment_numbers(&wal), [3, 4]);
    assert_eq!(wal.recovery_report().segments_retired, 2);
    let got: Vec<_> = wal.read_from(48).collect::<walmdb::Result<_>>().unwrap();
    assert_records(&got, &records[42..], 48, "read from LSN 48");
    assert_eq!(wal.commit(rec(99, 1)).unwrap(), 76);
}

/// A segment written by a newer format version is refused with `UnsupportedVersion`, never
/// taken for damage or skipped.
#[test]
fn a_newer_format_version_is_refused() {
    let (_records, image) = four_segment_log();
    for seg in [1u64, 2, 4] {
        let mut img = image.clone();
        let data = file_mut(&mut img, &seg_name(seg));
        data[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let (no, first) = {
            let h = parse_seg_header(&image.iter().find(|(n, _)| *n == seg_name(seg)).unwrap().1)
                .unwrap();
            (h.segment_no, h.first_lsn)
        };
        rewrite_seg_header(data, no, first); // valid CRC over the new version
        for mode in MODES {
            match open(&restore(&img), cfg_mode(mode)) {
                Err(Error::UnsupportedVersion {
                    found,
                    supported: FORMAT_VERSION,
                    ..
                }) if found == FORMAT_VERSION + 1 => {}
                Err(e) => panic!("segment {seg} at a newer version, {mode:?}: {e:?}"),
                Ok(_) => panic!("segment {seg} at a newer version, {mode:?}: opened"),
            }
        }
    }
}
