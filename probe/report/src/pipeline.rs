//! The whole evaluation of one run, as `probe all` and `make demo` run it: features for the
//! trained encoder (and, beside an EMA target encoder, the context encoder it was trained
//! from), the random-init encoder and the raw pixels, the linear probe and kNN on each, the
//! figures, then the report page that shows them all.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use jepa_eval::error::Result;
use jepa_eval::evaluate::{EvaluateOptions, evaluate_encoder};
use jepa_trainer::EncoderRole;
use jepa_trainer::{ReportFile, Run};

use crate::mask_figure::{self, MASK_IMAGES};
use crate::report::{Report, write_report};
use crate::retrieval;
use crate::tsne::{self, TsneSettings};

/// A figure drawn, how long it took, and what it found.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub path: PathBuf,
    pub seconds: f64,
    pub note: String,
}

/// What `probe all` produced.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub report: Report,
    pub figures: Vec<Drawn>,
}

/// Features for every encoder of the run and the pixels, linear probe and kNN on each, the
/// figures, then the report.
pub fn evaluate_all<B: AutodiffBackend>(
    run: &Run,
    options: &EvaluateOptions,
    device: &B::Device,
) -> Result<Evaluation> {
    for encoder in run.encoder_kinds() {
        evaluate_encoder::<B>(run, encoder, options, device)?;
    }
    draw_figures::<B>(run, device)
}

/// The masks, t-SNE and (for a method that predicts its teacher's features) predictor-retrieval
/// figures of a run whose features exist, then the report page with them.
pub fn draw_figures<B: AutodiffBackend>(run: &Run, device: &B::Device) -> Result<Evaluation> {
    let mut figures = Vec::new();
    let timed = |file: ReportFile, draw: &mut dyn FnMut() -> Result<String>| -> Result<Drawn> {
        let started = Instant::now();
        let note = draw()?;
        Ok(Drawn { path: run.folder.report(file), seconds: started.elapsed().as_secs_f64(), note })
    };
    if !run.is_imported() {
        figures.push(timed(ReportFile::Masks, &mut || {
            mask_figure::draw(&run.recipe, MASK_IMAGES, &run.folder.report(ReportFile::Masks))?;
            Ok(format!("{MASK_IMAGES} test images"))
        })?);
    }
    figures.push(timed(ReportFile::Tsne, &mut || {
        let embedded = tsne::write(run, &TsneSettings::default())?;
        Ok(embedded
            .iter()
            .map(|e| format!("{} {} points in {:.1} s", e.encoder, e.points.len(), e.seconds))
            .collect::<Vec<_>>()
            .join(", "))
    })?);
    if has_predictor(run) {
        figures.push(timed(ReportFile::Retrieval, &mut || {
            let scores = retrieval::write::<B>(run, device)?.scores;
            Ok(scores
                .iter()
                .map(|s| {
                    format!("{} predictor top-1 {:.1}%, top-5 {:.1}%", s.predictor, 100.0 * s.top1, 100.0 * s.top5)
                })
                .collect::<Vec<_>>()
                .join("; "))
        })?);
    }
    Ok(Evaluation { report: write_report(run)?, figures })
}

/// Whether the run has a predictor of its teacher's features to ask (a trained I-JEPA run).
pub fn has_predictor(run: &Run) -> bool {
    !run.is_imported() && run.evaluated_role() == EncoderRole::Teacher
}
