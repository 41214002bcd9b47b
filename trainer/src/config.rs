//! The run config file: one TOML file holds every knob of a run, `--set key=value`
//! overrides single fields, and the resolved config is written into the run folder.
//! [`crate::recipe`] checks it and turns it into a typed recipe.
//!
//! ```toml
//! name = "demo-fashion"        # the run folder under the runs root
//! seed = 0                     # every random draw of the run
//! method = "ijepa"             # a registered method; its settings are its own section
//! dataset = "datasets/fashion-mnist"
//! [data]                       # pixel mean/std (measured on the split when left out)
//! [loader]                     # how batches are made (split, batch size, crop, threads)
//! [encoder]                    # the ViT: preset, sizes, and the image geometry
//! [optim]                      # epochs, learning rate and weight decay schedules
//! [checkpoint]                 # how often, how many kept
//! [ijepa]                      # a method's section, e.g. I-JEPA's predictor and masks
//! ```
//!
//! Configs written before the method sections existed are read with their fields moved to
//! where they live now; [`RunConfig::load`] returns a note for each move.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jepa_shared::LoaderSettings;
use serde::{Deserialize, Serialize};

use crate::registry::METHOD_NAMES;
use crate::vit::{PRESETS, VitConfig};

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

/// A run config as written, before its checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Folder name under the runs root.
    pub name: String,
    pub seed: u64,
    #[serde(default = "default_method")]
    pub method: String,
    /// Dataset root (holding `manifest.json`).
    pub dataset: PathBuf,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub loader: LoaderSettings,
    pub encoder: EncoderConfig,
    pub optim: OptimConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Method sections by method name (`[ijepa]`, `[mae]`, …) as written: every section
    /// that is not one of the fields above. Each method reads its own
    /// ([`crate::registry::AnyMethod::from_config`]).
    #[serde(skip)]
    pub methods: BTreeMap<String, toml::Value>,
}

/// The fields of [`RunConfig`] as a TOML file holds them.
const FIELDS: [&str; 9] = ["name", "seed", "method", "dataset", "data", "loader", "encoder", "optim", "checkpoint"];
/// Those of [`FIELDS`] that are sections.
const SECTIONS: [&str; 5] = ["data", "loader", "encoder", "optim", "checkpoint"];

fn default_method() -> String {
    "ijepa".into()
}

/// Per-channel pixel statistics in [0, 1] units, used by the model's first op. Left out,
/// they are measured on the training split and written into the resolved config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub pixel_mean: Option<Vec<f32>>,
    pub pixel_std: Option<Vec<f32>>,
}

/// The ViT every method trains: a named preset with any of its sizes overridden, and the
/// geometry of the images it sees (the loader makes them that size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub preset: String,
    /// Side of the square images the encoder sees.
    #[serde(default = "default_image_size_px")]
    pub image_size_px: usize,
    #[serde(default = "default_patch_size_px")]
    pub patch_size_px: usize,
    /// 1 (grey) or 3 (RGB), whatever the dataset holds.
    #[serde(default = "default_channels")]
    pub channels: usize,
    pub dim: Option<usize>,
    pub depth: Option<usize>,
    pub heads: Option<usize>,
    /// Each block's MLP width as a multiple of `dim` (the presets' 4 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_ratio: Option<usize>,
}

fn default_image_size_px() -> usize {
    224
}

fn default_patch_size_px() -> usize {
    16
}

fn default_channels() -> usize {
    3
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
    /// How the weight decay goes from its first to its last value.
    #[serde(default)]
    pub weight_decay_schedule: Ramp,
    /// Micro-batches per optimizer step.
    #[serde(default = "one")]
    pub accumulation: u64,
    /// Global gradient-norm limit; none by default, as in the paper.
    pub grad_clip: Option<f64>,
    /// Stop after this many optimizer steps even if the epochs are not done (schedules
    /// still span the full run).
    pub max_steps: Option<u64>,
}

fn default_weight_decay() -> [f64; 2] {
    [0.04, 0.4]
}

/// The shape of a schedule between two values over the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ramp {
    /// Half a cosine: slow at both ends (the official I-JEPA code's weight decay).
    #[default]
    Cosine,
    /// A straight line (the seed's weight decay).
    Linear,
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
    /// a bare string). Returns the config and a note for every field of an older layout
    /// that was read in its new place.
    pub fn load(path: &Path, overrides: &[String]) -> Result<(Self, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let parse = |message: String| ConfigError::Parse { path: path.into(), message };
        let file: toml::Table = toml::from_str(&text).map_err(|error| parse(error.to_string()))?;
        let mut table = file.clone();
        for assignment in overrides {
            apply_override(&mut table, assignment)?;
        }
        match Self::from_table(table) {
            Ok(read) => Ok(read),
            // The file reads alone: the value that breaks it came from the command line.
            Err(problem) if !overrides.is_empty() && Self::from_table(file.clone()).is_ok() => {
                for assignment in overrides {
                    let mut one = file.clone();
                    apply_override(&mut one, assignment)?;
                    if let Err(problem) = Self::from_table(one) {
                        return Err(ConfigError::Override { assignment: assignment.clone(), problem });
                    }
                }
                Err(ConfigError::Override { assignment: overrides.join(" "), problem })
            }
            Err(problem) => Err(parse(problem)),
        }
    }

    /// The config in `table`, with a note for every field of an older layout.
    fn from_table(mut table: toml::Table) -> Result<(Self, Vec<String>), String> {
        let notes = migrate(&mut table)?;
        // Every other section is a method's; the registry says which names are methods.
        let sections: Vec<String> = table
            .iter()
            .filter(|(key, value)| value.is_table() && !FIELDS.contains(&key.as_str()))
            .map(|(key, _)| key.clone())
            .collect();
        // A misspelt section would otherwise surface as the section it was meant to be, missing.
        if let Some(unknown) = sections.iter().find(|name| !METHOD_NAMES.contains(&name.as_str())) {
            let meant = SECTIONS
                .iter()
                .find(|section| unknown.starts_with(**section) || section.starts_with(unknown.as_str()))
                .map(|section| format!(": did you mean `[{section}]`?"))
                .unwrap_or_default();
            return Err(format!(
                "`[{unknown}]` is neither a run config section ({}) nor a method's ({}){meant}",
                SECTIONS.join(", "),
                METHOD_NAMES.join(", ")
            ));
        }
        let methods = sections.into_iter().filter_map(|key| table.remove_entry(&key)).collect();
        // TOML's message ends with where it happened on a line of its own.
        let mut config: RunConfig =
            table.try_into().map_err(|error: toml::de::Error| error.to_string().trim().replace('\n', " "))?;
        config.methods = methods;
        Ok((config, notes))
    }

    /// The config as TOML, its method sections included.
    pub fn to_toml(&self) -> String {
        let mut table = toml::Table::try_from(self).expect("a run config serialises");
        for (name, section) in &self.methods {
            table.insert(name.clone(), section.clone());
        }
        toml::to_string_pretty(&table).expect("a run config serialises")
    }

    /// The encoder's shape: the preset, its overrides and the image geometry.
    pub fn vit(&self) -> Result<VitConfig, ConfigError> {
        let invalid =
            |field: &str, problem: String| ConfigError::Invalid { field: format!("encoder.{field}"), problem };
        let encoder = &self.encoder;
        let mut vit =
            VitConfig::preset(&encoder.preset, encoder.image_size_px, encoder.patch_size_px, encoder.channels)
                .ok_or_else(|| {
                    let names: Vec<&str> = PRESETS.iter().map(|(name, ..)| *name).collect();
                    invalid("preset", format!("is `{}`, expected one of {}", encoder.preset, names.join(", ")))
                })?;
        vit.dim = encoder.dim.unwrap_or(vit.dim);
        vit.depth = encoder.depth.unwrap_or(vit.depth);
        vit.heads = encoder.heads.unwrap_or(vit.heads);
        vit.mlp_ratio = encoder.mlp_ratio.unwrap_or(vit.mlp_ratio);
        match vit.problem() {
            Some((field, problem)) => Err(invalid(field, problem)),
            None => Ok(vit),
        }
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

/// Fields of the layout before method sections, and where each lives now (`None`: it
/// never had an effect and is dropped).
const MOVED: [(&str, Option<&str>); 9] = [
    ("predictor", Some("ijepa.predictor")),
    ("masks", Some("ijepa.masks")),
    ("optim.loss", Some("ijepa.loss")),
    ("optim.ema_momentum", Some("ijepa.ema_momentum")),
    ("loader.image_size_px", Some("encoder.image_size_px")),
    ("loader.patch_size_px", Some("encoder.patch_size_px")),
    ("loader.channels", Some("encoder.channels")),
    // The loader always drew from the run's `seed` and ran for `optim.epochs`.
    ("loader.seed", None),
    ("loader.epochs", None),
];

/// Moves the fields of the older layout to their places; a field set in both places is an
/// error that says which to keep.
fn migrate(table: &mut toml::Table) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for (old, new) in MOVED {
        let Some(value) = take(table, old) else { continue };
        match new {
            None => notes
                .push(format!("`{old}` had no effect (the loader uses the run's `seed` and `optim.epochs`): ignored")),
            Some(new) => {
                if get(table, new).is_some() {
                    return Err(format!(
                        "both `{old}` and `{new}` are set: `{old}` is the older name, keep `{new}` only"
                    ));
                }
                put(table, new, value);
                notes.push(format!("`{old}` is now `{new}`"));
            }
        }
    }
    Ok(notes)
}

fn get<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let (sections, last) = key.rsplit_once('.').map_or((None, key), |(sections, last)| (Some(sections), last));
    let mut current = table;
    for section in sections.into_iter().flat_map(|sections| sections.split('.')) {
        current = current.get(section)?.as_table()?;
    }
    current.get(last)
}

fn take(table: &mut toml::Table, key: &str) -> Option<toml::Value> {
    match key.split_once('.') {
        None => table.remove(key),
        Some((section, rest)) => take(table.get_mut(section)?.as_table_mut()?, rest),
    }
}

fn put(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_string(), value);
        }
        Some((section, rest)) => {
            let entry = table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(inner) = entry.as_table_mut() {
                put(inner, rest, value);
            }
        }
    }
}
