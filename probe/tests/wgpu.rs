//! The GPU code path (Burn's wgpu backend: JIT kernels, fusion, autotune, device memory and
//! read-back) against the CPU one, on the same configs, seed and batches, through the same
//! device dispatch the binaries use. In CI it runs on Mesa's lavapipe, a Vulkan device on
//! the CPU; there, or wherever `JEPA_REQUIRE_WGPU` or `CI` is set, a machine without a wgpu
//! adapter fails these tests instead of skipping them.
//!
//! - Training: I-JEPA, I-JEPA with pixel targets and MAE, 5 optimizer steps of 2 accumulated
//!   micro-batches each (with the EMA teacher where the method keeps one): the loss of every
//!   step, and every parameter after the last.
//! - Checkpoints: a run stopped on one backend and resumed on the other continues the curve
//!   of a run that never moved.
//! - The probe: features of the same checkpoint, and the predictor-retrieval scores.
//!
//! Run with `make test-wgpu`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use jepa_eval::features::{FeatureOptions, FeatureTable, write_features};
use jepa_report::retrieval::RetrievalScore;
use jepa_trainer::device::{Choice, DeviceRequest, OnDevice, choose};
use jepa_trainer::method::{Method, MethodVisitor};
use jepa_trainer::training::{TrainOptions, TrainReport, train};
use jepa_trainer::{EncoderKind, Recipe, Run, checkpoint};

/// Images of each split: enough for the retrieval score's gallery (8 + 200 test images).
const TRAIN_IMAGES: u64 = 512;
const TEST_IMAGES: u64 = 256;
/// The steps each training comparison runs, and where a moved run changes backend.
const STEPS: u64 = 5;
const MOVE_AT: u64 = 3;

/// Losses of the same step agree to this, relative.
const LOSS_TOLERANCE: f64 = 1e-3;
/// Features of the same encoder agree to this, absolute (they are averages of layer-normed
/// tokens, of order 1).
const FEATURE_TOLERANCE: f32 = 1e-4;

/// The wgpu device, or `None` (with a message) where a machine without one may skip.
fn wgpu() -> Option<Choice> {
    match choose(DeviceRequest::Wgpu, "the wgpu tests") {
        Ok(choice) => {
            eprintln!("wgpu: {choice}");
            Some(choice)
        }
        Err(error) => {
            let required =
                ["JEPA_REQUIRE_WGPU", "CI"].iter().any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
            assert!(!required, "{error}; JEPA_REQUIRE_WGPU or CI is set, so a missing wgpu device is a failure");
            eprintln!("skipped: {error}");
            None
        }
    }
}

fn cpu() -> Choice {
    Choice::cpu("the reference")
}

/// One dataset for every test of this binary: the first real Fashion-MNIST images.
fn dataset() -> &'static Path {
    static DATA: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, root) = DATA.get_or_init(|| {
        let folder = tempfile::tempdir().unwrap();
        let root = common::first_images(&folder.path().join("fashion-mnist"), TRAIN_IMAGES, TEST_IMAGES);
        (folder, root)
    });
    root
}

/// A shipped micro config (`configs/<file>`), on the test images, batch 8 × 2 accumulated.
fn recipe(file: &str, overrides: &[&str]) -> Recipe {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").join(file);
    let mut all = vec![
        format!("dataset={:?}", dataset().display().to_string()),
        "loader.batch_size=8".into(),
        "loader.shuffle_buffer=64".into(),
        "optim.accumulation=2".into(),
        format!("optim.max_steps={STEPS}"),
        "checkpoint.every_steps=1000".into(),
    ];
    all.extend(overrides.iter().map(|text| text.to_string()));
    Recipe::load(&path, &all).unwrap()
}

/// Training on whichever backend runs it.
struct Train {
    recipe: Recipe,
    options: TrainOptions,
}

impl OnDevice for Train {
    type Output = TrainReport;

    fn run<B: AutodiffBackend>(self, device: &B::Device) -> TrainReport {
        train::<B>(self.recipe, &self.options, device).unwrap()
    }
}

fn train_on(choice: &Choice, recipe: Recipe, runs: &Path, resume: bool) -> TrainReport {
    let options = TrainOptions { runs_root: runs.to_path_buf(), resume, ..TrainOptions::default() };
    choice.run(Train { recipe, options })
}

fn assert_losses_agree(what: &str, cpu: &[f64], wgpu: &[f64]) {
    assert_eq!(cpu.len(), wgpu.len(), "{what}: steps");
    let worst = relative_differences(cpu, wgpu).into_iter().fold(0.0, f64::max);
    eprintln!("{what}: losses {cpu:?} (cpu) vs {wgpu:?} (wgpu); largest relative difference {worst:.2e}");
    for (step, (a, b)) in cpu.iter().zip(wgpu).enumerate() {
        assert!(relative(*a, *b) <= LOSS_TOLERANCE, "{what}: step {} loss {a} (cpu) vs {b} (wgpu)", step + 1);
    }
}

fn relative_differences(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| relative(*a, *b)).collect()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

/// Every float parameter of a run's latest checkpoint (or, with `at_init`, of the model the run
/// started from), trained model then teacher, by path.
fn parameters(run_dir: &Path, at_init: bool) -> Vec<(String, Vec<f32>)> {
    let run = Run::open(run_dir).unwrap();
    let checkpoint = (!at_init).then(|| run.checkpoint(None).unwrap());
    run.recipe.method().visit(Parameters::<burn::backend::Autodiff<burn::backend::NdArray<f32>>> {
        checkpoint: checkpoint.as_ref(),
        seed: run.recipe.seed(),
        backend: Default::default(),
    })
}

struct Parameters<'a, B> {
    /// `None`: the model as initialised.
    checkpoint: Option<&'a jepa_trainer::CheckpointFolder>,
    seed: u64,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> MethodVisitor<B> for Parameters<'_, B> {
    type Output = Vec<(String, Vec<f32>)>;

    fn visit<M: Method<B>>(self, method: &M) -> Self::Output {
        let device = Default::default();
        let mut model = method.init(self.seed, &device);
        if let Some(checkpoint) = self.checkpoint {
            model = checkpoint::load_model(checkpoint, model, &device).unwrap();
        }
        let mut named = Named::default();
        model.visit(&mut named);
        if method.teacher_momentum().is_some() {
            let mut teacher = M::encoder(&model).valid();
            if let Some(checkpoint) = self.checkpoint {
                teacher = checkpoint::load_teacher(checkpoint, teacher, &device).unwrap();
            }
            let mut teacher_named = Named { path: vec!["teacher".into()], ..Named::default() };
            teacher.visit(&mut teacher_named);
            named.found.extend(teacher_named.found);
        }
        named.found
    }
}

#[derive(Default)]
struct Named {
    path: Vec<String>,
    found: Vec<(String, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for Named {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let values = param.val().into_data().convert::<f32>().into_vec::<f32>().unwrap();
        self.found.push((self.path.join("."), values));
    }
}

/// How far apart two runs' parameters ended: the largest absolute difference (and where),
/// and the difference of the two runs' updates (final − initial) over all parameters, as a
/// share of the CPU run's update (both as Euclidean norms).
fn parameter_differences(
    initial: &[(String, Vec<f32>)],
    cpu: &[(String, Vec<f32>)],
    wgpu: &[(String, Vec<f32>)],
) -> (f32, String, f64) {
    assert_eq!((initial.len(), cpu.len()), (wgpu.len(), wgpu.len()), "parameter count");
    let mut worst = (0.0f32, String::new());
    let (mut apart, mut moved) = (0.0f64, 0.0f64);
    for (((name, start), (other, a)), (third, b)) in initial.iter().zip(cpu).zip(wgpu) {
        assert_eq!((name, a.len(), b.len()), (other, start.len(), start.len()), "parameter layout");
        assert_eq!(name, third, "parameter layout");
        for ((x0, x), y) in start.iter().zip(a).zip(b) {
            assert!(x.is_finite() && y.is_finite(), "{name}: {x} vs {y}");
            if (x - y).abs() > worst.0 {
                worst = ((x - y).abs(), name.clone());
            }
            apart += f64::from(x - y).powi(2);
            moved += f64::from(x - x0).powi(2);
        }
    }
    (worst.0, worst.1, (apart / moved).sqrt())
}

/// Five steps on each backend from the same start: the losses of every step, and every
/// parameter (model and teacher) after the last.
fn training_agrees(config: &str, overrides: &[&str]) {
    let Some(wgpu) = wgpu() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let on_cpu = train_on(&cpu(), recipe(config, overrides), &scratch.path().join("cpu"), false);
    let on_wgpu = train_on(&wgpu, recipe(config, overrides), &scratch.path().join("wgpu"), false);
    assert_eq!(on_wgpu.steps, STEPS);
    assert_losses_agree(config, &on_cpu.losses, &on_wgpu.losses);
    let initial = parameters(&on_cpu.run_dir, true);
    assert_eq!(initial, parameters(&on_wgpu.run_dir, true), "{config}: one seed, one initial model");
    let (worst, name, update_difference) =
        parameter_differences(&initial, &parameters(&on_cpu.run_dir, false), &parameters(&on_wgpu.run_dir, false));
    eprintln!(
        "{config}: after {STEPS} steps, parameters differ by at most {worst:.2e} ({name}); the updates differ by \
         {update_difference:.2e} of their size"
    );
    assert!(worst <= PARAMETER_TOLERANCE, "{config}: {name} differs by {worst} (tolerance {PARAMETER_TOLERANCE})");
    assert!(
        update_difference <= UPDATE_TOLERANCE,
        "{config}: the two runs' updates differ by {update_difference} of their size (tolerance {UPDATE_TOLERANCE})"
    );
}

/// Tolerances for the parameters after 5 steps. Adam divides each gradient by its own running
/// size, so a parameter whose gradient is near 0 moves by up to the learning rate per step
/// whatever the gradient's size, and rounding differences between backends (the CPU kernels'
/// erf and exp against Burn's, other summation orders) can move it a little either way: this
/// is where the largest single differences are (measured on lavapipe: 3e-5 for I-JEPA,
/// 2.5e-4 with pixel targets, 3e-4 for MAE, against learning rates of 2e-4 to 1e-3). The
/// bound on a single parameter is 1e-3, the learning rate of one full step; the updates as a
/// whole must agree to 1% of their size (measured: below 1e-3 for all three methods). A
/// broken kernel moves the updates by their own order of size.
const PARAMETER_TOLERANCE: f32 = 1e-3;
const UPDATE_TOLERANCE: f64 = 1e-2;

#[test]
fn ijepa_trains_the_same_on_wgpu_as_on_the_cpu() {
    training_agrees("compare-fashion.toml", &[]);
}

#[test]
fn ijepa_with_pixel_targets_trains_the_same_on_wgpu_as_on_the_cpu() {
    training_agrees("compare-fashion-ijepa-pixels.toml", &[]);
}

#[test]
fn mae_trains_the_same_on_wgpu_as_on_the_cpu() {
    training_agrees("compare-fashion-mae.toml", &[]);
}

/// A run moved between backends after `MOVE_AT` steps, resumed from its checkpoint on the
/// other, continues the curve of the run that stayed on the CPU and ends with its parameters.
#[test]
fn a_checkpoint_written_on_one_backend_resumes_on_the_other() {
    let Some(wgpu) = wgpu() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let config = "compare-fashion.toml";
    let reference = train_on(&cpu(), recipe(config, &[]), &scratch.path().join("stayed"), false);
    let initial = parameters(&reference.run_dir, true);
    let stayed = parameters(&reference.run_dir, false);
    for (name, first, second) in [("wgpu-then-cpu", &wgpu, &cpu()), ("cpu-then-wgpu", &cpu(), &wgpu)] {
        let runs = scratch.path().join(name);
        let stop = format!("optim.max_steps={MOVE_AT}");
        let before = train_on(first, recipe(config, &[&stop]), &runs, false);
        let config_file = before.run_dir.join("config.toml");
        let resumed = Recipe::load(&config_file, &[format!("optim.max_steps={STEPS}")]).unwrap();
        let after = train_on(second, resumed, &runs, true);
        assert_eq!((before.steps, after.steps), (MOVE_AT, STEPS), "{name}");
        let moved: Vec<f64> = before.losses.iter().chain(&after.losses).copied().collect();
        assert_losses_agree(name, &reference.losses, &moved);
        let (worst, parameter, update_difference) =
            parameter_differences(&initial, &stayed, &parameters(&after.run_dir, false));
        eprintln!("{name}: parameters differ by at most {worst:.2e} ({parameter}); updates by {update_difference:.2e}");
        assert!(worst <= PARAMETER_TOLERANCE, "{name}: {parameter} differs by {worst}");
        assert!(update_difference <= UPDATE_TOLERANCE, "{name}: updates differ by {update_difference}");
    }
}

/// Features of the same checkpoint, written by each backend.
struct Features<'a> {
    run: &'a Run,
}

impl OnDevice for Features<'_> {
    type Output = FeatureTable;

    fn run<B: AutodiffBackend>(self, device: &B::Device) -> FeatureTable {
        let options = FeatureOptions { progress: false, threads: 1, ..FeatureOptions::default() };
        let written = write_features::<B>(self.run, EncoderKind::Pretrained, &options, device).unwrap();
        FeatureTable::read(&written[1]).unwrap()
    }
}

/// The predictor-retrieval figure and its scores, drawn by each backend.
struct Retrieval<'a> {
    run: &'a Run,
}

impl OnDevice for Retrieval<'_> {
    type Output = Vec<RetrievalScore>;

    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Vec<RetrievalScore> {
        jepa_report::retrieval::write::<B>(self.run, device).unwrap().scores
    }
}

#[test]
fn the_probe_sees_the_same_encoder_on_wgpu_as_on_the_cpu() {
    let Some(wgpu) = wgpu() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let trained = train_on(&cpu(), recipe("compare-fashion.toml", &[]), &scratch.path().join("runs"), false);
    let run = Run::open(&trained.run_dir).unwrap();

    let (on_cpu, on_wgpu) = (cpu().run(Features { run: &run }), wgpu.run(Features { run: &run }));
    assert_eq!((on_cpu.len(), on_cpu.dim), (TEST_IMAGES as usize, 96));
    assert_eq!((&on_cpu.ids, &on_cpu.labels), (&on_wgpu.ids, &on_wgpu.labels));
    let worst = on_cpu.values.iter().zip(&on_wgpu.values).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = on_cpu.values.iter().map(|value| value.abs()).fold(0.0f32, f32::max);
    eprintln!(
        "features: largest difference {worst:.2e} over {} values of magnitude up to {scale:.2}",
        on_cpu.values.len()
    );
    // Both comparisons run before either fails, so a broken kernel shows in each.
    let mut disagreements = Vec::new();
    if worst > FEATURE_TOLERANCE {
        disagreements.push(format!("test features differ by up to {worst}"));
    }

    let (on_cpu, on_wgpu) = (cpu().run(Retrieval { run: &run }), wgpu.run(Retrieval { run: &run }));
    eprintln!("retrieval: {on_cpu:?} (cpu) vs {on_wgpu:?} (wgpu)");
    assert_eq!(on_cpu.len(), 2, "trained and random-init predictors");
    for (a, b) in on_cpu.iter().zip(&on_wgpu) {
        assert_eq!((&a.predictor, a.predictions, a.candidates), (&b.predictor, b.predictions, b.candidates));
        // A prediction whose two nearest patches are tied to within rounding may rank them
        // either way on either backend: one such prediction moves a score by 1/predictions,
        // and the mean rank by far less than 1e-5 of itself (measured: 1e-7).
        let one = 1.0 / a.predictions as f64;
        let scores_agree = (a.top1 - b.top1).abs() <= one && (a.top5 - b.top5).abs() <= one;
        if !scores_agree || relative(a.mean_rank, b.mean_rank) > 1e-5 {
            disagreements.push(format!("retrieval: {a:?} (cpu) vs {b:?} (wgpu)"));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}
