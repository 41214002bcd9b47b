//! The ops a ViT block spends its time in (GELU, LayerNorm, self-attention), each in two
//! implementations: one-pass CPU kernels of ours for Burn's `ndarray` backend, with or
//! without autodiff, and Burn's own ops for every other backend (wgpu and CUDA, whose
//! kernel fusion does this job there).
//!
//! The choice is made in one place, [`route`]: the model code calls [`gelu`],
//! [`layer_norm`] and [`self_attention`] generically, and each asks `route` whether its
//! tensor lives on the CPU backend. Nothing outside this module tests a backend's type.
//!
//! Why the CPU needs kernels of its own: Burn builds GELU from five elementwise ops forward
//! and about fifteen backward, LayerNorm from nine, and attention (under autodiff always the
//! composed fallback) from head-major copies, one small product per batch row and head, and
//! an eight-op softmax, each allocating a tensor and each with a backward op of its own. The
//! kernels here do each op in one pass each way, split across the CPU threads:
//! - [`gelu`](mod@gelu): the exact GELU and its exact derivative;
//! - [`layer_norm`](mod@layer_norm): one pass over each row each way;
//! - [`attention`]: queries, keys and values read in place from the fused projection through
//!   strided products, and the projection's gradient written directly;
//! - [`cpu`]: what they share (element-wise maps, a vectorisable `exp`, AVX2 dispatch).

mod attention;
mod cpu;
mod gelu;
mod layer_norm;

use std::any::Any;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, NdArray};
use burn::nn::LayerNorm;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

pub use attention::composed_attention;

/// The backend our kernels run on.
type Cpu = NdArray<f32>;
/// [`Cpu`] under autodiff, as training runs it.
type CpuAutodiff = Autodiff<Cpu, NoCheckpointing>;

/// Where an op on a tensor of backend `B` runs: on our kernels when `B` is the CPU backend,
/// plain or under autodiff, else through Burn's ops.
enum Route<B: Backend, const D: usize> {
    Cpu(Tensor<Cpu, D>),
    CpuAutodiff(Tensor<CpuAutodiff, D>),
    Burn(Tensor<B, D>),
}

/// The one test of a backend's type in the code base.
fn route<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Route<B, D> {
    let tensor = match downcast::<_, Tensor<CpuAutodiff, D>>(tensor) {
        Ok(tensor) => return Route::CpuAutodiff(tensor),
        Err(tensor) => tensor,
    };
    match downcast::<_, Tensor<Cpu, D>>(tensor) {
        Ok(tensor) => Route::Cpu(tensor),
        Err(tensor) => Route::Burn(tensor),
    }
}

/// Whether backend `B` runs the CPU kernels of this module (else Burn's ops).
pub fn uses_cpu_kernels<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<Cpu>()
        || std::any::TypeId::of::<B>() == std::any::TypeId::of::<CpuAutodiff>()
}

/// The exact (erf) GELU, `x·Φ(x)`, as `burn::tensor::activation::gelu` computes it.
pub fn gelu<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Tensor<B, D> {
    match route(tensor) {
        Route::Cpu(tensor) => upcast(gelu::forward(tensor)),
        Route::CpuAutodiff(tensor) => upcast(gelu::autodiff(tensor)),
        Route::Burn(tensor) => burn::tensor::activation::gelu(tensor),
    }
}

/// `norm` over the last dimension of `tokens` with epsilon `epsilon` (the module's own,
/// which Burn keeps private): `(x − mean) / √(var + ε) · γ + β`, the biased variance.
pub fn layer_norm<B: Backend, const D: usize>(norm: &LayerNorm<B>, tokens: Tensor<B, D>, epsilon: f64) -> Tensor<B, D> {
    let Some(beta) = norm.beta.as_ref() else {
        return norm.forward(tokens);
    };
    let (gamma, beta) = (norm.gamma.val(), beta.val());
    let epsilon = epsilon as f32;
    match route(tokens) {
        Route::Cpu(tokens) => upcast(layer_norm::forward(tokens, upcast(gamma), upcast(beta), epsilon)),
        Route::CpuAutodiff(tokens) => upcast(layer_norm::autodiff(tokens, upcast(gamma), upcast(beta), epsilon)),
        Route::Burn(tokens) => norm.forward(tokens),
    }
}

/// Multi-head self-attention over a fused projection: `qkv` is `[batch, tokens, 3·dim]`
/// (queries, keys, values side by side, each `heads` heads wide), the result the heads'
/// outputs side by side, `[batch, tokens, dim]`: `softmax(q·kᵀ/√d)·v` per head, no mask.
pub fn self_attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    match route(qkv) {
        Route::Cpu(qkv) => upcast(attention::forward(qkv, heads)),
        Route::CpuAutodiff(qkv) => upcast(attention::autodiff(qkv, heads)),
        Route::Burn(qkv) => composed_attention(qkv, heads),
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

/// A value of a type [`route`] found to be `U`, as a `U` (the result of a kernel going back
/// to the caller's backend, or a parameter coming to the kernel's).
fn upcast<T: 'static, U: 'static>(value: T) -> U {
    downcast(value).unwrap_or_else(|_| unreachable!("upcast between the types `route` matched"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cpu_backend_takes_the_cpu_kernels() {
        assert!(uses_cpu_kernels::<Cpu>());
        assert!(uses_cpu_kernels::<CpuAutodiff>());
        assert!(uses_cpu_kernels::<Autodiff<Cpu>>(), "the default autodiff is the one training uses");
        assert!(!uses_cpu_kernels::<NdArray<f64>>());
        assert!(matches!(route(Tensor::<NdArray<f64>, 1>::zeros([2], &Default::default())), Route::Burn(_)));
    }
}
