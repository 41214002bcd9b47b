//! Fashion-MNIST in the IDX format (gzip-compressed or plain), as Debian's
//! `dataset-fashion-mnist` installs it under `/usr/share/datasets/fashion-mnist/`:
//! 28×28 grey images, labels 0..=9, 60,000 for `train` and 10,000 for `test`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use jepa_shared::{ImageRecord, SourceInfo};

use crate::error::{IngestError, Result, require_dir};
use crate::source::{Source, SourceItem, SplitInput, hash_files};
use jepa_shared::Progress;

/// Where Debian's `dataset-fashion-mnist` installs the IDX files.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The installed Fashion-MNIST: `$FASHION_MNIST_DIR`, else [`DEFAULT_DIR`]; an error that says
/// how to install it when the folder holds no training images.
pub fn installed_dir() -> Result<PathBuf> {
    let dir = PathBuf::from(std::env::var("FASHION_MNIST_DIR").unwrap_or_else(|_| DEFAULT_DIR.into()));
    if !dir.join("train-images-idx3-ubyte.gz").is_file() && !dir.join("train-images-idx3-ubyte").is_file() {
        return Err(IngestError::bad(
            &dir,
            "holds no Fashion-MNIST: apt-get install dataset-fashion-mnist (or `make setup`), or set FASHION_MNIST_DIR",
        ));
    }
    Ok(dir)
}
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;

pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// (split, file stem of the images, file stem of the labels).
const SPLITS: [(&str, &str, &str); 2] = [
    ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
];

pub struct FashionMnist {
    /// (split, images path, labels path), each the `.gz` file or, failing that, the plain one.
    files: Vec<(&'static str, PathBuf, PathBuf)>,
    dir: PathBuf,
}

impl FashionMnist {
    pub fn open(dir: &Path) -> Result<Self> {
        require_dir(dir, "Fashion-MNIST folder")?;
        let find = |stem: &str| -> Result<PathBuf> {
            let gz = dir.join(format!("{stem}.gz"));
            let plain = dir.join(stem);
            if gz.is_file() {
                Ok(gz)
            } else if plain.is_file() {
                Ok(plain)
            } else {
                Err(IngestError::bad(gz, "missing: not a Fashion-MNIST IDX folder"))
            }
        };
        let files = SPLITS
            .iter()
            .map(|&(split, images, labels)| Ok((split, find(images)?, find(labels)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { files, dir: dir.to_path_buf() })
    }
}

impl Source for FashionMnist {
    fn dataset_name(&self) -> &str {
        "fashion-mnist"
    }

    fn fingerprint(&self, progress: &Progress) -> Result<SourceInfo> {
        let files: Vec<PathBuf> =
            self.files.iter().flat_map(|(_, images, labels)| [images.clone(), labels.clone()]).collect();
        Ok(SourceInfo {
            kind: "fashion-mnist".into(),
            location: self.dir.display().to_string(),
            sha256: hash_files(&files, progress, "checksum fashion-mnist")?,
            options: Default::default(),
        })
    }

    fn class_names(&self) -> Vec<String> {
        CLASS_NAMES.iter().map(|name| name.to_string()).collect()
    }

    fn splits(&self) -> Result<Vec<SplitInput<'_>>> {
        self.files
            .iter()
            .map(|(split, images_path, labels_path)| {
                let labels = read_labels(labels_path)?;
                let images = IdxImages::open(images_path)?;
                if images.count != labels.len() {
                    return Err(IngestError::bad(
                        labels_path,
                        format!(
                            "has {} labels but {} holds {} images",
                            labels.len(),
                            images_path.display(),
                            images.count
                        ),
                    ));
                }
                Ok(SplitInput {
                    name: split.to_string(),
                    count: images.count as u64,
                    items: Box::new(images.zip(labels).map(|(image, label)| {
                        image.map(|mut record| {
                            record.label = Some(label);
                            SourceItem::Image(record)
                        })
                    })),
                    folds: None,
                })
            })
            .collect()
    }
}

/// Opens an IDX file, decompressing on the fly when its name ends in `.gz`.
fn open_idx(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).map_err(IngestError::io(path))?;
    let buffered = BufReader::with_capacity(1 << 20, file);
    if path.extension().is_some_and(|ext| ext == "gz") {
        Ok(Box::new(BufReader::with_capacity(1 << 20, GzDecoder::new(buffered))))
    } else {
        Ok(Box::new(buffered))
    }
}

fn read_u32(reader: &mut dyn Read, path: &Path, what: &str) -> Result<u32> {
    let mut bytes = [0u8; 4];
    reader
        .read_exact(&mut bytes)
        .map_err(|error| IngestError::bad(path, format!("reading the header's {what}: {error}")))?;
    Ok(u32::from_be_bytes(bytes))
}

fn check_magic(reader: &mut dyn Read, path: &Path, expected: u32, kind: &str) -> Result<()> {
    let magic = read_u32(reader, path, "magic number")?;
    if magic != expected {
        return Err(IngestError::bad(
            path,
            format!("magic number is {magic:#010x}, expected {expected:#010x} for an IDX {kind} file"),
        ));
    }
    Ok(())
}

/// Reads an IDX label file whole (it is small) and checks every label is 0..=9.
pub fn read_labels(path: &Path) -> Result<Vec<i16>> {
    let mut reader = open_idx(path)?;
    check_magic(&mut *reader, path, LABELS_MAGIC, "label")?;
    let count = read_u32(&mut *reader, path, "item count")? as usize;
    let mut bytes = vec![0u8; count];
    reader
        .read_exact(&mut bytes)
        .map_err(|error| IngestError::bad(path, format!("truncated: the header promises {count} labels ({error})")))?;
    check_end(&mut *reader).map_err(|problem| IngestError::bad(path, problem))?;
    bytes
        .iter()
        .enumerate()
        .map(|(index, &label)| {
            if (label as usize) < CLASS_NAMES.len() {
                Ok(label as i16)
            } else {
                Err(IngestError::bad(path, format!("label {index} is {label}, expected 0..=9")))
            }
        })
        .collect()
}

/// After the last item the stream must end; reading to the end also makes the gzip
/// decoder check its CRC, so a corrupt archive cannot pass as a complete one.
fn check_end(reader: &mut dyn Read) -> std::result::Result<(), String> {
    let mut rest = [0u8; 1];
    match reader.read(&mut rest) {
        Ok(0) => Ok(()),
        Ok(_) => Err("holds more data than its header promises".into()),
        Err(error) => Err(format!("corrupt after the last item: {error}")),
    }
}

/// Streams the images of an IDX image file one at a time.
pub struct IdxImages {
    path: PathBuf,
    reader: Box<dyn Read + Send>,
    pub count: usize,
    rows: u16,
    cols: u16,
    next: usize,
}

impl IdxImages {
    pub fn open(path: &Path) -> Result<Self> {
        let mut reader = open_idx(path)?;
        check_magic(&mut *reader, path, IMAGES_MAGIC, "image")?;
        let count = read_u32(&mut *reader, path, "image count")? as usize;
        let rows = read_u32(&mut *reader, path, "row count")?;
        let cols = read_u32(&mut *reader, path, "column count")?;
        if rows == 0 || cols == 0 || rows > u16::MAX as u32 || cols > u16::MAX as u32 {
            return Err(IngestError::bad(path, format!("image size {rows}×{cols} is not usable")));
        }
        Ok(Self { path: path.to_path_buf(), reader, count, rows: rows as u16, cols: cols as u16, next: 0 })
    }
}

impl Iterator for IdxImages {
    type Item = Result<ImageRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let mut pixels = vec![0u8; self.rows as usize * self.cols as usize];
        if let Err(error) = self.reader.read_exact(&mut pixels) {
            self.next = self.count;
            return Some(Err(IngestError::bad(
                &self.path,
                format!("truncated or corrupt at image {index} of {}: {error}", self.count),
            )));
        }
        if self.next == self.count
            && let Err(problem) = check_end(&mut *self.reader)
        {
            return Some(Err(IngestError::bad(&self.path, problem)));
        }
        Some(Ok(ImageRecord {
            id: index as u64,
            label: None,
            height: self.rows,
            width: self.cols,
            channels: 1,
            pixels,
        }))
    }
}
