//! A probe over every task of a dataset's protocols, its predictions written to the run
//! folder: linear and kNN on frozen features, fine-tuning on images, and one encoder's whole
//! evaluation (features, then both frozen probes).

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use jepa_shared::{Dataset, LabelledImages, Manifest, Progress};
use jepa_trainer::{EncoderKind, Run};
use polars::prelude::*;

use crate::error::{ProbeError, Result};
use crate::features::{FeatureOptions, FeatureTable, ImageInput, Origin, write_features};
use crate::finetune::{self, FinetuneSelection, FinetuneSettings, HeldOutImages, Runtime, fitting_rows};
use crate::heldout::{Classifier, HeldOut, Predictions, TaskLabel, predictions_frame};
use crate::knn::{self, KnnSelection, KnnSettings};
use crate::linear::{self, LinearSettings, Selection};
use crate::protocol::{self, TEST_SPLIT, TRAIN_SPLIT, Task};
use crate::seed::SeedSettings;

/// Which frozen-feature probe, with its settings.
#[derive(Debug, Clone)]
pub enum Probe {
    Linear(LinearSettings),
    /// The seed's published linear probe: fixed settings, nothing chosen.
    SeedLinear(SeedSettings),
    Knn(KnnSettings),
}

impl Probe {
    pub fn name(&self) -> &'static str {
        match self {
            Probe::Linear(_) => LINEAR,
            Probe::SeedLinear(_) => SEED_LINEAR,
            Probe::Knn(_) => KNN,
        }
    }

    /// Whether it fits protocols with folds unless they are named: the seed's recipes train
    /// on the whole labelled train split, as the seed did.
    fn takes_folds(&self) -> bool {
        !matches!(self, Probe::SeedLinear(_))
    }
}

/// The names the probes' files and rows go by.
pub const LINEAR: &str = "linear";
pub const SEED_LINEAR: &str = "linear-seed";
pub const KNN: &str = "knn";
pub const FINETUNE: &str = "finetune";
pub const SEED_FINETUNE: &str = "finetune-seed";

/// What one probe produced for one encoder.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub evaluations: Vec<(TaskLabel, Predictions)>,
    /// The linear probe's search, per task.
    pub selections: Vec<(TaskLabel, Selection)>,
    /// kNN's choice of centring, per task.
    pub knn_selections: Vec<(TaskLabel, KnnSelection)>,
}

pub fn manifest(run: &Run) -> Result<Manifest> {
    let root = run.recipe.dataset();
    Manifest::read(root)?.ok_or_else(|| ProbeError::bad(root, "has no manifest.json: ingest the dataset first"))
}

/// The tasks of the protocols named; when none are, every protocol the dataset supports,
/// or with `folds` off, those with one train set.
fn tasks(manifest: &Manifest, protocols: &[String], folds: bool) -> Result<Vec<Task>> {
    if protocols.is_empty() {
        let all = protocol::protocols(manifest)?;
        return Ok(all.into_iter().filter(|tasks| folds || tasks.len() == 1).flatten().collect());
    }
    let named: Vec<Vec<Task>> = protocols.iter().map(|name| protocol::named(manifest, name)).collect::<Result<_>>()?;
    Ok(named.into_iter().flatten().collect())
}

/// The number of classes: the dataset's class names, or one past the largest train label.
fn num_classes(manifest: &Manifest, labels: &[i32]) -> usize {
    manifest.class_names.len().max(labels.iter().map(|&label| label as usize + 1).max().unwrap_or(0))
}

fn task_label(encoder: EncoderKind, checkpoint: &str, probe: &str, task: &Task) -> TaskLabel {
    TaskLabel {
        encoder: encoder.as_str().into(),
        checkpoint: checkpoint.into(),
        probe: probe.into(),
        protocol: task.protocol.clone(),
        fold: task.fold,
    }
}

/// Fits `probe` on each task's train features and evaluates it once on the test features.
/// `protocols` limits the protocols (all the dataset supports when empty).
pub fn run_probe(run: &Run, encoder: EncoderKind, probe: &Probe, protocols: &[String]) -> Result<ProbeOutcome> {
    let manifest = manifest(run)?;
    let all = tasks(&manifest, protocols, probe.takes_folds())?;
    let train_path = run.folder.features(encoder, TRAIN_SPLIT);
    let train = FeatureTable::read(&train_path).map_err(|error| missing_features(error, &train_path))?;
    let test_path = run.folder.features(encoder, TEST_SPLIT);
    if !test_path.exists() {
        return Err(ProbeError::bad(&test_path, "missing: run `probe features` first"));
    }
    let origin = Origin::of_splits(&train_path, &test_path)?;
    let held_out = HeldOut::new(test_path);
    let classes = num_classes(&manifest, &train.labels);

    let mut outcome = ProbeOutcome { evaluations: Vec::new(), selections: Vec::new(), knn_selections: Vec::new() };
    for task in &all {
        let task_train = select_task(&train, task, &train_path)?;
        let label = task_label(encoder, &origin.checkpoint, probe.name(), task);
        let classifier: Box<dyn Classifier> = match probe {
            Probe::Linear(settings) => {
                let (fitted, selection) = linear::fit(&task_train, classes, settings);
                outcome.selections.push((label.clone(), selection));
                Box::new(fitted)
            }
            Probe::SeedLinear(settings) => Box::new(linear::fit_seed(&task_train, classes, settings)),
            Probe::Knn(settings) => {
                let (fitted, selection) = knn::fit(&task_train, classes, settings);
                outcome.knn_selections.push((label.clone(), selection));
                Box::new(fitted)
            }
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

/// Writes the outcome's predictions (and the linear probe's search).
pub fn write_outcome(run: &Run, encoder: EncoderKind, probe: &Probe, outcome: &ProbeOutcome) -> Result<()> {
    write_predictions(&run.folder.predictions(encoder, probe.name()), &outcome.evaluations)?;
    if !outcome.selections.is_empty() {
        let rows: Vec<SearchRow> = outcome
            .selections
            .iter()
            .flat_map(|(task, selection)| {
                let sizes = (selection.train_rows, selection.validation_rows);
                SearchRow::of_search(task, &selection.candidates, selection.chosen, sizes, |candidate| {
                    (candidate.learning_rate, candidate.weight_decay, candidate.validation_accuracy)
                })
                .map(|row| SearchRow { edge: selection.edge(), ..row })
            })
            .collect();
        let weight_decay = Column::new("weight_decay".into(), rows.iter().map(|row| row.setting).collect::<Vec<_>>());
        write_search(&run.folder.selection(encoder, probe.name()), &rows, vec![weight_decay])?;
    }
    if !outcome.knn_selections.is_empty() {
        let rows: Vec<SearchRow> = outcome
            .knn_selections
            .iter()
            .flat_map(|(task, selection)| {
                let sizes = (selection.train_rows, selection.validation_rows);
                SearchRow::of_search(task, &selection.candidates, selection.chosen, sizes, |candidate| {
                    (f64::NAN, f64::from(u8::from(candidate.centre)), candidate.validation_accuracy)
                })
            })
            .collect();
        let centre = Column::new("centre".into(), rows.iter().map(|row| row.setting > 0.5).collect::<Vec<_>>());
        let mut settings = vec![centre];
        // The fixed settings too, so that what the report says of them is read, not assumed.
        if let Probe::Knn(knn) = probe {
            settings.push(Column::new("k".into(), vec![knn.k as i64; rows.len()]));
            settings.push(Column::new("temperature".into(), vec![f64::from(knn.temperature); rows.len()]));
        }
        write_search(&run.folder.selection(encoder, probe.name()), &rows, settings)?;
    }
    Ok(())
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

/// How fine-tuning is done: our protocol (learning rate and epochs chosen on a validation
/// part of train), or the seed's published one (fixed settings, nothing chosen).
#[derive(Debug, Clone)]
pub enum FinetuneRecipe {
    Ours(FinetuneSettings),
    Seed(SeedSettings),
}

impl FinetuneRecipe {
    pub fn name(&self) -> &'static str {
        match self {
            FinetuneRecipe::Ours(_) => FINETUNE,
            FinetuneRecipe::Seed(_) => SEED_FINETUNE,
        }
    }

    /// Training images seen in all, for the progress bar.
    fn images(&self, train_rows: usize) -> usize {
        match self {
            FinetuneRecipe::Ours(settings) => {
                settings.epochs * settings.learning_rates.len() * fitting_rows(train_rows, settings)
            }
            FinetuneRecipe::Seed(settings) => settings.epochs * train_rows,
        }
    }
}

/// Fine-tunes `encoder_kind`'s encoder on each single-task protocol (or those named) and
/// writes its predictions (and our recipe's search), as the other probes do. Protocols with
/// folds are left out unless named: they fine-tune the whole encoder once per fold.
pub fn run_finetune<B: AutodiffBackend>(
    run: &Run,
    encoder_kind: EncoderKind,
    recipe: &FinetuneRecipe,
    options: &FinetuneOptions,
    device: &B::Device,
) -> Result<Vec<(TaskLabel, Predictions, Option<FinetuneSelection>)>> {
    let manifest = manifest(run)?;
    let tasks = tasks(&manifest, &options.protocols, false)?;
    let loaded = run.encoder::<B>(encoder_kind, options.checkpoint.as_deref(), device)?;
    let encoder = burn::module::AutodiffModule::<B>::from_inner(loaded.encoder);
    let input = ImageInput::of_run(run)?;
    let dataset = Dataset::open(run.recipe.dataset())?;
    let held_out = HeldOutImages::new(&dataset, TEST_SPLIT);
    let all_train = LabelledImages::read(&dataset, TRAIN_SPLIT, input.image_size_px, input.channels, None)?;
    let classes = num_classes(&manifest, &all_train.labels);

    let mut results = Vec::new();
    for task in tasks {
        let train = match &task.train_ids {
            None => all_train.clone(),
            Some(ids) => all_train.select_ids(ids),
        };
        let images = recipe.images(train.len());
        let bar = Progress::new(options.progress).bar(images as u64, &format!("{encoder_kind} fine-tune"), "images");
        let runtime = Runtime { threads: options.threads, device, progress: &|images| bar.inc(images as u64) };
        let (classifier, selection) = match recipe {
            FinetuneRecipe::Ours(settings) => {
                let (classifier, selection) = finetune::fit::<B>(&encoder, &train, classes, &input, settings, &runtime);
                (classifier, Some(selection))
            }
            FinetuneRecipe::Seed(settings) => {
                (finetune::fit_seed::<B>(&encoder, &train, classes, &input, settings, &runtime), None)
            }
        };
        bar.finish_and_clear();
        let predictions = held_out.evaluate(&classifier)?;
        results.push((task_label(encoder_kind, &loaded.from, recipe.name(), &task), predictions, selection));
    }

    let evaluations: Vec<(TaskLabel, Predictions)> =
        results.iter().map(|(label, predictions, _)| (label.clone(), predictions.clone())).collect();
    write_predictions(&run.folder.predictions(encoder_kind, recipe.name()), &evaluations)?;
    let rows: Vec<SearchRow> = results
        .iter()
        .filter_map(|(task, _, selection)| Some((task, selection.as_ref()?)))
        .flat_map(|(task, selection)| {
            let sizes = (selection.train_rows, selection.validation_rows);
            SearchRow::of_search(task, &selection.candidates, selection.chosen, sizes, |candidate| {
                (candidate.learning_rate, candidate.epochs as f64, candidate.validation_accuracy)
            })
        })
        .collect();
    if !rows.is_empty() {
        let epochs = Column::new("epochs".into(), rows.iter().map(|row| row.setting as i64).collect::<Vec<_>>());
        write_search(&run.folder.selection(encoder_kind, recipe.name()), &rows, vec![epochs])?;
    }
    Ok(results)
}

/// One candidate of a hyper-parameter search: its task, learning rate and other setting
/// (the linear probe's weight decay, fine-tuning's epochs), and how it did.
struct SearchRow<'a> {
    task: &'a TaskLabel,
    learning_rate: f64,
    setting: f64,
    validation_accuracy: f64,
    chosen: bool,
    fit_rows: usize,
    validation_rows: usize,
    /// Where the chosen setting still sat on the edge of its grid, after widening.
    edge: Option<String>,
}

impl<'a> SearchRow<'a> {
    /// The rows of one task's search; `describe` gives a candidate's learning rate, other
    /// setting and validation accuracy.
    fn of_search<C>(
        task: &'a TaskLabel,
        candidates: &'a [C],
        chosen: usize,
        (fit_rows, validation_rows): (usize, usize),
        describe: impl Fn(&C) -> (f64, f64, f64) + 'a,
    ) -> impl Iterator<Item = SearchRow<'a>> + 'a {
        candidates.iter().enumerate().map(move |(index, candidate)| {
            let (learning_rate, setting, validation_accuracy) = describe(candidate);
            SearchRow {
                task,
                learning_rate,
                setting,
                validation_accuracy,
                chosen: index == chosen,
                fit_rows,
                validation_rows,
                edge: None,
            }
        })
    }
}

/// A search table: who (encoder, checkpoint, task), the learning rate (NaN where there is
/// none: kNN), `settings` (the other searched column, then any fixed setting), the
/// validation accuracy, whether it was chosen, the split sizes, and the edge of the grid the
/// choice still sat on (null: inside).
fn write_search(path: &Path, rows: &[SearchRow], settings: Vec<Column>) -> Result<()> {
    let column = |name: &str, values: Series| Column::from(values.with_name(name.into()));
    let mut columns = vec![
        column("encoder", rows.iter().map(|row| row.task.encoder.as_str()).collect()),
        column("checkpoint", rows.iter().map(|row| row.task.checkpoint.as_str()).collect()),
        column("protocol", rows.iter().map(|row| row.task.protocol.as_str()).collect()),
        column("fold", rows.iter().map(|row| row.task.fold.map(|fold| fold as i32)).collect()),
        column("learning_rate", rows.iter().map(|row| row.learning_rate).collect()),
    ];
    columns.extend(settings);
    columns.extend([
        column("validation_accuracy", rows.iter().map(|row| row.validation_accuracy).collect()),
        column("chosen", rows.iter().map(|row| row.chosen).collect()),
        column("fit_rows", rows.iter().map(|row| row.fit_rows as i64).collect()),
        column("validation_rows", rows.iter().map(|row| row.validation_rows as i64).collect()),
        column("edge", rows.iter().map(|row| row.edge.as_deref()).collect()),
    ]);
    let mut frame = DataFrame::new(rows.len(), columns).map_err(ProbeError::polars(path.display().to_string()))?;
    write_parquet(path, &mut frame)
}

fn write_predictions(path: &Path, evaluations: &[(TaskLabel, Predictions)]) -> Result<()> {
    let mut frame = predictions_frame(evaluations).map_err(ProbeError::polars(path.display().to_string()))?;
    write_parquet(path, &mut frame)
}

/// Writes `frame` to `path`, whole or not at all.
/// A Parquet file as a lazy frame.
pub fn scan(path: &Path) -> Result<LazyFrame> {
    let text = path.to_str().ok_or_else(|| ProbeError::bad(path, "is not valid UTF-8"))?;
    LazyFrame::scan_parquet(PlRefPath::new(text), ScanArgsParquet::default())
        .map_err(ProbeError::polars(path.display().to_string()))
}

/// How many rows `frame` has; `what` names it in an error.
pub fn count_rows(frame: LazyFrame, what: &str) -> Result<u64> {
    let counted = frame.select([len().alias("rows")]).collect().map_err(ProbeError::polars(what.to_string()))?;
    Ok(counted
        .column("rows")
        .ok()
        .and_then(|column| column.get(0).ok())
        .and_then(|value| value.extract::<u64>())
        .unwrap_or(0))
}

pub fn write_parquet(path: &Path, frame: &mut DataFrame) -> Result<()> {
    jepa_shared::atomic::write_file(path, |file| {
        ParquetWriter::new(file).finish(frame).map_err(ProbeError::polars(path.display().to_string()))?;
        Ok(())
    })
}

/// Features, linear probe and kNN settings of one encoder's evaluation.
#[derive(Debug, Clone, Default)]
pub struct EvaluateOptions {
    pub features: FeatureOptions,
    pub linear: LinearSettings,
    pub knn: KnnSettings,
    /// Protocol names; all the dataset supports when empty.
    pub protocols: Vec<String>,
}

/// Features for one encoder, then the linear probe and kNN on them.
pub fn evaluate_encoder<B: AutodiffBackend>(
    run: &Run,
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
