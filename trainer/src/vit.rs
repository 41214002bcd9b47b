//! The Vision Transformer every method here encodes images with (Dosovitskiy et al. 2021,
//! as the I-JEPA code builds it): convolutional patch embedding, fixed 2D sin-cos position
//! embedding, pre-norm blocks (LayerNorm → attention, LayerNorm → MLP ×4 with GELU), a final
//! LayerNorm, and no CLS token.
//!
//! [`VisionTransformer::forward`] takes the indices of the patches to keep and gathers them
//! **before** the blocks, so I-JEPA's context encoder never attends to a patch outside its
//! context (slicing after the blocks would leak the whole image into every token).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::kernels::{self, gelu, self_attention};

/// The official code's LayerNorm epsilon.
const LAYER_NORM_EPSILON: f64 = 1e-6;

/// Encoder shape. `image_size_px` must be a multiple of `patch_size_px`, and `dim` of 4
/// (the 2D sin-cos embedding splits it into four) and of `heads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    pub image_size_px: usize,
    pub patch_size_px: usize,
    pub channels: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
}

/// The presets' MLP width as a multiple of `dim` (the paper's and timm's).
fn default_mlp_ratio() -> usize {
    4
}

/// `(name, dim, depth, heads)`: the paper's sizes, and two small ones for CPUs.
pub const PRESETS: [(&str, usize, usize, usize); 5] =
    [("nano", 32, 2, 2), ("micro", 96, 4, 3), ("tiny", 192, 12, 3), ("small", 384, 12, 6), ("base", 768, 12, 12)];

impl VitConfig {
    /// A named preset (see [`PRESETS`]) at the given resolution.
    pub fn preset(name: &str, image_size_px: usize, patch_size_px: usize, channels: usize) -> Option<Self> {
        let (_, dim, depth, heads) = PRESETS.iter().find(|(preset, ..)| *preset == name)?;
        let mlp_ratio = default_mlp_ratio();
        Some(Self { image_size_px, patch_size_px, channels, dim: *dim, depth: *depth, heads: *heads, mlp_ratio })
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size_px / self.patch_size_px
    }

    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// `None` when the shape is usable, else the field and what is wrong.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.patch_size_px == 0 || self.image_size_px == 0 || !self.image_size_px.is_multiple_of(self.patch_size_px)
        {
            return Some((
                "image_size_px",
                format!(
                    "is {}, expected a positive multiple of patch_size_px {}",
                    self.image_size_px, self.patch_size_px
                ),
            ));
        }
        if self.dim == 0 || !self.dim.is_multiple_of(4) {
            return Some(("dim", format!("is {}, expected a positive multiple of 4 (2D sin-cos positions)", self.dim)));
        }
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Some(("heads", format!("is {}, expected a divisor of dim {}", self.heads, self.dim)));
        }
        if !(self.channels == 1 || self.channels == 3) {
            return Some(("channels", format!("is {}, expected 1 or 3", self.channels)));
        }
        if self.mlp_ratio == 0 {
            return Some(("mlp_ratio", "is 0, expected at least 1".into()));
        }
        None
    }

    /// Panics on a shape [`VitConfig::problem`] reports; check it first where input is a user's.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisionTransformer<B> {
        if let Some((field, problem)) = self.problem() {
            panic!("ViT config: `{field}` {problem}");
        }
        let patch_embed = Conv2dConfig::new([self.channels, self.dim], [self.patch_size_px; 2])
            .with_stride([self.patch_size_px; 2])
            .init(device);
        let blocks = (0..self.depth).map(|layer| BlockConfig::for_vit(self, layer).init(device)).collect();
        VisionTransformer {
            patch_embed,
            pos_embed: sincos_pos_embed(self.dim, self.grid(), device),
            blocks,
            norm: layer_norm(self.dim, device),
            dim: self.dim,
        }
    }
}

#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    pub(crate) patch_embed: Conv2d<B>,
    /// `[1, patches, dim]`, fixed (not trained, so not in checkpoints: it is rebuilt at init;
    /// an imported encoder brings its own).
    pub(crate) pos_embed: Tensor<B, 3>,
    pub(crate) blocks: Vec<Block<B>>,
    pub(crate) norm: LayerNorm<B>,
    pub(crate) dim: usize,
}

impl<B: Backend> VisionTransformer<B> {
    /// `images`: `[batch, channels, size, size]`, already normalised. `keep`: `[batch, k]`
    /// patch indices (raster order) to encode, or `None` for all. Returns `[batch, k, dim]`.
    pub fn forward(&self, images: Tensor<B, 4>, keep: Option<Tensor<B, 2, Int>>) -> Tensor<B, 3> {
        self.forward_layers(images, keep, 1).pop().expect("at least the last layer")
    }

    /// The outputs of the last `last` blocks, the final one passed through the final
    /// LayerNorm like the others (for the probe's concat-of-last-layers option).
    pub fn forward_layers(
        &self,
        images: Tensor<B, 4>,
        keep: Option<Tensor<B, 2, Int>>,
        last: usize,
    ) -> Vec<Tensor<B, 3>> {
        let patches = self.patch_embed.forward(images); // [batch, dim, grid, grid]
        let [batch, dim, rows, cols] = patches.dims();
        let mut tokens = patches.reshape([batch, dim, rows * cols]).swap_dims(1, 2) + self.pos_embed.clone();
        if let Some(keep) = keep {
            tokens = gather_tokens(tokens, keep);
        }
        let first_kept = self.blocks.len().saturating_sub(last.max(1));
        let mut outputs = Vec::with_capacity(last);
        for (layer, block) in self.blocks.iter().enumerate() {
            tokens = block.forward(tokens);
            if layer >= first_kept && layer + 1 < self.blocks.len() {
                outputs.push(normed(&self.norm, tokens.clone()));
            }
        }
        outputs.push(normed(&self.norm, tokens));
        outputs
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// `tokens[b, indices[b, k], :]` → `[batch, k, dim]`.
pub fn gather_tokens<B: Backend>(tokens: Tensor<B, 3>, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let [batch, kept] = indices.dims();
    let dim = tokens.dims()[2];
    tokens.gather(1, indices.unsqueeze_dim::<3>(2).expand([batch, kept, dim]))
}

/// Pixels as the loader delivers them (u8, `[batch, channels, h, w]`) → the normalised
/// float tensor the encoder takes: `(x / 255 − mean) / std` per channel, on `device`.
pub fn normalize_pixels<B: Backend>(
    pixels: &[u8],
    shape: [usize; 4],
    mean: &[f32],
    std: &[f32],
    device: &B::Device,
) -> Tensor<B, 4> {
    let channels = shape[1];
    let images =
        Tensor::<B, 4>::from_data(TensorData::new(pixels.iter().map(|&p| f32::from(p)).collect(), shape), device);
    let per_channel = |values: &[f32], scale: f32| {
        let values: Vec<f32> = values.iter().map(|v| v * scale).collect();
        Tensor::<B, 1>::from_data(TensorData::new(values, [channels]), device).reshape([1, channels, 1, 1])
    };
    (images - per_channel(mean, 255.0)) / per_channel(std, 255.0)
}

/// One pre-norm transformer block; the predictor uses the same blocks.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub(crate) norm1: LayerNorm<B>,
    pub(crate) qkv: Linear<B>,
    pub(crate) proj: Linear<B>,
    pub(crate) norm2: LayerNorm<B>,
    pub(crate) fc1: Linear<B>,
    pub(crate) fc2: Linear<B>,
    pub(crate) heads: usize,
}

/// What a [`Block`] needs; `layer` scales the residual projections' initialisation.
#[derive(Debug, Clone)]
pub struct BlockConfig {
    pub dim: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    /// 0-based depth of the block in its stack.
    pub layer: usize,
}

impl BlockConfig {
    fn for_vit(config: &VitConfig, layer: usize) -> Self {
        Self { dim: config.dim, heads: config.heads, mlp_ratio: config.mlp_ratio, layer }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Block<B> {
        let hidden = self.dim * self.mlp_ratio;
        // The official init: truncated-normal(0.02) weights, zero biases, and the two
        // projections that feed the residual stream divided by √(2·(layer + 1)).
        let residual_scale = 1.0 / (2.0 * (self.layer as f64 + 1.0)).sqrt();
        Block {
            norm1: layer_norm(self.dim, device),
            qkv: linear(self.dim, 3 * self.dim, 1.0, device),
            proj: linear(self.dim, self.dim, residual_scale, device),
            norm2: layer_norm(self.dim, device),
            fc1: linear(self.dim, hidden, 1.0, device),
            fc2: linear(hidden, self.dim, residual_scale, device),
            heads: self.heads,
        }
    }
}

impl<B: Backend> Block<B> {
    pub fn forward(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        let tokens = tokens.clone() + self.attention(normed(&self.norm1, tokens));
        let hidden = gelu(per_token(&self.fc1, normed(&self.norm2, tokens.clone())));
        tokens + per_token(&self.fc2, hidden)
    }

    fn attention(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        per_token(&self.proj, self_attention(per_token(&self.qkv, tokens), self.heads))
    }
}

/// `layer` applied to every token of `[batch, tokens, inputs]` as one `[batch · tokens,
/// inputs]` matrix product. Burn's `Linear` on a 3-D input broadcasts its weight into one
/// small product per batch row (and sums `batch` weight gradients in the backward pass);
/// on the CPU backend that costs several times the single large product.
pub fn per_token<B: Backend>(layer: &Linear<B>, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, length, inputs] = tokens.dims();
    let outputs = layer.forward(tokens.reshape([batch * length, inputs]));
    let width = outputs.dims()[1];
    outputs.reshape([batch, length, width])
}

/// `norm` (made by [`layer_norm`]) applied over the last dimension of `tokens`.
pub fn normed<B: Backend>(norm: &LayerNorm<B>, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
    kernels::layer_norm(norm, tokens, LAYER_NORM_EPSILON)
}

/// LayerNorm with the official epsilon; `pub` for the predictor.
pub fn layer_norm<B: Backend>(dim: usize, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(dim).with_epsilon(LAYER_NORM_EPSILON).init(device)
}

/// Linear layer with N(0, 0.02·`scale`) weights and zero bias (the official init, with a
/// plain normal for the truncated one: at 0.02 the two differ only beyond 2σ = 0.04).
pub fn linear<B: Backend>(inputs: usize, outputs: usize, scale: f64, device: &B::Device) -> Linear<B> {
    let mut layer = LinearConfig::new(inputs, outputs)
        .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 * scale })
        .init(device);
    layer.bias = Some(Param::from_tensor(Tensor::zeros([outputs], device)));
    layer
}

/// The fixed 2D sin-cos position embedding, `[1, grid², dim]`: the first half of each
/// vector encodes the patch's column, the second its row, each as sin then cos over
/// `dim / 4` frequencies 1 / 10000^(i / (dim / 4)).
pub fn sincos_pos_embed<B: Backend>(dim: usize, grid: usize, device: &B::Device) -> Tensor<B, 3> {
    let quarter = dim / 4;
    let mut values = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            for coordinate in [col, row] {
                let frequencies = (0..quarter).map(|i| 1.0 / 10_000f64.powf(i as f64 / quarter as f64));
                let angles: Vec<f64> = frequencies.map(|frequency| coordinate as f64 * frequency).collect();
                values.extend(angles.iter().map(|angle| angle.sin() as f32));
                values.extend(angles.iter().map(|angle| angle.cos() as f32));
            }
        }
    }
    Tensor::from_data(TensorData::new(values, [1, grid * grid, dim]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn nano() -> VitConfig {
        VitConfig::preset("nano", 16, 4, 3).unwrap()
    }

    fn images(seed: u64, batch: usize) -> Tensor<B, 4> {
        let mut rng = jepa_shared::rng::KeyedRng::new(&[seed]);
        let values: Vec<f32> = (0..batch * 3 * 16 * 16).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        Tensor::from_data(TensorData::new(values, [batch, 3, 16, 16]), &Default::default())
    }

    #[test]
    fn shapes_through_the_encoder_with_and_without_a_token_subset() {
        let device = Default::default();
        let model = nano().init::<B>(&device);
        assert_eq!(model.forward(images(1, 2), None).dims(), [2, 16, 32]);
        let keep = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i64, 5, 15, 1, 2, 3], [2, 3]), &device);
        assert_eq!(model.forward(images(1, 2), Some(keep)).dims(), [2, 3, 32]);
        let layers = model.forward_layers(images(1, 2), None, 2);
        assert_eq!(layers.len(), 2);
    }

    #[test]
    fn pixels_outside_the_kept_patches_do_not_change_the_output() {
        let device = Default::default();
        let model = nano().init::<B>(&device);
        let keep = || Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i64, 1, 4, 5], [1, 4]), &device);
        let original = images(3, 1);
        // Patches 0, 1, 4, 5 are the top-left 8×8 pixels; rewrite everything else.
        let noise = images(4, 1);
        let changed =
            original.clone().slice_assign([0..1, 0..3, 8..16, 0..16], noise.clone().slice([0..1, 0..3, 8..16, 0..16]));
        let changed = changed.slice_assign([0..1, 0..3, 0..8, 8..16], noise.slice([0..1, 0..3, 0..8, 8..16]));
        let before = model.forward(original.clone(), Some(keep()));
        let after = model.forward(changed.clone(), Some(keep()));
        before.to_data().assert_approx_eq::<f32>(&after.to_data(), burn::tensor::Tolerance::absolute(1e-6));
        // The full-image encoder does see the change: the check above is not vacuous.
        let full_before = model.forward(original, None).slice([0..1, 0..1, 0..32]);
        let full_after = model.forward(changed, None).slice([0..1, 0..1, 0..32]);
        let difference: f32 = (full_before - full_after).abs().sum().into_scalar();
        assert!(difference > 1e-4, "{difference}");
    }

    #[test]
    fn sincos_embedding_matches_the_closed_form() {
        let embed = sincos_pos_embed::<B>(8, 3, &Default::default()).into_data().to_vec::<f32>().unwrap();
        // Patch (row 2, col 1) = index 7; dim 8: quarter 2, frequencies 1 and 1/100.
        let patch = &embed[7 * 8..8 * 8];
        let expected = [
            1f64.sin(),
            0.01f64.sin(),
            1f64.cos(),
            0.01f64.cos(),
            2f64.sin(),
            0.02f64.sin(),
            2f64.cos(),
            0.02f64.cos(),
        ];
        for (got, want) in patch.iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-6, "{patch:?}");
        }
    }

    #[test]
    fn normalisation_is_per_channel() {
        let pixels = [0u8, 255, 51, 102];
        let out = normalize_pixels::<B>(&pixels, [1, 2, 1, 2], &[0.0, 0.2], &[1.0, 0.4], &Default::default());
        let values = out.into_data().to_vec::<f32>().unwrap();
        let expected = [0.0, 1.0, 0.0, 0.5];
        for (got, want) in values.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{values:?}");
        }
    }

    #[test]
    fn bad_shapes_are_named() {
        let mut config = nano();
        config.image_size_px = 18;
        assert_eq!(config.problem().unwrap().0, "image_size_px");
        let mut config = nano();
        config.heads = 5;
        assert_eq!(config.problem().unwrap().0, "heads");
    }
}
