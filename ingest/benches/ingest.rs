//! `make bench-ingest`: ingest throughput for real Fashion-MNIST and for a synthetic
//! STL-10-sized set, each beside the speed of plainly copying the same number of bytes
//! on the same disk (the physical ceiling for a write-once format).
//!
//! MB/s counts raw pixel bytes (what the shards carry) over wall time, fingerprinting
//! of the source included. `BENCH_STL10_UNLABELED` shrinks the unlabeled split (default
//! 100,000, the real size: ~3.1 GB of source and as much of shards).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use jepa_ingest::fashion_mnist::{FashionMnist, installed_dir};
use jepa_ingest::stl10::{IMAGE_BYTES, Stl10};
use jepa_ingest::{IngestOptions, Progress, Source, ingest};
use jepa_shared::ShardLayout;

fn main() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch folder");
    println!("scratch folder: {} (same disk as the build)", scratch.path().display());
    println!("{:<34} {:>10} {:>9} {:>10}", "what", "MB", "seconds", "MB/s");

    let fashion_dir = installed_dir().expect("Fashion-MNIST");
    let fashion = FashionMnist::open(&fashion_dir).expect("Fashion-MNIST (apt-get install dataset-fashion-mnist)");
    sync_disk();
    let fashion_bytes = bench_ingest("fashion-mnist ingest (70k, 28x28x1)", &fashion, &scratch.path().join("fashion"));
    bench_copy("plain copy, same bytes", fashion_bytes, scratch.path());

    let unlabeled: usize = std::env::var("BENCH_STL10_UNLABELED").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let stl10_dir = scratch.path().join("stl10-source");
    write_synthetic_stl10(&stl10_dir, 5_000, 8_000, unlabeled);
    let stl10 = Stl10::open(&stl10_dir).expect("synthetic STL-10");
    let label = format!("stl10-sized ingest ({}k, 96x96x3)", (13_000 + unlabeled) / 1000);
    sync_disk();
    let stl10_bytes = bench_ingest(&label, &stl10, &scratch.path().join("stl10"));
    std::fs::remove_dir_all(scratch.path().join("stl10")).ok();
    bench_copy("plain copy, same bytes", stl10_bytes, scratch.path());
}

/// Starts each measurement with no dirty pages of an earlier step still being flushed.
fn sync_disk() {
    let _ = std::process::Command::new("sync").status();
}

fn bench_ingest(label: &str, source: &dyn Source, out: &Path) -> u64 {
    let options = IngestOptions { out: out.to_path_buf(), layout: ShardLayout::default(), force: true };
    let report = ingest(source, &options, &Progress::hidden()).expect("ingest");
    row(label, report.pixel_bytes, report.elapsed.as_secs_f64());
    report.pixel_bytes
}

/// Writes `bytes` of incompressible data to a file, then times copying it through a
/// user-space buffer (as `cat a > b` does; `fs::copy` may clone extents instead) into a new
/// file plus fsync, the same durability the shard writer pays.
fn bench_copy(label: &str, bytes: u64, scratch: &Path) {
    let original = scratch.join("copy-source.bin");
    let copy = scratch.join("copy-target.bin");
    write_noise(&original, bytes);
    sync_disk();
    let started = Instant::now();
    let mut reader = std::fs::File::open(&original).expect("open copy source");
    let mut writer = std::fs::File::create(&copy).expect("create copy target");
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = std::io::Read::read(&mut reader, &mut buffer).expect("read");
        if read == 0 {
            break;
        }
        writer.write_all(&buffer[..read]).expect("write");
    }
    writer.sync_all().expect("fsync");
    row(label, bytes, started.elapsed().as_secs_f64());
    std::fs::remove_file(&original).ok();
    std::fs::remove_file(&copy).ok();
}

fn row(label: &str, bytes: u64, seconds: f64) {
    println!("{label:<34} {:>10.1} {seconds:>9.2} {:>10.0}", bytes as f64 / 1e6, bytes as f64 / 1e6 / seconds);
}

/// STL-10's file layout with noise pixels: natural images barely compress either, so
/// noise does not flatter the codec.
fn write_synthetic_stl10(dir: &Path, train: usize, test: usize, unlabeled: usize) {
    let binary = dir.join("stl10_binary");
    std::fs::create_dir_all(&binary).unwrap();
    write_noise(&binary.join("train_X.bin"), (train * IMAGE_BYTES) as u64);
    write_noise(&binary.join("test_X.bin"), (test * IMAGE_BYTES) as u64);
    if unlabeled > 0 {
        write_noise(&binary.join("unlabeled_X.bin"), (unlabeled * IMAGE_BYTES) as u64);
    }
    std::fs::write(binary.join("train_y.bin"), (0..train).map(|i| (i % 10) as u8 + 1).collect::<Vec<_>>()).unwrap();
    std::fs::write(binary.join("test_y.bin"), (0..test).map(|i| (i % 10) as u8 + 1).collect::<Vec<_>>()).unwrap();
}

fn write_noise(path: &Path, bytes: u64) {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ bytes;
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            // xorshift64*: fast, and incompressible enough for LZ4.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let value = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
        }
        let take = left.min(block.len() as u64) as usize;
        file.write_all(&block[..take]).unwrap();
        left -= take as u64;
    }
    file.flush().unwrap();
}
