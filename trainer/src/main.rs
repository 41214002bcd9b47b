//! `train`: pre-trains an encoder from a run config, with the method it names.
//!
//! ```text
//! train --config configs/demo-fashion.toml [--set key=value]…
//! train --resume runs/demo-fashion [--set optim.max_steps=…]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use jepa_shared::metrics_table::StepRecorder;
use jepa_trainer::Recipe;
use jepa_trainer::device::Train;
use jepa_trainer::training::{TrainOptions, train};

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
    /// Folder that holds one folder per run.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Also serve the metrics in Prometheus' text format on this address.
    #[arg(long, value_name = "ADDR")]
    prometheus: Option<SocketAddr>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (config_path, runs_root) = match &cli.resume {
        Some(run) => {
            let parent = run.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(".".as_ref());
            (jepa_trainer::RunFolder::new(run).config(), parent.to_path_buf())
        }
        None => (cli.config.clone().expect("clap requires --config without --resume"), cli.runs.clone()),
    };
    let recipe = Recipe::load(&config_path, &cli.overrides)?;
    for note in recipe.notes() {
        eprintln!("note: {}: {note}", config_path.display());
    }
    if let Some(run) = &cli.resume
        && run.file_name().is_some_and(|folder| folder != recipe.name())
    {
        bail!("{}: the run folder is not named after its config's name `{}`", run.display(), recipe.name());
    }
    jepa_trainer::device::check("train").map_err(anyhow::Error::msg)?;
    let recorder = StepRecorder::default();
    if let Some(address) = cli.prometheus {
        let bound = jepa_trainer::prometheus::serve(address, recorder.clone())
            .with_context(|| format!("serving Prometheus metrics on {address}"))?;
        eprintln!("metrics: http://{bound}/metrics");
    }
    let options =
        TrainOptions { runs_root, resume: cli.resume.is_some(), progress: !cli.quiet, recorder: Some(recorder) };
    let report = train::<Train>(recipe, &options, &Default::default())?;
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
