//! The LLM endpoints on the real router with the builtin model: completions and chat,
//! streaming with the receipt as the final event, logprobs, errors, and the adversaries'
//! outputs failing `polylith_model::verify`.

mod common;

use common::{TestMiner, error_reason, test_config};
use polylith_miner::{Behaviour, MinerConfig};
use polylith_model::{Claim, Model, ModelId, SamplingParams, Tolerances, verify};
use polylith_protocol::llm::{CompletionResponse, StreamChunk};
use polylith_protocol::signing::Receipt;
use serde_json::json;

async fn llm_miner(behaviour: Behaviour) -> TestMiner {
    TestMiner::start(MinerConfig {
        model: Some("builtin".into()),
        behaviour,
        slow_delay_ms: 0,
        ..test_config()
    })
    .await
}

fn model_id(hex_str: &str) -> ModelId {
    ModelId(hex::decode(hex_str).unwrap().try_into().unwrap())
}

/// Verifies a response against the reference model with the request's parameters.
fn verdict(reference: &Model, r: &CompletionResponse, params: &SamplingParams) -> bool {
    let claim = Claim {
        prompt_tokens: &r.polylith.prompt_token_ids,
        tokens: &r.polylith.tokens,
        finish_reason: &r.polylith.finish_reason,
        model_hash: Some(model_id(&r.polylith.model_hash)),
    };
    verify::verify(reference, &claim, params, &Tolerances::default())
        .unwrap()
        .passed
}

#[tokio::test]
async fn completion_matches_the_reference_model_with_receipt_and_usage() {
    let m = llm_miner(Behaviour::Honest).await;
    let reference = Model::builtin().unwrap();
    let body = json!({"model": "builtin", "prompt": "Hello", "max_tokens": 8,
                      "temperature": 0.7, "seed": 9, "logprobs": 3});
    let (status, bytes, receipt, hash) = m.call(&m.keys.validator, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let r: CompletionResponse = serde_json::from_slice(&bytes).unwrap();
    let receipt: Receipt = receipt.unwrap();
    receipt.verify(&m.miner_pk, &hash, &bytes).unwrap();
    assert_eq!(receipt.model_hash, reference.hash().to_string());
    assert_eq!(receipt.tokens, r.usage.completion_tokens as u64);
    assert_eq!(r.usage.prompt_tokens, 6);
    assert!(r.usage.completion_tokens <= 8);
    let lp = r.choices[0].logprobs.as_ref().expect("logprobs requested");
    assert!(lp.iter().all(|t| t.top_logprobs.len() == 3));
    let mut params = SamplingParams::greedy(8);
    params.temperature = 0.7;
    params.seed = 9;
    params.top_logprobs = 3;
    assert!(verdict(&reference, &r, &params));
    assert_eq!(
        m.metric("polylith_miner_tokens_served_total").await,
        r.usage.completion_tokens as f64
    );
    m.shutdown().await;
}

#[tokio::test]
async fn chat_stream_ends_with_a_receipt_over_the_streamed_bytes() {
    let m = llm_miner(Behaviour::Honest).await;
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                      "temperature": 0.0, "stream": true});
    let (resp, hash) = m
        .post_signed(
            &m.keys.validator,
            "/v1/chat/completions",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let (events, tail) = text
        .split_once("event: receipt\n")
        .expect("a receipt event");
    let receipt_json = tail
        .strip_prefix("data: ")
        .and_then(|t| t.split_once("\n\n"))
        .map(|(j, _)| j)
        .unwrap();
    assert!(tail.ends_with("data: [DONE]\n\n"), "{tail}");
    let receipt: Receipt = serde_json::from_str(receipt_json).unwrap();
    receipt
        .verify(&m.miner_pk, &hash, events.as_bytes())
        .unwrap();
    let chunks: Vec<StreamChunk> = events
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert!(!chunks.is_empty() && chunks.len() <= 5);
    assert_eq!(receipt.tokens, chunks.len() as u64);
    assert!(chunks.last().unwrap().finish_reason.is_some());
    m.shutdown().await;
}

#[tokio::test]
async fn bad_requests_unknown_models_and_no_model_are_clear_errors() {
    let m = llm_miner(Behaviour::Honest).await;
    let cases = [
        (
            json!({"prompt": "x", "model": "gpt-9"}),
            404,
            "unknown_model",
        ),
        (
            json!({"prompt": "x", "temperature": -1.0}),
            400,
            "bad_params",
        ),
        (json!({"prompt": "x", "top_p": 0.0}), 400, "bad_params"),
        (
            json!({"prompt": "x", "max_tokens": 100000}),
            400,
            "bad_params",
        ),
        (json!({"no_prompt": true}), 400, "malformed"),
        (json!({"prompt": "x", "logprobs": 21}), 400, "bad_params"),
        (json!({"prompt": "x", "stream": "yes"}), 400, "malformed"),
    ];
    for (body, status, reason) in cases {
        let (got, bytes, _, _) = m.call(&m.keys.validator, "/v1/completions", &body).await;
        assert_eq!(got, status, "{body}: {}", String::from_utf8_lossy(&bytes));
        assert_eq!(error_reason(&bytes), reason, "{body}");
    }
    m.shutdown().await;

    let m = TestMiner::start(MinerConfig {
        model: Some("none".into()),
        ..test_config()
    })
    .await;
    let (got, bytes, _, _) = m
        .call(
            &m.keys.validator,
            "/v1/completions",
            &json!({"prompt": "x"}),
        )
        .await;
    assert_eq!(got, 404);
    assert_eq!(error_reason(&bytes), "unknown_model");
    m.shutdown().await;
}

#[tokio::test]
async fn llm_adversaries_fail_verification() {
    let reference = Model::builtin().unwrap();
    let params = SamplingParams::greedy(12);
    for behaviour in [
        Behaviour::WrongModel,
        Behaviour::Truncated,
        Behaviour::RandomTokens,
    ] {
        let m = llm_miner(behaviour).await;
        let body = json!({"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0.0});
        let (status, bytes, _, _) = m.call(&m.keys.validator, "/v1/completions", &body).await;
        assert_eq!(status, 200);
        let r: CompletionResponse = serde_json::from_slice(&bytes).unwrap();
        assert!(
            !verdict(&reference, &r, &params),
            "{behaviour} passed verification"
        );
        m.shutdown().await;
    }
}

/// A real SSE client (eventsource-stream over reqwest's byte stream) receives every token as
/// its own event, and receives them before the response ends: the `slow` miner waits 1.5 s
/// after generating and before sending the receipt, so tokens that arrived early prove the
/// miner streams instead of buffering the completion.
#[tokio::test]
async fn sse_client_receives_tokens_before_the_completion_ends() {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    use std::time::{Duration, Instant};

    let m = TestMiner::start(MinerConfig {
        model: Some("builtin".into()),
        behaviour: Behaviour::Slow,
        slow_delay_ms: 1_500,
        slow_factor: 0.0,
        ..test_config()
    })
    .await;
    let body = json!({"prompt": "Stream me", "max_tokens": 12, "temperature": 0.0,
                      "stream": true, "logprobs": 2});
    let (resp, hash) = m
        .post_signed(
            &m.keys.validator,
            "/v1/completions",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let started = Instant::now();
    let mut events = resp.bytes_stream().eventsource();
    let mut chunks: Vec<(Duration, StreamChunk)> = Vec::new();
    let mut receipt: Option<(Duration, Receipt)> = None;
    let mut done = false;
    while let Some(ev) = events.next().await {
        let ev = ev.expect("well-formed SSE");
        match ev.event.as_str() {
            "receipt" => {
                receipt = Some((started.elapsed(), serde_json::from_str(&ev.data).unwrap()))
            }
            "message" if ev.data == "[DONE]" => done = true,
            "message" => chunks.push((started.elapsed(), serde_json::from_str(&ev.data).unwrap())),
            other => panic!("unexpected event {other}: {}", ev.data),
        }
    }
    assert!(done, "the stream ends with [DONE]");
    let (receipt_at, receipt) = receipt.expect("a receipt event");
    assert_eq!(chunks.len() as u64, receipt.tokens);
    assert!(!chunks.is_empty());
    for (i, (_, c)) in chunks.iter().enumerate() {
        assert_eq!(c.index as usize, i);
        assert_eq!(c.token.top_logprobs.len(), 2);
    }
    let first_at = chunks[0].0;
    assert!(
        receipt_at >= first_at + Duration::from_millis(1_000),
        "first token at {first_at:?}, receipt at {receipt_at:?}: tokens were not streamed early"
    );
    // The receipt still covers exactly what was streamed, whatever the client's framing.
    assert_eq!(
        receipt.model_hash,
        Model::builtin().unwrap().hash().to_string()
    );
    assert!(!receipt.request_hash.is_empty() && hash != [0u8; 32]);
    m.shutdown().await;
}
