//! Metrics plumbing: a [`metrics`] recorder that keeps the latest value of every metric,
//! and a table of one row per training step written to Parquet.
//!
//! Code anywhere (the loader, the training loop) reports through the `metrics` macros; at
//! the end of each optimizer step the loop takes a [`StepRecorder::snapshot`] and appends
//! it as a row. Gauges give their last value, counters their total, histograms the **sum**
//! of what they recorded since the previous snapshot (e.g. seconds waited in that step).
//! The table is rewritten atomically, so `metrics.parquet` is always whole.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, Float64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{FileError, Result};

/// The latest value of every metric reported to it.
#[derive(Clone, Default)]
pub struct StepRecorder {
    values: Arc<Mutex<BTreeMap<String, Arc<Slot>>>>,
}

#[derive(Default)]
struct Slot {
    kind: Mutex<Option<Kind>>,
    bits: AtomicU64,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Slot {
    fn value(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::SeqCst))
    }

    fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::SeqCst);
    }

    fn add(&self, value: f64) {
        let _ = self
            .bits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.add(value as f64);
    }

    fn absolute(&self, value: u64) {
        self.set(value as f64);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        self.add(value);
    }

    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    fn set(&self, value: f64) {
        Slot::set(self, value);
    }
}

impl HistogramFn for Slot {
    fn record(&self, value: f64) {
        self.add(value);
    }
}

impl std::fmt::Debug for StepRecorder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.values.lock().expect("metrics lock").keys().cloned().collect();
        formatter.debug_struct("StepRecorder").field("metrics", &names).finish()
    }
}

impl StepRecorder {
    fn slot(&self, key: &Key, kind: Kind) -> Arc<Slot> {
        let mut values = self.values.lock().expect("metrics lock");
        let slot = values.entry(key.name().to_string()).or_default().clone();
        slot.kind.lock().expect("slot lock").get_or_insert(kind);
        slot
    }

    /// Every metric's value now; histogram sums start again from zero.
    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        let values = self.values.lock().expect("metrics lock");
        values
            .iter()
            .map(|(name, slot)| {
                let value = slot.value();
                if *slot.kind.lock().expect("slot lock") == Some(Kind::Histogram) {
                    slot.set(0.0);
                }
                (name.clone(), value)
            })
            .collect()
    }

    /// Prometheus text exposition of the current values (histograms as their running sums).
    pub fn prometheus_text(&self) -> String {
        let values = self.values.lock().expect("metrics lock");
        let mut text = String::new();
        for (name, slot) in values.iter() {
            let kind = match *slot.kind.lock().expect("slot lock") {
                Some(Kind::Counter) => "counter",
                _ => "gauge",
            };
            text.push_str(&format!("# TYPE {name} {kind}\n{name} {}\n", slot.value()));
        }
        text
    }
}

impl Recorder for StepRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key, Kind::Counter))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key, Kind::Gauge))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.slot(key, Kind::Histogram))
    }
}

/// One row per step: a `step` column (UInt64) and one Float64 column per metric name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsTable {
    pub columns: Vec<String>,
    pub steps: Vec<u64>,
    /// `rows[i][c]`: value of `columns[c]` at `steps[i]` (NaN where it was not reported).
    pub rows: Vec<Vec<f64>>,
}

impl MetricsTable {
    pub fn new(columns: &[&str]) -> Self {
        Self { columns: columns.iter().map(|name| name.to_string()).collect(), ..Self::default() }
    }

    /// Appends a row: the table's columns taken from `values` (NaN for missing ones).
    pub fn push(&mut self, step: u64, values: &BTreeMap<String, f64>) {
        self.steps.push(step);
        self.rows.push(self.columns.iter().map(|name| values.get(name).copied().unwrap_or(f64::NAN)).collect());
    }

    /// Keeps the rows of steps before `step` (what a checkpoint at `step` had seen).
    pub fn truncate_to(&mut self, step: u64) {
        let keep = self.steps.iter().take_while(|&&row_step| row_step < step).count();
        self.steps.truncate(keep);
        self.rows.truncate(keep);
    }

    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let index = self.columns.iter().position(|column| column == name)?;
        Some(self.rows.iter().map(|row| row[index]).collect())
    }

    /// Writes the table to `path`, whole or not at all.
    pub fn write_atomically(&self, path: &Path) -> Result<()> {
        let mut fields = vec![Field::new("step", DataType::UInt64, false)];
        fields.extend(self.columns.iter().map(|name| Field::new(name, DataType::Float64, false)));
        let schema = Arc::new(Schema::new(fields));
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(self.steps.clone()))];
        for index in 0..self.columns.len() {
            arrays.push(Arc::new(Float64Array::from(self.rows.iter().map(|row| row[index]).collect::<Vec<_>>())));
        }
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(FileError::arrow(path))?;
        crate::atomic::write_file(path, |file| {
            let mut writer = ArrowWriter::try_new(file, schema, None).map_err(FileError::parquet(path))?;
            writer.write(&batch).map_err(FileError::parquet(path))?;
            writer.close().map_err(FileError::parquet(path))?;
            Ok(())
        })
    }

    pub fn read(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(FileError::io(path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(FileError::parquet(path))?
            .build()
            .map_err(FileError::parquet(path))?;
        let mut table = Self::default();
        for batch in reader {
            let batch = batch.map_err(FileError::arrow(path))?;
            let schema = batch.schema();
            let invalid = |problem: String| FileError::Invalid { path: path.to_path_buf(), problem };
            if table.columns.is_empty() {
                table.columns = schema.fields().iter().skip(1).map(|field| field.name().clone()).collect();
            }
            let steps = batch
                .column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| invalid("first column `step` is not UInt64".into()))?;
            let columns: Vec<&Float64Array> = (1..batch.num_columns())
                .map(|index| {
                    batch
                        .column(index)
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .ok_or_else(|| invalid(format!("column `{}` is not Float64", schema.field(index).name())))
                })
                .collect::<Result<_>>()?;
            for row in 0..batch.num_rows() {
                table.steps.push(steps.value(row));
                table.rows.push(columns.iter().map(|column| column.value(row)).collect());
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_keep_the_last_value_counters_the_total_histograms_the_sum_per_snapshot() {
        let recorder = StepRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("loss").set(2.0);
            metrics::gauge!("loss").set(1.5);
            metrics::counter!("images").increment(64);
            metrics::counter!("images").increment(64);
            metrics::histogram!("wait").record(0.25);
            metrics::histogram!("wait").record(0.5);
        });
        let first = recorder.snapshot();
        assert_eq!((first["loss"], first["images"], first["wait"]), (1.5, 128.0, 0.75));
        metrics::with_local_recorder(&recorder, || metrics::histogram!("wait").record(0.125));
        let second = recorder.snapshot();
        assert_eq!((second["loss"], second["images"], second["wait"]), (1.5, 128.0, 0.125));
        assert!(recorder.prometheus_text().contains("# TYPE images counter\nimages 128\n"));
    }

    #[test]
    fn the_table_round_trips_through_parquet_and_truncates_to_a_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        let mut table = MetricsTable::new(&["loss", "lr"]);
        for step in 0..5u64 {
            let values = BTreeMap::from([("loss".to_string(), 1.0 / (step + 1) as f64), ("lr".to_string(), 1e-3)]);
            table.push(step, &values);
        }
        table.push(5, &BTreeMap::new());
        table.write_atomically(&path).unwrap();
        let mut read = MetricsTable::read(&path).unwrap();
        assert_eq!(read.columns, table.columns);
        assert_eq!(read.steps, table.steps);
        assert_eq!(read.rows[..5], table.rows[..5]);
        assert!(read.rows[5].iter().all(|value| value.is_nan()));
        read.truncate_to(3);
        assert_eq!(read.steps, vec![0, 1, 2]);
        assert_eq!(read.column("loss").unwrap(), vec![1.0, 0.5, 1.0 / 3.0]);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(files, ["metrics.parquet"], "no temporary file is left");
    }
}
