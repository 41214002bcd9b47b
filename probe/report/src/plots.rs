//! The report's PNGs (plotters, bitmap backend), each drawn from data (frames and rows, never
//! a run folder) and written whole or not at all: training curves from the metrics table,
//! the pretrained encoder's linear-probe confusion matrix, per-class accuracy of the
//! pretrained against the random-init encoder, and the method comparison's bars. Figures made
//! of images are drawn by [`crate::sheet`].

use std::path::{Path, PathBuf};

use jepa_eval::error::{ProbeError, Result};
use jepa_eval::evaluate::{FINETUNE, KNN, LINEAR};
use jepa_trainer::EncoderKind;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use polars::prelude::*;

use crate::canvas::{FONT_FAMILY, ensure_font, png};

/// Where the report's plots go.
#[derive(Debug, Clone)]
pub struct Plots {
    pub training_curves: PathBuf,
    pub confusion: PathBuf,
    pub per_class: PathBuf,
}

/// Draws every plot the data allows; returns the files written.
pub fn draw_all(
    plots: &Plots,
    metrics: Option<&DataFrame>,
    per_class: &DataFrame,
    confusion: &DataFrame,
    class_names: &[String],
) -> Result<Vec<PathBuf>> {
    ensure_font()?;
    let mut written = Vec::new();
    if let Some(metrics) = metrics {
        training_curves(metrics, &plots.training_curves)?;
        written.push(plots.training_curves.clone());
    }
    let pretrained_linear = col("encoder").eq(lit(EncoderKind::Pretrained.as_str())).and(col("probe").eq(lit(LINEAR)));
    let cells = confusion
        .clone()
        .lazy()
        .filter(pretrained_linear)
        .group_by([col("protocol"), col("checkpoint"), col("label"), col("predicted")])
        .agg([col("count").sum()])
        .collect()
        .map_err(ProbeError::polars("confusion cells"))?;
    if cells.height() > 0 {
        confusion_matrix(&cells, class_names, &plots.confusion)?;
        written.push(plots.confusion.clone());
    }
    if per_class_accuracy(per_class, class_names, &plots.per_class)? {
        written.push(plots.per_class.clone());
    }
    Ok(written)
}

/// `count` segments, one per class. plotters' segmented ranges include their end, so
/// `0..count - 1` is what holds classes `0..count`.
fn segments(count: usize) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..count.max(1) - 1).into_segmented()
}

fn float_column(frame: &DataFrame, name: &str) -> Vec<Option<f64>> {
    frame
        .column(name)
        .ok()
        .and_then(|column| column.cast(&DataType::Float64).ok())
        .map(|column| column.f64().map(|values| values.iter().collect()).unwrap_or_default())
        .unwrap_or_default()
}

fn text_column(frame: &DataFrame, name: &str) -> Vec<String> {
    frame
        .column(name)
        .ok()
        .and_then(|column| column.str().ok().map(|values| values.iter().map(|v| v.unwrap_or("").to_string()).collect()))
        .unwrap_or_default()
}

/// Loss, learning rate, weight decay and EMA momentum (images/s for a method without an
/// EMA) against the optimizer step.
fn training_curves(frame: &DataFrame, path: &Path) -> Result<()> {
    let fourth = if frame.column("ema_momentum").is_ok() {
        ("ema_momentum", "EMA momentum")
    } else {
        ("images_per_second", "images/s")
    };
    let steps: Vec<f64> = float_column(frame, "step").into_iter().map(|v| v.unwrap_or(0.0)).collect();
    png(path, (1200, 800), |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_evenly((2, 2));
        let series = [("loss", "loss"), ("lr", "learning rate"), ("weight_decay", "weight decay"), fourth];
        for (panel, (column, title)) in panels.iter().zip(series) {
            let values = float_column(frame, column);
            let points: Vec<(f64, f64)> = steps
                .iter()
                .zip(&values)
                .filter_map(|(step, value)| value.filter(|v| v.is_finite()).map(|v| (*step, v)))
                .collect();
            line_panel(panel, title, &points).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

fn line_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    points: &[(f64, f64)],
) -> std::result::Result<(), String> {
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (low, high) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (low, high) = if low.is_finite() { (low, high) } else { (0.0, 1.0) };
    let pad = ((high - low) * 0.05).max(high.abs() * 1e-6).max(1e-12);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT_FAMILY, 22))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (low - pad)..(high + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .label_style((FONT_FAMILY, 13))
        .y_label_formatter(&|v| format!("{v:.3e}"))
        .draw()
        .map_err(|e| e.to_string())?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE)).map_err(|e| e.to_string())?;
    Ok(())
}

/// A heat map of the first protocol's cells, each row scaled by its label's count.
fn confusion_matrix(cells: &DataFrame, class_names: &[String], path: &Path) -> Result<()> {
    let protocols = text_column(cells, "protocol");
    let first = protocols.iter().min().cloned().unwrap_or_default();
    let checkpoint = text_column(cells, "checkpoint").into_iter().next().unwrap_or_default();
    let labels = float_column(cells, "label");
    let predicted = float_column(cells, "predicted");
    let counts = float_column(cells, "count");
    let classes = labels.iter().chain(&predicted).flatten().fold(class_names.len(), |n, &c| n.max(c as usize + 1));
    let mut matrix = vec![vec![0.0f64; classes]; classes];
    for row in 0..cells.height() {
        if protocols[row] == first
            && let (Some(label), Some(predicted), Some(count)) = (labels[row], predicted[row], counts[row])
        {
            matrix[label as usize][predicted as usize] += count;
        }
    }
    let name = |class: usize| class_names.get(class).cloned().unwrap_or_else(|| class.to_string());
    png(path, (900, 820), |root| {
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(root)
                .caption(
                    format!("{first}: pretrained encoder ({checkpoint}), linear probe (rows: true class)"),
                    (FONT_FAMILY, 20),
                )
                .margin(15)
                .x_label_area_size(50)
                .y_label_area_size(130)
                .build_cartesian_2d(segments(classes), segments(classes))?;
            // Rows read top-down in class order; columns carry the class index only.
            let label = |value: &SegmentValue<usize>| match value {
                SegmentValue::CenterOf(row) if *row < classes => {
                    format!("{} {}", classes - 1 - row, name(classes - 1 - row))
                }
                _ => String::new(),
            };
            let x_label = |value: &SegmentValue<usize>| match value {
                SegmentValue::CenterOf(class) if *class < classes => class.to_string(),
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(classes)
                .y_labels(classes)
                .x_label_formatter(&x_label)
                .y_label_formatter(&label)
                .label_style((FONT_FAMILY, 13))
                .x_desc("predicted class")
                .draw()?;
            for (true_class, row) in matrix.iter().enumerate() {
                let total: f64 = row.iter().sum::<f64>().max(1.0);
                let y = classes - 1 - true_class;
                for (predicted_class, &count) in row.iter().enumerate() {
                    let share = count / total;
                    let shade = (255.0 * (1.0 - share)) as u8;
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(predicted_class), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(predicted_class + 1), SegmentValue::Exact(y + 1)),
                        ],
                        RGBColor(shade, shade, 255).filled(),
                    )))?;
                    let colour = if share > 0.5 { &WHITE } else { &BLACK };
                    chart.draw_series(std::iter::once(Text::new(
                        format!("{count:.0}"),
                        (SegmentValue::CenterOf(predicted_class), SegmentValue::CenterOf(y)),
                        (FONT_FAMILY, 12).into_font().color(colour),
                    )))?;
                }
            }
            Ok(())
        };
        draw().map_err(|error| error.to_string())
    })
}

/// Linear-probe accuracy per class on the first protocol, pretrained beside random.
/// Returns whether anything was drawn.
fn per_class_accuracy(per_class: &DataFrame, class_names: &[String], path: &Path) -> Result<bool> {
    let linear = per_class
        .clone()
        .lazy()
        .filter(col("probe").eq(lit(LINEAR)))
        .group_by([col("protocol"), col("encoder"), col("checkpoint"), col("class")])
        .agg([col("recall").mean()])
        .collect()
        .map_err(ProbeError::polars("per-class accuracy"))?;
    let protocols = text_column(&linear, "protocol");
    let Some(first) = protocols.iter().min().cloned() else { return Ok(false) };
    let encoders = text_column(&linear, "encoder");
    let checkpoints = text_column(&linear, "checkpoint");
    let pretrained = encoders
        .iter()
        .position(|encoder| encoder == EncoderKind::Pretrained.as_str())
        .map(|row| format!(" ({})", checkpoints[row]))
        .unwrap_or_default();
    let classes = float_column(&linear, "class");
    let recall = float_column(&linear, "recall");
    let count = classes.iter().flatten().fold(class_names.len(), |n, &c| n.max(c as usize + 1));
    let mut bars = vec![[None::<f64>; 2]; count];
    for row in 0..linear.height() {
        // The pretrained encoder against where it started; the other encoders are in the report's table.
        let slot =
            [EncoderKind::Pretrained, EncoderKind::Random].iter().position(|kind| encoders[row] == kind.as_str());
        if protocols[row] == first
            && let (Some(class), Some(value), Some(slot)) = (classes[row], recall[row], slot)
        {
            bars[class as usize][slot] = Some(value);
        }
    }
    let name = |class: usize| class_names.get(class).cloned().unwrap_or_else(|| class.to_string());
    png(path, (1100, 650), |root| {
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(root)
                .caption(
                    format!(
                        "{first}: linear-probe accuracy per class (blue: pretrained{pretrained}, grey: random init)"
                    ),
                    (FONT_FAMILY, 20),
                )
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(segments(count), 0.0..1.0)?;
            let x_label = |value: &SegmentValue<usize>| match value {
                SegmentValue::CenterOf(class) if *class < count => name(*class).chars().take(12).collect(),
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(count)
                .x_label_formatter(&x_label)
                .y_desc("accuracy")
                .label_style((FONT_FAMILY, 13))
                .draw()?;
            for (class, [pretrained, random]) in bars.iter().enumerate() {
                if let Some(value) = pretrained {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(SegmentValue::Exact(class), 0.0), (SegmentValue::CenterOf(class), *value)],
                        BLUE.filled(),
                    )))?;
                }
                if let Some(value) = random {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(SegmentValue::CenterOf(class), 0.0), (SegmentValue::Exact(class + 1), *value)],
                        RGBColor(150, 150, 150).filled(),
                    )))?;
                }
            }
            Ok(())
        };
        draw().map_err(|error| error.to_string())
    })?;
    Ok(true)
}

/// One bar of the method comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar<'a> {
    pub method: String,
    /// `linear`, `knn` or `finetune`.
    pub protocol: &'a str,
    pub accuracy: f64,
}

/// The method comparison on `task`: one group of bars per protocol (linear, kNN,
/// fine-tune) and one bar per method, in the order the bars come, each labelled with its
/// value.
pub fn comparison_bars(task: &str, bars: &[Bar<'_>], path: &Path) -> Result<()> {
    ensure_font()?;
    if bars.is_empty() {
        return Err(ProbeError::bad(path, "nothing to plot: the comparison has no rows"));
    }
    let protocols = [LINEAR, KNN, FINETUNE];
    // Each method its own colour; the random-init baseline in grey.
    let mut methods: Vec<&str> = Vec::new();
    for bar in bars {
        if !methods.contains(&bar.method.as_str()) {
            methods.push(&bar.method);
        }
    }
    let palette = [RGBColor(40, 90, 200), RGBColor(220, 120, 30), RGBColor(40, 160, 90), RGBColor(170, 60, 170)];
    // The baselines in greys.
    let colours: Vec<RGBColor> = methods
        .iter()
        .enumerate()
        .map(|(slot, method)| match *method {
            method if method == EncoderKind::Random.as_str() => RGBColor(150, 150, 150),
            method if method == EncoderKind::Pixels.as_str() => RGBColor(90, 90, 90),
            _ => palette[slot % palette.len()],
        })
        .collect();
    // The legend has a panel of its own right of the plot, so it covers no bar.
    png(path, (1200, 620), |root| {
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let (plot, legend) = root.split_horizontally(1000);
            let mut chart = ChartBuilder::on(&plot)
                .caption(format!("{task}: test accuracy by evaluation protocol"), (FONT_FAMILY, 22))
                .margin(15)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..protocols.len() as f64, -0.08..1.0)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .disable_x_axis()
                .y_desc("accuracy")
                .label_style((FONT_FAMILY, 14))
                .draw()?;
            // The bars of one protocol share 0.8 of its slot.
            let width = 0.8 / methods.len().max(1) as f64;
            for (index, protocol) in protocols.iter().enumerate() {
                chart.draw_series(std::iter::once(Text::new(
                    protocol.to_string(),
                    (index as f64 + 0.45, -0.03),
                    (FONT_FAMILY, 18).into_font(),
                )))?;
            }
            for (slot, (method, colour)) in methods.iter().zip(&colours).enumerate() {
                let colour = *colour;
                let values: Vec<(usize, f64)> = bars
                    .iter()
                    .filter(|bar| bar.method == *method)
                    .filter_map(|bar| {
                        protocols.iter().position(|p| *p == bar.protocol).map(|index| (index, bar.accuracy))
                    })
                    .collect();
                let left = |index: usize| index as f64 + 0.1 + slot as f64 * width;
                chart.draw_series(values.iter().map(|&(index, accuracy)| {
                    Rectangle::new([(left(index), 0.0), (left(index) + width * 0.9, accuracy)], colour.filled())
                }))?;
                chart.draw_series(values.iter().map(|&(index, accuracy)| {
                    Text::new(
                        format!("{:.1}", 100.0 * accuracy),
                        (left(index), accuracy + 0.04),
                        (FONT_FAMILY, if methods.len() > 3 { 12 } else { 14 }).into_font(),
                    )
                }))?;
            }
            for (row, (method, colour)) in methods.iter().zip(&colours).enumerate() {
                let y = 60 + 28 * row as i32;
                legend.draw(&Rectangle::new([(10, y - 7), (26, y + 7)], colour.filled()))?;
                legend.draw(&Text::new(
                    method.to_string(),
                    (34, y),
                    (FONT_FAMILY, 16).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center)),
                ))?;
            }
            Ok(())
        };
        draw().map_err(|error| error.to_string())
    })
}
