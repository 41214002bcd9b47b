//! `jepa-trainer`: from shards to a trained encoder, by any self-supervised method behind
//! one seam.
//!
//! It owns the models (the ViT, the predictor and the decoders built from it), the methods
//! (I-JEPA, MAE, …: each one file behind [`method::Method`], listed in [`registry`]), the
//! checked run recipe, the optimizer and its schedules, checkpoints, the run folder, and the
//! training loop. Batches come from `jepa-shared`'s loader; it knows nothing of where shards
//! came from (that is `jepa-ingest`) nor of evaluation (`jepa-probe`).
//!
//! Modules, in data-flow order:
//! - [`config`]: the run config file (TOML, `--set` overrides, older layouts read);
//! - [`kernels`]: GELU, LayerNorm and attention: our CPU kernels on `ndarray`, Burn's ops elsewhere;
//! - [`vit`]: the ViT encoder every method trains, and pixel normalisation;
//! - [`predictor`]: the narrow ViT that predicts tokens at target positions (I-JEPA's
//!   predictor, MAE's decoder);
//! - [`pixels`]: pixel-space targets: patchify and per-patch normalisation;
//! - [`batch`]: a loader batch on the device;
//! - [`encoders`]: which encoder, in one vocabulary: a method's encoders by role, a
//!   checkpoint's parts, and the encoders a result is about;
//! - [`method`]: the seam: what a method brings, and seeded model init;
//! - [`ijepa`]: I-JEPA: multi-block masks, predictor, EMA target encoder, loss in feature space;
//! - [`ijepa_pixels`]: I-JEPA's masks and predictor with pixel targets, no teacher;
//! - [`mae`]: MAE: random masks, pixel decoder, `norm_pix` and L1 losses;
//! - [`registry`]: the methods a run config can name;
//! - [`recipe`]: a run config checked in one place, with its typed parts;
//! - [`ema`]: the teacher's moving average;
//! - [`schedule`]: lr, weight decay and EMA momentum as functions of the optimizer step;
//! - [`optim`]: AdamW with a scheduled decay, and global-norm gradient clipping;
//! - [`collective`]: the ranks of a data-parallel run (one process, MPI, NCCL) behind one seam;
//! - [`data_parallel`]: gradients averaged over the ranks, and the check that they start alike;
//! - [`step`]: one optimizer step of any method (accumulation, clipping, AdamW, EMA), on one
//!   rank's share of the batch when there are several;
//! - [`run_folder`]: the layout of `runs/<name>/`, every file name in one place;
//! - [`checkpoint`]: atomic checkpoints with everything resume needs;
//! - [`interop`]: encoders in and out in PyTorch's layouts (timm safetensors, I-JEPA `.pth.tar`);
//! - [`run`]: a trained run as evaluation opens it, and the encoders it evaluates;
//! - [`training`]: the loop and its metrics table;
//! - [`timing`]: a step's time on a backend, and a whole run's on this machine's CPU;
//! - [`prometheus`]: the optional scrape endpoint for the same metrics;
//! - [`device`]: the backend the binaries run on (`--device`), and the checks before a GPU's first kernel.

pub mod batch;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod data_parallel;
pub mod device;
pub mod ema;
pub mod encoders;
pub mod finite;
pub mod ijepa;
pub mod ijepa_pixels;
pub mod interop;
pub mod kernels;
pub mod mae;
pub mod method;
pub mod optim;
pub mod pixels;
pub mod predictor;
pub mod prometheus;
pub mod recipe;
pub mod registry;
pub mod run;
pub mod run_folder;
pub mod schedule;
pub mod step;
pub mod timing;
pub mod training;
pub mod vit;

pub use encoders::{CheckpointPart, EncoderKind, EncoderRole};
pub use recipe::Recipe;
pub use run::{Run, RunError};
pub use run_folder::{CheckpointFolder, ReportFile, RunFolder};
