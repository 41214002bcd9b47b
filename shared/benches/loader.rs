//! `make bench-loader`: prefetcher throughput with a consumer that does nothing, for
//!
//! - the STL-10 recipe: 96 px shards → RandomResizedCrop → 224 px RGB + multi-block masks on
//!   the 14×14 grid of 16 px patches, batch 64, on synthetic STL-sized shards;
//! - the Fashion-MNIST demo recipe: real 28 px grey shards → RandomResizedCrop → 28 px + masks
//!   on the 7×7 grid of 4 px patches, batch 128;
//!
//! each with 1 and 2 worker threads, and beside it the physical reference: allocating and
//! copying the same output bytes, on one core. `BENCH_LOADER_IMAGES` sets the STL-sized set
//! (default 6,400 images).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use jepa_ingest::fashion_mnist::{FashionMnist, installed_dir};
use jepa_ingest::{IngestOptions, Progress, ingest};
use jepa_shared::rng::KeyedRng;
use jepa_shared::{
    Dataset, DatasetWriter, ImageRecord, Loader, LoaderConfig, LoaderPosition, LoaderSettings, MaskConfig,
    MultiBlockMasks, ShardLayout, SourceInfo,
};

fn main() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch folder");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{cores} cores; the reader and sequencer threads share them with the workers");
    println!(
        "{:<44} {:>7} {:>8} {:>8} {:>10} {:>14}",
        "recipe", "workers", "images", "seconds", "images/s", "images/s/worker"
    );

    let images: usize = std::env::var("BENCH_LOADER_IMAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(6_400);
    let stl10 = write_stl10_sized(&scratch.path().join("stl10-sized"), images);
    for workers in [1, 2] {
        let config = recipe(64, workers, 224, 3);
        bench_loader("stl10 96px -> RRC -> 224px RGB, 14x14 masks", &stl10, &config, 16);
    }
    bench_copy("  plain copy of the same output bytes", 3 * 224 * 224, images);

    let fashion_dir = installed_dir().expect("Fashion-MNIST");
    let fashion = ingest_fashion(&fashion_dir, &scratch.path().join("fashion-mnist"));
    for workers in [1, 2] {
        let config = recipe(128, workers, 28, 1);
        bench_loader("fashion 28px -> RRC -> 28px grey, 7x7 masks", &fashion, &config, 4);
    }
    bench_copy("  plain copy of the same output bytes", 28 * 28, 60_000);
}

/// One epoch of `batch_size` images of `image_size_px` with `channels`, RandomResizedCrop on.
fn recipe(batch_size: usize, workers: usize, image_size_px: u32, channels: u8) -> LoaderConfig {
    let settings = LoaderSettings { batch_size, workers, verify_checksums: false, ..LoaderSettings::default() };
    LoaderConfig { epochs: Some(1), ..LoaderConfig::new(settings, image_size_px, channels, 0) }
}

fn bench_loader(label: &str, dataset: &Dataset, config: &LoaderConfig, patch_size_px: u32) {
    let grid = (config.image_size_px / patch_size_px) as usize;
    let masks = Arc::new(MultiBlockMasks::new(MaskConfig::default(), grid, grid).expect("paper masks fit"));
    let started = Instant::now();
    let mut loader = Loader::start(dataset, config, masks, LoaderPosition::default()).expect("loader");
    let mut images = 0;
    while let Some(batch) = loader.next_blocking() {
        images += std::hint::black_box(batch.expect("batch")).len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = images as f64 / seconds;
    println!(
        "{label:<44} {:>7} {images:>8} {seconds:>8.2} {rate:>10.0} {:>14.0}",
        config.settings.workers,
        rate / config.settings.workers as f64
    );
}

/// Allocates a batch-sized buffer per 64 images and copies `image_bytes` per image into it,
/// for at least `images` images and half a second.
fn bench_copy(label: &str, image_bytes: usize, images: usize) {
    let source = vec![7u8; image_bytes * 64];
    let started = Instant::now();
    let mut copied = 0;
    while copied < images || started.elapsed().as_secs_f64() < 0.5 {
        let mut batch = Vec::with_capacity(source.len());
        batch.extend_from_slice(&source);
        std::hint::black_box(&batch);
        copied += 64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = copied as f64 / seconds;
    println!("{label:<44} {:>7} {copied:>8} {seconds:>8.2} {rate:>10.0} {rate:>14.0}", 1);
}

/// `count` 96×96 RGB images of noise, laid out as the STL-10 ingest writes them.
fn write_stl10_sized(root: &Path, count: usize) -> Dataset {
    let mut writer = DatasetWriter::create(root, ShardLayout::default()).expect("dataset writer");
    let mut split = writer.split("train").expect("split");
    let mut rng = KeyedRng::new(&[96]);
    for id in 0..count as u64 {
        let pixels = (0..96 * 96 * 3).map(|_| rng.next_u64() as u8).collect();
        let record = ImageRecord { id, label: Some((id % 10) as i16), height: 96, width: 96, channels: 3, pixels };
        split.push(&record).expect("push");
    }
    split.finish(None, 0).expect("finish");
    let source = SourceInfo {
        kind: "synthetic".into(),
        location: "bench".into(),
        sha256: "0".repeat(64),
        options: BTreeMap::new(),
    };
    writer.commit("stl10-sized", source, Vec::new()).expect("commit");
    Dataset::open(root).expect("open")
}

fn ingest_fashion(source_dir: &Path, out: &Path) -> Dataset {
    let source = FashionMnist::open(source_dir).expect("Fashion-MNIST (apt-get install dataset-fashion-mnist)");
    let options = IngestOptions { out: out.to_path_buf(), layout: ShardLayout::default(), force: true };
    ingest(&source, &options, &Progress::hidden()).expect("ingest");
    Dataset::open(out).expect("open")
}
