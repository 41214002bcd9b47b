//! MAE's figure: for a few test images, the original, what the encoder saw (the visible 25%
//! of patches, the rest grey) and the reconstruction (visible patches as they were, masked
//! ones predicted), one image per row. The masks are drawn with the run's own sampler; a
//! `norm_pix` model predicts normalised patches, which are mapped back with each true
//! patch's mean and std, as the MAE paper's figures do.

use std::path::Path;

use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::backend::Backend;
use jepa_shared::vit::normalize_pixels;
use jepa_shared::{Dataset, MaskSampler, RandomMasks};
use jepa_trainer::config::Method;
use jepa_trainer::mae::Mae;
use plotters::prelude::*;

use crate::error::{ProbeError, Result};
use crate::features::LabelledImages;
use crate::protocol::TEST_SPLIT;
use crate::run::RunFolder;

/// Each image is drawn this many times larger (nearest neighbour).
const SCALE: usize = 4;
const GAP_PX: usize = 6;
const MASKED_GREY: u8 = 128;

/// Draws `count` test images of an MAE `run` at `checkpoint` into `out` (PNG).
pub fn draw<B: Backend>(
    run: &RunFolder,
    checkpoint: &Path,
    count: usize,
    out: &Path,
    device: &B::Device,
) -> Result<()> {
    let config = &run.config;
    if config.method != Method::Mae {
        return Err(ProbeError::bad(&run.root.join("config.toml"), "is not an MAE run (`method = \"mae\"`)"));
    }
    let vit = config.vit()?;
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let file = checkpoint.join(jepa_trainer::checkpoint::MODEL);
    let model = Mae::<B>::new(&vit, &config.mae.decoder, device)
        .load_file(&file, &recorder, device)
        .map_err(|error| ProbeError::bad(&file.with_extension("bin"), error.to_string()))?;
    let (mean, std) = run.pixel_stats()?;
    let dataset = Dataset::open(&config.dataset)?;
    let mut images = LabelledImages::read(&dataset, TEST_SPLIT, vit.image_size_px, vit.channels, None)?;
    let count = count.clamp(1, images.len().max(1));
    images = images.select_rows(&(0..count).collect::<Vec<_>>());
    let grid = vit.grid();
    let sampler = RandomMasks::new(config.mae.mask_ratio, grid, grid)
        .map_err(|error| ProbeError::bad(&run.root.join("config.toml"), error.to_string()))?;
    let masks = sampler.sample_batch(config.seed, 0, 0, count);
    let (size, channels) = (vit.image_size_px, vit.channels);
    let input = normalize_pixels::<B>(&images.pixels, [count, channels, size, size], &mean, &std, device);
    let reconstructed = model.reconstruct(input, &masks, config.mae.loss);
    let reconstructed = reconstructed.into_data().convert::<f32>().into_vec::<f32>().expect("f32 pixels");
    // Back to 0..255 with the dataset statistics the model's input was normalised with.
    let pixel =
        |value: f32, channel: usize| ((value * std[channel] + mean[channel]) * 255.0).round().clamp(0.0, 255.0) as u8;

    let cell = size * SCALE;
    let (width, height) = (3 * cell + 4 * GAP_PX, count * cell + (count + 1) * GAP_PX);
    let temp = out.with_extension("tmp.png");
    let root = BitMapBackend::new(&temp, (width as u32, height as u32)).into_drawing_area();
    let failed = |error: String| ProbeError::bad(out, error);
    root.fill(&WHITE).map_err(|error| failed(error.to_string()))?;
    let patch = vit.patch_size_px;
    for row in 0..count {
        let visible: std::collections::HashSet<u32> = masks.context[row].iter().copied().collect();
        let top = GAP_PX + row * (cell + GAP_PX);
        for y in 0..size {
            for x in 0..size {
                let shown = visible.contains(&(((y / patch) * grid + x / patch) as u32));
                let rgb = |values: &dyn Fn(usize) -> u8| {
                    if channels == 1 { [values(0); 3] } else { [values(0), values(1), values(2)] }
                };
                let original = rgb(&|c| images.image(row)[(c * size + y) * size + x]);
                let masked = if shown { original } else { [MASKED_GREY; 3] };
                let start = row * channels * size * size;
                let rebuilt = rgb(&|c| pixel(reconstructed[start + (c * size + y) * size + x], c));
                for (column, colour) in [original, masked, rebuilt].into_iter().enumerate() {
                    let left = GAP_PX + column * (cell + GAP_PX);
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            let (px, py) = (left + x * SCALE + dx, top + y * SCALE + dy);
                            let colour = RGBColor(colour[0], colour[1], colour[2]);
                            root.draw_pixel((px as i32, py as i32), &colour)
                                .map_err(|error| failed(error.to_string()))?;
                        }
                    }
                }
            }
        }
    }
    root.present().map_err(|error| failed(error.to_string()))?;
    drop(root);
    std::fs::rename(&temp, out).map_err(ProbeError::io(out))
}
