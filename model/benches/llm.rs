//! CPU cost of the LLM task with the builtin model at batch 1: one generation (prefill + decode
//! with the KV cache) and one verification (a single teacher-forced pass plus the checks) of
//! the same completion. tokens/s = tokens / generate time; verification cost relative to
//! generation = verify time / generate time.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use polylith_model::verify::{Claim, Tolerances, verify};
use polylith_model::{Model, SamplingParams, prompts};
use std::hint::black_box;
use std::ops::ControlFlow;

fn bench(c: &mut Criterion) {
    let model = Model::builtin().expect("builtin model");
    let prompt = model
        .encode_prompt(&prompts::generate(1, 0))
        .expect("prompt");
    for (n, temperature) in [(32u32, 0.0f32), (64, 0.0), (64, 0.8)] {
        let params = SamplingParams {
            max_tokens: n,
            temperature,
            top_p: 0.95,
            seed: 7,
            stop: vec![],
            top_logprobs: 3,
        };
        let mut group = c.benchmark_group(format!("builtin_t{temperature}_{n}tok"));
        group.throughput(Throughput::Elements(u64::from(n)));
        group.sample_size(20);
        group.bench_function("generate", |b| {
            b.iter(|| {
                model
                    .generate(black_box(&prompt), &params, |_| ControlFlow::Continue(()))
                    .expect("generate")
            })
        });
        let out = model
            .generate(&prompt, &params, |_| ControlFlow::Continue(()))
            .expect("generate");
        assert_eq!(
            out.tokens.len(),
            n as usize,
            "bench needs full-length completions"
        );
        let claim = Claim {
            prompt_tokens: &prompt,
            tokens: &out.tokens,
            finish_reason: out.finish_reason.as_str(),
            model_hash: Some(model.hash()),
        };
        group.bench_function("verify", |b| {
            b.iter(|| {
                let r = verify(&model, black_box(&claim), &params, &Tolerances::default())
                    .expect("verify");
                assert!(r.passed);
                r
            })
        });
        group.finish();
    }
    c.bench_function("builtin_load", |b| {
        b.iter(|| Model::builtin().expect("builtin"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
