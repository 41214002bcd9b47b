//! `make test-faults`, the probe's part, through the real `probe` binary: every option out
//! of its range refused before a file is read or written; damaged shards, non-finite
//! encoders and features refused by name; results of two checkpoints never silently
//! compared.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jepa_eval::features::FeatureTable;
use jepa_shared::{DatasetWriter, ImageRecord, ShardLayout, SourceInfo};
use jepa_trainer::training::{TrainOptions, train};
use jepa_trainer::{EncoderKind, Recipe, RunFolder};

type Backend = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo-fashion.toml");

/// The demo config reading `dataset`, with `sets` as `--set` would apply them.
fn demo(dataset: &Path, sets: &[&str]) -> Recipe {
    let mut all = vec![format!("dataset={:?}", dataset.display().to_string())];
    all.extend(sets.iter().map(|set| set.to_string()));
    Recipe::load(Path::new(DEMO), &all).unwrap()
}

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
    let recipe = demo(&dataset, &["name=\"run\"", "data.pixel_mean=[0.5]", "data.pixel_std=[0.25]"]);
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
    let dataset = jepa_shared::Dataset::open(&dir.path().join("data")).unwrap();
    let shard = &dataset.shard_path(&dataset.split("train").unwrap().files[0]);
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

/// `probe` with `args` on the CPU, quiet.
fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(args)
        .args(["--device", "cpu", "--quiet"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn succeeded(output: &Output) -> String {
    let message = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{message}");
    message
}

fn refused(output: &Output) -> String {
    let message = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "not refused: {message}");
    assert!(!message.contains("panicked"), "{message}");
    message
}

/// The demo config trained for two steps on the first images of real Fashion-MNIST, both
/// steps' checkpoints kept; returns the run folder.
fn two_checkpoints(root: &Path) -> PathBuf {
    let data = common::first_images(&root.join("data"), 160, 80);
    let recipe = demo(
        &data,
        &["name=\"two\"", "optim.max_steps=2", "loader.batch_size=16", "checkpoint.every_steps=1", "checkpoint.keep=3"],
    );
    let options = TrainOptions { runs_root: root.join("runs"), ..TrainOptions::default() };
    train::<Backend>(recipe, &options, &Default::default()).unwrap().run_dir
}

#[test]
fn results_of_two_checkpoints_are_labelled_and_one_probe_never_spans_two() {
    let dir = tempfile::tempdir().unwrap();
    let run = two_checkpoints(dir.path());
    let folder = RunFolder::new(&run);
    let run_arg = run.to_str().unwrap();
    let linear = |encoder: &str| probe(&["linear", "--run", run_arg, "--encoder", encoder, "--epochs", "2"]);

    // Features written by separate commands while the run moved on: one per checkpoint.
    succeeded(&probe(&["features", "--run", run_arg, "--encoder", "pretrained", "--checkpoint", "1"]));
    succeeded(&probe(&["features", "--run", run_arg, "--encoder", "context"]));
    succeeded(&linear("pretrained"));
    succeeded(&linear("context"));
    let output = probe(&["report", "--run", run_arg]);
    let warning = succeeded(&output);
    let table = String::from_utf8_lossy(&output.stdout);
    for said in [&*warning, &std::fs::read_to_string(folder.report(jepa_trainer::ReportFile::Markdown)).unwrap()] {
        assert!(
            said.contains("Not one checkpoint")
                && said.contains("pretrained linear from step-00000001")
                && said.contains("context linear from step-00000002"),
            "{said}"
        );
    }
    assert!(table.contains("step-00000001") && table.contains("step-00000002"), "{table}");
    let summary = common::read(&folder.report(jepa_trainer::ReportFile::Summary));
    let checkpoints: Vec<String> = summary
        .column("checkpoint")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|value| value.unwrap_or_default().to_string())
        .collect();
    assert!(checkpoints.contains(&"step-00000001".into()) && checkpoints.contains(&"step-00000002".into()));

    // One checkpoint's train features beside another's test features: refused, naming both.
    let test = folder.features(EncoderKind::Pretrained, "test");
    let earlier = std::fs::read(&test).unwrap();
    succeeded(&probe(&["features", "--run", run_arg, "--encoder", "pretrained"]));
    std::fs::write(&test, earlier).unwrap();
    let message = refused(&linear("pretrained"));
    assert!(
        message.contains(&*test.to_string_lossy())
            && message.contains("step-00000001")
            && message.contains("step-00000002"),
        "{message}"
    );

    // Non-finite features are refused by file and image.
    let path = folder.features(EncoderKind::Context, "train");
    let mut table = FeatureTable::read(&path).unwrap();
    let dim = table.dim;
    table.values[3 * dim + 1] = f32::NAN;
    let bad_id = table.ids[3];
    let metadata: HashMap<String, String> = jepa_eval::features::read_metadata(&path).unwrap();
    table.write(&path, &metadata).unwrap();
    let message = refused(&linear("context"));
    assert!(
        message.contains(&*path.to_string_lossy()) && message.contains(&format!("image {bad_id}'s feature")),
        "{message}"
    );
}

/// Sets the first value of tensor `key` of the safetensors file at `path` to NaN.
fn poison(path: &Path, key: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap().to_string();
    let entry = &header[header.find(&format!("\"{key}\"")).unwrap()..];
    let offsets = &entry[entry.find("\"data_offsets\":[").unwrap() + 16..];
    let start: usize = offsets[..offsets.find(',').unwrap()].trim().parse().unwrap();
    let at = 8 + header_len + start;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_encoder_file_with_a_nan_weight_is_refused_naming_the_tensor() {
    let (dir, _) = scratch();
    let recipe = Recipe::load(Path::new(DEMO), &[]).unwrap();
    let vit = recipe.encoder().clone();
    let encoder = vit.init::<burn::backend::NdArray<f32>>(&Default::default());
    let info =
        jepa_trainer::interop::ExportInfo { vit, pixel_mean: vec![0.5], pixel_std: vec![0.25], provenance: Vec::new() };
    let file = dir.path().join("encoder.safetensors");
    jepa_trainer::interop::write(&encoder, &info, &file).unwrap();
    poison(&file, "norm.weight");
    let imported = dir.path().join("imported");
    let message = refused(&probe(&[
        "features",
        "--run",
        imported.to_str().unwrap(),
        "--dataset",
        dir.path().join("data").to_str().unwrap(),
        "--encoder-file",
        file.to_str().unwrap(),
    ]));
    assert!(
        message.contains(&*file.to_string_lossy()) && message.contains("tensor `norm.weight` holds 1 non-finite"),
        "{message}"
    );
    assert!(!imported.exists(), "a folder was made for an encoder that was refused");
}
