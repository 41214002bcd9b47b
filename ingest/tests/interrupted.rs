//! An ingest that dies half-way must leave no manifest and no half shard behind, must not
//! damage a dataset that was already there, and a rerun must complete.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use jepa_ingest::Progress;
use jepa_ingest::error::IngestError;
use jepa_ingest::source::{Source, SourceItem, SplitInput};
use jepa_ingest::stl10::Stl10;
use jepa_ingest::{IngestOptions, ingest};
use jepa_shared::{Dataset, ImageRecord, Manifest, ShardLayout, SourceInfo};

/// A source of two splits of tiny grey images whose second split fails at image `fail_at`.
struct FlakySource {
    fail_at: Option<u64>,
}

impl Source for FlakySource {
    fn dataset_name(&self) -> &str {
        "flaky"
    }

    fn fingerprint(&self, _: &Progress) -> jepa_ingest::Result<SourceInfo> {
        Ok(SourceInfo {
            kind: "flaky".into(),
            location: "memory".into(),
            sha256: "0".repeat(64),
            options: Default::default(),
        })
    }

    fn class_names(&self) -> Vec<String> {
        vec!["only".into()]
    }

    fn splits(&self) -> jepa_ingest::Result<Vec<SplitInput<'_>>> {
        let split = |name: &str, fail_at: Option<u64>| SplitInput {
            name: name.into(),
            count: 30,
            items: Box::new((0..30u64).map(move |id| {
                if Some(id) == fail_at {
                    return Err(IngestError::bad("memory", format!("simulated failure at image {id}")));
                }
                Ok(SourceItem::Image(ImageRecord {
                    id,
                    label: Some(0),
                    height: 2,
                    width: 2,
                    channels: 1,
                    pixels: vec![id as u8; 4],
                }))
            })),
            folds: None,
        };
        Ok(vec![split("train", None), split("test", self.fail_at)])
    }
}

fn options(out: &Path, force: bool) -> IngestOptions {
    IngestOptions {
        out: out.to_path_buf(),
        // Files of 8 images: the failing split has finished files before it fails.
        layout: ShardLayout { rows_per_group: 4, max_file_bytes: 32, ..ShardLayout::default() },
        force,
    }
}

#[test]
fn error_mid_split_leaves_no_manifest_and_no_shard_and_a_rerun_completes() {
    let out = tempfile::tempdir().unwrap();
    let error =
        ingest(&FlakySource { fail_at: Some(21) }, &options(out.path(), false), &Progress::hidden()).unwrap_err();
    assert!(error.to_string().contains("simulated failure at image 21"), "{error}");
    assert_eq!(files_below(out.path()), Vec::<String>::new(), "no manifest, no shard, no temporary file");

    let report = ingest(&FlakySource { fail_at: None }, &options(out.path(), false), &Progress::hidden()).unwrap();
    assert!(report.written);
    let dataset = Dataset::open(out.path()).unwrap();
    dataset.verify().unwrap();
    for split in ["train", "test"] {
        let ids: Vec<u64> = dataset
            .row_groups(split)
            .unwrap()
            .flat_map(|batch| batch.unwrap().iter().map(|image| image.id).collect::<Vec<_>>())
            .collect();
        assert_eq!(ids, (0..30).collect::<Vec<_>>());
    }
    assert_eq!(dataset.split("test").unwrap().files.len(), 4, "30 images in files of 8");
}

#[test]
fn failed_rewrite_keeps_the_previous_dataset_intact() {
    let out = tempfile::tempdir().unwrap();
    let good = ingest(&FlakySource { fail_at: None }, &options(out.path(), false), &Progress::hidden()).unwrap();
    let before = files_below(out.path());
    ingest(&FlakySource { fail_at: Some(3) }, &options(out.path(), true), &Progress::hidden()).unwrap_err();
    assert_eq!(files_below(out.path()), before, "the staging folder is gone, the old files stay");
    assert_eq!(Manifest::read(out.path()).unwrap().unwrap(), good.manifest);
    Dataset::open(out.path()).unwrap().verify().unwrap();
}

#[test]
fn killed_ingest_process_leaves_no_manifest_and_a_rerun_completes() {
    let source = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_stl10_fixture(source.path(), 1_500, 500, 0);
    let binary = env!("CARGO_BIN_EXE_ingest");
    let args = |out: &Path| {
        vec![
            "stl10".to_string(),
            "--from".into(),
            source.path().display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--rows-per-group".into(),
            "50".into(),
            "--max-file-mib".into(),
            "2".into(),
            "--quiet".into(),
        ]
    };
    let mut child = Command::new(binary).args(args(out.path())).spawn().unwrap();
    // Kill it once it has finished at least one shard and is writing the next.
    let started = Instant::now();
    let first_shard = out.path().join(".staging/shards/train/part-00000.parquet");
    while !first_shard.exists() {
        assert!(child.try_wait().unwrap().is_none(), "ingest finished before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(60), "ingest never wrote a shard");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.path().join("manifest.json").exists(), "a killed ingest has no manifest");
    assert!(!out.path().join("shards").exists(), "nothing outside the staging folder");
    assert!(Dataset::open(out.path()).is_err(), "readers see no dataset");

    let status = Command::new(binary).args(args(out.path())).status().unwrap();
    assert!(status.success());
    let leftovers: Vec<String> = files_below(out.path())
        .into_iter()
        .filter(|path| path.starts_with(".staging") || path.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "the rerun clears the killed run's files: {leftovers:?}");
    let dataset = Dataset::open(out.path()).unwrap();
    dataset.verify().unwrap();
    assert_eq!(dataset.split("train").unwrap().count, 1_500);
    assert_eq!(dataset.split("test").unwrap().count, 500);
    // Stl10::open is what the binary used; the manifest records that very folder.
    assert_eq!(dataset.manifest().source.location, Stl10::open(source.path()).unwrap().dir().display().to_string());
}
