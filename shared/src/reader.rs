//! Streaming access to a dataset: open it through its manifest, then read one Parquet row
//! group at a time. A file is never loaded whole; a row group (~1,000 images) is the unit
//! of I/O, of shuffling and of seeking.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, UInt8Type, UInt16Type, UInt64Type};
use arrow_array::{Array, BinaryArray, PrimitiveArray, RecordBatch};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

use crate::checksum::sha256_file;
use crate::error::{FileError, Result};
use crate::manifest::{Manifest, SplitManifest};
use crate::shard::{ImageRecord, ShardFile, check_image, shard_schema};

/// An ingested dataset: its root folder and its manifest.
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
    manifest: Manifest,
}

/// Why `root` holds no dataset, with what to do: a relative path that is not there is
/// most often one read from another folder than the one it was written for.
fn missing_dataset(root: &Path) -> String {
    if root.exists() {
        return "missing: this folder holds no complete dataset (run `ingest` first)".into();
    }
    if root.is_relative() {
        let here = std::env::current_dir().map_or_else(|_| "?".into(), |here| here.display().to_string());
        return format!(
            "missing: the relative path `{}` is read from the current folder, {here}, which has no such folder; run \
             from the folder it is relative to (the project's root for the shipped configs) or give an absolute \
             path",
            root.display()
        );
    }
    "missing: no such folder (run `ingest` first, or correct the path)".into()
}

impl Dataset {
    /// Opens `<root>/manifest.json`. A folder without one is not a dataset (yet).
    pub fn open(root: &Path) -> Result<Self> {
        match Manifest::read(root)? {
            Some(manifest) => Ok(Self { root: root.to_path_buf(), manifest }),
            None => Err(FileError::Invalid { path: Manifest::path(root), problem: missing_dataset(root) }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The split's manifest entry, or an error listing the splits that exist.
    pub fn split(&self, name: &str) -> Result<&SplitManifest> {
        self.manifest.split(name).ok_or_else(|| FileError::Invalid {
            path: Manifest::path(&self.root),
            problem: format!(
                "no split `{name}`; this dataset has: {}",
                self.manifest.splits.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    pub fn shard_path(&self, file: &ShardFile) -> PathBuf {
        self.root.join(&file.path)
    }

    /// Opens one shard listed in the manifest, checking that its row count agrees.
    pub fn open_shard(&self, file: &ShardFile) -> Result<ShardReader> {
        let reader = ShardReader::open(&self.shard_path(file))?;
        if reader.num_rows() as u64 != file.rows {
            return Err(FileError::Invalid {
                path: reader.path.clone(),
                problem: format!("holds {} rows but the manifest lists {}", reader.num_rows(), file.rows),
            });
        }
        Ok(reader)
    }

    /// Recomputes one shard's SHA-256 and compares it with the manifest.
    pub fn verify_file(&self, file: &ShardFile) -> Result<()> {
        let path = self.shard_path(file);
        let actual = sha256_file(&path)?;
        if actual != file.sha256 {
            return Err(FileError::Checksum { path, expected: file.sha256.clone(), actual });
        }
        Ok(())
    }

    /// Checks every shard against the manifest: its SHA-256, rows and row groups (the
    /// manifest's own counts were checked against its file list when it was read).
    pub fn verify(&self) -> Result<Verified> {
        let mut verified = Verified::default();
        for split in self.manifest.splits.values() {
            for file in &split.files {
                self.verify_file(file)?;
                let reader = self.open_shard(file)?;
                if reader.num_row_groups() != file.row_groups {
                    return Err(FileError::Invalid {
                        path: reader.path.clone(),
                        problem: format!(
                            "holds {} row groups but the manifest lists {}",
                            reader.num_row_groups(),
                            file.row_groups
                        ),
                    });
                }
            }
            verified.files += split.files.len();
            verified.images += split.count;
            verified.splits += 1;
        }
        Ok(verified)
    }

    /// Every row group of a split, in manifest order, one at a time; each file is checked
    /// against its manifest SHA-256 before it is read, as the training loader does.
    pub fn row_groups<'a>(&'a self, split: &str) -> Result<impl Iterator<Item = Result<ImageBatch>> + 'a> {
        let files = &self.split(split)?.files;
        Ok(files.iter().flat_map(move |file| {
            let opened = self.verify_file(file).and_then(|()| self.open_shard(file));
            let groups: Box<dyn Iterator<Item = Result<ImageBatch>>> = match opened {
                Ok(reader) => Box::new((0..reader.num_row_groups()).map(move |group| reader.read_row_group(group))),
                Err(error) => Box::new(std::iter::once(Err(error))),
            };
            groups
        }))
    }
}

/// What [`Dataset::verify`] checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    pub splits: usize,
    pub files: usize,
    pub images: u64,
}

/// One shard file, its footer parsed once; row groups are read on demand.
#[derive(Debug, Clone)]
pub struct ShardReader {
    path: PathBuf,
    metadata: ArrowReaderMetadata,
}

impl ShardReader {
    /// Reads the footer and checks the columns against the shard schema.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(FileError::io(path))?;
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(FileError::parquet(path))?;
        check_schema(path, metadata.schema())?;
        Ok(Self { path: path.to_path_buf(), metadata })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn num_row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }

    pub fn row_group_rows(&self, group: usize) -> usize {
        self.metadata.metadata().row_group(group).num_rows() as usize
    }

    pub fn num_rows(&self) -> usize {
        (0..self.num_row_groups()).map(|group| self.row_group_rows(group)).sum()
    }

    /// Reads row group `group` and checks every row's pixel count against its dimensions.
    pub fn read_row_group(&self, group: usize) -> Result<ImageBatch> {
        if group >= self.num_row_groups() {
            return Err(FileError::Invalid {
                path: self.path.clone(),
                problem: format!("row group {group} requested, the file has {}", self.num_row_groups()),
            });
        }
        // A fresh handle per read: handles cloned from one file share a seek offset, so
        // sharing one across loader threads would interleave their reads.
        let file = File::open(&self.path).map_err(FileError::io(&self.path))?;
        let rows = self.row_group_rows(group).max(1);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
            .with_row_groups(vec![group])
            .with_batch_size(rows)
            .build()
            .map_err(FileError::parquet(&self.path))?;
        let mut batches = Vec::with_capacity(1);
        for batch in reader {
            batches.push(batch.map_err(FileError::arrow(&self.path))?);
        }
        let batch = match batches.len() {
            0 => RecordBatch::new_empty(shard_schema()),
            1 => batches.pop().expect("one batch"),
            // The batch size equals the row count, so the reader yields exactly one batch.
            count => {
                return Err(FileError::Invalid {
                    path: self.path.clone(),
                    problem: format!("row group {group} came back as {count} batches, expected 1"),
                });
            }
        };
        let images = ImageBatch::from_record_batch(&self.path, group, &batch)?;
        images.check_rows(&self.path)?;
        Ok(images)
    }
}

fn check_schema(path: &Path, found: &arrow_schema::SchemaRef) -> Result<()> {
    let expected = shard_schema();
    for field in expected.fields() {
        let column = field.name().clone();
        match found.field_with_name(&column) {
            Err(_) => {
                return Err(FileError::Schema { path: path.to_path_buf(), column, problem: "missing".into() });
            }
            Ok(actual) if actual.data_type() != field.data_type() => {
                return Err(FileError::Schema {
                    path: path.to_path_buf(),
                    column,
                    problem: format!("type is {}, expected {}", actual.data_type(), field.data_type()),
                });
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// One row group's images, column-wise, as Arrow holds them (no per-image copies).
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Row group index inside its file.
    pub row_group: usize,
    ids: PrimitiveArray<UInt64Type>,
    labels: PrimitiveArray<Int16Type>,
    heights: PrimitiveArray<UInt16Type>,
    widths: PrimitiveArray<UInt16Type>,
    channels: PrimitiveArray<UInt8Type>,
    pixels: BinaryArray,
}

/// A borrowed view of one image in an [`ImageBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageView<'a> {
    pub id: u64,
    pub label: Option<i16>,
    pub height: u16,
    pub width: u16,
    pub channels: u8,
    /// HWC, row-major.
    pub pixels: &'a [u8],
}

impl ImageView<'_> {
    pub fn to_record(&self) -> ImageRecord {
        ImageRecord {
            id: self.id,
            label: self.label,
            height: self.height,
            width: self.width,
            channels: self.channels,
            pixels: self.pixels.to_vec(),
        }
    }
}

impl ImageBatch {
    fn from_record_batch(path: &Path, row_group: usize, batch: &RecordBatch) -> Result<Self> {
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| FileError::Schema {
                path: path.to_path_buf(),
                column: name.into(),
                problem: "missing".into(),
            })
        };
        Ok(Self {
            row_group,
            ids: column("id")?.as_primitive::<UInt64Type>().clone(),
            labels: column("label")?.as_primitive::<Int16Type>().clone(),
            heights: column("height")?.as_primitive::<UInt16Type>().clone(),
            widths: column("width")?.as_primitive::<UInt16Type>().clone(),
            channels: column("channels")?.as_primitive::<UInt8Type>().clone(),
            pixels: column("pixels")?.as_binary::<i32>().clone(),
        })
    }

    fn check_rows(&self, path: &Path) -> Result<()> {
        for row in 0..self.len() {
            let image = self.get(row);
            let problem = if self.ids.is_null(row) || self.pixels.is_null(row) {
                Some("id or pixels is null".to_string())
            } else {
                check_image(image.height, image.width, image.channels, image.pixels.len()).err()
            };
            if let Some(problem) = problem {
                return Err(FileError::BadRow { path: path.to_path_buf(), row, id: image.id, problem });
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, row: usize) -> ImageView<'_> {
        ImageView {
            id: self.ids.value(row),
            label: (!self.labels.is_null(row)).then(|| self.labels.value(row)),
            height: self.heights.value(row),
            width: self.widths.value(row),
            channels: self.channels.value(row),
            pixels: self.pixels.value(row),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = ImageView<'_>> {
        (0..self.len()).map(|row| self.get(row))
    }
}
