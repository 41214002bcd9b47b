//! Per-image work of the loader threads: RandomResizedCrop (I-JEPA's only augmentation),
//! the resize to the model resolution, and the channel layout the model wants.
//!
//! The output is **u8, channel-major** (`C×H×W`): the model's first op casts and
//! normalises on its device. Normalising to f32 here would cost as much CPU as the resize
//! and send four times the bytes.

use crate::rng::KeyedRng;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use serde::{Deserialize, Serialize};

/// RandomResizedCrop settings; the defaults are the official I-JEPA ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropConfig {
    /// Off: the whole image is resized (what evaluation uses).
    pub enabled: bool,
    /// Fraction of the image area the crop covers, drawn in [min, max).
    pub scale: [f64; 2],
    /// Crop width / height, drawn log-uniformly in [min, max).
    pub ratio: [f64; 2],
}

impl Default for CropConfig {
    fn default() -> Self {
        Self { enabled: true, scale: [0.3, 1.0], ratio: [3.0 / 4.0, 4.0 / 3.0] }
    }
}

impl CropConfig {
    /// `None` when the settings are usable, else the field and what is wrong with it.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let [low, high] = self.scale;
        if !(low > 0.0 && low <= high && high <= 1.0) {
            return Some(("crop.scale", format!("is [{low}, {high}], expected 0 < min ≤ max ≤ 1")));
        }
        let [low, high] = self.ratio;
        if !(low > 0.0 && low <= high && high.is_finite()) {
            return Some(("crop.ratio", format!("is [{low}, {high}], expected 0 < min ≤ max")));
        }
        None
    }
}

/// A rectangle of the source image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

impl CropBox {
    pub fn whole(height: u32, width: u32) -> Self {
        Self { top: 0, left: 0, height, width }
    }
}

/// Attempts at a crop inside the image before falling back to a centre crop, as torchvision.
const CROP_ATTEMPTS: usize = 10;

/// torchvision's `RandomResizedCrop.get_params` semantics: area fraction uniform in
/// `scale`, aspect ratio log-uniform in `ratio`, up to ten tries to fit inside the image,
/// then the largest centred crop whose ratio is clamped into range.
pub fn random_resized_crop(rng: &mut KeyedRng, height: u32, width: u32, config: &CropConfig) -> CropBox {
    let area = f64::from(height) * f64::from(width);
    let log_ratio = [config.ratio[0].ln(), config.ratio[1].ln()];
    for _ in 0..CROP_ATTEMPTS {
        let target_area = area * rng.uniform(config.scale[0], config.scale[1]);
        let aspect = rng.uniform(log_ratio[0], log_ratio[1]).exp();
        let crop_width = (target_area * aspect).sqrt().round() as u32;
        let crop_height = (target_area / aspect).sqrt().round() as u32;
        if (1..=width).contains(&crop_width) && (1..=height).contains(&crop_height) {
            let top = rng.inclusive(0, (height - crop_height) as usize) as u32;
            let left = rng.inclusive(0, (width - crop_width) as usize) as u32;
            return CropBox { top, left, height: crop_height, width: crop_width };
        }
    }
    let image_ratio = f64::from(width) / f64::from(height);
    let (crop_height, crop_width) = if image_ratio < config.ratio[0] {
        ((f64::from(width) / config.ratio[0]).round() as u32, width)
    } else if image_ratio > config.ratio[1] {
        (height, (f64::from(height) * config.ratio[1]).round() as u32)
    } else {
        (height, width)
    };
    let (crop_height, crop_width) = (crop_height.clamp(1, height), crop_width.clamp(1, width));
    CropBox { top: (height - crop_height) / 2, left: (width - crop_width) / 2, height: crop_height, width: crop_width }
}

/// A source image as the loader holds it: HWC u8, 1 or 3 channels.
#[derive(Debug, Clone, Copy)]
pub struct SourceImage<'a> {
    pub height: u32,
    pub width: u32,
    pub channels: u8,
    pub pixels: &'a [u8],
}

/// Crop + resize + layout for one loader thread. It keeps the resizer's buffers and a
/// scratch image between calls, so a steady stream allocates nothing per image.
pub struct ImagePipeline {
    image_size_px: u32,
    channels: u8,
    resizer: Resizer,
    options: ResizeOptions,
    resized: [Option<Image<'static>>; 2],
}

impl ImagePipeline {
    /// Outputs `channels × image_size_px × image_size_px` u8 (`channels` 1 or 3).
    pub fn new(image_size_px: u32, channels: u8) -> Self {
        Self {
            image_size_px,
            channels,
            resizer: Resizer::new(),
            // Bilinear with antialiasing on downscale: torchvision's default for RandomResizedCrop.
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            resized: [None, None],
        }
    }

    pub fn output_len(&self) -> usize {
        self.channels as usize * self.image_size_px as usize * self.image_size_px as usize
    }

    /// Resizes `crop` of `source` to the output size and writes it channel-major into `out`.
    /// Grey sources are replicated to 3 channels, colour sources reduced to luma (ITU-R
    /// BT.601), whichever the output asks.
    pub fn process(&mut self, source: SourceImage<'_>, crop: CropBox, out: &mut [u8]) -> Result<(), String> {
        if out.len() != self.output_len() {
            return Err(format!("output buffer holds {} bytes, expected {}", out.len(), self.output_len()));
        }
        let pixel_type = match source.channels {
            1 => PixelType::U8,
            3 => PixelType::U8x3,
            other => return Err(format!("{other} channels, expected 1 or 3")),
        };
        let slot = usize::from(source.channels == 3);
        let size = self.image_size_px;
        let resized = self.resized[slot].get_or_insert_with(|| Image::new(size, size, pixel_type));
        let view = ImageRef::new(source.width, source.height, source.pixels, pixel_type).map_err(|e| e.to_string())?;
        let options =
            self.options.crop(f64::from(crop.left), f64::from(crop.top), f64::from(crop.width), f64::from(crop.height));
        self.resizer.resize(&view, resized, &options).map_err(|e| e.to_string())?;
        write_channel_major(resized.buffer(), source.channels, self.channels, out);
        Ok(())
    }
}

/// HWC → CHW, converting the channel count on the way.
fn write_channel_major(hwc: &[u8], from: u8, to: u8, out: &mut [u8]) {
    let plane = hwc.len() / from as usize;
    match (from, to) {
        (1, 1) => out.copy_from_slice(hwc),
        (1, _) => {
            for channel in out.chunks_exact_mut(plane) {
                channel.copy_from_slice(hwc);
            }
        }
        (_, 1) => {
            for (grey, rgb) in out.iter_mut().zip(hwc.chunks_exact(3)) {
                let luma = 299 * u32::from(rgb[0]) + 587 * u32::from(rgb[1]) + 114 * u32::from(rgb[2]);
                *grey = ((luma + 500) / 1000) as u8;
            }
        }
        _ => {
            let (red, rest) = out.split_at_mut(plane);
            let (green, blue) = rest.split_at_mut(plane);
            for (index, rgb) in hwc.chunks_exact(3).enumerate() {
                red[index] = rgb[0];
                green[index] = rgb[1];
                blue[index] = rgb[2];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_stay_inside_the_image_with_scale_and_ratio_in_range() {
        let config = CropConfig::default();
        let (height, width) = (96u32, 96u32);
        let mut fallbacks = 0;
        for key in 0..2_000u64 {
            let crop = random_resized_crop(&mut KeyedRng::new(&[key]), height, width, &config);
            assert!(crop.top + crop.height <= height && crop.left + crop.width <= width, "{crop:?}");
            let scale = f64::from(crop.height * crop.width) / f64::from(height * width);
            let ratio = f64::from(crop.width) / f64::from(crop.height);
            // Rounding each side to whole pixels moves scale and ratio a little.
            let slack = 2.0 / 96.0 * 2.0;
            assert!(scale >= 0.3 - slack && scale <= 1.0, "scale {scale} of {crop:?}");
            assert!(ratio >= 0.75 - slack && ratio <= 4.0 / 3.0 + slack, "ratio {ratio} of {crop:?}");
            fallbacks += usize::from(crop == CropBox::whole(height, width));
        }
        // A square image always admits a crop within ten tries for these settings.
        assert!(fallbacks < 20, "{fallbacks} whole-image crops");
    }

    #[test]
    fn crop_positions_reach_every_edge() {
        let config = CropConfig { enabled: true, scale: [0.3, 0.3], ratio: [1.0, 1.0] };
        let (mut top_zero, mut bottom_edge) = (false, false);
        for key in 0..500u64 {
            let crop = random_resized_crop(&mut KeyedRng::new(&[key]), 20, 20, &config);
            top_zero |= crop.top == 0;
            bottom_edge |= crop.top + crop.height == 20;
        }
        assert!(top_zero && bottom_edge);
    }

    #[test]
    fn impossible_ratio_falls_back_to_the_clamped_centre_crop() {
        // A 10×100 strip cannot hold a crop of ratio ≤ 4/3 at 30–100% of its area.
        let crop = random_resized_crop(&mut KeyedRng::new(&[1]), 10, 100, &CropConfig::default());
        assert_eq!(crop, CropBox { top: 0, left: 43, height: 10, width: 13 });
    }

    #[test]
    fn whole_image_at_the_same_size_is_a_transpose_to_channel_major() {
        let (height, width) = (4u32, 4u32);
        let pixels: Vec<u8> = (0..height * width * 3).map(|i| i as u8).collect();
        let mut pipeline = ImagePipeline::new(4, 3);
        let mut out = vec![0; pipeline.output_len()];
        let source = SourceImage { height, width, channels: 3, pixels: &pixels };
        pipeline.process(source, CropBox::whole(height, width), &mut out).unwrap();
        for y in 0..4 {
            for x in 0..4 {
                for c in 0..3 {
                    assert_eq!(out[c * 16 + y * 4 + x], pixels[(y * 4 + x) * 3 + c]);
                }
            }
        }
    }

    #[test]
    fn a_crop_of_a_constant_region_resizes_to_that_constant() {
        // Left half 10, right half 200: a crop inside the right half upsamples to all 200.
        let pixels: Vec<u8> = (0..16 * 16).map(|i| if i % 16 < 8 { 10 } else { 200 }).collect();
        let mut pipeline = ImagePipeline::new(32, 1);
        let mut out = vec![0; pipeline.output_len()];
        let source = SourceImage { height: 16, width: 16, channels: 1, pixels: &pixels };
        let crop = CropBox { top: 2, left: 9, height: 6, width: 5 };
        pipeline.process(source, crop, &mut out).unwrap();
        assert!(out.iter().all(|&value| value == 200), "{:?}", &out[..8]);
    }

    #[test]
    fn grey_becomes_three_equal_planes_and_colour_becomes_luma() {
        let grey = [7u8, 9, 11, 13];
        let mut pipeline = ImagePipeline::new(2, 3);
        let mut out = vec![0; 12];
        let source = SourceImage { height: 2, width: 2, channels: 1, pixels: &grey };
        pipeline.process(source, CropBox::whole(2, 2), &mut out).unwrap();
        assert_eq!(out, [7, 9, 11, 13, 7, 9, 11, 13, 7, 9, 11, 13]);

        let colour = [255u8, 0, 0, 0, 255, 0, 0, 0, 255, 100, 100, 100];
        let mut pipeline = ImagePipeline::new(2, 1);
        let mut out = vec![0; 4];
        let source = SourceImage { height: 2, width: 2, channels: 3, pixels: &colour };
        pipeline.process(source, CropBox::whole(2, 2), &mut out).unwrap();
        // BT.601: 0.299·255 = 76.2, 0.587·255 = 149.7, 0.114·255 = 29.1.
        assert_eq!(out, [76, 150, 29, 100]);
    }
}
