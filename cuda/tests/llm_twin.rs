//! Twin tests of the LLM kernels and engine: every kernel against a CPU computation on random
//! inputs, and the whole `CudaDecoder` against the CPU `Model` (logits, and greedy completions
//! that pass the validator's verification). They need a GPU and run only with
//! POLYLITH_GPU_TESTS=1; elsewhere each prints a SKIPPED line and passes. The last test runs
//! everywhere: without a GPU, building the engine is a typed error, not a panic.

use polylith_cuda::CudaError;
use polylith_cuda::llm::{
    self, CudaDecoder, LlmLimits, LlmOps, bf16_bits, bf16_value, rope_tables,
};
use polylith_model::{
    Decoder, LlamaConfig, Model, SamplingParams, builtin_config, generate_with, sampling, verify,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::ops::ControlFlow;

fn gpu_tests_enabled() -> bool {
    std::env::var("POLYLITH_GPU_TESTS").is_ok_and(|v| v == "1")
}

/// Whether to skip `name` (and say so).
fn skip(name: &str) -> bool {
    if gpu_tests_enabled() {
        return false;
    }
    eprintln!("SKIPPED {name}: no GPU (set POLYLITH_GPU_TESTS=1 on a GPU machine)");
    true
}

fn ops() -> LlmOps {
    LlmOps::new(0).unwrap_or_else(|e| panic!("POLYLITH_GPU_TESTS=1 but the device failed: {e}"))
}

fn rng(seed: u64) -> StdRng {
    eprintln!("seed {seed:#x}");
    StdRng::seed_from_u64(seed)
}

fn randn(r: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-scale..scale)).collect()
}

/// Largest |a − b| / (atol + |b|) over the pair, with a readable failure.
fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (|err| {err:.3e})"
        );
    }
}

fn small_config() -> LlamaConfig {
    LlamaConfig {
        num_attention_heads: 6,
        num_key_value_heads: 2,
        head_dim: 40,
        ..builtin_config()
    }
}

#[test]
fn embed_gathers_bf16_rows_exactly() {
    if skip("embed_gathers_bf16_rows_exactly") {
        return;
    }
    let mut r = rng(1);
    let (vocab, hidden) = (300, 64);
    let table: Vec<u16> = randn(&mut r, vocab * hidden, 2.0)
        .into_iter()
        .map(bf16_bits)
        .collect();
    let tokens: Vec<u32> = (0..9).map(|_| r.random_range(0..vocab as u32)).collect();
    let got = ops().embed(&table, hidden, &tokens).expect("embed");
    let want: Vec<f64> = tokens
        .iter()
        .flat_map(|&t| (0..hidden).map(move |i| (t as usize, i)))
        .map(|(t, i)| f64::from(bf16_value(table[t * hidden + i])))
        .collect();
    assert_close("embed", &got, &want, 0.0, 0.0);
}

#[test]
fn rmsnorm_matches_the_cpu_formula() {
    if skip("rmsnorm_matches_the_cpu_formula") {
        return;
    }
    let mut r = rng(2);
    for hidden in [192, 2048, 40] {
        let rows = 5;
        let x = randn(&mut r, rows * hidden, 3.0);
        let w: Vec<f32> = (0..hidden).map(|_| r.random_range(0.6..1.4)).collect();
        let eps = 1e-5f32;
        let got = ops().rmsnorm(&x, &w, eps).expect("rmsnorm");
        let mut want = Vec::new();
        for row in x.chunks(hidden) {
            let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / hidden as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            want.extend(
                row.iter()
                    .zip(&w)
                    .map(|(&v, &g)| f64::from(v) * inv * f64::from(g)),
            );
        }
        assert_close(&format!("rmsnorm h={hidden}"), &got, &want, 1e-5, 1e-5);
    }
}

/// Both the matrix-vector path (t ≤ 8) and the tiled matmul (t > 8), with and without bias and
/// residual, on shapes with partial tiles.
#[test]
fn linear_matches_a_cpu_product_of_the_same_bf16_weights() {
    if skip("linear_matches_a_cpu_product_of_the_same_bf16_weights") {
        return;
    }
    let mut r = rng(3);
    let o = ops();
    for (t, n, k) in [
        (1, 260, 192),
        (3, 37, 64),
        (8, 100, 512),
        (9, 65, 40),
        (70, 130, 200),
    ] {
        let x = randn(&mut r, t * k, 2.0);
        let w: Vec<u16> = randn(&mut r, n * k, 0.1)
            .into_iter()
            .map(bf16_bits)
            .collect();
        let bias = randn(&mut r, n, 1.0);
        let res = randn(&mut r, t * n, 1.0);
        for (use_bias, use_res) in [(false, false), (true, true)] {
            let got = o
                .linear(
                    &x,
                    &w,
                    use_bias.then_some(&bias[..]),
                    use_res.then_some(&res[..]),
                    n,
                )
                .expect("linear");
            let mut want = Vec::with_capacity(t * n);
            for ti in 0..t {
                for ni in 0..n {
                    let mut acc: f64 = (0..k)
                        .map(|ki| f64::from(x[ti * k + ki]) * f64::from(bf16_value(w[ni * k + ki])))
                        .sum();
                    if use_bias {
                        acc += f64::from(bias[ni]);
                    }
                    if use_res {
                        acc += f64::from(res[ti * n + ni]);
                    }
                    want.push(acc);
                }
            }
            // f32 accumulation of k terms of size ≤ 0.2: absolute error well below 1e-4.
            assert_close(&format!("linear {t}×{n}×{k}"), &got, &want, 1e-4, 1e-5);
        }
    }
}

/// CPU rotary embedding of one head vector, HF rotate_half convention.
fn rope_cpu(x: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f64> {
    let half = x.len() / 2;
    let mut out = vec![0.0; x.len()];
    for d in 0..half {
        let (x1, x2) = (f64::from(x[d]), f64::from(x[d + half]));
        let (c, s) = (f64::from(cos[d]), f64::from(sin[d]));
        out[d] = x1 * c - x2 * s;
        out[d + half] = x2 * c + x1 * s;
    }
    out
}

#[test]
fn rope_rotates_q_and_k_and_writes_the_cache_at_each_tokens_slot_and_position() {
    if skip("rope_rotates_q_and_k_and_writes_the_cache_at_each_tokens_slot_and_position") {
        return;
    }
    let mut r = rng(4);
    let c = small_config();
    let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let (slots, max_pos) = (3, 50);
    let tok_slot = [0u32, 2, 2, 1];
    let tok_pos = [0u32, 17, 18, 49];
    let width = (nh + 2 * nkv) * hd;
    let qkv = randn(&mut r, tok_slot.len() * width, 2.0);
    let got = ops()
        .rope_kv(&c, &qkv, &tok_slot, &tok_pos, slots, max_pos)
        .expect("rope_kv");
    let (cos, sin) = rope_tables(&c, max_pos);
    let half = hd / 2;
    let mut written = vec![false; slots * nkv * max_pos];
    for (t, (&s, &p)) in tok_slot.iter().zip(&tok_pos).enumerate() {
        let (cs, sn) = (
            &cos[p as usize * half..][..half],
            &sin[p as usize * half..][..half],
        );
        let row = &qkv[t * width..][..width];
        for h in 0..nh {
            let want = rope_cpu(&row[h * hd..][..hd], cs, sn);
            assert_close("q", &got.q[(t * nh + h) * hd..][..hd], &want, 1e-6, 1e-6);
        }
        for h in 0..nkv {
            let at = ((s as usize * nkv + h) * max_pos + p as usize) * hd;
            written[at / hd] = true;
            let want = rope_cpu(&row[(nh + h) * hd..][..hd], cs, sn);
            assert_close("k", &got.k_cache[at..][..hd], &want, 1e-6, 1e-6);
            let want: Vec<f64> = row[(nh + nkv + h) * hd..][..hd]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            assert_close("v", &got.v_cache[at..][..hd], &want, 0.0, 0.0);
        }
    }
    // Nothing else was written.
    for (i, w) in written.iter().enumerate() {
        if !w {
            assert!(
                got.k_cache[i * hd..][..hd].iter().all(|&v| v == 0.0),
                "stray key write at {i}"
            );
            assert!(
                got.v_cache[i * hd..][..hd].iter().all(|&v| v == 0.0),
                "stray value write at {i}"
            );
        }
    }
}

/// Causal grouped-query attention with the splits merged, for decode-like and prefill-like
/// positions, against a naive f64 softmax.
#[test]
fn attention_matches_a_naive_grouped_query_softmax_for_every_split_length() {
    if skip("attention_matches_a_naive_grouped_query_softmax_for_every_split_length") {
        return;
    }
    let mut r = rng(5);
    let c = small_config();
    let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let (slots, max_pos) = (2, 300);
    let kc = randn(&mut r, slots * nkv * max_pos * hd, 1.0);
    let vc = randn(&mut r, slots * nkv * max_pos * hd, 1.0);
    let tok_slot = [0u32, 1, 1, 0, 1];
    let tok_pos = [0u32, 5, 6, 299, 130];
    let q = randn(&mut r, tok_slot.len() * nh * hd, 1.0);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut want = Vec::new();
    for (t, (&s, &p)) in tok_slot.iter().zip(&tok_pos).enumerate() {
        for h in 0..nh {
            let kvh = h / (nh / nkv);
            let qv = &q[(t * nh + h) * hd..][..hd];
            let base = (s as usize * nkv + kvh) * max_pos;
            let scores: Vec<f64> = (0..=p as usize)
                .map(|j| {
                    let kr = &kc[(base + j) * hd..][..hd];
                    qv.iter()
                        .zip(kr)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                want.push(
                    e.iter()
                        .enumerate()
                        .map(|(j, w)| w * f64::from(vc[(base + j) * hd + d]))
                        .sum::<f64>()
                        / z,
                );
            }
        }
    }
    for split in [1, 7, 64, 256, 1000] {
        let got = ops()
            .attention(&c, &q, &kc, &vc, &tok_slot, &tok_pos, max_pos, split)
            .expect("attention");
        assert_close(&format!("attention split {split}"), &got, &want, 1e-5, 1e-4);
    }
}

#[test]
fn swiglu_and_residual_add_match_the_cpu() {
    if skip("swiglu_and_residual_add_match_the_cpu") {
        return;
    }
    let mut r = rng(6);
    let inter = 96;
    let gu = randn(&mut r, 3 * 2 * inter, 6.0);
    let got = ops().swiglu(&gu, inter).expect("swiglu");
    let want: Vec<f64> = gu
        .chunks(2 * inter)
        .flat_map(|row| {
            (0..inter).map(move |j| {
                let g = f64::from(row[j]);
                g / (1.0 + (-g).exp()) * f64::from(row[inter + j])
            })
        })
        .collect();
    assert_close("swiglu", &got, &want, 1e-5, 1e-5);
    let (x, d) = (randn(&mut r, 1000, 5.0), randn(&mut r, 1000, 5.0));
    let got = ops().add(&x, &d).expect("add");
    let want: Vec<f64> = x.iter().zip(&d).map(|(&a, &b)| f64::from(a + b)).collect();
    assert_close("add", &got, &want, 0.0, 0.0);
}

#[test]
fn argmax_log_softmax_and_top_k_match_the_cpu_sampler() {
    if skip("argmax_log_softmax_and_top_k_match_the_cpu_sampler") {
        return;
    }
    let mut r = rng(7);
    let vocab = 32_000;
    let mut logits = randn(&mut r, 4 * vocab, 10.0);
    // Ties: the lowest id must win, on the device as on the CPU.
    logits[vocab + 100] = 50.0;
    logits[vocab + 7] = 50.0;
    logits[3 * vocab + 5] = f32::NAN;
    let o = ops();
    let got = o.argmax(&logits, vocab).expect("argmax");
    let want: Vec<u32> = logits.chunks(vocab).map(sampling::argmax).collect();
    assert_eq!(got, want, "argmax");
    assert_eq!(got[1], 7);

    let clean = &logits[..3 * vocab];
    let lp = o.log_softmax(clean, vocab).expect("log_softmax");
    let want: Vec<f64> = clean
        .chunks(vocab)
        .flat_map(sampling::log_softmax)
        .collect();
    assert_close("log_softmax", &lp, &want, 1e-5, 1e-6);

    let k = 20;
    let got = o.top_k(clean, vocab, k).expect("top_k");
    for (row, g) in clean.chunks(vocab).zip(&got) {
        let lp64: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let want = sampling::top_k(&lp64, k);
        let ids: Vec<u32> = g.iter().map(|p| p.0).collect();
        let want_ids: Vec<u32> = want.iter().map(|p| p.0).collect();
        assert_eq!(ids, want_ids, "top_k ids");
    }
}

fn builtin() -> Model {
    Model::builtin().expect("builtin model")
}

fn decoder(model: &Model) -> CudaDecoder {
    let limits = LlmLimits {
        max_sequences: 8,
        max_positions: model.config().max_position_embeddings,
    };
    CudaDecoder::new(0, model, limits)
        .unwrap_or_else(|e| panic!("POLYLITH_GPU_TESTS=1 but the CUDA decoder failed: {e}"))
}

/// Logits through the device, fed one token at a time and as prefills of several lengths,
/// equal the engine's CPU twin (same bf16 matrices: only summation order differs) tightly and
/// the f32 model within the verifier's per-logit tolerance.
#[test]
fn decoder_logits_match_the_cpu_model() {
    if skip("decoder_logits_match_the_cpu_model") {
        return;
    }
    let model = builtin();
    let rounded = polylith_cuda::llm::cpu_twin(&model).expect("bf16 twin");
    let cuda = decoder(&model);
    let prompt = model
        .encode_prompt("The quick brown fox jumps over the lazy dog, again and again.")
        .expect("prompt");
    let f32_rows = model.logits(&prompt).expect("cpu logits");
    let bf16_rows = rounded.logits(&prompt).expect("cpu bf16 logits");
    let tol = verify::Tolerances::default().logit;
    // Every prefix fed at once, and the whole prompt fed one token at a time.
    let mut seq = cuda.new_sequence().expect("sequence");
    for (i, &tok) in prompt.iter().enumerate() {
        let got = seq.feed(&[tok]).expect("decode step");
        let want_bf16: Vec<f64> = bf16_rows[i].iter().map(|&v| f64::from(v)).collect();
        assert_close(
            &format!("decode pos {i} vs bf16 CPU"),
            &got,
            &want_bf16,
            2e-2,
            1e-2,
        );
        let want_f32: Vec<f64> = f32_rows[i].iter().map(|&v| f64::from(v)).collect();
        assert_close(
            &format!("decode pos {i} vs f32 CPU"),
            &got,
            &want_f32,
            tol,
            0.0,
        );
    }
    for len in [1, 2, 17, prompt.len()] {
        let mut s = cuda.new_sequence().expect("sequence");
        let got = s.feed(&prompt[..len]).expect("prefill");
        let want: Vec<f64> = bf16_rows[len - 1].iter().map(|&v| f64::from(v)).collect();
        assert_close(
            &format!("prefill len {len} vs bf16 CPU"),
            &got,
            &want,
            2e-2,
            1e-2,
        );
    }
}

/// Greedy completions generated through the device pass the CPU validator's verification on
/// ≥ 99 % of tokens, from several threads at once (so the feeds are batched).
#[test]
fn greedy_cuda_completions_pass_cpu_verification() {
    if skip("greedy_cuda_completions_pass_cpu_verification") {
        return;
    }
    let model = builtin();
    let cuda = decoder(&model);
    let prompts = [
        "Once upon a time",
        "fn main() {",
        "The capital of France is",
        "1, 2, 3, 4,",
        "Polylith miners",
        "a",
    ];
    let params = SamplingParams {
        top_logprobs: 3,
        ..SamplingParams::greedy(48)
    };
    let results: Vec<_> = std::thread::scope(|sc| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let (model, cuda, params) = (&model, &cuda, &params);
                sc.spawn(move || {
                    let ids = model.encode_prompt(p).expect("prompt");
                    let out =
                        generate_with(cuda, model, &ids, params, |_| ControlFlow::Continue(()))
                            .expect("generate");
                    (ids, out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let (mut checked, mut ok) = (0u32, 0u32);
    for (ids, out) in &results {
        let claim = verify::Claim {
            prompt_tokens: ids,
            tokens: &out.tokens,
            finish_reason: out.finish_reason.as_str(),
            model_hash: Some(model.hash()),
        };
        let report = verify::verify(&model, &claim, &params, &verify::Tolerances::default())
            .expect("verify");
        eprintln!("{report:?}");
        checked += report.tokens_checked;
        ok += report.tokens_matched + report.near_ties;
        assert!(
            report.passed,
            "completion failed verification: {}",
            report.detail
        );
    }
    assert!(checked > 0);
    assert!(
        f64::from(ok) >= 0.99 * f64::from(checked),
        "{ok}/{checked} tokens verified"
    );
    assert_eq!(cuda.active_sequences(), 0, "every slot is released");
}

/// Limits are typed errors: too many open sequences, and a sequence past the KV cache.
#[test]
fn limits_are_typed_errors_not_panics() {
    if skip("limits_are_typed_errors_not_panics") {
        return;
    }
    let model = builtin();
    let cuda = CudaDecoder::new(
        0,
        &model,
        LlmLimits {
            max_sequences: 2,
            max_positions: 8,
        },
    )
    .expect("decoder");
    let a = cuda.new_sequence().expect("first");
    let _b = cuda.new_sequence().expect("second");
    assert!(
        cuda.new_sequence().is_err(),
        "a third sequence must be refused"
    );
    drop(a);
    let mut c = cuda.new_sequence().expect("a slot was freed");
    c.feed(&[1, 2, 3, 4, 5, 6, 7, 8]).expect("fits exactly");
    assert!(c.feed(&[9]).is_err(), "past max_positions");
    assert!(cuda.new_sequence().is_err());
    let mut batch_err = cuda.new_batch(1);
    assert!(batch_err.is_err(), "no slot left for a batch");
    drop(c);
    batch_err = cuda.new_batch(1);
    let mut batch = batch_err.expect("batch");
    assert!(
        batch.decode(&[u32::MAX]).is_err(),
        "token outside the vocabulary"
    );
    let logits = batch.decode(&[5]).expect("decode");
    let greedy = batch
        .decode_greedy(&[sampling::argmax(&logits[0])])
        .expect("greedy");
    assert_eq!(greedy.len(), 1);
}

/// Batched decode of different sequences gives each the logits it gets alone.
#[test]
fn batched_decode_equals_single_sequence_decode() {
    if skip("batched_decode_equals_single_sequence_decode") {
        return;
    }
    let model = builtin();
    let cuda = decoder(&model);
    let prompts: Vec<Vec<u32>> = ["alpha", "beta gamma delta", "x"]
        .iter()
        .map(|p| model.encode_prompt(p).expect("prompt"))
        .collect();
    let mut batch = cuda.new_batch(3).expect("batch");
    let first = batch.prefill(&prompts).expect("prefill");
    let next: Vec<u32> = first.iter().map(|l| sampling::argmax(l)).collect();
    let batched = batch.decode(&next).expect("decode");
    drop(batch);
    for (i, p) in prompts.iter().enumerate() {
        let mut s = cuda.new_sequence().expect("sequence");
        s.feed(p).expect("prefill");
        let alone = s.feed(&[next[i]]).expect("decode");
        let want: Vec<f64> = alone.iter().map(|&v| f64::from(v)).collect();
        assert_close(&format!("sequence {i}"), &batched[i], &want, 1e-4, 1e-4);
    }
}

/// Decode steps replayed from a CUDA graph give the logits of plain launches.
#[test]
fn graph_replay_equals_plain_launches() {
    if skip("graph_replay_equals_plain_launches") {
        return;
    }
    let model = builtin();
    let cuda = decoder(&model);
    let prompts: Vec<Vec<u32>> = ["graphs", "and plain launches"]
        .iter()
        .map(|p| model.encode_prompt(p).expect("prompt"))
        .collect();
    let mut runs = Vec::new();
    for graphs in [false, true] {
        cuda.set_cuda_graphs(graphs);
        let mut batch = cuda.new_batch(2).expect("batch");
        let first = batch.prefill(&prompts).expect("prefill");
        let mut next: Vec<u32> = first.iter().map(|l| sampling::argmax(l)).collect();
        let mut all = Vec::new();
        for _ in 0..6 {
            let logits = batch.decode(&next).expect("decode");
            next = logits.iter().map(|l| sampling::argmax(l)).collect();
            all.extend(logits.into_iter().flatten());
        }
        assert_eq!(cuda.cuda_graphs(), graphs, "capture must not fail on a GPU");
        runs.push(all);
    }
    let want: Vec<f64> = runs[0].iter().map(|&v| f64::from(v)).collect();
    assert_close("graph vs plain", &runs[1], &want, 1e-5, 1e-5);
}

/// Runs everywhere: without a GPU the engine is a typed error; with one it must not panic.
#[test]
fn cuda_decoder_without_a_gpu_is_a_typed_error() {
    let model = builtin();
    match CudaDecoder::new(0, &model, LlmLimits::default()) {
        Ok(d) => eprintln!("a GPU is present: {}", d.device_name()),
        Err(e) => assert!(
            matches!(
                e,
                CudaError::DriverMissing | CudaError::NvrtcMissing | CudaError::NoDevice { .. }
            ),
            "expected a missing-device error, got {e}"
        ),
    }
    assert!(CudaDecoder::new(4096, &model, LlmLimits::default()).is_err());
    assert!(LlmOps::new(4096).is_err());
    let cfg = llm::synthetic_1b_config();
    assert!(CudaDecoder::synthetic(4096, &cfg, 1, LlmLimits::default()).is_err());
}
