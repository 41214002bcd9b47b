//! The test split, sealed. A probe is fitted on train features only; the test features are
//! a [`HeldOut`] that reveals nothing (not even its size) until a fitted [`Classifier`] is
//! handed over, and then only the classifier's predictions come out. Choosing a
//! hyper-parameter on test would need code that cannot be written against this type.

use std::path::PathBuf;

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
