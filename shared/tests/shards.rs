use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int32Array, RecordBatch, UInt8Array, UInt16Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use jepa_shared::{Dataset, DatasetWriter, FileError, ImageRecord, ShardCodec, ShardLayout, ShardReader, SourceInfo};
use proptest::prelude::*;

fn source() -> SourceInfo {
    SourceInfo { kind: "test".into(), location: "memory".into(), sha256: "0".repeat(64), options: Default::default() }
}

fn write(root: &Path, layout: ShardLayout, splits: &[(&str, &[ImageRecord])]) -> jepa_shared::Manifest {
    let mut writer = DatasetWriter::create(root, layout).unwrap();
    for (name, records) in splits {
        let mut split = writer.split(name).unwrap();
        for record in *records {
            split.push(record).unwrap();
        }
        split.finish(None, 0).unwrap();
    }
    writer.commit("test", source(), vec!["a".into(), "b".into()]).unwrap()
}

fn read_all(root: &Path, split: &str) -> Vec<ImageRecord> {
    let dataset = Dataset::open(root).unwrap();
    dataset
        .row_groups(split)
        .unwrap()
        .flat_map(|batch| batch.unwrap().iter().map(|image| image.to_record()).collect::<Vec<_>>())
        .collect()
}

fn record_strategy() -> impl Strategy<Value = ImageRecord> {
    (1u16..12, 1u16..12, prop_oneof![Just(1u8), Just(3u8)], proptest::option::of(0i16..10), any::<u64>()).prop_flat_map(
        |(height, width, channels, label, id)| {
            let len = height as usize * width as usize * channels as usize;
            proptest::collection::vec(any::<u8>(), len).prop_map(move |pixels| ImageRecord {
                id,
                label,
                height,
                width,
                channels,
                pixels,
            })
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn shards_round_trip_any_images_in_order(
        records in proptest::collection::vec(record_strategy(), 0..40),
        rows_per_group in 1usize..9,
        codec in prop_oneof![Just(ShardCodec::None), Just(ShardCodec::Lz4), Just(ShardCodec::Zstd)],
    ) {
        let root = tempfile::tempdir().unwrap();
        let layout = ShardLayout { codec, rows_per_group, max_file_bytes: 300 };
        let manifest = write(root.path(), layout, &[("train", &records)]);
        prop_assert_eq!(read_all(root.path(), "train"), records.clone());
        let split = manifest.split("train").unwrap();
        prop_assert_eq!(split.count, records.len() as u64);
        // Every file but the last closed at a row-group boundary past the size bound.
        let dataset = Dataset::open(root.path()).unwrap();
        for file in &split.files {
            let reader = dataset.open_shard(file).unwrap();
            for group in 0..reader.num_row_groups() {
                let last_group_of_last_file = file == split.files.last().unwrap() && group + 1 == reader.num_row_groups();
                if !last_group_of_last_file {
                    prop_assert_eq!(reader.row_group_rows(group), rows_per_group);
                }
            }
        }
        dataset.verify().unwrap();
    }
}

fn grey(id: u64, bytes: usize) -> ImageRecord {
    ImageRecord {
        id,
        label: Some((id % 2) as i16),
        height: 1,
        width: bytes as u16,
        channels: 1,
        pixels: vec![id as u8; bytes],
    }
}

#[test]
fn files_are_cut_at_the_first_row_group_boundary_past_the_size_bound() {
    let root = tempfile::tempdir().unwrap();
    let records: Vec<ImageRecord> = (0..10).map(|id| grey(id, 100)).collect();
    // 3 images (300 bytes) per group; a file closes once it holds ≥ 500 bytes: 2 groups.
    let layout = ShardLayout { codec: ShardCodec::Lz4, rows_per_group: 3, max_file_bytes: 500 };
    let manifest = write(root.path(), layout, &[("train", &records)]);
    let files = &manifest.split("train").unwrap().files;
    let shape: Vec<(u64, usize)> = files.iter().map(|file| (file.rows, file.row_groups)).collect();
    assert_eq!(shape, vec![(6, 2), (4, 2)]);
    assert_eq!(files[1].path, "shards/train/part-00001.parquet");
}

#[test]
fn a_changed_shard_fails_its_checksum_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let records: Vec<ImageRecord> = (0..5).map(|id| grey(id, 50)).collect();
    let manifest = write(root.path(), ShardLayout::default(), &[("test", &records)]);
    let path = root.path().join(&manifest.split("test").unwrap().files[0].path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let error = Dataset::open(root.path()).unwrap().verify().unwrap_err();
    assert!(matches!(error, FileError::Checksum { .. }), "{error}");
    assert!(error.to_string().contains("part-00000.parquet"), "{error}");
}

#[test]
fn a_parquet_file_with_the_wrong_column_type_is_rejected_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("label", DataType::Int32, true),
        Field::new("height", DataType::UInt16, false),
        Field::new("width", DataType::UInt16, false),
        Field::new("channels", DataType::UInt8, false),
        Field::new("pixels", DataType::Binary, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(vec![0u64])),
        Arc::new(Int32Array::from(vec![1])),
        Arc::new(UInt16Array::from(vec![1u16])),
        Arc::new(UInt16Array::from(vec![1u16])),
        Arc::new(UInt8Array::from(vec![1u8])),
        Arc::new(BinaryArray::from(vec![&[7u8][..]])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let message = ShardReader::open(&path).unwrap_err().to_string();
    assert!(
        message.contains("foreign.parquet") && message.contains("`label`") && message.contains("Int16"),
        "{message}"
    );
}

#[test]
fn a_record_whose_pixels_disagree_with_its_size_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut writer = DatasetWriter::create(root.path(), ShardLayout::default()).unwrap();
    let mut split = writer.split("train").unwrap();
    let mut bad = grey(7, 10);
    bad.pixels.pop();
    let message = split.push(&bad).unwrap_err().to_string();
    assert!(message.contains("id 7") && message.contains("9 bytes"), "{message}");
}

#[test]
fn an_uncommitted_writer_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    {
        let mut writer = DatasetWriter::create(
            root.path(),
            ShardLayout { rows_per_group: 2, max_file_bytes: 1, ..ShardLayout::default() },
        )
        .unwrap();
        let mut split = writer.split("train").unwrap();
        for id in 0..5 {
            split.push(&grey(id, 10)).unwrap();
        }
        // dropped here without finish or commit
    }
    let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(Dataset::open(root.path()).unwrap_err().to_string().contains("manifest.json"));
}

#[test]
fn a_manifest_whose_counts_disagree_with_its_files_is_rejected() {
    let root = tempfile::tempdir().unwrap();
    let records: Vec<ImageRecord> = (0..3).map(|id| grey(id, 5)).collect();
    write(root.path(), ShardLayout::default(), &[("train", &records)]);
    let path = root.path().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"count\": 3", "\"count\": 4");
    std::fs::write(&path, text).unwrap();
    let message = Dataset::open(root.path()).unwrap_err().to_string();
    assert!(message.contains("manifest.json") && message.contains("count is 4"), "{message}");
}

#[test]
fn a_missing_split_error_lists_the_splits_there_are() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), ShardLayout::default(), &[("train", &[grey(0, 4)]), ("test", &[grey(1, 4)])]);
    let message = Dataset::open(root.path()).unwrap().split("val").unwrap_err().to_string();
    assert!(message.contains("no split `val`") && message.contains("test, train"), "{message}");
}
