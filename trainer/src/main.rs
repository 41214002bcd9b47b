//! `train`: pre-trains an encoder from a run config, with the method it names.
//!
//! ```text
//! train --config configs/demo-fashion.toml [--set key=value]… [--device auto|cpu|wgpu|cuda[:N]]
//! train --resume runs/demo-fashion [--from step-N] [--set optim.max_steps=…]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use jepa_shared::metrics_table::StepRecorder;
use jepa_trainer::Recipe;
use jepa_trainer::collective::Ranks;
use jepa_trainer::device::{DeviceError, DeviceRequest, OnDevice};
use jepa_trainer::timing::duration;
use jepa_trainer::training::{TrainError, TrainOptions, TrainReport, train};

/// Tensors of a few hundred KiB are allocated and freed thousands of times a training step;
/// mimalloc reuses them where the system allocator returns fresh pages from the kernel.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Pre-train a ViT on jepa-stream shards, by I-JEPA or another registered method")]
struct Cli {
    /// Run config (TOML). Not needed with --resume, which reads the run's own config.
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Override one config field, e.g. `--set optim.lr_peak=5e-4`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the run in this folder from its latest checkpoint.
    #[arg(long, conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// With --resume: start from this checkpoint (`step-00000120` or a step number) instead of
    /// the latest, e.g. when the latest is damaged.
    #[arg(long, requires = "resume", value_name = "CHECKPOINT")]
    from: Option<String>,
    /// Folder that holds one folder per run.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Also serve the metrics in Prometheus' text format on this address.
    #[arg(long, value_name = "ADDR")]
    prometheus: Option<SocketAddr>,
    /// Where to train: `auto` (CUDA, else a wgpu GPU, else the CPU), `cpu`, `wgpu`, `cuda` or
    /// `cuda:N`.
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The exit status of a run stopped by a signal, as shells report one stopped by SIGINT.
const INTERRUPTED: i32 = 130;

/// Training, generic over the backend the device runs.
struct TrainCommand {
    recipe: Recipe,
    options: TrainOptions,
}

impl OnDevice for TrainCommand {
    type Output = Result<TrainReport, TrainError>;

    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        train::<B>(self.recipe, &self.options, device)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ranks = ranks(&cli.device)?;
    let leader = ranks.is_leader();
    let (config_path, runs_root) = match &cli.resume {
        Some(run) => {
            let parent = run.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(".".as_ref());
            (jepa_trainer::RunFolder::new(run).config(), parent.to_path_buf())
        }
        None => (cli.config.clone().expect("clap requires --config without --resume"), cli.runs.clone()),
    };
    let recipe = Recipe::load(&config_path, &cli.overrides)?;
    for note in recipe.notes().iter().filter(|_| leader) {
        eprintln!("note: {}: {note}", config_path.display());
    }
    for warning in recipe.warnings().iter().filter(|_| leader) {
        eprintln!("warning: {}: {warning}", config_path.display());
    }
    if let Some(run) = &cli.resume
        && run.file_name().is_some_and(|folder| folder != recipe.name())
    {
        bail!("{}: the run folder is not named after its config's name `{}`", run.display(), recipe.name());
    }
    let device = match cli.device {
        // One GPU per rank: rank r of a node takes the r-th GPU from the one asked for.
        DeviceRequest::Cuda(index) if ranks.world_size() > 1 => DeviceRequest::Cuda(index + local_rank()),
        device => device,
    };
    let choice = match jepa_trainer::device::choose(device, "train") {
        Ok(choice) => choice,
        Err(error) => bail!(with_cpu_estimate(error, &recipe)),
    };
    if ranks.world_size() > 1 {
        eprintln!("rank {} of {}: device {choice}", ranks.rank(), ranks.world_size());
    } else {
        eprintln!("device: {choice}");
    }
    let recorder = StepRecorder::default();
    if let Some(address) = cli.prometheus.filter(|_| leader) {
        let bound = jepa_trainer::prometheus::serve(address, recorder.clone())
            .with_context(|| format!("serving Prometheus metrics on {address}"))?;
        eprintln!("metrics: http://{bound}/metrics");
    }
    // Ctrl-C (or SIGTERM) stops at the next step boundary with a checkpoint; a second one
    // stops at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, INTERRUPTED, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let options = TrainOptions {
        runs_root,
        resume: cli.resume.is_some(),
        from: cli.from.clone(),
        progress: !cli.quiet,
        recorder: Some(recorder),
        stop: Some(stop),
        ranks,
    };
    let report = match choice.run(TrainCommand { recipe, options }) {
        Ok(report) => report,
        Err(error @ TrainError::Interrupted { .. }) => {
            eprintln!("{error}");
            std::process::exit(INTERRUPTED);
        }
        Err(error) => return Err(error.into()),
    };
    if !leader {
        return Ok(());
    }
    let last_loss = report.last_loss.map_or("none".into(), |loss| format!("{loss:.4}"));
    match report.images_per_second {
        Some(rate) => println!(
            "{}: {} steps, last loss {last_loss}, {rate:.1} images/s; checkpoint {}",
            report.run_dir.display(),
            report.steps,
            report.last_checkpoint.display()
        ),
        None => println!(
            "{}: already trained to step {} (last loss {last_loss}); nothing to do. Raise optim.max_steps or \
             optim.epochs with --set to train further; checkpoint {}",
            report.run_dir.display(),
            report.steps,
            report.last_checkpoint.display()
        ),
    }
    Ok(())
}

/// A device that is not there, and what the run would take on this machine's CPU instead,
/// measured now, so the choice to train anyway is an informed one.
fn with_cpu_estimate(error: DeviceError, recipe: &Recipe) -> String {
    let DeviceError::Unavailable { .. } = &error else {
        return error.to_string();
    };
    eprintln!("the device is not usable here; timing a step of {} on this machine's CPU…", recipe.name());
    let estimate = match jepa_trainer::timing::on_the_cpu(recipe) {
        Ok(estimate) => estimate,
        Err(problem) => return format!("{error} (and no CPU estimate: {problem})"),
    };
    let [small, large] = estimate.images_timed;
    // The problem is one clause (no driver) or whole sentences (what a first kernel lacks).
    let error = error.to_string();
    let (joint, on) = if error.ends_with('.') { (" ", "On") } else { ("; ", "on") };
    format!(
        "{error}{joint}{on} this machine's CPU one optimizer step of this config ({} images) takes about {} (steps \
         of {small} and {large} images timed), so its {} steps would take about {} there; to train anyway, pass \
         --device cpu or --device wgpu (`make train DEVICE=cpu` or `DEVICE=wgpu`).",
        estimate.images_per_step,
        duration(estimate.seconds_per_step),
        estimate.steps,
        duration(estimate.run_seconds()),
    )
}

/// This rank's index among the ranks on its node, as the launcher tells it.
fn local_rank() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
        .unwrap_or(0)
}

/// One process, unless this build has a collective engine and a launcher started several.
#[cfg(not(feature = "mpi"))]
fn ranks(_device: &DeviceRequest) -> anyhow::Result<Ranks> {
    #[cfg(feature = "nccl")]
    if std::env::var_os("WORLD_SIZE").is_some_and(|world| world != "1") {
        return Ok(Ranks::new(jepa_trainer::collective::Nccl::from_env()?));
    }
    Ok(Ranks::default())
}

/// The ranks `mpirun` or `srun` started (one process when started alone): over MPI on the
/// CPU, and over NCCL (met through MPI) when they train on CUDA GPUs in a build with it.
#[cfg(feature = "mpi")]
fn ranks(device: &DeviceRequest) -> anyhow::Result<Ranks> {
    use jepa_trainer::collective::{Collective, Mpi};
    let mpi = Mpi::init()?;
    if mpi.world_size() == 1 {
        return Ok(Ranks::default());
    }
    #[cfg(feature = "nccl")]
    if let DeviceRequest::Cuda(index) = device {
        return Ok(Ranks::new(jepa_trainer::collective::Nccl::over_mpi(mpi, index + local_rank())?));
    }
    let _ = device;
    Ok(Ranks::new(mpi))
}
