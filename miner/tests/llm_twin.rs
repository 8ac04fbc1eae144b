//! One test body for the LLM engines: a miner on the CPU engine (always) and on the CUDA engine
//! (with `POLYLITH_GPU_TESTS=1` on a GPU machine) serves streamed completions in every sampling
//! mode, and the CPU validator's `polylith_model::verify` accepts at least 99% of the tokens
//! and 90% of the completions. Without a GPU, asking for the CUDA engine is a clear error.

mod common;

use common::{TestMiner, test_config};
use polylith_miner::{BackendKind, Behaviour, Miner, MinerConfig, MinerError};
use polylith_model::{Claim, GeneratedToken, Model, SamplingParams, Tolerances, prompts, verify};
use polylith_protocol::llm::{StreamChunk, parse_sse};
use serde_json::json;

fn gpu_tests_enabled() -> bool {
    std::env::var("POLYLITH_GPU_TESTS").is_ok_and(|v| v == "1")
}

/// (tokens passed, tokens checked, completions passed, completions) over 3 modes × 4 prompts.
async fn twin_body(backend: BackendKind) -> (u32, u32, u32, u32) {
    let m = TestMiner::start(MinerConfig {
        model: Some("builtin".into()),
        backend,
        ..test_config()
    })
    .await;
    let reference = Model::builtin().unwrap();
    let (mut passed, mut checked, mut ok, mut total) = (0, 0, 0, 0);
    for (temperature, top_p) in [(0.0f32, 1.0f32), (0.7, 0.9), (1.0, 1.0)] {
        for i in 0..4u64 {
            let prompt = prompts::generate(77, i);
            let seed = 1000 + i;
            let body = json!({"prompt": prompt, "max_tokens": 32, "temperature": temperature,
                              "top_p": top_p, "seed": seed, "logprobs": 20, "stream": true});
            let (resp, _) = m
                .post_signed(
                    &m.keys.validator,
                    "/v1/completions",
                    serde_json::to_vec(&body).unwrap(),
                )
                .await;
            assert_eq!(resp.status().as_u16(), 200);
            let text = resp.text().await.unwrap();
            let chunks: Vec<StreamChunk> = parse_sse(&text)
                .into_iter()
                .filter(|e| e.event.is_none() && e.data != "[DONE]")
                .map(|e| serde_json::from_str(&e.data).unwrap())
                .collect();
            let finish = chunks
                .last()
                .and_then(|c| c.finish_reason.clone())
                .expect("finish_reason on the last chunk");
            let tokens: Vec<GeneratedToken> = chunks.into_iter().map(|c| c.token).collect();
            let params = SamplingParams {
                max_tokens: 32,
                temperature,
                top_p,
                seed,
                stop: vec![],
                top_logprobs: 20,
            };
            let prompt_ids = reference.encode_prompt(&prompt).unwrap();
            let report = verify::verify(
                &reference,
                &Claim {
                    prompt_tokens: &prompt_ids,
                    tokens: &tokens,
                    finish_reason: &finish,
                    model_hash: Some(reference.hash()),
                },
                &params,
                &Tolerances::default(),
            )
            .unwrap();
            let n = tokens.len() as u32;
            checked += n;
            passed += if report.passed {
                n
            } else {
                report.first_failure.unwrap_or(0)
            };
            ok += u32::from(report.passed);
            total += 1;
            if !report.passed {
                eprintln!(
                    "{backend:?} T={temperature} prompt {i}: {:?} {}",
                    report.reason, report.detail
                );
            }
        }
    }
    m.shutdown().await;
    (passed, checked, ok, total)
}

fn assert_twin(name: &str, (passed, checked, ok, total): (u32, u32, u32, u32)) {
    eprintln!("{name}: {passed}/{checked} tokens, {ok}/{total} completions verified");
    assert!(checked > 0);
    assert!(
        f64::from(passed) >= 0.99 * f64::from(checked),
        "{name}: only {passed}/{checked} tokens verified"
    );
    assert!(
        f64::from(ok) >= 0.9 * f64::from(total),
        "{name}: only {ok}/{total} completions verified"
    );
}

#[tokio::test]
async fn cpu_engine_completions_pass_the_validators_verification() {
    assert_twin("cpu", twin_body(BackendKind::Cpu).await);
}

#[tokio::test]
async fn cuda_engine_completions_pass_the_validators_verification() {
    let name = "cuda_engine_completions_pass_the_validators_verification";
    if !gpu_tests_enabled() {
        eprintln!("SKIPPED {name}: no GPU (set POLYLITH_GPU_TESTS=1 on a GPU machine)");
        return;
    }
    assert_twin("cuda", twin_body(BackendKind::Cuda).await);
}

#[test]
fn cuda_engine_without_a_gpu_is_a_clear_error_not_a_panic() {
    let name = "cuda_engine_without_a_gpu_is_a_clear_error_not_a_panic";
    if gpu_tests_enabled() {
        eprintln!("SKIPPED {name}: POLYLITH_GPU_TESTS=1");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = common::Keys::new();
    let mg = dir.path().join("metagraph.toml");
    keys.metagraph().save(&mg).unwrap();
    let config = MinerConfig {
        model: Some("builtin".into()),
        backend: BackendKind::Cuda,
        behaviour: Behaviour::Honest,
        metagraph: mg,
        ..test_config()
    };
    let gemm = std::sync::Arc::new(polylith_miner::backend::CpuBackend::new());
    match Miner::new(config, keys.miner.clone(), gemm) {
        // A machine with a GPU but without the flag: starting is fine.
        Ok(_) => eprintln!("a GPU is present"),
        Err(e) => {
            assert!(matches!(e, MinerError::Backend(_)), "{e}");
            assert!(e.to_string().contains("CUDA"), "names the engine: {e}");
        }
    }
}
