//! LayerNorm on the CPU: one pass over each row forward (mean, biased variance, the affine
//! part) and one backward, where Burn composes nine ops and their backward ops.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use rayon::prelude::*;

use super::cpu::{CHUNK, values, wide};
use super::{Cpu, CpuAutodiff};

pub(super) fn forward<const D: usize>(
    tokens: Tensor<Cpu, D>,
    gamma: Tensor<Cpu, 1>,
    beta: Tensor<Cpu, 1>,
    epsilon: f32,
) -> Tensor<Cpu, D> {
    let (gamma, beta) = (primitive(gamma), primitive(beta));
    let (output, _) = layer_norm_forward(&primitive(tokens), &values(&gamma), &values(&beta), epsilon, false);
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

fn primitive<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> B::FloatTensorPrimitive {
    tensor.into_primitive().tensor()
}

pub(super) fn autodiff<const D: usize>(
    tokens: Tensor<CpuAutodiff, D>,
    gamma: Tensor<CpuAutodiff, 1>,
    beta: Tensor<CpuAutodiff, 1>,
    epsilon: f32,
) -> Tensor<CpuAutodiff, D> {
    let (input, gamma, beta) = (primitive(tokens), primitive(gamma), primitive(beta));
    let nodes = [input.node.clone(), gamma.node.clone(), beta.node.clone()];
    let gamma_values = values(&gamma.primitive);
    let beta_values = values(&beta.primitive);
    let output = match LayerNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (output, saved) = layer_norm_forward(&input.primitive, &gamma_values, &beta_values, epsilon, true);
            let (normalised, inverse_std) = saved.expect("kept");
            prep.finish((normalised, inverse_std, gamma_values.into_owned()), output)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(layer_norm_forward(&input.primitive, &gamma_values, &beta_values, epsilon, false).0)
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Cpu, 3> for LayerNormBackward {
    /// The normalised input `x̂` (row-major, `[rows, width]` flattened), `1/√(var + ε)` per
    /// row, and γ.
    type State = (Vec<f32>, Vec<f32>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (normalised, inverse_std, gamma) = ops.state;
        let grad = grads.consume::<Cpu>(&ops.node);
        let shape = grad.shape();
        let width = gamma.len();
        let upstream = values(&grad);
        let rows = upstream.len() / width;
        let mut grad_input = vec![0f32; upstream.len()];
        // Per chunk of rows: dx, and partial sums of dγ = Σ dy·x̂ and dβ = Σ dy.
        let rows_per_chunk = (CHUNK / width).max(1);
        let partials: Vec<(Vec<f32>, Vec<f32>)> = grad_input
            .par_chunks_mut(rows_per_chunk * width)
            .enumerate()
            .map(|(chunk, grad_input)| {
                wide(|| {
                    let mut grad_gamma = vec![0f32; width];
                    let mut grad_beta = vec![0f32; width];
                    let first = chunk * rows_per_chunk;
                    for (offset, grad_row) in grad_input.chunks_exact_mut(width).enumerate() {
                        let row = first + offset;
                        let dy = &upstream[row * width..(row + 1) * width];
                        let x_hat = &normalised[row * width..(row + 1) * width];
                        let (mut mean_g, mut mean_gx) = (0f32, 0f32);
                        for i in 0..width {
                            let g = dy[i] * gamma[i];
                            mean_g += g;
                            mean_gx += g * x_hat[i];
                            grad_gamma[i] += dy[i] * x_hat[i];
                            grad_beta[i] += dy[i];
                        }
                        let (mean_g, mean_gx) = (mean_g / width as f32, mean_gx / width as f32);
                        for i in 0..width {
                            grad_row[i] = inverse_std[row] * (dy[i] * gamma[i] - mean_g - x_hat[i] * mean_gx);
                        }
                    }
                    (grad_gamma, grad_beta)
                })
            })
            .collect();
        debug_assert_eq!(rows, normalised.len() / width);
        let mut grad_gamma = vec![0f32; width];
        let mut grad_beta = vec![0f32; width];
        for (gamma_part, beta_part) in &partials {
            grad_gamma.iter_mut().zip(gamma_part).for_each(|(total, part)| *total += part);
            grad_beta.iter_mut().zip(beta_part).for_each(|(total, part)| *total += part);
        }
        let [input, gamma_node, beta_node] = ops.parents;
        let results = [
            (input, NdArrayTensor::from_data(TensorData::new(grad_input, shape))),
            (gamma_node, NdArrayTensor::from_data(TensorData::new(grad_gamma, [width]))),
            (beta_node, NdArrayTensor::from_data(TensorData::new(grad_beta, [width]))),
        ];
        for (node, value) in results {
            if let Some(node) = node {
                grads.register::<Cpu>(node.id, value);
            }
        }
    }
}

/// The normalised rows, scaled and shifted; with `keep`, also `x̂` and `1/√(var + ε)`.
#[allow(clippy::type_complexity)]
fn layer_norm_forward(
    input: &NdArrayTensor,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    keep: bool,
) -> (NdArrayTensor, Option<(Vec<f32>, Vec<f32>)>) {
    let width = gamma.len();
    let x = values(input);
    let rows = x.len() / width;
    let mut output = vec![0f32; x.len()];
    let mut normalised = vec![0f32; if keep { x.len() } else { 0 }];
    let mut inverse_std = vec![0f32; rows];
    let rows_per_chunk = (CHUNK / width).max(1);
    let normalise = |(chunk, (output, inverse_std)): (usize, (&mut [f32], &mut [f32])),
                     normalised: Option<&mut [f32]>| {
        wide(|| {
            let first = chunk * rows_per_chunk;
            let mut normalised = normalised;
            for (offset, (out_row, inverse)) in output.chunks_exact_mut(width).zip(inverse_std.iter_mut()).enumerate() {
                let row = &x[(first + offset) * width..(first + offset + 1) * width];
                let mean = row.iter().sum::<f32>() / width as f32;
                let variance = row.iter().map(|value| (value - mean) * (value - mean)).sum::<f32>() / width as f32;
                *inverse = 1.0 / (variance + epsilon).sqrt();
                for i in 0..width {
                    let x_hat = (row[i] - mean) * *inverse;
                    out_row[i] = x_hat * gamma[i] + beta[i];
                    if let Some(normalised) = normalised.as_deref_mut() {
                        normalised[offset * width + i] = x_hat;
                    }
                }
            }
        })
    };
    let chunks =
        output.par_chunks_mut(rows_per_chunk * width).zip(inverse_std.par_chunks_mut(rows_per_chunk)).enumerate();
    if keep {
        chunks
            .zip(normalised.par_chunks_mut(rows_per_chunk * width))
            .for_each(|(item, kept)| normalise(item, Some(kept)));
    } else {
        chunks.for_each(|item| normalise(item, None));
    }
    let output = NdArrayTensor::from_data(TensorData::new(output, input.shape()));
    (output, keep.then_some((normalised, inverse_std)))
}

#[cfg(test)]
mod tests {
    use burn::tensor::Tolerance;

    use super::super::cpu::random;
    use super::super::layer_norm;
    use super::*;

    #[test]
    fn layer_norm_matches_burns_forward_and_backward() {
        let device = Default::default();
        let (rows, width) = (5, 24);
        let input = random([1, rows, width], 3);
        let upstream = random([1, rows, width], 4);
        let run = |fused: bool| {
            let mut norm = burn::nn::LayerNormConfig::new(width).with_epsilon(1e-6).init::<CpuAutodiff>(&device);
            // A non-trivial affine part, so its gradients and use are checked too.
            let affine = random([1, 1, width], 5).to_vec::<f32>().unwrap();
            norm.gamma =
                burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(affine.clone(), [width]), &device));
            norm.beta = Some(burn::module::Param::from_tensor(Tensor::from_data(
                TensorData::new(affine.iter().map(|v| v * 0.5).collect::<Vec<f32>>(), [width]),
                &device,
            )));
            let x = Tensor::<CpuAutodiff, 3>::from_data(input.clone(), &device).require_grad();
            let output = if fused { layer_norm(&norm, x.clone(), 1e-6) } else { norm.forward(x.clone()) };
            let grads = (output.clone() * Tensor::from_data(upstream.clone(), &device)).sum().backward();
            let gamma = norm.gamma.grad(&grads).expect("dγ").into_data();
            let beta = norm.beta.as_ref().unwrap().grad(&grads).expect("dβ").into_data();
            (output.into_data(), x.grad(&grads).expect("dx").into_data(), gamma, beta)
        };
        let fused = run(true);
        let burns = run(false);
        let tolerance = Tolerance::rel_abs(1e-5, 1e-6);
        fused.0.assert_approx_eq::<f32>(&burns.0, tolerance);
        fused.1.assert_approx_eq::<f32>(&burns.1, Tolerance::rel_abs(1e-4, 1e-5));
        fused.2.assert_approx_eq::<f32>(&burns.2, tolerance);
        fused.3.assert_approx_eq::<f32>(&burns.3, tolerance);
    }
}
