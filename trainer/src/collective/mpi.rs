//! [`Collective`] over the system's MPI, on CPU buffers.
//!
//! Sums are reduced to rank 0 and broadcast from it, so every rank receives the same bits
//! whatever order the reduction added in: every rank then applies the same update.

use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use super::{Collective, CollectiveError, Result};

pub struct Mpi {
    world: SimpleCommunicator,
    // Finalises MPI when dropped, after `world`.
    _universe: Universe,
}

// SAFETY: MPI is initialised with `MPI_THREAD_SERIALIZED`: any thread may call it as long
// as no two do at once. `Ranks` holds a collective behind a mutex, which serialises the calls.
unsafe impl Send for Mpi {}

impl Mpi {
    /// Joins the ranks `mpirun` or `srun` started (a process started alone is rank 0 of 1).
    pub fn init() -> Result<Self> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| CollectiveError::engine("MPI", "already initialised in this process"))?;
        if threading < Threading::Serialized {
            return Err(CollectiveError::engine(
                "MPI",
                format!(
                    "the library offers threading level {threading:?}; serialised calls from any thread are needed"
                ),
            ));
        }
        Ok(Mpi { world: universe.world(), _universe: universe })
    }

    fn sum_at_root_then_share<T: mpi::datatype::Equivalence + Copy>(&self, values: &mut [T]) {
        let root = self.world.process_at_rank(0);
        if self.world.rank() == 0 {
            let sent = values.to_vec();
            root.reduce_into_root(&sent[..], values, SystemOperation::sum());
        } else {
            root.reduce_into(&values[..], SystemOperation::sum());
        }
        root.broadcast_into(values);
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_mean(&mut self, values: &mut [f32]) -> Result<()> {
        self.sum_at_root_then_share(values);
        let world = self.world_size() as f32;
        values.iter_mut().for_each(|value| *value /= world);
        Ok(())
    }

    fn all_reduce_sum(&mut self, values: &mut [f64]) -> Result<()> {
        self.sum_at_root_then_share(values);
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<()> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
        Ok(())
    }
}
