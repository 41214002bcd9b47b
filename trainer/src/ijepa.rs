//! I-JEPA (Assran et al. 2023, §3): the context encoder sees only the kept context patches
//! of multi-block masks, the predictor guesses the target encoder's features at each target
//! block, and the loss compares them in representation space. The target encoder is an EMA
//! teacher of the context encoder, and it is what the probe evaluates.
//!
//! Targets come from the target encoder on the whole image, pass through a LayerNorm
//! without affine parameters, and are gathered per block. They live on the plain backend
//! and enter the autodiff graph as constants: no gradient ever reaches the target encoder.

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor};
use jepa_shared::{MaskConfig, MaskSampler, MultiBlockMasks};
use serde::{Deserialize, Serialize};

use crate::batch::DeviceBatch;
use crate::encoders::EncoderRole;
use crate::method::{
    BatchLoss, Method, MethodInfo, MethodSection, Reduce, SectionError, Stat, read_section, seeded, write_section,
};
use crate::predictor::{Predictor, PredictorConfig};
use crate::vit::{VisionTransformer, VitConfig, gather_tokens};

/// The regression loss between predicted and target features.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Smooth L1 with β = 1, the official choice.
    #[default]
    SmoothL1,
    Mse,
}

impl LossKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LossKind::SmoothL1 => "smooth_l1",
            LossKind::Mse => "mse",
        }
    }
}

/// The `[ijepa]` section of a run config. The defaults are the paper's masks, loss and EMA
/// schedule, and the seed's ViT-B predictor (384 wide, 6 deep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IJepaSettings {
    pub loss: LossKind,
    /// EMA momentum of the target encoder at the first and the last optimizer step.
    pub ema_momentum: [f64; 2],
    pub predictor: PredictorConfig,
    pub masks: MaskConfig,
}

impl Default for IJepaSettings {
    fn default() -> Self {
        Self {
            loss: LossKind::SmoothL1,
            ema_momentum: [0.996, 1.0],
            predictor: PredictorConfig { dim: 384, depth: 6, heads: 12 },
            masks: MaskConfig::default(),
        }
    }
}

/// Checks a predictor config as the field `field` of a section.
pub fn check_predictor(predictor: &PredictorConfig, field: &str) -> Result<(), SectionError> {
    match predictor.problem() {
        Some((name, problem)) => Err(SectionError::new(format!("{field}.{name}"), problem)),
        None => Ok(()),
    }
}

/// Multi-block masks on `encoder`'s patch grid, or the section's field that prevents them.
pub fn multi_block_masks(config: &MaskConfig, encoder: &VitConfig) -> Result<MultiBlockMasks, SectionError> {
    let grid = encoder.grid();
    MultiBlockMasks::new(config.clone(), grid, grid)
        .map_err(|error| SectionError::new(format!("masks.{}", error.field), error.problem))
}

/// What is trained: the context encoder and the predictor. The target encoder is kept
/// beside it by the training loop (same type, plain backend).
#[derive(Module, Debug)]
pub struct IJepa<B: Backend> {
    pub context_encoder: VisionTransformer<B>,
    pub predictor: Predictor<B>,
}

impl<B: Backend> IJepa<B> {
    /// A context encoder and a predictor whose outputs have `output` values per token.
    pub fn new(encoder: &VitConfig, predictor: &PredictorConfig, output: usize, device: &B::Device) -> Self {
        Self { context_encoder: encoder.init(device), predictor: predictor.init_with_output(encoder, output, device) }
    }

    /// The model a run with `seed` starts from (see [`seeded`]), predicting features.
    pub fn seeded(encoder: &VitConfig, predictor: &PredictorConfig, seed: u64, device: &B::Device) -> Self {
        seeded(
            seed,
            device,
            |cpu| IJepa::new(encoder, predictor, encoder.dim, cpu),
            || Self::new(encoder, predictor, encoder.dim, device),
        )
    }

    /// The predictions at every target block of `batch`, from its context alone, stacked
    /// along the batch: `[blocks · batch, t, output]`.
    pub fn predict(&self, batch: &DeviceBatch<B>) -> Tensor<B, 3> {
        Tensor::cat(self.predict_blocks(batch), 0)
    }

    /// The same, one `[batch, t, output]` per target block.
    pub fn predict_blocks(&self, batch: &DeviceBatch<B>) -> Vec<Tensor<B, 3>> {
        let context = self.context_encoder.forward(batch.images.clone(), Some(batch.context_idx.clone()));
        self.predictor.forward(context, batch.context_idx.clone(), &batch.target_idx)
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
        let target = Tensor::<B, 3>::from_inner(Tensor::cat(targets.blocks.clone(), 0));
        regression_loss(self.predict(batch), target, kind)
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

/// I-JEPA as a [`Method`].
#[derive(Debug, Clone)]
pub struct IJepaMethod {
    pub encoder: VitConfig,
    pub settings: IJepaSettings,
    pub masks: MultiBlockMasks,
}

impl MethodSection for IJepaMethod {
    const NAME: &'static str = "ijepa";

    fn from_section(section: Option<&toml::Value>, encoder: &VitConfig) -> Result<Self, SectionError> {
        let settings: IJepaSettings = read_section(section)?;
        check_predictor(&settings.predictor, "predictor")?;
        let [first, last] = settings.ema_momentum;
        if !(0.0..=1.0).contains(&first) || !(0.0..=1.0).contains(&last) {
            return Err(SectionError::new("ema_momentum", format!("is [{first}, {last}], expected values in [0, 1]")));
        }
        let masks = multi_block_masks(&settings.masks, encoder)?;
        Ok(Self { encoder: encoder.clone(), settings, masks })
    }
}

impl MethodInfo for IJepaMethod {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn objective(&self) -> String {
        format!("ijepa {}", self.settings.loss.as_str())
    }

    fn masks(&self) -> Arc<dyn MaskSampler> {
        Arc::new(self.masks.clone())
    }

    fn teacher_momentum(&self) -> Option<[f64; 2]> {
        Some(self.settings.ema_momentum)
    }

    fn metric_columns(&self) -> &'static [&'static str] {
        &["target_feature_std", "relaxed_masks"]
    }

    fn evaluated(&self) -> EncoderRole {
        EncoderRole::Teacher
    }

    fn evaluated_description(&self) -> &'static str {
        "the I-JEPA run's EMA target encoder"
    }

    fn section(&self) -> toml::Value {
        write_section(&self.settings)
    }
}

impl<B: AutodiffBackend> Method<B> for IJepaMethod {
    type Model = IJepa<B>;

    fn init(&self, seed: u64, device: &B::Device) -> IJepa<B> {
        IJepa::seeded(&self.encoder, &self.settings.predictor, seed, device)
    }

    fn encoder(model: &IJepa<B>) -> &VisionTransformer<B> {
        &model.context_encoder
    }

    fn loss(
        &self,
        model: &IJepa<B>,
        teacher: Option<&VisionTransformer<B::InnerBackend>>,
        batch: &DeviceBatch<B>,
    ) -> BatchLoss<B> {
        let teacher = teacher.expect("I-JEPA keeps a target encoder");
        let inner_idx: Vec<_> = batch.target_idx.iter().map(|idx| idx.clone().inner()).collect();
        let targets = target_features(teacher, batch.images.clone().inner(), &inner_idx);
        let loss = model.loss(batch, &targets, self.settings.loss);
        let stats = vec![
            Stat { name: "target_feature_std", value: targets.feature_std, reduce: Reduce::Mean },
            Stat { name: "relaxed_masks", value: batch.relaxed_masks as f64, reduce: Reduce::Sum },
        ];
        BatchLoss { loss, stats }
    }

    fn predict_features(&self, model: &IJepa<B>, batch: &DeviceBatch<B>) -> Option<Vec<Tensor<B, 3>>> {
        Some(model.predict_blocks(batch))
    }

    fn target_tokens(
        &self,
        teacher: &VisionTransformer<B::InnerBackend>,
        images: Tensor<B::InnerBackend, 4>,
    ) -> Option<Tensor<B::InnerBackend, 3>> {
        Some(layer_norm_without_affine(teacher.forward(images, None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

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
