//! The training loop end to end on a small fixture dataset: run folder contents, exact
//! resume, schedules in the metrics table, and the stop on a non-finite loss; and the
//! I-JEPA objective on fixed tensors (`objective`). One test binary, so Burn's generic code
//! is compiled once for both.

#[path = "../common/mod.rs"]
mod common;
mod objective;
mod seed;

use std::path::Path;

use burn::backend::{Autodiff, NdArray};
use jepa_shared::metrics_table::MetricsTable;
use jepa_trainer::registry::{AnyMethod, METHOD_NAMES};
use jepa_trainer::training::{METRIC_COLUMNS, TrainError, TrainOptions, train};
use jepa_trainer::{Recipe, RunFolder};

use common::RUN;

type B = Autodiff<NdArray<f32>>;

fn config(dir: &Path, overrides: &[&str]) -> Recipe {
    let path = dir.join("run.toml");
    std::fs::write(&path, RUN).unwrap();
    let mut all = vec![format!("dataset={:?}", dir.join("data").display().to_string())];
    all.extend(overrides.iter().map(|text| text.to_string()));
    Recipe::load(&path, &all).unwrap()
}

fn write_dataset(root: &Path, count: u64, channels: u8, rows_per_group: usize, groups_per_file: usize) {
    jepa_shared::fixture::write_dataset(root, count, channels, rows_per_group, groups_per_file).unwrap();
}

fn options(dir: &Path, resume: bool) -> TrainOptions {
    TrainOptions { runs_root: dir.join("runs"), resume, ..TrainOptions::default() }
}

/// The overrides that turn [`RUN`] into an MAE run with a small decoder.
const MAE: [&str; 2] = ["method=mae", "mae.decoder={ dim = 16, depth = 1, heads = 2 }"];

#[test]
fn resume_continues_the_same_loss_curve_bit_for_bit() {
    resume_matches_an_uninterrupted_run(&[]);
}

#[test]
fn a_resumed_mae_run_continues_the_same_loss_curve() {
    let dir = resume_matches_an_uninterrupted_run(&MAE);
    // MAE keeps no target encoder and writes only the shared metric columns.
    let checkpoint = dir.path().join("runs/split/checkpoints/step-00000008");
    assert!(checkpoint.join("model.bin").is_file() && checkpoint.join("optimizer.bin").is_file());
    assert!(!checkpoint.join("target_encoder.bin").exists());
    let table = MetricsTable::read(&dir.path().join("runs/split/metrics.parquet")).unwrap();
    assert_eq!(table.columns, METRIC_COLUMNS);
    let log = std::fs::read_to_string(dir.path().join("runs/split/train.log")).unwrap();
    assert!(log.contains("started at step 0 of 3 (mae;") && log.contains("resumed at step 3 of 8 (mae;"), "{log}");
}

/// The overrides that turn [`RUN`] into an I-JEPA run with pixel targets, on the same grid.
const IJEPA_PIXELS: [&str; 3] = [
    "method=ijepa-pixels",
    "ijepa-pixels.predictor={ dim = 16, depth = 1, heads = 2 }",
    "ijepa-pixels.masks={ num_targets = 2, min_keep = 2 }",
];

#[test]
fn a_resumed_ijepa_pixels_run_continues_the_same_loss_curve() {
    let dir = resume_matches_an_uninterrupted_run(&IJEPA_PIXELS);
    // No target encoder; the shared columns and the masks' relaxations.
    let checkpoint = dir.path().join("runs/split/checkpoints/step-00000008");
    assert!(checkpoint.join("model.bin").is_file() && checkpoint.join("optimizer.bin").is_file());
    assert!(!checkpoint.join("target_encoder.bin").exists());
    let table = MetricsTable::read(&dir.path().join("runs/split/metrics.parquet")).unwrap();
    let mut expected: Vec<&str> = METRIC_COLUMNS.to_vec();
    expected.push("relaxed_masks");
    assert_eq!(table.columns, expected);
    let log = std::fs::read_to_string(dir.path().join("runs/split/train.log")).unwrap();
    assert!(log.contains("(ijepa-pixels;"), "{log}");
    let resolved = std::fs::read_to_string(dir.path().join("runs/split/config.toml")).unwrap();
    assert!(resolved.contains("[ijepa-pixels.predictor]") && !resolved.contains("[ijepa.predictor]"), "{resolved}");
}

/// Trains 8 steps in one go and as 3 + 5 with a resume, with `method` overrides; returns
/// the folder holding both runs.
fn resume_matches_an_uninterrupted_run(method: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // 40 images, batch 8: 5 optimizer steps per epoch, 10 in the run.
    write_dataset(&dir.path().join("data"), 40, 3, 10, 2);
    let device = Default::default();
    let config = |overrides: &[&str]| {
        let all: Vec<&str> = method.iter().chain(overrides).copied().collect();
        config(dir.path(), &all)
    };

    let whole = train::<B>(config(&["name=whole", "optim.max_steps=8"]), &options(dir.path(), false), &device).unwrap();
    assert_eq!(whole.steps, 8);
    assert_eq!(whole.losses.len(), 8);

    let first = train::<B>(config(&["name=split", "optim.max_steps=3"]), &options(dir.path(), false), &device).unwrap();
    assert_eq!(first.steps, 3);
    // Starting again under the same name without --resume is refused.
    let again = train::<B>(config(&["name=split"]), &options(dir.path(), false), &device);
    assert!(matches!(again, Err(TrainError::RunExists { .. })));
    let rest = train::<B>(config(&["name=split", "optim.max_steps=8"]), &options(dir.path(), true), &device).unwrap();
    assert_eq!(rest.steps, 8);
    let resumed: Vec<f64> = first.losses.iter().chain(&rest.losses).copied().collect();
    assert_eq!(resumed, whole.losses, "bitwise on CPU");

    // The metrics table of the resumed run is the same curve, one row per optimizer step.
    let whole_table = MetricsTable::read(&whole.run_dir.join("metrics.parquet")).unwrap();
    let split_table = MetricsTable::read(&rest.run_dir.join("metrics.parquet")).unwrap();
    assert_eq!(split_table.steps, (0..8).collect::<Vec<_>>());
    assert_eq!(split_table.column("loss"), whole_table.column("loss"));
    assert_eq!(split_table.column("lr"), whole_table.column("lr"));
    // The curve is a training curve: the loss moved.
    assert!(whole.losses.iter().any(|loss| *loss != whole.losses[0]), "{:?}", whole.losses);
    dir
}

#[test]
fn the_run_folder_holds_config_metrics_checkpoints_and_a_log() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), 40, 3, 10, 2);
    let report = train::<B>(config(dir.path(), &[]), &options(dir.path(), false), &Default::default()).unwrap();
    assert_eq!(report.steps, 10);
    let run = &report.run_dir;

    // The resolved config: loadable, with the measured pixel statistics filled in.
    let resolved = Recipe::load(&RunFolder::new(run).config(), &[]).unwrap();
    assert_eq!(resolved.pixel_stats().map(|(mean, std)| (mean.len(), std.len())), Some((3, 3)));
    assert!(resolved.notes().is_empty(), "the resolved config is in the current layout: {:?}", resolved.notes());

    let table = MetricsTable::read(&run.join("metrics.parquet")).unwrap();
    for column in METRIC_COLUMNS {
        assert!(table.columns.iter().any(|name| name == column), "missing {column}");
    }
    assert_eq!(table.steps.len(), 10);
    // Schedules in the table equal their closed forms: 5 steps per epoch, 5 warmup steps.
    let lr = table.column("lr").unwrap();
    assert!((lr[0] - 1e-4).abs() < 1e-12 && (lr[5] - 1e-3).abs() < 1e-12, "{lr:?}");
    let momentum = table.column("ema_momentum").unwrap();
    assert!((momentum[5] - (0.996 + 0.004 * 0.5)).abs() < 1e-12, "{momentum:?}");
    let epochs = table.column("epoch").unwrap();
    assert_eq!(epochs, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    assert!(table.column("target_feature_std").unwrap().iter().all(|std| *std > 0.0));
    assert!(table.column("grad_norm").unwrap().iter().all(|norm| norm.is_finite() && *norm > 0.0));
    assert!(table.column("images_per_second").unwrap().iter().all(|rate| *rate > 0.0));

    // Checkpoints at steps 3, 6, 9 and the last one, each complete.
    let names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["step-00000003", "step-00000006", "step-00000009", "step-00000010"]);
    for file in ["model.bin", "target_encoder.bin", "optimizer.bin", "state.json"] {
        assert!(run.join("checkpoints/step-00000010").join(file).is_file(), "{file}");
    }
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("started at step 0") && log.contains("finished at step 10"), "{log}");
}

#[test]
fn the_cpu_estimate_counts_the_steps_training_runs_and_scales_its_timed_images() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), 40, 3, 10, 2);
    for overrides in [&["optim.accumulation=1"][..], &["optim.accumulation=2", "optim.max_steps=3"]] {
        let estimate = jepa_trainer::timing::on_the_cpu(&config(dir.path(), overrides)).unwrap();
        let name = format!("name=counted{}", overrides.len());
        let mut with_name = overrides.to_vec();
        with_name.push(&name);
        let trained = train::<B>(config(dir.path(), &with_name), &options(dir.path(), false), &Default::default());
        let trained = trained.unwrap();
        assert_eq!(estimate.steps, trained.steps, "{overrides:?}");
        let accumulation = if overrides[0].ends_with('2') { 2 } else { 1 };
        assert_eq!((estimate.images_per_step, estimate.images_timed), (8 * accumulation, [4, 8]));
        assert!(estimate.seconds_per_step > 0.0 && estimate.seconds_per_step.is_finite());
        assert_eq!(estimate.run_seconds(), estimate.seconds_per_step * trained.steps as f64);
    }
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), 40, 3, 10, 2);
    // An absurd learning rate blows the weights up after the first update.
    let overrides = ["optim.lr_start=1e30", "optim.lr_peak=1e30", "optim.warmup_epochs=0", "checkpoint.every_steps=1"];
    let result = train::<B>(config(dir.path(), &overrides), &options(dir.path(), false), &Default::default());
    match result {
        Err(TrainError::NonFinite { step, last_checkpoint, .. }) => {
            assert!(step >= 1);
            let last = last_checkpoint.expect("steps before it were checkpointed");
            assert!(last.ends_with(format!("step-{step:08}")), "{last:?} at step {step}");
            assert!(!dir.path().join(format!("runs/tiny/checkpoints/step-{:08}", step + 1)).exists());
        }
        other => panic!("expected a non-finite loss, got {other:?}"),
    }
    let log = std::fs::read_to_string(dir.path().join("runs/tiny/train.log")).unwrap();
    assert!(log.contains("stopped: loss is"), "{log}");
}

#[test]
fn the_shipped_configs_load_and_describe_the_documented_models() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let stl10 = Recipe::load(&root.join("stl10-vit-b16.toml"), &[]).unwrap();
    let vit = stl10.encoder();
    assert_eq!((vit.dim, vit.depth, vit.heads, vit.image_size_px, vit.patch_size_px), (768, 12, 12, 224, 16));
    let AnyMethod::IJepa(ijepa) = stl10.method() else { panic!("the STL-10 recipe is I-JEPA's") };
    assert_eq!((ijepa.settings.predictor.depth, ijepa.settings.predictor.dim), (6, 384));
    let config = stl10.config();
    assert_eq!((config.loader.batch_size, config.optim.accumulation), (64, 4));
    assert_eq!((config.optim.lr_peak, config.optim.warmup_epochs, config.optim.epochs), (1e-3, 15.0, 50));
    let demo = Recipe::load(&root.join("demo-fashion.toml"), &[]).unwrap();
    assert_eq!(demo.encoder().grid(), 7);
    // The comparison's config trains every registered method.
    for method in METHOD_NAMES {
        let recipe = Recipe::load(&root.join("compare-fashion.toml"), &[format!("method={method}")]).unwrap();
        assert_eq!(recipe.method_info().name(), *method);
        assert!(recipe.notes().is_empty(), "{method}: {:?}", recipe.notes());
    }
    // A method's own comparison file (`make compare` prefers it) trains that method on the
    // shared recipe's data, seed, loader and encoder, so only its method and budget differ.
    let shared = Recipe::load(&root.join("compare-fashion.toml"), &[]).unwrap();
    let mut own_files = 0;
    for method in METHOD_NAMES {
        let own = root.join(format!("compare-fashion-{method}.toml"));
        if !own.exists() {
            continue;
        }
        own_files += 1;
        let recipe = Recipe::load(&own, &[]).unwrap();
        assert_eq!(recipe.method_info().name(), *method, "{}", own.display());
        assert!(recipe.notes().is_empty(), "{method}: {:?}", recipe.notes());
        let (mine, theirs) = (recipe.config(), shared.config());
        assert_eq!(
            (mine.seed, &mine.dataset, &mine.data, &mine.loader, &mine.encoder),
            (theirs.seed, &theirs.dataset, &theirs.data, &theirs.loader, &theirs.encoder),
            "{}",
            own.display()
        );
    }
    assert!(own_files >= 2, "MAE and I-JEPA with pixel targets each have their own budget");
}

#[test]
fn a_config_in_the_older_layout_reads_as_the_current_one_with_a_note_per_move() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.toml");
    std::fs::write(&old, OLD_DEMO).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    // The older file held the paper's four target blocks and a 48-wide predictor; the demo
    // has two blocks and a 96-wide predictor since.
    let since = ["ijepa.masks.num_targets=4".into(), "ijepa.predictor.dim=48".into()];
    let current = Recipe::load(&root.join("demo-fashion.toml"), &since).unwrap();
    let read = Recipe::load(&old, &[]).unwrap();
    assert_eq!(read.to_toml(), current.to_toml());
    let notes = read.notes().join("\n");
    for moved in ["`predictor` is now `ijepa.predictor`", "`loader.image_size_px` is now `encoder.image_size_px`"] {
        assert!(notes.contains(moved), "{notes}");
    }
    assert!(notes.contains("`loader.seed` had no effect"), "{notes}");
    // A field in both places is refused with a sentence that says which to keep.
    let error = Recipe::load(&old, &["ijepa.predictor.dim=64".into()]).unwrap_err().to_string();
    assert!(
        error.contains("both `predictor` and `ijepa.predictor`") && error.contains("keep `ijepa.predictor`"),
        "{error}"
    );
}

/// `configs/demo-fashion.toml` as it was written before method sections and the encoder's
/// geometry existed, with the `loader.seed` the trainer used to write into resolved configs.
const OLD_DEMO: &str = r#"
name = "demo-fashion"
seed = 0
dataset = "datasets/fashion-mnist"

[loader]
split = "train"
batch_size = 64
image_size_px = 28
patch_size_px = 4
channels = 1
workers = 1
prefetch_batches = 4
shuffle_buffer = 4096
seed = 0

[loader.crop]
enabled = true
scale = [0.3, 1.0]
ratio = [0.75, 1.3333333333333333]

[masks]
num_targets = 4
target_scale = [0.15, 0.2]
target_aspect = [0.75, 1.5]
context_scale = [0.85, 1.0]
min_keep = 4

[encoder]
preset = "micro"

[predictor]
dim = 48
depth = 2
heads = 3

[optim]
epochs = 1
warmup_epochs = 0.1
lr_start = 2e-4
lr_peak = 1e-3
lr_final = 1e-6
weight_decay = [0.04, 0.4]
ema_momentum = [0.996, 1.0]
accumulation = 1
loss = "smooth_l1"

[checkpoint]
every_steps = 200
keep = 2
"#;

#[test]
fn a_config_that_fails_a_check_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), 40, 3, 10, 2);
    let path = dir.path().join("run.toml");
    std::fs::write(&path, RUN).unwrap();
    let error = Recipe::load(&path, &["loader.batch_size=0".into()]).unwrap_err().to_string();
    assert!(error.contains("loader.batch_size"), "{error}");
    let error = Recipe::load(&path, &["ijepa.masks.min_keep=100".into()]).unwrap_err().to_string();
    assert!(error.contains("ijepa.masks.min_keep"), "{error}");
    let error =
        Recipe::load(&path, &["mae.decoder={ dim = 16, depth = 1, heads = 3 }".into()]).unwrap_err().to_string();
    assert!(error.contains("mae.decoder.heads"), "a section the run does not use is checked too: {error}");

    // Checks that need the data: a missing dataset, a batch larger than the split.
    let missing = Recipe::load(&path, &["dataset=\"nowhere\"".into()]).unwrap();
    let error = train::<B>(missing, &options(dir.path(), false), &Default::default()).unwrap_err().to_string();
    assert!(error.contains("nowhere"), "{error}");
    let too_large = config(dir.path(), &["loader.batch_size=64"]);
    let error = train::<B>(too_large, &options(dir.path(), false), &Default::default()).unwrap_err().to_string();
    assert!(error.contains("batch_size") && error.contains("40 images"), "{error}");
    assert!(!dir.path().join("runs").exists(), "a run that cannot start leaves no folder");
}

#[test]
fn resuming_a_finished_run_reports_it_and_trains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"), 40, 3, 10, 2);
    let done = train::<B>(config(dir.path(), &["optim.max_steps=2"]), &options(dir.path(), false), &Default::default())
        .unwrap();
    let log = || std::fs::read_to_string(done.run_dir.join("train.log")).unwrap();
    let log_before = log();
    let again = train::<B>(config(dir.path(), &["optim.max_steps=2"]), &options(dir.path(), true), &Default::default())
        .unwrap();
    assert_eq!((again.steps, again.losses.len(), again.images_per_second), (2, 0, None));
    assert_eq!(again.last_loss, done.last_loss);
    assert!(again.last_loss.is_some_and(f64::is_finite));
    assert_eq!(again.last_checkpoint, done.last_checkpoint);
    assert_eq!(log(), log_before, "nothing was trained or written");
}

/// Burn's CPU backend draws every parameter from one process-wide RNG: threads that build
/// seeded models at once (runs side by side, the probe's baselines) must still each get the
/// model of their seed, parameter for parameter.
#[test]
fn a_seed_gives_one_model_when_threads_build_them_at_once() {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    use burn::tensor::backend::Backend;
    use jepa_trainer::ijepa::IJepa;
    use jepa_trainer::predictor::PredictorConfig;
    use jepa_trainer::vit::VitConfig;

    #[derive(Default)]
    struct Values(Vec<f32>);
    impl<Any: Backend> ModuleVisitor<Any> for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Any, D>>) {
            self.0.extend(param.val().into_data().convert::<f32>().into_vec::<f32>().unwrap());
        }
    }
    let encoder = VitConfig::preset("nano", 16, 4, 1).unwrap();
    let predictor = PredictorConfig { dim: 16, depth: 1, heads: 2 };
    let build = |seed| {
        let mut values = Values::default();
        IJepa::<B>::seeded(&encoder, &predictor, seed, &Default::default()).visit(&mut values);
        values.0
    };
    let alone = [build(0), build(1)];
    assert_ne!(alone[0], alone[1], "two seeds, two models");
    let together: Vec<(usize, Vec<f32>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..6)
            .map(|thread| {
                scope.spawn(move || (0..4).map(|_| (thread % 2, build(thread as u64 % 2))).collect::<Vec<_>>())
            })
            .collect();
        threads.into_iter().flat_map(|thread| thread.join().unwrap()).collect()
    });
    for (seed, values) in together {
        assert!(values == alone[seed], "a model of seed {seed} built beside others differs from the one built alone");
    }
}

/// Here rather than among the library's unit tests: those build unseeded models on other
/// threads, whose draws from Burn's one process-wide RNG would interleave with these.
#[test]
fn every_method_with_one_seed_starts_from_one_encoder() {
    use burn::module::AutodiffModule;
    use burn::tensor::{Tensor, TensorData};
    use jepa_trainer::ijepa::IJepa;
    use jepa_trainer::ijepa_pixels::{IJepaPixelsMethod, IJepaPixelsSettings};
    use jepa_trainer::mae::Mae;
    use jepa_trainer::method::{Method, MethodSection};
    use jepa_trainer::predictor::PredictorConfig;
    use jepa_trainer::vit::{VisionTransformer, VitConfig};
    type Plain = NdArray<f32>;

    let device = Default::default();
    let encoder = VitConfig::preset("nano", 16, 4, 1).unwrap();
    let narrow = PredictorConfig { dim: 16, depth: 1, heads: 2 };
    let images = || Tensor::<Plain, 4>::from_data(TensorData::new(vec![0.25f32; 256], [1, 1, 16, 16]), &device);
    let output = |encoder: VisionTransformer<Plain>| encoder.forward(images(), None).into_data();
    let ijepa = output(IJepa::<Plain>::seeded(&encoder, &narrow, 7, &device).context_encoder);
    let mae = output(Mae::<Plain>::seeded(&encoder, &narrow, 7, &device).encoder);
    assert_eq!(ijepa, mae);
    // A 4×4 grid: the context must be allowed to keep as few as 2 patches.
    let masks = jepa_shared::MaskConfig { min_keep: 2, ..Default::default() };
    let section = toml::Value::try_from(IJepaPixelsSettings { predictor: narrow.clone(), masks }).unwrap();
    let pixels = IJepaPixelsMethod::from_section(Some(&section), &encoder).unwrap();
    let pixels = Method::<Autodiff<Plain>>::init(&pixels, 7, &device);
    assert_eq!(output(pixels.context_encoder.valid()), ijepa);
    let other_seed = output(Mae::<Plain>::seeded(&encoder, &narrow, 8, &device).encoder);
    assert_ne!(ijepa, other_seed);
}
