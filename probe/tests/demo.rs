//! `make demo` in small, on real Fashion-MNIST: ingest, a short I-JEPA run on a 6,000-image
//! slice of train, then the whole evaluation (both encoders, both probes, report), checked
//! for complete, well-formed outputs and probes that beat chance.
//!
//! `make compare` in small, in the same way: the compare config trained as I-JEPA, as I-JEPA
//! with pixel targets and as MAE for 30 steps each, then linear, kNN and fine-tuning of each
//! and of the random-init encoder, the summary, the bar chart and the reconstructions. (One
//! test binary for both: each more links and optimises the whole stack again.)
//!
//! With `JEPA_INTEROP_DIR` set (as `make test` sets it), the runs are left in
//! `$JEPA_INTEROP_DIR/{probe-demo,compare}/` for the Python polars checks that follow.

mod common;

use std::path::Path;

use common::{TEST_IMAGES, TRAIN_IMAGES, assert_png, column_f64, read, real_slice, scratch_root};
use jepa_eval::evaluate::{EvaluateOptions, Probe, run_probe, write_outcome};
use jepa_eval::features::{FeatureOptions, FeatureTable, write_features};
use jepa_eval::finetune::FinetuneSettings;
use jepa_eval::knn::KnnSettings;
use jepa_eval::linear::LinearSettings;
use jepa_report::compare::{CompareOptions, compare};
use jepa_report::pipeline::evaluate_all;
use jepa_report::report::write_report;
use jepa_shared::Manifest;
use jepa_trainer::EncoderRole;
use jepa_trainer::interop::Hints;
use jepa_trainer::training::{TrainOptions, train};
use jepa_trainer::{EncoderKind, Recipe, ReportFile, Run};

type Backend = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

#[test]
fn small_demo_on_real_fashion_mnist_writes_a_complete_report_that_beats_chance() {
    let (_scratch, root) = scratch_root("probe-demo");
    let slice = real_slice(&root);

    // The demo config, shortened: 40 steps of 64 images.
    let config = Recipe::load(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo-fashion.toml")),
        &[
            format!("dataset=\"{}\"", slice.display()),
            "optim.max_steps=40".into(),
            "checkpoint.every_steps=1000".into(),
        ],
    )
    .unwrap();
    let runs = root.join("runs");
    let options = TrainOptions { runs_root: runs.clone(), ..TrainOptions::default() };
    let trained = train::<Backend>(config, &options, &Default::default()).unwrap();
    assert_eq!(trained.steps, 40);

    let run = Run::open(&trained.run_dir).unwrap();
    let options = EvaluateOptions {
        features: FeatureOptions { progress: false, ..FeatureOptions::default() },
        linear: LinearSettings {
            learning_rates: vec![3e-3, 3e-2],
            weight_decays: vec![0.0],
            epochs: 10,
            ..LinearSettings::default()
        },
        ..EvaluateOptions::default()
    };
    let evaluation = evaluate_all::<Backend>(&run, &options, &Default::default()).unwrap();
    let report = &evaluation.report;

    // Features: every image once, the encoder's width (the pixels': 28 × 28), ids and labels
    // as the shards hold them; an I-JEPA run has its target and its context encoder.
    let manifest = Manifest::read(&slice).unwrap().unwrap();
    assert_eq!(run.encoder_kinds(), EncoderKind::ALL);
    for encoder in EncoderKind::ALL {
        for (split, count) in [("train", TRAIN_IMAGES), ("test", TEST_IMAGES)] {
            let table = FeatureTable::read(&run.folder.features(encoder, split)).unwrap();
            assert_eq!(table.len() as u64, count, "{encoder} {split}");
            assert_eq!(table.dim, if encoder == EncoderKind::Pixels { 784 } else { 96 }, "{encoder} width");
            assert!(table.ids.iter().copied().eq(0..count), "{encoder} {split}: ids in order");
            assert!(table.values.iter().all(|v| v.is_finite()));
            assert_eq!(manifest.split(split).unwrap().count, count);
        }
    }
    let pretrained = FeatureTable::read(&run.folder.features(EncoderKind::Pretrained, "test")).unwrap();
    let random = FeatureTable::read(&run.folder.features(EncoderKind::Random, "test")).unwrap();
    let context = FeatureTable::read(&run.folder.features(EncoderKind::Context, "test")).unwrap();
    assert_eq!(pretrained.labels, random.labels);
    assert_ne!(pretrained.values, random.values, "40 steps of training changed the encoder");
    assert_ne!(pretrained.values, context.values, "the EMA target encoder is not the context encoder");
    // The pixels are standardised with the run's statistics, measured on the train split.
    let pixels = FeatureTable::read(&run.folder.features(EncoderKind::Pixels, "train")).unwrap();
    let count = pixels.values.len() as f64;
    let mean = pixels.values.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
    let std = (pixels.values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / count).sqrt();
    assert!(mean.abs() < 0.05 && (std - 1.0).abs() < 0.05, "pixel features: mean {mean}, std {std}");

    // The summary: 8 rows (4 encoders × 2 probes), fractions, all well above chance (10%).
    let summary = read(&run.folder.report(ReportFile::Summary));
    assert_eq!(summary.height(), 8, "{summary}");
    for name in ["encoder", "checkpoint", "probe", "protocol", "accuracy", "macro_f1"] {
        assert!(summary.column(name).is_ok(), "summary lacks `{name}`");
    }
    // Each row names where its encoder came from: both trained ones from the last step.
    for row in &report.summary {
        let expected = match row.encoder.as_str() {
            "pretrained" | "context" => "step-00000040",
            "random" => "init",
            _ => "none",
        };
        assert_eq!(row.checkpoint, expected, "{row:?}");
    }
    assert_eq!(report.mixed_checkpoints, None);
    for (accuracy, macro_f1) in column_f64(&summary, "accuracy").into_iter().zip(column_f64(&summary, "macro_f1")) {
        assert!(accuracy > 0.4 && accuracy <= 1.0, "accuracy {accuracy} of\n{summary}");
        assert!(macro_f1 > 0.3 && macro_f1 <= 1.0, "macro F1 {macro_f1} of\n{summary}");
    }
    assert_eq!(report.summary.len(), 8);
    let encoders: Vec<&str> = report.summary.iter().map(|row| row.encoder.as_str()).collect();
    assert_eq!(encoders[..4], ["pretrained", "context", "random", "pixels"], "the headline's order");

    // Predictions: 1,000 per (encoder, probe); the confusion matrix sums to them; 10 classes each.
    let predictions = read(&run.folder.report(ReportFile::Predictions));
    assert_eq!(predictions.height() as u64, 8 * TEST_IMAGES);
    let confusion = read(&run.folder.report(ReportFile::Confusion));
    assert_eq!(column_f64(&confusion, "count").iter().sum::<f64>() as u64, 8 * TEST_IMAGES);
    let per_class = read(&run.folder.report(ReportFile::PerClass));
    assert_eq!(per_class.height(), 8 * 10, "{per_class}");
    assert!(per_class.column("class_name").unwrap().str().unwrap().iter().any(|name| name == Some("Ankle boot")));
    let probe = run.folder.probe_dir();
    // The linear search: the two learning rates given, and more wherever the best sat on an
    // edge; kNN tried both centrings; each chose one.
    let selection = read(&probe.join("selection").join("pretrained.parquet"));
    assert!(selection.height() >= 2, "{selection}");
    assert!(selection.column("edge").is_ok(), "{selection}");
    let searched_at = selection.column("checkpoint").unwrap().str().unwrap().get(0).map(String::from);
    assert_eq!(searched_at.as_deref(), Some("step-00000040"), "{selection}");
    let knn_selection = read(&probe.join("selection").join("pretrained-knn.parquet"));
    assert_eq!(knn_selection.height(), 2, "{knn_selection}");
    for search in [&selection, &knn_selection] {
        let chosen = search.column("chosen").unwrap().bool().unwrap().iter().filter(|c| *c == Some(true)).count();
        assert_eq!(chosen, 1, "{search}");
    }

    let markdown = std::fs::read_to_string(&report.markdown).unwrap();
    for needle in [
        "## Headline",
        "| fashion-mnist | linear | pretrained |",
        "| fashion-mnist | knn | random |",
        "| fashion-mnist | linear | pixels |",
        "| fashion-mnist | knn | context |",
        "## kNN centring",
        "Ankle boot",
    ] {
        assert!(markdown.contains(needle), "report.md lacks `{needle}`:\n{markdown}");
    }
    // The page states the settings the probes ran with, read from what they wrote: the
    // defaults here, and another k once kNN runs with one.
    let held_out = format!("{} of train's {} images (10%) held out", TRAIN_IMAGES / 10, TRAIN_IMAGES);
    assert!(markdown.contains("k = 20, votes exp(sim / 0.07)") && markdown.contains(&held_out), "{markdown}");
    let knn = Probe::Knn(KnnSettings { k: 7, temperature: 0.1, ..KnnSettings::default() });
    for encoder in [EncoderKind::Pretrained, EncoderKind::Context, EncoderKind::Random, EncoderKind::Pixels] {
        let outcome = run_probe(&run, encoder, &knn, &[]).unwrap();
        write_outcome(&run, encoder, &knn, &outcome).unwrap();
    }
    write_report(&run).unwrap();
    let rewritten = std::fs::read_to_string(&report.markdown).unwrap();
    assert!(rewritten.contains("k = 7, votes exp(sim / 0.1)") && !rewritten.contains("k = 20"), "{rewritten}");
    for plot in
        ["training_curves.png", "confusion.png", "per_class.png", "masks.png", "tsne.png", "predictor_retrieval.png"]
    {
        assert_png(&probe.join(plot));
        assert!(markdown.contains(plot), "report.md does not show {plot}");
    }
    let drawn: Vec<_> = evaluation.figures.iter().map(|figure| figure.path.clone()).collect();
    assert_eq!(drawn, ["masks.png", "tsne.png", "predictor_retrieval.png"].map(|name| probe.join(name)));

    // The self-contained page: every figure inside it, none linked.
    let html = std::fs::read_to_string(&report.html).unwrap();
    assert_eq!(html.matches("<img src=\"data:image/png;base64,").count(), 6, "six figures embedded");
    assert!(!html.contains(".png\""), "report.html links a file");
    assert!(html.contains("Ankle boot") && html.contains("Predictor retrieval"));

    // t-SNE: a point per test image and encoder, with its class, for polars.
    let tsne = read(&probe.join("tsne.parquet"));
    assert_eq!(tsne.height() as u64, 2 * TEST_IMAGES, "{tsne}");
    assert!(column_f64(&tsne, "x").iter().chain(&column_f64(&tsne, "y")).all(|v| v.is_finite()));
    assert!(tsne.column("class_name").unwrap().str().unwrap().iter().any(|name| name == Some("Ankle boot")));

    // Retrieval: the trained and the random-init predictor, each over every predicted patch of
    // 200 test images ranked among all their patches.
    let patches = run.recipe.encoder().num_patches();
    let retrieval = jepa_report::retrieval::read_scores(&run).unwrap();
    assert_eq!(retrieval.iter().map(|score| score.predictor.as_str()).collect::<Vec<_>>(), ["trained", "random"]);
    for score in &retrieval {
        assert_eq!((score.images, score.candidates), (200, 200 * patches));
        assert!(score.predictions > 200 * 4, "{score:?}");
        assert!((0.0..=1.0).contains(&score.top1) && score.top1 <= score.top5 && score.top5 <= 1.0, "{score:?}");
    }
    assert!(retrieval[0].top5 > retrieval[1].top5, "40 steps taught the predictor nothing: {retrieval:?}");

    // Export → import → features: bitwise the trained encoder's.
    let device = Default::default();
    let exported = root.join("exported").join("encoder.safetensors");
    jepa_eval::interop::export::<Backend>(&run, None, None, &exported, &device).unwrap();
    let imported_root = runs.join("imported");
    let imported =
        jepa_eval::interop::import::<Backend>(&imported_root, &exported, Some(&slice), &Hints::default(), &device)
            .unwrap();
    assert!(imported.is_imported());
    let options = FeatureOptions { progress: false, ..FeatureOptions::default() };
    write_features::<Backend>(&imported, EncoderKind::Pretrained, &options, &device).unwrap();
    let round_trip = FeatureTable::read(&imported.folder.features(EncoderKind::Pretrained, "test")).unwrap();
    assert_eq!(round_trip.ids, pretrained.ids);
    assert!(
        round_trip.values.iter().zip(&pretrained.values).all(|(a, b)| a.to_bits() == b.to_bits()),
        "features of the re-imported encoder differ from the original's"
    );
    // The imported run is refused what it cannot have, and a trained run is not overwritten.
    let error = imported.encoder_in_role::<Backend>(EncoderKind::Pretrained, Some(EncoderRole::Trained), None, &device);
    assert!(error.err().unwrap().to_string().contains("imported encoder"));
    let error =
        jepa_eval::interop::import::<Backend>(run.folder.root(), &exported, Some(&slice), &Hints::default(), &device);
    assert!(error.err().unwrap().to_string().contains("trained run"));
    // A file that is not an encoder: one sentence naming it, and no run folder.
    let bogus = root.join("bogus.safetensors");
    std::fs::write(&bogus, b"this is not a tensor file at all").unwrap();
    let refused = runs.join("refused");
    let error = jepa_eval::interop::import::<Backend>(&refused, &bogus, Some(&slice), &Hints::default(), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("bogus.safetensors"), "{error}");
    assert!(!refused.exists(), "a refused import left {}", refused.display());

    // timm loads the export and agrees with the probe; an official I-JEPA checkpoint written
    // by PyTorch imports. Needs a Python with torch, timm, safetensors and pyarrow: `make
    // test-interop` gives one in JEPA_INTEROP_PYTHON.
    if let Ok(python) = std::env::var("JEPA_INTEROP_PYTHON") {
        check_interop_in_python(&python, run.folder.root(), &root.join("interop"));
    }
}

/// `scripts/check_interop.py` on `run` with this build's probe binary.
fn check_interop_in_python(python: &str, run: &Path, work: &Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/check_interop.py");
    let output = std::process::Command::new(python)
        .args([script, "--probe", env!("CARGO_BIN_EXE_probe"), "--run"])
        .arg(run)
        .arg("--work")
        .arg(work)
        .output()
        .unwrap_or_else(|error| panic!("{python}: {error}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{text}");
    assert!(output.status.success(), "check_interop.py failed:\n{text}");
    assert!(text.contains("check_interop: ok"), "{text}");
}

/// Every registered method, in the order `make compare` trains them.
const METHODS: [&str; 3] = ["ijepa", "ijepa-pixels", "mae"];

fn string_column(frame: &polars::prelude::DataFrame, name: &str) -> Vec<String> {
    frame.column(name).unwrap().str().unwrap().iter().map(|value| value.unwrap().to_string()).collect()
}

#[test]
fn small_comparison_of_every_method_and_random_on_real_fashion_mnist() {
    let (_scratch, root) = scratch_root("compare");
    let slice = real_slice(&root);
    let runs = root.join("runs");
    let mut folders = Vec::new();
    for method in METHODS {
        // Each method's own recipe where it has one, as `make compare` picks them.
        let configs = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs"));
        let own = configs.join(format!("compare-fashion-{method}.toml"));
        let config = Recipe::load(
            &if own.exists() { own } else { configs.join("compare-fashion.toml") },
            &[
                format!("dataset=\"{}\"", slice.display()),
                format!("name={method}"),
                format!("method={method}"),
                "optim.max_steps=30".into(),
                "checkpoint.every_steps=1000".into(),
            ],
        )
        .unwrap();
        let options = TrainOptions { runs_root: runs.clone(), ..TrainOptions::default() };
        let trained = train::<Backend>(config, &options, &Default::default()).unwrap();
        assert_eq!(trained.steps, 30);
        folders.push(Run::open(&trained.run_dir).unwrap());
    }

    let options = CompareOptions {
        evaluate: EvaluateOptions {
            features: FeatureOptions { progress: false, ..FeatureOptions::default() },
            linear: LinearSettings {
                learning_rates: vec![3e-2],
                weight_decays: vec![0.0],
                epochs: 10,
                ..LinearSettings::default()
            },
            ..EvaluateOptions::default()
        },
        finetune: FinetuneSettings {
            learning_rates: vec![1e-3, 3e-4],
            epochs: 2,
            train_images: Some(1_000),
            ..FinetuneSettings::default()
        },
    };
    let out = root.join("compare-out");
    let comparison = compare::<Backend>(&folders, &out, &options, &Default::default()).unwrap();

    // 3 methods and random × 3 protocols, pixels and I-JEPA's context encoder × 2 (frozen
    // only), with the columns the comparison promises.
    let summary = read(&comparison.summary);
    assert_eq!(summary.height(), 16, "{summary}");
    let methods = string_column(&summary, "method");
    let encoders = string_column(&summary, "encoder");
    let protocols = string_column(&summary, "protocol");
    let mut expected: Vec<(&str, &str, &str)> = Vec::new();
    for (method, encoder) in METHODS.map(|m| (m, "pretrained")).into_iter().chain([("random", "random")]) {
        expected.extend(["linear", "knn", "finetune"].map(|protocol| (method, encoder, protocol)));
    }
    for (method, encoder) in [("ijepa", "context"), ("pixels", "pixels")] {
        expected.extend(["linear", "knn"].map(|protocol| (method, encoder, protocol)));
    }
    for (method, encoder, protocol) in expected {
        let rows = (0..16)
            .filter(|&row| methods[row] == method && encoders[row] == encoder && protocols[row] == protocol)
            .count();
        assert_eq!(rows, 1, "{method} {encoder} {protocol}:\n{summary}");
    }
    let steps = column_f64(&summary, "steps");
    let baseline = |row: usize| ["random", "pixels"].contains(&methods[row].as_str());
    assert!((0..16).all(|row| (steps[row] == 30.0) != baseline(row)), "{summary}");
    // Above chance (10%) everywhere; 30 steps of pre-training and 900 fine-tuning images for
    // 2 epochs leave fine-tuning far below the frozen probes on 6,000 images.
    let scores = column_f64(&summary, "accuracy").into_iter().zip(column_f64(&summary, "macro_f1"));
    for ((accuracy, macro_f1), protocol) in scores.zip(&protocols) {
        let floor = if protocol == "finetune" { 0.15 } else { 0.35 };
        assert!(accuracy > floor && accuracy <= 1.0, "{protocol} accuracy {accuracy} of\n{summary}");
        assert!(macro_f1 > 0.1 && macro_f1 <= 1.0, "{protocol} macro F1 {macro_f1} of\n{summary}");
    }
    let objectives = string_column(&summary, "objective");
    assert!(objectives.iter().zip(&methods).all(|(objective, method)| match method.as_str() {
        "ijepa" => objective == "ijepa smooth_l1",
        "ijepa-pixels" => objective == "ijepa-pixels norm_pix",
        "mae" => objective == "mae norm_pix",
        _ => objective == "none",
    }));
    assert_png(&comparison.chart);
    let markdown = std::fs::read_to_string(&comparison.markdown).unwrap();
    for needle in [
        "| fashion-mnist | finetune | mae | mae norm_pix | 30 steps,",
        "| fashion-mnist | linear | ijepa (context) | ijepa smooth_l1 |",
        "| fashion-mnist | linear | pixels | none | – |",
        "Shared settings where the recipes differ:",
        "| `optim.epochs` | 3 | 4 | 6 |",
    ] {
        assert!(markdown.contains(needle), "compare.md lacks `{needle}`:\n{markdown}");
    }

    // Fine-tuning evaluated every test image once, and chose from 2 lrs × 2 epochs on 100
    // validation images carved from its 1,000.
    let mae = &folders[2];
    let predictions = read(&mae.folder.probe_dir().join("predictions").join("pretrained-finetune.parquet"));
    assert_eq!(predictions.height() as u64, TEST_IMAGES);
    let selection = read(&mae.folder.probe_dir().join("selection").join("pretrained-finetune.parquet"));
    assert_eq!(selection.height(), 4, "{selection}");
    assert_eq!(column_f64(&selection, "validation_rows"), vec![100.0; 4]);
    let chosen = selection.column("chosen").unwrap().bool().unwrap().iter().filter(|c| *c == Some(true)).count();
    assert_eq!(chosen, 1);
    // Each run has its own report; the MAE one says which encoder it evaluated.
    let report = std::fs::read_to_string(mae.folder.report(ReportFile::Markdown)).unwrap();
    assert!(report.contains("the MAE run's encoder") && report.contains("| fashion-mnist | finetune | pretrained |"));
    assert_png(&mae.folder.report(ReportFile::TrainingCurves));

    let figure = root.join("mae-reconstruction.png");
    jepa_report::reconstruction::draw::<Backend>(mae, None, 4, &figure, &Default::default()).unwrap();
    let bytes = std::fs::read(&figure).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // 3 columns and 4 rows of 112-px pictures with 8-px gaps, under a title and column titles.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(width >= 3 * 112 + 4 * 8 && height > 4 * 112 + 5 * 8 + 40, "{width}×{height}");

    // I-JEPA with pixel targets draws what its predictor puts in the target blocks: the
    // context as it was, every target patch predicted, grey elsewhere.
    let pixels = &folders[1];
    let rows = jepa_report::reconstruction::reconstruct::<Backend>(pixels, None, 4, &Default::default()).unwrap();
    let masks = pixels.recipe.method_info().masks().sample_batch(pixels.recipe.seed(), 0, 0, 4);
    let patch_of = |index: usize| ((index / 28 / 4) * 7 + (index % 28) / 4) as u32;
    for (row, pictures) in rows.iter().enumerate() {
        let [original, seen, rebuilt] = [&pictures[0], &pictures[1], &pictures[2]];
        let targets: Vec<u32> = masks.targets[row].iter().flatten().copied().collect();
        let mut predicted_differs = false;
        for index in 0..28 * 28 {
            let patch = patch_of(index);
            if masks.context[row].contains(&patch) {
                assert_eq!(
                    (seen.pixels[index], rebuilt.pixels[index]),
                    (original.pixels[index], original.pixels[index])
                );
            } else {
                assert_eq!(seen.pixels[index], [128; 3], "outside the context the encoder saw nothing");
                if targets.contains(&patch) {
                    predicted_differs |= rebuilt.pixels[index] != original.pixels[index];
                } else {
                    assert_eq!(rebuilt.pixels[index], [128; 3], "no prediction outside the targets");
                }
            }
        }
        assert!(predicted_differs, "row {row}: the target patches are predictions, not copies");
    }

    // An I-JEPA run predicts features: it has no reconstruction figure.
    let error =
        jepa_report::reconstruction::draw::<Backend>(&folders[0], None, 4, &figure, &Default::default()).unwrap_err();
    assert!(error.to_string().contains("whose targets are features, not pixels"), "{error}");
}
