//! Fetching and unpacking a dataset archive: HTTP(S) download into `<file>.part` with
//! resume (`Range`) and retries, MD5 check, then streaming extraction into a temporary
//! folder that is renamed into place. Nothing half-downloaded or half-extracted ever
//! appears under its final name.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use md5::{Digest, Md5};

use crate::error::{IngestError, Result};
use jepa_shared::Progress;

/// The archive the STL-10 homepage links to.
pub const STL10_URL: &str = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz";
/// Its MD5, as torchvision's `STL10.tgz_md5` lists it.
pub const STL10_MD5: &str = "91f7769df0f17e558f3565bffb0c7dfb";

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Further attempts after a dropped connection or a server error, each resuming.
    pub retries: u32,
    /// Pause before the first retry; doubles after each.
    pub backoff: Duration,
    pub read_timeout: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self { retries: 5, backoff: Duration::from_secs(2), read_timeout: Duration::from_secs(60) }
    }
}

/// Downloads `url` to `dest` unless `dest` already has the expected MD5.
pub fn download(
    url: &str,
    dest: &Path,
    expected_md5: &str,
    options: &DownloadOptions,
    progress: &Progress,
) -> Result<()> {
    let expected_md5 = expected_md5.to_ascii_lowercase();
    if dest.is_file() {
        if md5_file(dest, progress)? == expected_md5 {
            return Ok(());
        }
        progress.warn(&format!("{} does not match its MD5; downloading it again", dest.display()));
        std::fs::remove_file(dest).map_err(IngestError::io(dest))?;
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(IngestError::io(parent))?;
    }
    let part = part_path(dest);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(options.read_timeout))
            .build(),
    );
    let mut backoff = options.backoff;
    let mut attempt = 0;
    loop {
        match fetch_once(&agent, url, &part, progress) {
            Ok(()) => break,
            Err(Attempt::Final(error)) => return Err(error),
            Err(Attempt::Retry(problem)) if attempt < options.retries => {
                attempt += 1;
                progress.warn(&format!(
                    "{url}: {problem}; resuming (attempt {} of {})",
                    attempt + 1,
                    options.retries + 1
                ));
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            Err(Attempt::Retry(problem)) => {
                return Err(IngestError::Download {
                    url: url.into(),
                    problem: format!("{problem}; gave up after {} attempts (rerun to resume)", attempt + 1),
                });
            }
        }
    }
    let actual = md5_file(&part, progress)?;
    if actual != expected_md5 {
        std::fs::remove_file(&part).map_err(IngestError::io(&part))?;
        return Err(IngestError::bad(
            dest,
            format!("MD5 is {actual}, expected {expected_md5}; the download was deleted, rerun to fetch it again"),
        ));
    }
    std::fs::rename(&part, dest).map_err(IngestError::io(dest))
}

pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

enum Attempt {
    /// Worth another try: the connection dropped, a 5xx, a short body.
    Retry(String),
    Final(IngestError),
}

/// One request: resumes from the `.part` file's length; `Ok` once the body is complete.
fn fetch_once(agent: &ureq::Agent, url: &str, part: &Path, progress: &Progress) -> std::result::Result<(), Attempt> {
    let final_error = |problem: String| Attempt::Final(IngestError::Download { url: url.into(), problem });
    let have = std::fs::metadata(part).map(|meta| meta.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|error| Attempt::Retry(error.to_string()))?;
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_string);
    let (start, total) = match status {
        206 => match header("content-range").as_deref().and_then(parse_content_range) {
            Some((start, total)) if start == have => (start, total),
            _ => {
                // A range we did not ask for: drop what we have and start over.
                std::fs::remove_file(part).map_err(|error| Attempt::Final(IngestError::io(part)(error)))?;
                return Err(Attempt::Retry("server sent a different range; restarting from zero".into()));
            }
        },
        200 => (0, header("content-length").and_then(|length| length.parse().ok())),
        // Nothing past what we have: the file is already whole.
        416 if have > 0 => return Ok(()),
        500..=599 | 429 => return Err(Attempt::Retry(format!("server answered HTTP {status}"))),
        _ => return Err(final_error(format!("server answered HTTP {status}"))),
    };
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(start > 0)
        .truncate(start == 0)
        .open(part)
        .map_err(|error| Attempt::Final(IngestError::io(part)(error)))?;
    let bar = progress.bytes(total.unwrap_or(0), "download");
    bar.set_position(start);
    let mut body = response.into_body().into_reader();
    let mut buffer = vec![0u8; 1 << 16];
    let mut written = start;
    let outcome = loop {
        match body.read(&mut buffer) {
            Ok(0) => break Ok(()),
            Ok(read) => {
                if let Err(error) = file.write_all(&buffer[..read]) {
                    break Err(Attempt::Final(IngestError::io(part)(error)));
                }
                written += read as u64;
                bar.set_position(written);
            }
            Err(error) => break Err(Attempt::Retry(format!("connection lost after {written} bytes: {error}"))),
        }
    };
    bar.finish_and_clear();
    file.sync_all().map_err(|error| Attempt::Final(IngestError::io(part)(error)))?;
    outcome?;
    match total {
        Some(total) if written < total => Err(Attempt::Retry(format!("body ended at {written} of {total} bytes"))),
        _ => Ok(()),
    }
}

/// `bytes 100-199/1000` → (100, Some(1000)); `bytes 100-199/*` → (100, None).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, total) = range.split_once('/')?;
    let (start, _) = span.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Lower-case hex MD5 of a file, streamed.
pub fn md5_file(path: &Path, progress: &Progress) -> Result<String> {
    let mut file = File::open(path).map_err(IngestError::io(path))?;
    let bar = progress.bytes(file.metadata().map(|meta| meta.len()).unwrap_or(0), "md5");
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(IngestError::io(path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bar.inc(read as u64);
    }
    bar.finish_and_clear();
    Ok(jepa_shared::checksum::to_hex(&hasher.finalize()))
}

/// Extracts a `.tar.gz` into `into/`, streaming: entries land in a temporary folder first,
/// and each top-level entry is renamed into `into/` only after the whole archive read
/// cleanly. Returns the top-level names.
pub fn extract_tar_gz(archive: &Path, into: &Path, progress: &Progress) -> Result<Vec<PathBuf>> {
    let staging = into.join(".extracting");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(IngestError::io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(IngestError::io(&staging))?;
    let result = (|| {
        let file = File::open(archive).map_err(IngestError::io(archive))?;
        let bar = progress.bytes(file.metadata().map(|meta| meta.len()).unwrap_or(0), "extract");
        let mut tar = tar::Archive::new(GzDecoder::new(bar.wrap_read(std::io::BufReader::new(file))));
        tar.unpack(&staging)
            .map_err(|error| IngestError::bad(archive, format!("corrupt or truncated archive: {error}")))?;
        bar.finish_and_clear();
        let mut placed = Vec::new();
        for entry in std::fs::read_dir(&staging).map_err(IngestError::io(&staging))? {
            let entry = entry.map_err(IngestError::io(&staging))?;
            let target = into.join(entry.file_name());
            if target.is_dir() {
                std::fs::remove_dir_all(&target).map_err(IngestError::io(&target))?;
            } else if target.exists() {
                std::fs::remove_file(&target).map_err(IngestError::io(&target))?;
            }
            std::fs::rename(entry.path(), &target).map_err(IngestError::io(&target))?;
            placed.push(target);
        }
        if placed.is_empty() {
            return Err(IngestError::bad(archive, "archive is empty"));
        }
        Ok(placed)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Makes `<raw_dir>/stl10_binary/` exist: downloads and extracts the archive if needed.
pub fn fetch_stl10(
    raw_dir: &Path,
    url: &str,
    expected_md5: &str,
    options: &DownloadOptions,
    progress: &Progress,
) -> Result<PathBuf> {
    let binary_dir = raw_dir.join("stl10_binary");
    // Extraction renames the folder into place only when complete, so its presence
    // with the training file means a finished earlier run.
    if binary_dir.join("train_X.bin").is_file() {
        return Ok(binary_dir);
    }
    let archive = raw_dir.join("stl10_binary.tar.gz");
    download(url, &archive, expected_md5, options, progress)?;
    extract_tar_gz(&archive, raw_dir, progress)?;
    if !binary_dir.is_dir() {
        return Err(IngestError::bad(&archive, "archive holds no stl10_binary/ folder"));
    }
    Ok(binary_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_start_and_total() {
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, Some(1000))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn md5_of_abc_matches_rfc_1321() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(md5_file(&path, &Progress::hidden()).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
