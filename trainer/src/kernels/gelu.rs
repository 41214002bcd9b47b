//! GELU on the CPU in one pass each way. Burn's backward is the derivative of the tanh
//! approximation (with `powf` and an f64 `tanh`); this one is the derivative of the exact
//! GELU it computes forward, `d/dx x·Φ(x) = Φ(x) + x·φ(x)`, as PyTorch's.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_ndarray::NdArrayTensor;

use super::cpu::{exp, map, zip_map};
use super::{Cpu, CpuAutodiff};

pub(super) fn forward<const D: usize>(tensor: Tensor<Cpu, D>) -> Tensor<Cpu, D> {
    let primitive = tensor.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(map(&primitive, gelu_value)))
}

pub(super) fn autodiff<const D: usize>(tensor: Tensor<CpuAutodiff, D>) -> Tensor<CpuAutodiff, D> {
    let input = tensor.into_primitive().tensor();
    let output = map(&input.primitive, gelu_value);
    let output = match GeluBackward.prepare::<NoCheckpointing>([input.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(input.primitive, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Cpu, 1> for GeluBackward {
    /// The op's input.
    type State = NdArrayTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let input = ops.state;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| zip_map(&input, &grad, gelu_derivative_times))
    }
}

/// `1 / √2`.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1 / √(2π)`, the standard normal density at 0.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `x·Φ(x)`.
#[inline]
fn gelu_value(x: f32) -> f32 {
    let (cdf, _) = normal_cdf_and_density(x);
    x * cdf
}

/// `grad · (Φ(x) + x·φ(x))`.
#[inline]
fn gelu_derivative_times(x: f32, grad: f32) -> f32 {
    let (cdf, density) = normal_cdf_and_density(x);
    grad * (cdf + x * density)
}

/// `Φ(x) = ½(1 + erf(x/√2))` and `φ(x) = exp(−x²/2)/√(2π)`, sharing one `exp`. erf by
/// Abramowitz & Stegun's 7.1.26 (absolute error below 1.5·10⁻⁷, under f32's resolution
/// of Φ near 1).
#[inline]
fn normal_cdf_and_density(x: f32) -> (f32, f32) {
    let gaussian = exp(-0.5 * x * x);
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let polynomial = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let erf_abs = 1.0 - polynomial * gaussian;
    let erf = if x < 0.0 { -erf_abs } else { erf_abs };
    (0.5 * (1.0 + erf), gaussian * FRAC_1_SQRT_2PI)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{TensorData, Tolerance};

    use super::super::gelu;
    use super::*;

    fn inputs() -> Vec<f32> {
        (-600..=600).map(|i| i as f32 / 100.0).collect()
    }

    #[test]
    fn gelu_matches_burns_exact_gelu_on_the_cpu_backend() {
        let device = Default::default();
        let values = inputs();
        let x = Tensor::<Cpu, 1>::from_data(TensorData::new(values.clone(), [values.len()]), &device);
        let ours = gelu(x.clone()).into_data();
        let burns = burn::tensor::activation::gelu(x).into_data();
        ours.assert_approx_eq::<f32>(&burns, Tolerance::rel_abs(4e-7, 3e-7));
    }

    #[test]
    fn gelu_gradient_is_the_exact_derivative() {
        let device = Default::default();
        let values = inputs();
        let x = Tensor::<CpuAutodiff, 1>::from_data(TensorData::new(values.clone(), [values.len()]), &device)
            .require_grad();
        let grads = gelu(x.clone()).sum().backward();
        let got = x.grad(&grads).expect("a gradient").into_data().to_vec::<f32>().unwrap();
        for (x, got) in values.iter().zip(got) {
            // Φ(x) + x·φ(x) in f64.
            let x = f64::from(*x);
            let cdf = 0.5 * (1.0 + reference_erf(x / std::f64::consts::SQRT_2));
            let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let want = cdf + x * density;
            assert!((f64::from(got) - want).abs() < 5e-7, "x = {x}: {got} vs {want}");
        }
    }

    #[test]
    fn other_layouts_get_the_same_values() {
        let device = Default::default();
        // A transposed (non-contiguous) input takes the copying path.
        let x = Tensor::<Cpu, 2>::from_data(TensorData::new(inputs()[..1200].to_vec(), [30, 40]), &device);
        let ours = gelu(x.clone().swap_dims(0, 1)).into_data();
        let burns = burn::tensor::activation::gelu(x.swap_dims(0, 1)).into_data();
        ours.assert_approx_eq::<f32>(&burns, Tolerance::rel_abs(4e-7, 3e-7));
    }

    /// erf in f64 (the standard library has none): its Maclaurin series, good to 1e-12 on
    /// the tested range.
    fn reference_erf(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..400 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
