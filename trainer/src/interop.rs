//! Encoders in PyTorch's layouts, through burn-store: written as safetensors in timm's
//! `VisionTransformer` key layout, and read from such a file or from an official I-JEPA
//! training checkpoint (`.pth.tar`).
//!
//! timm builds the same encoder as [`VisionTransformer`] with `class_token=False,
//! global_pool='avg', fc_norm=False, num_classes=0`: its keys are `patch_embed.proj.*`,
//! `pos_embed` (`[1, patches, dim]`), `blocks.{i}.norm1.*`, `blocks.{i}.attn.qkv.*`,
//! `blocks.{i}.attn.proj.*`, `blocks.{i}.norm2.*`, `blocks.{i}.mlp.fc1.*`,
//! `blocks.{i}.mlp.fc2.*` and `norm.*`, with PyTorch's `[out, in]` linear weights. The
//! official I-JEPA code names its parameters the same way, under `target_encoder` (and a
//! `module.` prefix from distributed training). [`TimmVit`] is our encoder with its fields
//! nested as timm's are, so burn-store's PyTorch adapters do the rest (transposed linear
//! weights, `weight`/`bias` for LayerNorm's `gamma`/`beta`).
//!
//! A file's geometry comes from its tensors' shapes; the number of heads, which no shape
//! shows, and the pixel statistics come from its metadata (written by [`write`]), from the
//! caller, or for the widths of the paper's models from their published head counts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use burn_store::pytorch::PytorchReader;
use burn_store::{
    BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore, TensorSnapshot,
};
use jepa_shared::FileError;

use crate::vit::{Block, VisionTransformer, VitConfig};

/// What `layout` in an exported file's metadata says, for a reader of the file.
pub const LAYOUT: &str = "timm.models.vision_transformer.VisionTransformer(class_token=False, global_pool='avg', \
                          fc_norm=False, num_classes=0)";

/// ImageNet's per-channel statistics, which timm's and the official I-JEPA models expect
/// when a file does not say.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error("{path}: {problem}")]
    Bad { path: PathBuf, problem: String },

    #[error(transparent)]
    Io(#[from] FileError),
}

impl InteropError {
    fn bad(path: &Path, problem: impl Into<String>) -> Self {
        InteropError::Bad { path: path.to_path_buf(), problem: problem.into() }
    }
}

type Result<T> = std::result::Result<T, InteropError>;

#[derive(Module, Debug)]
struct PatchEmbed<B: Backend> {
    proj: Conv2d<B>,
}

#[derive(Module, Debug)]
struct Attention<B: Backend> {
    qkv: Linear<B>,
    proj: Linear<B>,
}

#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    fc1: Linear<B>,
    fc2: Linear<B>,
}

#[derive(Module, Debug)]
struct TimmBlock<B: Backend> {
    norm1: LayerNorm<B>,
    attn: Attention<B>,
    norm2: LayerNorm<B>,
    mlp: Mlp<B>,
}

/// [`VisionTransformer`]'s parameters nested as timm names them; the position embedding is
/// a parameter here because timm stores it.
#[derive(Module, Debug)]
pub struct TimmVit<B: Backend> {
    patch_embed: PatchEmbed<B>,
    pos_embed: Param<Tensor<B, 3>>,
    blocks: Vec<TimmBlock<B>>,
    norm: LayerNorm<B>,
}

impl<B: Backend> TimmVit<B> {
    pub fn from_encoder(encoder: VisionTransformer<B>) -> Self {
        let blocks = encoder
            .blocks
            .into_iter()
            .map(|block| TimmBlock {
                norm1: block.norm1,
                attn: Attention { qkv: block.qkv, proj: block.proj },
                norm2: block.norm2,
                mlp: Mlp { fc1: block.fc1, fc2: block.fc2 },
            })
            .collect();
        Self {
            patch_embed: PatchEmbed { proj: encoder.patch_embed },
            pos_embed: Param::from_tensor(encoder.pos_embed),
            blocks,
            norm: encoder.norm,
        }
    }

    /// Back to the encoder, with `heads` attention heads (which no parameter records).
    pub fn into_encoder(self, heads: usize) -> VisionTransformer<B> {
        let dim = self.pos_embed.dims()[2];
        let blocks = self
            .blocks
            .into_iter()
            .map(|block| Block {
                norm1: block.norm1,
                qkv: block.attn.qkv,
                proj: block.attn.proj,
                norm2: block.norm2,
                fc1: block.mlp.fc1,
                fc2: block.mlp.fc2,
                heads,
            })
            .collect();
        VisionTransformer {
            patch_embed: self.patch_embed.proj,
            pos_embed: self.pos_embed.val(),
            blocks,
            norm: self.norm,
            dim,
        }
    }
}

/// The tensors timm's layout holds for `vit`, with their PyTorch shapes, in file order.
pub fn expected_shapes(vit: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (dim, hidden) = (vit.dim, vit.dim * vit.mlp_ratio);
    let mut shapes = vec![
        ("patch_embed.proj.weight".to_string(), vec![dim, vit.channels, vit.patch_size_px, vit.patch_size_px]),
        ("patch_embed.proj.bias".to_string(), vec![dim]),
        ("pos_embed".to_string(), vec![1, vit.num_patches(), dim]),
    ];
    for layer in 0..vit.depth {
        let key = |name: &str| format!("blocks.{layer}.{name}");
        shapes.extend([
            (key("norm1.weight"), vec![dim]),
            (key("norm1.bias"), vec![dim]),
            (key("attn.qkv.weight"), vec![3 * dim, dim]),
            (key("attn.qkv.bias"), vec![3 * dim]),
            (key("attn.proj.weight"), vec![dim, dim]),
            (key("attn.proj.bias"), vec![dim]),
            (key("norm2.weight"), vec![dim]),
            (key("norm2.bias"), vec![dim]),
            (key("mlp.fc1.weight"), vec![hidden, dim]),
            (key("mlp.fc1.bias"), vec![hidden]),
            (key("mlp.fc2.weight"), vec![dim, hidden]),
            (key("mlp.fc2.bias"), vec![dim]),
        ]);
    }
    shapes.extend([("norm.weight".to_string(), vec![dim]), ("norm.bias".to_string(), vec![dim])]);
    shapes
}

/// What an exported file says about the encoder besides its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportInfo {
    pub vit: VitConfig,
    pub pixel_mean: Vec<f32>,
    pub pixel_std: Vec<f32>,
    /// Where it came from: method, run, encoder, checkpoint, … (written as they are).
    pub provenance: Vec<(String, String)>,
}

/// Writes `encoder` to `path` as safetensors in timm's layout, with the geometry and pixel
/// statistics in the metadata under timm's argument names. The file appears whole or not
/// at all, and not at all for an encoder with a non-finite weight.
pub fn write<B: Backend>(encoder: &VisionTransformer<B>, info: &ExportInfo, path: &Path) -> Result<()> {
    if let Some(found) = crate::finite::non_finite(encoder) {
        return Err(InteropError::bad(
            path,
            format!(
                "not written: the encoder holds {} non-finite values (NaN or infinity), the first in `{}`",
                found.values, found.first
            ),
        ));
    }
    let timm = TimmVit::from_encoder(encoder.clone());
    let list = |values: &[f32]| serde_json::to_string(values).expect("floats serialise");
    let vit = &info.vit;
    let mut metadata: Vec<(String, String)> = vec![
        ("layout".into(), LAYOUT.into()),
        ("img_size".into(), vit.image_size_px.to_string()),
        ("patch_size".into(), vit.patch_size_px.to_string()),
        ("in_chans".into(), vit.channels.to_string()),
        ("embed_dim".into(), vit.dim.to_string()),
        ("depth".into(), vit.depth.to_string()),
        ("num_heads".into(), vit.heads.to_string()),
        ("mlp_ratio".into(), vit.mlp_ratio.to_string()),
        ("pixel_mean".into(), list(&info.pixel_mean)),
        ("pixel_std".into(), list(&info.pixel_std)),
    ];
    metadata.extend(info.provenance.iter().cloned());
    jepa_shared::atomic::write_path(path, |temp| {
        let mut store =
            SafetensorsStore::from_file(temp).with_to_adapter(BurnToPyTorchAdapter).overwrite(true).validate(true);
        for (key, value) in &metadata {
            store = store.metadata(key.clone(), value.clone());
        }
        timm.save_into(&mut store).map_err(|error| InteropError::bad(path, error.to_string()))
    })
}

/// How an encoder file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// safetensors in timm's layout.
    Safetensors,
    /// A PyTorch pickle: an official I-JEPA checkpoint (`target_encoder`, `module.`
    /// prefixes) or a plain state dict in timm's layout.
    Pytorch,
}

impl FileFormat {
    /// By the first bytes: PyTorch files are zip archives or pickles; safetensors files
    /// start with the length of a JSON header.
    fn of(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut head = [0u8; 9];
        let mut file = std::fs::File::open(path).map_err(FileError::io(path))?;
        let read = file.read(&mut head).map_err(FileError::io(path))?;
        if read < 9 {
            return Err(InteropError::bad(path, "is too short to be a safetensors or PyTorch file"));
        }
        Ok(if head[8] == b'{' { FileFormat::Safetensors } else { FileFormat::Pytorch })
    }
}

/// What the caller knows about a file's encoder that its tensors cannot say (command-line
/// flags); a value here must agree with the file's shapes and replaces its metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hints {
    pub heads: Option<usize>,
    pub pixel_mean: Option<Vec<f32>>,
    pub pixel_std: Option<Vec<f32>>,
    /// The top-level entry of a PyTorch checkpoint that holds the encoder (default:
    /// `target_encoder` when the file has one, else the whole file).
    pub state_key: Option<String>,
    /// The method that trained the encoder, as a run config names it.
    pub method: Option<String>,
}

/// An encoder file, opened and checked: its geometry, pixel statistics and tensors.
pub struct EncoderFile {
    pub path: PathBuf,
    pub format: FileFormat,
    pub vit: VitConfig,
    pub pixel_mean: Vec<f32>,
    pub pixel_std: Vec<f32>,
    /// The method that trained it: the hint, else the file's metadata.
    pub method: Option<String>,
    /// The file's metadata (safetensors only).
    pub metadata: HashMap<String, String>,
    tensors: BTreeMap<String, TensorSnapshot>,
}

impl EncoderFile {
    /// Reads the tensor list and metadata of `path` (no tensor data yet) and checks every
    /// tensor's name and shape against the geometry they imply.
    pub fn open(path: &Path, hints: &Hints) -> Result<Self> {
        let format = FileFormat::of(path)?;
        let (tensors, metadata) = match format {
            FileFormat::Safetensors => read_safetensors(path)?,
            FileFormat::Pytorch => (read_pytorch(path, hints.state_key.as_deref())?, HashMap::new()),
        };
        let vit = geometry(path, &tensors, &metadata, hints)?;
        check_tensors(path, &tensors, &vit)?;
        let (pixel_mean, pixel_std) = pixel_stats(path, &metadata, hints, vit.channels)?;
        let method = hints.method.clone().or_else(|| metadata.get("method").cloned());
        Ok(Self { path: path.to_path_buf(), format, vit, pixel_mean, pixel_std, method, metadata, tensors })
    }

    /// The encoder, on `device`. A tensor holding a NaN or an infinity is refused by name:
    /// a damaged or diverged encoder gives features that score as chance, not an error.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<VisionTransformer<B>> {
        let mut timm = TimmVit::from_encoder(self.vit.init::<B>(device));
        let non_finite = NonFiniteTensor::default();
        let snapshots: Vec<TensorSnapshot> = self
            .tensors
            .iter()
            .filter(|(key, _)| !ignored(key))
            .map(|(key, snapshot)| as_f32(key, snapshot, &non_finite))
            .collect();
        let result = timm.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
        if let Some((key, count)) = non_finite.take() {
            return Err(InteropError::bad(
                &self.path,
                format!(
                    "tensor `{key}` holds {count} non-finite values (NaN or infinity): the encoder is damaged or \
                     diverged; export it again from a checkpoint whose weights are finite"
                ),
            ));
        }
        if let Some(error) = result.errors.first() {
            return Err(InteropError::bad(&self.path, error.to_string()));
        }
        if let Some((key, _)) = result.missing.first() {
            return Err(InteropError::bad(&self.path, format!("no tensor for `{key}`")));
        }
        Ok(timm.into_encoder(self.vit.heads))
    }
}

/// Tensors a timm checkpoint may carry that the encoder's features do not use: a
/// classifier head.
fn ignored(key: &str) -> bool {
    key.starts_with("head.")
}

/// The first tensor found holding non-finite values, and how many it holds.
#[derive(Default, Clone)]
struct NonFiniteTensor(std::rc::Rc<std::cell::RefCell<Option<(String, usize)>>>);

impl NonFiniteTensor {
    fn take(&self) -> Option<(String, usize)> {
        self.0.borrow_mut().take()
    }
}

/// The snapshot under `key`, its values as f32 (half-precision files are widened); values
/// that are not finite are reported to `non_finite` and fail the read.
fn as_f32(key: &str, snapshot: &TensorSnapshot, non_finite: &NonFiniteTensor) -> TensorSnapshot {
    let path: Vec<String> = key.split('.').map(String::from).collect();
    let data = snapshot.clone_data_fn();
    let widen = snapshot.dtype != DType::F32;
    let (key, non_finite) = (key.to_string(), non_finite.clone());
    let read = std::rc::Rc::new(move || {
        let values = data()?;
        let values = if widen { values.convert_dtype(DType::F32) } else { values };
        let count = values.as_slice::<f32>().map_or(0, |values| values.iter().filter(|v| !v.is_finite()).count());
        if count > 0 {
            non_finite.0.borrow_mut().get_or_insert_with(|| (key.clone(), count));
            return Err(burn_store::TensorSnapshotError::DataError(format!("`{key}` is not finite")));
        }
        Ok(values)
    });
    TensorSnapshot::from_closure(read, DType::F32, snapshot.shape.clone(), path, Vec::new(), Default::default())
}

fn read_safetensors(path: &Path) -> Result<(BTreeMap<String, TensorSnapshot>, HashMap<String, String>)> {
    let metadata = safetensors_metadata(path)?;
    let mut store = SafetensorsStore::from_file(path);
    let tensors = store.get_all_snapshots().map_err(|error| InteropError::bad(path, error.to_string()))?.clone();
    Ok((tensors, metadata))
}

/// The `__metadata__` of a safetensors header: an 8-byte little-endian length, then that
/// much JSON.
fn safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(FileError::io(path))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(FileError::io(path))?;
    let length = u64::from_le_bytes(length);
    if length > 100_000_000 {
        return Err(InteropError::bad(path, format!("declares a {length}-byte safetensors header")));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header).map_err(|_| InteropError::bad(path, "ends inside its safetensors header"))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|error| InteropError::bad(path, format!("safetensors header is not JSON: {error}")))?;
    let Some(metadata) = header.get("__metadata__") else { return Ok(HashMap::new()) };
    serde_json::from_value(metadata.clone())
        .map_err(|_| InteropError::bad(path, "safetensors `__metadata__` is not a map of strings"))
}

fn read_pytorch(path: &Path, state_key: Option<&str>) -> Result<BTreeMap<String, TensorSnapshot>> {
    let reader = PytorchReader::new(path).map_err(|error| InteropError::bad(path, error.to_string()))?;
    let tensors = reader.into_tensors();
    let prefix = match state_key {
        Some(key) => format!("{key}."),
        None if tensors.keys().any(|key| key.starts_with("target_encoder.")) => "target_encoder.".into(),
        None => String::new(),
    };
    let selected: BTreeMap<String, TensorSnapshot> = tensors
        .into_iter()
        .filter_map(|(key, snapshot)| {
            let key = key.strip_prefix(prefix.as_str())?;
            Some((key.strip_prefix("module.").unwrap_or(key).to_string(), snapshot))
        })
        .collect();
    if selected.is_empty() {
        return Err(InteropError::bad(path, format!("holds no tensors under `{}`", prefix.trim_end_matches('.'))));
    }
    Ok(selected)
}

/// The published head counts of the paper's and timm's ViT widths.
fn standard_heads(dim: usize) -> Option<usize> {
    match dim {
        192 => Some(3),
        384 => Some(6),
        768 => Some(12),
        1024 | 1280 => Some(16),
        _ => None,
    }
}

/// Shape of `key`, or one sentence naming it and the shape wanted.
fn shape_of<'a>(
    path: &Path,
    tensors: &'a BTreeMap<String, TensorSnapshot>,
    key: &str,
    wanted: &str,
) -> Result<&'a [usize]> {
    tensors
        .get(key)
        .map(|snapshot| snapshot.shape.as_slice())
        .ok_or_else(|| InteropError::bad(path, format!("no tensor `{key}` (expected shape {wanted})")))
}

/// The geometry the tensors imply, checked against the metadata and the hints.
fn geometry(
    path: &Path,
    tensors: &BTreeMap<String, TensorSnapshot>,
    metadata: &HashMap<String, String>,
    hints: &Hints,
) -> Result<VitConfig> {
    let bad = |problem: String| InteropError::bad(path, problem);
    let proj = shape_of(path, tensors, "patch_embed.proj.weight", "[dim, channels, patch, patch]")?;
    let [dim, channels, patch, patch_w] = *proj else {
        return Err(bad(format!(
            "tensor `patch_embed.proj.weight` has shape {proj:?}, expected [dim, channels, patch, patch]"
        )));
    };
    if patch != patch_w {
        return Err(bad(format!("tensor `patch_embed.proj.weight` has shape {proj:?}, expected square patches")));
    }
    let pos = shape_of(path, tensors, "pos_embed", &format!("[1, patches, {dim}]"))?;
    let grid = match *pos {
        [1, patches, width] if width == dim && patches > 0 => {
            let grid = (patches as f64).sqrt().round() as usize;
            if grid * grid != patches {
                return Err(bad(format!(
                    "tensor `pos_embed` has shape {pos:?}, expected [1, grid², {dim}] (a square grid of patches, \
                     no class token)"
                )));
            }
            grid
        }
        _ => return Err(bad(format!("tensor `pos_embed` has shape {pos:?}, expected [1, patches, {dim}]"))),
    };
    let depth = (0..).take_while(|layer| tensors.contains_key(&format!("blocks.{layer}.norm1.weight"))).count();
    if depth == 0 {
        return Err(bad(format!("no tensor `blocks.0.norm1.weight` (expected shape [{dim}])")));
    }
    let number = |key: &str| -> Result<Option<usize>> {
        metadata
            .get(key)
            .map(|value| {
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| bad(format!("metadata `{key}` is `{value}`, expected a number")))
            })
            .transpose()
    };
    let heads = match (hints.heads, number("num_heads")?) {
        (Some(heads), _) | (None, Some(heads)) => heads,
        (None, None) => standard_heads(dim).ok_or_else(|| {
            bad(format!("does not say how many attention heads its {dim}-wide blocks have: give --heads"))
        })?,
    };
    // The MLP's width is the file's own: its first block's `fc1` is [hidden, dim].
    let fc1 = shape_of(path, tensors, "blocks.0.mlp.fc1.weight", &format!("[hidden, {dim}]"))?;
    let mlp_ratio = match *fc1 {
        [hidden, width] if width == dim && hidden > 0 && hidden.is_multiple_of(dim) => hidden / dim,
        _ => {
            return Err(bad(format!(
                "tensor `blocks.0.mlp.fc1.weight` has shape {fc1:?}, expected [a multiple of {dim}, {dim}]"
            )));
        }
    };
    let vit = VitConfig { image_size_px: grid * patch, patch_size_px: patch, channels, dim, depth, heads, mlp_ratio };
    // Metadata that disagrees with the tensors: the file is not what it says it is.
    for (key, value) in [
        ("img_size", vit.image_size_px),
        ("patch_size", vit.patch_size_px),
        ("in_chans", vit.channels),
        ("embed_dim", vit.dim),
        ("depth", vit.depth),
        ("mlp_ratio", vit.mlp_ratio),
    ] {
        if let Some(said) = number(key)?
            && said != value
        {
            return Err(bad(format!("metadata `{key}` is {said}, but the tensors hold an encoder with {key} {value}")));
        }
    }
    if let Some((field, problem)) = vit.problem() {
        let field = if field == "heads" { "num_heads" } else { field };
        return Err(bad(format!("encoder `{field}` {problem}")));
    }
    Ok(vit)
}

/// Every tensor timm's layout expects, at its shape, and nothing else.
fn check_tensors(path: &Path, tensors: &BTreeMap<String, TensorSnapshot>, vit: &VitConfig) -> Result<()> {
    let expected = expected_shapes(vit);
    for (key, shape) in &expected {
        let found = shape_of(path, tensors, key, &format!("{shape:?}"))?;
        if found != shape.as_slice() {
            return Err(InteropError::bad(
                path,
                format!("tensor `{key}` has shape {found:?}, expected {shape:?} for {}", describe(vit)),
            ));
        }
        let dtype = tensors[key].dtype;
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
            return Err(InteropError::bad(path, format!("tensor `{key}` holds {dtype:?}, expected floats")));
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(key, _)| key.as_str()).collect();
    if let Some(extra) = tensors.keys().find(|key| !known.contains(key.as_str()) && !ignored(key)) {
        let shape = tensors[extra].shape.as_slice();
        return Err(InteropError::bad(
            path,
            format!(
                "tensor `{extra}` (shape {shape:?}) is not part of {} in timm's layout without a class token",
                describe(vit)
            ),
        ));
    }
    Ok(())
}

/// "a ViT of depth 4, width 96, 4-px patches on 28-px images, 1 channel"
fn describe(vit: &VitConfig) -> String {
    format!(
        "a ViT of depth {}, width {}, {}-px patches on {}-px images, {} channel{}",
        vit.depth,
        vit.dim,
        vit.patch_size_px,
        vit.image_size_px,
        vit.channels,
        if vit.channels == 1 { "" } else { "s" }
    )
}

/// Pixel statistics: the hints, else the metadata, else ImageNet's for an RGB encoder.
fn pixel_stats(
    path: &Path,
    metadata: &HashMap<String, String>,
    hints: &Hints,
    channels: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let read = |key: &str, hint: &Option<Vec<f32>>, imagenet: &[f32; 3]| -> Result<Vec<f32>> {
        let (values, source) = match (hint, metadata.get(key)) {
            (Some(values), _) => (values.clone(), format!("--{}", key.replace('_', "-"))),
            (None, Some(text)) => {
                let values: Vec<f32> = serde_json::from_str(text).map_err(|_| {
                    InteropError::bad(path, format!("metadata `{key}` is `{text}`, expected a list of numbers"))
                })?;
                (values, format!("metadata `{key}`"))
            }
            (None, None) if channels == 3 => (imagenet.to_vec(), String::new()),
            (None, None) => {
                return Err(InteropError::bad(
                    path,
                    format!(
                        "does not say which pixel statistics its {channels}-channel encoder expects: give \
                         --pixel-mean and --pixel-std"
                    ),
                ));
            }
        };
        if values.len() != channels || values.iter().any(|value| !value.is_finite()) {
            return Err(InteropError::bad(
                path,
                format!("{source} is {values:?}, expected {channels} finite value(s), one per channel"),
            ));
        }
        Ok(values)
    };
    let mean = read("pixel_mean", &hints.pixel_mean, &IMAGENET_MEAN)?;
    let std = read("pixel_std", &hints.pixel_std, &IMAGENET_STD)?;
    if std.iter().any(|value| *value <= 0.0) {
        return Err(InteropError::bad(path, format!("pixel_std is {std:?}, expected positive values")));
    }
    Ok((mean, std))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    fn nano() -> VitConfig {
        VitConfig::preset("nano", 16, 4, 3).unwrap()
    }

    fn info(vit: &VitConfig) -> ExportInfo {
        ExportInfo {
            vit: vit.clone(),
            pixel_mean: vec![0.5, 0.4, 0.3],
            pixel_std: vec![0.2, 0.25, 0.3],
            provenance: vec![("method".into(), "ijepa".into())],
        }
    }

    fn images(batch: usize) -> Tensor<B, 4> {
        let mut rng = jepa_shared::rng::KeyedRng::new(&[5]);
        let values: Vec<f32> = (0..batch * 3 * 16 * 16).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        Tensor::from_data(TensorData::new(values, [batch, 3, 16, 16]), &Default::default())
    }

    #[test]
    fn an_exported_encoder_reads_back_bitwise_with_its_geometry() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("encoder.safetensors");
        let vit = nano();
        let encoder =
            crate::method::seeded(7, &Default::default(), |cpu| vit.init(cpu), || vit.init::<B>(&Default::default()));
        write(&encoder, &info(&vit), &path).unwrap();
        let file = EncoderFile::open(&path, &Hints::default()).unwrap();
        assert_eq!(file.vit, vit);
        assert_eq!(file.format, FileFormat::Safetensors);
        assert_eq!(file.pixel_mean, vec![0.5, 0.4, 0.3]);
        assert_eq!(file.metadata.get("method").map(String::as_str), Some("ijepa"));
        let loaded = file.load::<B>(&Default::default()).unwrap();
        let before = encoder.forward(images(2), None).into_data().to_vec::<f32>().unwrap();
        let after = loaded.forward(images(2), None).into_data().to_vec::<f32>().unwrap();
        assert!(before.iter().zip(&after).all(|(a, b)| a.to_bits() == b.to_bits()));
        // The keys are timm's, linear weights `[out, in]`.
        let mut store = SafetensorsStore::from_file(&path);
        let snapshots = store.get_all_snapshots().unwrap();
        assert_eq!(snapshots["blocks.1.attn.qkv.weight"].shape.to_vec(), vec![96, 32]);
        assert_eq!(snapshots["blocks.0.mlp.fc1.weight"].shape.to_vec(), vec![128, 32]);
        assert_eq!(snapshots.len(), expected_shapes(&vit).len());
    }

    #[test]
    fn the_mlp_width_is_read_from_the_file_not_assumed() {
        let folder = tempfile::tempdir().unwrap();
        let vit = VitConfig { mlp_ratio: 2, ..nano() };
        let encoder = vit.init::<B>(&Default::default());
        let path = folder.path().join("encoder.safetensors");
        write(&encoder, &info(&vit), &path).unwrap();
        let file = EncoderFile::open(&path, &Hints::default()).unwrap();
        assert_eq!(file.vit.mlp_ratio, 2);
        let loaded = file.load::<B>(&Default::default()).unwrap();
        let before = encoder.forward(images(1), None).into_data().to_vec::<f32>().unwrap();
        let after = loaded.forward(images(1), None).into_data().to_vec::<f32>().unwrap();
        assert_eq!(before, after);
        // A file whose metadata says nothing of the MLP (written by another tool).
        let crafted = file_of(folder.path(), &expected_shapes(&vit), &NANO_METADATA);
        assert_eq!(EncoderFile::open(&crafted, &Hints::default()).unwrap().vit.mlp_ratio, 2);
        // A width that is no multiple of the model's is refused by name.
        let mut shapes = expected_shapes(&nano());
        shapes.iter_mut().find(|(key, _)| key == "blocks.0.mlp.fc1.weight").unwrap().1 = vec![50, 32];
        let error = open_error(&file_of(folder.path(), &shapes, &NANO_METADATA));
        assert!(error.contains("blocks.0.mlp.fc1.weight") && error.contains("a multiple of 32"), "{error}");
    }

    /// A safetensors file of zeros holding `shapes`, with `metadata`.
    fn file_of(folder: &Path, shapes: &[(String, Vec<usize>)], metadata: &[(&str, &str)]) -> PathBuf {
        file_of_type(folder, shapes, metadata, safetensors::Dtype::F32, |_, _| 0.0)
    }

    /// A safetensors file holding `shapes` in `dtype` (F32 or F16), element `index` of
    /// tensor `tensor` being `value(tensor, index)`, with `metadata`.
    fn file_of_type(
        folder: &Path,
        shapes: &[(String, Vec<usize>)],
        metadata: &[(&str, &str)],
        dtype: safetensors::Dtype,
        value: impl Fn(usize, usize) -> f32,
    ) -> PathBuf {
        let path = folder.join("crafted.safetensors");
        let bytes: Vec<Vec<u8>> = shapes
            .iter()
            .enumerate()
            .map(|(tensor, (_, shape))| {
                let values = (0..shape.iter().product::<usize>()).map(|index| value(tensor, index));
                match dtype {
                    safetensors::Dtype::F16 => {
                        values.flat_map(|value| half::f16::from_f32(value).to_le_bytes()).collect()
                    }
                    _ => values.flat_map(f32::to_le_bytes).collect(),
                }
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = shapes
            .iter()
            .zip(&bytes)
            .map(|((key, shape), bytes)| {
                (key.clone(), safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes).unwrap())
            })
            .collect();
        let metadata = metadata.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        safetensors::serialize_to_file(views, Some(metadata), &path).unwrap();
        path
    }

    fn open_error(path: &Path) -> String {
        EncoderFile::open(path, &Hints::default()).err().expect("the file is refused").to_string()
    }

    const NANO_METADATA: [(&str, &str); 3] =
        [("num_heads", "2"), ("pixel_mean", "[0.5,0.5,0.5]"), ("pixel_std", "[0.2,0.2,0.2]")];

    #[test]
    fn a_well_formed_crafted_file_opens() {
        let folder = tempfile::tempdir().unwrap();
        let path = file_of(folder.path(), &expected_shapes(&nano()), &NANO_METADATA);
        assert_eq!(EncoderFile::open(&path, &Hints::default()).unwrap().vit, nano());
    }

    #[test]
    fn a_half_precision_file_loads_widened_to_f32() {
        let folder = tempfile::tempdir().unwrap();
        // Values exact in f16: tensor t holds t/8 + (i mod 4)/4.
        let value = |tensor: usize, index: usize| tensor as f32 / 8.0 + (index % 4) as f32 / 4.0;
        let shapes = expected_shapes(&nano());
        let half = file_of_type(folder.path(), &shapes, &NANO_METADATA, safetensors::Dtype::F16, value);
        let encoder = EncoderFile::open(&half, &Hints::default()).unwrap().load::<B>(&Default::default()).unwrap();
        let widened = TimmVit::from_encoder(encoder).collect(None, Some(Box::new(BurnToPyTorchAdapter)), false);
        assert_eq!(widened.len(), shapes.len());
        for snapshot in widened {
            let key = snapshot.full_path();
            let tensor = shapes.iter().position(|(name, _)| *name == key).unwrap_or_else(|| panic!("{key}"));
            assert_eq!(snapshot.dtype, DType::F32, "{key}");
            let values = snapshot.to_data().unwrap().to_vec::<f32>().unwrap();
            assert!(values.iter().enumerate().all(|(index, got)| *got == value(tensor, index)), "{key}");
        }
    }

    #[test]
    fn a_missing_or_misshapen_tensor_is_named_with_the_shape_expected() {
        let folder = tempfile::tempdir().unwrap();
        let mut shapes = expected_shapes(&nano());
        shapes.retain(|(key, _)| key != "blocks.1.attn.proj.weight");
        let error = open_error(&file_of(folder.path(), &shapes, &NANO_METADATA));
        assert!(error.contains("no tensor `blocks.1.attn.proj.weight` (expected shape [32, 32])"), "{error}");

        // The first block's MLP sets the width every other block must have.
        let mut shapes = expected_shapes(&nano());
        shapes.iter_mut().find(|(key, _)| key == "blocks.1.mlp.fc1.weight").unwrap().1 = vec![100, 32];
        let error = open_error(&file_of(folder.path(), &shapes, &NANO_METADATA));
        assert!(error.contains("`blocks.1.mlp.fc1.weight` has shape [100, 32], expected [128, 32]"), "{error}");
    }

    #[test]
    fn metadata_that_contradicts_the_tensors_is_named() {
        let folder = tempfile::tempdir().unwrap();
        let shapes = expected_shapes(&nano());
        let mut metadata = NANO_METADATA.to_vec();
        metadata.push(("img_size", "32"));
        let error = open_error(&file_of(folder.path(), &shapes, &metadata));
        assert!(error.contains("metadata `img_size` is 32") && error.contains("img_size 16"), "{error}");

        let metadata = [("num_heads", "2"), ("pixel_mean", "[0.5]"), ("pixel_std", "[0.2,0.2,0.2]")];
        let error = open_error(&file_of(folder.path(), &shapes, &metadata));
        assert!(error.contains("metadata `pixel_mean`") && error.contains("3 finite value"), "{error}");

        // Heads no tensor shows, given wrong.
        let path = file_of(folder.path(), &shapes, &NANO_METADATA);
        let error = EncoderFile::open(&path, &Hints { heads: Some(5), ..Hints::default() }).err().unwrap().to_string();
        assert!(error.contains("num_heads"), "{error}");
    }

    #[test]
    fn another_architecture_is_refused_by_the_tensor_that_does_not_fit() {
        let folder = tempfile::tempdir().unwrap();
        // A ViT with a class token: one more position, and the token itself.
        let mut shapes = expected_shapes(&nano());
        shapes.iter_mut().find(|(key, _)| key == "pos_embed").unwrap().1 = vec![1, 17, 32];
        shapes.push(("cls_token".into(), vec![1, 1, 32]));
        let error = open_error(&file_of(folder.path(), &shapes, &NANO_METADATA));
        assert!(error.contains("`pos_embed` has shape [1, 17, 32]") && error.contains("no class token"), "{error}");
        // A class token on an otherwise fitting encoder.
        let mut shapes = expected_shapes(&nano());
        shapes.push(("cls_token".into(), vec![1, 1, 32]));
        let error = open_error(&file_of(folder.path(), &shapes, &NANO_METADATA));
        assert!(error.contains("`cls_token`"), "{error}");
        // Not a ViT at all.
        let shapes = vec![("conv1.weight".to_string(), vec![64, 3, 7, 7]), ("fc.weight".to_string(), vec![1000, 512])];
        let error = open_error(&file_of(folder.path(), &shapes, &NANO_METADATA));
        assert!(error.contains("no tensor `patch_embed.proj.weight`"), "{error}");
    }
}
