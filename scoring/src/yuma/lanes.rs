//! Liquid alpha with several sigmoids in flight at once: same bits as [`super::math`].
//!
//! Each `exp` is a series whose terms form one dependency chain (every term is truncated
//! before the next is made), so one evaluation cannot go faster; but the ~4000 sigmoids of a
//! row are independent, and running [`LANES`] chains side by side lets the CPU overlap their
//! multiplies. The series of a lane whose term reached 0 keeps adding 0, which is what
//! stopping early gives, so every lane gets exactly the scalar result.

use super::math::{ONE, ZERO, alpha_from_exp, exp_safe, one_over, sigmoid_exponent};
use substrate_fixed::types::I32F32;

/// Series evaluated side by side.
pub const LANES: usize = 8;

/// `exp_safe` of each element of `xs`, bit for bit, [`LANES`] at a time.
pub fn exp_safe_many(xs: &[I32F32], out: &mut Vec<I32F32>) {
    out.clear();
    out.reserve(xs.len());
    let lo = I32F32::from_num(-20);
    let hi = I32F32::from_num(20);
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        let mut x = [ZERO; LANES];
        for (slot, v) in x.iter_mut().zip(chunk) {
            *slot = (*v).max(lo).min(hi);
        }
        // |x| <= 20, so the negation cannot overflow.
        let y = x.map(|v| v.to_bits().saturating_abs());
        let series = exp_series_lanes(y);
        for ((xi, raw), s) in x.iter().zip(chunk).zip(series) {
            out.push(finish(*xi, s).unwrap_or_else(|| exp_safe(*raw)));
        }
    }
    out.extend(chunks.remainder().iter().map(|x| exp_safe(*x)));
}

/// The fast path of `math::exp_i32f32` once the series is known; `None` where the scalar
/// function takes another path (0 and 1 go to the crate; an overflow or a reciprocal that
/// `one_over` cannot take), which the caller then runs as is.
#[inline]
fn finish(x: I32F32, series: Option<i64>) -> Option<I32F32> {
    if x == ZERO || x == ONE {
        return None;
    }
    let result = I32F32::from_bits(series?);
    if x < ZERO {
        one_over(result).or_else(|| ONE.checked_div(result))
    } else {
        Some(result)
    }
}

/// `math::exp_series` for [`LANES`] arguments `0 <= y <= 20·2^32` (`exp_safe` clamps its
/// argument to ±20) at once.
///
/// In that range no step can overflow, so the scalar function's checks never fire and plain
/// unsigned arithmetic gives its bits: the k-th term is at most `20^k/k! < 2^26` (truncation
/// only lowers it), so its bits stay below 2^58, a term times `y` below 2^58 · 2^36.4, the
/// shifted product below 2^63, and every partial sum below `e^20 < 2^29` (bits below 2^61).
/// Terms are non-negative, so unsigned and signed truncating division agree. A lane whose
/// argument is outside the range is reported as `None` for the caller to run the scalar path.
#[inline]
fn exp_series_lanes(y: [i64; LANES]) -> [Option<i64>; LANES] {
    const MAX_Y: i64 = 20 << 32;
    let in_range = y.map(|v| (0..=MAX_Y).contains(&v));
    let y = y.map(|v| u64::try_from(v.clamp(0, MAX_Y)).unwrap_or(0));
    let mut result = y.map(|v| v.wrapping_add(1 << 32));
    let mut term = y;
    macro_rules! step {
        ($($i:literal)*) => {$(
            let mut live = 0u64;
            for ((t, yl), r) in term.iter_mut().zip(&y).zip(result.iter_mut()) {
                // Below 2^63 by the bound above, so the cast keeps every bit.
                let prod = ((u128::from(*t).wrapping_mul(u128::from(*yl))) >> 32) as u64;
                *t = prod.wrapping_div($i);
                *r = r.wrapping_add(*t);
                live |= *t;
            }
            if live == 0 {
                return finish_lanes(result, in_range);
            }
        )*};
    }
    step!(2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
    finish_lanes(result, in_range)
}

fn finish_lanes(result: [u64; LANES], ok: [bool; LANES]) -> [Option<i64>; LANES] {
    let mut out = [None; LANES];
    for ((o, r), k) in out.iter_mut().zip(result).zip(ok) {
        *o = if k { i64::try_from(r).ok() } else { None };
    }
    out
}

/// Reusable buffers for [`liquid_alpha_row`].
#[derive(Debug, Default)]
pub struct AlphaScratch {
    xs: Vec<I32F32>,
    exps: Vec<I32F32>,
    cols: Vec<u16>,
}

/// [`super::math::liquid_alpha_row`], with the row's exponentials computed [`LANES`] at a
/// time. Returns one alpha per column (0 where the weight row has no entry).
pub fn liquid_alpha_row(
    scratch: &mut AlphaScratch,
    w_row: &[(u16, I32F32)],
    b_row: &[(u16, I32F32)],
    consensus: &[I32F32],
    alpha_low: I32F32,
    alpha_high: I32F32,
    steepness: I32F32,
) -> Vec<I32F32> {
    let scale = steepness.saturating_div(I32F32::from_num(-100));
    let mut alphas = vec![ZERO; consensus.len()];
    // `needed` marks, then the same forward-only merge as the scalar row, collecting the
    // exponent of every needed column in column order.
    let mut needed = vec![false; consensus.len()];
    for (j, _) in w_row {
        if let Some(x) = needed.get_mut(usize::from(*j)) {
            *x = true;
        }
    }
    scratch.xs.clear();
    scratch.cols.clear();
    let mut w_it = w_row.iter().peekable();
    let mut b_it = b_row.iter().peekable();
    for (c, j) in consensus.iter().zip(0u16..) {
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
            scratch.xs.push(sigmoid_exponent(*c, weight, bond, scale));
            scratch.cols.push(j);
        }
    }
    exp_safe_many(&scratch.xs, &mut scratch.exps);
    for (j, e) in scratch.cols.iter().zip(&scratch.exps) {
        if let Some(a) = alphas.get_mut(usize::from(*j)) {
            *a = alpha_from_exp(*e, alpha_low, alpha_high);
        }
    }
    alphas
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yuma::math::{self, u16_proportion_to_fixed};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn many_exps_equal_exp_safe(
            xs in prop::collection::vec(prop_oneof![
                -(30i64 << 32)..(30i64 << 32),
                -(6i64 << 32)..(6i64 << 32),
                Just(0i64), Just(1 << 32), Just(-(1 << 32)), Just(20 << 32), Just(-(20 << 32)),
                any::<i64>(),
            ], 0..40),
        ) {
            let xs: Vec<I32F32> = xs.into_iter().map(I32F32::from_bits).collect();
            let mut got = Vec::new();
            exp_safe_many(&xs, &mut got);
            let want: Vec<I32F32> = xs.iter().map(|x| exp_safe(*x)).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn batched_row_equals_the_scalar_row(
            w in prop::collection::vec((0u16..12, 0i64..=(1 << 32)), 0..14),
            b in prop::collection::vec((0u16..12, 0i64..=(1 << 32)), 0..14),
            c in prop::collection::vec(prop_oneof![Just(0i64), 0i64..=(1 << 32)], 0..12),
            lo in any::<u16>(), hi in any::<u16>(), steep in prop_oneof![Just(1000i16), any::<i16>()],
            sorted in any::<bool>(),
        ) {
            let f = |v: Vec<(u16, i64)>| -> Vec<(u16, I32F32)> {
                let mut r: Vec<(u16, I32F32)> = v.into_iter().map(|(j, x)| (j, I32F32::from_bits(x))).collect();
                if sorted {
                    r.sort_by_key(|(j, _)| *j);
                }
                r
            };
            let (w, b) = (f(w), f(b));
            let c: Vec<I32F32> = c.into_iter().map(I32F32::from_bits).collect();
            let (lo, hi) = (u16_proportion_to_fixed(lo.min(hi)), u16_proportion_to_fixed(lo.max(hi)));
            let steep = I32F32::from_num(steep);
            let mut scratch = AlphaScratch::default();
            prop_assert_eq!(
                liquid_alpha_row(&mut scratch, &w, &b, &c, lo, hi, steep),
                math::liquid_alpha_row(&w, &b, &c, lo, hi, steep)
            );
        }
    }
}
