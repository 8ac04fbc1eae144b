//! Compute backends for the GEMM proof. The CPU backend always works; the CUDA backend is
//! chosen at run time. Both implement [`GemmBackend`], so one test body runs on both.

use crate::config::BackendKind;
use polylith_protocol::gemm::{Dtype, GemmSpec, MerkleTree, leaf_hash};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::Instant;

pub mod cpu;
pub mod cuda;

pub use cpu::CpuBackend;

/// Errors from a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The requested backend cannot run here (no driver, no device, no NVRTC).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The task is too large for this backend's limits.
    #[error("task too large: {0}")]
    TooLarge(String),
    /// A compute failure.
    #[error("compute failed: {0}")]
    Compute(String),
}

/// Where the time of one proof went, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimings {
    /// Generating A and B.
    pub generate_us: u64,
    /// The multiply.
    pub gemm_us: u64,
    /// Row hashes and the Merkle tree.
    pub hash_us: u64,
    /// Host/device copies.
    pub copy_us: u64,
}

/// A computed product held for later openings.
pub trait Committed: Send + Sync {
    /// The Merkle tree over C's rows.
    fn tree(&self) -> &MerkleTree;
    /// Row `i` of C (exact integers).
    fn row(&self, i: u32) -> Result<Vec<i32>, BackendError>;
    /// Bytes held (host or device) by this commitment.
    fn bytes(&self) -> usize;
    /// Where the time went.
    fn timings(&self) -> StageTimings;
}

/// A device able to compute and commit to C = A·B for a [`GemmSpec`].
pub trait GemmBackend: Send + Sync {
    /// `cpu` or `cuda` (metric label and log field).
    fn name(&self) -> &'static str;
    /// Generates A and B, multiplies, hashes rows and builds the tree.
    fn commit(&self, spec: &GemmSpec, dtype: Dtype) -> Result<Box<dyn Committed>, BackendError>;
}

/// A product held in host memory as exact i32 rows, with its Merkle tree. The CPU backend and
/// the adversarial behaviours produce these.
#[derive(Debug, Clone)]
pub struct HostCommitted {
    n: u32,
    m: u32,
    c: Vec<i32>,
    tree: MerkleTree,
    timings: StageTimings,
}

impl HostCommitted {
    /// Hashes the rows of the row-major n×m matrix `c` (in parallel) and builds the tree;
    /// `timings.hash_us` is filled in here.
    pub fn from_flat(
        n: u32,
        m: u32,
        c: Vec<i32>,
        mut timings: StageTimings,
    ) -> Result<Self, BackendError> {
        if n == 0 || m == 0 || c.len() != n as usize * m as usize {
            return Err(BackendError::Compute(format!(
                "matrix of {} values is not {n}×{m}",
                c.len()
            )));
        }
        let t = Instant::now();
        let leaves: Vec<_> = c.par_chunks(m as usize).map(leaf_hash).collect();
        let tree = MerkleTree::from_leaves(leaves);
        timings.hash_us = t.elapsed().as_micros() as u64;
        Ok(Self {
            n,
            m,
            c,
            tree,
            timings,
        })
    }

    /// Row-major values of C.
    pub fn values(&self) -> &[i32] {
        &self.c
    }
}

impl Committed for HostCommitted {
    fn tree(&self) -> &MerkleTree {
        &self.tree
    }
    fn row(&self, i: u32) -> Result<Vec<i32>, BackendError> {
        if i >= self.n {
            return Err(BackendError::Compute(format!(
                "row {i} out of range (n = {})",
                self.n
            )));
        }
        let m = self.m as usize;
        let start = i as usize * m;
        Ok(self.c[start..start + m].to_vec())
    }
    fn bytes(&self) -> usize {
        self.c.len() * 4 + (2 * self.n as usize) * 32
    }
    fn timings(&self) -> StageTimings {
        self.timings
    }
}

/// Picks the backend: `cpu` always works; `cuda` needs a usable GPU and otherwise fails with
/// one line; `auto` tries CUDA and falls back to the CPU.
pub fn select_backend(kind: BackendKind) -> Result<Arc<dyn GemmBackend>, BackendError> {
    match kind {
        BackendKind::Cpu => Ok(Arc::new(CpuBackend::new())),
        BackendKind::Cuda => cuda_backend(),
        BackendKind::Auto => match cuda_backend() {
            Ok(b) => Ok(b),
            Err(e) => {
                tracing::info!(reason = %e, "CUDA backend not usable; using the CPU backend");
                Ok(Arc::new(CpuBackend::new()))
            }
        },
    }
}

fn cuda_backend() -> Result<Arc<dyn GemmBackend>, BackendError> {
    let backend = cuda::CudaBackend::new(0)?;
    tracing::info!(device = %backend.describe(), "using the CUDA backend");
    Ok(Arc::new(backend))
}
