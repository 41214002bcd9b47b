//! `jepa-eval`: frozen encoders turned into numbers.
//!
//! Features extracted once to Parquet, a linear probe and a kNN classifier fitted on train
//! features and evaluated once on test, fine-tuning, the seed's fixed recipes, and the
//! scores, all written as Parquet. It reads shards and labelled images through
//! `jepa-shared`, and runs (their folder, recipe, checkpoints and encoders) through
//! `jepa-trainer`. Nothing here draws: pictures and pages are `jepa-report`'s, which builds
//! on this crate (and never the other way round).
//!
//! Modules in layers, each using only those above it in this list:
//! - [`error`];
//! - reading runs and features: [`protocol`] (which train images fit a probe and which
//!   test it), [`features`] (images → average-pooled features → Parquet);
//! - [`select`]: what every probe needs to choose its settings on train alone (the
//!   validation part, the pick of the best, argmax, the cosine learning rate);
//! - probes: [`heldout`] (the test split, sealed until a fitted classifier asks, and the
//!   predictions it yields), [`seed`] (the seed's fixed evaluation recipes), [`knn`],
//!   [`linear`], [`finetune`] (the whole encoder and a head trained end to end);
//! - evaluation over tasks: [`evaluate`] (a probe over every task, written as predictions);
//! - scores: [`scores`] (accuracy, macro F1, per-class scores and confusion as polars queries);
//! - [`interop`]: encoders exported for timm, and imported from safetensors or official
//!   I-JEPA checkpoints as run folders.

pub mod error;
pub mod evaluate;
pub mod features;
pub mod finetune;
pub mod heldout;
pub mod interop;
pub mod knn;
pub mod linear;
pub mod protocol;
pub mod scores;
pub mod seed;
pub mod select;

pub use error::{ProbeError, Result};
