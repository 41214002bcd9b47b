//! `jepa-probe`: honest numbers for a trained run.
//!
//! It owns evaluation of frozen encoders: features extracted once to Parquet, a linear
//! probe and a kNN classifier fitted on train features and evaluated once on test, the
//! report (polars queries, Markdown, plots), and the random-init baseline every number is
//! compared with. It reads shards through `jepa-shared` and runs, configs and checkpoints
//! through `jepa-trainer`; nothing upstream depends on it, and polars stays in this crate.
//!
//! Modules, in data-flow order:
//! - [`run`]: a run folder, its checkpoints and where the probe writes;
//! - [`encoder`]: the pretrained target encoder and the random-init baseline;
//! - [`features`]: images → average-pooled features → Parquet;
//! - [`protocol`]: which train images fit a probe and which test it;
//! - [`heldout`]: the test split, sealed until a fitted classifier asks;
//! - [`linear`]: the linear probe, with its hyper-parameters chosen on train;
//! - [`knn`]: weighted cosine kNN;
//! - [`finetune`]: the whole encoder and a linear head trained end to end on labelled images;
//! - [`evaluate`]: a probe over every task, written as predictions;
//! - [`scores`]: accuracy, macro F1, per-class scores and confusion as polars queries;
//! - [`plots`]: training curves, confusion matrix and per-class PNGs;
//! - [`report`]: the Parquet tables, `report.md` and the headline summary;
//! - [`pipeline`]: the commands as functions, and the whole evaluation in one call;
//! - [`compare`]: I-JEPA against MAE against a random encoder, one table and one chart;
//! - [`reconstruction`]: MAE's original / masked / reconstructed figure.

pub mod compare;
pub mod encoder;
pub mod error;
pub mod evaluate;
pub mod features;
pub mod finetune;
pub mod heldout;
pub mod knn;
pub mod linear;
pub mod pipeline;
pub mod plots;
pub mod protocol;
pub mod reconstruction;
pub mod report;
pub mod run;
pub mod scores;

pub use error::{ProbeError, Result};
pub use run::{EncoderKind, RunFolder};
