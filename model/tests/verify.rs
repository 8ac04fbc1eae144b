//! The verifier: honest completions (f32 and bf16 backends) pass; adversaries and rule
//! breakers are rejected with the right reason.

use candle_core::DType;
use polylith_model::tokenizer::BYTE_EOS;
use polylith_model::verify::{Claim, FailReason, Tolerances, VerifyReport, verify};
use polylith_model::{Completion, GeneratedToken, Model, SamplingParams, TopLogprob, prompts};
use std::ops::ControlFlow;
use std::sync::OnceLock;

fn reference() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::builtin().unwrap())
}

fn params(mode: usize, seed: u64, max_tokens: u32) -> SamplingParams {
    let (temperature, top_p) = [(0.0, 1.0), (0.7, 0.9), (1.0, 1.0)][mode % 3];
    SamplingParams {
        max_tokens,
        temperature,
        top_p,
        seed,
        stop: vec![],
        top_logprobs: 20,
    }
}

fn run(miner: &Model, prompt: &[u32], p: &SamplingParams) -> Completion {
    miner
        .generate(prompt, p, |_| ControlFlow::Continue(()))
        .unwrap()
}

fn check(
    prompt: &[u32],
    tokens: &[GeneratedToken],
    finish: &str,
    p: &SamplingParams,
) -> VerifyReport {
    let claim = Claim {
        prompt_tokens: prompt,
        tokens,
        finish_reason: finish,
        model_hash: None,
    };
    verify(reference(), &claim, p, &Tolerances::default()).unwrap()
}

/// Runs `miner` on `n` seeded prompts in every sampling mode; returns (completions passed,
/// total, tokens matched or near-tie, tokens checked).
fn campaign(miner: &Model, n: u64, tokens: u32) -> (u32, u32, u64, u64, Vec<FailReason>) {
    let (mut passed, mut total, mut ok_tokens, mut checked) = (0, 0, 0, 0);
    let mut reasons = Vec::new();
    for i in 0..n {
        for mode in 0..3 {
            let prompt = reference()
                .encode_prompt(&prompts::generate(11, i))
                .unwrap();
            let p = params(mode, 500 + i, tokens);
            let out = run(miner, &prompt, &p);
            let r = check(&prompt, &out.tokens, out.finish_reason.as_str(), &p);
            total += 1;
            if r.passed {
                passed += 1;
                eprintln!(
                    "passed: prompt {i} mode {mode}: {} tokens, finish {:?}, {r:?}",
                    out.tokens.len(),
                    out.finish_reason
                );
            } else {
                reasons.push(r.reason.unwrap());
            }
            ok_tokens += u64::from(r.tokens_matched + r.near_ties);
            checked += u64::from(r.tokens_checked);
        }
    }
    (passed, total, ok_tokens, checked, reasons)
}

#[test]
fn honest_f32_completions_pass() {
    let (passed, total, ok, checked, reasons) = campaign(reference(), 4, 40);
    assert_eq!(passed, total, "{reasons:?}");
    assert_eq!(ok, checked);
}

#[test]
fn honest_bf16_backend_passes_at_least_99_percent_of_tokens() {
    let miner = reference().rounded(DType::BF16).unwrap();
    let (passed, total, ok, checked, reasons) = campaign(&miner, 4, 40);
    assert!(ok as f64 >= 0.99 * checked as f64, "{ok}/{checked} tokens");
    assert!(
        passed as f64 >= 0.9 * f64::from(total),
        "{passed}/{total}: {reasons:?}"
    );
}

fn assert_rejected(miner: &Model, name: &str) {
    let (passed, total, _, _, reasons) = campaign(miner, 3, 40);
    assert_eq!(passed, 0, "{name}: {passed}/{total} completions passed");
    assert!(
        reasons.iter().all(|r| matches!(
            r,
            FailReason::WrongToken
                | FailReason::LogprobMismatch
                | FailReason::PastEos
                | FailReason::EarlyStop
        )),
        "{name}: {reasons:?}"
    );
}

#[test]
fn perturbed_weights_are_rejected() {
    assert_rejected(&reference().perturbed(0.01, 3).unwrap(), "perturbed");
}

#[test]
fn truncated_model_is_rejected() {
    assert_rejected(&reference().truncated().unwrap(), "truncated");
}

#[test]
fn int8_quantized_model_is_rejected() {
    assert_rejected(&reference().quantized_int8().unwrap(), "quantized");
}

#[test]
fn wrong_model_is_rejected() {
    assert_rejected(&Model::builtin_with_seed(12345).unwrap(), "wrong-model");
}

fn honest(max_tokens: u32) -> (Vec<u32>, Completion, SamplingParams) {
    // The first seeded prompt whose greedy completion runs to max_tokens.
    let p = params(0, 1, max_tokens);
    for i in 0..50 {
        let prompt = reference().encode_prompt(&prompts::generate(5, i)).unwrap();
        let out = run(reference(), &prompt, &p);
        if out.tokens.len() == max_tokens as usize {
            return (prompt, out, p);
        }
    }
    panic!("no full-length greedy completion in 50 prompts")
}

fn reason(r: &VerifyReport) -> Option<&'static str> {
    r.reason.map(FailReason::as_str)
}

#[test]
fn claimed_model_hash_must_match() {
    let (prompt, out, p) = honest(8);
    let claim = Claim {
        prompt_tokens: &prompt,
        tokens: &out.tokens,
        finish_reason: "length",
        model_hash: Some(Model::builtin_with_seed(1).unwrap().hash()),
    };
    let r = verify(reference(), &claim, &p, &Tolerances::default()).unwrap();
    assert_eq!(reason(&r), Some("wrong_model"));
    let claim = Claim {
        model_hash: Some(reference().hash()),
        ..claim
    };
    assert!(
        verify(reference(), &claim, &p, &Tolerances::default())
            .unwrap()
            .passed
    );
}

#[test]
fn a_swapped_token_is_wrong_token() {
    let (prompt, mut out, p) = honest(16);
    let mut seq = prompt.clone();
    seq.extend(out.ids()[..7].iter());
    let row = reference().logits(&seq).unwrap().pop().unwrap();
    let worst = (0..row.len())
        .min_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap();
    out.tokens[7].id = worst as u32;
    let r = check(&prompt, &out.tokens, "length", &p);
    assert_eq!(reason(&r), Some("wrong_token"));
    assert_eq!(r.first_failure, Some(7));
}

#[test]
fn a_tampered_logprob_is_logprob_mismatch() {
    let (prompt, mut out, p) = honest(16);
    out.tokens[3].logprob -= 0.5;
    assert_eq!(
        reason(&check(&prompt, &out.tokens, "length", &p)),
        Some("logprob_mismatch")
    );
    let (prompt, mut out, p) = honest(16);
    out.tokens[3].top_logprobs[1].logprob -= 0.5;
    assert_eq!(
        reason(&check(&prompt, &out.tokens, "length", &p)),
        Some("logprob_mismatch")
    );
    let (prompt, mut out, p) = honest(16);
    // Replace the second-best alternative by a poor one: the list omits a likely token.
    out.tokens[3].top_logprobs[1] = TopLogprob {
        id: 259,
        logprob: -30.0,
    };
    let r = check(&prompt, &out.tokens, "length", &p);
    assert_eq!(reason(&r), Some("logprob_mismatch"));
}

#[test]
fn small_systematic_logprob_bias_is_caught_by_the_mean_test() {
    let (prompt, mut out, p) = honest(32);
    let tol = Tolerances::default();
    let bias = (tol.logprob_mean * 2.0) as f32;
    assert!(f64::from(bias) < tol.logprob_abs);
    for t in &mut out.tokens {
        t.logprob -= bias;
        for a in &mut t.top_logprobs {
            a.logprob -= bias;
        }
    }
    assert_eq!(
        reason(&check(&prompt, &out.tokens, "length", &p)),
        Some("logprob_mismatch")
    );
}

#[test]
fn too_many_tokens_is_rejected() {
    let (prompt, out, mut p) = honest(16);
    p.max_tokens = 15;
    assert_eq!(
        reason(&check(&prompt, &out.tokens, "length", &p)),
        Some("too_many_tokens")
    );
}

#[test]
fn finish_length_with_fewer_tokens_is_early_stop() {
    let (prompt, out, p) = honest(16);
    assert_eq!(
        reason(&check(&prompt, &out.tokens[..10], "length", &p)),
        Some("early_stop")
    );
}

#[test]
fn claiming_eos_without_eos_is_early_stop() {
    let (prompt, out, p) = honest(16);
    assert_eq!(
        reason(&check(&prompt, &out.tokens[..10], "eos", &p)),
        Some("early_stop")
    );
}

#[test]
fn an_eos_that_is_not_the_pick_is_early_stop() {
    let (prompt, out, p) = honest(16);
    let mut toks = out.tokens[..10].to_vec();
    toks.push(GeneratedToken {
        id: BYTE_EOS,
        logprob: -5.0,
        top_logprobs: out.tokens[10].top_logprobs.clone(),
    });
    let r = check(&prompt, &toks, "eos", &p);
    assert_eq!(reason(&r), Some("early_stop"));
    assert_eq!(r.first_failure, Some(10));
}

#[test]
fn tokens_after_eos_are_past_eos() {
    let (prompt, mut out, p) = honest(16);
    out.tokens[5].id = BYTE_EOS;
    assert_eq!(
        reason(&check(&prompt, &out.tokens, "length", &p)),
        Some("past_eos")
    );
}

#[test]
fn stop_strings_are_enforced() {
    let (prompt, out, mut p) = honest(24);
    let (stop, end) = ascii_stop(&out.ids());
    p.stop = vec![stop];
    // Going on past the stop string.
    assert_eq!(
        reason(&check(&prompt, &out.tokens, "length", &p)),
        Some("stop_ignored")
    );
    // Stopping exactly at it is fine.
    let r = check(&prompt, &out.tokens[..end], "stop", &p);
    assert!(r.passed, "{r:?}");
    // Ending with finish_reason stop where no stop string appears.
    p.stop = vec!["\u{1F600}".into()];
    assert_eq!(
        reason(&check(&prompt, &out.tokens[..end], "stop", &p)),
        Some("early_stop")
    );
}

#[test]
fn malformed_claims_are_rejected_not_panicked() {
    let (prompt, out, p) = honest(8);
    assert_eq!(
        reason(&check(&prompt, &out.tokens, "done", &p)),
        Some("malformed")
    );
    let mut bad = out.tokens.clone();
    bad[0].id = 10_000;
    assert_eq!(
        reason(&check(&prompt, &bad, "length", &p)),
        Some("malformed")
    );
    let mut bad = out.tokens.clone();
    bad[1].logprob = f32::NAN;
    assert_eq!(
        reason(&check(&prompt, &bad, "length", &p)),
        Some("malformed")
    );
    let mut bad = out.tokens.clone();
    bad[1].top_logprobs.pop();
    assert_eq!(
        reason(&check(&prompt, &bad, "length", &p)),
        Some("malformed")
    );
    assert_eq!(
        reason(&check(&[], &out.tokens, "length", &p)),
        Some("malformed")
    );
    let long_prompt = vec![65u32; 510];
    assert_eq!(
        reason(&check(&long_prompt, &out.tokens, "length", &p)),
        Some("malformed")
    );
}

#[test]
fn reasons_are_stable_snake_case() {
    let all: Vec<&str> = FailReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        all,
        [
            "malformed",
            "wrong_model",
            "too_many_tokens",
            "wrong_token",
            "logprob_mismatch",
            "past_eos",
            "early_stop",
            "stop_ignored"
        ]
    );
    for r in FailReason::ALL {
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            format!("\"{}\"", r.as_str())
        );
    }
}

/// A one-character ASCII stop string taken from the byte completion `ids` (not from its first
/// two tokens), and the number of tokens after which it first appears in the decoded text.
pub fn ascii_stop(ids: &[u32]) -> (String, usize) {
    let tok = reference().tokenizer();
    let j = (2..ids.len() - 1)
        .find(|&j| (0x20..0x7f).contains(&ids[j]) && !ids[..j].contains(&ids[j]))
        .expect("a printable ASCII byte");
    let stop = tok.decode(&ids[j..j + 1]).unwrap();
    let end = (1..=ids.len())
        .find(|&m| tok.decode(&ids[..m]).unwrap().contains(&stop))
        .unwrap();
    (stop, end)
}

/// The sampled modes challenges use: (temperature, top_p).
const SAMPLED: [(f32, f32); 2] = [(0.7, 0.9), (1.0, 1.0)];

fn sampled(t: f32, top_p: f32, seed: u64, max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens,
        temperature: t,
        top_p,
        seed,
        stop: vec![],
        top_logprobs: 20,
    }
}

/// A cheater that samples honestly but puts a byte of its own choosing at every fourth
/// position, reporting the reference's exact logprobs so that only the token check can
/// catch it.
fn injected(prompt: &[u32], p: &SamplingParams) -> (Vec<GeneratedToken>, &'static str) {
    let payload = b"HIDDEN PAYLOAD ";
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    for step in 0..p.max_tokens {
        let row = reference().logits(&seq).unwrap().pop().unwrap();
        let id = if step % 4 == 3 {
            u32::from(payload[(step as usize / 4) % payload.len()])
        } else {
            polylith_model::sampling::pick(&row, p, step)
        };
        let lp = polylith_model::sampling::log_softmax(&row);
        out.push(GeneratedToken {
            id,
            logprob: lp[id as usize] as f32,
            top_logprobs: polylith_model::sampling::top_k(&lp, 20)
                .into_iter()
                .map(|(id, l)| TopLogprob {
                    id,
                    logprob: l as f32,
                })
                .collect(),
        });
        if id == BYTE_EOS {
            return (out, "eos");
        }
        seq.push(id);
    }
    (out, "length")
}

#[test]
fn chosen_bytes_injected_into_sampled_completions_are_rejected() {
    let mut passed = Vec::new();
    for (t, top_p) in SAMPLED {
        for i in 0..8 {
            let prompt = reference()
                .encode_prompt(&prompts::generate(21, i))
                .unwrap();
            let p = sampled(t, top_p, 900 + i, 24);
            let (tokens, finish) = injected(&prompt, &p);
            let r = check(&prompt, &tokens, finish, &p);
            if r.passed {
                passed.push((t, i));
            } else {
                assert!(
                    matches!(
                        r.reason,
                        Some(FailReason::WrongToken | FailReason::EarlyStop | FailReason::PastEos)
                    ),
                    "{r:?}"
                );
            }
        }
    }
    assert!(passed.is_empty(), "injected completions passed: {passed:?}");
}

#[test]
fn sampled_positions_accept_a_median_of_at_most_two_tokens() {
    let tol = Tolerances::default();
    for (t, top_p) in SAMPLED {
        let (mut counts, mut eos_free) = (Vec::new(), 0usize);
        for i in 0..6 {
            let prompt = reference()
                .encode_prompt(&prompts::generate(23, i))
                .unwrap();
            let p = sampled(t, top_p, 700 + i, 32);
            let out = run(reference(), &prompt, &p);
            let mut seq = prompt.clone();
            seq.extend(out.ids());
            let rows = reference().logits(&seq).unwrap();
            for (step, row) in rows[prompt.len() - 1..]
                .iter()
                .take(out.tokens.len())
                .enumerate()
            {
                let acc = polylith_model::verify::accepted_tokens(row, &p, step as u32, &tol);
                let pick = polylith_model::sampling::pick(row, &p, step as u32);
                assert!(acc.contains(&pick));
                eos_free += usize::from(pick != BYTE_EOS && acc.contains(&BYTE_EOS));
                counts.push(acc.len());
            }
        }
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        assert!(
            median <= 2,
            "T={t}: median {median} accepted tokens per position"
        );
        assert!(
            eos_free * 20 <= counts.len(),
            "T={t}: EOS accepted off-pick at {eos_free} of {} positions",
            counts.len()
        );
    }
}

#[test]
fn honest_sampled_completions_pass_at_least_995_per_mille() {
    let bf16 = reference().rounded(DType::BF16).unwrap();
    for (name, miner) in [("f32", reference()), ("bf16", &bf16)] {
        let (mut passed, mut total, mut failures) = (0u32, 0u32, Vec::new());
        for (t, top_p) in SAMPLED {
            for i in 0..100 {
                let prompt = reference()
                    .encode_prompt(&prompts::generate(29, i))
                    .unwrap();
                let p = sampled(t, top_p, 3000 + i, 16);
                let out = run(miner, &prompt, &p);
                let r = check(&prompt, &out.tokens, out.finish_reason.as_str(), &p);
                total += 1;
                if r.passed {
                    passed += 1;
                } else {
                    failures.push((t, i, r.reason, r.detail));
                }
            }
        }
        assert!(
            f64::from(passed) >= 0.995 * f64::from(total),
            "{name}: {passed}/{total}: {failures:?}"
        );
    }
}
