//! The method comparison: runs of different methods on the same data, seed and image
//! geometry, each with its own recipe, evaluated with the linear probe, kNN and fine-tuning,
//! beside the baselines: one random-init encoder (the runs share their seed, so they share
//! it) and the raw pixels. A method that evaluates an EMA teacher also has its context
//! encoder evaluated (linear and kNN).
//!
//! ```text
//! <out>/summary.parquet   method (each run's method, random or pixels), encoder (pretrained |
//!                         context | random | pixels), protocol (linear | knn | finetune),
//!                         accuracy, macro_f1, plus task, objective, run, and the run's
//!                         training compute (steps, train_seconds; 0 for the baselines)
//! <out>/summary.png       accuracy by protocol, one bar per method
//! <out>/compare.md        the same table in Markdown, and what each recipe changed
//! ```
//!
//! Each run keeps its own full report (`<run>/probe/`); the baselines' results live in the
//! first run's folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use jepa_eval::error::{ProbeError, Result};
use jepa_eval::evaluate::{
    EvaluateOptions, FINETUNE, FinetuneOptions, FinetuneRecipe, KNN, LINEAR, count_rows, evaluate_encoder,
    run_finetune, scan, write_parquet,
};
use jepa_eval::finetune::FinetuneSettings;
use jepa_trainer::{EncoderKind, Run};
use polars::prelude::*;

use crate::plots;
use crate::report::write_report;

#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    /// Features, linear and kNN settings, as `probe all` takes them.
    pub evaluate: EvaluateOptions,
    pub finetune: FinetuneSettings,
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    /// The run's method (`ijepa`, `mae`, …), `random` or `pixels`.
    pub method: String,
    /// Which of the run's encoders: `pretrained`, `context`, `random` or `pixels`.
    pub encoder: String,
    /// `linear`, `knn` or `finetune`.
    pub protocol: String,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// The dataset protocol (`fashion-mnist`, `stl10-5k`, …).
    pub task: String,
    /// The pre-training loss the number comes from (`ijepa smooth_l1`, `mae norm_pix`, `none`).
    pub objective: String,
    pub run: String,
    /// The checkpoint the encoder came from (`step-00000150`, `init`, `none`).
    pub checkpoint: String,
    /// The run's optimizer steps and seconds of training (0 for the baselines).
    pub steps: u64,
    pub train_seconds: f64,
}

impl CompareRow {
    /// How the table names the row: the method, with the encoder where it is not the
    /// method's own (`ijepa (context)`).
    pub fn label(&self) -> String {
        if self.encoder == EncoderKind::Context.as_str() {
            format!("{} (context)", self.method)
        } else {
            self.method.clone()
        }
    }
}

/// What [`compare`] wrote.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub rows: Vec<CompareRow>,
    pub summary: PathBuf,
    pub chart: PathBuf,
    pub markdown: PathBuf,
}

/// Evaluates every run, and the random-init encoder once, with all three protocols; writes
/// the comparison to `out`.
pub fn compare<B: AutodiffBackend>(
    runs: &[Run],
    out: &Path,
    options: &CompareOptions,
    device: &B::Device,
) -> Result<Comparison> {
    let first = runs.first().ok_or_else(|| ProbeError::bad(out, "no runs to compare"))?;
    for run in &runs[1..] {
        check_comparable(first, run)?;
    }
    // (run, encoder, fine-tuned): the baselines from the first run, then every run's encoders.
    let mut evaluations: Vec<(&Run, EncoderKind, bool)> =
        vec![(first, EncoderKind::Random, true), (first, EncoderKind::Pixels, false)];
    for run in runs {
        evaluations.push((run, EncoderKind::Pretrained, true));
        if run.encoder_kinds().contains(&EncoderKind::Context) {
            evaluations.push((run, EncoderKind::Context, false));
        }
    }
    for &(run, encoder_kind, finetuned) in &evaluations {
        evaluate_encoder::<B>(run, encoder_kind, &options.evaluate, device)?;
        if !finetuned {
            continue;
        }
        let started = Instant::now();
        let finetune_options = FinetuneOptions {
            checkpoint: options.evaluate.features.checkpoint.clone(),
            protocols: options.evaluate.protocols.clone(),
            threads: options.evaluate.features.threads,
            progress: options.evaluate.features.progress,
        };
        run_finetune::<B>(
            run,
            encoder_kind,
            &FinetuneRecipe::Ours(options.finetune.clone()),
            &finetune_options,
            device,
        )?;
        if options.evaluate.features.progress {
            let root = run.folder.root().display();
            eprintln!("{root}: fine-tune ({encoder_kind}): {:.1} s", started.elapsed().as_secs_f64());
        }
    }

    // Each row with its place among the evaluations: methods in the order the runs were
    // given (each method's context encoder after it), the baselines last.
    let mut ranked = Vec::new();
    for run in runs {
        let report = write_report(run)?;
        let method = run.recipe.method_info();
        let (steps, _, train_seconds) = training_compute(run)?;
        for row in report.summary {
            let Some(position) =
                evaluations.iter().position(|(r, e, _)| std::ptr::eq(*r, run) && e.as_str() == row.encoder)
            else {
                continue;
            };
            let encoder = evaluations[position].1;
            let baseline = encoder.is_baseline();
            let rank = if baseline { evaluations.len() + position } else { position };
            ranked.push((
                rank,
                CompareRow {
                    method: if baseline { encoder.as_str().into() } else { method.name().into() },
                    encoder: encoder.as_str().into(),
                    protocol: row.probe.clone(),
                    accuracy: row.accuracy,
                    macro_f1: row.macro_f1,
                    task: row.protocol.clone(),
                    objective: if baseline { "none".into() } else { method.objective() },
                    run: run.folder.root().display().to_string(),
                    checkpoint: row.checkpoint.clone(),
                    steps: if baseline { 0 } else { steps },
                    train_seconds: if baseline { 0.0 } else { train_seconds },
                },
            ));
        }
    }
    // Protocols in the order of the evaluation, then the rows' ranks.
    ranked.sort_by_key(|(rank, row)| {
        let protocol = [LINEAR, KNN, FINETUNE].iter().position(|p| *p == row.protocol).unwrap_or(3);
        (row.task.clone(), protocol, *rank)
    });
    let rows: Vec<CompareRow> = ranked.into_iter().map(|(_, row)| row).collect();

    std::fs::create_dir_all(out).map_err(ProbeError::io(out))?;
    let summary = out.join("summary.parquet");
    let mut frame = frame(&rows).map_err(ProbeError::polars(summary.display().to_string()))?;
    write_parquet(&summary, &mut frame)?;
    let chart = out.join("summary.png");
    // The chart shows the first task (a dataset's protocol; STL-10 has two).
    let task = rows.iter().map(|row| row.task.as_str()).min().unwrap_or_default();
    let bars: Vec<plots::Bar> = rows
        .iter()
        .filter(|row| row.task == task)
        .map(|row| plots::Bar { method: row.label(), protocol: &row.protocol, accuracy: row.accuracy })
        .collect();
    plots::comparison_bars(task, &bars, &chart)?;
    let markdown = out.join("compare.md");
    let text = format!("{}\n{}", markdown_table(&rows), recipe_differences(runs)?);
    jepa_shared::atomic::write_bytes(&markdown, text.as_bytes())?;
    Ok(Comparison { rows, summary, chart, markdown })
}

/// Runs compare only on the same data, seed and images (so the baselines are the same for
/// all); each method may bring its own recipe, which [`recipe_differences`] lists.
fn check_comparable(first: &Run, other: &Run) -> Result<()> {
    let (a, b) = (first.recipe.config(), other.recipe.config());
    let differences = [
        ("seed", a.seed != b.seed),
        ("dataset", a.dataset != b.dataset),
        ("encoder.image_size_px", a.encoder.image_size_px != b.encoder.image_size_px),
        ("encoder.channels", a.encoder.channels != b.encoder.channels),
        ("data", a.data != b.data),
    ];
    let fields: Vec<&str> = differences.iter().filter(|(_, differ)| *differ).map(|(field, _)| *field).collect();
    if fields.is_empty() {
        return Ok(());
    }
    Err(ProbeError::bad(
        &other.folder.config(),
        format!(
            "differs from {} in {}: a comparison needs the same data, seed and images",
            first.folder.config().display(),
            fields.join(", ")
        ),
    ))
}

/// The shared fields (encoder, loader, optimizer) where the runs' recipes differ, as
/// Markdown: a comparison of recipes each searched for its method says what it compared.
pub fn recipe_differences(runs: &[Run]) -> Result<String> {
    let shared = |run: &Run| -> Result<std::collections::BTreeMap<String, String>> {
        Ok(config_leaves(run)?
            .into_iter()
            .filter(|(path, _)| ["encoder", "loader", "optim"].contains(&top_level(path)))
            .map(|(path, value)| (path, value.to_string()))
            .collect())
    };
    let all = runs.iter().map(shared).collect::<Result<Vec<_>>>()?;
    let keys: std::collections::BTreeSet<&String> = all.iter().flat_map(|fields| fields.keys()).collect();
    let mut text = String::from("Shared settings where the recipes differ:\n\n| setting |");
    for run in runs {
        let _ = write!(text, " {} |", run.recipe.name());
    }
    text.push_str("\n|---|");
    text.push_str(&"---|".repeat(runs.len()));
    text.push('\n');
    let mut any = false;
    for key in keys {
        let values: Vec<&str> = all.iter().map(|fields| fields.get(key).map_or("–", String::as_str)).collect();
        if values.iter().all(|value| *value == values[0]) {
            continue;
        }
        any = true;
        let _ = writeln!(text, "| `{key}` | {} |", values.join(" | "));
    }
    if !any {
        return Ok("Every run has the same encoder, loader and optimizer settings.\n".into());
    }
    Ok(text)
}

/// The run's resolved config as `section.field` leaves (`a.b.c` for nested tables), with
/// each leaf's TOML value: what `compare.md` and the sweep table read of a recipe.
pub fn config_leaves(run: &Run) -> Result<Vec<(String, toml::Value)>> {
    let table: toml::Table = toml::from_str(&run.recipe.to_toml())
        .map_err(|error| ProbeError::bad(&run.folder.config(), error.to_string()))?;
    let mut leaves = Vec::new();
    push_leaves("", table, &mut leaves);
    Ok(leaves)
}

fn push_leaves(prefix: &str, table: toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => push_leaves(&path, inner, out),
            leaf => out.push((path, leaf)),
        }
    }
}

/// The section a leaf path of [`config_leaves`] sits in (the path itself at the top level).
pub fn top_level(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

/// Steps and images from the run's metrics, seconds from its log's `finished … in S s`
/// lines (one per stretch of training); zeros for a run that was not trained here.
pub fn training_compute(run: &Run) -> Result<(u64, u64, f64)> {
    let metrics = run.folder.metrics();
    if !metrics.exists() {
        return Ok((0, 0, 0.0));
    }
    let steps = count_rows(scan(&metrics)?, &metrics.display().to_string())?;
    let (mut images, mut seconds) = (0u64, 0f64);
    let log = run.folder.log();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for line in text.lines() {
        // "finished at step 937: 59968 images in 221.3 s"
        let Some(rest) = line.strip_prefix("finished at step ") else { continue };
        let Some((_, rest)) = rest.split_once(": ") else { continue };
        let mut words = rest.split_whitespace();
        let (Some(count), Some("images"), Some("in"), Some(time)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        images += count.parse::<u64>().unwrap_or(0);
        seconds += time.parse::<f64>().unwrap_or(0.0);
    }
    Ok((steps, images, seconds))
}

fn frame(rows: &[CompareRow]) -> PolarsResult<DataFrame> {
    df!(
        "method" => rows.iter().map(|row| row.method.clone()).collect::<Vec<_>>(),
        "encoder" => rows.iter().map(|row| row.encoder.clone()).collect::<Vec<_>>(),
        "protocol" => rows.iter().map(|row| row.protocol.clone()).collect::<Vec<_>>(),
        "accuracy" => rows.iter().map(|row| row.accuracy).collect::<Vec<_>>(),
        "macro_f1" => rows.iter().map(|row| row.macro_f1).collect::<Vec<_>>(),
        "task" => rows.iter().map(|row| row.task.clone()).collect::<Vec<_>>(),
        "objective" => rows.iter().map(|row| row.objective.clone()).collect::<Vec<_>>(),
        "run" => rows.iter().map(|row| row.run.clone()).collect::<Vec<_>>(),
        "checkpoint" => rows.iter().map(|row| row.checkpoint.clone()).collect::<Vec<_>>(),
        "steps" => rows.iter().map(|row| row.steps as i64).collect::<Vec<_>>(),
        "train_seconds" => rows.iter().map(|row| row.train_seconds).collect::<Vec<_>>(),
    )
}

/// The comparison as a Markdown table.
pub fn markdown_table(rows: &[CompareRow]) -> String {
    let mut text = String::from(
        "| task | protocol | method | objective | training | accuracy | macro F1 |\n|---|---|---|---|---:|---:|---:|\n",
    );
    for row in rows {
        let training =
            if row.steps == 0 { "–".to_string() } else { format!("{} steps, {:.0} s", row.steps, row.train_seconds) };
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {training} | {:.2}% | {:.4} |",
            row.task,
            row.protocol,
            row.label(),
            row.objective,
            100.0 * row.accuracy,
            row.macro_f1
        );
    }
    text
}
