//! The STL-10 download path against a server on 127.0.0.1: resume after a dropped
//! connection, MD5 check, atomic extraction, then an ingest of what was fetched.

mod common;

use std::time::Duration;

use common::*;
use jepa_ingest::download::{DownloadOptions, download, extract_tar_gz, fetch_stl10, md5_file, part_path};
use jepa_ingest::stl10::Stl10;
use jepa_ingest::{IngestOptions, Progress, ingest};
use jepa_shared::{Dataset, ShardLayout};

fn quick() -> DownloadOptions {
    DownloadOptions { retries: 3, backoff: Duration::from_millis(10), read_timeout: Duration::from_secs(10) }
}

/// A small STL-10-format archive and its MD5 (the crate's `md5_file`, which a unit test
/// pins to the RFC 1321 vector).
fn fixture_archive() -> (tempfile::TempDir, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    write_stl10_fixture(dir.path(), 6, 4, 2);
    let archive = dir.path().join("stl10_binary.tar.gz");
    write_tar_gz(dir.path(), "stl10_binary", &archive);
    let md5 = md5_file(&archive, &Progress::hidden()).unwrap();
    (dir, std::fs::read(&archive).unwrap(), md5)
}

#[test]
fn download_resumes_with_a_range_request_after_the_connection_drops() {
    let (_fixture, body, md5) = fixture_archive();
    let server = TestServer::start(body.clone(), 1, body.len() / 3);
    let into = tempfile::tempdir().unwrap();
    let dest = into.path().join("stl10_binary.tar.gz");
    download(&server.url, &dest, &md5, &quick(), &Progress::hidden()).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part_path(&dest).exists());
    let ranges = server.log.lock().unwrap().ranges.clone();
    assert_eq!(ranges, vec![None, Some(format!("bytes={}-", body.len() / 3))]);
}

#[test]
fn download_continues_a_part_file_left_by_an_earlier_run() {
    let (_fixture, body, md5) = fixture_archive();
    let server = TestServer::start(body.clone(), 0, 0);
    let into = tempfile::tempdir().unwrap();
    let dest = into.path().join("stl10_binary.tar.gz");
    std::fs::write(part_path(&dest), &body[..1000]).unwrap();
    download(&server.url, &dest, &md5, &quick(), &Progress::hidden()).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(server.log.lock().unwrap().ranges, vec![Some("bytes=1000-".to_string())]);

    // Already there with the right MD5: no request at all.
    download(&server.url, &dest, &md5, &quick(), &Progress::hidden()).unwrap();
    assert_eq!(server.log.lock().unwrap().ranges.len(), 1);
}

#[test]
fn download_with_a_bad_md5_fails_and_keeps_nothing() {
    let (_fixture, body, _) = fixture_archive();
    let server = TestServer::start(body, 0, 0);
    let into = tempfile::tempdir().unwrap();
    let dest = into.path().join("stl10_binary.tar.gz");
    let error = download(&server.url, &dest, &"0".repeat(32), &quick(), &Progress::hidden()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("stl10_binary.tar.gz") && message.contains("MD5"), "{message}");
    assert_eq!(files_below(into.path()), Vec::<String>::new());
}

#[test]
fn download_gives_up_after_its_retries_and_names_the_url() {
    let (_fixture, body, md5) = fixture_archive();
    let server = TestServer::start(body.clone(), usize::MAX, 10);
    let into = tempfile::tempdir().unwrap();
    let dest = into.path().join("a.tar.gz");
    let error = download(&server.url, &dest, &md5, &quick(), &Progress::hidden()).unwrap_err();
    assert!(error.to_string().contains(&server.url), "{error}");
    assert_eq!(server.log.lock().unwrap().ranges.len(), 4, "one try and three retries");
    assert!(part_path(&dest).exists(), "what arrived is kept for the next resume");
}

#[test]
fn truncated_archive_fails_extraction_and_extracts_nothing() {
    let (_fixture, body, _) = fixture_archive();
    let into = tempfile::tempdir().unwrap();
    let archive = into.path().join("stl10_binary.tar.gz");
    std::fs::write(&archive, &body[..body.len() / 2]).unwrap();
    let error = extract_tar_gz(&archive, into.path(), &Progress::hidden()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("stl10_binary.tar.gz") && message.contains("corrupt or truncated"), "{message}");
    assert_eq!(files_below(into.path()), vec!["stl10_binary.tar.gz".to_string()]);
}

#[test]
fn fetched_stl10_archive_ingests_like_local_binaries() {
    let (_fixture, body, md5) = fixture_archive();
    let server = TestServer::start(body, 0, 0);
    let out = tempfile::tempdir().unwrap();
    let raw = out.path().join("raw");
    let binary_dir = fetch_stl10(&raw, &server.url, &md5, &quick(), &Progress::hidden()).unwrap();
    assert_eq!(binary_dir, raw.join("stl10_binary"));
    let options = IngestOptions { out: out.path().to_path_buf(), layout: ShardLayout::default(), force: false };
    ingest(&Stl10::open(&binary_dir).unwrap(), &options, &Progress::hidden()).unwrap();
    let dataset = Dataset::open(out.path()).unwrap();
    let counts: Vec<u64> =
        ["train", "test", "unlabeled"].iter().map(|split| dataset.split(split).unwrap().count).collect();
    assert_eq!(counts, vec![6, 4, 2]);
    let first = dataset.row_groups("test").unwrap().next().unwrap().unwrap();
    let image = first.get(3);
    assert_eq!(image.pixels[(10 * SIDE + 20) * 3..(10 * SIDE + 20) * 3 + 2], [10, 20], "row 10, col 20");

    // A second fetch finds the extracted folder and asks the server for nothing.
    fetch_stl10(&raw, "http://127.0.0.1:9/unreachable", &md5, &quick(), &Progress::hidden()).unwrap();
}
