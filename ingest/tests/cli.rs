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
    let source = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_stl10_fixture(source.path(), 20, 10, 5);
    let from = source.path().display().to_string();
    let out_arg = out.path().display().to_string();
    let (ok, stdout, stderr) = ingest(&["stl10", "--from", &from, "--out", &out_arg, "--quiet"]);
    assert!(ok, "{stderr}");
    for line in ["train:      20 images", "test:      10 images", "unlabeled:       5 images", "2 folds"] {
        assert!(stdout.contains(line), "`{line}` missing from:\n{stdout}");
    }
    let (ok, stdout, _) = ingest(&["stl10", "--from", &from, "--out", &out_arg, "--quiet"]);
    assert!(ok && stdout.contains("up to date"), "{stdout}");
    let (ok, stdout, stderr) = ingest(&["verify", "--dataset", &out_arg]);
    assert!(ok && stdout.contains("3 shard files match"), "{stdout}{stderr}");
}

#[test]
fn stl10_needs_a_folder_or_the_download_flag() {
    let (ok, _, stderr) = ingest(&["stl10", "--out", "x"]);
    assert!(!ok);
    assert!(stderr.contains("--from") && stderr.contains("--download"), "{stderr}");
}
