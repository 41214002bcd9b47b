//! Feature-extraction throughput of the frozen encoder on the CPU backend, by batch size
//! and thread count (`make bench-probe`). Synthetic pixels: the encoder's cost does not
//! depend on them.

use std::time::Instant;

use burn::backend::NdArray;
use jepa_probe::features::{ExtractSettings, encode_batch};
use jepa_shared::vit::VitConfig;

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
                let settings = ExtractSettings {
                    image_size_px: size,
                    channels: 1,
                    pixel_mean: vec![0.29],
                    pixel_std: vec![0.35],
                    layers: 1,
                    batch_size,
                    threads,
                };
                let started = Instant::now();
                let next = std::sync::atomic::AtomicUsize::new(0);
                std::thread::scope(|scope| {
                    for _ in 0..threads {
                        let encoder = encoder.clone();
                        let (next, pixels, settings) = (&next, &pixels, &settings);
                        scope.spawn(move || {
                            loop {
                                let first = next.fetch_add(batch_size, std::sync::atomic::Ordering::Relaxed);
                                if first >= images {
                                    break;
                                }
                                let count = batch_size.min(images - first);
                                let batch = &pixels[first * size * size..(first + count) * size * size];
                                std::hint::black_box(encode_batch(
                                    &encoder,
                                    batch,
                                    count,
                                    settings,
                                    &Default::default(),
                                ));
                            }
                        });
                    }
                });
                let seconds = started.elapsed().as_secs_f64();
                println!("  threads {threads}, batch {batch_size:>3}: {:>7.1} images/s", images as f64 / seconds);
            }
        }
    }
}
