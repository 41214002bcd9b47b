//! What every probe needs to choose its settings on train alone: the validation part carved
//! out of train, the pick of the best setting, argmax, and the cosine learning rate. The
//! bottom of the probes: it uses no other module.

use jepa_shared::rng::KeyedRng;

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

/// The first index of the largest value.
pub fn argmax(values: &[f32]) -> i32 {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best as i32
}
