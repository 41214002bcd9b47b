//! I-JEPA with pixel targets: the I-JEPA paper's ablation of its targets (Assran et al.
//! 2023, predicting in pixel space rather than representation space). The same multi-block masks, context encoder and predictor
//! as I-JEPA, but the predictor regresses the **pixels** of each target block, every patch
//! normalised by its own mean and variance (MAE's `norm_pix`), and there is no target
//! encoder: the probe evaluates the context encoder. Beside I-JEPA and MAE it separates what
//! is predicted (features or pixels) from how the image is masked (blocks or random patches).

use std::sync::Arc;

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use jepa_shared::{MaskConfig, MaskSampler, MultiBlockMasks};
use serde::{Deserialize, Serialize};

use crate::batch::DeviceBatch;
use crate::encoders::EncoderRole;
use crate::ijepa::{IJepa, IJepaSettings, check_predictor, multi_block_masks};
use crate::method::{
    BatchLoss, Method, MethodInfo, MethodSection, Reduce, SectionError, Stat, read_section, seeded, write_section,
};
use crate::pixels::{norm_pix, patchify, undo_norm_pix};
use crate::predictor::PredictorConfig;
use crate::vit::{VisionTransformer, VitConfig, gather_tokens};

/// The `[ijepa-pixels]` section of a run config: I-JEPA's predictor and masks, with
/// I-JEPA's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IJepaPixelsSettings {
    pub predictor: PredictorConfig,
    pub masks: MaskConfig,
}

impl Default for IJepaPixelsSettings {
    fn default() -> Self {
        let IJepaSettings { predictor, masks, .. } = IJepaSettings::default();
        Self { predictor, masks }
    }
}

/// I-JEPA with pixel targets as a [`Method`].
#[derive(Debug, Clone)]
pub struct IJepaPixelsMethod {
    pub encoder: VitConfig,
    pub settings: IJepaPixelsSettings,
    pub masks: MultiBlockMasks,
}

impl IJepaPixelsMethod {
    /// The normalised pixels of every target block of `batch`, stacked along the batch as
    /// the predictor's output is: `[blocks · batch, t, patch values]`.
    fn targets<B: burn::tensor::backend::Backend>(&self, batch: &DeviceBatch<B>) -> Tensor<B, 3> {
        let patches = patchify(batch.images.clone(), self.encoder.patch_size_px);
        let blocks = batch.target_idx.iter().map(|idx| norm_pix(gather_tokens(patches.clone(), idx.clone())));
        Tensor::cat(blocks.collect(), 0)
    }
}

impl MethodSection for IJepaPixelsMethod {
    const NAME: &'static str = "ijepa-pixels";

    fn from_section(section: Option<&toml::Value>, encoder: &VitConfig) -> Result<Self, SectionError> {
        let settings: IJepaPixelsSettings = read_section(section)?;
        check_predictor(&settings.predictor, "predictor")?;
        let masks = multi_block_masks(&settings.masks, encoder)?;
        Ok(Self { encoder: encoder.clone(), settings, masks })
    }
}

impl MethodInfo for IJepaPixelsMethod {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn objective(&self) -> String {
        "ijepa-pixels norm_pix".into()
    }

    fn masks(&self) -> Arc<dyn MaskSampler> {
        Arc::new(self.masks.clone())
    }

    fn teacher_momentum(&self) -> Option<[f64; 2]> {
        None
    }

    fn metric_columns(&self) -> &'static [&'static str] {
        &["relaxed_masks"]
    }

    fn evaluated(&self) -> EncoderRole {
        EncoderRole::Trained
    }

    fn evaluated_description(&self) -> &'static str {
        "the context encoder of the I-JEPA run with pixel targets"
    }

    fn section(&self) -> toml::Value {
        write_section(&self.settings)
    }
}

impl<B: AutodiffBackend> Method<B> for IJepaPixelsMethod {
    type Model = IJepa<B>;

    fn init(&self, seed: u64, device: &B::Device) -> IJepa<B> {
        let patch_values = self.encoder.patch_size_px * self.encoder.patch_size_px * self.encoder.channels;
        let (encoder, predictor) = (&self.encoder, &self.settings.predictor);
        seeded(
            seed,
            device,
            |cpu| IJepa::new(encoder, predictor, patch_values, cpu),
            || IJepa::new(encoder, predictor, patch_values, device),
        )
    }

    fn encoder(model: &IJepa<B>) -> &VisionTransformer<B> {
        &model.context_encoder
    }

    fn loss(
        &self,
        model: &IJepa<B>,
        _teacher: Option<&VisionTransformer<B::InnerBackend>>,
        batch: &DeviceBatch<B>,
    ) -> BatchLoss<B> {
        // Mean over every element, as I-JEPA's and MAE's losses.
        let loss = (model.predict(batch) - self.targets(batch).detach()).powi_scalar(2).mean();
        let relaxed = Stat { name: "relaxed_masks", value: batch.relaxed_masks as f64, reduce: Reduce::Sum };
        BatchLoss { loss, stats: vec![relaxed] }
    }

    fn predict_pixels(&self, model: &IJepa<B>, batch: &DeviceBatch<B>) -> Option<Vec<Tensor<B, 3>>> {
        let blocks = batch.target_idx.len();
        let patches = patchify(batch.images.clone(), self.encoder.patch_size_px);
        let predicted = model.predict(batch).chunk(blocks, 0);
        let truth = batch.target_idx.iter().map(|idx| gather_tokens(patches.clone(), idx.clone()));
        Some(predicted.into_iter().zip(truth).map(|(predicted, truth)| undo_norm_pix(predicted, truth)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::TensorData;
    use jepa_shared::{BatchMasks, masks::BlockSize};

    type B = Autodiff<NdArray<f32>>;

    /// A 16 px grey image of 4 px patches (a 4×4 grid): context patches 0, 1, 4, 5 (the
    /// top-left 8×8), one target block of patches 10 and 11; patch 15 is neither.
    fn batch(pixels: &[f32]) -> DeviceBatch<B> {
        let masks = BatchMasks {
            target_block: BlockSize { height: 1, width: 2 },
            context_block: BlockSize { height: 2, width: 2 },
            context: vec![vec![0, 1, 4, 5]],
            targets: vec![vec![vec![10, 11]]],
            relaxed: vec![false],
        };
        let device = Default::default();
        let images = Tensor::from_data(TensorData::new(pixels.to_vec(), [1, 1, 16, 16]), &device);
        DeviceBatch::with_masks(images, &masks, &device)
    }

    /// Rewrites patch `patch` (row-major on the 4×4 grid) with a non-affine function of
    /// its pixels, which per-patch normalisation cannot undo.
    fn change_patch(pixels: &mut [f32], patch: usize) {
        let (top, left) = (patch / 4 * 4, patch % 4 * 4);
        for (offset, row) in (top..top + 4).enumerate() {
            for col in left..left + 4 {
                let value = &mut pixels[row * 16 + col];
                *value = *value * *value + offset as f32 * 0.3;
            }
        }
    }

    #[test]
    fn the_loss_reads_the_target_pixels_and_the_model_sees_only_the_context() {
        let encoder = VitConfig::preset("nano", 16, 4, 1).unwrap();
        let section: toml::Value =
            toml::from_str("[predictor]\ndim = 16\ndepth = 1\nheads = 2\n[masks]\nnum_targets = 1\nmin_keep = 2\n")
                .unwrap();
        let method = IJepaPixelsMethod::from_section(Some(&section), &encoder).unwrap();
        let model = Method::<B>::init(&method, 3, &Default::default());
        let pixels: Vec<f32> = (0..256).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let loss = |pixels: &[f32]| -> f32 { method.loss(&model, None, &batch(pixels)).loss.into_scalar() };
        let original = loss(&pixels);
        let changed = |patch: usize| {
            let mut pixels = pixels.clone();
            change_patch(&mut pixels, patch);
            loss(&pixels)
        };
        assert_eq!(changed(15), original, "a patch outside context and targets is never read");
        assert_ne!(changed(10), original, "a target patch's pixels are the target");
        assert_ne!(changed(0), original, "a context patch is the predictor's input");
        // No target encoder: the predictions are pixels, one per target patch value.
        let predicted = method.predict_pixels(&model, &batch(&pixels)).unwrap();
        assert_eq!(predicted.len(), 1);
        assert_eq!(predicted[0].dims(), [1, 2, 16]);
    }
}
