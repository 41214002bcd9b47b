//! `make bench-train`: optimizer steps per second on the CPU, and the peak memory they
//! need, for
//!
//! - the Fashion-MNIST demo model (`configs/demo-fashion.toml`: ViT `micro` at 28 px, 4 px
//!   patches, predictor 48 × 2, batch 64), by I-JEPA and by MAE (decoder 48 × 2, as in
//!   `configs/compare-fashion.toml`);
//! - ViT-Tiny at 96 px with 8 px patches (predictor 96 × 2), batch 16,
//!
//! on Burn's `ndarray` backend and, when built with `--features flex`, on `flex`. Each step
//! is the training loop's own [`optimizer_step`] on real masks; inputs are random pixels
//! (speed does not depend on them). Peak memory is the process's peak resident set, reset
//! before each measurement.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use jepa_shared::rng::KeyedRng;
use jepa_shared::{MaskConfig, MultiBlockMasks, RandomMasks};
use jepa_trainer::batch::DeviceBatch;
use jepa_trainer::ijepa::{IJepaMethod, IJepaSettings};
use jepa_trainer::mae::{MaeMethod, MaeSettings};
use jepa_trainer::method::{Method, MethodVisitor};
use jepa_trainer::predictor::PredictorConfig;
use jepa_trainer::registry::AnyMethod;
use jepa_trainer::step::{StepOutcome, StepSettings, fresh, optimizer_step};
use jepa_trainer::vit::VitConfig;

struct Case {
    label: &'static str,
    method: AnyMethod,
    encoder: VitConfig,
    batch: usize,
}

fn ijepa(encoder: &VitConfig, predictor: PredictorConfig, min_keep: usize) -> AnyMethod {
    let masks = MaskConfig { min_keep, ..MaskConfig::default() };
    let settings = IJepaSettings { predictor, masks: masks.clone(), ..IJepaSettings::default() };
    let masks = MultiBlockMasks::new(masks, encoder.grid(), encoder.grid()).expect("masks fit");
    AnyMethod::IJepa(IJepaMethod { encoder: encoder.clone(), settings, masks })
}

fn mae(encoder: &VitConfig, decoder: PredictorConfig) -> AnyMethod {
    let masks = RandomMasks::new(0.75, encoder.grid(), encoder.grid()).expect("masks fit");
    let settings = MaeSettings { decoder, ..MaeSettings::default() };
    AnyMethod::Mae(MaeMethod { encoder: encoder.clone(), settings, masks })
}

fn cases() -> Vec<Case> {
    let micro = VitConfig::preset("micro", 28, 4, 1).unwrap();
    let tiny = VitConfig::preset("tiny", 96, 8, 3).unwrap();
    vec![
        Case {
            label: "demo I-JEPA: micro ViT, 28 px / 4, batch 64",
            method: ijepa(&micro, PredictorConfig { dim: 48, depth: 2, heads: 3 }, 4),
            encoder: micro.clone(),
            batch: 64,
        },
        Case {
            label: "demo MAE: micro ViT, 28 px / 4, batch 64",
            method: mae(&micro, PredictorConfig { dim: 48, depth: 2, heads: 3 }),
            encoder: micro,
            batch: 64,
        },
        Case {
            label: "I-JEPA ViT-Tiny, 96 px / 8, batch 16",
            method: ijepa(&tiny, PredictorConfig { dim: 96, depth: 2, heads: 3 }, 10),
            encoder: tiny,
            batch: 16,
        },
    ]
}

fn main() {
    let steps: usize = std::env::var("BENCH_TRAIN_STEPS").ok().and_then(|n| n.parse().ok()).unwrap_or(5);
    println!(
        "{steps} timed steps after one warm-up step; {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("{:<8} {:<45} {:>10} {:>10} {:>14}", "backend", "model", "s/step", "images/s", "peak RSS MiB");
    for case in cases() {
        measure::<Autodiff<burn::backend::NdArray<f32>>>("ndarray", &case, steps);
        #[cfg(feature = "flex")]
        measure::<Autodiff<burn::backend::Flex>>("flex", &case, steps);
    }
}

fn measure<B: AutodiffBackend>(backend: &str, case: &Case, steps: usize) {
    let per_step = case.method.visit(SecondsPerStep::<B> { case, steps, _backend: Default::default() });
    println!(
        "{backend:<8} {:<45} {per_step:>10.3} {:>10.1} {:>14.0}",
        case.label,
        case.batch as f64 / per_step,
        peak_memory_mib()
    );
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
        reset_peak_memory();
        let device = B::Device::default();
        let mut parts = fresh::<B, M>(method, method.init(0, &device));
        let settings = StepSettings { lr: 1e-4, weight_decay: 0.04, ema_momentum: Some(0.996), grad_clip: None };
        let mut seconds = 0.0;
        for step in 0..=self.steps {
            let batch = random_batch::<B, M>(method, &self.case.encoder, self.case.batch, step as u64, &device);
            let started = Instant::now();
            parts = match optimizer_step(method, parts, &[batch], &settings) {
                StepOutcome::Applied(parts, _) => *parts,
                StepOutcome::NonFinite(loss) => panic!("loss {loss}"),
            };
            if step > 0 {
                seconds += started.elapsed().as_secs_f64();
            }
        }
        seconds / self.steps as f64
    }
}

fn random_batch<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    encoder: &VitConfig,
    batch: usize,
    seed: u64,
    device: &B::Device,
) -> DeviceBatch<B> {
    let (channels, size) = (encoder.channels, encoder.image_size_px);
    let mut rng = KeyedRng::new(&[seed]);
    let pixels: Vec<f32> = (0..batch * channels * size * size).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let masks = method.masks().sample_batch(seed, 0, seed * batch as u64, batch);
    let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [batch, channels, size, size]), device);
    DeviceBatch::with_masks(images, &masks, device)
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
