//! The builtin model: pinned identity, non-degenerate outputs, KV cache and generation rules.

use polylith_model::tokenizer::{BYTE_BOS, BYTE_EOS};
use polylith_model::{FinishReason, KvCache, Model, ModelError, SamplingParams, TokenEvent};
use std::ops::ControlFlow;

fn cont(_: TokenEvent<'_>) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// Pinned: any change to the generator, the config or the hash layout changes the subnet's model.
const BUILTIN_HASH: &str = "c684570bcfe26f3b89bb886e40ea16af34487846d944d65d81bbae4fe8ce9047";

#[test]
fn builtin_hash_is_pinned() {
    let m = Model::builtin().unwrap();
    assert_eq!(m.hash().to_string(), BUILTIN_HASH);
}

#[test]
fn builtin_is_deterministic_and_seed_dependent() {
    let a = Model::builtin().unwrap();
    let b = Model::builtin().unwrap();
    let c = Model::builtin_with_seed(7).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_ne!(a.hash(), c.hash());
    let toks = [BYTE_BOS, 72, 105];
    assert_eq!(a.logits(&toks).unwrap(), b.logits(&toks).unwrap());
}

#[test]
fn variants_have_distinct_hashes() {
    let m = Model::builtin().unwrap();
    let ids = [
        m.hash(),
        m.perturbed(0.01, 1).unwrap().hash(),
        m.truncated().unwrap().hash(),
        m.quantized_int8().unwrap().hash(),
        m.rounded(candle_core::DType::BF16).unwrap().hash(),
    ];
    for i in 0..ids.len() {
        for j in i + 1..ids.len() {
            assert_ne!(ids[i], ids[j], "variants {i} and {j} share a hash");
        }
    }
}

#[test]
fn builtin_logits_are_peaked_not_uniform() {
    let m = Model::builtin().unwrap();
    let ids = m
        .encode_prompt("The quick brown fox jumps over the lazy dog.")
        .unwrap();
    let logits = m.logits(&ids).unwrap();
    let mut max_probs = Vec::new();
    for row in &logits {
        let lp = polylith_model::sampling::log_softmax(row);
        max_probs.push(lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max).exp());
        let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / row.len() as f64;
        let var = row
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / row.len() as f64;
        assert!(var.sqrt() > 1.0, "logit std {} too small", var.sqrt());
    }
    let avg = max_probs.iter().sum::<f64>() / max_probs.len() as f64;
    // Uniform would be 1/260 ≈ 0.004.
    assert!(avg > 0.1, "average top probability {avg}");
}

#[test]
fn kv_cache_decoding_matches_full_forward() {
    let m = Model::builtin().unwrap();
    let ids = m.encode_prompt("Cache me if you can").unwrap();
    let full = m.logits(&ids).unwrap();
    let mut cache = KvCache::default();
    let first = m
        .forward(&ids[..5], &mut cache)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut rows = first;
    for &t in &ids[5..] {
        rows.extend(
            m.forward(&[t], &mut cache)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), ids.len());
    for (a, b) in full.iter().zip(&rows) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}

#[test]
fn forward_rejects_bad_input_without_panicking() {
    let m = Model::builtin().unwrap();
    assert!(matches!(
        m.logits(&[1, 999]),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(m.logits(&[]), Err(ModelError::InvalidInput(_))));
    let long = vec![65u32; 513];
    assert!(matches!(m.logits(&long), Err(ModelError::InvalidInput(_))));
}

#[test]
fn greedy_generation_follows_argmax_and_reports_logprobs() {
    let m = Model::builtin().unwrap();
    let ids = m.encode_prompt("Once upon a time").unwrap();
    let mut params = SamplingParams::greedy(20);
    params.top_logprobs = 4;
    let out = m.generate(&ids, &params, cont).unwrap();
    let mut seq = ids.clone();
    for (i, t) in out.tokens.iter().enumerate() {
        let row = m.logits(&seq).unwrap().pop().unwrap();
        assert_eq!(t.id, polylith_model::sampling::argmax(&row), "token {i}");
        let lp = polylith_model::sampling::log_softmax(&row);
        assert!((f64::from(t.logprob) - lp[t.id as usize]).abs() < 1e-3);
        assert_eq!(t.top_logprobs.len(), 4);
        assert_eq!(t.top_logprobs[0].id, t.id);
        seq.push(t.id);
    }
    if out.finish_reason == FinishReason::Length {
        assert_eq!(out.tokens.len(), 20);
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    let m = Model::builtin().unwrap();
    let ids = m.encode_prompt("Roll the dice").unwrap();
    let mut p = SamplingParams::greedy(24);
    p.temperature = 1.0;
    p.seed = 42;
    let a = m.generate(&ids, &p, cont).unwrap();
    let b = m.generate(&ids, &p, cont).unwrap();
    p.seed = 43;
    let c = m.generate(&ids, &p, cont).unwrap();
    assert_eq!(a.ids(), b.ids());
    assert_ne!(a.ids(), c.ids());
}

#[test]
fn stop_string_ends_generation_and_is_cut_from_text() {
    let m = Model::builtin().unwrap();
    let ids = m.encode_prompt("Say something").unwrap();
    let base = m.generate(&ids, &SamplingParams::greedy(30), cont).unwrap();
    // Two printable ASCII bytes of the greedy completion make the stop string.
    let ids_out = base.ids();
    let j = (0..ids_out.len() - 1)
        .find(|&j| ids_out[j..j + 2].iter().all(|&b| (0x20..0x7f).contains(&b)))
        .expect("two printable ASCII bytes in a row");
    let stop = m.tokenizer().decode(&ids_out[j..j + 2]).unwrap();
    let mut p = SamplingParams::greedy(30);
    p.stop = vec![stop.clone()];
    let out = m.generate(&ids, &p, cont).unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    let full = m.tokenizer().decode(&out.ids()).unwrap();
    assert!(full.contains(&stop));
    assert!(!out.text.contains(&stop));
    assert!(out.tokens.len() <= j + 2);
}

#[test]
fn eos_ends_generation() {
    // Find a seed whose sampling produces EOS quickly by forcing a huge temperature:
    // with temperature 100 every id (EOS included) is almost equally likely.
    let m = Model::builtin().unwrap();
    let ids = m.encode_prompt("x").unwrap();
    let mut found = false;
    for seed in 0..50 {
        let mut p = SamplingParams::greedy(200);
        p.temperature = 100.0;
        p.seed = seed;
        let out = m.generate(&ids, &p, cont).unwrap();
        if out.finish_reason == FinishReason::Eos {
            assert_eq!(out.tokens.last().unwrap().id, BYTE_EOS);
            assert!(
                out.tokens[..out.tokens.len() - 1]
                    .iter()
                    .all(|t| t.id != BYTE_EOS)
            );
            found = true;
            break;
        }
    }
    assert!(found, "no EOS in 50 hot samples");
}

#[test]
fn streaming_yields_every_token_and_the_whole_text() {
    let m = Model::builtin().unwrap();
    let ids = m.encode_prompt("Stream").unwrap();
    let mut got = Vec::new();
    let mut text = String::new();
    let mut finished = 0;
    let out = m
        .generate(&ids, &SamplingParams::greedy(16), |ev| {
            got.push(ev.token.id);
            text.push_str(ev.text_delta);
            finished += usize::from(ev.finish_reason.is_some());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(got, out.ids());
    assert_eq!(text, out.text);
    assert_eq!(finished, 1);
}

#[test]
fn callback_can_cancel() {
    let m = Model::builtin().unwrap();
    let ids = m.encode_prompt("Stop me").unwrap();
    let mut n = 0;
    let r = m.generate(&ids, &SamplingParams::greedy(16), |_| {
        n += 1;
        if n == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(matches!(r, Err(ModelError::Cancelled)));
    assert_eq!(n, 3);
}

#[test]
fn generation_refuses_overlong_requests() {
    let m = Model::builtin().unwrap();
    let ids = m.encode_prompt("hi").unwrap();
    let r = m.generate(&ids, &SamplingParams::greedy(600), cont);
    assert!(matches!(r, Err(ModelError::InvalidInput(_))));
}
