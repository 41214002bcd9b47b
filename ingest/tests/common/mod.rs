//! Fixtures shared by the ingest tests: STL-10-format folders, tar.gz archives and a
//! small HTTP server on 127.0.0.1 that can drop connections and honours `Range`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const SIDE: usize = 96;

/// The value fixture pixel (channel, row, col) of image `index` holds: channel 0 carries
/// the row, channel 1 the column, channel 2 a mix that also depends on the image, so a
/// transposed plane, swapped channels or shuffled images all show up.
pub fn stl10_fixture_value(index: usize, channel: usize, row: usize, col: usize) -> u8 {
    match channel {
        0 => row as u8,
        1 => col as u8,
        _ => ((row * 3 + col * 5 + index * 7) % 251) as u8,
    }
}

/// One image in STL-10's on-disk order: channel planes, each column-major.
pub fn stl10_fixture_image(index: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(3 * SIDE * SIDE);
    for channel in 0..3 {
        for col in 0..SIDE {
            for row in 0..SIDE {
                bytes.push(stl10_fixture_value(index, channel, row, col));
            }
        }
    }
    bytes
}

/// Label (1..=10, as on disk) of fixture image `index`.
pub fn stl10_fixture_label(index: usize) -> u8 {
    (index % 10) as u8 + 1
}

/// Writes `root/stl10_binary/` with the given numbers of images, class names and two folds.
pub fn write_stl10_fixture(root: &Path, train: usize, test: usize, unlabeled: usize) {
    let dir = root.join("stl10_binary");
    std::fs::create_dir_all(&dir).unwrap();
    let images = |count: usize| (0..count).flat_map(stl10_fixture_image).collect::<Vec<u8>>();
    let labels = |count: usize| (0..count).map(stl10_fixture_label).collect::<Vec<u8>>();
    std::fs::write(dir.join("train_X.bin"), images(train)).unwrap();
    std::fs::write(dir.join("train_y.bin"), labels(train)).unwrap();
    std::fs::write(dir.join("test_X.bin"), images(test)).unwrap();
    std::fs::write(dir.join("test_y.bin"), labels(test)).unwrap();
    if unlabeled > 0 {
        std::fs::write(dir.join("unlabeled_X.bin"), images(unlabeled)).unwrap();
    }
    let names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];
    std::fs::write(dir.join("class_names.txt"), names.join("\n") + "\n").unwrap();
    let fold = |start: usize| (start..train).step_by(2).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
    std::fs::write(dir.join("fold_indices.txt"), format!("{}\n{}\n", fold(0), fold(1))).unwrap();
}

/// Packs `root/<top>` into a gzip-compressed tar at `archive`.
pub fn write_tar_gz(root: &Path, top: &str, archive: &Path) {
    let file = std::fs::File::create(archive).unwrap();
    let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    builder.append_dir_all(top, root.join(top)).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
}

/// What the server saw: one entry per request, the `Range` header if any.
#[derive(Default)]
pub struct ServerLog {
    pub ranges: Vec<Option<String>>,
}

/// Serves `body` at any path on 127.0.0.1. The first `drop_first` responses stop after
/// `drop_after` bytes and close the connection, as a flaky network would.
pub struct TestServer {
    pub url: String,
    pub log: Arc<Mutex<ServerLog>>,
}

impl TestServer {
    pub fn start(body: Vec<u8>, drop_first: usize, drop_after: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/stl10_binary.tar.gz", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let server_log = Arc::clone(&log);
        std::thread::spawn(move || {
            for (served, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let cut = (served < drop_first).then_some(drop_after);
                let _ = serve(stream, &body, cut, &server_log);
            }
        });
        Self { url, log }
    }
}

fn serve(mut stream: TcpStream, body: &[u8], cut: Option<usize>, log: &Mutex<ServerLog>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut range = None;
    let mut line = String::new();
    reader.read_line(&mut line)?; // request line
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    log.lock().unwrap().ranges.push(range.clone());
    let start = range
        .as_deref()
        .and_then(|value| value.strip_prefix("bytes="))
        .and_then(|value| value.strip_suffix('-'))
        .and_then(|value| value.parse::<usize>().ok());
    let (status, payload, extra) = match start {
        Some(start) if start >= body.len() => {
            write!(stream, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        Some(start) => (
            "206 Partial Content",
            &body[start..],
            format!("Content-Range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len()),
        ),
        None => ("200 OK", body, String::new()),
    };
    write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n", payload.len())?;
    let sent = cut.map_or(payload.len(), |cut| cut.min(payload.len()));
    stream.write_all(&payload[..sent])?;
    stream.flush()?;
    Ok(())
}

/// Every file below `root`, as paths relative to it, sorted.
pub fn files_below(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// Bad input must fail with an error naming every `needle`, and leave nothing in `out`.
pub fn assert_fails_cleanly<T: std::fmt::Debug>(result: jepa_ingest::Result<T>, needles: &[&str], out: &Path) {
    let message = result.expect_err("bad input must fail").to_string();
    for needle in needles {
        assert!(message.contains(needle), "error `{message}` should mention `{needle}`");
    }
    assert!(files_below(out).is_empty(), "nothing left behind: {:?}", files_below(out));
}

/// Decompresses a gzip file whole (test side, independent of the crate's reader).
pub fn gunzip(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut bytes).unwrap();
    bytes
}
