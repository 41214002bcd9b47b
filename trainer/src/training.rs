//! The training loop every method shares ([`crate::method`]).
//!
//! Per optimizer step: `accumulation` micro-batches from the loader, then one
//! [`optimizer_step`] with the schedules evaluated at the optimizer step, never per
//! micro-batch.
//!
//! Each step appends a row to the metrics table: the loop's own columns, `ema_momentum`
//! for a method with a teacher, and the method's columns. Checkpoints are written every
//! `checkpoint.every_steps` and at the end, with the metrics table beside them, so a resumed
//! run continues the same curve. A non-finite loss stops the run before the bad update; the
//! last checkpoint stays as it was. Nothing is written until the recipe, the dataset and the
//! loader have passed their checks.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use jepa_shared::metrics_table::{MetricsTable, StepRecorder};
use jepa_shared::pixel_stats::pixel_stats;
use jepa_shared::{Dataset, FileError, Loader, LoaderConfig, LoaderError, LoaderPosition, Progress};

use crate::batch::DeviceBatch;
use crate::checkpoint::{self, CheckpointError, TrainState};
use crate::collective::{CollectiveError, Ranks};
use crate::config::ConfigError;
use crate::data_parallel::{parameters_digest, ranks_differing_from_rank_0};
use crate::method::{Method, MethodInfo, MethodVisitor};
use crate::recipe::Recipe;
use crate::run_folder::{CheckpointFolder, RunFolder};
use crate::step::{StepOutcome, StepSettings, fresh, optimizer_step_across};

/// The columns of `metrics.parquet` every method writes, besides `step`.
pub const METRIC_COLUMNS: [&str; 7] =
    ["epoch", "loss", "lr", "weight_decay", "images_per_second", "loader_wait_seconds", "grad_norm"];

/// The column of the teacher's EMA momentum, for a method with a teacher.
pub const EMA_MOMENTUM_COLUMN: &str = "ema_momentum";

/// All the columns of a run of `method`, besides `step`.
pub fn metric_columns(method: &dyn MethodInfo) -> Vec<&'static str> {
    let teacher = method.teacher_momentum().map(|_| EMA_MOMENTUM_COLUMN);
    METRIC_COLUMNS.iter().copied().chain(teacher).chain(method.metric_columns().iter().copied()).collect()
}

/// Images used to measure the pixel mean/std when the config leaves them out.
const PIXEL_STATS_IMAGES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Locked(#[from] crate::run_folder::LockError),
    #[error("{path}: a run is already there; pass --resume {path} to continue it, or choose another name")]
    RunExists { path: PathBuf },
    #[error(
        "{error}; {}", newest_good.map_or("no older checkpoint of the run verifies".into(), |step| format!(
            "resume from the newest good one with --from step-{step:08}"
        ))
    )]
    Damaged { error: CheckpointError, newest_good: Option<u64> },
    #[error(
        "{}: the run was started with {field} = {was}, and resuming with {field} = {now} would make it \
         another run; resume it as it is, or start a new run under another name", path.display()
    )]
    IdentityChange { path: PathBuf, field: String, was: String, now: String },
    #[error(
        "interrupted after step {step}; checkpoint {} written, `train --resume {}` continues the run",
        checkpoint.display(), run.display()
    )]
    Interrupted { step: u64, run: PathBuf, checkpoint: PathBuf },
    #[error("{path}: no checkpoint to resume from")]
    NothingToResume { path: PathBuf },
    #[error(
        "loss is {loss} at step {step}: training stopped before applying that update; \
         the last good checkpoint is {}", last_checkpoint.as_ref().map_or("(none)".into(), |path| path.display().to_string())
    )]
    NonFinite { step: u64, loss: f64, last_checkpoint: Option<PathBuf> },
    #[error(
        "after step {step}, {} parameter values are not finite (the first in `{}`): training stopped \
         without saving them; the last good checkpoint is {}",
        found.values, found.first, last_checkpoint.as_ref().map_or("(none)".into(), |path| path.display().to_string())
    )]
    NonFiniteParameters { step: u64, found: crate::finite::NonFinite, last_checkpoint: Option<PathBuf> },
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    #[error(
        "rank(s) {} start from other parameters than rank 0: every rank must start from the same \
         seed, or resume from the same checkpoint (a run folder every rank reads)",
        ranks.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
    )]
    RanksDiffer { ranks: Vec<usize> },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Folder holding one folder per run (`runs/`).
    pub runs_root: PathBuf,
    /// Continue `runs_root/<name>` from its latest checkpoint.
    pub resume: bool,
    /// Resume from this checkpoint (`step-N`, a step number or a path) instead of the latest.
    pub from: Option<String>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Set (by a signal handler) to stop at the next step boundary with a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
    /// Shared with a Prometheus endpoint when one is served.
    pub recorder: Option<StepRecorder>,
    /// The ranks of a data-parallel run (one process by default). Each trains on its share
    /// of every global batch; rank 0 alone writes the run folder.
    pub ranks: Ranks,
}

#[derive(Debug, Clone)]
pub struct TrainReport {
    pub run_dir: PathBuf,
    /// Optimizer steps done in total (including those before a resume).
    pub steps: u64,
    /// Loss of each step this call ran, in order (empty when the run was already done).
    pub losses: Vec<f64>,
    /// The loss of the run's last step, this call's or an earlier one's.
    pub last_loss: Option<f64>,
    /// Images per second over this call's steps; `None` when it ran none.
    pub images_per_second: Option<f64>,
    pub last_checkpoint: PathBuf,
}

/// Trains (or resumes) the run `recipe` names under `options.runs_root`, with its method.
pub fn train<B: AutodiffBackend>(recipe: Recipe, options: &TrainOptions, device: &B::Device) -> Result<TrainReport> {
    let method = recipe.method().clone();
    method.visit(TrainMethod::<B> { recipe, options, device })
}

struct TrainMethod<'a, B: AutodiffBackend> {
    recipe: Recipe,
    options: &'a TrainOptions,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> MethodVisitor<B> for TrainMethod<'_, B> {
    type Output = Result<TrainReport>;

    fn visit<M: Method<B>>(self, method: &M) -> Result<TrainReport> {
        run::<B, M>(method, self.recipe, self.options, self.device)
    }
}

fn run<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    recipe: Recipe,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<TrainReport> {
    let folder = RunFolder::new(options.runs_root.join(recipe.name()));
    if !options.ranks.is_leader() {
        // The other ranks of a data-parallel run read the folder and write nothing.
        return run_locked(method, recipe, options, device, &folder);
    }
    // One writer per run, for the whole of this call: taken before anything is read, so a
    // second `train` of the same run is refused before it can touch a file.
    let (new_folder, new_root) = (!folder.root().exists(), !options.runs_root.exists());
    let lock = folder.lock_for_writing()?;
    let result = run_locked(method, recipe, options, device, &folder);
    let nothing_kept = || only_the_lock(&folder) || matches!(folder.latest_checkpoint(), Ok(None));
    if result.is_err() && new_folder && nothing_kept() {
        // A new run that failed before its first checkpoint (a shard failing its checksum
        // once the loader reaches it, say) has nothing to resume: leave nothing behind
        // (`remove_dir` keeps a root that has other runs in it).
        let _ = std::fs::remove_dir_all(folder.root());
        if new_root {
            let _ = std::fs::remove_dir(&options.runs_root);
        }
    }
    drop(lock);
    result
}

/// The checkpoint a resume starts from: `from` (a name as `--from` takes it) or the latest,
/// verified against its digests; a damaged one is refused with the newest that verifies.
fn resume_point(folder: &RunFolder, latest: CheckpointFolder, from: Option<&str>) -> Result<CheckpointFolder> {
    let chosen = from.map_or(latest, |name| folder.named_checkpoint(name));
    match checkpoint::verify(&chosen) {
        Ok(()) => Ok(chosen),
        Err(error) => {
            let before = chosen.step().unwrap_or(u64::MAX);
            let newest_good = checkpoint::newest_good_before(folder, before)?;
            Err(TrainError::Damaged { error, newest_good: newest_good.and_then(|good| good.step()) })
        }
    }
}

/// Whether the run folder holds nothing but its writer lock.
fn only_the_lock(folder: &RunFolder) -> bool {
    std::fs::read_dir(folder.root())
        .map(|entries| entries.flatten().all(|entry| entry.path() == folder.writer_lock()))
        .unwrap_or(false)
}

fn run_locked<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    recipe: Recipe,
    options: &TrainOptions,
    device: &B::Device,
    folder: &RunFolder,
) -> Result<TrainReport> {
    let resume_from = match (options.resume, folder.latest_checkpoint()?) {
        (true, Some(latest)) => {
            // The run resumes as the run it is: another method, encoder, seed or dataset
            // would load into the wrong shapes, or train a different run under its name.
            if let Ok(saved) = Recipe::load(&folder.config(), &[])
                && let Some((field, was, now)) = saved.identity_change(&recipe)
            {
                return Err(TrainError::IdentityChange { path: folder.config(), field, was, now });
            }
            Some(resume_point(folder, latest, options.from.as_deref())?)
        }
        (true, None) => return Err(TrainError::NothingToResume { path: folder.root().to_path_buf() }),
        (false, Some(_)) => return Err(TrainError::RunExists { path: folder.root().to_path_buf() }),
        (false, None) => None,
    };

    // Everything that can fail on the data comes before the first file is written.
    let dataset = Dataset::open(recipe.dataset())?;
    let recipe = match recipe.pixel_stats() {
        Some(_) => recipe,
        None => {
            let split = &recipe.config().loader.split;
            let (mean, std) = pixel_stats(&dataset, split, recipe.encoder().channels, PIXEL_STATS_IMAGES)?;
            recipe.with_measured_pixel_stats(mean, std)
        }
    };
    let (mean, std) = recipe.pixel_stats().expect("measured above");
    let leader = options.ranks.is_leader();
    let world = options.ranks.world_size();
    let start = fresh::<B, M>(method, method.init(recipe.seed(), device));
    let columns = metric_columns(method);
    let (mut parts, state, mut table) = match &resume_from {
        Some(checkpoint) => {
            let (parts, state) = checkpoint::load(checkpoint, start, device)?;
            let mut table = MetricsTable::read(&folder.metrics())?;
            table.truncate_to(state.step);
            (parts, state, table)
        }
        None => (start, TrainState { step: 0, loader: LoaderPosition::default() }, MetricsTable::new(&columns)),
    };
    if world > 1 {
        let mut digest = parameters_digest(&parts.model);
        if let Some(teacher) = &parts.target_encoder {
            digest.push_str(&parameters_digest(teacher));
        }
        let differing = ranks_differing_from_rank_0(&digest, &mut *options.ranks.lock())?;
        if !differing.is_empty() {
            return Err(TrainError::RanksDiffer { ranks: differing });
        }
    }
    let loader_config = LoaderConfig { ranks: options.ranks.lock().ranks(), ..recipe.loader_config() };
    let mut loader = Loader::start(&dataset, &loader_config, method.masks(), state.loader)?;
    let schedule = recipe.schedule(loader.batches_per_epoch());
    let last_step = recipe.last_step(&schedule);
    if let Some(checkpoint) = &resume_from
        && state.step >= last_step
    {
        return Ok(finished(folder, checkpoint, &table, state.step));
    }

    // Rank 0 writes the run folder; the other ranks' log goes nowhere.
    let mut log: Box<dyn Write> = if leader {
        std::fs::create_dir_all(folder.root())
            .map_err(|source| FileError::Io { path: folder.root().into(), source })?;
        jepa_shared::atomic::write_bytes(&folder.config(), recipe.to_toml().as_bytes())?;
        let log_path = folder.log();
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|source| FileError::Io { path: log_path.clone(), source })?,
        )
    } else {
        Box::new(std::io::sink())
    };
    let accumulation = recipe.config().optim.accumulation;
    let _ = writeln!(
        log,
        "{} at step {} of {last_step} ({}; {} optimizer steps in the full schedule, {} per epoch)",
        if resume_from.is_some() { "resumed" } else { "started" },
        state.step,
        method.name(),
        schedule.total_steps,
        recipe.steps_per_epoch(loader.batches_per_epoch()),
    );

    let recorder = options.recorder.clone().unwrap_or_default();
    let progress = Progress::new(options.progress && leader).bar(last_step, method.name(), "steps");
    progress.set_position(state.step);
    let mut step = state.step;
    let mut losses = Vec::new();
    let mut last_checkpoint = resume_from.map(|checkpoint| checkpoint.path().to_path_buf());
    let started = Instant::now();
    let mut images_done = 0u64;
    let mut waited = loader.stats().waited;
    // The loader reports to the `metrics` crate; a Prometheus endpoint reads the same recorder.
    let guard = metrics::set_default_local_recorder(&recorder);
    let outcome: Result<()> = (|| {
        while step < last_step {
            let step_started = Instant::now();
            let (mut micro_batches, mut images, mut epoch) = (Vec::new(), 0, 0);
            for _ in 0..accumulation {
                let batch = loader.next_blocking().expect("the loader streams until dropped")?;
                epoch = batch.epoch;
                images += batch.len();
                micro_batches.push(DeviceBatch::<B>::new(&batch, &mean, &std, device));
            }
            let settings = StepSettings {
                lr: schedule.lr_at(step),
                weight_decay: schedule.weight_decay_at(step),
                ema_momentum: schedule.ema_momentum_at(step),
                grad_clip: recipe.config().optim.grad_clip,
            };
            let outcome = optimizer_step_across(method, parts, &micro_batches, &settings, &mut *options.ranks.lock())?;
            let stats = match outcome {
                StepOutcome::Applied(updated, stats) => {
                    parts = *updated;
                    stats
                }
                StepOutcome::NonFinite(loss) => {
                    return Err(TrainError::NonFinite { step, loss, last_checkpoint: last_checkpoint.clone() });
                }
            };

            let seconds = step_started.elapsed().as_secs_f64();
            // Every rank trained on its share: the step moved the whole global batch.
            let images = images * world;
            let waited_now = loader.stats().waited;
            let row = [
                ("epoch", epoch as f64),
                ("loss", stats.loss),
                ("lr", settings.lr),
                ("weight_decay", settings.weight_decay),
                ("images_per_second", images as f64 / seconds),
                ("loader_wait_seconds", (waited_now - waited).as_secs_f64()),
                ("grad_norm", stats.grad_norm),
            ]
            .into_iter()
            .chain(settings.ema_momentum.map(|momentum| (EMA_MOMENTUM_COLUMN, momentum)))
            .chain(stats.method.iter().copied());
            let row: BTreeMap<String, f64> = row.map(|(name, value)| (name.to_string(), value)).collect();
            for (name, value) in &row {
                metrics::gauge!(name.clone()).set(*value);
            }
            table.push(step, &row);
            waited = waited_now;
            losses.push(stats.loss);
            images_done += images as u64;
            step += 1;
            progress.set_position(step);
            progress.set_message(format!("loss {:.4}  {:.1} img/s", stats.loss, images as f64 / seconds));

            // Asked to stop (SIGINT, SIGTERM): at this step boundary, with a checkpoint; every
            // rank stops when any was asked.
            let mut interrupted = options.stop.as_ref().is_some_and(|stop| stop.load(Ordering::SeqCst));
            if world > 1 {
                let mut asked = [f64::from(u8::from(interrupted))];
                options.ranks.lock().all_reduce_sum(&mut asked).map_err(TrainError::from)?;
                interrupted = asked[0] > 0.0;
            }
            if step.is_multiple_of(recipe.config().checkpoint.every_steps) || step == last_step || interrupted {
                // A finite loss can still leave overflowed weights behind: never save them.
                let found = crate::finite::non_finite(&parts.model)
                    .or_else(|| parts.target_encoder.as_ref().and_then(crate::finite::non_finite));
                if let Some(found) = found {
                    return Err(TrainError::NonFiniteParameters {
                        step,
                        found,
                        last_checkpoint: last_checkpoint.clone(),
                    });
                }
                let state = TrainState { step, loader: loader.position() };
                let checkpoint = if leader {
                    table.write_atomically(&folder.metrics())?;
                    checkpoint::save(folder, &parts, &state, recipe.config().checkpoint.keep)?
                } else {
                    folder.checkpoint_at(step)
                };
                let _ = writeln!(log, "step {step}: loss {:.6}, checkpoint {checkpoint}", stats.loss);
                last_checkpoint = Some(checkpoint.path().to_path_buf());
            }
            if interrupted && step < last_step {
                let checkpoint = last_checkpoint.clone().expect("written above");
                return Err(TrainError::Interrupted { step, run: folder.root().to_path_buf(), checkpoint });
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
        run_dir: folder.root().to_path_buf(),
        steps: step,
        last_loss: losses.last().copied(),
        losses,
        images_per_second: Some(images_done as f64 / elapsed.max(1e-9)),
        last_checkpoint: last_checkpoint.expect("a checkpoint is written at the last step"),
    })
}

/// The report of a run resumed after its last step: nothing to train.
fn finished(folder: &RunFolder, checkpoint: &CheckpointFolder, table: &MetricsTable, step: u64) -> TrainReport {
    TrainReport {
        run_dir: folder.root().to_path_buf(),
        steps: step,
        losses: Vec::new(),
        last_loss: table.column("loss").and_then(|losses| losses.last().copied()),
        images_per_second: None,
        last_checkpoint: checkpoint.path().to_path_buf(),
    }
}
