//! [`Collective`] over NCCL on one GPU per rank.
//!
//! The ranks agree on an NCCL id through MPI (`mpirun`/`srun`, feature `mpi`) or, as
//! torchrun starts processes, through `MASTER_ADDR`, `MASTER_PORT`, `RANK` and `WORLD_SIZE`:
//! rank 0 serves the id on that address and the others fetch it. Buffers are copied to the
//! GPU, reduced there by NCCL (every rank receives the same bits) and copied back.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};

use super::{Collective, CollectiveError, Result};

const ID_BYTES: usize = 128;

pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
    /// MPI, when the ranks met through it: finalised after NCCL, once training is done.
    #[cfg(feature = "mpi")]
    _mpi: Option<super::Mpi>,
}

// SAFETY: an NCCL communicator may be used from any thread, one call at a time; `Ranks`
// holds a collective behind a mutex, which serialises the calls.
unsafe impl Send for Nccl {}

fn failed(problem: impl std::fmt::Debug) -> CollectiveError {
    CollectiveError::engine("NCCL", format!("{problem:?}"))
}

fn env(name: &str) -> Result<String> {
    std::env::var(name)
        .map_err(|_| CollectiveError::engine("NCCL", format!("{name} is not set (torchrun-style launch)")))
}

fn env_number(name: &str) -> Result<usize> {
    env(name)?.parse().map_err(|_| CollectiveError::engine("NCCL", format!("{name} is not a number")))
}

impl Nccl {
    /// Rank `rank` of `world` on GPU `ordinal`, with the id rank 0 created.
    pub fn join(ordinal: usize, rank: usize, world: usize, id: Id) -> Result<Self> {
        let context = CudaContext::new(ordinal).map_err(failed)?;
        let stream = context.default_stream();
        let comm = Comm::from_rank(stream.clone(), rank, world, id).map_err(failed)?;
        Ok(Nccl {
            comm,
            stream,
            #[cfg(feature = "mpi")]
            _mpi: None,
        })
    }

    /// Ranks started as torchrun starts them: `RANK` of `WORLD_SIZE`, GPU `LOCAL_RANK`
    /// (else `RANK`), the id served by rank 0 on `MASTER_ADDR:MASTER_PORT`.
    pub fn from_env() -> Result<Self> {
        let (rank, world) = (env_number("RANK")?, env_number("WORLD_SIZE")?);
        let ordinal = std::env::var("LOCAL_RANK").ok().and_then(|local| local.parse().ok()).unwrap_or(rank);
        let address = format!("{}:{}", env("MASTER_ADDR")?, env("MASTER_PORT")?);
        let id = if rank == 0 {
            let id = Id::new().map_err(failed)?;
            let listener = TcpListener::bind(&address).map_err(|error| failed(format!("{address}: {error}")))?;
            let bytes: Vec<u8> = id.internal().iter().map(|&byte| byte as u8).collect();
            for _ in 1..world {
                let (mut peer, _) = listener.accept().map_err(failed)?;
                peer.write_all(&bytes).map_err(failed)?;
            }
            id
        } else {
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut peer = loop {
                match TcpStream::connect(&address) {
                    Ok(peer) => break peer,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                    Err(error) => return Err(failed(format!("{address}: {error}"))),
                }
            };
            let mut bytes = [0u8; ID_BYTES];
            peer.read_exact(&mut bytes).map_err(failed)?;
            Id::uninit(bytes.map(|byte| byte as std::ffi::c_char))
        };
        Self::join(ordinal, rank, world, id)
    }

    /// Ranks started by `mpirun`/`srun`: rank 0 creates the id and MPI carries it to the others.
    #[cfg(feature = "mpi")]
    pub fn over_mpi(mut mpi: super::Mpi, ordinal: usize) -> Result<Self> {
        let mut bytes = if mpi.rank() == 0 {
            Id::new().map_err(failed)?.internal().iter().map(|&byte| byte as u8).collect()
        } else {
            Vec::new()
        };
        mpi.broadcast(&mut bytes)?;
        let bytes: [u8; ID_BYTES] =
            bytes.try_into().map_err(|_| CollectiveError::engine("NCCL", "the id from rank 0 has the wrong length"))?;
        let id = Id::uninit(bytes.map(|byte| byte as std::ffi::c_char));
        let nccl = Self::join(ordinal, mpi.rank(), mpi.world_size(), id)?;
        Ok(Nccl { _mpi: Some(mpi), ..nccl })
    }

    fn reduce<T: cudarc::nccl::safe::NcclType + cudarc::driver::DeviceRepr>(
        &mut self,
        values: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        let mut buffer = self.stream.clone_htod(values).map_err(failed)?;
        self.comm.all_reduce_in_place(&mut buffer, &op).map_err(failed)?;
        self.stream.memcpy_dtoh(&buffer, values).map_err(failed)?;
        self.stream.synchronize().map_err(failed)
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    fn all_reduce_mean(&mut self, values: &mut [f32]) -> Result<()> {
        self.reduce(values, ReduceOp::Avg)
    }

    fn all_reduce_sum(&mut self, values: &mut [f64]) -> Result<()> {
        self.reduce(values, ReduceOp::Sum)
    }

    fn barrier(&mut self) -> Result<()> {
        self.reduce(&mut [0f32], ReduceOp::Sum)
    }

    fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<()> {
        let mut len = [bytes.len() as u64];
        let mut buffer = self.stream.clone_htod(&len).map_err(failed)?;
        self.comm.broadcast_in_place(&mut buffer, 0).map_err(failed)?;
        self.stream.memcpy_dtoh(&buffer, &mut len).map_err(failed)?;
        self.stream.synchronize().map_err(failed)?;
        bytes.resize(len[0] as usize, 0);
        if bytes.is_empty() {
            return Ok(());
        }
        let mut buffer = self.stream.clone_htod(&bytes[..]).map_err(failed)?;
        self.comm.broadcast_in_place(&mut buffer, 0).map_err(failed)?;
        self.stream.memcpy_dtoh(&buffer, &mut bytes[..]).map_err(failed)?;
        self.stream.synchronize().map_err(failed)
    }
}
