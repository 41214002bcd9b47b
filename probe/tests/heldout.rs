//! The linear probe's choice of hyper-parameters must not depend on the test split: the
//! same train features with two entirely different test files give the same search, and
//! only the final predictions differ.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use jepa_probe::evaluate::{Probe, run_probe};
use jepa_probe::features::FeatureTable;
use jepa_probe::linear::LinearSettings;
use jepa_shared::rng::KeyedRng;
use jepa_shared::{DatasetWriter, ImageRecord, ShardLayout, SourceInfo};
use jepa_trainer::{EncoderKind, Recipe, Run, RunFolder};

/// A two-split dataset with a few images: the probe reads only its manifest here.
fn write_manifest_dataset(root: &Path, kind: &str, folds: Option<Vec<Vec<u64>>>) {
    let mut writer = DatasetWriter::create(root, ShardLayout::default()).unwrap();
    for split in ["train", "test"] {
        let mut split_writer = writer.split(split).unwrap();
        for id in 0..4 {
            let label = Some((id % 3) as i16);
            let record = ImageRecord { id, label, height: 28, width: 28, channels: 1, pixels: vec![0; 784] };
            split_writer.push(&record).unwrap();
        }
        split_writer.finish(if split == "train" { folds.clone() } else { None }, 0).unwrap();
    }
    let source = SourceInfo {
        kind: kind.into(),
        location: "generated".into(),
        sha256: "0".repeat(64),
        options: BTreeMap::new(),
    };
    writer.commit("toy", source, vec!["a".into(), "b".into(), "c".into()]).unwrap();
}

fn run_folder(folder: &Path, dataset: &Path) -> Run {
    let recipe = Recipe::load(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo-fashion.toml")),
        &[format!("dataset=\"{}\"", dataset.display())],
    )
    .unwrap();
    Run { folder: RunFolder::new(folder.join("run")), recipe }
}

/// Three noisy classes in 5-D.
fn features(rows: usize, seed: u64, shift: f32) -> FeatureTable {
    let mut rng = KeyedRng::new(&[seed]);
    let mut table = FeatureTable::new(5);
    for id in 0..rows as u64 {
        let class = rng.below(3) as i32;
        let feature: Vec<f32> = (0..5)
            .map(|axis| if axis == class as usize { 1.0 } else { 0.0 } + shift + rng.uniform(-1.0, 1.0) as f32)
            .collect();
        table.push(id, class, &feature);
    }
    table
}

#[test]
fn linear_probe_choice_is_the_same_whatever_the_test_split_holds() {
    let folder = tempfile::tempdir().unwrap();
    let dataset = folder.path().join("dataset");
    write_manifest_dataset(&dataset, "fixture", None);
    let run = run_folder(folder.path(), &dataset);
    let no_metadata = HashMap::new();
    features(600, 1, 0.0).write(&run.folder.features(EncoderKind::Pretrained, "train"), &no_metadata).unwrap();
    let settings = LinearSettings {
        learning_rates: vec![1e-3, 1e-2, 1e-1],
        weight_decays: vec![0.0, 1e-2],
        epochs: 4,
        batch_size: 64,
        ..LinearSettings::default()
    };
    let probe = Probe::Linear(settings);

    let mut outcomes = Vec::new();
    for (seed, shift) in [(2, 0.0), (3, 5.0)] {
        // Two unrelated test sets: other images, other labels, other feature scale.
        features(300, seed, shift).write(&run.folder.features(EncoderKind::Pretrained, "test"), &no_metadata).unwrap();
        outcomes.push(run_probe(&run, EncoderKind::Pretrained, &probe, &[]).unwrap());
    }
    let [first, second] = [&outcomes[0], &outcomes[1]];
    assert_eq!(first.selections.len(), 1);
    assert_eq!(first.selections[0].1, second.selections[0].1, "the search saw the test split");
    // The test split was read in the end: the predictions are of the two different files.
    let (one, two) = (&first.evaluations[0].1, &second.evaluations[0].1);
    assert_eq!(one.ids.len(), 300);
    assert!(one.labels != two.labels && one.predicted != two.predicted);
    assert!(one.accuracy() > 0.6, "a fitted probe on test-like data: {}", one.accuracy());
}

#[test]
fn stl10_folds_fit_each_fold_on_its_own_train_images_only() {
    // Train rows 0..300; fold 0 holds only class-0 rows, fold 1 only class-1 rows. A kNN
    // fitted on a fold can then only ever predict that fold's class.
    let folder = tempfile::tempdir().unwrap();
    let train = features(300, 5, 0.0);
    let ids_of = |class: i32| -> Vec<u64> {
        (0..train.len()).filter(|&row| train.labels[row] == class).map(|row| train.ids[row]).take(40).collect()
    };
    let dataset = folder.path().join("dataset");
    write_manifest_dataset(&dataset, "stl10", Some(vec![ids_of(0), ids_of(1)]));
    let run = run_folder(folder.path(), &dataset);
    let no_metadata = HashMap::new();
    train.write(&run.folder.features(EncoderKind::Pretrained, "train"), &no_metadata).unwrap();
    features(200, 6, 0.0).write(&run.folder.features(EncoderKind::Pretrained, "test"), &no_metadata).unwrap();

    let knn = Probe::Knn(jepa_probe::knn::KnnSettings::default());
    let outcome = run_probe(&run, EncoderKind::Pretrained, &knn, &[]).unwrap();
    let names: Vec<(String, Option<u32>)> =
        outcome.evaluations.iter().map(|(task, _)| (task.protocol.clone(), task.fold)).collect();
    assert_eq!(
        names,
        vec![("stl10-5k".into(), None), ("stl10-folds".into(), Some(0)), ("stl10-folds".into(), Some(1))]
    );
    assert!(outcome.evaluations[1].1.predicted.iter().all(|&class| class == 0));
    assert!(outcome.evaluations[2].1.predicted.iter().all(|&class| class == 1));
    // All of train sees every class.
    assert!(outcome.evaluations[0].1.predicted.contains(&2));

    let frame = jepa_probe::heldout::predictions_frame(&outcome.evaluations).unwrap();
    let summary = jepa_probe::scores::summary(polars::prelude::IntoLazy::lazy(frame)).collect().unwrap();
    let folds: Vec<i32> = summary.column("folds").unwrap().i32().unwrap().into_no_null_iter().collect();
    let protocols: Vec<&str> = summary.column("protocol").unwrap().str().unwrap().iter().map(Option::unwrap).collect();
    assert_eq!(protocols, vec!["stl10-5k", "stl10-folds"]);
    assert_eq!(folds, vec![1, 2]);
}
