//! The seam every self-supervised method plugs into. A method brings, behind [`MethodInfo`]
//! and [`Method`]:
//!
//! - its config section (`[ijepa]`, `[mae]`, …), read and checked by [`MethodSection`];
//! - its loader recipe: the mask strategy the loader draws on its threads, and how many
//!   views (crops) of each image it wants;
//! - its model, how a run draws it from its seed, and its loss on one batch;
//! - its teacher update: an EMA copy of the trained encoder with a momentum schedule, or none;
//! - its metric columns, which the loop writes beside its own;
//! - which encoder the probe evaluates: the teacher or the trained encoder itself;
//! - for a method that predicts pixels, those pixels, for its reconstruction figure; for
//!   one that predicts its teacher's features, those features and the teacher's, for the
//!   predictor-retrieval figure.
//!
//! Everything else is shared and never asks which method it runs: the loop
//! ([`crate::training`]), the optimizer step ([`crate::step`]), checkpoints, the run folder
//! and the probe. [`crate::registry`] lists the methods a run config can name.

use std::sync::Arc;

use burn::module::{AutodiffModule, Module};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use jepa_shared::MaskSampler;

use crate::batch::DeviceBatch;
use crate::device::Cpu;
use crate::encoders::EncoderRole;
use crate::vit::{VisionTransformer, VitConfig};

/// How a method's statistic is combined over the micro-batches of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    Mean,
    Sum,
}

/// One of a method's own metrics, measured on one micro-batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// A column the method lists in [`MethodInfo::metric_columns`].
    pub name: &'static str,
    pub value: f64,
    pub reduce: Reduce,
}

/// One micro-batch's mean loss and the method's own statistics.
pub struct BatchLoss<B: AutodiffBackend> {
    pub loss: Tensor<B, 1>,
    pub stats: Vec<Stat>,
}

/// What a method is, whatever the backend.
pub trait MethodInfo: std::fmt::Debug + Send + Sync {
    /// The name a run config gives in `method = "…"`; also its section's name.
    fn name(&self) -> &'static str;

    /// The objective as reports name it, e.g. `ijepa smooth_l1`.
    fn objective(&self) -> String;

    /// The mask strategy the loader draws with, on its own threads.
    fn masks(&self) -> Arc<dyn MaskSampler>;

    /// Crops of each image the loader makes per batch (the masks are drawn once, for all).
    fn views(&self) -> usize {
        1
    }

    /// Momentum of the EMA teacher at the first and the last optimizer step (linear in
    /// between); `None` for a method without a teacher.
    fn teacher_momentum(&self) -> Option<[f64; 2]>;

    /// Columns this method adds to `metrics.parquet`, filled from its [`Stat`]s.
    fn metric_columns(&self) -> &'static [&'static str];

    /// The encoder the probe evaluates.
    fn evaluated(&self) -> EncoderRole;

    /// That encoder in words, for reports: "the I-JEPA run's EMA target encoder".
    fn evaluated_description(&self) -> &'static str;

    /// The method's config section as it ran, every default filled in.
    fn section(&self) -> toml::Value;
}

/// A method on a backend: its model, how it starts and its loss.
pub trait Method<B: AutodiffBackend>: MethodInfo {
    /// What the optimizer trains.
    type Model: AutodiffModule<B>;

    /// The model a run with `seed` starts from (see [`seeded`]).
    fn init(&self, seed: u64, device: &B::Device) -> Self::Model;

    /// The encoder the optimizer trains (I-JEPA's context encoder, MAE's encoder): the one an
    /// EMA teacher follows, and the random-init baseline at step 0.
    fn encoder(model: &Self::Model) -> &VisionTransformer<B>;

    /// The mean loss of one micro-batch; `teacher` is the EMA teacher, for a method with one.
    fn loss(
        &self,
        model: &Self::Model,
        teacher: Option<&VisionTransformer<B::InnerBackend>>,
        batch: &DeviceBatch<B>,
    ) -> BatchLoss<B>;

    /// For a method whose targets are pixels: its prediction of every target block of
    /// `batch` from the context, one `[batch, t, patch values]` per block, as pixels of the
    /// model's input (a per-patch normalisation of the targets undone with each true
    /// patch's statistics, as MAE's figures do). `None` for a method whose targets are
    /// features.
    fn predict_pixels(&self, _model: &Self::Model, _batch: &DeviceBatch<B>) -> Option<Vec<Tensor<B, 3>>> {
        None
    }

    /// For a method whose targets are its teacher's features: its prediction of every target
    /// block of `batch` from the context, one `[batch, t, dim]` per block, in the space the
    /// loss compares with [`Method::target_tokens`]. `None` for a method whose targets are
    /// pixels.
    fn predict_features(&self, _model: &Self::Model, _batch: &DeviceBatch<B>) -> Option<Vec<Tensor<B, 3>>> {
        None
    }

    /// The teacher's features of every patch of `images` (`[batch, patches, dim]`), as the
    /// loss compares predictions with them. `None` for a method whose targets are pixels.
    fn target_tokens(
        &self,
        _teacher: &VisionTransformer<B::InnerBackend>,
        _images: Tensor<B::InnerBackend, 4>,
    ) -> Option<Tensor<B::InnerBackend, 3>> {
        None
    }
}

/// How a method is built from its config section.
pub trait MethodSection: MethodInfo + Sized {
    /// The name of the method and of its section.
    const NAME: &'static str;

    /// Reads the section (`None`: absent, every default) and checks it against `encoder`.
    /// Errors name fields within the section; the caller prefixes the section's name.
    fn from_section(section: Option<&toml::Value>, encoder: &VitConfig) -> Result<Self, SectionError>;
}

/// A problem in a method's section: the field within it, and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionError {
    pub field: String,
    pub problem: String,
}

impl SectionError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

/// Deserialises a method's section into its settings (defaults where it is absent).
pub fn read_section<T: serde::de::DeserializeOwned + Default>(
    section: Option<&toml::Value>,
) -> Result<T, SectionError> {
    match section {
        None => Ok(T::default()),
        Some(value) => {
            value.clone().try_into().map_err(|error: toml::de::Error| SectionError::new("", error.message()))
        }
    }
}

/// Serialises a method's settings as its resolved section.
pub fn write_section<T: serde::Serialize>(settings: &T) -> toml::Value {
    toml::Value::try_from(settings).expect("method settings serialise")
}

/// Code generic over every method's backend types, called with the method a run names
/// ([`crate::registry::AnyMethod::visit`]).
pub trait MethodVisitor<B: AutodiffBackend> {
    type Output;
    fn visit<M: Method<B>>(self, method: &M) -> Self::Output;
}

/// The model `on_device` builds, with every parameter drawn from `seed` on the CPU, so it is
/// the same model whichever backend and thread builds it: a run's starting point and the
/// probe's random-init baseline, identical on the CPU, wgpu and CUDA. Models that build
/// their encoder first get the same encoder from the same seed, so every method starts from
/// one random encoder.
///
/// `on_cpu` must build the same module as `on_device` on [`Cpu`] (the constructor is the
/// same generic function, called once per backend): its parameters are drawn there and
/// loaded into `on_device`'s, which are never drawn themselves.
pub fn seeded<B: Backend, M: Module<B>, C: Module<Cpu>>(
    seed: u64,
    device: &B::Device,
    on_cpu: impl FnOnce(&burn::tensor::Device<Cpu>) -> C,
    on_device: impl FnOnce() -> M,
) -> M {
    // The CPU backend keeps one process-wide RNG, and Burn initialises parameters lazily, at
    // first use: seed, draw every parameter and load them into the device's model under one
    // lock, so that no other thread's draws interleave with this one's.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
    let cpu = Default::default();
    Cpu::seed(&cpu, seed);
    let model = on_cpu(&cpu);
    model.visit(&mut Materialize);
    let bytes = Recorder::<Cpu>::record(&recorder, model.into_record(), ()).expect("a model's record serialises");
    let record = Recorder::<B>::load(&recorder, bytes, device).expect("the CPU model has the device model's shape");
    on_device().load_record(record)
}

/// Touches every parameter so its lazy initialiser runs now.
struct Materialize;

impl<B: Backend> burn::module::ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}
