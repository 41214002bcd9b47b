//! Frozen features: each labelled image through the encoder once, average-pooled over its
//! tokens, written to Parquet as `id: UInt64`, `label: Int32`, `feature: FixedSizeList<f32>`.
//!
//! Images are read with the shard reader in manifest order and resized whole to the
//! model's resolution (no crop, no augmentation), normalised with the run's pixel
//! statistics, as the trainer's first op does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, UInt64Type};
use arrow_array::{Array, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use jepa_shared::Dataset;
use jepa_shared::vit::{VisionTransformer, normalize_pixels};
use jepa_trainer::augment::{CropBox, ImagePipeline, SourceImage};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::{ProbeError, Result};

/// Features of one split, row-major `[rows, dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureTable {
    pub ids: Vec<u64>,
    pub labels: Vec<i32>,
    pub dim: usize,
    pub values: Vec<f32>,
}

impl FeatureTable {
    pub fn new(dim: usize) -> Self {
        Self { ids: Vec::new(), labels: Vec::new(), dim, values: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn row(&self, row: usize) -> &[f32] {
        &self.values[row * self.dim..(row + 1) * self.dim]
    }

    pub fn push(&mut self, id: u64, label: i32, feature: &[f32]) {
        assert_eq!(feature.len(), self.dim, "feature length");
        self.ids.push(id);
        self.labels.push(label);
        self.values.extend_from_slice(feature);
    }

    /// The rows whose ids are in `ids`, in this table's order.
    pub fn select_ids(&self, ids: &[u64]) -> Self {
        let wanted: std::collections::HashSet<u64> = ids.iter().copied().collect();
        self.select_rows(&(0..self.len()).filter(|&row| wanted.contains(&self.ids[row])).collect::<Vec<_>>())
    }

    pub fn select_rows(&self, rows: &[usize]) -> Self {
        let mut out = Self::new(self.dim);
        for &row in rows {
            out.push(self.ids[row], self.labels[row], self.row(row));
        }
        out
    }

    /// Classes `0..n` where `n` is one past the largest label.
    pub fn num_classes(&self) -> usize {
        self.labels.iter().map(|&label| label as usize + 1).max().unwrap_or(0)
    }

    /// Writes `path` under a temporary name and renames it; `metadata` goes into the
    /// Parquet footer as key-value pairs (encoder, checkpoint, layers).
    pub fn write(&self, path: &Path, metadata: &HashMap<String, String>) -> Result<()> {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("label", DataType::Int32, false),
            Field::new("feature", DataType::FixedSizeList(item.clone(), self.dim as i32), false),
        ]));
        let features =
            FixedSizeListArray::try_new(item, self.dim as i32, Arc::new(Float32Array::from(self.values.clone())), None)
                .map_err(|error| ProbeError::bad(path, error.to_string()))?;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt64Array::from(self.ids.clone())),
                Arc::new(Int32Array::from(self.labels.clone())),
                Arc::new(features),
            ],
        )
        .map_err(|error| ProbeError::bad(path, error.to_string()))?;
        let mut pairs: Vec<KeyValue> =
            metadata.iter().map(|(key, value)| KeyValue::new(key.clone(), value.clone())).collect();
        pairs.sort_by(|a, b| a.key.cmp(&b.key));
        let properties = WriterProperties::builder()
            .set_key_value_metadata(Some(pairs))
            .set_max_row_group_row_count(Some(16_384))
            .build();
        write_atomically(path, |file| {
            let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(ProbeError::parquet(path))?;
            writer.write(&batch).map_err(ProbeError::parquet(path))?;
            writer.close().map_err(ProbeError::parquet(path))?;
            Ok(())
        })
    }

    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(ProbeError::io(path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(ProbeError::parquet(path))?
            .build()
            .map_err(ProbeError::parquet(path))?;
        let mut table: Option<FeatureTable> = None;
        for batch in reader {
            let batch = batch.map_err(|error| ProbeError::bad(path, error.to_string()))?;
            let column = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| ProbeError::bad(path, format!("no `{name}` column")))
            };
            let ids = column("id")?.as_primitive_opt::<UInt64Type>().cloned();
            let labels = column("label")?.as_primitive_opt::<Int32Type>().cloned();
            let features = column("feature")?.as_fixed_size_list_opt().cloned();
            let (Some(ids), Some(labels), Some(features)) = (ids, labels, features) else {
                return Err(ProbeError::bad(path, "expected id UInt64, label Int32, feature FixedSizeList<Float32>"));
            };
            let dim = features.value_length() as usize;
            let values = features
                .values()
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(|| ProbeError::bad(path, "`feature` items are not Float32"))?;
            let table = table.get_or_insert_with(|| FeatureTable::new(dim));
            if table.dim != dim || labels.null_count() > 0 || ids.null_count() > 0 {
                return Err(ProbeError::bad(path, "rows of mixed feature sizes or null ids/labels"));
            }
            table.ids.extend(ids.values().iter());
            table.labels.extend(labels.values().iter());
            let offset = features.offset() * dim;
            table.values.extend_from_slice(&values.values()[offset..offset + features.len() * dim]);
        }
        table.ok_or_else(|| ProbeError::bad(path, "holds no rows"))
    }
}

/// Calls `write` on a temporary file beside `path`, then renames it into place.
pub fn write_atomically(path: &Path, write: impl FnOnce(std::fs::File) -> Result<()>) -> Result<()> {
    let folder = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(ProbeError::io(folder))?;
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("output");
    let temp = folder.join(format!(".{name}.tmp"));
    let file = std::fs::File::create(&temp).map_err(ProbeError::io(&temp))?;
    let result = write(file.try_clone().map_err(ProbeError::io(&temp))?);
    if let Err(error) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(error);
    }
    file.sync_all().map_err(ProbeError::io(&temp))?;
    std::fs::rename(&temp, path).map_err(ProbeError::io(path))
}

/// How features are taken.
#[derive(Debug, Clone)]
pub struct ExtractSettings {
    pub image_size_px: usize,
    pub channels: usize,
    pub pixel_mean: Vec<f32>,
    pub pixel_std: Vec<f32>,
    /// Average-pool the last `layers` blocks and concatenate them (1: the last layer only).
    pub layers: usize,
    pub batch_size: usize,
    /// Batches encoded at once, each on its own thread.
    pub threads: usize,
}

/// Images decoded and resized, waiting for the encoder.
struct PendingImages {
    ids: Vec<u64>,
    labels: Vec<i32>,
    /// `[images, channels, size, size]`, u8.
    pixels: Vec<u8>,
}

/// Features of every image of `split`, in manifest order, encoded a few batches per thread
/// at a time ([`encode_images`]): a frozen forward pass on the CPU backend uses about one
/// core by itself. `progress` is told each batch's size.
pub fn extract<B: Backend>(
    encoder: &VisionTransformer<B>,
    dataset: &Dataset,
    split: &str,
    settings: &ExtractSettings,
    device: &B::Device,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<FeatureTable> {
    let size = settings.image_size_px;
    let batch_size = settings.batch_size.max(1);
    let threads = settings.threads.max(1);
    // Enough images in memory for a few batches per thread, and no more.
    let chunk_images = batch_size * threads * 4;
    let mut table = FeatureTable::new(encoder.dim() * settings.layers);
    let mut pending = PendingImages { ids: Vec::new(), labels: Vec::new(), pixels: Vec::new() };
    each_labelled_image(dataset, split, size, settings.channels, |id, label, pixels| {
        pending.ids.push(id);
        pending.labels.push(label);
        pending.pixels.extend_from_slice(pixels);
        if pending.ids.len() == chunk_images {
            encode_pending(encoder, &mut pending, settings, device, progress, &mut table);
        }
        Ok(())
    })?;
    encode_pending(encoder, &mut pending, settings, device, progress, &mut table);
    Ok(table)
}

/// Calls `visit(id, label, pixels)` for every image of `split` in manifest order, resized
/// whole to `image_size_px` with `channels` channels (`[channels, size, size]` u8). An
/// unlabelled image is an error naming the split and row group.
pub fn each_labelled_image(
    dataset: &Dataset,
    split: &str,
    image_size_px: usize,
    channels: usize,
    mut visit: impl FnMut(u64, i32, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut pipeline = ImagePipeline::new(image_size_px as u32, channels as u8);
    let mut pixels = vec![0u8; channels * image_size_px * image_size_px];
    let location = |row_group: usize| format!("split `{split}` of {}, row group {row_group}", dataset.root().display());
    for group in dataset.row_groups(split)? {
        let group = group?;
        for image in group.iter() {
            let label = image.label.ok_or_else(|| ProbeError::Bad {
                path: location(group.row_group).into(),
                problem: format!("image {} has no label", image.id),
            })?;
            let source = SourceImage {
                height: image.height.into(),
                width: image.width.into(),
                channels: image.channels,
                pixels: image.pixels,
            };
            let whole = CropBox::whole(image.height.into(), image.width.into());
            pipeline.process(source, whole, &mut pixels).map_err(|problem| ProbeError::Bad {
                path: location(group.row_group).into(),
                problem: format!("image {}: {problem}", image.id),
            })?;
            visit(image.id, i32::from(label), &pixels)?;
        }
    }
    Ok(())
}

/// Labelled images in memory, `[rows, channels, size, size]` u8.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledImages {
    pub ids: Vec<u64>,
    pub labels: Vec<i32>,
    pub pixels: Vec<u8>,
    /// Values per image.
    pub image_len: usize,
}

impl LabelledImages {
    /// Every image of `split` (or those whose id is in `keep`), as [`each_labelled_image`] reads them.
    pub fn read(
        dataset: &Dataset,
        split: &str,
        image_size_px: usize,
        channels: usize,
        keep: Option<&std::collections::HashSet<u64>>,
    ) -> Result<Self> {
        let mut images = Self { image_len: channels * image_size_px * image_size_px, ..Self::default() };
        each_labelled_image(dataset, split, image_size_px, channels, |id, label, pixels| {
            if keep.is_none_or(|keep| keep.contains(&id)) {
                images.ids.push(id);
                images.labels.push(label);
                images.pixels.extend_from_slice(pixels);
            }
            Ok(())
        })?;
        Ok(images)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn image(&self, row: usize) -> &[u8] {
        &self.pixels[row * self.image_len..(row + 1) * self.image_len]
    }

    pub fn select_rows(&self, rows: &[usize]) -> Self {
        let mut out = Self { image_len: self.image_len, ..Self::default() };
        for &row in rows {
            out.ids.push(self.ids[row]);
            out.labels.push(self.labels[row]);
            out.pixels.extend_from_slice(self.image(row));
        }
        out
    }
}

/// Average-pooled features of `count` images (`[count, channels, size, size]` u8), row-major.
pub fn encode_batch<B: Backend>(
    encoder: &VisionTransformer<B>,
    pixels: &[u8],
    count: usize,
    settings: &ExtractSettings,
    device: &B::Device,
) -> Vec<f32> {
    let size = settings.image_size_px;
    let images = normalize_pixels::<B>(
        pixels,
        [count, settings.channels, size, size],
        &settings.pixel_mean,
        &settings.pixel_std,
        device,
    );
    let pooled: Vec<Tensor<B, 2>> = encoder
        .forward_layers(images, None, settings.layers)
        .into_iter()
        .map(|tokens| tokens.mean_dim(1).squeeze_dim::<2>(1))
        .collect();
    Tensor::cat(pooled, 1).into_data().convert::<f32>().into_vec::<f32>().expect("f32 features")
}

/// Average-pooled features of `count` images (`[count, channels, size, size]` u8),
/// row-major, in order. Batches of `settings.batch_size` run on `settings.threads` threads,
/// each with its own copy of the encoder; `progress` is told each finished batch's size.
pub fn encode_images<B: Backend>(
    encoder: &VisionTransformer<B>,
    pixels: &[u8],
    count: usize,
    settings: &ExtractSettings,
    device: &B::Device,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<f32> {
    let size = settings.image_size_px;
    let image_len = settings.channels * size * size;
    let batch_size = settings.batch_size.max(1);
    let batches = count.div_ceil(batch_size);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Vec<f32>>> = vec![None; batches];
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|scope| {
        for _ in 0..settings.threads.max(1).min(batches) {
            let encoder = encoder.clone();
            let (next, slots) = (&next, &slots);
            scope.spawn(move || {
                loop {
                    let batch = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if batch >= batches {
                        break;
                    }
                    let rows = batch * batch_size..((batch + 1) * batch_size).min(count);
                    let batch_pixels = &pixels[rows.start * image_len..rows.end * image_len];
                    let values = encode_batch(&encoder, batch_pixels, rows.len(), settings, device);
                    progress(rows.len());
                    slots.lock().expect("no worker panicked holding the lock")[batch] = Some(values);
                }
            });
        }
    });
    results.into_iter().flat_map(|values| values.expect("every batch was encoded")).collect()
}

/// Encodes the pending images, appends their features in order, and empties the buffers.
fn encode_pending<B: Backend>(
    encoder: &VisionTransformer<B>,
    pending: &mut PendingImages,
    settings: &ExtractSettings,
    device: &B::Device,
    progress: &(dyn Fn(usize) + Sync),
    table: &mut FeatureTable,
) {
    let values = encode_images(encoder, &pending.pixels, pending.ids.len(), settings, device, progress);
    for ((id, label), feature) in pending.ids.iter().zip(&pending.labels).zip(values.chunks_exact(table.dim)) {
        table.push(*id, *label, feature);
    }
    pending.ids.clear();
    pending.labels.clear();
    pending.pixels.clear();
}

/// The key-value pairs a features file was written with.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(ProbeError::io(path))?;
    let reader = SerializedFileReader::new(file).map_err(ProbeError::parquet(path))?;
    let pairs = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    Ok(pairs.into_iter().filter_map(|pair| pair.value.map(|value| (pair.key, value))).collect())
}
