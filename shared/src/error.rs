//! The error of a file the project reads or writes: a shard, a manifest, and the run
//! folder's files (config, checkpoints, logs, tables). Every variant carries the file's
//! path, so a user can go straight to the culprit.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: parquet: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("{path}: arrow: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },

    #[error("{path}: column `{column}`: {problem}")]
    Schema { path: PathBuf, column: String, problem: String },

    #[error("{path}: row {row} (id {id}): {problem}")]
    BadRow { path: PathBuf, row: usize, id: u64, problem: String },

    #[error("{path}: invalid manifest: {problem}")]
    Manifest { path: PathBuf, problem: String },

    #[error(
        "{path}: checksum mismatch (manifest says sha256 {expected}, file has {actual}); \
         the shard is corrupt or was changed after ingest: re-run the ingest with --force"
    )]
    Checksum { path: PathBuf, expected: String, actual: String },

    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

impl FileError {
    /// The error of an I/O operation on `path`, for `map_err`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| FileError::Io { path, source }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>) -> impl FnOnce(parquet::errors::ParquetError) -> Self {
        let path = path.into();
        move |source| FileError::Parquet { path, source }
    }

    pub(crate) fn arrow(path: impl Into<PathBuf>) -> impl FnOnce(arrow_schema::ArrowError) -> Self {
        let path = path.into();
        move |source| FileError::Arrow { path, source }
    }
}

pub type Result<T, E = FileError> = std::result::Result<T, E>;
