//! The backend the binaries run on: burn-cuda with the `cuda` feature, else Burn's ndarray
//! CPU backend. burn-cuda loads the CUDA driver at the first tensor and panics when there is
//! none, so the `cuda` builds load it first and fail with a sentence ([`check`]).
//!
//! The `cuda` build runs with Burn's kernel fusion and autotuning. cubecl compiles every
//! kernel at run time and times the candidates of tunable ones on first use; both results
//! are kept on disk ([`kernel_cache_dir`]), so only a first run pays for them.

use std::path::PathBuf;

/// The CPU backend.
pub type Cpu = burn::backend::NdArray<f32>;
/// The device backend of `train` and `probe`.
#[cfg(feature = "cuda")]
pub type Device = burn::backend::Cuda<f32>;
/// The device backend of `train` and `probe`.
#[cfg(not(feature = "cuda"))]
pub type Device = burn::backend::NdArray<f32>;
/// [`Device`] with autodiff, for training.
pub type Train = burn::backend::Autodiff<Device>;

/// The CUDA driver library, as the CUDA loader names it.
pub const CUDA_DRIVER: &str = "libcuda.so.1";

/// Whether `binary` can run its first tensor: always on the CPU build; on a `cuda` build,
/// [`check_driver`], then the kernel caches are pointed at [`kernel_cache_dir`].
pub fn check(binary: &str) -> Result<(), String> {
    if cfg!(feature = "cuda") {
        check_driver(binary, CUDA_DRIVER)?;
        #[cfg(feature = "cuda")]
        use_kernel_cache(&kernel_cache_dir());
    }
    Ok(())
}

/// `Ok` when the dynamic loader can load `library` (searching `LD_LIBRARY_PATH`, the
/// loader cache and the default folders, as it will for CUDA itself); otherwise one
/// sentence for a user of `binary`.
pub fn check_driver(binary: &str, library: &str) -> Result<(), String> {
    // SAFETY: loading the driver library runs its initialisers, which the CUDA runtime
    // would run moments later anyway; nothing is called through it here.
    match unsafe { libloading::Library::new(library) } {
        Ok(_) => Ok(()),
        Err(error) => Err(format!(
            "this `{binary}` was built with the `cuda` feature, but the CUDA driver library {library} could not \
             be loaded ({error}); install the NVIDIA driver (or add its folder to LD_LIBRARY_PATH), or use the \
             CPU build"
        )),
    }
}

/// Where the `cuda` build keeps compiled kernels and autotune results: `$JEPA_KERNEL_CACHE`,
/// else `target/kernel-cache` under the working directory (the project root, for `make`).
pub fn kernel_cache_dir() -> PathBuf {
    std::env::var_os("JEPA_KERNEL_CACHE").map_or_else(|| PathBuf::from("target").join("kernel-cache"), PathBuf::from)
}

#[cfg(feature = "cuda")]
fn use_kernel_cache(folder: &std::path::Path) {
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
    // What cubecl would read itself (a cubecl.toml, its environment variables), with the
    // caches moved; it must be set before the first kernel reads it.
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    config.autotune.cache = CacheConfig::File(folder.join("autotune"));
    config.compilation.cache = Some(CacheConfig::File(folder.join("compiled")));
    CubeClRuntimeConfig::set(config);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_driver_is_one_sentence_naming_the_library_and_the_way_out() {
        let message = check_driver("train", "libjepa-no-such-driver.so.1").unwrap_err();
        assert!(message.contains("libjepa-no-such-driver.so.1"), "{message}");
        assert!(message.contains("`train`") && message.contains("CPU build"), "{message}");
        assert_eq!(message.matches(". ").count(), 0, "one sentence: {message}");
    }

    #[test]
    fn a_library_the_loader_finds_through_its_cache_passes() {
        // The C library is found by the loader by name alone, as the driver is on machines
        // that keep it outside the default folders (listed only in the loader cache).
        check_driver("train", "libc.so.6").unwrap();
    }
}
