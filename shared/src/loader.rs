//! The loader's vocabulary: what a run asks of it ([`LoaderSettings`], the `[loader]` section
//! of a run config), everything it needs to start ([`LoaderConfig`]), where a stream stands
//! ([`LoaderPosition`]), what it delivers ([`Batch`]) and how it fails ([`LoaderError`]).
//! The threads that do the work are [`crate::epoch_reader`] and [`crate::prefetch`].

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::augment::CropConfig;
use crate::error::FileError;
use crate::masks::BatchMasks;

/// How batches are made: the part of the loader a user sets in a run config. The image
/// shape comes from the model, the seed and the number of epochs from the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderSettings {
    /// Split of the dataset to stream (`train`, `unlabeled`, …).
    pub split: String,
    pub batch_size: usize,
    pub crop: CropConfig,
    /// Loader threads doing crop, resize and masks.
    pub workers: usize,
    /// Ready batches waiting for the trainer: the channel depth.
    pub prefetch_batches: usize,
    /// Images held back to mix row groups (0: files and row groups are shuffled, rows are not).
    pub shuffle_buffer: usize,
    /// Leave out an epoch's last, short batch (training), or send it (evaluation).
    pub drop_last: bool,
    /// Check each shard's SHA-256 against the manifest the first time it is opened.
    pub verify_checksums: bool,
}

impl Default for LoaderSettings {
    fn default() -> Self {
        Self {
            split: "train".into(),
            batch_size: 64,
            crop: CropConfig::default(),
            workers: 2,
            prefetch_batches: 4,
            shuffle_buffer: 4_096,
            drop_last: true,
            verify_checksums: true,
        }
    }
}

/// One rank's share of every global batch, for data-parallel training: of a batch of `n`
/// images, rows `rank·n/world .. (rank+1)·n/world`. Crops are keyed by an image's position
/// in the epoch and masks are drawn for the whole global batch, so a rank's rows are the
/// same rows, pixels and masks a single process would train on, whatever the world size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankSlice {
    pub rank: usize,
    pub world: usize,
}

impl RankSlice {
    /// One process, the whole batch.
    pub const SOLO: RankSlice = RankSlice { rank: 0, world: 1 };

    /// This rank's rows of a global batch of `batch` images.
    pub fn rows(self, batch: usize) -> Range<usize> {
        self.rank * batch / self.world..(self.rank + 1) * batch / self.world
    }
}

impl Default for RankSlice {
    fn default() -> Self {
        Self::SOLO
    }
}

/// Everything [`crate::Loader::start`] needs besides the dataset and the masks.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub settings: LoaderSettings,
    /// Side of the square images the model sees.
    pub image_size_px: u32,
    /// Output channels, 1 or 3, whatever the source has.
    pub channels: u8,
    /// Crops of each image per batch (a method's choice: 1 for I-JEPA and MAE, 2 for
    /// methods that compare views). Masks are drawn once per image, for every view.
    pub views: usize,
    /// Every crop, mask and shuffle is keyed by it.
    pub seed: u64,
    /// Stop after this many epochs; `None` streams until the loader is dropped.
    pub epochs: Option<u64>,
    /// Which rows of each global batch this process receives (`batch_size` is the global
    /// batch); the stream's position stays global, so a run resumes at any world size.
    pub ranks: RankSlice,
}

impl LoaderConfig {
    /// `settings` for one view of images of `image_size_px` with `channels`, streaming until
    /// dropped.
    pub fn new(settings: LoaderSettings, image_size_px: u32, channels: u8, seed: u64) -> Self {
        Self { settings, image_size_px, channels, views: 1, seed, epochs: None, ranks: RankSlice::SOLO }
    }

    /// Everything that can be checked without the dataset, against the grid `(rows,
    /// columns)` the masks are drawn on: the first problem, naming its field.
    pub fn check(&self, mask_grid: (usize, usize)) -> Result<()> {
        let error = |field, problem: String| Err(LoaderError::Config { field, problem });
        let settings = &self.settings;
        let positive = [
            ("batch_size", settings.batch_size),
            ("workers", settings.workers),
            ("prefetch_batches", settings.prefetch_batches),
            ("image_size_px", self.image_size_px as usize),
            ("views", self.views),
        ];
        for (field, value) in positive {
            if value == 0 {
                return error(field, "is 0, expected at least 1".into());
            }
        }
        let RankSlice { rank, world } = self.ranks;
        if world == 0 || rank >= world {
            return error("ranks", format!("rank {rank} of a world of {world}: expected a rank below the world size"));
        }
        if world > 1 {
            if !settings.batch_size.is_multiple_of(world) {
                return error(
                    "batch_size",
                    format!(
                        "is {}, not a multiple of the world size {world}: every rank takes an equal share of \
                         each global batch",
                        settings.batch_size
                    ),
                );
            }
            if !settings.drop_last {
                return error(
                    "drop_last",
                    format!("is false: across {world} ranks a short last batch cannot be shared equally"),
                );
            }
        }
        if self.channels != 1 && self.channels != 3 {
            return error("channels", format!("is {}, expected 1 or 3", self.channels));
        }
        if let Some((field, problem)) = settings.crop.problem() {
            return error(field, problem);
        }
        let (rows, columns) = mask_grid;
        let side = self.image_size_px as usize;
        if rows == 0 || columns == 0 || !side.is_multiple_of(rows) || !side.is_multiple_of(columns) {
            return error(
                "image_size_px",
                format!("is {side}, not a multiple of the {rows}×{columns} patch grid the masks are drawn on"),
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("loader config: `{field}` {problem}")]
    Config { field: &'static str, problem: String },

    #[error(transparent)]
    File(#[from] FileError),

    #[error("{path}: {problem}")]
    Image { path: PathBuf, problem: String },

    #[error("loader worker {worker} panicked on the batch at epoch {epoch}, sample {first_position} (images from {}): {message}", files.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", "))]
    WorkerPanicked { worker: usize, epoch: u64, first_position: u64, files: Vec<PathBuf>, message: String },

    #[error("loader worker {worker} stopped without sending its batch")]
    WorkerDied { worker: usize },
}

pub type Result<T, E = LoaderError> = std::result::Result<T, E>;

/// Where a stream stands: the next sample of `epoch` to be delivered. Checkpoints store it;
/// [`crate::Loader::start`] resumes from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderPosition {
    pub epoch: u64,
    pub sample: u64,
}

/// One ready batch (this rank's share of the global batch, see [`RankSlice`]). Images are
/// u8, `[views, batch, channels, image_size_px, image_size_px]`: with one view, `[batch,
/// channels, size, size]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub epoch: u64,
    /// Position of the first image in the epoch's order.
    pub first_position: u64,
    /// Position just after the global batch this one is a share of: where every rank's
    /// stream stands once it is delivered.
    pub next_position: u64,
    pub ids: Vec<u64>,
    pub labels: Vec<Option<i16>>,
    pub images: Vec<u8>,
    pub views: usize,
    pub channels: usize,
    pub image_size_px: usize,
    pub masks: BatchMasks,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Values of one image, `channels × size × size`.
    pub fn image_len(&self) -> usize {
        self.channels * self.image_size_px * self.image_size_px
    }

    /// One image (its first view), channel-major.
    pub fn image(&self, index: usize) -> &[u8] {
        self.view_image(0, index)
    }

    /// View `view` of one image, channel-major.
    pub fn view_image(&self, view: usize, index: usize) -> &[u8] {
        let start = (view * self.len() + index) * self.image_len();
        &self.images[start..start + self.image_len()]
    }

    /// Every image of view `view`, `[batch, channels, size, size]`.
    pub fn view(&self, view: usize) -> &[u8] {
        let len = self.len() * self.image_len();
        &self.images[view * len..(view + 1) * len]
    }

    /// Kept context patches, `[batch, context_len]` flattened.
    pub fn context_idx(&self) -> Vec<u32> {
        self.masks.context_flat()
    }

    /// Target patches, `[target][batch, target_len]` flattened per target block.
    pub fn target_idx(&self) -> Vec<Vec<u32>> {
        self.masks.targets_flat()
    }
}

/// What the consumer side has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoaderStats {
    pub batches: u64,
    pub images: u64,
    /// Total time spent inside [`crate::Loader::next`] waiting for a batch.
    pub waited: Duration,
}
