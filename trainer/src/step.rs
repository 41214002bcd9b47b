//! One optimizer step of any method, shared by the training loop and the benchmark: the
//! method's loss and gradients, summed over micro-batches → optional global-norm clipping →
//! AdamW at the step's lr and weight decay → EMA of the target encoder at the step's
//! momentum, for a method that keeps one.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::Trainable;
use crate::ema::ema_update;
use crate::method::Method;
use crate::model::DeviceBatch;
use crate::optim::clip_grad_norm;

/// The schedule values and options of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    pub lr: f64,
    pub weight_decay: f64,
    /// Ignored by a method without a target encoder.
    pub ema_momentum: f64,
    pub grad_clip: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Mean loss over the micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The method's own statistics, each the mean over the micro-batches.
    pub method: Vec<(&'static str, f64)>,
}

pub enum StepOutcome<B: AutodiffBackend, M: AutodiffModule<B>> {
    Applied(Box<Trainable<B, M>>, StepStats),
    /// The loss was NaN or infinite; nothing was updated.
    NonFinite(f64),
}

/// Fresh parts for `model`: a target encoder copied from its EMA source when the method
/// keeps one, and an empty optimizer.
pub fn fresh<B: AutodiffBackend, M: Method<B>>(model: M::Model) -> Trainable<B, M::Model> {
    let target_encoder = M::ema_source(&model).map(|encoder| encoder.valid());
    Trainable { model, target_encoder, optimizer: Default::default() }
}

/// One optimizer step over `micro_batches` (gradient accumulation when there are several).
pub fn optimizer_step<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    parts: Trainable<B, M::Model>,
    micro_batches: &[DeviceBatch<B>],
    settings: &StepSettings,
) -> StepOutcome<B, M::Model> {
    let count = micro_batches.len().max(1) as f64;
    let mut accumulator = GradientsAccumulator::<M::Model>::new();
    let mut loss_sum = 0.0;
    let mut method_stats: Vec<(&'static str, f64)> = Vec::new();
    for batch in micro_batches {
        let batch_loss = method.loss(&parts.model, parts.target_encoder.as_ref(), batch);
        for (name, value) in batch_loss.stats {
            match method_stats.iter_mut().find(|(known, _)| *known == name) {
                Some((_, sum)) => *sum += value / count,
                None => method_stats.push((name, value / count)),
            }
        }
        // Each micro-batch's mean loss weighs 1/count: the sum is the mean over the step.
        let loss = batch_loss.loss / count;
        loss_sum += loss.clone().into_scalar().elem::<f64>();
        accumulator.accumulate(&parts.model, GradientsParams::from_grads(loss.backward(), &parts.model));
    }
    if !loss_sum.is_finite() {
        return StepOutcome::NonFinite(loss_sum);
    }
    let mut grads = accumulator.grads();
    let grad_norm = clip_grad_norm(&parts.model, &mut grads, settings.grad_clip);
    let Trainable { model, target_encoder, mut optimizer } = parts;
    let model = optimizer.step(model, grads, settings.lr, settings.weight_decay);
    let target_encoder = target_encoder.map(|target| {
        let online = M::ema_source(&model).expect("a method with a target encoder names its EMA source");
        ema_update(target, &online.valid(), settings.ema_momentum)
    });
    let stats = StepStats { loss: loss_sum, grad_norm, method: method_stats };
    StepOutcome::Applied(Box::new(Trainable { model, target_encoder, optimizer }), stats)
}
