mod common;

use std::path::Path;

use common::*;
use jepa_ingest::folder::{FolderOptions, ImageFolder};
use jepa_ingest::{IngestOptions, Progress, ingest};
use jepa_shared::{Dataset, ImageRecord, ShardLayout};

fn save_rgb(path: &Path, width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb(pixel(x, y)));
    image.save(path).unwrap();
}

fn run(root: &Path, out: &Path, options: FolderOptions) -> jepa_ingest::Result<jepa_ingest::IngestReport> {
    let folder = ImageFolder::open(root, options, Progress::hidden())?;
    let ingest_options = IngestOptions { out: out.to_path_buf(), layout: ShardLayout::default(), force: false };
    ingest(&folder, &ingest_options, &Progress::hidden())
}

fn all_images(out: &Path, split: &str) -> Vec<ImageRecord> {
    let dataset = Dataset::open(out).unwrap();
    dataset
        .row_groups(split)
        .unwrap()
        .flat_map(|batch| batch.unwrap().iter().map(|image| image.to_record()).collect::<Vec<_>>())
        .collect()
}

#[test]
fn folder_keeps_png_pixels_exactly_with_labels_from_sorted_class_names() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let gradient = |x: u32, y: u32| [x as u8, y as u8, (x * 10 + y) as u8];
    save_rgb(&root.path().join("zebra/a.png"), 5, 3, gradient);
    save_rgb(&root.path().join("apple/b.png"), 4, 6, |_, _| [1, 2, 3]);
    save_rgb(&root.path().join("apple/a.png"), 2, 2, |_, _| [9, 9, 9]);
    let report = run(root.path(), out.path(), FolderOptions::default()).unwrap();
    assert_eq!(report.manifest.class_names, vec!["apple", "zebra"]);

    let images = all_images(out.path(), "train");
    let summary: Vec<(u64, Option<i16>, u16, u16)> =
        images.iter().map(|image| (image.id, image.label, image.height, image.width)).collect();
    assert_eq!(summary, vec![(0, Some(0), 2, 2), (1, Some(0), 6, 4), (2, Some(1), 3, 5)]);
    let zebra = &images[2];
    for y in 0..3usize {
        for x in 0..5usize {
            let at = (y * 5 + x) * 3;
            assert_eq!(zebra.pixels[at..at + 3], gradient(x as u32, y as u32), "pixel x {x} y {y}");
        }
    }
}

#[test]
fn folder_resize_centre_crops_a_square_without_stretching() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // 32×16: red outer quarters, green centre half. The centre crop is all green.
    save_rgb(
        &root.path().join("wide/x.png"),
        32,
        16,
        |x, _| {
            if (8..24).contains(&x) { [0, 200, 0] } else { [200, 0, 0] }
        },
    );
    let options = FolderOptions { size_px: Some(8), ..FolderOptions::default() };
    run(root.path(), out.path(), options).unwrap();
    let image = &all_images(out.path(), "train")[0];
    assert_eq!((image.height, image.width, image.channels), (8, 8, 3));
    // Squashing 32×16 into 8×8 would put red in half the columns; a centre crop keeps
    // only green, apart from the filter's reach across the crop edge in the outer columns.
    for (index, pixel) in image.pixels.chunks(3).enumerate() {
        let col = index % 8;
        assert!(pixel[1] > 4 * pixel[0], "col {col} is mostly green: {pixel:?}");
        if (1..7).contains(&col) {
            assert!(
                pixel[0] <= 2 && pixel[1].abs_diff(200) <= 5,
                "col {col} is green up to Lanczos ringing: {pixel:?}"
            );
        }
    }
}

#[test]
fn folder_with_split_folders_writes_each_split_and_grey_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    save_rgb(&root.path().join("train/cat/1.png"), 4, 4, |_, _| [90, 90, 90]);
    save_rgb(&root.path().join("train/dog/1.png"), 4, 4, |_, _| [10, 10, 10]);
    save_rgb(&root.path().join("test/dog/1.png"), 4, 4, |_, _| [10, 10, 10]);
    let options = FolderOptions { channels: 1, ..FolderOptions::default() };
    let report = run(root.path(), out.path(), options).unwrap();
    assert_eq!(report.manifest.splits.keys().collect::<Vec<_>>(), vec!["test", "train"]);
    let test = all_images(out.path(), "test");
    assert_eq!(test.len(), 1);
    assert_eq!(test[0].label, Some(1), "dog is class 1 in every split");
    assert_eq!(test[0].channels, 1);
    assert_eq!(test[0].pixels, vec![10; 16]);
}

#[test]
fn unreadable_image_is_skipped_and_counted_or_fails_with_strict() {
    let root = tempfile::tempdir().unwrap();
    save_rgb(&root.path().join("a/good.png"), 3, 3, |_, _| [5, 5, 5]);
    std::fs::write(root.path().join("a/broken.png"), b"not a png at all").unwrap();

    let out = tempfile::tempdir().unwrap();
    let report = run(root.path(), out.path(), FolderOptions::default()).unwrap();
    let train = report.manifest.split("train").unwrap();
    assert_eq!((train.count, train.skipped), (1, 1));
    assert_eq!(all_images(out.path(), "train")[0].id, 1, "ids are file positions: broken.png was 0");

    let strict_out = tempfile::tempdir().unwrap();
    let strict = FolderOptions { strict: true, ..FolderOptions::default() };
    let message = run(root.path(), strict_out.path(), strict).unwrap_err().to_string();
    assert!(message.contains("broken.png") && message.contains("unreadable image"), "{message}");
    assert!(files_below(strict_out.path()).is_empty());
}

#[test]
fn missing_or_empty_folder_is_named() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("gone");
    let message = ImageFolder::open(&missing, FolderOptions::default(), Progress::hidden()).err().unwrap().to_string();
    assert!(message.contains("gone") && message.contains("does not exist"), "{message}");
    let message =
        ImageFolder::open(root.path(), FolderOptions::default(), Progress::hidden()).err().unwrap().to_string();
    assert!(message.contains("no class folders"), "{message}");
}
