//! One optimizer step of any method, shared by the training loop and the benchmark: the
//! method's loss and gradients, summed over micro-batches → optional global-norm clipping →
//! AdamW at the step's lr and weight decay → EMA of the target encoder at the step's
//! momentum, for a method that keeps a teacher. Under data parallelism the losses and
//! statistics are combined over the ranks before the non-finite check (so every rank stops
//! together) and the gradients averaged after accumulation, before clipping.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;

use crate::batch::DeviceBatch;
use crate::checkpoint::Trainable;
use crate::collective::{Collective, CollectiveError, Solo};
use crate::data_parallel::average_gradients;
use crate::ema::ema_update;
use crate::method::{Method, Reduce};
use crate::optim::clip_grad_norm;

/// The schedule values and options of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    pub lr: f64,
    pub weight_decay: f64,
    /// The EMA teacher's momentum, for a method with a teacher.
    pub ema_momentum: Option<f64>,
    pub grad_clip: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Mean loss over the micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The method's own statistics, each the mean or the sum over the micro-batches as the
    /// method says.
    pub method: Vec<(&'static str, f64)>,
}

pub enum StepOutcome<B: AutodiffBackend, M: AutodiffModule<B>> {
    Applied(Box<Trainable<B, M>>, StepStats),
    /// The loss was NaN or infinite; nothing was updated.
    NonFinite(f64),
}

/// Fresh parts for `model`: a teacher copied from its encoder when the method keeps one,
/// and an empty optimizer.
pub fn fresh<B: AutodiffBackend, M: Method<B>>(method: &M, model: M::Model) -> Trainable<B, M::Model> {
    let target_encoder = method.teacher_momentum().map(|_| M::encoder(&model).valid());
    Trainable { model, target_encoder, optimizer: Default::default() }
}

/// One optimizer step over `micro_batches` (gradient accumulation when there are several).
pub fn optimizer_step<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    parts: Trainable<B, M::Model>,
    micro_batches: &[DeviceBatch<B>],
    settings: &StepSettings,
) -> StepOutcome<B, M::Model> {
    optimizer_step_across(method, parts, micro_batches, settings, &mut Solo).expect("one process exchanges nothing")
}

/// [`optimizer_step`] on this rank's share of each micro-batch, with the ranks of
/// `collective` (with [`Solo`], exactly [`optimizer_step`]).
pub fn optimizer_step_across<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    parts: Trainable<B, M::Model>,
    micro_batches: &[DeviceBatch<B>],
    settings: &StepSettings,
    collective: &mut dyn Collective,
) -> Result<StepOutcome<B, M::Model>, CollectiveError> {
    let count = micro_batches.len().max(1) as f64;
    let mut accumulator = GradientsAccumulator::<M::Model>::new();
    let mut loss_sum = 0.0;
    let mut method_stats: Vec<(&'static str, f64, Reduce)> = Vec::new();
    for batch in micro_batches {
        let batch_loss = method.loss(&parts.model, parts.target_encoder.as_ref(), batch);
        for stat in batch_loss.stats {
            let share = match stat.reduce {
                Reduce::Mean => stat.value / count,
                Reduce::Sum => stat.value,
            };
            match method_stats.iter_mut().find(|(known, _, _)| *known == stat.name) {
                Some((_, total, _)) => *total += share,
                None => method_stats.push((stat.name, share, stat.reduce)),
            }
        }
        // Each micro-batch's mean loss weighs 1/count: the sum is the mean over the step.
        let loss = batch_loss.loss / count;
        loss_sum += loss.clone().into_scalar().elem::<f64>();
        accumulator.accumulate(&parts.model, GradientsParams::from_grads(loss.backward(), &parts.model));
    }
    let world = collective.world_size();
    if world > 1 {
        // Every rank's share is the same size: the mean of the ranks' losses is the loss of
        // the global batch. Every rank sees the same values, so all stop together below.
        let mut scalars: Vec<f64> = std::iter::once(loss_sum).chain(method_stats.iter().map(|stat| stat.1)).collect();
        collective.all_reduce_sum(&mut scalars)?;
        loss_sum = scalars[0] / world as f64;
        for ((_, value, reduce), total) in method_stats.iter_mut().zip(&scalars[1..]) {
            *value = match reduce {
                Reduce::Mean => total / world as f64,
                Reduce::Sum => *total,
            };
        }
    }
    if !loss_sum.is_finite() {
        return Ok(StepOutcome::NonFinite(loss_sum));
    }
    let mut grads = accumulator.grads();
    if world > 1 {
        average_gradients(&parts.model, &mut grads, collective)?;
    }
    let grad_norm = clip_grad_norm(&parts.model, &mut grads, settings.grad_clip);
    let Trainable { model, target_encoder, mut optimizer } = parts;
    let model = optimizer.step(model, grads, settings.lr, settings.weight_decay);
    let target_encoder = target_encoder.map(|target| {
        let momentum = settings.ema_momentum.expect("a method with a teacher has a momentum schedule");
        ema_update(target, &M::encoder(&model).valid(), momentum)
    });
    let method = method_stats.into_iter().map(|(name, value, _)| (name, value)).collect();
    let stats = StepStats { loss: loss_sum, grad_norm, method };
    Ok(StepOutcome::Applied(Box::new(Trainable { model, target_encoder, optimizer }), stats))
}
