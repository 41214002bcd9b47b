//! One optimizer step of I-JEPA, shared by the training loop and the benchmark:
//! targets from the target encoder (no graph) → loss and gradients of context encoder +
//! predictor, summed over micro-batches → optional global-norm clipping → AdamW at the
//! step's lr and weight decay → EMA of the target encoder at the step's momentum.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::Trainable;
use crate::ema::ema_update;
use crate::model::{DeviceBatch, IJepa, LossKind, target_features};
use crate::optim::clip_grad_norm;

/// The schedule values and options of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    pub lr: f64,
    pub weight_decay: f64,
    pub ema_momentum: f64,
    pub loss: LossKind,
    pub grad_clip: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean loss over the micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub target_feature_std: f64,
}

pub enum StepOutcome<B: AutodiffBackend> {
    Applied(Box<Trainable<B>>, StepStats),
    /// The loss was NaN or infinite; nothing was updated.
    NonFinite(f64),
}

/// One optimizer step over `micro_batches` (gradient accumulation when there are several).
pub fn optimizer_step<B: AutodiffBackend>(
    parts: Trainable<B>,
    micro_batches: &[DeviceBatch<B>],
    settings: &StepSettings,
) -> StepOutcome<B> {
    let count = micro_batches.len().max(1) as f64;
    let mut accumulator = GradientsAccumulator::<IJepa<B>>::new();
    let (mut loss_sum, mut feature_std) = (0.0, 0.0);
    for batch in micro_batches {
        let inner_idx: Vec<_> = batch.target_idx.iter().map(|idx| idx.clone().inner()).collect();
        let targets = target_features(&parts.target_encoder, batch.images.clone().inner(), &inner_idx);
        feature_std += targets.feature_std / count;
        // Each micro-batch's mean loss weighs 1/count: the sum is the mean over the step.
        let loss = parts.model.loss(batch, &targets, settings.loss) / count;
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
    let target_encoder = ema_update(target_encoder, &model.context_encoder.valid(), settings.ema_momentum);
    let stats = StepStats { loss: loss_sum, grad_norm, target_feature_std: feature_std };
    StepOutcome::Applied(Box::new(Trainable { model, target_encoder, optimizer }), stats)
}
