//! Labelled images for evaluation: every image of a split in manifest order, resized whole
//! to the model's resolution (no crop, no augmentation) with the loader's own resize, as
//! u8 `[channels, size, size]`.

use std::collections::HashSet;
use std::ops::ControlFlow;

use crate::augment::{CropBox, ImagePipeline, SourceImage};
use crate::error::{FileError, Result};
use crate::reader::Dataset;

/// Calls `visit(id, label, pixels)` for every image of `split` in manifest order, resized
/// whole to `image_size_px` with `channels` channels (`[channels, size, size]` u8), until it
/// returns [`ControlFlow::Break`]. An unlabelled image is an error naming the split and row
/// group.
pub fn each_labelled_image<E: From<FileError>>(
    dataset: &Dataset,
    split: &str,
    image_size_px: usize,
    channels: usize,
    mut visit: impl FnMut(u64, i32, &[u8]) -> std::result::Result<ControlFlow<()>, E>,
) -> std::result::Result<(), E> {
    let mut pipeline = ImagePipeline::new(image_size_px as u32, channels as u8);
    let mut pixels = vec![0u8; channels * image_size_px * image_size_px];
    let invalid = |row_group: usize, problem: String| FileError::Invalid {
        path: format!("split `{split}` of {}, row group {row_group}", dataset.root().display()).into(),
        problem,
    };
    for group in dataset.row_groups(split)? {
        let group = group?;
        for image in group.iter() {
            let label =
                image.label.ok_or_else(|| invalid(group.row_group, format!("image {} has no label", image.id)))?;
            let source = SourceImage {
                height: image.height.into(),
                width: image.width.into(),
                channels: image.channels,
                pixels: image.pixels,
            };
            let whole = CropBox::whole(image.height.into(), image.width.into());
            pipeline
                .process(source, whole, &mut pixels)
                .map_err(|problem| invalid(group.row_group, format!("image {}: {problem}", image.id)))?;
            if visit(image.id, i32::from(label), &pixels)?.is_break() {
                return Ok(());
            }
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
        keep: Option<&HashSet<u64>>,
    ) -> Result<Self> {
        let mut images = Self { image_len: channels * image_size_px * image_size_px, ..Self::default() };
        each_labelled_image(dataset, split, image_size_px, channels, |id, label, pixels| {
            if keep.is_none_or(|keep| keep.contains(&id)) {
                images.push(id, label, pixels);
            }
            Ok::<_, FileError>(ControlFlow::Continue(()))
        })?;
        Ok(images)
    }

    /// The first `count` images of `split`, reading no further.
    pub fn read_first(
        dataset: &Dataset,
        split: &str,
        image_size_px: usize,
        channels: usize,
        count: usize,
    ) -> Result<Self> {
        let mut images = Self { image_len: channels * image_size_px * image_size_px, ..Self::default() };
        if count == 0 {
            return Ok(images);
        }
        each_labelled_image(dataset, split, image_size_px, channels, |id, label, pixels| {
            images.push(id, label, pixels);
            Ok::<_, FileError>(if images.len() == count { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        })?;
        Ok(images)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn push(&mut self, id: u64, label: i32, pixels: &[u8]) {
        assert_eq!(pixels.len(), self.image_len, "image length");
        self.ids.push(id);
        self.labels.push(label);
        self.pixels.extend_from_slice(pixels);
    }

    pub fn clear(&mut self) {
        self.ids.clear();
        self.labels.clear();
        self.pixels.clear();
    }

    pub fn image(&self, row: usize) -> &[u8] {
        &self.pixels[row * self.image_len..(row + 1) * self.image_len]
    }

    pub fn select_rows(&self, rows: &[usize]) -> Self {
        let mut out = Self { image_len: self.image_len, ..Self::default() };
        for &row in rows {
            out.push(self.ids[row], self.labels[row], self.image(row));
        }
        out
    }

    /// The rows whose ids are in `ids`, in this table's order.
    pub fn select_ids(&self, ids: &[u64]) -> Self {
        let wanted: HashSet<u64> = ids.iter().copied().collect();
        self.select_rows(&(0..self.len()).filter(|&row| wanted.contains(&self.ids[row])).collect::<Vec<_>>())
    }
}
