//! How long an optimizer step takes on a backend, measured with the method's own masks on
//! random pixels (a step's speed does not depend on them): the figures of `make
//! bench-train`, and the estimate `train` gives when the device it was asked for is missing
//! ([`on_the_cpu`]): what the whole run would take on this machine's CPU.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use jepa_shared::rng::KeyedRng;
use jepa_shared::{Dataset, Loader, LoaderPosition};

use crate::batch::DeviceBatch;
use crate::device::Cpu;
use crate::method::{Method, MethodVisitor};
use crate::recipe::Recipe;
use crate::step::{StepOutcome, StepSettings, fresh, optimizer_step};
use crate::training::TrainError;
use crate::vit::VitConfig;

/// Mean seconds of `steps` optimizer steps of `method` on micro-batches of `batch` images
/// (no accumulation), after one untimed warm-up step.
pub fn seconds_per_step<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    encoder: &VitConfig,
    batch: usize,
    steps: usize,
    device: &B::Device,
) -> f64 {
    let mut parts = fresh::<B, M>(method, method.init(0, device));
    let settings = StepSettings { lr: 1e-4, weight_decay: 0.04, ema_momentum: Some(0.996), grad_clip: None };
    let mut seconds = 0.0;
    for step in 0..=steps {
        let images = random_images::<B>(encoder, batch, step as u64, device);
        let masks = method.masks().sample_batch(step as u64, 0, (step * batch) as u64, batch);
        let micro_batch = DeviceBatch::with_masks(images, &masks, device);
        let started = Instant::now();
        parts = match optimizer_step(method, parts, &[micro_batch], &settings) {
            StepOutcome::Applied(parts, _) => *parts,
            StepOutcome::NonFinite(loss) => panic!("a step on random pixels gave loss {loss}"),
        };
        if step > 0 {
            seconds += started.elapsed().as_secs_f64();
        }
    }
    seconds / steps.max(1) as f64
}

/// `batch` images of `encoder`'s geometry, already normalised: uniform in [−1, 1).
pub fn random_images<B: Backend>(encoder: &VitConfig, batch: usize, seed: u64, device: &B::Device) -> Tensor<B, 4> {
    let (channels, size) = (encoder.channels, encoder.image_size_px);
    let mut rng = KeyedRng::new(&[seed]);
    let pixels: Vec<f32> = (0..batch * channels * size * size).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    Tensor::from_data(TensorData::new(pixels, [batch, channels, size, size]), device)
}

/// What a run would take on this machine's CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuEstimate {
    /// One optimizer step of the recipe (`batch_size × accumulation` images), from the
    /// micro-batches that were timed.
    pub seconds_per_step: f64,
    /// Images in one optimizer step.
    pub images_per_step: usize,
    /// The sizes of the two micro-batches that were timed.
    pub images_timed: [usize; 2],
    /// The optimizer steps of the whole run.
    pub steps: u64,
}

impl CpuEstimate {
    pub fn run_seconds(&self) -> f64 {
        self.seconds_per_step * self.steps as f64
    }
}

/// Micro-batch sizes timed for the estimate: two, so that a step's fixed cost is told apart
/// from its cost per image; small enough that a ViT-B/16 step takes seconds on two cores.
const IMAGES_TIMED: [usize; 2] = [4, 8];

/// Times optimizer steps of `recipe`'s method on the CPU at two small micro-batch sizes,
/// fits the time as a fixed cost plus a cost per image, and scales it to the recipe's step
/// (`accumulation` micro-batches of `batch_size`) and to its whole run (steps counted from
/// the dataset, as training counts them). An estimate, not a measurement of the full batch.
pub fn on_the_cpu(recipe: &Recipe) -> Result<CpuEstimate, TrainError> {
    let dataset = Dataset::open(recipe.dataset())?;
    let method = recipe.method();
    let batches_per_epoch = {
        let loader =
            Loader::start(&dataset, &recipe.loader_config(), method.info().masks(), LoaderPosition::default())?;
        loader.batches_per_epoch()
    };
    let steps = recipe.last_step(&recipe.schedule(batches_per_epoch));
    let batch = recipe.config().loader.batch_size;
    let accumulation = recipe.config().optim.accumulation as usize;
    let images_timed = IMAGES_TIMED.map(|images| images.min(batch));
    let [small, large] = images_timed.map(|images| {
        let timer =
            TimeOneStep::<Autodiff<Cpu>> { encoder: recipe.encoder(), batch: images, device: Default::default() };
        method.visit(timer)
    });
    let per_image = (large - small) / (images_timed[1] - images_timed[0]).max(1) as f64;
    let micro_batch = if per_image > 0.0 {
        small + per_image * (batch - images_timed[0]) as f64
    } else {
        // Equal sizes (a batch this small is timed whole), or timing noise larger than the
        // difference: scale the larger timing in proportion.
        large * batch as f64 / images_timed[1] as f64
    };
    Ok(CpuEstimate {
        seconds_per_step: micro_batch * accumulation as f64,
        images_per_step: batch * accumulation,
        images_timed,
        steps,
    })
}

struct TimeOneStep<'a, B: Backend> {
    encoder: &'a VitConfig,
    batch: usize,
    device: B::Device,
}

impl<B: AutodiffBackend> MethodVisitor<B> for TimeOneStep<'_, B> {
    type Output = f64;

    fn visit<M: Method<B>>(self, method: &M) -> f64 {
        seconds_per_step(method, self.encoder, self.batch, 1, &self.device)
    }
}

/// `seconds` as a person reads a duration: "0.17 s", "40 s", "7.5 min", "3.2 h", "63 days".
pub fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 1.0 => format!("{s:.2} s"),
        s if s < 10.0 => format!("{s:.1} s"),
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 90.0 * 60.0 => format!("{:.1} min", s / 60.0),
        s if s < 48.0 * 3600.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.0} days", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        assert_eq!(duration(0.1712), "0.17 s");
        assert_eq!(duration(3.84), "3.8 s");
        assert_eq!(duration(40.4), "40 s");
        assert_eq!(duration(450.0), "7.5 min");
        assert_eq!(duration(3.2 * 3600.0), "3.2 h");
        assert_eq!(duration(63.0 * 86_400.0), "63 days");
    }
}
