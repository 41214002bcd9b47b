//! The report: every probe's predictions of a run, queried with polars into
//! `runs/<name>/probe/{predictions,summary,per_task,per_class,confusion}.parquet`, its plots,
//! and one page, `report.md` and a self-contained `report.html`, that shows them with every
//! figure the probe drew for the run.
//!
//! `summary.parquet` holds the headline numbers, one row per (encoder, probe, protocol):
//! `accuracy` and `macro_f1` as fractions (means over folds where a protocol has folds),
//! `accuracy_std`, `macro_f1_std` and `folds`.

use std::path::{Path, PathBuf};

use jepa_eval::error::{ProbeError, Result};
use jepa_eval::evaluate::{
    FINETUNE, KNN, LINEAR, SEED_FINETUNE, SEED_LINEAR, count_rows, manifest, scan, write_parquet,
};
use jepa_eval::protocol::{TEST_SPLIT, TRAIN_SPLIT};
use jepa_eval::scores;
use jepa_trainer::{EncoderKind, ReportFile, Run};
use polars::prelude::*;

use crate::page::{Align, Page};
use crate::plots::{self, Plots};

/// One headline number, as `summary.parquet` holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub encoder: String,
    /// Which checkpoint the encoder came from (`step-00000150`, `init`, `imported`, `none`).
    pub checkpoint: String,
    pub probe: String,
    pub protocol: String,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub accuracy_std: Option<f64>,
    pub folds: i32,
}

/// What `report` wrote.
#[derive(Debug, Clone)]
pub struct Report {
    pub summary: Vec<SummaryRow>,
    /// Said when the trained encoders' results come from more than one checkpoint.
    pub mixed_checkpoints: Option<String>,
    pub markdown: PathBuf,
    /// The same page, self-contained.
    pub html: PathBuf,
}

impl Report {
    /// The pass/fail rule of `probe all --require-pretrained-better`: in every protocol the
    /// pretrained encoder's linear-probe accuracy exceeds the random-init encoder's.
    pub fn pretrained_beats_random(&self) -> Result<()> {
        let failed = |problem: String| Err(ProbeError::bad(&self.markdown, problem));
        let linear = |encoder: EncoderKind, protocol: &str| {
            self.summary
                .iter()
                .find(|row| row.encoder == encoder.as_str() && row.probe == LINEAR && row.protocol == protocol)
        };
        let mut protocols: Vec<&str> = self.summary.iter().map(|row| row.protocol.as_str()).collect();
        protocols.dedup();
        for protocol in protocols {
            let Some(pretrained) = linear(EncoderKind::Pretrained, protocol) else {
                return failed(format!("{protocol}: no pretrained linear-probe result"));
            };
            let Some(random) = linear(EncoderKind::Random, protocol) else {
                return failed(format!("{protocol}: no random-init linear-probe result"));
            };
            if pretrained.accuracy <= random.accuracy {
                return failed(format!(
                    "{protocol}: the pretrained encoder's linear-probe accuracy {:.2}% does not beat the \
                     random-init encoder's {:.2}%",
                    100.0 * pretrained.accuracy,
                    100.0 * random.accuracy
                ));
            }
        }
        Ok(())
    }
}

fn collect(frame: LazyFrame, what: &str) -> Result<DataFrame> {
    frame.collect().map_err(ProbeError::polars(what.to_string()))
}

/// Every predictions file of the run, as one frame.
pub fn all_predictions(run: &Run) -> Result<LazyFrame> {
    let folder = run.folder.predictions_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .map_err(|_| ProbeError::bad(&folder, "missing: run `probe linear` or `probe knn` first"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "parquet"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ProbeError::bad(&folder, "holds no predictions: run `probe linear` or `probe knn` first"));
    }
    let frames = files.iter().map(|path| scan_predictions(path)).collect::<Result<Vec<_>>>()?;
    concat(frames, UnionArgs::default()).map_err(ProbeError::polars(folder.display().to_string()))
}

/// One predictions file in the frame's columns; a file written before checkpoints were
/// named gets `unrecorded`.
fn scan_predictions(path: &Path) -> Result<LazyFrame> {
    let mut frame = scan(path)?;
    let schema = frame.collect_schema().map_err(ProbeError::polars(path.display().to_string()))?;
    if !schema.contains("checkpoint") {
        frame = frame.with_column(lit("unrecorded").alias("checkpoint"));
    }
    let columns = ["encoder", "checkpoint", "probe", "protocol", "fold", "id", "label", "predicted"];
    Ok(frame.select(columns.map(col)))
}

pub fn summary_rows(summary: &DataFrame) -> Result<Vec<SummaryRow>> {
    let text = |name: &str| -> Result<Vec<String>> {
        Ok(summary
            .column(name)
            .and_then(|column| column.str().cloned())
            .map_err(ProbeError::polars(format!("summary column `{name}`")))?
            .iter()
            .map(|value| value.unwrap_or_default().to_string())
            .collect())
    };
    let number = |name: &str| -> Result<Vec<Option<f64>>> {
        Ok(summary
            .column(name)
            .and_then(|column| column.cast(&DataType::Float64))
            .map_err(ProbeError::polars(format!("summary column `{name}`")))?
            .f64()
            .map_err(ProbeError::polars(format!("summary column `{name}`")))?
            .iter()
            .collect())
    };
    let (encoder, probe, protocol) = (text("encoder")?, text("probe")?, text("protocol")?);
    // A summary written before checkpoints were named has none to give.
    let checkpoint = match summary.column("checkpoint") {
        Ok(_) => text("checkpoint")?,
        Err(_) => vec!["unrecorded".to_string(); summary.height()],
    };
    let (accuracy, macro_f1, accuracy_std, folds) =
        (number("accuracy")?, number("macro_f1")?, number("accuracy_std")?, number("folds")?);
    Ok((0..summary.height())
        .map(|row| SummaryRow {
            encoder: encoder[row].clone(),
            checkpoint: checkpoint[row].clone(),
            probe: probe[row].clone(),
            protocol: protocol[row].clone(),
            accuracy: accuracy[row].unwrap_or(f64::NAN),
            macro_f1: macro_f1[row].unwrap_or(f64::NAN),
            accuracy_std: accuracy_std[row],
            folds: folds[row].unwrap_or(1.0) as i32,
        })
        .collect())
}

/// The headline table as Markdown.
pub fn summary_table(rows: &[SummaryRow]) -> String {
    let mut page = Page::default();
    add_summary(&mut page, rows);
    page.markdown().trim_end().to_string() + "\n"
}

/// Writes the report's Parquet files, `report.md` and the plots.
pub fn write_report(run: &Run) -> Result<Report> {
    let out = |file: ReportFile| run.folder.report(file);
    let manifest = manifest(run)?;
    let predictions = all_predictions(run)?;
    let class_names = df!(
        "class" => (0..manifest.class_names.len() as i32).collect::<Vec<_>>(),
        "class_name" => manifest.class_names.clone(),
    )
    .map_err(ProbeError::polars("class names"))?;

    let mut all = collect(
        predictions.clone().sort(["encoder", "probe", "protocol", "fold", "id"], SortMultipleOptions::default()),
        "predictions",
    )?;
    write_parquet(&out(ReportFile::Predictions), &mut all)?;
    let predictions = all.lazy();
    let mut summary = collect(scores::summary(predictions.clone()), "summary")?;
    write_parquet(&out(ReportFile::Summary), &mut summary)?;
    let mut per_task = collect(scores::per_task(predictions.clone()), "per-task scores")?;
    write_parquet(&out(ReportFile::PerTask), &mut per_task)?;
    let mut per_class = collect(
        scores::per_class(predictions.clone()).join(
            class_names.lazy(),
            [col("class")],
            [col("class")],
            JoinArgs::new(JoinType::Left),
        ),
        "per-class scores",
    )?;
    write_parquet(&out(ReportFile::PerClass), &mut per_class)?;
    let mut confusion = collect(scores::confusion(predictions), "confusion matrix")?;
    write_parquet(&out(ReportFile::Confusion), &mut confusion)?;

    let mut rows = summary_rows(&summary)?;
    rows.sort_by_key(|row| {
        let encoder = EncoderKind::ALL.iter().position(|kind| kind.as_str() == row.encoder).unwrap_or(usize::MAX);
        (row.protocol.clone(), row.probe.clone(), encoder)
    });
    let metrics = read_metrics(run)?;
    let plots = Plots {
        training_curves: out(ReportFile::TrainingCurves),
        confusion: out(ReportFile::ConfusionMatrix),
        per_class: out(ReportFile::PerClassAccuracy),
    };
    plots::draw_all(&plots, metrics.as_ref(), &per_class, &confusion, &manifest.class_names)?;
    let mixed_checkpoints = mixed_checkpoints(&rows);
    let page = page(run, &rows, mixed_checkpoints.as_deref(), &per_class, metrics.as_ref())?;
    let (markdown, html) = (out(ReportFile::Markdown), out(ReportFile::Html));
    page.write(&format!("{}: frozen-encoder evaluation", run.recipe.name()), &markdown, &html)?;
    Ok(Report { summary: rows, mixed_checkpoints, markdown, html })
}

/// A sentence naming the checkpoints, when the trained encoders' rows come from more than
/// one (features or probes written by separate commands while the run trained on): those
/// rows compare encoders at different points of training.
fn mixed_checkpoints(rows: &[SummaryRow]) -> Option<String> {
    let trained = [EncoderKind::Pretrained.as_str(), EncoderKind::Context.as_str()];
    let mut seen: Vec<(&str, &str, &str)> = Vec::new();
    for row in rows.iter().filter(|row| trained.contains(&row.encoder.as_str())) {
        let key = (row.checkpoint.as_str(), row.encoder.as_str(), row.probe.as_str());
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    let mut checkpoints: Vec<&str> = seen.iter().map(|(checkpoint, ..)| *checkpoint).collect();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    if checkpoints.len() < 2 {
        return None;
    }
    let each: Vec<String> =
        seen.iter().map(|(checkpoint, encoder, probe)| format!("{encoder} {probe} from {checkpoint}")).collect();
    Some(format!(
        "Not one checkpoint: {}. These rows compare encoders at different points of training; run `probe all` \
         for one evaluation of one checkpoint.",
        each.join(", ")
    ))
}

/// `columns` of the chosen row of the first encoder's `probe` search table (for a task
/// without folds where there is one), read at once; `None` when the run has no such table
/// or it lacks one of them. What the page says of a probe's settings is read from what the
/// probe wrote.
fn chosen_settings<const N: usize>(run: &Run, probe: &str, columns: [&str; N]) -> Result<Option<[f64; N]>> {
    let Some(path) =
        EncoderKind::ALL.iter().map(|&encoder| run.folder.selection(encoder, probe)).find(|path| path.exists())
    else {
        return Ok(None);
    };
    let chosen = collect(
        scan(&path)?.filter(col("chosen")).sort(["fold"], SortMultipleOptions::default().with_nulls_last(false)),
        &path.display().to_string(),
    )?;
    let first = |name: &str| {
        chosen
            .column(name)
            .ok()
            .and_then(|values| values.cast(&DataType::Float64).ok())
            .and_then(|values| values.f64().ok().and_then(|values| values.get(0)))
    };
    let values: Option<Vec<f64>> = columns.iter().map(|name| first(name)).collect();
    Ok(values.and_then(|values| values.try_into().ok()))
}

/// The run's `metrics.parquet`, when it has one.
fn read_metrics(run: &Run) -> Result<Option<DataFrame>> {
    let path = run.folder.metrics();
    if !path.exists() {
        return Ok(None);
    }
    collect(scan(&path)?, &path.display().to_string()).map(Some)
}

/// `rows × dim` of a features file, with a polars query (the dim comes from the schema:
/// the `feature` column reads as `Array(Float32, dim)`).
fn feature_shape(path: &Path) -> Result<(u64, usize)> {
    let mut frame = scan(path)?;
    let schema = frame.collect_schema().map_err(ProbeError::polars(path.display().to_string()))?;
    let dim = match schema.get("feature") {
        Some(DataType::Array(_, dim)) => *dim,
        other => return Err(ProbeError::bad(path, format!("`feature` is {other:?}, expected Array(Float32, dim)"))),
    };
    Ok((count_rows(frame, "feature rows")?, dim))
}

/// Steps, loss and collapse check from the run's metrics table.
fn training_lines(method: &str, metrics: Option<&DataFrame>) -> Result<Vec<String>> {
    let Some(frame) = metrics else { return Ok(vec!["No `metrics.parquet` in the run folder.".into()]) };
    // A method without a teacher has no feature spread to report.
    let has_std = frame.column("target_feature_std").is_ok();
    let mut columns = vec![
        len().alias("steps"),
        col("loss").first().alias("first_loss"),
        col("loss").tail(Some(50)).mean().alias("last_loss"),
        col("images_per_second").median().alias("images_per_second"),
    ];
    if has_std {
        columns.push(col("target_feature_std").min().alias("std_min"));
        columns.push(col("target_feature_std").max().alias("std_max"));
    }
    let stats = collect(frame.clone().lazy().select(columns), "training metrics")?;
    let value = |name: &str| {
        stats
            .column(name)
            .ok()
            .and_then(|column| column.cast(&DataType::Float64).ok())
            .and_then(|column| column.f64().ok().and_then(|values| values.get(0)))
    };
    let spread = if has_std {
        format!(
            " target-feature std {:.2}–{:.2} (no collapse where it stays well above 0);",
            value("std_min").unwrap_or(f64::NAN),
            value("std_max").unwrap_or(f64::NAN)
        )
    } else {
        String::new()
    };
    Ok(vec![format!(
        "{method} {} optimizer steps; loss {:.3} at the first step, {:.3} over the last 50;{spread} median {:.0} images/s.",
        value("steps").unwrap_or(0.0),
        value("first_loss").unwrap_or(f64::NAN),
        value("last_loss").unwrap_or(f64::NAN),
        value("images_per_second").unwrap_or(f64::NAN),
    )])
}

/// The figures a page shows, in order, with their captions.
fn figure_captions(run: &Run) -> Vec<(ReportFile, String)> {
    let method = run.recipe.method_info().name();
    vec![
        (ReportFile::Masks, format!("The run's {method} masks over test images, drawn by its own sampler and seed.")),
        (ReportFile::TrainingCurves, "Training curves against the optimizer step.".into()),
        (
            ReportFile::ConfusionMatrix,
            "Linear-probe confusion matrix of the pretrained encoder (rows: true class).".into(),
        ),
        (ReportFile::PerClassAccuracy, "Per-class linear-probe accuracy, pretrained against random-init.".into()),
        (
            ReportFile::Tsne,
            "t-SNE of the frozen test features (Barnes-Hut, perplexity 30), pretrained beside random-init.".into(),
        ),
        (
            ReportFile::Retrieval,
            "What the predictor imagines: each predicted feature shown as its cosine-nearest patch among every patch \
             of 200 other test images, embedded by the target encoder."
                .into(),
        ),
        (ReportFile::Reconstruction, "Reconstructions of test images from their context.".into()),
    ]
}

fn page(
    run: &Run,
    rows: &[SummaryRow],
    mixed_checkpoints: Option<&str>,
    per_class: &DataFrame,
    metrics: Option<&DataFrame>,
) -> Result<Page> {
    let mut page = Page::default();
    title(&mut page, run);
    headline(&mut page, run, rows, mixed_checkpoints)?;
    predictor_retrieval(&mut page, run)?;
    features(&mut page, run)?;
    linear_selection(&mut page, run)?;
    knn_centring(&mut page, run)?;
    per_class_accuracy(&mut page, rows, per_class)?;
    page.heading(2, "Training");
    for line in training_lines(run.recipe.method_info().name(), metrics)? {
        page.paragraph(line);
    }
    page.heading(2, "Figures");
    for (file, caption) in figure_captions(run) {
        page.figure(run.folder.report(file), caption);
    }
    page.heading(2, "Config");
    page.code("The run's config, every default filled in", run.recipe.to_toml());
    Ok(page)
}

/// The run in one line: encoder geometry, dataset and method.
fn title(page: &mut Page, run: &Run) {
    let config = run.recipe.config();
    let vit = run.recipe.encoder();
    let method = run.recipe.method_info();
    page.heading(1, format!("{}: frozen-encoder evaluation", config.name));
    page.paragraph(format!(
        "Encoder: ViT `{}` (dim {}, depth {}, heads {}) at {} px with {} px patches, {} channel(s); \
         dataset `{}`; method `{}` (`{}`).",
        config.encoder.preset,
        vit.dim,
        vit.depth,
        vit.heads,
        vit.image_size_px,
        vit.patch_size_px,
        vit.channels,
        config.dataset.display(),
        method.name(),
        method.objective(),
    ));
}

/// The headline table, then what each encoder and probe is, with the settings the probes
/// recorded in their search tables.
fn headline(page: &mut Page, run: &Run, rows: &[SummaryRow], mixed_checkpoints: Option<&str>) -> Result<()> {
    let method = run.recipe.method_info();
    page.heading(2, "Headline");
    add_summary(page, rows);
    if let Some(warning) = mixed_checkpoints {
        page.paragraph(format!("**{warning}**"));
    }
    let pretrained = if run.is_imported() {
        format!("the encoder imported into `{}`", run.folder.imported_encoder().display())
    } else {
        method.evaluated_description().to_string()
    };
    let context = match (rows.iter().any(|row| row.encoder == EncoderKind::Context.as_str()), mixed_checkpoints) {
        (false, _) => "",
        (true, None) => "; `context` the encoder the optimizer trained, from the same checkpoint",
        (true, Some(_)) => "; `context` the encoder the optimizer trained",
    };
    let held_out = |probe: &str| -> Result<String> {
        Ok(match chosen_settings(run, probe, ["validation_rows", "fit_rows"])? {
            Some([validation, fit]) => format!(
                "{validation} of train's {} images ({:.0}%) held out",
                validation + fit,
                100.0 * validation / (validation + fit).max(1.0)
            ),
            None => "a validation part of train".into(),
        })
    };
    let knn = match chosen_settings(run, KNN, ["k", "temperature"])? {
        // Written from an f32: shown as the f32 it was.
        Some([k, temperature]) => format!("k = {k}, votes exp(sim / {})", temperature as f32),
        None => "k and vote temperature not recorded".into(),
    };
    page.paragraph(format!(
        "`pretrained` is {pretrained}{context}; `random` the same config from the run's seed, never \
         trained; `pixels` the image itself at the encoder's resolution (or its stored one, if smaller), \
         standardised per channel, with no encoder at all. Linear: softmax regression on standardised \
         features, learning rate and weight decay chosen on {} (the grid widened past any edge the best pair \
         sat on), retrained on all of train, evaluated once on test. kNN: cosine, {knn}, centred on the train \
         mean or not as chosen on {}. Fine-tune (where run): encoder and linear head trained end to end, \
         learning rate and epochs chosen on {}, evaluated once on test.",
        held_out(LINEAR)?,
        held_out(KNN)?,
        held_out(FINETUNE)?,
    ));

    if rows.iter().any(|row| [SEED_LINEAR, SEED_FINETUNE].contains(&row.probe.as_str())) {
        page.paragraph(
            "`linear-seed` and `finetune-seed`: the seed's published recipes, nothing chosen. A `Linear(dim, \
             classes)` head on the average-pooled tokens (the features as they are), initialised as PyTorch does; \
             AdamW at PyTorch's defaults, learning rate 1e-3, weight decay 0.05, batches of 256, warmed up from 0 \
             over 5 epochs then along a cosine to 1e-5; trained on all of train, evaluated once on test. \
             `finetune-seed` trains every weight of the encoder too."
                .to_string(),
        );
    }
    Ok(())
}

/// How often the predictor's guesses retrieve the true patch (feature-predicting methods).
fn predictor_retrieval(page: &mut Page, run: &Run) -> Result<()> {
    let retrieval = crate::retrieval::read_scores(run)?;
    if !retrieval.is_empty() {
        page.heading(2, "Predictor retrieval");
        page.table(
            &[
                ("predictor", Align::Left),
                ("checkpoint", Align::Left),
                ("top-1", Align::Right),
                ("top-5", Align::Right),
                ("mean rank", Align::Right),
                ("predicted patches", Align::Right),
                ("candidates", Align::Right),
            ],
            retrieval
                .iter()
                .map(|score| {
                    vec![
                        score.predictor.clone(),
                        score.checkpoint.clone(),
                        format!("{:.2}%", 100.0 * score.top1),
                        format!("{:.2}%", 100.0 * score.top5),
                        format!("{:.0}", score.mean_rank),
                        score.predictions.to_string(),
                        score.candidates.to_string(),
                    ]
                })
                .collect(),
        );
        page.paragraph(format!(
            "For every predicted target patch of {} held-out test images, whether the target encoder's feature of \
             the true patch is the cosine-nearest (top-1) or among the five nearest (top-5) of all {} patches of \
             those images, and its mean rank among them (0: the nearest). `random` is the run's step-0 context encoder and predictor against the same trained \
             target encoder; chance is {:.3}% top-1.",
            retrieval[0].images,
            retrieval[0].candidates,
            100.0 / retrieval[0].candidates.max(1) as f64
        ));
    }
    Ok(())
}

/// Each feature file: rows, width and the checkpoint it came from.
fn features(page: &mut Page, run: &Run) -> Result<()> {
    page.heading(2, "Features");
    let mut feature_rows = Vec::new();
    for encoder in EncoderKind::ALL {
        for split in [TRAIN_SPLIT, TEST_SPLIT] {
            let path = run.folder.features(encoder, split);
            if path.exists() {
                let (count, dim) = feature_shape(&path)?;
                let source =
                    jepa_eval::features::read_metadata(&path)?.get("checkpoint").cloned().unwrap_or("init".into());
                feature_rows.push(vec![
                    encoder.to_string(),
                    split.to_string(),
                    count.to_string(),
                    dim.to_string(),
                    source,
                ]);
            }
        }
    }
    page.table(
        &[
            ("encoder", Align::Left),
            ("split", Align::Left),
            ("rows", Align::Right),
            ("dim", Align::Right),
            ("from", Align::Left),
        ],
        feature_rows,
    );
    Ok(())
}

/// The linear probe's chosen pair per task, from its search tables.
fn linear_selection(page: &mut Page, run: &Run) -> Result<()> {
    page.heading(2, "Linear-probe selection");
    let mut selection_rows = Vec::new();
    for encoder in EncoderKind::ALL {
        let path = run.folder.selection(encoder, LINEAR);
        if !path.exists() {
            continue;
        }
        // Each chosen pair with the number of pairs its task's search tried.
        let tried = len().over([col("protocol"), col("fold")]).map_err(ProbeError::polars("selection"))?;
        let chosen = collect(
            scan(&path)?
                .with_column(tried.alias("tried"))
                .filter(col("chosen"))
                .sort(["protocol", "fold"], SortMultipleOptions::default()),
            "selection",
        )?;
        for row in 0..chosen.height() {
            let cell = |name: &str| {
                chosen
                    .column(name)
                    .ok()
                    .and_then(|column| column.get(row).ok())
                    .map(|value| value.to_string())
                    .unwrap_or_default()
            };
            let number = |name: &str| {
                chosen
                    .column(name)
                    .ok()
                    .and_then(|column| column.get(row).ok())
                    .and_then(|value| value.extract::<f64>())
                    .unwrap_or(f64::NAN)
            };
            let fold = cell("fold");
            // A table written before checkpoints were named has none to show.
            let checkpoint = match cell("checkpoint").trim_matches('"') {
                "" => "unrecorded".to_string(),
                name => name.to_string(),
            };
            selection_rows.push(vec![
                encoder.to_string(),
                checkpoint,
                cell("protocol").trim_matches('"').to_string(),
                if fold == "null" { "–".into() } else { fold },
                format!("{:e}", number("learning_rate")),
                format!("{:e}", number("weight_decay")),
                format!("{:.2}%", 100.0 * number("validation_accuracy")),
                match cell("edge").trim_matches('"') {
                    "null" | "" => "inside".to_string(),
                    edge => format!("edge: {edge}"),
                },
                format!("{}", number("tried")),
            ]);
        }
    }
    page.table(
        &[
            ("encoder", Align::Left),
            ("checkpoint", Align::Left),
            ("protocol", Align::Left),
            ("fold", Align::Right),
            ("lr", Align::Right),
            ("weight decay", Align::Right),
            ("validation accuracy", Align::Right),
            ("grid", Align::Left),
            ("pairs tried", Align::Right),
        ],
        selection_rows,
    );
    page.paragraph(
        "The grid starts at the probe's settings and grows a step past any edge the best pair sits on, a few \
         times per side; `edge` says the best pair was still on one when it stopped. Zero weight decay is the \
         floor of its axis.",
    );
    Ok(())
}

/// kNN with and without centring, per task, from its search tables.
fn knn_centring(page: &mut Page, run: &Run) -> Result<()> {
    page.heading(2, "kNN centring");
    let mut centring_rows = Vec::new();
    for encoder in EncoderKind::ALL {
        let path = run.folder.selection(encoder, KNN);
        if !path.exists() {
            continue;
        }
        let search = collect(
            scan(&path)?.sort(["protocol", "fold", "centre"], SortMultipleOptions::default()),
            "kNN selection",
        )?;
        let centre = search.column("centre").ok().and_then(|c| c.bool().ok().cloned());
        let accuracy = search.column("validation_accuracy").ok().and_then(|c| c.f64().ok().cloned());
        let chosen = search.column("chosen").ok().and_then(|c| c.bool().ok().cloned());
        let protocol = search.column("protocol").ok().and_then(|c| c.str().ok().cloned());
        let checkpoint = search.column("checkpoint").ok().and_then(|c| c.str().ok().cloned());
        let (Some(centre), Some(accuracy), Some(chosen), Some(protocol)) = (centre, accuracy, chosen, protocol) else {
            return Err(ProbeError::bad(&path, "expected protocol, centre, validation_accuracy and chosen columns"));
        };
        for row in 0..search.height() {
            centring_rows.push(vec![
                encoder.to_string(),
                checkpoint.as_ref().and_then(|names| names.get(row)).unwrap_or("unrecorded").to_string(),
                protocol.get(row).unwrap_or_default().to_string(),
                if centre.get(row).unwrap_or(false) { "train mean" } else { "none" }.to_string(),
                format!("{:.2}%", 100.0 * accuracy.get(row).unwrap_or(f64::NAN)),
                if chosen.get(row).unwrap_or(false) { "chosen" } else { "" }.to_string(),
            ]);
        }
    }
    page.table(
        &[
            ("encoder", Align::Left),
            ("checkpoint", Align::Left),
            ("protocol", Align::Left),
            ("centring", Align::Left),
            ("validation accuracy", Align::Right),
            ("", Align::Left),
        ],
        centring_rows,
    );
    Ok(())
}

/// The linear probe's recall per class, one column per encoder in the headline's order.
fn per_class_accuracy(page: &mut Page, rows: &[SummaryRow], per_class: &DataFrame) -> Result<()> {
    page.heading(2, "Per-class accuracy (linear probe)");
    let per_class_linear = collect(
        per_class
            .clone()
            .lazy()
            .filter(col("probe").eq(lit(LINEAR)))
            .group_by([col("protocol"), col("class"), col("class_name"), col("encoder")])
            .agg([col("recall").mean()])
            .sort(["protocol", "class", "encoder"], SortMultipleOptions::default()),
        "per-class accuracy",
    )?;
    // One column per encoder the run evaluated, in the headline's order.
    let encoders: Vec<EncoderKind> =
        EncoderKind::ALL.into_iter().filter(|kind| rows.iter().any(|row| row.encoder == kind.as_str())).collect();
    let mut cells: std::collections::BTreeMap<(String, i64, String), Vec<Option<f64>>> = Default::default();
    for row in 0..per_class_linear.height() {
        let get = |name: &str| {
            per_class_linear.column(name).ok().and_then(|column| column.get(row).ok().map(|v| v.into_static()))
        };
        let protocol = get("protocol").map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
        let class = get("class").and_then(|v| v.extract::<i64>()).unwrap_or(-1);
        let name = get("class_name").map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
        let encoder = get("encoder").map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
        let recall = get("recall").and_then(|v| v.extract::<f64>());
        let Some(slot) = encoders.iter().position(|kind| kind.as_str() == encoder) else { continue };
        cells.entry((protocol, class, name)).or_insert_with(|| vec![None; encoders.len()])[slot] = recall;
    }
    let show = |value: &Option<f64>| value.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or("–".into());
    let mut columns = vec![("protocol", Align::Left), ("class", Align::Left)];
    columns.extend(encoders.iter().map(|kind| (kind.as_str(), Align::Right)));
    page.table(
        &columns,
        cells
            .iter()
            .map(|((protocol, class, name), recalls)| {
                let mut cells = vec![protocol.clone(), format!("{class} {name}")];
                cells.extend(recalls.iter().map(show));
                cells
            })
            .collect(),
    );
    Ok(())
}

/// The headline table as a block of `page`.
fn add_summary(page: &mut Page, rows: &[SummaryRow]) {
    page.table(
        &[
            ("protocol", Align::Left),
            ("probe", Align::Left),
            ("encoder", Align::Left),
            ("checkpoint", Align::Left),
            ("accuracy", Align::Right),
            ("macro F1", Align::Right),
        ],
        rows.iter().map(summary_cells).collect(),
    );
}

fn summary_cells(row: &SummaryRow) -> Vec<String> {
    let spread = row.accuracy_std.map(|std| format!(" ± {:.2}", 100.0 * std)).unwrap_or_default();
    vec![
        row.protocol.clone(),
        row.probe.clone(),
        row.encoder.clone(),
        row.checkpoint.clone(),
        format!("{:.2}%{spread}", 100.0 * row.accuracy),
        format!("{:.4}", row.macro_f1),
    ]
}
