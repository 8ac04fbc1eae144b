//! Fixed-point building blocks of the epoch, each with subtensor's exact rounding.
//!
//! Every operation goes through `substrate-fixed` (the crate subtensor itself uses) and its
//! saturating/checked methods, so results match the chain bit for bit and nothing panics.
//! Sparse matrices are rows of `(column, value)` kept in stored order: order and explicit
//! zeros change results in the Yuma3 liquid-alpha path, so nothing here sorts or densifies
//! a row unless subtensor does.

use substrate_fixed::transcendental::exp;
use substrate_fixed::types::{I32F32, I64F64, I96F32};

/// One sparse row: `(column uid, value)` pairs in stored order.
pub type SparseRow = Vec<(u16, I32F32)>;
/// A sparse matrix: one [`SparseRow`] per uid.
pub type SparseMatrix = Vec<SparseRow>;

/// I32F32 zero.
pub const ZERO: I32F32 = I32F32::from_bits(0);
/// I32F32 one.
pub const ONE: I32F32 = I32F32::from_bits(1 << 32);
/// I32F32 one half.
const HALF: I32F32 = I32F32::from_bits(1 << 31);
/// `u16::MAX` as I32F32.
const U16_MAX: I32F32 = I32F32::from_bits(65_535 << 32);

/// `a / b` truncated toward zero; 0 on division by zero or overflow (subtensor's `safe_div`).
pub fn safe_div(a: I32F32, b: I32F32) -> I32F32 {
    let (x, y) = (a.to_bits(), b.to_bits());
    // Fast path for proportions (0 <= a < 1, b > 0): `a << 32` fits a u64, so a 64-bit
    // division gives the same truncated quotient as the crate's 128-bit one.
    if let (Ok(x), Ok(y)) = (u64::try_from(x), u64::try_from(y))
        && x < (1 << 32)
        && y != 0
    {
        return (x << 32)
            .checked_div(y)
            .and_then(|q| i64::try_from(q).ok())
            .map_or(ZERO, I32F32::from_bits);
    }
    a.checked_div(b).unwrap_or(ZERO)
}

/// [`safe_div`] for I64F64.
pub fn safe_div_64(a: I64F64, b: I64F64) -> I64F64 {
    a.checked_div(b).unwrap_or(I64F64::from_bits(0))
}

/// Saturating sum of a vector.
pub fn sum(v: &[I32F32]) -> I32F32 {
    v.iter().fold(ZERO, |acc, x| acc.saturating_add(*x))
}

/// Normalises `v` in place so it sums to (about) 1; leaves it unchanged when the sum is 0.
pub fn inplace_normalize(v: &mut [I32F32]) {
    let s = sum(v);
    inplace_normalize_using_sum(v, s);
}

/// Divides every element by `s` (with [`safe_div`]) unless `s` is 0.
pub fn inplace_normalize_using_sum(v: &mut [I32F32], s: I32F32) {
    if s == ZERO {
        return;
    }
    for x in v.iter_mut() {
        *x = safe_div(*x, s);
    }
}

/// Normalises an I64F64 vector in place (used for stake).
pub fn inplace_normalize_64(v: &mut [I64F64]) {
    let zero = I64F64::from_bits(0);
    let s = v.iter().fold(zero, |acc, x| acc.saturating_add(*x));
    if s == zero {
        return;
    }
    for x in v.iter_mut() {
        *x = safe_div_64(*x, s);
    }
}

/// `u16 / 65535` as I32F32, truncated (subtensor's `u16_proportion_to_fixed`).
///
/// Both operands are whole numbers, so the crate's `(x·2^64)/(65535·2^32)` equals the 64-bit
/// `(x·2^32)/65535`; a unit test checks all 65536 inputs against [`safe_div`].
pub fn u16_proportion_to_fixed(x: u16) -> I32F32 {
    I32F32::from_bits(
        (u64::from(x) << 32)
            .checked_div(65_535)
            .map_or(0, |q| q.cast_signed()),
    )
}

/// `floor(x * 65535)` clamped to u16 (subtensor's `fixed_proportion_to_u16`).
pub fn fixed_proportion_to_u16(x: I32F32) -> u16 {
    let y = mul(x, U16_MAX);
    // `saturating_to_num` floors: any negative value is below 0, a non-negative one is its
    // integer bits, capped at u16::MAX.
    match u64::try_from(y.to_bits()) {
        Ok(b) => u16::try_from(b >> 32).unwrap_or(u16::MAX),
        Err(_) => 0,
    }
}

/// `a.saturating_mul(b)`, bit for bit, with a one-instruction product for small non-negatives.
///
/// The crate multiplies `a · (b << 32)` in i128 with an overflow check (a library call) and
/// keeps bits 64..128. For `0 <= a, b < 2^40` nothing overflows and that is `(a·b) >> 32`,
/// a 64×64→128-bit product. A property test checks it against the crate on random inputs.
#[inline]
pub fn mul(a: I32F32, b: I32F32) -> I32F32 {
    const LIMIT: u64 = 1 << 40;
    if let (Ok(x), Ok(y)) = (u64::try_from(a.to_bits()), u64::try_from(b.to_bits()))
        && x < LIMIT
        && y < LIMIT
        && let Some(p) = u128::from(x).checked_mul(u128::from(y))
        && let Ok(q) = i64::try_from(p >> 32)
    {
        return I32F32::from_bits(q);
    }
    a.saturating_mul(b)
}

/// `a.saturating_add(b)`, bit for bit: the crate's branch-free select is several times
/// the cost of `i64::saturating_add` on the raw bits, which saturates the same way.
#[inline]
pub fn add(a: I32F32, b: I32F32) -> I32F32 {
    I32F32::from_bits(a.to_bits().saturating_add(b.to_bits()))
}

/// A u16 as I32F32 (`I32F32::from_num`), without the generic conversion.
#[inline]
pub fn from_u16(v: u16) -> I32F32 {
    I32F32::from_bits(i64::from(v) << 32)
}

/// Per-uid amount `floor(x * rao)` computed in I96F32 as the chain does.
pub fn share_to_amount(x: I32F32, rao: u64) -> u64 {
    I96F32::saturating_from_num(x)
        .saturating_mul(I96F32::saturating_from_num(rao))
        .saturating_to_num::<u64>()
}

/// `exp` clamped to [-20, 20]; 0 or `I32F32::MAX` if the series overflows (subtensor's `exp_safe`).
pub fn exp_safe(input: I32F32) -> I32F32 {
    let lo = I32F32::from_num(-20);
    let hi = I32F32::from_num(20);
    let x = if input < lo {
        lo
    } else if hi < input {
        hi
    } else {
        input
    };
    match exp_i32f32(x) {
        Ok(v) => v,
        Err(()) if x <= ZERO => ZERO,
        Err(()) => I32F32::max_value(),
    }
}

/// `substrate_fixed::transcendental::exp` for I32F32, same bits, faster.
///
/// The crate's series divides each term by `I32F32::from_num(i)` with a 128-bit division;
/// `trunc((t·2^32)/(i·2^32))` equals the 64-bit `trunc(t/i)`, and once a term is 0 every
/// later term is 0, so the loop may stop. Anything unusual is left to the crate itself.
fn exp_i32f32(x: I32F32) -> Result<I32F32, ()> {
    if x == ZERO || x == ONE {
        return exp::<I32F32, I32F32>(x);
    }
    let fast = || -> Option<I32F32> {
        let neg = x < ZERO;
        let y = if neg { x.checked_neg()? } else { x }.to_bits();
        let result = I32F32::from_bits(exp_series(y)?);
        if neg {
            one_over(result).or_else(|| ONE.checked_div(result))
        } else {
            Some(result)
        }
    };
    match fast() {
        Some(v) => Ok(v),
        None => exp::<I32F32, I32F32>(x),
    }
}

/// `1 + y + y²/2! + …` on I32F32 bits for `y >= 0`, each term truncated, stopping at a zero
/// term (or after the 31st); `None` where a step would overflow.
///
/// Unrolled so every division is by a literal, which the compiler turns into a multiply: the
/// terms form one dependency chain, and a hardware division per term dominated the epoch's
/// liquid-alpha cost. `|term| < 2^63` and `|y| < 2^63`, so the i128 product never overflows
/// and a wrapping multiply is the crate's checked one.
#[inline]
fn exp_series(y: i64) -> Option<i64> {
    let mut result = y.checked_add(1 << 32)?;
    let mut term = y;
    macro_rules! step {
        ($($i:literal)*) => {$(
            let prod = i128::from(term).wrapping_mul(i128::from(y)) >> 32;
            term = i64::try_from(prod).ok()?.checked_div($i)?;
            result = result.checked_add(term)?;
            if term == 0 {
                return Some(result);
            }
        )*};
    }
    step!(2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
    Some(result)
}

/// `min(max_value, value)` then `max(min_value, ...)`, in that order (subtensor's `clamp_value`).
fn clamp_value(value: I32F32, low: I32F32, high: I32F32) -> I32F32 {
    value.min(high).max(low)
}

/// Which uids hold one of the `k` largest nonzero stakes; ties lose by lower uid.
pub fn is_topk_nonzero(stake: &[I32F32], k: usize) -> Vec<bool> {
    let n = stake.len();
    let mut result: Vec<bool> = stake.iter().map(|s| *s != ZERO).collect();
    if n < k {
        return result;
    }
    let mut idxs: Vec<usize> = (0..n).collect();
    // Stable ascending sort, so among equal stakes the lower uid comes first and is dropped.
    idxs.sort_by_key(|&i| stake.get(i).copied().unwrap_or(ZERO));
    for &i in idxs.iter().take(n.saturating_sub(k)) {
        if let Some(r) = result.get_mut(i) {
            *r = false;
        }
    }
    result
}

/// Divides each row by its sum when the sum is positive.
pub fn inplace_row_normalize_sparse(m: &mut [SparseRow]) {
    for row in m.iter_mut() {
        let s = row.iter().fold(ZERO, |acc, (_, v)| acc.saturating_add(*v));
        if s > ZERO {
            for (_, v) in row.iter_mut() {
                *v = safe_div(*v, s);
            }
        }
    }
}

/// Divides each column by its sum when the sum is nonzero. Entries with `j >= columns` stay.
pub fn inplace_col_normalize_sparse(m: &mut [SparseRow], columns: usize) {
    let mut col_sum = vec![ZERO; columns];
    for row in m.iter() {
        for (j, v) in row {
            if let Some(c) = col_sum.get_mut(usize::from(*j)) {
                *c = c.saturating_add(*v);
            }
        }
    }
    for row in m.iter_mut() {
        for (j, v) in row.iter_mut() {
            if let Some(s) = col_sum.get(usize::from(*j))
                && *s != ZERO
            {
                *v = safe_div(*v, *s);
            }
        }
    }
}

/// Divides each column by its maximum when the maximum is nonzero.
pub fn inplace_col_max_upscale_sparse(m: &mut [SparseRow], columns: usize) {
    let mut col_max = vec![ZERO; columns];
    for row in m.iter() {
        for (j, v) in row {
            if let Some(c) = col_max.get_mut(usize::from(*j))
                && *c < *v
            {
                *c = *v;
            }
        }
    }
    for row in m.iter_mut() {
        for (j, v) in row.iter_mut() {
            if let Some(mx) = col_max.get(usize::from(*j))
                && *mx != ZERO
            {
                *v = safe_div(*v, *mx);
            }
        }
    }
}

/// Saturating sum of each row.
pub fn row_sum_sparse(m: &[SparseRow]) -> Vec<I32F32> {
    m.iter()
        .map(|row| row.iter().fold(ZERO, |acc, (_, v)| acc.saturating_add(*v)))
        .collect()
}

/// `r_j = Σ_i v_i · m_ij` with floored products and saturating sums.
pub fn matmul_sparse(m: &[SparseRow], v: &[I32F32], columns: usize) -> Vec<I32F32> {
    let mut out = vec![ZERO; columns];
    for (row, vi) in m.iter().zip(v) {
        for (j, x) in row {
            if let Some(o) = out.get_mut(usize::from(*j)) {
                *o = o.saturating_add(vi.saturating_mul(*x));
            }
        }
    }
    out
}

/// `d_i = Σ_j v_j · m_ij` with floored products and saturating sums.
pub fn matmul_transpose_sparse(m: &[SparseRow], v: &[I32F32]) -> Vec<I32F32> {
    m.iter()
        .map(|row| {
            row.iter().fold(ZERO, |acc, (j, x)| {
                let vj = v.get(usize::from(*j)).copied().unwrap_or(ZERO);
                acc.saturating_add(vj.saturating_mul(*x))
            })
        })
        .collect()
}

/// Stake-weighted median by mid-pivot partition search, exactly as subtensor's recursion.
///
/// `partition` indexes into `stake`/`score`; `minority = total - majority`.
pub fn weighted_median(
    stake: &[I32F32],
    score: &[I32F32],
    partition: Vec<usize>,
    minority: I32F32,
    lo: I32F32,
    hi: I32F32,
) -> I32F32 {
    let mut part = partition;
    let mut lo = lo;
    let mut hi = hi;
    // Every round removes at least the pivot, so this bound is never reached on valid input.
    let cap = part.len();
    for _ in 0..=cap {
        let len = part.len();
        if len == 0 {
            return ZERO;
        }
        let score_at = |k: usize| score.get(k).copied().unwrap_or(ZERO);
        if len == 1 {
            return part.first().map_or(ZERO, |&k| score_at(k));
        }
        let pivot = part.get(len / 2).map_or(ZERO, |&k| score_at(k));
        let mut lo_stake = ZERO;
        let mut hi_stake = ZERO;
        let mut lower = Vec::new();
        let mut upper = Vec::new();
        for &k in &part {
            let s = score_at(k);
            if s == pivot {
                continue;
            }
            let st = stake.get(k).copied().unwrap_or(ZERO);
            if s < pivot {
                lo_stake = lo_stake.saturating_add(st);
                lower.push(k);
            } else {
                hi_stake = hi_stake.saturating_add(st);
                upper.push(k);
            }
        }
        let lo_edge = lo.saturating_add(lo_stake);
        let hi_edge = hi.saturating_sub(hi_stake);
        if lo_edge <= minority && minority < hi_edge {
            return pivot;
        } else if minority < lo_edge && !lower.is_empty() {
            hi = lo_edge;
            part = lower;
        } else if hi_edge <= minority && !upper.is_empty() {
            lo = hi_edge;
            part = upper;
        } else {
            return pivot;
        }
    }
    ZERO
}

/// Column-wise stake-weighted median over the validators with positive stake.
///
/// `majority` is κ; stake is re-normalised over the positive entries first.
pub fn weighted_median_col_sparse(
    stake: &[I32F32],
    score: &[SparseRow],
    columns: usize,
    majority: I32F32,
) -> Vec<I32F32> {
    let mut use_stake: Vec<I32F32> = stake.iter().copied().filter(|s| *s > ZERO).collect();
    inplace_normalize(&mut use_stake);
    let stake_sum = sum(&use_stake);
    let minority = stake_sum.saturating_sub(majority);
    let k_count = use_stake.len();
    // Column-major scores of the staked validators: one contiguous slice per column.
    let mut use_score = vec![ZERO; columns.saturating_mul(k_count)];
    let mut k: usize = 0;
    for (r, s) in stake.iter().enumerate() {
        if *s <= ZERO {
            continue;
        }
        if let Some(row) = score.get(r) {
            for (c, v) in row {
                let idx = usize::from(*c).saturating_mul(k_count).saturating_add(k);
                if usize::from(*c) < columns
                    && let Some(cell) = use_score.get_mut(idx)
                {
                    *cell = *v;
                }
            }
        }
        k = k.saturating_add(1);
    }
    let mut median = vec![ZERO; columns];
    if k_count == 0 {
        return median;
    }
    for (m, col) in median.iter_mut().zip(use_score.chunks_exact(k_count)) {
        *m = weighted_median(
            &use_stake,
            col,
            (0..k_count).collect(),
            minority,
            ZERO,
            stake_sum,
        );
    }
    median
}

/// `min(w, threshold_j)`; an entry above a zero threshold is removed, not stored as 0.
pub fn col_clip_sparse(m: &[SparseRow], threshold: &[I32F32]) -> SparseMatrix {
    m.iter()
        .map(|row| {
            row.iter()
                .filter_map(|&(j, v)| {
                    let t = threshold.get(usize::from(j)).copied().unwrap_or(ZERO);
                    if t < v {
                        (ZERO < t).then_some((j, t))
                    } else {
                        Some((j, v))
                    }
                })
                .collect()
        })
        .collect()
}

/// `A + ratio·(B − A)`; ratio 0 or 1 returns a copy, otherwise rows are rebuilt keeping only > 0.
pub fn interpolate_sparse(
    a: &[SparseRow],
    b: &[SparseRow],
    columns: usize,
    ratio: I32F32,
) -> SparseMatrix {
    if ratio == ZERO {
        return a.to_vec();
    }
    if ratio == ONE {
        return b.to_vec();
    }
    let densify = |row: Option<&SparseRow>| {
        let mut d = vec![ZERO; columns];
        for (j, v) in row.into_iter().flatten() {
            if let Some(x) = d.get_mut(usize::from(*j)) {
                *x = *v;
            }
        }
        d
    };
    (0..a.len())
        .map(|i| {
            let r1 = densify(a.get(i));
            let r2 = densify(b.get(i));
            r1.iter()
                .zip(&r2)
                .zip(0u16..)
                .filter_map(|((v1, v2), j)| {
                    let x = v1.saturating_add(ratio.saturating_mul(v2.saturating_sub(*v1)));
                    (ZERO < x).then_some((j, x))
                })
                .collect()
        })
        .collect()
}

/// Each entry times its row's vector element (floored).
pub fn row_hadamard_sparse(m: &[SparseRow], v: &[I32F32]) -> SparseMatrix {
    m.iter()
        .zip(v)
        .map(|(row, vi)| {
            row.iter()
                .map(|(j, x)| (*j, x.saturating_mul(*vi)))
                .collect()
        })
        .collect()
}

/// Drops entries `(i, j)` where `mask(row_key[i], col_key[j])`; entries with `j` out of range go too.
pub fn vec_mask_sparse_matrix(
    m: &[SparseRow],
    row_key: &[u64],
    col_key: &[u64],
    mask: impl Fn(u64, u64) -> bool,
) -> SparseMatrix {
    m.iter()
        .zip(row_key)
        .map(|(row, rk)| {
            row.iter()
                .copied()
                .filter(|(j, _)| {
                    col_key
                        .get(usize::from(*j))
                        .is_some_and(|ck| !mask(*rk, *ck))
                })
                .collect()
        })
        .collect()
}

/// Sparse EMA with one alpha: `α·new + (1−α)·old` on a dense row, keeping positives in uid order.
pub fn mat_ema_sparse(new: &[SparseRow], old: &[SparseRow], alpha: I32F32) -> SparseMatrix {
    let n = new.len();
    let one_minus_alpha = ONE.saturating_sub(alpha);
    new.iter()
        .enumerate()
        .map(|(i, new_row)| {
            let old_row = old.get(i).map_or(&[][..], Vec::as_slice);
            if new_row.is_empty() && old_row.is_empty() {
                // Nothing to accumulate: skip the dense row (most uids are miners).
                return SparseRow::new();
            }
            let mut acc = vec![ZERO; n];
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
            acc.iter()
                .zip(0u16..)
                .filter(|(v, _)| **v > ZERO)
                .map(|(v, j)| (j, *v))
                .collect()
        })
        .collect()
}

/// Sparse EMA with per-entry alphas (Yuma3 liquid alpha).
///
/// Only columns present in `new[i]` are written, in `new[i]`'s order: an old bond whose column
/// is absent from the new row is dropped, not decayed. Values are capped at 1.
pub fn mat_ema_alpha_sparse_row(
    new_row: &[(u16, I32F32)],
    old_row: &[(u16, I32F32)],
    alpha_row: &[I32F32],
) -> SparseRow {
    let mut decayed = vec![ZERO; alpha_row.len()];
    for (j, old_val) in old_row {
        if let (Some(a), Some(cell)) = (
            alpha_row.get(usize::from(*j)),
            decayed.get_mut(usize::from(*j)),
        ) {
            *cell = ONE.saturating_sub(*a).saturating_mul(*old_val);
        }
    }
    new_row
        .iter()
        .filter_map(|(j, new_val)| {
            let a = alpha_row.get(usize::from(*j))?;
            let d = decayed.get(usize::from(*j))?;
            let inc = a.saturating_mul(*new_val).max(ZERO);
            let v = d.saturating_add(inc).min(ONE);
            (v > ZERO).then_some((*j, v))
        })
        .collect()
}

/// Dense EMA with per-entry alphas: `min(1, (1−α)·old + max(0, α·new))`.
pub fn mat_ema_alpha_dense(
    new: &[Vec<I32F32>],
    old: &[Vec<I32F32>],
    alpha: &[Vec<I32F32>],
) -> Vec<Vec<I32F32>> {
    new.iter()
        .zip(old)
        .zip(alpha)
        .map(|((n_row, o_row), a_row)| {
            n_row
                .iter()
                .zip(o_row)
                .zip(a_row)
                .map(|((n, o), a)| {
                    let decayed = ONE.saturating_sub(*a).saturating_mul(*o);
                    let inc = a.saturating_mul(*n).max(ZERO);
                    decayed.saturating_add(inc).min(ONE)
                })
                .collect()
        })
        .collect()
}

/// Liquid-alpha sigmoid for one (validator, miner) pair.
pub fn alpha_sigmoid(
    consensus: I32F32,
    weight: I32F32,
    bond: I32F32,
    alpha_low: I32F32,
    alpha_high: I32F32,
    steepness: I32F32,
) -> I32F32 {
    let scale = steepness.saturating_div(I32F32::from_num(-100));
    alpha_sigmoid_scaled(consensus, weight, bond, alpha_low, alpha_high, scale)
}

/// [`alpha_sigmoid`] with `steepness / −100` already computed (it is the same for a whole row).
fn alpha_sigmoid_scaled(
    consensus: I32F32,
    weight: I32F32,
    bond: I32F32,
    alpha_low: I32F32,
    alpha_high: I32F32,
    scale: I32F32,
) -> I32F32 {
    let x = sigmoid_exponent(consensus, weight, bond, scale);
    alpha_from_exp(exp_safe(x), alpha_low, alpha_high)
}

/// The exponent of [`alpha_sigmoid`]'s sigmoid: `scale · (combined − ½)`.
pub(crate) fn sigmoid_exponent(
    consensus: I32F32,
    weight: I32F32,
    bond: I32F32,
    scale: I32F32,
) -> I32F32 {
    let diff_buy = clamp_value(weight.saturating_sub(consensus), ZERO, ONE);
    let diff_sell = clamp_value(bond.saturating_sub(weight), ZERO, ONE);
    let combined = if weight >= bond { diff_buy } else { diff_sell };
    scale.saturating_mul(combined.saturating_sub(HALF))
}

/// The rest of [`alpha_sigmoid`] once `e = exp_safe(x)` is known.
pub(crate) fn alpha_from_exp(e: I32F32, alpha_low: I32F32, alpha_high: I32F32) -> I32F32 {
    let denominator = ONE.saturating_add(e);
    let sigmoid = one_over(denominator).unwrap_or_else(|| ONE.saturating_div(denominator));
    let alpha =
        alpha_low.saturating_add(sigmoid.saturating_mul(alpha_high.saturating_sub(alpha_low)));
    clamp_value(alpha, alpha_low, alpha_high)
}

/// `1 / y` as the crate divides (truncated), for `y >= 1`; `None` leaves other `y` to the crate.
///
/// The quotient is `floor(2^64 / y)` on the bits, which is `floor((2^64 − 1) / y)` plus one
/// exactly when `y` divides 2^64 (a power of two): a 64-bit division instead of a 128-bit one.
#[inline]
pub(crate) fn one_over(y: I32F32) -> Option<I32F32> {
    let y = u64::try_from(y.to_bits())
        .ok()
        .filter(|y| *y >= (1 << 32))?;
    let q = (u64::MAX)
        .checked_div(y)?
        .checked_add(u64::from(y.is_power_of_two()))?;
    i64::try_from(q).ok().map(I32F32::from_bits)
}

/// Liquid alphas of one row for every column, with subtensor's forward-only merge.
///
/// The merge assumes rows sorted by uid; an unsorted row reads some entries as 0, as on chain.
/// Only the columns of `w_row` are ever read by the EMA, so only they get a sigmoid; the
/// others are left at 0.
pub fn liquid_alpha_row(
    w_row: &[(u16, I32F32)],
    b_row: &[(u16, I32F32)],
    consensus: &[I32F32],
    alpha_low: I32F32,
    alpha_high: I32F32,
    steepness: I32F32,
) -> Vec<I32F32> {
    let scale = steepness.saturating_div(I32F32::from_num(-100));
    let mut needed = vec![false; consensus.len()];
    for (j, _) in w_row {
        if let Some(x) = needed.get_mut(usize::from(*j)) {
            *x = true;
        }
    }
    let mut w_it = w_row.iter().peekable();
    let mut b_it = b_row.iter().peekable();
    consensus
        .iter()
        .zip(0u16..)
        .map(|(c, j)| {
            let mut weight = ZERO;
            while let Some(&&(i, v)) = w_it.peek() {
                if i < j {
                    w_it.next();
                } else {
                    if i == j {
                        weight = v;
                    }
                    break;
                }
            }
            let mut bond = ZERO;
            while let Some(&&(i, v)) = b_it.peek() {
                if i < j {
                    b_it.next();
                } else {
                    if i == j {
                        bond = v;
                    }
                    break;
                }
            }
            if needed.get(usize::from(j)).copied().unwrap_or(false) {
                alpha_sigmoid_scaled(*c, weight, bond, alpha_low, alpha_high, scale)
            } else {
                ZERO
            }
        })
        .collect()
}

/// `set_weights` max-upscaling: the largest value becomes 65535 (subtensor's
/// `vec_u16_max_upscale_to_u16`). Rounds half away from zero.
pub fn max_upscale_to_u16(values: &[u16]) -> Vec<u16> {
    let vals: Vec<I32F32> = values.iter().map(|v| I32F32::from_num(*v)).collect();
    let Some(max) = vals.iter().copied().max() else {
        return Vec::new();
    };
    if max == ZERO {
        return vals
            .iter()
            .map(|v| v.saturating_mul(U16_MAX).saturating_to_num::<u16>())
            .collect();
    }
    if max > I32F32::from_num(32_768) {
        let factor = safe_div(U16_MAX, max);
        return vals
            .iter()
            .map(|v| {
                v.saturating_mul(factor)
                    .saturating_round()
                    .saturating_to_num::<u16>()
            })
            .collect();
    }
    vals.iter()
        .map(|v| {
            safe_div(v.saturating_mul(U16_MAX), max)
                .saturating_round()
                .saturating_to_num::<u16>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn from_u16_equals_from_num_for_every_u16() {
        for v in 0..=u16::MAX {
            assert_eq!(from_u16(v), I32F32::from_num(v), "v = {v}");
        }
    }

    #[test]
    fn u16_proportion_to_fixed_equals_safe_div_for_every_u16() {
        for x in 0..=u16::MAX {
            assert_eq!(
                u16_proportion_to_fixed(x),
                safe_div(I32F32::from_num(x), U16_MAX),
                "x = {x}"
            );
        }
    }

    proptest! {
        #[test]
        fn fast_exp_equals_the_crates_exp(bits in -(30i64 << 32)..(30i64 << 32), small in -(1i64 << 33)..(1i64 << 33)) {
            for x in [bits, small, 0, 1 << 32, -(1 << 32), 20 << 32, -(20 << 32), i64::MIN, i64::MAX] {
                let x = I32F32::from_bits(x);
                prop_assert_eq!(exp_i32f32(x), exp::<I32F32, I32F32>(x), "x = {}", x);
            }
        }

        #[test]
        fn fixed_proportion_to_u16_equals_the_crates_conversion(a in any::<i64>(), p in 0i64..=(1 << 32), q in -(1i64 << 33)..(1i64 << 50)) {
            for x in [a, p, q, 0, 1 << 32, i64::MAX, i64::MIN, -1] {
                let x = I32F32::from_bits(x);
                prop_assert_eq!(fixed_proportion_to_u16(x), x.saturating_mul(U16_MAX).saturating_to_num::<u16>(), "x = {}", x);
            }
        }

        #[test]
        fn one_over_equals_the_crates_division(a in any::<i64>(), y in (1i64 << 32)..(1i64 << 40), k in 32u32..63) {
            for b in [a, y, 1 << k, (1 << k) + 1, (1 << k) - 1, i64::MAX, 1 << 32] {
                let b = I32F32::from_bits(b);
                if let Some(q) = one_over(b) {
                    prop_assert_eq!(Some(q), ONE.checked_div(b), "1 / {}", b);
                    prop_assert_eq!(q, ONE.saturating_div(b), "1 / {}", b);
                } else {
                    prop_assert!(b < ONE);
                }
            }
        }

        #[test]
        fn sigmoid_with_hoisted_scale_equals_the_original(c in 0i64..=(1 << 32), w in 0i64..=(1 << 32), b in 0i64..=(1 << 32), lo in 0u16..=u16::MAX, hi in 0u16..=u16::MAX, steep in any::<i16>()) {
            let f = |x: i64| I32F32::from_bits(x);
            let (lo, hi) = (u16_proportion_to_fixed(lo.min(hi)), u16_proportion_to_fixed(lo.max(hi)));
            let steepness = I32F32::from_num(steep);
            let (c, w, b) = (f(c), f(w), f(b));
            // The original formula, with the crate's own exp and divisions throughout.
            let diff_buy = clamp_value(w.saturating_sub(c), ZERO, ONE);
            let diff_sell = clamp_value(b.saturating_sub(w), ZERO, ONE);
            let combined = if w >= b { diff_buy } else { diff_sell };
            let x = steepness.saturating_div(I32F32::from_num(-100)).saturating_mul(combined.saturating_sub(HALF));
            let x = x.max(I32F32::from_num(-20)).min(I32F32::from_num(20));
            let e = exp::<I32F32, I32F32>(x).unwrap_or(if x <= ZERO { ZERO } else { I32F32::max_value() });
            let sigmoid = ONE.saturating_div(ONE.saturating_add(e));
            let alpha = lo.saturating_add(sigmoid.saturating_mul(hi.saturating_sub(lo)));
            prop_assert_eq!(alpha_sigmoid(c, w, b, lo, hi, steepness), clamp_value(alpha, lo, hi));
        }

        #[test]
        fn fast_add_equals_the_crates_saturating_add(a in any::<i64>(), b in any::<i64>(), x in 0i64..(1 << 34)) {
            for (u, v) in [(a, b), (a, x), (x, b), (i64::MAX, x), (i64::MIN, -x), (i64::MAX, i64::MAX), (i64::MIN, i64::MIN), (-1, i64::MIN)] {
                let (u, v) = (I32F32::from_bits(u), I32F32::from_bits(v));
                prop_assert_eq!(add(u, v), u.saturating_add(v));
            }
        }

        #[test]
        fn fast_mul_equals_the_crates_saturating_mul(a in any::<i64>(), b in any::<i64>(), x in 0i64..(1 << 41), y in 0i64..(1 << 41), p in 0i64..(1 << 33)) {
            for (u, v) in [(a, b), (x, y), (p, x), (p, y), (a, p), (x, b), (p, p), (1 << 40, 1 << 40), ((1 << 40) - 1, (1 << 40) - 1), (-p, x)] {
                let (u, v) = (I32F32::from_bits(u), I32F32::from_bits(v));
                prop_assert_eq!(mul(u, v), u.saturating_mul(v), "{} * {}", u, v);
            }
        }

        #[test]
        fn fast_safe_div_equals_the_crates_division(a in any::<i64>(), b in any::<i64>(), small in 0i64..(1 << 32), c in 0i64..(1 << 40)) {
            for (x, y) in [(a, b), (small, b), (small, c), (small, 1), (small, 0), (a, 0)] {
                let want = I32F32::from_bits(x).checked_div(I32F32::from_bits(y)).unwrap_or(ZERO);
                prop_assert_eq!(safe_div(I32F32::from_bits(x), I32F32::from_bits(y)), want);
            }
        }
    }
}
