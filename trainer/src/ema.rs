//! The target encoder's exponential moving average: θ_target ← m·θ_target + (1 − m)·θ_context
//! on every float parameter, once per optimizer step.
//!
//! The target encoder lives on the plain (non-autodiff) backend, so it never records a
//! graph or holds gradients; the context encoder is read through `.valid()`. Both share
//! one module type, so visiting them walks their parameters in the same order.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Returns `target` moved towards `online` with momentum `momentum`.
pub fn ema_update<B: Backend, M: Module<B>>(target: M, online: &M, momentum: f64) -> M {
    let mut collect = Collect { tensors: Vec::new() };
    online.visit(&mut collect);
    let expected = collect.tensors.len();
    let mut blend = Blend { online: collect.tensors.into_iter(), momentum, used: 0 };
    let updated = target.map(&mut blend);
    assert_eq!(blend.used, expected, "target and online encoders have different parameters");
    updated
}

struct Collect<B: Backend> {
    tensors: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.tensors.push(param.val().flatten(0, D - 1));
    }
}

struct Blend<B: Backend> {
    online: std::vec::IntoIter<Tensor<B, 1>>,
    momentum: f64,
    used: usize,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, target, mapper) = param.consume();
        let online = self.online.next().expect("online encoder has as many parameters").reshape(target.shape());
        self.used += 1;
        let blended = target.mul_scalar(self.momentum) + online.mul_scalar(1.0 - self.momentum);
        Param::from_mapped_value(id, blended, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vit::VitConfig;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn parameters(module: &impl Module<B>) -> Vec<Vec<f32>> {
        let mut collect = Collect::<B> { tensors: Vec::new() };
        module.visit(&mut collect);
        collect.tensors.into_iter().map(|tensor| tensor.into_data().to_vec::<f32>().unwrap()).collect()
    }

    #[test]
    fn every_parameter_becomes_m_target_plus_one_minus_m_online() {
        let device = Default::default();
        let config = VitConfig::preset("nano", 8, 4, 3).unwrap();
        let target = config.init::<B>(&device);
        let online = config.init::<B>(&device);
        let (before, online_values) = (parameters(&target), parameters(&online));
        let momentum = 0.75;
        let after = parameters(&ema_update(target, &online, momentum));
        assert_eq!(after.len(), before.len());
        let mut checked = 0;
        for ((after, before), online) in after.iter().zip(&before).zip(&online_values) {
            for ((a, b), o) in after.iter().zip(before).zip(online) {
                let want = 0.75 * b + 0.25 * o;
                assert!((a - want).abs() <= 1e-6 * want.abs().max(1.0), "{a} != {want}");
                checked += 1;
            }
        }
        // Every weight and bias of the patch embedding, blocks and norms.
        assert!(checked > 10_000, "{checked}");
        // The two inits differ, so the check above compared different numbers.
        assert_ne!(before, online_values);
    }
}
