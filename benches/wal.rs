//! Criterion micro-benchmarks of the WAL's CPU-side costs: record encoding, CRC, frame
//! building (with and without zstd) and the cost of queueing a commit.
//!
//! Run with `cargo bench --bench wal`. Results and their interpretation: `docs/benchmarks.md`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use walmdb::internals::record::{frame_crc, FrameBuilder};
use walmdb::{Durability, EncodedRecord, Wal, WalConfig};

#[allow(dead_code)] // this benchmark uses the workload, not the raw baseline
mod common;
use common::{txn, Rng};

/// Records in one frame for the frame-building benchmarks.
const GROUP: usize = 64;
/// Commits queued per timed batch in the `submit` benchmark.
const SUBMIT_BATCH: u64 = 1024;

fn group(rng: &mut Rng) -> Vec<EncodedRecord> {
    (0..GROUP).map(|_| txn(rng).encode()).collect()
}

/// Builds one frame of `records`; returns its length in `out`.
fn build_frame(
    fb: &mut FrameBuilder,
    out: &mut Vec<u8>,
    records: &[EncodedRecord],
    compress: Option<(usize, i32)>,
) -> usize {
    out.clear();
    for r in records {
        fb.push(r);
    }
    fb.finish(out, 0x5eed, 1, 0, compress);
    out.len()
}

/// A directory on the same disk as the build (`target/bench-tmp`), not `/tmp`.
fn bench_dir() -> PathBuf {
    let base = std::env::current_dir()
        .expect("current directory")
        .join("target")
        .join("bench-tmp");
    std::fs::create_dir_all(&base).expect("create target/bench-tmp");
    base
}

fn encode(c: &mut Criterion) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let record = txn(&mut rng);
    let len = record.encode().payload().len();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("txn_1op_16B_key_100B_value", |b| {
        b.iter(|| black_box(&record).encode())
    });
    g.finish();
}

fn crc(c: &mut Criterion) {
    let mut rng = Rng(42);
    let mut g = c.benchmark_group("crc32fast");
    for size in [4usize << 10, 64 << 10] {
        let mut buf = vec![0u8; size];
        rng.fill(&mut buf);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("{}KiB", size >> 10), |b| {
            b.iter(|| crc32fast::hash(black_box(&buf)))
        });
    }
    g.finish();
}

fn frame(c: &mut Criterion) {
    let mut rng = Rng(7);
    let records = group(&mut rng);
    let mut fb = FrameBuilder::new();
    let mut out = Vec::new();

    // The compression ratio of a realistic group, printed once.
    let raw = build_frame(&mut fb, &mut out, &records, None);
    let zst = build_frame(&mut fb, &mut out, &records, Some((4096, 1)));
    assert_eq!(
        frame_crc(&out),
        u32::from_le_bytes(out[4..8].try_into().unwrap())
    );
    let body_raw = raw - 40;
    let body_zst = zst - 40;
    eprintln!(
        "frame of {GROUP} 1-op txns (16 B random key, 100 B value half random / half text): \
         body {body_raw} B raw, {body_zst} B zstd level 1 -> ratio {:.2}x \
         (whole frame {raw} B -> {zst} B, {:.2}x)",
        body_raw as f64 / body_zst as f64,
        raw as f64 / zst as f64,
    );

    let mut g = c.benchmark_group("frame_64_txns");
    g.throughput(Throughput::Bytes(body_raw as u64));
    g.bench_function("push_finish_uncompressed", |b| {
        b.iter(|| build_frame(&mut fb, &mut out, black_box(&records), None))
    });
    g.bench_function("push_finish_zstd1", |b| {
        b.iter(|| build_frame(&mut fb, &mut out, black_box(&records), Some((4096, 1))))
    });
    // What `FrameBuilder::finish` pays for zstd: `zstd::bulk::compress` makes a fresh
    // compression context per call; a reused `Compressor` shows how much of that is setup.
    build_frame(&mut fb, &mut out, &records, None);
    let body = out[40..].to_vec();
    g.bench_function("zstd1_body_fresh_context", |b| {
        b.iter(|| zstd::bulk::compress(black_box(&body), 1).expect("compress"))
    });
    let mut compressor = zstd::bulk::Compressor::new(1).expect("compressor");
    g.bench_function("zstd1_body_reused_context", |b| {
        b.iter(|| compressor.compress(black_box(&body)).expect("compress"))
    });
    g.finish();
}

fn submit(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("walmdb-bench-submit-")
        .tempdir_in(bench_dir())
        .expect("tempdir");
    let cfg = WalConfig {
        durability: Durability::None,
        ..WalConfig::default()
    };
    let wal = Wal::open(dir.path(), cfg).expect("open the log");
    let mut rng = Rng(99);
    let template = txn(&mut rng).encode();

    let mut g = c.benchmark_group("wal_1_thread_durability_none");
    g.throughput(Throughput::Elements(1));
    // Only the `submit` calls are timed: records are cloned before, and the handles are
    // waited on after each batch of SUBMIT_BATCH, outside the timed region.
    g.bench_function("submit_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut handles = Vec::with_capacity(SUBMIT_BATCH as usize);
            while left > 0 {
                let n = left.min(SUBMIT_BATCH);
                let mut records: Vec<EncodedRecord> = (0..n).map(|_| template.clone()).collect();
                let start = Instant::now();
                for r in records.drain(..) {
                    handles.push(wal.submit(r, (), None).expect("submit"));
                }
                total += start.elapsed();
                for h in handles.drain(..) {
                    h.wait().expect("commit");
                }
                left -= n;
            }
            total
        })
    });
    // The round trip of one commit: submit, the flusher's write (no sync), the answer.
    g.bench_function("submit_and_wait", |b| {
        b.iter_batched(
            || template.clone(),
            |r| {
                wal.submit(r, (), None)
                    .expect("submit")
                    .wait()
                    .expect("commit")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let s = wal.stats();
    eprintln!(
        "submit bench: {} commits in {} groups ({:.1} per group), {} syncs, {} rotations",
        s.commits,
        s.groups,
        s.commits as f64 / s.groups.max(1) as f64,
        s.syncs,
        s.rotations
    );
    wal.close().expect("close");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    targets = encode, crc, frame, submit
}
criterion_main!(benches);
