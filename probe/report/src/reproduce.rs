//! The seed's STL-10 results beside a reproduction's: what `make reproduce-seed` prints once
//! the I-JEPA and MAE runs of `configs/stl10-seed.toml` and `configs/stl10-mae-seed.toml`
//! are pre-trained and probed with the seed's recipes (and ours).

use std::path::Path;

use jepa_eval::error::{ProbeError, Result};
use jepa_eval::evaluate::{LINEAR, SEED_FINETUNE, SEED_LINEAR, scan};
use jepa_trainer::{EncoderKind, ReportFile, Run};
use polars::prelude::*;

use crate::compare::training_compute;
use crate::page::{Align, Page};
use crate::report::{SummaryRow, summary_rows};

/// Which of the two runs a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    IJepa,
    Mae,
}

/// One published result and where the reproduction's counterpart is.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub what: &'static str,
    pub side: Side,
    pub encoder: EncoderKind,
    pub probe: &'static str,
    /// The seed's accuracy (a fraction), where it gives one.
    pub accuracy: Option<f64>,
}

/// The seed's downstream table (STL-10, 5,000 labelled → 8,000 test, 15 epochs), and our
/// own linear protocol beside it.
pub const PUBLISHED: [Published; 4] = [
    Published {
        what: "random init, full fine-tune (seed's recipe)",
        side: Side::IJepa,
        encoder: EncoderKind::Random,
        probe: SEED_FINETUNE,
        accuracy: Some(0.4619),
    },
    Published {
        what: "MAE, full fine-tune (seed's recipe)",
        side: Side::Mae,
        encoder: EncoderKind::Pretrained,
        probe: SEED_FINETUNE,
        accuracy: Some(0.7266),
    },
    Published {
        what: "I-JEPA, linear probe (seed's recipe)",
        side: Side::IJepa,
        encoder: EncoderKind::Pretrained,
        probe: SEED_LINEAR,
        accuracy: Some(0.7758),
    },
    Published {
        what: "I-JEPA, linear probe (ours)",
        side: Side::IJepa,
        encoder: EncoderKind::Pretrained,
        probe: LINEAR,
        accuracy: None,
    },
];

/// The seed's pre-training loss at its first and last epoch: I-JEPA, then MAE.
pub const PUBLISHED_LOSSES: [(Side, f64, f64); 2] = [(Side::IJepa, 0.44, 0.32), (Side::Mae, 0.43, 0.21)];

/// A run's mean loss over its first epoch and over its last, and the epochs it ran.
pub fn epoch_losses(run: &Run) -> Result<Option<(f64, f64, u64)>> {
    let path = run.folder.metrics();
    if !path.exists() {
        return Ok(None);
    }
    let what = path.display().to_string();
    let by_epoch = scan(&path)?
        .group_by([col("epoch")])
        .agg([col("loss").mean()])
        .sort(["epoch"], SortMultipleOptions::default())
        .collect()
        .map_err(ProbeError::polars(what.clone()))?;
    let values = |name: &str| -> Result<Vec<f64>> {
        let column =
            by_epoch.column(name).and_then(|c| c.cast(&DataType::Float64)).map_err(ProbeError::polars(what.clone()))?;
        Ok(column.f64().map_err(ProbeError::polars(what.clone()))?.into_no_null_iter().collect())
    };
    let (epochs, losses) = (values("epoch")?, values("loss")?);
    Ok(match (losses.first(), losses.last(), epochs.last()) {
        (Some(first), Some(last), Some(epoch)) => Some((*first, *last, *epoch as u64 + 1)),
        _ => None,
    })
}

/// The run's headline rows, from the summary its report wrote.
fn summary(run: &Run) -> Result<Vec<SummaryRow>> {
    let path = run.folder.report(ReportFile::Summary);
    if !path.exists() {
        return Err(ProbeError::bad(&path, "missing: run `probe report` on the run first"));
    }
    let frame = scan(&path)?.collect().map_err(ProbeError::polars(path.display().to_string()))?;
    summary_rows(&frame)
}

/// The table: each published number beside the measured one (on the protocol that trains on
/// the whole labelled train split), the pre-training losses, and `times` (stage, seconds),
/// as Markdown.
pub fn table(ijepa: &Run, mae: &Run, times: &[(String, f64)]) -> Result<String> {
    let (ijepa_rows, mae_rows) = (summary(ijepa)?, summary(mae)?);
    let percent = |value: Option<f64>| value.map_or("–".to_string(), |value| format!("{:.2}%", 100.0 * value));
    let mut page = Page::default();
    let rows = PUBLISHED
        .iter()
        .map(|published| {
            let rows = match published.side {
                Side::IJepa => &ijepa_rows,
                Side::Mae => &mae_rows,
            };
            let found = rows.iter().find(|row| {
                row.encoder == published.encoder.as_str() && row.probe == published.probe && row.folds <= 1
            });
            vec![
                published.what.to_string(),
                percent(published.accuracy),
                percent(found.map(|row| row.accuracy)),
                found.map_or("–".into(), |row| row.protocol.clone()),
            ]
        })
        .collect();
    page.table(
        &[("result", Align::Left), ("seed", Align::Right), ("measured", Align::Right), ("protocol", Align::Left)],
        rows,
    );
    let mut losses = Vec::new();
    for (side, first, last) in PUBLISHED_LOSSES {
        let run = if side == Side::IJepa { ijepa } else { mae };
        let measured = epoch_losses(run)?;
        let (_, _, seconds) = training_compute(run)?;
        losses.push(vec![
            run.recipe.name().to_string(),
            format!("{first:.2} / {last:.2}"),
            measured.map_or("–".into(), |(first, last, epochs)| {
                format!("{first:.2} / {last:.2} ({epochs} epoch{})", if epochs == 1 { "" } else { "s" })
            }),
            format!("{seconds:.0} s"),
        ]);
    }
    page.table(
        &[
            ("pre-training", Align::Left),
            ("seed loss, epoch 1 / 50", Align::Right),
            ("measured, first / last epoch", Align::Right),
            ("training time", Align::Right),
        ],
        losses,
    );
    if !times.is_empty() {
        let rows = times.iter().map(|(stage, seconds)| vec![stage.clone(), format!("{seconds:.0} s")]).collect();
        page.table(&[("stage", Align::Left), ("wall time", Align::Right)], rows);
    }
    Ok(page.markdown())
}

/// `stage<TAB>seconds` lines, as `make reproduce-seed` appends them; none when `path` is absent.
pub fn read_times(path: &Path) -> Result<Vec<(String, f64)>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (stage, seconds) = line
                .rsplit_once('\t')
                .ok_or_else(|| ProbeError::bad(path, format!("`{line}`: expected stage<TAB>seconds")))?;
            let seconds = seconds
                .trim()
                .parse()
                .map_err(|_| ProbeError::bad(path, format!("`{line}`: `{seconds}` is not a number of seconds")))?;
            Ok((stage.to_string(), seconds))
        })
        .collect()
}
