//! The seam data parallelism goes through: the few collective operations a data-parallel
//! step needs, over whichever engine launched the ranks.
//!
//! - [`Solo`]: one process, world size 1: every operation is a no-op, and the training step
//!   takes exactly the path it takes without data parallelism.
//! - `Mpi` (feature `mpi`): the system's MPI (OpenMPI, MPICH) through the `mpi` crate, on CPU
//!   buffers; `mpirun` or `srun` launches the ranks.
//! - `Nccl` (feature `nccl`, with `cuda`): NCCL on the GPU, bootstrapped through MPI or
//!   through torchrun's `MASTER_ADDR`/`MASTER_PORT`/`RANK`/`WORLD_SIZE`.
//!
//! Every operation is called by every rank in the same order; a rank that skips one hangs
//! the others, so the training loop calls them unconditionally once per step.

use std::sync::{Arc, Mutex, MutexGuard};

use jepa_shared::RankSlice;

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;

#[cfg(feature = "mpi")]
pub use mpi::Mpi;
#[cfg(feature = "nccl")]
pub use nccl::Nccl;

#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    #[error("{engine}: {problem}")]
    Engine { engine: &'static str, problem: String },
}

impl CollectiveError {
    pub fn engine(engine: &'static str, problem: impl Into<String>) -> Self {
        CollectiveError::Engine { engine, problem: problem.into() }
    }
}

pub type Result<T, E = CollectiveError> = std::result::Result<T, E>;

/// What a data-parallel step asks of the ranks.
pub trait Collective {
    /// This process's rank, `0..world_size()`; rank 0 writes the run's files.
    fn rank(&self) -> usize;

    fn world_size(&self) -> usize;

    /// Replaces `values` on every rank by their elementwise mean over the ranks, the same
    /// bits on every rank (the step's gradients, as one flat buffer).
    fn all_reduce_mean(&mut self, values: &mut [f32]) -> Result<()>;

    /// Replaces `values` on every rank by their elementwise sum over the ranks, the same bits
    /// on every rank (losses, statistics, flags).
    fn all_reduce_sum(&mut self, values: &mut [f64]) -> Result<()>;

    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<()>;

    /// Replaces `bytes` on every rank by rank 0's, whatever their lengths were.
    fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<()>;

    /// The rows of each global batch this rank trains on.
    fn ranks(&self) -> RankSlice {
        RankSlice { rank: self.rank(), world: self.world_size() }
    }
}

/// One process: world size 1, nothing to exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_mean(&mut self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn all_reduce_sum(&mut self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }

    fn broadcast(&mut self, _bytes: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

/// The collective a run trains under, shared by the loop and whoever launched it
/// ([`Solo`] unless told otherwise).
#[derive(Clone)]
pub struct Ranks(Arc<Mutex<dyn Collective + Send>>);

impl Ranks {
    pub fn new(collective: impl Collective + Send + 'static) -> Self {
        Ranks(Arc::new(Mutex::new(collective)))
    }

    pub fn lock(&self) -> MutexGuard<'_, dyn Collective + Send + 'static> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn rank(&self) -> usize {
        self.lock().rank()
    }

    pub fn world_size(&self) -> usize {
        self.lock().world_size()
    }

    /// Whether this rank writes the run's files (rank 0).
    pub fn is_leader(&self) -> bool {
        self.rank() == 0
    }
}

impl Default for Ranks {
    fn default() -> Self {
        Ranks::new(Solo)
    }
}

impl std::fmt::Debug for Ranks {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let collective = self.lock();
        write!(formatter, "rank {} of {}", collective.rank(), collective.world_size())
    }
}
