//! Sampling parameters and the deterministic token-pick rule shared by miners and validators.
//!
//! The pick is a pure function of (logits, temperature, top_p, seed, step):
//! - `temperature == 0`: greedy, the largest logit, ties broken by the lowest id.
//! - otherwise, in f64: the *nucleus* is the shortest prefix of the ids sorted by
//!   (logit desc, id asc) whose mass under `softmax(logits / temperature)` reaches `top_p` (at
//!   least one id); each id `i` gets the Gumbel noise `g_i = −ln(−ln(u_i))` with
//!   `u_i = (at(at(key(seed, 0x474D), step), i) >> 11 + 0.5) / 2^53` and the score
//!   `logit_i + temperature · g_i`; the pick is the nucleus member with the highest score
//!   (ties to the lowest id). This is the Gumbel-max trick: an exact sample of the tempered
//!   nucleus distribution.
//!
//! Gumbel-max rather than an inverse-CDF walk because it makes verification as tight as greedy:
//! a backend whose logits differ by ε changes each score by ε, so the validator accepts exactly
//! the members whose score is within the logit tolerance of the best, typically one or two
//! tokens, whereas a CDF boundary moves by the error summed over the whole vocabulary and the
//! window around `u` can hold thousands of tail tokens.

use crate::error::{ModelError, Result};
use crate::rng;
use serde::{Deserialize, Serialize};

/// Stream tag of the Gumbel noise of sampling.
const TAG_GUMBEL: u64 = 0x474D;

/// Most alternatives a caller may ask for per token.
pub const MAX_TOP_LOGPROBS: usize = polylith_protocol::llm::MAX_TOP_LOGPROBS as usize;

/// What to generate and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Most completion tokens to produce.
    pub max_tokens: u32,
    /// 0 = greedy; otherwise softmax temperature (≤ 100).
    #[serde(default)]
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 = all tokens.
    #[serde(default = "one")]
    pub top_p: f32,
    /// Seed of the sampling draws.
    #[serde(default)]
    pub seed: u64,
    /// Generation stops once the completion text contains one of these.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Alternatives (highest log-probabilities) reported per token, 0..=20.
    #[serde(default)]
    pub top_logprobs: u8,
}

fn one() -> f32 {
    1.0
}

impl SamplingParams {
    /// Greedy decoding of up to `max_tokens` tokens.
    pub fn greedy(max_tokens: u32) -> Self {
        SamplingParams {
            max_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            top_logprobs: 0,
        }
    }

    /// Checks ranges (finite temperature in [0, 100], top_p in (0, 1], ≤ 20 alternatives,
    /// at most 8 non-empty stop strings of ≤ 64 bytes).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidInput(m));
        if !(self.temperature.is_finite() && (0.0..=100.0).contains(&self.temperature)) {
            return bad(format!("temperature {} not in [0, 100]", self.temperature));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} not in (0, 1]", self.top_p));
        }
        if usize::from(self.top_logprobs) > MAX_TOP_LOGPROBS {
            return bad(format!(
                "top_logprobs {} > {MAX_TOP_LOGPROBS}",
                self.top_logprobs
            ));
        }
        if self.stop.len() > 8 || self.stop.iter().any(|s| s.is_empty() || s.len() > 64) {
            return bad("stop: at most 8 non-empty strings of at most 64 bytes".into());
        }
        Ok(())
    }

    /// The key of completion token `step`'s Gumbel noise (one draw per vocabulary id).
    pub fn noise_key(&self, step: u32) -> u64 {
        rng::at(rng::key(self.seed, TAG_GUMBEL), u64::from(step))
    }

    /// The sampling score `logit + temperature · g` of `id` at the step whose
    /// [`SamplingParams::noise_key`] is `key`; the pick maximises it over the nucleus.
    pub fn score(&self, key: u64, id: u32, logit: f32) -> f64 {
        // An open-interval uniform: neither ln(0) nor ln(1) = 0 inside −ln(−ln u).
        let u = ((rng::at(key, u64::from(id)) >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
        f64::from(logit) + f64::from(self.temperature) * -(-u.ln()).ln()
    }
}

/// Greedy choice: largest logit, lowest id among equals (NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// log-softmax of the unmodified logits (temperature 1), computed in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &l| m.max(f64::from(l)));
    let s: f64 = logits.iter().map(|&l| (f64::from(l) - m).exp()).sum();
    let lse = m + s.ln();
    logits.iter().map(|&l| f64::from(l) - lse).collect()
}

/// The `k` highest (id, logprob) pairs, sorted by (logprob desc, id asc).
pub fn top_k(logprobs: &[f64], k: usize) -> Vec<(u32, f64)> {
    let mut idx: Vec<u32> = (0..logprobs.len() as u32).collect();
    idx.sort_by(|&a, &b| {
        logprobs[b as usize]
            .total_cmp(&logprobs[a as usize])
            .then(a.cmp(&b))
    });
    idx.into_iter()
        .take(k)
        .map(|i| (i, logprobs[i as usize]))
        .collect()
}

/// The sampling distribution at one step: tempered probabilities, the sort order and the nucleus.
#[derive(Debug, Clone)]
pub struct Distribution {
    /// softmax(logits / temperature), f64.
    pub probs: Vec<f64>,
    /// Ids sorted by (logit desc, id asc).
    pub order: Vec<u32>,
    /// Length of the nucleus prefix of `order`.
    pub nucleus_len: usize,
}

impl Distribution {
    /// Builds the distribution for `temperature > 0`.
    pub fn new(logits: &[f32], temperature: f32, top_p: f32) -> Self {
        let t = f64::from(temperature);
        let m = logits
            .iter()
            .fold(f64::NEG_INFINITY, |m, &l| m.max(f64::from(l)));
        let mut probs: Vec<f64> = logits
            .iter()
            .map(|&l| ((f64::from(l) - m) / t).exp())
            .collect();
        let s: f64 = probs.iter().sum();
        for p in &mut probs {
            *p /= s;
        }
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        let top_p = f64::from(top_p);
        let mut cum = 0.0;
        let mut nucleus_len = order.len();
        for (i, &id) in order.iter().enumerate() {
            cum += probs[id as usize];
            if cum >= top_p {
                nucleus_len = i + 1;
                break;
            }
        }
        Distribution {
            probs,
            order,
            nucleus_len,
        }
    }

    /// Probability mass of the first `len` ids of `order`.
    pub fn prefix_mass(&self, len: usize) -> f64 {
        self.order[..len]
            .iter()
            .map(|&i| self.probs[i as usize])
            .sum()
    }

    /// The first `len` ids of `order` (a candidate nucleus).
    pub fn prefix(&self, len: usize) -> &[u32] {
        &self.order[..len.min(self.order.len())]
    }
}

/// The member of `members` with the highest score at `step`, ties to the lowest id; `None`
/// if `members` is empty.
pub fn best(logits: &[f32], params: &SamplingParams, step: u32, members: &[u32]) -> Option<u32> {
    let key = params.noise_key(step);
    let mut best: Option<(f64, u32)> = None;
    for &id in members {
        let s = params.score(key, id, logits[id as usize]);
        let better = match best {
            None => true,
            Some((bs, bid)) => s > bs || (s == bs && id < bid) || bs.is_nan(),
        };
        if better {
            best = Some((s, id));
        }
    }
    best.map(|(_, id)| id)
}

/// The token the rule picks at completion step `step`.
pub fn pick(logits: &[f32], params: &SamplingParams, step: u32) -> u32 {
    if params.temperature == 0.0 {
        argmax(logits)
    } else {
        let d = Distribution::new(logits, params.temperature, params.top_p);
        // The nucleus holds at least one id.
        best(logits, params, step, d.prefix(d.nucleus_len)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_breaks_ties_by_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.5]), 1);
    }

    #[test]
    fn top_p_restricts_to_nucleus() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.5 keeps only id 0 whatever the seed.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let d = Distribution::new(&logits, 1.0, 0.5);
        assert_eq!(d.nucleus_len, 1);
        let mut p = SamplingParams::greedy(4);
        p.temperature = 1.0;
        p.top_p = 0.5;
        for seed in 0..50 {
            p.seed = seed;
            assert_eq!(pick(&logits, &p, 0), 0);
        }
    }

    #[test]
    fn gumbel_max_samples_the_tempered_distribution() {
        // softmax([ln 1, ln 2, ln 7]) = [0.1, 0.2, 0.7]: the pick frequencies over many steps
        // must match within a few standard errors (n = 20000: sd ≤ 0.0033).
        let logits = [0f32, 2f32.ln(), 7f32.ln()];
        let mut p = SamplingParams::greedy(4);
        p.temperature = 1.0;
        p.seed = 42;
        let n = 20_000u32;
        let mut counts = [0u32; 3];
        for step in 0..n {
            counts[pick(&logits, &p, step) as usize] += 1;
        }
        for (c, want) in counts.iter().zip([0.1, 0.2, 0.7]) {
            let f = f64::from(*c) / f64::from(n);
            assert!((f - want).abs() < 0.015, "{counts:?}");
        }
    }

    #[test]
    fn seeded_pick_is_reproducible_and_seed_dependent() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.1).collect();
        let mut p = SamplingParams::greedy(8);
        p.temperature = 1.0;
        p.seed = 1;
        let a: Vec<u32> = (0..32).map(|s| pick(&logits, &p, s)).collect();
        let b: Vec<u32> = (0..32).map(|s| pick(&logits, &p, s)).collect();
        p.seed = 2;
        let c: Vec<u32> = (0..32).map(|s| pick(&logits, &p, s)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[0.5, -1.0, 2.0]);
        let s: f64 = lp.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        let mut p = SamplingParams::greedy(4);
        p.top_p = 0.0;
        assert!(p.validate().is_err());
        p.top_p = 1.0;
        p.temperature = f32::NAN;
        assert!(p.validate().is_err());
    }
}
