//! The reading half of the prefetcher: one thread walks an epoch's order (a pure function
//! of seed and epoch, see [`crate::epoch::EpochOrder`]), reads each row group the first time
//! one of its images is due, copies out only the images still to come, and cuts them into
//! batch jobs for the workers.
//!
//! Held images are bounded by the shuffle buffer plus one row group: a row group is read no
//! earlier than the shuffle buffer would have read it. A run resumed at sample `s` reads no
//! row group whose images all come before `s`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_channel::Sender;

use crate::checksum::sha256_file;
use crate::epoch::{EpochOrder, SampleAddress};
use crate::error::FileError;
use crate::loader::{LoaderConfig, LoaderError, LoaderPosition, Result};
use crate::manifest::Manifest;
use crate::reader::{Dataset, ShardReader};
use crate::shard::ShardFile;

/// The split as the manifest describes it: files, their row-group sizes, and the epoch length.
pub(crate) struct SplitPlan {
    pub(crate) paths: Vec<PathBuf>,
    files: Vec<ShardFile>,
    row_groups: Vec<Vec<usize>>,
    batch_size: usize,
    drop_last: bool,
}

impl SplitPlan {
    pub(crate) fn new(dataset: &Dataset, config: &LoaderConfig) -> Result<Self> {
        let split = dataset.split(&config.settings.split)?;
        let rows_per_group = dataset.manifest().layout.rows_per_group;
        let manifest_path = Manifest::path(dataset.root());
        let mut row_groups = Vec::with_capacity(split.files.len());
        for file in &split.files {
            // The writer cuts row groups at exactly `rows_per_group` rows; only a file's last is short.
            let rows = file.rows as usize;
            let groups = file.row_groups;
            let full = groups.saturating_sub(1) * rows_per_group;
            if groups == 0 || rows <= full || rows > full + rows_per_group {
                return Err(FileError::Manifest {
                    path: manifest_path,
                    problem: format!(
                        "{} lists {rows} rows in {groups} row groups, which rows_per_group {rows_per_group} cannot give",
                        file.path
                    ),
                }
                .into());
            }
            let mut sizes = vec![rows_per_group; groups - 1];
            sizes.push(rows - full);
            row_groups.push(sizes);
        }
        Ok(Self {
            paths: split.files.iter().map(|file| dataset.shard_path(file)).collect(),
            files: split.files.clone(),
            row_groups,
            batch_size: config.settings.batch_size,
            drop_last: config.settings.drop_last,
        })
    }

    pub(crate) fn order_len(&self) -> usize {
        self.row_groups.iter().flatten().sum()
    }

    /// Samples an epoch delivers.
    pub(crate) fn usable_len(&self) -> usize {
        let len = self.order_len();
        if self.drop_last { len - len % self.batch_size } else { len }
    }

    /// A position at or past the end of its epoch is the start of the next.
    pub(crate) fn normalise(&self, position: LoaderPosition) -> LoaderPosition {
        if position.sample as usize >= self.usable_len() {
            LoaderPosition { epoch: position.epoch + 1, sample: 0 }
        } else {
            position
        }
    }
}

/// An image copied out of its row group, held until its batch is cut.
pub(crate) struct HeldImage {
    pub(crate) id: u64,
    pub(crate) label: Option<i16>,
    pub(crate) height: u16,
    pub(crate) width: u16,
    pub(crate) channels: u8,
    pub(crate) pixels: Vec<u8>,
    pub(crate) file: u32,
}

pub(crate) struct BatchJob {
    pub(crate) epoch: u64,
    pub(crate) first_position: u64,
    pub(crate) images: Vec<HeldImage>,
}

pub(crate) enum Job {
    Batch(BatchJob),
    /// The reader failed; the worker whose turn it is passes the error on, in order.
    Failed(LoaderError),
    End,
}

pub(crate) struct Reader {
    pub(crate) config: LoaderConfig,
    pub(crate) plan: Arc<SplitPlan>,
    pub(crate) start: LoaderPosition,
    pub(crate) cancelled: Arc<AtomicBool>,
}

impl Reader {
    pub(crate) fn run(self, jobs: Vec<Sender<Job>>) {
        let mut turn = 0usize;
        let mut send = |job: Job| {
            let sent = jobs[turn % jobs.len()].send_blocking(job).is_ok();
            turn += 1;
            sent
        };
        match self.stream(&mut send) {
            Ok(true) => {
                send(Job::End);
            }
            Ok(false) => {}
            Err(error) => {
                send(Job::Failed(error));
            }
        }
    }

    /// Sends every batch from `start` on; `Ok(false)` when the consumer went away.
    fn stream(&self, send: &mut impl FnMut(Job) -> bool) -> Result<bool> {
        let mut shards: Vec<Option<ShardReader>> = (0..self.plan.files.len()).map(|_| None).collect();
        let usable = self.plan.usable_len();
        let batch_size = self.config.settings.batch_size;
        let mut epoch = self.start.epoch;
        let mut offset = self.start.sample as usize;
        while self.config.epochs.is_none_or(|epochs| epoch < epochs) {
            let order =
                EpochOrder::new(&self.plan.row_groups, self.config.seed, epoch, self.config.settings.shuffle_buffer);
            let due = &order.from_offset(offset)[..usable - offset];
            let mut still_needed: HashSet<SampleAddress> = due.iter().copied().collect();
            let mut held: HashMap<SampleAddress, HeldImage> = HashMap::new();
            for (index, chunk) in due.chunks(batch_size).enumerate() {
                let mut images = Vec::with_capacity(chunk.len());
                for address in chunk {
                    if !held.contains_key(address) {
                        if self.cancelled.load(Ordering::Relaxed) {
                            return Ok(false);
                        }
                        self.read_group(&mut shards, *address, &mut still_needed, &mut held)?;
                    }
                    images.push(held.remove(address).expect("the row group holding it was just read"));
                }
                let first_position = (offset + index * batch_size) as u64;
                if !send(Job::Batch(BatchJob { epoch, first_position, images })) {
                    return Ok(false);
                }
            }
            epoch += 1;
            offset = 0;
        }
        Ok(true)
    }

    /// Reads `address`'s row group and keeps the images of it that are still to come.
    fn read_group(
        &self,
        shards: &mut [Option<ShardReader>],
        address: SampleAddress,
        still_needed: &mut HashSet<SampleAddress>,
        held: &mut HashMap<SampleAddress, HeldImage>,
    ) -> Result<()> {
        let file = address.file as usize;
        if shards[file].is_none() {
            shards[file] = Some(self.open_shard(file)?);
        }
        let shard = shards[file].as_ref().expect("opened above");
        let path = shard.path();
        let group = address.row_group as usize;
        let rows = shard.read_row_group(group)?;
        for (row, image) in rows.iter().enumerate() {
            let key = SampleAddress { row: row as u32, ..address };
            if still_needed.remove(&key) {
                let held_image = HeldImage {
                    id: image.id,
                    label: image.label,
                    height: image.height,
                    width: image.width,
                    channels: image.channels,
                    pixels: image.pixels.to_vec(),
                    file: address.file,
                };
                held.insert(key, held_image);
            }
        }
        if !held.contains_key(&address) {
            return Err(LoaderError::Image {
                path: path.to_path_buf(),
                problem: format!("row group {group} has no row {}", address.row),
            });
        }
        Ok(())
    }

    fn open_shard(&self, file: usize) -> Result<ShardReader> {
        let path = &self.plan.paths[file];
        let listed = &self.plan.files[file];
        if self.config.settings.verify_checksums {
            let actual = sha256_file(path)?;
            if actual != listed.sha256 {
                return Err(FileError::Checksum { path: path.clone(), expected: listed.sha256.clone(), actual }.into());
            }
        }
        let shard = ShardReader::open(path)?;
        let expected = &self.plan.row_groups[file];
        let found: Vec<usize> = (0..shard.num_row_groups()).map(|group| shard.row_group_rows(group)).collect();
        if &found != expected {
            return Err(LoaderError::Image {
                path: path.clone(),
                problem: format!("row groups hold {found:?} rows, the manifest implies {expected:?}"),
            });
        }
        Ok(shard)
    }
}
