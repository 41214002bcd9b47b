//! The checked recipe of a run: a [`RunConfig`] whose every part (the encoder's geometry, the
//! method's section and masks, the loader, the optimizer, checkpoints, pixel statistics) has
//! been checked in one place, before anything is read or written, together with the typed
//! pieces the loop needs.

use std::path::Path;

use jepa_shared::{LoaderConfig, LoaderError};

use crate::config::{ConfigError, RunConfig};
use crate::method::MethodInfo;
use crate::registry::AnyMethod;
use crate::schedule::Schedule;
use crate::vit::VitConfig;

/// A run config that passed every check.
#[derive(Debug, Clone)]
pub struct Recipe {
    config: RunConfig,
    encoder: VitConfig,
    method: AnyMethod,
    notes: Vec<String>,
}

impl Recipe {
    /// Reads, overrides and checks the config at `path`.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let (config, notes) = RunConfig::load(path, overrides)?;
        let mut recipe = Self::check(config)?;
        recipe.notes = notes;
        Ok(recipe)
    }

    /// Checks everything that can be checked without the dataset; the first problem names
    /// its field.
    pub fn check(mut config: RunConfig) -> Result<Self, ConfigError> {
        let invalid = |field: &str, problem: String| Err(ConfigError::Invalid { field: field.into(), problem });
        if config.name.is_empty() || config.name.contains(['/', '\\']) || config.name == "." || config.name == ".." {
            return invalid("name", format!("is `{}`, expected a folder name", config.name));
        }
        let encoder = config.vit()?;
        let method = AnyMethod::from_config(&config.method, &config.methods, &encoder)
            .map_err(|error| ConfigError::Invalid { field: error.field, problem: error.problem })?;
        // The resolved config keeps the run's own method section, defaults filled in.
        config.methods = [(config.method.clone(), method.info().section())].into();

        let loader = loader_config(&config, &encoder, method.info());
        if let Err(LoaderError::Config { field, problem }) = loader.check(method.info().masks().grid()) {
            let section = if matches!(field, "image_size_px" | "channels") { "encoder" } else { "loader" };
            return invalid(&format!("{section}.{field}"), problem);
        }

        let optim = &config.optim;
        if optim.epochs == 0 {
            return invalid("optim.epochs", "is 0, expected at least 1".into());
        }
        if optim.accumulation == 0 {
            return invalid("optim.accumulation", "is 0, expected at least 1".into());
        }
        if optim.max_steps == Some(0) {
            return invalid("optim.max_steps", "is 0, expected at least 1 when set".into());
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
            // Training runs in f32: a value past f32's range becomes infinite there.
            if !(value as f32).is_finite() {
                return invalid(field, format!("is {value}, which f32, the precision training runs in, cannot hold"));
            }
        }
        if optim.weight_decay.iter().any(|decay| !(decay.is_finite() && (*decay as f32).is_finite() && *decay >= 0.0)) {
            return invalid(
                "optim.weight_decay",
                format!("is {:?}, expected values ≥ 0 that f32 can hold", optim.weight_decay),
            );
        }
        if optim.grad_clip.is_some_and(|limit| limit.is_nan() || limit <= 0.0) {
            return invalid("optim.grad_clip", "must be positive when set".into());
        }
        if config.checkpoint.every_steps == 0 {
            return invalid("checkpoint.every_steps", "is 0, expected at least 1".into());
        }
        if config.checkpoint.keep == 0 {
            return invalid("checkpoint.keep", "is 0, expected at least 1".into());
        }
        let channels = encoder.channels;
        for (field, values) in
            [("data.pixel_mean", &config.data.pixel_mean), ("data.pixel_std", &config.data.pixel_std)]
        {
            if let Some(values) = values
                && values.len() != channels
            {
                return invalid(field, format!("has {} values, expected one per channel ({channels})", values.len()));
            }
        }
        if config.data.pixel_std.as_ref().is_some_and(|std| std.iter().any(|value| !value.is_finite() || *value <= 0.0))
        {
            return invalid("data.pixel_std", "must be positive and finite".into());
        }
        if config.data.pixel_mean.as_ref().is_some_and(|mean| mean.iter().any(|value| !value.is_finite())) {
            return invalid("data.pixel_mean", "must be finite".into());
        }
        Ok(Self { config, encoder, method, notes: Vec::new() })
    }

    /// The config as checked, with only the run's own method section (defaults filled in).
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    pub fn dataset(&self) -> &Path {
        &self.config.dataset
    }

    /// Reads the dataset from `root` instead (the same data moved elsewhere).
    pub fn set_dataset(&mut self, root: &Path) {
        self.config.dataset = root.to_path_buf();
    }

    pub fn encoder(&self) -> &VitConfig {
        &self.encoder
    }

    pub fn method(&self) -> &AnyMethod {
        &self.method
    }

    pub fn method_info(&self) -> &dyn MethodInfo {
        self.method.info()
    }

    /// A note for each field the config file holds in an older place.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Settings that pass every check but would not train what they say: masks the sampler
    /// can only draw by letting the context overlap a target, for more than one image in ten.
    pub fn warnings(&self) -> Vec<String> {
        const DRAWN: usize = 256;
        let sampler = self.method_info().masks();
        let relaxed = sampler.sample_batch(self.seed(), 0, 0, DRAWN).relaxed_count();
        if relaxed * 10 <= DRAWN {
            return Vec::new();
        }
        let (height, width) = sampler.grid();
        vec![format!(
            "`{}.masks`: for {relaxed} of {DRAWN} images the context can keep `min_keep` patches only by \
             overlapping a target, which then shows the encoder what it must predict; the targets take too much of \
             the {height}×{width} patch grid: lower `num_targets` or the target scale",
            self.method_info().name()
        )]
    }

    /// The run's pixel statistics, once measured or given.
    pub fn pixel_stats(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        let data = &self.config.data;
        Some((data.pixel_mean.clone()?, data.pixel_std.clone()?))
    }

    /// Fills in the pixel statistics the config left out (those it gives stay).
    pub fn with_measured_pixel_stats(mut self, mean: Vec<f32>, std: Vec<f32>) -> Self {
        self.config.data.pixel_mean.get_or_insert(mean);
        self.config.data.pixel_std.get_or_insert(std);
        self
    }

    /// The resolved config, as the run folder keeps it.
    pub fn to_toml(&self) -> String {
        self.config.to_toml()
    }

    /// The first field that makes `other` a different run from this one, with its value in
    /// each: the method and its section, the encoder's geometry, the seed or the dataset.
    /// What may change when a run resumes (steps, epochs, checkpoint cadence, loader
    /// threads) is not compared.
    pub fn identity_change(&self, other: &Recipe) -> Option<(String, String, String)> {
        let parse = |recipe: &Recipe| recipe.to_toml().parse::<toml::Table>().expect("a resolved config is TOML");
        let (mine, theirs) = (parse(self), parse(other));
        let method = self.config.method.clone();
        for key in ["method", "seed", "dataset", "encoder", method.as_str()] {
            if let Some(found) = first_difference(key, mine.get(key), theirs.get(key)) {
                return Some(found);
            }
        }
        None
    }

    /// What the loader needs: the run's `[loader]`, the encoder's image geometry, the
    /// method's views and the run's seed.
    pub fn loader_config(&self) -> LoaderConfig {
        loader_config(&self.config, &self.encoder, self.method.info())
    }

    /// The schedules over the whole run, from the loader's batches per epoch.
    pub fn schedule(&self, batches_per_epoch: u64) -> Schedule {
        let optim = &self.config.optim;
        let steps_per_epoch = self.steps_per_epoch(batches_per_epoch);
        Schedule {
            lr_start: optim.lr_start,
            lr_peak: optim.lr_peak,
            lr_final: optim.lr_final,
            warmup_steps: (optim.warmup_epochs * steps_per_epoch as f64).round() as u64,
            total_steps: optim.epochs * steps_per_epoch,
            weight_decay: optim.weight_decay,
            weight_decay_ramp: optim.weight_decay_schedule,
            ema_momentum: self.method.info().teacher_momentum(),
        }
    }

    /// Optimizer steps per epoch of `batches_per_epoch` micro-batches.
    pub fn steps_per_epoch(&self, batches_per_epoch: u64) -> u64 {
        (batches_per_epoch / self.config.optim.accumulation).max(1)
    }

    /// The last optimizer step the run trains to: the whole schedule, or `optim.max_steps`.
    pub fn last_step(&self, schedule: &Schedule) -> u64 {
        self.config.optim.max_steps.map_or(schedule.total_steps, |max| max.min(schedule.total_steps))
    }
}

fn loader_config(config: &RunConfig, encoder: &VitConfig, method: &dyn MethodInfo) -> LoaderConfig {
    let loader =
        LoaderConfig::new(config.loader.clone(), encoder.image_size_px as u32, encoder.channels as u8, config.seed);
    LoaderConfig { views: method.views(), ..loader }
}

/// The first leaf (by dotted path under `path`) where `a` and `b` differ, with both values.
fn first_difference(path: &str, a: Option<&toml::Value>, b: Option<&toml::Value>) -> Option<(String, String, String)> {
    let show = |value: Option<&toml::Value>| value.map_or("(none)".to_string(), |value| value.to_string());
    match (a, b) {
        (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|key| first_difference(&format!("{path}.{key}"), a.get(key), b.get(key)))
        }
        (a, b) if a == b => None,
        (a, b) => Some((path.to_string(), show(a), show(b))),
    }
}
