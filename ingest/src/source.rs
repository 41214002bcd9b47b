//! What every source hands the writer, and the one driver that turns any source into a
//! committed dataset: fingerprint → "already up to date?" → validate → stream → commit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jepa_shared::{DatasetWriter, ImageRecord, Manifest, ShardLayout, SourceInfo};

use crate::error::Result;
use jepa_shared::Progress;

/// Images decoded ahead of the writer; bounds the memory between the two threads.
const READ_AHEAD_IMAGES: usize = 256;

/// One item a split's iterator yields: an image, or a source item that was skipped after
/// a warning (only image folders skip, and only without `--strict`).
pub enum SourceItem {
    Image(ImageRecord),
    Skipped,
}

/// One split of a source, opened and validated, ready to stream.
pub struct SplitInput<'a> {
    pub name: String,
    /// Items the iterator will yield (for the progress bar and the final count check).
    pub count: u64,
    pub items: Box<dyn Iterator<Item = Result<SourceItem>> + Send + 'a>,
    pub folds: Option<Vec<Vec<u64>>>,
}

/// A real image source (STL-10 binaries, Fashion-MNIST IDX, an image folder).
pub trait Source {
    /// The dataset name written into the manifest.
    fn dataset_name(&self) -> &str;

    /// Kind, location, content checksum and output-changing options. May read every byte
    /// of the source; `progress` shows it.
    fn fingerprint(&self, progress: &Progress) -> Result<SourceInfo>;

    fn class_names(&self) -> Vec<String>;

    /// Opens every split and checks what can be checked before anything is written
    /// (file sizes, counts, label ranges), so bad input fails before work starts.
    fn splits(&self) -> Result<Vec<SplitInput<'_>>>;
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub out: PathBuf,
    pub layout: ShardLayout,
    /// Rewrite even when an up-to-date dataset is already there.
    pub force: bool,
}

#[derive(Debug)]
pub struct IngestReport {
    pub manifest: Manifest,
    /// False when an existing dataset already matched and nothing was written.
    pub written: bool,
    pub pixel_bytes: u64,
    pub elapsed: Duration,
}

impl IngestReport {
    pub fn megabytes_per_second(&self) -> f64 {
        self.pixel_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Turns `source` into a dataset under `options.out`, or does nothing when a complete
/// manifest there already describes the same source written the same way.
pub fn ingest(source: &dyn Source, options: &IngestOptions, progress: &Progress) -> Result<IngestReport> {
    let started = Instant::now();
    let info = source.fingerprint(progress)?;
    if !options.force
        && let Some(existing) = Manifest::read(&options.out)?
        && existing.source == info
        && existing.layout == options.layout
        && existing.files_present(&options.out)
    {
        return Ok(IngestReport { manifest: existing, written: false, pixel_bytes: 0, elapsed: started.elapsed() });
    }

    let splits = source.splits()?;
    let mut writer = DatasetWriter::create(&options.out, options.layout)?;
    let mut pixel_bytes = 0u64;
    for split in splits {
        let bar = progress.bar(split.count, &format!("{} {}", source.dataset_name(), split.name), "images");
        let mut split_writer = writer.split(&split.name)?;
        let mut seen = 0u64;
        let mut skipped = 0u64;
        // Reading and decoding the source runs on its own thread while this one encodes,
        // compresses and checksums Parquet: the two halves take similar time.
        std::thread::scope(|scope| -> Result<()> {
            let (sender, receiver) = std::sync::mpsc::sync_channel(READ_AHEAD_IMAGES);
            let items = split.items;
            scope.spawn(move || {
                for item in items {
                    let failed = item.is_err();
                    // A closed channel means the writer stopped on an error: stop too.
                    if sender.send(item).is_err() || failed {
                        break;
                    }
                }
            });
            for item in receiver {
                match item? {
                    SourceItem::Image(record) => {
                        pixel_bytes += record.pixels.len() as u64;
                        split_writer.push(&record)?;
                    }
                    SourceItem::Skipped => skipped += 1,
                }
                seen += 1;
                bar.inc(1);
            }
            Ok(())
        })?;
        bar.finish_and_clear();
        if seen != split.count {
            return Err(crate::error::IngestError::bad(
                &options.out,
                format!("split `{}`: the source promised {} items but yielded {seen}", split.name, split.count),
            ));
        }
        split_writer.finish(split.folds, skipped)?;
    }
    let manifest = writer.commit(source.dataset_name(), info, source.class_names())?;
    Ok(IngestReport { manifest, written: true, pixel_bytes, elapsed: started.elapsed() })
}

/// SHA-256 over `(file name, length, bytes)` of each file in order: the checksum a
/// manifest records for a source made of several files.
pub fn hash_files(files: &[PathBuf], progress: &Progress, label: &str) -> Result<String> {
    let mut total = 0u64;
    for file in files {
        total += std::fs::metadata(file).map_err(crate::error::IngestError::io(file))?.len();
    }
    let bar = progress.bytes(total, label);
    let mut stream = jepa_shared::checksum::Sha256Stream::default();
    for file in files {
        let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        stream.update(name.as_bytes());
        stream.update(&[0]);
        let length = stream.update_from_file(file)?;
        stream.update(&length.to_le_bytes());
        bar.inc(length);
    }
    bar.finish_and_clear();
    Ok(stream.finish_hex())
}
