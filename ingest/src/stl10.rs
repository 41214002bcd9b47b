//! STL-10 binaries (`stl10_binary/`): 96×96 RGB images stored channel-major and, inside
//! each channel, **column-major**; labels are bytes 1..=10. This reader transposes every
//! plane into the shards' row-major HWC layout and stores labels 0..=9.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use jepa_shared::{ImageRecord, SourceInfo};

use crate::error::{IngestError, Result, require_dir};
use crate::source::{Source, SourceItem, SplitInput, hash_files};
use jepa_shared::Progress;

pub const SIDE_PX: usize = 96;
pub const CHANNELS: usize = 3;
pub const IMAGE_BYTES: usize = SIDE_PX * SIDE_PX * CHANNELS;
pub const NUM_CLASSES: usize = 10;

/// Used when the folder lacks `class_names.txt`; the official archive's order.
pub const OFFICIAL_CLASS_NAMES: [&str; NUM_CLASSES] =
    ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];

/// (split, images file, labels file). `unlabeled` is optional: some copies omit its 2.7 GB.
const SPLITS: [(&str, &str, Option<&str>); 3] = [
    ("train", "train_X.bin", Some("train_y.bin")),
    ("test", "test_X.bin", Some("test_y.bin")),
    ("unlabeled", "unlabeled_X.bin", None),
];

pub struct Stl10 {
    dir: PathBuf,
    class_names: Vec<String>,
}

impl Stl10 {
    /// `dir` is `stl10_binary/` itself or the folder that contains it.
    pub fn open(dir: &Path) -> Result<Self> {
        require_dir(dir, "STL-10 folder")?;
        let nested = dir.join("stl10_binary");
        let dir = if nested.is_dir() { nested } else { dir.to_path_buf() };
        for required in ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"] {
            let path = dir.join(required);
            if !path.is_file() {
                return Err(IngestError::bad(path, "missing: not an STL-10 binary folder"));
            }
        }
        let class_names = read_class_names(&dir.join("class_names.txt"))?;
        Ok(Self { dir, class_names })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn present_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for (_, images, labels) in SPLITS {
            files.push(self.dir.join(images));
            files.extend(labels.map(|labels| self.dir.join(labels)));
        }
        files.push(self.dir.join("class_names.txt"));
        files.push(self.dir.join("fold_indices.txt"));
        files.retain(|path| path.is_file());
        files
    }
}

impl Source for Stl10 {
    fn dataset_name(&self) -> &str {
        "stl10"
    }

    fn fingerprint(&self, progress: &Progress) -> Result<SourceInfo> {
        Ok(SourceInfo {
            kind: "stl10".into(),
            location: self.dir.display().to_string(),
            sha256: hash_files(&self.present_files(), progress, "checksum stl10")?,
            options: Default::default(),
        })
    }

    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }

    fn splits(&self) -> Result<Vec<SplitInput<'_>>> {
        let mut splits = Vec::new();
        for (name, images_file, labels_file) in SPLITS {
            let images_path = self.dir.join(images_file);
            if !images_path.is_file() {
                continue; // only `unlabeled` may be absent; `open` checked the others
            }
            let count = image_count(&images_path)?;
            let labels = match labels_file {
                Some(labels_file) => Some(read_labels(&self.dir.join(labels_file), count, &images_path)?),
                None => None,
            };
            let folds = if name == "train" { read_folds(&self.dir.join("fold_indices.txt"), count)? } else { None };
            let reader = File::open(&images_path).map_err(IngestError::io(&images_path))?;
            splits.push(SplitInput {
                name: name.to_string(),
                count: count as u64,
                items: Box::new(Stl10Images {
                    path: images_path,
                    reader: BufReader::with_capacity(IMAGE_BYTES * 64, reader),
                    labels,
                    next: 0,
                    count,
                    plane_major: vec![0; IMAGE_BYTES],
                }),
                folds,
            });
        }
        Ok(splits)
    }
}

/// Transposes one STL-10 image from channel-major, column-major planes to row-major HWC.
pub fn stl10_to_hwc(plane_major: &[u8], hwc: &mut [u8]) {
    assert_eq!(plane_major.len(), IMAGE_BYTES);
    assert_eq!(hwc.len(), IMAGE_BYTES);
    for channel in 0..CHANNELS {
        let plane = &plane_major[channel * SIDE_PX * SIDE_PX..(channel + 1) * SIDE_PX * SIDE_PX];
        for col in 0..SIDE_PX {
            let column = &plane[col * SIDE_PX..(col + 1) * SIDE_PX];
            for (row, &value) in column.iter().enumerate() {
                hwc[(row * SIDE_PX + col) * CHANNELS + channel] = value;
            }
        }
    }
}

struct Stl10Images {
    path: PathBuf,
    reader: BufReader<File>,
    labels: Option<Vec<i16>>,
    next: usize,
    count: usize,
    plane_major: Vec<u8>,
}

impl Iterator for Stl10Images {
    type Item = Result<SourceItem>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        self.next += 1;
        if let Err(error) = self.reader.read_exact(&mut self.plane_major) {
            self.next = self.count;
            return Some(Err(IngestError::bad(
                &self.path,
                format!("reading image {index} of {}: {error}", self.count),
            )));
        }
        let mut pixels = vec![0u8; IMAGE_BYTES];
        stl10_to_hwc(&self.plane_major, &mut pixels);
        Some(Ok(SourceItem::Image(ImageRecord {
            id: index as u64,
            label: self.labels.as_ref().map(|labels| labels[index]),
            height: SIDE_PX as u16,
            width: SIDE_PX as u16,
            channels: CHANNELS as u8,
            pixels,
        })))
    }
}

fn image_count(path: &Path) -> Result<usize> {
    let bytes = std::fs::metadata(path).map_err(IngestError::io(path))?.len();
    if bytes == 0 || bytes % IMAGE_BYTES as u64 != 0 {
        return Err(IngestError::bad(
            path,
            format!("size {bytes} bytes is not a whole number of 96×96×3 images ({IMAGE_BYTES} bytes each)"),
        ));
    }
    Ok((bytes / IMAGE_BYTES as u64) as usize)
}

/// Reads labels 1..=10 and returns them as 0..=9, after checking count and range.
fn read_labels(path: &Path, expected: usize, images_path: &Path) -> Result<Vec<i16>> {
    let bytes = std::fs::read(path).map_err(IngestError::io(path))?;
    if bytes.len() != expected {
        return Err(IngestError::bad(
            path,
            format!("has {} labels but {} holds {expected} images", bytes.len(), images_path.display()),
        ));
    }
    bytes
        .iter()
        .enumerate()
        .map(|(index, &label)| {
            if (1..=NUM_CLASSES as u8).contains(&label) {
                Ok(label as i16 - 1)
            } else {
                Err(IngestError::bad(path, format!("label {index} is {label}, expected 1..={NUM_CLASSES}")))
            }
        })
        .collect()
}

fn read_class_names(path: &Path) -> Result<Vec<String>> {
    if !path.is_file() {
        return Ok(OFFICIAL_CLASS_NAMES.iter().map(|name| name.to_string()).collect());
    }
    let text = std::fs::read_to_string(path).map_err(IngestError::io(path))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|line| !line.is_empty()).map(String::from).collect();
    if names.len() != NUM_CLASSES {
        return Err(IngestError::bad(path, format!("lists {} class names, expected {NUM_CLASSES}", names.len())));
    }
    Ok(names)
}

/// `fold_indices.txt`: one line per fold, space-separated 0-based indices into `train`.
fn read_folds(path: &Path, train_count: usize) -> Result<Option<Vec<Vec<u64>>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(IngestError::io(path))?;
    let mut folds = Vec::new();
    for (line_number, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let fold = line
            .split_whitespace()
            .map(|token| match token.parse::<u64>() {
                Ok(index) if (index as usize) < train_count => Ok(index),
                _ => Err(IngestError::bad(
                    path,
                    format!(
                        "line {}: `{token}` is not an index into the {train_count} training images",
                        line_number + 1
                    ),
                )),
            })
            .collect::<Result<Vec<u64>>>()?;
        folds.push(fold);
    }
    Ok(Some(folds))
}
