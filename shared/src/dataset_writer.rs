//! Writing a whole dataset: splits are cut into shard files of bounded size inside a
//! staging folder, and only `commit` moves them into place and writes the manifest.
//! Until then the previous dataset (if any) stays untouched and readable; after a failure
//! or a kill, nothing half-written is visible, and the next writer clears the leftovers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{FileError, Result};
use crate::manifest::{MANIFEST_FILE, Manifest, SourceInfo, SplitManifest};
use crate::shard::{ImageRecord, SCHEMA_VERSION, ShardFile, ShardFileWriter, ShardLayout};

const STAGING_DIR: &str = ".staging";
const OLD_SHARDS_DIR: &str = ".old-shards";
pub const SHARDS_DIR: &str = "shards";

pub struct DatasetWriter {
    root: PathBuf,
    staging: PathBuf,
    layout: ShardLayout,
    splits: BTreeMap<String, SplitManifest>,
    committed: bool,
}

impl DatasetWriter {
    /// Prepares `<root>/.staging`, removing what an interrupted earlier run left there.
    pub fn create(root: &Path, layout: ShardLayout) -> Result<Self> {
        if layout.rows_per_group == 0 {
            return Err(FileError::Invalid {
                path: root.to_path_buf(),
                problem: "rows_per_group must be at least 1".into(),
            });
        }
        std::fs::create_dir_all(root).map_err(FileError::io(root))?;
        let staging = root.join(STAGING_DIR);
        remove_dir_if_present(&staging)?;
        remove_dir_if_present(&root.join(OLD_SHARDS_DIR))?;
        std::fs::create_dir_all(staging.join(SHARDS_DIR)).map_err(FileError::io(&staging))?;
        Ok(Self { root: root.to_path_buf(), staging, layout, splits: BTreeMap::new(), committed: false })
    }

    /// Starts writing split `name`. Finish it with [`SplitWriter::finish`].
    pub fn split(&mut self, name: &str) -> Result<SplitWriter<'_>> {
        let folder = self.staging.join(SHARDS_DIR).join(name);
        if self.splits.contains_key(name) {
            return Err(FileError::Invalid { path: folder, problem: format!("split `{name}` written twice") });
        }
        std::fs::create_dir_all(&folder).map_err(FileError::io(&folder))?;
        Ok(SplitWriter { dataset: self, name: name.to_string(), folder, current: None, files: Vec::new(), count: 0 })
    }

    /// Moves the staged shards into `<root>/shards` and writes the manifest last.
    pub fn commit(mut self, name: &str, source: SourceInfo, class_names: Vec<String>) -> Result<Manifest> {
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            name: name.to_string(),
            source,
            layout: self.layout,
            class_names,
            splits: std::mem::take(&mut self.splits),
            created_by: format!("jepa-stream {}", env!("CARGO_PKG_VERSION")),
        };
        let manifest_path = self.root.join(MANIFEST_FILE);
        let shards = self.root.join(SHARDS_DIR);
        let old_shards = self.root.join(OLD_SHARDS_DIR);
        // From here until the new manifest lands, the dataset has no manifest: a crash in
        // between reads as "no dataset", never as a manifest that lists the wrong files.
        match std::fs::remove_file(&manifest_path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(FileError::io(&manifest_path)(error));
            }
            _ => {}
        }
        if shards.exists() {
            std::fs::rename(&shards, &old_shards).map_err(FileError::io(&shards))?;
        }
        std::fs::rename(self.staging.join(SHARDS_DIR), &shards).map_err(FileError::io(&shards))?;
        manifest.write_atomically(&self.root)?;
        self.committed = true;
        remove_dir_if_present(&old_shards)?;
        remove_dir_if_present(&self.staging)?;
        Ok(manifest)
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

pub struct SplitWriter<'a> {
    dataset: &'a mut DatasetWriter,
    name: String,
    folder: PathBuf,
    current: Option<ShardFileWriter>,
    files: Vec<ShardFile>,
    count: u64,
}

impl SplitWriter<'_> {
    pub fn push(&mut self, record: &ImageRecord) -> Result<()> {
        if self.current.is_none() {
            let path = self.folder.join(format!("part-{:05}.parquet", self.files.len()));
            self.current = Some(ShardFileWriter::create(&path, self.dataset.layout)?);
        }
        let writer = self.current.as_mut().expect("opened above");
        writer.push(record)?;
        self.count += 1;
        if writer.at_row_group_boundary() && writer.pixel_bytes() >= self.dataset.layout.max_file_bytes {
            self.close_file()?;
        }
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn close_file(&mut self) -> Result<()> {
        if let Some(writer) = self.current.take() {
            let entry = writer.finish(&self.dataset.staging)?;
            self.files.push(entry);
        }
        Ok(())
    }

    /// Closes the last file and records the split; `folds` and `skipped` go to the manifest.
    pub fn finish(mut self, folds: Option<Vec<Vec<u64>>>, skipped: u64) -> Result<()> {
        self.close_file()?;
        let entry = SplitManifest { count: self.count, files: std::mem::take(&mut self.files), folds, skipped };
        self.dataset.splits.insert(self.name.clone(), entry);
        Ok(())
    }
}

fn remove_dir_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(FileError::io(path)(error)),
        _ => Ok(()),
    }
}
