//! Helpers of the end-to-end tests on real Fashion-MNIST.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jepa_ingest::fashion_mnist::{FashionMnist, installed_dir};
use jepa_ingest::source::{Source, SourceItem};
use jepa_ingest::{IngestOptions, Progress, ingest};
use jepa_shared::{Dataset, DatasetWriter, ShardLayout, SourceInfo};
use polars::prelude::*;

pub const TRAIN_IMAGES: u64 = 6_000;
pub const TEST_IMAGES: u64 = 1_000;

pub fn fashion_dir() -> PathBuf {
    installed_dir().unwrap_or_else(|error| panic!("{error}"))
}

/// The first `TRAIN_IMAGES` / `TEST_IMAGES` images of the real splits, ids kept.
pub fn write_slice(full: &Path, out: &Path) {
    let dataset = Dataset::open(full).unwrap();
    let mut writer = DatasetWriter::create(out, ShardLayout::default()).unwrap();
    for (name, keep) in [("train", TRAIN_IMAGES), ("test", TEST_IMAGES)] {
        let mut split = writer.split(name).unwrap();
        'groups: for group in dataset.row_groups(name).unwrap() {
            for image in group.unwrap().iter() {
                if image.id >= keep {
                    break 'groups;
                }
                split.push(&image.to_record()).unwrap();
            }
        }
        split.finish(None, 0).unwrap();
    }
    let manifest = dataset.manifest();
    let source = SourceInfo {
        kind: manifest.source.kind.clone(),
        location: full.display().to_string(),
        sha256: manifest.source.sha256.clone(),
        options: BTreeMap::from([("slice".into(), format!("train {TRAIN_IMAGES}, test {TEST_IMAGES}"))]),
    };
    writer.commit(&manifest.name, source, manifest.class_names.clone()).unwrap();
}

pub fn column_f64(frame: &DataFrame, name: &str) -> Vec<f64> {
    frame.column(name).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect()
}

pub fn read(path: &Path) -> DataFrame {
    LazyFrame::scan_parquet(PlRefPath::new(path.to_str().unwrap()), ScanArgsParquet::default())
        .unwrap()
        .collect()
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

pub fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(width >= 600 && height >= 400, "{}: {width}×{height}", path.display());
    assert!(bytes.len() > 5_000, "{}: {} bytes is an empty canvas", path.display(), bytes.len());
}

/// Where a test keeps its files: `$JEPA_INTEROP_DIR/<name>` (emptied first) when set, so the
/// Python checks can read them afterwards, else the returned temporary folder.
pub fn scratch_root(name: &str) -> (tempfile::TempDir, PathBuf) {
    let scratch = tempfile::tempdir().unwrap();
    let root = match std::env::var_os("JEPA_INTEROP_DIR") {
        Some(dir) => {
            let root = PathBuf::from(dir).join(name);
            let _ = std::fs::remove_dir_all(&root);
            root
        }
        None => scratch.path().to_path_buf(),
    };
    (scratch, root)
}

/// Real Fashion-MNIST ingested under `root`, and its first `TRAIN_IMAGES` / `TEST_IMAGES`
/// images as a dataset of their own; returns the slice's root.
pub fn real_slice(root: &Path) -> PathBuf {
    let full = root.join("fashion-mnist");
    let options = IngestOptions { out: full.clone(), layout: ShardLayout::default(), force: false };
    ingest(&FashionMnist::open(&fashion_dir()).unwrap(), &options, &Progress::hidden()).unwrap();
    let slice = root.join("fashion-mnist-slice");
    write_slice(&full, &slice);
    slice
}

/// The first `train` and `test` images of real Fashion-MNIST, read straight from the IDX
/// files into a dataset at `out` (ids kept), without ingesting the rest.
pub fn first_images(out: &Path, train: u64, test: u64) -> PathBuf {
    let source = FashionMnist::open(&fashion_dir()).unwrap();
    let mut writer = DatasetWriter::create(out, ShardLayout::default()).unwrap();
    for input in source.splits().unwrap() {
        let keep = if input.name == "train" { train } else { test };
        let mut split = writer.split(&input.name).unwrap();
        for item in input.items.take(keep as usize) {
            let SourceItem::Image(record) = item.unwrap() else { panic!("Fashion-MNIST skips no image") };
            split.push(&record).unwrap();
        }
        split.finish(None, 0).unwrap();
    }
    let source_info = SourceInfo {
        kind: "fashion-mnist".into(),
        location: fashion_dir().display().to_string(),
        sha256: "0".repeat(64),
        options: BTreeMap::from([("first".into(), format!("train {train}, test {test}"))]),
    };
    writer.commit("fashion-mnist", source_info, source.class_names()).unwrap();
    out.to_path_buf()
}
