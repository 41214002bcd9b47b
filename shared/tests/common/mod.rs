//! Loader settings and helpers over [`jepa_shared::fixture`] datasets.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

#[allow(unused_imports)]
pub use jepa_shared::fixture::{SIDE, pixel};
use jepa_shared::{
    Batch, CropConfig, Dataset, Loader, LoaderConfig, LoaderPosition, LoaderSettings, MaskConfig, MaskSampler,
    MultiBlockMasks,
};

pub fn write_dataset(
    root: &std::path::Path,
    count: u64,
    channels: u8,
    rows_per_group: usize,
    groups: usize,
) -> Dataset {
    jepa_shared::fixture::write_dataset(root, count, channels, rows_per_group, groups).unwrap()
}

/// 16 px images, 4 px patches: a 4×4 grid, on which these mask settings always fit.
pub fn small_masks() -> Arc<dyn MaskSampler> {
    let config = MaskConfig { num_targets: 2, min_keep: 2, ..MaskConfig::default() };
    Arc::new(MultiBlockMasks::new(config, 4, 4).unwrap())
}

pub fn settings(batch_size: usize) -> LoaderSettings {
    LoaderSettings {
        split: "train".into(),
        batch_size,
        crop: CropConfig::default(),
        workers: 2,
        prefetch_batches: 2,
        shuffle_buffer: 16,
        drop_last: true,
        verify_checksums: true,
    }
}

pub fn config(batch_size: usize, epochs: u64) -> LoaderConfig {
    LoaderConfig { epochs: Some(epochs), ..LoaderConfig::new(settings(batch_size), SIDE as u32, 3, 7) }
}

/// `config(batch_size, epochs)` with its settings changed by `change`.
pub fn with_settings(batch_size: usize, epochs: u64, change: impl FnOnce(&mut LoaderSettings)) -> LoaderConfig {
    let mut config = config(batch_size, epochs);
    change(&mut config.settings);
    config
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
