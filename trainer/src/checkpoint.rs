//! Checkpoints: everything a run needs to continue exactly where it stopped, in a
//! [`CheckpointFolder`]: the trained model, the EMA teacher of a method that keeps one,
//! Adam's moments, and the step and loader position. A checkpoint folder is written under a
//! temporary name and renamed into place, so it is complete or absent, with `digests.json`:
//! the SHA-256 and size of every other file, checked before a checkpoint is trusted (on
//! resume, probe and export), as shards are. Burn keeps parameter ids in the records, so
//! reloaded optimizer state lines up with the reloaded parameters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::module::{AutodiffModule, Module};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use jepa_shared::{FileError, LoaderPosition};
use serde::{Deserialize, Serialize};

use crate::encoders::CheckpointPart;
use crate::optim::AdamW;
use crate::run_folder::{CheckpointFolder, RunFolder};
use crate::vit::VisionTransformer;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Io(#[from] FileError),

    #[error("{path}: {problem}")]
    Record { path: PathBuf, problem: String },

    #[error("{file}: {problem}: the checkpoint is damaged")]
    Damaged { file: PathBuf, problem: String },
}

/// One file's digest, as `digests.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileDigest {
    sha256: String,
    bytes: u64,
}

/// Writes `digests.json` for every other file of `folder`.
fn write_digests(folder: &CheckpointFolder) -> Result<()> {
    let mut digests = BTreeMap::new();
    for entry in std::fs::read_dir(folder.path()).map_err(FileError::io(folder.path()))? {
        let path = entry.map_err(FileError::io(folder.path()))?.path();
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        if path == folder.digests() {
            continue;
        }
        let bytes = std::fs::metadata(&path).map_err(FileError::io(&path))?.len();
        digests.insert(name, FileDigest { sha256: jepa_shared::checksum::sha256_file(&path)?, bytes });
    }
    let json = serde_json::to_vec_pretty(&digests).expect("digests serialise");
    jepa_shared::atomic::write_bytes(&folder.digests(), &json)?;
    Ok(())
}

/// Checks every file of `checkpoint` against the digests written with it: each is there,
/// of its size and SHA-256. A checkpoint written before digests were kept has none to
/// check and passes.
pub fn verify(checkpoint: &CheckpointFolder) -> Result<()> {
    let path = checkpoint.digests();
    if !checkpoint.path().is_dir() {
        return Err(CheckpointError::Record {
            path: checkpoint.path().to_path_buf(),
            problem: "no such checkpoint".into(),
        });
    }
    let Ok(json) = std::fs::read(&path) else { return Ok(()) };
    let digests: BTreeMap<String, FileDigest> = serde_json::from_slice(&json)
        .map_err(|error| CheckpointError::Damaged { file: path.clone(), problem: error.to_string() })?;
    for (name, expected) in &digests {
        let file = checkpoint.path().join(name);
        let damaged = |problem: String| CheckpointError::Damaged { file: file.clone(), problem };
        let bytes = std::fs::metadata(&file).map_err(|error| damaged(error.to_string()))?.len();
        if bytes != expected.bytes {
            return Err(damaged(format!("{bytes} bytes where {} were written", expected.bytes)));
        }
        if jepa_shared::checksum::sha256_file(&file)? != expected.sha256 {
            return Err(damaged("its SHA-256 is not the one written with it".into()));
        }
    }
    Ok(())
}

/// The newest checkpoint of `run` older than `before` that verifies, if any.
pub fn newest_good_before(run: &RunFolder, before: u64) -> Result<Option<CheckpointFolder>> {
    let mut older: Vec<CheckpointFolder> =
        run.list_checkpoints()?.into_iter().filter(|checkpoint| checkpoint.step() < Some(before)).collect();
    while let Some(checkpoint) = older.pop() {
        if verify(&checkpoint).is_ok() {
            return Ok(Some(checkpoint));
        }
    }
    Ok(None)
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
    /// The EMA teacher, for a method that keeps one.
    pub target_encoder: Option<VisionTransformer<B::InnerBackend>>,
    pub optimizer: AdamW<M, B>,
}

fn recorder() -> BinFileRecorder<FullPrecisionSettings> {
    BinFileRecorder::new()
}

fn record_error(checkpoint: &CheckpointFolder) -> impl FnOnce(burn::record::RecorderError) -> CheckpointError + '_ {
    move |error| CheckpointError::Record { path: checkpoint.path().to_path_buf(), problem: recorder_problem(&error) }
}

/// What went wrong in Burn's recorder, in words: it hands an I/O error over as the debug
/// text of its encoder's error (`Unknown("Io { inner: Os { code: 28, kind: StorageFull,
/// message: \"No space left on device\" }, index: 0 }")`), from which the operating
/// system's own sentence is taken, and a full disk said with what to do.
fn recorder_problem(error: &burn::record::RecorderError) -> String {
    use burn::record::RecorderError;
    let text = match error {
        RecorderError::FileNotFound(text) | RecorderError::DeserializeError(text) | RecorderError::Unknown(text) => {
            text
        }
    };
    if text.contains("StorageFull") || text.contains("os error 28") {
        return "the disk is full (no space left on device): free space, then `train --resume` continues from the \
                last checkpoint"
            .into();
    }
    let quoted = text.split_once("message: \"").and_then(|(_, rest)| rest.split_once('"'));
    match quoted {
        Some((message, _)) => message.to_string(),
        None => text.clone(),
    }
}

/// Writes the checkpoint of `state.step` into `run` atomically and keeps only the newest
/// `keep` checkpoints.
pub fn save<B: AutodiffBackend, M: AutodiffModule<B>>(
    run: &RunFolder,
    parts: &Trainable<B, M>,
    state: &TrainState,
    keep: usize,
) -> Result<CheckpointFolder> {
    let checkpoint = run.checkpoint_at(state.step);
    jepa_shared::atomic::write_folder(checkpoint.path(), |temp| {
        let temp = CheckpointFolder::new(temp);
        let recorder = recorder();
        // Errors name the checkpoint being written: the staging folder is gone once they are read.
        parts
            .model
            .clone()
            .save_file(temp.stem(CheckpointPart::Trained), &recorder)
            .map_err(record_error(&checkpoint))?;
        if let Some(teacher) = &parts.target_encoder {
            teacher
                .clone()
                .save_file(temp.stem(CheckpointPart::Teacher), &recorder)
                .map_err(record_error(&checkpoint))?;
        }
        Recorder::<B>::record(&recorder, parts.optimizer.to_record(), temp.stem(CheckpointPart::Optimizer))
            .map_err(record_error(&checkpoint))?;
        let state_json = serde_json::to_vec_pretty(state).expect("state serialises");
        jepa_shared::atomic::write_bytes(&temp.state(), &state_json)?;
        write_digests(&temp)
    })?;
    let existing = run.list_checkpoints()?;
    let surplus = existing.len().saturating_sub(keep.max(1));
    for oldest in &existing[..surplus] {
        // A reader (probe, export) pinning it holds a shared lock on its digests: it stays
        // until a later checkpoint finds it free.
        let held = std::fs::File::open(oldest.digests()).ok();
        if held.as_ref().is_some_and(|file| file.try_lock().is_err()) {
            continue;
        }
        std::fs::remove_dir_all(oldest.path())
            .map_err(|source| FileError::Io { path: oldest.path().to_path_buf(), source })?;
    }
    Ok(checkpoint)
}

/// Loads a checkpoint into freshly initialised parts of the same shapes.
pub fn load<B: AutodiffBackend, M: AutodiffModule<B>>(
    checkpoint: &CheckpointFolder,
    fresh: Trainable<B, M>,
    device: &B::Device,
) -> Result<(Trainable<B, M>, TrainState)> {
    let recorder = recorder();
    let model = fresh
        .model
        .load_file(checkpoint.stem(CheckpointPart::Trained), &recorder, device)
        .map_err(record_error(checkpoint))?;
    let target_encoder = match fresh.target_encoder {
        Some(teacher) => Some(load_teacher(checkpoint, teacher, device)?),
        None => None,
    };
    let record = Recorder::<B>::load(&recorder, checkpoint.stem(CheckpointPart::Optimizer), device)
        .map_err(record_error(checkpoint))?;
    let optimizer = fresh.optimizer.load_record(record);
    let state_path = checkpoint.state();
    let bytes = std::fs::read(&state_path).map_err(|source| FileError::Io { path: state_path.clone(), source })?;
    let state = serde_json::from_slice(&bytes)
        .map_err(|error| CheckpointError::Record { path: state_path.clone(), problem: error.to_string() })?;
    Ok((Trainable { model, target_encoder, optimizer }, state))
}

/// The trained model alone, into `fresh` (for evaluation: no optimizer state).
pub fn load_model<B: Backend, M: Module<B>>(checkpoint: &CheckpointFolder, fresh: M, device: &B::Device) -> Result<M> {
    fresh.load_file(checkpoint.stem(CheckpointPart::Trained), &recorder(), device).map_err(record_error(checkpoint))
}

/// The EMA teacher alone, into `fresh`.
pub fn load_teacher<B: Backend>(
    checkpoint: &CheckpointFolder,
    fresh: VisionTransformer<B>,
    device: &B::Device,
) -> Result<VisionTransformer<B>> {
    fresh.load_file(checkpoint.stem(CheckpointPart::Teacher), &recorder(), device).map_err(record_error(checkpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails as a disk does, with the operating system's error `code`.
    struct Failing(i32);

    impl std::io::Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(self.0))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The error Burn's file recorder returns when its encoder's writes fail with `code`.
    fn recorder_error(code: i32) -> burn::record::RecorderError {
        let failed =
            bincode::serde::encode_into_std_write(vec![1u8; 64], &mut Failing(code), bincode::config::standard());
        burn::record::RecorderError::Unknown(failed.unwrap_err().to_string())
    }

    #[test]
    fn a_full_disk_is_said_in_words_with_what_to_do() {
        let error = recorder_error(28);
        assert!(error.to_string().contains("StorageFull"), "Burn no longer hands over this text: {error}");
        let problem = recorder_problem(&error);
        assert!(problem.starts_with("the disk is full") && problem.contains("train --resume"), "{problem}");
    }

    #[test]
    fn another_io_error_keeps_the_operating_systems_sentence() {
        assert_eq!(recorder_problem(&recorder_error(13)), "Permission denied");
    }
}
