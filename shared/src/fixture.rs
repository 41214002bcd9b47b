//! Small datasets whose pixels say which image they are, for tests and examples: a swapped
//! image, channel or axis anywhere downstream shows up as a wrong pixel.

use std::collections::BTreeMap;
use std::path::Path;

use crate::dataset_writer::DatasetWriter;
use crate::error::Result;
use crate::manifest::SourceInfo;
use crate::reader::Dataset;
use crate::shard::{ImageRecord, ShardCodec, ShardLayout};

/// Fixture images are `SIDE × SIDE`.
pub const SIDE: usize = 16;

/// Pixel (row, col, channel) of image `id`: it depends on all four.
pub fn pixel(id: u64, row: usize, col: usize, channel: usize) -> u8 {
    ((id as usize * 31 + row * 7 + col * 3 + channel * 101) % 256) as u8
}

/// Image `id` with `channels` channels, labelled `id % 10`.
pub fn record(id: u64, channels: u8) -> ImageRecord {
    let mut pixels = Vec::with_capacity(SIDE * SIDE * channels as usize);
    for row in 0..SIDE {
        for col in 0..SIDE {
            for channel in 0..channels as usize {
                pixels.push(pixel(id, row, col, channel));
            }
        }
    }
    ImageRecord { id, label: Some((id % 10) as i16), height: SIDE as u16, width: SIDE as u16, channels, pixels }
}

/// A dataset at `root` with a `train` split of `count` images, in row groups of
/// `rows_per_group` and files of `groups_per_file` row groups, and ten class names.
pub fn write_dataset(
    root: &Path,
    count: u64,
    channels: u8,
    rows_per_group: usize,
    groups_per_file: usize,
) -> Result<Dataset> {
    let image_bytes = (SIDE * SIDE * channels as usize) as u64;
    let layout = ShardLayout {
        codec: ShardCodec::Lz4,
        rows_per_group,
        max_file_bytes: image_bytes * (rows_per_group * groups_per_file) as u64,
    };
    let mut writer = DatasetWriter::create(root, layout)?;
    let mut split = writer.split("train")?;
    for id in 0..count {
        split.push(&record(id, channels))?;
    }
    split.finish(None, 0)?;
    let source = SourceInfo {
        kind: "fixture".into(),
        location: "generated".into(),
        sha256: "0".repeat(64),
        options: BTreeMap::new(),
    };
    writer.commit("fixture", source, (0..10).map(|class| format!("class{class}")).collect())?;
    Dataset::open(root)
}
