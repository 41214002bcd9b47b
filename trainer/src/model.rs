//! The I-JEPA objective (Assran et al. 2023, §3): the context encoder sees only the kept
//! context patches, the predictor guesses the target encoder's features at each target
//! block, and the loss compares them in representation space.
//!
//! Targets come from the EMA target encoder on the whole image, pass through a LayerNorm
//! without affine parameters, and are gathered per block. They live on the plain backend
//! and enter the autodiff graph as constants: no gradient ever reaches the target encoder.

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use jepa_shared::BatchMasks;
use jepa_shared::vit::{VisionTransformer, VitConfig, gather_tokens, normalize_pixels};
use serde::{Deserialize, Serialize};

use crate::predictor::{Predictor, PredictorConfig};
use crate::prefetch::Batch;

/// The regression loss between predicted and target features.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Smooth L1 with β = 1, the official choice.
    #[default]
    SmoothL1,
    Mse,
}

/// What is trained: the context encoder and the predictor. The target encoder is kept
/// beside it by the training loop (same type, plain backend).
#[derive(Module, Debug)]
pub struct IJepa<B: Backend> {
    pub context_encoder: VisionTransformer<B>,
    pub predictor: Predictor<B>,
}

impl<B: Backend> IJepa<B> {
    pub fn new(encoder: &VitConfig, predictor: &PredictorConfig, device: &B::Device) -> Self {
        Self { context_encoder: encoder.init(device), predictor: predictor.init(encoder, device) }
    }

    /// The model a run with `seed` starts from (see [`seeded`]).
    pub fn seeded(encoder: &VitConfig, predictor: &PredictorConfig, seed: u64, device: &B::Device) -> Self {
        seeded(seed, device, || Self::new(encoder, predictor, device))
    }
}

/// The model `build` returns with every parameter drawn from `seed`, identical whichever
/// thread builds it: a run's starting point and the probe's random-init baseline. Models
/// that build their encoder first get the same encoder from the same seed.
pub fn seeded<B: Backend, M: Module<B>>(seed: u64, device: &B::Device, build: impl FnOnce() -> M) -> M {
    // Burn's backends keep one process-wide RNG and initialise parameters lazily, at
    // first use: seed and draw every parameter now, under a lock, so runs in other
    // threads cannot interleave their draws with this one's.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    let model = build();
    model.visit(&mut Materialize);
    model
}

/// Touches every parameter so its lazy initialiser runs now.
struct Materialize;

impl<B: Backend> burn::module::ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// One loader batch on the device: normalised images and the mask indices.
#[derive(Debug, Clone)]
pub struct DeviceBatch<B: Backend> {
    pub images: Tensor<B, 4>,
    pub context_idx: Tensor<B, 2, Int>,
    pub target_idx: Vec<Tensor<B, 2, Int>>,
}

impl<B: Backend> DeviceBatch<B> {
    /// Uploads `batch`; normalisation with the dataset's `mean`/`std` is the first op.
    pub fn new(batch: &Batch, mean: &[f32], std: &[f32], device: &B::Device) -> Self {
        let size = batch.image_size_px;
        let images = normalize_pixels(&batch.images, [batch.len(), batch.channels, size, size], mean, std, device);
        Self::with_masks(images, &batch.masks, device)
    }

    /// Images already on the device (`[batch, …]`) with `masks` for the same batch.
    pub fn with_masks(images: Tensor<B, 4>, masks: &BatchMasks, device: &B::Device) -> Self {
        let rows = images.dims()[0];
        let index = |values: Vec<u32>| {
            let columns = values.len() / rows.max(1);
            let values: Vec<i64> = values.into_iter().map(i64::from).collect();
            Tensor::<B, 2, Int>::from_data(TensorData::new(values, [rows, columns]), device)
        };
        Self {
            images,
            context_idx: index(masks.context_flat()),
            target_idx: masks.targets_flat().into_iter().map(index).collect(),
        }
    }
}

/// The target encoder's features at each target block, and the spread of its output.
pub struct Targets<B: Backend> {
    pub blocks: Vec<Tensor<B, 3>>,
    /// Standard deviation over the batch's tokens, averaged over features: near 0 means
    /// the encoders collapsed to a constant.
    pub feature_std: f64,
}

/// Runs the target encoder on whole images: output → non-affine LayerNorm → per-block gather.
pub fn target_features<B: Backend>(
    target_encoder: &VisionTransformer<B>,
    images: Tensor<B, 4>,
    target_idx: &[Tensor<B, 2, Int>],
) -> Targets<B> {
    let features = target_encoder.forward(images, None);
    let [batch, patches, dim] = features.dims();
    let flat = features.clone().reshape([batch * patches, dim]);
    let feature_std: f64 = flat.var(0).sqrt().mean().into_scalar().elem();
    let normalised = layer_norm_without_affine(features);
    Targets {
        blocks: target_idx.iter().map(|idx| gather_tokens(normalised.clone(), idx.clone())).collect(),
        feature_std,
    }
}

/// `(x − mean) / √(var + ε)` over the last dimension (PyTorch's `F.layer_norm` with no weight).
pub fn layer_norm_without_affine<B: Backend>(features: Tensor<B, 3>) -> Tensor<B, 3> {
    let (variance, mean) = features.clone().var_mean_bias(2);
    (features - mean) / (variance + 1e-6).sqrt()
}

impl<B: AutodiffBackend> IJepa<B> {
    /// The I-JEPA loss of one batch against precomputed targets.
    pub fn loss(&self, batch: &DeviceBatch<B>, targets: &Targets<B::InnerBackend>, kind: LossKind) -> Tensor<B, 1> {
        let context = self.context_encoder.forward(batch.images.clone(), Some(batch.context_idx.clone()));
        let predicted = self.predictor.forward(context, batch.context_idx.clone(), &batch.target_idx);
        let predicted = Tensor::cat(predicted, 0);
        let target = Tensor::<B, 3>::from_inner(Tensor::cat(targets.blocks.clone(), 0));
        regression_loss(predicted, target, kind)
    }
}

/// Mean over every element — `.mean()`, never `.sum()`, so the loss and its gradient do not
/// grow with batch size, block count or width.
pub fn regression_loss<B: Backend>(predicted: Tensor<B, 3>, target: Tensor<B, 3>, kind: LossKind) -> Tensor<B, 1> {
    let difference = predicted - target;
    match kind {
        LossKind::Mse => difference.powi_scalar(2).mean(),
        LossKind::SmoothL1 => {
            // β = 1: ½d² where |d| < 1, |d| − ½ elsewhere.
            let absolute = difference.abs();
            let quadratic = absolute.clone().clamp_max(1.0);
            let linear = absolute - quadratic.clone();
            (quadratic.powi_scalar(2) * 0.5 + linear).mean()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn smooth_l1_matches_a_hand_computation() {
        let device = Default::default();
        let predicted = Tensor::<B, 3>::from_data(TensorData::new(vec![0.0f32, 0.5, 3.0, -2.0], [1, 2, 2]), &device);
        let target = Tensor::<B, 3>::zeros([1, 2, 2], &device);
        // 0, ½·0.25, 3 − ½, 2 − ½ → mean of [0, 0.125, 2.5, 1.5] = 1.03125.
        let loss: f32 = regression_loss(predicted.clone(), target.clone(), LossKind::SmoothL1).into_scalar();
        assert!((loss - 1.03125).abs() < 1e-6, "{loss}");
        let mse: f32 = regression_loss(predicted, target, LossKind::Mse).into_scalar();
        assert!((mse - (0.25 + 9.0 + 4.0) / 4.0).abs() < 1e-6, "{mse}");
    }

    #[test]
    fn non_affine_layer_norm_gives_zero_mean_unit_variance_tokens() {
        let device = Default::default();
        let features = Tensor::<B, 3>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 6.0], [1, 1, 4]), &device);
        let values = layer_norm_without_affine(features).into_data().to_vec::<f32>().unwrap();
        // mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
        let expected: Vec<f32> = [-2.0f32, -1.0, 0.0, 3.0].iter().map(|x| x / (3.5f32 + 1e-6).sqrt()).collect();
        for (got, want) in values.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{values:?}");
        }
    }
}
