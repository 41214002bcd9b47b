//! What the predictor imagines, and how often it is right.
//!
//! A method that predicts its teacher's features (I-JEPA) is asked, for held-out test images
//! under masks drawn by the run's own sampler with the run's seed, what the target encoder
//! would say at each target patch. A feature cannot be drawn, so each prediction is shown as
//! the pixels of its cosine-nearest patch in a gallery: every patch of the
//! [`GALLERY_IMAGES`] test images that follow the figure's, embedded by the target encoder as
//! the loss sees them (layer-normed, [`Method::target_tokens`]).
//!
//! Beside the picture, a number: for every predicted patch of the gallery images themselves
//! (under masks of their own), is the target feature of the true patch the nearest of all the
//! gallery's patches (top-1), or among the five nearest (top-5)? Measured for the trained
//! predictor and for the run's random-init one (context encoder and predictor at step 0),
//! against the same trained target encoder.

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use jepa_eval::error::{ProbeError, Result};
use jepa_eval::evaluate::{scan, write_parquet};
use jepa_eval::features::ImageInput;
use jepa_eval::knn::CosineIndex;
use jepa_eval::protocol::TEST_SPLIT;
use jepa_eval::select::argmax;
use jepa_shared::{BatchMasks, Dataset, LabelledImages};
use jepa_trainer::EncoderRole;
use jepa_trainer::batch::DeviceBatch;
use jepa_trainer::checkpoint;
use jepa_trainer::method::{Method, MethodVisitor};
use jepa_trainer::vit::VisionTransformer;
use jepa_trainer::{CheckpointFolder, EncoderKind, ReportFile, Run};
use polars::prelude::*;

use crate::sheet::{Outline, Picture, Sheet, block_colour};

/// Test images drawn as rows of the figure.
pub const FIGURE_IMAGES: usize = 8;
/// Test images after those whose patches make the gallery and the score.
pub const GALLERY_IMAGES: usize = 200;
/// Images per forward pass.
const CHUNK: usize = 50;
/// Mask draws: the figure's masks and the score's come from different epochs of the sampler.
const FIGURE_EPOCH: u64 = 0;
const SCORE_EPOCH: u64 = 1;
/// Each image drawn this many times larger.
const SCALE: usize = 5;
/// Patches the encoder does not see.
const HIDDEN_GREY: [u8; 3] = [128, 128, 128];

/// Feature rows of `dim` values each.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub values: Vec<f32>,
    pub dim: usize,
}

impl Tokens {
    fn of<B: burn::tensor::backend::Backend, const D: usize>(tensor: Tensor<B, D>) -> Self {
        let dim = tensor.dims()[D - 1];
        Self { values: tensor.into_data().convert::<f32>().into_vec::<f32>().expect("f32 features"), dim }
    }

    pub fn len(&self) -> usize {
        self.values.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn extend(&mut self, other: Tokens) {
        self.dim = other.dim;
        self.values.extend(other.values);
    }
}

/// The gallery row nearest (by cosine) to each query row.
pub fn nearest(queries: &Tokens, gallery: &CosineIndex) -> Vec<usize> {
    let mut found = Vec::with_capacity(queries.len());
    gallery.each_query(&queries.values, |_, cosines| found.push(argmax(cosines) as usize));
    found
}

/// For each query row, how many gallery rows are strictly nearer to it than gallery row
/// `truth[query]`: 0 where the truth is the nearest.
pub fn ranks(queries: &Tokens, gallery: &CosineIndex, truth: &[usize]) -> Vec<usize> {
    let mut ranks = Vec::with_capacity(queries.len());
    gallery.each_query(&queries.values, |query, cosines| {
        let own = cosines[truth[query]];
        ranks.push(cosines.iter().filter(|&&cosine| cosine > own).count());
    });
    ranks
}

/// The method's predicted features at every target patch of `images` under `masks`: one
/// [`Tokens`] per block, rows in (image, patch of the block) order. `None` for a method whose
/// targets are pixels.
pub fn predict<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    model: &M::Model,
    images: Tensor<B, 4>,
    masks: &BatchMasks,
    device: &B::Device,
) -> Option<Vec<Tokens>> {
    let batch = DeviceBatch::with_masks(images, masks, device);
    Some(method.predict_features(model, &batch)?.into_iter().map(Tokens::of).collect())
}

/// The teacher's features of every patch of `images`, rows in (image, patch) order.
pub fn gallery_tokens<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    teacher: &VisionTransformer<B::InnerBackend>,
    images: Tensor<B::InnerBackend, 4>,
) -> Option<Tokens> {
    method.target_tokens(teacher, images).map(Tokens::of)
}

/// Top-1 and top-5 retrieval of one predictor.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalScore {
    /// `trained` or `random`.
    pub predictor: String,
    /// The checkpoint whose target encoder (and trained predictor) were scored.
    pub checkpoint: String,
    pub top1: f64,
    pub top5: f64,
    /// The true patch's mean rank among the candidates (0 where it is the nearest): it moves
    /// with every prediction, where top-1 and top-5 count only the nearest few.
    pub mean_rank: f64,
    /// Predicted patches scored.
    pub predictions: usize,
    /// Patches each is ranked among.
    pub candidates: usize,
    pub images: usize,
}

/// What [`write`] produced.
#[derive(Debug, Clone)]
pub struct Retrieval {
    pub scores: Vec<RetrievalScore>,
}

/// The figure and `retrieval.parquet` for `run` (its latest checkpoint), under its probe folder.
pub fn write<B: AutodiffBackend>(run: &Run, device: &B::Device) -> Result<Retrieval> {
    let checkpoint = run.checkpoint(None)?;
    if run.evaluated_role() != EncoderRole::Teacher {
        return Err(not_feature_targets(run));
    }
    // The teacher from the same checkpoint as the predictor and the title, resolved once.
    let teacher = run
        .encoder_in_role::<B>(EncoderKind::Pretrained, Some(EncoderRole::Teacher), Some(&checkpoint.name()), device)?
        .encoder;
    let input = ImageInput::of_run(run)?;
    let dataset = Dataset::open(run.recipe.dataset())?;
    let images = LabelledImages::read_first(
        &dataset,
        TEST_SPLIT,
        input.image_size_px,
        input.channels,
        FIGURE_IMAGES + GALLERY_IMAGES,
    )?;
    if images.len() < FIGURE_IMAGES + 10 {
        return Err(ProbeError::bad(
            run.recipe.dataset(),
            format!("has {} test images; the retrieval figure needs at least {}", images.len(), FIGURE_IMAGES + 10),
        ));
    }
    let figure = images.select_rows(&(0..FIGURE_IMAGES).collect::<Vec<_>>());
    let gallery = images.select_rows(&(FIGURE_IMAGES..images.len()).collect::<Vec<_>>());
    let visitor = Retrieve::<B> {
        run,
        checkpoint: &checkpoint,
        teacher: &teacher,
        input: &input,
        figure: &figure,
        gallery: &gallery,
        device,
    };
    let (rows, scores) = run.recipe.method().visit(visitor)?;

    let score = |name: &str| scores.iter().find(|score| score.predictor == name);
    let mut title = format!(
        "{} at {}: each predicted feature shown as its nearest gallery patch",
        run.recipe.name(),
        checkpoint.name()
    );
    if let (Some(trained), Some(random)) = (score("trained"), score("random")) {
        title += &format!(
            "\ntrue patch nearest among {}: top-1 {:.1}%, top-5 {:.1}% (random-init predictor {:.1}%, {:.1}%)",
            trained.candidates,
            100.0 * trained.top1,
            100.0 * trained.top5,
            100.0 * random.top1,
            100.0 * random.top5
        );
    }
    let blocks = rows.first().map_or(0, |row| row.len().saturating_sub(3));
    let mut column_titles = vec!["original".to_string(), "context".to_string()];
    column_titles.extend((1..=blocks).map(|block| format!("block {block}")));
    column_titles.push("all blocks".into());
    let mut legend = vec![("hidden from the encoder".to_string(), HIDDEN_GREY)];
    legend.extend((0..blocks).map(|block| (format!("target block {}", block + 1), block_colour(block))));
    Sheet { title: Some(title), column_titles, rows, legend, scale: SCALE }
        .draw(&run.folder.report(ReportFile::Retrieval))?;
    write_scores(&run.folder.report(ReportFile::RetrievalScores), &scores)?;
    Ok(Retrieval { scores })
}

fn not_feature_targets(run: &Run) -> ProbeError {
    ProbeError::bad(
        &run.folder.config(),
        format!(
            "trains `{}`, which predicts no teacher features: it has no predictor retrieval",
            run.recipe.method_info().name()
        ),
    )
}

fn write_scores(path: &Path, scores: &[RetrievalScore]) -> Result<()> {
    let mut frame = df!(
        "predictor" => scores.iter().map(|score| score.predictor.clone()).collect::<Vec<_>>(),
        "checkpoint" => scores.iter().map(|score| score.checkpoint.clone()).collect::<Vec<_>>(),
        "top1" => scores.iter().map(|score| score.top1).collect::<Vec<_>>(),
        "top5" => scores.iter().map(|score| score.top5).collect::<Vec<_>>(),
        "mean_rank" => scores.iter().map(|score| score.mean_rank).collect::<Vec<_>>(),
        "predictions" => scores.iter().map(|score| score.predictions as i64).collect::<Vec<_>>(),
        "candidates" => scores.iter().map(|score| score.candidates as i64).collect::<Vec<_>>(),
        "images" => scores.iter().map(|score| score.images as i64).collect::<Vec<_>>(),
    )
    .map_err(ProbeError::polars("retrieval scores"))?;
    write_parquet(path, &mut frame)
}

/// `retrieval.parquet` as rows, when the run has one.
pub fn read_scores(run: &Run) -> Result<Vec<RetrievalScore>> {
    let path = run.folder.report(ReportFile::RetrievalScores);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let frame = scan(&path)?.collect().map_err(ProbeError::polars(path.display().to_string()))?;
    let column = |name: &str| {
        frame
            .column(name)
            .and_then(|column| column.cast(&DataType::Float64))
            .map_err(ProbeError::polars(format!("{}: `{name}`", path.display())))
    };
    let (top1, top5, predictions, candidates, images) =
        (column("top1")?, column("top5")?, column("predictions")?, column("candidates")?, column("images")?);
    // Files written before the mean rank or the checkpoint was kept have no such column.
    let mean_rank = column("mean_rank").ok();
    let checkpoint = frame.column("checkpoint").ok().and_then(|column| column.str().ok().cloned());
    let predictor = frame
        .column("predictor")
        .and_then(|column| column.str().cloned())
        .map_err(ProbeError::polars(format!("{}: `predictor`", path.display())))?;
    let value = |column: &Column, row: usize| column.f64().ok().and_then(|values| values.get(row)).unwrap_or(f64::NAN);
    Ok((0..frame.height())
        .map(|row| RetrievalScore {
            predictor: predictor.get(row).unwrap_or_default().to_string(),
            checkpoint: checkpoint.as_ref().and_then(|column| column.get(row)).unwrap_or("unrecorded").to_string(),
            top1: value(&top1, row),
            top5: value(&top5, row),
            mean_rank: mean_rank.as_ref().map_or(f64::NAN, |column| value(column, row)),
            predictions: value(&predictions, row) as usize,
            candidates: value(&candidates, row) as usize,
            images: value(&images, row) as usize,
        })
        .collect())
}

struct Retrieve<'a, B: AutodiffBackend> {
    run: &'a Run,
    checkpoint: &'a CheckpointFolder,
    teacher: &'a VisionTransformer<B::InnerBackend>,
    input: &'a ImageInput,
    figure: &'a LabelledImages,
    gallery: &'a LabelledImages,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> MethodVisitor<B> for Retrieve<'_, B> {
    type Output = Result<(Vec<Vec<Picture>>, Vec<RetrievalScore>)>;

    fn visit<M: Method<B>>(self, method: &M) -> Self::Output {
        let (run, input, device) = (self.run, self.input, self.device);
        let seed = run.recipe.seed();
        let sampler = method.masks();
        let trained = checkpoint::load_model(self.checkpoint, method.init(seed, device), device)
            .map_err(jepa_trainer::RunError::from)?;
        let random = method.init(seed, device);

        // Each chunk of gallery images normalised once: the teacher embeds them, and each
        // predictor is scored on them.
        let chunks: Vec<(Vec<usize>, Tensor<B, 4>)> = chunk_rows(self.gallery.len())
            .into_iter()
            .map(|rows| {
                let images = input.normalise::<B>(&self.gallery.select_rows(&rows).pixels, rows.len(), device);
                (rows, images)
            })
            .collect();
        let mut tokens = Tokens { values: Vec::new(), dim: 0 };
        for (_, images) in &chunks {
            let embedded = gallery_tokens::<B, M>(method, self.teacher, images.clone().inner());
            tokens.extend(embedded.ok_or_else(|| not_feature_targets(run))?);
        }
        let patches = tokens.len() / self.gallery.len();
        let gallery = CosineIndex::new(&tokens.values, tokens.dim);

        let mut scores = Vec::new();
        for (name, model) in [("trained", &trained), ("random", &random)] {
            let (mut top1, mut top5, mut predictions, mut rank_sum) = (0usize, 0usize, 0usize, 0usize);
            for (rows, images) in &chunks {
                let masks = sampler.sample_batch(seed, SCORE_EPOCH, rows[0] as u64, rows.len());
                let blocks =
                    predict(method, model, images.clone(), &masks, device).ok_or_else(|| not_feature_targets(run))?;
                for (block, predicted) in blocks.iter().enumerate() {
                    let truth: Vec<usize> = rows
                        .iter()
                        .zip(&masks.targets)
                        .flat_map(|(&image, targets)| {
                            targets[block].iter().map(move |&patch| image * patches + patch as usize)
                        })
                        .collect();
                    let ranks = ranks(predicted, &gallery, &truth);
                    top1 += ranks.iter().filter(|&&rank| rank == 0).count();
                    top5 += ranks.iter().filter(|&&rank| rank < 5).count();
                    rank_sum += ranks.iter().sum::<usize>();
                    predictions += ranks.len();
                }
            }
            let share = |hits: usize| hits as f64 / predictions.max(1) as f64;
            scores.push(RetrievalScore {
                predictor: name.into(),
                checkpoint: self.checkpoint.name(),
                top1: share(top1),
                top5: share(top5),
                mean_rank: share(rank_sum),
                predictions,
                candidates: gallery.len(),
                images: self.gallery.len(),
            });
        }

        let masks = sampler.sample_batch(seed, FIGURE_EPOCH, 0, self.figure.len());
        let images = input.normalise::<B>(&self.figure.pixels, self.figure.len(), device);
        let blocks = predict(method, &trained, images, &masks, device).ok_or_else(|| not_feature_targets(run))?;
        let found: Vec<Vec<usize>> = blocks.iter().map(|predicted| nearest(predicted, &gallery)).collect();
        let (size, channels) = (input.image_size_px, input.channels);
        let gallery_pictures: Vec<Picture> = (0..self.gallery.len())
            .map(|image| Picture::from_planes(self.gallery.image(image), size, channels))
            .collect();
        let rows = (0..self.figure.len())
            .map(|image| {
                let original = Picture::from_planes(self.figure.image(image), size, channels);
                let picks: Vec<&[usize]> = found
                    .iter()
                    .zip(&masks.targets[image])
                    .map(|(found, block)| &found[image * block.len()..(image + 1) * block.len()])
                    .collect();
                let grid = Grid { patches, columns: sampler.grid().1, patch_px: run.recipe.encoder().patch_size_px };
                figure_row(original, &masks.context[image], &masks.targets[image], &picks, &gallery_pictures, grid)
            })
            .collect();
        Ok((rows, scores))
    }
}

/// `0..count` in chunks of [`CHUNK`] images.
fn chunk_rows(count: usize) -> Vec<Vec<usize>> {
    (0..count).step_by(CHUNK).map(|start| (start..(start + CHUNK).min(count)).collect()).collect()
}

/// The patch grid of the figure's images.
#[derive(Debug, Clone, Copy)]
struct Grid {
    patches: usize,
    columns: usize,
    patch_px: usize,
}

/// One row of the figure: the original; its context (every other patch grey); for each block,
/// the context with that block's patches taken from the gallery patches `picks[block]`; all
/// blocks at once.
fn figure_row(
    original: Picture,
    context: &[u32],
    targets: &[Vec<u32>],
    picks: &[&[usize]],
    gallery: &[Picture],
    grid: Grid,
) -> Vec<Picture> {
    let Grid { patches, columns, patch_px } = grid;
    let mut seen = original.clone();
    let visible: std::collections::HashSet<u32> = context.iter().copied().collect();
    for patch in 0..patches {
        if !visible.contains(&(patch as u32)) {
            seen.fill_patch(patch, patch_px, HIDDEN_GREY);
        }
    }
    let outline = |block: usize| Outline::around(&targets[block], columns, patch_px, block_colour(block));
    let fill = |picture: &mut Picture, block: usize| {
        for (&patch, &pick) in targets[block].iter().zip(picks[block]) {
            picture.copy_patch(patch as usize, &gallery[pick / patches], pick % patches, patch_px);
        }
    };
    let mut row = vec![original, seen.clone()];
    let mut all = seen.clone();
    for block in 0..targets.len() {
        let mut filled = seen.clone();
        fill(&mut filled, block);
        fill(&mut all, block);
        filled.outlines.extend(outline(block));
        row.push(filled);
    }
    all.outlines.extend((0..targets.len()).filter_map(outline));
    row.push(all);
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;
    use burn::tensor::TensorData;
    use jepa_trainer::ijepa::{IJepaMethod, IJepaSettings};
    use jepa_trainer::method::{MethodInfo, MethodSection};
    use jepa_trainer::predictor::PredictorConfig;
    use jepa_trainer::vit::VitConfig;

    type B = Autodiff<NdArray<f32>>;

    fn tokens(rows: &[[f32; 2]]) -> Tokens {
        Tokens { values: rows.iter().flatten().copied().collect(), dim: 2 }
    }

    #[test]
    fn nearest_and_ranks_follow_the_cosine() {
        let gallery = tokens(&[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]]);
        let gallery = CosineIndex::new(&gallery.values, gallery.dim);
        // Length does not matter, direction does.
        let queries = tokens(&[[10.0, 0.5], [0.1, 3.0], [-2.0, -0.1]]);
        assert_eq!(nearest(&queries, &gallery), vec![0, 1, 2]);
        // Query 0: [1, 1] is second; [-1, 0] is last, behind all three others.
        assert_eq!(ranks(&queries, &gallery, &[3, 1, 0]), vec![1, 0, 3]);
    }

    /// A tiny I-JEPA on 24-px images with 4-px patches: a 6×6 grid.
    fn tiny() -> (IJepaMethod, VitConfig) {
        let encoder = VitConfig::preset("nano", 24, 4, 1).unwrap();
        let mut settings =
            IJepaSettings { predictor: PredictorConfig { dim: 16, depth: 1, heads: 2 }, ..IJepaSettings::default() };
        settings.masks.min_keep = 2;
        let section = toml::Value::try_from(&settings).unwrap();
        (IJepaMethod::from_section(Some(&section), &encoder).unwrap(), encoder)
    }

    #[test]
    fn what_is_retrieved_does_not_depend_on_the_pixels_inside_the_target_blocks() {
        let device = Default::default();
        let (method, encoder) = tiny();
        let model = <IJepaMethod as Method<B>>::init(&method, 3, &device);
        let teacher = <IJepaMethod as Method<B>>::init(&method, 4, &device).context_encoder.valid();
        let count = 4;
        let (size, grid, patch_px) = (encoder.image_size_px, encoder.grid(), encoder.patch_size_px);
        let mut state = 7u64;
        let mut noise = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
                })
                .collect()
        };
        let image =
            |values: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(values, [count, 1, size, size]), &device);
        let gallery_images = Tensor::<NdArray<f32>, 4>::from_data(
            TensorData::new(noise(12 * size * size), [12, 1, size, size]),
            &device,
        );
        let gallery = gallery_tokens::<B, _>(&method, &teacher, gallery_images).unwrap();
        let gallery = CosineIndex::new(&gallery.values, gallery.dim);
        let masks = <IJepaMethod as MethodInfo>::masks(&method).sample_batch(11, 0, 0, count);
        let pixels = noise(count * size * size);
        let retrieved = |pixels: &[f32]| -> Vec<Vec<usize>> {
            let blocks = predict(&method, &model, image(pixels.to_vec()), &masks, &device).unwrap();
            blocks.iter().map(|block| nearest(block, &gallery)).collect()
        };
        let before = retrieved(&pixels);

        // New values for every pixel of every target patch the context does not also hold.
        let mut changed = pixels.clone();
        let mut replaced = 0;
        for (image, targets) in masks.targets.iter().enumerate() {
            for &patch in targets.iter().flatten() {
                if masks.context[image].contains(&patch) {
                    continue;
                }
                let (row, column) = (patch as usize / grid, patch as usize % grid);
                for y in row * patch_px..(row + 1) * patch_px {
                    for x in column * patch_px..(column + 1) * patch_px {
                        changed[image * size * size + y * size + x] += 5.0;
                        replaced += 1;
                    }
                }
            }
        }
        assert!(replaced > 0, "the masks hid no target patch");
        assert_eq!(retrieved(&changed), before, "target pixels leaked into the predictions");

        // The same change to one context patch of each image does reach the predictions.
        let mut context_changed = pixels.clone();
        for (image, context) in masks.context.iter().enumerate() {
            let (row, column) = (context[0] as usize / grid, context[0] as usize % grid);
            for y in row * patch_px..(row + 1) * patch_px {
                for x in column * patch_px..(column + 1) * patch_px {
                    context_changed[image * size * size + y * size + x] += 5.0;
                }
            }
        }
        let features = |pixels: &[f32]| predict(&method, &model, image(pixels.to_vec()), &masks, &device).unwrap();
        assert_ne!(features(&context_changed), features(&pixels), "the context does not reach the predictor");
    }
}
