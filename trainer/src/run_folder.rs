//! The layout of a run folder, in one place: every file name a run has is spelled here.
//!
//! ```text
//! runs/<name>/config.toml                    the resolved config             (train)
//! runs/<name>/metrics.parquet                one row per optimizer step       (train)
//! runs/<name>/train.log                      start, resume, checkpoints, end  (train)
//! runs/<name>/writer.lock                    held by the one process training it (train)
//! runs/<name>/encoder.safetensors          an imported encoder, instead of checkpoints (probe)
//! runs/<name>/checkpoints/step-NNNNNNNN/     model.bin, target_encoder.bin (a method with a
//!                                            teacher), optimizer.bin, state.json,
//!                                            digests.json (train)
//! runs/<name>/features/<split>.parquet       the trained encoder's features   (probe)
//! runs/<name>/features-random/<split>.parquet  the random-init encoder's     (probe)
//! runs/<name>/features-context/<split>.parquet the trained student encoder's, for a method
//!                                            that evaluates its EMA teacher (probe)
//! runs/<name>/features-pixels/<split>.parquet  the standardised pixels themselves (probe)
//! runs/<name>/probe/predictions/, selection/  each probe's predictions and search (probe)
//! runs/<name>/probe/<report file>            scores, report.md, figures ([`ReportFile`]) (probe)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use jepa_shared::FileError;

use crate::encoders::{CheckpointPart, EncoderKind};

/// A run folder's paths. Creating, reading and writing them is the callers' business;
/// naming them is this type's alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFolder {
    root: PathBuf,
}

impl RunFolder {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.parquet")
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("train.log")
    }

    /// The file whose OS lock says which process is writing the run.
    pub fn writer_lock(&self) -> PathBuf {
        self.root.join("writer.lock")
    }

    /// Takes the run for writing: an exclusive OS lock on [`Self::writer_lock`] (creating
    /// the folder), held until the returned value is dropped or the process ends however it
    /// ends, so a killed writer never leaves the run locked. A second writer is refused,
    /// told which process holds it. Checkpoints a killed writer was staging are removed.
    pub fn lock_for_writing(&self) -> Result<WriterLock, LockError> {
        std::fs::create_dir_all(&self.root).map_err(FileError::io(&self.root))?;
        let path = self.writer_lock();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(FileError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = if holder.trim().is_empty() { "a process that has not said which".into() } else { holder };
                return Err(LockError::Held { run: self.root.clone(), holder: holder.trim().to_string() });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(FileError::Io { path, source }.into()),
        }
        let command: Vec<String> = std::env::args().collect();
        let holder = format!("process {} (`{}`)", std::process::id(), command.join(" "));
        use std::io::{Seek, Write};
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(holder.as_bytes()))
            .map_err(FileError::io(&path))?;
        self.remove_staged_checkpoints()?;
        Ok(WriterLock { _file: file })
    }

    /// Checkpoint folders left half-written by a writer that was killed (only the holder of
    /// the writer lock may call this: no other writer can be staging one).
    fn remove_staged_checkpoints(&self) -> Result<(), FileError> {
        let folder = self.checkpoints();
        let Ok(entries) = std::fs::read_dir(&folder) else { return Ok(()) };
        for entry in entries {
            let path = entry.map_err(FileError::io(&folder))?.path();
            let staged = path.file_name().and_then(|name| name.to_str()).is_some_and(jepa_shared::atomic::is_temp_name);
            if staged && path.is_dir() {
                std::fs::remove_dir_all(&path).map_err(FileError::io(&path))?;
            }
        }
        Ok(())
    }

    /// An encoder imported from elsewhere, in timm's layout: such a run has no checkpoints.
    pub fn imported_encoder(&self) -> PathBuf {
        self.root.join("encoder.safetensors")
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The checkpoint written after `step` optimizer steps (it may not exist).
    pub fn checkpoint_at(&self, step: u64) -> CheckpointFolder {
        CheckpointFolder::new(self.checkpoints().join(format!("step-{step:08}")))
    }

    /// Complete checkpoints, oldest first (a checkpoint still being written has another name).
    pub fn list_checkpoints(&self) -> Result<Vec<CheckpointFolder>, FileError> {
        let folder = self.checkpoints();
        if !folder.exists() {
            return Ok(Vec::new());
        }
        let io = |source| FileError::Io { path: folder.clone(), source };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&folder).map_err(io)? {
            let checkpoint = CheckpointFolder::new(entry.map_err(io)?.path());
            if checkpoint.step().is_some() {
                found.push(checkpoint);
            }
        }
        found.sort_by_key(|checkpoint| checkpoint.step());
        Ok(found)
    }

    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointFolder>, FileError> {
        Ok(self.list_checkpoints()?.pop())
    }

    /// A checkpoint named by a user: `step-00000937`, a bare step number, or a path.
    pub fn named_checkpoint(&self, name: &str) -> CheckpointFolder {
        match name.parse::<u64>() {
            Ok(step) => self.checkpoint_at(step),
            Err(_) if Path::new(name).is_absolute() || name.contains('/') => CheckpointFolder::new(name),
            Err(_) => CheckpointFolder::new(self.checkpoints().join(name)),
        }
    }

    pub fn features_dir(&self, encoder: EncoderKind) -> PathBuf {
        match encoder {
            EncoderKind::Pretrained => self.root.join("features"),
            EncoderKind::Context => self.root.join("features-context"),
            EncoderKind::Random => self.root.join("features-random"),
            EncoderKind::Pixels => self.root.join("features-pixels"),
        }
    }

    pub fn features(&self, encoder: EncoderKind, split: &str) -> PathBuf {
        self.features_dir(encoder).join(format!("{split}.parquet"))
    }

    /// The probe's outputs: predictions, scores, the report and its figures.
    pub fn probe_dir(&self) -> PathBuf {
        self.root.join("probe")
    }

    /// The predictions of one probe of one encoder.
    pub fn predictions(&self, encoder: EncoderKind, probe: &str) -> PathBuf {
        self.probe_dir().join("predictions").join(format!("{encoder}-{probe}.parquet"))
    }

    /// Every predictions file's folder.
    pub fn predictions_dir(&self) -> PathBuf {
        self.probe_dir().join("predictions")
    }

    /// The hyper-parameter search of one probe of one encoder (the linear probe's is the
    /// encoder's name alone).
    pub fn selection(&self, encoder: EncoderKind, probe: &str) -> PathBuf {
        let name = if probe == "linear" { encoder.to_string() } else { format!("{encoder}-{probe}") };
        self.probe_dir().join("selection").join(format!("{name}.parquet"))
    }

    /// One of the probe's report files.
    pub fn report(&self, file: ReportFile) -> PathBuf {
        self.probe_dir().join(file.name())
    }
}

/// A run folder held for writing by this process (see [`RunFolder::lock_for_writing`]).
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{}: {holder} is writing this run; wait for it to end or stop it (a second writer would \
         corrupt its checkpoints)", run.display()
    )]
    Held { run: PathBuf, holder: String },
    #[error(transparent)]
    Io(#[from] FileError),
}

/// The files of a run's report, in `probe/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFile {
    /// Every probe's predictions in one table.
    Predictions,
    /// The headline numbers, one row per (encoder, probe, protocol).
    Summary,
    PerTask,
    PerClass,
    Confusion,
    /// The one page that shows everything.
    Markdown,
    TrainingCurves,
    ConfusionMatrix,
    PerClassAccuracy,
    /// A pixel-predicting method's reconstructions of test images.
    Reconstruction,
    /// A feature-predicting method's predictions shown as their nearest gallery patches.
    Retrieval,
    /// Top-1 and top-5 retrieval of the trained and the random-init predictor.
    RetrievalScores,
    /// The frozen test features of both encoders in two dimensions.
    Tsne,
    /// Those two-dimensional coordinates, one row per (encoder, image).
    TsneCoordinates,
    /// The run's masks over real images.
    Masks,
    /// `report.md` as one self-contained page, every figure inside it.
    Html,
}

impl ReportFile {
    pub fn name(self) -> &'static str {
        match self {
            ReportFile::Predictions => "predictions.parquet",
            ReportFile::Summary => "summary.parquet",
            ReportFile::PerTask => "per_task.parquet",
            ReportFile::PerClass => "per_class.parquet",
            ReportFile::Confusion => "confusion.parquet",
            ReportFile::Markdown => "report.md",
            ReportFile::TrainingCurves => "training_curves.png",
            ReportFile::ConfusionMatrix => "confusion.png",
            ReportFile::PerClassAccuracy => "per_class.png",
            ReportFile::Reconstruction => "reconstruction.png",
            ReportFile::Retrieval => "predictor_retrieval.png",
            ReportFile::RetrievalScores => "retrieval.parquet",
            ReportFile::Tsne => "tsne.png",
            ReportFile::TsneCoordinates => "tsne.parquet",
            ReportFile::Masks => "masks.png",
            ReportFile::Html => "report.html",
        }
    }
}

/// One checkpoint folder's paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFolder {
    path: PathBuf,
}

impl CheckpointFolder {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its folder's name (`step-00000150`): which checkpoint, in a table's width.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(|| self.path.display().to_string(), |name| name.to_string_lossy().into_owned())
    }

    /// The optimizer steps it holds, from its name (`None` for another name).
    pub fn step(&self) -> Option<u64> {
        let name = self.path.file_name()?.to_str()?;
        name.strip_prefix("step-")?.parse().ok()
    }

    /// A part's file without its extension (Burn's recorder adds it).
    pub fn stem(&self, part: CheckpointPart) -> PathBuf {
        self.path.join(match part {
            CheckpointPart::Trained => "model",
            CheckpointPart::Teacher => "target_encoder",
            CheckpointPart::Optimizer => "optimizer",
        })
    }

    /// A part's file as it is on disk.
    pub fn file(&self, part: CheckpointPart) -> PathBuf {
        self.stem(part).with_extension("bin")
    }

    /// Step and loader position.
    pub fn state(&self) -> PathBuf {
        self.path.join("state.json")
    }

    /// The SHA-256 and size of every other file, written with them.
    pub fn digests(&self) -> PathBuf {
        self.path.join("digests.json")
    }
}

impl fmt::Display for CheckpointFolder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.path.display())
    }
}
