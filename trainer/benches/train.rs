//! `make bench-train`: I-JEPA optimizer steps per second on the CPU, and the peak memory
//! they need, for
//!
//! - the Fashion-MNIST demo model (`configs/demo-fashion.toml`: ViT `micro` at 28 px, 4 px
//!   patches, predictor 48 × 2, batch 64);
//! - ViT-Tiny at 96 px with 8 px patches (predictor 96 × 2), batch 16,
//!
//! on Burn's `ndarray` backend and, when built with `--features flex`, on `flex`. Each step
//! is the training loop's own [`optimizer_step`] on real masks; inputs are random pixels
//! (speed does not depend on them). Peak memory is the process's peak resident set, reset
//! before each measurement.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use jepa_shared::rng::KeyedRng;
use jepa_shared::vit::VitConfig;
use jepa_shared::{MaskConfig, MultiBlockMasks};
use jepa_trainer::checkpoint::Trainable;
use jepa_trainer::model::{DeviceBatch, IJepa, LossKind};
use jepa_trainer::optim::AdamW;
use jepa_trainer::predictor::PredictorConfig;
use jepa_trainer::step::{StepOutcome, StepSettings, optimizer_step};

struct Case {
    label: &'static str,
    encoder: VitConfig,
    predictor: PredictorConfig,
    batch: usize,
    min_keep: usize,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            label: "demo: micro ViT, 28 px / 4, batch 64",
            encoder: VitConfig::preset("micro", 28, 4, 1).unwrap(),
            predictor: PredictorConfig { dim: 48, depth: 2, heads: 3 },
            batch: 64,
            min_keep: 4,
        },
        Case {
            label: "ViT-Tiny, 96 px / 8, batch 16",
            encoder: VitConfig::preset("tiny", 96, 8, 3).unwrap(),
            predictor: PredictorConfig { dim: 96, depth: 2, heads: 3 },
            batch: 16,
            min_keep: 10,
        },
    ]
}

fn main() {
    let steps: usize = std::env::var("BENCH_TRAIN_STEPS").ok().and_then(|n| n.parse().ok()).unwrap_or(5);
    println!(
        "{steps} timed steps after one warm-up step; {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("{:<8} {:<40} {:>10} {:>10} {:>14}", "backend", "model", "s/step", "images/s", "peak RSS MiB");
    for case in cases() {
        run::<Autodiff<burn::backend::NdArray<f32>>>("ndarray", &case, steps);
        #[cfg(feature = "flex")]
        run::<Autodiff<burn::backend::Flex>>("flex", &case, steps);
    }
}

fn run<B: AutodiffBackend>(backend: &str, case: &Case, steps: usize) {
    reset_peak_memory();
    let device = B::Device::default();
    let model = IJepa::<B>::new(&case.encoder, &case.predictor, &device);
    let mut parts = Trainable { target_encoder: model.context_encoder.valid(), model, optimizer: AdamW::default() };
    let settings =
        StepSettings { lr: 1e-4, weight_decay: 0.04, ema_momentum: 0.996, loss: LossKind::SmoothL1, grad_clip: None };
    let mut seconds = 0.0;
    for step in 0..=steps {
        let batch = random_batch::<B>(case, step as u64, &device);
        let started = Instant::now();
        parts = match optimizer_step(parts, &[batch], &settings) {
            StepOutcome::Applied(parts, _) => *parts,
            StepOutcome::NonFinite(loss) => panic!("loss {loss}"),
        };
        if step > 0 {
            seconds += started.elapsed().as_secs_f64();
        }
    }
    let per_step = seconds / steps as f64;
    println!(
        "{backend:<8} {:<40} {per_step:>10.3} {:>10.1} {:>14.0}",
        case.label,
        case.batch as f64 / per_step,
        peak_memory_mib()
    );
}

fn random_batch<B: Backend>(case: &Case, seed: u64, device: &B::Device) -> DeviceBatch<B> {
    let encoder = &case.encoder;
    let (batch, size) = (case.batch, encoder.image_size_px);
    let mut rng = KeyedRng::new(&[seed]);
    let pixels: Vec<f32> = (0..batch * encoder.channels * size * size).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let masks_config = MaskConfig { min_keep: case.min_keep, ..MaskConfig::default() };
    let masks = MultiBlockMasks::new(masks_config, encoder.grid(), encoder.grid()).expect("masks fit");
    let masks = masks.sample_batch(seed, 0, seed * batch as u64, batch);
    let images = Tensor::from_data(TensorData::new(pixels, [batch, encoder.channels, size, size]), device);
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
