//! The linear probe: softmax regression on frozen, standardised features, trained with
//! Burn (AdamW, cosine learning rate, cross-entropy).
//!
//! [`fit`] sees the train features only. It carves a validation part out of them, trains
//! one probe per (learning rate, weight decay) pair on the rest, keeps the pair with the
//! best validation accuracy, and retrains with it on all of train. When the best pair sits
//! on the edge of the grid, the grid grows a step past that edge and the new pairs are
//! tried, up to [`LinearSettings::max_widenings`] times per side; an edge still hit after
//! that is recorded in the [`Selection`]. A weight decay of zero is the floor of its axis,
//! not an edge. The test split is not an argument: it is reached only through
//! [`crate::heldout::HeldOut`], afterwards.

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use jepa_shared::rng::KeyedRng;
use jepa_trainer::optim::AdamW;

use crate::features::FeatureTable;
use crate::heldout::Classifier;
use crate::seed::{SeedSettings, pytorch_linear};
use crate::select::{argmax, best_index, cosine_lr, validation_split};

/// The linear probe trains on the CPU whatever device extracted the features.
type CpuAutodiff = Autodiff<NdArray<f32>>;

#[derive(Debug, Clone, PartialEq)]
pub struct LinearSettings {
    pub learning_rates: Vec<f64>,
    pub weight_decays: Vec<f64>,
    pub epochs: usize,
    pub batch_size: usize,
    /// Part of train held back to choose the hyper-parameters.
    pub validation_fraction: f64,
    pub seed: u64,
    /// Steps the grid may grow past each of its edges while the best pair sits on one.
    pub max_widenings: usize,
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
            max_widenings: 3,
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
    /// The edges of the grid the chosen pair still sits on after widening (empty: inside).
    pub edges: Vec<Edge>,
}

impl Selection {
    pub fn chosen(&self) -> &Candidate {
        &self.candidates[self.chosen]
    }

    /// The edges hit, in words (`None`: the choice is inside the grid).
    pub fn edge(&self) -> Option<String> {
        (!self.edges.is_empty()).then(|| self.edges.iter().map(Edge::as_str).collect::<Vec<_>>().join(", "))
    }
}

/// A side of the search grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    LowestLearningRate,
    HighestLearningRate,
    LowestWeightDecay,
    HighestWeightDecay,
}

impl Edge {
    pub fn as_str(&self) -> &'static str {
        match self {
            Edge::LowestLearningRate => "lowest learning rate",
            Edge::HighestLearningRate => "highest learning rate",
            Edge::LowestWeightDecay => "lowest weight decay",
            Edge::HighestWeightDecay => "highest weight decay",
        }
    }
}

/// One axis of the grid, sorted ascending, and how far it may still grow on each side.
struct Axis {
    values: Vec<f64>,
    widenings: [usize; 2],
}

impl Axis {
    fn new(values: &[f64], widenings: usize) -> Self {
        let mut values = values.to_vec();
        values.sort_by(f64::total_cmp);
        values.dedup();
        Self { values, widenings: [widenings; 2] }
    }

    /// Which edge `value` sits on: 0 low, 1 high. Zero is a floor, a single value no edge.
    fn edge(&self, value: f64) -> Option<usize> {
        let (first, last) = (self.values[0], self.values[self.values.len() - 1]);
        if self.values.len() < 2 && value == 0.0 {
            return None;
        }
        if value == last && (value > 0.0 || self.values.len() == 1) {
            Some(1)
        } else if value == first && value > 0.0 {
            Some(0)
        } else {
            None
        }
    }

    /// Adds the next value past edge `side` (the step of the two values nearest it, or ×10
    /// from a lone value or from zero); false when that side may not grow any more.
    fn widen(&mut self, side: usize) -> bool {
        if self.widenings[side] == 0 {
            return false;
        }
        let n = self.values.len();
        let ratio = |outer: f64, inner: f64| if inner > 0.0 && outer > inner { outer / inner } else { 10.0 };
        let next = if side == 1 {
            let last = self.values[n - 1];
            if last == 0.0 { 1e-4 } else { last * ratio(last, if n > 1 { self.values[n - 2] } else { 0.0 }) }
        } else {
            let first = self.values[0];
            first / ratio(if n > 1 { self.values[1] } else { 0.0 }, first)
        };
        self.widenings[side] -= 1;
        if side == 1 {
            self.values.push(next)
        } else {
            self.values.insert(0, next)
        }
        true
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

    let (candidates, chosen, edges) = grid_search(settings, |learning_rate, weight_decay| {
        let probe = train_probe(&fitting, classes, learning_rate, weight_decay, settings);
        let predicted = probe.predict(&validation);
        let correct = predicted.iter().zip(&validation.labels).filter(|(p, l)| p == l).count();
        correct as f64 / validation.len() as f64
    });
    let probe =
        train_probe(train, classes, candidates[chosen].learning_rate, candidates[chosen].weight_decay, settings);
    let selection =
        Selection { candidates, chosen, train_rows: fitting.len(), validation_rows: validation.len(), edges };
    (probe, selection)
}

/// Scores every (learning rate, weight decay) pair of the settings' grid with `score` (a
/// validation accuracy), widening the grid past each edge the best pair sits on as far as
/// `settings.max_widenings` allows. Returns every candidate in the order tried, the index
/// of the best (ties: the earliest, so a widened pair has to do strictly better) and the
/// edges it still sits on.
fn grid_search(
    settings: &LinearSettings,
    mut score: impl FnMut(f64, f64) -> f64,
) -> (Vec<Candidate>, usize, Vec<Edge>) {
    let mut learning_rates = Axis::new(&settings.learning_rates, settings.max_widenings);
    let mut weight_decays = Axis::new(&settings.weight_decays, settings.max_widenings);
    let mut candidates: Vec<Candidate> = Vec::new();
    loop {
        for &learning_rate in &learning_rates.values {
            for &weight_decay in &weight_decays.values {
                if !candidates.iter().any(|c| c.learning_rate == learning_rate && c.weight_decay == weight_decay) {
                    let validation_accuracy = score(learning_rate, weight_decay);
                    candidates.push(Candidate { learning_rate, weight_decay, validation_accuracy });
                }
            }
        }
        let chosen = best_index(candidates.iter().map(|candidate| candidate.validation_accuracy));
        let best = &candidates[chosen];
        let lr_edge = learning_rates.edge(best.learning_rate);
        let wd_edge = weight_decays.edge(best.weight_decay);
        let widened_lr = lr_edge.is_some_and(|side| learning_rates.widen(side));
        let widened_wd = wd_edge.is_some_and(|side| weight_decays.widen(side));
        if !widened_lr && !widened_wd {
            let edges = [
                lr_edge.map(|side| [Edge::LowestLearningRate, Edge::HighestLearningRate][side]),
                wd_edge.map(|side| [Edge::LowestWeightDecay, Edge::HighestWeightDecay][side]),
            ];
            return (candidates, chosen, edges.into_iter().flatten().collect());
        }
    }
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
    // Zero init: the problem is convex, so the start only has to be the same every time.
    let model: Linear<CpuAutodiff> =
        LinearConfig::new(table.dim, classes).with_initializer(Initializer::Zeros).init(&device);
    let mut optimizer = AdamW::<Linear<CpuAutodiff>, CpuAutodiff>::default();
    let batches = Batches { size: settings.batch_size, epochs: settings.epochs, seed: settings.seed };
    let total_steps = batches.steps(table.len());
    let model = batches.train(table, &mean, &std, model, |model, grads, step| {
        optimizer.step(model, grads, cosine_lr(learning_rate, step, total_steps), weight_decay)
    });
    LinearProbe::of(model, mean, std, classes)
}

/// The seed's linear probe (see [`crate::seed`]): `Linear(dim, classes)` on the features as
/// they are (not standardised), trained on all of `train`.
pub fn fit_seed(train: &FeatureTable, classes: usize, settings: &SeedSettings) -> LinearProbe {
    let device = Default::default();
    let model = pytorch_linear(train.dim, classes, settings.seed, &device);
    let mut optimizer = settings.optimizer().init::<CpuAutodiff, Linear<CpuAutodiff>>();
    let batches = Batches { size: settings.batch_size, epochs: settings.epochs, seed: settings.seed };
    let schedule = settings.schedule(train.len());
    let (mean, std) = (vec![0.0; train.dim], vec![1.0; train.dim]);
    let model = batches.train(train, &mean, &std, model, |model, grads, step| {
        optimizer.step(schedule.lr_at(step as u64), model, grads)
    });
    LinearProbe::of(model, mean, std, classes)
}

/// Mini-batches of a feature table over a number of epochs, each epoch in its own shuffled
/// order.
struct Batches {
    size: usize,
    epochs: usize,
    seed: u64,
}

impl Batches {
    fn rows(&self, rows: usize) -> usize {
        self.size.min(rows).max(1)
    }

    /// Optimizer steps over `rows` rows.
    fn steps(&self, rows: usize) -> usize {
        (self.epochs * rows.div_ceil(self.rows(rows))).max(1)
    }

    /// Trains `model` on `table` (standardised with `mean` and `std`) with cross-entropy,
    /// one `step(model, gradients, step)` per mini-batch.
    fn train(
        &self,
        table: &FeatureTable,
        mean: &[f32],
        std: &[f32],
        mut model: Linear<CpuAutodiff>,
        mut step: impl FnMut(Linear<CpuAutodiff>, GradientsParams, usize) -> Linear<CpuAutodiff>,
    ) -> Linear<CpuAutodiff> {
        let device = Default::default();
        let mut standardised = table.values.clone();
        for row in standardised.chunks_exact_mut(table.dim) {
            for (index, value) in row.iter_mut().enumerate() {
                *value = (*value - mean[index]) / std[index];
            }
        }
        let inputs =
            Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(standardised, [table.len(), table.dim]), &device);
        let targets = Tensor::<CpuAutodiff, 1, Int>::from_data(
            TensorData::new(table.labels.iter().map(|&l| i64::from(l)).collect(), [table.len()]),
            &device,
        );
        let loss = CrossEntropyLossConfig::new().init(&device);
        let mut order: Vec<usize> = (0..table.len()).collect();
        let mut steps = 0;
        for epoch in 0..self.epochs {
            KeyedRng::new(&[self.seed, epoch as u64]).shuffle(&mut order);
            for batch in order.chunks(self.rows(table.len())) {
                let index = Tensor::<CpuAutodiff, 1, Int>::from_data(
                    TensorData::new(batch.iter().map(|&row| row as i64).collect(), [batch.len()]),
                    &device,
                );
                let logits = model.forward(inputs.clone().select(0, index.clone()));
                let value = loss.forward(logits, targets.clone().select(0, index));
                let grads = GradientsParams::from_grads(value.backward(), &model);
                model = step(model, grads, steps);
                steps += 1;
            }
        }
        model
    }
}

impl LinearProbe {
    fn of(model: Linear<CpuAutodiff>, mean: Vec<f32>, std: Vec<f32>, classes: usize) -> Self {
        let record = model.into_record();
        let weight = record.weight.val().transpose().into_data().into_vec::<f32>().expect("f32 weights");
        let bias = record.bias.expect("a bias").val().into_data().into_vec::<f32>().expect("f32 bias");
        Self { mean, std, weight, bias, classes }
    }
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
            max_widenings: 0,
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

    #[test]
    fn the_grid_widens_past_an_edge_until_the_choice_is_inside_or_the_limit_is_hit() {
        // A validation accuracy that peaks at a learning rate of 0.5 and prefers a little
        // weight decay: the grid below both optima must grow up to them and stop there.
        let peak = |lr: f64, wd: f64| -(lr.log10() - 0.5f64.log10()).powi(2) - 100.0 * (wd - 1e-3).powi(2);
        let settings = LinearSettings {
            learning_rates: vec![1e-2, 3e-2, 1e-1],
            weight_decays: vec![0.0, 1e-4],
            ..LinearSettings::default()
        };
        let (candidates, chosen, edges) = grid_search(&settings, peak);
        let best = &candidates[chosen];
        assert!((best.learning_rate - 1e-1 * 10.0 / 3.0).abs() < 1e-9, "{best:?}");
        assert!((best.weight_decay - 1e-3).abs() < 1e-12, "{best:?}");
        assert!(edges.is_empty(), "{edges:?}");
        // The rates one step past the choice were tried, and nothing further.
        let tried = |lr: f64| candidates.iter().any(|c| (c.learning_rate - lr).abs() < 1e-9);
        assert!(tried(1e-1 * 100.0 / 9.0) && !tried(1e-1 * 1000.0 / 27.0));
        // Every pair of the final grid was tried once.
        assert_eq!(candidates.len(), 5 * 4, "{candidates:?}");

        // Still rising at the limit: the edge is recorded.
        let rising = |lr: f64, _: f64| lr;
        let settings = LinearSettings { max_widenings: 2, weight_decays: vec![0.0], ..settings };
        let (candidates, chosen, edges) = grid_search(&settings, rising);
        assert_eq!(candidates.len(), 5);
        assert_eq!(chosen, 4);
        assert_eq!(edges, vec![Edge::HighestLearningRate]);
        let selection = Selection { candidates, chosen, train_rows: 0, validation_rows: 0, edges };
        assert_eq!(selection.edge().as_deref(), Some("highest learning rate"));

        // A grid around the optimum stays as it is.
        let settings = LinearSettings { learning_rates: vec![0.1, 0.5, 2.0], ..settings };
        let (candidates, chosen, edges) = grid_search(&settings, peak);
        assert_eq!((candidates.len(), candidates[chosen].learning_rate), (3, 0.5));
        assert!(edges.is_empty());
    }

    #[test]
    fn axes_grow_by_their_own_step_and_zero_weight_decay_is_a_floor() {
        let mut axis = Axis::new(&[3e-2, 1e-2, 1e-1], 1);
        assert_eq!(axis.values, vec![1e-2, 3e-2, 1e-1]);
        assert_eq!((axis.edge(1e-1), axis.edge(1e-2), axis.edge(3e-2)), (Some(1), Some(0), None));
        assert!(axis.widen(1));
        assert!((axis.values[3] - 1e-1 * 10.0 / 3.0).abs() < 1e-12, "{:?}", axis.values);
        assert!(!axis.widen(1), "one widening per side");
        assert!(axis.widen(0));
        assert!((axis.values[0] - 1e-2 / 3.0).abs() < 1e-12, "{:?}", axis.values);

        let mut decay = Axis::new(&[0.0, 1e-3], 2);
        assert_eq!(decay.edge(0.0), None, "no decay is the floor, not an edge");
        assert_eq!(decay.edge(1e-3), Some(1));
        assert!(decay.widen(1));
        assert_eq!(decay.values, vec![0.0, 1e-3, 1e-2]);
    }
}
