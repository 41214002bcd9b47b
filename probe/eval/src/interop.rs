//! Encoders across frameworks: a run's encoder exported for timm (safetensors in timm's
//! `VisionTransformer` layout), and an encoder from a file (ours, timm's, or an official
//! I-JEPA checkpoint) imported as a run folder the other commands evaluate like any run.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use jepa_trainer::EncoderRole;
use jepa_trainer::interop::{EncoderFile, Hints};
use jepa_trainer::{EncoderKind, Run};

use crate::error::{ProbeError, Result};

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub path: PathBuf,
    /// `teacher`, `trained`, or `imported` for a run folder holding an imported encoder.
    pub role: &'static str,
    /// The checkpoint the encoder came from.
    pub source: String,
}

/// Writes encoder `role` of `run` (`None`: the one its method evaluates) from `checkpoint`
/// (the latest when `None`) to `out`, atomically.
pub fn export<B: AutodiffBackend>(
    run: &Run,
    role: Option<EncoderRole>,
    checkpoint: Option<&str>,
    out: &Path,
    device: &B::Device,
) -> Result<Exported> {
    let loaded = run.encoder_in_role::<B>(EncoderKind::Pretrained, role, checkpoint, device)?;
    let role = match role {
        None if run.is_imported() => "imported",
        role => role.unwrap_or(run.evaluated_role()).as_str(),
    };
    let info = run.export_info(role, &loaded.source)?;
    jepa_trainer::interop::write(&loaded.encoder, &info, out).map_err(jepa_trainer::RunError::from)?;
    Ok(Exported { path: out.to_path_buf(), role, source: loaded.source })
}

/// Opens `file` and makes `root` its run folder, evaluated on `dataset`.
pub fn import<B: AutodiffBackend>(
    root: &Path,
    file: &Path,
    dataset: Option<&Path>,
    hints: &Hints,
    device: &B::Device,
) -> Result<Run> {
    let dataset = dataset
        .ok_or_else(|| ProbeError::bad(root, "an imported encoder needs --dataset: the dataset to evaluate it on"))?;
    let opened = EncoderFile::open(file, hints).map_err(jepa_trainer::RunError::from)?;
    Ok(Run::import::<B::InnerBackend>(root, &opened, dataset, device)?)
}
