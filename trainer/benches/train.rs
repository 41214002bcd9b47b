//! `make bench-train`: jepa-stream's CPU training step beside PyTorch's, case by case.
//!
//! For each case it times jepa-stream's own optimizer step (`jepa_trainer::timing`) on real masks (inputs are
//! random pixels: speed does not depend on them), then, when a PyTorch reference is given,
//! runs it on the same case, threads and batch size, and prints both and the ratio
//! `jepa-stream img/s ÷ PyTorch img/s`:
//!
//! - `demo`: the Fashion-MNIST demo's encoder and masks (`configs/demo-fashion.toml`: ViT
//!   `micro` at 28 px, 4 px patches, batch 64) with the sweep's base predictor, 48 × 2 (the
//!   demo's is 96 × 2);
//! - `demo-mae`: MAE on the same encoder (decoder 48 × 2, as `configs/compare-fashion-mae.toml`);
//!   the reference has no MAE, so this line has no ratio;
//! - `tiny`: ViT-Tiny at 96 px with 8 px patches, predictor 96 × 2, batch 16;
//! - `forward`: the probe's job, the frozen `micro` encoder's forward pass over whole
//!   images, average-pooled, batch 64, no autodiff.
//!
//! Environment: `BENCH_TRAIN_STEPS` (timed steps, default 5), `BENCH_TRAIN_CASES`
//! (comma-separated case names, default all), `BENCH_TORCH_PYTHON` and `BENCH_TORCH_REFERENCE`
//! (the Python with torch, and the reference script; without both only jepa-stream's side is
//! printed). Peak memory is the process's peak resident set, reset before each case.

use std::process::Command;
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::AutodiffBackend;
use jepa_shared::{MaskConfig, MultiBlockMasks, RandomMasks};
use jepa_trainer::ijepa::{IJepaMethod, IJepaSettings};
use jepa_trainer::mae::{MaeMethod, MaeSettings};
use jepa_trainer::method::{Method, MethodVisitor};
use jepa_trainer::predictor::PredictorConfig;
use jepa_trainer::registry::AnyMethod;
use jepa_trainer::timing::{random_images, seconds_per_step};
use jepa_trainer::vit::VitConfig;

type Cpu = NdArray<f32>;

/// As the binaries (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

enum Work {
    /// One optimizer step of a method.
    Step(Box<AnyMethod>),
    /// The frozen encoder's forward pass, average-pooled.
    Forward,
}

struct Case {
    name: &'static str,
    label: &'static str,
    work: Work,
    encoder: VitConfig,
    batch: usize,
    /// The reference's arguments for the same work, if it has it.
    torch_args: Option<&'static [&'static str]>,
}

fn ijepa(encoder: &VitConfig, predictor: PredictorConfig, min_keep: usize) -> Work {
    let masks = MaskConfig { min_keep, ..MaskConfig::default() };
    let settings = IJepaSettings { predictor, masks: masks.clone(), ..IJepaSettings::default() };
    let masks = MultiBlockMasks::new(masks, encoder.grid(), encoder.grid()).expect("masks fit");
    Work::Step(Box::new(AnyMethod::IJepa(IJepaMethod { encoder: encoder.clone(), settings, masks })))
}

fn mae(encoder: &VitConfig, decoder: PredictorConfig) -> Work {
    let masks = RandomMasks::new(0.75, encoder.grid(), encoder.grid()).expect("masks fit");
    let settings = MaeSettings { decoder, ..MaeSettings::default() };
    Work::Step(Box::new(AnyMethod::Mae(MaeMethod { encoder: encoder.clone(), settings, masks })))
}

fn cases() -> Vec<Case> {
    let micro = VitConfig::preset("micro", 28, 4, 1).unwrap();
    let tiny = VitConfig::preset("tiny", 96, 8, 3).unwrap();
    vec![
        Case {
            name: "demo",
            label: "I-JEPA step, micro ViT 28 px / 4, batch 64",
            work: ijepa(&micro, PredictorConfig { dim: 48, depth: 2, heads: 3 }, 4),
            encoder: micro.clone(),
            batch: 64,
            torch_args: Some(&["--case", "demo"]),
        },
        Case {
            name: "demo-mae",
            label: "MAE step, micro ViT 28 px / 4, batch 64",
            work: mae(&micro, PredictorConfig { dim: 48, depth: 2, heads: 3 }),
            encoder: micro.clone(),
            batch: 64,
            torch_args: None,
        },
        Case {
            name: "tiny",
            label: "I-JEPA step, ViT-Tiny 96 px / 8, batch 16",
            work: ijepa(&tiny, PredictorConfig { dim: 96, depth: 2, heads: 3 }, 10),
            encoder: tiny,
            batch: 16,
            torch_args: Some(&["--case", "tiny"]),
        },
        Case {
            name: "forward",
            label: "features, micro ViT forward, batch 64",
            work: Work::Forward,
            encoder: micro,
            batch: 64,
            torch_args: Some(&["--mode", "forward", "--case", "demo"]),
        },
    ]
}

fn main() {
    let steps: usize = std::env::var("BENCH_TRAIN_STEPS").ok().and_then(|n| n.parse().ok()).unwrap_or(5);
    let only: Option<Vec<String>> =
        std::env::var("BENCH_TRAIN_CASES").ok().map(|names| names.split(',').map(str::to_owned).collect());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let torch = torch_reference();
    println!("{steps} timed steps after one warm-up step; {threads} threads on both sides");
    if torch.is_none() {
        println!("(no PyTorch reference: set BENCH_TORCH_PYTHON and BENCH_TORCH_REFERENCE, or run `make bench-train`)");
    }
    println!("{:<10} {:<44} {:>9} {:>9} {:>9} {:>7}", "side", "case", "s/step", "images/s", "peak MiB", "ratio");
    for case in cases() {
        if only.as_ref().is_some_and(|names| !names.iter().any(|name| name == case.name)) {
            continue;
        }
        reset_peak_memory();
        let seconds = match &case.work {
            Work::Step(method) => {
                method.visit(SecondsPerStep::<Autodiff<Cpu>> { case: &case, steps, _backend: Default::default() })
            }
            Work::Forward => seconds_per_forward(&case, steps * 4),
        };
        let ours = case.batch as f64 / seconds;
        println!("{:<10} {:<44} {seconds:>9.4} {ours:>9.1} {:>9.0}", "jepa", case.label, peak_memory_mib());
        if let (Some((python, script)), Some(args)) = (&torch, case.torch_args) {
            match run_torch(python, script, args, steps, threads) {
                Ok((seconds, theirs)) => println!(
                    "{:<10} {:<44} {seconds:>9.4} {theirs:>9.1} {:>9} {:>7.2}",
                    "pytorch",
                    case.label,
                    "",
                    ours / theirs
                ),
                Err(problem) => println!("{:<10} {:<44} failed: {problem}", "pytorch", case.label),
            }
        }
    }
}

/// The Python with torch and the reference script, when both are given and exist.
fn torch_reference() -> Option<(String, String)> {
    let python = std::env::var("BENCH_TORCH_PYTHON").ok()?;
    let script = std::env::var("BENCH_TORCH_REFERENCE").ok()?;
    if !std::path::Path::new(&script).is_file() {
        println!("(PyTorch reference {script} not found)");
        return None;
    }
    Some((python, script))
}

/// Runs the reference on one case; returns its seconds per step and images per second,
/// read from its `…: S s/step, N img/s …` line.
fn run_torch(python: &str, script: &str, args: &[&str], steps: usize, threads: usize) -> Result<(f64, f64), String> {
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .args(["--steps", &steps.to_string(), "--threads", &threads.to_string()])
        .output()
        .map_err(|error| format!("{python}: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(stderr.lines().last().unwrap_or("exited with an error").to_owned());
    }
    let line = stdout.lines().find(|line| line.starts_with("torch ")).ok_or("no result line")?;
    let number_before = |unit: &str| -> Option<f64> {
        let end = line.find(unit)?;
        line[..end].trim_end().rsplit([' ', ',']).next()?.parse().ok()
    };
    let seconds = number_before(" s/").ok_or_else(|| format!("unreadable: {line}"))?;
    let images = number_before(" img/s").ok_or_else(|| format!("unreadable: {line}"))?;
    Ok((seconds, images))
}

/// Mean seconds of the timed optimizer steps of one case.
struct SecondsPerStep<'a, B> {
    case: &'a Case,
    steps: usize,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> MethodVisitor<B> for SecondsPerStep<'_, B> {
    type Output = f64;

    fn visit<M: Method<B>>(self, method: &M) -> f64 {
        seconds_per_step(method, &self.case.encoder, self.case.batch, self.steps, &B::Device::default())
    }
}

/// Mean seconds of one frozen forward pass over a batch, pooled to one feature per image.
fn seconds_per_forward(case: &Case, repeats: usize) -> f64 {
    let device = Default::default();
    let encoder = case.encoder.init::<Cpu>(&device);
    let images = random_images::<Cpu>(&case.encoder, case.batch, 0, &device);
    let mut seconds = 0.0;
    for repeat in 0..repeats + 2 {
        let started = Instant::now();
        let features = encoder.forward(images.clone(), None).mean_dim(1).into_data();
        std::hint::black_box(features);
        if repeat >= 2 {
            seconds += started.elapsed().as_secs_f64();
        }
    }
    seconds / repeats as f64
}

/// Writing 5 to `clear_refs` resets the peak resident set (Linux).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
