//! Full fine-tuning: the whole encoder plus a linear head on its average-pooled tokens,
//! trained end to end with cross-entropy on labelled train images (the second protocol of
//! the I-JEPA and MAE papers, beside the frozen linear probe).
//!
//! [`fit`] sees train images only. It carves a validation part out of them, fine-tunes one
//! copy of the encoder per learning rate for `epochs` epochs (AdamW with the trainer's
//! decoupled weight decay, cosine learning rate over the epochs, the zero-initialised head at
//! `head_lr_scale` times the encoder's rate), scores the validation part
//! after every epoch, and keeps the (learning rate, epoch) with the best validation accuracy:
//! the epoch count is chosen by stopping there. The test split is reached only through
//! [`HeldOutImages`], once, afterwards. Images are resized whole, as for the features; there
//! is no augmentation.

use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use jepa_shared::rng::KeyedRng;
use jepa_shared::{Dataset, LabelledImages};
use jepa_trainer::optim::AdamW;
use jepa_trainer::vit::VisionTransformer;

use crate::error::Result;
use crate::features::{ExtractSettings, ImageInput, encode_images};
use crate::heldout::Predictions;
use crate::seed::{SeedSettings, pytorch_linear};
use crate::select::{argmax, best_index, cosine_lr, validation_rows, validation_split};

#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneSettings {
    /// Peak learning rates to try; each gets its own run.
    pub learning_rates: Vec<f64>,
    /// The most epochs; the validation accuracy after each one chooses how many count.
    pub epochs: usize,
    pub batch_size: usize,
    pub weight_decay: f64,
    /// The head's learning rate over the encoder's: a zero-initialised head has everything
    /// to learn, the encoder only adjustments.
    pub head_lr_scale: f64,
    /// Fine-tune on this many train images, drawn at random (`None`: all).
    pub train_images: Option<usize>,
    /// Part of the (drawn) train images held back for the choice.
    pub validation_fraction: f64,
    pub seed: u64,
}

impl Default for FinetuneSettings {
    fn default() -> Self {
        Self {
            learning_rates: vec![1e-3, 3e-4],
            epochs: 3,
            batch_size: 64,
            weight_decay: 0.05,
            head_lr_scale: 10.0,
            train_images: None,
            validation_fraction: 0.1,
            seed: 0,
        }
    }
}

/// One learning rate after one epoch, scored on the validation part.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneCandidate {
    pub learning_rate: f64,
    /// Epochs trained, from 1.
    pub epochs: usize,
    pub validation_accuracy: f64,
}

/// What [`fit`] tried and kept.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneSelection {
    pub candidates: Vec<FinetuneCandidate>,
    /// Index into `candidates`.
    pub chosen: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
}

impl FinetuneSelection {
    pub fn chosen(&self) -> &FinetuneCandidate {
        &self.candidates[self.chosen]
    }
}

/// Encoder and head, trained together.
#[derive(Module, Debug)]
pub struct Finetuned<B: Backend> {
    pub encoder: VisionTransformer<B>,
    pub head: Linear<B>,
}

impl<B: Backend> Finetuned<B> {
    /// Class scores of normalised images, `[batch, classes]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let pooled = self.encoder.forward(images, None).mean_dim(1).squeeze_dim::<2>(1);
        self.head.forward(pooled)
    }
}

/// A fine-tuned model ready to predict, on the plain backend.
pub struct FinetunedClassifier<B: Backend> {
    model: Finetuned<B>,
    input: ImageInput,
    batch_size: usize,
    /// Batches predicted in parallel, each with its own copy of the model.
    threads: usize,
    device: B::Device,
}

impl<B: Backend> FinetunedClassifier<B> {
    /// The predicted class of every image: pooled features on `threads` threads, then the head.
    pub fn predict(&self, images: &LabelledImages) -> Vec<i32> {
        let settings = ExtractSettings {
            input: self.input.clone(),
            layers: 1,
            batch_size: self.batch_size,
            threads: self.threads.max(1),
        };
        let features =
            encode_images(&self.model.encoder, &images.pixels, images.len(), &settings, &self.device, &|_| ());
        let dim = self.model.encoder.dim();
        let features = Tensor::<B, 2>::from_data(TensorData::new(features, [images.len(), dim]), &self.device);
        let logits = self.model.head.forward(features);
        let classes = logits.dims()[1];
        let values = logits.into_data().convert::<f32>().into_vec::<f32>().expect("f32 logits");
        values.chunks_exact(classes).map(argmax).collect()
    }
}

/// The test images, read only by [`HeldOutImages::evaluate`].
pub struct HeldOutImages<'a> {
    dataset: &'a Dataset,
    split: &'a str,
}

impl<'a> HeldOutImages<'a> {
    pub fn new(dataset: &'a Dataset, split: &'a str) -> Self {
        Self { dataset, split }
    }

    /// Reads the test images and returns `classifier`'s predictions on them.
    pub fn evaluate<B: Backend>(&self, classifier: &FinetunedClassifier<B>) -> Result<Predictions> {
        let input = &classifier.input;
        let test = LabelledImages::read(self.dataset, self.split, input.image_size_px, input.channels, None)?;
        let predicted = classifier.predict(&test);
        Ok(Predictions { ids: test.ids, labels: test.labels, predicted })
    }
}

/// Images [`fit`] trains on per learning rate and epoch, out of `train_rows`.
pub fn fitting_rows(train_rows: usize, settings: &FinetuneSettings) -> usize {
    let drawn = settings.train_images.map_or(train_rows, |limit| limit.min(train_rows));
    drawn - validation_rows(drawn, settings.validation_fraction)
}

/// Draws the fine-tuning images: all of `train`, or `settings.train_images` of them at random.
pub fn draw_train_rows(rows: usize, settings: &FinetuneSettings) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows).collect();
    if let Some(limit) = settings.train_images.filter(|&limit| limit < rows) {
        KeyedRng::new(&[settings.seed, 0x66_74]).shuffle(&mut order);
        order.truncate(limit);
        order.sort_unstable();
    }
    order
}

/// Where fine-tuning runs.
pub struct Runtime<'a, B: Backend> {
    /// Threads for the validation and test passes (shared by the learning rates).
    pub threads: usize,
    pub device: &'a B::Device,
    /// Told the images of each training step.
    pub progress: &'a (dyn Fn(usize) + Sync),
}

/// Fine-tunes `encoder` on `train` (see the module doc) and returns the chosen model. Each
/// learning rate trains on its own thread, from its own copy of the encoder.
pub fn fit<B: AutodiffBackend>(
    encoder: &VisionTransformer<B>,
    train: &LabelledImages,
    classes: usize,
    input: &ImageInput,
    settings: &FinetuneSettings,
    runtime: &Runtime<'_, B>,
) -> (FinetunedClassifier<B::InnerBackend>, FinetuneSelection) {
    let (device, progress) = (runtime.device, runtime.progress);
    assert!(!settings.learning_rates.is_empty() && settings.epochs > 0, "an empty grid");
    let train = train.select_rows(&draw_train_rows(train.len(), settings));
    let (fitting, validation) = validation_split(train.len(), settings.validation_fraction, settings.seed);
    let (fitting, validation) = (train.select_rows(&fitting), train.select_rows(&validation));
    // Zero head: every run starts from the same function of the encoder.
    let head = LinearConfig::new(encoder.dim(), classes).with_initializer(Initializer::Zeros).init::<B>(device);
    let start = Finetuned { encoder: encoder.clone(), head }.valid();
    let runs = settings.learning_rates.len();
    // The cores are shared between the learning rates' validation passes.
    let threads = (runtime.threads / runs).max(1);
    let job = Job::<B> { fitting: &fitting, validation: &validation, input, threads, settings, device, progress };
    let results: Vec<(Vec<FinetuneCandidate>, Finetuned<B::InnerBackend>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = settings
            .learning_rates
            .iter()
            .map(|&learning_rate| {
                let (job, start) = (&job, start.clone());
                scope.spawn(move || job.run(start, learning_rate))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("a fine-tuning thread panicked")).collect()
    });

    let candidates: Vec<FinetuneCandidate> = results.iter().flat_map(|(candidates, _)| candidates.clone()).collect();
    let chosen = best_index(candidates.iter().map(|candidate| candidate.validation_accuracy));
    let model = results.into_iter().nth(chosen / settings.epochs).expect("one result per learning rate").1;
    let batch_size = settings.batch_size.clamp(1, fitting.len());
    let classifier = FinetunedClassifier {
        model,
        input: input.clone(),
        batch_size,
        threads: runtime.threads,
        device: device.clone(),
    };
    let selection =
        FinetuneSelection { candidates, chosen, train_rows: fitting.len(), validation_rows: validation.len() };
    (classifier, selection)
}

/// The seed's fine-tuning (see [`crate::seed`]): every weight of `encoder` and a head on its
/// average-pooled tokens, trained on all of `train` at fixed settings; nothing is chosen.
pub fn fit_seed<B: AutodiffBackend>(
    encoder: &VisionTransformer<B>,
    train: &LabelledImages,
    classes: usize,
    input: &ImageInput,
    settings: &SeedSettings,
    runtime: &Runtime<'_, B>,
) -> FinetunedClassifier<B::InnerBackend> {
    let device = runtime.device;
    let head = pytorch_linear::<B::InnerBackend>(encoder.dim(), classes, settings.seed, device);
    let start = Finetuned { encoder: encoder.valid(), head };
    let mut model = Finetuned::<B>::from_inner(start).map(&mut RequireGrad);
    let mut optimizer = settings.optimizer().init::<B, Finetuned<B>>();
    let loss = CrossEntropyLossConfig::new().init(device);
    let schedule = settings.schedule(train.len());
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut step = 0;
    for epoch in 0..settings.epochs {
        KeyedRng::new(&[settings.seed, epoch as u64, 0x66_74]).shuffle(&mut order);
        for rows in order.chunks(settings.batch_size.clamp(1, train.len().max(1))) {
            let mut accumulator = GradientsAccumulator::<Finetuned<B>>::new();
            for micro_batch in rows.chunks(settings.micro_batch.max(1)) {
                let images = input.normalise::<B>(&train.select_rows(micro_batch).pixels, micro_batch.len(), device);
                let labels: Vec<i64> = micro_batch.iter().map(|&row| i64::from(train.labels[row])).collect();
                let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [micro_batch.len()]), device);
                // Each micro-batch's mean weighs its share of the batch: the sum is the
                // batch's mean loss, and its gradient the batch's.
                let share = micro_batch.len() as f64 / rows.len() as f64;
                let value = loss.forward(model.forward(images), labels).mul_scalar(share);
                accumulator.accumulate(&model, GradientsParams::from_grads(value.backward(), &model));
                (runtime.progress)(micro_batch.len());
            }
            model = optimizer.step(schedule.lr_at(step), model, accumulator.grads());
            step += 1;
        }
    }
    FinetunedClassifier {
        model: model.valid(),
        input: input.clone(),
        batch_size: settings.micro_batch.max(1),
        threads: runtime.threads,
        device: device.clone(),
    }
}

/// What every learning rate's run shares.
struct Job<'a, B: AutodiffBackend> {
    fitting: &'a LabelledImages,
    validation: &'a LabelledImages,
    input: &'a ImageInput,
    threads: usize,
    settings: &'a FinetuneSettings,
    device: &'a B::Device,
    progress: &'a (dyn Fn(usize) + Sync),
}

impl<B: AutodiffBackend> Job<'_, B> {
    /// One learning rate: its candidate per epoch, and the model after its best epoch (the
    /// first of equals).
    fn run(
        &self,
        start: Finetuned<B::InnerBackend>,
        learning_rate: f64,
    ) -> (Vec<FinetuneCandidate>, Finetuned<B::InnerBackend>) {
        let (fitting, settings, device) = (self.fitting, self.settings, self.device);
        let batch_size = settings.batch_size.clamp(1, fitting.len());
        let total_steps = settings.epochs * fitting.len().div_ceil(batch_size);
        let loss = CrossEntropyLossConfig::new().init(device);
        // Fresh autodiff leaves: this thread's graph shares nothing with the others'.
        let mut model = Finetuned::<B>::from_inner(start).map(&mut RequireGrad);
        let mut encoder_optimizer = AdamW::<VisionTransformer<B>, B>::default();
        let mut head_optimizer = AdamW::<Linear<B>, B>::default();
        let mut order: Vec<usize> = (0..fitting.len()).collect();
        let mut step = 0;
        let mut candidates: Vec<FinetuneCandidate> = Vec::new();
        let mut best = None;
        for epoch in 0..settings.epochs {
            KeyedRng::new(&[settings.seed, epoch as u64, 0x66_74]).shuffle(&mut order);
            for rows in order.chunks(batch_size) {
                let images = self.input.normalise::<B>(&fitting.select_rows(rows).pixels, rows.len(), device);
                let labels: Vec<i64> = rows.iter().map(|&row| i64::from(fitting.labels[row])).collect();
                let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [rows.len()]), device);
                let value = loss.forward(model.forward(images), labels);
                let mut grads = value.backward();
                let encoder_grads = GradientsParams::from_module(&mut grads, &model.encoder);
                let head_grads = GradientsParams::from_module(&mut grads, &model.head);
                let lr = cosine_lr(learning_rate, step, total_steps);
                let decay = settings.weight_decay;
                model = Finetuned {
                    encoder: encoder_optimizer.step(model.encoder, encoder_grads, lr, decay),
                    head: head_optimizer.step(model.head, head_grads, lr * settings.head_lr_scale, decay),
                };
                step += 1;
                (self.progress)(rows.len());
            }
            let frozen = model.valid();
            let classifier = FinetunedClassifier {
                model: frozen,
                input: self.input.clone(),
                batch_size,
                threads: self.threads,
                device: device.clone(),
            };
            let predicted = classifier.predict(self.validation);
            let correct = predicted.iter().zip(&self.validation.labels).filter(|(p, l)| p == l).count();
            let validation_accuracy = correct as f64 / self.validation.len().max(1) as f64;
            if candidates.iter().all(|candidate| validation_accuracy > candidate.validation_accuracy) {
                best = Some(classifier.model);
            }
            candidates.push(FinetuneCandidate { learning_rate, epochs: epoch + 1, validation_accuracy });
        }
        (candidates, best.expect("at least one epoch ran"))
    }
}

/// Marks every float parameter as trainable (a module rebuilt from plain tensors is not).
struct RequireGrad;

impl<B: AutodiffBackend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.require_grad(), mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use jepa_trainer::vit::VitConfig;

    type B = Autodiff<NdArray<f32>>;

    /// 8×8 grey images: class 0 bright on top, class 1 bright below, with noise.
    fn halves(count: usize, seed: u64) -> LabelledImages {
        let mut rng = KeyedRng::new(&[seed]);
        let mut images = LabelledImages { image_len: 64, ..LabelledImages::default() };
        for id in 0..count as u64 {
            let label = rng.below(2) as i32;
            images.ids.push(id);
            images.labels.push(label);
            for row in 0..8 {
                let bright = (row < 4) == (label == 0);
                let base = if bright { 170.0 } else { 80.0 };
                images.pixels.extend((0..8).map(|_| (base + rng.uniform(-60.0, 60.0)) as u8));
            }
        }
        images
    }

    #[test]
    fn fine_tuning_learns_and_keeps_the_best_validation_epoch() {
        let device = Default::default();
        let vit = VitConfig::preset("nano", 8, 4, 1).unwrap();
        // A seeded encoder: an unseeded one is a different network every run.
        let encoder = jepa_trainer::method::seeded(7, &device, |cpu| vit.init(cpu), || vit.init::<B>(&device));
        let input = ImageInput { image_size_px: 8, channels: 1, pixel_mean: vec![0.5], pixel_std: vec![0.25] };
        let settings = FinetuneSettings {
            learning_rates: vec![0.0, 1e-2],
            epochs: 3,
            batch_size: 32,
            train_images: Some(500),
            ..FinetuneSettings::default()
        };
        let runtime = Runtime { threads: 2, device: &device, progress: &|_| () };
        let (classifier, selection) = fit(&encoder, &halves(800, 1), 2, &input, &settings, &runtime);
        // 500 drawn of 800, 50 of them validate; every (lr, epoch) is scored.
        assert_eq!((selection.train_rows, selection.validation_rows), (450, 50));
        let tried: Vec<(f64, usize)> = selection.candidates.iter().map(|c| (c.learning_rate, c.epochs)).collect();
        assert_eq!(tried, [(0.0, 1), (0.0, 2), (0.0, 3), (1e-2, 1), (1e-2, 2), (1e-2, 3)]);
        // A zero learning rate leaves the zero head guessing one class: a real one wins.
        assert_eq!(selection.chosen().learning_rate, 1e-2);
        assert!(selection.candidates[0].validation_accuracy < 0.75, "{:?}", selection.candidates);
        let best = selection.candidates.iter().map(|c| c.validation_accuracy).fold(0.0, f64::max);
        assert_eq!(selection.chosen().validation_accuracy, best);

        let test = halves(300, 2);
        let predicted = classifier.predict(&test);
        let correct = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
        // Chance is 50%.
        assert!(correct as f64 / test.len() as f64 > 0.9, "{correct} of {}", test.len());
    }

    #[test]
    fn the_seed_recipe_learns_and_micro_batches_take_the_batchs_step() {
        let device = Default::default();
        let vit = VitConfig::preset("nano", 8, 4, 1).unwrap();
        let encoder = jepa_trainer::method::seeded(7, &device, |cpu| vit.init(cpu), || vit.init::<B>(&device));
        let input = ImageInput { image_size_px: 8, channels: 1, pixel_mean: vec![0.5], pixel_std: vec![0.25] };
        let runtime = Runtime { threads: 2, device: &device, progress: &|_| () };
        let train = halves(256, 1);
        // Two epochs of 8 steps: a batch taken 12, 12 and 8 images at a time is the same step
        // (each part weighed by its size), up to the order of f32 sums, which Adam amplifies.
        let settings =
            SeedSettings { epochs: 2, warmup_epochs: 1, batch_size: 32, micro_batch: 32, ..SeedSettings::default() };
        let whole = fit_seed(&encoder, &train, 2, &input, &settings, &runtime);
        let split =
            fit_seed(&encoder, &train, 2, &input, &SeedSettings { micro_batch: 12, ..settings.clone() }, &runtime);
        let values = |classifier: &FinetunedClassifier<NdArray<f32>>| {
            let mut head = classifier.model.head.weight.val().into_data().to_vec::<f32>().unwrap();
            head.extend(
                classifier
                    .model
                    .encoder
                    .forward(Tensor::ones([1, 1, 8, 8], &device), None)
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap(),
            );
            head
        };
        let (a, b) = (values(&whole), values(&split));
        let apart = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(apart < 1e-4, "micro-batches of 12 moved the model {apart} away from batches of 32");

        // Its schedule at a toy's learning rate: warm-up, cosine and weight decay learn the task.
        let whole = fit_seed(
            &encoder,
            &train,
            2,
            &input,
            &SeedSettings { epochs: 8, learning_rate: 1e-2, ..settings },
            &runtime,
        );
        let test = halves(300, 2);
        let predicted = whole.predict(&test);
        let correct = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
        assert!(correct as f64 / test.len() as f64 > 0.9, "{correct} of {}", test.len());
    }
}
