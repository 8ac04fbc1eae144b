//! The CPU backend: candle's multi-threaded f32 matmul (exact for the bounded integer
//! entries), rows converted to i32 and hashed in parallel with rayon.

use super::{BackendError, Committed, GemmBackend, HostCommitted, StageTimings};
use candle_core::{Device, Tensor};
use polylith_protocol::gemm::{Dtype, GemmSpec, Operand, entry};
use rayon::prelude::*;
use std::time::Instant;

/// Computes GEMM proofs on the host CPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl CpuBackend {
    /// The CPU backend (always available).
    pub fn new() -> Self {
        Self
    }
}

/// Generates operand `op` (rows × cols, row-major) in parallel from the counter-based
/// generator; identical to `GemmSpec::matrix_a`/`matrix_b`, only faster on many cores.
pub fn generate(spec: &GemmSpec, op: Operand) -> Vec<f32> {
    let (rows, cols) = match op {
        Operand::A => (spec.n as u64, spec.k as u64),
        Operand::B => (spec.k as u64, spec.m as u64),
    };
    (0..rows * cols)
        .into_par_iter()
        .map(|idx| entry(spec.seed, op, spec.k, idx) as f32)
        .collect()
}

/// C = A·B as exact i32 values, row-major n×m, plus (generate, gemm) microseconds.
pub fn product(spec: &GemmSpec) -> Result<(Vec<i32>, u64, u64), BackendError> {
    let (n, k, m) = (spec.n as usize, spec.k as usize, spec.m as usize);
    let t0 = Instant::now();
    let a = generate(spec, Operand::A);
    let b = generate(spec, Operand::B);
    let generate_us = t0.elapsed().as_micros() as u64;

    let t1 = Instant::now();
    let compute = |e: candle_core::Error| BackendError::Compute(e.to_string());
    let a = Tensor::from_vec(a, (n, k), &Device::Cpu).map_err(compute)?;
    let b = Tensor::from_vec(b, (k, m), &Device::Cpu).map_err(compute)?;
    let c = a.matmul(&b).map_err(compute)?;
    let c: Vec<f32> = c.flatten_all().and_then(|t| t.to_vec1()).map_err(compute)?;
    // Every partial sum is an integer below 2^24, so the f32 result is exact.
    let c: Vec<i32> = c.par_iter().map(|&v| v as i32).collect();
    let gemm_us = t1.elapsed().as_micros() as u64;
    Ok((c, generate_us, gemm_us))
}

impl GemmBackend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn commit(&self, spec: &GemmSpec, _dtype: Dtype) -> Result<Box<dyn Committed>, BackendError> {
        // Every dtype is exact for the bounded entries, so the CPU always computes in f32.
        spec.validate(u32::MAX)
            .map_err(|e| BackendError::TooLarge(e.to_string()))?;
        let (c, generate_us, gemm_us) = product(spec)?;
        let timings = StageTimings {
            generate_us,
            gemm_us,
            ..StageTimings::default()
        };
        Ok(Box::new(HostCommitted::from_flat(
            spec.n, spec.m, c, timings,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polylith_protocol::gemm::{MerkleTree, leaf_hash};

    fn spec(seed: u64, n: u32, k: u32, m: u32) -> GemmSpec {
        GemmSpec { seed, n, k, m }
    }

    #[test]
    fn parallel_generator_matches_the_protocol_matrices() {
        let s = spec(7, 5, 9, 3);
        assert_eq!(generate(&s, Operand::A), s.matrix_a());
        assert_eq!(generate(&s, Operand::B), s.matrix_b());
    }

    #[test]
    fn product_equals_a_naive_integer_product() {
        let s = spec(42, 13, 257, 11);
        let a = generate(&s, Operand::A);
        let b = generate(&s, Operand::B);
        let (c, _, _) = product(&s).unwrap();
        for i in 0..13 {
            for j in 0..11 {
                let mut acc = 0i64;
                for l in 0..257 {
                    acc += a[i * 257 + l] as i64 * b[l * 11 + j] as i64;
                }
                assert_eq!(c[i * 11 + j] as i64, acc, "C[{i}][{j}]");
            }
        }
    }

    #[test]
    fn commitment_rows_and_root_match_the_validators_recomputation() {
        let s = spec(3, 9, 64, 17);
        let committed = CpuBackend::new().commit(&s, Dtype::F32).unwrap();
        let mut leaves = Vec::new();
        for i in 0..9 {
            let expected = s.row_of_c(i).unwrap();
            assert_eq!(committed.row(i).unwrap(), expected);
            leaves.push(leaf_hash(&expected));
        }
        assert_eq!(
            committed.tree().root(),
            MerkleTree::from_leaves(leaves).root()
        );
        assert!(committed.row(9).is_err());
        assert!(committed.bytes() >= 9 * 17 * 4);
    }

    #[test]
    fn zero_sized_task_is_an_error_not_a_panic() {
        assert!(
            CpuBackend::new()
                .commit(&spec(1, 0, 4, 4), Dtype::F32)
                .is_err()
        );
    }
}
