//! Compute backends for the GEMM proof. The CPU backend always works; the CUDA backend is
//! chosen at run time. Both implement [`GemmBackend`], so one test body runs on both.

use polylith_protocol::gemm::{Dtype, GemmSpec, MerkleTree};

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
