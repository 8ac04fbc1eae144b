//! The proof-of-compute task: deterministic matrices, exact products, Merkle commitment.
//!
//! Specified in `docs/protocol.md` ("GEMM task"); the CUDA generator in `cuda/` must be
//! bit-identical to [`entry`].

use crate::Hash32;
use serde::{Deserialize, Serialize};

/// Which matrix an entry belongs to (part of the generator's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// The left n×k matrix.
    A,
    /// The right k×m matrix.
    B,
}

/// Input dtype the miner is asked to use (both are exact for the bounded entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// f32 inputs, f32 accumulation (CPU default).
    #[default]
    F32,
    /// bf16 inputs, f32 accumulation.
    Bf16,
    /// int8 inputs, i32 accumulation.
    Int8,
}

/// Largest supported inner dimension (so that the bound R is at least 1).
pub const MAX_K: u32 = 1 << 22;

/// The splitmix64 finalizer used by the generator.
pub fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The bound R on |entry| for inner dimension k: the largest R ≤ 127 with k·R² < 2^24.
pub fn bound(_k: u32) -> i32 {
    todo!("H2")
}

/// Entry `idx` (row-major index) of operand `op` for `seed` and inner dimension `k`.
pub fn entry(_seed: u64, _op: Operand, _k: u32, _idx: u64) -> i32 {
    todo!("H2")
}

/// A task instance: sizes and seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GemmSpec {
    /// Fresh random seed chosen by the validator.
    pub seed: u64,
    /// Rows of A and C.
    pub n: u32,
    /// Inner dimension.
    pub k: u32,
    /// Columns of B and C.
    pub m: u32,
}

/// Errors validating a spec or an opening.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GemmError {
    /// Sizes are zero or too large.
    #[error("invalid sizes: {0}")]
    BadSize(String),
    /// A row index outside 0..n.
    #[error("row {0} out of range")]
    RowOutOfRange(u32),
    /// A Merkle path does not lead to the committed root.
    #[error("merkle path for row {0} does not match the root")]
    BadPath(u32),
    /// An opened row's values differ from the recomputed row.
    #[error("row {0} differs from the recomputed product")]
    WrongRow(u32),
}

impl GemmSpec {
    /// Checks sizes against limits (each ≤ `max_dim`, k ≤ [`MAX_K`], nonzero).
    pub fn validate(&self, _max_dim: u32) -> Result<(), GemmError> {
        todo!("H2")
    }
    /// 2·n·k·m, the floating-point operation count of the product.
    pub fn flops(&self) -> f64 {
        2.0 * self.n as f64 * self.k as f64 * self.m as f64
    }
    /// A as row-major f32 (n×k).
    pub fn matrix_a(&self) -> Vec<f32> {
        todo!("H2")
    }
    /// B as row-major f32 (k×m).
    pub fn matrix_b(&self) -> Vec<f32> {
        todo!("H2")
    }
    /// Row `i` of C = A·B, exactly, computed from the generator (validator's check).
    pub fn row_of_c(&self, _i: u32) -> Result<Vec<i32>, GemmError> {
        todo!("H2")
    }
}

/// Hash of one row of C (values as little-endian i32), the Merkle leaf.
pub fn leaf_hash(_row: &[i32]) -> Hash32 {
    todo!("H2")
}

/// Hash of an inner Merkle node.
pub fn node_hash(_left: &Hash32, _right: &Hash32) -> Hash32 {
    todo!("H2")
}

/// A Merkle tree over row hashes (all levels kept, so openings are cheap).
#[derive(Debug, Clone)]
pub struct MerkleTree {
    _private: (),
}

impl MerkleTree {
    /// Builds the tree from leaves (at least one).
    pub fn from_leaves(_leaves: Vec<Hash32>) -> Self {
        todo!("H2")
    }
    /// The root.
    pub fn root(&self) -> Hash32 {
        todo!("H2")
    }
    /// Number of leaves.
    pub fn len(&self) -> usize {
        todo!("H2")
    }
    /// True for an empty tree (never built by [`MerkleTree::from_leaves`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sibling path for leaf `i`, bottom-up.
    pub fn path(&self, _i: usize) -> Option<Vec<Hash32>> {
        todo!("H2")
    }
}

/// Checks that `leaf` at `index` of a tree with `n_leaves` leaves hashes up to `root`.
pub fn verify_path(
    _root: &Hash32,
    _n_leaves: usize,
    _index: usize,
    _leaf: &Hash32,
    _path: &[Hash32],
) -> bool {
    todo!("H2")
}

/// `POST /v1/gemm/commit` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// The task.
    pub spec: GemmSpec,
    /// Requested dtype (miners may ignore it on CPU).
    #[serde(default)]
    pub dtype: Dtype,
}

/// `POST /v1/gemm/commit` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitResponse {
    /// Id to use when opening rows.
    pub commitment_id: String,
    /// Merkle root over rows of C, hex.
    pub root: String,
    /// Number of rows committed (must equal n).
    pub rows: u32,
}

/// `POST /v1/gemm/open` body: the rows the validator picked after seeing the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRequest {
    /// From [`CommitResponse::commitment_id`].
    pub commitment_id: String,
    /// Row indices to open.
    pub rows: Vec<u32>,
}

/// One opened row with its Merkle path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenedRow {
    /// Row index.
    pub index: u32,
    /// The row's values.
    pub values: Vec<i32>,
    /// Sibling hashes bottom-up, hex.
    pub path: Vec<String>,
}

/// `POST /v1/gemm/open` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenResponse {
    /// The opened rows, in request order.
    pub rows: Vec<OpenedRow>,
}

/// Verifies an opening against the committed root and the exact recomputation of each row.
/// Returns the first failure.
pub fn verify_opening(
    _spec: &GemmSpec,
    _root: &Hash32,
    _requested: &[u32],
    _opening: &OpenResponse,
) -> Result<(), GemmError> {
    todo!("H2")
}

/// Rows to open so that a miner computing a fraction `f` of rows passes with probability
/// below `p`: the smallest r with f^r < p.
pub fn rows_for_soundness(_f: f64, _p: f64) -> u32 {
    todo!("H2")
}
