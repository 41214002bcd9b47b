//! Errors from reading sources. Each names the file and says what was expected.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {problem}")]
    BadSource { path: PathBuf, problem: String },

    #[error("{url}: {problem}")]
    Download { url: String, problem: String },

    #[error(transparent)]
    File(#[from] jepa_shared::FileError),
}

impl IngestError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| IngestError::Io { path, source }
    }

    pub fn bad(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        IngestError::BadSource { path: path.into(), problem: problem.into() }
    }
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// A directory the user named must exist; say so plainly when it does not.
pub(crate) fn require_dir(path: &std::path::Path, what: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(IngestError::bad(path, format!("{what}: not a directory"))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(IngestError::bad(path, format!("{what}: directory does not exist")))
        }
        Err(error) => Err(IngestError::io(path)(error)),
    }
}
