//! `configs/stl10-seed.toml` and `configs/stl10-mae-seed.toml` against the seed's published
//! tables, written out here value by value (its README: Results, Hyperparameters,
//! Architecture, the companion MAE table, and the optimizer-step counts of its notes on
//! gradient accumulation), so neither file can drift from the recipe it names.

use std::path::Path;

use jepa_trainer::config::Ramp;
use jepa_trainer::ijepa::LossKind;
use jepa_trainer::mae::MaeLoss;
use jepa_trainer::registry::AnyMethod;
use jepa_trainer::{Recipe, optim};

/// The seed's pre-training recipe, shared by its I-JEPA and MAE runs.
struct Pretraining {
    /// ViT-Base/16 at 224×224: depth 12, dim 768, heads 12.
    image_size_px: usize,
    patch_size_px: usize,
    depth: usize,
    dim: usize,
    heads: usize,
    /// STL-10's 100k unlabeled images.
    split: &'static str,
    /// "No hand-crafted view augmentations during pre-training in either case".
    augmentation: bool,
    /// "Batch / effective: 64 / 256 (×4 accum)".
    batch_size: usize,
    accumulation: u64,
    epochs: u64,
    lr_peak: f64,
    warmup_epochs: f64,
    lr_final: f64,
    /// "0.04 → 0.40 (linear)".
    weight_decay: [f64; 2],
    weight_decay_ramp: Ramp,
    /// "AdamW with β=(0.9, 0.95)".
    betas: (f64, f64),
    /// "390 optimizer steps per epoch", "19,500 optimizer steps" in all.
    steps_per_epoch: u64,
    total_steps: u64,
}

const SEED: Pretraining = Pretraining {
    image_size_px: 224,
    patch_size_px: 16,
    depth: 12,
    dim: 768,
    heads: 12,
    split: "unlabeled",
    augmentation: false,
    batch_size: 64,
    accumulation: 4,
    epochs: 50,
    lr_peak: 1e-3,
    warmup_epochs: 15.0,
    lr_final: 1e-6,
    weight_decay: [0.04, 0.4],
    weight_decay_ramp: Ramp::Linear,
    betas: (0.9, 0.95),
    steps_per_epoch: 390,
    total_steps: 19_500,
};

/// STL-10's unlabeled split: 100,000 images.
const UNLABELED_IMAGES: u64 = 100_000;

fn load(file: &str) -> Recipe {
    Recipe::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").join(file), &[]).unwrap()
}

fn check_pretraining(file: &str, recipe: &Recipe) {
    let config = recipe.config();
    let encoder = recipe.encoder();
    assert_eq!(
        (encoder.image_size_px, encoder.patch_size_px, encoder.depth, encoder.dim, encoder.heads, encoder.channels),
        (SEED.image_size_px, SEED.patch_size_px, SEED.depth, SEED.dim, SEED.heads, 3),
        "{file}: the encoder"
    );
    assert_eq!(config.loader.split, SEED.split, "{file}");
    assert_eq!(config.loader.crop.enabled, SEED.augmentation, "{file}: augmentation");
    assert_eq!((config.loader.batch_size, config.optim.accumulation), (SEED.batch_size, SEED.accumulation), "{file}");
    let optim = &config.optim;
    assert_eq!((optim.epochs, optim.warmup_epochs), (SEED.epochs, SEED.warmup_epochs), "{file}");
    assert_eq!((optim.lr_peak, optim.lr_final), (SEED.lr_peak, SEED.lr_final), "{file}");
    assert_eq!(
        (optim.weight_decay, optim.weight_decay_schedule),
        (SEED.weight_decay, SEED.weight_decay_ramp),
        "{file}"
    );
    assert_eq!((optim.grad_clip, optim.max_steps), (None, None), "{file}: the seed clips nothing and runs every step");
    assert_eq!(optim::BETAS, SEED.betas, "AdamW's betas");

    // The step counts the seed gives, from the loader's count of 256-image steps over 100k.
    let batches_per_epoch = UNLABELED_IMAGES / SEED.batch_size as u64; // the last, short batch dropped
    let schedule = recipe.schedule(batches_per_epoch);
    assert_eq!(recipe.steps_per_epoch(batches_per_epoch), SEED.steps_per_epoch, "{file}");
    assert_eq!(schedule.total_steps, SEED.total_steps, "{file}");
    assert_eq!(schedule.warmup_steps, 15 * SEED.steps_per_epoch, "{file}: the warm-up counts optimizer steps");
    assert!((schedule.lr_at(schedule.warmup_steps) - SEED.lr_peak).abs() < 1e-15, "{file}: the peak after warm-up");
    assert!((schedule.lr_at(SEED.total_steps) - SEED.lr_final).abs() < 1e-15, "{file}: the floor at the end");
    let halfway = schedule.weight_decay_at(SEED.total_steps / 2);
    assert!((halfway - 0.22).abs() < 1e-12, "{file}: a linear ramp is at 0.22 halfway, got {halfway}");
}

#[test]
fn the_seed_config_is_the_seeds_ijepa_recipe_value_for_value() {
    let recipe = load("stl10-seed.toml");
    check_pretraining("stl10-seed.toml", &recipe);
    let AnyMethod::IJepa(ijepa) = recipe.method() else { panic!("stl10-seed.toml trains {}", recipe.config().method) };
    let settings = &ijepa.settings;
    // "EMA representations (MSE)", "m: 0.996 → 1.0".
    assert_eq!((settings.loss, settings.ema_momentum), (LossKind::Mse, [0.996, 1.0]));
    // "Predictor: depth=6, dim=384, heads=12".
    let predictor = &settings.predictor;
    assert_eq!((predictor.depth, predictor.dim, predictor.heads), (6, 384, 12));
    // "1 context block (scale 0.85–1.0, fixed aspect ratio)", "4 target blocks (scale
    // 0.15–0.20, random aspect 0.75–1.5)", "target patches removed from context".
    let masks = &settings.masks;
    assert_eq!(masks.num_targets, 4);
    assert_eq!((masks.target_scale, masks.target_aspect), ([0.15, 0.2], [0.75, 1.5]));
    assert_eq!((masks.context_scale, masks.allow_overlap), ([0.85, 1.0], false));
}

#[test]
fn the_mae_seed_config_is_the_seeds_mae_with_everything_else_shared() {
    let recipe = load("stl10-mae-seed.toml");
    check_pretraining("stl10-mae-seed.toml", &recipe);
    let AnyMethod::Mae(mae) = recipe.method() else { panic!("stl10-mae-seed.toml trains {}", recipe.config().method) };
    // "75% random patches", "Pixel values (L1)", "8-layer ViT, 512-dim" decoder.
    assert_eq!((mae.settings.mask_ratio, mae.settings.loss), (0.75, MaeLoss::L1));
    assert_eq!((mae.settings.decoder.depth, mae.settings.decoder.dim), (8, 512));

    // Apart from the method, both files are one recipe: the same data, loader, encoder,
    // optimizer, schedules and seed.
    let ijepa = load("stl10-seed.toml");
    let (a, b) = (recipe.config(), ijepa.config());
    assert_eq!((&a.dataset, &a.loader, &a.encoder), (&b.dataset, &b.loader, &b.encoder));
    assert_eq!((&a.optim, &a.data, a.seed), (&b.optim, &b.data, b.seed));
}
