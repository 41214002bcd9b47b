//! `jepa-trainer`: from shards to a trained I-JEPA encoder.
//!
//! It owns the streaming prefetcher that turns shards into ready batches (crops, resizes,
//! masks) on CPU threads. It reads shards only through `jepa-shared`'s reader and knows
//! nothing of where they came from (that is `jepa-ingest`) nor of evaluation (`jepa-probe`).
//!
//! Modules, in data-flow order:
//! - [`augment`]: RandomResizedCrop, resize and channel layout of one image;
//! - `epoch_reader`: the epoch order read from the shards, cut into batch jobs;
//! - [`prefetch`]: reader thread → worker threads → bounded async channel → [`Loader`].

pub mod augment;
mod epoch_reader;
pub mod prefetch;

pub use augment::{CropBox, CropConfig, ImagePipeline};
pub use prefetch::{Batch, Loader, LoaderConfig, LoaderError, LoaderPosition, LoaderStats};
