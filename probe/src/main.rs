//! `probe`: frozen-encoder evaluation of a trained run.
//!
//! ```text
//! probe features --run runs/demo-fashion [--encoder random] [--checkpoint step-N] [--layers 4]
//! probe linear   --run runs/demo-fashion [--encoder random] [--protocol NAME]… [--recipe seed]
//! probe knn      --run runs/demo-fashion [--k 20] [--temperature 0.07] [--knn-centre auto|on|off]
//! probe finetune --run runs/demo-fashion [--encoder random] [--finetune-epochs 3] [--recipe seed]
//! probe report   --run runs/demo-fashion
//! probe all      --run runs/demo-fashion [--require-pretrained-better]
//! probe figures  --run runs/demo-fashion   (masks, t-SNE, predictor retrieval, then the report page)
//! probe masks    --config configs/demo-fashion.toml --out runs/masks.png   (or --run R)
//! probe compare  --run runs/compare-fashion/ijepa --run runs/compare-fashion/mae --out runs/compare-fashion
//! probe sweep    --run runs/sweep/ijepa-ema99 [--run …] --table runs/sweep/sweep.parquet
//! probe reconstruct --run runs/compare-fashion/mae --out mae-reconstruction.png   (methods that predict pixels)
//! probe export   --run runs/demo-fashion [--encoder teacher|trained] [--checkpoint step-N] --out encoder.safetensors
//! probe all      --run runs/timm-ijepa --encoder-file model.safetensors --dataset datasets/stl10   (or an I-JEPA .pth.tar)
//! ```
//!
//! Commands that run an encoder take `--device auto|cpu|wgpu|cuda[:N]` (default `auto`);
//! `linear`, `knn`, `report` and `masks` read only Parquet and images and open no device.

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand};
use jepa_eval::evaluate::{
    EvaluateOptions, FinetuneOptions, FinetuneRecipe, Probe, run_finetune, run_probe, write_outcome,
};
use jepa_eval::features::{FeatureOptions, write_features};
use jepa_eval::finetune::FinetuneSettings;
use jepa_eval::interop;
use jepa_eval::knn::KnnSettings;
use jepa_eval::linear::LinearSettings;
use jepa_eval::seed::SeedSettings;
use jepa_report::compare::{CompareOptions, compare, markdown_table};
use jepa_report::pipeline::{Evaluation, draw_figures, evaluate_all};
use jepa_report::report::{Report, summary_table, write_report};
use jepa_report::sweep::sweep;
use jepa_trainer::EncoderRole;
use jepa_trainer::device::{DeviceRequest, OnDevice};
use jepa_trainer::interop::Hints;
use jepa_trainer::{EncoderKind, Run};

/// Tensors of a few hundred KiB are allocated and freed thousands of times a training step;
/// mimalloc reuses them where the system allocator returns fresh pages from the kernel.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Evaluate a trained run's frozen encoder: features, linear probe, kNN, report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where encoders run: `auto` (CUDA, else a wgpu GPU, else the CPU), `cpu`, `wgpu`, `cuda` or
    /// `cuda:N` (the probes themselves always run on the CPU)
    #[arg(long, global = true, default_value = "auto")]
    device: DeviceRequest,
}

#[derive(Args)]
struct RunArgs {
    /// The run folder, e.g. runs/demo-fashion
    #[arg(long)]
    run: PathBuf,
    /// Dataset root, when it is not where the run's config says
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// No progress bars or timings
    #[arg(long)]
    quiet: bool,
}

/// Which run, encoder and protocols a probe evaluates.
#[derive(Args)]
struct ProbeArgs {
    #[command(flatten)]
    run: RunArgs,
    #[arg(long, value_enum, default_value_t = EncoderKind::Pretrained)]
    encoder: EncoderKind,
    /// Protocols to run (default: all the dataset supports; fine-tuning: those with one train set)
    #[arg(long = "protocol")]
    protocols: Vec<String>,
}

#[derive(Args)]
struct FeatureArgs {
    /// Checkpoint: `step-00000937`, a step number or a path (default: the latest)
    #[arg(long)]
    checkpoint: Option<String>,
    /// Concatenate the average-pooled outputs of the last N blocks
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Images per forward pass (64 was fastest on 2 CPU cores; raise it on a GPU)
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Batches encoded in parallel, one per thread (default: one per core on the CPU, 1 on a GPU)
    #[arg(long)]
    threads: Option<usize>,
}

/// An encoder from a file instead of a trained run: `--run` is then the folder its
/// evaluation goes to (created, or replaced if it holds an earlier import).
#[derive(Args)]
struct ImportArgs {
    /// safetensors in timm's VisionTransformer layout, or a PyTorch checkpoint (official
    /// I-JEPA `.pth.tar`: its `target_encoder`; or a plain state dict in timm's layout)
    #[arg(long)]
    encoder_file: Option<PathBuf>,
    /// Attention heads, when the file does not say (default for widths 192/384/768/1024/1280: 3/6/12/16/16)
    #[arg(long)]
    heads: Option<usize>,
    /// Per-channel pixel mean in [0, 1], when the file does not say (default for RGB: ImageNet's)
    #[arg(long, value_delimiter = ',')]
    pixel_mean: Option<Vec<f32>>,
    /// Per-channel pixel std in [0, 1]
    #[arg(long, value_delimiter = ',')]
    pixel_std: Option<Vec<f32>>,
    /// The entry of a PyTorch checkpoint that holds the encoder (default: `target_encoder` if present)
    #[arg(long)]
    state_key: Option<String>,
    /// The method the report names (default: the file's metadata, else ijepa)
    #[arg(long)]
    method: Option<String>,
}

impl ImportArgs {
    /// The run folder `--run` names: imported from `--encoder-file` first when given.
    fn open<B: AutodiffBackend>(&self, args: &RunArgs, device: &B::Device) -> anyhow::Result<Run> {
        let Some(file) = &self.encoder_file else { return open(args) };
        let hints = Hints {
            heads: self.heads,
            pixel_mean: self.pixel_mean.clone(),
            pixel_std: self.pixel_std.clone(),
            state_key: self.state_key.clone(),
            method: self.method.clone(),
        };
        let run = interop::import::<B>(&args.run, file, args.dataset.as_deref(), &hints, device)?;
        if !args.quiet {
            eprintln!("imported {} into {}", file.display(), run.folder.root().display());
        }
        Ok(run)
    }
}

/// Features, protocols and both frozen probes: what `probe all` and `probe compare` run.
#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    features: FeatureArgs,
    /// Protocols to run (default: all the dataset supports)
    #[arg(long = "protocol")]
    protocols: Vec<String>,
    #[command(flatten)]
    linear: LinearArgs,
    #[command(flatten)]
    knn: KnnArgs,
}

impl EvaluateArgs {
    fn options(&self, quiet: bool, on_cpu: bool) -> EvaluateOptions {
        EvaluateOptions {
            features: self.features.options(quiet, on_cpu),
            linear: self.linear.settings(),
            knn: self.knn.settings(),
            protocols: self.protocols.clone(),
        }
    }
}

#[derive(Args)]
struct LinearArgs {
    /// Learning rates to try on the validation part of train
    #[arg(long, value_delimiter = ',', default_values_t = LinearSettings::default().learning_rates)]
    learning_rates: Vec<f64>,
    /// Weight decays to try
    #[arg(long, value_delimiter = ',', default_values_t = LinearSettings::default().weight_decays)]
    weight_decays: Vec<f64>,
    #[arg(long, default_value_t = LinearSettings::default().epochs)]
    epochs: usize,
    /// Share of train held back for the choice
    #[arg(long, default_value_t = LinearSettings::default().validation_fraction)]
    validation_fraction: f64,
    /// Steps the grid may grow past an edge the best pair sits on (0: a fixed grid)
    #[arg(long, default_value_t = LinearSettings::default().max_widenings)]
    max_widenings: usize,
}

impl LinearArgs {
    fn settings(&self) -> LinearSettings {
        LinearSettings {
            learning_rates: self.learning_rates.clone(),
            weight_decays: self.weight_decays.clone(),
            epochs: self.epochs,
            validation_fraction: self.validation_fraction,
            max_widenings: self.max_widenings,
            ..LinearSettings::default()
        }
    }
}

/// Whose evaluation recipe a probe follows.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Recipe {
    Ours,
    Seed,
}

#[derive(Args)]
struct SeedArgs {
    /// Epochs of the seed's recipe: 15 (its results table) or 50 (its hyper-parameter table)
    #[arg(long, default_value_t = SeedSettings::default().epochs)]
    seed_epochs: usize,
    /// Images per forward pass of the seed's fine-tuning (its batch of 256 is this many at a time)
    #[arg(long, default_value_t = SeedSettings::default().micro_batch)]
    seed_micro_batch: usize,
}

impl SeedArgs {
    fn settings(&self) -> SeedSettings {
        SeedSettings { epochs: self.seed_epochs, micro_batch: self.seed_micro_batch, ..SeedSettings::default() }
    }
}

#[derive(Args)]
struct KnnArgs {
    #[arg(long, default_value_t = KnnSettings::default().k)]
    k: usize,
    #[arg(long, default_value_t = KnnSettings::default().temperature)]
    temperature: f32,
    /// Centre features on the train mean before the cosine; `auto` chooses on the
    /// validation part of train
    #[arg(long, value_enum, default_value_t = Centre::Auto)]
    knn_centre: Centre,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Centre {
    Auto,
    On,
    Off,
}

impl KnnArgs {
    fn settings(&self) -> KnnSettings {
        let centre = match self.knn_centre {
            Centre::Auto => None,
            Centre::On => Some(true),
            Centre::Off => Some(false),
        };
        KnnSettings { k: self.k, temperature: self.temperature, centre, ..KnnSettings::default() }
    }
}

#[derive(Args)]
struct FinetuneArgs {
    /// Peak learning rates to try, each for up to --epochs
    #[arg(long = "finetune-learning-rates", value_delimiter = ',', default_values_t = FinetuneSettings::default().learning_rates)]
    finetune_learning_rates: Vec<f64>,
    /// The most epochs; the best epoch on the validation part is kept
    #[arg(long = "finetune-epochs", default_value_t = FinetuneSettings::default().epochs)]
    finetune_epochs: usize,
    /// Fine-tune on this many train images, drawn at random (default: all)
    #[arg(long = "finetune-train-images")]
    finetune_train_images: Option<usize>,
    #[arg(long = "finetune-batch-size", default_value_t = FinetuneSettings::default().batch_size)]
    finetune_batch_size: usize,
    #[arg(long = "finetune-weight-decay", default_value_t = FinetuneSettings::default().weight_decay)]
    finetune_weight_decay: f64,
    /// The head's learning rate over the encoder's
    #[arg(long = "finetune-head-lr-scale", default_value_t = FinetuneSettings::default().head_lr_scale)]
    finetune_head_lr_scale: f64,
}

impl FinetuneArgs {
    fn settings(&self) -> FinetuneSettings {
        FinetuneSettings {
            learning_rates: self.finetune_learning_rates.clone(),
            epochs: self.finetune_epochs,
            train_images: self.finetune_train_images,
            batch_size: self.finetune_batch_size,
            weight_decay: self.finetune_weight_decay,
            head_lr_scale: self.finetune_head_lr_scale,
            ..FinetuneSettings::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Average-pooled features of the train and test splits → <run>/features[-random]/<split>.parquet
    Features {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, value_enum, default_value_t = EncoderKind::Pretrained)]
        encoder: EncoderKind,
        #[command(flatten)]
        features: FeatureArgs,
        #[command(flatten)]
        import: ImportArgs,
    },
    /// Linear probe on frozen features → <run>/probe/predictions/<encoder>-linear[-seed].parquet
    Linear {
        #[command(flatten)]
        probe: ProbeArgs,
        /// `ours` (standardised features, learning rate and weight decay chosen on a validation
        /// part of train) or `seed` (the seed's published settings, nothing chosen)
        #[arg(long, value_enum, default_value_t = Recipe::Ours)]
        recipe: Recipe,
        #[command(flatten)]
        linear: LinearArgs,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Weighted cosine kNN → <run>/probe/predictions/<encoder>-knn.parquet
    Knn {
        #[command(flatten)]
        probe: ProbeArgs,
        #[command(flatten)]
        knn: KnnArgs,
    },
    /// Fine-tune the whole encoder with a linear head → <run>/probe/predictions/<encoder>-finetune[-seed].parquet
    Finetune {
        #[command(flatten)]
        probe: ProbeArgs,
        /// Checkpoint: `step-00000937`, a step number or a path (default: the latest)
        #[arg(long)]
        checkpoint: Option<String>,
        /// `ours` (learning rate and epochs chosen on a validation part of train) or `seed`
        /// (the seed's published settings: 15 epochs, nothing chosen)
        #[arg(long, value_enum, default_value_t = Recipe::Ours)]
        recipe: Recipe,
        #[command(flatten)]
        finetune: FinetuneArgs,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Compare runs of different methods (same encoder, data and budget) with linear, kNN and fine-tune
    Compare {
        /// A run folder; repeat for each method
        #[arg(long = "run", required = true)]
        runs: Vec<PathBuf>,
        /// Where summary.parquet, summary.png and compare.md go
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        evaluate: EvaluateArgs,
        #[command(flatten)]
        finetune: FinetuneArgs,
    },
    /// Score trained runs for the recipe sweep: features, linear probe and kNN of each, one row per
    /// run and encoder appended to a Parquet table; prints each method's best recipe by validation accuracy
    Sweep {
        /// A trained run folder; repeatable
        #[arg(long = "run", required = true)]
        runs: Vec<PathBuf>,
        /// The sweep table (created if missing; a run's earlier row is replaced)
        #[arg(long)]
        table: PathBuf,
        /// Encoders to score (each method's evaluated encoder when not given)
        #[arg(long = "encoder", value_enum)]
        encoders: Vec<EncoderKind>,
        /// Leave out a run and encoder the table already has a row for
        #[arg(long)]
        skip_scored: bool,
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        evaluate: EvaluateArgs,
    },
    /// A pixel-predicting method's figure: original, context and reconstruction of a few test images (PNG)
    Reconstruct {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long)]
        checkpoint: Option<String>,
        #[arg(long, default_value_t = 6)]
        images: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// A trained encoder as safetensors in timm's VisionTransformer layout, geometry and pixel statistics in its metadata
    Export {
        #[command(flatten)]
        run: RunArgs,
        /// Which encoder (default: the one the method evaluates: I-JEPA's target, MAE's encoder)
        #[arg(long, value_enum)]
        encoder: Option<EncoderRole>,
        /// Checkpoint: `step-00000937`, a step number or a path (default: the latest)
        #[arg(long)]
        checkpoint: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// The run's masks over test images, as its sampler draws them (needs only a config and the dataset)
    Masks {
        /// A run folder (the figure goes to <run>/probe/masks.png unless --out says otherwise)
        #[arg(long, conflicts_with = "config", required_unless_present = "config")]
        run: Option<PathBuf>,
        /// A run config, e.g. configs/demo-fashion.toml (needs --out)
        #[arg(long, requires = "out")]
        config: Option<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = jepa_report::mask_figure::MASK_IMAGES)]
        images: usize,
    },
    /// The seed's STL-10 table beside a reproduction's (`make reproduce-seed`, after its probes)
    SeedTable {
        /// The run of configs/stl10-seed.toml
        #[arg(long)]
        ijepa: PathBuf,
        /// The run of configs/stl10-mae-seed.toml
        #[arg(long)]
        mae: PathBuf,
        /// `stage<TAB>seconds` lines to show beside it
        #[arg(long)]
        times: Option<PathBuf>,
        /// Also write the table here (Markdown)
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Masks, t-SNE and predictor-retrieval figures of a probed run, then its report page
    Figures {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Scores, confusion matrices, report.md / report.html and plots from every prediction file
    Report {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Features for the pretrained and random-init encoders, both probes, and the report
    All {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        evaluate: EvaluateArgs,
        /// Fail unless the pretrained encoder's linear-probe accuracy beats the random-init one's
        #[arg(long)]
        require_pretrained_better: bool,
        #[command(flatten)]
        import: ImportArgs,
    },
}

fn open(args: &RunArgs) -> anyhow::Result<Run> {
    let mut run = open_root(&args.run)?;
    if let Some(dataset) = &args.dataset {
        run.recipe.set_dataset(dataset);
    }
    Ok(run)
}

/// Batches encoded at once: one per core on the CPU; one on a GPU, which runs a batch alone.
fn default_threads(on_cpu: bool) -> usize {
    if on_cpu { FeatureOptions::default().threads } else { 1 }
}

impl FeatureArgs {
    fn options(&self, quiet: bool, on_cpu: bool) -> FeatureOptions {
        FeatureOptions {
            checkpoint: self.checkpoint.clone(),
            layers: self.layers,
            batch_size: self.batch_size,
            threads: self.threads.unwrap_or(default_threads(on_cpu)),
            progress: !quiet,
        }
    }
}

/// Option checks, run before any work: each names its option and the range it takes.
fn at_least_one(option: &str, value: usize) -> anyhow::Result<()> {
    if value == 0 {
        bail!("{option} is 0, expected at least 1");
    }
    Ok(())
}

fn positive(option: &str, value: f64) -> anyhow::Result<()> {
    if !(value.is_finite() && value > 0.0) {
        bail!("{option} is {value}, expected a finite value > 0");
    }
    Ok(())
}

fn non_negative(option: &str, value: f64) -> anyhow::Result<()> {
    if !(value.is_finite() && value >= 0.0) {
        bail!("{option} is {value}, expected a finite value ≥ 0");
    }
    Ok(())
}

fn each(option: &str, values: &[f64], check: fn(&str, f64) -> anyhow::Result<()>) -> anyhow::Result<()> {
    if values.is_empty() {
        bail!("{option} is empty, expected at least one value");
    }
    values.iter().try_for_each(|&value| check(option, value))
}

impl FeatureArgs {
    fn check(&self) -> anyhow::Result<()> {
        at_least_one("--layers", self.layers)?;
        at_least_one("--batch-size", self.batch_size)?;
        self.threads.map_or(Ok(()), |threads| at_least_one("--threads", threads))
    }
}

impl LinearArgs {
    fn check(&self) -> anyhow::Result<()> {
        each("--learning-rates", &self.learning_rates, positive)?;
        each("--weight-decays", &self.weight_decays, non_negative)?;
        at_least_one("--epochs", self.epochs)?;
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            bail!(
                "--validation-fraction is {}, expected a share of train strictly between 0 and 1",
                self.validation_fraction
            );
        }
        Ok(())
    }
}

impl KnnArgs {
    fn check(&self) -> anyhow::Result<()> {
        at_least_one("--k", self.k)?;
        positive("--temperature", f64::from(self.temperature))
    }
}

impl SeedArgs {
    fn check(&self) -> anyhow::Result<()> {
        at_least_one("--seed-epochs", self.seed_epochs)?;
        at_least_one("--seed-micro-batch", self.seed_micro_batch)
    }
}

impl FinetuneArgs {
    fn check(&self) -> anyhow::Result<()> {
        each("--finetune-learning-rates", &self.finetune_learning_rates, non_negative)?;
        at_least_one("--finetune-epochs", self.finetune_epochs)?;
        at_least_one("--finetune-batch-size", self.finetune_batch_size)?;
        if let Some(images) = self.finetune_train_images {
            at_least_one("--finetune-train-images", images)?;
        }
        non_negative("--finetune-weight-decay", self.finetune_weight_decay)?;
        positive("--finetune-head-lr-scale", self.finetune_head_lr_scale)
    }
}

impl EvaluateArgs {
    fn check(&self) -> anyhow::Result<()> {
        self.features.check()?;
        self.linear.check()?;
        self.knn.check()
    }
}

/// Protocol names against the dataset the run reads (or `--dataset`), before any work; a
/// run that does not exist yet (an import) is checked when it is made.
fn check_protocols(run: &RunArgs, protocols: &[String]) -> anyhow::Result<()> {
    if protocols.is_empty() {
        return Ok(());
    }
    let dataset = match (&run.dataset, Run::open(&run.run)) {
        (Some(dataset), _) => dataset.clone(),
        (None, Ok(opened)) => opened.recipe.dataset().to_path_buf(),
        (None, Err(_)) => return Ok(()),
    };
    let Some(manifest) = jepa_shared::Manifest::read(&dataset)? else { return Ok(()) };
    for name in protocols {
        jepa_eval::protocol::named(&manifest, name)?;
    }
    Ok(())
}

impl Command {
    /// Every option of the command checked, before a file is read or written.
    fn check(&self) -> anyhow::Result<()> {
        match self {
            Command::Features { features, .. } => features.check(),
            Command::Linear { probe, linear, seed, .. } => {
                linear.check()?;
                seed.check()?;
                check_protocols(&probe.run, &probe.protocols)
            }
            Command::Knn { probe, knn } => {
                knn.check()?;
                check_protocols(&probe.run, &probe.protocols)
            }
            Command::Finetune { probe, finetune, seed, .. } => {
                finetune.check()?;
                seed.check()?;
                check_protocols(&probe.run, &probe.protocols)
            }
            Command::Compare { runs, evaluate, finetune, .. } => {
                evaluate.check()?;
                finetune.check()?;
                for run in runs {
                    let args = RunArgs { run: run.clone(), dataset: None, quiet: true };
                    check_protocols(&args, &evaluate.protocols)?;
                }
                Ok(())
            }
            Command::Sweep { runs, evaluate, .. } => {
                evaluate.check()?;
                for run in runs {
                    let args = RunArgs { run: run.clone(), dataset: None, quiet: true };
                    check_protocols(&args, &evaluate.protocols)?;
                }
                Ok(())
            }
            Command::All { run, evaluate, .. } => {
                evaluate.check()?;
                check_protocols(run, &evaluate.protocols)
            }
            Command::Reconstruct { images, .. } | Command::Masks { images, .. } => at_least_one("--images", *images),
            Command::Export { .. } | Command::SeedTable { .. } | Command::Figures { .. } | Command::Report { .. } => {
                Ok(())
            }
        }
    }
}

/// Opens a run folder, with a note for every field its config holds in an older place.
fn open_root(root: &std::path::Path) -> anyhow::Result<Run> {
    let mut run = Run::open(root)?;
    // One checkpoint for the whole command, held against pruning, even while the run trains.
    run.pin_latest()?;
    for note in run.recipe.notes() {
        eprintln!("note: {}: {note}", run.folder.config().display());
    }
    Ok(run)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.command.check()?;
    match cli.command {
        Command::Linear { probe: args, recipe, linear, seed } => {
            let settings = match recipe {
                Recipe::Ours => Probe::Linear(linear.settings()),
                Recipe::Seed => Probe::SeedLinear(seed.settings()),
            };
            probe(&args, &settings)
        }
        Command::Knn { probe: args, knn } => probe(&args, &Probe::Knn(knn.settings())),
        Command::Report { run: args } => {
            print_report(&write_report(&open(&args)?)?);
            Ok(())
        }
        Command::Masks { run, config, out, images } => draw_masks(run, config, out, images),
        Command::SeedTable { ijepa, mae, times, out } => {
            let times = times.map(|path| jepa_report::reproduce::read_times(&path)).transpose()?.unwrap_or_default();
            let table = jepa_report::reproduce::table(&open_root(&ijepa)?, &open_root(&mae)?, &times)?;
            print!("{table}");
            if let Some(out) = out {
                jepa_shared::atomic::write_bytes(&out, table.as_bytes())?;
            }
            Ok(())
        }
        command => {
            let choice = jepa_trainer::device::choose(cli.device, "probe")?;
            eprintln!("device: {choice}");
            choice.run(WithEncoders { command, on_cpu: choice.is_cpu() })
        }
    }
}

/// A command that runs encoders, generic over the backend of the device they run on.
struct WithEncoders {
    command: Command,
    on_cpu: bool,
}

impl OnDevice for WithEncoders {
    type Output = anyhow::Result<()>;

    fn run<B: AutodiffBackend>(self, device: &B::Device) -> anyhow::Result<()> {
        let on_cpu = self.on_cpu;
        match self.command {
            Command::Features { run: args, encoder, features, import } => {
                let run = import.open::<B>(&args, device)?;
                for path in write_features::<B>(&run, encoder, &features.options(args.quiet, on_cpu), device)? {
                    println!("{}", path.display());
                }
            }
            Command::Finetune { probe: args, checkpoint, recipe, finetune, seed } => {
                let run = open(&args.run)?;
                let options = FinetuneOptions {
                    checkpoint,
                    protocols: args.protocols,
                    threads: default_threads(on_cpu),
                    progress: !args.run.quiet,
                };
                let recipe = match recipe {
                    Recipe::Ours => FinetuneRecipe::Ours(finetune.settings()),
                    Recipe::Seed => FinetuneRecipe::Seed(seed.settings()),
                };
                for (task, predictions, selection) in run_finetune::<B>(&run, args.encoder, &recipe, &options, device)?
                {
                    let accuracy = 100.0 * predictions.accuracy();
                    let (encoder, probe, protocol) = (&task.encoder, &task.probe, &task.protocol);
                    match selection {
                        Some(selection) => {
                            let chosen = selection.chosen();
                            println!(
                                "{encoder} {probe} {protocol}: accuracy {accuracy:.2}% (lr {:e}, {} epoch(s), \
                                 validation {:.2}%)",
                                chosen.learning_rate,
                                chosen.epochs,
                                100.0 * chosen.validation_accuracy
                            )
                        }
                        None => println!("{encoder} {probe} {protocol}: accuracy {accuracy:.2}%"),
                    }
                }
            }
            Command::Compare { runs, out, quiet, evaluate, finetune } => {
                let runs: Vec<Run> = runs.iter().map(|root| open_root(root)).collect::<Result<_, _>>()?;
                let options =
                    CompareOptions { evaluate: evaluate.options(quiet, on_cpu), finetune: finetune.settings() };
                let comparison = compare::<B>(&runs, &out, &options, device)?;
                println!("{}", markdown_table(&comparison.rows));
                println!("summary: {}\nchart: {}", comparison.summary.display(), comparison.chart.display());
            }
            Command::Sweep { runs, table, encoders, skip_scored, quiet, evaluate } => {
                let runs: Vec<Run> = runs.iter().map(|root| open_root(root)).collect::<Result<_, _>>()?;
                let encoders = if encoders.is_empty() { vec![EncoderKind::Pretrained] } else { encoders };
                let options = evaluate.options(quiet, on_cpu);
                sweep::<B>(&runs, &encoders, &table, skip_scored, &options, device, |line| println!("{line}"))?;
            }
            Command::Reconstruct { run: args, checkpoint, images, out } => {
                let run = open(&args)?;
                jepa_report::reconstruction::draw::<B>(&run, checkpoint.as_deref(), images, &out, device)?;
                println!("{}", out.display());
            }
            Command::Export { run: args, encoder, checkpoint, out } => {
                let run = open(&args)?;
                let exported = interop::export::<B>(&run, encoder, checkpoint.as_deref(), &out, device)?;
                println!("{}", exported.path.display());
                if !args.quiet {
                    eprintln!(
                        "exported the {} encoder of {} ({})",
                        exported.role,
                        run.folder.root().display(),
                        exported.source
                    );
                }
            }
            Command::Figures { run: args } => {
                let evaluation = draw_figures::<B>(&open(&args)?, device)?;
                print_evaluation(&evaluation);
            }
            Command::All { run: args, evaluate, require_pretrained_better, import } => {
                let run = import.open::<B>(&args, device)?;
                let evaluation = evaluate_all::<B>(&run, &evaluate.options(args.quiet, on_cpu), device)?;
                print_evaluation(&evaluation);
                if require_pretrained_better {
                    evaluation.report.pretrained_beats_random()?;
                }
            }
            Command::Linear { .. }
            | Command::Knn { .. }
            | Command::Report { .. }
            | Command::Masks { .. }
            | Command::SeedTable { .. } => {
                unreachable!("run without a device by `main`")
            }
        }
        Ok(())
    }
}

fn draw_masks(
    run: Option<PathBuf>,
    config: Option<PathBuf>,
    out: Option<PathBuf>,
    images: usize,
) -> anyhow::Result<()> {
    let (recipe, default_out) = match (run, config) {
        (Some(root), _) => {
            let run = open_root(&root)?;
            let out = run.folder.report(jepa_trainer::ReportFile::Masks);
            (run.recipe, Some(out))
        }
        (None, Some(config)) => (jepa_trainer::Recipe::load(&config, &[])?, None),
        (None, None) => bail!("give --run or --config"),
    };
    let out = out.or(default_out).context("--out is needed with --config")?;
    jepa_report::mask_figure::draw(&recipe, images, &out)?;
    println!("{}", out.display());
    Ok(())
}

fn probe(args: &ProbeArgs, probe: &Probe) -> anyhow::Result<()> {
    let run = open(&args.run)?;
    let outcome = run_probe(&run, args.encoder, probe, &args.protocols)?;
    write_outcome(&run, args.encoder, probe, &outcome)?;
    for (task, predictions) in &outcome.evaluations {
        let fold = task.fold.map(|fold| format!(" fold {fold}")).unwrap_or_default();
        println!(
            "{} {} {}{fold}: accuracy {:.2}%",
            task.encoder,
            task.probe,
            task.protocol,
            100.0 * predictions.accuracy()
        );
    }
    Ok(())
}

fn print_report(report: &Report) {
    println!("{}", summary_table(&report.summary));
    if let Some(warning) = &report.mixed_checkpoints {
        eprintln!("warning: {warning}");
    }
    println!("report: {} (self-contained: {})", report.markdown.display(), report.html.display());
}

fn print_evaluation(evaluation: &Evaluation) {
    for figure in &evaluation.figures {
        println!("figure: {} in {:.1} s ({})", figure.path.display(), figure.seconds, figure.note);
    }
    print_report(&evaluation.report);
}
