//! The recipe sweep's table: one row per (trained run, encoder), appended to a Parquet file
//! that polars reads, so recipes are compared by query.
//!
//! ```text
//! run, method, encoder            who
//! <section>.<field>, …            the run's resolved config, flattened (its own method's
//!                                 section only; pixel statistics and checkpointing left out)
//! steps, images, train_seconds    compute: optimizer steps, images seen, seconds of training
//!                                 (the trainer's own clock, summed over resumes)
//! validation_linear, validation_knn   accuracy on the validation part carved from train
//! test_linear, test_knn           accuracy on the test split, measured once, after the choice
//! linear_lr, linear_weight_decay, linear_edge, knn_centre   what the probes chose
//! ```
//!
//! Everything chosen from this table is chosen on the validation columns: [`best_recipes`]
//! reads nothing else, and the probes behind each row chose their own settings on the same
//! validation part ([`jepa_eval::linear::fit`], [`jepa_eval::knn::fit`]). The test columns are
//! there to be reported, once the choice is made.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use jepa_eval::error::{ProbeError, Result};
use jepa_eval::evaluate::{
    EvaluateOptions, Probe, ProbeOutcome, count_rows, run_probe, scan, write_outcome, write_parquet,
};
use jepa_eval::features::write_features;
use jepa_trainer::{EncoderKind, Run};
use polars::prelude::*;

use crate::compare::{config_leaves, top_level, training_compute};

/// One row of the sweep table, before the config columns.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepScores {
    pub run: String,
    pub method: String,
    pub encoder: EncoderKind,
    pub steps: u64,
    pub images: u64,
    pub train_seconds: f64,
    pub validation_linear: f64,
    pub test_linear: f64,
    pub validation_knn: f64,
    pub test_knn: f64,
    pub linear_lr: f64,
    pub linear_weight_decay: f64,
    pub linear_edge: Option<String>,
    pub knn_centre: bool,
}

/// Scores each run's `encoders` into the table at `table` (a row already there is skipped
/// when `skip_scored`), saying one line per row through `say`, then the recipe each method
/// would choose.
pub fn sweep<B: AutodiffBackend>(
    runs: &[Run],
    encoders: &[EncoderKind],
    table: &Path,
    skip_scored: bool,
    options: &EvaluateOptions,
    device: &B::Device,
    mut say: impl FnMut(String),
) -> Result<()> {
    for run in runs {
        for &encoder in encoders {
            if skip_scored && has_row(table, run.recipe.name(), encoder)? {
                say(format!("{} ({encoder}): already in {}", run.recipe.name(), table.display()));
                continue;
            }
            let started = std::time::Instant::now();
            let scores = score::<B>(run, encoder, options, device)?;
            append(table, row(run, &scores)?)?;
            say(format!(
                "{} ({encoder}): validation linear {:.2}%, kNN {:.2}%; {} steps, {:.0} s of training; scored in {:.0} s",
                scores.run,
                100.0 * scores.validation_linear,
                100.0 * scores.validation_knn,
                scores.steps,
                scores.train_seconds,
                started.elapsed().as_secs_f64()
            ));
        }
    }
    for (method, run) in chosen_runs(table, EncoderKind::Pretrained)? {
        say(format!("best {method} recipe by validation linear accuracy: {run}"));
    }
    say(format!("table: {}", table.display()));
    Ok(())
}

/// Features of `encoder`, then [`score_features`].
pub fn score<B: AutodiffBackend>(
    run: &Run,
    encoder: EncoderKind,
    options: &EvaluateOptions,
    device: &B::Device,
) -> Result<SweepScores> {
    write_features::<B>(run, encoder, &options.features, device)?;
    score_features(run, encoder, options)
}

/// The linear probe and kNN on `encoder`'s features (already written), their predictions
/// and searches written as `probe all` writes them, and the run's compute. Accuracies are
/// means over the tasks of the dataset's first protocol.
pub fn score_features(run: &Run, encoder: EncoderKind, options: &EvaluateOptions) -> Result<SweepScores> {
    let linear_probe = Probe::Linear(options.linear.clone());
    let linear = run_probe(run, encoder, &linear_probe, &options.protocols)?;
    write_outcome(run, encoder, &linear_probe, &linear)?;
    let knn_probe = Probe::Knn(options.knn);
    let knn = run_probe(run, encoder, &knn_probe, &options.protocols)?;
    write_outcome(run, encoder, &knn_probe, &knn)?;

    let (linear_tasks, knn_tasks) = (first_protocol(&linear), first_protocol(&knn));
    let test_linear = mean(linear_tasks.iter().map(|&i| linear.evaluations[i].1.accuracy()));
    let validation_linear = mean(linear_tasks.iter().map(|&i| linear.selections[i].1.chosen().validation_accuracy));
    let test_knn = mean(knn_tasks.iter().map(|&i| knn.evaluations[i].1.accuracy()));
    let validation_knn = mean(knn_tasks.iter().map(|&i| knn.knn_selections[i].1.chosen().validation_accuracy));
    let (first_linear, first_knn) = (&linear.selections[0].1, &knn.knn_selections[0].1);
    let (steps, images, train_seconds) = training_compute(run)?;
    Ok(SweepScores {
        run: run.recipe.name().to_string(),
        method: run.recipe.method_info().name().to_string(),
        encoder,
        steps,
        images,
        train_seconds,
        validation_linear,
        test_linear,
        validation_knn,
        test_knn,
        linear_lr: first_linear.chosen().learning_rate,
        linear_weight_decay: first_linear.chosen().weight_decay,
        linear_edge: first_linear.edge(),
        knn_centre: first_knn.chosen().centre,
    })
}

/// The indices of the outcome's tasks that belong to its first protocol (the folds of
/// STL-10's, the one split of Fashion-MNIST's).
fn first_protocol(outcome: &ProbeOutcome) -> Vec<usize> {
    let Some((first, _)) = outcome.evaluations.first() else { return Vec::new() };
    (0..outcome.evaluations.len()).filter(|&i| outcome.evaluations[i].0.protocol == first.protocol).collect()
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let count = values.len().max(1);
    values.sum::<f64>() / count as f64
}

/// Config fields the table leaves out: the run's name is its own column, pixel statistics
/// are measured, checkpointing does not change what is learned.
const LEFT_OUT: [&str; 4] = ["name", "method", "data", "checkpoint"];

/// The resolved config as `section.field` columns of one row: integers, floats, booleans
/// and strings as themselves, arrays as their TOML text.
fn config_columns(run: &Run) -> Result<Vec<Column>> {
    Ok(config_leaves(run)?
        .into_iter()
        .filter(|(path, _)| !LEFT_OUT.contains(&top_level(path)))
        .map(|(path, value)| {
            let name = PlSmallStr::from(path);
            match value {
                toml::Value::Integer(number) => Column::new(name, [number]),
                toml::Value::Float(number) => Column::new(name, [number]),
                toml::Value::Boolean(flag) => Column::new(name, [flag]),
                toml::Value::String(text) => Column::new(name, [text]),
                other => Column::new(name, [other.to_string()]),
            }
        })
        .collect())
}

/// `scores` and the run's config as one row.
pub fn row(run: &Run, scores: &SweepScores) -> Result<DataFrame> {
    let mut columns = vec![
        Column::new("run".into(), [scores.run.as_str()]),
        Column::new("method".into(), [scores.method.as_str()]),
        Column::new("encoder".into(), [scores.encoder.as_str()]),
    ];
    columns.extend(config_columns(run)?);
    columns.extend([
        Column::new("steps".into(), [scores.steps as i64]),
        Column::new("images".into(), [scores.images as i64]),
        Column::new("train_seconds".into(), [scores.train_seconds]),
        Column::new("validation_linear".into(), [scores.validation_linear]),
        Column::new("validation_knn".into(), [scores.validation_knn]),
        Column::new("test_linear".into(), [scores.test_linear]),
        Column::new("test_knn".into(), [scores.test_knn]),
        Column::new("linear_lr".into(), [scores.linear_lr]),
        Column::new("linear_weight_decay".into(), [scores.linear_weight_decay]),
        Column::new("linear_edge".into(), [scores.linear_edge.as_deref()]),
        Column::new("knn_centre".into(), [scores.knn_centre]),
    ]);
    DataFrame::new(1, columns).map_err(ProbeError::polars("sweep row"))
}

/// Adds `row` to the table at `path` (created if missing), replacing an earlier row of the
/// same run and encoder; columns only some rows have are null in the others.
pub fn append(path: &Path, row: DataFrame) -> Result<DataFrame> {
    let what = || path.display().to_string();
    let frames = if path.exists() {
        let key = |frame: &DataFrame, name: &str| -> Result<String> {
            frame
                .column(name)
                .and_then(|column| column.str().map(|values| values.get(0).unwrap_or_default().to_string()))
                .map_err(ProbeError::polars(what()))
        };
        let (run, encoder) = (key(&row, "run")?, key(&row, "encoder")?);
        let earlier = scan(path)?.filter(col("run").neq(lit(run)).or(col("encoder").neq(lit(encoder))));
        vec![earlier, row.lazy()]
    } else {
        vec![row.lazy()]
    };
    let args = UnionArgs { diagonal: true, to_supertypes: true, ..UnionArgs::default() };
    let mut table = concat(frames, args).and_then(LazyFrame::collect).map_err(ProbeError::polars(what()))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(ProbeError::io(parent))?;
    }
    write_parquet(path, &mut table)?;
    Ok(table)
}

/// Whether the table at `path` (if any) has a row for `run` and `encoder`.
pub fn has_row(path: &Path, run: &str, encoder: EncoderKind) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let rows = scan(path)?.filter(col("run").eq(lit(run)).and(col("encoder").eq(lit(encoder.as_str()))));
    Ok(count_rows(rows, &path.display().to_string())? > 0)
}

/// The recipe each method's best row came from, by validation linear accuracy (ties: the
/// better validation kNN, then the run name), for one encoder: the query behind the
/// README's recipe tables. It reads no test column.
pub fn best_recipes(table: LazyFrame, encoder: EncoderKind) -> LazyFrame {
    table
        .filter(col("encoder").eq(lit(encoder.as_str())))
        .sort_by_exprs(
            [col("method"), col("validation_linear"), col("validation_knn"), col("run")],
            SortMultipleOptions::default().with_order_descending_multi([false, true, true, false]),
        )
        .group_by_stable([col("method")])
        .agg([col("run").first()])
}

/// Reads the table and gives `best_recipes`' answer as (method, run) pairs.
pub fn chosen_runs(path: &Path, encoder: EncoderKind) -> Result<Vec<(String, String)>> {
    let frame = best_recipes(scan(path)?, encoder).collect().map_err(ProbeError::polars(path.display().to_string()))?;
    let text = |name: &str| -> Result<Vec<String>> {
        Ok(frame
            .column(name)
            .and_then(|column| column.str().cloned())
            .map_err(ProbeError::polars(path.display().to_string()))?
            .iter()
            .map(|value| value.unwrap_or_default().to_string())
            .collect())
    };
    Ok(text("method")?.into_iter().zip(text("run")?).collect())
}
