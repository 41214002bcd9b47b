//! `make masks`: draws I-JEPA's multi-block masks over a few real images from a dataset,
//! the picture the paper uses to explain the method. Each row: the image, then the same
//! image with the kept context bright, the four target blocks tinted in colour, and the
//! rest dimmed. Images are resized to 224 px and split into 16 px patches (a 14×14 grid).
//!
//! Usage: cargo run --release -p jepa-shared --example mask_figure -- DATASET OUT.png [SPLIT] [COUNT] [SEED]

use std::path::PathBuf;

use fast_image_resize::images::Image;
use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions, Resizer};
use jepa_shared::{Dataset, MaskConfig, MultiBlockMasks};

const SIZE_PX: usize = 224;
const PATCH_PX: usize = 16;
const GRID: usize = SIZE_PX / PATCH_PX;
const GAP_PX: usize = 8;
const TARGET_COLOURS: [[u8; 3]; 4] = [[230, 60, 60], [60, 200, 90], [250, 170, 30], [190, 80, 220]];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: mask_figure DATASET OUT.png [SPLIT] [COUNT] [SEED]".into());
    }
    let dataset = Dataset::open(&PathBuf::from(&args[0]))?;
    let out = PathBuf::from(&args[1]);
    let split = args.get(2).map_or("train", String::as_str);
    let count: usize = args.get(3).map_or(Ok(4), |value| value.parse())?;
    let seed: u64 = args.get(4).map_or(Ok(0), |value| value.parse())?;

    let sampler = MultiBlockMasks::new(MaskConfig::default(), GRID, GRID)?;
    let masks = sampler.sample_batch(seed, 0, 0, count);
    let mut images = Vec::with_capacity(count);
    'read: for batch in dataset.row_groups(split)? {
        for image in batch?.iter() {
            images.push(resize_to_rgb(image.pixels, image.width, image.height, image.channels)?);
            if images.len() == count {
                break 'read;
            }
        }
    }

    let width = 2 * SIZE_PX + 3 * GAP_PX;
    let height = images.len() * (SIZE_PX + GAP_PX) + GAP_PX;
    let mut canvas = image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255, 255, 255]));
    for (row, rgb) in images.iter().enumerate() {
        let top = GAP_PX + row * (SIZE_PX + GAP_PX);
        let mut role = vec![None; GRID * GRID]; // None = dropped, Some(0) = context, Some(k) = target k
        for &patch in &masks.context[row] {
            role[patch as usize] = Some(0);
        }
        for (target, block) in masks.targets[row].iter().enumerate() {
            for &patch in block {
                role[patch as usize] = Some(target + 1);
            }
        }
        for y in 0..SIZE_PX {
            for x in 0..SIZE_PX {
                let source = &rgb[(y * SIZE_PX + x) * 3..(y * SIZE_PX + x) * 3 + 3];
                let plain = image::Rgb([source[0], source[1], source[2]]);
                canvas.put_pixel((GAP_PX + x) as u32, (top + y) as u32, plain);
                let masked = match role[(y / PATCH_PX) * GRID + x / PATCH_PX] {
                    Some(0) => plain,
                    Some(target) => blend(source, TARGET_COLOURS[(target - 1) % 4], 0.55),
                    None => blend(source, [0, 0, 0], 0.75),
                };
                canvas.put_pixel((2 * GAP_PX + SIZE_PX + x) as u32, (top + y) as u32, masked);
            }
        }
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    canvas.save(&out)?;
    println!(
        "{}: {} images from {split}; context keeps {} of {} patches, target blocks {}×{}",
        out.display(),
        images.len(),
        masks.context[0].len(),
        GRID * GRID,
        masks.target_block.height,
        masks.target_block.width
    );
    Ok(())
}

fn blend(pixel: &[u8], colour: [u8; 3], amount: f32) -> image::Rgb<u8> {
    let mix = |index: usize| (pixel[index] as f32 * (1.0 - amount) + colour[index] as f32 * amount) as u8;
    image::Rgb([mix(0), mix(1), mix(2)])
}

/// Any shard image → 224×224 RGB bytes.
fn resize_to_rgb(pixels: &[u8], width: u16, height: u16, channels: u8) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let rgb: Vec<u8> =
        if channels == 1 { pixels.iter().flat_map(|&grey| [grey, grey, grey]).collect() } else { pixels.to_vec() };
    let source = Image::from_vec_u8(width as u32, height as u32, rgb, PixelType::U8x3)?;
    let mut target = Image::new(SIZE_PX as u32, SIZE_PX as u32, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fast_image_resize::FilterType::Bilinear));
    Resizer::new().resize(&source, &mut target, &options)?;
    Ok(target.into_vec())
}
