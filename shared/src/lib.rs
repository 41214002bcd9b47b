//! `jepa-shared`: the data plane every jepa-stream stage and every self-supervised method
//! shares, with no tensor library in it.
//!
//! It owns the shard format (one Parquet row per image, raw HWC pixels), the dataset
//! manifest, the writer that produces shards atomically, the streaming reader, and the
//! streaming loader that turns shards into ready batches (epoch order, crops and resizes on
//! worker threads, masks, a bounded channel), plus the labelled images evaluation reads. It
//! knows nothing of image sources (that is `jepa-ingest`) nor of models, objectives and
//! training (that is `jepa-trainer`): a new method reuses all of this by choosing a
//! [`MaskSampler`].
//!
//! Modules, in data-flow order:
//! - [`shard`]: the schema, [`ImageRecord`], codecs and the single-file writer;
//! - [`dataset_writer`]: splits → bounded shard files in a staging folder → commit;
//! - [`manifest`]: `manifest.json`, written last and atomically;
//! - [`reader`]: [`Dataset`] and [`ShardReader`], one row group at a time;
//! - [`epoch`]: the order an epoch visits a split, a pure function of (seed, epoch);
//! - [`masks`]: the mask strategies the loader draws on its threads (I-JEPA's multi-block,
//!   MAE's random);
//! - [`augment`]: RandomResizedCrop, resize and channel layout of one image;
//! - [`pixel_stats`]: a split's per-channel mean and std, for the model's normalisation;
//! - [`loader`]: the loader's settings, positions, batches and errors;
//! - `epoch_reader`: the epoch order read from the shards, cut into batch jobs;
//! - [`prefetch`]: reader thread → worker threads → bounded async channel → [`Loader`];
//! - [`labelled`]: every labelled image of a split, resized whole, for evaluation;
//! - [`metrics_table`]: a `metrics` recorder and the per-step metrics table in Parquet;
//! - [`fixture`]: small datasets whose pixels name their image, for tests and examples.
//!
//! Beside the flow: [`atomic`] (every file whole or not at all), [`progress`] (the one
//! progress-bar style), [`rng`] (keyed random streams, so every draw is a function of (seed,
//! epoch, position)), [`checksum`] (streaming SHA-256) and [`error`].

pub mod atomic;
pub mod augment;
pub mod checksum;
pub mod dataset_writer;
pub mod epoch;
mod epoch_reader;
pub mod error;
pub mod fixture;
pub mod labelled;
pub mod loader;
pub mod manifest;
pub mod masks;
pub mod metrics_table;
pub mod pixel_stats;
pub mod prefetch;
pub mod progress;
pub mod reader;
pub mod rng;
pub mod shard;

pub use augment::{CropBox, CropConfig, ImagePipeline};
pub use dataset_writer::{DatasetWriter, SplitWriter};
pub use epoch::{EpochOrder, SampleAddress};
pub use error::{FileError, Result};
pub use labelled::LabelledImages;
pub use loader::{Batch, LoaderConfig, LoaderError, LoaderPosition, LoaderSettings, LoaderStats, RankSlice};
pub use manifest::{Manifest, SourceInfo, SplitManifest};
pub use masks::{BatchMasks, MaskConfig, MaskSampler, MultiBlockMasks, RandomMasks};
pub use prefetch::Loader;
pub use progress::Progress;
pub use reader::{Dataset, ImageBatch, ImageView, ShardReader};
pub use shard::{ImageRecord, SCHEMA_VERSION, ShardCodec, ShardFile, ShardLayout};
