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
/// Returns 0 when no R ≥ 1 qualifies (k = 0 or k ≥ 2^24), which [`GemmSpec::validate`] rules out.
pub fn bound(k: u32) -> i32 {
    if k == 0 {
        return 0;
    }
    // Largest R with k·R² ≤ 2^24 − 1, i.e. R = isqrt((2^24 − 1) / k), capped at 127.
    let r = ((1u64 << 24) - 1) / k as u64;
    r.isqrt().min(127) as i32
}

/// The generator's per-operand key: `mix64(seed + tag·0x9E3779B97F4A7C15)`.
pub fn operand_key(seed: u64, op: Operand) -> u64 {
    let tag: u64 = match op {
        Operand::A => 1,
        Operand::B => 2,
    };
    mix64(seed.wrapping_add(tag.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
}

/// The generator's index multiplier (docs/protocol.md §1.1).
const IDX_MUL: u64 = 0xD1B5_4A32_D192_ED03;

/// One entry from a precomputed operand key and bound (the inner loop of [`entry`]).
#[inline]
pub fn entry_with_key(key: u64, r: i32, idx: u64) -> i32 {
    let z = mix64(key ^ idx.wrapping_mul(IDX_MUL));
    let span = (2 * r as i64 + 1) as u64;
    let v = ((z >> 32) * span) >> 32;
    v as i32 - r
}

/// Entry `idx` (row-major index) of operand `op` for `seed` and inner dimension `k`.
pub fn entry(seed: u64, op: Operand, k: u32, idx: u64) -> i32 {
    entry_with_key(operand_key(seed, op), bound(k), idx)
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
    /// A requested row is absent from the opening.
    #[error("row {0} was requested but not opened")]
    MissingRow(u32),
    /// The opening lists a different row at this position than was requested.
    #[error("expected row {expected} at this position of the opening, got row {got}")]
    WrongIndex {
        /// The requested row.
        expected: u32,
        /// The row the opening put there.
        got: u32,
    },
    /// The opening has more rows than were requested.
    #[error("opening has {got} rows, {requested} were requested")]
    ExtraRows {
        /// Rows requested.
        requested: usize,
        /// Rows in the opening.
        got: usize,
    },
}

impl GemmSpec {
    /// Checks sizes against limits (each ≤ `max_dim`, k ≤ [`MAX_K`], nonzero).
    pub fn validate(&self, max_dim: u32) -> Result<(), GemmError> {
        for (name, v) in [("n", self.n), ("k", self.k), ("m", self.m)] {
            if v == 0 {
                return Err(GemmError::BadSize(format!("{name} must be positive")));
            }
            if v > max_dim {
                return Err(GemmError::BadSize(format!(
                    "{name} = {v} exceeds the limit {max_dim}"
                )));
            }
        }
        if self.k > MAX_K {
            return Err(GemmError::BadSize(format!(
                "k = {} exceeds the generator's limit {MAX_K}",
                self.k
            )));
        }
        Ok(())
    }
    /// 2·n·k·m, the floating-point operation count of the product.
    pub fn flops(&self) -> f64 {
        2.0 * self.n as f64 * self.k as f64 * self.m as f64
    }
    /// A as row-major f32 (n×k).
    pub fn matrix_a(&self) -> Vec<f32> {
        self.operand(Operand::A, self.n as u64 * self.k as u64)
    }
    /// B as row-major f32 (k×m).
    pub fn matrix_b(&self) -> Vec<f32> {
        self.operand(Operand::B, self.k as u64 * self.m as u64)
    }
    fn operand(&self, op: Operand, len: u64) -> Vec<f32> {
        let (key, r) = (operand_key(self.seed, op), bound(self.k));
        (0..len)
            .map(|idx| entry_with_key(key, r, idx) as f32)
            .collect()
    }
    /// Row `i` of C = A·B, exactly, computed from the generator (validator's check).
    ///
    /// Costs k·m generator calls; the sums are done in i64 so even an out-of-spec k cannot
    /// overflow silently (an entry that does not fit i32 is reported as `BadSize`).
    pub fn row_of_c(&self, i: u32) -> Result<Vec<i32>, GemmError> {
        self.validate(u32::MAX)?;
        if i >= self.n {
            return Err(GemmError::RowOutOfRange(i));
        }
        let (k, m) = (self.k as u64, self.m as u64);
        let r = bound(self.k);
        let (ka, kb) = (
            operand_key(self.seed, Operand::A),
            operand_key(self.seed, Operand::B),
        );
        let mut acc = vec![0i64; m as usize];
        for l in 0..k {
            let a = entry_with_key(ka, r, i as u64 * k + l) as i64;
            if a == 0 {
                continue;
            }
            let base = l * m;
            for (j, out) in acc.iter_mut().enumerate() {
                *out += a * entry_with_key(kb, r, base + j as u64) as i64;
            }
        }
        acc.into_iter()
            .map(|v| {
                i32::try_from(v).map_err(|_| GemmError::BadSize(format!("entry {v} overflows i32")))
            })
            .collect()
    }
}

/// Columns of C recomputed together by [`GemmSpec::rows_of_c`]: one block of B's row and the
/// opened rows' partial sums for it stay in the first-level cache.
const ROWS_BLOCK: usize = 512;

impl GemmSpec {
    /// Rows `rows` of C = A·B (in that order, repeats allowed), exactly: the same values as
    /// [`GemmSpec::row_of_c`] for each, at a fraction of the cost for several rows, because
    /// each entry of B (k·m generator calls, the bulk of the work) is generated once for all
    /// of them rather than once per row.
    ///
    /// The partial sums are f32, which is exact here: every entry is an integer with
    /// |entry| ≤ bound(k), every product at most bound(k)² and every partial sum at most
    /// k·bound(k)² < 2^24 in magnitude (the generator's bound, [`bound`]), so each is an
    /// integer f32 represents exactly and the result does not depend on the order of the
    /// additions. f32 rather than i32 because baseline x86-64 has vector f32 multiplies but
    /// no vector 32-bit integer multiply.
    pub fn rows_of_c(&self, rows: &[u32]) -> Result<Vec<Vec<i32>>, GemmError> {
        self.validate(u32::MAX)?;
        if let Some(&bad) = rows.iter().find(|&&i| i >= self.n) {
            return Err(GemmError::RowOutOfRange(bad));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (k, m, r) = (self.k as usize, self.m as usize, rows.len());
        let bound_k = bound(self.k);
        let span = (2 * bound_k as i64 + 1) as u64;
        let (ka, kb) = (
            operand_key(self.seed, Operand::A),
            operand_key(self.seed, Operand::B),
        );
        // A's entries of the opened rows, transposed (l-major) so each step of l reads the
        // r values it needs together.
        let mut a_t = vec![0f32; k * r];
        for (i, &row) in rows.iter().enumerate() {
            let base = row as u64 * k as u64;
            for l in 0..k {
                a_t[l * r + i] = entry_with_key(ka, bound_k, base + l as u64) as f32;
            }
        }
        let mut out = vec![vec![0i32; m]; r];
        let mut acc = vec![0f32; r * ROWS_BLOCK];
        let mut b = [0f32; ROWS_BLOCK];
        for j0 in (0..m).step_by(ROWS_BLOCK) {
            let w = ROWS_BLOCK.min(m - j0);
            acc.iter_mut().for_each(|x| *x = 0.0);
            for l in 0..k {
                // `entry_with_key` inlined with the index product carried forward by one
                // addition per entry ((idx + 1)·c = idx·c + c, wrapping): one multiply fewer
                // on the hot path, the same values (checked against `row_of_c` in tests).
                let mut scrambled = ((l * m + j0) as u64).wrapping_mul(IDX_MUL);
                for bj in b[..w].iter_mut() {
                    let z = mix64(kb ^ scrambled);
                    scrambled = scrambled.wrapping_add(IDX_MUL);
                    *bj = ((((z >> 32) * span) >> 32) as i32 - bound_k) as f32;
                }
                let a_l = &a_t[l * r..(l + 1) * r];
                for (acc_i, &a) in acc.chunks_exact_mut(ROWS_BLOCK).zip(a_l) {
                    for (o, &bj) in acc_i[..w].iter_mut().zip(&b[..w]) {
                        *o += a * bj;
                    }
                }
            }
            for (row_out, acc_i) in out.iter_mut().zip(acc.chunks_exact(ROWS_BLOCK)) {
                for (o, &v) in row_out[j0..j0 + w].iter_mut().zip(&acc_i[..w]) {
                    // An integer below 2^24 in magnitude (see above): the cast is exact.
                    *o = v as i32;
                }
            }
        }
        Ok(out)
    }
}

/// Hash of one row of C (values as little-endian i32), the Merkle leaf.
pub fn leaf_hash(row: &[i32]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[0x00]);
    let mut buf = [0u8; 4096];
    for chunk in row.chunks(buf.len() / 4) {
        for (dst, v) in buf.chunks_exact_mut(4).zip(chunk) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        h.update(&buf[..chunk.len() * 4]);
    }
    *h.finalize().as_bytes()
}

/// Hash of an inner Merkle node.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[0x01]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// A Merkle tree over row hashes (all levels kept, so openings are cheap).
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// `levels[0]` are the leaves, the last level is the root alone.
    levels: Vec<Vec<Hash32>>,
}

impl MerkleTree {
    /// Builds the tree from leaves (at least one).
    ///
    /// An empty input gives an empty tree whose root is 32 zero bytes, which no real
    /// commitment can have (callers reject n = 0 before building one).
    pub fn from_leaves(leaves: Vec<Hash32>) -> Self {
        let mut levels = vec![leaves];
        while let Some(last) = levels.last().filter(|l| l.len() > 1) {
            let next: Vec<Hash32> = last
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    // An odd last node is promoted unchanged.
                    [single] => *single,
                    _ => unreachable!("chunks(2) yields one or two items"),
                })
                .collect();
            levels.push(next);
        }
        Self { levels }
    }
    /// The root.
    pub fn root(&self) -> Hash32 {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; 32])
    }
    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.levels[0].len()
    }
    /// True for an empty tree (never built by [`MerkleTree::from_leaves`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sibling path for leaf `i`, bottom-up.
    /// `None` when `i` is out of range.
    pub fn path(&self, i: usize) -> Option<Vec<Hash32>> {
        if i >= self.len() {
            return None;
        }
        let mut idx = i;
        let mut path = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(idx ^ 1) {
                path.push(*sibling);
            }
            idx /= 2;
        }
        Some(path)
    }
}

/// Checks that `leaf` at `index` of a tree with `n_leaves` leaves hashes up to `root`.
pub fn verify_path(
    root: &Hash32,
    n_leaves: usize,
    index: usize,
    leaf: &Hash32,
    path: &[Hash32],
) -> bool {
    if index >= n_leaves {
        return false;
    }
    let (mut acc, mut idx, mut width) = (*leaf, index, n_leaves);
    let mut siblings = path.iter();
    while width > 1 {
        if idx ^ 1 < width {
            let Some(sibling) = siblings.next() else {
                return false;
            };
            acc = if idx % 2 == 0 {
                node_hash(&acc, sibling)
            } else {
                node_hash(sibling, &acc)
            };
        }
        idx /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none() && acc == *root
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
///
/// Checks, position by position: the row is present, in range, is the requested index, has m
/// values, its path (32-byte hex hashes) leads to `root`, and its values equal the exact
/// recomputation. An opening with more rows than requested fails before any work.
pub fn verify_opening(
    spec: &GemmSpec,
    root: &Hash32,
    requested: &[u32],
    opening: &OpenResponse,
) -> Result<(), GemmError> {
    spec.validate(u32::MAX)?;
    if opening.rows.len() > requested.len() {
        return Err(GemmError::ExtraRows {
            requested: requested.len(),
            got: opening.rows.len(),
        });
    }
    // Everything but the recomputation first, in order, up to the first failure; then the
    // rows before it are recomputed together (B generated once for all of them). A wrong row
    // before that failure is still the first failure, as in a row-by-row walk.
    let mut first_failure = None;
    let mut passed = 0;
    for (pos, &want) in requested.iter().enumerate() {
        if let Err(e) = check_opened_row(spec, root, want, opening.rows.get(pos)) {
            first_failure = Some(e);
            break;
        }
        passed = pos + 1;
    }
    let recomputed = spec.rows_of_c(&requested[..passed])?;
    for ((&want, row), exact) in requested.iter().zip(&opening.rows).zip(&recomputed) {
        if row.values != *exact {
            return Err(GemmError::WrongRow(want));
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// The checks of one requested row that need no recomputation: present, in range, the
/// requested index, m values, and a path of 32-byte hex hashes leading to `root`.
fn check_opened_row(
    spec: &GemmSpec,
    root: &Hash32,
    want: u32,
    row: Option<&OpenedRow>,
) -> Result<(), GemmError> {
    if want >= spec.n {
        return Err(GemmError::RowOutOfRange(want));
    }
    let Some(row) = row else {
        return Err(GemmError::MissingRow(want));
    };
    if row.index != want {
        return Err(GemmError::WrongIndex {
            expected: want,
            got: row.index,
        });
    }
    if row.values.len() != spec.m as usize {
        return Err(GemmError::WrongRow(want));
    }
    let path: Option<Vec<Hash32>> = row.path.iter().map(|h| parse_hash(h)).collect();
    let Some(path) = path else {
        return Err(GemmError::BadPath(want));
    };
    if !verify_path(
        root,
        spec.n as usize,
        want as usize,
        &leaf_hash(&row.values),
        &path,
    ) {
        return Err(GemmError::BadPath(want));
    }
    Ok(())
}

/// Parses a 64-hex-digit hash (either case); `None` otherwise.
pub fn parse_hash(s: &str) -> Option<Hash32> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Rows to open so that a miner computing a fraction `f` of rows passes with probability
/// below `p`: the smallest r with f^r < p.
///
/// Degenerate inputs: `f ≤ 0` needs one row; `f ≥ 1`, `p ≤ 0` or NaN can never be met and
/// give `u32::MAX` (callers clamp to n); `p > 1` is met by any single row, so the result is
/// never below 1.
pub fn rows_for_soundness(f: f64, p: f64) -> u32 {
    if f.is_nan() || p.is_nan() || f >= 1.0 || p <= 0.0 {
        return u32::MAX;
    }
    if f <= 0.0 || p > 1.0 {
        return 1;
    }
    // ln p / ln f is the real-valued answer; fix up the float rounding at the boundary.
    let estimate = (p.ln() / f.ln()).floor();
    if !estimate.is_finite() || estimate >= u32::MAX as f64 {
        return u32::MAX;
    }
    let mut r = (estimate as u32).max(1);
    while r > 1 && f.powf((r - 1) as f64) < p {
        r -= 1;
    }
    while f.powf(r as f64) >= p {
        if r == u32::MAX {
            return r;
        }
        r += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_c_equals_row_by_row_recomputation() {
        // m around the block size, k across the bound's steps (bound(1040) = 127, then
        // smaller, down to bound 1 near the generator's limit).
        for (seed, k, m, rows) in [
            (1u64, 1u32, 1u32, vec![0u32]),
            (2, 1040, 513, vec![3, 0, 3, 7]),
            (3, 1041, 1024, vec![5]),
            (4, 70_000, 3, vec![1, 1]),
            (5, 3, 1500, vec![0, 1, 2, 3, 4, 5, 6, 7]),
        ] {
            let spec = GemmSpec { seed, n: 8, k, m };
            let batched = spec.rows_of_c(&rows).unwrap();
            assert_eq!(batched.len(), rows.len());
            for (&i, got) in rows.iter().zip(&batched) {
                assert_eq!(*got, spec.row_of_c(i).unwrap(), "{spec:?} row {i}");
            }
        }
        let spec = GemmSpec {
            seed: 9,
            n: 4,
            k: 5,
            m: 6,
        };
        assert_eq!(spec.rows_of_c(&[]).unwrap(), Vec::<Vec<i32>>::new());
        assert_eq!(spec.rows_of_c(&[1, 4]), Err(GemmError::RowOutOfRange(4)));
        let deep = GemmSpec {
            k: MAX_K + 1,
            ..spec
        };
        assert!(matches!(deep.rows_of_c(&[0]), Err(GemmError::BadSize(_))));
    }

    #[test]
    fn the_first_failure_in_request_order_wins() {
        let spec = GemmSpec {
            seed: 11,
            n: 6,
            k: 9,
            m: 5,
        };
        let rows: Vec<Vec<i32>> = (0..spec.n).map(|i| spec.row_of_c(i).unwrap()).collect();
        let tree = MerkleTree::from_leaves(rows.iter().map(|r| leaf_hash(r)).collect());
        let open = |i: u32| OpenedRow {
            index: i,
            values: rows[i as usize].clone(),
            path: tree
                .path(i as usize)
                .unwrap()
                .iter()
                .map(hex::encode)
                .collect(),
        };
        let requested = [1, 3, 5];
        let honest = OpenResponse {
            rows: requested.iter().map(|&i| open(i)).collect(),
        };
        assert_eq!(
            verify_opening(&spec, &tree.root(), &requested, &honest),
            Ok(())
        );
        // Row 3 committed wrong (its own leaf, so its path holds), row 5's path broken: the
        // wrong row comes first.
        let mut bad = honest.clone();
        bad.rows[1].values[0] += 1;
        let wrong_leaf = leaf_hash(&bad.rows[1].values);
        let mut leaves: Vec<Hash32> = rows.iter().map(|r| leaf_hash(r)).collect();
        leaves[3] = wrong_leaf;
        let forged = MerkleTree::from_leaves(leaves);
        bad.rows[0].path = forged.path(1).unwrap().iter().map(hex::encode).collect();
        bad.rows[1].path = forged.path(3).unwrap().iter().map(hex::encode).collect();
        bad.rows[2].path = vec!["00".repeat(32)];
        assert_eq!(
            verify_opening(&spec, &forged.root(), &requested, &bad),
            Err(GemmError::WrongRow(3))
        );
        // A path failure before any wrong row is reported as such.
        let mut early = bad.clone();
        early.rows[0].path = vec!["zz".into()];
        assert_eq!(
            verify_opening(&spec, &forged.root(), &requested, &early),
            Err(GemmError::BadPath(1))
        );
        // Missing rows after honest ones.
        let short = OpenResponse {
            rows: vec![open(1)],
        };
        assert_eq!(
            verify_opening(&spec, &tree.root(), &requested, &short),
            Err(GemmError::MissingRow(3))
        );
    }
}
