//! I-JEPA's predictor: a narrow ViT that, given the context encoder's tokens and where they
//! sit, predicts the target encoder's tokens at each target block's positions. MAE's decoder
//! is the same network with pixels as its output ([`PredictorConfig::init_with_output`]).
//!
//! Context tokens are projected to the predictor's width and get their positions' sin-cos
//! embedding; each target position gets a learnable mask token plus its embedding. The
//! blocks run over [context, mask tokens]; the mask tokens' outputs are projected back to
//! the encoder's width. All target blocks run in one pass, stacked along the batch.

use crate::vit::{
    Block, BlockConfig, VitConfig, gather_tokens, layer_norm, linear, normed, per_token, sincos_pos_embed,
};
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictorConfig {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
}

impl PredictorConfig {
    /// `None` when usable, else the field (within the section) and what is wrong.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.dim == 0 || !self.dim.is_multiple_of(4) {
            return Some(("dim", format!("is {}, expected a positive multiple of 4", self.dim)));
        }
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Some(("heads", format!("is {}, expected a divisor of dim {}", self.heads, self.dim)));
        }
        None
    }

    /// I-JEPA's predictor: its output has the encoder's width.
    pub fn init<B: Backend>(&self, encoder: &VitConfig, device: &B::Device) -> Predictor<B> {
        self.init_with_output(encoder, encoder.dim, device)
    }

    /// The same network with `output` values per token (MAE: the pixels of one patch).
    pub fn init_with_output<B: Backend>(&self, encoder: &VitConfig, output: usize, device: &B::Device) -> Predictor<B> {
        let blocks = (0..self.depth)
            .map(|layer| BlockConfig { dim: self.dim, heads: self.heads, mlp_ratio: 4, layer }.init(device))
            .collect();
        Predictor {
            embed: linear(encoder.dim, self.dim, 1.0, device),
            mask_token: Initializer::Normal { mean: 0.0, std: 0.02 }.init([1, 1, self.dim], device),
            pos_embed: sincos_pos_embed(self.dim, encoder.grid(), device),
            blocks,
            norm: layer_norm(self.dim, device),
            proj: linear(self.dim, output, 1.0, device),
        }
    }
}

#[derive(Module, Debug)]
pub struct Predictor<B: Backend> {
    embed: Linear<B>,
    mask_token: Param<Tensor<B, 3>>,
    /// Fixed `[1, patches, dim]`, rebuilt at init.
    pos_embed: Tensor<B, 3>,
    blocks: Vec<Block<B>>,
    norm: LayerNorm<B>,
    proj: Linear<B>,
}

impl<B: Backend> Predictor<B> {
    /// `context`: `[batch, k, encoder dim]` at patches `context_idx` (`[batch, k]`);
    /// `target_idx`: one `[batch, t]` per target block. Returns one `[batch, t, encoder dim]`
    /// prediction per target block.
    pub fn forward(
        &self,
        context: Tensor<B, 3>,
        context_idx: Tensor<B, 2, Int>,
        target_idx: &[Tensor<B, 2, Int>],
    ) -> Vec<Tensor<B, 3>> {
        let blocks = target_idx.len();
        let kept = context.dims()[1];
        // Every target block sees the same context: stack the blocks along the batch.
        let context = Tensor::cat(vec![self.embed_context(context, context_idx); blocks], 0);
        let targets = Tensor::cat(target_idx.to_vec(), 0);
        let [rows, target_len] = targets.dims();
        let tokens = self.tokens(context, targets);
        let predicted = tokens.slice([0..rows, kept..kept + target_len]);
        per_token(&self.proj, predicted).chunk(blocks, 0)
    }

    /// One query set over the context, with an output for every token: `[batch, k + t,
    /// output]`, the context positions first, then `query_idx`'s.
    pub fn forward_all(
        &self,
        context: Tensor<B, 3>,
        context_idx: Tensor<B, 2, Int>,
        query_idx: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        per_token(&self.proj, self.tokens(self.embed_context(context, context_idx), query_idx))
    }

    /// Sin-cos embeddings of `indices` (`[rows, k]`) at the predictor's width.
    fn positions(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, patches, dim] = self.pos_embed.dims();
        let rows = indices.dims()[0];
        gather_tokens(self.pos_embed.clone().expand([rows, patches, dim]), indices)
    }

    /// Context tokens at the predictor's width, with their positions.
    fn embed_context(&self, context: Tensor<B, 3>, context_idx: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        per_token(&self.embed, context) + self.positions(context_idx)
    }

    /// Embedded context + mask tokens at `query_idx`, through the blocks and the final norm.
    fn tokens(&self, context: Tensor<B, 3>, query_idx: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let dim = self.pos_embed.dims()[2];
        let [rows, query_len] = query_idx.dims();
        let queries = self.mask_token.val().expand([rows, query_len, dim]) + self.positions(query_idx);
        let mut tokens = Tensor::cat(vec![context, queries], 1);
        for block in &self.blocks {
            tokens = block.forward(tokens);
        }
        normed(&self.norm, tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    #[test]
    fn one_prediction_per_target_block_at_the_encoder_width() {
        let device = Default::default();
        let encoder = VitConfig::preset("nano", 16, 4, 3).unwrap();
        let predictor = PredictorConfig { dim: 16, depth: 2, heads: 2 }.init::<B>(&encoder, &device);
        let context = Tensor::<B, 3>::ones([2, 5, 32], &device);
        let index = |values: Vec<i64>, shape: [usize; 2]| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(values, shape), &device)
        };
        let context_idx = index(vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [2, 5]);
        let targets =
            [index(vec![10, 11, 12, 13], [2, 2]), index(vec![14, 15, 0, 1], [2, 2]), index(vec![3, 4, 5, 6], [2, 2])];
        let predictions = predictor.forward(context, context_idx, &targets);
        assert_eq!(predictions.len(), 3);
        for prediction in &predictions {
            assert_eq!(prediction.dims(), [2, 2, 32]);
        }
        // Different target positions get different predictions from the same context.
        let difference: f32 = (predictions[0].clone() - predictions[1].clone()).abs().sum().into_scalar();
        assert!(difference > 1e-4);
    }
}
