//! A trained run as evaluation sees it: its folder, its checked recipe, its checkpoints,
//! and the encoder its method evaluates, trained or as the run would have started it.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use jepa_shared::ShardError;

use crate::checkpoint::{self, CheckpointError};
use crate::config::ConfigError;
use crate::method::{Evaluated, Method, MethodVisitor};
use crate::recipe::Recipe;
use crate::run_folder::{CheckpointFolder, CheckpointPart, EncoderKind, RunFolder};
use crate::vit::VisionTransformer;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {problem}")]
    Bad { path: std::path::PathBuf, problem: String },

    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),

    #[error(transparent)]
    Io(#[from] ShardError),
}

impl RunError {
    fn bad(path: &Path, problem: impl Into<String>) -> Self {
        RunError::Bad { path: path.to_path_buf(), problem: problem.into() }
    }
}

/// An encoder of a run, and where it came from (a checkpoint, or the init).
pub struct LoadedEncoder<B: burn::tensor::backend::Backend> {
    pub encoder: VisionTransformer<B>,
    pub source: String,
}

/// A run folder written by `train`, with the recipe it was trained with.
#[derive(Debug, Clone)]
pub struct Run {
    pub folder: RunFolder,
    /// The resolved recipe (pixel statistics filled in).
    pub recipe: Recipe,
}

impl Run {
    pub fn open(root: &Path) -> Result<Self, RunError> {
        let folder = RunFolder::new(root);
        let config = folder.config();
        if !config.exists() {
            return Err(RunError::bad(&config, "missing: not a run folder written by `train`"));
        }
        Ok(Self { recipe: Recipe::load(&config, &[])?, folder })
    }

    /// A checkpoint by name (`step-00000937`, a step number or a path), or the latest; it
    /// must hold the encoder this run's method evaluates.
    pub fn checkpoint(&self, name: Option<&str>) -> Result<CheckpointFolder, RunError> {
        let checkpoint = match name {
            Some(name) => self.folder.named_checkpoint(name),
            None => self
                .folder
                .latest_checkpoint()?
                .ok_or_else(|| RunError::bad(&self.folder.checkpoints(), "holds no checkpoint: train the run first"))?,
        };
        let file = checkpoint.file(self.evaluated_part());
        if !file.exists() {
            let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            return Err(RunError::bad(checkpoint.path(), format!("is not a checkpoint of this run (no {name})")));
        }
        Ok(checkpoint)
    }

    /// The checkpoint part that holds the evaluated encoder.
    fn evaluated_part(&self) -> CheckpointPart {
        match self.recipe.method_info().evaluated() {
            Evaluated::Teacher => CheckpointPart::Teacher,
            Evaluated::Trained => CheckpointPart::Model,
        }
    }

    /// The per-channel pixel mean and std the run normalised its input with.
    pub fn pixel_stats(&self) -> Result<(Vec<f32>, Vec<f32>), RunError> {
        self.recipe
            .pixel_stats()
            .ok_or_else(|| RunError::bad(&self.folder.config(), "has no data.pixel_mean / data.pixel_std"))
    }

    /// The encoder `kind` of this run on `B`'s inner backend: the one its method evaluates,
    /// from `checkpoint` (the latest when `None`), or the one the run started from.
    pub fn encoder<B: AutodiffBackend>(
        &self,
        kind: EncoderKind,
        checkpoint: Option<&str>,
        device: &B::Device,
    ) -> Result<LoadedEncoder<B::InnerBackend>, RunError> {
        let checkpoint = match kind {
            EncoderKind::Pretrained => Some(self.checkpoint(checkpoint)?),
            EncoderKind::Random => None,
        };
        let load = LoadEncoder::<B> { seed: self.recipe.seed(), checkpoint: checkpoint.as_ref(), device };
        let encoder = self.recipe.method().visit(load)?;
        let source = match &checkpoint {
            Some(checkpoint) => checkpoint.to_string(),
            None => format!("init (seed {})", self.recipe.seed()),
        };
        Ok(LoadedEncoder { encoder, source })
    }
}

/// Loads the evaluated encoder with the method's own model type.
struct LoadEncoder<'a, B: AutodiffBackend> {
    seed: u64,
    checkpoint: Option<&'a CheckpointFolder>,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> MethodVisitor<B> for LoadEncoder<'_, B> {
    type Output = Result<VisionTransformer<B::InnerBackend>, RunError>;

    fn visit<M: Method<B>>(self, method: &M) -> Self::Output {
        // The run's starting model: the random-init baseline, and the shapes to load into.
        let start = method.init(self.seed, self.device);
        let Some(checkpoint) = self.checkpoint else { return Ok(M::encoder(&start).valid()) };
        Ok(match method.evaluated() {
            Evaluated::Teacher => checkpoint::load_teacher(checkpoint, M::encoder(&start).valid(), self.device)?,
            Evaluated::Trained => M::encoder(&checkpoint::load_model(checkpoint, start, self.device)?).valid(),
        })
    }
}
