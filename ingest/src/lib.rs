//! `jepa-ingest`: turns real image sources into jepa-stream shards.
//!
//! It owns the sources (STL-10 binaries and their download, Fashion-MNIST IDX files, image
//! folders) and the one driver that streams any source into a dataset. The shard format,
//! manifest and atomic writer belong to `jepa-shared`; nothing here knows about models.
//!
//! Modules, in data-flow order:
//! - [`download`]: fetch an archive with resume and MD5, extract it atomically;
//! - [`stl10`], [`fashion_mnist`], [`folder`]: sources, each a [`source::Source`];
//! - [`source`]: the driver: fingerprint → up to date? → validate → stream → commit;
//! - [`error`]: errors that name the file.
//!
//! Progress bars are `jepa_shared`'s [`Progress`], the one style of every stage.

pub mod download;
pub mod error;
pub mod fashion_mnist;
pub mod folder;
pub mod source;
pub mod stl10;

pub use error::{IngestError, Result};
pub use jepa_shared::Progress;
pub use source::{IngestOptions, IngestReport, Source, ingest};
