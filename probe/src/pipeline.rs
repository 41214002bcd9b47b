//! The probe's commands as library calls: features for an encoder, and the whole
//! evaluation (features for both encoders → linear → kNN → report) that `probe all`
//! and `make demo` run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::Backend;
use jepa_shared::Dataset;

use crate::encoder;
use crate::error::{ProbeError, Result};
use crate::evaluate::{Probe, run_probe, write_outcome};
use crate::features::{ExtractSettings, extract};
use crate::knn::KnnSettings;
use crate::linear::LinearSettings;
use crate::protocol::{TEST_SPLIT, TRAIN_SPLIT};
use crate::report::{Report, write_report};
use crate::run::{EncoderKind, RunFolder};

#[derive(Debug, Clone)]
pub struct FeatureOptions {
    /// A checkpoint of the run (`step-N`, `N` or a path); the latest when `None`.
    pub checkpoint: Option<String>,
    /// Concatenate the average-pooled outputs of the last `layers` blocks.
    pub layers: usize,
    pub batch_size: usize,
    /// Batches encoded in parallel (CPU); 1 on a GPU is enough.
    pub threads: usize,
    pub progress: bool,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { checkpoint: None, layers: 1, batch_size: 64, threads, progress: true }
    }
}

/// Writes `features[-random]/{train,test}.parquet` for `encoder`; returns the files.
pub fn write_features<B: Backend>(
    run: &RunFolder,
    encoder_kind: EncoderKind,
    options: &FeatureOptions,
    device: &B::Device,
) -> Result<Vec<PathBuf>> {
    let vit = run.config.vit()?;
    if options.layers == 0 || options.layers > vit.depth {
        return Err(ProbeError::bad(
            &run.root,
            format!("--layers {} is not in 1..={} (the encoder's depth)", options.layers, vit.depth),
        ));
    }
    let (model, source) = match encoder_kind {
        EncoderKind::Pretrained => {
            let checkpoint = run.checkpoint(options.checkpoint.as_deref())?;
            (encoder::pretrained::<B>(run, &checkpoint, device)?, checkpoint.display().to_string())
        }
        EncoderKind::Random => (encoder::random_init::<B>(run, device)?, format!("init (seed {})", run.config.seed)),
    };
    let (pixel_mean, pixel_std) = run.pixel_stats()?;
    let settings = ExtractSettings {
        image_size_px: vit.image_size_px,
        channels: vit.channels,
        pixel_mean,
        pixel_std,
        layers: options.layers,
        batch_size: options.batch_size.max(1),
        threads: options.threads.max(1),
    };
    let dataset = Dataset::open(&run.config.dataset)?;
    let metadata: HashMap<String, String> = [
        ("encoder".to_string(), encoder_kind.as_str().to_string()),
        ("checkpoint".to_string(), source),
        ("layers".to_string(), options.layers.to_string()),
        ("run".to_string(), run.config.name.clone()),
    ]
    .into();
    let mut written = Vec::new();
    for split in [TRAIN_SPLIT, TEST_SPLIT] {
        let count = dataset.split(split)?.count;
        let bar = if options.progress { indicatif::ProgressBar::new(count) } else { indicatif::ProgressBar::hidden() };
        bar.set_message(format!("{encoder_kind} {split}"));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} images, ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        let table = extract(&model, &dataset, split, &settings, device, &|images| bar.inc(images as u64))?;
        bar.finish_and_clear();
        let path = run.features_path(encoder_kind, split);
        table.write(&path, &metadata)?;
        written.push(path);
    }
    Ok(written)
}

#[derive(Debug, Clone, Default)]
pub struct EvaluateOptions {
    pub features: FeatureOptions,
    pub linear: LinearSettings,
    pub knn: KnnSettings,
    /// Protocol names; all the dataset supports when empty.
    pub protocols: Vec<String>,
}

/// Features for both encoders, linear probe and kNN on each, then the report.
pub fn evaluate_all<B: Backend>(run: &RunFolder, options: &EvaluateOptions, device: &B::Device) -> Result<Report> {
    for encoder_kind in EncoderKind::ALL {
        evaluate_encoder::<B>(run, encoder_kind, options, device)?;
    }
    write_report(run)
}

/// Features for one encoder, then the linear probe and kNN on them.
pub fn evaluate_encoder<B: Backend>(
    run: &RunFolder,
    encoder_kind: EncoderKind,
    options: &EvaluateOptions,
    device: &B::Device,
) -> Result<()> {
    let started = Instant::now();
    write_features::<B>(run, encoder_kind, &options.features, device)?;
    log(options, format!("features ({encoder_kind}): {:.1} s", started.elapsed().as_secs_f64()));
    for probe in [Probe::Linear(options.linear.clone()), Probe::Knn(options.knn)] {
        let started = Instant::now();
        let outcome = run_probe(run, encoder_kind, &probe, &options.protocols)?;
        write_outcome(run, encoder_kind, &probe, &outcome)?;
        log(options, format!("{} probe ({encoder_kind}): {:.1} s", probe.name(), started.elapsed().as_secs_f64()));
    }
    Ok(())
}

fn log(options: &EvaluateOptions, line: String) {
    if options.features.progress {
        eprintln!("{line}");
    }
}
