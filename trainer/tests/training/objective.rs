//! The I-JEPA objective on fixed tensors: it can be minimised, and gradient accumulation
//! over micro-batches equals one batch of their combined size.

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use jepa_shared::rng::KeyedRng;
use jepa_shared::{MaskConfig, MultiBlockMasks};
use jepa_trainer::batch::DeviceBatch;
use jepa_trainer::ema::ema_update;
use jepa_trainer::ijepa::{IJepa, LossKind, target_features};
use jepa_trainer::optim::AdamW;
use jepa_trainer::predictor::PredictorConfig;
use jepa_trainer::vit::VitConfig;

type B = Autodiff<NdArray<f32>>;

fn model() -> IJepa<B> {
    let encoder = VitConfig::preset("nano", 16, 4, 3).unwrap();
    // Seeded: the same start every run, so the thresholds below are not left to chance.
    IJepa::seeded(&encoder, &PredictorConfig { dim: 16, depth: 1, heads: 2 }, 11, &Default::default())
}

/// `batch` random images with multi-block masks on the 4×4 grid.
fn fixed_batch(batch: usize) -> DeviceBatch<B> {
    let device = Default::default();
    let mut rng = KeyedRng::new(&[42]);
    let pixels: Vec<f32> = (0..batch * 3 * 16 * 16).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let sampler =
        MultiBlockMasks::new(MaskConfig { num_targets: 2, min_keep: 2, ..MaskConfig::default() }, 4, 4).unwrap();
    let masks = sampler.sample_batch(1, 0, 0, batch);
    let images = Tensor::from_data(TensorData::new(pixels, [batch, 3, 16, 16]), &device);
    DeviceBatch::with_masks(images, &masks, &device)
}

fn rows(batch: &DeviceBatch<B>, range: std::ops::Range<usize>) -> DeviceBatch<B> {
    DeviceBatch {
        images: batch.images.clone().slice([range.clone()]),
        other_views: Vec::new(),
        context_idx: batch.context_idx.clone().slice([range.clone()]),
        target_idx: batch.target_idx.iter().map(|idx| idx.clone().slice([range.clone()])).collect(),
        relaxed_masks: 0,
    }
}

fn loss_and_grads(model: &IJepa<B>, batch: &DeviceBatch<B>, scale: f64) -> (f64, GradientsParams) {
    let target_encoder = model.context_encoder.valid();
    let inner: Vec<_> = batch.target_idx.iter().map(|idx| idx.clone().inner()).collect();
    let targets = target_features(&target_encoder, batch.images.clone().inner(), &inner);
    let loss = model.loss(batch, &targets, LossKind::SmoothL1) * scale;
    let value = loss.clone().into_scalar().elem::<f64>();
    (value, GradientsParams::from_grads(loss.backward(), model))
}

/// Every gradient of `model`'s parameters, flattened, in visiting order.
fn gradients(model: &IJepa<B>, grads: &GradientsParams) -> Vec<f32> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        values: Vec<f32>,
    }
    impl ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let grad = self
                .grads
                .get::<<B as AutodiffBackend>::InnerBackend, D>(param.id)
                .expect("every parameter has a gradient");
            self.values.extend(grad.into_data().to_vec::<f32>().unwrap());
        }
    }
    let mut collect = Collect { grads, values: Vec::new() };
    model.visit(&mut collect);
    collect.values
}

#[test]
fn two_accumulated_micro_batches_give_the_gradient_of_one_batch_of_twice_the_size() {
    let model = model();
    let batch = fixed_batch(8);
    let (full_loss, full) = loss_and_grads(&model, &batch, 1.0);

    let mut accumulator = GradientsAccumulator::<IJepa<B>>::new();
    let mut accumulated_loss = 0.0;
    for half in [0..4, 4..8] {
        // Each micro-batch's loss is divided by the number of micro-batches, as the loop does.
        let (loss, grads) = loss_and_grads(&model, &rows(&batch, half), 0.5);
        accumulated_loss += loss;
        accumulator.accumulate(&model, grads);
    }
    let accumulated = accumulator.grads();
    assert!((accumulated_loss - full_loss).abs() < 1e-6, "{accumulated_loss} vs {full_loss}");
    let (full, accumulated) = (gradients(&model, &full), gradients(&model, &accumulated));
    assert_eq!(full.len(), accumulated.len());
    let largest = full.iter().fold(0f32, |most, value| most.max(value.abs()));
    assert!(largest > 0.0);
    for (one, two) in full.iter().zip(&accumulated) {
        // float32 sums in another order: equal to ~1e-6 of the largest gradient.
        assert!((one - two).abs() <= 1e-5 * largest, "{one} vs {two} (largest {largest})");
    }
}

#[test]
fn the_loss_falls_on_a_fixed_small_batch() {
    let mut model = model();
    let mut target_encoder = model.context_encoder.valid();
    let mut optimizer = AdamW::default();
    let batch = fixed_batch(8);
    let inner: Vec<_> = batch.target_idx.iter().map(|idx| idx.clone().inner()).collect();
    let mut losses = Vec::new();
    for _ in 0..40 {
        let targets = target_features(&target_encoder, batch.images.clone().inner(), &inner);
        let loss = model.loss(&batch, &targets, LossKind::SmoothL1);
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(model, grads, 1e-3, 0.04);
        target_encoder = ema_update(target_encoder, &model.context_encoder.valid(), 0.996);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.5 * first, "loss went from {first} to {last}: {losses:?}");
}
