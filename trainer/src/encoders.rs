//! Which encoder, in one vocabulary for the trainer and the probe alike.
//!
//! - [`EncoderRole`]: one of a method's own encoders, by its role in training: the encoder
//!   the optimizer trains, or the EMA teacher that follows it. A method names the role its
//!   results are about ([`crate::method::MethodInfo::evaluated`]).
//! - [`CheckpointPart`]: one file of a checkpoint; each role's encoder lives in the part of
//!   the same name.
//! - [`EncoderKind`]: which encoder a result row is about: the run's evaluated encoder
//!   (`pretrained`), its other trained encoder (`context`), or a baseline.

use std::fmt;

/// One of a method's encoders, by its role in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncoderRole {
    /// The EMA teacher (I-JEPA's target encoder), for a method that keeps one.
    #[value(alias = "target")]
    Teacher,
    /// The encoder the optimizer trains (I-JEPA's context encoder, MAE's encoder).
    #[value(alias = "context")]
    Trained,
}

impl EncoderRole {
    pub fn as_str(self) -> &'static str {
        match self {
            EncoderRole::Teacher => "teacher",
            EncoderRole::Trained => "trained",
        }
    }

    /// The checkpoint part that holds this role's encoder.
    pub fn part(self) -> CheckpointPart {
        match self {
            EncoderRole::Teacher => CheckpointPart::Teacher,
            EncoderRole::Trained => CheckpointPart::Trained,
        }
    }
}

impl fmt::Display for EncoderRole {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One part of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointPart {
    /// What the optimizer trains (I-JEPA: context encoder + predictor; MAE: encoder + decoder).
    Trained,
    /// The EMA teacher, for a method that keeps one.
    Teacher,
    /// Adam's moments.
    Optimizer,
}

/// Which encoder a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum EncoderKind {
    /// The encoder the run's method evaluates, from a checkpoint (I-JEPA's EMA target
    /// encoder, MAE's encoder).
    Pretrained,
    /// The encoder the optimizer trained, from the same checkpoint, for a method that
    /// evaluates its EMA teacher instead (I-JEPA's context encoder).
    Context,
    /// The same config, initialised from the run's seed and never trained.
    Random,
    /// No encoder: the image's standardised pixels are its features.
    Pixels,
}

impl EncoderKind {
    pub const ALL: [EncoderKind; 4] =
        [EncoderKind::Pretrained, EncoderKind::Context, EncoderKind::Random, EncoderKind::Pixels];

    pub fn as_str(self) -> &'static str {
        match self {
            EncoderKind::Pretrained => "pretrained",
            EncoderKind::Context => "context",
            EncoderKind::Random => "random",
            EncoderKind::Pixels => "pixels",
        }
    }

    /// The baselines: what a pretrained encoder has to beat.
    pub fn is_baseline(self) -> bool {
        matches!(self, EncoderKind::Random | EncoderKind::Pixels)
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}
