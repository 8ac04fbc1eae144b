//! Calibration of the verification tolerances (docs/protocol.md, "LLM task: verification
//! tolerances"). For each miner variant it generates completions of seeded prompts and verifies
//! them against the reference builtin model, printing pass rates and deviations.
//!
//! `cargo run --release -p polylith-model --example calibrate [PROMPTS] [TOKENS]`

use candle_core::DType;
use polylith_model::verify::{self, Claim, Tolerances};
use polylith_model::{Model, SamplingParams, prompts};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n_prompts: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let n_tokens: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(48);
    let reference = Model::builtin()?;
    let variants: Vec<(&str, Model)> = vec![
        ("honest-f32", Model::builtin()?),
        ("honest-bf16-weights", reference.rounded(DType::BF16)?),
        ("honest-f16-weights", reference.rounded(DType::F16)?),
        ("perturbed-1pct", reference.perturbed(0.01, 99)?),
        ("quantized-int8", reference.quantized_int8()?),
        ("truncated", reference.truncated()?),
        ("wrong-model", Model::builtin_with_seed(12345)?),
    ];
    let modes: Vec<(&str, f32, f32)> = vec![
        ("greedy", 0.0, 1.0),
        ("t0.7-p0.9", 0.7, 0.9),
        ("t1.0", 1.0, 1.0),
    ];
    let tol = Tolerances::default();
    println!("tolerances: {tol:?}; {n_prompts} prompts x {n_tokens} tokens per mode");
    // Reference statistics: how often are the top-2 logits close?
    let mut gaps = Vec::new();
    for p in 0..n_prompts {
        let ids = reference.encode_prompt(&prompts::generate(1, p))?;
        let out = reference.generate(&ids, &SamplingParams::greedy(n_tokens), |_| {
            ControlFlow::Continue(())
        })?;
        let mut seq = ids.clone();
        seq.extend(out.ids());
        for row in reference.logits(&seq)?.iter().skip(ids.len() - 1) {
            let mut s = row.clone();
            s.sort_by(|a, b| b.total_cmp(a));
            gaps.push(f64::from(s[0] - s[1]));
        }
    }
    if gaps.is_empty() {
        return Err("no prompts".into());
    }
    gaps.sort_by(|a, b| a.total_cmp(b));
    let frac = |t: f64| gaps.iter().filter(|&&g| g <= t).count() as f64 / gaps.len() as f64;
    println!(
        "reference top1-top2 logit gap: median {:.3}, p1 {:.4}; share <= 0.01: {:.4}, <= 0.05: {:.4}, <= 0.1: {:.4}",
        gaps[gaps.len() / 2],
        gaps[gaps.len() / 100],
        frac(0.01),
        frac(0.05),
        frac(0.1)
    );
    println!(
        "| variant | mode | completions passed | tokens matched | near-ties | max centered logit dev | max logprob err (smallest per-completion max) | mean logprob err | reasons |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (vname, miner) in &variants {
        for &(mname, t, top_p) in &modes {
            let (mut passed, mut total, mut matched, mut checked, mut ties) =
                (0, 0, 0u64, 0u64, 0u64);
            let (mut max_dev, mut max_lp, mut sum_mean) = (0f64, 0f64, 0f64);
            let (mut lo_mean, mut hi_mean) = (f64::INFINITY, 0f64);
            let mut lo_max = f64::INFINITY;
            let mut reasons: BTreeMap<&str, u32> = BTreeMap::new();
            for p in 0..n_prompts {
                let params = SamplingParams {
                    max_tokens: n_tokens,
                    temperature: t,
                    top_p,
                    seed: 1000 + p,
                    stop: vec![],
                    top_logprobs: 20,
                };
                let ids = reference.encode_prompt(&prompts::generate(2, p))?;
                let out = miner.generate(&ids, &params, |_| ControlFlow::Continue(()))?;
                let claim = Claim {
                    prompt_tokens: &ids,
                    tokens: &out.tokens,
                    finish_reason: out.finish_reason.as_str(),
                    model_hash: None,
                };
                let r = verify::verify(&reference, &claim, &params, &tol)?;
                total += 1;
                if r.passed {
                    passed += 1;
                } else if let Some(reason) = r.reason {
                    *reasons.entry(reason.as_str()).or_default() += 1;
                }
                matched += u64::from(r.tokens_matched);
                checked += u64::from(r.tokens_checked);
                ties += u64::from(r.near_ties);
                max_lp = max_lp.max(r.max_logprob_error);
                sum_mean += r.mean_logprob_error;
                lo_mean = lo_mean.min(r.mean_logprob_error);
                lo_max = lo_max.min(r.max_logprob_error);
                hi_mean = hi_mean.max(r.mean_logprob_error);
                // Logit deviation on the miner's own sequence, shift-invariant (centered).
                let mut seq = ids.clone();
                seq.extend(out.ids());
                let a = reference.logits(&seq)?;
                let b = miner.logits(&seq)?;
                for (ra, rb) in a.iter().zip(&b).skip(ids.len() - 1) {
                    let d: Vec<f64> = ra
                        .iter()
                        .zip(rb)
                        .map(|(x, y)| f64::from(*y) - f64::from(*x))
                        .collect();
                    let mean = d.iter().sum::<f64>() / d.len() as f64;
                    max_dev = d.iter().fold(max_dev, |m, x| m.max((x - mean).abs()));
                }
            }
            println!(
                "| {vname} | {mname} | {passed}/{total} | {:.2}% | {ties} | {max_dev:.4} | {max_lp:.4} (min {lo_max:.4}) | {:.5} [{lo_mean:.4}, {hi_mean:.4}] | {reasons:?} |",
                100.0 * matched as f64 / checked.max(1) as f64,
                sum_mean / total as f64,
            );
        }
    }
    Ok(())
}
