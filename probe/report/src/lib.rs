//! `jepa-report`: numbers turned into pictures and pages.
//!
//! Everything here reads what `jepa-eval` wrote (features, predictions, scores) or asks it
//! for more, and draws: plots, figures made of images, t-SNE, the predictor's retrieval
//! figure, the report page, the comparison of methods and the sweep over recipes.
//!
//! Modules in layers, each using only those above it in this list:
//! - drawing: [`canvas`] (a PNG written whole or not at all, and the font), [`plots`] (PNGs
//!   from frames and rows), [`sheet`] (figures made of images), [`page`] (one page as
//!   Markdown and as self-contained HTML);
//! - figures: [`mask_figure`] (a recipe's masks over real images), [`tsne`] (the frozen
//!   features in two dimensions), [`retrieval`] (what a feature-predicting method's predictor
//!   imagines, and how often it is right), [`reconstruction`] (a pixel-predicting method's
//!   figure);
//! - [`report`]: the Parquet tables, the report page and the headline summary;
//! - the whole: [`pipeline`] (one run's evaluation and figures, `probe all`), [`compare`]
//!   (runs of different methods against the baselines), [`reproduce`] (the seed's table
//!   beside ours), [`sweep`] (one row per recipe in a Parquet table, and the choice between
//!   recipes made on validation accuracy).

pub mod canvas;
pub mod compare;
pub mod mask_figure;
pub mod page;
pub mod pipeline;
pub mod plots;
pub mod reconstruction;
pub mod report;
pub mod reproduce;
pub mod retrieval;
pub mod sheet;
pub mod sweep;
pub mod tsne;
