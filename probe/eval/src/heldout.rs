//! The test split, sealed. A probe is fitted on train features only; the test features are
//! a [`HeldOut`] that reveals nothing (not even its size) until a fitted [`Classifier`] is
//! handed over, and then only the classifier's predictions come out. Choosing a
//! hyper-parameter on test would need code that cannot be written against this type.
//!
//! Predictions become a polars frame ([`predictions_frame`]) with the columns of
//! [`TaskLabel`] and `id`, `label`, `predicted`: what every score is computed from.

use std::path::PathBuf;

use polars::prelude::*;

use crate::error::Result;
use crate::features::FeatureTable;

/// Anything that maps features to class predictions, fitted before it meets the test split.
pub trait Classifier {
    fn predict(&self, features: &FeatureTable) -> Vec<i32>;
}

/// Labels and predictions of one evaluation, row-aligned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predictions {
    pub ids: Vec<u64>,
    pub labels: Vec<i32>,
    pub predicted: Vec<i32>,
}

impl Predictions {
    pub fn accuracy(&self) -> f64 {
        let correct = self.labels.iter().zip(&self.predicted).filter(|(label, predicted)| label == predicted).count();
        correct as f64 / self.labels.len().max(1) as f64
    }
}

/// The test features, read only by [`HeldOut::evaluate`].
pub struct HeldOut {
    path: PathBuf,
}

impl HeldOut {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Reads the test features and returns `classifier`'s predictions on them.
    pub fn evaluate(&self, classifier: &dyn Classifier) -> Result<Predictions> {
        let test = FeatureTable::read(&self.path)?;
        let predicted = classifier.predict(&test);
        Ok(Predictions { ids: test.ids, labels: test.labels, predicted })
    }
}

/// Who made a set of predictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLabel {
    pub encoder: String,
    /// Which of the run's checkpoints the encoder came from (`step-00000150`), or `init`,
    /// `imported`, `none` (the pixels).
    pub checkpoint: String,
    pub probe: String,
    pub protocol: String,
    pub fold: Option<u32>,
}

/// The predictions frame for one or more evaluations.
pub fn predictions_frame(evaluations: &[(TaskLabel, Predictions)]) -> PolarsResult<DataFrame> {
    let rows: usize = evaluations.iter().map(|(_, predictions)| predictions.ids.len()).sum();
    let mut encoder = Vec::with_capacity(rows);
    let mut checkpoint = Vec::with_capacity(rows);
    let mut probe = Vec::with_capacity(rows);
    let mut protocol = Vec::with_capacity(rows);
    let mut fold = Vec::with_capacity(rows);
    let (mut ids, mut labels, mut predicted) = (Vec::new(), Vec::new(), Vec::new());
    for (task, predictions) in evaluations {
        let count = predictions.ids.len();
        encoder.extend(std::iter::repeat_n(task.encoder.as_str(), count));
        checkpoint.extend(std::iter::repeat_n(task.checkpoint.as_str(), count));
        probe.extend(std::iter::repeat_n(task.probe.as_str(), count));
        protocol.extend(std::iter::repeat_n(task.protocol.as_str(), count));
        fold.extend(std::iter::repeat_n(task.fold.map(|fold| fold as i32), count));
        ids.extend_from_slice(&predictions.ids);
        labels.extend_from_slice(&predictions.labels);
        predicted.extend_from_slice(&predictions.predicted);
    }
    df!(
        "encoder" => encoder,
        "checkpoint" => checkpoint,
        "probe" => probe,
        "protocol" => protocol,
        "fold" => fold,
        "id" => ids,
        "label" => labels,
        "predicted" => predicted,
    )
}
