//! I-JEPA's three schedules as pure functions of the **optimizer** step: learning rate
//! (linear warmup, then cosine to a floor), weight decay (from 0.04 up to 0.4, along a
//! cosine as the official code does or a straight line as the seed does) and the EMA
//! momentum of the target encoder (linear from 0.996 to 1.0).
//!
//! The official code keeps them as objects stepped once per optimizer step, which a resumed
//! run must replay; a function of the step makes resume exact and the schedule testable
//! against its closed form. With gradient accumulation, `step` counts optimizer steps, never
//! micro-batches: stepping per micro-batch would run the schedules `accumulation` times
//! too fast.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::config::Ramp;

/// Schedule endpoints. Step counts are optimizer steps; the run config derives them from
/// epochs and the loader's batches per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub lr_start: f64,
    pub lr_peak: f64,
    pub lr_final: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// Weight decay at step 0 and at the last step.
    pub weight_decay: [f64; 2],
    /// How the weight decay goes between them.
    #[serde(default)]
    pub weight_decay_ramp: Ramp,
    /// EMA momentum at step 0 and at the last step, for a method with an EMA teacher.
    pub ema_momentum: Option<[f64; 2]>,
}

impl Schedule {
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            let progress = step as f64 / self.warmup_steps as f64;
            return self.lr_start + progress * (self.lr_peak - self.lr_start);
        }
        let progress = self.progress(step - self.warmup_steps, self.total_steps.saturating_sub(self.warmup_steps));
        self.lr_final + (self.lr_peak - self.lr_final) * 0.5 * (1.0 + (PI * progress).cos())
    }

    /// From `weight_decay[0]` to `weight_decay[1]` over the whole run (it rises), along a
    /// cosine or a straight line.
    pub fn weight_decay_at(&self, step: u64) -> f64 {
        let [first, last] = self.weight_decay;
        let progress = self.progress(step, self.total_steps);
        match self.weight_decay_ramp {
            Ramp::Cosine => last + (first - last) * 0.5 * (1.0 + (PI * progress).cos()),
            Ramp::Linear => first + (last - first) * progress,
        }
    }

    /// Linear from `ema_momentum[0]` to `ema_momentum[1]` over the whole run; `None`
    /// without a teacher.
    pub fn ema_momentum_at(&self, step: u64) -> Option<f64> {
        let [first, last] = self.ema_momentum?;
        Some(first + (last - first) * self.progress(step, self.total_steps))
    }

    /// `step / span`, held at 1 past the end.
    fn progress(&self, step: u64, span: u64) -> f64 {
        if span == 0 { 1.0 } else { (step as f64 / span as f64).min(1.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper() -> Schedule {
        Schedule {
            lr_start: 2e-4,
            lr_peak: 1e-3,
            lr_final: 1e-6,
            warmup_steps: 100,
            total_steps: 1_100,
            weight_decay: [0.04, 0.4],
            weight_decay_ramp: Ramp::Cosine,
            ema_momentum: Some([0.996, 1.0]),
        }
    }

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "{got} != {want}");
    }

    #[test]
    fn lr_warms_up_linearly_then_follows_the_cosine() {
        let schedule = paper();
        close(schedule.lr_at(0), 2e-4);
        close(schedule.lr_at(50), 6e-4); // halfway from 2e-4 to 1e-3
        close(schedule.lr_at(100), 1e-3); // the peak
        // A quarter into the cosine: 1e-6 + (1e-3 - 1e-6)·(1 + cos(π/4))/2.
        close(schedule.lr_at(350), 1e-6 + (1e-3 - 1e-6) * (1.0 + (PI / 4.0).cos()) / 2.0);
        close(schedule.lr_at(600), 1e-6 + (1e-3 - 1e-6) * 0.5); // halfway
        close(schedule.lr_at(1_100), 1e-6);
        close(schedule.lr_at(5_000), 1e-6);
    }

    #[test]
    fn weight_decay_rises_on_a_cosine_from_its_first_to_its_last_value() {
        let schedule = paper();
        close(schedule.weight_decay_at(0), 0.04);
        close(schedule.weight_decay_at(550), 0.22);
        close(schedule.weight_decay_at(275), 0.4 + (0.04 - 0.4) * (1.0 + (PI / 4.0).cos()) / 2.0);
        close(schedule.weight_decay_at(1_100), 0.4);
    }

    #[test]
    fn a_linear_weight_decay_rises_in_a_straight_line() {
        let schedule = Schedule { weight_decay_ramp: Ramp::Linear, ..paper() };
        close(schedule.weight_decay_at(0), 0.04);
        close(schedule.weight_decay_at(275), 0.04 + 0.36 / 4.0);
        close(schedule.weight_decay_at(550), 0.22);
        close(schedule.weight_decay_at(1_100), 0.4);
        close(schedule.weight_decay_at(3_000), 0.4);
    }

    #[test]
    fn ema_momentum_is_linear_in_the_optimizer_step() {
        let schedule = paper();
        let momentum = |step| schedule.ema_momentum_at(step).unwrap();
        close(momentum(0), 0.996);
        close(momentum(275), 0.997);
        close(momentum(1_100), 1.0);
        close(momentum(2_000), 1.0);
        assert_eq!(Schedule { ema_momentum: None, ..paper() }.ema_momentum_at(0), None, "no teacher, no momentum");
    }
}
