//! Small shard datasets whose pixels say which image they belong to, for the loader tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jepa_shared::{
    Dataset, DatasetWriter, ImageRecord, MaskConfig, MaskSampler, MultiBlockMasks, ShardCodec, ShardLayout, SourceInfo,
};
use jepa_trainer::{Batch, CropConfig, Loader, LoaderConfig, LoaderPosition};

/// Fixture images are `SIDE × SIDE`.
pub const SIDE: usize = 16;

/// Pixel (row, col, channel) of image `id`: depends on all four, so a swapped image,
/// channel or axis shows up.
pub fn pixel(id: u64, row: usize, col: usize, channel: usize) -> u8 {
    ((id as usize * 31 + row * 7 + col * 3 + channel * 101) % 256) as u8
}

pub fn record(id: u64, channels: u8) -> ImageRecord {
    let mut pixels = Vec::with_capacity(SIDE * SIDE * channels as usize);
    for row in 0..SIDE {
        for col in 0..SIDE {
            for channel in 0..channels as usize {
                pixels.push(pixel(id, row, col, channel));
            }
        }
    }
    ImageRecord { id, label: Some((id % 10) as i16), height: SIDE as u16, width: SIDE as u16, channels, pixels }
}

/// A `train` split of `count` images in row groups of `rows_per_group`, files of
/// `groups_per_file` row groups.
pub fn write_dataset(root: &Path, count: u64, channels: u8, rows_per_group: usize, groups_per_file: usize) -> Dataset {
    let image_bytes = (SIDE * SIDE * channels as usize) as u64;
    let layout = ShardLayout {
        codec: ShardCodec::Lz4,
        rows_per_group,
        max_file_bytes: image_bytes * (rows_per_group * groups_per_file) as u64,
    };
    let mut writer = DatasetWriter::create(root, layout).unwrap();
    let mut split = writer.split("train").unwrap();
    for id in 0..count {
        split.push(&record(id, channels)).unwrap();
    }
    split.finish(None, 0).unwrap();
    let source = SourceInfo {
        kind: "fixture".into(),
        location: "generated".into(),
        sha256: "0".repeat(64),
        options: BTreeMap::new(),
    };
    writer.commit("fixture", source, (0..10).map(|class| format!("class{class}")).collect()).unwrap();
    Dataset::open(root).unwrap()
}

/// 16 px images, 4 px patches: a 4×4 grid, on which these mask settings always fit.
pub fn small_masks() -> Arc<dyn MaskSampler> {
    let config = MaskConfig { num_targets: 2, min_keep: 2, ..MaskConfig::default() };
    Arc::new(MultiBlockMasks::new(config, 4, 4).unwrap())
}

pub fn config(batch_size: usize, epochs: u64) -> LoaderConfig {
    LoaderConfig {
        split: "train".into(),
        batch_size,
        image_size_px: SIDE as u32,
        patch_size_px: 4,
        channels: 3,
        crop: CropConfig::default(),
        workers: 2,
        prefetch_batches: 2,
        shuffle_buffer: 16,
        drop_last: true,
        verify_checksums: true,
        epochs: Some(epochs),
        seed: 7,
    }
}

/// Every batch until the stream ends; panics on an error.
pub fn collect(dataset: &Dataset, config: &LoaderConfig, start: LoaderPosition) -> Vec<Batch> {
    let mut loader = Loader::start(dataset, config, small_masks(), start).unwrap();
    let mut batches = Vec::new();
    while let Some(batch) = loader.next_blocking() {
        batches.push(batch.unwrap());
    }
    batches
}

pub fn shard_paths(dataset: &Dataset) -> Vec<PathBuf> {
    dataset.split("train").unwrap().files.iter().map(|file| dataset.shard_path(file)).collect()
}
