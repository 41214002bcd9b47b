//! The run config: one TOML file holds every knob of a run, `--set key=value` overrides
//! single fields, and the resolved config is written into the run folder.

use std::path::{Path, PathBuf};

use jepa_shared::MaskConfig;
use jepa_shared::vit::{PRESETS, VitConfig};
use serde::{Deserialize, Serialize};

use crate::mae::MaeConfig;
use crate::model::LossKind;
use crate::predictor::PredictorConfig;
use crate::prefetch::LoaderConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },

    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },

    #[error("--set {assignment}: {problem}")]
    Override { assignment: String, problem: String },

    #[error("run config: `{field}` {problem}")]
    Invalid { field: String, problem: String },
}

/// The self-supervised objective a run trains with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Predict the target encoder's features of masked blocks (needs `[predictor]`).
    #[default]
    Ijepa,
    /// Reconstruct the pixels of randomly masked patches (`[mae]`).
    Mae,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Ijepa => "ijepa",
            Method::Mae => "mae",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Folder name under the runs root.
    pub name: String,
    pub seed: u64,
    #[serde(default)]
    pub method: Method,
    /// Dataset root (holding `manifest.json`).
    pub dataset: PathBuf,
    #[serde(default)]
    pub data: DataConfig,
    /// Shapes and threads of the batches; `seed` and `epochs` are set from the run.
    #[serde(default)]
    pub loader: LoaderConfig,
    #[serde(default)]
    pub masks: MaskConfig,
    pub encoder: EncoderConfig,
    /// I-JEPA's predictor; required when `method = "ijepa"`.
    pub predictor: Option<PredictorConfig>,
    /// MAE's masking, decoder and loss; read when `method = "mae"`.
    #[serde(default)]
    pub mae: MaeConfig,
    pub optim: OptimConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

/// Per-channel pixel statistics in [0, 1] units, used by the model's first op. Left out,
/// they are measured on the training split and written into the resolved config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub pixel_mean: Option<Vec<f32>>,
    pub pixel_std: Option<Vec<f32>>,
}

/// A named preset, with any of its sizes overridden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub preset: String,
    pub dim: Option<usize>,
    pub depth: Option<usize>,
    pub heads: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub epochs: u64,
    pub warmup_epochs: f64,
    pub lr_start: f64,
    pub lr_peak: f64,
    pub lr_final: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: [f64; 2],
    #[serde(default = "default_ema_momentum")]
    pub ema_momentum: [f64; 2],
    /// Micro-batches per optimizer step.
    #[serde(default = "one")]
    pub accumulation: u64,
    /// Global gradient-norm limit; none by default, as in the paper.
    pub grad_clip: Option<f64>,
    #[serde(default)]
    pub loss: LossKind,
    /// Stop after this many optimizer steps even if the epochs are not done (schedules
    /// still span the full run).
    pub max_steps: Option<u64>,
}

fn default_weight_decay() -> [f64; 2] {
    [0.04, 0.4]
}

fn default_ema_momentum() -> [f64; 2] {
    [0.996, 1.0]
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Optimizer steps between checkpoints (one is always written at the end).
    pub every_steps: u64,
    /// Checkpoints kept on disk, newest first.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self { every_steps: 500, keep: 2 }
    }
}

impl RunConfig {
    /// Reads `path` and applies `overrides` (`key.path=value`, the value in TOML syntax or
    /// a bare string).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|error| ConfigError::Parse { path: path.into(), message: error.to_string() })?;
        for assignment in overrides {
            apply_override(&mut table, assignment)?;
        }
        let config: RunConfig = table
            .try_into()
            .map_err(|error: toml::de::Error| ConfigError::Parse { path: path.into(), message: error.to_string() })?;
        config.check()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a run config serialises")
    }

    /// The encoder shape: the preset, the overrides, and the loader's image geometry.
    pub fn vit(&self) -> Result<VitConfig, ConfigError> {
        let invalid = |field: &str, problem: String| ConfigError::Invalid { field: field.into(), problem };
        let loader = &self.loader;
        let mut vit = VitConfig::preset(
            &self.encoder.preset,
            loader.image_size_px as usize,
            loader.patch_size_px as usize,
            loader.channels as usize,
        )
        .ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|(name, ..)| *name).collect();
            invalid("encoder.preset", format!("is `{}`, expected one of {}", self.encoder.preset, names.join(", ")))
        })?;
        vit.dim = self.encoder.dim.unwrap_or(vit.dim);
        vit.depth = self.encoder.depth.unwrap_or(vit.depth);
        vit.heads = self.encoder.heads.unwrap_or(vit.heads);
        if let Some((field, problem)) = vit.problem() {
            let field =
                if matches!(field, "dim" | "heads") { format!("encoder.{field}") } else { format!("loader.{field}") };
            return Err(invalid(&field, problem));
        }
        Ok(vit)
    }

    /// Everything that can be checked without the dataset.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: String| Err(ConfigError::Invalid { field: field.into(), problem });
        self.vit()?;
        match self.method {
            Method::Ijepa => match &self.predictor {
                None => return invalid("predictor", "is missing: method `ijepa` needs a [predictor] section".into()),
                Some(predictor) => {
                    if let Some((field, problem)) = predictor.problem() {
                        return invalid(field, problem);
                    }
                }
            },
            Method::Mae => {
                if let Some((field, problem)) = self.mae.decoder.problem() {
                    return invalid(&field.replacen("predictor", "mae.decoder", 1), problem);
                }
                let (rows, cols) = self.loader.grid();
                if let Err(error) = jepa_shared::RandomMasks::new(self.mae.mask_ratio, rows, cols) {
                    return invalid("mae.mask_ratio", error.problem);
                }
            }
        }
        let optim = &self.optim;
        if optim.epochs == 0 {
            return invalid("optim.epochs", "is 0, expected at least 1".into());
        }
        if optim.accumulation == 0 {
            return invalid("optim.accumulation", "is 0, expected at least 1".into());
        }
        if !(optim.warmup_epochs >= 0.0 && optim.warmup_epochs <= optim.epochs as f64) {
            return invalid(
                "optim.warmup_epochs",
                format!("is {}, expected 0..={}", optim.warmup_epochs, optim.epochs),
            );
        }
        for (field, value) in
            [("optim.lr_start", optim.lr_start), ("optim.lr_peak", optim.lr_peak), ("optim.lr_final", optim.lr_final)]
        {
            if !(value.is_finite() && value >= 0.0) {
                return invalid(field, format!("is {value}, expected a finite value ≥ 0"));
            }
        }
        if optim.grad_clip.is_some_and(|limit| limit.is_nan() || limit <= 0.0) {
            return invalid("optim.grad_clip", "must be positive when set".into());
        }
        if self.checkpoint.every_steps == 0 {
            return invalid("checkpoint.every_steps", "is 0, expected at least 1".into());
        }
        let channels = self.loader.channels as usize;
        for (field, values) in [("data.pixel_mean", &self.data.pixel_mean), ("data.pixel_std", &self.data.pixel_std)] {
            if let Some(values) = values
                && values.len() != channels
            {
                return invalid(field, format!("has {} values, expected one per channel ({channels})", values.len()));
            }
        }
        if self.data.pixel_std.as_ref().is_some_and(|std| std.iter().any(|value| value.is_nan() || *value <= 0.0)) {
            return invalid("data.pixel_std", "must be positive".into());
        }
        Ok(())
    }
}

/// Sets `a.b.c = value` in `table`, creating the sections on the way.
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), ConfigError> {
    let fail = |problem: &str| ConfigError::Override { assignment: assignment.into(), problem: problem.into() };
    let (key, raw) = assignment.split_once('=').ok_or_else(|| fail("expected key=value"))?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|part| part.is_empty()) {
        return Err(fail("empty key"));
    }
    let raw = raw.trim();
    // A TOML value if it parses as one (numbers, booleans, arrays, quoted strings), else a bare string.
    let value = toml::from_str::<toml::Table>(&format!("value = {raw}"))
        .ok()
        .and_then(|mut parsed| parsed.remove("value"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, sections) = path.split_last().expect("non-empty path");
    let mut current = table;
    for section in sections {
        let entry = current.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| fail(&format!("`{section}` is not a section")))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
seed = 1
dataset = "datasets/x"
[encoder]
preset = "nano"
[predictor]
dim = 16
depth = 1
heads = 2
[optim]
epochs = 2
warmup_epochs = 1
lr_start = 1e-4
lr_peak = 1e-3
lr_final = 1e-6
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn overrides_set_nested_fields_with_typed_values() {
        let (_dir, path) = write(MINIMAL);
        let overrides =
            ["optim.lr_peak=5e-4", "loader.batch_size=32", "name=other", "encoder.dim=64", "loader.crop.enabled=false"];
        let config = RunConfig::load(&path, &overrides.map(String::from)).unwrap();
        assert_eq!(config.optim.lr_peak, 5e-4);
        assert_eq!(config.loader.batch_size, 32);
        assert_eq!(config.name, "other");
        assert_eq!(config.vit().unwrap().dim, 64);
        assert!(!config.loader.crop.enabled);
        // The resolved config reads back to the same thing.
        let (_dir, again) = write(&config.to_toml());
        assert_eq!(RunConfig::load(&again, &[]).unwrap(), config);
    }

    #[test]
    fn bad_fields_are_named() {
        let (_dir, path) = write(MINIMAL);
        let error = RunConfig::load(&path, &["encoder.preset=huge".into()]).unwrap_err().to_string();
        assert!(error.contains("encoder.preset") && error.contains("nano, micro, tiny, small, base"), "{error}");
        let error = RunConfig::load(&path, &["optim.accumulation=0".into()]).unwrap_err().to_string();
        assert!(error.contains("optim.accumulation"), "{error}");
        let error = RunConfig::load(&path, &["optim.typo=1".into()]).unwrap_err().to_string();
        assert!(error.contains("run.toml") && error.contains("typo"), "{error}");
        let error = RunConfig::load(&path, &["data.pixel_mean=[0.5]".into()]).unwrap_err().to_string();
        assert!(error.contains("data.pixel_mean") && error.contains("one per channel"), "{error}");
        let error =
            RunConfig::load(&path, &["method=mae".into(), "mae.mask_ratio=0.999".into()]).unwrap_err().to_string();
        assert!(error.contains("mae.mask_ratio") && error.contains("keeps 0 of 196"), "{error}");
        let error =
            RunConfig::load(&path, &["method=mae".into(), "mae.decoder={ dim = 16, depth = 1, heads = 3 }".into()])
                .unwrap_err()
                .to_string();
        assert!(error.contains("mae.decoder.heads"), "{error}");
        let error = RunConfig::load(&path, &["method=dino".into()]).unwrap_err().to_string();
        assert!(error.contains("method") && error.contains("ijepa"), "{error}");
        let error = RunConfig::load(&path, &["novalue".into()]).unwrap_err().to_string();
        assert!(error.contains("key=value"), "{error}");
    }
}
