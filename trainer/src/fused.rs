//! One-pass CPU kernels for the ops where Burn's composed versions cost the most on the
//! `ndarray` backend, used when the model runs on it (with or without autodiff); every
//! other backend (CUDA with its own fusion) gets Burn's op unchanged.
//!
//! Burn builds GELU from five elementwise ops forward (an `erf` evaluated in f64) and about
//! fifteen backward (the derivative of the tanh approximation, with `powf` and an f64
//! `tanh`), each allocating a tensor. The kernel here is one pass each way, split across
//! the CPU threads, and its backward is the derivative of the exact GELU it computes
//! forward: `d/dx x·Φ(x) = Φ(x) + x·φ(x)`, as PyTorch's.
//!
//! LayerNorm is nine ops forward (two means, a square, a square root, a division, the
//! affine part) and their backward ops; [`layer_norm`] is one pass over each row each way.
//!
//! Attention is the largest: Burn's version (under autodiff it is always the composed
//! fallback) copies queries, keys and values out of the fused projection into head-major
//! layout, runs one small product per batch row and head, and builds the softmax from eight
//! ops; each has a backward op of its own. [`self_attention`] reads queries, keys and
//! values in place from the `[batch, tokens, 3·dim]` projection through strided matrix
//! products, keeps the probabilities for the backward pass, and writes the gradient of the
//! projection directly.
//!
//! The model code stays generic: [`gelu`], [`layer_norm`] and [`self_attention`] recognise
//! the concrete backend by its type and fall back to Burn's ops for any other.

use std::any::Any;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::{Autodiff, NdArray};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use rayon::prelude::*;

type Cpu = NdArray<f32>;
type CpuAutodiff = Autodiff<Cpu, NoCheckpointing>;

/// Elements per task when a kernel splits its work across threads: large enough that the
/// hand-off costs little next to the arithmetic.
const CHUNK: usize = 16 * 1024;

/// The exact (erf) GELU, `x·Φ(x)`, as `burn::tensor::activation::gelu` computes it.
pub fn gelu<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Tensor<B, D> {
    let tensor = match downcast::<_, Tensor<CpuAutodiff, D>>(tensor) {
        Ok(tensor) => return upcast(autodiff_gelu(tensor)),
        Err(tensor) => tensor,
    };
    match downcast::<_, Tensor<Cpu, D>>(tensor) {
        Ok(tensor) => {
            let primitive = tensor.into_primitive().tensor();
            upcast(Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(map(&primitive, gelu_value))))
        }
        Err(tensor) => burn::tensor::activation::gelu(tensor),
    }
}

fn autodiff_gelu<const D: usize>(tensor: Tensor<CpuAutodiff, D>) -> Tensor<CpuAutodiff, D> {
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

/// Multi-head self-attention over a fused projection: `qkv` is `[batch, tokens, 3·dim]`
/// (queries, keys, values side by side, each `heads` heads wide), the result the heads'
/// outputs side by side, `[batch, tokens, dim]`: `softmax(q·kᵀ/√d)·v` per head, no mask.
pub fn self_attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let qkv = match downcast::<_, Tensor<CpuAutodiff, 3>>(qkv) {
        Ok(qkv) => return upcast(autodiff_attention(qkv, heads)),
        Err(qkv) => qkv,
    };
    match downcast::<_, Tensor<Cpu, 3>>(qkv) {
        Ok(qkv) => {
            let shape = Heads::of(&qkv, heads);
            let primitive = qkv.into_primitive().tensor();
            let (output, _) = attention_forward(&values(&primitive), shape, false);
            upcast(Tensor::<Cpu, 3>::from_primitive(TensorPrimitive::Float(output)))
        }
        Err(qkv) => composed_attention(qkv, heads),
    }
}

/// The same attention through Burn's own ops, for every other backend.
pub fn composed_attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let [batch, length, width] = qkv.dims();
    let dim = width / 3;
    let split = |tensor: Tensor<B, 3>| tensor.reshape([batch, length, heads, dim / heads]).swap_dims(1, 2);
    let mut parts = qkv.chunk(3, 2);
    let value = split(parts.pop().expect("v"));
    let key = split(parts.pop().expect("k"));
    let query = split(parts.pop().expect("q"));
    // No mask: every sequence in a batch has the same length. Were one ever passed, `true`
    // means *ignore* in Burn, the opposite of PyTorch's boolean attn_mask.
    let context = attention(query, key, value, None, None, AttentionModuleOptions::default());
    context.swap_dims(1, 2).reshape([batch, length, dim])
}

/// The geometry of one attention call.
#[derive(Debug, Clone, Copy)]
struct Heads {
    batch: usize,
    length: usize,
    dim: usize,
    heads: usize,
}

impl Heads {
    fn of<B: Backend>(qkv: &Tensor<B, 3>, heads: usize) -> Self {
        let [batch, length, width] = qkv.dims();
        assert!(width % 3 == 0 && (width / 3) % heads == 0, "qkv width {width} is not 3 × a multiple of {heads} heads");
        Self { batch, length, dim: width / 3, heads }
    }

    fn head_dim(self) -> usize {
        self.dim / self.heads
    }

    fn scale(self) -> f32 {
        1.0 / (self.head_dim() as f32).sqrt()
    }

    /// Offsets of head `h` of batch row `b`'s queries in `qkv` and in the output.
    fn offsets(self, task: usize) -> (usize, usize) {
        let (b, h) = (task / self.heads, task % self.heads);
        (b * self.length * 3 * self.dim + h * self.head_dim(), b * self.length * self.dim + h * self.head_dim())
    }
}

fn autodiff_attention(qkv: Tensor<CpuAutodiff, 3>, heads: usize) -> Tensor<CpuAutodiff, 3> {
    let shape = Heads::of(&qkv, heads);
    let input = qkv.into_primitive().tensor();
    let tracked =
        AttentionBackward { shape }.prepare::<NoCheckpointing>([input.node.clone()]).compute_bound().stateful();
    let output = match tracked {
        OpsKind::Tracked(prep) => {
            let contiguous = values(&input.primitive).into_owned();
            let (output, probabilities) = attention_forward(&contiguous, shape, true);
            let probabilities = probabilities.expect("kept");
            prep.finish(
                (NdArrayTensor::from_data(TensorData::new(contiguous, input.primitive.shape())), probabilities),
                output,
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(attention_forward(&values(&input.primitive), shape, false).0),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

#[derive(Debug)]
struct AttentionBackward {
    shape: Heads,
}

impl Backward<Cpu, 1> for AttentionBackward {
    /// The projection (contiguous) and the attention probabilities, `[batch·heads, t, t]`.
    type State = (NdArrayTensor, NdArrayTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (qkv, probabilities) = ops.state;
        let shape = self.shape;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| {
            attention_backward(&values(&qkv), &values(&probabilities), &values(&grad), shape)
        })
    }
}

/// A pointer the attention tasks share: each writes its own head's rows and columns only.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: the tasks that share it write disjoint elements (one batch row and head each).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The element `offset` past the start.
    ///
    /// # Safety
    /// `offset` must lie inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: as the caller promises.
        unsafe { self.0.add(offset) }
    }
}

/// `c = alpha·a·b` for row-major views given by pointer and (row, column) strides.
///
/// # Safety
/// The pointers and strides must address `m×k`, `k×n` and `m×n` valid elements, and no
/// other thread may touch `c`'s elements meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    (a, a_rows, a_cols): (*const f32, usize, usize),
    (b, b_rows, b_cols): (*const f32, usize, usize),
    (c, c_rows): (*mut f32, usize),
) {
    // SAFETY: as the caller promises.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a,
            a_rows as isize,
            a_cols as isize,
            b,
            b_rows as isize,
            b_cols as isize,
            0.0,
            c,
            c_rows as isize,
            1,
        )
    }
}

/// The attention output `[batch, t, dim]` and, when `keep` is set, the probabilities.
fn attention_forward(qkv: &[f32], shape: Heads, keep: bool) -> (NdArrayTensor, Option<NdArrayTensor>) {
    let Heads { batch, length, dim, heads } = shape;
    let (head_dim, width) = (shape.head_dim(), 3 * dim);
    let mut output = vec![0f32; batch * length * dim];
    let mut probabilities = vec![0f32; if keep { batch * heads * length * length } else { 0 }];
    let out = Shared(output.as_mut_ptr());
    let kept = Shared(probabilities.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each_init(
        || vec![0f32; length * length],
        |scratch, task| {
            let (input, output) = shape.offsets(task);
            let scores: *mut f32 = if keep {
                // SAFETY: task's own `length²` block of the probabilities.
                unsafe { kept.at(task * length * length) }
            } else {
                scratch.as_mut_ptr()
            };
            let (query, key, value) =
                (qkv[input..].as_ptr(), qkv[input + dim..].as_ptr(), qkv[input + 2 * dim..].as_ptr());
            // SAFETY: every view lies inside `qkv`, `scores` or this task's columns of `out`.
            unsafe {
                product(
                    (length, head_dim, length),
                    shape.scale(),
                    (query, width, 1),
                    (key, 1, width),
                    (scores, length),
                );
                let probabilities = std::slice::from_raw_parts_mut(scores, length * length);
                wide(|| softmax_rows(probabilities, length));
                product((length, length, head_dim), 1.0, (scores, length, 1), (value, width, 1), (out.at(output), dim));
            }
        },
    );
    let probabilities =
        keep.then(|| NdArrayTensor::from_data(TensorData::new(probabilities, [batch * heads, length, length])));
    (NdArrayTensor::from_data(TensorData::new(output, [batch, length, dim])), probabilities)
}

/// Each row of `scores` (`length` wide) replaced by its softmax.
fn softmax_rows(scores: &mut [f32], length: usize) {
    for row in scores.chunks_exact_mut(length) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for score in row.iter_mut() {
            *score = exp(*score - max);
            sum += *score;
        }
        let inverse = 1.0 / sum;
        row.iter_mut().for_each(|score| *score *= inverse);
    }
}

/// The gradient of the projection, `[batch, t, 3·dim]`, from the output's.
fn attention_backward(qkv: &[f32], probabilities: &[f32], grad: &[f32], shape: Heads) -> NdArrayTensor {
    let Heads { batch, length, dim, heads } = shape;
    let (head_dim, width, scale) = (shape.head_dim(), 3 * dim, shape.scale());
    let mut grad_qkv = vec![0f32; batch * length * width];
    let out = Shared(grad_qkv.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each_init(
        || vec![0f32; length * length],
        |grad_scores, task| {
            let (input, output) = shape.offsets(task);
            let p = &probabilities[task * length * length..(task + 1) * length * length];
            let (query, key, value) =
                (qkv[input..].as_ptr(), qkv[input + dim..].as_ptr(), qkv[input + 2 * dim..].as_ptr());
            let grad_out = grad[output..].as_ptr();
            // SAFETY: reads lie inside the inputs; writes inside `grad_scores` or this
            // task's columns of the three parts of `out`.
            unsafe {
                let (grad_query, grad_key, grad_value) = (out.at(input), out.at(input + dim), out.at(input + 2 * dim));
                // dV = Pᵀ·dO
                product(
                    (length, length, head_dim),
                    1.0,
                    (p.as_ptr(), 1, length),
                    (grad_out, dim, 1),
                    (grad_value, width),
                );
                // dP = dO·Vᵀ
                product(
                    (length, head_dim, length),
                    1.0,
                    (grad_out, dim, 1),
                    (value, 1, width),
                    (grad_scores.as_mut_ptr(), length),
                );
                // dS = P ∘ (dP − rowsum(dP ∘ P))
                for (grad_row, p_row) in grad_scores.chunks_exact_mut(length).zip(p.chunks_exact(length)) {
                    let dot: f32 = grad_row.iter().zip(p_row).map(|(g, p)| g * p).sum();
                    grad_row.iter_mut().zip(p_row).for_each(|(g, p)| *g = p * (*g - dot));
                }
                // dQ = dS·K·scale, dK = dSᵀ·Q·scale
                product(
                    (length, length, head_dim),
                    scale,
                    (grad_scores.as_ptr(), length, 1),
                    (key, width, 1),
                    (grad_query, width),
                );
                product(
                    (length, length, head_dim),
                    scale,
                    (grad_scores.as_ptr(), 1, length),
                    (query, width, 1),
                    (grad_key, width),
                );
            }
        },
    );
    NdArrayTensor::from_data(TensorData::new(grad_qkv, [batch, length, width]))
}

/// `norm` over the last dimension of `tokens` with epsilon `epsilon` (the module's own,
/// which Burn keeps private): `(x − mean) / √(var + ε) · γ + β`, the biased variance.
pub fn layer_norm<B: Backend, const D: usize>(norm: &LayerNorm<B>, tokens: Tensor<B, D>, epsilon: f64) -> Tensor<B, D> {
    let Some(beta) = norm.beta.as_ref() else {
        return norm.forward(tokens);
    };
    let (gamma, beta) = (norm.gamma.val(), beta.val());
    let tokens = match downcast::<_, Tensor<CpuAutodiff, D>>(tokens) {
        Ok(tokens) => return upcast(autodiff_layer_norm(tokens, upcast(gamma), upcast(beta), epsilon as f32)),
        Err(tokens) => tokens,
    };
    match downcast::<_, Tensor<Cpu, D>>(tokens) {
        Ok(tokens) => {
            let (gamma, beta) = (primitive::<Cpu, 1>(upcast(gamma)), primitive::<Cpu, 1>(upcast(beta)));
            let input = primitive(tokens);
            let (output, _) = layer_norm_forward(&input, &values(&gamma), &values(&beta), epsilon as f32, false);
            upcast(Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(output)))
        }
        Err(tokens) => norm.forward(tokens),
    }
}

fn primitive<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> B::FloatTensorPrimitive {
    tensor.into_primitive().tensor()
}

fn autodiff_layer_norm<const D: usize>(
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

/// `e^x` in f32 without a library call, so that loops over it vectorise: `x = n·ln 2 + r`
/// with `|r| ≤ ln 2 / 2`, `e^r` by its Taylor polynomial to degree 7 (relative error below
/// 10⁻⁸, under f32's resolution), and `2^n` built in the exponent bits. Inputs are clamped
/// to where the result is a normal f32.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN_2_HIGH: f32 = 0.693_145_75;
    const LN_2_LOW: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer in any SIMD width.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN_2_HIGH - n * LN_2_LOW;
    let polynomial = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    polynomial * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Runs `work` compiled for AVX2 and FMA when the CPU has them (most x86-64 CPUs of the
/// last decade; the build itself targets the SSE2 baseline), so its loops run 8 lanes wide.
#[inline(always)]
fn wide<R>(work: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn with_avx2<R>(work: impl FnOnce() -> R) -> R {
            work()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { with_avx2(work) };
        }
    }
    work()
}

/// `f` on every element of an f32 tensor, into a new tensor of its shape.
fn map(tensor: &NdArrayTensor, f: impl Fn(f32) -> f32 + Sync) -> NdArrayTensor {
    let input = values(tensor);
    let mut output = vec![0f32; input.len()];
    output.par_chunks_mut(CHUNK).zip(input.par_chunks(CHUNK)).for_each(|(output, input)| {
        wide(|| {
            for (out, &x) in output.iter_mut().zip(input) {
                *out = f(x);
            }
        })
    });
    NdArrayTensor::from_data(TensorData::new(output, tensor.shape()))
}

/// `f(a, b)` element by element over two f32 tensors of one shape.
fn zip_map(a: &NdArrayTensor, b: &NdArrayTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> NdArrayTensor {
    assert_eq!(a.shape(), b.shape(), "element-wise kernel on tensors of different shapes");
    let (a_values, b_values) = (values(a), values(b));
    let mut output = vec![0f32; a_values.len()];
    output.par_chunks_mut(CHUNK).zip(a_values.par_chunks(CHUNK).zip(b_values.par_chunks(CHUNK))).for_each(
        |(output, (a, b))| {
            wide(|| {
                for ((out, &x), &y) in output.iter_mut().zip(a).zip(b) {
                    *out = f(x, y);
                }
            })
        },
    );
    NdArrayTensor::from_data(TensorData::new(output, a.shape()))
}

/// The values of an f32 tensor in row-major order: borrowed when they are laid out so,
/// copied otherwise.
fn values(tensor: &NdArrayTensor) -> std::borrow::Cow<'_, [f32]> {
    let NdArrayTensor::F32(storage) = tensor else {
        panic!("the CPU kernels take f32 tensors, got {:?}", tensor.dtype());
    };
    let view = storage.view();
    match view.to_slice() {
        Some(slice) => std::borrow::Cow::Borrowed(slice),
        None => std::borrow::Cow::Owned(view.iter().copied().collect()),
    }
}

/// `value` as a `U` when that is its type.
fn downcast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(found) => Ok(found.take().expect("just filled")),
        None => Err(slot.expect("not taken")),
    }
}

/// The inverse of [`downcast`], for a value whose type is known to be `U`.
fn upcast<T: 'static, U: 'static>(value: T) -> U {
    downcast(value).unwrap_or_else(|_| unreachable!("upcast to the type the value was downcast from"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    fn inputs() -> Vec<f32> {
        (-600..=600).map(|i| i as f32 / 100.0).collect()
    }

    #[test]
    fn exp_is_within_two_ulps_of_the_standard_library() {
        for i in -8_690..=8_790 {
            let x = i as f32 / 100.0 + 0.003;
            let (ours, std) = (exp(x), x.exp());
            assert!(((ours - std) / std).abs() < 2.5e-7, "e^{x}: {ours} vs {std}");
        }
        assert!(exp(-1e4) >= 0.0 && exp(-1e4) < 1e-37 && exp(1e4).is_finite());
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
    fn other_backends_and_layouts_get_the_same_values() {
        let device = Default::default();
        // A transposed (non-contiguous) input takes the copying path.
        let x = Tensor::<Cpu, 2>::from_data(TensorData::new(inputs()[..1200].to_vec(), [30, 40]), &device);
        let ours = gelu(x.clone().swap_dims(0, 1)).into_data();
        let burns = burn::tensor::activation::gelu(x.swap_dims(0, 1)).into_data();
        ours.assert_approx_eq::<f32>(&burns, Tolerance::rel_abs(4e-7, 3e-7));
    }

    fn random(shape: [usize; 3], seed: u64) -> TensorData {
        let mut rng = jepa_shared::rng::KeyedRng::new(&[seed]);
        let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
        TensorData::new(values, shape)
    }

    /// `Σ upstream ∘ attention(qkv)` in f64, by the definition, one score at a time.
    fn reference_attention_loss(qkv: &[f64], upstream: &[f64], [batch, length, dim, heads]: [usize; 4]) -> f64 {
        let head_dim = dim / heads;
        let at = |b: usize, t: usize, part: usize, h: usize, d: usize| {
            qkv[(b * length + t) * 3 * dim + part * dim + h * head_dim + d]
        };
        let mut total = 0.0;
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..length {
                    let scores: Vec<f64> = (0..length)
                        .map(|j| {
                            (0..head_dim).map(|d| at(b, i, 0, h, d) * at(b, j, 1, h, d)).sum::<f64>()
                                / (head_dim as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::MIN, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|score| (score - max).exp()).collect();
                    let sum: f64 = weights.iter().sum();
                    for d in 0..head_dim {
                        let output: f64 = (0..length).map(|j| weights[j] / sum * at(b, j, 2, h, d)).sum();
                        total += output * upstream[(b * length + i) * dim + h * head_dim + d];
                    }
                }
            }
        }
        total
    }

    #[test]
    fn attention_matches_the_definition_forward_and_backward() {
        let device = Default::default();
        let (batch, length, dim, heads) = (3, 7, 12, 3);
        let qkv = random([batch, length, 3 * dim], 1);
        let upstream = random([batch, length, dim], 2);
        let x = Tensor::<CpuAutodiff, 3>::from_data(qkv.clone(), &device).require_grad();
        let output = self_attention(x.clone(), heads);
        // A weighted sum, so every output element gets its own upstream gradient.
        let loss = (output.clone() * Tensor::from_data(upstream.clone(), &device)).sum();
        let grad = x.grad(&loss.backward()).expect("a gradient").into_data().to_vec::<f32>().unwrap();

        // Forward: Burn's own attention.
        let composed = composed_attention(Tensor::<Cpu, 3>::from_data(qkv.clone(), &device), heads).into_data();
        output.into_data().assert_approx_eq::<f32>(&composed, Tolerance::rel_abs(1e-5, 1e-6));
        let plain = self_attention(Tensor::<Cpu, 3>::from_data(qkv.clone(), &device), heads).into_data();
        plain.assert_approx_eq::<f32>(&composed, Tolerance::rel_abs(1e-5, 1e-6));

        // Backward: central differences of the definition in f64, for every input.
        let values: Vec<f64> = qkv.to_vec::<f32>().unwrap().into_iter().map(f64::from).collect();
        let upstream: Vec<f64> = upstream.to_vec::<f32>().unwrap().into_iter().map(f64::from).collect();
        let shape = [batch, length, dim, heads];
        for (index, got) in grad.iter().enumerate() {
            let (mut up, mut down) = (values.clone(), values.clone());
            up[index] += 1e-5;
            down[index] -= 1e-5;
            let want = (reference_attention_loss(&up, &upstream, shape)
                - reference_attention_loss(&down, &upstream, shape))
                / 2e-5;
            assert!((f64::from(*got) - want).abs() < 2e-5, "input {index}: {got} vs {want}");
        }

        // One value element changes only its own output column, in its own batch row.
        let mut changed = qkv.to_vec::<f32>().unwrap();
        changed[2 * dim + 1] += 1.0; // batch row 0, token 0, value of head 0, column 1
        let changed = TensorData::new(changed, [batch, length, 3 * dim]);
        let changed = self_attention(Tensor::<Cpu, 3>::from_data(changed, &device), heads);
        let difference = (changed - Tensor::from_data(plain, &device)).abs().sum_dim(1);
        let difference = difference.into_data().to_vec::<f32>().unwrap();
        for (column, moved) in difference[..dim].iter().enumerate() {
            assert_eq!(*moved > 0.0, column == 1, "column {column} moved by {moved}");
        }
        assert!(difference[dim..].iter().all(|moved| *moved == 0.0), "other batch rows moved");
    }

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
