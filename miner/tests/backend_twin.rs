//! One test body, two devices: the same GEMM-proof checks run against the CPU backend (always)
//! and the CUDA backend (when a GPU is present and POLYLITH_GPU_TESTS=1). Results must equal the
//! validator's exact recomputation (`GemmSpec::row_of_c`) bit for bit, and the commitments
//! must equal the protocol's Merkle tree over those rows.

use polylith_miner::backend::cuda::CudaBackend;
use polylith_miner::backend::{BackendError, CpuBackend, GemmBackend};
use polylith_protocol::gemm::{Dtype, GemmSpec, MerkleTree, leaf_hash};
use rand::Rng;

/// Odd sizes on purpose: single elements, partial tiles on every edge, rows of one and of
/// several BLAKE3 chunks, odd Merkle levels.
const SIZES: &[(u32, u32, u32)] = &[
    (1, 1, 1),
    (17, 33, 65),
    (129, 257, 63),
    (300, 1000, 77),
    (5, 4096, 300),
];

/// Checks every row and the root of `backend`'s commitment against the protocol, for random
/// seeds, every size and every dtype. Returns the roots, in order, for cross-device checks.
fn twin_body(backend: &dyn GemmBackend, seeds: &[u64]) -> Vec<[u8; 32]> {
    let mut roots = Vec::new();
    for (&(n, k, m), &seed) in SIZES.iter().zip(seeds.iter().cycle()) {
        for dtype in [Dtype::Bf16, Dtype::Int8, Dtype::F32] {
            let spec = GemmSpec { seed, n, k, m };
            let what = format!("{} {dtype:?} {n}×{k}×{m} seed {seed:#x}", backend.name());
            let committed = backend
                .commit(&spec, dtype)
                .unwrap_or_else(|e| panic!("{what}: commit failed: {e}"));
            let mut leaves = Vec::with_capacity(n as usize);
            for i in 0..n {
                let want = spec.row_of_c(i).expect("row in range");
                let got = committed
                    .row(i)
                    .unwrap_or_else(|e| panic!("{what}: row {i}: {e}"));
                assert_eq!(got, want, "{what}: row {i} differs from the exact product");
                leaves.push(leaf_hash(&want));
            }
            let tree = MerkleTree::from_leaves(leaves);
            assert_eq!(committed.tree().root(), tree.root(), "{what}: root");
            assert_eq!(committed.tree().len(), n as usize, "{what}: leaf count");
            assert!(
                committed.row(n).is_err(),
                "{what}: row n must be out of range"
            );
            assert!(
                committed.bytes() >= n as usize * m as usize * 4,
                "{what}: bytes held must cover C"
            );
            roots.push(tree.root());
        }
    }
    roots
}

fn random_seeds() -> Vec<u64> {
    let mut rng = rand::rng();
    let seeds: Vec<u64> = (0..SIZES.len()).map(|_| rng.random()).collect();
    // Printed so a failure can be replayed.
    eprintln!("seeds: {seeds:x?}");
    seeds
}

#[test]
fn cpu_backend_matches_the_exact_product_and_commitment() {
    twin_body(&CpuBackend::new(), &random_seeds());
}

fn gpu_tests_enabled() -> bool {
    std::env::var("POLYLITH_GPU_TESTS").is_ok_and(|v| v == "1")
}

#[test]
fn cuda_backend_matches_the_exact_product_and_commitment() {
    let name = "cuda_backend_matches_the_exact_product_and_commitment";
    if !gpu_tests_enabled() {
        eprintln!("SKIPPED {name}: no GPU (set POLYLITH_GPU_TESTS=1 on a GPU machine)");
        return;
    }
    let seeds = random_seeds();
    // Poisoned outputs: a kernel that skips an element shows the sentinel, not a stale value.
    for poison in [i32::MIN, -1, 0x7EAD_BEEF] {
        let cuda = CudaBackend::with_poison(0, Some(poison))
            .unwrap_or_else(|e| panic!("POLYLITH_GPU_TESTS=1 but the CUDA backend failed: {e}"));
        eprintln!("device: {}", cuda.describe());
        let gpu_roots = twin_body(&cuda, &seeds);
        let cpu_roots = twin_body(&CpuBackend::new(), &seeds);
        assert_eq!(gpu_roots, cpu_roots, "CUDA and CPU commitments differ");
    }
}

#[test]
fn cuda_backend_without_a_gpu_is_unavailable_not_a_panic() {
    if gpu_tests_enabled() {
        eprintln!(
            "SKIPPED cuda_backend_without_a_gpu_is_unavailable_not_a_panic: POLYLITH_GPU_TESTS=1"
        );
        return;
    }
    // On a machine with a working GPU this may succeed; what it must never do is panic.
    match CudaBackend::new(0) {
        Ok(b) => eprintln!("a GPU is present: {}", b.describe()),
        Err(e) => assert!(
            matches!(e, BackendError::Unavailable(_)),
            "expected Unavailable, got {e}"
        ),
    }
    // An ordinal far beyond any machine's device count is always an error.
    assert!(matches!(
        CudaBackend::new(4096),
        Err(BackendError::Unavailable(_))
    ));
}
