//! burn-cuda loads the CUDA driver at the first tensor and panics when there is none, so
//! the binaries built with the `cuda` feature look for it first and fail with a sentence.

use std::path::PathBuf;

/// `Ok` when a `libcuda` is in `LD_LIBRARY_PATH` or one of the usual folders; otherwise a
/// message for a user of `binary`.
pub fn check_driver(binary: &str) -> Result<(), String> {
    let mut folders: Vec<PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|folder| !folder.is_empty())
        .map(PathBuf::from)
        .collect();
    folders.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/cuda/lib64",
            "/usr/local/cuda/compat",
            "/usr/lib/wsl/lib",
        ]
        .map(PathBuf::from),
    );
    if folders.iter().any(|folder| folder.join("libcuda.so.1").exists() || folder.join("libcuda.so").exists()) {
        return Ok(());
    }
    Err(format!(
        "this `{binary}` was built with the `cuda` feature, but no CUDA driver (libcuda.so.1) was found \
         in LD_LIBRARY_PATH or the usual folders; install the NVIDIA driver or use the CPU build"
    ))
}
