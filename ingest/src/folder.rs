//! An image folder, `root/<class>/<image>.{png,jpg,jpeg}`, for users with their own data.
//! When `root` holds `train/`, `val/` or `test/` folders (and nothing else), each is a
//! split with class folders inside; otherwise all of `root` is the `train` split.
//! Labels are class-folder indices in sorted name order; `id` is the file's index in
//! its split, in (class, file name) order.

use std::path::{Path, PathBuf};

use fast_image_resize::images::Image;
use fast_image_resize::{PixelType, ResizeOptions, Resizer};
use jepa_shared::{ImageRecord, SourceInfo};

use crate::error::{IngestError, Result, require_dir};
use crate::source::{Source, SourceItem, SplitInput, hash_files};
use jepa_shared::Progress;

const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

#[derive(Debug, Clone, Copy)]
pub struct FolderOptions {
    /// Resize the shorter side to this many pixels and centre-crop a square; `None`
    /// keeps every image at its own size.
    pub size_px: Option<u16>,
    /// 3 (RGB) or 1 (grey).
    pub channels: u8,
    /// Fail on the first unreadable image instead of skipping it with a warning.
    pub strict: bool,
}

impl Default for FolderOptions {
    fn default() -> Self {
        Self { size_px: None, channels: 3, strict: false }
    }
}

pub struct ImageFolder {
    root: PathBuf,
    name: String,
    options: FolderOptions,
    class_names: Vec<String>,
    /// (split, [(label, path)]) with paths sorted by (class, file name).
    splits: Vec<(String, Vec<(i16, PathBuf)>)>,
    progress: Progress,
}

impl ImageFolder {
    pub fn open(root: &Path, options: FolderOptions, progress: Progress) -> Result<Self> {
        require_dir(root, "image folder")?;
        if options.channels != 1 && options.channels != 3 {
            return Err(IngestError::bad(root, format!("channels is {}, expected 1 or 3", options.channels)));
        }
        if options.size_px == Some(0) {
            return Err(IngestError::bad(root, "size must be at least 1 pixel"));
        }
        let top = sorted_subdirs(root)?;
        let split_dirs: Vec<(String, PathBuf)> =
            if !top.is_empty() && top.iter().all(|dir| SPLIT_NAMES.contains(&file_name(dir).as_str())) {
                top.iter().map(|dir| (file_name(dir), dir.clone())).collect()
            } else {
                vec![("train".to_string(), root.to_path_buf())]
            };
        let mut class_names: Vec<String> = Vec::new();
        for (_, dir) in &split_dirs {
            for class_dir in sorted_subdirs(dir)? {
                class_names.push(file_name(&class_dir));
            }
        }
        class_names.sort();
        class_names.dedup();
        if class_names.is_empty() {
            return Err(IngestError::bad(root, "holds no class folders (expected root/<class>/<image>)"));
        }
        if class_names.len() > i16::MAX as usize {
            return Err(IngestError::bad(root, format!("{} classes is more than a label can hold", class_names.len())));
        }
        let mut splits = Vec::new();
        for (split, dir) in split_dirs {
            let mut images = Vec::new();
            for class_dir in sorted_subdirs(&dir)? {
                let label = class_names.binary_search(&file_name(&class_dir)).expect("collected above") as i16;
                for path in sorted_images(&class_dir)? {
                    images.push((label, path));
                }
            }
            if images.is_empty() {
                return Err(IngestError::bad(&dir, "holds no .png/.jpg/.jpeg images"));
            }
            splits.push((split, images));
        }
        let name = root
            .canonicalize()
            .ok()
            .and_then(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "image-folder".into());
        Ok(Self { root: root.to_path_buf(), name, options, class_names, splits, progress })
    }
}

impl Source for ImageFolder {
    fn dataset_name(&self) -> &str {
        &self.name
    }

    fn fingerprint(&self, progress: &Progress) -> Result<SourceInfo> {
        let files: Vec<PathBuf> =
            self.splits.iter().flat_map(|(_, images)| images.iter().map(|(_, path)| path.clone())).collect();
        let mut options = std::collections::BTreeMap::new();
        options.insert("channels".into(), self.options.channels.to_string());
        options.insert("size_px".into(), self.options.size_px.map_or("original".into(), |size| size.to_string()));
        options.insert("strict".into(), self.options.strict.to_string());
        Ok(SourceInfo {
            kind: "image-folder".into(),
            location: self.root.display().to_string(),
            sha256: hash_files(&files, progress, "checksum images")?,
            options,
        })
    }

    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }

    fn splits(&self) -> Result<Vec<SplitInput<'_>>> {
        Ok(self
            .splits
            .iter()
            .map(|(split, images)| {
                let mut resizer = Resizer::new();
                SplitInput {
                    name: split.clone(),
                    count: images.len() as u64,
                    items: Box::new(images.iter().enumerate().map(move |(index, (label, path))| {
                        match decode(path, self.options, &mut resizer) {
                            Ok((height, width, pixels)) => {
                                // The file's position in the split, so a skipped file leaves a
                                // gap rather than shifting every later id.
                                Ok(SourceItem::Image(ImageRecord {
                                    id: index as u64,
                                    label: Some(*label),
                                    height,
                                    width,
                                    channels: self.options.channels,
                                    pixels,
                                }))
                            }
                            Err(error) if !self.options.strict => {
                                self.progress.warn(&format!("skipped {error}"));
                                Ok(SourceItem::Skipped)
                            }
                            Err(error) => Err(error),
                        }
                    })),
                    folds: None,
                }
            })
            .collect())
    }
}

/// Decodes one file to HWC bytes, resized and centre-cropped when asked.
fn decode(path: &Path, options: FolderOptions, resizer: &mut Resizer) -> Result<(u16, u16, Vec<u8>)> {
    let unreadable = |problem: String| IngestError::bad(path, format!("unreadable image: {problem}"));
    let image = image::ImageReader::open(path)
        .map_err(IngestError::io(path))?
        .with_guessed_format()
        .map_err(IngestError::io(path))?
        .decode()
        .map_err(|error| unreadable(error.to_string()))?;
    let (width, height) = (image.width(), image.height());
    let (pixels, pixel_type) = if options.channels == 3 {
        (image.into_rgb8().into_raw(), PixelType::U8x3)
    } else {
        (image.into_luma8().into_raw(), PixelType::U8)
    };
    let Some(size) = options.size_px else {
        if width > u16::MAX as u32 || height > u16::MAX as u32 {
            return Err(unreadable(format!("{width}×{height} is larger than 65535 px; pass --size")));
        }
        return Ok((height as u16, width as u16, pixels));
    };
    let source =
        Image::from_vec_u8(width, height, pixels, pixel_type).map_err(|error| unreadable(error.to_string()))?;
    let mut target = Image::new(size as u32, size as u32, pixel_type);
    // Crop the source to the target's (square) aspect around its centre, then resize:
    // the shorter side becomes `size` and nothing is stretched.
    resizer
        .resize(&source, &mut target, &ResizeOptions::new().fit_into_destination(Some((0.5, 0.5))))
        .map_err(|error| unreadable(error.to_string()))?;
    Ok((size, size, target.into_vec()))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = read_dir(dir)?.into_iter().filter(|path| path.is_dir()).collect();
    dirs.retain(|path| !file_name(path).starts_with('.'));
    dirs.sort();
    Ok(dirs)
}

fn sorted_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = read_dir(dir)?
        .into_iter()
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| EXTENSIONS.contains(&ext.to_string_lossy().to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::read_dir(dir)
        .map_err(IngestError::io(dir))?
        .map(|entry| entry.map(|entry| entry.path()).map_err(IngestError::io(dir)))
        .collect()
}
