//! `jepa-trainer`: from shards to a trained encoder, by I-JEPA or by MAE.
//!
//! It owns the streaming prefetcher that turns shards into ready batches (crops, resizes,
//! masks) on CPU threads, the two objectives (I-JEPA: predictor, EMA target encoder, loss
//! in feature space; MAE: pixel decoder and loss), the optimizer and its schedules. It reads shards only through `jepa-shared`'s reader, takes
//! the ViT from `jepa-shared`, and knows nothing of where shards came from (that is
//! `jepa-ingest`) nor of evaluation (`jepa-probe`).
//!
//! Modules, in data-flow order:
//! - [`config`]: the run config (TOML, `--set` overrides);
//! - [`augment`]: RandomResizedCrop, resize and channel layout of one image;
//! - `epoch_reader`: the epoch order read from the shards, cut into batch jobs;
//! - [`prefetch`]: reader thread → worker threads → bounded async channel → [`Loader`];
//! - [`predictor`]: the narrow ViT that predicts target features from context tokens;
//! - [`model`]: context encoder + predictor, targets from the target encoder, the loss;
//! - [`mae`]: encoder + pixel decoder, patchify, `norm_pix` and L1 losses;
//! - [`method`]: what each method brings to the shared loop (model, masks, loss, EMA);
//! - [`ema`]: the target encoder's moving average;
//! - [`schedule`]: lr, weight decay and EMA momentum as functions of the optimizer step;
//! - [`optim`]: AdamW with a scheduled decay, and global-norm gradient clipping;
//! - [`pixel_stats`]: the dataset's per-channel mean/std for normalisation;
//! - [`step`]: one optimizer step of any method (accumulation, clipping, AdamW, EMA);
//! - [`checkpoint`]: atomic checkpoints with everything resume needs;
//! - [`training`]: the loop, its metrics table and its run folder;
//! - [`prometheus`]: the optional scrape endpoint for the same metrics;
//! - [`cuda`]: the driver check the `cuda` builds run before their first tensor.

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod cuda;
pub mod ema;
mod epoch_reader;
pub mod mae;
pub mod method;
pub mod model;
pub mod optim;
pub mod pixel_stats;
pub mod predictor;
pub mod prefetch;
pub mod prometheus;
pub mod schedule;
pub mod step;
pub mod training;

pub use augment::{CropBox, CropConfig, ImagePipeline};
pub use prefetch::{Batch, Loader, LoaderConfig, LoaderError, LoaderPosition, LoaderStats};
