//! A trained run's folder as the probe sees it: the resolved config the trainer wrote,
//! its checkpoints, and where the probe's own outputs go.
//!
//! ```text
//! runs/<name>/config.toml, checkpoints/step-N/       (from `train`)
//! runs/<name>/features/<split>.parquet               (pretrained target encoder)
//! runs/<name>/features-random/<split>.parquet        (same config, no training)
//! runs/<name>/probe/…                                (predictions, scores, report, plots)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use jepa_trainer::checkpoint;
use jepa_trainer::config::RunConfig;

use crate::error::{ProbeError, Result};

/// Which encoder a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum EncoderKind {
    /// The run's target encoder, from a checkpoint.
    Pretrained,
    /// The same config, initialised from the run's seed and never trained.
    Random,
}

impl EncoderKind {
    pub const ALL: [EncoderKind; 2] = [EncoderKind::Pretrained, EncoderKind::Random];

    pub fn as_str(self) -> &'static str {
        match self {
            EncoderKind::Pretrained => "pretrained",
            EncoderKind::Random => "random",
        }
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct RunFolder {
    pub root: PathBuf,
    /// The resolved config (pixel statistics filled in).
    pub config: RunConfig,
}

impl RunFolder {
    pub fn open(root: &Path) -> Result<Self> {
        let config_path = root.join("config.toml");
        if !config_path.exists() {
            return Err(ProbeError::bad(&config_path, "missing: not a run folder written by `train`"));
        }
        let config = RunConfig::load(&config_path, &[])?;
        Ok(Self { root: root.to_path_buf(), config })
    }

    /// `name` is `step-00000937`, a bare step number, or a path; `None` is the latest.
    pub fn checkpoint(&self, name: Option<&str>) -> Result<PathBuf> {
        let folder = self.root.join("checkpoints");
        let path = match name {
            None => checkpoint::latest(&folder)?
                .ok_or_else(|| ProbeError::bad(&folder, "holds no checkpoint: train the run first"))?,
            Some(name) => match name.parse::<u64>() {
                Ok(step) => folder.join(checkpoint::folder_name(step)),
                Err(_) if Path::new(name).is_absolute() || name.contains('/') => PathBuf::from(name),
                Err(_) => folder.join(name),
            },
        };
        let file = format!("{}.bin", crate::encoder::pretrained_file(self.config.method));
        if !path.join(&file).exists() {
            return Err(ProbeError::bad(&path, format!("is not a checkpoint of this run (no {file})")));
        }
        Ok(path)
    }

    /// The per-channel pixel mean and std the run normalised its input with.
    pub fn pixel_stats(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let data = &self.config.data;
        match (data.pixel_mean.clone(), data.pixel_std.clone()) {
            (Some(mean), Some(std)) => Ok((mean, std)),
            _ => Err(ProbeError::bad(&self.root.join("config.toml"), "has no data.pixel_mean / data.pixel_std")),
        }
    }

    pub fn features_dir(&self, encoder: EncoderKind) -> PathBuf {
        match encoder {
            EncoderKind::Pretrained => self.root.join("features"),
            EncoderKind::Random => self.root.join("features-random"),
        }
    }

    pub fn features_path(&self, encoder: EncoderKind, split: &str) -> PathBuf {
        self.features_dir(encoder).join(format!("{split}.parquet"))
    }

    pub fn probe_dir(&self) -> PathBuf {
        self.root.join("probe")
    }
}
