//! Multi-head self-attention over the fused `[batch, tokens, 3·dim]` projection: on the CPU,
//! queries, keys and values are read in place through strided matrix products (no head-major
//! copies), the softmax probabilities are kept for the backward pass, and the gradient of the
//! projection is written directly; every other backend composes Burn's ops
//! ([`composed_attention`]).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use rayon::prelude::*;

use super::cpu::{exp, values, wide};
use super::{Cpu, CpuAutodiff};

pub(super) fn forward(qkv: Tensor<Cpu, 3>, heads: usize) -> Tensor<Cpu, 3> {
    let shape = Heads::of(&qkv, heads);
    let primitive = qkv.into_primitive().tensor();
    let (output, _) = attention_forward(&values(&primitive), shape, false);
    Tensor::from_primitive(TensorPrimitive::Float(output))
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

pub(super) fn autodiff(qkv: Tensor<CpuAutodiff, 3>, heads: usize) -> Tensor<CpuAutodiff, 3> {
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

#[cfg(test)]
mod tests {
    use burn::tensor::Tolerance;

    use super::super::cpu::random;
    use super::super::self_attention;
    use super::*;

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
}
