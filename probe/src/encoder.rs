//! The two encoders every report compares: the run's trained target encoder, and the
//! same architecture as the run would have started it (its seed, no training).

use std::path::Path;

use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::backend::Backend;
use jepa_shared::vit::VisionTransformer;
use jepa_trainer::model::IJepa;

use crate::error::{ProbeError, Result};
use crate::run::RunFolder;

/// The target encoder saved in `checkpoint` (a `checkpoints/step-N/` folder of `run`).
pub fn pretrained<B: Backend>(run: &RunFolder, checkpoint: &Path, device: &B::Device) -> Result<VisionTransformer<B>> {
    let fresh = run.config.vit()?.init::<B>(device);
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    fresh
        .load_file(checkpoint.join("target_encoder"), &recorder, device)
        .map_err(|error| ProbeError::bad(&checkpoint.join("target_encoder.bin"), error.to_string()))
}

/// The encoder at step 0 of `run`: at that step the target encoder is a copy of the
/// context encoder, drawn from the run's seed exactly as the trainer draws it.
pub fn random_init<B: Backend>(run: &RunFolder, device: &B::Device) -> Result<VisionTransformer<B>> {
    let vit = run.config.vit()?;
    Ok(IJepa::<B>::seeded(&vit, &run.config.predictor, run.config.seed, device).context_encoder)
}
