//! A loader batch on the device: normalised images and the mask indices as tensors.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use jepa_shared::{Batch, BatchMasks};

use crate::vit::normalize_pixels;

/// One loader batch on the device.
#[derive(Debug, Clone)]
pub struct DeviceBatch<B: Backend> {
    /// `[batch, channels, size, size]`, normalised: the first view.
    pub images: Tensor<B, 4>,
    /// The other views of a method that asks for several, the same shape.
    pub other_views: Vec<Tensor<B, 4>>,
    /// `[batch, k]`: the patches the encoder sees (I-JEPA's context, MAE's visible set).
    pub context_idx: Tensor<B, 2, Int>,
    /// One `[batch, t]` per target block (MAE: one block, the masked patches).
    pub target_idx: Vec<Tensor<B, 2, Int>>,
    /// Images whose masks the sampler had to relax (see [`BatchMasks::relaxed`]).
    pub relaxed_masks: usize,
}

impl<B: Backend> DeviceBatch<B> {
    /// Uploads `batch`; normalisation with the dataset's `mean`/`std` is the first op.
    pub fn new(batch: &Batch, mean: &[f32], std: &[f32], device: &B::Device) -> Self {
        let shape = [batch.len(), batch.channels, batch.image_size_px, batch.image_size_px];
        let view = |view: usize| normalize_pixels(batch.view(view), shape, mean, std, device);
        Self { other_views: (1..batch.views).map(view).collect(), ..Self::with_masks(view(0), &batch.masks, device) }
    }

    /// Images already on the device (`[batch, …]`) with `masks` for the same batch.
    pub fn with_masks(images: Tensor<B, 4>, masks: &BatchMasks, device: &B::Device) -> Self {
        let rows = images.dims()[0];
        let index = |values: Vec<u32>| {
            let columns = values.len() / rows.max(1);
            let values: Vec<i64> = values.into_iter().map(i64::from).collect();
            Tensor::<B, 2, Int>::from_data(TensorData::new(values, [rows, columns]), device)
        };
        Self {
            images,
            other_views: Vec::new(),
            context_idx: index(masks.context_flat()),
            target_idx: masks.targets_flat().into_iter().map(index).collect(),
            relaxed_masks: masks.relaxed_count(),
        }
    }
}
