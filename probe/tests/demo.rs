//! `make demo` in small, on real Fashion-MNIST: ingest, a short I-JEPA run on a 6,000-image
//! slice of train, then the whole evaluation (both encoders, both probes, report), checked
//! for complete, well-formed outputs and probes that beat chance.
//!
//! With `JEPA_INTEROP_DIR` set (as `make test` sets it), the run is left in
//! `$JEPA_INTEROP_DIR/probe-demo/` for the Python polars check that follows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jepa_ingest::fashion_mnist::{DEFAULT_DIR, FashionMnist};
use jepa_ingest::{IngestOptions, Progress, ingest};
use jepa_probe::features::FeatureTable;
use jepa_probe::linear::LinearSettings;
use jepa_probe::pipeline::{EvaluateOptions, FeatureOptions, evaluate_all};
use jepa_probe::{EncoderKind, RunFolder};
use jepa_shared::{Dataset, DatasetWriter, Manifest, ShardLayout, SourceInfo};
use jepa_trainer::config::RunConfig;
use jepa_trainer::training::{TrainOptions, train};
use polars::prelude::*;

type Backend = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

const TRAIN_IMAGES: u64 = 6_000;
const TEST_IMAGES: u64 = 1_000;

fn fashion_dir() -> PathBuf {
    let dir = PathBuf::from(std::env::var("FASHION_MNIST_DIR").unwrap_or_else(|_| DEFAULT_DIR.into()));
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "{} lacks Fashion-MNIST: apt-get install dataset-fashion-mnist (or `make setup`)",
        dir.display()
    );
    dir
}

/// The first `TRAIN_IMAGES` / `TEST_IMAGES` images of the real splits, ids kept.
fn write_slice(full: &Path, out: &Path) {
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

fn column_f64(frame: &DataFrame, name: &str) -> Vec<f64> {
    frame.column(name).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect()
}

fn read(path: &Path) -> DataFrame {
    LazyFrame::scan_parquet(PlRefPath::new(path.to_str().unwrap()), ScanArgsParquet::default())
        .unwrap()
        .collect()
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(width >= 600 && height >= 400, "{}: {width}×{height}", path.display());
    assert!(bytes.len() > 5_000, "{}: {} bytes is an empty canvas", path.display(), bytes.len());
}

#[test]
fn small_demo_on_real_fashion_mnist_writes_a_complete_report_that_beats_chance() {
    let scratch = tempfile::tempdir().unwrap();
    let root = match std::env::var_os("JEPA_INTEROP_DIR") {
        Some(dir) => {
            let root = PathBuf::from(dir).join("probe-demo");
            let _ = std::fs::remove_dir_all(&root);
            root
        }
        None => scratch.path().to_path_buf(),
    };
    let full = root.join("fashion-mnist");
    let options = IngestOptions { out: full.clone(), layout: ShardLayout::default(), force: false };
    ingest(&FashionMnist::open(&fashion_dir()).unwrap(), &options, &Progress::hidden()).unwrap();
    let slice = root.join("fashion-mnist-slice");
    write_slice(&full, &slice);

    // The demo config, shortened: 40 steps of 64 images.
    let config = RunConfig::load(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo-fashion.toml")),
        &[
            format!("dataset=\"{}\"", slice.display()),
            "optim.max_steps=40".into(),
            "checkpoint.every_steps=1000".into(),
        ],
    )
    .unwrap();
    let runs = root.join("runs");
    let options = TrainOptions { runs_root: runs.clone(), resume: false, progress: false, recorder: None };
    let trained = train::<Backend>(config, &options, &Default::default()).unwrap();
    assert_eq!(trained.steps, 40);

    let run = RunFolder::open(&trained.run_dir).unwrap();
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
    let report = evaluate_all::<burn::backend::NdArray<f32>>(&run, &options, &Default::default()).unwrap();

    // Features: every image once, the encoder's width, ids and labels as the shards hold them.
    let manifest = Manifest::read(&slice).unwrap().unwrap();
    for encoder in EncoderKind::ALL {
        for (split, count) in [("train", TRAIN_IMAGES), ("test", TEST_IMAGES)] {
            let table = FeatureTable::read(&run.features_path(encoder, split)).unwrap();
            assert_eq!(table.len() as u64, count, "{encoder} {split}");
            assert_eq!(table.dim, 96, "micro ViT width");
            assert!(table.ids.iter().copied().eq(0..count), "{encoder} {split}: ids in order");
            assert!(table.values.iter().all(|v| v.is_finite()));
            assert_eq!(manifest.split(split).unwrap().count, count);
        }
    }
    let pretrained = FeatureTable::read(&run.features_path(EncoderKind::Pretrained, "test")).unwrap();
    let random = FeatureTable::read(&run.features_path(EncoderKind::Random, "test")).unwrap();
    assert_eq!(pretrained.labels, random.labels);
    assert_ne!(pretrained.values, random.values, "40 steps of training changed the encoder");

    // The summary: 4 rows (2 encoders × 2 probes), fractions, all well above chance (10%).
    let probe = run.probe_dir();
    let summary = read(&probe.join("summary.parquet"));
    assert_eq!(summary.height(), 4, "{summary}");
    for name in ["encoder", "probe", "protocol", "accuracy", "macro_f1"] {
        assert!(summary.column(name).is_ok(), "summary lacks `{name}`");
    }
    for (accuracy, macro_f1) in column_f64(&summary, "accuracy").into_iter().zip(column_f64(&summary, "macro_f1")) {
        assert!(accuracy > 0.4 && accuracy <= 1.0, "accuracy {accuracy} of\n{summary}");
        assert!(macro_f1 > 0.3 && macro_f1 <= 1.0, "macro F1 {macro_f1} of\n{summary}");
    }
    assert_eq!(report.summary.len(), 4);

    // Predictions: 1,000 per (encoder, probe); the confusion matrix sums to them; 10 classes each.
    let predictions = read(&probe.join("predictions.parquet"));
    assert_eq!(predictions.height() as u64, 4 * TEST_IMAGES);
    let confusion = read(&probe.join("confusion.parquet"));
    assert_eq!(column_f64(&confusion, "count").iter().sum::<f64>() as u64, 4 * TEST_IMAGES);
    let per_class = read(&probe.join("per_class.parquet"));
    assert_eq!(per_class.height(), 4 * 10, "{per_class}");
    assert!(per_class.column("class_name").unwrap().str().unwrap().iter().any(|name| name == Some("Ankle boot")));
    let selection = read(&probe.join("selection").join("pretrained.parquet"));
    assert_eq!(selection.height(), 2);

    let markdown = std::fs::read_to_string(&report.markdown).unwrap();
    for needle in
        ["## Headline", "| fashion-mnist | linear | pretrained |", "| fashion-mnist | knn | random |", "Ankle boot"]
    {
        assert!(markdown.contains(needle), "report.md lacks `{needle}`:\n{markdown}");
    }
    for plot in ["training_curves.png", "confusion.png", "per_class.png"] {
        assert_png(&probe.join(plot));
        assert!(markdown.contains(plot), "report.md does not show {plot}");
    }
}
