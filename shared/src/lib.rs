//! `jepa-shared`: what every jepa-stream stage agrees on.
//!
//! It owns the shard format (one Parquet row per image, raw HWC pixels), the dataset
//! manifest, the writer that produces shards atomically, and the streaming reader the
//! loader and the probe read them with. It knows nothing of image sources (that is
//! `jepa-ingest`) nor of models and training (that is `jepa-trainer`).
//!
//! Modules, in data-flow order:
//! - [`shard`]: the schema, [`ImageRecord`], codecs and the single-file writer;
//! - [`dataset_writer`]: splits → bounded shard files in a staging folder → commit;
//! - [`manifest`]: `manifest.json`, written last and atomically;
//! - [`reader`]: [`Dataset`] and [`ShardReader`], one row group at a time;
//! - [`epoch`]: the order an epoch visits a split, a pure function of (seed, epoch);
//! - [`masks`]: I-JEPA multi-block masks, drawn on loader threads;
//! - `vit` (feature `vit`): the ViT encoder, built from Burn primitives;
//! - [`rng`]: keyed random streams, so every draw is a function of (seed, epoch, position);
//! - [`metrics_table`]: a `metrics` recorder and the per-step metrics table in Parquet;
//! - [`checksum`]: streaming SHA-256 used by the writer, the reader and the sources.

pub mod checksum;
pub mod dataset_writer;
pub mod epoch;
pub mod error;
pub mod manifest;
pub mod masks;
pub mod metrics_table;
pub mod reader;
pub mod rng;
pub mod shard;
#[cfg(feature = "vit")]
pub mod vit;

pub use dataset_writer::{DatasetWriter, SplitWriter};
pub use epoch::{EpochOrder, SampleAddress};
pub use error::{Result, ShardError};
pub use manifest::{Manifest, SourceInfo, SplitManifest};
pub use masks::{BatchMasks, MaskConfig, MaskSampler, MultiBlockMasks, RandomMasks};
pub use reader::{Dataset, ImageBatch, ImageView, ShardReader};
pub use shard::{ImageRecord, SCHEMA_VERSION, ShardCodec, ShardFile, ShardLayout};
