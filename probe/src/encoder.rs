//! The two encoders every report compares: the run's trained encoder (I-JEPA's target
//! encoder, MAE's encoder), and the same architecture as the run would have started it (its
//! seed, no training).

use std::path::Path;

use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::backend::Backend;
use jepa_shared::vit::VisionTransformer;
use jepa_trainer::checkpoint;
use jepa_trainer::config::Method;
use jepa_trainer::mae::Mae;
use jepa_trainer::method::initial_encoder;

use crate::error::{ProbeError, Result};
use crate::run::RunFolder;

/// The encoder a method evaluates, saved in `checkpoint` (a `checkpoints/step-N/` folder of
/// `run`): I-JEPA's EMA target encoder, MAE's encoder.
pub fn pretrained<B: Backend>(run: &RunFolder, checkpoint: &Path, device: &B::Device) -> Result<VisionTransformer<B>> {
    let vit = run.config.vit()?;
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let file = checkpoint.join(pretrained_file(run.config.method));
    let bad = |error: burn::record::RecorderError| ProbeError::bad(&file.with_extension("bin"), error.to_string());
    match run.config.method {
        Method::Ijepa => vit.init::<B>(device).load_file(&file, &recorder, device).map_err(bad),
        Method::Mae => {
            let fresh = Mae::<B>::new(&vit, &run.config.mae.decoder, device);
            Ok(fresh.load_file(&file, &recorder, device).map_err(bad)?.encoder)
        }
    }
}

/// The checkpoint file, without extension, that holds `method`'s evaluated encoder.
pub fn pretrained_file(method: Method) -> &'static str {
    match method {
        Method::Ijepa => checkpoint::TARGET_ENCODER,
        Method::Mae => checkpoint::MODEL,
    }
}

/// The encoder at step 0 of `run`, drawn from the run's seed exactly as the trainer draws
/// it (for I-JEPA, the target encoder starts as a copy of it).
pub fn random_init<B: Backend>(run: &RunFolder, device: &B::Device) -> Result<VisionTransformer<B>> {
    Ok(initial_encoder::<B>(&run.config, device)?)
}
