//! `manifest.json`: the single source of truth about a dataset. It is written last and
//! atomically, and readers trust only the files it lists, so a dataset either has a
//! manifest and is complete, or has none and does not exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{FileError, Result};
use crate::shard::{SCHEMA_VERSION, ShardFile, ShardLayout};

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// Dataset name, e.g. `stl10` or `fashion-mnist`.
    pub name: String,
    pub source: SourceInfo,
    pub layout: ShardLayout,
    /// Index = label. Empty for a dataset without labels.
    pub class_names: Vec<String>,
    /// Split name (`train`, `test`, `unlabeled`, …) → its files.
    pub splits: BTreeMap<String, SplitManifest>,
    /// Tool and version that wrote the dataset.
    pub created_by: String,
}

/// Where the images came from, and enough to tell whether a rerun would write the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `stl10`, `fashion-mnist`, `image-folder`, …
    pub kind: String,
    /// The directory or URL read.
    pub location: String,
    /// SHA-256 over the source files' bytes, in a fixed order.
    pub sha256: String,
    /// Source-specific options that change the output (e.g. a resize), as `key=value`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitManifest {
    pub count: u64,
    pub files: Vec<ShardFile>,
    /// Official cross-validation folds, as lists of `id`s (STL-10's `fold_indices.txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folds: Option<Vec<Vec<u64>>>,
    /// Source items that could not be read and were left out (image folders without `--strict`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Manifest {
    pub fn path(dataset_root: &Path) -> PathBuf {
        dataset_root.join(MANIFEST_FILE)
    }

    /// Reads and checks `<root>/manifest.json`. `Ok(None)` when there is none.
    pub fn read(dataset_root: &Path) -> Result<Option<Manifest>> {
        let path = Manifest::path(dataset_root);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(FileError::io(&path)(error)),
        };
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|error| FileError::Manifest { path: path.clone(), problem: error.to_string() })?;
        manifest.check(&path)?;
        Ok(Some(manifest))
    }

    fn check(&self, path: &Path) -> Result<()> {
        let problem = |problem: String| FileError::Manifest { path: path.to_path_buf(), problem };
        if self.schema_version != SCHEMA_VERSION {
            return Err(problem(format!(
                "schema_version is {}, this build reads {SCHEMA_VERSION}",
                self.schema_version
            )));
        }
        for (split, entry) in &self.splits {
            let rows: u64 = entry.files.iter().map(|file| file.rows).sum();
            if rows != entry.count {
                return Err(problem(format!(
                    "split `{split}`: count is {} but its files hold {rows} rows",
                    entry.count
                )));
            }
            for file in &entry.files {
                if file.path.starts_with('/') || file.path.split('/').any(|part| part == "..") {
                    return Err(problem(format!(
                        "split `{split}`: file path `{}` must stay inside the dataset",
                        file.path
                    )));
                }
            }
        }
        Ok(())
    }

    /// Writes `<root>/manifest.json` through a temporary file, fsync and rename.
    pub fn write_atomically(&self, dataset_root: &Path) -> Result<()> {
        let path = Manifest::path(dataset_root);
        let json = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        crate::atomic::write_bytes(&path, &json)
    }

    pub fn split(&self, name: &str) -> Option<&SplitManifest> {
        self.splits.get(name)
    }

    /// Cheap completeness check: every listed file exists with the listed size.
    /// Content is checked by [`crate::reader::Dataset::verify`].
    pub fn files_present(&self, dataset_root: &Path) -> bool {
        self.splits.values().flat_map(|split| &split.files).all(|file| {
            std::fs::metadata(dataset_root.join(&file.path)).map(|meta| meta.len() == file.bytes).unwrap_or(false)
        })
    }
}
