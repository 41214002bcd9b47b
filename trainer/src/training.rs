//! The training loop every method shares (I-JEPA, MAE: [`crate::method`]).
//!
//! Per optimizer step: `accumulation` micro-batches from the prefetcher, then one
//! [`optimizer_step`] with the schedules evaluated at the optimizer step, never per
//! micro-batch.
//!
//! Each step appends a row to `metrics.parquet` (through the `metrics` crate); checkpoints
//! are written every `checkpoint.every_steps` and at the end, with the metrics table beside
//! them, so a resumed run continues the same curve. A non-finite loss stops the run before
//! the bad update; the last checkpoint stays as it was.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use jepa_shared::metrics_table::{MetricsTable, StepRecorder};
use jepa_shared::{Dataset, ShardError};

use crate::checkpoint::{self, CheckpointError, TrainState};
use crate::config::{ConfigError, Method as MethodName, RunConfig};
use crate::method::{IJepaMethod, MaeMethod, Method};
use crate::model::DeviceBatch;
use crate::pixel_stats::pixel_stats;
use crate::prefetch::{Loader, LoaderError, LoaderPosition};
use crate::schedule::Schedule;
use crate::step::{StepOutcome, StepSettings, fresh, optimizer_step};

/// The columns of `metrics.parquet` every method writes, besides `step`; each method adds
/// its own ([`metric_columns`]).
pub const METRIC_COLUMNS: [&str; 7] =
    ["epoch", "loss", "lr", "weight_decay", "images_per_second", "loader_wait_seconds", "grad_norm"];

/// All the columns of a `method` run's `metrics.parquet`, besides `step`.
pub fn metric_columns(method: MethodName) -> Vec<&'static str> {
    let extra = match method {
        MethodName::Ijepa => IJepaMethod::METRICS,
        MethodName::Mae => MaeMethod::METRICS,
    };
    METRIC_COLUMNS.iter().chain(extra).copied().collect()
}

/// Images used to measure the pixel mean/std when the config leaves them out.
const PIXEL_STATS_IMAGES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: a run is already there; pass --resume {path} to continue it, or choose another name")]
    RunExists { path: PathBuf },
    #[error("{path}: no checkpoint to resume from")]
    NothingToResume { path: PathBuf },
    #[error(
        "loss is {loss} at step {step}: training stopped before applying that update; \
         the last good checkpoint is {}", last_checkpoint.as_ref().map_or("(none)".into(), |path| path.display().to_string())
    )]
    NonFinite { step: u64, loss: f64, last_checkpoint: Option<PathBuf> },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Folder holding one folder per run (`runs/`).
    pub runs_root: PathBuf,
    /// Continue `runs_root/<name>` from its latest checkpoint.
    pub resume: bool,
    /// Draw an indicatif progress bar on stderr.
    pub progress: bool,
    /// Shared with a Prometheus endpoint when one is served.
    pub recorder: Option<StepRecorder>,
}

#[derive(Debug, Clone)]
pub struct TrainReport {
    pub run_dir: PathBuf,
    /// Optimizer steps done in total (including those before a resume).
    pub steps: u64,
    /// Loss of each step this call ran, in order.
    pub losses: Vec<f64>,
    pub images_per_second: f64,
    pub last_checkpoint: PathBuf,
}

/// How many optimizer steps the run has, from the loader's batches per epoch.
fn schedule_for(config: &RunConfig, batches_per_epoch: u64) -> Schedule {
    let steps_per_epoch = (batches_per_epoch / config.optim.accumulation).max(1);
    let optim = &config.optim;
    Schedule {
        lr_start: optim.lr_start,
        lr_peak: optim.lr_peak,
        lr_final: optim.lr_final,
        warmup_steps: (optim.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total_steps: optim.epochs * steps_per_epoch,
        weight_decay: optim.weight_decay,
        ema_momentum: optim.ema_momentum,
    }
}

/// Trains (or resumes) the run `config.name` under `options.runs_root`, with the method
/// its config names.
pub fn train<B: AutodiffBackend>(config: RunConfig, options: &TrainOptions, device: &B::Device) -> Result<TrainReport> {
    config.check()?;
    match config.method {
        MethodName::Ijepa => run::<B, _>(&IJepaMethod::from_config(&config)?, config, options, device),
        MethodName::Mae => run::<B, _>(&MaeMethod::from_config(&config)?, config, options, device),
    }
}

fn run<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    mut config: RunConfig,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<TrainReport> {
    let run_dir = options.runs_root.join(&config.name);
    let checkpoints = run_dir.join("checkpoints");
    let resume_from = if options.resume {
        Some(checkpoint::latest(&checkpoints)?.ok_or_else(|| TrainError::NothingToResume { path: run_dir.clone() })?)
    } else {
        if checkpoint::latest(&checkpoints)?.is_some() {
            return Err(TrainError::RunExists { path: run_dir });
        }
        None
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;

    let dataset = Dataset::open(&config.dataset)?;
    let channels = config.loader.channels as usize;
    if config.data.pixel_mean.is_none() || config.data.pixel_std.is_none() {
        let (mean, std) = pixel_stats(&dataset, &config.loader.split, channels, PIXEL_STATS_IMAGES)?;
        config.data.pixel_mean.get_or_insert(mean);
        config.data.pixel_std.get_or_insert(std);
    }
    let mean = config.data.pixel_mean.clone().expect("set above");
    let std = config.data.pixel_std.clone().expect("set above");
    let config_path = run_dir.join("config.toml");
    jepa_shared::manifest::write_file_atomically(&config_path, config.to_toml().as_bytes())?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("train.log"))
        .map_err(io(&run_dir.join("train.log")))?;

    let mut loader_config = config.loader.clone();
    loader_config.seed = config.seed;
    loader_config.epochs = None;

    let fresh = fresh::<B, M>(method.init(config.seed, device));
    let columns = metric_columns(config.method);
    let metrics_path = run_dir.join("metrics.parquet");
    let (mut parts, state, mut table) = match &resume_from {
        Some(path) => {
            let (parts, state) = checkpoint::load(path, fresh, device)?;
            let mut table = MetricsTable::read(&metrics_path)?;
            table.truncate_to(state.step);
            (parts, state, table)
        }
        None => (fresh, TrainState { step: 0, loader: LoaderPosition::default() }, MetricsTable::new(&columns)),
    };

    let mut loader = Loader::start(&dataset, &loader_config, method.masks(), state.loader)?;
    let schedule = schedule_for(&config, loader.batches_per_epoch());
    let last_step = config.optim.max_steps.map_or(schedule.total_steps, |max| max.min(schedule.total_steps));
    let _ = writeln!(
        log,
        "{} at step {} of {last_step} ({}; {} optimizer steps in the full schedule, {} per epoch)",
        if resume_from.is_some() { "resumed" } else { "started" },
        state.step,
        config.method.as_str(),
        schedule.total_steps,
        (loader.batches_per_epoch() / config.optim.accumulation).max(1),
    );

    let recorder = options.recorder.clone().unwrap_or_default();
    let progress = progress_bar(options.progress, state.step, last_step);
    let mut step = state.step;
    let mut losses = Vec::new();
    let mut last_checkpoint = resume_from.clone();
    let started = Instant::now();
    let mut images_done = 0u64;
    let guard = metrics::set_default_local_recorder(&recorder);
    let outcome: Result<()> = (|| {
        while step < last_step {
            let step_started = Instant::now();
            let (mut micro_batches, mut images, mut relaxed, mut epoch) = (Vec::new(), 0, 0, 0);
            for _ in 0..config.optim.accumulation {
                let batch = loader.next_blocking().expect("the loader streams until dropped")?;
                epoch = batch.epoch;
                images += batch.len();
                relaxed += batch.masks.relaxed;
                micro_batches.push(DeviceBatch::<B>::new(&batch, &mean, &std, device));
            }
            let settings = StepSettings {
                lr: schedule.lr_at(step),
                weight_decay: schedule.weight_decay_at(step),
                ema_momentum: schedule.ema_momentum_at(step),
                grad_clip: config.optim.grad_clip,
            };
            let stats = match optimizer_step(method, parts, &micro_batches, &settings) {
                StepOutcome::Applied(updated, stats) => {
                    parts = *updated;
                    stats
                }
                StepOutcome::NonFinite(loss) => {
                    return Err(TrainError::NonFinite { step, loss, last_checkpoint: last_checkpoint.clone() });
                }
            };
            let loss_sum = stats.loss;

            let seconds = step_started.elapsed().as_secs_f64();
            let values = [
                ("epoch", epoch as f64),
                ("loss", stats.loss),
                ("lr", settings.lr),
                ("weight_decay", settings.weight_decay),
                ("ema_momentum", settings.ema_momentum),
                ("images_per_second", images as f64 / seconds),
                ("grad_norm", stats.grad_norm),
                ("relaxed_masks", relaxed as f64),
            ];
            for (name, value) in values.into_iter().chain(stats.method.iter().copied()) {
                if columns.contains(&name) {
                    metrics::gauge!(name).set(value);
                }
            }
            table.push(step, &recorder.snapshot());
            losses.push(loss_sum);
            images_done += images as u64;
            step += 1;
            progress.set_position(step);
            progress.set_message(format!("loss {loss_sum:.4}  {:.1} img/s", images as f64 / seconds));

            if step.is_multiple_of(config.checkpoint.every_steps) || step == last_step {
                let state = TrainState { step, loader: loader.position() };
                table.write_atomically(&metrics_path)?;
                let path = checkpoint::save(&checkpoints, &parts, &state, config.checkpoint.keep)?;
                let _ = writeln!(log, "step {step}: loss {loss_sum:.6}, checkpoint {}", path.display());
                last_checkpoint = Some(path);
            }
        }
        Ok(())
    })();
    drop(guard);
    progress.finish_and_clear();
    if let Err(error) = outcome {
        let _ = writeln!(log, "stopped: {error}");
        return Err(error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = writeln!(log, "finished at step {step}: {images_done} images in {elapsed:.1} s");
    Ok(TrainReport {
        run_dir,
        steps: step,
        losses,
        images_per_second: images_done as f64 / elapsed.max(1e-9),
        last_checkpoint: last_checkpoint.expect("a checkpoint is written at the last step"),
    })
}

fn progress_bar(visible: bool, position: u64, length: u64) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(length).with_position(position);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg} ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}
