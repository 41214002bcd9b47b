//! Feature-extraction throughput of the frozen encoder on the CPU backend, by batch size
//! and thread count, through the probe's own parallel loop (`make bench-probe`). Synthetic
//! pixels: the encoder's cost does not depend on them.

use std::time::Instant;

use burn::backend::NdArray;
use jepa_eval::features::{ExtractSettings, ImageInput, encode_images};
use jepa_trainer::vit::VitConfig;

type Cpu = NdArray<f32>;

fn main() {
    let images = 4_096;
    for (name, preset, size, patch) in [("demo micro ViT, 28 px / 4", "micro", 28, 4)] {
        let vit = VitConfig::preset(preset, size, patch, 1).expect("a preset");
        let encoder = vit.init::<Cpu>(&Default::default());
        let pixels: Vec<u8> = (0..images * size * size).map(|i| ((i * 2_654_435_761usize) >> 13) as u8).collect();
        println!("{name}, {images} images");
        for threads in [1usize, 2] {
            for batch_size in [32usize, 64, 128, 256] {
                let input =
                    ImageInput { image_size_px: size, channels: 1, pixel_mean: vec![0.29], pixel_std: vec![0.35] };
                let settings = ExtractSettings { input, layers: 1, batch_size, threads };
                let started = Instant::now();
                let features = encode_images(&encoder, &pixels, images, &settings, &Default::default(), &|_| {});
                std::hint::black_box(features);
                let seconds = started.elapsed().as_secs_f64();
                println!("  threads {threads}, batch {batch_size:>3}: {:>7.1} images/s", images as f64 / seconds);
            }
        }
    }
}
