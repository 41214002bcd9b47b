//! The backend the binaries run on: burn-cuda with the `cuda` feature, else Burn's ndarray
//! CPU backend. burn-cuda loads the CUDA driver at the first tensor and panics when there is
//! none, so the `cuda` builds look for it first and fail with a sentence ([`check`]).

use std::path::PathBuf;

/// The device backend of `train` and `probe`.
#[cfg(feature = "cuda")]
pub type Device = burn::backend::Cuda<f32>;
/// The device backend of `train` and `probe`.
#[cfg(not(feature = "cuda"))]
pub type Device = burn::backend::NdArray<f32>;
/// [`Device`] with autodiff, for training.
pub type Train = burn::backend::Autodiff<Device>;

/// Whether `binary` can run its first tensor: always on the CPU build; on a `cuda` build,
/// [`check_driver`].
pub fn check(binary: &str) -> Result<(), String> {
    if cfg!(feature = "cuda") { check_driver(binary) } else { Ok(()) }
}

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
