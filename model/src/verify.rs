//! Verification of a miner's completion by one teacher-forced forward pass (validator side).
//!
//! The validator runs prompt + completion through its reference model once and, at every
//! completion position, re-applies the sampling rule of [`crate::sampling`] to its own logits.
//! A token passes if it is the rule's pick or a *near-tie*: another honest backend could have
//! picked it, because its logit (greedy) or its seeded Gumbel score (sampling) is within the
//! honest logit error of the best one (see [`Tolerances`]). Its reported log-probability must be close to the validator's. Structural rules (max_tokens, EOS, stop strings, finish_reason) are checked
//! exactly. Tolerances are calibrated in docs/protocol.md, "LLM task: verification tolerances".

use crate::error::Result;
use crate::generate::{FinishReason, GeneratedToken, find_stop};
use crate::model::Model;
use crate::sampling::{self, Distribution, SamplingParams};
use crate::weights::ModelId;
use serde::{Deserialize, Serialize};

/// How far an honest backend may deviate from the reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerances {
    /// Largest per-logit deviation δ of an honest backend. Greedy: a token whose logit is within
    /// δ of the maximum is a near-tie. Sampling: a nucleus member whose score (logit + T·Gumbel
    /// noise, [`crate::sampling`]) is within δ of the best score is a near-tie, and two
    /// members whose logits are within δ may swap places at the nucleus edge.
    pub logit: f64,
    /// Largest shift of the nucleus's cumulative probability mass an honest backend causes at
    /// temperature 1 (measured bf16 vs f32; at temperature T it is `mass / T`, because logit
    /// errors are divided by T before the softmax). It only decides when membership at the
    /// `top_p` edge is ambiguous; which token is sampled is judged with `logit`.
    #[serde(default = "default_mass")]
    pub mass: f64,
    /// Largest accepted |reported − reference| log-probability of any single token or alternative.
    pub logprob_abs: f64,
    /// Largest accepted mean |reported − reference| log-probability over every reported value
    /// (tokens and alternatives) of a completion of at least [`Tolerances::mean_min_tokens`]
    /// tokens (catches small systematic deviations; ask for `top_logprobs` ≥ 3 to sharpen it).
    pub logprob_mean: f64,
    /// Completions shorter than this skip the mean test.
    pub mean_min_tokens: u32,
}

fn default_mass() -> f64 {
    Tolerances::default().mass
}

impl Default for Tolerances {
    fn default() -> Self {
        // Calibrated: docs/protocol.md, "LLM task: verification tolerances".
        Tolerances {
            logit: 0.3,
            mass: MASS_DEFAULT,
            logprob_abs: 0.25,
            logprob_mean: 0.12,
            mean_min_tokens: 8,
        }
    }
}

/// Default [`Tolerances::mass`] (docs/protocol.md, section 8).
const MASS_DEFAULT: f64 = 0.05;

/// Why a completion failed (stable snake_case strings for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// Unparseable or inconsistent response (bad ids, NaN logprobs, unknown finish_reason, …).
    Malformed,
    /// The response names another model.
    WrongModel,
    /// More tokens than max_tokens.
    TooManyTokens,
    /// A token is neither the sampling rule's pick nor a near-tie.
    WrongToken,
    /// A reported log-probability (or alternative) is off by more than the tolerance.
    LogprobMismatch,
    /// Tokens follow an EOS, or the pick was EOS and the miner went on.
    PastEos,
    /// The completion ended without a reason (length < max_tokens, EOS that was not the pick,
    /// `stop` without a stop string).
    EarlyStop,
    /// A stop string appeared before the last token, or finish_reason ignores it.
    StopIgnored,
}

impl FailReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Malformed => "malformed",
            FailReason::WrongModel => "wrong_model",
            FailReason::TooManyTokens => "too_many_tokens",
            FailReason::WrongToken => "wrong_token",
            FailReason::LogprobMismatch => "logprob_mismatch",
            FailReason::PastEos => "past_eos",
            FailReason::EarlyStop => "early_stop",
            FailReason::StopIgnored => "stop_ignored",
        }
    }

    /// Every reason, for pre-registering metric labels.
    pub const ALL: [FailReason; 8] = [
        FailReason::Malformed,
        FailReason::WrongModel,
        FailReason::TooManyTokens,
        FailReason::WrongToken,
        FailReason::LogprobMismatch,
        FailReason::PastEos,
        FailReason::EarlyStop,
        FailReason::StopIgnored,
    ];
}

/// What a miner returned, as the validator received it.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The prompt ids the validator sent (BOS included).
    pub prompt_tokens: &'a [u32],
    /// The completion tokens with their reported logprobs.
    pub tokens: &'a [GeneratedToken],
    /// The reported finish reason, as received (`stop`, `length` or `eos`).
    pub finish_reason: &'a str,
    /// The model id the miner claims to serve, if it said one.
    pub model_hash: Option<ModelId>,
}

/// The verdict on one completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Whether every check passed.
    pub passed: bool,
    /// The first failure, if any.
    pub reason: Option<FailReason>,
    /// A human-readable explanation of the failure (empty on success).
    pub detail: String,
    /// Index of the first failing token, if a token check failed.
    pub first_failure: Option<u32>,
    /// Tokens run through the per-token checks.
    pub tokens_checked: u32,
    /// Tokens equal to the validator's own pick.
    pub tokens_matched: u32,
    /// Tokens accepted as near-ties (not the pick, but within tolerance).
    pub near_ties: u32,
    /// Largest |reported − reference| logprob over every reported value (tokens and alternatives).
    pub max_logprob_error: f64,
    /// Mean |reported − reference| logprob over every reported value (tokens and alternatives).
    pub mean_logprob_error: f64,
}

impl VerifyReport {
    fn fail(reason: FailReason, detail: String) -> Self {
        VerifyReport {
            passed: false,
            reason: Some(reason),
            detail,
            first_failure: None,
            tokens_checked: 0,
            tokens_matched: 0,
            near_ties: 0,
            max_logprob_error: 0.0,
            mean_logprob_error: 0.0,
        }
    }
}

/// How one token compares with the validator's sampling rule.
enum TokenVerdict {
    Match,
    NearTie,
    Wrong,
}

/// Checks `claim` against the reference `model` for the request `params`. Returns `Err` only if
/// the model itself fails; every problem of the claim is a failed report.
pub fn verify(
    model: &Model,
    claim: &Claim<'_>,
    params: &SamplingParams,
    tol: &Tolerances,
) -> Result<VerifyReport> {
    use FailReason::*;
    let cfg = model.config();
    let vocab = cfg.vocab_size;
    let eos = model.eos_token_ids();
    let n = claim.tokens.len();
    let fail = |r, d: String| Ok(VerifyReport::fail(r, d));

    // Structural checks: no forward pass needed.
    if let Err(e) = params.validate() {
        return fail(Malformed, format!("request parameters: {e}"));
    }
    let Some(finish) = FinishReason::parse(claim.finish_reason) else {
        return fail(
            Malformed,
            format!("unknown finish_reason {:?}", claim.finish_reason),
        );
    };
    if let Some(h) = claim.model_hash
        && h != model.hash()
    {
        return fail(WrongModel, format!("model {h}, expected {}", model.hash()));
    }
    if claim.prompt_tokens.is_empty() || claim.prompt_tokens.iter().any(|&t| t as usize >= vocab) {
        return fail(Malformed, "prompt empty or outside the vocabulary".into());
    }
    let k = usize::from(params.top_logprobs).min(vocab);
    for (i, t) in claim.tokens.iter().enumerate() {
        let ids_ok =
            (t.id as usize) < vocab && t.top_logprobs.iter().all(|a| (a.id as usize) < vocab);
        let lps_ok = std::iter::once(t.logprob)
            .chain(t.top_logprobs.iter().map(|a| a.logprob))
            .all(|l| l.is_finite() && l <= 1e-3);
        if !ids_ok || !lps_ok || t.top_logprobs.len() != k {
            return fail(
                Malformed,
                format!("token {i}: bad id, logprob or number of alternatives"),
            );
        }
    }
    if n > params.max_tokens as usize {
        return fail(
            TooManyTokens,
            format!("{n} tokens, max_tokens {}", params.max_tokens),
        );
    }
    if claim.prompt_tokens.len() + n > cfg.max_position_embeddings {
        return fail(
            Malformed,
            "prompt + completion longer than the model's context".into(),
        );
    }
    if let Some(i) = claim.tokens[..n.saturating_sub(1)]
        .iter()
        .position(|t| eos.contains(&t.id))
    {
        return fail(
            PastEos,
            format!("token {i} is EOS but {} tokens follow", n - 1 - i),
        );
    }
    let ids: Vec<u32> = claim.tokens.iter().map(|t| t.id).collect();
    if !params.stop.is_empty() {
        for j in 1..n {
            if find_stop(&model.tokenizer().decode(&ids[..j])?, &params.stop).is_some() {
                return fail(
                    StopIgnored,
                    format!("a stop string is complete after token {}", j - 1),
                );
            }
        }
    }
    let last_is_eos = ids.last().is_some_and(|t| eos.contains(t));
    let stop_at_end = find_stop(&model.tokenizer().decode(&ids)?, &params.stop).is_some();
    match finish {
        FinishReason::Eos if !last_is_eos => {
            return fail(
                EarlyStop,
                "finish_reason eos but the last token is not EOS".into(),
            );
        }
        FinishReason::Stop if !stop_at_end => {
            return fail(
                EarlyStop,
                "finish_reason stop but no stop string in the text".into(),
            );
        }
        FinishReason::Length if last_is_eos => {
            return fail(
                Malformed,
                "finish_reason length but the last token is EOS".into(),
            );
        }
        FinishReason::Length if stop_at_end => {
            return fail(
                StopIgnored,
                "finish_reason length but a stop string ends the text".into(),
            );
        }
        FinishReason::Length if n != params.max_tokens as usize => {
            return fail(
                EarlyStop,
                format!(
                    "finish_reason length after {n} of {} tokens",
                    params.max_tokens
                ),
            );
        }
        _ => {}
    }

    // One teacher-forced pass; row prompt_len - 1 + i predicts completion token i.
    let mut report = VerifyReport::fail(Malformed, String::new());
    report.passed = true;
    report.reason = None;
    if n == 0 {
        return Ok(report);
    }
    let mut seq = claim.prompt_tokens.to_vec();
    seq.extend_from_slice(&ids[..n - 1]);
    let logits = model.logits(&seq)?;
    let p0 = claim.prompt_tokens.len() - 1;
    let mut sum_err = 0.0;
    let mut n_err = 0usize;
    for (i, t) in claim.tokens.iter().enumerate() {
        let row = &logits[p0 + i];
        let lp = sampling::log_softmax(row);
        report.tokens_checked += 1;
        let (verdict, pick) = judge(row, params, i as u32, t.id, tol);
        let mut failure = None;
        match verdict {
            TokenVerdict::Match => report.tokens_matched += 1,
            TokenVerdict::NearTie => report.near_ties += 1,
            TokenVerdict::Wrong => {
                failure = Some(if eos.contains(&pick) {
                    (
                        PastEos,
                        format!("token {i}: the pick was EOS ({pick}) but got {}", t.id),
                    )
                } else if eos.contains(&t.id) {
                    (
                        EarlyStop,
                        format!("token {i}: EOS where the pick is {pick}"),
                    )
                } else {
                    (
                        WrongToken,
                        format!("token {i}: got {}, pick is {pick}", t.id),
                    )
                });
            }
        }
        let err = (f64::from(t.logprob) - lp[t.id as usize]).abs();
        for e in std::iter::once(err).chain(
            t.top_logprobs
                .iter()
                .map(|a| (f64::from(a.logprob) - lp[a.id as usize]).abs()),
        ) {
            sum_err += e;
            n_err += 1;
            report.max_logprob_error = report.max_logprob_error.max(e);
        }
        if failure.is_none() && err > tol.logprob_abs {
            failure = Some((
                LogprobMismatch,
                format!(
                    "token {i}: logprob {} vs {:.5}",
                    t.logprob, lp[t.id as usize]
                ),
            ));
        }
        if failure.is_none() {
            failure = check_alternatives(t, &lp, tol)
                .map(|d| (LogprobMismatch, format!("token {i}: {d}")));
        }
        if let Some((r, d)) = failure
            && report.reason.is_none()
        {
            report.passed = false;
            report.reason = Some(r);
            report.detail = d;
            report.first_failure = Some(i as u32);
        }
    }
    report.mean_logprob_error = sum_err / n_err.max(1) as f64;
    if report.passed
        && n as u32 >= tol.mean_min_tokens
        && report.mean_logprob_error > tol.logprob_mean
    {
        report.passed = false;
        report.reason = Some(LogprobMismatch);
        report.detail = format!(
            "mean logprob error {:.5} > {}",
            report.mean_logprob_error, tol.logprob_mean
        );
    }
    Ok(report)
}

/// Reported alternatives: each close to the reference and none missing that clearly belongs.
fn check_alternatives(t: &GeneratedToken, lp: &[f64], tol: &Tolerances) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    let mut floor = f64::INFINITY;
    for a in &t.top_logprobs {
        if !seen.insert(a.id) {
            return Some(format!("alternative {} listed twice", a.id));
        }
        let r = lp[a.id as usize];
        if (f64::from(a.logprob) - r).abs() > tol.logprob_abs {
            return Some(format!(
                "alternative {}: logprob {} vs {r:.5}",
                a.id, a.logprob
            ));
        }
        floor = floor.min(r);
    }
    if t.top_logprobs.is_empty() {
        return None;
    }
    lp.iter()
        .enumerate()
        .find(|(id, l)| !seen.contains(&(*id as u32)) && **l > floor + tol.logprob_abs)
        .map(|(id, l)| format!("alternatives omit {id} (logprob {l:.5})"))
}

/// Compares the claimed token with the pick on the validator's logits.
fn judge(
    logits: &[f32],
    params: &SamplingParams,
    step: u32,
    claimed: u32,
    tol: &Tolerances,
) -> (TokenVerdict, u32) {
    let (pick, accepted) = accepted_with_pick(logits, params, step, tol);
    let v = if pick == claimed {
        TokenVerdict::Match
    } else if accepted.binary_search(&claimed).is_ok() {
        TokenVerdict::NearTie
    } else {
        TokenVerdict::Wrong
    };
    (v, pick)
}

/// Every token id (ascending) that [`verify`] accepts at completion step `step` whose
/// reference logits are `logits`: the rule's pick and its near-ties. Its length is how much
/// freedom a miner has at that position (docs/protocol.md, section 8).
pub fn accepted_tokens(
    logits: &[f32],
    params: &SamplingParams,
    step: u32,
    tol: &Tolerances,
) -> Vec<u32> {
    accepted_with_pick(logits, params, step, tol).1
}

/// The pick and every accepted id (ascending, the pick included).
fn accepted_with_pick(
    logits: &[f32],
    params: &SamplingParams,
    step: u32,
    tol: &Tolerances,
) -> (u32, Vec<u32>) {
    if params.temperature == 0.0 {
        let pick = sampling::argmax(logits);
        let top = f64::from(logits[pick as usize]);
        // NaN logits compare false and are never accepted.
        let accepted = (0..logits.len() as u32)
            .filter(|&i| i == pick || top - f64::from(logits[i as usize]) <= tol.logit)
            .collect();
        return (pick, accepted);
    }
    let d = Distribution::new(logits, params.temperature, params.top_p);
    let l = d.nucleus_len;
    let pick = sampling::best(logits, params, step, d.prefix(l)).unwrap_or(0);
    // Nucleus membership depends on cumulative mass, whose honest error is the mass
    // tolerance divided by T (logit errors are divided by T before the softmax).
    let slack = (tol.mass / f64::from(params.temperature)).min(1.0);
    let top_p = f64::from(params.top_p);
    // Nucleus sets an honest backend could have used: ours, and where the honest error could
    // move the top_p crossing, one member fewer, one more, or the edge pair swapped.
    let mut variants: Vec<Vec<u32>> = vec![d.prefix(l).to_vec()];
    if l > 1 && d.prefix_mass(l - 1) >= top_p - slack {
        variants.push(d.prefix(l - 1).to_vec());
    }
    if l < d.order.len() && d.prefix_mass(l) < top_p + slack {
        variants.push(d.prefix(l + 1).to_vec());
    }
    if l < d.order.len() {
        let (a, b) = (d.order[l - 1] as usize, d.order[l] as usize);
        if f64::from(logits[a]) - f64::from(logits[b]) <= tol.logit {
            let mut v = d.prefix(l - 1).to_vec();
            v.push(d.order[l]);
            variants.push(v);
        }
    }
    // Scores are logit + T·gumbel: a logit error ε moves a score by ε whatever T, so a member
    // is a near-tie when its score is within the logit tolerance of its nucleus's best.
    let key = params.noise_key(step);
    let mut accepted = vec![pick];
    for members in &variants {
        let scores: Vec<f64> = members
            .iter()
            .map(|&m| params.score(key, m, logits[m as usize]))
            .collect();
        let top = scores.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        accepted.extend(
            members
                .iter()
                .zip(&scores)
                .filter(|&(_, &s)| top - s <= tol.logit)
                .map(|(&m, _)| m),
        );
    }
    accepted.sort_unstable();
    accepted.dedup();
    (pick, accepted)
}
