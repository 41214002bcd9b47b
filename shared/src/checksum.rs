//! SHA-256 computed on the bytes as they stream past, so writing a shard or reading a
//! source never needs a second pass just to checksum it.

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{FileError, Result};

/// Lower-case hex of a digest, the form `sha256sum` prints and the manifest stores.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 0x0f) as usize] as char);
    }
    out
}

/// A writer that forwards to `inner` and hashes and counts every byte written.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// The inner writer, the hex SHA-256 and the byte count of everything written.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, to_hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Accumulates a SHA-256 over several inputs (a source made of many files).
#[derive(Default, Clone)]
pub struct Sha256Stream(Sha256);

impl Sha256Stream {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Feeds a whole file through the hash without holding it in memory; returns its length.
    pub fn update_from_file(&mut self, path: &Path) -> Result<u64> {
        let mut file = std::fs::File::open(path).map_err(FileError::io(path))?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let read = file.read(&mut buffer).map_err(FileError::io(path))?;
            if read == 0 {
                return Ok(total);
            }
            self.0.update(&buffer[..read]);
            total += read as u64;
        }
    }

    pub fn finish_hex(self) -> String {
        to_hex(&self.0.finalize())
    }
}

/// Hex SHA-256 of one file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut stream = Sha256Stream::default();
    stream.update_from_file(path)?;
    Ok(stream.finish_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc_matches_the_fips_180_test_vector() {
        let mut stream = Sha256Stream::default();
        stream.update(b"abc");
        assert_eq!(stream.finish_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn hashing_writer_hashes_what_passes_through_it() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"ab").unwrap();
        writer.write_all(b"c").unwrap();
        let (inner, hex, bytes) = writer.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(bytes, 3);
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
