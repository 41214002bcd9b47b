//! Evaluation protocols: which labelled images train a probe and which test it.
//!
//! - `stl10-5k`: all 5,000 STL-10 train images → the 8,000 test images;
//! - `stl10-folds`: each of STL-10's 10 official folds (1,000 train images) → the test
//!   images, reported as mean ± std over folds;
//! - any other dataset (`fashion-mnist`: 60k → 10k): its whole `train` split → `test`,
//!   under the dataset's own name.

use jepa_shared::Manifest;

use crate::error::{ProbeError, Result};

pub const TRAIN_SPLIT: &str = "train";
pub const TEST_SPLIT: &str = "test";

/// One probe fit and evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub protocol: String,
    /// The fold, for protocols with several.
    pub fold: Option<u32>,
    /// The train ids this task may use; `None` is the whole train split.
    pub train_ids: Option<Vec<u64>>,
}

/// The protocols a dataset supports, with their tasks.
pub fn protocols(manifest: &Manifest) -> Result<Vec<Vec<Task>>> {
    for split in [TRAIN_SPLIT, TEST_SPLIT] {
        if manifest.split(split).is_none() {
            return Err(ProbeError::bad(
                format!("dataset `{}`", manifest.name).as_ref(),
                format!("has no `{split}` split; probes need labelled `{TRAIN_SPLIT}` and `{TEST_SPLIT}` splits"),
            ));
        }
    }
    if manifest.source.kind != "stl10" {
        return Ok(vec![vec![Task { protocol: manifest.name.clone(), fold: None, train_ids: None }]]);
    }
    let mut all = vec![vec![Task { protocol: "stl10-5k".into(), fold: None, train_ids: None }]];
    if let Some(folds) = manifest.split(TRAIN_SPLIT).and_then(|split| split.folds.as_ref()) {
        all.push(
            folds
                .iter()
                .enumerate()
                .map(|(fold, ids)| Task {
                    protocol: "stl10-folds".into(),
                    fold: Some(fold as u32),
                    train_ids: Some(ids.clone()),
                })
                .collect(),
        );
    }
    Ok(all)
}

/// Looks up a protocol by name among those `manifest` supports.
pub fn named(manifest: &Manifest, name: &str) -> Result<Vec<Task>> {
    let all = protocols(manifest)?;
    let names: Vec<String> = all.iter().map(|tasks| tasks[0].protocol.clone()).collect();
    all.into_iter().find(|tasks| tasks[0].protocol == name).ok_or_else(|| {
        ProbeError::bad(
            format!("dataset `{}`", manifest.name).as_ref(),
            format!("has no protocol `{name}`; it supports {}", names.join(", ")),
        )
    })
}
