//! What a data-parallel step does beyond one process's: the gradients averaged over the
//! ranks as one flat buffer, and the check that every rank starts from the same parameters.
//!
//! Each rank computes the gradients of its own rows of the global batch (equal shares, see
//! [`jepa_shared::RankSlice`]); their mean over the ranks is the gradient of the mean loss
//! over the whole global batch, which one process would have computed. Every rank then
//! applies the same clipping, AdamW update and EMA to the same parameters.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use jepa_shared::checksum::Sha256Stream;

use crate::collective::{Collective, CollectiveError};

/// Replaces every gradient of `model` in `grads` by its mean over the ranks.
pub fn average_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    collective: &mut dyn Collective,
) -> Result<(), CollectiveError> {
    let mut flatten = Flatten::<B> { grads, values: Vec::new(), _backend: std::marker::PhantomData };
    model.visit(&mut flatten);
    let mut values = flatten.values;
    collective.all_reduce_mean(&mut values)?;
    let mut unflatten = Unflatten::<B> { grads, values: &values, offset: 0, _backend: std::marker::PhantomData };
    model.visit(&mut unflatten);
    debug_assert_eq!(unflatten.offset, values.len(), "every averaged value goes back to a gradient");
    Ok(())
}

/// The gradients, in the module's parameter order, as one buffer.
struct Flatten<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    values: Vec<f32>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.values.extend(f32_values(grad.into_data()));
        }
    }
}

/// The buffer back into the gradients, in the same order.
struct Unflatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    values: &'a [f32],
    offset: usize,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let shape = grad.shape();
            let count = shape.num_elements();
            let values = self.values[self.offset..self.offset + count].to_vec();
            self.offset += count;
            let averaged = Tensor::from_data(TensorData::new(values, shape), &grad.device());
            self.grads.register::<B::InnerBackend, D>(param.id, averaged);
        }
    }
}

fn f32_values(data: TensorData) -> Vec<f32> {
    data.convert::<f32>().into_vec::<f32>().expect("converted to f32")
}

/// SHA-256 (hex) of a module's float parameters in its parameter order, as f32.
pub fn parameters_digest<B: Backend, M: Module<B>>(module: &M) -> String {
    struct Digest<B: Backend>(Sha256Stream, std::marker::PhantomData<B>);
    impl<B: Backend> ModuleVisitor<B> for Digest<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            for value in f32_values(param.val().into_data()) {
                self.0.update(&value.to_le_bytes());
            }
        }
    }
    let mut digest = Digest::<B>(Sha256Stream::default(), std::marker::PhantomData);
    module.visit(&mut digest);
    digest.0.finish_hex()
}

/// The ranks whose `digest` differs from rank 0's (the same answer on every rank).
pub fn ranks_differing_from_rank_0(
    digest: &str,
    collective: &mut dyn Collective,
) -> Result<Vec<usize>, CollectiveError> {
    let mut leader = digest.as_bytes().to_vec();
    collective.broadcast(&mut leader)?;
    let mut differs = vec![0f64; collective.world_size()];
    differs[collective.rank()] = f64::from(u8::from(leader != digest.as_bytes()));
    collective.all_reduce_sum(&mut differs)?;
    Ok(differs.iter().enumerate().filter(|(_, flag)| **flag > 0.0).map(|(rank, _)| rank).collect())
}
