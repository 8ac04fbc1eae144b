//! Flat sparse matrices and the fused epoch passes that run on them.
//!
//! Same arithmetic, in the same order, as the row-of-pairs functions in [`super::math`]: only
//! the storage (one entry vector for the whole matrix instead of one per row), the number of
//! passes and the cost of each division change. Rows keep their stored order, duplicates and
//! explicit zeros, because subtensor's results depend on them.

use super::math::{ONE, ZERO, add, mul, safe_div};
use substrate_fixed::types::I32F32;

/// Low 32 bits of an I32F32: the fractional part.
const FRAC_MASK: u64 = (1 << 32) - 1;

/// A sparse matrix stored row after row: `lens[i]` entries of `entries` belong to row `i`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Csr {
    lens: Vec<usize>,
    entries: Vec<(u16, I32F32)>,
}

impl Csr {
    /// Builds a matrix from one entry iterator per row.
    pub fn from_rows<R, E>(rows: R, capacity: usize) -> Self
    where
        R: IntoIterator<Item = E>,
        E: IntoIterator<Item = (u16, I32F32)>,
    {
        let mut m = Self {
            lens: Vec::new(),
            entries: Vec::with_capacity(capacity),
        };
        for row in rows {
            let before = m.entries.len();
            m.entries.extend(row);
            m.lens.push(m.entries.len().saturating_sub(before));
        }
        m
    }

    /// Number of rows.
    pub fn rows_len(&self) -> usize {
        self.lens.len()
    }

    /// The rows in order, each as its stored entries.
    pub fn rows(&self) -> impl Iterator<Item = &[(u16, I32F32)]> {
        let mut rest = self.entries.as_slice();
        self.lens.iter().map(move |&len| {
            let (head, tail) = rest.split_at_checked(len).unwrap_or((rest, &[]));
            rest = tail;
            head
        })
    }

    /// The rows in order, mutable.
    pub fn rows_mut(&mut self) -> impl Iterator<Item = &mut [(u16, I32F32)]> {
        let mut rest = self.entries.as_mut_slice();
        self.lens.iter().map(move |&len| {
            let whole = std::mem::take(&mut rest);
            let cut = len.min(whole.len());
            let (head, tail) = whole.split_at_mut(cut);
            rest = tail;
            head
        })
    }

    /// Replaces each entry by `f(row, column, value)`, dropping it on `None`; order is kept.
    pub fn retain_map(&mut self, mut f: impl FnMut(usize, u16, I32F32) -> Option<I32F32>) {
        let mut read = 0usize;
        let mut write = 0usize;
        for (i, len) in self.lens.iter_mut().enumerate() {
            let mut kept = 0usize;
            for _ in 0..*len {
                if let Some(&(j, v)) = self.entries.get(read)
                    && let Some(nv) = f(i, j, v)
                {
                    if let Some(slot) = self.entries.get_mut(write) {
                        *slot = (j, nv);
                    }
                    write = write.saturating_add(1);
                    kept = kept.saturating_add(1);
                }
                read = read.saturating_add(1);
            }
            *len = kept;
        }
        self.entries.truncate(write);
    }

    /// Saturating sum of each column `j < columns`, accumulated row after row in stored order.
    pub fn col_sums(&self, columns: usize) -> Vec<I32F32> {
        let mut s = vec![ZERO; columns];
        for (j, v) in &self.entries {
            if let Some(c) = s.get_mut(usize::from(*j)) {
                *c = add(*c, *v);
            }
        }
        s
    }

    /// [`Self::col_sums`] and whether every term was non-negative (see [`super::par`]).
    pub fn col_sums_checked(&self, columns: usize) -> (Vec<I32F32>, bool) {
        let mut s = vec![ZERO; columns];
        let mut neg = 0i64;
        for (j, v) in &self.entries {
            if let Some(c) = s.get_mut(usize::from(*j)) {
                *c = add(*c, *v);
                neg |= v.to_bits();
            }
        }
        (s, neg >= 0)
    }

    /// [`super::math::inplace_row_normalize_sparse`].
    pub fn row_normalize(&mut self) {
        for row in self.rows_mut() {
            let s = row.iter().fold(ZERO, |acc, (_, v)| add(acc, *v));
            if s > ZERO {
                let d = Divisor::new(s);
                for (_, v) in row.iter_mut() {
                    *v = d.div(*v);
                }
            }
        }
    }

    /// Divides each entry by `per_column[j]` where that is given (entries beyond it stay).
    pub fn divide_columns(&mut self, per_column: &[Option<Divisor>]) {
        for (j, v) in &mut self.entries {
            if let Some(Some(d)) = per_column.get(usize::from(*j)) {
                *v = d.div(*v);
            }
        }
    }

    /// [`super::math::inplace_col_normalize_sparse`].
    pub fn col_normalize(&mut self, columns: usize) {
        let divisors = column_divisors(&self.col_sums(columns));
        self.divide_columns(&divisors);
    }

    /// [`Self::col_normalize`] with the column sums already at hand (from [`Self::col_sums`]
    /// or accumulated in the same row-major order while the matrix was made).
    pub fn col_normalize_by(&mut self, sums: &[I32F32]) {
        self.divide_columns(&column_divisors(sums));
    }

    /// Column-normalises in place and, in the same pass, returns `matmul_transpose(v)` of
    /// the normalised matrix and its column maxima (for [`Self::col_max_upscale_by`]).
    pub fn col_normalize_matmul_transpose_max(
        &mut self,
        sums: &[I32F32],
        v: &[I32F32],
    ) -> (Vec<I32F32>, Vec<I32F32>) {
        self.divide_matmul_transpose_max(&column_divisors(sums), v)
    }

    /// [`Self::col_normalize_matmul_transpose_max`] with the divisors already made.
    pub fn divide_matmul_transpose_max(
        &mut self,
        divisors: &[Option<Divisor>],
        v: &[I32F32],
    ) -> (Vec<I32F32>, Vec<I32F32>) {
        let mut col_max = vec![ZERO; divisors.len()];
        let mut out = Vec::with_capacity(self.lens.len());
        for row in self.rows_mut() {
            let mut acc = ZERO;
            for (j, x) in row.iter_mut() {
                let j = usize::from(*j);
                if let Some(Some(d)) = divisors.get(j) {
                    *x = d.div(*x);
                }
                acc = add(acc, mul(v.get(j).copied().unwrap_or(ZERO), *x));
                if let Some(c) = col_max.get_mut(j)
                    && *c < *x
                {
                    *c = *x;
                }
            }
            out.push(acc);
        }
        (out, col_max)
    }

    /// [`Self::col_max_upscale`] with the column maxima already at hand.
    pub fn col_max_upscale_by(&mut self, col_max: &[I32F32]) {
        self.divide_columns(&column_divisors(col_max));
    }

    /// [`super::math::inplace_col_max_upscale_sparse`].
    pub fn col_max_upscale(&mut self, columns: usize) {
        let mut col_max = vec![ZERO; columns];
        for (j, v) in &self.entries {
            if let Some(c) = col_max.get_mut(usize::from(*j))
                && *c < *v
            {
                *c = *v;
            }
        }
        self.divide_columns(&column_divisors(&col_max));
    }

    /// [`super::math::matmul_transpose_sparse`].
    pub fn matmul_transpose(&self, v: &[I32F32]) -> Vec<I32F32> {
        self.rows()
            .map(|row| {
                row.iter().fold(ZERO, |acc, (j, x)| {
                    let vj = v.get(usize::from(*j)).copied().unwrap_or(ZERO);
                    add(acc, mul(vj, *x))
                })
            })
            .collect()
    }
}

/// [`Csr::col_sums`] of the matrix whose consecutive row blocks are `blocks`, in one
/// sequential pass (row-major order, as on one thread).
pub fn col_sums_blocks(blocks: &[Csr], columns: usize) -> Vec<I32F32> {
    let mut s = vec![ZERO; columns];
    for (j, v) in blocks.iter().flat_map(|m| &m.entries) {
        if let Some(c) = s.get_mut(usize::from(*j)) {
            *c = add(*c, *v);
        }
    }
    s
}

/// One divisor per column: `Some` where the column's value is nonzero.
pub fn column_divisors(values: &[I32F32]) -> Vec<Option<Divisor>> {
    values
        .iter()
        .map(|s| (*s != ZERO).then(|| Divisor::new(*s)))
        .collect()
}

/// [`safe_div`] by one fixed divisor, with the 128-bit division avoided where it is exact to.
///
/// For `0 <= a < 1` the quotient is `floor((a << 32) / b)` on the bits (as in [`safe_div`]).
/// When `b` is a whole number `B` (low 32 bits zero) and `a >= 0`, `(a·2^32)/(B·2^32) = a/B`
/// on the bits. Both are 64-bit quotients `floor(n / d)` by a divisor fixed per column or
/// row, so they are taken by multiplying with a reciprocal ([`div_by_reciprocal`]) instead of
/// a hardware division. Everything else goes to [`safe_div`].
#[derive(Debug, Clone, Copy)]
pub struct Divisor {
    bits: I32F32,
    /// [`reciprocal`] of the bits (for `b > 0`).
    recip: u64,
    /// [`reciprocal`] of `B = bits >> 32` when `b` is a positive whole number, else 0.
    recip_whole: u64,
}

/// `floor((2^64 − 1) / d)`, the multiplier [`div_by_reciprocal`] needs (0 for `d = 0`).
#[inline]
pub fn reciprocal(d: u64) -> u64 {
    u64::MAX.checked_div(d).unwrap_or(0)
}

/// `floor(n / d)` for `d >= 1`, given `m = reciprocal(d)`, without a hardware division.
///
/// `q̂ = floor(n·m / 2^64)` satisfies `q − 2 <= q̂ <= q`: `m·d <= 2^64 − 1` gives
/// `n·m/2^64 < n/d`, and `m > (2^64 − 1)/d − 1` gives `n·m/2^64 > n/d − n(1 + d)/(d·2^64)
/// > n/d − 2` because `n < 2^64` and `(1 + d)/d <= 2`. The remainder `n − q̂·d` is then
/// below `3d`, and two conditional steps give `q`. Property-tested against `/`.
#[inline]
pub fn div_by_reciprocal(n: u64, d: u64, m: u64) -> u64 {
    // The u128 product shifted by 64 is below 2^64, so the cast keeps every bit.
    let mut q = ((u128::from(n).wrapping_mul(u128::from(m))) >> 64) as u64;
    // q·d <= n (q̂ never exceeds the true quotient), so neither step wraps.
    let mut r = n.wrapping_sub(q.wrapping_mul(d));
    let step = u64::from(r >= d);
    q = q.wrapping_add(step);
    r = r.wrapping_sub(step.wrapping_mul(d));
    q.wrapping_add(u64::from(r >= d))
}

impl Divisor {
    /// Prepares division by `b`.
    pub fn new(b: I32F32) -> Self {
        let y = u64::try_from(b.to_bits()).unwrap_or(0);
        let recip_whole = if y & FRAC_MASK == 0 {
            reciprocal(y >> 32)
        } else {
            0
        };
        Self {
            bits: b,
            recip: reciprocal(y),
            recip_whole,
        }
    }

    /// `safe_div(a, b)`.
    #[inline]
    pub fn div(&self, a: I32F32) -> I32F32 {
        if let (Ok(x), Ok(y)) = (
            u64::try_from(a.to_bits()),
            u64::try_from(self.bits.to_bits()),
        ) {
            if x < (1 << 32) && y != 0 {
                let q = div_by_reciprocal(x << 32, y, self.recip);
                return i64::try_from(q).map_or(ZERO, I32F32::from_bits);
            }
            if y & FRAC_MASK == 0 && y != 0 {
                // x < 2^63 and y >> 32 >= 1, so the quotient fits i64.
                let q = div_by_reciprocal(x, y >> 32, self.recip_whole);
                return i64::try_from(q).map_or(ZERO, I32F32::from_bits);
            }
        }
        safe_div(a, self.bits)
    }
}

/// Clip of one weight by its column's consensus (§5.7); `None` removes the entry.
#[inline]
pub fn clip(v: I32F32, t: I32F32) -> Option<I32F32> {
    if t < v {
        (ZERO < t).then_some(t)
    } else {
        Some(v)
    }
}

/// Sparse EMA with one alpha ([`super::math::mat_ema_sparse`]) into a new flat matrix.
pub fn mat_ema(new: &Csr, old: &Csr, alpha: I32F32) -> Csr {
    mat_ema_with_sums(new, old, alpha, new.rows_len()).0
}

/// [`mat_ema`] over `columns` columns (the uid count; a row block of the matrix has fewer
/// rows) and the result's column sums ([`Csr::col_sums`]; every kept entry is positive).
pub fn mat_ema_with_sums(
    new: &Csr,
    old: &Csr,
    alpha: I32F32,
    columns: usize,
) -> (Csr, Vec<I32F32>) {
    let n = columns;
    let one_minus_alpha = ONE.saturating_sub(alpha);
    let mut acc = vec![ZERO; n];
    let mut sums = vec![ZERO; n];
    let mut old_rows = old.rows();
    let mut out = Csr {
        lens: Vec::with_capacity(new.rows_len()),
        entries: Vec::with_capacity(new.entries.len().max(old.entries.len())),
    };
    for new_row in new.rows() {
        let old_row = old_rows.next().unwrap_or(&[]);
        let before = out.entries.len();
        if !(new_row.is_empty() && old_row.is_empty()) {
            for (j, v) in new_row {
                if let Some(c) = acc.get_mut(usize::from(*j)) {
                    *c = add(*c, mul(alpha, *v));
                }
            }
            for (j, v) in old_row {
                if let Some(c) = acc.get_mut(usize::from(*j)) {
                    *c = add(*c, mul(one_minus_alpha, *v));
                }
            }
            for (j, (c, sum)) in acc.iter_mut().zip(sums.iter_mut()).enumerate() {
                if *c > ZERO {
                    // j < n <= 65535 (a u16 uid count), so the conversion never fails.
                    out.entries.push((u16::try_from(j).unwrap_or(u16::MAX), *c));
                    *sum = add(*sum, *c);
                }
                *c = ZERO;
            }
        }
        out.lens.push(out.entries.len().saturating_sub(before));
    }
    (out, sums)
}

/// Column-wise stake-weighted median ([`super::math::weighted_median_col_sparse`]).
pub fn weighted_median_col(
    stake: &[I32F32],
    score: &Csr,
    columns: usize,
    majority: I32F32,
) -> Vec<I32F32> {
    weighted_median_col_blocks(stake, std::slice::from_ref(score), columns, majority, 1)
}

/// [`weighted_median_col`] of the matrix whose consecutive row blocks are `blocks`, on up to
/// `threads` threads: each block fills its validators' rows of the dense score table, then
/// each thread takes a contiguous range of columns. Every column's median is computed exactly
/// as on one thread, so the result does not depend on `threads` or on the cut into blocks.
pub fn weighted_median_col_blocks(
    stake: &[I32F32],
    blocks: &[Csr],
    columns: usize,
    majority: I32F32,
    threads: usize,
) -> Vec<I32F32> {
    let mut use_stake: Vec<I32F32> = stake.iter().copied().filter(|s| *s > ZERO).collect();
    super::math::inplace_normalize(&mut use_stake);
    let stake_sum = super::math::sum(&use_stake);
    let minority = stake_sum.saturating_sub(majority);
    let k_count = use_stake.len();
    let mut median = vec![ZERO; columns];
    if k_count == 0 {
        return median;
    }
    let width = columns.max(1);
    // Scores of the staked validators, row-major and dense (a missing entry scores 0; a
    // duplicate column keeps its last value, as the original's scatter does).
    let mut dense = vec![ZERO; columns.saturating_mul(k_count)];
    let mut jobs = Vec::with_capacity(blocks.len());
    let mut rest: &mut [I32F32] = &mut dense;
    let mut row0 = 0usize;
    for m in blocks {
        let rows = m.rows_len();
        let st = stake.get(row0..).unwrap_or(&[]);
        let st = st.get(..rows).unwrap_or(st);
        let staked = st.iter().filter(|s| **s > ZERO).count();
        let cut = staked.saturating_mul(width).min(rest.len());
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(cut);
        rest = tail;
        jobs.push((m, st, head));
        row0 = row0.saturating_add(rows);
    }
    super::par::map(jobs, |(m, st, out)| {
        let mut dense_rows = out.chunks_exact_mut(width);
        for (row, s) in m.rows().zip(st) {
            if *s <= ZERO {
                continue;
            }
            let Some(out) = dense_rows.next() else {
                break;
            };
            for (c, v) in row {
                if let Some(cell) = out.get_mut(usize::from(*c)) {
                    *cell = *v;
                }
            }
        }
    });
    // Columns are gathered a block at a time so both the reads and the writes stay in cache;
    // each thread takes a run of whole column blocks.
    const BLOCK: usize = 32;
    let col_blocks = columns.div_ceil(BLOCK);
    let per_thread = col_blocks
        .div_ceil(threads.max(1))
        .max(1)
        .saturating_mul(BLOCK);
    let dense = &dense;
    let use_stake = &use_stake;
    let parts: Vec<(usize, &mut [I32F32])> = median
        .chunks_mut(per_thread)
        .enumerate()
        .map(|(t, part)| (t.saturating_mul(per_thread), part))
        .collect();
    super::par::map(parts, |(first, part)| {
        let mut cells: Vec<(I32F32, I32F32)> = vec![(ZERO, ZERO); BLOCK.saturating_mul(k_count)];
        let mut scratch = MedianScratch::default();
        for (block, medians) in part.chunks_mut(BLOCK).enumerate() {
            let c0 = first.saturating_add(block.saturating_mul(BLOCK));
            let width_here = medians.len();
            for (t, (row, st)) in dense.chunks_exact(width).zip(use_stake).enumerate() {
                let part = row.get(c0..c0.saturating_add(width_here)).unwrap_or(&[]);
                for (c, v) in part.iter().enumerate() {
                    if let Some(cell) = cells.get_mut(c.saturating_mul(k_count).saturating_add(t)) {
                        *cell = (*v, *st);
                    }
                }
            }
            for (m, col) in medians.iter_mut().zip(cells.chunks_exact(k_count)) {
                *m = scratch.weighted_median(col, minority, ZERO, stake_sum);
            }
        }
    });
    median
}

/// Reusable buffers for [`MedianScratch::weighted_median`].
#[derive(Debug, Default)]
pub struct MedianScratch {
    cur: Vec<(i64, i64)>,
    lower: Vec<(i64, i64)>,
    upper: Vec<(i64, i64)>,
}

impl MedianScratch {
    /// [`super::math::weighted_median`] on `(score, stake)` pairs in partition order.
    ///
    /// Same pivots (the middle element of the current partition), same stable split and the
    /// same sums in the same order, so the same result; only the buffers are reused.
    pub fn weighted_median(
        &mut self,
        items: &[(I32F32, I32F32)],
        minority: I32F32,
        lo: I32F32,
        hi: I32F32,
    ) -> I32F32 {
        // With every stake in [0, 2^33] and fewer than 2^30 items no partial sum can reach
        // i64's range, so saturating and plain adds agree and the cheaper one is used.
        let small = items.len() < (1 << 30)
            && items
                .iter()
                .all(|(_, st)| (0..=(1i64 << 33)).contains(&st.to_bits()));
        if small {
            self.median_impl::<true>(items, minority, lo, hi)
        } else {
            self.median_impl::<false>(items, minority, lo, hi)
        }
    }

    fn median_impl<const SMALL: bool>(
        &mut self,
        items: &[(I32F32, I32F32)],
        minority: I32F32,
        lo: I32F32,
        hi: I32F32,
    ) -> I32F32 {
        let (mut lo, mut hi) = (lo, hi);
        // All three buffers are full length; `len`, `n_lo` and `n_hi` say how much is live.
        let full = items.len();
        // Raw bits: I32F32's order and saturating add are exactly those of its i64 bits.
        for buf in [&mut self.cur, &mut self.lower, &mut self.upper] {
            buf.resize(full, (0, 0));
        }
        for (c, (s, st)) in self.cur.iter_mut().zip(items) {
            *c = (s.to_bits(), st.to_bits());
        }
        let mut len = full;
        for _ in 0..=full {
            let cur = self.cur.get(..len).unwrap_or(&[]);
            if len == 0 {
                return ZERO;
            }
            if len == 1 {
                return cur.first().map_or(ZERO, |p| I32F32::from_bits(p.0));
            }
            let pivot_bits = cur.get(len / 2).map_or(0, |p| p.0);
            let pivot = I32F32::from_bits(pivot_bits);
            // Branch-free split: every item is written to both buffers and only the right
            // one's length advances. Adding 0 to a saturating sum leaves it unchanged, and
            // I32F32's saturating add and order are exactly those of its i64 bits.
            let (mut lo_bits, mut hi_bits) = (0i64, 0i64);
            let (mut n_lo, mut n_hi) = (0usize, 0usize);
            for &(s, st) in cur {
                let (is_lo, is_hi) = (s < pivot_bits, s > pivot_bits);
                if let Some(x) = self.lower.get_mut(n_lo) {
                    *x = (s, st);
                }
                if let Some(x) = self.upper.get_mut(n_hi) {
                    *x = (s, st);
                }
                n_lo = n_lo.saturating_add(usize::from(is_lo));
                n_hi = n_hi.saturating_add(usize::from(is_hi));
                let (add_lo, add_hi) = (if is_lo { st } else { 0 }, if is_hi { st } else { 0 });
                if SMALL {
                    lo_bits = lo_bits.wrapping_add(add_lo);
                    hi_bits = hi_bits.wrapping_add(add_hi);
                } else {
                    lo_bits = lo_bits.saturating_add(add_lo);
                    hi_bits = hi_bits.saturating_add(add_hi);
                }
            }
            let (lo_stake, hi_stake) = (I32F32::from_bits(lo_bits), I32F32::from_bits(hi_bits));
            let lo_edge = lo.saturating_add(lo_stake);
            let hi_edge = hi.saturating_sub(hi_stake);
            if lo_edge <= minority && minority < hi_edge {
                return pivot;
            } else if minority < lo_edge && n_lo != 0 {
                hi = lo_edge;
                std::mem::swap(&mut self.cur, &mut self.lower);
                len = n_lo;
            } else if hi_edge <= minority && n_hi != 0 {
                lo = hi_edge;
                std::mem::swap(&mut self.cur, &mut self.upper);
                len = n_hi;
            } else {
                return pivot;
            }
        }
        ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::super::math::{self, SparseRow};
    use super::*;
    use proptest::prelude::*;

    fn fixed() -> impl Strategy<Value = I32F32> {
        prop_oneof![
            (0i64..(1 << 32)).prop_map(I32F32::from_bits),
            (0i64..8).prop_map(|x| I32F32::from_bits(x << 30)),
            any::<i64>().prop_map(I32F32::from_bits),
            (0u16..=u16::MAX).prop_map(I32F32::from_num),
        ]
    }

    fn matrix(rows: usize, cols: u16) -> impl Strategy<Value = Vec<SparseRow>> {
        prop::collection::vec(
            prop::collection::vec((0..cols.saturating_add(2), fixed()), 0..8),
            rows,
        )
    }

    fn to_csr(m: &[SparseRow]) -> Csr {
        Csr::from_rows(m.iter().map(|r| r.iter().copied()), 0)
    }

    fn to_rows(m: &Csr) -> Vec<SparseRow> {
        m.rows().map(<[_]>::to_vec).collect()
    }

    proptest! {
        #[test]
        fn divisor_equals_safe_div(a in any::<i64>(), b in any::<i64>(), small in 0i64..(1 << 32), whole in 0i64..(1 << 31), wb in 1i64..(1 << 31), tiny in 1i64..(1 << 20), mid in 1i64..(1 << 40), k in 0u32..63) {
            // The reciprocal path (0 <= x < 2^32, y > 0) at every divisor scale, including
            // y = 1 and powers of two (where q̂ is furthest from q) and quotients >= 2^63.
            let edge = [(1i64 << 32) - 1, 0, 1, small];
            for (x, y) in [(a, b), (small, b), (a, wb << 32), (small, wb << 32), (whole << 32, wb << 32), (a, 1), (small, 0), (a, 0), (-small, wb << 32), (small, tiny), (small, mid), (small, 1 << k), (small, (1 << k) - 1), (small, (1 << k) + 1), (small, small.max(1)), (small, i64::MAX)]
                .into_iter()
                .chain(edge.iter().flat_map(|x| [(*x, 1), (*x, 2), (*x, 3), (*x, tiny), (*x, mid), (*x, i64::MAX), (*x, 1 << k)]))
            {
                let (x, y) = (I32F32::from_bits(x), I32F32::from_bits(y));
                prop_assert_eq!(Divisor::new(y).div(x), safe_div(x, y), "{} / {}", x, y);
            }
        }

        #[test]
        fn division_by_reciprocal_equals_hardware_division(n in any::<u64>(), d in any::<u64>(), small in 1u64..(1 << 20), k in 0u32..64) {
            for (n, d) in [(n, d.max(1)), (n, small), (n, 1), (n, 1 << k), (n, (1 << k) | 1), (n, ((1u64 << k) - 1).max(1)), (u64::MAX, d.max(1)), (u64::MAX, small), (u64::MAX, 1 << k), (d, small), (0, small)] {
                prop_assert_eq!(div_by_reciprocal(n, d, reciprocal(d)), n / d, "{} / {}", n, d);
            }
        }

        #[test]
        fn flat_normalisations_equal_the_row_versions(m in matrix(6, 5)) {
            let mut want = m.clone();
            math::inplace_row_normalize_sparse(&mut want);
            let mut got = to_csr(&m);
            got.row_normalize();
            prop_assert_eq!(to_rows(&got), want);

            let mut want = m.clone();
            math::inplace_col_normalize_sparse(&mut want, 5);
            let mut got = to_csr(&m);
            got.col_normalize(5);
            prop_assert_eq!(to_rows(&got), want);

            let mut want = m.clone();
            math::inplace_col_max_upscale_sparse(&mut want, 5);
            let mut got = to_csr(&m);
            got.col_max_upscale(5);
            prop_assert_eq!(to_rows(&got), want);
        }

        #[test]
        fn flat_products_and_ema_equal_the_row_versions(m in matrix(6, 5), old in matrix(6, 5), v in prop::collection::vec(fixed(), 7), alpha in fixed()) {
            prop_assert_eq!(to_csr(&m).matmul_transpose(&v), math::matmul_transpose_sparse(&m, &v));
            prop_assert_eq!(to_rows(&mat_ema(&to_csr(&m), &to_csr(&old), alpha)), math::mat_ema_sparse(&m, &old, alpha));
            let t: Vec<I32F32> = v.iter().take(5).copied().collect();
            let mut got = to_csr(&m);
            got.retain_map(|_, j, x| clip(x, t.get(usize::from(j)).copied().unwrap_or(ZERO)));
            prop_assert_eq!(to_rows(&got), math::col_clip_sparse(&m, &t));
        }

        #[test]
        fn weighted_median_with_reused_buffers_equals_the_original(
            scores in prop::collection::vec(prop_oneof![Just(0i64), Just(1 << 31), 0i64..4, any::<i64>()], 0..24),
            stakes in prop::collection::vec(prop_oneof![Just(0i64), 0i64..(1 << 33), any::<i64>()], 24),
            minority in prop_oneof![Just(0i64), -(1i64 << 33)..(1i64 << 33), any::<i64>()],
            hi in prop_oneof![Just(1i64 << 32), any::<i64>()],
        ) {
            let score: Vec<I32F32> = scores.iter().map(|x| I32F32::from_bits(*x)).collect();
            let stake: Vec<I32F32> = stakes.iter().take(score.len()).map(|x| I32F32::from_bits(*x)).collect();
            let (minority, hi) = (I32F32::from_bits(minority), I32F32::from_bits(hi));
            let want = math::weighted_median(&stake, &score, (0..score.len()).collect(), minority, ZERO, hi);
            let pairs: Vec<(I32F32, I32F32)> = score.iter().copied().zip(stake.iter().copied()).collect();
            prop_assert_eq!(MedianScratch::default().weighted_median(&pairs, minority, ZERO, hi), want);
        }

        #[test]
        fn column_medians_equal_the_original(m in matrix(7, 6), stake in prop::collection::vec(prop_oneof![Just(0i64), 0i64..(1 << 32), -(1i64 << 32)..0], 7), kappa in 0i64..(1 << 33)) {
            let m: Vec<SparseRow> = m.into_iter().map(|r| r.into_iter().map(|(j, v)| (j, I32F32::from_bits(v.to_bits().rem_euclid(1 << 33)))).collect()).collect();
            let stake: Vec<I32F32> = stake.into_iter().map(I32F32::from_bits).collect();
            let kappa = I32F32::from_bits(kappa);
            prop_assert_eq!(weighted_median_col(&stake, &to_csr(&m), 6, kappa), math::weighted_median_col_sparse(&stake, &m, 6, kappa));
        }
    }
}
