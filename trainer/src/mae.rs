//! MAE (He et al. 2022), the pixel-space baseline, on the same encoder, shards and loader as
//! I-JEPA: the encoder sees only the visible patches (a uniform random 25%), a light decoder
//! ([`Predictor`] with pixels as its output) fills in the masked ones, and the loss compares
//! pixels.
//!
//! Two losses ([`MaeLoss`]):
//! - `norm_pix` (the default, the paper's best): mean squared error on the **masked**
//!   patches only, each target patch normalised by its own mean and (unbiased) variance;
//! - `l1_all`: mean absolute error over **every** patch against the unnormalised pixels, a
//!   weaker variant kept for comparison with runs that used it.
//!
//! Pixels here are the model's input, already normalised with the dataset's per-channel
//! mean/std, as in the paper's code. A patch's values are ordered row, column, channel.

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use jepa_shared::BatchMasks;
use jepa_shared::vit::{VisionTransformer, VitConfig, gather_tokens};
use serde::{Deserialize, Serialize};

use crate::model::DeviceBatch;
use crate::predictor::{Predictor, PredictorConfig};

/// The pixel loss of MAE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaeLoss {
    /// MSE on masked patches against per-patch normalised pixels (`norm_pix_loss`).
    #[default]
    NormPix,
    /// L1 over all patches against the pixels as they are.
    L1All,
}

impl MaeLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            MaeLoss::NormPix => "norm_pix",
            MaeLoss::L1All => "l1_all",
        }
    }
}

/// The `[mae]` section of a run config; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaeConfig {
    /// Share of patches hidden from the encoder.
    pub mask_ratio: f64,
    /// The decoder's width, depth and heads (the paper: 512, 8, 16).
    pub decoder: PredictorConfig,
    pub loss: MaeLoss,
}

impl Default for MaeConfig {
    fn default() -> Self {
        Self { mask_ratio: 0.75, decoder: PredictorConfig { dim: 512, depth: 8, heads: 16 }, loss: MaeLoss::NormPix }
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
        crate::model::seeded(seed, device, || Self::new(encoder, decoder, device))
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

    /// The reconstruction the figure shows: every patch of `images`, the visible ones as
    /// they are and the masked ones predicted, `[batch, channels, size, size]`. With
    /// `norm_pix`, predictions are mapped back with each true patch's own mean and std.
    pub fn reconstruct(&self, images: Tensor<B, 4>, masks: &BatchMasks, loss: MaeLoss) -> Tensor<B, 4> {
        let device = images.device();
        let [batch, channels, size, _] = images.dims();
        let batch_masks = DeviceBatch::with_masks(images, masks, &device);
        let masked_idx = batch_masks.target_idx[0].clone();
        let truth = patchify(batch_masks.images.clone(), self.patch_size_px);
        let mut predicted = self.predict(batch_masks.images, batch_masks.context_idx, masked_idx.clone(), false);
        if loss == MaeLoss::NormPix {
            let (variance, mean) = gather_tokens(truth.clone(), masked_idx).var_mean(2);
            predicted = predicted * (variance + NORM_PIX_EPSILON).sqrt() + mean;
        }
        let [_, patches, values] = truth.dims();
        let mut combined = truth.into_data().convert::<f32>().into_vec::<f32>().expect("f32 pixels");
        let predicted = predicted.into_data().convert::<f32>().into_vec::<f32>().expect("f32 pixels");
        let mut predicted = predicted.chunks_exact(values);
        for (image, masked) in masks.targets.iter().enumerate() {
            for &patch in &masked[0] {
                let start = (image * patches + patch as usize) * values;
                combined[start..start + values].copy_from_slice(predicted.next().expect("one prediction per patch"));
            }
        }
        let combined = Tensor::from_data(TensorData::new(combined, [batch, patches, values]), &device);
        unpatchify(combined, self.patch_size_px, channels, size)
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

/// Added to the variance before the square root, as in the paper's code.
pub const NORM_PIX_EPSILON: f64 = 1e-6;

/// `[batch, channels, size, size]` → `[batch, patches, patch² · channels]`, patches in raster
/// order and each patch's values ordered row, column, channel.
pub fn patchify<B: Backend>(images: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [batch, channels, size, _] = images.dims();
    let grid = size / patch;
    images.reshape([batch, channels, grid, patch, grid, patch]).permute([0, 2, 4, 3, 5, 1]).reshape([
        batch,
        grid * grid,
        patch * patch * channels,
    ])
}

/// The inverse of [`patchify`].
pub fn unpatchify<B: Backend>(patches: Tensor<B, 3>, patch: usize, channels: usize, size: usize) -> Tensor<B, 4> {
    let batch = patches.dims()[0];
    let grid = size / patch;
    patches
        .reshape([batch, grid, grid, patch, patch, channels])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([batch, channels, size, size])
}

/// Each patch (last dimension) minus its mean, over √(unbiased variance + ε).
pub fn norm_pix<B: Backend>(patches: Tensor<B, 3>) -> Tensor<B, 3> {
    let (variance, mean) = patches.clone().var_mean(2);
    (patches - mean) / (variance + NORM_PIX_EPSILON).sqrt()
}

/// The MAE loss from predictions and the true patches of the whole image (`[batch,
/// patches, values]`).
///
/// - `norm_pix`: `predicted` is `[batch, masked, values]` at `masked_idx`; the visible
///   patches' targets are never read.
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
        MaeLoss::L1All => {
            let order = Tensor::cat(vec![visible_idx, masked_idx], 1);
            (predicted - gather_tokens(targets, order)).abs().mean()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn index(values: Vec<i64>, shape: [usize; 2]) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn values<const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
        tensor.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn patches_are_raster_order_with_row_column_channel_values() {
        // One 2-channel 4×4 image: pixel (channel c, row r, col k) = 100c + 10r + k.
        let pixels: Vec<f32> =
            (0..2).flat_map(|c| (0..4).flat_map(move |r| (0..4).map(move |k| (100 * c + 10 * r + k) as f32))).collect();
        let images = tensor(pixels, [1, 2, 4, 4]);
        let patches = patchify(images.clone(), 2);
        assert_eq!(patches.dims(), [1, 4, 8]);
        // Patch 1 is the top-right 2×2: rows 0-1, columns 2-3, channels interleaved.
        let patch = values(patches.clone()).chunks(8).nth(1).unwrap().to_vec();
        assert_eq!(patch, [2.0, 102.0, 3.0, 103.0, 12.0, 112.0, 13.0, 113.0]);
        assert_eq!(values(unpatchify(patches, 2, 2, 4)), values(images));
    }

    #[test]
    fn norm_pix_matches_a_hand_computation() {
        // One patch [1, 2, 3, 6]: mean 3, unbiased variance (4 + 1 + 0 + 9) / 3 = 14/3.
        let normalised = values(norm_pix(tensor(vec![1.0, 2.0, 3.0, 6.0], [1, 1, 4])));
        let scale = (14.0f64 / 3.0 + 1e-6).sqrt();
        for (got, want) in normalised.iter().zip([-2.0, -1.0, 0.0, 3.0]) {
            assert!((f64::from(*got) - want / scale).abs() < 1e-6, "{normalised:?}");
        }
        // The loss of a zero prediction on that patch is the mean of the squares: 14 / (4 · 14/3) = 0.75.
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
        let l1_all = |changed| -> f32 {
            pixel_loss(all_prediction(), targets(changed), visible(), masked(), MaeLoss::L1All).into_scalar()
        };
        // Image 0's patch 2 and image 1's patch 1 (row 5 of the flattened [8, 3]) are visible.
        for visible_patch in [2, 5] {
            assert_eq!(norm_pix(Some(visible_patch)), norm_pix(None));
            assert_ne!(l1_all(Some(visible_patch)), l1_all(None), "l1_all reads every patch");
        }
        // A masked patch's target does count.
        for masked_patch in [1, 4] {
            assert_ne!(norm_pix(Some(masked_patch)), norm_pix(None));
        }
    }
}
