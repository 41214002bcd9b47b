//! Runs a probe over every task of a dataset's protocols and writes its predictions:
//! `runs/<name>/probe/predictions/<encoder>-<probe>.parquet`, and for the linear probe the
//! hyper-parameter search, `runs/<name>/probe/selection/<encoder>.parquet`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use jepa_shared::{Dataset, Manifest};
use polars::prelude::*;

use crate::error::{ProbeError, Result};
use crate::features::{FeatureTable, LabelledImages, write_atomically};
use crate::finetune::{self, FinetuneSelection, FinetuneSettings, HeldOutImages, ImageInput};
use crate::heldout::{Classifier, HeldOut, Predictions};
use crate::knn::{Knn, KnnSettings};
use crate::linear::{self, LinearSettings, Selection};
use crate::protocol::{self, TEST_SPLIT, TRAIN_SPLIT, Task};
use crate::run::{EncoderKind, RunFolder};
use crate::scores::{TaskLabel, predictions_frame};

/// Which probe, with its settings.
#[derive(Debug, Clone)]
pub enum Probe {
    Linear(LinearSettings),
    Knn(KnnSettings),
}

impl Probe {
    pub fn name(&self) -> &'static str {
        match self {
            Probe::Linear(_) => "linear",
            Probe::Knn(_) => "knn",
        }
    }
}

/// What one probe produced for one encoder.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub evaluations: Vec<(TaskLabel, Predictions)>,
    /// The linear probe's search, per task.
    pub selections: Vec<(TaskLabel, Selection)>,
}

pub fn manifest(run: &RunFolder) -> Result<Manifest> {
    let root = &run.config.dataset;
    Manifest::read(root)?.ok_or_else(|| ProbeError::bad(root, "has no manifest.json: ingest the dataset first"))
}

/// The number of classes: the dataset's class names, or one past the largest train label.
fn num_classes(manifest: &Manifest, train: &FeatureTable) -> usize {
    manifest.class_names.len().max(train.num_classes())
}

/// Fits `probe` on each task's train features and evaluates it once on the test features.
/// `protocols` limits the protocols (all the dataset supports when empty).
pub fn run_probe(run: &RunFolder, encoder: EncoderKind, probe: &Probe, protocols: &[String]) -> Result<ProbeOutcome> {
    let manifest = manifest(run)?;
    let mut all = protocol::protocols(&manifest)?;
    if !protocols.is_empty() {
        all = protocols.iter().map(|name| protocol::named(&manifest, name)).collect::<Result<_>>()?;
    }
    let train_path = run.features_path(encoder, TRAIN_SPLIT);
    let train = FeatureTable::read(&train_path).map_err(|error| missing_features(error, &train_path))?;
    let test_path = run.features_path(encoder, TEST_SPLIT);
    if !test_path.exists() {
        return Err(ProbeError::bad(&test_path, "missing: run `probe features` first"));
    }
    let held_out = HeldOut::new(test_path);
    let classes = num_classes(&manifest, &train);

    let mut outcome = ProbeOutcome { evaluations: Vec::new(), selections: Vec::new() };
    for task in all.iter().flatten() {
        let task_train = select_task(&train, task, &train_path)?;
        let label = TaskLabel {
            encoder: encoder.as_str().into(),
            probe: probe.name().into(),
            protocol: task.protocol.clone(),
            fold: task.fold,
        };
        let classifier: Box<dyn Classifier> = match probe {
            Probe::Linear(settings) => {
                let (fitted, selection) = linear::fit(&task_train, classes, settings);
                outcome.selections.push((label.clone(), selection));
                Box::new(fitted)
            }
            Probe::Knn(settings) => Box::new(Knn::new(&task_train, classes, *settings)),
        };
        let predictions = held_out.evaluate(classifier.as_ref())?;
        outcome.evaluations.push((label, predictions));
    }
    Ok(outcome)
}

fn missing_features(error: ProbeError, path: &Path) -> ProbeError {
    match error {
        ProbeError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ProbeError::bad(path, "missing: run `probe features` first")
        }
        other => other,
    }
}

fn select_task(train: &FeatureTable, task: &Task, path: &Path) -> Result<FeatureTable> {
    let Some(ids) = &task.train_ids else { return Ok(train.clone()) };
    let selected = train.select_ids(ids);
    if selected.len() != ids.len() {
        return Err(ProbeError::bad(
            path,
            format!(
                "holds {} of the {} images of {} fold {}: the features do not cover the dataset's train split",
                selected.len(),
                ids.len(),
                task.protocol,
                task.fold.unwrap_or_default()
            ),
        ));
    }
    Ok(selected)
}

pub fn predictions_path(run: &RunFolder, encoder: EncoderKind, probe: &str) -> PathBuf {
    run.probe_dir().join("predictions").join(format!("{encoder}-{probe}.parquet"))
}

pub fn selection_path(run: &RunFolder, encoder: EncoderKind) -> PathBuf {
    run.probe_dir().join("selection").join(format!("{encoder}.parquet"))
}

pub fn finetune_selection_path(run: &RunFolder, encoder: EncoderKind) -> PathBuf {
    run.probe_dir().join("selection").join(format!("{encoder}-finetune.parquet"))
}

/// Fine-tunes `encoder_kind`'s encoder on each single-task protocol (or those named) and
/// writes its predictions and the search, as the other probes do. Protocols with folds are
/// left out unless named: they fine-tune the whole encoder once per fold.
pub fn run_finetune<B: AutodiffBackend>(
    run: &RunFolder,
    encoder_kind: EncoderKind,
    settings: &FinetuneSettings,
    options: &FinetuneOptions,
    device: &B::Device,
) -> Result<Vec<(TaskLabel, Predictions, FinetuneSelection)>> {
    let manifest = manifest(run)?;
    let tasks: Vec<Task> = if options.protocols.is_empty() {
        protocol::protocols(&manifest)?.into_iter().filter(|tasks| tasks.len() == 1).flatten().collect()
    } else {
        let named: Vec<Vec<Task>> =
            options.protocols.iter().map(|name| protocol::named(&manifest, name)).collect::<Result<_>>()?;
        named.into_iter().flatten().collect()
    };
    let encoder = match encoder_kind {
        EncoderKind::Pretrained => {
            crate::encoder::pretrained::<B>(run, &run.checkpoint(options.checkpoint.as_deref())?, device)?
        }
        EncoderKind::Random => crate::encoder::random_init::<B>(run, device)?,
    };
    let vit = run.config.vit()?;
    let (pixel_mean, pixel_std) = run.pixel_stats()?;
    let input = ImageInput {
        image_size_px: vit.image_size_px,
        channels: vit.channels,
        pixel_mean,
        pixel_std,
        threads: options.threads,
    };
    let dataset = Dataset::open(&run.config.dataset)?;
    let held_out = HeldOutImages::new(&dataset, TEST_SPLIT);
    let all_train = LabelledImages::read(&dataset, TRAIN_SPLIT, vit.image_size_px, vit.channels, None)?;
    let classes = manifest.class_names.len().max(all_train.labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0));

    let mut results = Vec::new();
    for task in tasks {
        let train = match &task.train_ids {
            None => all_train.clone(),
            Some(ids) => {
                let wanted: std::collections::HashSet<u64> = ids.iter().copied().collect();
                let rows: Vec<usize> =
                    (0..all_train.len()).filter(|&row| wanted.contains(&all_train.ids[row])).collect();
                all_train.select_rows(&rows)
            }
        };
        let steps = settings.epochs
            * settings.learning_rates.len()
            * (settings.train_images.unwrap_or(train.len()).min(train.len()) as f64
                * (1.0 - settings.validation_fraction))
                .ceil() as u64 as usize;
        let bar =
            if options.progress { indicatif::ProgressBar::new(steps as u64) } else { indicatif::ProgressBar::hidden() };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} images, ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{encoder_kind} fine-tune"));
        let (classifier, selection) =
            finetune::fit::<B>(&encoder, &train, classes, &input, settings, device, &|images| bar.inc(images as u64));
        bar.finish_and_clear();
        let predictions = held_out.evaluate(&classifier)?;
        let label = TaskLabel {
            encoder: encoder_kind.as_str().into(),
            probe: "finetune".into(),
            protocol: task.protocol.clone(),
            fold: task.fold,
        };
        results.push((label, predictions, selection));
    }

    let path = predictions_path(run, encoder_kind, "finetune");
    let evaluations: Vec<(TaskLabel, Predictions)> =
        results.iter().map(|(label, predictions, _)| (label.clone(), predictions.clone())).collect();
    let mut frame = predictions_frame(&evaluations).map_err(ProbeError::polars(path.display().to_string()))?;
    write_parquet(&path, &mut frame)?;
    let path = finetune_selection_path(run, encoder_kind);
    let mut frame = finetune_selection_frame(&results).map_err(ProbeError::polars(path.display().to_string()))?;
    write_parquet(&path, &mut frame)?;
    Ok(results)
}

/// Where and how fine-tuning runs, beside its hyper-parameters.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// A checkpoint of the run; the latest when `None`.
    pub checkpoint: Option<String>,
    /// Protocol names; every single-task protocol when empty.
    pub protocols: Vec<String>,
    /// Threads predicting validation and test batches.
    pub threads: usize,
    pub progress: bool,
}

fn finetune_selection_frame(results: &[(TaskLabel, Predictions, FinetuneSelection)]) -> PolarsResult<DataFrame> {
    let rows: Vec<(&TaskLabel, &FinetuneSelection, usize)> = results
        .iter()
        .flat_map(|(task, _, selection)| (0..selection.candidates.len()).map(move |index| (task, selection, index)))
        .collect();
    df!(
        "encoder" => rows.iter().map(|(task, ..)| task.encoder.clone()).collect::<Vec<_>>(),
        "protocol" => rows.iter().map(|(task, ..)| task.protocol.clone()).collect::<Vec<_>>(),
        "fold" => rows.iter().map(|(task, ..)| task.fold.map(|fold| fold as i32)).collect::<Vec<_>>(),
        "learning_rate" => rows.iter().map(|(_, selection, index)| selection.candidates[*index].learning_rate).collect::<Vec<_>>(),
        "epochs" => rows.iter().map(|(_, selection, index)| selection.candidates[*index].epochs as i64).collect::<Vec<_>>(),
        "validation_accuracy" => rows.iter().map(|(_, selection, index)| selection.candidates[*index].validation_accuracy).collect::<Vec<_>>(),
        "chosen" => rows.iter().map(|(_, selection, index)| *index == selection.chosen).collect::<Vec<_>>(),
        "fit_rows" => rows.iter().map(|(_, selection, _)| selection.train_rows as i64).collect::<Vec<_>>(),
        "validation_rows" => rows.iter().map(|(_, selection, _)| selection.validation_rows as i64).collect::<Vec<_>>(),
    )
}

/// Writes the outcome's predictions (and selection) files.
pub fn write_outcome(run: &RunFolder, encoder: EncoderKind, probe: &Probe, outcome: &ProbeOutcome) -> Result<()> {
    let path = predictions_path(run, encoder, probe.name());
    let mut frame = predictions_frame(&outcome.evaluations).map_err(ProbeError::polars(path.display().to_string()))?;
    write_parquet(&path, &mut frame)?;
    if !outcome.selections.is_empty() {
        let path = selection_path(run, encoder);
        let mut frame = selection_frame(&outcome.selections).map_err(ProbeError::polars(path.display().to_string()))?;
        write_parquet(&path, &mut frame)?;
    }
    Ok(())
}

fn selection_frame(selections: &[(TaskLabel, Selection)]) -> PolarsResult<DataFrame> {
    // One row per candidate of every task's search.
    let rows: Vec<(&TaskLabel, &Selection, usize)> = selections
        .iter()
        .flat_map(|(task, selection)| (0..selection.candidates.len()).map(move |index| (task, selection, index)))
        .collect();
    df!(
        "encoder" => rows.iter().map(|(task, ..)| task.encoder.clone()).collect::<Vec<_>>(),
        "protocol" => rows.iter().map(|(task, ..)| task.protocol.clone()).collect::<Vec<_>>(),
        "fold" => rows.iter().map(|(task, ..)| task.fold.map(|fold| fold as i32)).collect::<Vec<_>>(),
        "learning_rate" => rows.iter().map(|(_, selection, index)| selection.candidates[*index].learning_rate).collect::<Vec<_>>(),
        "weight_decay" => rows.iter().map(|(_, selection, index)| selection.candidates[*index].weight_decay).collect::<Vec<_>>(),
        "validation_accuracy" => rows.iter().map(|(_, selection, index)| selection.candidates[*index].validation_accuracy).collect::<Vec<_>>(),
        "chosen" => rows.iter().map(|(_, selection, index)| *index == selection.chosen).collect::<Vec<_>>(),
        "fit_rows" => rows.iter().map(|(_, selection, _)| selection.train_rows as i64).collect::<Vec<_>>(),
        "validation_rows" => rows.iter().map(|(_, selection, _)| selection.validation_rows as i64).collect::<Vec<_>>(),
    )
}

/// Writes `frame` to `path` atomically.
pub fn write_parquet(path: &Path, frame: &mut DataFrame) -> Result<()> {
    write_atomically(path, |file| {
        ParquetWriter::new(file).finish(frame).map_err(ProbeError::polars(path.display().to_string()))?;
        Ok(())
    })
}
