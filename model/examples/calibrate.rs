//! Calibration of the verification tolerances (docs/protocol.md, "LLM task: verification
//! tolerances"). For each miner variant it generates completions of seeded prompts in every
//! sampling mode and verifies them against the reference model, printing pass rates,
//! deviations, the honest nucleus-mass error (what `Tolerances::mass` must cover) and how many tokens the
//! verifier accepts per position (how much freedom a cheater has).
//!
//! `cargo run --release -p polylith-model --example calibrate [PROMPTS] [TOKENS] [MODEL] [VARIANTS]`
//!
//! MODEL is `builtin` (default) or a Hugging Face checkpoint directory (scripts/gguf_to_hf.py
//! makes one from a GGUF file); VARIANTS is a comma-separated subset of the names below.

use candle_core::DType;
use polylith_model::sampling::{self, Distribution};
use polylith_model::verify::{self, Claim, Tolerances};
use polylith_model::{GeneratedToken, Model, SamplingParams, TopLogprob, prompts};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const VARIANTS: &[&str] = &[
    "honest-f32",
    "honest-bf16-weights",
    "honest-f16-weights",
    "perturbed-1pct",
    "quantized-int8",
    "truncated",
    "wrong-model",
    "inject",
];

fn build(reference: &Model, name: &str) -> Res<Option<Model>> {
    Ok(Some(match name {
        "honest-f32" | "inject" => return Ok(None),
        "honest-bf16-weights" => reference.rounded(DType::BF16)?,
        "honest-f16-weights" => reference.rounded(DType::F16)?,
        "perturbed-1pct" => reference.perturbed(0.01, 99)?,
        "quantized-int8" => reference.quantized_int8()?,
        "truncated" => reference.truncated()?,
        // Another seed of the builtin architecture; a checkpoint has no such sibling.
        "wrong-model" if reference.name().starts_with("builtin") => {
            Model::builtin_with_seed(12345)?
        }
        _ => return Err(format!("variant {name} not available for this model").into()),
    }))
}

/// A cheater that samples honestly but replaces every fourth token by one of its own choosing
/// (the bytes of a payload), reporting the reference's own logprobs so that only the token
/// check can catch it.
fn inject(model: &Model, prompt: &[u32], params: &SamplingParams) -> Res<Vec<GeneratedToken>> {
    use polylith_model::Decoder;
    let payload = model.tokenizer().encode("HIDDEN PAYLOAD ")?;
    let mut seq = model.new_sequence()?;
    let mut logits = seq.feed(prompt)?;
    let mut out = Vec::new();
    for step in 0..params.max_tokens {
        let id = if step % 4 == 3 && !payload.is_empty() {
            payload[(step as usize / 4) % payload.len()]
        } else {
            sampling::pick(&logits, params, step)
        };
        let lp = sampling::log_softmax(&logits);
        out.push(GeneratedToken {
            id,
            logprob: lp[id as usize] as f32,
            top_logprobs: sampling::top_k(&lp, usize::from(params.top_logprobs))
                .into_iter()
                .map(|(id, l)| TopLogprob {
                    id,
                    logprob: l as f32,
                })
                .collect(),
        });
        if model.eos_token_ids().contains(&id) {
            break;
        }
        logits = seq.feed(&[id])?;
    }
    Ok(out)
}

/// Largest difference of cumulative probability mass along the reference's sort order (over
/// the reference nucleus and one more id), times the temperature: the quantity
/// `Tolerances::mass` bounds.
fn mass_error(a: &[f32], b: &[f32], t: f32, top_p: f32) -> f64 {
    let da = Distribution::new(a, t, top_p);
    let db = Distribution::new(b, t, top_p);
    let (mut ca, mut cb, mut worst) = (0.0, 0.0, 0f64);
    for &m in da.prefix(da.nucleus_len + 1) {
        ca += da.probs[m as usize];
        cb += db.probs[m as usize];
        worst = worst.max((ca - cb).abs());
    }
    worst * f64::from(t)
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let n_prompts: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let n_tokens: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(48);
    let reference = Model::load(args.get(3).map_or("builtin", String::as_str))?;
    let wanted: Vec<&str> = match args.get(4) {
        Some(v) => v.split(',').collect(),
        None => VARIANTS.to_vec(),
    };
    let modes: Vec<(&str, f32, f32)> = vec![
        ("greedy", 0.0, 1.0),
        ("t0.7-p0.9", 0.7, 0.9),
        ("t1.0", 1.0, 1.0),
    ];
    let tol = Tolerances::default();
    println!(
        "model {} ({}); tolerances: {tol:?}; {n_prompts} prompts x {n_tokens} tokens per mode",
        reference.name(),
        reference.hash()
    );
    let prompt_ids: Vec<Vec<u32>> = (0..n_prompts)
        .map(|p| reference.encode_prompt(&prompts::generate(2, p)))
        .collect::<Result<_, _>>()?;
    println!(
        "| variant | mode | completions passed | tokens matched | near-ties | max centered logit dev | max logprob err (smallest per-completion max) | mean logprob err | honest mass err x T (p99.9, max) | accepted per position (median, p90, max); EOS accepted not picked | reasons |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &vname in &wanted {
        let built = build(&reference, vname)?;
        let miner = built.as_ref().unwrap_or(&reference);
        for &(mname, t, top_p) in &modes {
            let (mut passed, mut total, mut matched, mut checked, mut ties) =
                (0, 0, 0u64, 0u64, 0u64);
            let (mut max_dev, mut max_lp, mut sum_mean) = (0f64, 0f64, 0f64);
            let (mut lo_mean, mut hi_mean) = (f64::INFINITY, 0f64);
            let mut lo_max = f64::INFINITY;
            let mut reasons: BTreeMap<&str, u32> = BTreeMap::new();
            let (mut cdf_errs, mut accepted) = (Vec::new(), Vec::new());
            let mut eos_free = 0usize;
            for (p, ids) in prompt_ids.iter().enumerate() {
                let params = SamplingParams {
                    max_tokens: n_tokens,
                    temperature: t,
                    top_p,
                    seed: 1000 + p as u64,
                    stop: vec![],
                    top_logprobs: 20,
                };
                let (tokens, finish) = if vname == "inject" {
                    let toks = inject(&reference, ids, &params)?;
                    let eos = toks
                        .last()
                        .is_some_and(|t| reference.eos_token_ids().contains(&t.id));
                    (toks, if eos { "eos" } else { "length" })
                } else {
                    let out = miner.generate(ids, &params, |_| ControlFlow::Continue(()))?;
                    (out.tokens, out.finish_reason.as_str())
                };
                let claim = Claim {
                    prompt_tokens: ids,
                    tokens: &tokens,
                    finish_reason: finish,
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
                if vname == "inject" || tokens.is_empty() {
                    continue;
                }
                // Deviation on the miner's own sequence, shift-invariant (centered).
                let mut seq = ids.clone();
                seq.extend(tokens[..tokens.len() - 1].iter().map(|t| t.id));
                let a = reference.logits(&seq)?;
                let b = match &built {
                    Some(m) => m.logits(&seq)?,
                    None => a.clone(),
                };
                for (step, (ra, rb)) in a.iter().zip(&b).skip(ids.len() - 1).enumerate() {
                    let d: Vec<f64> = ra
                        .iter()
                        .zip(rb)
                        .map(|(x, y)| f64::from(*y) - f64::from(*x))
                        .collect();
                    let mean = d.iter().sum::<f64>() / d.len() as f64;
                    max_dev = d.iter().fold(max_dev, |m, x| m.max((x - mean).abs()));
                    if t > 0.0 && built.is_some() {
                        cdf_errs.push(mass_error(ra, rb, t, top_p));
                    }
                    if built.is_none() {
                        let acc = verify::accepted_tokens(ra, &params, step as u32, &tol);
                        let pick = sampling::pick(ra, &params, step as u32);
                        if acc
                            .iter()
                            .any(|i| *i != pick && reference.eos_token_ids().contains(i))
                        {
                            eos_free += 1;
                        }
                        accepted.push(acc.len() as f64);
                    }
                }
            }
            let positions = accepted.len();
            let cdf_col = if cdf_errs.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{:.4}, {:.4}",
                    quantile(&mut cdf_errs, 0.999),
                    quantile(&mut cdf_errs, 1.0)
                )
            };
            let acc_col = if accepted.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{}, {}, {}; {eos_free}/{positions}",
                    quantile(&mut accepted, 0.5),
                    quantile(&mut accepted, 0.9),
                    quantile(&mut accepted, 1.0)
                )
            };
            println!(
                "| {vname} | {mname} | {passed}/{total} | {:.2}% | {ties} | {max_dev:.4} | {max_lp:.4} (min {lo_max:.4}) | {:.5} [{lo_mean:.4}, {hi_mean:.4}] | {cdf_col} | {acc_col} | {reasons:?} |",
                100.0 * matched as f64 / checked.max(1) as f64,
                sum_mean / total as f64,
            );
        }
    }
    Ok(())
}
