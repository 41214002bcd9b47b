//! The `ingest` binary as a user meets it: exit codes and messages that name the culprit.

mod common;

use std::process::Command;

use common::*;

fn ingest(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ingest")).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// An STL-10 fixture of 20 train, 10 test and 5 unlabeled images, ingested once.
struct Stl10Fixture {
    _source: tempfile::TempDir,
    out: tempfile::TempDir,
    from: String,
    out_arg: String,
    /// What the ingest returned: success, stdout, stderr.
    first: (bool, String, String),
}

impl Stl10Fixture {
    fn ingested() -> Self {
        let source = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        write_stl10_fixture(source.path(), 20, 10, 5);
        let from = source.path().display().to_string();
        let out_arg = out.path().display().to_string();
        let first = ingest(&["stl10", "--from", &from, "--out", &out_arg, "--quiet"]);
        Self { _source: source, out, from, out_arg, first }
    }
}

#[test]
fn missing_source_folder_exits_non_zero_naming_it() {
    let out = tempfile::tempdir().unwrap();
    let out_arg = out.path().display().to_string();
    let (ok, _, stderr) = ingest(&["fashion-mnist", "--from", "/no/such/fashion", "--out", &out_arg]);
    assert!(!ok);
    assert!(stderr.contains("/no/such/fashion") && stderr.contains("does not exist"), "{stderr}");
    assert!(files_below(out.path()).is_empty());
}

#[test]
fn stl10_ingest_reports_its_splits_then_is_up_to_date_then_verifies() {
    let fixture = Stl10Fixture::ingested();
    let (from, out_arg) = (&fixture.from, &fixture.out_arg);
    let (ok, stdout, stderr) = &fixture.first;
    assert!(ok, "{stderr}");
    for line in ["train:      20 images", "test:      10 images", "unlabeled:       5 images", "2 folds"] {
        assert!(stdout.contains(line), "`{line}` missing from:\n{stdout}");
    }
    let (ok, stdout, _) = ingest(&["stl10", "--from", from, "--out", out_arg, "--quiet"]);
    assert!(ok && stdout.contains("up to date"), "{stdout}");
    let (ok, stdout, stderr) = ingest(&["verify", "--dataset", out_arg]);
    assert!(ok && stdout.contains("35 images in 3 splits; their 3 shard files match"), "{stdout}{stderr}");
}

#[test]
fn verify_refuses_a_manifest_that_claims_images_its_shards_do_not_hold() {
    let fixture = Stl10Fixture::ingested();
    let (out, out_arg) = (fixture.out.path(), &fixture.out_arg);
    assert!(fixture.first.0, "{}", fixture.first.2);
    // A manifest that agrees with itself, but not with the shard it lists.
    let mut manifest = jepa_shared::Manifest::read(out).unwrap().unwrap();
    let train = manifest.splits.get_mut("train").unwrap();
    let held = train.files[0].rows;
    train.count += 70_000;
    train.files[0].rows += 70_000;
    let shard = out.join(&train.files[0].path);
    manifest.write_atomically(out).unwrap();
    let (ok, stdout, stderr) = ingest(&["verify", "--dataset", out_arg]);
    assert!(!ok, "verified a manifest claiming 70,000 more images: {stdout}");
    let said = format!("holds {held} rows but the manifest lists {}", held + 70_000);
    assert!(stderr.contains(&*shard.to_string_lossy()) && stderr.contains(&said), "{stderr}");
}

#[test]
fn stl10_needs_a_folder_or_the_download_flag() {
    let (ok, _, stderr) = ingest(&["stl10", "--out", "x"]);
    assert!(!ok);
    assert!(stderr.contains("--from") && stderr.contains("--download"), "{stderr}");
}
