//! MAE (He et al. 2022), the pixel-space baseline, on the same encoder, shards and loader as
//! I-JEPA: the encoder sees only the visible patches (a uniform random 25%), a light decoder
//! ([`Predictor`] with pixels as its output) fills in the masked ones, and the loss compares
//! pixels. There is no teacher; the probe evaluates the trained encoder.
//!
//! Three losses ([`MaeLoss`]):
//! - `norm_pix` (the default, the paper's best): mean squared error on the **masked**
//!   patches only, each target patch normalised by its own mean and (unbiased) variance;
//! - `l1`: mean absolute error on the masked patches against their pixels as the encoder
//!   sees them (normalised per channel, not per patch): the seed's "pixel values (L1)";
//! - `l1_all`: the same over **every** patch, a weaker variant kept for comparison with
//!   runs that used it.

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use jepa_shared::{MaskSampler, RandomMasks};
use serde::{Deserialize, Serialize};

use crate::batch::DeviceBatch;
use crate::encoders::EncoderRole;
use crate::ijepa::check_predictor;
use crate::method::{BatchLoss, Method, MethodInfo, MethodSection, SectionError, read_section, seeded, write_section};
use crate::pixels::{norm_pix, patchify, undo_norm_pix};
use crate::predictor::{Predictor, PredictorConfig};
use crate::vit::{VisionTransformer, VitConfig, gather_tokens};

/// The pixel loss of MAE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaeLoss {
    /// MSE on masked patches against per-patch normalised pixels (`norm_pix_loss`).
    #[default]
    NormPix,
    /// L1 on the masked patches against the pixels as they are.
    L1,
    /// L1 over all patches against the pixels as they are.
    L1All,
}

impl MaeLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            MaeLoss::NormPix => "norm_pix",
            MaeLoss::L1 => "l1",
            MaeLoss::L1All => "l1_all",
        }
    }
}

/// The `[mae]` section of a run config; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaeSettings {
    /// Share of patches hidden from the encoder.
    pub mask_ratio: f64,
    pub loss: MaeLoss,
    /// The decoder's width, depth and heads (the paper: 512, 8, 16).
    pub decoder: PredictorConfig,
}

impl Default for MaeSettings {
    fn default() -> Self {
        Self { mask_ratio: 0.75, loss: MaeLoss::NormPix, decoder: PredictorConfig { dim: 512, depth: 8, heads: 16 } }
    }
}

/// What MAE trains: the encoder and the decoder.
#[derive(Module, Debug)]
pub struct Mae<B: Backend> {
    pub encoder: VisionTransformer<B>,
    pub decoder: Predictor<B>,
    patch_size_px: usize,
}

impl<B: Backend> Mae<B> {
    pub fn new(encoder: &VitConfig, decoder: &PredictorConfig, device: &B::Device) -> Self {
        let patch_values = encoder.patch_size_px * encoder.patch_size_px * encoder.channels;
        Self {
            encoder: encoder.init(device),
            decoder: decoder.init_with_output(encoder, patch_values, device),
            patch_size_px: encoder.patch_size_px,
        }
    }

    /// The model a run with `seed` starts from; its encoder is the one an I-JEPA run with
    /// the same seed and encoder starts from.
    pub fn seeded(encoder: &VitConfig, decoder: &PredictorConfig, seed: u64, device: &B::Device) -> Self {
        seeded(seed, device, |cpu| Mae::new(encoder, decoder, cpu), || Self::new(encoder, decoder, device))
    }

    /// Predicted pixels: `[batch, masked, patch values]` at `masked_idx`, or with `all`,
    /// `[batch, visible + masked, patch values]`, the visible patches first.
    pub fn predict(
        &self,
        images: Tensor<B, 4>,
        visible_idx: Tensor<B, 2, Int>,
        masked_idx: Tensor<B, 2, Int>,
        all: bool,
    ) -> Tensor<B, 3> {
        let visible = self.encoder.forward(images, Some(visible_idx.clone()));
        if all {
            self.decoder.forward_all(visible, visible_idx, masked_idx)
        } else {
            self.decoder.forward(visible, visible_idx, &[masked_idx]).pop().expect("one target block")
        }
    }
}

impl<B: AutodiffBackend> Mae<B> {
    /// The MAE loss of one batch: the loader's context is the visible set, its one target
    /// block the masked set.
    pub fn loss(&self, batch: &DeviceBatch<B>, kind: MaeLoss) -> Tensor<B, 1> {
        let masked_idx = batch.target_idx[0].clone();
        let all = kind == MaeLoss::L1All;
        let predicted = self.predict(batch.images.clone(), batch.context_idx.clone(), masked_idx.clone(), all);
        let targets = patchify(batch.images.clone().detach(), self.patch_size_px);
        pixel_loss(predicted, targets, batch.context_idx.clone(), masked_idx, kind)
    }
}

/// The MAE loss from predictions and the true patches of the whole image (`[batch,
/// patches, values]`).
///
/// - `norm_pix`, `l1`: `predicted` is `[batch, masked, values]` at `masked_idx`; the
///   visible patches' targets are never read.
/// - `l1_all`: `predicted` is `[batch, visible + masked, values]`, visible first.
pub fn pixel_loss<B: Backend>(
    predicted: Tensor<B, 3>,
    targets: Tensor<B, 3>,
    visible_idx: Tensor<B, 2, Int>,
    masked_idx: Tensor<B, 2, Int>,
    kind: MaeLoss,
) -> Tensor<B, 1> {
    match kind {
        MaeLoss::NormPix => {
            let targets = norm_pix(gather_tokens(targets, masked_idx));
            (predicted - targets).powi_scalar(2).mean()
        }
        MaeLoss::L1 => (predicted - gather_tokens(targets, masked_idx)).abs().mean(),
        MaeLoss::L1All => {
            let order = Tensor::cat(vec![visible_idx, masked_idx], 1);
            (predicted - gather_tokens(targets, order)).abs().mean()
        }
    }
}

/// MAE as a [`Method`].
#[derive(Debug, Clone)]
pub struct MaeMethod {
    pub encoder: VitConfig,
    pub settings: MaeSettings,
    pub masks: RandomMasks,
}

impl MethodSection for MaeMethod {
    const NAME: &'static str = "mae";

    fn from_section(section: Option<&toml::Value>, encoder: &VitConfig) -> Result<Self, SectionError> {
        let settings: MaeSettings = read_section(section)?;
        check_predictor(&settings.decoder, "decoder")?;
        let grid = encoder.grid();
        let masks = RandomMasks::new(settings.mask_ratio, grid, grid)
            .map_err(|error| SectionError::new("mask_ratio", error.problem))?;
        Ok(Self { encoder: encoder.clone(), settings, masks })
    }
}

impl MethodInfo for MaeMethod {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn objective(&self) -> String {
        format!("mae {}", self.settings.loss.as_str())
    }

    fn masks(&self) -> Arc<dyn MaskSampler> {
        Arc::new(self.masks.clone())
    }

    fn teacher_momentum(&self) -> Option<[f64; 2]> {
        None
    }

    fn metric_columns(&self) -> &'static [&'static str] {
        &[]
    }

    fn evaluated(&self) -> EncoderRole {
        EncoderRole::Trained
    }

    fn evaluated_description(&self) -> &'static str {
        "the MAE run's encoder"
    }

    fn section(&self) -> toml::Value {
        write_section(&self.settings)
    }
}

impl<B: AutodiffBackend> Method<B> for MaeMethod {
    type Model = Mae<B>;

    fn init(&self, seed: u64, device: &B::Device) -> Mae<B> {
        Mae::seeded(&self.encoder, &self.settings.decoder, seed, device)
    }

    fn encoder(model: &Mae<B>) -> &VisionTransformer<B> {
        &model.encoder
    }

    fn loss(
        &self,
        model: &Mae<B>,
        _teacher: Option<&VisionTransformer<B::InnerBackend>>,
        batch: &DeviceBatch<B>,
    ) -> BatchLoss<B> {
        BatchLoss { loss: model.loss(batch, self.settings.loss), stats: Vec::new() }
    }

    fn predict_pixels(&self, model: &Mae<B>, batch: &DeviceBatch<B>) -> Option<Vec<Tensor<B, 3>>> {
        let masked_idx = batch.target_idx[0].clone();
        let predicted = model.predict(batch.images.clone(), batch.context_idx.clone(), masked_idx.clone(), false);
        Some(vec![match self.settings.loss {
            MaeLoss::NormPix => {
                let truth = gather_tokens(patchify(batch.images.clone(), self.encoder.patch_size_px), masked_idx);
                undo_norm_pix(predicted, truth)
            }
            MaeLoss::L1 | MaeLoss::L1All => predicted,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn index(values: Vec<i64>, shape: [usize; 2]) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    #[test]
    fn the_norm_pix_loss_matches_a_hand_computation() {
        // The masked patch [1, 2, 3, 6]: mean 3, unbiased variance (4 + 1 + 0 + 9) / 3 = 14/3.
        // A zero prediction's loss is the mean square of the normalised patch: 14 / (4 · 14/3) = 0.75.
        let loss: f32 = pixel_loss(
            tensor(vec![0.0; 4], [1, 1, 4]),
            tensor(vec![1.0, 2.0, 3.0, 6.0, 9.0, 9.0, 9.0, 0.0], [1, 2, 4]),
            index(vec![1], [1, 1]),
            index(vec![0], [1, 1]),
            MaeLoss::NormPix,
        )
        .into_scalar();
        assert!((f64::from(loss) - 14.0 / (4.0 * (14.0 / 3.0 + 1e-6))).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn the_loss_ignores_the_targets_of_visible_patches() {
        // Two images of four 3-value patches; patches 0 and 2 (image 0), 1 and 3 (image 1) visible.
        let targets = |changed: Option<usize>| {
            let mut values: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32).collect();
            if let Some(patch) = changed {
                // Not an affine map of the patch, which norm_pix would undo.
                for (offset, value) in values[patch * 3..patch * 3 + 3].iter_mut().enumerate() {
                    *value = *value * *value + offset as f32;
                }
            }
            tensor(values, [2, 4, 3])
        };
        let visible = || index(vec![0, 2, 1, 3], [2, 2]);
        let masked = || index(vec![1, 3, 0, 2], [2, 2]);
        let masked_prediction = || tensor((0..12).map(|i| i as f32 * 0.1).collect(), [2, 2, 3]);
        let all_prediction = || tensor((0..24).map(|i| i as f32 * 0.1).collect(), [2, 4, 3]);
        let norm_pix = |changed| -> f32 {
            pixel_loss(masked_prediction(), targets(changed), visible(), masked(), MaeLoss::NormPix).into_scalar()
        };
        let l1 = |changed| -> f32 {
            pixel_loss(masked_prediction(), targets(changed), visible(), masked(), MaeLoss::L1).into_scalar()
        };
        let l1_all = |changed| -> f32 {
            pixel_loss(all_prediction(), targets(changed), visible(), masked(), MaeLoss::L1All).into_scalar()
        };
        // Image 0's patch 2 and image 1's patch 1 (row 5 of the flattened [8, 3]) are visible.
        for visible_patch in [2, 5] {
            assert_eq!(norm_pix(Some(visible_patch)), norm_pix(None));
            assert_eq!(l1(Some(visible_patch)), l1(None));
            assert_ne!(l1_all(Some(visible_patch)), l1_all(None), "l1_all reads every patch");
        }
        // A masked patch's target does count.
        for masked_patch in [1, 4] {
            assert_ne!(norm_pix(Some(masked_patch)), norm_pix(None));
            assert_ne!(l1(Some(masked_patch)), l1(None));
        }
    }

    #[test]
    fn the_l1_loss_is_the_mean_absolute_error_of_the_masked_patches() {
        // Image 0 (two 2-value patches): patch 1 masked, true [1, -3]; predicted [0, 0].
        let loss: f32 = pixel_loss(
            tensor(vec![0.0, 0.0], [1, 1, 2]),
            tensor(vec![5.0, 5.0, 1.0, -3.0], [1, 2, 2]),
            index(vec![0], [1, 1]),
            index(vec![1], [1, 1]),
            MaeLoss::L1,
        )
        .into_scalar();
        assert_eq!(loss, 2.0);
    }
}
