//! The shard schema: one Parquet row per image, raw HWC `u8` pixels, so that "decoding" an
//! image on the training path costs a memcpy rather than a JPEG decode.
//!
//! | column     | Arrow type | meaning                                   |
//! |------------|------------|-------------------------------------------|
//! | `id`       | UInt64     | index of the image in its source split    |
//! | `label`    | Int16 null | 0-based class, null for unlabelled images |
//! | `height`   | UInt16     | pixels                                    |
//! | `width`    | UInt16     | pixels                                    |
//! | `channels` | UInt8      | 1 (grey) or 3 (RGB)                       |
//! | `pixels`   | Binary     | `height × width × channels` bytes, HWC, row-major |

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int16Builder, UInt8Builder, UInt16Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::checksum::HashingWriter;
use crate::error::{FileError, Result};

/// Bumped whenever the columns or their meaning change; readers refuse other versions.
pub const SCHEMA_VERSION: u32 = 1;

/// The columns, in order. Readers check a file against this before trusting it.
pub fn shard_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("label", DataType::Int16, true),
        Field::new("height", DataType::UInt16, false),
        Field::new("width", DataType::UInt16, false),
        Field::new("channels", DataType::UInt8, false),
        Field::new("pixels", DataType::Binary, false),
    ]))
}

/// One image as a source produces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: u64,
    pub label: Option<i16>,
    pub height: u16,
    pub width: u16,
    pub channels: u8,
    /// HWC, row-major: pixel (row, col, channel) is at `(row * width + col) * channels + channel`.
    pub pixels: Vec<u8>,
}

impl ImageRecord {
    /// Checks the invariants every reader relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_image(self.height, self.width, self.channels, self.pixels.len())
    }
}

/// The invariants of one stored image, checked by the writer on the way in and by the
/// reader on the way out: 1 or 3 channels, a non-empty size, and exactly
/// `height × width × channels` pixel bytes.
pub fn check_image(height: u16, width: u16, channels: u8, pixel_bytes: usize) -> std::result::Result<(), String> {
    if channels != 1 && channels != 3 {
        return Err(format!("channels is {channels}, expected 1 or 3"));
    }
    if height == 0 || width == 0 {
        return Err(format!("empty image ({height}×{width})"));
    }
    let expected = height as usize * width as usize * channels as usize;
    if pixel_bytes != expected {
        return Err(format!("pixels has {pixel_bytes} bytes, but {height}×{width}×{channels} needs {expected}"));
    }
    Ok(())
}

/// Page codec. Raw pixels barely compress (zstd-3 saves ~9% on natural images) while zstd
/// cuts read speed several times, so LZ4 is the default and zstd stays an option.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardCodec {
    None,
    #[default]
    Lz4,
    Zstd,
}

impl ShardCodec {
    fn compression(self) -> Compression {
        match self {
            ShardCodec::None => Compression::UNCOMPRESSED,
            ShardCodec::Lz4 => Compression::LZ4_RAW,
            ShardCodec::Zstd => Compression::ZSTD(ZstdLevel::try_new(3).expect("3 is a valid zstd level")),
        }
    }
}

impl std::str::FromStr for ShardCodec {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "none" => Ok(ShardCodec::None),
            "lz4" => Ok(ShardCodec::Lz4),
            "zstd" => Ok(ShardCodec::Zstd),
            other => Err(format!("unknown codec `{other}`, expected none, lz4 or zstd")),
        }
    }
}

impl std::fmt::Display for ShardCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShardCodec::None => "none",
            ShardCodec::Lz4 => "lz4",
            ShardCodec::Zstd => "zstd",
        })
    }
}

/// How shards are laid out; recorded in the manifest so a rerun can tell whether the
/// existing shards were written the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLayout {
    pub codec: ShardCodec,
    /// Images per Parquet row group, the unit the loader shuffles and seeks by.
    pub rows_per_group: usize,
    /// A file is closed at the first row-group boundary at or past this many pixel bytes.
    pub max_file_bytes: u64,
}

impl Default for ShardLayout {
    fn default() -> Self {
        Self { codec: ShardCodec::default(), rows_per_group: 1_000, max_file_bytes: 256 << 20 }
    }
}

/// What a finished shard file looks like, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFile {
    /// Relative to the dataset root, with `/` separators.
    pub path: String,
    pub rows: u64,
    pub row_groups: usize,
    pub bytes: u64,
    pub sha256: String,
}

/// Writes one Parquet shard under a temporary name and renames it into place on `finish`, so a
/// crash never leaves a half file under a shard's name. Dropped unfinished, it deletes its
/// temporary file.
pub struct ShardFileWriter {
    final_path: PathBuf,
    temp_path: PathBuf,
    writer: Option<ArrowWriter<HashingWriter<BufWriter<File>>>>,
    builders: RowBuilders,
    layout: ShardLayout,
    rows: u64,
    row_groups: usize,
    pixel_bytes: u64,
}

impl ShardFileWriter {
    pub fn create(path: &Path, layout: ShardLayout) -> Result<Self> {
        let temp_path = crate::atomic::temp_name(path);
        let file = File::create(&temp_path).map_err(FileError::io(&temp_path))?;
        let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let writer = ArrowWriter::try_new(sink, shard_schema(), Some(writer_properties(layout)))
            .map_err(FileError::parquet(&temp_path))?;
        Ok(Self {
            final_path: path.to_path_buf(),
            temp_path,
            writer: Some(writer),
            builders: RowBuilders::new(layout.rows_per_group),
            layout,
            rows: 0,
            row_groups: 0,
            pixel_bytes: 0,
        })
    }

    /// Appends one image; a full row group is flushed to disk as it fills.
    pub fn push(&mut self, record: &ImageRecord) -> Result<()> {
        if let Err(problem) = record.validate() {
            return Err(FileError::BadRow {
                path: self.final_path.clone(),
                row: self.rows as usize,
                id: record.id,
                problem,
            });
        }
        self.builders.push(record);
        self.rows += 1;
        self.pixel_bytes += record.pixels.len() as u64;
        if self.builders.len() >= self.layout.rows_per_group {
            self.flush_row_group()?;
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Pixel bytes pushed so far: what the file size bound is measured against.
    pub fn pixel_bytes(&self) -> u64 {
        self.pixel_bytes
    }

    /// True at a row-group boundary, where the file may be closed without a short group.
    pub fn at_row_group_boundary(&self) -> bool {
        self.builders.len() == 0
    }

    fn flush_row_group(&mut self) -> Result<()> {
        if self.builders.len() == 0 {
            return Ok(());
        }
        let batch = self.builders.finish(&self.temp_path)?;
        let writer = self.writer.as_mut().expect("writer is present until finish");
        writer.write(&batch).map_err(FileError::parquet(&self.temp_path))?;
        // One record batch per row group: the loader seeks and shuffles by row group.
        writer.flush().map_err(FileError::parquet(&self.temp_path))?;
        self.row_groups += 1;
        Ok(())
    }

    /// Flushes, fsyncs and renames the file into place; returns its manifest entry with
    /// `path` relative to `dataset_root`.
    pub fn finish(mut self, dataset_root: &Path) -> Result<ShardFile> {
        self.flush_row_group()?;
        let writer = self.writer.take().expect("writer is present until finish");
        let sink = writer.into_inner().map_err(FileError::parquet(&self.temp_path))?;
        let (buffered, sha256, bytes) = sink.finish();
        let file = buffered.into_inner().map_err(|error| FileError::io(&self.temp_path)(error.into_error()))?;
        file.sync_all().map_err(FileError::io(&self.temp_path))?;
        drop(file);
        std::fs::rename(&self.temp_path, &self.final_path).map_err(FileError::io(&self.final_path))?;
        let relative = self.final_path.strip_prefix(dataset_root).map_err(|_| FileError::Invalid {
            path: self.final_path.clone(),
            problem: format!("shard is not inside the dataset root {}", dataset_root.display()),
        })?;
        Ok(ShardFile {
            path: relative.components().map(|part| part.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"),
            rows: self.rows,
            row_groups: self.row_groups,
            bytes,
            sha256,
        })
    }
}

impl Drop for ShardFileWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            // Unfinished: never leave a partial file behind.
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

fn writer_properties(layout: ShardLayout) -> WriterProperties {
    let pixels = ColumnPath::from("pixels");
    WriterProperties::builder()
        .set_compression(layout.codec.compression())
        .set_max_row_group_row_count(Some(layout.rows_per_group))
        .set_created_by(format!("jepa-stream {}", env!("CARGO_PKG_VERSION")))
        // Min/max of a blob of pixels is useless and would copy whole images into the
        // footer; a dictionary over unique images only costs time.
        .set_column_statistics_enabled(pixels.clone(), EnabledStatistics::None)
        .set_column_dictionary_enabled(pixels, false)
        .build()
}

struct RowBuilders {
    id: UInt64Builder,
    label: Int16Builder,
    height: UInt16Builder,
    width: UInt16Builder,
    channels: UInt8Builder,
    pixels: BinaryBuilder,
}

impl RowBuilders {
    fn new(capacity: usize) -> Self {
        Self {
            id: UInt64Builder::with_capacity(capacity),
            label: Int16Builder::with_capacity(capacity),
            height: UInt16Builder::with_capacity(capacity),
            width: UInt16Builder::with_capacity(capacity),
            channels: UInt8Builder::with_capacity(capacity),
            pixels: BinaryBuilder::with_capacity(capacity, 0),
        }
    }

    fn len(&self) -> usize {
        arrow_array::builder::ArrayBuilder::len(&self.id)
    }

    fn push(&mut self, record: &ImageRecord) {
        self.id.append_value(record.id);
        self.label.append_option(record.label);
        self.height.append_value(record.height);
        self.width.append_value(record.width);
        self.channels.append_value(record.channels);
        self.pixels.append_value(&record.pixels);
    }

    fn finish(&mut self, path: &Path) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.label.finish()),
            Arc::new(self.height.finish()),
            Arc::new(self.width.finish()),
            Arc::new(self.channels.finish()),
            Arc::new(self.pixels.finish()),
        ];
        RecordBatch::try_new(shard_schema(), columns).map_err(FileError::arrow(path))
    }
}
