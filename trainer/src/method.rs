//! What a self-supervised method brings to the one training loop: its model, its mask
//! strategy for the loader, its loss, and whether it keeps an EMA target encoder. The loop,
//! the optimizer step, checkpoints, metrics and the progress bar are shared
//! ([`crate::training`], [`crate::step`], [`crate::checkpoint`]).

use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use jepa_shared::vit::{VisionTransformer, VitConfig};
use jepa_shared::{MaskSampler, MultiBlockMasks, RandomMasks};

use crate::config::{ConfigError, Method as MethodName, RunConfig};
use crate::mae::{Mae, MaeConfig};
use crate::model::{DeviceBatch, IJepa, LossKind, target_features};
use crate::predictor::PredictorConfig;

/// One micro-batch's loss and the method's own statistics, by metric name.
pub struct BatchLoss<B: AutodiffBackend> {
    pub loss: Tensor<B, 1>,
    pub stats: Vec<(&'static str, f64)>,
}

pub trait Method<B: AutodiffBackend> {
    /// What the optimizer trains.
    type Model: AutodiffModule<B>;

    /// Metric columns of this method, after the shared ones.
    fn metrics(&self) -> &'static [&'static str];

    /// The model a run with `seed` starts from.
    fn init(&self, seed: u64, device: &B::Device) -> Self::Model;

    /// The strategy the loader draws masks with, on its own threads.
    fn masks(&self) -> Arc<dyn MaskSampler>;

    /// The encoder an EMA target encoder follows; `None` for a method without one.
    fn ema_source(model: &Self::Model) -> Option<&VisionTransformer<B>>;

    /// The mean loss of one micro-batch; `target` is the EMA target encoder, if any.
    fn loss(
        &self,
        model: &Self::Model,
        target: Option<&VisionTransformer<B::InnerBackend>>,
        batch: &DeviceBatch<B>,
    ) -> BatchLoss<B>;
}

/// I-JEPA: multi-block masks, predictor, EMA target encoder, loss in feature space.
#[derive(Debug, Clone)]
pub struct IJepaMethod {
    pub encoder: VitConfig,
    pub predictor: PredictorConfig,
    pub masks: MultiBlockMasks,
    pub loss: LossKind,
}

impl IJepaMethod {
    pub const METRICS: &'static [&'static str] = &["ema_momentum", "target_feature_std", "relaxed_masks"];

    pub fn from_config(config: &RunConfig) -> Result<Self, ConfigError> {
        let encoder = config.vit()?;
        let grid = encoder.grid();
        let masks = MultiBlockMasks::new(config.masks.clone(), grid, grid).map_err(|error| ConfigError::Invalid {
            field: format!("masks.{}", error.field),
            problem: error.problem,
        })?;
        let predictor = config.predictor.clone().ok_or_else(|| ConfigError::Invalid {
            field: "predictor".into(),
            problem: "is missing: method `ijepa` needs a [predictor] section".into(),
        })?;
        Ok(Self { encoder, predictor, masks, loss: config.optim.loss })
    }
}

impl<B: AutodiffBackend> Method<B> for IJepaMethod {
    type Model = IJepa<B>;

    fn metrics(&self) -> &'static [&'static str] {
        IJepaMethod::METRICS
    }

    fn init(&self, seed: u64, device: &B::Device) -> IJepa<B> {
        IJepa::seeded(&self.encoder, &self.predictor, seed, device)
    }

    fn masks(&self) -> Arc<dyn MaskSampler> {
        Arc::new(self.masks.clone())
    }

    fn ema_source(model: &IJepa<B>) -> Option<&VisionTransformer<B>> {
        Some(&model.context_encoder)
    }

    fn loss(
        &self,
        model: &IJepa<B>,
        target: Option<&VisionTransformer<B::InnerBackend>>,
        batch: &DeviceBatch<B>,
    ) -> BatchLoss<B> {
        let target = target.expect("I-JEPA keeps a target encoder");
        let inner_idx: Vec<_> = batch.target_idx.iter().map(|idx| idx.clone().inner()).collect();
        let targets = target_features(target, batch.images.clone().inner(), &inner_idx);
        let loss = model.loss(batch, &targets, self.loss);
        BatchLoss { loss, stats: vec![("target_feature_std", targets.feature_std)] }
    }
}

/// MAE: uniform random masks, pixel decoder, no target encoder.
#[derive(Debug, Clone)]
pub struct MaeMethod {
    pub encoder: VitConfig,
    pub config: MaeConfig,
    pub masks: RandomMasks,
}

impl MaeMethod {
    pub const METRICS: &'static [&'static str] = &[];

    pub fn from_config(config: &RunConfig) -> Result<Self, ConfigError> {
        let encoder = config.vit()?;
        let grid = encoder.grid();
        let masks = RandomMasks::new(config.mae.mask_ratio, grid, grid)
            .map_err(|error| ConfigError::Invalid { field: "mae.mask_ratio".into(), problem: error.problem })?;
        Ok(Self { encoder, config: config.mae.clone(), masks })
    }
}

impl<B: AutodiffBackend> Method<B> for MaeMethod {
    type Model = Mae<B>;

    fn metrics(&self) -> &'static [&'static str] {
        MaeMethod::METRICS
    }

    fn init(&self, seed: u64, device: &B::Device) -> Mae<B> {
        Mae::seeded(&self.encoder, &self.config.decoder, seed, device)
    }

    fn masks(&self) -> Arc<dyn MaskSampler> {
        Arc::new(self.masks.clone())
    }

    fn ema_source(_model: &Mae<B>) -> Option<&VisionTransformer<B>> {
        None
    }

    fn loss(
        &self,
        model: &Mae<B>,
        _target: Option<&VisionTransformer<B::InnerBackend>>,
        batch: &DeviceBatch<B>,
    ) -> BatchLoss<B> {
        BatchLoss { loss: model.loss(batch, self.config.loss), stats: Vec::new() }
    }
}

/// The encoder a run starts from, before any training: the random-init baseline the probe
/// compares with. I-JEPA and MAE runs with the same seed and encoder start from the same one.
pub fn initial_encoder<B: Backend>(
    config: &RunConfig,
    device: &B::Device,
) -> Result<VisionTransformer<B>, ConfigError> {
    let encoder = config.vit()?;
    Ok(match config.method {
        MethodName::Ijepa => {
            let method = IJepaMethod::from_config(config)?;
            IJepa::<B>::seeded(&encoder, &method.predictor, config.seed, device).context_encoder
        }
        MethodName::Mae => Mae::<B>::seeded(&encoder, &config.mae.decoder, config.seed, device).encoder,
    })
}
