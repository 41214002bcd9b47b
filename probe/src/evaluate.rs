//! Runs a probe over every task of a dataset's protocols and writes its predictions:
//! `runs/<name>/probe/predictions/<encoder>-<probe>.parquet`, and for the linear probe the
//! hyper-parameter search, `runs/<name>/probe/selection/<encoder>.parquet`.

use std::path::{Path, PathBuf};

use jepa_shared::Manifest;
use polars::prelude::*;

use crate::error::{ProbeError, Result};
use crate::features::{FeatureTable, write_atomically};
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
