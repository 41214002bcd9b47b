//! What the CPU kernels share: the task size for splitting work across threads, element-wise
//! maps, a vectorisable `exp`, AVX2 dispatch, and reading a tensor's values in row-major order.

use burn::tensor::{TensorData, TensorMetadata};
use burn_ndarray::NdArrayTensor;
use rayon::prelude::*;

/// Elements per task when a kernel splits its work across threads: large enough that the
/// hand-off costs little next to the arithmetic.
pub(super) const CHUNK: usize = 16 * 1024;

/// `e^x` in f32 without a library call, so that loops over it vectorise: `x = n·ln 2 + r`
/// with `|r| ≤ ln 2 / 2`, `e^r` by its Taylor polynomial to degree 7 (relative error below
/// 10⁻⁸, under f32's resolution), and `2^n` built in the exponent bits. Inputs are clamped
/// to where the result is a normal f32.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
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
pub(super) fn wide<R>(work: impl FnOnce() -> R) -> R {
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
pub(super) fn map(tensor: &NdArrayTensor, f: impl Fn(f32) -> f32 + Sync) -> NdArrayTensor {
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
pub(super) fn zip_map(a: &NdArrayTensor, b: &NdArrayTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> NdArrayTensor {
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
pub(super) fn values(tensor: &NdArrayTensor) -> std::borrow::Cow<'_, [f32]> {
    let NdArrayTensor::F32(storage) = tensor else {
        panic!("the CPU kernels take f32 tensors, got {:?}", tensor.dtype());
    };
    let view = storage.view();
    match view.to_slice() {
        Some(slice) => std::borrow::Cow::Borrowed(slice),
        None => std::borrow::Cow::Owned(view.iter().copied().collect()),
    }
}

/// Uniform values in [−2, 2) from `seed`, for the kernels' tests.
#[cfg(test)]
pub(super) fn random(shape: [usize; 3], seed: u64) -> TensorData {
    let mut rng = jepa_shared::rng::KeyedRng::new(&[seed]);
    let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
    TensorData::new(values, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_of_the_standard_library() {
        for i in -8_690..=8_790 {
            let x = i as f32 / 100.0 + 0.003;
            let (ours, std) = (exp(x), x.exp());
            assert!(((ours - std) / std).abs() < 2.5e-7, "e^{x}: {ours} vs {std}");
        }
        assert!(exp(-1e4) >= 0.0 && exp(-1e4) < 1e-37 && exp(1e4).is_finite());
    }
}
