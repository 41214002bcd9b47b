//! Frozen features: each labelled image through the encoder once, average-pooled over its
//! tokens, written to Parquet as `id: UInt64`, `label: Int32`, `feature: FixedSizeList<f32>`.
//!
//! Images come from the data plane ([`jepa_shared::labelled`]) in manifest order, resized
//! whole to the model's resolution (no crop, no augmentation), and are normalised with the
//! run's pixel statistics, as the trainer's first op does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, UInt64Type};
use arrow_array::{Array, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use jepa_shared::labelled::each_labelled_image;
use jepa_shared::{Dataset, LabelledImages, Progress};
use jepa_trainer::vit::{VisionTransformer, normalize_pixels};
use jepa_trainer::{EncoderKind, Run};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::{ProbeError, Result};
use crate::protocol::{TEST_SPLIT, TRAIN_SPLIT};

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
        jepa_shared::atomic::write_file(path, |file| {
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
        let table = table.ok_or_else(|| ProbeError::bad(path, "holds no rows"))?;
        if let Some(id) = table.first_non_finite() {
            return Err(ProbeError::bad(
                path,
                format!(
                    "image {id}'s feature holds a NaN or an infinity: write the features again from an encoder whose \
                     weights are finite"
                ),
            ));
        }
        Ok(table)
    }

    /// The id of the first row holding a value that is not finite.
    pub fn first_non_finite(&self) -> Option<u64> {
        let index = self.values.iter().position(|value| !value.is_finite())?;
        Some(self.ids[index / self.dim.max(1)])
    }
}

/// How a run's images become encoder input.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    pub image_size_px: usize,
    pub channels: usize,
    pub pixel_mean: Vec<f32>,
    pub pixel_std: Vec<f32>,
}

impl ImageInput {
    /// The geometry of `run`'s encoder and the pixel statistics it trained with.
    pub fn of_run(run: &Run) -> Result<Self> {
        let encoder = run.recipe.encoder();
        let (pixel_mean, pixel_std) = run.pixel_stats()?;
        Ok(Self { image_size_px: encoder.image_size_px, channels: encoder.channels, pixel_mean, pixel_std })
    }

    /// Values per image, `channels × size × size`.
    pub fn image_len(&self) -> usize {
        self.channels * self.image_size_px * self.image_size_px
    }

    /// `count` u8 images (`[count, channels, size, size]`) normalised on `device`.
    pub fn normalise<B: Backend>(&self, pixels: &[u8], count: usize, device: &B::Device) -> Tensor<B, 4> {
        let shape = [count, self.channels, self.image_size_px, self.image_size_px];
        normalize_pixels(pixels, shape, &self.pixel_mean, &self.pixel_std, device)
    }
}

/// How features are taken.
#[derive(Debug, Clone)]
pub struct ExtractSettings {
    pub input: ImageInput,
    /// Average-pool the last `layers` blocks and concatenate them (1: the last layer only).
    pub layers: usize,
    pub batch_size: usize,
    /// Batches encoded at once, each on its own thread.
    pub threads: usize,
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
    let input = &settings.input;
    let batch_size = settings.batch_size.max(1);
    let threads = settings.threads.max(1);
    // Enough images in memory for a few batches per thread, and no more.
    let chunk_images = batch_size * threads * 4;
    let mut table = FeatureTable::new(encoder.dim() * settings.layers);
    let mut pending = LabelledImages { image_len: input.image_len(), ..LabelledImages::default() };
    each_labelled_image(dataset, split, input.image_size_px, input.channels, |id, label, pixels| {
        pending.push(id, label, pixels);
        if pending.len() == chunk_images {
            encode_pending(encoder, &mut pending, settings, device, progress, &mut table);
        }
        Ok::<_, jepa_shared::FileError>(std::ops::ControlFlow::Continue(()))
    })?;
    encode_pending(encoder, &mut pending, settings, device, progress, &mut table);
    Ok(table)
}

/// Average-pooled features of `count` images (`[count, channels, size, size]` u8), row-major.
pub fn encode_batch<B: Backend>(
    encoder: &VisionTransformer<B>,
    pixels: &[u8],
    count: usize,
    settings: &ExtractSettings,
    device: &B::Device,
) -> Vec<f32> {
    let images = settings.input.normalise::<B>(pixels, count, device);
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
    let image_len = settings.input.image_len();
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
    pending: &mut LabelledImages,
    settings: &ExtractSettings,
    device: &B::Device,
    progress: &(dyn Fn(usize) + Sync),
    table: &mut FeatureTable,
) {
    let values = encode_images(encoder, &pending.pixels, pending.len(), settings, device, progress);
    for ((id, label), feature) in pending.ids.iter().zip(&pending.labels).zip(values.chunks_exact(table.dim)) {
        table.push(*id, *label, feature);
    }
    pending.clear();
}

/// The key-value pairs a features file was written with.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(ProbeError::io(path))?;
    let reader = SerializedFileReader::new(file).map_err(ProbeError::parquet(path))?;
    let pairs = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    Ok(pairs.into_iter().filter_map(|pair| pair.value.map(|value| (pair.key, value))).collect())
}

/// The metadata key of the short name of the checkpoint a features file's encoder came from.
const CHECKPOINT_NAME: &str = "checkpoint_name";

/// Where a features file's encoder came from: in full (a checkpoint's path, `init (seed 0)`,
/// an imported file), and the short name tables carry (`step-00000150`, `init`, `imported`,
/// `none` for the pixels; `unrecorded` for a file written before names were kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub checkpoint: String,
}

impl Origin {
    pub fn read(path: &Path) -> Result<Self> {
        let metadata = read_metadata(path)?;
        let field = |key: &str, missing: &str| metadata.get(key).cloned().unwrap_or_else(|| missing.to_string());
        Ok(Self { source: field("checkpoint", "unrecorded"), checkpoint: field(CHECKPOINT_NAME, "unrecorded") })
    }

    /// The origin both splits' features share: a probe fitted on one checkpoint's train
    /// features and scored on another's test features would measure neither.
    pub fn of_splits(train: &Path, test: &Path) -> Result<Self> {
        let (fitted, scored) = (Self::read(train)?, Self::read(test)?);
        if fitted != scored {
            return Err(ProbeError::bad(
                test,
                format!(
                    "was encoded from {}, but {} from {}: write both splits' features from one checkpoint \
                     (`probe features` again)",
                    scored.source,
                    train.display(),
                    fitted.source
                ),
            ));
        }
        Ok(fitted)
    }
}

/// How `probe features` runs.
#[derive(Debug, Clone)]
pub struct FeatureOptions {
    /// A checkpoint of the run (`step-N`, `N` or a path); the latest when `None`.
    pub checkpoint: Option<String>,
    /// Concatenate the average-pooled outputs of the last `layers` blocks.
    pub layers: usize,
    pub batch_size: usize,
    /// Batches encoded in parallel (CPU); 1 on a GPU is enough.
    pub threads: usize,
    pub progress: bool,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { checkpoint: None, layers: 1, batch_size: 64, threads, progress: true }
    }
}

/// Writes `encoder`'s features of the train and test splits of `run`; returns the files.
pub fn write_features<B: burn::tensor::backend::AutodiffBackend>(
    run: &Run,
    encoder: EncoderKind,
    options: &FeatureOptions,
    device: &B::Device,
) -> Result<Vec<std::path::PathBuf>> {
    let depth = run.recipe.encoder().depth;
    if options.layers == 0 || options.layers > depth {
        return Err(ProbeError::bad(
            run.folder.root(),
            format!("--layers {} is not in 1..={depth} (the encoder's depth)", options.layers),
        ));
    }
    let input = ImageInput::of_run(run)?;
    let dataset = Dataset::open(run.recipe.dataset())?;
    if encoder == EncoderKind::Pixels {
        return write_pixels(run, &input, &dataset);
    }
    let loaded = run.encoder::<B>(encoder, options.checkpoint.as_deref(), device)?;
    let settings = ExtractSettings {
        input,
        layers: options.layers,
        batch_size: options.batch_size.max(1),
        threads: options.threads.max(1),
    };
    let metadata: HashMap<String, String> = [
        ("encoder".to_string(), encoder.as_str().to_string()),
        ("checkpoint".to_string(), loaded.source.clone()),
        (CHECKPOINT_NAME.to_string(), loaded.from.clone()),
        ("layers".to_string(), options.layers.to_string()),
        ("run".to_string(), run.recipe.name().to_string()),
    ]
    .into();
    // Both splits are encoded before either is written: a pair of files always comes from
    // one encoder, and a refused encoder leaves the earlier pair as it was.
    let mut tables = Vec::new();
    for split in [TRAIN_SPLIT, TEST_SPLIT] {
        let count = dataset.split(split)?.count;
        let bar = Progress::new(options.progress).bar(count, &format!("{encoder} {split}"), "images");
        let table = extract(&loaded.encoder, &dataset, split, &settings, device, &|images| bar.inc(images as u64))?;
        bar.finish_and_clear();
        if let Some(id) = table.first_non_finite() {
            return Err(ProbeError::bad(
                run.folder.root(),
                format!(
                    "the {encoder} encoder from {} gives image {id} of {split} a non-finite feature: its weights are \
                     damaged or diverged; nothing was written",
                    loaded.source
                ),
            ));
        }
        tables.push((split, table));
    }
    let mut written = Vec::new();
    for (split, table) in tables {
        let path = run.folder.features(encoder, split);
        table.write(&path, &metadata)?;
        written.push(path);
    }
    Ok(written)
}

/// The pixels baseline: every image of train and test at the encoder's resolution or at the
/// one it is stored at, whichever is smaller, each channel standardised with the run's
/// pixel statistics, as the encoder's input is. Upsampling adds no information, only size:
/// STL-10 at 224 px would be 150,528 values an image (7.8 GB for its 13,000 labelled
/// images), at its stored 96 px it is 27,648 (1.4 GB).
fn write_pixels(run: &Run, input: &ImageInput, dataset: &Dataset) -> Result<Vec<std::path::PathBuf>> {
    let side = stored_side(dataset, TRAIN_SPLIT)?.map_or(input.image_size_px, |side| side.min(input.image_size_px));
    let input = &ImageInput { image_size_px: side, ..input.clone() };
    let metadata: HashMap<String, String> = [
        ("encoder".to_string(), EncoderKind::Pixels.as_str().to_string()),
        ("checkpoint".to_string(), format!("pixels ({0}×{0}, standardised)", input.image_size_px)),
        (CHECKPOINT_NAME.to_string(), "none".to_string()),
        ("run".to_string(), run.recipe.name().to_string()),
    ]
    .into();
    let mut written = Vec::new();
    for split in [TRAIN_SPLIT, TEST_SPLIT] {
        let table = pixel_table(dataset, split, input)?;
        let path = run.folder.features(EncoderKind::Pixels, split);
        table.write(&path, &metadata)?;
        written.push(path);
    }
    Ok(written)
}

/// The longer side of `split`'s first image as stored, if it has one.
fn stored_side(dataset: &Dataset, split: &str) -> Result<Option<usize>> {
    let Some(group) = dataset.row_groups(split)?.next() else { return Ok(None) };
    Ok(group?.iter().next().map(|image| usize::from(image.height.max(image.width))))
}

/// `split`'s images as rows of standardised pixel values, channel-major, in manifest order.
pub fn pixel_table(dataset: &Dataset, split: &str, input: &ImageInput) -> Result<FeatureTable> {
    let plane = input.image_size_px * input.image_size_px;
    let mut table = FeatureTable::new(input.image_len());
    let mut row = vec![0f32; input.image_len()];
    each_labelled_image(dataset, split, input.image_size_px, input.channels, |id, label, pixels| {
        for (index, (&pixel, value)) in pixels.iter().zip(row.iter_mut()).enumerate() {
            let channel = index / plane;
            *value = (f32::from(pixel) / 255.0 - input.pixel_mean[channel]) / input.pixel_std[channel];
        }
        table.push(id, label, &row);
        Ok::<_, jepa_shared::FileError>(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(table)
}
