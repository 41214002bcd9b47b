//! Pixel-space targets, for the methods that predict pixels (MAE, I-JEPA with pixel
//! targets): images cut into patch vectors and back, and MAE's per-patch normalisation.
//!
//! Pixels here are the model's input, already normalised with the dataset's per-channel
//! mean/std, as in MAE's code. A patch's values are ordered row, column, channel.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Added to the variance before the square root, as in MAE's code.
pub const NORM_PIX_EPSILON: f64 = 1e-6;

/// `[batch, channels, size, size]` → `[batch, patches, patch² · channels]`, patches in raster
/// order and each patch's values ordered row, column, channel.
pub fn patchify<B: Backend>(images: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [batch, channels, size, _] = images.dims();
    let grid = size / patch;
    images.reshape([batch, channels, grid, patch, grid, patch]).permute([0, 2, 4, 3, 5, 1]).reshape([
        batch,
        grid * grid,
        patch * patch * channels,
    ])
}

/// The inverse of [`patchify`].
pub fn unpatchify<B: Backend>(patches: Tensor<B, 3>, patch: usize, channels: usize, size: usize) -> Tensor<B, 4> {
    let batch = patches.dims()[0];
    let grid = size / patch;
    patches
        .reshape([batch, grid, grid, patch, patch, channels])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([batch, channels, size, size])
}

/// Each patch (last dimension) minus its mean, over √(unbiased variance + ε): MAE's
/// `norm_pix_loss` target.
pub fn norm_pix<B: Backend>(patches: Tensor<B, 3>) -> Tensor<B, 3> {
    let (variance, mean) = patches.clone().var_mean(2);
    (patches - mean) / (variance + NORM_PIX_EPSILON).sqrt()
}

/// The inverse of [`norm_pix`] for predictions: each predicted patch scaled and shifted by
/// the statistics of its true patch (`truth`, the same shape).
pub fn undo_norm_pix<B: Backend>(predicted: Tensor<B, 3>, truth: Tensor<B, 3>) -> Tensor<B, 3> {
    let (variance, mean) = truth.var_mean(2);
    predicted * (variance + NORM_PIX_EPSILON).sqrt() + mean
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn values<const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
        tensor.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn patches_are_raster_order_with_row_column_channel_values() {
        // One 2-channel 4×4 image: pixel (channel c, row r, col k) = 100c + 10r + k.
        let pixels: Vec<f32> =
            (0..2).flat_map(|c| (0..4).flat_map(move |r| (0..4).map(move |k| (100 * c + 10 * r + k) as f32))).collect();
        let images = tensor(pixels, [1, 2, 4, 4]);
        let patches = patchify(images.clone(), 2);
        assert_eq!(patches.dims(), [1, 4, 8]);
        // Patch 1 is the top-right 2×2: rows 0-1, columns 2-3, channels interleaved.
        let patch = values(patches.clone()).chunks(8).nth(1).unwrap().to_vec();
        assert_eq!(patch, [2.0, 102.0, 3.0, 103.0, 12.0, 112.0, 13.0, 113.0]);
        assert_eq!(values(unpatchify(patches, 2, 2, 4)), values(images));
    }

    #[test]
    fn norm_pix_matches_a_hand_computation() {
        // One patch [1, 2, 3, 6]: mean 3, unbiased variance (4 + 1 + 0 + 9) / 3 = 14/3.
        let normalised = values(norm_pix(tensor(vec![1.0, 2.0, 3.0, 6.0], [1, 1, 4])));
        let scale = (14.0f64 / 3.0 + 1e-6).sqrt();
        for (got, want) in normalised.iter().zip([-2.0, -1.0, 0.0, 3.0]) {
            assert!((f64::from(*got) - want / scale).abs() < 1e-6, "{normalised:?}");
        }
    }

    #[test]
    fn undoing_norm_pix_gives_back_the_patch() {
        let patch = tensor(vec![1.0, 2.0, 3.0, 6.0, 0.5, 0.5, 4.0, -1.0], [1, 2, 4]);
        let back = values(undo_norm_pix(norm_pix(patch.clone()), patch.clone()));
        for (got, want) in back.iter().zip(values(patch)) {
            assert!((got - want).abs() < 1e-5, "{back:?}");
        }
    }
}
