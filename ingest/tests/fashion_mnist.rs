mod common;

use std::path::{Path, PathBuf};

use common::*;
use jepa_ingest::fashion_mnist::{FashionMnist, installed_dir};
use jepa_ingest::{IngestOptions, Progress, ingest};
use jepa_shared::{Dataset, ShardLayout};

fn options(out: &Path) -> IngestOptions {
    IngestOptions { out: out.to_path_buf(), layout: ShardLayout::default(), force: false }
}

/// The Debian package `dataset-fashion-mnist`; `.ci/run` installs it.
fn real_dir() -> PathBuf {
    installed_dir().unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn real_fashion_mnist_ingests_with_counts_histogram_and_pixels_from_the_idx_bytes() {
    let source = real_dir();
    let out = tempfile::tempdir().unwrap();
    ingest(&FashionMnist::open(&source).unwrap(), &options(out.path()), &Progress::hidden()).unwrap();
    let dataset = Dataset::open(out.path()).unwrap();

    for (split, stem, count) in [("train", "train", 60_000usize), ("test", "t10k", 10_000)] {
        // The expectation comes straight from the IDX bytes, read here without the crate.
        let idx_images = gunzip(&source.join(format!("{stem}-images-idx3-ubyte.gz")));
        let idx_labels = gunzip(&source.join(format!("{stem}-labels-idx1-ubyte.gz")));
        assert_eq!(idx_images.len(), 16 + count * 784);
        let mut idx_histogram = [0usize; 10];
        for &label in &idx_labels[8..] {
            idx_histogram[label as usize] += 1;
        }
        // Fashion-MNIST is balanced: 6,000 (train) or 1,000 (test) images per class.
        assert_eq!(idx_histogram, [count / 10; 10], "{split}: the IDX file itself is balanced");

        assert_eq!(dataset.split(split).unwrap().count, count as u64);
        let mut histogram = [0usize; 10];
        let mut ids = Vec::with_capacity(count);
        let probes = [0usize, 1, 777, count / 2, count - 1];
        for batch in dataset.row_groups(split).unwrap() {
            for image in batch.unwrap().iter() {
                let id = image.id as usize;
                ids.push(id);
                histogram[image.label.unwrap() as usize] += 1;
                assert_eq!(image.label.unwrap() as u8, idx_labels[8 + id], "{split} label of image {id}");
                assert_eq!((image.height, image.width, image.channels), (28, 28, 1));
                if probes.contains(&id) {
                    assert_eq!(image.pixels, &idx_images[16 + id * 784..16 + (id + 1) * 784], "{split} image {id}");
                }
            }
        }
        assert_eq!(histogram, idx_histogram, "{split}: class histogram");
        assert_eq!(ids, (0..count).collect::<Vec<_>>(), "{split}: every image once, in order");
    }
    dataset.verify().unwrap();
}

#[test]
fn second_ingest_of_the_same_source_does_nothing_and_force_rewrites() {
    let source = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    small_idx_copy(&real_dir(), source.path(), 50);
    let fashion = FashionMnist::open(source.path()).unwrap();
    let first = ingest(&fashion, &options(out.path()), &Progress::hidden()).unwrap();
    assert!(first.written);
    let second = ingest(&fashion, &options(out.path()), &Progress::hidden()).unwrap();
    assert!(!second.written, "same source, same layout: nothing to do");
    assert_eq!(second.manifest, first.manifest);

    let forced = IngestOptions { force: true, ..options(out.path()) };
    assert!(ingest(&fashion, &forced, &Progress::hidden()).unwrap().written);

    // A shard that went missing makes the dataset incomplete: the next run rewrites it.
    let shard = out.path().join(&first.manifest.split("test").unwrap().files[0].path);
    std::fs::remove_file(&shard).unwrap();
    assert!(ingest(&fashion, &options(out.path()), &Progress::hidden()).unwrap().written);
    assert!(shard.is_file());

    // A different layout is a different dataset.
    let zstd = IngestOptions {
        layout: ShardLayout { codec: jepa_shared::ShardCodec::Zstd, ..ShardLayout::default() },
        ..options(out.path())
    };
    assert!(ingest(&fashion, &zstd, &Progress::hidden()).unwrap().written);
}

/// Writes the first `count` images and labels of each split as gzip IDX files.
fn small_idx_copy(real: &Path, into: &Path, count: usize) {
    for stem in ["train", "t10k"] {
        let images = gunzip(&real.join(format!("{stem}-images-idx3-ubyte.gz")));
        let labels = gunzip(&real.join(format!("{stem}-labels-idx1-ubyte.gz")));
        let mut image_bytes = images[..16 + count * 784].to_vec();
        image_bytes[4..8].copy_from_slice(&(count as u32).to_be_bytes());
        let mut label_bytes = labels[..8 + count].to_vec();
        label_bytes[4..8].copy_from_slice(&(count as u32).to_be_bytes());
        write_gz(&into.join(format!("{stem}-images-idx3-ubyte.gz")), &image_bytes);
        write_gz(&into.join(format!("{stem}-labels-idx1-ubyte.gz")), &label_bytes);
    }
}

fn write_gz(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap();
}

fn expect_error(source: &Path, needles: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let result =
        FashionMnist::open(source).and_then(|fashion| ingest(&fashion, &options(out.path()), &Progress::hidden()));
    assert_fails_cleanly(result, needles, out.path());
}

#[test]
fn idx_file_with_the_wrong_magic_number_is_rejected() {
    let source = tempfile::tempdir().unwrap();
    small_idx_copy(&real_dir(), source.path(), 20);
    let path = source.path().join("t10k-images-idx3-ubyte.gz");
    let mut bytes = gunzip(&path);
    bytes[3] = 0x01; // 0x0803 → 0x0801, a label file's magic
    write_gz(&path, &bytes);
    expect_error(source.path(), &["t10k-images-idx3-ubyte.gz", "magic number is 0x00000801"]);
}

#[test]
fn truncated_gzip_fails_mid_split_and_leaves_nothing_behind() {
    let source = tempfile::tempdir().unwrap();
    small_idx_copy(&real_dir(), source.path(), 40);
    let path = source.path().join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    expect_error(source.path(), &["train-images-idx3-ubyte.gz", "truncated or corrupt at image"]);
}

#[test]
fn corrupt_gzip_is_caught_by_its_checksum() {
    let source = tempfile::tempdir().unwrap();
    small_idx_copy(&real_dir(), source.path(), 40);
    let path = source.path().join("t10k-images-idx3-ubyte.gz");
    let mut bytes = std::fs::read(&path).unwrap();
    let crc = bytes.len() - 8; // gzip trailer: CRC-32, then the length
    bytes[crc] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    expect_error(source.path(), &["t10k-images-idx3-ubyte.gz", "corrupt"]);
}

#[test]
fn label_count_that_disagrees_with_images_is_rejected() {
    let source = tempfile::tempdir().unwrap();
    small_idx_copy(&real_dir(), source.path(), 20);
    let path = source.path().join("train-labels-idx1-ubyte.gz");
    let mut labels = gunzip(&path);
    labels.truncate(8 + 19);
    labels[4..8].copy_from_slice(&19u32.to_be_bytes());
    write_gz(&path, &labels);
    expect_error(source.path(), &["train-labels-idx1-ubyte.gz", "19 labels", "20 images"]);
}

#[test]
fn missing_fashion_mnist_folder_is_named() {
    let source = tempfile::tempdir().unwrap();
    expect_error(&source.path().join("absent"), &["absent", "does not exist"]);
}
