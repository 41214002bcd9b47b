//! Checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! `runs/<name>/checkpoints/step-00000100/` holds the trained model (`model.bin`: I-JEPA's
//! context encoder + predictor, MAE's encoder + decoder), the EMA target encoder of a method
//! that keeps one (`target_encoder.bin`), Adam's moments (`optimizer.bin`) and `state.json`
//! (step, loader position). It is written under a
//! temporary name and renamed into place, so a checkpoint folder is complete or absent.
//! Burn keeps parameter ids in the records, so reloaded optimizer state lines up with
//! the reloaded parameters.

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use jepa_shared::vit::VisionTransformer;
use serde::{Deserialize, Serialize};

use crate::optim::AdamW;
use crate::prefetch::LoaderPosition;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: {problem}")]
    Record { path: PathBuf, problem: String },
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// Where the run stands, beside the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// The next sample the loader delivers.
    pub loader: LoaderPosition,
}

/// The parts of a run a checkpoint holds.
pub struct Trainable<B: AutodiffBackend, M: AutodiffModule<B>> {
    pub model: M,
    /// The EMA target encoder, for a method that keeps one.
    pub target_encoder: Option<VisionTransformer<B::InnerBackend>>,
    pub optimizer: AdamW<M, B>,
}

/// The file a checkpoint keeps the EMA target encoder in, without its extension.
pub const TARGET_ENCODER: &str = "target_encoder";
/// The file a checkpoint keeps the trained model in, without its extension.
pub const MODEL: &str = "model";

fn recorder() -> BinFileRecorder<FullPrecisionSettings> {
    BinFileRecorder::new()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

fn record_error(path: &Path) -> impl FnOnce(burn::record::RecorderError) -> CheckpointError + '_ {
    move |error| CheckpointError::Record { path: path.to_path_buf(), problem: error.to_string() }
}

pub fn folder_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Writes `folder/step-NNNNNNNN/` atomically and keeps only the newest `keep` checkpoints.
pub fn save<B: AutodiffBackend, M: AutodiffModule<B>>(
    folder: &Path,
    parts: &Trainable<B, M>,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(folder).map_err(io(folder))?;
    let final_path = folder.join(folder_name(state.step));
    let temp = folder.join(format!(".{}.tmp", folder_name(state.step)));
    if temp.exists() {
        std::fs::remove_dir_all(&temp).map_err(io(&temp))?;
    }
    std::fs::create_dir_all(&temp).map_err(io(&temp))?;
    let recorder = recorder();
    parts.model.clone().save_file(temp.join(MODEL), &recorder).map_err(record_error(&temp))?;
    if let Some(target) = &parts.target_encoder {
        target.clone().save_file(temp.join(TARGET_ENCODER), &recorder).map_err(record_error(&temp))?;
    }
    Recorder::<B>::record(&recorder, parts.optimizer.to_record(), temp.join("optimizer"))
        .map_err(record_error(&temp))?;
    let state_path = temp.join("state.json");
    std::fs::write(&state_path, serde_json::to_vec_pretty(state).expect("state serialises"))
        .map_err(io(&state_path))?;
    for entry in std::fs::read_dir(&temp).map_err(io(&temp))? {
        let path = entry.map_err(io(&temp))?.path();
        std::fs::File::open(&path).and_then(|file| file.sync_all()).map_err(io(&path))?;
    }
    if final_path.exists() {
        std::fs::remove_dir_all(&final_path).map_err(io(&final_path))?;
    }
    std::fs::rename(&temp, &final_path).map_err(io(&final_path))?;
    let mut existing = list(folder)?;
    while existing.len() > keep.max(1) {
        let (_, oldest) = existing.remove(0);
        std::fs::remove_dir_all(&oldest).map_err(io(&oldest))?;
    }
    Ok(final_path)
}

/// Complete checkpoints under `folder`, oldest first.
pub fn list(folder: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !folder.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(io(folder))? {
        let path = entry.map_err(io(folder))?.path();
        let step = path.file_name().and_then(|name| name.to_str()).and_then(|name| name.strip_prefix("step-"));
        if let Some(step) = step.and_then(|digits| digits.parse::<u64>().ok()) {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

pub fn latest(folder: &Path) -> Result<Option<PathBuf>> {
    Ok(list(folder)?.pop().map(|(_, path)| path))
}

/// Loads a checkpoint into freshly initialised parts of the same shapes.
pub fn load<B: AutodiffBackend, M: AutodiffModule<B>>(
    checkpoint: &Path,
    fresh: Trainable<B, M>,
    device: &B::Device,
) -> Result<(Trainable<B, M>, TrainState)> {
    let recorder = recorder();
    let model = fresh.model.load_file(checkpoint.join(MODEL), &recorder, device).map_err(record_error(checkpoint))?;
    let target_encoder = match fresh.target_encoder {
        Some(target) => Some(
            target.load_file(checkpoint.join(TARGET_ENCODER), &recorder, device).map_err(record_error(checkpoint))?,
        ),
        None => None,
    };
    let record =
        Recorder::<B>::load(&recorder, checkpoint.join("optimizer"), device).map_err(record_error(checkpoint))?;
    let optimizer = fresh.optimizer.load_record(record);
    let state_path = checkpoint.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(io(&state_path))?;
    let state = serde_json::from_slice(&bytes)
        .map_err(|error| CheckpointError::Record { path: state_path.clone(), problem: error.to_string() })?;
    Ok((Trainable { model, target_encoder, optimizer }, state))
}
