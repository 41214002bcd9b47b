//! `make stl10-smoke`: the seed's whole STL-10 path on the CPU at its real ViT-B/16 geometry
//! (224 px, a 14×14 grid, 4 target blocks of 15–20%, a 6 × 384 predictor), on a small
//! STL-10-format archive cut from real photographs.
//!
//! The archive is built from the photographs of Debian's `mate-backgrounds` (`make setup`
//! installs it; `JEPA_PHOTOS` names another folder of JPEGs): ten photographs, one class
//! each, 96 px crops of each at random places and scales, written in STL-10's binary layout
//! (channel planes, column-major) with its class names and ten folds. It is served over
//! loopback HTTP by a server that cuts the first transfer a third of the way, so the real
//! download code resumes and checks the MD5, then it is ingested, trained with
//! `configs/stl10-seed.toml` (only the steps, the batch and the dataset overridden), and
//! probed: features of every encoder, our linear probe and the seed's, kNN, the seed's
//! fine-tune for one epoch, the figures and the report. Each stage's time is printed.

#[path = "../../ingest/tests/common/mod.rs"]
#[allow(dead_code)]
mod ingest_fixtures;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, NdArray};
use image::imageops::FilterType;
use jepa_eval::evaluate::{
    EvaluateOptions, FinetuneOptions, FinetuneRecipe, KNN, LINEAR, Probe, SEED_FINETUNE, SEED_LINEAR, run_finetune,
    run_probe, write_outcome,
};
use jepa_eval::features::{FeatureOptions, FeatureTable};
use jepa_eval::seed::SeedSettings;
use jepa_ingest::download::{DownloadOptions, fetch_stl10, md5_file};
use jepa_ingest::stl10::Stl10;
use jepa_ingest::{IngestOptions, Progress, ingest};
use jepa_report::pipeline::evaluate_all;
use jepa_report::report::write_report;
use jepa_shared::rng::KeyedRng;
use jepa_shared::{Dataset, ShardLayout};
use jepa_trainer::training::{TrainOptions, train};
use jepa_trainer::{EncoderKind, Recipe, ReportFile, Run};

type Backend = Autodiff<NdArray<f32>>;

/// Images per class of each split: enough for every probe and figure to run (the retrieval
/// figure needs 18 test images), few enough for a ViT-B/16 on two cores.
const TRAIN_PER_CLASS: usize = 3;
const TEST_PER_CLASS: usize = 3;
const UNLABELED: usize = 16;
const CLASSES: usize = 10;
const SIDE: usize = 96;

/// Where the photographs are: `JEPA_PHOTOS`, else `mate-backgrounds`' nature folder.
fn photographs() -> Vec<PathBuf> {
    let folder = std::env::var_os("JEPA_PHOTOS")
        .map_or_else(|| PathBuf::from("/usr/share/backgrounds/mate/nature"), PathBuf::from);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|error| {
            panic!("{}: {error}; install Debian's mate-backgrounds (`make setup`) or set JEPA_PHOTOS", folder.display())
        })
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("jpg")))
        .collect();
    found.sort();
    assert!(found.len() >= CLASSES, "{}: {} JPEGs, need {CLASSES}", folder.display(), found.len());
    found.truncate(CLASSES);
    found
}

/// `count` 96 px crops of `photo` (square, a fifth to a half of its shorter side, anywhere),
/// each in STL-10's on-disk order: channel planes, column-major.
fn crops(photo: &image::RgbImage, count: usize, rng: &mut KeyedRng) -> Vec<u8> {
    let (width, height) = photo.dimensions();
    let mut bytes = Vec::with_capacity(count * 3 * SIDE * SIDE);
    for _ in 0..count {
        let side = (f64::from(width.min(height)) * rng.uniform(0.2, 0.5)) as u32;
        let (left, top) = (rng.below(u64::from(width - side)) as u32, rng.below(u64::from(height - side)) as u32);
        let crop = image::imageops::crop_imm(photo, left, top, side, side).to_image();
        let small = image::imageops::resize(&crop, SIDE as u32, SIDE as u32, FilterType::Triangle);
        for channel in 0..3 {
            for col in 0..SIDE {
                for row in 0..SIDE {
                    bytes.push(small.get_pixel(col as u32, row as u32)[channel]);
                }
            }
        }
    }
    bytes
}

/// `root/stl10_binary/`: train, test and unlabeled crops of the photographs (class = which
/// photograph), class names, and ten folds of the train images.
fn write_archive_folder(root: &Path) {
    let dir = root.join("stl10_binary");
    std::fs::create_dir_all(&dir).unwrap();
    let photos: Vec<image::RgbImage> = photographs()
        .iter()
        .map(|path| {
            let photo = image::open(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            // A quarter of the size is plenty for 96 px crops, and quick to crop from.
            photo.resize(photo.width() / 4, photo.height() / 4, FilterType::Triangle).to_rgb8()
        })
        .collect();
    let mut rng = KeyedRng::new(&[96]);
    let mut split = |per_class: usize| {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for index in 0..per_class * CLASSES {
            let class = index % CLASSES;
            images.extend(crops(&photos[class], 1, &mut rng));
            labels.push(class as u8 + 1);
        }
        (images, labels)
    };
    for (name, per_class) in [("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)] {
        let (images, labels) = split(per_class);
        std::fs::write(dir.join(format!("{name}_X.bin")), images).unwrap();
        std::fs::write(dir.join(format!("{name}_y.bin")), labels).unwrap();
    }
    let unlabeled: Vec<u8> = (0..UNLABELED).flat_map(|index| crops(&photos[index % CLASSES], 1, &mut rng)).collect();
    std::fs::write(dir.join("unlabeled_X.bin"), unlabeled).unwrap();
    let names: Vec<String> =
        photographs().iter().map(|path| path.file_stem().unwrap().to_string_lossy().to_lowercase()).collect();
    std::fs::write(dir.join("class_names.txt"), names.join("\n") + "\n").unwrap();
    // Ten consecutive train images are one of each class: fold f is the ten from image 3f.
    let train = TRAIN_PER_CLASS * CLASSES;
    let folds: Vec<String> = (0..10)
        .map(|fold| (0..CLASSES).map(|offset| ((3 * fold + offset) % train).to_string()).collect::<Vec<_>>().join(" "))
        .collect();
    std::fs::write(dir.join("fold_indices.txt"), folds.join("\n") + "\n").unwrap();
}

/// Runs `work`, prints how long it took under `stage`, and returns what it returned.
fn stage<T>(name: &str, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = work();
    eprintln!("stl10-smoke: {name}: {:.1} s", started.elapsed().as_secs_f64());
    result
}

#[test]
fn the_seeds_stl10_path_runs_end_to_end_at_full_vit_b16_size() {
    // `JEPA_SMOKE_DIR` keeps everything for a look afterwards (`make stl10-smoke` sets it).
    let scratch = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("JEPA_SMOKE_DIR").map(PathBuf::from);
    if let Some(kept) = &kept {
        let _ = std::fs::remove_dir_all(kept);
    }
    let root = kept.as_deref().unwrap_or(scratch.path());

    // An STL-10 archive of real photographs, served by a flaky server.
    let (body, md5) = stage("archive of photographs", || {
        write_archive_folder(&root.join("source"));
        let archive = root.join("source/stl10_binary.tar.gz");
        ingest_fixtures::write_tar_gz(&root.join("source"), "stl10_binary", &archive);
        (std::fs::read(&archive).unwrap(), md5_file(&archive, &Progress::hidden()).unwrap())
    });
    let server = ingest_fixtures::TestServer::start(body.clone(), 1, body.len() / 3);
    let dataset = root.join("datasets/stl10");
    stage("download (cut once, resumed) and ingest", || {
        let options = DownloadOptions { retries: 2, backoff: Duration::from_millis(10), ..DownloadOptions::default() };
        let raw = root.join("download");
        let binary = fetch_stl10(&raw, &server.url, &md5, &options, &Progress::hidden()).unwrap();
        let ingest_options = IngestOptions { out: dataset.clone(), layout: ShardLayout::default(), force: false };
        ingest(&Stl10::open(&binary).unwrap(), &ingest_options, &Progress::hidden()).unwrap();
    });
    let ranges = server.log.lock().unwrap().ranges.clone();
    assert_eq!(ranges, vec![None, Some(format!("bytes={}-", body.len() / 3))], "one cut transfer, then a resume");
    let opened = Dataset::open(&dataset).unwrap();
    let counts: Vec<u64> =
        ["train", "test", "unlabeled"].iter().map(|split| opened.split(split).unwrap().count).collect();
    assert_eq!(counts, [(TRAIN_PER_CLASS * CLASSES) as u64, (TEST_PER_CLASS * CLASSES) as u64, UNLABELED as u64]);

    // The seed's recipe, as shipped, with only the data, the steps and the batch overridden.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/stl10-seed.toml");
    let overrides = [
        format!("dataset={:?}", dataset.display().to_string()),
        "optim.max_steps=2".into(),
        "loader.batch_size=2".into(),
    ];
    let recipe = Recipe::load(&config, &overrides).unwrap();
    let grid = recipe.encoder().grid();
    assert_eq!((recipe.encoder().dim, recipe.encoder().depth, grid), (768, 12, 14), "ViT-B/16 at 224 px");
    let runs = root.join("runs");
    let options = TrainOptions { runs_root: runs.clone(), ..TrainOptions::default() };
    let trained = stage("pre-training, 2 steps of 2 × 4 images", || {
        train::<Backend>(recipe, &options, &Default::default()).unwrap()
    });
    assert_eq!(trained.steps, 2);
    assert!(trained.losses.iter().all(|loss| loss.is_finite() && *loss > 0.0), "{:?}", trained.losses);

    // Every encoder through both frozen probes, the figures and the report.
    let run = Run::open(&trained.run_dir).unwrap();
    let device = Default::default();
    let evaluate = EvaluateOptions {
        features: FeatureOptions { progress: false, batch_size: 8, ..FeatureOptions::default() },
        ..EvaluateOptions::default()
    };
    stage("features of 4 encoders, our linear probe, kNN, figures", || {
        evaluate_all::<Backend>(&run, &evaluate, &device).unwrap()
    });
    stage("the seed's linear probe", || {
        let probe = Probe::SeedLinear(SeedSettings::default());
        let outcome = run_probe(&run, EncoderKind::Pretrained, &probe, &[]).unwrap();
        write_outcome(&run, EncoderKind::Pretrained, &probe, &outcome).unwrap();
    });
    stage("the seed's fine-tune, 1 epoch", || {
        // One step, at the peak learning rate (the warm-up would start it at zero).
        let settings = SeedSettings { epochs: 1, warmup_epochs: 0, micro_batch: 8, ..SeedSettings::default() };
        let recipe = FinetuneRecipe::Seed(settings);
        let options = FinetuneOptions { checkpoint: None, protocols: Vec::new(), threads: 2, progress: false };
        run_finetune::<Backend>(&run, EncoderKind::Pretrained, &recipe, &options, &device).unwrap();
    });
    let report = stage("report", || write_report(&run).unwrap());

    // Features at the encoder's width; the pixels at STL-10's stored 96 px, not 224.
    for (encoder, width) in
        [(EncoderKind::Pretrained, 768), (EncoderKind::Random, 768), (EncoderKind::Pixels, 3 * 96 * 96)]
    {
        let table = FeatureTable::read(&run.folder.features(encoder, "test")).unwrap();
        assert_eq!((table.len(), table.dim), (TEST_PER_CLASS * CLASSES, width), "{encoder}");
        assert!(table.values.iter().all(|value| value.is_finite()), "{encoder}");
    }
    // Every probe scored on test: ours and the seed's on the 5k protocol, the folds for ours.
    let has = |probe: &str, protocol: &str| {
        report.summary.iter().any(|row| {
            row.encoder == "pretrained"
                && row.probe == probe
                && row.protocol == protocol
                && (0.0..=1.0).contains(&row.accuracy)
        })
    };
    for probe in [LINEAR, KNN, SEED_LINEAR, SEED_FINETUNE] {
        assert!(has(probe, "stl10-5k"), "no {probe} on stl10-5k: {:?}", report.summary);
    }
    assert!(has(LINEAR, "stl10-folds") && has(KNN, "stl10-folds"), "{:?}", report.summary);
    assert!(!has(SEED_LINEAR, "stl10-folds"), "the seed's recipe trains on the whole train split only");
    for file in [ReportFile::Masks, ReportFile::Tsne, ReportFile::Retrieval, ReportFile::TrainingCurves] {
        let path = run.folder.report(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    }
    let page = std::fs::read_to_string(&report.markdown).unwrap();
    assert!(page.contains("`linear-seed` and `finetune-seed`") && page.contains("Predictor retrieval"), "{page}");
    eprintln!("stl10-smoke: peak memory {:.0} MiB", peak_memory_mib());
}

/// The process's peak resident set (Linux).
fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
