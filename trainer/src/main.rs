//! `train`: pre-trains an I-JEPA encoder from a run config.
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
use jepa_trainer::config::RunConfig;
use jepa_trainer::training::{TrainOptions, train};

#[cfg(feature = "cuda")]
type Device = burn::backend::Cuda<f32>;
#[cfg(not(feature = "cuda"))]
type Device = burn::backend::NdArray<f32>;
type Backend = burn::backend::Autodiff<Device>;

#[derive(Parser)]
#[command(about = "Pre-train an I-JEPA ViT on jepa-stream shards")]
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
            (run.join("config.toml"), parent.to_path_buf())
        }
        None => (cli.config.clone().expect("clap requires --config without --resume"), cli.runs.clone()),
    };
    let config = RunConfig::load(&config_path, &cli.overrides)?;
    if let Some(run) = &cli.resume
        && run.file_name().is_some_and(|folder| folder != config.name.as_str())
    {
        bail!("{}: the run folder is not named after its config's name `{}`", run.display(), config.name);
    }
    check_device()?;
    let recorder = StepRecorder::default();
    if let Some(address) = cli.prometheus {
        let bound = jepa_trainer::prometheus::serve(address, recorder.clone())
            .with_context(|| format!("serving Prometheus metrics on {address}"))?;
        eprintln!("metrics: http://{bound}/metrics");
    }
    let options =
        TrainOptions { runs_root, resume: cli.resume.is_some(), progress: !cli.quiet, recorder: Some(recorder) };
    let report = train::<Backend>(config, &options, &Default::default())?;
    println!(
        "{}: {} steps, last loss {:.4}, {:.1} images/s; checkpoint {}",
        report.run_dir.display(),
        report.steps,
        report.losses.last().copied().unwrap_or(f64::NAN),
        report.images_per_second,
        report.last_checkpoint.display()
    );
    Ok(())
}

/// burn-cuda loads the driver at the first tensor and panics without one: look first.
#[cfg(feature = "cuda")]
fn check_device() -> anyhow::Result<()> {
    jepa_trainer::cuda::check_driver("train").map_err(anyhow::Error::msg)
}

#[cfg(not(feature = "cuda"))]
fn check_device() -> anyhow::Result<()> {
    Ok(())
}
