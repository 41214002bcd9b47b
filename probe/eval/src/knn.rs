//! Weighted k-nearest neighbours on frozen features (Wu et al. 2018, as DINO evaluates):
//! cosine similarity to every train feature, the `k` most similar vote, each with weight
//! `exp(similarity / temperature)`.
//!
//! Features can be centred on the train mean before the cosine: a shared offset (common in
//! features that never passed a normalisation, such as raw pixels or a young encoder's
//! tokens) otherwise pulls every cosine towards one. Whether to centre is the one choice
//! [`fit`] makes, on a validation part of train, as the linear probe makes its own.

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};

use crate::features::FeatureTable;
use crate::heldout::Classifier;
use crate::select::{argmax, best_index, validation_split};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnSettings {
    pub k: usize,
    pub temperature: f32,
    /// Subtract the train mean before the cosine: `Some` fixes it, `None` lets [`fit`]
    /// choose on the validation part of train.
    pub centre: Option<bool>,
    /// Part of train held back to choose centring.
    pub validation_fraction: f64,
    pub seed: u64,
}

impl Default for KnnSettings {
    fn default() -> Self {
        Self { k: 20, temperature: 0.07, centre: None, validation_fraction: 0.1, seed: 0 }
    }
}

/// One centring option and how it did on the validation part.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnCandidate {
    pub centre: bool,
    pub validation_accuracy: f64,
}

/// What [`fit`] chose and why (one candidate when centring was fixed).
#[derive(Debug, Clone, PartialEq)]
pub struct KnnSelection {
    pub candidates: Vec<KnnCandidate>,
    /// Index into `candidates`.
    pub chosen: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
}

impl KnnSelection {
    pub fn chosen(&self) -> &KnnCandidate {
        &self.candidates[self.chosen]
    }
}

/// Scores each centring option (both, unless `settings.centre` fixes one) by kNN from the
/// fitting part of `train` to its validation part, then builds the kNN of all of `train`
/// with the best. Ties keep the uncentred cosine.
pub fn fit(train: &FeatureTable, classes: usize, settings: &KnnSettings) -> (Knn, KnnSelection) {
    let options = match settings.centre {
        Some(centre) => vec![centre],
        None => vec![false, true],
    };
    let (fitting, validation) = validation_split(train.len(), settings.validation_fraction, settings.seed);
    let (fitting, validation) = (train.select_rows(&fitting), train.select_rows(&validation));
    let candidates: Vec<KnnCandidate> = options
        .into_iter()
        .map(|centre| {
            let knn = Knn::new(&fitting, classes, KnnSettings { centre: Some(centre), ..*settings });
            let predicted = knn.predict(&validation);
            let correct = predicted.iter().zip(&validation.labels).filter(|(p, l)| p == l).count();
            KnnCandidate { centre, validation_accuracy: correct as f64 / validation.len() as f64 }
        })
        .collect();
    let chosen = best_index(candidates.iter().map(|candidate| candidate.validation_accuracy));
    let knn = Knn::new(train, classes, KnnSettings { centre: Some(candidates[chosen].centre), ..*settings });
    let selection = KnnSelection { candidates, chosen, train_rows: fitting.len(), validation_rows: validation.len() };
    (knn, selection)
}

/// Queries are compared with the train set this many at a time (bounds the similarity block).
const QUERY_CHUNK: usize = 512;

/// Rows to be searched by cosine similarity: scaled to unit length once and kept transposed
/// on the tensor backend, so each block of queries is one matmul. The kNN probe searches the
/// train features with it; the predictor-retrieval figure its gallery of patches.
pub struct CosineIndex {
    /// `[dim, rows]`.
    rows_t: Tensor<NdArray<f32>, 2>,
    rows: usize,
    dim: usize,
}

impl CosineIndex {
    /// `values` holds rows of `dim` values each.
    pub fn new(values: &[f32], dim: usize) -> Self {
        let mut values = values.to_vec();
        unit_rows(&mut values, dim);
        let rows = values.len() / dim.max(1);
        let rows_t =
            Tensor::<NdArray<f32>, 2>::from_data(TensorData::new(values, [rows, dim]), &Default::default()).transpose();
        Self { rows_t, rows, dim }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Calls `each(query, cosines of query to every row)` for every row of `queries` (`dim`
    /// values each, any length), [`QUERY_CHUNK`] queries per matmul.
    pub fn each_query(&self, queries: &[f32], mut each: impl FnMut(usize, &[f32])) {
        assert_eq!(queries.len() % self.dim.max(1), 0, "queries are not rows of {} values", self.dim);
        let mut queries = queries.to_vec();
        unit_rows(&mut queries, self.dim);
        for (chunk_index, chunk) in queries.chunks(QUERY_CHUNK * self.dim).enumerate() {
            let count = chunk.len() / self.dim;
            let query = Tensor::<NdArray<f32>, 2>::from_data(
                TensorData::new(chunk.to_vec(), [count, self.dim]),
                &Default::default(),
            );
            let similarity = query.matmul(self.rows_t.clone()).into_data().into_vec::<f32>().expect("f32");
            for (offset, row) in similarity.chunks_exact(self.rows).enumerate() {
                each(chunk_index * QUERY_CHUNK + offset, row);
            }
        }
    }
}

pub struct Knn {
    /// The train features (centred when `mean` is there).
    train: CosineIndex,
    /// The train mean subtracted from train and query features before the cosine.
    mean: Option<Vec<f32>>,
    labels: Vec<i32>,
    classes: usize,
    settings: KnnSettings,
}

impl Knn {
    /// The kNN of `train`, centred on its mean when `settings.centre` is `Some(true)`.
    pub fn new(train: &FeatureTable, classes: usize, settings: KnnSettings) -> Self {
        let mean = settings.centre.unwrap_or(false).then(|| column_means(&train.values, train.dim));
        let index = match &mean {
            Some(mean) => CosineIndex::new(&centred(&train.values, mean), train.dim),
            None => CosineIndex::new(&train.values, train.dim),
        };
        Self { train: index, mean, labels: train.labels.clone(), classes, settings }
    }

    /// Class votes for each query row, `[rows × classes]`.
    pub fn votes(&self, queries: &FeatureTable) -> Vec<f32> {
        assert_eq!(queries.dim, self.train.dim, "query features have another size than the train features");
        let rows = self.labels.len();
        let k = self.settings.k.min(rows);
        let mut votes = vec![0f32; queries.len() * self.classes];
        let mut order: Vec<usize> = Vec::with_capacity(rows);
        let centred_queries = self.mean.as_ref().map(|mean| centred(&queries.values, mean));
        let values = centred_queries.as_deref().unwrap_or(&queries.values);
        self.train.each_query(values, |query_row, row| {
            order.clear();
            order.extend(0..rows);
            // Most similar first; equal similarities go to the lower train index.
            let descending = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
            if k < rows {
                order.select_nth_unstable_by(k - 1, descending);
            }
            let out = &mut votes[query_row * self.classes..(query_row + 1) * self.classes];
            for &neighbour in &order[..k] {
                out[self.labels[neighbour] as usize] += (row[neighbour] / self.settings.temperature).exp();
            }
        });
        votes
    }
}

impl Classifier for Knn {
    fn predict(&self, features: &FeatureTable) -> Vec<i32> {
        self.votes(features).chunks_exact(self.classes).map(argmax).collect()
    }
}

/// The mean of each of the `dim` columns of `values`.
fn column_means(values: &[f32], dim: usize) -> Vec<f32> {
    let mut sums = vec![0f64; dim];
    for row in values.chunks_exact(dim.max(1)) {
        sums.iter_mut().zip(row).for_each(|(sum, value)| *sum += f64::from(*value));
    }
    let rows = (values.len() / dim.max(1)).max(1) as f64;
    sums.into_iter().map(|sum| (sum / rows) as f32).collect()
}

/// `values` with `mean` subtracted from every row.
fn centred(values: &[f32], mean: &[f32]) -> Vec<f32> {
    let mut out = values.to_vec();
    for row in out.chunks_exact_mut(mean.len().max(1)) {
        row.iter_mut().zip(mean).for_each(|(value, m)| *value -= m);
    }
    out
}

/// Every row of `dim` values scaled to unit length (a zero row stays zero), so dot products
/// are cosines.
pub fn unit_rows(values: &mut [f32], dim: usize) {
    for row in values.chunks_exact_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&[f32], i32)]) -> FeatureTable {
        let mut table = FeatureTable::new(rows[0].0.len());
        for (id, (feature, label)) in rows.iter().enumerate() {
            table.push(id as u64, *label, feature);
        }
        table
    }

    #[test]
    fn knn_votes_follow_cosine_neighbours_weighted_by_temperature() {
        // Two train points of class 0 at 0° and 90°, one of class 1 at 30°; query at 20°.
        let degrees = |angle: f32| {
            let radians = angle.to_radians();
            vec![radians.cos(), radians.sin()]
        };
        let (a, b, c) = (degrees(0.0), degrees(90.0), degrees(30.0));
        let train = table(&[(&a, 0), (&b, 0), (&c, 1)]);
        let query_feature: Vec<f32> = degrees(20.0).iter().map(|v| v * 5.0).collect(); // length must not matter
        let query = table(&[(&query_feature, 1)]);

        // k = 2: the neighbours are 30° (class 1) and 0° (class 0).
        let knn = Knn::new(&train, 2, KnnSettings { k: 2, temperature: 0.07, ..KnnSettings::default() });
        let votes = knn.votes(&query);
        let expected_0 = (20f32.to_radians().cos() / 0.07).exp();
        let expected_1 = (10f32.to_radians().cos() / 0.07).exp();
        assert!((votes[0] / expected_0 - 1.0).abs() < 1e-4, "{votes:?}");
        assert!((votes[1] / expected_1 - 1.0).abs() < 1e-4, "{votes:?}");
        assert_eq!(knn.predict(&query), vec![1]);

        // k = 3 with a hot temperature: two class-0 votes of about 1 outweigh one class-1 vote.
        let knn = Knn::new(&train, 2, KnnSettings { k: 3, temperature: 100.0, ..KnnSettings::default() });
        assert_eq!(knn.predict(&query), vec![0]);
    }

    #[test]
    fn knn_recovers_the_class_of_noisy_copies_of_train_points() {
        // 3 well-separated class centres in 8-D; queries are perturbed centres.
        let centre = |class: usize| (0..8).map(|i| if i % 3 == class { 1.0 } else { 0.05 }).collect::<Vec<f32>>();
        let mut train = FeatureTable::new(8);
        for copy in 0..30u64 {
            let class = (copy % 3) as usize;
            let feature: Vec<f32> =
                centre(class).iter().enumerate().map(|(i, v)| v + 0.01 * ((copy + i as u64) % 5) as f32).collect();
            train.push(copy, class as i32, &feature);
        }
        let mut queries = FeatureTable::new(8);
        for class in 0..3 {
            let feature: Vec<f32> = centre(class).iter().map(|v| v * 2.0 + 0.02).collect();
            queries.push(class as u64, class as i32, &feature);
        }
        let knn = Knn::new(&train, 3, KnnSettings::default());
        assert_eq!(knn.predict(&queries), vec![0, 1, 2]);
    }

    #[test]
    fn centring_is_chosen_on_validation_when_a_shared_offset_hides_the_classes() {
        // Two classes on one ray, at distance 1 and 2 from the origin, with a little noise
        // across it: their directions are the same but for noise, so the uncentred cosine
        // cannot tell them apart, and centring on the train mean puts them on opposite
        // sides. The choice must be made on the validation part.
        let mut rng = jepa_shared::rng::KeyedRng::new(&[7]);
        let mut train = FeatureTable::new(3);
        for id in 0..600u64 {
            let class = (id % 2) as i32;
            let mut noise = || 0.05 * rng.uniform(-1.0, 1.0) as f32;
            let feature = [1.0 + class as f32 + noise(), noise(), noise()];
            train.push(id, class, &feature);
        }
        let (knn, selection) = fit(&train, 2, &KnnSettings { k: 5, ..KnnSettings::default() });
        assert_eq!(selection.candidates.len(), 2);
        assert_eq!(selection.validation_rows, 60);
        assert!(selection.chosen().centre, "{selection:?}");
        let uncentred = &selection.candidates[0];
        assert!(!uncentred.centre && uncentred.validation_accuracy < 0.8, "{selection:?}");
        assert!(selection.chosen().validation_accuracy > 0.95, "{selection:?}");
        assert!(knn.mean.is_some());

        // Fixed by the settings: one candidate, and no mean.
        let (knn, selection) = fit(&train, 2, &KnnSettings { k: 5, centre: Some(false), ..KnnSettings::default() });
        assert_eq!(selection.candidates.len(), 1);
        assert!(knn.mean.is_none());
    }
}
