use jepa_shared::masks::{BatchMasks, MaskConfig, MultiBlockMasks};
use proptest::prelude::*;

const GRID: usize = 14;

fn paper() -> MultiBlockMasks {
    MultiBlockMasks::new(MaskConfig::default(), GRID, GRID).unwrap()
}

fn overlaps(masks: &BatchMasks, image: usize) -> bool {
    let context: std::collections::HashSet<u32> = masks.context[image].iter().copied().collect();
    masks.targets[image].iter().flatten().any(|patch| context.contains(patch))
}

fn config_strategy() -> impl Strategy<Value = (MaskConfig, usize, usize)> {
    (4usize..20, 4usize..20, 1usize..6, 0.05f64..0.3, 0.0f64..0.1, 0.5f64..1.0, 0.0f64..1.0, 0.6f64..1.0).prop_map(
        |(grid_height, grid_width, num_targets, scale, scale_span, aspect, aspect_span, context)| {
            let config = MaskConfig {
                num_targets,
                target_scale: [scale, (scale + scale_span).min(1.0)],
                target_aspect: [aspect, aspect + aspect_span],
                context_scale: [context, 1.0],
                min_keep: 1,
                allow_overlap: false,
            };
            (config, grid_height, grid_width)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn masks_stay_inside_the_grid_with_equal_lengths_and_no_overlap(
        (config, grid_height, grid_width) in config_strategy(),
        seed in any::<u64>(),
        epoch in 0u64..3,
        batch_index in 0u64..1000,
        batch_size in 1usize..12,
    ) {
        let sampler = MultiBlockMasks::new(config.clone(), grid_height, grid_width).unwrap();
        let masks = sampler.sample_batch(seed, epoch, batch_index * batch_size as u64, batch_size);
        let patches = (grid_height * grid_width) as u32;
        prop_assert_eq!(masks.context.len(), batch_size);
        let context_len = masks.context[0].len();
        prop_assert!(context_len >= 1);
        let target_len = masks.target_block.height * masks.target_block.width;
        for image in 0..batch_size {
            prop_assert_eq!(masks.context[image].len(), context_len, "contexts rectangular");
            prop_assert!(masks.context[image].windows(2).all(|pair| pair[0] < pair[1]), "sorted, no repeats");
            prop_assert_eq!(masks.targets[image].len(), config.num_targets);
            for block in &masks.targets[image] {
                prop_assert_eq!(block.len(), target_len, "target blocks are whole rectangles");
                // A whole h×w rectangle: rows and columns are contiguous.
                let rows: Vec<u32> = block.iter().map(|patch| patch / grid_width as u32).collect();
                let cols: Vec<u32> = block.iter().map(|patch| patch % grid_width as u32).collect();
                prop_assert_eq!(rows.iter().max().unwrap() - rows.iter().min().unwrap() + 1, masks.target_block.height as u32);
                prop_assert_eq!(cols.iter().max().unwrap() - cols.iter().min().unwrap() + 1, masks.target_block.width as u32);
            }
            for &patch in masks.context[image].iter().chain(masks.targets[image].iter().flatten()) {
                prop_assert!(patch < patches, "patch {} outside a {}×{} grid", patch, grid_height, grid_width);
            }
        }
        // Relaxation is the documented last resort; without it, targets never reach the context.
        for image in 0..batch_size {
            if !masks.relaxed[image] {
                prop_assert!(!overlaps(&masks, image));
            }
        }
    }

    #[test]
    fn block_sizes_stay_in_range_up_to_rounding(seed in any::<u64>(), batch_index in 0u64..10_000) {
        let masks = paper().sample_batch(seed, 0, batch_index, 1);
        let config = MaskConfig::default();
        let (height, width) = (masks.target_block.height as f64, masks.target_block.width as f64);
        let patches = (GRID * GRID) as f64;
        // h and w are each rounded from √(k·a) and √(k/a): a box of ±0.5 around them must
        // contain a block whose area and aspect are in range.
        let area_low = (height - 0.5) * (width - 0.5);
        let area_high = (height + 0.5) * (width + 0.5);
        prop_assert!(area_high >= (patches * config.target_scale[0]).floor(), "{height}×{width} too small");
        prop_assert!(area_low <= patches * config.target_scale[1], "{height}×{width} too large");
        prop_assert!((height + 0.5) / (width - 0.5) >= config.target_aspect[0], "{height}×{width} too flat");
        prop_assert!((height - 0.5) / (width + 0.5) <= config.target_aspect[1], "{height}×{width} too tall");
        let context = masks.context_block;
        prop_assert_eq!(context.height, context.width, "the context block is square");
        prop_assert_eq!(context.height, 13, "85–100% of 14×14, capped at G - 1");
    }
}

#[test]
fn paper_settings_never_need_relaxation_on_a_14_by_14_grid() {
    // The smallest context (13×13 = 169) minus four of the largest targets (4 × 39)
    // still leaves 13 ≥ min_keep = 10 patches, so the constraint can always be met.
    let sampler = paper();
    for batch_index in 0..200 {
        let masks = sampler.sample_batch(3, 0, batch_index * 16, 16);
        assert_eq!(masks.relaxed_count(), 0);
        for image in 0..16 {
            assert!(!overlaps(&masks, image));
        }
    }
}

#[test]
fn every_row_and_column_is_reached_including_the_last() {
    let sampler = paper();
    let mut target_rows = [0usize; GRID];
    let mut target_cols = [0usize; GRID];
    let mut context_rows = [0usize; GRID];
    let mut context_cols = [0usize; GRID];
    for batch_index in 0..100 {
        let masks = sampler.sample_batch(11, 0, batch_index * 8, 8);
        for image in 0..8 {
            for &patch in masks.targets[image].iter().flatten() {
                target_rows[patch as usize / GRID] += 1;
                target_cols[patch as usize % GRID] += 1;
            }
            for &patch in &masks.context[image] {
                context_rows[patch as usize / GRID] += 1;
                context_cols[patch as usize % GRID] += 1;
            }
        }
    }
    for counts in [target_rows, target_cols, context_rows, context_cols] {
        assert!(counts.iter().all(|&count| count > 0), "{counts:?}");
    }
}

#[test]
fn same_key_gives_the_same_masks_and_other_keys_differ() {
    let sampler = paper();
    assert_eq!(sampler.sample_batch(5, 2, 9, 4), sampler.sample_batch(5, 2, 9, 4));
    assert_ne!(sampler.sample_batch(5, 2, 9, 4), sampler.sample_batch(6, 2, 9, 4));
    assert_ne!(sampler.sample_batch(5, 2, 9, 4), sampler.sample_batch(5, 3, 9, 4));
    assert_ne!(sampler.sample_batch(5, 2, 9, 4), sampler.sample_batch(5, 2, 13, 4));
}

/// The numbers the paper's figure rests on, measured on the paper's setting (14×14 grid,
/// batch 128): kept context ≈ 25% of patches, each target 15–20%, and the kept context
/// centred on the grid rather than pushed to the top rows.
#[test]
fn paper_setting_keeps_a_quarter_of_the_grid_as_context_centred_on_the_grid() {
    let sampler = paper();
    let batches = 40;
    let (mut context_fraction, mut target_fraction, mut row_sum, mut row_count) = (0.0, 0.0, 0.0, 0usize);
    for batch_index in 0..batches {
        let masks = sampler.sample_batch(2023, 0, batch_index * 128, 128);
        context_fraction += masks.context[0].len() as f64 / 196.0;
        target_fraction += masks.target_block.area() as f64 / 196.0;
        for context in &masks.context {
            for &patch in context {
                row_sum += (patch as usize / GRID) as f64;
                row_count += 1;
            }
        }
    }
    let context_fraction = context_fraction / batches as f64;
    let target_fraction = target_fraction / batches as f64;
    let mean_row = row_sum / row_count as f64;
    println!(
        "14×14, batch 128: kept context {:.1}% of patches, target block {:.1}%, mean kept row {mean_row:.2} (centre 6.5)",
        100.0 * context_fraction,
        100.0 * target_fraction
    );
    assert!((0.20..=0.30).contains(&context_fraction), "kept context {context_fraction}");
    assert!((0.14..=0.21).contains(&target_fraction), "target block {target_fraction}");
    assert!((mean_row - 6.5).abs() < 0.25, "mean kept row {mean_row}");
}
