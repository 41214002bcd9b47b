//! A run's masks as the paper draws them: over real test images at the run's own patch grid,
//! the context the encoder sees in green, each target block in its own colour, white where
//! neither; the masks come from the run's own sampler with the run's seed, as its first
//! training batch would draw them. Needs only the recipe and the dataset, so `make masks`
//! draws a config's masks before anything is trained.

use std::collections::HashSet;
use std::path::Path;

use jepa_eval::error::Result;
use jepa_eval::protocol::TEST_SPLIT;
use jepa_shared::{Dataset, LabelledImages};
use jepa_trainer::Recipe;

use crate::sheet::{Outline, Picture, Sheet, block_colour};

/// Images in the figure by default, drawn as pairs (image, masks) four to a row.
pub const MASK_IMAGES: usize = 8;
const PAIRS_PER_ROW: usize = 4;
const CONTEXT_GREEN: [u8; 3] = [40, 170, 70];
const NEITHER_WHITE: [u8; 3] = [255, 255, 255];
/// How much of the colour covers the image under it.
const TINT: f32 = 0.55;
const SCALE: usize = 6;

/// Draws `count` test images of `recipe`'s dataset with its masks into `out` (PNG).
pub fn draw(recipe: &Recipe, count: usize, out: &Path) -> Result<()> {
    let vit = recipe.encoder();
    let (size, channels, patch_px) = (vit.image_size_px, vit.channels, vit.patch_size_px);
    let dataset = Dataset::open(recipe.dataset())?;
    let images = LabelledImages::read_first(&dataset, TEST_SPLIT, size, channels, count.max(1))?;
    let sampler = recipe.method_info().masks();
    let (rows, columns) = sampler.grid();
    let masks = sampler.sample_batch(recipe.seed(), 0, 0, images.len());
    let blocks = masks.targets.first().map_or(0, Vec::len);

    let mut pairs = Vec::new();
    for image in 0..images.len() {
        let original = Picture::from_planes(images.image(image), size, channels);
        let mut masked = original.clone();
        let context: HashSet<u32> = masks.context[image].iter().copied().collect();
        for patch in 0..rows * columns {
            let target = masks.targets[image].iter().rposition(|block| block.contains(&(patch as u32)));
            match (context.contains(&(patch as u32)), target) {
                // What the encoder sees is drawn as context even where a relaxed mask let it
                // overlap a target.
                (true, _) => masked.tint_patch(patch, patch_px, CONTEXT_GREEN, TINT),
                (false, Some(block)) => masked.tint_patch(patch, patch_px, block_colour(block), TINT),
                (false, None) => masked.fill_patch(patch, patch_px, NEITHER_WHITE),
            }
        }
        for (block, patches) in masks.targets[image].iter().enumerate() {
            // Outlined where a block is a rectangle (multi-block masks), so overlapping
            // blocks stay apart; scattered masks (MAE's) are not.
            let outline = Outline::around(patches, columns, patch_px, block_colour(block));
            let is_rectangle =
                outline.is_some_and(|o| (o.right - o.left) * (o.bottom - o.top) == patches.len() * patch_px * patch_px);
            if is_rectangle {
                masked.outlines.extend(outline);
            }
        }
        pairs.push([original, masked]);
    }

    let mut legend = vec![("context".to_string(), CONTEXT_GREEN)];
    legend.extend((0..blocks).map(|block| {
        let name = if blocks == 1 { "target".to_string() } else { format!("target block {}", block + 1) };
        (name, block_colour(block))
    }));
    legend.push(("neither".into(), NEITHER_WHITE));
    let per_row = PAIRS_PER_ROW.min(pairs.len());
    let sheet = Sheet {
        title: Some(format!(
            "{}: {} masks on the {rows}×{columns} grid of {patch_px}-px patches\ncontext {} patches, target blocks {}×{}",
            recipe.name(),
            recipe.method_info().name(),
            masks.context.first().map_or(0, Vec::len),
            masks.target_block.height,
            masks.target_block.width,
        )),
        column_titles: (0..per_row).flat_map(|_| ["image", "masks"].map(String::from)).collect(),
        rows: pairs.chunks(per_row).map(|row| row.iter().flatten().cloned().collect()).collect(),
        legend,
        scale: SCALE,
    };
    sheet.draw(out)
}
