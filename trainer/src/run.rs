//! A trained run as evaluation sees it: its folder, its checked recipe, its checkpoints,
//! and the encoder its method evaluates, trained or as the run would have started it.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use jepa_shared::FileError;

use crate::checkpoint::{self, CheckpointError};
use crate::config::{CheckpointConfig, ConfigError, DataConfig, EncoderConfig, OptimConfig, RunConfig};
use crate::encoders::{CheckpointPart, EncoderKind, EncoderRole};
use crate::interop::{EncoderFile, ExportInfo, Hints, InteropError};
use crate::method::{Method, MethodVisitor};
use crate::recipe::Recipe;
use crate::run_folder::{CheckpointFolder, RunFolder};
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
    Portable(#[from] InteropError),

    #[error(transparent)]
    Io(#[from] FileError),
}

impl RunError {
    fn bad(path: &Path, problem: impl Into<String>) -> Self {
        RunError::Bad { path: path.to_path_buf(), problem: problem.into() }
    }
}

/// An encoder of a run, and where it came from (a checkpoint, an imported file, or the init).
pub struct LoadedEncoder<B: burn::tensor::backend::Backend> {
    pub encoder: VisionTransformer<B>,
    /// Where it came from in full: the checkpoint's or the imported file's path, or the init.
    pub source: String,
    /// The same in a table's width: `step-00000150`, `init` or `imported`.
    pub from: String,
}

/// A run folder written by `train`, with the recipe it was trained with.
#[derive(Debug, Clone)]
pub struct Run {
    pub folder: RunFolder,
    /// The resolved recipe (pixel statistics filled in).
    pub recipe: Recipe,
    /// The checkpoint "the latest" means for this reader, once pinned ([`Run::pin_latest`]).
    pub pinned: Option<PinnedCheckpoint>,
}

/// A checkpoint a reader holds: a shared OS lock on its `digests.json`, which the trainer's
/// pruning respects, for as long as a clone of this value lives.
#[derive(Debug, Clone)]
pub struct PinnedCheckpoint {
    pub checkpoint: CheckpointFolder,
    _hold: Option<std::sync::Arc<std::fs::File>>,
}

impl Run {
    pub fn open(root: &Path) -> Result<Self, RunError> {
        let folder = RunFolder::new(root);
        let config = folder.config();
        if !config.exists() {
            return Err(RunError::bad(&config, "missing: not a run folder written by `train`"));
        }
        Ok(Self { recipe: Recipe::load(&config, &[])?, folder, pinned: None })
    }

    /// Fixes "the latest checkpoint" to the one that is latest now, for every encoder this
    /// reader loads, and keeps the trainer from pruning it until the reader ends: a run
    /// still training moves its latest, and one evaluation must not mix steps. A run with
    /// no checkpoint (an import) has nothing to pin.
    pub fn pin_latest(&mut self) -> Result<(), RunError> {
        if self.is_imported() {
            return Ok(());
        }
        let Some(checkpoint) = self.folder.latest_checkpoint()? else { return Ok(()) };
        let digests = checkpoint.digests();
        // A checkpoint written before digests were kept has no file to hold.
        let hold = match std::fs::File::open(&digests) {
            Ok(file) => {
                match file.try_lock_shared() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(RunError::bad(checkpoint.path(), "is being removed by the trainer; try again"));
                    }
                    Err(std::fs::TryLockError::Error(source)) => {
                        return Err(FileError::Io { path: digests, source }.into());
                    }
                }
                Some(std::sync::Arc::new(file))
            }
            Err(_) => None,
        };
        self.pinned = Some(PinnedCheckpoint { checkpoint, _hold: hold });
        Ok(())
    }

    /// Makes `root` the run folder of the encoder in `file`, evaluated on `dataset`: its
    /// config (the file's geometry and pixel statistics, and the method that trained it or
    /// else I-JEPA, for the random-init baseline and the reports) and the encoder in
    /// timm's layout. Only a new or empty folder, or one holding an earlier import, is
    /// taken; an earlier import is replaced, with the features and probe results derived
    /// from it. Everything is checked before anything is written.
    pub fn import<B: burn::tensor::backend::Backend>(
        root: &Path,
        file: &EncoderFile,
        dataset: &Path,
        device: &B::Device,
    ) -> Result<Self, RunError> {
        let folder = RunFolder::new(root);
        if folder.checkpoints().exists() {
            return Err(RunError::bad(
                root,
                "holds a trained run (checkpoints/): give a new folder for an imported encoder",
            ));
        }
        let earlier_import = folder.imported_encoder().exists();
        let holds_other_files = std::fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_some());
        if holds_other_files && !earlier_import {
            return Err(RunError::bad(root, "is not empty and holds no imported encoder: give a new folder"));
        }
        let name = root
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .ok_or_else(|| RunError::bad(root, "has no folder name"))?;
        let vit = &file.vit;
        let preset = crate::vit::PRESETS
            .iter()
            .find(|(_, dim, depth, heads)| (*dim, *depth, *heads) == (vit.dim, vit.depth, vit.heads))
            .or_else(|| crate::vit::PRESETS.iter().find(|(_, dim, ..)| *dim == vit.dim))
            .map_or("base", |(preset, ..)| preset);
        let method = file.method.as_deref().unwrap_or("ijepa");
        let config = RunConfig {
            name,
            seed: 0,
            method: method.to_string(),
            dataset: dataset.to_path_buf(),
            data: DataConfig { pixel_mean: Some(file.pixel_mean.clone()), pixel_std: Some(file.pixel_std.clone()) },
            loader: Default::default(),
            encoder: EncoderConfig {
                preset: preset.to_string(),
                image_size_px: vit.image_size_px,
                patch_size_px: vit.patch_size_px,
                channels: vit.channels,
                dim: Some(vit.dim),
                depth: Some(vit.depth),
                heads: Some(vit.heads),
                mlp_ratio: Some(vit.mlp_ratio),
            },
            // Not trained here: the optimizer section only has to be valid.
            optim: OptimConfig {
                epochs: 1,
                warmup_epochs: 0.0,
                lr_start: 0.0,
                lr_peak: 0.0,
                lr_final: 0.0,
                weight_decay: [0.0, 0.0],
                weight_decay_schedule: Default::default(),
                accumulation: 1,
                grad_clip: None,
                max_steps: None,
            },
            checkpoint: CheckpointConfig::default(),
            methods: Default::default(),
        };
        let recipe = Recipe::check(config)?;
        let encoder = file.load::<B>(device)?;
        let mut provenance = vec![("imported_from".to_string(), file.path.display().to_string())];
        provenance.extend(
            ["method", "run", "encoder", "checkpoint"]
                .iter()
                .filter_map(|key| file.metadata.get(*key).map(|value| (key.to_string(), value.clone()))),
        );
        let info = ExportInfo {
            vit: vit.clone(),
            pixel_mean: file.pixel_mean.clone(),
            pixel_std: file.pixel_std.clone(),
            provenance,
        };
        if earlier_import {
            // What was derived from the encoder this one replaces.
            for stale in [
                folder.features_dir(EncoderKind::Pretrained),
                folder.features_dir(EncoderKind::Random),
                folder.features_dir(EncoderKind::Pixels),
                folder.probe_dir(),
            ] {
                if stale.exists() {
                    std::fs::remove_dir_all(&stale).map_err(FileError::io(&stale))?;
                }
            }
        }
        crate::interop::write(&encoder, &info, &folder.imported_encoder())?;
        jepa_shared::atomic::write_bytes(&folder.config(), recipe.to_toml().as_bytes())?;
        Ok(Self { folder, recipe, pinned: None })
    }

    /// Whether this run's encoder was imported from a file rather than trained here.
    pub fn is_imported(&self) -> bool {
        self.folder.imported_encoder().exists()
    }

    /// A checkpoint by name (`step-00000937`, a step number or a path), or the latest; it
    /// must hold the encoder this run's method evaluates.
    pub fn checkpoint(&self, name: Option<&str>) -> Result<CheckpointFolder, RunError> {
        if self.is_imported() {
            return Err(RunError::bad(
                self.folder.root(),
                "holds an imported encoder (encoder.safetensors), not checkpoints of a training run",
            ));
        }
        let checkpoint = match (name, &self.pinned) {
            (Some(name), _) => self.folder.named_checkpoint(name),
            (None, Some(pinned)) => pinned.checkpoint.clone(),
            (None, None) => self
                .folder
                .latest_checkpoint()?
                .ok_or_else(|| RunError::bad(&self.folder.checkpoints(), "holds no checkpoint: train the run first"))?,
        };
        let file = checkpoint.file(self.evaluated_part());
        if !file.exists() {
            let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            return Err(RunError::bad(checkpoint.path(), format!("is not a checkpoint of this run (no {name})")));
        }
        checkpoint::verify(&checkpoint)?;
        Ok(checkpoint)
    }

    /// The checkpoint part that holds the evaluated encoder.
    fn evaluated_part(&self) -> CheckpointPart {
        self.evaluated_role().part()
    }

    /// The encoders this run's evaluation covers, in report order: the evaluated one, the
    /// trained student beside an evaluated EMA teacher, and the two baselines (random init,
    /// pixels).
    pub fn encoder_kinds(&self) -> Vec<EncoderKind> {
        let has_student = !self.is_imported() && self.evaluated_role() == EncoderRole::Teacher;
        EncoderKind::ALL.into_iter().filter(|kind| *kind != EncoderKind::Context || has_student).collect()
    }

    /// The role of the encoder this run's method evaluates.
    pub fn evaluated_role(&self) -> EncoderRole {
        self.recipe.method_info().evaluated()
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
        self.encoder_in_role::<B>(kind, None, checkpoint, device)
    }

    /// As [`Run::encoder`], with the trained encoder in `role` (`None`: the one the method
    /// evaluates).
    pub fn encoder_in_role<B: AutodiffBackend>(
        &self,
        kind: EncoderKind,
        role: Option<EncoderRole>,
        checkpoint: Option<&str>,
        device: &B::Device,
    ) -> Result<LoadedEncoder<B::InnerBackend>, RunError> {
        if kind == EncoderKind::Pixels {
            return Err(RunError::bad(self.folder.root(), "`pixels` is the images themselves, not an encoder"));
        }
        if kind == EncoderKind::Context {
            if role == Some(EncoderRole::Teacher) || !self.encoder_kinds().contains(&kind) {
                return Err(RunError::bad(
                    self.folder.root(),
                    "has no `context` encoder beside the one it evaluates: its encoder is `pretrained`",
                ));
            }
            return self.encoder_in_role::<B>(EncoderKind::Pretrained, Some(EncoderRole::Trained), checkpoint, device);
        }
        if kind == EncoderKind::Pretrained && self.is_imported() {
            if let Some(role) = role {
                return Err(RunError::bad(
                    self.folder.root(),
                    format!("holds one imported encoder, no {} encoder of its own: leave out --encoder", role.as_str()),
                ));
            }
            if let Some(name) = checkpoint {
                return Err(RunError::bad(
                    self.folder.root(),
                    format!("holds an imported encoder, no checkpoint `{name}`: leave out --checkpoint"),
                ));
            }
            return self.imported::<B::InnerBackend>(device);
        }
        let role = role.unwrap_or(self.evaluated_role());
        if role == EncoderRole::Teacher && self.evaluated_role() != EncoderRole::Teacher {
            return Err(RunError::bad(
                self.folder.root(),
                format!(
                    "was trained by `{}`, which keeps no EMA target encoder: its encoder is `context`",
                    self.recipe.method_info().name()
                ),
            ));
        }
        let checkpoint = match kind {
            EncoderKind::Random => None,
            _ => Some(self.checkpoint(checkpoint)?),
        };
        let load = LoadEncoder::<B> { seed: self.recipe.seed(), checkpoint: checkpoint.as_ref(), role, device };
        let encoder = self.recipe.method().visit(load)?;
        let (source, from) = match &checkpoint {
            Some(checkpoint) => (checkpoint.to_string(), checkpoint.name()),
            None => (format!("init (seed {})", self.recipe.seed()), "init".to_string()),
        };
        Ok(LoadedEncoder { encoder, source, from })
    }

    /// The imported encoder, which must still be the one the config describes.
    fn imported<B: burn::tensor::backend::Backend>(&self, device: &B::Device) -> Result<LoadedEncoder<B>, RunError> {
        let path = self.folder.imported_encoder();
        let file = EncoderFile::open(&path, &Hints::default())?;
        if &file.vit != self.recipe.encoder() {
            return Err(RunError::bad(
                &path,
                format!(
                    "holds {:?}, but {} describes {:?}",
                    file.vit,
                    self.folder.config().display(),
                    self.recipe.encoder()
                ),
            ));
        }
        let from =
            file.metadata.get("imported_from").map(|from| format!(" (imported from {from})")).unwrap_or_default();
        Ok(LoadedEncoder {
            encoder: file.load(device)?,
            source: format!("{}{from}", path.display()),
            from: "imported".to_string(),
        })
    }

    /// What an exported file says besides its tensors: geometry, pixel statistics, where
    /// the encoder came from.
    pub fn export_info(&self, role: &str, source: &str) -> Result<ExportInfo, RunError> {
        let (pixel_mean, pixel_std) = self.pixel_stats()?;
        let provenance = [
            ("method", self.recipe.method_info().name().to_string()),
            ("run", self.recipe.name().to_string()),
            ("encoder", role.to_string()),
            ("checkpoint", source.to_string()),
        ];
        Ok(ExportInfo {
            vit: self.recipe.encoder().clone(),
            pixel_mean,
            pixel_std,
            provenance: provenance.into_iter().map(|(key, value)| (key.to_string(), value)).collect(),
        })
    }
}

/// Loads the evaluated encoder with the method's own model type.
struct LoadEncoder<'a, B: AutodiffBackend> {
    seed: u64,
    checkpoint: Option<&'a CheckpointFolder>,
    /// The teacher, or the trained model's encoder.
    role: EncoderRole,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> MethodVisitor<B> for LoadEncoder<'_, B> {
    type Output = Result<VisionTransformer<B::InnerBackend>, RunError>;

    fn visit<M: Method<B>>(self, method: &M) -> Self::Output {
        // The run's starting model: the random-init baseline, and the shapes to load into.
        let start = method.init(self.seed, self.device);
        let Some(checkpoint) = self.checkpoint else { return Ok(M::encoder(&start).valid()) };
        Ok(match self.role {
            EncoderRole::Teacher => checkpoint::load_teacher(checkpoint, M::encoder(&start).valid(), self.device)?,
            EncoderRole::Trained => M::encoder(&checkpoint::load_model(checkpoint, start, self.device)?).valid(),
        })
    }
}
