//! The linear probe: softmax regression on frozen, standardised features, trained with
//! Burn (AdamW, cosine learning rate, cross-entropy).
//!
//! [`fit`] sees the train features only. It carves a validation part out of them, trains
//! one probe per (learning rate, weight decay) pair on the rest, keeps the pair with the
//! best validation accuracy, and retrains with it on all of train. The test split is not
//! an argument: it is reached only through [`crate::heldout::HeldOut`], afterwards.

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use jepa_shared::rng::KeyedRng;
use jepa_trainer::optim::AdamW;

use crate::features::FeatureTable;
use crate::heldout::Classifier;
use crate::knn::argmax;

type Train = Autodiff<NdArray<f32>>;

#[derive(Debug, Clone, PartialEq)]
pub struct LinearSettings {
    pub learning_rates: Vec<f64>,
    pub weight_decays: Vec<f64>,
    pub epochs: usize,
    pub batch_size: usize,
    /// Part of train held back to choose the hyper-parameters.
    pub validation_fraction: f64,
    pub seed: u64,
}

impl Default for LinearSettings {
    fn default() -> Self {
        Self {
            learning_rates: vec![3e-3, 1e-2, 3e-2, 1e-1],
            weight_decays: vec![0.0, 1e-3],
            epochs: 30,
            batch_size: 512,
            validation_fraction: 0.1,
            seed: 0,
        }
    }
}

/// One point of the hyper-parameter grid and how it did on the validation part.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub validation_accuracy: f64,
}

/// What [`fit`] chose and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub candidates: Vec<Candidate>,
    /// Index into `candidates`.
    pub chosen: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
}

impl Selection {
    pub fn chosen(&self) -> &Candidate {
        &self.candidates[self.chosen]
    }
}

/// A trained probe: standardisation and the affine map, on the CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbe {
    mean: Vec<f32>,
    std: Vec<f32>,
    /// `[classes, dim]`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    classes: usize,
}

impl LinearProbe {
    /// Class scores for each row, `[rows × classes]`.
    pub fn logits(&self, features: &FeatureTable) -> Vec<f32> {
        let dim = self.mean.len();
        assert_eq!(features.dim, dim, "features have another size than the probe was trained on");
        let mut logits = Vec::with_capacity(features.len() * self.classes);
        let mut standardised = vec![0f32; dim];
        for row in 0..features.len() {
            for (index, value) in features.row(row).iter().enumerate() {
                standardised[index] = (value - self.mean[index]) / self.std[index];
            }
            for class in 0..self.classes {
                let weights = &self.weight[class * dim..(class + 1) * dim];
                let dot: f32 = weights.iter().zip(&standardised).map(|(w, x)| w * x).sum();
                logits.push(dot + self.bias[class]);
            }
        }
        logits
    }
}

impl Classifier for LinearProbe {
    fn predict(&self, features: &FeatureTable) -> Vec<i32> {
        self.logits(features).chunks_exact(self.classes).map(argmax).collect()
    }
}

/// Chooses the learning rate and weight decay on a validation part of `train`, then
/// retrains on all of `train` with them.
pub fn fit(train: &FeatureTable, classes: usize, settings: &LinearSettings) -> (LinearProbe, Selection) {
    assert!(!settings.learning_rates.is_empty() && !settings.weight_decays.is_empty(), "an empty grid");
    let (fitting, validation) = validation_split(train.len(), settings.validation_fraction, settings.seed);
    let (fitting, validation) = (train.select_rows(&fitting), train.select_rows(&validation));

    let mut candidates = Vec::new();
    for &learning_rate in &settings.learning_rates {
        for &weight_decay in &settings.weight_decays {
            let probe = train_probe(&fitting, classes, learning_rate, weight_decay, settings);
            let predicted = probe.predict(&validation);
            let correct = predicted.iter().zip(&validation.labels).filter(|(p, l)| p == l).count();
            candidates.push(Candidate {
                learning_rate,
                weight_decay,
                validation_accuracy: correct as f64 / validation.len() as f64,
            });
        }
    }
    let chosen = best_index(candidates.iter().map(|candidate| candidate.validation_accuracy));
    let probe =
        train_probe(train, classes, candidates[chosen].learning_rate, candidates[chosen].weight_decay, settings);
    let selection = Selection { candidates, chosen, train_rows: fitting.len(), validation_rows: validation.len() };
    (probe, selection)
}

/// One probe on `table` with fixed hyper-parameters: zero init, mini-batch AdamW, cosine
/// decay of the learning rate to zero over `settings.epochs`.
pub fn train_probe(
    table: &FeatureTable,
    classes: usize,
    learning_rate: f64,
    weight_decay: f64,
    settings: &LinearSettings,
) -> LinearProbe {
    let device = Default::default();
    let (mean, std) = column_stats(table);
    let mut standardised = table.values.clone();
    for row in standardised.chunks_exact_mut(table.dim) {
        for (index, value) in row.iter_mut().enumerate() {
            *value = (*value - mean[index]) / std[index];
        }
    }
    let inputs = Tensor::<Train, 2>::from_data(TensorData::new(standardised, [table.len(), table.dim]), &device);
    let targets = Tensor::<Train, 1, Int>::from_data(
        TensorData::new(table.labels.iter().map(|&l| i64::from(l)).collect(), [table.len()]),
        &device,
    );
    // Zero init: the problem is convex, so the start only has to be the same every time.
    let mut model: Linear<Train> =
        LinearConfig::new(table.dim, classes).with_initializer(Initializer::Zeros).init(&device);
    let mut optimizer = AdamW::<Linear<Train>, Train>::default();
    let loss = CrossEntropyLossConfig::new().init(&device);
    let batch_size = settings.batch_size.min(table.len()).max(1);
    let steps_per_epoch = table.len().div_ceil(batch_size);
    let total_steps = (settings.epochs * steps_per_epoch).max(1);
    let mut step = 0;
    let mut order: Vec<usize> = (0..table.len()).collect();
    for epoch in 0..settings.epochs {
        KeyedRng::new(&[settings.seed, epoch as u64]).shuffle(&mut order);
        for batch in order.chunks(batch_size) {
            let index = Tensor::<Train, 1, Int>::from_data(
                TensorData::new(batch.iter().map(|&row| row as i64).collect(), [batch.len()]),
                &device,
            );
            let logits = model.forward(inputs.clone().select(0, index.clone()));
            let value = loss.forward(logits, targets.clone().select(0, index));
            let grads = GradientsParams::from_grads(value.backward(), &model);
            let lr = cosine_lr(learning_rate, step, total_steps);
            model = optimizer.step(model, grads, lr, weight_decay);
            step += 1;
        }
    }
    let record = model.into_record();
    let weight = record.weight.val().transpose().into_data().into_vec::<f32>().expect("f32 weights");
    let bias = record.bias.expect("a bias").val().into_data().into_vec::<f32>().expect("f32 bias");
    LinearProbe { mean, std, weight, bias, classes }
}

/// Rows `0..rows` split into (fitting, validation) by a shuffle keyed by `seed`: about
/// `fraction` of them (at least one, and never all) validate; both lists are sorted.
pub fn validation_split(rows: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    assert!(rows >= 2, "a validation split needs at least 2 rows");
    let mut order: Vec<usize> = (0..rows).collect();
    KeyedRng::new(&[seed, 0x76_61_6c]).shuffle(&mut order);
    let mut fitting = order.split_off(validation_rows(rows, fraction));
    fitting.sort_unstable();
    order.sort_unstable();
    (fitting, order)
}

/// How many of `rows` [`validation_split`] holds back.
pub fn validation_rows(rows: usize, fraction: f64) -> usize {
    ((rows as f64 * fraction).round() as usize).clamp(1, rows.max(2) - 1)
}

/// `peak` decayed to zero along half a cosine over `total` steps.
pub fn cosine_lr(peak: f64, step: usize, total: usize) -> f64 {
    peak * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total.max(1) as f64).cos())
}

/// The index of the best score; among equals the first (the grid's order breaks ties).
pub fn best_index(scores: impl IntoIterator<Item = f64>) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (index, score) in scores.into_iter().enumerate() {
        if best.is_none_or(|(_, best_score)| score > best_score) {
            best = Some((index, score));
        }
    }
    best.expect("a non-empty grid").0
}

/// Per-column mean and standard deviation (1 where a column is constant).
fn column_stats(table: &FeatureTable) -> (Vec<f32>, Vec<f32>) {
    let rows = table.len().max(1) as f64;
    let mut sum = vec![0f64; table.dim];
    let mut squares = vec![0f64; table.dim];
    for row in table.values.chunks_exact(table.dim) {
        for (index, &value) in row.iter().enumerate() {
            sum[index] += f64::from(value);
            squares[index] += f64::from(value) * f64::from(value);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / rows).collect();
    let std = squares
        .iter()
        .zip(&mean)
        .map(|(sq, m)| {
            let variance = (sq / rows - m * m).max(0.0);
            if variance > 1e-12 { variance.sqrt() as f32 } else { 1.0 }
        })
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four classes in 6-D, each a Gaussian blob around its own corner: separable by a plane.
    fn blobs(rows: usize, seed: u64) -> FeatureTable {
        let mut rng = KeyedRng::new(&[seed]);
        let mut table = FeatureTable::new(6);
        for id in 0..rows as u64 {
            let class = (rng.below(4)) as i32;
            let feature: Vec<f32> = (0..6)
                .map(|axis| {
                    let centre = if axis == class as usize { 3.0 } else { 0.0 };
                    centre + (rng.uniform(-1.0, 1.0) + rng.uniform(-1.0, 1.0)) as f32 * 0.5
                })
                .collect();
            table.push(id, class, &feature);
        }
        table
    }

    #[test]
    fn linear_probe_separates_linearly_separable_features() {
        let train = blobs(2_000, 1);
        let test = blobs(500, 2);
        let settings = LinearSettings {
            learning_rates: vec![1e-2, 1e-1],
            weight_decays: vec![0.0],
            epochs: 10,
            batch_size: 128,
            ..LinearSettings::default()
        };
        let (probe, selection) = fit(&train, 4, &settings);
        assert_eq!(selection.candidates.len(), 2);
        assert_eq!(selection.validation_rows, 200);
        let predicted = probe.predict(&test);
        let correct = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
        assert!(correct as f64 / test.len() as f64 > 0.99, "{correct} of {}", test.len());
    }

    #[test]
    fn selection_picks_the_best_validation_accuracy() {
        // A learning rate of zero leaves the probe at its zero init: every class scores
        // the same and it guesses class 0, so a real learning rate must win.
        let train = blobs(800, 3);
        let settings = LinearSettings {
            learning_rates: vec![0.0, 1e-1],
            weight_decays: vec![0.0],
            epochs: 5,
            batch_size: 128,
            ..LinearSettings::default()
        };
        let (_, selection) = fit(&train, 4, &settings);
        assert_eq!(selection.chosen().learning_rate, 1e-1);
        assert!(selection.candidates[0].validation_accuracy < 0.5, "{:?}", selection.candidates);
    }
}
