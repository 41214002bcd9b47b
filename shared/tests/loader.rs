//! The prefetcher end to end on small shard datasets: epoch coverage, resume, faults,
//! bounded memory and the config checks.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{SIDE, collect, config, pixel, shard_paths, small_masks, with_settings, write_dataset};
use jepa_shared::{Batch, CropConfig, Loader, LoaderConfig, LoaderError, LoaderPosition, RankSlice};
use jepa_shared::{BatchMasks, EpochOrder, MaskConfig, MaskSampler, MultiBlockMasks};

fn ids_by_epoch(batches: &[Batch], epoch: u64) -> Vec<u64> {
    batches.iter().filter(|batch| batch.epoch == epoch).flat_map(|batch| batch.ids.iter().copied()).collect()
}

#[test]
fn every_id_appears_exactly_once_per_epoch_and_epochs_differ() {
    let dir = tempfile::tempdir().unwrap();
    // 103 images: 7-row groups, 3 groups per file, so several files and a short last group.
    let dataset = write_dataset(dir.path(), 103, 3, 7, 3);
    assert!(shard_paths(&dataset).len() >= 4);
    let loader_config = with_settings(8, 2, |settings| settings.drop_last = false);
    let batches = collect(&dataset, &loader_config, LoaderPosition::default());

    let epochs: Vec<Vec<u64>> = (0..2).map(|epoch| ids_by_epoch(&batches, epoch)).collect();
    for ids in &epochs {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..103).collect::<Vec<_>>());
    }
    assert_ne!(epochs[0], epochs[1], "two epochs in the same order");
    // 103 = 12 × 8 + 7: thirteen batches per epoch, the last one short.
    assert_eq!(batches.len(), 26);
    assert_eq!(batches[12].len(), 7);
    assert!(
        batches.iter().all(|batch| batch
            .labels
            .iter()
            .zip(&batch.ids)
            .all(|(label, id)| *label == Some((id % 10) as i16)))
    );
}

#[test]
fn drop_last_leaves_out_the_short_batch_and_the_order_is_the_epoch_order() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 50, 1, 10, 2);
    let loader_config = config(8, 1);
    let batches = collect(&dataset, &loader_config, LoaderPosition::default());
    assert_eq!(batches.len(), 6);
    assert!(batches.iter().all(|batch| batch.len() == 8));

    // The stream follows the documented order: files × row groups × shuffle buffer.
    let row_groups = vec![vec![10, 10], vec![10, 10], vec![10]];
    let order = EpochOrder::new(&row_groups, loader_config.seed, 0, loader_config.settings.shuffle_buffer);
    let expected: Vec<u64> = (0..48)
        .map(|position| order.get(position).unwrap())
        .map(|a| (a.file * 20 + a.row_group * 10 + a.row) as u64)
        .collect();
    assert_eq!(ids_by_epoch(&batches, 0), expected);
}

#[test]
fn uncropped_images_arrive_channel_major_with_their_own_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 20, 3, 5, 2);
    let loader_config = with_settings(4, 1, |settings| settings.crop.enabled = false);
    for batch in collect(&dataset, &loader_config, LoaderPosition::default()) {
        assert_eq!((batch.channels, batch.image_size_px), (3, SIDE));
        for (index, &id) in batch.ids.iter().enumerate() {
            let image = batch.image(index);
            for channel in 0..3 {
                for row in 0..SIDE {
                    for col in 0..SIDE {
                        assert_eq!(image[(channel * SIDE + row) * SIDE + col], pixel(id, row, col, channel));
                    }
                }
            }
        }
    }
}

#[test]
fn grey_shards_become_three_equal_channels_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 12, 1, 6, 1);
    let loader_config = config(4, 1);
    let plane = SIDE * SIDE;
    for batch in collect(&dataset, &loader_config, LoaderPosition::default()) {
        for index in 0..batch.len() {
            let image = batch.image(index);
            assert_eq!(&image[..plane], &image[plane..2 * plane]);
            assert_eq!(&image[..plane], &image[2 * plane..]);
        }
    }
    let grey = collect(&dataset, &LoaderConfig { channels: 1, ..loader_config }, LoaderPosition::default());
    assert_eq!(grey[0].images.len(), 4 * plane);
}

#[test]
fn crops_and_masks_change_with_the_epoch_and_batches_are_rectangular() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 40, 3, 10, 2);
    let batches = collect(&dataset, &config(8, 2), LoaderPosition::default());
    for batch in &batches {
        let context = batch.context_idx();
        assert_eq!(context.len() % batch.len(), 0);
        assert_eq!(batch.target_idx().len(), 2);
        assert!(context.iter().all(|&patch| patch < 16));
    }
    // The same image in two epochs: cropped differently (the crops are random per epoch).
    let find = |epoch: u64, id: u64| {
        let batch = batches.iter().find(|batch| batch.epoch == epoch && batch.ids.contains(&id)).unwrap();
        let index = batch.ids.iter().position(|&other| other == id).unwrap();
        batch.image(index).to_vec()
    };
    let differing = (0..40).filter(|&id| find(0, id) != find(1, id)).count();
    assert!(differing > 30, "only {differing} of 40 images changed between epochs");
}

#[test]
fn resume_from_an_offset_reproduces_the_rest_of_the_epoch_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 90, 3, 8, 2);
    let loader_config = config(6, 2);
    let uninterrupted = collect(&dataset, &loader_config, LoaderPosition::default());
    assert_eq!(uninterrupted.len(), 30);

    // Stop after 4 batches, resume from where the loader says it stands.
    let mut loader = Loader::start(&dataset, &loader_config, small_masks(), LoaderPosition::default()).unwrap();
    for _ in 0..4 {
        loader.next_blocking().unwrap().unwrap();
    }
    let position = loader.position();
    drop(loader);
    assert_eq!(position, LoaderPosition { epoch: 0, sample: 24 });
    let resumed = collect(&dataset, &loader_config, position);
    assert_eq!(resumed, uninterrupted[4..]);

    // At the last batch of an epoch the position rolls over to the next epoch.
    let mut loader = Loader::start(&dataset, &loader_config, small_masks(), LoaderPosition::default()).unwrap();
    for _ in 0..15 {
        loader.next_blocking().unwrap().unwrap();
    }
    assert_eq!(loader.position(), LoaderPosition { epoch: 1, sample: 0 });
    drop(loader);
    assert_eq!(collect(&dataset, &loader_config, LoaderPosition { epoch: 1, sample: 0 }), uninterrupted[15..]);

    // An offset inside a batch: the same images, crops and ids from that sample on.
    let resumed = collect(&dataset, &loader_config, LoaderPosition { epoch: 0, sample: 27 });
    let image_len = 3 * SIDE * SIDE;
    let flat = |batches: &[Batch]| -> Vec<(u64, Vec<u8>)> {
        batches.iter().flat_map(|batch| (0..batch.len()).map(|i| (batch.ids[i], batch.image(i).to_vec()))).collect()
    };
    let expected: Vec<(u64, Vec<u8>)> = flat(&uninterrupted).into_iter().skip(27).collect();
    let got = flat(&resumed);
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    assert_eq!(resumed[0].images.len(), 6 * image_len);
}

#[test]
fn a_second_view_is_another_crop_of_the_same_image_and_leaves_the_first_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 40, 3, 10, 2);
    let one_view = collect(&dataset, &config(8, 1), LoaderPosition::default());
    let two_views = LoaderConfig { views: 2, ..config(8, 1) };
    let batches = collect(&dataset, &two_views, LoaderPosition::default());
    assert_eq!(batches.len(), one_view.len());
    let mut differing = 0;
    for (two, one) in batches.iter().zip(&one_view) {
        assert_eq!((two.views, two.ids.clone(), two.masks.clone()), (2, one.ids.clone(), one.masks.clone()));
        assert_eq!(two.images.len(), 2 * one.images.len());
        assert_eq!(two.view(0), &one.images[..], "the first view is the one-view stream's");
        for index in 0..two.len() {
            assert_eq!(two.image(index), one.image(index));
            differing += usize::from(two.view_image(1, index) != two.view_image(0, index));
        }
    }
    assert!(differing > 30, "only {differing} of 40 second views differ from the first");
    // Resuming mid-epoch gives the same views.
    let resumed = collect(&dataset, &two_views, LoaderPosition { epoch: 0, sample: 16 });
    assert_eq!(resumed, batches[2..]);
}

#[test]
fn resume_reads_nothing_that_comes_before_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 60, 3, 10, 1);
    // No row mixing: file order alone decides which shard is finished first.
    let loader_config = with_settings(5, 1, |settings| settings.shuffle_buffer = 0);
    let uninterrupted = collect(&dataset, &loader_config, LoaderPosition::default());
    let order = EpochOrder::new(&vec![vec![10]; 6], loader_config.seed, 0, 0);
    let first_file = order.get(0).unwrap().file as usize;

    // Its 10 images are samples 0..10; resuming at 10 must not touch it at all.
    std::fs::remove_file(&shard_paths(&dataset)[first_file]).unwrap();
    let resumed = collect(&dataset, &loader_config, LoaderPosition { epoch: 0, sample: 10 });
    assert_eq!(resumed, uninterrupted[2..]);
}

/// Runs the stream on a thread and fails the test instead of hanging.
fn drain_with_deadline(
    dataset: &jepa_shared::Dataset,
    loader_config: &LoaderConfig,
    masks: Arc<dyn MaskSampler>,
) -> (usize, Option<LoaderError>, bool) {
    let mut loader = Loader::start(dataset, loader_config, masks, LoaderPosition::default()).unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut good, mut error) = (0, None);
        while let Some(item) = loader.next_blocking() {
            match item {
                Ok(_) => good += 1,
                Err(failure) => {
                    error = Some(failure);
                    break;
                }
            }
        }
        let ended = loader.next_blocking().is_none();
        sender.send((good, error, ended)).unwrap();
    });
    receiver.recv_timeout(Duration::from_secs(60)).expect("the loader hung instead of reporting")
}

#[test]
fn a_shard_missing_mid_epoch_reaches_the_consumer_as_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 60, 3, 10, 1);
    let loader_config = with_settings(5, 1, |settings| settings.shuffle_buffer = 0);
    let order = EpochOrder::new(&vec![vec![10]; 6], loader_config.seed, 0, 0);
    let third_file = order.get(25).unwrap().file as usize;
    let missing = shard_paths(&dataset)[third_file].clone();
    std::fs::remove_file(&missing).unwrap();

    let (good, error, ended) = drain_with_deadline(&dataset, &loader_config, small_masks());
    assert_eq!(good, 4, "the batches before the missing file arrive first");
    let message = error.expect("an error, not a silent skip").to_string();
    assert!(message.contains(&missing.display().to_string()), "{message}");
    assert!(ended, "the stream ends after the error");
}

#[test]
fn a_corrupt_shard_is_an_error_naming_it_with_or_without_checksums() {
    for verify_checksums in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let dataset = write_dataset(dir.path(), 60, 3, 10, 1);
        let loader_config = with_settings(5, 1, |settings| {
            settings.shuffle_buffer = 0;
            settings.verify_checksums = verify_checksums;
        });
        let order = EpochOrder::new(&vec![vec![10]; 6], loader_config.seed, 0, 0);
        let path = shard_paths(&dataset)[order.get(25).unwrap().file as usize].clone();
        // Cut the file in half: the footer is gone.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

        let (good, error, ended) = drain_with_deadline(&dataset, &loader_config, small_masks());
        let message = error.expect("an error").to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        if verify_checksums {
            assert!(message.contains("checksum mismatch"), "{message}");
        }
        assert_eq!((good, ended), (4, true));
    }
}

/// Multi-block masks, except that the batch at `panic_at` makes the worker panic.
struct PanickingMasks {
    inner: MultiBlockMasks,
    panic_at: u64,
}

impl MaskSampler for PanickingMasks {
    fn grid(&self) -> (usize, usize) {
        self.inner.grid()
    }

    fn sample_batch(&self, seed: u64, epoch: u64, first_position: u64, batch_size: usize) -> BatchMasks {
        assert_ne!(first_position, self.panic_at, "deliberate failure in a mask strategy");
        self.inner.sample_batch(seed, epoch, first_position, batch_size)
    }
}

#[test]
fn a_panicking_worker_reaches_the_consumer_as_an_error_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 60, 3, 10, 1);
    let config_masks = MaskConfig { num_targets: 2, min_keep: 2, ..MaskConfig::default() };
    let masks = Arc::new(PanickingMasks { inner: MultiBlockMasks::new(config_masks, 4, 4).unwrap(), panic_at: 15 });
    let (good, error, ended) = drain_with_deadline(&dataset, &config(5, 1), masks);
    assert_eq!(good, 3);
    match error {
        Some(LoaderError::WorkerPanicked { first_position, files, message, .. }) => {
            assert_eq!(first_position, 15);
            assert!(message.contains("deliberate failure"), "{message}");
            let shards: BTreeSet<_> = shard_paths(&dataset).into_iter().collect();
            assert!(!files.is_empty() && files.iter().all(|file| shards.contains(file)), "{files:?}");
        }
        other => panic!("expected a worker panic, got {other:?}"),
    }
    assert!(ended);
}

#[test]
fn a_slow_consumer_never_sees_more_than_the_configured_batches_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 200, 3, 20, 2);
    let loader_config = with_settings(4, 1, |settings| {
        settings.prefetch_batches = 3;
        settings.workers = 2;
    });
    let mut loader = Loader::start(&dataset, &loader_config, small_masks(), LoaderPosition::default()).unwrap();
    // Channel depth + the sequencer's one in hand + per worker one result queued and one finished.
    let bound = loader_config.settings.prefetch_batches + 1 + 2 * loader_config.settings.workers;
    let (mut fullest_queue, mut most_in_flight) = (0, 0);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20));
        fullest_queue = fullest_queue.max(loader.queued());
        most_in_flight = most_in_flight.max(loader.in_flight());
        loader.next_blocking().unwrap().unwrap();
    }
    assert!(fullest_queue <= loader_config.settings.prefetch_batches, "queue reached {fullest_queue}");
    assert_eq!(fullest_queue, loader_config.settings.prefetch_batches, "the slow consumer should find the queue full");
    assert!(most_in_flight <= bound, "{most_in_flight} batches in flight, bound {bound}");
}

#[test]
fn configs_that_cannot_work_are_rejected_before_any_thread_starts() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 30, 3, 10, 1);
    let reject = |loader_config: LoaderConfig, masks: Arc<dyn MaskSampler>| -> String {
        match Loader::start(&dataset, &loader_config, masks, LoaderPosition::default()) {
            Err(error) => error.to_string(),
            Ok(_) => panic!("accepted {loader_config:?}"),
        }
    };
    // A mask config whose context can never keep `min_keep` patches is refused by the sampler.
    let error = MultiBlockMasks::new(MaskConfig { min_keep: 15, ..MaskConfig::default() }, 4, 4).unwrap_err();
    assert_eq!(error.field, "min_keep");

    let message = reject(LoaderConfig { image_size_px: 18, ..config(5, 1) }, small_masks());
    assert!(message.contains("image_size_px") && message.contains("4×4 patch grid"), "{message}");
    let message = reject(config(40, 1), small_masks());
    assert!(message.contains("batch_size") && message.contains("30 images"), "{message}");
    let message = reject(LoaderConfig { channels: 2, ..config(5, 1) }, small_masks());
    assert!(message.contains("channels"), "{message}");
    let message = reject(with_settings(5, 1, |settings| settings.workers = 0), small_masks());
    assert!(message.contains("workers"), "{message}");
    let crop = CropConfig { scale: [0.5, 0.2], ..CropConfig::default() };
    let message = reject(with_settings(5, 1, |settings| settings.crop = crop), small_masks());
    assert!(message.contains("crop.scale"), "{message}");
    let message = reject(with_settings(5, 1, |settings| settings.split = "unlabeled".into()), small_masks());
    assert!(message.contains("unlabeled"), "{message}");
}

#[tokio::test]
async fn the_loader_is_consumed_from_async_code() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 24, 3, 6, 2);
    let mut loader = Loader::start(&dataset, &config(4, 1), small_masks(), LoaderPosition::default()).unwrap();
    let mut ids = Vec::new();
    while let Some(batch) = tokio::time::timeout(Duration::from_secs(30), loader.next()).await.unwrap() {
        ids.extend(batch.unwrap().ids);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..24).collect::<Vec<_>>());
    assert_eq!(loader.stats().images, 24);
}

#[test]
fn the_loader_reports_images_queue_depth_and_wait_through_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 40, 3, 10, 2);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut loader = Loader::start(&dataset, &config(5, 1), small_masks(), LoaderPosition::default()).unwrap();
    let mut calls = 0;
    metrics::with_local_recorder(&recorder, || {
        loop {
            calls += 1;
            if loader.next_blocking().is_none() {
                break;
            }
        }
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str| snapshot.iter().find(|(key, ..)| key.key().name() == name).map(|(.., value)| value);
    assert_eq!(value("loader_images_total"), Some(&DebugValue::Counter(40)));
    match value("loader_wait_seconds") {
        Some(DebugValue::Histogram(waits)) => {
            assert_eq!(waits.len(), calls);
            let total: f64 = waits.iter().map(|wait| wait.0).sum();
            assert!((total - loader.stats().waited.as_secs_f64()).abs() < 1e-6);
        }
        other => panic!("wait histogram: {other:?}"),
    }
    assert!(matches!(value("loader_batches_queued"), Some(DebugValue::Gauge(depth)) if depth.0 <= 2.0));
    assert!(matches!(value("loader_images_per_second"), Some(DebugValue::Gauge(rate)) if rate.0 > 0.0));
}

/// One rank's stream of a run split over `world` ranks.
fn rank_stream(dataset: &jepa_shared::Dataset, loader_config: &LoaderConfig, rank: usize, world: usize) -> Vec<Batch> {
    let ranked = LoaderConfig { ranks: RankSlice { rank, world }, ..loader_config.clone() };
    collect(dataset, &ranked, LoaderPosition::default())
}

#[test]
fn rank_shares_are_disjoint_deterministic_and_together_the_single_process_batch() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 90, 3, 8, 2);
    let loader_config = config(12, 2);
    let whole = collect(&dataset, &loader_config, LoaderPosition::default());
    for world in [2, 3, 4] {
        let shares: Vec<Vec<Batch>> =
            (0..world).map(|rank| rank_stream(&dataset, &loader_config, rank, world)).collect();
        for (index, batch) in whole.iter().enumerate() {
            let parts: Vec<&Batch> = shares.iter().map(|stream| &stream[index]).collect();
            // Equal shares, in rank order, that tile the batch: the same ids, labels, pixels
            // (crops keyed by the image's position) and masks (drawn for the whole batch).
            assert!(parts.iter().all(|part| part.len() == batch.len() / world), "world {world}");
            let ids: Vec<u64> = parts.iter().flat_map(|part| part.ids.clone()).collect();
            assert_eq!(ids, batch.ids, "world {world}, batch {index}");
            let unique: BTreeSet<u64> = ids.iter().copied().collect();
            assert_eq!(unique.len(), ids.len(), "shares overlap");
            let labels: Vec<Option<i16>> = parts.iter().flat_map(|part| part.labels.clone()).collect();
            assert_eq!(labels, batch.labels);
            let images: Vec<u8> = parts.iter().flat_map(|part| part.images.clone()).collect();
            assert_eq!(images, batch.images);
            let contexts: Vec<Vec<u32>> = parts.iter().flat_map(|part| part.masks.context.clone()).collect();
            assert_eq!(contexts, batch.masks.context);
            let targets: Vec<Vec<Vec<u32>>> = parts.iter().flat_map(|part| part.masks.targets.clone()).collect();
            assert_eq!(targets, batch.masks.targets);
            let relaxed: usize = parts.iter().map(|part| part.masks.relaxed_count()).sum();
            assert_eq!(relaxed, batch.masks.relaxed_count());
            for (rank, part) in parts.iter().enumerate() {
                assert_eq!(part.first_position, batch.first_position + (rank * batch.len() / world) as u64);
                assert_eq!(part.next_position, batch.next_position, "the stream's position stays global");
            }
        }
        // The same share again: a function of (seed, epoch, position, rank, world).
        assert_eq!(rank_stream(&dataset, &loader_config, 1, world), shares[1]);
    }
}

#[test]
fn a_stream_stopped_at_one_world_size_resumes_at_another() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 90, 3, 8, 2);
    let loader_config = config(12, 2);
    let whole = collect(&dataset, &loader_config, LoaderPosition::default());
    let share = |batch: &Batch, rank: usize, world: usize| {
        let rows = RankSlice { rank, world }.rows(batch.len());
        (batch.ids[rows.clone()].to_vec(), batch.masks.context[rows].to_vec())
    };

    // Two ranks stop after 3 batches; each says where the (global) stream stands.
    let positions: Vec<LoaderPosition> = (0..2)
        .map(|rank| {
            let ranked = LoaderConfig { ranks: RankSlice { rank, world: 2 }, ..loader_config.clone() };
            let mut loader = Loader::start(&dataset, &ranked, small_masks(), LoaderPosition::default()).unwrap();
            for _ in 0..3 {
                loader.next_blocking().unwrap().unwrap();
            }
            loader.position()
        })
        .collect();
    assert_eq!(positions, [LoaderPosition { epoch: 0, sample: 36 }; 2]);
    // One process continues from there: the rest of the single-process stream.
    assert_eq!(collect(&dataset, &loader_config, positions[0]), whole[3..]);

    // And back: one process stops after 4 batches, three ranks continue.
    let mut loader = Loader::start(&dataset, &loader_config, small_masks(), LoaderPosition::default()).unwrap();
    for _ in 0..4 {
        loader.next_blocking().unwrap().unwrap();
    }
    let position = loader.position();
    drop(loader);
    for rank in 0..3 {
        let ranked = LoaderConfig { ranks: RankSlice { rank, world: 3 }, ..loader_config.clone() };
        let resumed = collect(&dataset, &ranked, position);
        assert_eq!(resumed.len(), whole.len() - 4);
        for (part, batch) in resumed.iter().zip(&whole[4..]) {
            assert_eq!((part.ids.clone(), part.masks.context.clone()), share(batch, rank, 3));
        }
    }
}

#[test]
fn a_global_batch_that_cannot_be_shared_equally_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = write_dataset(dir.path(), 30, 3, 8, 2);
    let uneven = LoaderConfig { ranks: RankSlice { rank: 0, world: 4 }, ..config(6, 1) };
    let Err(error) = Loader::start(&dataset, &uneven, small_masks(), LoaderPosition::default()) else {
        panic!("a batch of 6 over 4 ranks started");
    };
    assert!(error.to_string().contains("`batch_size` is 6, not a multiple of the world size 4"), "{error}");
    let short_last = LoaderConfig {
        ranks: RankSlice { rank: 1, world: 2 },
        ..with_settings(6, 1, |settings| settings.drop_last = false)
    };
    let Err(error) = Loader::start(&dataset, &short_last, small_masks(), LoaderPosition::default()) else {
        panic!("drop_last = false over 2 ranks started");
    };
    assert!(error.to_string().contains("`drop_last` is false"), "{error}");
}
