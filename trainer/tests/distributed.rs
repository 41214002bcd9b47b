//! Data parallelism through the real `train` binary and the system's MPI (`make
//! test-distributed`): two ranks train what one process trains on the same global batches,
//! a run continues across world sizes, and ranks that start apart are refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use jepa_shared::metrics_table::MetricsTable;
use jepa_trainer::checkpoint::{self, Trainable};
use jepa_trainer::method::{Method, MethodVisitor};
use jepa_trainer::optim::AdamWRecord;
use jepa_trainer::step::fresh;
use jepa_trainer::{Recipe, RunFolder};

mod common;

type B = Autodiff<NdArray<f32>>;

const TRAIN: &str = env!("CARGO_BIN_EXE_train");

/// The tests' small run with a micro ViT: 64 images, global batches of 16 taken as two
/// accumulated micro-batches of 8, gradient clipping on, a checkpoint after every step.
const CHANGES: [&str; 9] = [
    "name=\"dp\"",
    "seed=11",
    "encoder.preset=\"micro\"",
    "ijepa.predictor.dim=48",
    "optim.accumulation=2",
    "optim.grad_clip=1.0",
    "optim.max_steps=5",
    "checkpoint.every_steps=1",
    "checkpoint.keep=10",
];

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    jepa_shared::fixture::write_dataset(&root.join("data"), 64, 3, 16, 2).unwrap();
    let config = root.join("dp.toml");
    std::fs::write(&config, common::run_config(&root.join("data"), &CHANGES)).unwrap();
    Setup { _dir: dir, root, config }
}

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `train` alone, or under `mpirun -n ranks`, with `args`.
fn train(ranks: usize, args: &[&str]) -> Output {
    let mut command = if ranks == 1 {
        Command::new(TRAIN)
    } else {
        let mut mpirun = Command::new("mpirun");
        // Containers often run as root and report fewer slots than cores.
        mpirun.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1").args([
            "-n",
            &ranks.to_string(),
            "--oversubscribe",
            "--bind-to",
            "none",
            TRAIN,
        ]);
        mpirun
    };
    command.args(["--device", "cpu", "--quiet"]).args(args).output().unwrap()
}

fn start(setup: &Setup, ranks: usize, runs: &str, sets: &[&str]) -> Output {
    let runs = setup.root.join(runs);
    let mut args = vec!["--config", setup.config.to_str().unwrap(), "--runs", runs.to_str().unwrap()];
    for set in sets {
        args.extend(["--set", set]);
    }
    train(ranks, &args)
}

fn resume(setup: &Setup, ranks: usize, runs: &str, max_steps: u64) -> Output {
    let run = setup.root.join(runs).join("dp");
    let set = format!("optim.max_steps={max_steps}");
    train(ranks, &["--resume", run.to_str().unwrap(), "--set", &set])
}

fn column(run: &Path, name: &str) -> Vec<f64> {
    MetricsTable::read(&RunFolder::new(run).metrics()).unwrap().column(name).unwrap()
}

fn assert_close(name: &str, got: &[f64], want: &[f64], relative: f64) {
    assert_eq!(got.len(), want.len(), "{name}: {got:?} against {want:?}");
    for (step, (got, want)) in got.iter().zip(want).enumerate() {
        assert!((got - want).abs() <= relative * want.abs().max(1e-12), "{name} at step {step}: {got} against {want}");
    }
}

/// Every float of a module, in its parameter order.
fn values<Bk: Backend, M: Module<Bk>>(module: &M) -> Vec<f32> {
    struct Collect<Bk: Backend>(Vec<f32>, std::marker::PhantomData<Bk>);
    impl<Bk: Backend> ModuleVisitor<Bk> for Collect<Bk> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            self.0.extend(param.val().into_data().convert::<f32>().into_vec::<f32>().unwrap());
        }
    }
    let mut collect = Collect(Vec::new(), std::marker::PhantomData);
    module.visit(&mut collect);
    collect.0
}

/// AdamW's two moments of every parameter of `model`, in its parameter order.
fn moments<M: AutodiffModule<B>>(parts: &Trainable<B, M>) -> Vec<f32> {
    struct Collect<'a, M: AutodiffModule<B>> {
        record: &'a AdamWRecord<M, B>,
        values: Vec<f32>,
    }
    impl<M: AutodiffModule<B>> ModuleVisitor<B> for Collect<'_, M> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let state = self.record.get(&param.id).expect("a moment for every parameter").clone().into_state::<D>();
            for moment in [state.momentum.moment_1, state.momentum.moment_2] {
                self.values.extend(moment.into_data().into_vec::<f32>().unwrap());
            }
        }
    }
    let record = parts.optimizer.to_record();
    let mut collect = Collect::<M> { record: &record, values: Vec::new() };
    parts.model.visit(&mut collect);
    collect.values
}

/// (model, teacher, moments) of a run's checkpoint.
struct Loaded {
    model: Vec<f32>,
    teacher: Vec<f32>,
    moments: Vec<f32>,
}

fn load(run: &Path, step: u64) -> Loaded {
    struct Load<'a>(&'a Path, u64, Recipe);
    impl MethodVisitor<B> for Load<'_> {
        type Output = Loaded;
        fn visit<M: Method<B>>(self, method: &M) -> Loaded {
            let device = Default::default();
            let start = fresh::<B, M>(method, method.init(self.2.seed(), &device));
            let (parts, state) =
                checkpoint::load(&RunFolder::new(self.0).checkpoint_at(self.1), start, &device).unwrap();
            assert_eq!(state.step, self.1);
            Loaded {
                model: values(&parts.model.valid()),
                teacher: values(parts.target_encoder.as_ref().expect("I-JEPA keeps a teacher")),
                moments: moments(&parts),
            }
        }
    }
    let recipe = Recipe::load(&RunFolder::new(run).config(), &[]).unwrap();
    recipe.method().clone().visit(Load(run, step, recipe))
}

/// The largest |a − b| over every value, and the largest |b|.
fn largest_difference(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let difference = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    (difference, want.iter().map(|b| b.abs()).fold(0.0, f32::max))
}

#[test]
fn two_ranks_train_what_one_process_trains_on_the_same_global_batches() {
    let setup = setup();
    ok(start(&setup, 1, "one", &[]));
    let two = ok(start(&setup, 2, "two", &[]));
    let (one, two_run) = (setup.root.join("one/dp"), setup.root.join("two/dp"));

    println!("losses, one process: {:?}", column(&one, "loss"));
    println!("losses, two ranks:   {:?}", column(&two_run, "loss"));
    assert_close("loss", &column(&two_run, "loss"), &column(&one, "loss"), 1e-5);
    assert_close("grad_norm", &column(&two_run, "grad_norm"), &column(&one, "grad_norm"), 1e-4);
    assert_eq!(column(&two_run, "lr"), column(&one, "lr"));
    // Rank 0 alone wrote the folder and printed the summary: one start in the log.
    let log = std::fs::read_to_string(RunFolder::new(&two_run).log()).unwrap();
    assert_eq!(log.matches("started at step 0").count(), 1, "{log}");
    assert_eq!(String::from_utf8_lossy(&two.stdout).lines().count(), 1, "one summary line");

    // Parameters, EMA teacher and AdamW moments after every step.
    for step in 1..=5 {
        let (got, want) = (load(&two_run, step), load(&one, step));
        for (name, got, want, tolerance) in [
            ("parameters", &got.model, &want.model, 1e-5),
            ("teacher", &got.teacher, &want.teacher, 1e-5),
            ("AdamW moments", &got.moments, &want.moments, 1e-4),
        ] {
            let (difference, scale) = largest_difference(got, want);
            println!("{name} at step {step}: largest difference {difference:e} (largest value {scale:e})");
            assert!(difference <= tolerance * scale.max(1e-6), "{name} at step {step}: {difference} (scale {scale})");
        }
    }
}

#[test]
fn a_run_continues_the_same_curve_across_world_sizes() {
    let setup = setup();
    ok(start(&setup, 1, "whole", &[]));
    // Two ranks for 2 steps, one process to 4, two ranks again to 5.
    ok(start(&setup, 2, "mixed", &["optim.max_steps=2"]));
    ok(resume(&setup, 1, "mixed", 4));
    ok(resume(&setup, 2, "mixed", 5));
    let (whole, mixed) = (setup.root.join("whole/dp"), setup.root.join("mixed/dp"));
    assert_close("loss", &column(&mixed, "loss"), &column(&whole, "loss"), 1e-5);
    let (got, want) = (load(&mixed, 5), load(&whole, 5));
    let (difference, scale) = largest_difference(&got.model, &want.model);
    assert!(difference <= 1e-5 * scale, "parameters: {difference} (scale {scale})");
}

#[test]
fn ranks_that_start_from_different_parameters_are_refused_together() {
    let setup = setup();
    let runs = setup.root.join("apart");
    let config = setup.config.to_str().unwrap();
    // One rank with another seed: MPI's multiple-program form gives each rank its own flags.
    let output = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "--bind-to", "none"])
        .args(["-n", "1", TRAIN, "--device", "cpu", "--quiet", "--config", config, "--runs"])
        .arg(&runs)
        .args([":", "-n", "1", TRAIN, "--device", "cpu", "--quiet", "--config", config, "--set", "seed=12", "--runs"])
        .arg(&runs)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rank(s) 1 start from other parameters than rank 0"), "{stderr}");
    assert!(!runs.join("dp").exists(), "a run refused at its start leaves no folder");
}
