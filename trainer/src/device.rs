//! Where `train` and `probe` run, chosen at run time by `--device auto|cpu|wgpu|cuda[:N]`:
//! the CPU (Burn's `ndarray` backend, with the CPU kernels of [`crate::kernels`]), a GPU
//! through wgpu (Vulkan, Metal or DX12; feature `wgpu`) or an NVIDIA GPU through CUDA
//! (feature `cuda`). One binary may carry both GPU backends; every method, the EMA teacher,
//! the optimizer, checkpoints and the probe's encoders run on each through the same generic
//! code ([`OnDevice`]).
//!
//! Every check that can fail here runs before the first tensor: burn-cuda panics at the
//! first tensor when the driver is missing, and cubecl compiles its first kernel with NVRTC
//! against the CUDA headers, so [`cuda_runtime`] looks for all three and names what is
//! missing in a sentence. The GPU backends compile every kernel at run time and time the
//! candidates of tunable ones on first use; both results are kept on disk
//! ([`kernel_cache_dir`]), so only a first run pays for them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::AutodiffBackend;

/// The CPU backend.
pub type Cpu = NdArray<f32>;
/// The wgpu backend, with Burn's kernel fusion and autotuning.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;
/// The CUDA backend, with Burn's kernel fusion and autotuning.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;

/// The CUDA driver library, as the CUDA loader names it.
pub const CUDA_DRIVER: &str = "libcuda.so.1";

/// What `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// CUDA when its driver loads, else a wgpu adapter that is a real GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The best wgpu adapter: a real GPU when there is one, else a CPU adapter (lavapipe).
    Wgpu,
    /// The CUDA device of this index.
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("`{text}`: expected auto, cpu, wgpu, cuda or cuda:N (N a device index)");
        match text {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match text.strip_prefix("cuda:") {
                Some(index) => index.parse().map(Self::Cuda).map_err(|_| invalid()),
                None => Err(invalid()),
            },
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => formatter.write_str("auto"),
            Self::Cpu => formatter.write_str("cpu"),
            Self::Wgpu => formatter.write_str("wgpu"),
            Self::Cuda(index) => write!(formatter, "cuda:{index}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "--device {request}: this `{binary}` was built without the `{feature}` feature; build it with `make \
         build-gpu` (or cargo's `--features jepa-trainer/{feature}`), or run with --device cpu"
    )]
    NotBuilt { request: DeviceRequest, binary: String, feature: &'static str },

    /// The device is not on this machine, or a library it needs is missing: one sentence
    /// per missing piece, each saying what to install.
    #[error("--device {request}: {problem}")]
    Unavailable { request: DeviceRequest, problem: String },
}

/// The backend a run uses, with its device.
#[derive(Debug, Clone)]
enum Backend {
    Cpu,
    #[cfg(feature = "wgpu")]
    Wgpu(burn::backend::wgpu::WgpuDevice),
    #[cfg(feature = "cuda")]
    Cuda(burn::backend::cuda::CudaDevice),
}

/// The device a binary runs on, what it is, and why it was chosen.
#[derive(Debug, Clone)]
pub struct Choice {
    backend: Backend,
    /// The backend and the device, e.g. `wgpu: llvmpipe (LLVM 15.0.6, 256 bits), Vulkan, a CPU adapter`.
    pub description: String,
    pub reason: String,
}

impl fmt::Display for Choice {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({})", self.description, self.reason)
    }
}

/// Code generic over the backend, run on the one a [`Choice`] holds.
pub trait OnDevice {
    type Output;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output;
}

impl Choice {
    /// The CPU, for `reason`.
    pub fn cpu(reason: impl Into<String>) -> Self {
        // The pool the CPU backend and our kernels run on (`RAYON_NUM_THREADS` sets it).
        let threads = rayon::current_num_threads();
        let plural = if threads == 1 { "" } else { "s" };
        Self { backend: Backend::Cpu, description: format!("cpu: {threads} thread{plural}"), reason: reason.into() }
    }

    /// Whether this is the CPU backend.
    pub fn is_cpu(&self) -> bool {
        matches!(self.backend, Backend::Cpu)
    }

    /// Runs `task` on this choice's backend and device, with autodiff for training.
    pub fn run<T: OnDevice>(&self, task: T) -> T::Output {
        match &self.backend {
            Backend::Cpu => task.run::<Autodiff<Cpu>>(&Default::default()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(device) => task.run::<Autodiff<Wgpu>>(device),
            #[cfg(feature = "cuda")]
            Backend::Cuda(device) => task.run::<Autodiff<Cuda>>(device),
        }
    }
}

/// The device for `request`, or why it cannot be had; `binary` names the program in messages.
pub fn choose(request: DeviceRequest, binary: &str) -> Result<Choice, DeviceError> {
    let not_built = |feature| DeviceError::NotBuilt { request, binary: binary.to_string(), feature };
    let unavailable = |problem: String| DeviceError::Unavailable { request, problem };
    match request {
        DeviceRequest::Cpu => Ok(Choice::cpu("asked for with --device cpu")),
        DeviceRequest::Wgpu if !cfg!(feature = "wgpu") => Err(not_built("wgpu")),
        DeviceRequest::Cuda(_) if !cfg!(feature = "cuda") => Err(not_built("cuda")),
        DeviceRequest::Wgpu => {
            let adapter = wgpu_adapters().into_iter().next().ok_or_else(|| unavailable(no_wgpu_adapter()))?;
            Ok(wgpu_choice(adapter, "asked for with --device wgpu".into()))
        }
        DeviceRequest::Cuda(index) => {
            cuda_choice(index, format!("asked for with --device {request}")).map_err(unavailable)
        }
        DeviceRequest::Auto => auto(),
    }
}

/// CUDA when its driver loads, else a wgpu adapter that is a real GPU, else the CPU; the
/// reason says what was found.
fn auto() -> Result<Choice, DeviceError> {
    let mut looked = Vec::new();
    if cfg!(feature = "cuda") {
        match check_driver(CUDA_DRIVER) {
            Ok(()) => {
                return cuda_choice(0, "auto: the CUDA driver loads".into())
                    .map_err(|problem| DeviceError::Unavailable { request: DeviceRequest::Auto, problem });
            }
            Err(_) => looked.push(format!("no CUDA driver ({CUDA_DRIVER})")),
        }
    } else {
        looked.push("no CUDA in this build".into());
    }
    if cfg!(feature = "wgpu") {
        let adapters = wgpu_adapters();
        match adapters.first() {
            Some(adapter) if adapter.is_gpu => {
                return Ok(wgpu_choice(adapter.clone(), "auto: a wgpu adapter that is a GPU".into()));
            }
            Some(adapter) => looked.push(format!("only a CPU wgpu adapter ({})", adapter.name)),
            None => looked.push("no wgpu adapter".into()),
        }
    } else {
        looked.push("no wgpu in this build".into());
    }
    Ok(Choice::cpu(format!("auto: {}", looked.join(", "))))
}

/// A wgpu adapter as `--device wgpu` and `auto` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Adapter {
    /// The adapter's name, graphics API and kind, for messages.
    name: String,
    /// A GPU (discrete, integrated or virtual), not a CPU adapter such as lavapipe.
    is_gpu: bool,
    #[cfg(feature = "wgpu")]
    device: burn::backend::wgpu::WgpuDevice,
}

fn no_wgpu_adapter() -> String {
    "no wgpu adapter (Vulkan, Metal or DX12) was found; install a GPU driver with Vulkan support, or for a CPU \
     Vulkan device Mesa's lavapipe (Debian: mesa-vulkan-drivers and libvulkan1)"
        .into()
}

/// The adapters of the graphics API Burn's wgpu backend uses on this platform, best first:
/// discrete, integrated, virtual and other GPUs, then CPU adapters.
#[cfg(feature = "wgpu")]
fn wgpu_adapters() -> Vec<Adapter> {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
    use wgpu::DeviceType;

    let backend = AutoGraphicsApi::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let infos: Vec<wgpu::AdapterInfo> = cubecl_common::future::block_on(instance.enumerate_adapters(backend.into()))
        .iter()
        .map(|adapter| adapter.get_info())
        .collect();
    let mut adapters: Vec<(u8, Adapter)> = infos
        .iter()
        .enumerate()
        .map(|(position, info)| {
            // Burn numbers the adapters of each kind in the order wgpu lists them.
            let index = infos[..position].iter().filter(|other| other.device_type == info.device_type).count();
            let (rank, kind, device) = match info.device_type {
                DeviceType::DiscreteGpu => (0, "a discrete GPU", WgpuDevice::DiscreteGpu(index)),
                DeviceType::IntegratedGpu => (1, "an integrated GPU", WgpuDevice::IntegratedGpu(index)),
                DeviceType::VirtualGpu => (2, "a virtual GPU", WgpuDevice::VirtualGpu(index)),
                DeviceType::Other => (3, "a GPU of no stated kind", WgpuDevice::DefaultDevice),
                DeviceType::Cpu => (4, "a CPU adapter", WgpuDevice::Cpu),
            };
            let name = format!("{} ({}), {:?}, {kind}", info.name, info.driver_info, info.backend);
            (rank, Adapter { name, is_gpu: rank < 4, device })
        })
        .collect();
    adapters.sort_by_key(|(rank, _)| *rank);
    adapters.into_iter().map(|(_, adapter)| adapter).collect()
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_adapters() -> Vec<Adapter> {
    Vec::new()
}

#[cfg(feature = "wgpu")]
fn wgpu_choice(adapter: Adapter, reason: String) -> Choice {
    use_kernel_cache(&kernel_cache_dir());
    let description = format!("wgpu: {}", adapter.name);
    Choice { backend: Backend::Wgpu(adapter.device), description, reason }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_choice(_adapter: Adapter, _reason: String) -> Choice {
    unreachable!("no wgpu adapters are listed without the `wgpu` feature")
}

/// CUDA device `index`, after [`cuda_runtime`]'s checks.
#[cfg(feature = "cuda")]
fn cuda_choice(index: usize, reason: String) -> Result<Choice, String> {
    cuda_runtime(&CudaNeeds::of_this_build())?;
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|error| format!("the CUDA driver loads but does not start ({error})"))?;
    if index >= count.max(0) as usize {
        return Err(format!("this machine has {count} CUDA device(s), so there is no cuda:{index}"));
    }
    use_kernel_cache(&kernel_cache_dir());
    let description = format!("cuda:{index} (of {count})");
    Ok(Choice { backend: Backend::Cuda(burn::backend::cuda::CudaDevice::new(index)), description, reason })
}

#[cfg(not(feature = "cuda"))]
fn cuda_choice(_index: usize, _reason: String) -> Result<Choice, String> {
    unreachable!("CUDA is not chosen without the `cuda` feature")
}

/// What cubecl's CUDA runtime loads or reads before its first kernel runs.
#[derive(Debug, Clone)]
pub struct CudaNeeds {
    /// The driver library ([`CUDA_DRIVER`]).
    pub driver: String,
    /// NVRTC's library names, any one of which will do, as cudarc tries them.
    pub nvrtc: Vec<String>,
    /// The CUDA toolkit folder whose `include/` cubecl compiles kernels against (`CUDA_PATH`,
    /// else the usual install folders), if one was found.
    pub toolkit: Option<PathBuf>,
}

impl CudaNeeds {
    /// What this build's CUDA runtime will look for.
    #[cfg(feature = "cuda")]
    pub fn of_this_build() -> Self {
        Self {
            driver: CUDA_DRIVER.into(),
            nvrtc: cudarc::get_lib_name_candidates("nvrtc"),
            toolkit: cubecl_cuda::install::cuda_path(),
        }
    }
}

/// `Ok` when the CUDA driver and NVRTC load and the CUDA headers are where cubecl will look.
/// Without the driver, one clause saying so (the machine has no NVIDIA GPU to use, and the
/// rest does not matter); with it, one sentence for each other missing piece, saying what to
/// install.
pub fn cuda_runtime(needs: &CudaNeeds) -> Result<(), String> {
    if let Err(error) = check_driver(&needs.driver) {
        return Err(format!(
            "no NVIDIA driver here ({} does not load: {error}); install the NVIDIA driver, or add its folder to \
             LD_LIBRARY_PATH",
            needs.driver
        ));
    }
    let mut missing = Vec::new();
    if !needs.nvrtc.iter().any(|name| check_driver(name).is_ok()) {
        let tried = needs.nvrtc.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        missing.push(format!(
            "NVRTC, which compiles every kernel, does not load (tried {tried} and {} other names): install the \
             CUDA toolkit's NVRTC (cuda-nvrtc, no newer than the driver), and add its lib64 folder to LD_LIBRARY_PATH.",
            needs.nvrtc.len().saturating_sub(3)
        ));
    }
    let header = needs.toolkit.as_deref().map(|toolkit| toolkit.join("include").join("cuda_runtime.h"));
    match header {
        Some(header) if header.is_file() => {}
        Some(header) => missing.push(format!(
            "The CUDA headers kernels are compiled against are not there ({} is missing): install the CUDA \
             toolkit's headers (cuda-cudart-dev), and set CUDA_PATH to the toolkit's folder.",
            header.display()
        )),
        None => missing.push(
            "The CUDA toolkit's headers were not found (CUDA_PATH is unset and neither /usr/local/cuda nor \
             /opt/cuda exists): install the CUDA toolkit's headers (cuda-cudart-dev), and set CUDA_PATH to its \
             folder."
                .into(),
        ),
    }
    if missing.is_empty() { Ok(()) } else { Err(missing.join(" ")) }
}

/// `Ok` when the dynamic loader can load `library` (searching `LD_LIBRARY_PATH`, the loader
/// cache and the default folders, as it will for CUDA itself), else the loader's error.
pub fn check_driver(library: &str) -> Result<(), String> {
    // SAFETY: loading the library runs its initialisers, which the CUDA runtime would run
    // moments later anyway; nothing is called through it here.
    match unsafe { libloading::Library::new(library) } {
        Ok(_) => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

/// Where the GPU backends keep compiled kernels and autotune results: `$JEPA_KERNEL_CACHE`,
/// else `target/kernel-cache` under the working directory (the project root, for `make`).
pub fn kernel_cache_dir() -> PathBuf {
    std::env::var_os("JEPA_KERNEL_CACHE").map_or_else(|| PathBuf::from("target").join("kernel-cache"), PathBuf::from)
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn use_kernel_cache(folder: &Path) {
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // What cubecl would read itself (a cubecl.toml, its environment variables), with the
        // caches moved; it must be set before the first kernel reads it.
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        config.autotune.cache = CacheConfig::File(folder.join("autotune"));
        config.compilation.cache = Some(CacheConfig::File(folder.join("compiled")));
        CubeClRuntimeConfig::set(config);
    });
}

#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
#[allow(dead_code)]
fn use_kernel_cache(_folder: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_requests_parse_and_print_back() {
        for (text, request) in [
            ("auto", DeviceRequest::Auto),
            ("cpu", DeviceRequest::Cpu),
            ("wgpu", DeviceRequest::Wgpu),
            ("cuda", DeviceRequest::Cuda(0)),
            ("cuda:3", DeviceRequest::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceRequest>(), Ok(request));
        }
        assert_eq!(DeviceRequest::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"] {
            let message = bad.parse::<DeviceRequest>().unwrap_err();
            assert!(message.contains(&format!("`{bad}`")) && message.contains("cuda:N"), "{message}");
        }
    }

    #[test]
    fn the_cpu_is_always_there() {
        let choice = choose(DeviceRequest::Cpu, "train").unwrap();
        assert!(choice.is_cpu() && choice.reason.contains("--device cpu"), "{choice}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_not_built_in_is_refused_with_how_to_build_it() {
        let error = choose(DeviceRequest::Cuda(1), "probe").unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("--device cuda:1: this `probe`"), "{message}");
        assert!(message.contains("`cuda` feature") && message.contains("make build-gpu"), "{message}");
    }

    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    #[test]
    fn auto_on_a_cpu_build_chooses_the_cpu_and_says_why() {
        let choice = choose(DeviceRequest::Auto, "train").unwrap();
        assert!(choice.is_cpu(), "{choice}");
        assert_eq!(choice.reason, "auto: no CUDA in this build, no wgpu in this build");
    }

    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    #[test]
    fn auto_takes_a_wgpu_gpu_but_never_a_cpu_adapter() {
        let adapters = wgpu_adapters();
        let choice = choose(DeviceRequest::Auto, "train").unwrap();
        if adapters.iter().any(|adapter| adapter.is_gpu) {
            assert!(!choice.is_cpu() && choice.description.starts_with("wgpu: "), "{choice}");
        } else {
            assert!(choice.is_cpu(), "{choice}");
            let wgpu_part = match adapters.first() {
                Some(adapter) => format!("only a CPU wgpu adapter ({})", adapter.name),
                None => "no wgpu adapter".into(),
            };
            assert_eq!(choice.reason, format!("auto: no CUDA in this build, {wgpu_part}"));
        }
        // A CPU adapter is still there for `--device wgpu` to ask for by name.
        if let Some(first) = adapters.first() {
            let asked = choose(DeviceRequest::Wgpu, "train").unwrap();
            assert_eq!(asked.description, format!("wgpu: {}", first.name));
        }
    }

    fn needs(folder: &Path) -> CudaNeeds {
        CudaNeeds {
            driver: "libjepa-no-such-driver.so.1".into(),
            nvrtc: vec!["libjepa-no-nvrtc.so".into(), "libjepa-no-nvrtc.so.13".into()],
            toolkit: Some(folder.to_path_buf()),
        }
    }

    #[test]
    fn without_the_driver_only_the_driver_is_named() {
        let folder = tempfile::tempdir().unwrap();
        let message = cuda_runtime(&needs(folder.path())).unwrap_err();
        assert!(message.starts_with("no NVIDIA driver here (libjepa-no-such-driver.so.1 does not load"), "{message}");
        assert!(message.contains("install the NVIDIA driver") && !message.contains("NVRTC"), "{message}");
        assert!(!message.contains(". "), "one clause, for a sentence to go on: {message}");
    }

    #[test]
    fn with_the_driver_each_missing_piece_is_one_sentence_naming_it_and_what_to_install() {
        let folder = tempfile::tempdir().unwrap();
        // The C library stands in for a driver the loader finds through its cache.
        let with_driver = CudaNeeds { driver: "libc.so.6".into(), ..needs(folder.path()) };
        let message = cuda_runtime(&with_driver).unwrap_err();
        let sentences: Vec<&str> = message.split_inclusive(". ").collect();
        assert_eq!(sentences.len(), 2, "{message}");
        assert!(sentences[0].starts_with("NVRTC") && sentences[0].contains("libjepa-no-nvrtc.so.13"));
        assert!(sentences[1].starts_with("The CUDA headers") && sentences[1].contains("CUDA_PATH"));
        assert!(sentences[1].contains(&folder.path().display().to_string()) && message.ends_with('.'));
    }

    #[test]
    fn what_is_present_is_not_named() {
        // The C library stands in for a library the loader finds through its cache, as the
        // driver and NVRTC are on machines that keep them outside the default folders.
        let folder = tempfile::tempdir().unwrap();
        std::fs::create_dir(folder.path().join("include")).unwrap();
        std::fs::write(folder.path().join("include/cuda_runtime.h"), "").unwrap();
        let mut present = needs(folder.path());
        present.driver = "libc.so.6".into();
        present.nvrtc.push("libm.so.6".into());
        cuda_runtime(&present).unwrap();
        present.nvrtc.pop();
        let message = cuda_runtime(&present).unwrap_err();
        assert!(message.starts_with("NVRTC") && !message.contains("headers"), "{message}");
    }
}
