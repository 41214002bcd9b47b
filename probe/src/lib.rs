//! `jepa-probe`: honest numbers for a trained run.
//!
//! It owns evaluation of frozen encoders: features extracted once to Parquet, a linear
//! probe and a kNN classifier fitted on train features and evaluated once on test,
//! fine-tuning, the report (polars queries, Markdown, plots), and the random-init baseline
//! every number is compared with. It reads shards and labelled images through
//! `jepa-shared`, and runs (their folder, recipe, checkpoints and encoders) through
//! `jepa-trainer`; nothing upstream depends on it, and polars stays in this crate.
//!
//! Modules in layers, each using only those above it in this list:
//! - reading runs and features: [`protocol`] (which train images fit a probe and which
//!   test it), [`features`] (images → average-pooled features → Parquet);
//! - probes: [`heldout`] (the test split, sealed until a fitted classifier asks, and the
//!   predictions it yields), [`knn`] and [`linear`] (each choosing its settings on the
//!   same validation part of train: they share the split, the pick of the best and argmax),
//!   [`finetune`] (the whole encoder and a head trained end to end);
//! - evaluation over tasks: [`evaluate`] (a probe over every task, written as predictions);
//! - scores: [`scores`] (accuracy, macro F1, per-class scores and confusion as polars queries);
//! - pictures: [`plots`] (PNGs from frames and rows), [`sheet`] (figures made of images),
//!   [`page`] (one page as Markdown and as self-contained HTML);
//! - figures and the report: [`mask_figure`] (a recipe's masks over real images), [`tsne`]
//!   (the frozen features in two dimensions), [`retrieval`] (what a feature-predicting
//!   method's predictor imagines, and how often it is right), [`reconstruction`] (a
//!   pixel-predicting method's figure), [`report`] (the Parquet tables, the report page and
//!   the headline summary);
//! - the whole: [`pipeline`] (one run's evaluation and figures, `probe all`), [`compare`] (runs of
//!   different methods against the baselines), [`sweep`] (one row per recipe in a Parquet
//!   table, and the choice between recipes made on validation accuracy).
//!
//! Beside them: [`interop`] (encoders exported for timm, and imported from safetensors or
//! official I-JEPA checkpoints as run folders), [`error`].

pub mod compare;
pub mod error;
pub mod evaluate;
pub mod features;
pub mod finetune;
pub mod heldout;
pub mod interop;
pub mod knn;
pub mod linear;
pub mod mask_figure;
pub mod page;
pub mod pipeline;
pub mod plots;
pub mod protocol;
pub mod reconstruction;
pub mod report;
pub mod reproduce;
pub mod retrieval;
pub mod scores;
pub mod seed;
pub mod sheet;
pub mod sweep;
pub mod tsne;

pub use error::{ProbeError, Result};
