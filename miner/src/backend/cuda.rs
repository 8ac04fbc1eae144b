//! The CUDA backend: an adapter from [`polylith_cuda::CudaGemm`] to [`GemmBackend`]. C stays
//! in device memory; rows are copied back one at a time when opened.

use super::{BackendError, Committed, GemmBackend, StageTimings};
use polylith_cuda::{CudaError, CudaGemm, DeviceProof};
use polylith_protocol::gemm::{Dtype, GemmSpec, MerkleTree};

/// Computes GEMM proofs on one CUDA device.
#[derive(Debug)]
pub struct CudaBackend {
    gemm: CudaGemm,
}

fn backend_error(e: CudaError) -> BackendError {
    match e {
        CudaError::DriverMissing
        | CudaError::NvrtcMissing
        | CudaError::NoDevice { .. }
        | CudaError::Unsupported { .. }
        | CudaError::Compile(_)
        | CudaError::SelfTest(_) => BackendError::Unavailable(e.to_string()),
        CudaError::TooLarge(_) => BackendError::TooLarge(e.to_string()),
        other => BackendError::Compute(other.to_string()),
    }
}

impl CudaBackend {
    /// Opens CUDA device `ordinal`, compiles the kernels for it and runs the self-test.
    /// Returns [`BackendError::Unavailable`] (never panics) when there is no driver, no
    /// NVRTC, no device, or the device computes a wrong self-test result.
    pub fn new(ordinal: usize) -> Result<Self, BackendError> {
        Ok(Self {
            gemm: CudaGemm::new(ordinal).map_err(backend_error)?,
        })
    }

    /// As [`CudaBackend::new`], with output buffers filled with `poison` before every run
    /// (`None` skips the fill). Tests use this to catch stale results.
    pub fn with_poison(ordinal: usize, poison: Option<i32>) -> Result<Self, BackendError> {
        Ok(Self {
            gemm: CudaGemm::new(ordinal)
                .map_err(backend_error)?
                .with_poison(poison),
        })
    }

    /// The device's name and architecture, for logs.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.gemm.device_name(), self.gemm.arch())
    }
}

struct CudaCommitted {
    proof: DeviceProof,
    tree: MerkleTree,
    timings: StageTimings,
}

impl Committed for CudaCommitted {
    fn tree(&self) -> &MerkleTree {
        &self.tree
    }
    fn row(&self, i: u32) -> Result<Vec<i32>, BackendError> {
        self.proof.row(i).map_err(backend_error)
    }
    fn bytes(&self) -> usize {
        // Device C and host leaves, plus the host tree's inner nodes.
        self.proof.bytes() + self.proof.rows() as usize * 32
    }
    fn timings(&self) -> StageTimings {
        self.timings
    }
}

fn us(ms: f64) -> u64 {
    (ms * 1000.0).max(0.0).round() as u64
}

impl GemmBackend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn commit(&self, spec: &GemmSpec, dtype: Dtype) -> Result<Box<dyn Committed>, BackendError> {
        spec.validate(u32::MAX)
            .map_err(|e| BackendError::TooLarge(e.to_string()))?;
        let proof = self.gemm.prove(spec, dtype).map_err(backend_error)?;
        // Openings need every level of the tree; building it from the device's leaves is n
        // small hashes on the host. The device's own root must agree.
        let tree = MerkleTree::from_leaves(proof.leaves.clone());
        if tree.root() != proof.root {
            return Err(BackendError::Compute(
                "device Merkle root differs from the tree over its leaves".to_string(),
            ));
        }
        let t = proof.timings;
        let timings = StageTimings {
            generate_us: us(t.generate_ms),
            gemm_us: us(t.gemm_ms),
            hash_us: us(t.hash_ms),
            copy_us: us(t.copy_ms),
        };
        Ok(Box::new(CudaCommitted {
            proof,
            tree,
            timings,
        }))
    }
}
