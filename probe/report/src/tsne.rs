//! t-SNE of the frozen test features: the features Parquet the probe wrote for each encoder,
//! embedded in two dimensions by the `bhtsne` crate (Barnes-Hut, θ = 0.5, perplexity 30,
//! 1,000 epochs), drawn side by side coloured by class, and written to `tsne.parquet`
//! (`encoder`, `id`, `label`, `class_name`, `x`, `y`) for polars.
//!
//! Features are scaled to unit length first, so the Euclidean distance t-SNE uses orders
//! neighbours as the kNN probe's cosine does. The embedding starts from the first two
//! principal components (scaled to a standard deviation of 10⁻⁴, as a random start would be),
//! as scikit-learn's does by default.
//! The crate's parallel optimisation is not bit-reproducible: two runs give the same picture
//! up to small movements of the points.

use std::path::Path;

use bhtsne::tSNE;
use jepa_eval::error::{ProbeError, Result};
use jepa_eval::evaluate::{manifest, write_parquet};
use jepa_eval::features::FeatureTable;
use jepa_eval::knn::unit_rows;
use jepa_eval::protocol::TEST_SPLIT;
use jepa_trainer::{EncoderKind, ReportFile, Run};
use plotters::prelude::*;
use polars::prelude::*;

use crate::canvas::{FONT_FAMILY, ensure_font, png};

/// How t-SNE is run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TsneSettings {
    pub perplexity: f32,
    pub theta: f32,
    pub epochs: usize,
}

impl Default for TsneSettings {
    fn default() -> Self {
        Self { perplexity: 30.0, theta: 0.5, epochs: 1000 }
    }
}

/// Two-dimensional coordinates of the rows of `values` (`dim` values each).
pub fn embed(values: &[f32], dim: usize, settings: &TsneSettings) -> Vec<[f32; 2]> {
    let rows = values.len() / dim.max(1);
    if rows < 2 {
        return vec![[0.0, 0.0]; rows];
    }
    let mut unit = values.to_vec();
    unit_rows(&mut unit, dim);
    let start = principal_start(&unit, dim);
    let points: Vec<&[f32]> = unit.chunks_exact(dim).collect();
    // bhtsne needs perplexity × 3 < rows.
    let perplexity = settings.perplexity.min((rows as f32 - 1.0) / 3.0 - 0.01).max(1.0);
    let mut tsne: tSNE<f32, &[f32]> = tSNE::new(&points);
    tsne.perplexity(perplexity)
        .epochs(settings.epochs)
        .initial_embedding(start)
        .barnes_hut(settings.theta, |a, b| a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt());
    tsne.embedding().chunks_exact(2).map(|point| [point[0], point[1]]).collect()
}

/// The rows' projections on their first two principal components (power iteration on the
/// covariance, the second deflated by the first), scaled to a standard deviation of 10⁻⁴.
fn principal_start(values: &[f32], dim: usize) -> Vec<f32> {
    let rows = values.len() / dim;
    let mut mean = vec![0.0f64; dim];
    for row in values.chunks_exact(dim) {
        mean.iter_mut().zip(row).for_each(|(sum, &value)| *sum += f64::from(value));
    }
    mean.iter_mut().for_each(|sum| *sum /= rows as f64);
    let centred: Vec<f64> =
        values.chunks_exact(dim).flat_map(|row| row.iter().zip(&mean).map(|(&v, m)| f64::from(v) - m)).collect();
    // Covariance times a vector, without forming the covariance: Xᵀ(Xv).
    let times = |vector: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; dim];
        for row in centred.chunks_exact(dim) {
            let projection: f64 = row.iter().zip(vector).map(|(a, b)| a * b).sum();
            out.iter_mut().zip(row).for_each(|(sum, value)| *sum += projection * value);
        }
        out
    };
    let normalise = |vector: &mut Vec<f64>| {
        let norm = vector.iter().map(|v| v * v).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
        vector.iter_mut().for_each(|v| *v /= norm);
    };
    let mut components: Vec<Vec<f64>> = Vec::new();
    for component in 0..2 {
        // A fixed, non-degenerate start vector.
        let mut vector: Vec<f64> = (0..dim).map(|at| 1.0 + ((at * 7 + component * 3) % 11) as f64 / 11.0).collect();
        normalise(&mut vector);
        for _ in 0..100 {
            let mut next = times(&vector);
            for previous in &components {
                let overlap: f64 = next.iter().zip(previous).map(|(a, b)| a * b).sum();
                next.iter_mut().zip(previous).for_each(|(value, p)| *value -= overlap * p);
            }
            normalise(&mut next);
            vector = next;
        }
        components.push(vector);
    }
    let mut start: Vec<f64> = centred
        .chunks_exact(dim)
        .flat_map(|row| {
            components.iter().map(move |component| row.iter().zip(component).map(|(a, b)| a * b).sum::<f64>())
        })
        .collect();
    for axis in 0..2 {
        let spread = (start.iter().skip(axis).step_by(2).map(|v| v * v).sum::<f64>() / rows as f64)
            .sqrt()
            .max(f64::MIN_POSITIVE);
        start.iter_mut().skip(axis).step_by(2).for_each(|v| *v *= 1e-4 / spread);
    }
    start.into_iter().map(|value| value as f32).collect()
}

/// One encoder's embedded test set.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub encoder: EncoderKind,
    /// The checkpoint the features came from (`step-00000150`, `init`, …).
    pub checkpoint: String,
    pub ids: Vec<u64>,
    pub labels: Vec<i32>,
    pub points: Vec<[f32; 2]>,
    pub seconds: f64,
}

/// The encoders drawn side by side: the evaluated one and where it started.
const TSNE_ENCODERS: [EncoderKind; 2] = [EncoderKind::Pretrained, EncoderKind::Random];

/// t-SNE of the trained and the random-init encoder (those whose test features the run has):
/// `tsne.parquet` and `tsne.png`.
pub fn write(run: &Run, settings: &TsneSettings) -> Result<Vec<Embedded>> {
    let class_names = manifest(run)?.class_names;
    let mut embedded = Vec::new();
    for encoder in TSNE_ENCODERS {
        let path = run.folder.features(encoder, TEST_SPLIT);
        if !path.exists() {
            continue;
        }
        let features = FeatureTable::read(&path)?;
        let checkpoint = jepa_eval::features::Origin::read(&path)?.checkpoint;
        let started = std::time::Instant::now();
        let points = embed(&features.values, features.dim, settings);
        let seconds = started.elapsed().as_secs_f64();
        embedded.push(Embedded { encoder, checkpoint, ids: features.ids, labels: features.labels, points, seconds });
    }
    if embedded.is_empty() {
        return Err(ProbeError::bad(
            &run.folder.features(EncoderKind::Pretrained, TEST_SPLIT),
            "missing: run `probe features` first",
        ));
    }
    write_coordinates(&run.folder.report(ReportFile::TsneCoordinates), &embedded, &class_names)?;
    let title = |embedded: &Embedded| match embedded.encoder {
        EncoderKind::Pretrained => {
            format!("{} ({}, {})", run.recipe.name(), run.recipe.method_info().name(), embedded.checkpoint)
        }
        EncoderKind::Context => format!("context encoder ({})", embedded.checkpoint),
        EncoderKind::Random => "random-init encoder".to_string(),
        EncoderKind::Pixels => "pixels".to_string(),
    };
    draw(&run.folder.report(ReportFile::Tsne), &embedded, &class_names, title)?;
    Ok(embedded)
}

fn write_coordinates(path: &Path, embedded: &[Embedded], class_names: &[String]) -> Result<()> {
    let name = |label: i32| class_names.get(label as usize).cloned().unwrap_or_else(|| label.to_string());
    let mut frame = df!(
        "encoder" => embedded.iter().flat_map(|e| e.ids.iter().map(|_| e.encoder.as_str())).collect::<Vec<_>>(),
        "id" => embedded.iter().flat_map(|e| e.ids.clone()).collect::<Vec<_>>(),
        "label" => embedded.iter().flat_map(|e| e.labels.clone()).collect::<Vec<_>>(),
        "class_name" => embedded.iter().flat_map(|e| e.labels.iter().map(|&label| name(label))).collect::<Vec<_>>(),
        "x" => embedded.iter().flat_map(|e| e.points.iter().map(|p| p[0])).collect::<Vec<_>>(),
        "y" => embedded.iter().flat_map(|e| e.points.iter().map(|p| p[1])).collect::<Vec<_>>(),
    )
    .map_err(ProbeError::polars("t-SNE coordinates"))?;
    write_parquet(path, &mut frame)
}

/// Ten distinguishable colours (then they repeat).
const CLASS_COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const PANEL_PX: u32 = 720;
const LEGEND_WIDTH_PX: u32 = 230;

/// One panel per encoder, points coloured by class, the class legend on the right.
fn draw(path: &Path, embedded: &[Embedded], class_names: &[String], title: impl Fn(&Embedded) -> String) -> Result<()> {
    ensure_font()?;
    let classes = embedded
        .iter()
        .flat_map(|e| e.labels.iter())
        .map(|&label| label as usize + 1)
        .max()
        .unwrap_or(0)
        .max(class_names.len());
    let size = (PANEL_PX * embedded.len() as u32 + LEGEND_WIDTH_PX, PANEL_PX);
    png(path, size, |root| {
        let fail = |error: plotters::drawing::DrawingAreaErrorKind<_>| error.to_string();
        root.fill(&WHITE).map_err(fail)?;
        let (panels, legend) = root.split_horizontally(PANEL_PX * embedded.len() as u32);
        for (panel, embedded) in panels.split_evenly((1, embedded.len())).iter().zip(embedded) {
            let range = |axis: usize| {
                let (low, high) = embedded
                    .points
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), p| (lo.min(p[axis]), hi.max(p[axis])));
                let pad = ((high - low) * 0.03).max(1e-3);
                if low.is_finite() { (low - pad)..(high + pad) } else { -1.0..1.0 }
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{} · {} test images", title(embedded), embedded.points.len()), (FONT_FAMILY, 20))
                .margin(14)
                .build_cartesian_2d(range(0), range(1))
                .map_err(fail)?;
            chart.configure_mesh().disable_mesh().disable_x_axis().disable_y_axis().draw().map_err(fail)?;
            let radius = if embedded.points.len() > 3000 { 2 } else { 3 };
            chart
                .draw_series(embedded.points.iter().zip(&embedded.labels).map(|(point, &label)| {
                    let colour = CLASS_COLOURS[label as usize % CLASS_COLOURS.len()];
                    Circle::new((point[0], point[1]), radius, colour.mix(0.7).filled())
                }))
                .map_err(fail)?;
            panel
                .draw(&Rectangle::new(
                    [(0, 0), (PANEL_PX as i32 - 1, PANEL_PX as i32 - 1)],
                    BLACK.mix(0.3).stroke_width(1),
                ))
                .map_err(fail)?;
        }
        let line = 30;
        let top = (PANEL_PX as i32 - line * classes as i32) / 2;
        for class in 0..classes {
            let y = top + line * class as i32;
            let colour = CLASS_COLOURS[class % CLASS_COLOURS.len()];
            legend.draw(&Circle::new((22, y + line / 2), 7, colour.filled())).map_err(fail)?;
            let name = class_names.get(class).cloned().unwrap_or_else(|| class.to_string());
            let style = (FONT_FAMILY, 18).into_font().color(&BLACK);
            legend.draw(&Text::new(name, (38, y + line / 2 - 10), style)).map_err(fail)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tight clusters far apart, 60 points each, in 16 dimensions.
    fn two_clusters() -> (Vec<f32>, usize) {
        let dim = 16;
        let mut state = 1u64;
        let mut noise = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        };
        let mut values = Vec::new();
        for cluster in 0..2 {
            for _ in 0..60 {
                for at in 0..dim {
                    // Cluster 0 points along the first half of the axes, cluster 1 the second.
                    let centre = if (at < dim / 2) == (cluster == 0) { 1.0 } else { 0.0 };
                    values.push(centre + noise());
                }
            }
        }
        (values, dim)
    }

    #[test]
    fn two_separated_clusters_stay_apart() {
        let (values, dim) = two_clusters();
        let points = embed(&values, dim, &TsneSettings { epochs: 500, ..TsneSettings::default() });
        assert_eq!(points.len(), 120);
        let distance = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        // Every point's nearest neighbour in the embedding is in its own cluster, and the
        // discs around the clusters' centres that hold all their points do not overlap.
        for (index, &point) in points.iter().enumerate() {
            let nearest = (0..points.len())
                .filter(|&other| other != index)
                .min_by(|&a, &b| distance(point, points[a]).total_cmp(&distance(point, points[b])))
                .unwrap();
            assert_eq!(nearest / 60, index / 60, "point {index}'s nearest neighbour {nearest} is in the other cluster");
        }
        let centre = |cluster: usize| {
            let members = &points[cluster * 60..(cluster + 1) * 60];
            [members.iter().map(|p| p[0]).sum::<f32>() / 60.0, members.iter().map(|p| p[1]).sum::<f32>() / 60.0]
        };
        let width = |cluster: usize| {
            points[cluster * 60..(cluster + 1) * 60].iter().map(|&p| distance(p, centre(cluster))).fold(0.0, f32::max)
        };
        assert!(distance(centre(0), centre(1)) > width(0) + width(1), "the clusters overlap: {points:?}");
    }
}
