//! The GEMM task: generator test vectors (shared with the CUDA generator and
//! docs/protocol.md §1.4), exact rows, Merkle commitment and opening verification.

use polylith_protocol::Hash32;
use polylith_protocol::gemm::*;
use proptest::prelude::*;

fn spec_4x8x4() -> GemmSpec {
    GemmSpec {
        seed: 42,
        n: 4,
        k: 8,
        m: 4,
    }
}

/// These values are also printed in docs/protocol.md §1.4; the CUDA generator checks them.
#[test]
fn generator_matches_pinned_vectors() {
    assert_eq!(mix64(0), 0);
    assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
    /// (seed, k, R, A[0..8], B[0..8])
    type Case = (u64, u32, i32, [i32; 8], [i32; 8]);
    let cases: [Case; 3] = [
        (
            0,
            1,
            127,
            [-56, 18, 18, 53, 17, 68, 52, -78],
            [77, -65, -86, -114, -93, -46, -107, 38],
        ),
        (
            42,
            4096,
            63,
            [25, -62, 54, 14, -63, -38, -53, -20],
            [-11, 61, 6, -45, 9, -41, 54, 24],
        ),
        (
            0xDEAD_BEEF,
            1 << 22,
            1,
            [-1, -1, 1, 0, 0, -1, 1, -1],
            [-1, 1, 1, -1, 0, 0, 0, 0],
        ),
    ];
    for (seed, k, r, a, b) in cases {
        assert_eq!(bound(k), r, "bound({k})");
        let got_a: Vec<i32> = (0..8).map(|i| entry(seed, Operand::A, k, i)).collect();
        let got_b: Vec<i32> = (0..8).map(|i| entry(seed, Operand::B, k, i)).collect();
        assert_eq!(got_a, a, "A for seed {seed:#x}, k {k}");
        assert_eq!(got_b, b, "B for seed {seed:#x}, k {k}");
    }
    assert_eq!(operand_key(0, Operand::A), 0xe220_a839_7b1d_cdaf);
    assert_eq!(operand_key(42, Operand::B), 0x28ef_e333_b266_f103);
}

#[test]
fn bound_is_the_largest_r_at_most_127_with_k_r_squared_below_2_pow_24() {
    assert_eq!(bound(0), 0);
    assert_eq!(bound(1), 127);
    assert_eq!(bound(1040), 127); // 1040·127² = 16_774_160 < 2^24
    assert_eq!(bound(1041), 126);
    assert_eq!(bound(MAX_K), 1);
    for k in (1..=MAX_K)
        .step_by(9_973)
        .chain([2, 3, 4096, 4097, 65_536, MAX_K - 1])
    {
        let r = bound(k) as u64;
        assert!(r >= 1 && k as u64 * r * r < 1 << 24, "k {k} r {r}");
        assert!(
            r == 127 || k as u64 * (r + 1) * (r + 1) >= 1 << 24,
            "k {k}: r {r} not maximal"
        );
    }
}

#[test]
fn matrices_are_row_major_generator_output_as_f32() {
    let spec = spec_4x8x4();
    let a = spec.matrix_a();
    let b = spec.matrix_b();
    assert_eq!(a.len(), 32);
    assert_eq!(b.len(), 32);
    assert_eq!(a[8 + 3], entry(42, Operand::A, 8, 11) as f32);
    assert_eq!(b[7 * 4 + 2], entry(42, Operand::B, 8, 30) as f32);
    assert_eq!(&a[..4], &[50.0, -124.0, 108.0, 29.0]);
    assert_eq!(&b[..4], &[-21.0, 122.0, 12.0, -91.0]);
}

#[test]
fn row_of_c_is_the_exact_product_and_matches_f32_matmul() {
    let spec = spec_4x8x4();
    let expected = [
        [-19480, -12507, -16341, -35090],
        [17710, 10276, 1547, -3705],
        [13890, -40398, 375, -19198],
        [16644, 19086, 2025, 5934],
    ];
    let (a, b) = (spec.matrix_a(), spec.matrix_b());
    for (i, want) in expected.iter().enumerate() {
        let row = spec.row_of_c(i as u32).unwrap();
        assert_eq!(row, want);
        // A naive f32 product in any order is exact for bounded entries.
        for j in 0..4 {
            let mut s = 0f32;
            for l in (0..8).rev() {
                s += a[i * 8 + l] * b[l * 4 + j];
            }
            assert_eq!(s as i32, row[j]);
        }
    }
    assert_eq!(spec.row_of_c(4), Err(GemmError::RowOutOfRange(4)));
}

#[test]
fn worst_case_k_stays_below_2_pow_24() {
    let spec = GemmSpec {
        seed: 7,
        n: 2,
        k: 1040,
        m: 3,
    };
    for i in 0..2 {
        for v in spec.row_of_c(i).unwrap() {
            assert!(v.unsigned_abs() < 1 << 24);
        }
    }
}

#[test]
fn validate_rejects_zero_oversized_and_too_deep() {
    let ok = spec_4x8x4();
    assert!(ok.validate(8).is_ok());
    for bad in [
        GemmSpec { n: 0, ..ok },
        GemmSpec { k: 0, ..ok },
        GemmSpec { m: 0, ..ok },
        GemmSpec { n: 9, ..ok },
    ] {
        assert!(
            matches!(bad.validate(8), Err(GemmError::BadSize(_))),
            "{bad:?}"
        );
    }
    let deep = GemmSpec { k: MAX_K + 1, ..ok };
    assert!(matches!(
        deep.validate(u32::MAX),
        Err(GemmError::BadSize(_))
    ));
    assert!(matches!(deep.row_of_c(0), Err(GemmError::BadSize(_))));
    assert_eq!(ok.flops(), 2.0 * 4.0 * 8.0 * 4.0);
}

/// Leaf and root vectors pinned in docs/protocol.md §1.4 (cross-checked with Python blake3 by
/// scripts/protocol_vectors.py).
#[test]
fn commitment_matches_pinned_vectors() {
    let spec = spec_4x8x4();
    let rows: Vec<Vec<i32>> = (0..4).map(|i| spec.row_of_c(i).unwrap()).collect();
    let leaves: Vec<Hash32> = rows.iter().map(|r| leaf_hash(r)).collect();
    assert_eq!(
        hex::encode(leaves[0]),
        "eb9d90000276a3c915d6f5ad348a4d656abf52a245a47e0d30f422139e032a88"
    );
    let tree = MerkleTree::from_leaves(leaves.clone());
    assert_eq!(
        hex::encode(tree.root()),
        "ed97303ebfe53237c6cac407a3ecc050a7a24c67d9e6a3ef774f1e53195d01c7"
    );
    let tree3 = MerkleTree::from_leaves(leaves[..3].to_vec());
    assert_eq!(
        hex::encode(tree3.root()),
        "bfd06d2fe53e69d7350daf9e6ede274e75216df5ffd89410856cb77e34516ca2"
    );
    // The odd third leaf is promoted: root = node(node(l0, l1), l2).
    assert_eq!(
        tree3.root(),
        node_hash(&node_hash(&leaves[0], &leaves[1]), &leaves[2])
    );
    assert_eq!(
        tree3.path(2).unwrap(),
        vec![node_hash(&leaves[0], &leaves[1])]
    );
}

#[test]
fn leaf_hash_is_domain_separated_le_i32() {
    let row = [1i32, -1, 0x0102_0304];
    let mut bytes = vec![0u8];
    for v in row {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(leaf_hash(&row), *blake3::hash(&bytes).as_bytes());
    // A long row crosses the internal buffer boundary.
    let long: Vec<i32> = (0..5000).map(|i| i * 7 - 3).collect();
    let mut bytes = vec![0u8];
    for v in &long {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(leaf_hash(&long), *blake3::hash(&bytes).as_bytes());
    let (l, r) = ([1u8; 32], [2u8; 32]);
    let mut node = vec![1u8];
    node.extend_from_slice(&l);
    node.extend_from_slice(&r);
    assert_eq!(node_hash(&l, &r), *blake3::hash(&node).as_bytes());
}

#[test]
fn single_leaf_tree_and_empty_tree() {
    let leaf = leaf_hash(&[5]);
    let t = MerkleTree::from_leaves(vec![leaf]);
    assert_eq!(t.root(), leaf);
    assert_eq!(t.len(), 1);
    assert_eq!(t.path(0), Some(vec![]));
    assert!(verify_path(&leaf, 1, 0, &leaf, &[]));
    assert_eq!(t.path(1), None);
    let empty = MerkleTree::from_leaves(vec![]);
    assert!(empty.is_empty());
    assert_eq!(empty.root(), [0; 32]);
    assert_eq!(empty.path(0), None);
    assert!(!verify_path(&[0; 32], 0, 0, &[0; 32], &[]));
}

/// A correct opening of `rows` from an honest miner.
fn honest_opening(spec: &GemmSpec, rows: &[u32]) -> (Hash32, OpenResponse) {
    let all: Vec<Vec<i32>> = (0..spec.n).map(|i| spec.row_of_c(i).unwrap()).collect();
    let tree = MerkleTree::from_leaves(all.iter().map(|r| leaf_hash(r)).collect());
    let opened = rows
        .iter()
        .map(|&i| OpenedRow {
            index: i,
            values: all[i as usize].clone(),
            path: tree
                .path(i as usize)
                .unwrap()
                .iter()
                .map(hex::encode)
                .collect(),
        })
        .collect();
    (tree.root(), OpenResponse { rows: opened })
}

fn spec_7x5x3() -> GemmSpec {
    GemmSpec {
        seed: 9,
        n: 7,
        k: 5,
        m: 3,
    }
}

#[test]
fn honest_opening_verifies() {
    let spec = spec_7x5x3();
    let req = [6, 0, 3, 3];
    let (root, open) = honest_opening(&spec, &req);
    assert_eq!(verify_opening(&spec, &root, &req, &open), Ok(()));
    assert_eq!(
        verify_opening(&spec, &root, &[], &OpenResponse { rows: vec![] }),
        Ok(())
    );
}

#[test]
fn tampered_row_value_fails_merkle_or_recomputation() {
    let spec = spec_7x5x3();
    let req = [2, 5];
    let (root, mut open) = honest_opening(&spec, &req);
    open.rows[1].values[0] += 1;
    // The committed leaf no longer matches, so the path check fails first.
    assert_eq!(
        verify_opening(&spec, &root, &req, &open),
        Err(GemmError::BadPath(5))
    );
    // A miner that committed to a wrong row passes the path check but not recomputation.
    let mut rows: Vec<Vec<i32>> = (0..7).map(|i| spec.row_of_c(i).unwrap()).collect();
    rows[5][2] -= 3;
    let tree = MerkleTree::from_leaves(rows.iter().map(|r| leaf_hash(r)).collect());
    let open = OpenResponse {
        rows: req
            .iter()
            .map(|&i| OpenedRow {
                index: i,
                values: rows[i as usize].clone(),
                path: tree
                    .path(i as usize)
                    .unwrap()
                    .iter()
                    .map(hex::encode)
                    .collect(),
            })
            .collect(),
    };
    assert_eq!(
        verify_opening(&spec, &tree.root(), &req, &open),
        Err(GemmError::WrongRow(5))
    );
}

#[test]
fn short_row_is_wrong_row() {
    let spec = spec_7x5x3();
    let (root, mut open) = honest_opening(&spec, &[1]);
    open.rows[0].values.pop();
    assert_eq!(
        verify_opening(&spec, &root, &[1], &open),
        Err(GemmError::WrongRow(1))
    );
}

#[test]
fn tampered_or_malformed_path_fails() {
    let spec = spec_7x5x3();
    let (root, open) = honest_opening(&spec, &[4]);
    let mut flipped = open.clone();
    let mut h = parse_hash(&flipped.rows[0].path[1]).unwrap();
    h[31] ^= 1;
    flipped.rows[0].path[1] = hex::encode(h);
    assert_eq!(
        verify_opening(&spec, &root, &[4], &flipped),
        Err(GemmError::BadPath(4))
    );
    for mutate in [
        |p: &mut Vec<String>| p[0] = "zz".repeat(32),
        |p: &mut Vec<String>| p[0].truncate(10),
        |p: &mut Vec<String>| p.push(hex::encode([0u8; 32])),
        |p: &mut Vec<String>| {
            p.pop();
        },
        |p: &mut Vec<String>| p.swap(0, 1),
    ] {
        let mut bad = open.clone();
        mutate(&mut bad.rows[0].path);
        assert_eq!(
            verify_opening(&spec, &root, &[4], &bad),
            Err(GemmError::BadPath(4))
        );
    }
    // Against a different root the honest path fails too.
    assert_eq!(
        verify_opening(&spec, &[7; 32], &[4], &open),
        Err(GemmError::BadPath(4))
    );
}

#[test]
fn wrong_index_missing_extra_and_out_of_range_rows_fail() {
    let spec = spec_7x5x3();
    let (root, open) = honest_opening(&spec, &[1, 2]);
    // Rows opened in another order than requested.
    assert_eq!(
        verify_opening(&spec, &root, &[2, 1], &open),
        Err(GemmError::WrongIndex {
            expected: 2,
            got: 1
        })
    );
    // Honest values and path of row 1, labelled as row 3.
    let mut relabelled = open.clone();
    relabelled.rows[0].index = 3;
    assert_eq!(
        verify_opening(&spec, &root, &[3, 2], &relabelled),
        Err(GemmError::BadPath(3))
    );
    // A requested row left out.
    assert_eq!(
        verify_opening(&spec, &root, &[1, 2, 6], &open),
        Err(GemmError::MissingRow(6))
    );
    // More rows than requested.
    assert_eq!(
        verify_opening(&spec, &root, &[1], &open),
        Err(GemmError::ExtraRows {
            requested: 1,
            got: 2
        })
    );
    // A request beyond n.
    assert_eq!(
        verify_opening(&spec, &root, &[7], &OpenResponse { rows: vec![] }),
        Err(GemmError::RowOutOfRange(7))
    );
}

#[test]
fn rows_for_soundness_is_the_smallest_r_with_f_pow_r_below_p() {
    assert_eq!(rows_for_soundness(0.5, 0.01), 7); // 0.5^6 = 0.0156, 0.5^7 = 0.0078
    assert_eq!(rows_for_soundness(0.5, 0.5), 2); // 0.5^1 is not strictly below 0.5
    assert_eq!(rows_for_soundness(0.9, 1e-6), 132);
    assert_eq!(rows_for_soundness(0.0, 0.01), 1);
    assert_eq!(rows_for_soundness(0.5, 2.0), 1);
    assert_eq!(rows_for_soundness(1.0, 0.01), u32::MAX);
    assert_eq!(rows_for_soundness(0.5, 0.0), u32::MAX);
    assert_eq!(rows_for_soundness(f64::NAN, 0.01), u32::MAX);
    for (f, p) in [(0.99, 1e-9), (0.3, 0.2), (0.75, 1e-3), (0.999, 0.05)] {
        let r = rows_for_soundness(f, p);
        assert!(f.powf(r as f64) < p, "f {f} p {p} r {r}");
        assert!(
            r == 1 || f.powf((r - 1) as f64) >= p,
            "f {f} p {p} r {r} not minimal"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every leaf's path verifies, and flipping any bit of the leaf, a path hash, or the
    /// index makes it fail.
    #[test]
    fn every_path_verifies_and_any_flipped_bit_fails(
        n in 1usize..70,
        salt in any::<u64>(),
        pick in any::<prop::sample::Index>(),
        bit in 0usize..256,
    ) {
        let leaves: Vec<Hash32> =
            (0..n).map(|i| leaf_hash(&[i as i32, salt as i32, (salt >> 32) as i32])).collect();
        let tree = MerkleTree::from_leaves(leaves.clone());
        for (i, leaf) in leaves.iter().enumerate() {
            let path = tree.path(i).unwrap();
            prop_assert!(verify_path(&tree.root(), n, i, leaf, &path));
        }
        let i = pick.index(n);
        let path = tree.path(i).unwrap();
        let mut bad_leaf = leaves[i];
        bad_leaf[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(!verify_path(&tree.root(), n, i, &bad_leaf, &path));
        if !path.is_empty() {
            let mut bad_path = path.clone();
            let j = bit % bad_path.len();
            bad_path[j][bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!verify_path(&tree.root(), n, i, &leaves[i], &bad_path));
        }
        let mut bad_root = tree.root();
        bad_root[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(!verify_path(&bad_root, n, i, &leaves[i], &path));
        if n > 1 {
            let other = (i + 1 + bit % (n - 1)) % n;
            prop_assert!(!verify_path(&tree.root(), n, other, &leaves[i], &path));
        }
    }

    /// Any single flipped bit in an opened row's values makes the opening fail.
    #[test]
    fn any_flipped_value_bit_fails_the_opening(
        seed in any::<u64>(),
        row in 0u32..5,
        col in 0usize..4,
        bit in 0u32..32,
    ) {
        let spec = GemmSpec { seed, n: 5, k: 6, m: 4 };
        let (root, mut open) = honest_opening(&spec, &[row]);
        prop_assert_eq!(verify_opening(&spec, &root, &[row], &open), Ok(()));
        open.rows[0].values[col] ^= 1 << bit;
        prop_assert!(verify_opening(&spec, &root, &[row], &open).is_err());
    }
}
