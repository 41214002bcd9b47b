//! No choice may depend on the test split: not the linear probe's hyper-parameters, not
//! kNN's centring, not the recipe a sweep picks. The same train features with entirely
//! different test files give the same searches and the same pick; only the test numbers
//! differ.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use jepa_eval::evaluate::{Probe, run_probe};
use jepa_eval::features::FeatureTable;
use jepa_eval::linear::LinearSettings;
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
    named_run(folder, dataset, "run")
}

fn named_run(folder: &Path, dataset: &Path, name: &str) -> Run {
    let recipe = Recipe::load(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo-fashion.toml")),
        &[format!("dataset=\"{}\"", dataset.display()), format!("name=\"{name}\"")],
    )
    .unwrap();
    Run { folder: RunFolder::new(folder.join(name)), recipe, pinned: None }
}

/// Three noisy classes in 5-D.
fn features(rows: usize, seed: u64, shift: f32) -> FeatureTable {
    separated_features(rows, seed, shift, 1.0)
}

/// Three classes in 5-D, each `separation` along its own axis, with unit noise.
fn separated_features(rows: usize, seed: u64, shift: f32, separation: f32) -> FeatureTable {
    let mut rng = KeyedRng::new(&[seed]);
    let mut table = FeatureTable::new(5);
    for id in 0..rows as u64 {
        let class = rng.below(3) as i32;
        let feature: Vec<f32> = (0..5)
            .map(|axis| if axis == class as usize { separation } else { 0.0 } + shift + rng.uniform(-1.0, 1.0) as f32)
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

    let knn = Probe::Knn(jepa_eval::knn::KnnSettings::default());
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

    let frame = jepa_eval::heldout::predictions_frame(&outcome.evaluations).unwrap();
    let summary = jepa_eval::scores::summary(polars::prelude::IntoLazy::lazy(frame)).collect().unwrap();
    let folds: Vec<i32> = summary.column("folds").unwrap().i32().unwrap().into_no_null_iter().collect();
    let protocols: Vec<&str> = summary.column("protocol").unwrap().str().unwrap().iter().map(Option::unwrap).collect();
    assert_eq!(protocols, vec!["stl10-5k", "stl10-folds"]);
    assert_eq!(folds, vec![1, 2]);
}

#[test]
fn the_recipe_a_sweep_picks_is_the_same_whatever_the_test_split_holds() {
    // Two "recipes": `good` has well-separated train features, `poor` barely separated ones.
    // Then the test split is swapped for one where `poor`'s test features are perfect and
    // `good`'s are noise: the test numbers turn around, the pick and every probe setting
    // do not.
    let folder = tempfile::tempdir().unwrap();
    let dataset = folder.path().join("dataset");
    write_manifest_dataset(&dataset, "fixture", None);
    let good = named_run(folder.path(), &dataset, "good");
    let poor = named_run(folder.path(), &dataset, "poor");
    let no_metadata = HashMap::new();
    let train_features = |run: &Run, separation: f32| {
        let path = run.folder.features(EncoderKind::Pretrained, "train");
        separated_features(600, 11, 0.0, separation).write(&path, &no_metadata).unwrap();
    };
    train_features(&good, 2.0);
    train_features(&poor, 0.4);
    let options = jepa_eval::evaluate::EvaluateOptions {
        linear: LinearSettings {
            learning_rates: vec![1e-2, 1e-1],
            weight_decays: vec![0.0],
            epochs: 3,
            batch_size: 64,
            ..LinearSettings::default()
        },
        ..Default::default()
    };
    let test_features = |run: &Run, separation: f32, seed: u64| {
        let path = run.folder.features(EncoderKind::Pretrained, "test");
        separated_features(300, seed, 0.0, separation).write(&path, &no_metadata).unwrap();
    };

    let mut picks = Vec::new();
    let mut scored = Vec::new();
    for (scenario, (good_test, poor_test)) in [(2.0, 0.4), (0.0, 20.0)].into_iter().enumerate() {
        test_features(&good, good_test, 20 + scenario as u64);
        test_features(&poor, poor_test, 30 + scenario as u64);
        let table = folder.path().join(format!("sweep-{scenario}.parquet"));
        let mut rows = Vec::new();
        for run in [&good, &poor] {
            let scores = jepa_report::sweep::score_features(run, EncoderKind::Pretrained, &options).unwrap();
            jepa_report::sweep::append(&table, jepa_report::sweep::row(run, &scores).unwrap()).unwrap();
            rows.push(scores);
        }
        picks.push(jepa_report::sweep::chosen_runs(&table, EncoderKind::Pretrained).unwrap());
        scored.push(rows);
    }
    assert_eq!(picks[0], vec![("ijepa".to_string(), "good".to_string())]);
    assert_eq!(picks[0], picks[1], "the pick saw the test split");
    // The test numbers did turn around: the test split was read, after the choice.
    assert!(scored[0][0].test_linear > scored[0][1].test_linear, "{:?}", scored[0]);
    assert!(scored[1][1].test_linear > scored[1][0].test_linear, "{:?}", scored[1]);
    assert!(scored[1][1].test_knn > scored[1][0].test_knn, "{:?}", scored[1]);
    // Everything chosen on validation is the same in both scenarios.
    for (first, second) in scored[0].iter().zip(&scored[1]) {
        let chosen = |s: &jepa_report::sweep::SweepScores| {
            (s.validation_linear, s.validation_knn, s.linear_lr, s.linear_weight_decay, s.knn_centre)
        };
        assert_eq!(chosen(first), chosen(second), "{} chose on the test split", first.run);
    }
}
