mod common;

use common::*;
use jepa_ingest::stl10::Stl10;
use jepa_ingest::{IngestOptions, Progress, ingest};
use jepa_shared::{Dataset, ShardLayout};

fn options(out: &std::path::Path) -> IngestOptions {
    IngestOptions {
        out: out.to_path_buf(),
        layout: ShardLayout { rows_per_group: 4, ..ShardLayout::default() },
        force: false,
    }
}

#[test]
fn stl10_reader_transposes_column_major_planes_into_upright_hwc() {
    let source = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_stl10_fixture(source.path(), 10, 6, 3);
    ingest(&Stl10::open(source.path()).unwrap(), &options(out.path()), &Progress::hidden()).unwrap();

    let dataset = Dataset::open(out.path()).unwrap();
    for (split, count) in [("train", 10), ("test", 6), ("unlabeled", 3)] {
        let mut seen = 0;
        for batch in dataset.row_groups(split).unwrap() {
            for image in batch.unwrap().iter() {
                let index = image.id as usize;
                assert_eq!(index, seen, "{split}: images keep their source order");
                assert_eq!((image.height, image.width, image.channels), (96, 96, 3));
                for row in 0..SIDE {
                    for col in 0..SIDE {
                        for channel in 0..3 {
                            let stored = image.pixels[(row * SIDE + col) * 3 + channel];
                            assert_eq!(
                                stored,
                                stl10_fixture_value(index, channel, row, col),
                                "{split} image {index}: pixel (row {row}, col {col}, channel {channel})"
                            );
                        }
                    }
                }
                let expected_label = (split != "unlabeled").then(|| stl10_fixture_label(index) as i16 - 1);
                assert_eq!(image.label, expected_label, "{split} image {index}: label stored 0-based");
                seen += 1;
            }
        }
        assert_eq!(seen, count, "{split}: every image written once");
    }
}

#[test]
fn stl10_manifest_keeps_class_names_and_official_folds() {
    let source = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_stl10_fixture(source.path(), 10, 2, 0);
    let report = ingest(&Stl10::open(source.path()).unwrap(), &options(out.path()), &Progress::hidden()).unwrap();
    let manifest = report.manifest;
    assert_eq!(manifest.class_names[0], "airplane");
    assert_eq!(manifest.class_names[9], "truck");
    let train = manifest.split("train").unwrap();
    assert_eq!(train.folds.as_ref().unwrap(), &vec![vec![0, 2, 4, 6, 8], vec![1, 3, 5, 7, 9]]);
    assert!(manifest.split("test").unwrap().folds.is_none());
    assert!(manifest.split("unlabeled").is_none(), "no unlabeled_X.bin, no split");
    // 10 images in row groups of 4: groups of 4, 4, 2.
    let reader = Dataset::open(out.path()).unwrap();
    let shard = reader.open_shard(&train.files[0]).unwrap();
    let sizes: Vec<usize> = (0..shard.num_row_groups()).map(|group| shard.row_group_rows(group)).collect();
    assert_eq!(sizes, vec![4, 4, 2]);
}

fn expect_error(source: &std::path::Path, needles: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let result = Stl10::open(source).and_then(|stl10| ingest(&stl10, &options(out.path()), &Progress::hidden()));
    assert_fails_cleanly(result, needles, out.path());
}

#[test]
fn stl10_bin_that_is_not_a_whole_number_of_images_is_rejected() {
    let source = tempfile::tempdir().unwrap();
    write_stl10_fixture(source.path(), 4, 2, 0);
    let path = source.path().join("stl10_binary/test_X.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&path, bytes).unwrap();
    expect_error(source.path(), &["test_X.bin", "not a whole number"]);
}

#[test]
fn stl10_label_count_that_disagrees_with_images_is_rejected() {
    let source = tempfile::tempdir().unwrap();
    write_stl10_fixture(source.path(), 4, 2, 0);
    std::fs::write(source.path().join("stl10_binary/train_y.bin"), [1u8, 2, 3]).unwrap();
    expect_error(source.path(), &["train_y.bin", "3 labels", "4 images"]);
}

#[test]
fn stl10_label_out_of_range_is_rejected() {
    let source = tempfile::tempdir().unwrap();
    write_stl10_fixture(source.path(), 4, 2, 0);
    std::fs::write(source.path().join("stl10_binary/test_y.bin"), [1u8, 11]).unwrap();
    expect_error(source.path(), &["test_y.bin", "label 1 is 11"]);
}

#[test]
fn stl10_missing_directory_is_named() {
    let source = tempfile::tempdir().unwrap();
    expect_error(&source.path().join("nowhere"), &["nowhere", "does not exist"]);
}

#[test]
fn stl10_fold_index_past_the_training_set_is_rejected() {
    let source = tempfile::tempdir().unwrap();
    write_stl10_fixture(source.path(), 4, 2, 0);
    std::fs::write(source.path().join("stl10_binary/fold_indices.txt"), "0 1\n2 9\n").unwrap();
    expect_error(source.path(), &["fold_indices.txt", "line 2", "`9`"]);
}
