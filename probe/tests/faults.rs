//! `make test-faults`, the probe's part: every option out of its range is refused, through
//! the real `probe` binary, before a file is read or written, naming the option and its range.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use jepa_shared::{DatasetWriter, ImageRecord, ShardLayout, SourceInfo};
use jepa_trainer::{Recipe, RunFolder};

/// A two-split dataset of a few images, and a run of the demo config reading it, with a
/// features file standing in for earlier work the probe must not touch.
fn scratch() -> (tempfile::TempDir, RunFolder) {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("data");
    let mut writer = DatasetWriter::create(&dataset, ShardLayout::default()).unwrap();
    for split in ["train", "test"] {
        let mut split_writer = writer.split(split).unwrap();
        for id in 0..4 {
            let record = ImageRecord {
                id,
                label: Some((id % 2) as i16),
                height: 28,
                width: 28,
                channels: 1,
                pixels: vec![0; 784],
            };
            split_writer.push(&record).unwrap();
        }
        split_writer.finish(None, 0).unwrap();
    }
    let source = SourceInfo {
        kind: "toy".into(),
        location: "generated".into(),
        sha256: "0".repeat(64),
        options: BTreeMap::new(),
    };
    writer.commit("toy", source, vec!["a".into(), "b".into()]).unwrap();
    let recipe = Recipe::load(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo-fashion.toml")),
        &[
            format!("dataset={:?}", dataset.display().to_string()),
            "name=\"run\"".into(),
            "data.pixel_mean=[0.5]".into(),
            "data.pixel_std=[0.25]".into(),
        ],
    )
    .unwrap();
    let folder = RunFolder::new(dir.path().join("run"));
    std::fs::create_dir_all(folder.root()).unwrap();
    std::fs::write(folder.config(), recipe.to_toml()).unwrap();
    std::fs::create_dir_all(folder.features_dir(jepa_trainer::EncoderKind::Pretrained)).unwrap();
    std::fs::write(folder.features(jepa_trainer::EncoderKind::Pretrained, "train"), b"earlier work").unwrap();
    (dir, folder)
}

#[test]
fn every_option_out_of_range_is_refused_before_any_work() {
    let (_dir, folder) = scratch();
    let run = folder.root().to_str().unwrap();
    let cases: [(&[&str], &str); 17] = [
        (&["knn", "--k", "0"], "--k is 0"),
        (&["knn", "--temperature", "0"], "--temperature is 0"),
        (&["knn", "--temperature", "NaN"], "--temperature is NaN"),
        (&["linear", "--epochs", "0"], "--epochs is 0"),
        (&["linear", "--validation-fraction", "0"], "--validation-fraction is 0"),
        (&["linear", "--validation-fraction", "1.5"], "--validation-fraction is 1.5"),
        (&["linear", "--learning-rates=-1"], "--learning-rates is -1"),
        (&["linear", "--weight-decays", "inf"], "--weight-decays is inf"),
        (&["linear", "--recipe", "seed", "--seed-epochs", "0"], "--seed-epochs is 0"),
        (&["finetune", "--finetune-epochs", "0"], "--finetune-epochs is 0"),
        (&["finetune", "--finetune-batch-size", "0"], "--finetune-batch-size is 0"),
        (&["finetune", "--finetune-train-images", "0"], "--finetune-train-images is 0"),
        (&["finetune", "--recipe", "seed", "--seed-micro-batch", "0"], "--seed-micro-batch is 0"),
        (&["features", "--batch-size", "0"], "--batch-size is 0"),
        (&["features", "--layers", "0"], "--layers is 0"),
        (&["all", "--k", "0"], "--k is 0"),
        (&["all", "--protocol", "nonsense"], "has no protocol `nonsense`; it supports toy"),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(args)
            .args(["--run", run, "--device", "cpu"])
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "probe {args:?} ran: {message}");
        assert!(message.contains(expected) && !message.contains("panicked"), "probe {args:?}: {message}");
        assert!(!message.contains("device:"), "probe {args:?} chose a device before checking: {message}");
        let features = std::fs::read(folder.features(jepa_trainer::EncoderKind::Pretrained, "train")).unwrap();
        assert_eq!(features, b"earlier work", "probe {args:?} touched the features");
    }
}

#[test]
fn a_shard_with_a_flipped_bit_is_refused_by_the_probe() {
    let (dir, folder) = scratch();
    let mut shards: Vec<std::path::PathBuf> = Vec::new();
    let mut pending = vec![dir.path().join("data")];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "parquet") {
                shards.push(path);
            }
        }
    }
    shards.sort();
    let shard = shards.iter().find(|path| path.to_string_lossy().contains("train")).expect("a train shard");
    let mut bytes = std::fs::read(shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(shard, bytes).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args([
            "features",
            "--encoder",
            "random",
            "--run",
            folder.root().to_str().unwrap(),
            "--device",
            "cpu",
            "--quiet",
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "probed a damaged shard: {message}");
    assert!(message.contains("checksum mismatch") && message.contains(&*shard.to_string_lossy()), "{message}");
    assert!(
        !folder.features(jepa_trainer::EncoderKind::Random, "train").exists(),
        "features written from a damaged shard"
    );
}
