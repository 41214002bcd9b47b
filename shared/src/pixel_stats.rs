//! Per-channel pixel mean and standard deviation of a split, in [0, 1] units, for the
//! model's normalisation. Measured on the stored pixels (before any crop), converted to
//! the channels the model sees (grey replicated to RGB, RGB reduced to BT.601 luma).

use crate::error::FileError;
use crate::reader::Dataset;

/// Mean and std per output channel over the first `max_images` images of `split`.
pub fn pixel_stats(
    dataset: &Dataset,
    split: &str,
    channels: usize,
    max_images: usize,
) -> Result<(Vec<f32>, Vec<f32>), FileError> {
    let mut sums = vec![0f64; channels];
    let mut squares = vec![0f64; channels];
    let mut count = 0u64;
    let mut images = 0;
    'groups: for group in dataset.row_groups(split)? {
        for image in group?.iter() {
            if images == max_images {
                break 'groups;
            }
            images += 1;
            let source_channels = image.channels as usize;
            for pixel in image.pixels.chunks_exact(source_channels) {
                let value = |channel: usize| -> f64 {
                    match (source_channels, channels) {
                        (1, _) => f64::from(pixel[0]),
                        (3, 1) => {
                            0.299 * f64::from(pixel[0]) + 0.587 * f64::from(pixel[1]) + 0.114 * f64::from(pixel[2])
                        }
                        _ => f64::from(pixel[channel]),
                    }
                };
                for channel in 0..channels {
                    let scaled = value(channel) / 255.0;
                    sums[channel] += scaled;
                    squares[channel] += scaled * scaled;
                }
                count += 1;
            }
        }
    }
    let count = count.max(1) as f64;
    let mean: Vec<f64> = sums.iter().map(|sum| sum / count).collect();
    let std = squares.iter().zip(&mean).map(|(square, mean)| (square / count - mean * mean).max(1e-12).sqrt() as f32);
    Ok((mean.iter().map(|&mean| mean as f32).collect(), std.collect()))
}
