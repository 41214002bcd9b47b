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

pub struct AdamW<M: AutodiffModule<B>, B: AutodiffBackend> {
    adam: OptimizerAdaptor<Adam, M, B>,
}

/// Burn's Adam state for a module, for checkpoints.
pub type AdamWRecord<M, B> = <OptimizerAdaptor<Adam, M, B> as Optimizer<M, B>>::Record;

impl<M: AutodiffModule<B>, B: AutodiffBackend> Default for AdamW<M, B> {
    fn default() -> Self {
        // Burn's Adam defaults ε to 1e-5; PyTorch (and the paper's runs) use 1e-8.
        Self { adam: AdamConfig::new().with_beta_1(0.9).with_beta_2(0.95).with_epsilon(1e-8).init() }
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
