//! The probe's one error type: every variant names the file or the query it is about.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{path}: {problem}")]
    Bad { path: PathBuf, problem: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },

    #[error("{context}: {source}")]
    Polars { context: String, source: polars::error::PolarsError },

    #[error(transparent)]
    Files(#[from] jepa_shared::FileError),

    #[error(transparent)]
    Run(#[from] jepa_trainer::RunError),
}

pub type Result<T> = std::result::Result<T, ProbeError>;

impl ProbeError {
    pub fn bad(path: &Path, problem: impl Into<String>) -> Self {
        ProbeError::Bad { path: path.to_path_buf(), problem: problem.into() }
    }

    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| ProbeError::Io { path: path.to_path_buf(), source }
    }

    pub fn parquet(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> Self + '_ {
        move |source| ProbeError::Parquet { path: path.to_path_buf(), source }
    }

    pub fn polars(context: impl Into<String>) -> impl FnOnce(polars::error::PolarsError) -> Self {
        let context = context.into();
        move |source| ProbeError::Polars { context, source }
    }
}
