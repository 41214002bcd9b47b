//! The figure of a method that predicts pixels (MAE, I-JEPA with pixel targets): for a few
//! test images, the original, what the encoder saw (its context; every other patch grey) and
//! the reconstruction (the context as it was, every target patch as the method predicted
//! it, anything else grey), one image per row. The masks are drawn by the run's own sampler
//! with its seed; a method whose targets are normalised per patch has its predictions mapped
//! back with each true patch's mean and std, as MAE's figures do.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use jepa_eval::error::{ProbeError, Result};
use jepa_eval::features::ImageInput;
use jepa_eval::protocol::TEST_SPLIT;
use jepa_shared::{Dataset, LabelledImages};
use jepa_trainer::batch::DeviceBatch;
use jepa_trainer::checkpoint;
use jepa_trainer::method::{Method, MethodVisitor};
use jepa_trainer::pixels::{patchify, unpatchify};
use jepa_trainer::{CheckpointFolder, Run};

use crate::sheet::{Picture, Sheet};

/// Each image is drawn this many times larger (nearest neighbour).
const SCALE: usize = 4;
const MASKED_GREY: u8 = 128;

/// Rows of (original, context, reconstruction) for the first `count` test images of `run`
/// at `checkpoint` (the latest when `None`).
pub fn reconstruct<B: AutodiffBackend>(
    run: &Run,
    checkpoint: Option<&str>,
    count: usize,
    device: &B::Device,
) -> Result<Vec<Vec<Picture>>> {
    rows_at::<B>(run, &run.checkpoint(checkpoint)?, count, device)
}

/// [`reconstruct`]'s rows, at a checkpoint already resolved.
fn rows_at<B: AutodiffBackend>(
    run: &Run,
    checkpoint: &CheckpointFolder,
    count: usize,
    device: &B::Device,
) -> Result<Vec<Vec<Picture>>> {
    let input = ImageInput::of_run(run)?;
    let dataset = Dataset::open(run.recipe.dataset())?;
    let images = LabelledImages::read_first(&dataset, TEST_SPLIT, input.image_size_px, input.channels, count.max(1))?;
    let visitor = Reconstruct::<B> { run, checkpoint, input: &input, images: &images, device };
    run.recipe.method().visit(visitor)
}

/// Draws [`reconstruct`]'s rows into `out` (PNG).
pub fn draw<B: AutodiffBackend>(
    run: &Run,
    checkpoint: Option<&str>,
    count: usize,
    out: &Path,
    device: &B::Device,
) -> Result<()> {
    // Resolved once: the title names the checkpoint the rows come from.
    let checkpoint = run.checkpoint(checkpoint)?;
    let sheet = Sheet {
        title: Some(format!(
            "run {} ({}) at {}: target patches as predicted",
            run.recipe.name(),
            run.recipe.method_info().name(),
            checkpoint.name()
        )),
        column_titles: ["original", "context", "reconstruction"].map(String::from).to_vec(),
        rows: rows_at::<B>(run, &checkpoint, count, device)?,
        scale: SCALE,
        ..Sheet::default()
    };
    sheet.draw(out)
}

struct Reconstruct<'a, B: AutodiffBackend> {
    run: &'a Run,
    checkpoint: &'a CheckpointFolder,
    input: &'a ImageInput,
    images: &'a LabelledImages,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> MethodVisitor<B> for Reconstruct<'_, B> {
    type Output = Result<Vec<Vec<Picture>>>;

    fn visit<M: Method<B>>(self, method: &M) -> Self::Output {
        let (run, input, images, device) = (self.run, self.input, self.images, self.device);
        let count = images.len();
        let masks = method.masks().sample_batch(run.recipe.seed(), 0, 0, count);
        let start = method.init(run.recipe.seed(), device);
        let model = checkpoint::load_model(self.checkpoint, start, device).map_err(jepa_trainer::RunError::from)?;
        let batch = DeviceBatch::with_masks(input.normalise::<B>(&images.pixels, count, device), &masks, device);
        let Some(predicted) = method.predict_pixels(&model, &batch) else {
            return Err(ProbeError::bad(
                &run.folder.config(),
                format!("trains `{}`, whose targets are features, not pixels: it has no reconstruction", method.name()),
            ));
        };
        let patch = run.recipe.encoder().patch_size_px;
        let truth = patchify(batch.images.clone(), patch);
        let [_, patches, values] = truth.dims();
        let truth = floats(truth);
        // Predictions first, then the context over them: where a sampler had to let the
        // context overlap a target, the figure shows what the encoder saw.
        let mut rebuilt = vec![f32::NAN; truth.len()];
        for (block, predicted) in predicted.into_iter().enumerate() {
            let predicted = floats(predicted);
            let mut predicted = predicted.chunks_exact(values);
            for (image, targets) in masks.targets.iter().enumerate() {
                for &patch in &targets[block] {
                    let start = (image * patches + patch as usize) * values;
                    rebuilt[start..start + values].copy_from_slice(predicted.next().expect("one prediction per patch"));
                }
            }
        }
        let mut seen = vec![f32::NAN; truth.len()];
        for (image, context) in masks.context.iter().enumerate() {
            for &patch in context {
                let start = (image * patches + patch as usize) * values;
                seen[start..start + values].copy_from_slice(&truth[start..start + values]);
                rebuilt[start..start + values].copy_from_slice(&truth[start..start + values]);
            }
        }
        let size = input.image_size_px;
        let image = |values_of: &[f32]| {
            let tensor = Tensor::<B::InnerBackend, 3>::from_data(
                TensorData::new(values_of.to_vec(), [count, patches, values]),
                device,
            );
            floats(unpatchify(tensor, patch, input.channels, size))
        };
        let (original, seen, rebuilt) = (image(&truth), image(&seen), image(&rebuilt));
        Ok((0..count)
            .map(|row| [&original, &seen, &rebuilt].map(|pixels| picture(pixels, row, input)).into_iter().collect())
            .collect())
    }
}

fn floats<B: burn::tensor::backend::Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().into_vec::<f32>().expect("f32 pixels")
}

/// Image `row` of normalised `[images, channels, size, size]` values as an RGB picture: back
/// to 0..255 with the run's pixel statistics, grey where a value is NaN (not shown).
fn picture(values: &[f32], row: usize, input: &ImageInput) -> Picture {
    let (size, channels) = (input.image_size_px, input.channels);
    let plane = size * size;
    let image = &values[row * channels * plane..(row + 1) * channels * plane];
    let level = |value: f32, channel: usize| {
        if value.is_nan() {
            return MASKED_GREY;
        }
        ((value * input.pixel_std[channel] + input.pixel_mean[channel]) * 255.0).round().clamp(0.0, 255.0) as u8
    };
    let pixels = (0..plane)
        .map(|pixel| {
            let value = |channel: usize| level(image[channel * plane + pixel], channel);
            if channels == 1 { [value(0); 3] } else { [value(0), value(1), value(2)] }
        })
        .collect();
    Picture::new(size, size, pixels)
}
