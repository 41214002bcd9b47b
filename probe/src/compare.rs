//! The method comparison: runs of different methods trained with the same encoder, data,
//! schedule and step budget, each evaluated with the linear probe, kNN and fine-tuning, beside
//! one random-init encoder (the runs share their seed, so they share it).
//!
//! ```text
//! <out>/summary.parquet   method (each run's method, or random), protocol (linear | knn |
//!                         finetune), accuracy, macro_f1, plus task, objective and run
//! <out>/summary.png       accuracy by protocol, one bar per method
//! <out>/compare.md        the same table in Markdown
//! ```
//!
//! Each run keeps its own full report (`<run>/probe/`); the random encoder's results live in
//! the first run's folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use jepa_trainer::{EncoderKind, Run};
use polars::prelude::*;

use crate::error::{ProbeError, Result};
use crate::evaluate::{
    EvaluateOptions, FINETUNE, FinetuneOptions, KNN, LINEAR, evaluate_encoder, run_finetune, write_parquet,
};
use crate::finetune::FinetuneSettings;
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
    /// The run's method (`ijepa`, `mae`, …), or `random`.
    pub method: String,
    /// `linear`, `knn` or `finetune`.
    pub protocol: String,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// The dataset protocol (`fashion-mnist`, `stl10-5k`, …).
    pub task: String,
    /// The pre-training loss the number comes from (`ijepa smooth_l1`, `mae norm_pix`, `none`).
    pub objective: String,
    pub run: String,
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
    let mut evaluations: Vec<(&Run, EncoderKind)> = vec![(first, EncoderKind::Random)];
    evaluations.extend(runs.iter().map(|run| (run, EncoderKind::Pretrained)));
    for (run, encoder_kind) in evaluations {
        evaluate_encoder::<B>(run, encoder_kind, &options.evaluate, device)?;
        let started = Instant::now();
        let finetune_options = FinetuneOptions {
            checkpoint: options.evaluate.features.checkpoint.clone(),
            protocols: options.evaluate.protocols.clone(),
            threads: options.evaluate.features.threads,
            progress: options.evaluate.features.progress,
        };
        run_finetune::<B>(run, encoder_kind, &options.finetune, &finetune_options, device)?;
        if options.evaluate.features.progress {
            let root = run.folder.root().display();
            eprintln!("{root}: fine-tune ({encoder_kind}): {:.1} s", started.elapsed().as_secs_f64());
        }
    }

    let random = EncoderKind::Random.as_str();
    let mut rows = Vec::new();
    for run in runs {
        let report = write_report(run)?;
        let method = run.recipe.method_info();
        for row in report.summary {
            let is_random = row.encoder == random;
            if is_random && !std::ptr::eq(run, first) {
                continue;
            }
            rows.push(CompareRow {
                method: if is_random { random.into() } else { method.name().into() },
                protocol: row.probe.clone(),
                accuracy: row.accuracy,
                macro_f1: row.macro_f1,
                task: row.protocol.clone(),
                objective: if is_random { "none".into() } else { method.objective() },
                run: run.folder.root().display().to_string(),
            });
        }
    }
    // Protocols in the order of the evaluation, methods in the order the runs were given,
    // the random-init encoder last.
    let methods: Vec<&str> = runs.iter().map(|run| run.recipe.method_info().name()).chain([random]).collect();
    let order = |row: &CompareRow| {
        let method = methods.iter().position(|m| *m == row.method).unwrap_or(methods.len());
        let protocol = [LINEAR, KNN, FINETUNE].iter().position(|p| *p == row.protocol).unwrap_or(3);
        (row.task.clone(), protocol, method)
    };
    rows.sort_by_key(order);

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
        .map(|row| plots::Bar { method: &row.method, protocol: &row.protocol, accuracy: row.accuracy })
        .collect();
    plots::comparison_bars(task, &bars, &chart)?;
    let markdown = out.join("compare.md");
    jepa_shared::atomic::write_bytes(&markdown, markdown_table(&rows).as_bytes())?;
    Ok(Comparison { rows, summary, chart, markdown })
}

/// Runs compare only when everything but the method and its own sections is the same.
fn check_comparable(first: &Run, other: &Run) -> Result<()> {
    let (a, b) = (first.recipe.config(), other.recipe.config());
    let differences = [
        ("seed", a.seed != b.seed),
        ("dataset", a.dataset != b.dataset),
        ("encoder", a.encoder != b.encoder),
        ("loader", a.loader != b.loader),
        ("optim", a.optim != b.optim),
        ("data", a.data != b.data),
    ];
    let fields: Vec<&str> = differences.iter().filter(|(_, differ)| *differ).map(|(field, _)| *field).collect();
    if fields.is_empty() {
        return Ok(());
    }
    Err(ProbeError::bad(
        &other.folder.config(),
        format!(
            "differs from {} in {}: a comparison needs the same encoder, data, schedule and budget",
            first.folder.config().display(),
            fields.join(", ")
        ),
    ))
}

fn frame(rows: &[CompareRow]) -> PolarsResult<DataFrame> {
    df!(
        "method" => rows.iter().map(|row| row.method.clone()).collect::<Vec<_>>(),
        "protocol" => rows.iter().map(|row| row.protocol.clone()).collect::<Vec<_>>(),
        "accuracy" => rows.iter().map(|row| row.accuracy).collect::<Vec<_>>(),
        "macro_f1" => rows.iter().map(|row| row.macro_f1).collect::<Vec<_>>(),
        "task" => rows.iter().map(|row| row.task.clone()).collect::<Vec<_>>(),
        "objective" => rows.iter().map(|row| row.objective.clone()).collect::<Vec<_>>(),
        "run" => rows.iter().map(|row| row.run.clone()).collect::<Vec<_>>(),
    )
}

/// The comparison as a Markdown table.
pub fn markdown_table(rows: &[CompareRow]) -> String {
    let mut text =
        String::from("| task | protocol | method | objective | accuracy | macro F1 |\n|---|---|---|---|---:|---:|\n");
    for row in rows {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {:.2}% | {:.4} |",
            row.task,
            row.protocol,
            row.method,
            row.objective,
            100.0 * row.accuracy,
            row.macro_f1
        );
    }
    text
}
