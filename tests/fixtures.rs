//! Format compatibility with checked-in damaged logs, and the same kinds of damage over the
//! engine.
//!
//! Part 1: `tests/fixtures/v1-corrupt/<case>/` holds damaged copies of the intact version-1
//! log of `tests/fixtures/v1/` (one kind of damage each; `README.md` there lists them with
//! the expected outcomes). Each case is copied to a temporary directory and opened with
//! `Wal::open` on the real file system in every `RecoveryMode`, and the exact outcome is
//! checked: the error variant with its segment and offset, or the exact records recovered.
//! The damaged files are built from the intact ones by `build_cases` below;
//! `corrupt_fixtures_match_the_generator` checks the checked-in bytes (and the README) still
//! equal what it builds, and the ignored `regenerate_corrupt_fixtures` rewrites them
//! (`cargo test --test fixtures -- --ignored regenerate`).
//!
//! Part 2: a small engine database (`Db`, 64 KiB segments) stopped by `simulate_crash` with
//! records in the log above LMDB's applied LSN; its log is damaged by bit flips in those
//! frames and by truncation of the last segment, and every reopen must fail with a typed
//! error or hold exactly the model state after a prefix of the commits that keeps every
//! commit before the damage.

mod common;
#[path = "common/engine.rs"]
mod engine_common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    frames, noise, parse_seg_header, rec, rewrite_seg_header, shift_lsns, Frame, Image,
    FRAME_HEADER, MODES, SEG, SEG_HEADER,
};
use engine_common as ec;
use walmdb::{
    Config, Db, EncodedRecord, Error, FsRef, Lsn, NoSequencer, RecoveryMode, StdFs, Wal, WalConfig,
};

// =======================================================================================
// Part 1: checked-in corrupt fixtures
// =======================================================================================

const V1_DIR: &str = common::FIXTURE_DIR;
const CORRUPT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-corrupt");

const SEG1: &str = "wal-00000001.log";
const SEG2: &str = "wal-00000002.log";
const SEG3: &str = "wal-00000003.log";

// The layout of the intact fixture, checked by `intact()`.
/// Where segment 1's frames end (LSNs 1..=69).
const SEG1_END: usize = 64_726;
/// The frame of LSN 30 in segment 1 (synced; valid frames synced past it follow).
const SEG1_LSN30: usize = 21_566;
/// Segment 2's frames: (offset, first LSN, records). LSN 70 was synced alone; the burst
/// 71..=110 was written without a sync between its frames (their `synced_lsn` is 70).
const SEG2_FRAMES: [(usize, Lsn, u16); 4] =
    [(64, 70, 1), (1143, 71, 2), (1293, 73, 14), (2103, 87, 24)];
/// Where segment 2's frames end.
const SEG2_END: usize = 3463;
/// The last LSN of the fixture.
const LAST: Lsn = 110;

/// The fixture's configuration (`common::fixture_cfg`) in recovery mode `mode`.
fn fixture_cfg(mode: RecoveryMode) -> WalConfig {
    WalConfig {
        recovery_mode: mode,
        ..common::fixture_cfg()
    }
}

/// What `tests/fixtures/v1` holds, LSN 1 on.
fn fixture_records() -> Vec<EncodedRecord> {
    common::fixture_records().0
}

/// The two intact segments, with their layout checked against the constants above.
struct Intact {
    seg1: Vec<u8>,
    seg2: Vec<u8>,
}

fn intact() -> Intact {
    let read =
        |n: &str| std::fs::read(Path::new(V1_DIR).join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    let (seg1, seg2) = (read(SEG1), read(SEG2));
    assert_eq!((seg1.len(), seg2.len()), (SEG as usize, SEG as usize));
    let f1 = frames(&seg1);
    assert_eq!(f1.len(), 69);
    assert_eq!(f1.last().unwrap().end(), SEG1_END);
    assert_eq!((f1[29].offset, f1[29].first_lsn), (SEG1_LSN30, 30));
    assert!(f1.iter().all(|f| f.synced_lsn == f.first_lsn - 1));
    let f2 = frames(&seg2);
    let layout: Vec<(usize, Lsn, u16)> = f2
        .iter()
        .map(|f| (f.offset, f.first_lsn, f.count))
        .collect();
    assert_eq!(layout, SEG2_FRAMES);
    let synced: Vec<Lsn> = f2.iter().map(|f| f.synced_lsn).collect();
    assert_eq!(synced, [69, 70, 70, 70]);
    assert_eq!(f2.last().unwrap().end(), SEG2_END);
    assert_eq!(f2.last().unwrap().last_lsn(), LAST);
    assert!(seg2[SEG2_END..].iter().all(|&b| b == 0));
    Intact { seg1, seg2 }
}

fn flip(data: &mut [u8], byte: usize, bit: u8) {
    data[byte] ^= 1 << bit;
}

/// A segment header with a valid CRC (`docs/wal-format.md`), followed by zeros up to the
/// segment size: a segment created by rotation before its first frame was written.
fn empty_segment(segment_no: u64, first_lsn: Lsn, salt: u32) -> Vec<u8> {
    let mut b = vec![0u8; SEG as usize];
    b[0..8].copy_from_slice(b"WALMDBLG");
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..16].copy_from_slice(&salt.to_le_bytes());
    b[32..40].copy_from_slice(&SEG.to_le_bytes());
    rewrite_seg_header(&mut b, segment_no, first_lsn);
    b
}

/// A cut reported by an open: `CutTail`'s segment, offset, frames and segments dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    segment: u64,
    offset: u64,
    frames_dropped: usize,
    segments_dropped: usize,
}

/// The exact outcome of opening a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Opens holding exactly the intact fixture's records `first..=last`, with `segments`
    /// live segments, `retired` segments retired, and `cut` reported (`None`: nothing cut).
    Open {
        first: Lsn,
        last: Lsn,
        segments: usize,
        retired: usize,
        cut: Option<Cut>,
    },
    Corruption {
        segment: u64,
        offset: u64,
    },
    TornTail {
        segment: u64,
        offset: u64,
    },
    /// `Error::SegmentSequence` whose reason contains this text.
    Sequence(&'static str),
    /// `Error::UnsupportedVersion { found, supported: 3 }` naming this file.
    Version {
        file: &'static str,
        found: u32,
    },
}

const fn opens(first: Lsn, last: Lsn, segments: usize) -> Want {
    Want::Open {
        first,
        last,
        segments,
        retired: 0,
        cut: None,
    }
}

const fn cut_to(first: Lsn, last: Lsn, segments: usize, cut: Cut) -> Want {
    Want::Open {
        first,
        last,
        segments,
        retired: 0,
        cut: Some(cut),
    }
}

const fn cut(segment: u64, offset: u64, frames_dropped: usize, segments_dropped: usize) -> Cut {
    Cut {
        segment,
        offset,
        frames_dropped,
        segments_dropped,
    }
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Want::Open {
                first,
                last,
                segments,
                retired,
                cut,
            } => {
                write!(f, "opens: LSNs {first}..={last}")?;
                if segments > 1 {
                    write!(f, ", {segments} segments")?;
                }
                if retired > 0 {
                    write!(f, ", {retired} retired")?;
                }
                match cut {
                    None => write!(f, ", nothing cut"),
                    Some(c) => {
                        write!(f, "; cut at segment {} offset {}", c.segment, c.offset)?;
                        if c.frames_dropped > 0 {
                            write!(f, ", {} later frames dropped", c.frames_dropped)?;
                        }
                        if c.segments_dropped > 0 {
                            write!(f, ", {} later segment(s) removed", c.segments_dropped)?;
                        }
                        Ok(())
                    }
                }
            }
            Want::Corruption { segment, offset } => {
                write!(f, "`Corruption {{ segment: {segment}, offset: {offset} }}`")
            }
            Want::TornTail { segment, offset } => {
                write!(f, "`TornTail {{ segment: {segment}, offset: {offset} }}`")
            }
            Want::Sequence(reason) => write!(f, "`SegmentSequence` (\"{reason}\")"),
            Want::Version { file, found } => write!(
                f,
                "`UnsupportedVersion {{ found: {found}, supported: 3 }}` ({file})"
            ),
        }
    }
}

/// One damaged log.
struct Case {
    name: &'static str,
    damage: &'static str,
    /// Which rule of `docs/recovery.md` ("The algorithm") gives the outcome.
    rule: &'static str,
    build: fn(&Intact) -> Image,
    /// The outcome of `Wal::open` in `TolerateTornTail`, `Strict` and `CutAtFirstDamage` mode.
    modes: [Want; 3],
    /// Outcomes of `Wal::open_with(.., Some(from_lsn), ..)` in `TolerateTornTail` mode, as the
    /// engine opens its log (`from_lsn` = LMDB's applied LSN).
    from_lsn: Vec<(Lsn, Want)>,
}

/// Every case, in README order. The expected outcomes are `docs/recovery.md`'s rules applied
/// to the damage (the README spells out which rule gives each).
fn cases() -> Vec<Case> {
    let torn = [
        cut_to(70, 86, 1, cut(2, 2103, 0, 0)),
        Want::TornTail {
            segment: 2,
            offset: 2103,
        },
        cut_to(70, 86, 1, cut(2, 2103, 0, 0)),
    ];
    let corrupt_seg2_first = Want::Corruption {
        segment: 2,
        offset: 64,
    };
    vec![
        Case {
            name: "torn-tail",
            damage: "segment 2 alone, truncated 680 bytes into its last frame (offset 2103, \
                     LSNs 87..=110, 1360 bytes): the file ends at 2783",
            rule: "step 8: the last frame's body runs past the file's end (damaged); step \
                     10: no valid frame after it, a torn tail",
            build: |i| vec![(SEG2.into(), i.seg2[..2103 + 680].to_vec())],
            modes: torn,
            from_lsn: vec![],
        },
        Case {
            name: "last-frame-bit-flip",
            damage: "segment 2 alone, one body bit of its last frame flipped (byte 2643, bit 3)",
            rule: "step 8: the CRC fails (damaged); step 10: no valid frame after it, a \
                     torn tail",
            build: |i| {
                let mut s2 = i.seg2.clone();
                flip(&mut s2, 2103 + 40 + 500, 3);
                vec![(SEG2.into(), s2)]
            },
            modes: torn,
            from_lsn: vec![],
        },
        Case {
            name: "unsynced-frame-bit-flip",
            damage: "segment 2 alone, one body bit of the frame at 1143 (LSNs 71-72) flipped \
                     (byte 1233, bit 5); the two valid frames after it have synced_lsn 70, \
                     not past the damage: a torn tail",
            rule: "step 8: the CRC fails; step 10: the evidence (2 frames) has synced_lsn \
                     70, not past good_last 70: a torn tail",
            build: |i| {
                let mut s2 = i.seg2.clone();
                flip(&mut s2, 1143 + 40 + 50, 5);
                vec![(SEG2.into(), s2)]
            },
            modes: [
                cut_to(70, 70, 1, cut(2, 1143, 2, 0)),
                Want::TornTail {
                    segment: 2,
                    offset: 1143,
                },
                cut_to(70, 70, 1, cut(2, 1143, 2, 0)),
            ],
            from_lsn: vec![],
        },
        Case {
            name: "earlier-frame-bit-flip",
            damage: "one body bit of segment 1's frame of LSN 30 (offset 21566) flipped (byte \
                     21906, bit 1); 39 later frames of segment 1 and all of segment 2, synced \
                     past it, follow: corruption",
            rule: "step 8: the CRC fails; step 10: the evidence (43 frames) has synced_lsn \
                     30..=70 > good_last 29: corruption",
            build: |i| {
                let mut s1 = i.seg1.clone();
                flip(&mut s1, SEG1_LSN30 + 40 + 300, 1);
                vec![(SEG1.into(), s1), (SEG2.into(), i.seg2.clone())]
            },
            modes: [
                Want::Corruption {
                    segment: 1,
                    offset: 21566,
                },
                Want::Corruption {
                    segment: 1,
                    offset: 21566,
                },
                cut_to(1, 29, 1, cut(1, 21566, 43, 1)),
            ],
            from_lsn: vec![],
        },
        Case {
            name: "zeros-after-tail",
            damage: "segment 2 alone, its file ending 39 zero bytes after the last frame (less \
                     than a frame header): a clean end",
            rule: "step 8: fewer than 40 bytes left, the run ends clean; no frame after it",
            build: |i| vec![(SEG2.into(), i.seg2[..SEG2_END + 39].to_vec())],
            modes: [opens(70, LAST, 1); 3],
            from_lsn: vec![],
        },
        Case {
            name: "garbage-after-tail",
            damage: "segment 2 alone, 4096 bytes of noise (without the segment's salt) right \
                     after the last frame, zeros after that: a clean end",
            rule: "step 8: a salt that is not the segment's, the run ends clean; the probe \
                     finds no valid frame",
            build: |i| {
                let salt = parse_seg_header(&i.seg2).unwrap().salt.to_le_bytes();
                let garbage = (0u64..)
                    .map(|seed| noise(0x6A7B_A6E0 + seed, 4096))
                    .find(|g| !g.windows(4).any(|w| w == salt))
                    .unwrap();
                let mut s2 = i.seg2.clone();
                s2[SEG2_END..SEG2_END + 4096].copy_from_slice(&garbage);
                vec![(SEG2.into(), s2)]
            },
            modes: [opens(70, LAST, 1); 3],
            from_lsn: vec![],
        },
        Case {
            name: "segment-1-header-damaged",
            damage: "one bit of segment 1's header flipped (byte 20, bit 0; the CRC no longer \
                     matches); segment 2 intact",
            rule: "`from_lsn` section: without `from_lsn` the oldest segment's header must \
                     be intact (`Corruption` at offset 0); step 5 with one",
            build: |i| {
                let mut s1 = i.seg1.clone();
                flip(&mut s1, 20, 0);
                vec![(SEG1.into(), s1), (SEG2.into(), i.seg2.clone())]
            },
            modes: [Want::Corruption {
                segment: 1,
                offset: 0,
            }; 3],
            from_lsn: vec![
                (
                    69,
                    Want::Open {
                        first: 70,
                        last: LAST,
                        segments: 1,
                        retired: 1,
                        cut: None,
                    },
                ),
                (68, Want::Sequence("LSN gap")),
            ],
        },
        Case {
            name: "segment-2-header-damaged",
            damage: "one bit of segment 2's header flipped (byte 28, bit 6; the CRC no longer \
                     matches); segment 1 intact",
            rule: "step 7: every header from the start segment on must be valid, else \
                     `Corruption` at offset 0",
            build: |i| {
                let mut s2 = i.seg2.clone();
                flip(&mut s2, 28, 6);
                vec![(SEG1.into(), i.seg1.clone()), (SEG2.into(), s2)]
            },
            modes: [Want::Corruption {
                segment: 2,
                offset: 0,
            }; 3],
            from_lsn: vec![(
                LAST,
                Want::Corruption {
                    segment: 2,
                    offset: 0,
                },
            )],
        },
        Case {
            name: "missing-segment-1",
            damage: "segment 1 missing, segment 2 intact (what a checkpoint that retired \
                     segment 1 leaves)",
            rule: "`from_lsn` section: without `from_lsn` the log starts at its oldest \
                     segment; step 5 with one",
            build: |i| vec![(SEG2.into(), i.seg2.clone())],
            modes: [opens(70, LAST, 1); 3],
            from_lsn: vec![(0, Want::Sequence("LSN gap")), (69, opens(70, LAST, 1))],
        },
        Case {
            name: "missing-middle-segment",
            damage: "segment 2 missing between segment 1 and a segment 3 (a valid empty \
                     segment, first LSN 111, as rotation creates it)",
            rule: "step 7: segment numbers must be consecutive",
            build: |i| {
                vec![
                    (SEG1.into(), i.seg1.clone()),
                    (SEG3.into(), empty_segment(3, LAST + 1, 0x5EED_0003)),
                ]
            },
            modes: [Want::Sequence("segment 2 is missing"); 3],
            from_lsn: vec![],
        },
        Case {
            name: "duplicate-segment-name",
            damage: "segment 2 twice, as wal-00000002.log and wal-2.log (both name segment 2)",
            rule: "step 4: two files with the same number",
            build: |i| {
                vec![
                    (SEG2.into(), i.seg2.clone()),
                    ("wal-2.log".into(), i.seg2.clone()),
                ]
            },
            modes: [Want::Sequence("segment 2 appears twice"); 3],
            from_lsn: vec![],
        },
        Case {
            name: "duplicate-segment-copy",
            damage: "a copy of segment 2 as wal-00000003.log (its header names segment 2)",
            rule: "step 3: the header's `segment_no` must match the name (noted); step 7: \
                     `Corruption` at offset 0",
            build: |i| vec![(SEG2.into(), i.seg2.clone()), (SEG3.into(), i.seg2.clone())],
            modes: [Want::Corruption {
                segment: 3,
                offset: 0,
            }; 3],
            from_lsn: vec![],
        },
        Case {
            name: "length-0xffffffff",
            damage: "the len field of segment 2's first frame (offset 64, LSN 70) set to \
                     0xFFFFFFFF; the valid frames after it have synced_lsn 70, past the damage",
            rule: "step 8: the plausibility checks fail, before any allocation (damaged); \
                     step 10: the evidence (3 frames) has synced_lsn 70 > good_last 69: \
                     corruption",
            build: |i| {
                let mut s2 = i.seg2.clone();
                s2[64..68].copy_from_slice(&[0xFF; 4]);
                vec![(SEG1.into(), i.seg1.clone()), (SEG2.into(), s2)]
            },
            modes: [
                corrupt_seg2_first,
                corrupt_seg2_first,
                cut_to(1, 69, 2, cut(2, 64, 3, 0)),
            ],
            from_lsn: vec![],
        },
        Case {
            name: "newer-version",
            damage: "segment 2's header at format version 5 (CRC recomputed); segment 1 intact",
            rule: "step 3: a version this build does not read (it reads 1 to 4) fails at \
                   once, whichever segment",
            build: |i| {
                let mut s2 = i.seg2.clone();
                s2[8..12].copy_from_slice(&5u32.to_le_bytes());
                rewrite_seg_header(&mut s2, 2, 70);
                vec![(SEG1.into(), i.seg1.clone()), (SEG2.into(), s2)]
            },
            modes: [Want::Version {
                file: SEG2,
                found: 5,
            }; 3],
            from_lsn: vec![],
        },
        Case {
            name: "lsn-gap",
            damage: "every LSN of segment 2 (header, frames' first and synced LSNs) raised by \
                     5, CRCs recomputed: LSNs 70..=74 are missing, and segment 2's frames \
                     (synced_lsn 74, 75) claim they were durable",
            rule: "step 9: segment 2 does not start at LSN 70; step 10: the evidence (its 4 \
                     frames) has synced_lsn 74, 75 > good_last 69: corruption",
            build: |i| {
                let mut s2 = i.seg2.clone();
                shift_lsns(&mut s2, 5);
                vec![(SEG1.into(), i.seg1.clone()), (SEG2.into(), s2)]
            },
            modes: [
                Want::Corruption {
                    segment: 1,
                    offset: SEG1_END as u64,
                },
                Want::Corruption {
                    segment: 1,
                    offset: SEG1_END as u64,
                },
                cut_to(1, 69, 1, cut(1, SEG1_END as u64, 4, 1)),
            ],
            from_lsn: vec![],
        },
        Case {
            name: "lsn-gap-empty-segment",
            damage: "segment 2 intact, then an empty segment 3 whose first LSN is 116 instead \
                     of 111 (no frame after the gap)",
            rule: "step 10, first table: the run ended clean, no evidence, the next segment \
                     starts at the wrong LSN",
            build: |i| {
                vec![
                    (SEG2.into(), i.seg2.clone()),
                    (SEG3.into(), empty_segment(3, LAST + 6, 0x5EED_0003)),
                ]
            },
            modes: [Want::Sequence("LSN gap"); 3],
            from_lsn: vec![],
        },
    ]
}

/// The damaged images of every case, by case name.
fn build_cases() -> Vec<(&'static str, Image)> {
    let intact = intact();
    cases()
        .iter()
        .map(|c| {
            let mut img = (c.build)(&intact);
            img.sort_by(|a, b| a.0.cmp(&b.0));
            (c.name, img)
        })
        .collect()
}

/// The files of a directory and their contents, sorted by name.
fn read_dir_image(dir: &Path) -> Image {
    let mut out: Image = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_image(dir: &Path, image: &Image) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, data) in image {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// The README of `tests/fixtures/v1-corrupt`, written from the case table.
fn readme() -> String {
    let intact = intact();
    let mut s = String::new();
    s.push_str(
        "# Damaged copies of the version-1 log\n\
         \n\
         Each directory holds a damaged copy of the intact log in `../v1/` (two 64 KiB \
         segments:\nsegment 1 holds LSNs 1..=69, each frame synced before the next; segment 2 \
         holds LSN 70, synced\nalone, then LSNs 71..=110 written as three frames with no sync \
         between them, so their\n`synced_lsn` is 70). Cases whose damage does not involve \
         segment 1 leave it out: opened\nwithout `from_lsn`, such a log starts at segment 2 \
         (LSN 70), as after a checkpoint retired\nsegment 1.\n\
         \n\
         `tests/fixtures.rs` copies each directory to a temporary one and opens it with \
         `Wal::open` on\nthe real file system (64 KiB segments, default compression) in each \
         `RecoveryMode`, and checks\nthe exact outcome: the error, or the records recovered \
         (equal, by LSN and payload, to the intact\nlog's) and the cut reported. Offsets are \
         byte offsets in the segment file. An open that\nsucceeds is followed by a commit and a \
         reopen (the commit takes the next LSN; nothing is cut\nagain); one that fails must \
         leave the files unchanged. The rules are those of\n`docs/recovery.md`: damage followed \
         by a valid frame whose `synced_lsn` reaches past it is\ncorruption, otherwise a torn \
         tail.\n\
         \n\
         The files (and this README) are written from the case table in `tests/fixtures.rs` \
         by\n`build_cases` and `readme`; `corrupt_fixtures_match_the_generator` fails if \
         they drift from it.\nTo rebuild them: `cargo test --test fixtures -- --ignored \
         regenerate`. \"= v1 ...\" marks a file\nidentical to that intact one. The good_last \
         and evidence of the rule column are those of\nstep 10.\n\
         \n\
         | case | files | damage | rule (`docs/recovery.md`, \"The algorithm\") | \
         `TolerateTornTail` (default) | `Strict` | `CutAtFirstDamage` |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (c, (_, img)) in cases().iter().zip(build_cases()) {
        let files: Vec<String> = img
            .iter()
            .map(|(n, d)| {
                let same = if *d == intact.seg1 {
                    format!(", = v1 {SEG1}")
                } else if *d == intact.seg2 {
                    format!(", = v1 {SEG2}")
                } else {
                    String::new()
                };
                format!("`{n}` ({} B{same})", d.len())
            })
            .collect();
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            c.name,
            files.join(", "),
            c.damage,
            c.rule,
            c.modes[0],
            c.modes[1],
            c.modes[2]
        ));
    }
    s.push_str(
        "\nThe same cases opened with `Wal::open_with(.., Some(from_lsn), ..)` (as the engine \
         opens its log,\nwith LMDB's applied LSN), `TolerateTornTail`:\n\
         \n\
         | case | `from_lsn` | outcome |\n\
         |---|--:|---|\n",
    );
    for c in cases() {
        for (lsn, want) in &c.from_lsn {
            s.push_str(&format!("| `{}` | {lsn} | {want} |\n", c.name));
        }
    }
    s
}

/// Opens a copy of `image` in `mode` (from `from_lsn` when given) and checks the outcome is
/// exactly `want`.
fn check_case(
    image: &Image,
    mode: RecoveryMode,
    from_lsn: Option<Lsn>,
    want: Want,
    records: &[EncodedRecord],
    ctx: &str,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    write_image(&dir, image);
    let open = |mode| match from_lsn {
        None => Wal::open(&dir, fixture_cfg(mode)),
        Some(lsn) => {
            let fs: FsRef = Arc::new(StdFs);
            Wal::open_with(fs, &dir, fixture_cfg(mode), Some(lsn), NoSequencer)
        }
    };
    let got = open(mode);
    match (want, got) {
        (
            Want::Open {
                first,
                last,
                segments,
                retired,
                cut,
            },
            Ok(wal),
        ) => {
            let rep = wal.recovery_report().clone();
            assert_eq!(
                (
                    rep.first_lsn,
                    rep.last_lsn,
                    rep.segments,
                    rep.segments_retired
                ),
                (first, last, segments, retired),
                "{ctx}: (first LSN, last LSN, segments, retired) in {rep:?}"
            );
            let got_cut = rep.cut.as_ref().map(|c| Cut {
                segment: c.segment,
                offset: c.offset,
                frames_dropped: c.frames_dropped,
                segments_dropped: c.segments_dropped,
            });
            assert_eq!(got_cut, cut, "{ctx}: the cut in {rep:?}");
            let got: Vec<_> = wal
                .read_from(first)
                .collect::<walmdb::Result<_>>()
                .unwrap_or_else(|e| panic!("{ctx}: read_from({first}): {e:?}"));
            let want_records = &records[first as usize - 1..last as usize];
            common::assert_records(&got, want_records, first, ctx);
            // The log goes on from there, and a reopen finds nothing more to cut.
            let extra = rec(9_000, 33);
            assert_eq!(
                wal.commit(extra.clone()).unwrap(),
                last + 1,
                "{ctx}: next LSN"
            );
            wal.close().unwrap();
            let wal = open(mode).unwrap_or_else(|e| panic!("{ctx}: reopen: {e:?}"));
            assert!(
                wal.recovery_report().cut.is_none(),
                "{ctx}: cut again on reopen"
            );
            let got: Vec<_> = wal.read_from(first).collect::<walmdb::Result<_>>().unwrap();
            let mut want_records = want_records.to_vec();
            want_records.push(extra);
            common::assert_records(&got, &want_records, first, &format!("{ctx}, reopened"));
        }
        (Want::Open { .. }, Err(e)) => panic!("{ctx}: expected {want}, got {e:?}"),
        (_, Ok(wal)) => panic!(
            "{ctx}: expected {want}, but the log opened: {:?}",
            wal.recovery_report()
        ),
        (_, Err(e)) => {
            let ok = match (want, &e) {
                (
                    Want::Corruption { segment, offset },
                    Error::Corruption {
                        segment: s,
                        offset: o,
                        ..
                    },
                ) => (segment, offset) == (*s, *o),
                (
                    Want::TornTail { segment, offset },
                    Error::TornTail {
                        segment: s,
                        offset: o,
                    },
                ) => (segment, offset) == (*s, *o),
                (Want::Sequence(text), Error::SegmentSequence { reason, .. }) => {
                    reason.contains(text)
                }
                (
                    Want::Version { file, found },
                    Error::UnsupportedVersion {
                        path,
                        found: f,
                        supported,
                    },
                ) => *f == found && *supported == walmdb::FORMAT_VERSION && path.ends_with(file),
                _ => false,
            };
            assert!(ok, "{ctx}: expected {want}, got {e:?}");
            // A refused open changes nothing: no cut, no rename, no removal.
            assert!(
                read_dir_image(&dir) == *image,
                "{ctx}: a refused open changed the files"
            );
        }
    }
}

/// Every checked-in case, opened in every mode (and from the listed `from_lsn`s), gives
/// exactly the outcome in the case table.
#[test]
fn corrupt_fixtures_open_as_documented() {
    let records = fixture_records();
    assert_eq!(records.len() as u64, LAST);
    let mut opens = 0;
    for c in cases() {
        let dir = Path::new(CORRUPT_DIR).join(c.name);
        let mut image = read_dir_image(&dir);
        assert!(!image.is_empty(), "{}: no files", dir.display());
        image.retain(|(n, _)| n.ends_with(".log"));
        for (mode, want) in MODES.into_iter().zip(c.modes) {
            let ctx = format!("{}, {mode:?}", c.name);
            check_case(&image, mode, None, want, &records, &ctx);
            opens += 1;
        }
        for &(lsn, want) in &c.from_lsn {
            let ctx = format!("{}, from_lsn {lsn}", c.name);
            check_case(
                &image,
                RecoveryMode::TolerateTornTail,
                Some(lsn),
                want,
                &records,
                &ctx,
            );
            opens += 1;
        }
    }
    eprintln!(
        "corrupt fixtures: {} cases, {opens} opens, every outcome as documented",
        cases().len()
    );
}

/// The checked-in damaged files, and the README's table, are exactly what the generator
/// builds from the intact fixture: they cannot drift silently.
#[test]
fn corrupt_fixtures_match_the_generator() {
    let built = build_cases();
    let mut dirs: Vec<String> = std::fs::read_dir(CORRUPT_DIR)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = built.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names, "case directories in {CORRUPT_DIR}");
    let mut bytes = 0;
    for (name, image) in &built {
        let on_disk = read_dir_image(&Path::new(CORRUPT_DIR).join(name));
        let got: Vec<(&str, usize)> = on_disk.iter().map(|(n, d)| (n.as_str(), d.len())).collect();
        let want: Vec<(&str, usize)> = image.iter().map(|(n, d)| (n.as_str(), d.len())).collect();
        assert_eq!(got, want, "{name}: files and sizes (regenerate?)");
        for ((n, d), (_, w)) in on_disk.iter().zip(image) {
            assert!(
                d == w,
                "{name}/{n} differs from what the generator builds (regenerate?)"
            );
            bytes += d.len();
        }
    }
    let readme_path = Path::new(CORRUPT_DIR).join("README.md");
    let on_disk = std::fs::read_to_string(&readme_path).unwrap();
    assert!(
        on_disk == readme(),
        "{} is stale (regenerate?)",
        readme_path.display()
    );
    eprintln!(
        "corrupt fixtures: {} cases, {bytes} bytes, as generated",
        built.len()
    );
}

/// Rewrites `tests/fixtures/v1-corrupt` from the intact fixture:
/// `cargo test --test fixtures -- --ignored regenerate`.
#[test]
#[ignore = "rewrites tests/fixtures/v1-corrupt; run on purpose"]
fn regenerate_corrupt_fixtures() {
    let root = Path::new(CORRUPT_DIR);
    if root.exists() {
        std::fs::remove_dir_all(root).unwrap();
    }
    for (name, image) in build_cases() {
        write_image(&root.join(name), &image);
    }
    std::fs::write(root.join("README.md"), readme()).unwrap();
    eprintln!("wrote {}", root.display());
}

/// The intact fixture the damaged ones are made from still reads back exactly.
#[test]
fn intact_v1_fixture_reads_back_unchanged() {
    intact();
    let tmp = tempfile::tempdir().unwrap();
    write_image(tmp.path(), &read_dir_image(Path::new(V1_DIR)));
    let wal = Wal::open(tmp.path(), fixture_cfg(RecoveryMode::Strict)).unwrap();
    assert!(wal.recovery_report().cut.is_none());
    common::assert_records(&common::read_all(&wal), &fixture_records(), 1, "intact v1");
}

// =======================================================================================
// Part 2: the same damage over the engine (LMDB plus log)
// =======================================================================================

/// The engine's log: 64 KiB segments, no background spare preparation.
fn engine_wal_cfg(mode: RecoveryMode) -> WalConfig {
    WalConfig {
        segment_bytes: SEG,
        max_record_bytes: 32 << 10,
        recovery_mode: mode,
        ..ec::wal_cfg()
    }
}

/// Building the database: LMDB applies only at the explicit checkpoint (a gather of an hour,
/// batches of a million operations), so the crash leaves LMDB's applied LSN exactly there.
fn engine_build_cfg() -> Config {
    Config::default()
        .wal(engine_wal_cfg(RecoveryMode::TolerateTornTail))
        .apply_max_ops(1 << 20)
        .apply_interval(Duration::from_secs(3600))
        .checkpoint_interval(Duration::from_secs(3600))
}

/// Reopening: replay in LMDB transactions of at most 3 operations (a transaction is never
/// split across them).
fn engine_open_cfg(mode: RecoveryMode) -> Config {
    Config::default().wal(engine_wal_cfg(mode)).apply_max_ops(3)
}

/// Where the trials' databases go: `WALMDB_FIXTURE_TMP`, else `/dev/shm` when it exists
/// (LMDB syncs every replay batch; on tmpfs that costs nothing), else the system's.
fn scratch_root() -> tempfile::TempDir {
    if let Some(dir) = std::env::var_os("WALMDB_FIXTURE_TMP") {
        return tempfile::tempdir_in(dir).unwrap();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(t) = tempfile::tempdir_in(shm) {
            return t;
        }
    }
    tempfile::tempdir().unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A frame of the crashed database's log.
#[derive(Debug, Clone, Copy)]
struct LogFrame {
    segment: u64,
    frame: Frame,
}

/// A database stopped by `simulate_crash` with records above LMDB's applied LSN.
struct Crashed {
    /// The database directory as the crash left it.
    base: PathBuf,
    /// Every acknowledged commit, in LSN order.
    commits: Vec<(Lsn, Vec<ec::Op>)>,
    /// LMDB's applied LSN at the crash (the checkpoint's).
    applied: Lsn,
    /// The live segments: (number, file name, bytes).
    segments: Vec<(u64, String, Vec<u8>)>,
    /// Every frame of the live segments, in log order.
    frames: Vec<LogFrame>,
    /// The model state after each commit from the applied LSN on: (LSN, contents).
    states: Vec<(Lsn, ec::Contents)>,
}

impl Crashed {
    /// The model state after every commit up to LSN `lsn`.
    fn state_at(&self, lsn: Lsn) -> Option<&ec::Contents> {
        self.states
            .iter()
            .rev()
            .find(|(l, _)| *l <= lsn)
            .map(|(_, c)| c)
    }

    fn last_lsn(&self) -> Lsn {
        self.commits.last().unwrap().0
    }

    fn segment(&self, no: u64) -> &(u64, String, Vec<u8>) {
        self.segments.iter().find(|s| s.0 == no).unwrap()
    }
}

/// Builds the database in `root/base`: phase A (large transactions, until the log is near
/// the end of its second segment), a checkpoint (LMDB applies and syncs it; segment 1 is
/// retired to a spare), then phase B (40 small transactions over the same keys, puts and
/// deletes, at mixed durability levels, the last 10 unsynced; they run into segment 3, the recycled spare whose
/// old frames lie past the tail), then `simulate_crash`.
fn build_crashed(root: &Path) -> Crashed {
    let base = root.join("base");
    let db = Db::open_with(&base, engine_build_cfg()).unwrap();
    let mut rng = ec::Rng::new(0xF1C5_2026);
    let mut commits = Vec::new();
    let commit = |commits: &mut Vec<(Lsn, Vec<ec::Op>)>, ops: Vec<ec::Op>, durability| {
        let mut t = db.write().unwrap();
        for op in &ops {
            op.run(&mut t).unwrap();
        }
        commits.push((t.commit_with(durability).unwrap(), ops));
    };
    let tables = ["a", "b", "c"];
    loop {
        let ops = (0..rng.between(2, 4))
            .map(|_| {
                let table = tables[rng.below(3)];
                let k = ec::key(rng.below(40));
                let len = rng.between(500, 1500);
                ec::Op::put(table, &k, &rng.bytes(len))
            })
            .collect();
        commit(&mut commits, ops, walmdb::Durability::group_commit());
        let segs = ec::wal_segments(&base);
        let (_, end, _) = ec::frames_end(&std::fs::read(segs.last().unwrap()).unwrap());
        if segs.len() >= 2 && end as u64 > SEG - 6000 {
            break;
        }
    }
    let applied = db.checkpoint().unwrap();
    assert_eq!(applied, commits.last().unwrap().0);
    for n in 0..40 {
        let ops = (0..rng.between(2, 6))
            .map(|_| {
                let table = tables[rng.below(3)];
                let k = ec::key(rng.below(40));
                if rng.percent(25) {
                    ec::Op::delete(table, &k)
                } else {
                    let len = rng.between(8, 200);
                    ec::Op::put(table, &k, &rng.bytes(len))
                }
            })
            .collect();
        // Mixed levels, then a burst of 10 unsynced commits at the end.
        let durability = match n % 4 {
            _ if n >= 30 => walmdb::Durability::None,
            0 => walmdb::Durability::EveryWrite,
            1 => walmdb::Durability::group_commit(),
            _ => walmdb::Durability::None,
        };
        commit(&mut commits, ops, durability);
    }
    db.simulate_crash();

    let mut segments = Vec::new();
    let mut all_frames = Vec::new();
    for path in ec::wal_segments(&base) {
        let bytes = std::fs::read(&path).unwrap();
        let no = parse_seg_header(&bytes).unwrap().segment_no;
        for f in frames(&bytes) {
            all_frames.push(LogFrame {
                segment: no,
                frame: f,
            });
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        segments.push((no, name, bytes));
    }
    let nos: Vec<u64> = segments.iter().map(|s| s.0).collect();
    assert_eq!(nos, [2, 3], "live segments after the crash");
    // Segment 3 is segment 1's file recycled: its old frames (another salt) lie past the tail.
    let (_, _, seg3) = &segments[1];
    let seg3_end = frames(seg3).last().unwrap().end();
    assert!(
        seg3[seg3_end..].iter().any(|&b| b != 0),
        "segment 3 is not a recycled file"
    );
    // The log holds every commit, in one LSN sequence.
    for w in all_frames.windows(2) {
        assert_eq!(w[1].frame.first_lsn, w[0].frame.last_lsn() + 1);
    }
    let last = commits.last().unwrap().0;
    assert_eq!(all_frames.last().unwrap().frame.last_lsn(), last);
    let mut model = ec::Contents::new();
    let mut states = Vec::new();
    for (lsn, ops) in &commits {
        ec::apply_ops(&mut model, ops);
        if *lsn >= applied {
            states.push((*lsn, model.clone()));
        }
    }
    Crashed {
        base,
        commits,
        applied,
        segments,
        frames: all_frames,
        states,
    }
}

/// What `docs/recovery.md` says opening the damaged database gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Opens holding the commits through `last`, with a cut at (segment, offset) or none.
    Opens {
        last: Lsn,
        cut: Option<(u64, u64)>,
    },
    Corruption {
        segment: u64,
        offset: u64,
    },
    TornTail {
        segment: u64,
        offset: u64,
    },
    /// `Error::SegmentSequence`.
    Sequence,
}

/// What a trial did.
#[derive(Debug, Default)]
struct Tally {
    tried: usize,
    corruption: usize,
    torn_tail_cut: usize,
    torn_tail_refused: usize,
    sequence: usize,
    clean: usize,
    other_error: usize,
    reopened: usize,
    /// Against the safety rule: an untyped error, a state that is no prefix of the commits,
    /// or a prefix missing a commit before the damage.
    wrong: Vec<String>,
    /// Safe, but not the outcome `docs/recovery.md` gives.
    undocumented: Vec<String>,
}

impl Tally {
    fn summary(&self) -> String {
        format!(
            "{} tried: {} Corruption, {} torn tails cut, {} TornTail, {} SegmentSequence, \
             {} clean ends, {} other typed errors; {} reopened after a commit; {} wrong, {} not \
             as documented",
            self.tried,
            self.corruption,
            self.torn_tail_cut,
            self.torn_tail_refused,
            self.sequence,
            self.clean,
            self.other_error,
            self.reopened,
            self.wrong.len(),
            self.undocumented.len()
        )
    }
}

/// Copies the crashed database to `dir` with `damaged` (file name, bytes) replacing a log
/// file, opens it in `mode` and checks the outcome against the rule (`required`: the last
/// LSN whose frame lies wholly before the damage; every commit through it must survive) and
/// against `expect`. With `reopen`, a database that opened takes one more commit, is closed
/// and reopened, and must hold that commit too with nothing cut again.
#[allow(clippy::too_many_arguments)]
fn engine_trial(
    c: &Crashed,
    dir: &Path,
    damaged: (&str, &[u8]),
    mode: RecoveryMode,
    required: Lsn,
    expect: Expect,
    reopen: bool,
    tally: &mut Tally,
    ctx: &str,
) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    copy_tree(&c.base, dir);
    std::fs::write(dir.join("wal").join(damaged.0), damaged.1).unwrap();
    tally.tried += 1;
    let r = Db::open_with(dir, engine_open_cfg(mode));
    let db = match r {
        Err(e) => {
            let got = match e {
                Error::Corruption {
                    segment, offset, ..
                } => {
                    tally.corruption += 1;
                    Expect::Corruption { segment, offset }
                }
                Error::TornTail { segment, offset } => {
                    tally.torn_tail_refused += 1;
                    Expect::TornTail { segment, offset }
                }
                Error::SegmentSequence { .. } => {
                    tally.sequence += 1;
                    Expect::Sequence
                }
                Error::Inconsistent { .. } => {
                    tally.other_error += 1;
                    tally
                        .undocumented
                        .push(format!("{ctx}: {e:?}, expected {expect:?}"));
                    return;
                }
                e => {
                    tally.wrong.push(format!("{ctx}: untyped error {e:?}"));
                    return;
                }
            };
            if got != expect {
                tally
                    .undocumented
                    .push(format!("{ctx}: {got:?}, expected {expect:?}"));
            }
            return;
        }
        Ok(db) => db,
    };
    let rep = db.recovery_report().clone();
    let state = ec::dump(&db);
    let last = rep.last_lsn;
    let cut = rep.wal.cut.as_ref().map(|c| (c.segment, c.offset));
    if cut.is_some() {
        tally.torn_tail_cut += 1;
    } else {
        tally.clean += 1;
    }
    if rep.applied_lsn_at_open != c.applied {
        tally.wrong.push(format!(
            "{ctx}: LMDB's applied LSN at open is {}, not {}",
            rep.applied_lsn_at_open, c.applied
        ));
    }
    if last < required || last > c.last_lsn() {
        tally.wrong.push(format!(
            "{ctx}: opened through LSN {last}; the damage is after LSN {required}"
        ));
    } else if c.state_at(last) != Some(&state) {
        let prefix = c.states.iter().find(|(_, s)| *s == state).map(|(l, _)| *l);
        tally.wrong.push(format!(
            "{ctx}: opened through LSN {last} with a state that is not the model's there \
             (it is the model's after LSN {prefix:?})"
        ));
    }
    let got = Expect::Opens { last, cut };
    if got != expect {
        tally
            .undocumented
            .push(format!("{ctx}: {got:?}, expected {expect:?}"));
    }
    if !reopen {
        db.simulate_crash();
        return;
    }
    // The engine goes on from the cut: a new commit gets the next LSN and survives a reopen.
    let extra = ec::Op::put("z", b"after-damage", ctx.as_bytes());
    let mut t = db.write().unwrap();
    extra.run(&mut t).unwrap();
    let lsn = t.commit().unwrap();
    if lsn != last + 1 {
        tally.wrong.push(format!(
            "{ctx}: the next commit got LSN {lsn}, not {}",
            last + 1
        ));
    }
    db.close().unwrap();
    let db = Db::open_with(dir, engine_open_cfg(mode))
        .unwrap_or_else(|e| panic!("{ctx}: reopen after a commit: {e:?}"));
    let mut want = c.state_at(last).cloned().unwrap_or_default();
    ec::apply_ops(&mut want, &[extra]);
    if ec::dump(&db) != want || db.recovery_report().wal.cut.is_some() {
        tally.wrong.push(format!(
            "{ctx}: after a commit and a reopen: cut {:?}, state as the model: {}",
            db.recovery_report().wal.cut,
            ec::dump(&db) == want
        ));
    }
    tally.reopened += 1;
    db.close().unwrap();
}

fn env_stride(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s: &usize| s >= 1)
        .unwrap_or(default)
}

/// The tallies of one sweep: `TolerateTornTail`, and the cases also opened in `Strict` and
/// `CutAtFirstDamage`.
#[derive(Debug, Default)]
struct Sweep {
    tolerate: Tally,
    strict: Tally,
    pit: Tally,
}

impl Sweep {
    fn check(&self, what: &str) {
        for t in [&self.tolerate, &self.strict, &self.pit] {
            assert!(
                t.wrong.is_empty(),
                "{what}: wrong outcomes:\n{}",
                t.wrong.join("\n")
            );
            assert!(
                t.undocumented.is_empty(),
                "{what}: outcomes not as docs/recovery.md gives:\n{}",
                t.undocumented.join("\n")
            );
        }
    }
}

/// One damaged log file and what each mode must give.
struct Damage<'a> {
    file: &'a str,
    bytes: Vec<u8>,
    required: Lsn,
    tolerate: Expect,
    strict: Expect,
    pit: Expect,
    ctx: String,
}

/// Opens `d` in `TolerateTornTail` mode (taking a commit and reopening when `reopen`), and in
/// the two other modes too when `all_modes`.
fn run_damage(
    c: &Crashed,
    dir: &Path,
    d: Damage<'_>,
    reopen: bool,
    all_modes: bool,
    s: &mut Sweep,
) {
    let file = (d.file, d.bytes.as_slice());
    let mode = RecoveryMode::TolerateTornTail;
    engine_trial(
        c,
        dir,
        file,
        mode,
        d.required,
        d.tolerate,
        reopen,
        &mut s.tolerate,
        &d.ctx,
    );
    if all_modes {
        let (mode, ctx) = (RecoveryMode::Strict, format!("{}, Strict", d.ctx));
        engine_trial(
            c,
            dir,
            file,
            mode,
            d.required,
            d.strict,
            false,
            &mut s.strict,
            &ctx,
        );
        let (mode, ctx) = (
            RecoveryMode::CutAtFirstDamage,
            format!("{}, CutAtFirstDamage", d.ctx),
        );
        engine_trial(
            c, dir, file, mode, d.required, d.pit, false, &mut s.pit, &ctx,
        );
    }
}

/// Flips 1 in `stride` of the bits of `which` frames (counted across them), expecting what
/// `docs/recovery.md` gives: damage at or below LMDB's applied LSN is `Corruption` in every
/// mode; above it, `Corruption` when a later valid frame was synced past the damage, else a
/// torn tail (cut; `TornTail` in `Strict`); `CutAtFirstDamage` cuts there. Every 5th case that
/// opens takes a commit and is reopened; every `modes_every`th is opened in every mode.
fn flip_frames(
    c: &Crashed,
    dir: &Path,
    which: &[usize],
    stride: usize,
    modes_every: usize,
    s: &mut Sweep,
) -> usize {
    let mut bit_no = 0usize;
    let mut sampled = 0usize;
    for &i in which {
        let LogFrame { segment, frame: f } = c.frames[i];
        let good_last = f.first_lsn - 1;
        let (segment_, offset) = (segment, f.offset as u64);
        let corruption = Expect::Corruption {
            segment: segment_,
            offset,
        };
        let cut = Expect::Opens {
            last: good_last,
            cut: Some((segment, offset)),
        };
        let synced_over = c.frames[i + 1..]
            .iter()
            .any(|later| later.frame.synced_lsn > good_last);
        let (required, tolerate, strict, pit) = if good_last < c.applied {
            (c.applied, corruption, corruption, corruption)
        } else if synced_over {
            (good_last, corruption, corruption, cut)
        } else {
            let torn = Expect::TornTail {
                segment: segment_,
                offset,
            };
            (good_last, cut, torn, cut)
        };
        let (_, name, bytes) = c.segment(segment);
        for bit in 0..f.total_len * 8 {
            bit_no += 1;
            if !(bit_no - 1).is_multiple_of(stride) {
                continue;
            }
            sampled += 1;
            let mut damaged = bytes.clone();
            flip(&mut damaged, f.offset + bit / 8, (bit % 8) as u8);
            let ctx = format!(
                "segment {segment} frame at {} (LSNs {}..={}) bit {bit}",
                f.offset,
                f.first_lsn,
                f.last_lsn()
            );
            let d = Damage {
                file: name,
                bytes: damaged,
                required,
                tolerate,
                strict,
                pit,
                ctx,
            };
            run_damage(
                c,
                dir,
                d,
                sampled.is_multiple_of(5),
                sampled.is_multiple_of(modes_every),
                s,
            );
        }
    }
    bit_no
}

/// The engine over a damaged log. A database with records above LMDB's applied LSN
/// (`build_crashed`) is copied and its log damaged: bit flips in every frame above the
/// applied LSN (1 bit in 31, counted across the frames; every bit with
/// `WALMDB_FIXTURE_FLIP_STRIDE=1`), bit flips in the frames at or below it and in the
/// segment headers (sampled more sparsely), and truncation of the last segment (every 11th
/// offset through its frames plus each frame's edges, coarsely beyond; every offset with
/// `WALMDB_FIXTURE_CUT_STRIDE=1`). Each copy is opened with `Db::open_with` in
/// `TolerateTornTail` mode (every 7th also in `Strict` and `CutAtFirstDamage`). The rule: the open
/// fails with a typed error, or holds exactly the model state after a prefix of the commits
/// (no partial transaction) that keeps every commit whose frame precedes the damage. The
/// outcome must also be exactly the one `docs/recovery.md` gives.
#[test]
fn engine_log_damage_keeps_a_prefix_or_refuses() {
    let started = Instant::now();
    let root = scratch_root();
    let c = build_crashed(root.path());
    let built = started.elapsed();
    let dir = root.path().join("trial");
    let (above, below): (Vec<usize>, Vec<usize>) =
        (0..c.frames.len()).partition(|&i| c.frames[i].frame.first_lsn > c.applied);
    assert!(
        above.len() >= 40,
        "{} frames above the applied LSN",
        above.len()
    );
    let above_bytes: usize = above.iter().map(|&i| c.frames[i].frame.total_len).sum();
    let below_bytes: usize = below.iter().map(|&i| c.frames[i].frame.total_len).sum();

    // The undamaged copy recovers everything.
    let mut undamaged = Sweep::default();
    let (last_seg, last_name, last_bytes) = c.segments.last().unwrap().clone();
    let all = Expect::Opens {
        last: c.last_lsn(),
        cut: None,
    };
    let d = Damage {
        file: &last_name,
        bytes: last_bytes.clone(),
        required: c.last_lsn(),
        tolerate: all,
        strict: all,
        pit: all,
        ctx: "undamaged".into(),
    };
    run_damage(&c, &dir, d, true, true, &mut undamaged);
    undamaged.check("undamaged");

    // Bit flips above and at or below the applied LSN.
    let flip_stride = env_stride("WALMDB_FIXTURE_FLIP_STRIDE", 31);
    let mut flips = Sweep::default();
    let above_bits = flip_frames(&c, &dir, &above, flip_stride, 7, &mut flips);
    let flips_done = started.elapsed();
    let below_stride = flip_stride * 35;
    let mut flips_below = Sweep::default();
    let below_bits = flip_frames(&c, &dir, &below, below_stride, 1, &mut flips_below);

    // Segment headers: segment 2 starts the log (it holds the applied LSN); segment 3 follows.
    let header_stride = flip_stride.div_ceil(4);
    let mut headers = Sweep::default();
    for (no, name, bytes) in &c.segments {
        // A damaged header is never a reason to start later; without segment 2 no valid
        // header starts at or before the first LSN needed: an LSN gap.
        let e = if *no == 2 {
            Expect::Sequence
        } else {
            Expect::Corruption {
                segment: *no,
                offset: 0,
            }
        };
        for bit in (0..SEG_HEADER * 8).step_by(header_stride) {
            let mut damaged = bytes.clone();
            flip(&mut damaged, bit / 8, (bit % 8) as u8);
            let d = Damage {
                file: name,
                bytes: damaged,
                required: c.last_lsn(),
                tolerate: e,
                strict: e,
                pit: e,
                ctx: format!("segment {no} header bit {bit}"),
            };
            run_damage(&c, &dir, d, false, bit % 3 == 0, &mut headers);
        }
    }
    let headers_done = started.elapsed();

    // Truncation of the last segment.
    let cut_stride = env_stride("WALMDB_FIXTURE_CUT_STRIDE", 11);
    let last_frames: Vec<Frame> = c
        .frames
        .iter()
        .filter(|f| f.segment == last_seg)
        .map(|f| f.frame)
        .collect();
    let seg_first = parse_seg_header(&last_bytes).unwrap().first_lsn;
    assert!(
        seg_first > c.applied + 1,
        "the last segment holds only unapplied commits"
    );
    let data_end = last_frames.last().unwrap().end();
    let mut offsets: Vec<usize> = vec![0, 1, SEG_HEADER - 1, SEG_HEADER, SEG_HEADER + 1];
    for f in &last_frames {
        for d in [0, 1, FRAME_HEADER - 1, FRAME_HEADER, FRAME_HEADER + 1] {
            offsets.push(f.offset + d);
        }
        offsets.extend([f.offset - 1, f.end() - 1]);
    }
    offsets.extend((0..=data_end + FRAME_HEADER).step_by(cut_stride));
    offsets.extend((data_end + FRAME_HEADER..last_bytes.len()).step_by(cut_stride * 373));
    offsets.push(last_bytes.len());
    offsets.sort_unstable();
    offsets.dedup();
    let mut cuts = Sweep::default();
    for (n, &at) in offsets.iter().enumerate() {
        let (required, tolerate, strict) = if at < SEG_HEADER {
            let e = Expect::Corruption {
                segment: last_seg,
                offset: 0,
            };
            (c.last_lsn(), e, e)
        } else {
            let last = last_frames
                .iter()
                .rfind(|f| f.end() <= at)
                .map_or(seg_first - 1, |f| f.last_lsn());
            // A frame whose header is whole but whose body is not: a torn tail. Less than a
            // header left is a clean end.
            let torn = last_frames
                .iter()
                .find(|f| f.offset + FRAME_HEADER <= at && at < f.end());
            let opens = Expect::Opens {
                last,
                cut: torn.map(|f| (last_seg, f.offset as u64)),
            };
            let strict = torn.map_or(opens, |f| Expect::TornTail {
                segment: last_seg,
                offset: f.offset as u64,
            });
            (last, opens, strict)
        };
        let d = Damage {
            file: &last_name,
            bytes: last_bytes[..at].to_vec(),
            required,
            tolerate,
            strict,
            pit: tolerate,
            ctx: format!("segment {last_seg} truncated at {at}"),
        };
        run_damage(&c, &dir, d, n % 5 == 0, n % 7 == 0, &mut cuts);
    }
    let elapsed = started.elapsed();

    eprintln!(
        "engine log damage: {} commits (LSNs 1..={}), LMDB applied through LSN {} at the \
         crash; {} frames ({above_bytes} bytes) above it in segments 2-3, {} ({below_bytes} \
         bytes) at or below it; built in {built:.1?}",
        c.commits.len(),
        c.last_lsn(),
        c.applied,
        above.len(),
        below.len(),
    );
    let modes = |what: &str, s: &Sweep| {
        eprintln!("  {what}, also in Strict: {}", s.strict.summary());
        eprintln!("  {what}, also in CutAtFirstDamage: {}", s.pit.summary());
    };
    eprintln!(
        "engine bit flips above the applied LSN (1 in {flip_stride} of {above_bits} bits; \
         WALMDB_FIXTURE_FLIP_STRIDE=1 for every bit), TolerateTornTail: {} ({:.1?})",
        flips.tolerate.summary(),
        flips_done - built
    );
    modes("every 7th", &flips);
    eprintln!(
        "engine bit flips at or below the applied LSN (1 in {below_stride} of {below_bits} \
         bits), TolerateTornTail: {}",
        flips_below.tolerate.summary()
    );
    modes("each", &flips_below);
    eprintln!(
        "engine segment header bit flips (1 in {header_stride} of 2 x 512 bits), \
         TolerateTornTail: {} ({:.1?} with the flips below)",
        headers.tolerate.summary(),
        headers_done - flips_done
    );
    modes("every 3rd", &headers);
    eprintln!(
        "engine truncation of segment {last_seg} ({} offsets of {}: 1 in {cut_stride} through \
         its frames plus each frame's edges, coarser beyond; WALMDB_FIXTURE_CUT_STRIDE=1 for \
         every offset through the frames), TolerateTornTail: {} ({:.1?})",
        offsets.len(),
        last_bytes.len(),
        cuts.tolerate.summary(),
        elapsed - headers_done
    );
    modes("every 7th", &cuts);
    eprintln!("engine log damage: {elapsed:.1?} in all");
    flips.check("bit flips above the applied LSN");
    flips_below.check("bit flips at or below the applied LSN");
    headers.check("segment header bit flips");
    cuts.check("truncation");
}
