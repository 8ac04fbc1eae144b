//! Host mirror of the device generator (docs/protocol.md §1.1), written from the spec like
//! `kernels/common.cuh`. The runtime's self-test compares the device against it, and the
//! tests compare it against `polylith_protocol::gemm::entry`.

/// The splitmix64 finalizer.
pub fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Operand tag: 1 for A, 2 for B.
pub fn tag(op: polylith_protocol::gemm::Operand) -> u64 {
    match op {
        polylith_protocol::gemm::Operand::A => 1,
        polylith_protocol::gemm::Operand::B => 2,
    }
}

/// The per-operand key the kernels receive: mix64(seed + tag·φ).
pub fn operand_key(seed: u64, op: polylith_protocol::gemm::Operand) -> u64 {
    mix64(seed.wrapping_add(tag(op).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
}

/// The largest R ≤ 127 with k·R² < 2^24 (k ≥ 1); 0 for k = 0 or k > 2^22.
pub fn bound(k: u32) -> i32 {
    let k = k as u64;
    (1..=127i32)
        .rev()
        .find(|&r| k > 0 && k * (r as u64) * (r as u64) < (1 << 24))
        .unwrap_or(0)
}

/// Entry `idx` of the operand with key `key` and bound `r`.
pub fn entry_with_key(key: u64, r: i32, idx: u64) -> i32 {
    let z = mix64(key ^ idx.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let span = (2 * r + 1) as u64;
    let v = ((z >> 32) * span) >> 32;
    v as i32 - r
}

/// Entry `idx` of operand `op` for `seed` and inner dimension `k`.
pub fn entry(seed: u64, op: polylith_protocol::gemm::Operand, k: u32, idx: u64) -> i32 {
    entry_with_key(operand_key(seed, op), bound(k), idx)
}

/// Row `i` of C = A·B computed naively on the host (for self-tests on small sizes).
pub fn row_of_c(seed: u64, n: u32, k: u32, m: u32, i: u32) -> Option<Vec<i32>> {
    use polylith_protocol::gemm::Operand;
    if i >= n {
        return None;
    }
    let (ka, kb, r) = (
        operand_key(seed, Operand::A),
        operand_key(seed, Operand::B),
        bound(k),
    );
    let a: Vec<i64> = (0..k as u64)
        .map(|j| entry_with_key(ka, r, i as u64 * k as u64 + j) as i64)
        .collect();
    let mut row = vec![0i64; m as usize];
    for (l, &av) in a.iter().enumerate() {
        for (j, out) in row.iter_mut().enumerate() {
            *out += av * entry_with_key(kb, r, l as u64 * m as u64 + j as u64) as i64;
        }
    }
    Some(row.into_iter().map(|v| v as i32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use polylith_protocol::gemm::Operand;

    #[test]
    fn bound_matches_the_spec_at_its_edges() {
        assert_eq!(bound(1), 127);
        assert_eq!(bound(1040), 127); // 1040·127² = 16_774_160 < 2^24
        assert_eq!(bound(1041), 126);
        assert_eq!(bound(1 << 22), 1);
        for k in [1u32, 7, 1000, 4096, 8192, 65_536, 1 << 20] {
            let r = bound(k) as u64;
            assert!(k as u64 * r * r < 1 << 24);
            assert!(r == 127 || k as u64 * (r + 1) * (r + 1) >= 1 << 24);
        }
    }

    #[test]
    fn entries_stay_within_the_bound_and_cover_it() {
        let k = 8192;
        let r = bound(k);
        let key = operand_key(99, Operand::A);
        let vals: Vec<i32> = (0..20_000).map(|i| entry_with_key(key, r, i)).collect();
        assert!(vals.iter().all(|v| v.abs() <= r));
        assert!(vals.contains(&r) && vals.contains(&-r));
    }

    #[test]
    fn mirror_agrees_with_the_protocol_generator() {
        // The protocol crate is the CPU reference; this catches a misread spec on either side.
        for (seed, k) in [
            (0u64, 1u32),
            (1, 77),
            (0xDEAD_BEEF, 4096),
            (u64::MAX, 1 << 22),
        ] {
            for op in [Operand::A, Operand::B] {
                for idx in [0u64, 1, 2, 1000, 123_456_789, u64::MAX / 3] {
                    assert_eq!(
                        entry(seed, op, k, idx),
                        polylith_protocol::gemm::entry(seed, op, k, idx),
                        "seed {seed} op {op:?} k {k} idx {idx}"
                    );
                }
            }
            assert_eq!(bound(k), polylith_protocol::gemm::bound(k));
        }
    }
}
