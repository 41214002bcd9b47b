//! The whole evaluation of one run, as `probe all` and `make demo` run it: features for the
//! trained and the random-init encoder, the linear probe and kNN on each, then the report.

use burn::tensor::backend::AutodiffBackend;
use jepa_trainer::{EncoderKind, Run};

use crate::error::Result;
use crate::evaluate::{EvaluateOptions, evaluate_encoder};
use crate::report::{Report, write_report};

/// Features for both encoders, linear probe and kNN on each, then the report.
pub fn evaluate_all<B: AutodiffBackend>(run: &Run, options: &EvaluateOptions, device: &B::Device) -> Result<Report> {
    for encoder in EncoderKind::ALL {
        evaluate_encoder::<B>(run, encoder, options, device)?;
    }
    write_report(run)
}
