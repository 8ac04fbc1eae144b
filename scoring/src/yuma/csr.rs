//! Flat sparse matrices and the fused epoch passes that run on them.
//!
//! Same arithmetic, in the same order, as the row-of-pairs functions in [`super::math`]: only
//! the storage (one entry vector for the whole matrix instead of one per row), the number of
//! passes and the cost of each division change. Rows keep their stored order, duplicates and
//! explicit zeros, because subtensor's results depend on them.

use super::math::{ONE, ZERO, safe_div};
use substrate_fixed::types::I32F32;

/// Low 32 bits of an I32F32: the fractional part.
const FRAC_MASK: i64 = (1 << 32) - 1;

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
                *c = c.saturating_add(*v);
            }
        }
        s
    }

    /// [`super::math::inplace_row_normalize_sparse`].
    pub fn row_normalize(&mut self) {
        for row in self.rows_mut() {
            let s = row.iter().fold(ZERO, |acc, (_, v)| acc.saturating_add(*v));
            if s > ZERO {
                let d = Divisor::new(s);
                for (_, v) in row.iter_mut() {
                    *v = d.div(*v);
                }
            }
        }
    }

    /// Divides each entry by `per_column[j]` where that is given (entries beyond it stay).
    fn divide_columns(&mut self, per_column: &[Option<Divisor>]) {
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
                    acc.saturating_add(vj.saturating_mul(*x))
                })
            })
            .collect()
    }
}

/// One divisor per column: `Some` where the column's value is nonzero.
fn column_divisors(values: &[I32F32]) -> Vec<Option<Divisor>> {
    values
        .iter()
        .map(|s| (*s != ZERO).then(|| Divisor::new(*s)))
        .collect()
}

/// [`safe_div`] by one fixed divisor, with the 128-bit division avoided where it is exact to.
///
/// For `0 <= a < 1` the quotient is `(a << 32) / b` in 64 bits (as in [`safe_div`]). When
/// `b` is a whole number `B` (low 32 bits zero) and `a >= 0`, `(a·2^32)/(B·2^32) = a/B`, again
/// 64-bit. Everything else goes to [`safe_div`].
#[derive(Debug, Clone, Copy)]
pub struct Divisor {
    b: I32F32,
    /// `b` as an unsigned integer when positive.
    pos: Option<u64>,
    /// `b / 2^32` when `b` is a positive whole number.
    whole: Option<u64>,
}

impl Divisor {
    /// Prepares division by `b`.
    pub fn new(b: I32F32) -> Self {
        let bits = b.to_bits();
        let pos = u64::try_from(bits).ok().filter(|y| *y != 0);
        let whole = pos
            .filter(|_| bits & FRAC_MASK == 0)
            .map(|y| y >> 32)
            .filter(|y| *y != 0);
        Self { b, pos, whole }
    }

    /// `safe_div(a, b)`.
    #[inline]
    pub fn div(&self, a: I32F32) -> I32F32 {
        if let Ok(x) = u64::try_from(a.to_bits()) {
            if x < (1 << 32)
                && let Some(y) = self.pos
            {
                return (x << 32)
                    .checked_div(y)
                    .and_then(|q| i64::try_from(q).ok())
                    .map_or(ZERO, I32F32::from_bits);
            }
            if let Some(y) = self.whole {
                // x < 2^63 and y >= 1, so the quotient fits i64.
                return x
                    .checked_div(y)
                    .and_then(|q| i64::try_from(q).ok())
                    .map_or(ZERO, I32F32::from_bits);
            }
        }
        safe_div(a, self.b)
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
    let n = new.rows_len();
    let one_minus_alpha = ONE.saturating_sub(alpha);
    let mut acc = vec![ZERO; n];
    let mut old_rows = old.rows();
    let mut out = Csr {
        lens: Vec::with_capacity(n),
        entries: Vec::with_capacity(new.entries.len().max(old.entries.len())),
    };
    for new_row in new.rows() {
        let old_row = old_rows.next().unwrap_or(&[]);
        let before = out.entries.len();
        if !(new_row.is_empty() && old_row.is_empty()) {
            for (j, v) in new_row {
                if let Some(c) = acc.get_mut(usize::from(*j)) {
                    *c = c.saturating_add(alpha.saturating_mul(*v));
                }
            }
            for (j, v) in old_row {
                if let Some(c) = acc.get_mut(usize::from(*j)) {
                    *c = c.saturating_add(one_minus_alpha.saturating_mul(*v));
                }
            }
            for (c, j) in acc.iter_mut().zip(0u16..) {
                if *c > ZERO {
                    out.entries.push((j, *c));
                }
                *c = ZERO;
            }
        }
        out.lens.push(out.entries.len().saturating_sub(before));
    }
    out
}

/// Column-wise stake-weighted median ([`super::math::weighted_median_col_sparse`]).
pub fn weighted_median_col(
    stake: &[I32F32],
    score: &Csr,
    columns: usize,
    majority: I32F32,
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
    // Column-major (score, stake) of the staked validators: one contiguous slice per column.
    let mut cells: Vec<(I32F32, I32F32)> = Vec::with_capacity(columns.saturating_mul(k_count));
    for _ in 0..columns {
        cells.extend(use_stake.iter().map(|s| (ZERO, *s)));
    }
    let mut k: usize = 0;
    for (row, s) in score.rows().zip(stake) {
        if *s <= ZERO {
            continue;
        }
        for (c, v) in row {
            let idx = usize::from(*c).saturating_mul(k_count).saturating_add(k);
            if usize::from(*c) < columns
                && let Some(cell) = cells.get_mut(idx)
            {
                cell.0 = *v;
            }
        }
        k = k.saturating_add(1);
    }
    let mut scratch = MedianScratch::default();
    for (m, col) in median.iter_mut().zip(cells.chunks_exact(k_count)) {
        *m = scratch.weighted_median(col, minority, ZERO, stake_sum);
    }
    median
}

/// Reusable buffers for [`MedianScratch::weighted_median`].
#[derive(Debug, Default)]
pub struct MedianScratch {
    cur: Vec<(I32F32, I32F32)>,
    lower: Vec<(I32F32, I32F32)>,
    upper: Vec<(I32F32, I32F32)>,
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
        let (mut lo, mut hi) = (lo, hi);
        self.cur.clear();
        self.cur.extend_from_slice(items);
        for _ in 0..=items.len() {
            let len = self.cur.len();
            if len == 0 {
                return ZERO;
            }
            if len == 1 {
                return self.cur.first().map_or(ZERO, |p| p.0);
            }
            let pivot = self.cur.get(len / 2).map_or(ZERO, |p| p.0);
            let mut lo_stake = ZERO;
            let mut hi_stake = ZERO;
            self.lower.clear();
            self.upper.clear();
            for &(s, st) in &self.cur {
                if s < pivot {
                    lo_stake = lo_stake.saturating_add(st);
                    self.lower.push((s, st));
                } else if s > pivot {
                    hi_stake = hi_stake.saturating_add(st);
                    self.upper.push((s, st));
                }
            }
            let lo_edge = lo.saturating_add(lo_stake);
            let hi_edge = hi.saturating_sub(hi_stake);
            if lo_edge <= minority && minority < hi_edge {
                return pivot;
            } else if minority < lo_edge && !self.lower.is_empty() {
                hi = lo_edge;
                std::mem::swap(&mut self.cur, &mut self.lower);
            } else if hi_edge <= minority && !self.upper.is_empty() {
                lo = hi_edge;
                std::mem::swap(&mut self.cur, &mut self.upper);
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
        fn divisor_equals_safe_div(a in any::<i64>(), b in any::<i64>(), small in 0i64..(1 << 32), whole in 0i64..(1 << 31), wb in 1i64..(1 << 31)) {
            for (x, y) in [(a, b), (small, b), (a, wb << 32), (small, wb << 32), (whole << 32, wb << 32), (a, 1), (small, 0), (a, 0), (-small, wb << 32)] {
                let (x, y) = (I32F32::from_bits(x), I32F32::from_bits(y));
                prop_assert_eq!(Divisor::new(y).div(x), safe_div(x, y), "{} / {}", x, y);
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
