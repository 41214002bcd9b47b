//! The masks the loader precomputes, as strategies behind [`MaskSampler`]: MAE's uniform
//! random masks ([`RandomMasks`]) and I-JEPA's multi-block masks ([`MultiBlockMasks`]).
//!
//! I-JEPA's multi-block masks (Assran et al. 2023, §3 and the official `MaskCollator`),
//! with two known defects of the official code fixed:
//!
//! - block positions are drawn from `0..=G - h`, so the last row and column of the patch
//!   grid can be covered (the official `randint(0, G - h)` excludes them);
//! - contexts of unequal length are cut to the batch minimum by keeping a **random**
//!   subset of each (then sorted), not the first patches in raster order, which biased the
//!   kept context toward the top rows.
//!
//! As in the official collator, the block *sizes* are drawn once per batch (positions per
//! image), so every target block of a batch has the same number of patches and none is
//! cut. Unlike it, scale and aspect ratio are drawn independently (the official code uses
//! one random number for both). Blocks keep the official cap of `G - 1` patches per side:
//! without it, contexts drawn at scale ≥ 0.93 would cover the whole 14×14 grid and the
//! kept context would rise from the paper's ~25% to ~29% of patches.
//!
//! Everything is a pure function of `(seed, epoch, sample position)`: resume reproduces the
//! masks exactly. Patch indices are raster order, `row * grid_width + col`.

use serde::{Deserialize, Serialize};

use crate::rng::KeyedRng;

/// Sampler settings; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskConfig {
    /// Target blocks per image (M in the paper).
    pub num_targets: usize,
    /// Fraction of the grid each target block covers, drawn in [min, max).
    pub target_scale: [f64; 2],
    /// Target block height / width, drawn in [min, max).
    pub target_aspect: [f64; 2],
    /// Fraction of the grid the context block covers before targets are removed.
    pub context_scale: [f64; 2],
    /// Fewest context patches an image may keep after removing its targets.
    pub min_keep: usize,
    /// Let the context keep patches that are also targets (the paper: no).
    pub allow_overlap: bool,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            num_targets: 4,
            target_scale: [0.15, 0.2],
            target_aspect: [0.75, 1.5],
            context_scale: [0.85, 1.0],
            min_keep: 10,
            allow_overlap: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("mask config: `{field}` {problem}")]
pub struct MaskConfigError {
    pub field: &'static str,
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    pub height: usize,
    pub width: usize,
}

impl BlockSize {
    pub fn area(self) -> usize {
        self.height * self.width
    }
}

/// One batch of masks. All contexts have the same length, and so do all target blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMasks {
    pub target_block: BlockSize,
    pub context_block: BlockSize,
    /// `[image][k]`: kept context patches, sorted.
    pub context: Vec<Vec<u32>>,
    /// `[image][target][k]`: each target block's patches, sorted.
    pub targets: Vec<Vec<Vec<u32>>>,
    /// Per image: whether its context could only meet `min_keep` by overlapping a target.
    pub relaxed: Vec<bool>,
}

impl BatchMasks {
    /// Images whose context could only meet `min_keep` by overlapping a target.
    pub fn relaxed_count(&self) -> usize {
        self.relaxed.iter().filter(|&&relaxed| relaxed).count()
    }

    /// The masks of images `rows` of the batch.
    pub fn rows(self, rows: std::ops::Range<usize>) -> BatchMasks {
        BatchMasks {
            target_block: self.target_block,
            context_block: self.context_block,
            context: self.context[rows.clone()].to_vec(),
            targets: self.targets[rows.clone()].to_vec(),
            relaxed: self.relaxed[rows].to_vec(),
        }
    }

    /// Kept context patches, `[batch, context_len]` flattened row by row.
    pub fn context_flat(&self) -> Vec<u32> {
        self.context.iter().flatten().copied().collect()
    }

    /// Target patches, one `[batch, target_len]` flattened list per target block.
    pub fn targets_flat(&self) -> Vec<Vec<u32>> {
        let blocks = self.targets.first().map_or(0, Vec::len);
        (0..blocks).map(|block| self.targets.iter().flat_map(|image| image[block].iter().copied()).collect()).collect()
    }
}

/// Draws multi-block masks on a `grid_height × grid_width` patch grid.
#[derive(Debug, Clone)]
pub struct MultiBlockMasks {
    config: MaskConfig,
    grid_height: usize,
    grid_width: usize,
}

/// Context placements tried per round before the targets are drawn again.
const CONTEXT_TRIES: usize = 20;
/// Rounds of fresh targets before the non-overlap constraint is relaxed.
const TARGET_ROUNDS: usize = 5;

impl MultiBlockMasks {
    /// Checks the config against the grid before any work: a config that cannot yield
    /// `min_keep` context patches, or blocks that cannot fit, is an error here.
    pub fn new(config: MaskConfig, grid_height: usize, grid_width: usize) -> Result<Self, MaskConfigError> {
        let error = |field, problem: String| Err(MaskConfigError { field, problem });
        if grid_height == 0 || grid_width == 0 {
            return error("grid", format!("is {grid_height}×{grid_width}, expected at least 1×1"));
        }
        for (field, [low, high]) in [("target_scale", config.target_scale), ("context_scale", config.context_scale)] {
            if !(low > 0.0 && low <= high && high <= 1.0) {
                return error(field, format!("is [{low}, {high}], expected 0 < min ≤ max ≤ 1"));
            }
        }
        let [low, high] = config.target_aspect;
        if !(low > 0.0 && low <= high && high.is_finite()) {
            return error("target_aspect", format!("is [{low}, {high}], expected 0 < min ≤ max"));
        }
        if config.num_targets == 0 {
            return error("num_targets", "is 0, expected at least 1".into());
        }
        let sampler = Self { config, grid_height, grid_width };
        let smallest_context = sampler.block_size(sampler.config.context_scale[0], 1.0).area();
        if sampler.config.min_keep == 0 || sampler.config.min_keep > smallest_context {
            return error(
                "min_keep",
                format!(
                    "is {}, but the smallest context block on a {grid_height}×{grid_width} grid holds {smallest_context} \
                     patches (context_scale min {}); expected 1..={smallest_context}",
                    sampler.config.min_keep, sampler.config.context_scale[0]
                ),
            );
        }
        Ok(sampler)
    }

    pub fn config(&self) -> &MaskConfig {
        &self.config
    }

    pub fn num_patches(&self) -> usize {
        self.grid_height * self.grid_width
    }

    /// The official size rule: `max_keep = ⌊G_h·G_w·scale⌋` patches, then
    /// `h = round(√(max_keep·aspect))`, `w = round(√(max_keep/aspect))`, each at most
    /// `G - 1` (on a grid wider than one patch) and at least 1.
    fn block_size(&self, scale: f64, aspect: f64) -> BlockSize {
        let max_keep = (self.num_patches() as f64 * scale).floor();
        let height = (max_keep * aspect).sqrt().round() as usize;
        let width = (max_keep / aspect).sqrt().round() as usize;
        let cap = |grid: usize| grid.saturating_sub(1).max(1);
        BlockSize { height: height.clamp(1, cap(self.grid_height)), width: width.clamp(1, cap(self.grid_width)) }
    }

    fn random_block(&self, rng: &mut KeyedRng, size: BlockSize) -> Vec<u32> {
        // `..=` is the fix: the last row and column are reachable.
        let top = rng.inclusive(0, self.grid_height - size.height);
        let left = rng.inclusive(0, self.grid_width - size.width);
        let mut patches = Vec::with_capacity(size.area());
        for row in top..top + size.height {
            for col in left..left + size.width {
                patches.push((row * self.grid_width + col) as u32);
            }
        }
        patches
    }

    /// The masks for the `batch_size` images at sample positions `first_position..` of
    /// `epoch`. The block sizes are keyed by the batch's first position, each image's
    /// placements by its own position, so a loader that resumes mid-epoch draws the same
    /// masks as one that never stopped.
    pub fn sample_batch(&self, seed: u64, epoch: u64, first_position: u64, batch_size: usize) -> BatchMasks {
        const SIZES: u64 = 1;
        const POSITIONS: u64 = 2;
        const SUBSET: u64 = 3;
        let mut size_rng = KeyedRng::new(&[seed, epoch, first_position, SIZES]);
        let [low, high] = self.config.target_scale;
        let target_scale = size_rng.uniform(low, high);
        let [low, high] = self.config.target_aspect;
        let target_aspect = size_rng.uniform(low, high);
        let [low, high] = self.config.context_scale;
        let context_scale = size_rng.uniform(low, high);
        let target_block = self.block_size(target_scale, target_aspect);
        let context_block = self.block_size(context_scale, 1.0);

        let mut contexts = Vec::with_capacity(batch_size);
        let mut targets = Vec::with_capacity(batch_size);
        let mut relaxed = Vec::with_capacity(batch_size);
        for offset in 0..batch_size {
            let position = first_position + offset as u64;
            let mut rng = KeyedRng::new(&[seed, epoch, position, POSITIONS]);
            let (context, image_targets, was_relaxed) = self.sample_image(&mut rng, target_block, context_block);
            relaxed.push(was_relaxed);
            contexts.push(context);
            targets.push(image_targets);
        }

        // Equal lengths across the batch: keep a random subset of each context (sorted
        // back to raster order), never its first patches.
        let keep = contexts.iter().map(Vec::len).min().unwrap_or(0);
        for (offset, context) in contexts.iter_mut().enumerate() {
            if context.len() > keep {
                let position = first_position + offset as u64;
                KeyedRng::new(&[seed, epoch, position, SUBSET]).shuffle(context);
                context.truncate(keep);
                context.sort_unstable();
            }
        }
        BatchMasks { target_block, context_block, context: contexts, targets, relaxed }
    }

    /// Targets first, then a context block with the targets removed that keeps at least
    /// `min_keep` patches. Bounded: after the retries, the context may overlap targets
    /// (reported as relaxed), which always succeeds since `new` checked that a context
    /// block alone holds `min_keep`.
    fn sample_image(
        &self,
        rng: &mut KeyedRng,
        target_block: BlockSize,
        context_block: BlockSize,
    ) -> (Vec<u32>, Vec<Vec<u32>>, bool) {
        let mut last_targets = Vec::new();
        for _ in 0..TARGET_ROUNDS {
            let targets: Vec<Vec<u32>> =
                (0..self.config.num_targets).map(|_| self.random_block(rng, target_block)).collect();
            let mut is_target = vec![false; self.num_patches()];
            if !self.config.allow_overlap {
                for &patch in targets.iter().flatten() {
                    is_target[patch as usize] = true;
                }
            }
            for _ in 0..CONTEXT_TRIES {
                let context: Vec<u32> = self
                    .random_block(rng, context_block)
                    .into_iter()
                    .filter(|&patch| !is_target[patch as usize])
                    .collect();
                if context.len() >= self.config.min_keep {
                    return (context, targets, false);
                }
            }
            last_targets = targets;
        }
        (self.random_block(rng, context_block), last_targets, true)
    }
}

/// What the loader asks of a masking strategy (multi-block for I-JEPA; other methods bring
/// their own). Masks must be a pure function of the arguments, so a resumed loader draws
/// the same ones whichever thread asks.
pub trait MaskSampler: Send + Sync {
    /// The patch grid, `(rows, columns)`, that mask indices refer to.
    fn grid(&self) -> (usize, usize);

    /// Masks for the `batch_size` images at sample positions `first_position..` of `epoch`.
    fn sample_batch(&self, seed: u64, epoch: u64, first_position: u64, batch_size: usize) -> BatchMasks;
}

impl MaskSampler for MultiBlockMasks {
    fn grid(&self) -> (usize, usize) {
        (self.grid_height, self.grid_width)
    }

    fn sample_batch(&self, seed: u64, epoch: u64, first_position: u64, batch_size: usize) -> BatchMasks {
        MultiBlockMasks::sample_batch(self, seed, epoch, first_position, batch_size)
    }
}

/// MAE's masks (He et al. 2022, §3): each image keeps a uniformly random subset of
/// `round(patches · (1 − mask_ratio))` patches for the encoder and the loss is taken on the
/// rest. In [`BatchMasks`] terms the kept patches are the context and the masked ones the
/// single target block; both are sorted, and the block sizes report the whole grid.
///
/// Like [`MultiBlockMasks`], every draw is keyed by `(seed, epoch, sample position)`.
#[derive(Debug, Clone)]
pub struct RandomMasks {
    mask_ratio: f64,
    grid_height: usize,
    grid_width: usize,
}

impl RandomMasks {
    /// `mask_ratio` must leave at least one patch visible and mask at least one.
    pub fn new(mask_ratio: f64, grid_height: usize, grid_width: usize) -> Result<Self, MaskConfigError> {
        let sampler = Self { mask_ratio, grid_height, grid_width };
        let patches = grid_height * grid_width;
        if !(mask_ratio > 0.0 && mask_ratio < 1.0) {
            return Err(MaskConfigError {
                field: "mask_ratio",
                problem: format!("is {mask_ratio}, expected 0 < r < 1"),
            });
        }
        let visible = sampler.visible_len();
        if visible == 0 || visible == patches {
            return Err(MaskConfigError {
                field: "mask_ratio",
                problem: format!(
                    "is {mask_ratio}: on a {grid_height}×{grid_width} grid it keeps {visible} of {patches} patches; \
                     expected at least one kept and one masked"
                ),
            });
        }
        Ok(sampler)
    }

    /// Patches each image keeps: `round(patches · (1 − mask_ratio))`.
    pub fn visible_len(&self) -> usize {
        ((self.grid_height * self.grid_width) as f64 * (1.0 - self.mask_ratio)).round() as usize
    }
}

impl MaskSampler for RandomMasks {
    fn grid(&self) -> (usize, usize) {
        (self.grid_height, self.grid_width)
    }

    fn sample_batch(&self, seed: u64, epoch: u64, first_position: u64, batch_size: usize) -> BatchMasks {
        /// Key stream apart from the multi-block sampler's.
        const RANDOM: u64 = 4;
        let patches = self.grid_height * self.grid_width;
        let keep = self.visible_len();
        let mut context = Vec::with_capacity(batch_size);
        let mut targets = Vec::with_capacity(batch_size);
        for offset in 0..batch_size {
            let mut order: Vec<u32> = (0..patches as u32).collect();
            KeyedRng::new(&[seed, epoch, first_position + offset as u64, RANDOM]).shuffle(&mut order);
            let mut masked = order.split_off(keep);
            order.sort_unstable();
            masked.sort_unstable();
            context.push(order);
            targets.push(vec![masked]);
        }
        let grid = BlockSize { height: self.grid_height, width: self.grid_width };
        BatchMasks { target_block: grid, context_block: grid, context, targets, relaxed: vec![false; batch_size] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_keep_larger_than_any_context_is_rejected_before_sampling() {
        let config = MaskConfig { min_keep: 200, ..MaskConfig::default() };
        let error = MultiBlockMasks::new(config, 14, 14).unwrap_err();
        assert_eq!(error.field, "min_keep");
        assert!(error.to_string().contains("holds 169 patches"), "{error}");
    }

    #[test]
    fn random_masks_keep_round_25_percent_and_mask_the_rest() {
        // 49 patches: round(12.25) = 12 kept; 196: 49; 50: round(12.5) = 13 (half away from zero).
        for (grid, kept) in [(7, 12), (14, 49)] {
            let sampler = RandomMasks::new(0.75, grid, grid).unwrap();
            let masks = sampler.sample_batch(5, 1, 64, 16);
            for (visible, masked) in masks.context.iter().zip(&masks.targets) {
                assert_eq!(visible.len(), kept);
                assert_eq!(masked.len(), 1);
                let mut all: Vec<u32> = visible.iter().chain(&masked[0]).copied().collect();
                assert!(visible.is_sorted() && masked[0].is_sorted());
                all.sort_unstable();
                assert_eq!(all, (0..(grid * grid) as u32).collect::<Vec<_>>(), "a partition of the grid");
            }
            // Images differ from one another; the same key gives the same masks.
            assert_ne!(masks.context[0], masks.context[1]);
            assert_eq!(masks, sampler.sample_batch(5, 1, 64, 16));
        }
        assert_eq!(RandomMasks::new(0.75, 5, 10).unwrap().visible_len(), 13);
    }

    #[test]
    fn random_masks_resume_mid_batch_and_reject_ratios_that_keep_nothing() {
        let sampler = RandomMasks::new(0.75, 7, 7).unwrap();
        // Each image's draw is keyed by its own position, not by the batch it falls in.
        let whole = sampler.sample_batch(1, 2, 10, 8);
        let tail = sampler.sample_batch(1, 2, 14, 4);
        assert_eq!(whole.context[4..], tail.context[..]);
        assert_ne!(sampler.sample_batch(1, 3, 10, 8), whole, "another epoch draws anew");
        assert_eq!(RandomMasks::new(0.99, 7, 7).unwrap_err().field, "mask_ratio");
        assert_eq!(RandomMasks::new(1.0, 7, 7).unwrap_err().field, "mask_ratio");
    }

    #[test]
    fn block_size_follows_the_official_rule() {
        let sampler = MultiBlockMasks::new(MaskConfig::default(), 14, 14).unwrap();
        // 196 · 0.2 = 39.2 → 39 patches; aspect 1.5: h = round(√58.5) = 8, w = round(√26) = 5.
        assert_eq!(sampler.block_size(0.2, 1.5), BlockSize { height: 8, width: 5 });
        // The official cap: never the whole grid.
        assert_eq!(sampler.block_size(1.0, 1.0), BlockSize { height: 13, width: 13 });
    }
}
