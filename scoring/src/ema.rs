//! Exponential moving averages of per-miner scores (owned by the validator's author).
//!
//! Scores entering the average are round-relative and lie in [0, 1] (see
//! [`crate::speed`]), so the average is scale-free: a miner's EMA says how close it usually
//! comes to the best miner of a round, and a failed query (score 0) pulls it toward 0.
//! Non-finite inputs never propagate: a NaN or infinite sample counts as a failure (0).

use std::collections::BTreeMap;

/// Clamps a smoothing factor into [0, 1]; NaN becomes 0 (no update), so a broken
/// configuration freezes scores rather than corrupting them.
pub fn sanitize_alpha(alpha: f64) -> f64 {
    if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    }
}

/// Clamps a score into [0, 1]; NaN and negative values become 0, +∞ becomes 1.
pub fn sanitize_score(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// One EMA step: `(1 − α)·prev + α·sample`, with all inputs sanitised into [0, 1].
///
/// The result lies between the (sanitised) previous value and sample, so it stays in [0, 1].
pub fn update(prev: f64, sample: f64, alpha: f64) -> f64 {
    let a = sanitize_alpha(alpha);
    let p = sanitize_score(prev);
    let s = sanitize_score(sample);
    // (1 − a)·p + a·s is exact at a = 0 and a = 1; the clamp removes the last-ulp rounding
    // that could otherwise step just outside [min(p, s), max(p, s)].
    ((1.0 - a) * p + a * s).clamp(p.min(s), p.max(s))
}

/// Applies one round's samples to a table of averages keyed by miner.
///
/// Keys in `samples` but not in `table` start from 0 (a new miner earns its score); keys in
/// `table` but not in `samples` are removed when `drop_missing` is set (a miner that left the
/// metagraph) and left unchanged otherwise.
pub fn update_table<K: Ord + Clone>(
    table: &mut BTreeMap<K, f64>,
    samples: &BTreeMap<K, f64>,
    alpha: f64,
    drop_missing: bool,
) {
    if drop_missing {
        table.retain(|k, _| samples.contains_key(k));
    }
    for (k, s) in samples {
        let prev = table.get(k).copied().unwrap_or(0.0);
        table.insert(k.clone(), update(prev, *s, alpha));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alpha_one_replaces_and_alpha_zero_keeps() {
        assert_eq!(update(0.3, 0.9, 1.0), 0.9);
        assert_eq!(update(0.3, 0.9, 0.0), 0.3);
    }

    #[test]
    fn non_finite_inputs_are_sanitised() {
        assert_eq!(
            update(0.5, f64::NAN, 1.0),
            0.0,
            "NaN sample counts as failure"
        );
        assert_eq!(
            update(f64::NAN, 1.0, 0.5),
            0.5,
            "NaN previous value restarts at 0"
        );
        assert_eq!(update(0.5, f64::INFINITY, 1.0), 1.0);
        assert_eq!(
            update(0.5, 1.0, f64::NAN),
            0.5,
            "NaN alpha freezes the average"
        );
        assert_eq!(update(0.5, -3.0, 1.0), 0.0);
    }

    #[test]
    fn table_starts_new_keys_at_zero_and_drops_missing() {
        let mut t = BTreeMap::from([("a", 0.5), ("gone", 0.9)]);
        let s = BTreeMap::from([("a", 1.0), ("new", 1.0)]);
        update_table(&mut t, &s, 0.5, true);
        assert_eq!(t.get("a"), Some(&0.75));
        assert_eq!(t.get("new"), Some(&0.5));
        assert!(!t.contains_key("gone"));
        let mut kept = BTreeMap::from([("gone", 0.9)]);
        update_table(&mut kept, &s, 0.5, false);
        assert_eq!(kept.get("gone"), Some(&0.9));
    }

    proptest! {
        #[test]
        fn result_lies_between_prev_and_sample(p in 0.0f64..=1.0, s in 0.0f64..=1.0, a in 0.0f64..=1.0) {
            let r = update(p, s, a);
            prop_assert!(r >= p.min(s) - 1e-12 && r <= p.max(s) + 1e-12, "{r} outside [{p},{s}]");
        }

        #[test]
        fn any_input_stays_in_unit_interval(p in any::<f64>(), s in any::<f64>(), a in any::<f64>()) {
            let r = update(p, s, a);
            prop_assert!(r.is_finite() && (0.0..=1.0).contains(&r));
        }

        #[test]
        fn failure_never_raises_the_average(p in 0.0f64..=1.0, a in 0.0f64..=1.0) {
            prop_assert!(update(p, 0.0, a) <= p);
        }

        #[test]
        fn constant_samples_converge(s in 0.0f64..=1.0, a in 0.05f64..=1.0) {
            let mut x = 0.0;
            for _ in 0..2_000 {
                x = update(x, s, a);
            }
            prop_assert!((x - s).abs() < 1e-9, "{x} did not converge to {s}");
        }

        #[test]
        fn monotone_in_the_sample(p in 0.0f64..=1.0, s1 in 0.0f64..=1.0, s2 in 0.0f64..=1.0, a in 0.0f64..=1.0) {
            let (lo, hi) = if s1 <= s2 { (s1, s2) } else { (s2, s1) };
            prop_assert!(update(p, lo, a) <= update(p, hi, a));
        }
    }
}
