//! Latency and throughput scores relative to the other miners in a round, and the
//! conversion of averaged scores into the u16 weight vector a validator publishes.
//!
//! Everything is relative to the round so the numbers are scale-free: a CPU-only subnet and
//! a GPU subnet give the same weights for the same ranking. A failed query has no
//! measurement (`None`) and scores 0.

/// Throughput of one verified query, or `None` when the query failed. Non-finite and
/// non-positive measurements are treated as failures.
fn usable(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v > 0.0)
}

/// Scores in [0, 1]: each miner's throughput divided by the best throughput of the round.
///
/// Failed queries (`None`, NaN, ±∞, ≤ 0) score 0. When no query succeeded every score is 0.
pub fn relative_throughput(throughputs: &[Option<f64>]) -> Vec<f64> {
    let best = throughputs
        .iter()
        .filter_map(|x| usable(*x))
        .fold(0.0f64, f64::max);
    throughputs
        .iter()
        .map(|x| match usable(*x) {
            Some(v) if best > 0.0 => (v / best).clamp(0.0, 1.0),
            _ => 0.0,
        })
        .collect()
}

/// Scores in [0, 1] for latencies (lower is better): the best latency of the round divided
/// by each miner's latency. Failures (`None`, non-finite, ≤ 0) score 0.
pub fn relative_latency(latencies: &[Option<f64>]) -> Vec<f64> {
    let best = latencies
        .iter()
        .filter_map(|x| usable(*x))
        .fold(f64::INFINITY, f64::min);
    latencies
        .iter()
        .map(|x| match usable(*x) {
            Some(v) if best.is_finite() => (best / v).clamp(0.0, 1.0),
            _ => 0.0,
        })
        .collect()
}

/// Scores in [0, 1] relative to the round's median with a bounded bonus: a measurement
/// `cap`× better than the median (or more) scores 1, the median scores `1/cap`, and a miner
/// k× worse than the median scores `1/(k·cap)`. `lower_is_better` flips the ratio (latencies).
///
/// Anchoring on the median rather than the best keeps one very fast (or lying-fast) outlier
/// from crushing everyone else's score, and the cap bounds what the fastest can take.
/// Failures (`None`, non-finite, ≤ 0) score 0; a `cap` below 1 or non-finite counts as 1.
pub fn median_relative(values: &[Option<f64>], lower_is_better: bool, cap: f64) -> Vec<f64> {
    let cap = if cap.is_finite() && cap >= 1.0 {
        cap
    } else {
        1.0
    };
    let ok: Vec<f64> = values.iter().filter_map(|x| usable(*x)).collect();
    let Some(mid) = median(&ok) else {
        return vec![0.0; values.len()];
    };
    values
        .iter()
        .map(|x| match usable(*x) {
            Some(v) => {
                let ratio = if lower_is_better { mid / v } else { v / mid };
                (ratio / cap).clamp(0.0, 1.0)
            }
            None => 0.0,
        })
        .collect()
}

/// The LLM task's round scores in [0, 1]: `ttft_weight` × the median-relative time to first
/// token plus the rest × the median-relative decode rate (tokens/s), both with the bonus
/// bounded by `cap` (see [`median_relative`]). A query missing either measurement scores 0.
pub fn llm_speed(
    ttft_s: &[Option<f64>],
    tokens_per_s: &[Option<f64>],
    ttft_weight: f64,
    cap: f64,
) -> Vec<f64> {
    let w = if ttft_weight.is_finite() {
        ttft_weight.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let n = ttft_s.len().max(tokens_per_s.len());
    let both: Vec<bool> = (0..n)
        .map(|i| {
            usable(ttft_s.get(i).copied().flatten()).is_some()
                && usable(tokens_per_s.get(i).copied().flatten()).is_some()
        })
        .collect();
    let pick = |v: &[Option<f64>]| -> Vec<Option<f64>> {
        (0..n)
            .map(|i| {
                if both.get(i).copied().unwrap_or(false) {
                    v.get(i).copied().flatten()
                } else {
                    None
                }
            })
            .collect()
    };
    let t = median_relative(&pick(ttft_s), true, cap);
    let r = median_relative(&pick(tokens_per_s), false, cap);
    t.iter()
        .zip(&r)
        .map(|(a, b)| (w * a + (1.0 - w) * b).clamp(0.0, 1.0))
        .collect()
}

/// Weighted mean of per-task score vectors: `Σ wₜ·sₜ[i] / Σ wₜ` over tasks with a finite,
/// positive weight. Result has length `n`; missing entries of a shorter vector count as 0.
/// With no usable weight every score is 0.
pub fn mix(parts: &[(f64, Vec<f64>)], n: usize) -> Vec<f64> {
    let total: f64 = parts
        .iter()
        .map(|(w, _)| *w)
        .filter(|w| w.is_finite() && *w > 0.0)
        .sum();
    let mut out = vec![0.0; n];
    if total <= 0.0 || !total.is_finite() {
        return out;
    }
    for (w, scores) in parts {
        if !(w.is_finite() && *w > 0.0) {
            continue;
        }
        for (o, s) in out.iter_mut().zip(scores.iter()) {
            let s = if s.is_nan() { 0.0 } else { s.clamp(0.0, 1.0) };
            *o += w / total * s;
        }
    }
    for o in &mut out {
        *o = o.clamp(0.0, 1.0);
    }
    out
}

/// Converts non-negative scores into u16 weights the way Bittensor's SDK emits them
/// (`convert_weights_and_uids_for_emit`): the largest becomes 65535 and the others are scaled
/// by the same factor, rounded to nearest. NaN, negative and infinite values become 0 (an
/// infinite score would otherwise hide every other miner). All zeros stay all zeros.
pub fn max_upscale_u16(scores: &[f64]) -> Vec<u16> {
    let clean: Vec<f64> = scores
        .iter()
        .map(|s| if s.is_finite() && *s > 0.0 { *s } else { 0.0 })
        .collect();
    let max = clean.iter().copied().fold(0.0f64, f64::max);
    clean
        .iter()
        .map(|s| {
            if max > 0.0 {
                let scaled = (s / max * 65_535.0).round().clamp(0.0, 65_535.0);
                // In range by the clamp above, so the cast neither wraps nor saturates.
                scaled as u16
            } else {
                0
            }
        })
        .collect()
}

/// Shares summing to 1 (within rounding) from non-negative scores; non-finite and negative
/// values count as 0. All zeros stay all zeros.
pub fn normalize(scores: &[f64]) -> Vec<f64> {
    let clean: Vec<f64> = scores
        .iter()
        .map(|s| if s.is_finite() && *s > 0.0 { *s } else { 0.0 })
        .collect();
    let sum: f64 = clean.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        clean.iter().map(|s| s / sum).collect()
    } else {
        vec![0.0; clean.len()]
    }
}

/// Median of the finite values (mean of the middle two for an even count); `None` when
/// there is none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let len = v.len();
    let mid = len.checked_div(2)?;
    let upper = *v.get(mid)?;
    if len % 2 == 1 {
        Some(upper)
    } else {
        let lower = *v.get(mid.checked_sub(1)?)?;
        Some(lower / 2.0 + upper / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn best_miner_scores_one_and_failures_zero() {
        let s = relative_throughput(&[Some(50.0), None, Some(100.0), Some(f64::NAN), Some(-1.0)]);
        assert_eq!(s, vec![0.5, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn all_failed_round_scores_zero() {
        assert_eq!(relative_throughput(&[None, None]), vec![0.0, 0.0]);
        assert_eq!(relative_latency(&[None]), vec![0.0]);
        assert!(relative_throughput(&[]).is_empty());
    }

    #[test]
    fn fastest_latency_scores_one() {
        assert_eq!(
            relative_latency(&[Some(2.0), Some(1.0), None]),
            vec![0.5, 1.0, 0.0]
        );
    }

    #[test]
    fn mix_weights_tasks_and_ignores_bad_weights() {
        let m = mix(
            &[
                (3.0, vec![1.0, 0.0]),
                (1.0, vec![0.0, 1.0]),
                (f64::NAN, vec![1.0, 1.0]),
                (-1.0, vec![1.0, 1.0]),
            ],
            2,
        );
        assert_eq!(m, vec![0.75, 0.25]);
        assert_eq!(mix(&[(0.0, vec![1.0])], 1), vec![0.0]);
        assert_eq!(mix(&[(1.0, vec![1.0])], 3), vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn upscale_matches_bittensor_convention() {
        assert_eq!(max_upscale_u16(&[0.5, 0.25, 0.0]), vec![65_535, 32_768, 0]);
        assert_eq!(max_upscale_u16(&[0.0, 0.0]), vec![0, 0]);
        assert_eq!(
            max_upscale_u16(&[f64::INFINITY, 1.0, f64::NAN]),
            vec![0, 65_535, 0]
        );
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_relative_bounds_the_fastest_and_anchors_on_the_median() {
        let s = median_relative(
            &[Some(1.0), Some(2.0), Some(4.0), Some(100.0), None],
            false,
            2.0,
        );
        // Median of (1, 2, 4, 100) is 3.
        assert!((s[0] - 1.0 / 6.0).abs() < 1e-12);
        assert!((s[1] - 2.0 / 6.0).abs() < 1e-12);
        assert!((s[2] - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(s[3], 1.0, "33× the median earns no more than 2×");
        assert_eq!(s[4], 0.0);
        let l = median_relative(&[Some(0.1), Some(0.2), Some(0.4)], true, 2.0);
        assert_eq!(l, vec![1.0, 0.5, 0.25]);
    }

    #[test]
    fn llm_speed_mixes_ttft_and_rate_and_zeroes_incomplete_measurements() {
        let s = llm_speed(
            &[Some(0.1), Some(0.2), Some(0.1), None],
            &[Some(100.0), Some(100.0), Some(f64::NAN), Some(500.0)],
            0.5,
            2.0,
        );
        // Usable: miners 0 and 1. ttft median 0.15, rate median 100.
        assert!((s[0] - (0.5 * 0.75 + 0.5 * 0.5)).abs() < 1e-12);
        assert!((s[1] - (0.5 * 0.375 + 0.5 * 0.5)).abs() < 1e-12);
        assert_eq!(s[2], 0.0);
        assert_eq!(s[3], 0.0);
        assert!(llm_speed(&[], &[], 0.5, 2.0).is_empty());
    }

    proptest! {
        #[test]
        fn llm_speed_in_unit_interval_and_scale_free(xs in proptest::collection::vec((1e-3f64..1e3, 1e-3f64..1e4), 1..20), k in 1e-2f64..1e2, w in 0.0f64..1.0, cap in 1.0f64..8.0) {
            let t: Vec<Option<f64>> = xs.iter().map(|x| Some(x.0)).collect();
            let r: Vec<Option<f64>> = xs.iter().map(|x| Some(x.1)).collect();
            let s = llm_speed(&t, &r, w, cap);
            prop_assert!(s.iter().all(|v| (0.0..=1.0).contains(v)));
            let ts: Vec<Option<f64>> = t.iter().map(|x| x.map(|v| v * k)).collect();
            let rs: Vec<Option<f64>> = r.iter().map(|x| x.map(|v| v * k)).collect();
            let s2 = llm_speed(&ts, &rs, w, cap);
            for (a, b) in s.iter().zip(&s2) {
                prop_assert!((a - b).abs() < 1e-9);
            }
        }

        #[test]
        fn faster_rate_never_scores_lower(xs in proptest::collection::vec(1e-3f64..1e4, 2..20), cap in 1.0f64..8.0) {
            let v: Vec<Option<f64>> = xs.iter().copied().map(Some).collect();
            let s = median_relative(&v, false, cap);
            for i in 0..xs.len() {
                for j in 0..xs.len() {
                    if xs[i] > xs[j] {
                        prop_assert!(s[i] >= s[j]);
                    }
                }
            }
        }

        #[test]
        fn relative_scores_in_unit_interval_with_a_one(xs in proptest::collection::vec(proptest::option::of(any::<f64>()), 0..40)) {
            let s = relative_throughput(&xs);
            prop_assert_eq!(s.len(), xs.len());
            prop_assert!(s.iter().all(|v| (0.0..=1.0).contains(v)));
            let any_ok = xs.iter().any(|x| matches!(x, Some(v) if v.is_finite() && *v > 0.0));
            prop_assert_eq!(any_ok, s.contains(&1.0));
        }

        #[test]
        fn relative_scores_are_scale_free(xs in proptest::collection::vec(1e-3f64..1e12, 1..20), k in 1e-3f64..1e3) {
            let a = relative_throughput(&xs.iter().map(|x| Some(*x)).collect::<Vec<_>>());
            let b = relative_throughput(&xs.iter().map(|x| Some(x * k)).collect::<Vec<_>>());
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() < 1e-9);
            }
        }

        #[test]
        fn upscale_keeps_order_and_max(xs in proptest::collection::vec(0.0f64..1.0, 1..30)) {
            let w = max_upscale_u16(&xs);
            if xs.iter().any(|x| *x > 0.0) {
                prop_assert_eq!(w.iter().copied().max(), Some(65_535));
            }
            for (i, j) in (0..xs.len()).flat_map(|i| (0..xs.len()).map(move |j| (i, j))) {
                if xs[i] <= xs[j] {
                    prop_assert!(w[i] <= w[j]);
                }
            }
        }

        #[test]
        fn normalize_sums_to_one_or_zero(xs in proptest::collection::vec(any::<f64>(), 0..30)) {
            let n = normalize(&xs);
            let sum: f64 = n.iter().sum();
            prop_assert!(sum == 0.0 || (sum - 1.0).abs() < 1e-9, "sum {sum}");
            prop_assert!(n.iter().all(|v| (0.0..=1.0).contains(v)));
        }

        #[test]
        fn mix_stays_in_unit_interval(a in proptest::collection::vec(any::<f64>(), 0..10), b in proptest::collection::vec(any::<f64>(), 0..10), w1 in any::<f64>(), w2 in any::<f64>()) {
            let m = mix(&[(w1, a), (w2, b)], 8);
            prop_assert_eq!(m.len(), 8);
            prop_assert!(m.iter().all(|v| (0.0..=1.0).contains(v)));
        }

        #[test]
        fn median_lies_within_range(xs in proptest::collection::vec(-1e9f64..1e9, 1..50)) {
            let m = median(&xs).unwrap();
            let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(m >= lo && m <= hi);
        }
    }
}
