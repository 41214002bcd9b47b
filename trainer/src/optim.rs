//! AdamW as I-JEPA uses it: β = (0.9, 0.95), ε = 1e-8, and a decoupled weight decay whose
//! coefficient follows its own schedule, applied to weight matrices and kernels only.
//!
//! Burn's AdamW fixes the decay at construction, so this wraps Burn's Adam (no decay) and
//! applies the decay itself before each step: `p ← p·(1 − lr·wd)`, then the Adam update
//! with the gradient taken at the old `p` — PyTorch's `AdamW.step` order. Biases, norm
//! scales and other 1-D parameters get no decay (the official parameter groups).
//! Clipping, when asked, scales all gradients by one factor so their global L2 norm is at
//! most the limit (Burn's own clipping works per tensor).

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

/// Adam's β₁ and β₂: the seed's (the official code leaves PyTorch's β₂ = 0.999).
pub const BETAS: (f64, f64) = (0.9, 0.95);
/// Adam's ε, PyTorch's (Burn's default is 1e-5).
pub const EPSILON: f64 = 1e-8;

pub struct AdamW<M: AutodiffModule<B>, B: AutodiffBackend> {
    adam: OptimizerAdaptor<Adam, M, B>,
}

/// Burn's Adam state for a module, for checkpoints.
pub type AdamWRecord<M, B> = <OptimizerAdaptor<Adam, M, B> as Optimizer<M, B>>::Record;

impl<M: AutodiffModule<B>, B: AutodiffBackend> Default for AdamW<M, B> {
    fn default() -> Self {
        let (beta_1, beta_2) = BETAS;
        let config = AdamConfig::new().with_beta_1(beta_1 as f32).with_beta_2(beta_2 as f32);
        Self { adam: config.with_epsilon(EPSILON as f32).init() }
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> AdamW<M, B> {
    pub fn step(&mut self, module: M, grads: GradientsParams, lr: f64, weight_decay: f64) -> M {
        let module = module.map(&mut DecayMatrices { factor: 1.0 - lr * weight_decay });
        self.adam.step(lr, module, grads)
    }

    pub fn to_record(&self) -> AdamWRecord<M, B> {
        self.adam.to_record()
    }

    pub fn load_record(self, record: AdamWRecord<M, B>) -> Self {
        Self { adam: self.adam.load_record(record) }
    }
}

/// Multiplies every parameter of two or more dimensions by `factor`, in place of the graph.
struct DecayMatrices {
    factor: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for DecayMatrices {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if D < 2 {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let require_grad = tensor.is_require_grad();
        let mut decayed = Tensor::from_inner(tensor.inner().mul_scalar(self.factor));
        if require_grad {
            decayed = decayed.require_grad();
        }
        Param::from_mapped_value(id, decayed, mapper)
    }
}

/// The global L2 norm of `grads` over `module`'s parameters; when `max_norm` is set and
/// exceeded, every gradient is scaled by `max_norm / norm`. Returns the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> f64 {
    let mut squares = SumSquares::<B> { grads, total: 0.0, ids: Vec::new(), _backend: Default::default() };
    module.visit(&mut squares);
    let norm = squares.total.sqrt();
    if let Some(max_norm) = max_norm
        && norm > max_norm
    {
        let scale = max_norm / (norm + 1e-6);
        let ids = std::mem::take(&mut squares.ids);
        module.visit(&mut ScaleGrads::<B> { grads, scale, ids, _backend: Default::default() });
    }
    norm
}

struct SumSquares<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: f64,
    ids: Vec<ParamId>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let square: f64 = grad.powi_scalar(2).sum().into_scalar().elem();
            self.total += square;
            self.ids.push(param.id);
        }
    }
}

struct ScaleGrads<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    scale: f64,
    ids: Vec<ParamId>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.ids.contains(&param.id)
            && let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id)
        {
            self.grads.register::<B::InnerBackend, D>(param.id, grad.mul_scalar(self.scale));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};

    type B = Autodiff<NdArray<f32>>;

    #[derive(Module, Debug)]
    struct Tiny<B: burn::tensor::backend::Backend> {
        layer: Linear<B>,
    }

    fn values(tensor: Tensor<NdArray<f32>, 1>) -> Vec<f32> {
        tensor.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn decay_scales_matrices_by_one_minus_lr_times_wd_and_spares_biases() {
        let device = Default::default();
        let model = Tiny::<B> { layer: LinearConfig::new(3, 2).init(&device) };
        let weight_before = values(model.layer.weight.val().inner().flatten(0, 1));
        let bias_before = values(model.layer.bias.as_ref().unwrap().val().inner());
        // A zero gradient: Adam's own update is exactly 0, so only the decay moves weights.
        let input = Tensor::<B, 2>::ones([1, 3], &device);
        let loss = model.layer.forward(input).sum() * 0.0;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = AdamW::default().step(model, grads, 0.1, 0.5);
        let weight_after = values(model.layer.weight.val().inner().flatten(0, 1));
        let bias_after = values(model.layer.bias.as_ref().unwrap().val().inner());
        for (after, before) in weight_after.iter().zip(&weight_before) {
            assert!((after - before * 0.95).abs() < 1e-7, "{after} vs {before} × 0.95");
        }
        assert_eq!(bias_after, bias_before);
    }

    #[test]
    fn clipping_scales_the_global_norm_down_to_the_limit() {
        let device = Default::default();
        let model = Tiny::<B> { layer: LinearConfig::new(3, 2).init(&device) };
        let input = Tensor::<B, 2>::ones([1, 3], &device);
        // d/dw of 10·sum(Wx + b) is 10 for all 6 weights and 2 biases: norm 10·√8.
        let loss = model.layer.forward(input).sum() * 10.0;
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = clip_grad_norm(&model, &mut grads, Some(1.0));
        assert!((norm - 10.0 * 8f64.sqrt()).abs() < 1e-4, "{norm}");
        assert!((clip_grad_norm(&model, &mut grads, None) - 1.0).abs() < 1e-4);
    }
}
