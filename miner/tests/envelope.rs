//! Every envelope rejection on the real router: its HTTP status, its `error` reason and
//! its `polylith_miner_rejections_total{reason}` counter.

mod common;

use common::{TestMiner, error_reason, test_config};
use polylith_miner::{Behaviour, MinerConfig};
use polylith_protocol::gemm::{CommitRequest, Dtype, GemmSpec};
use polylith_protocol::keys::Hotkey;
use polylith_protocol::signing::{H_SIGNATURE, Rejection, RequestEnvelope};
use std::time::Duration;

const COMMIT: &str = "/v1/gemm/commit";

fn small_task(seed: u64) -> Vec<u8> {
    serde_json::to_vec(&CommitRequest {
        spec: GemmSpec {
            seed,
            n: 4,
            k: 8,
            m: 4,
        },
        dtype: Dtype::F32,
    })
    .unwrap()
}

/// Sends `headers`+`body`, expects `status` and `reason`, and the counter to go up by one.
async fn expect_rejection(
    m: &TestMiner,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    reason: &str,
) {
    let before = m.rejections(reason).await;
    let resp = m.post_with(COMMIT, headers, body).await;
    let got = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(
        got,
        status,
        "status for {reason}: {}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(error_reason(&bytes), reason);
    assert_eq!(
        m.rejections(reason).await,
        before + 1.0,
        "counter for {reason}"
    );
}

fn without(headers: Vec<(&'static str, String)>, name: &str) -> Vec<(&'static str, String)> {
    headers.into_iter().filter(|(n, _)| *n != name).collect()
}

fn replace(
    headers: Vec<(&'static str, String)>,
    name: &'static str,
    value: String,
) -> Vec<(&'static str, String)> {
    let mut h = without(headers, name);
    h.push((name, value));
    h
}

#[tokio::test]
async fn each_envelope_rejection_has_its_status_reason_and_counter() {
    let m = TestMiner::start(test_config()).await;
    let body = small_task(1);
    let sign = |key: &Hotkey, ts: u64| {
        RequestEnvelope::sign(key, &m.miner_pk, "POST", COMMIT, &body, ts).to_headers()
    };
    let now = m.now_ms();
    let k = &m.keys;

    // Missing signature header.
    let h = without(sign(&k.validator, now), H_SIGNATURE);
    let s = Rejection::MissingSignature.http_status();
    expect_rejection(&m, h, body.clone(), s, "missing_signature").await;

    // Empty signature.
    let h = replace(sign(&k.validator, now), H_SIGNATURE, String::new());
    expect_rejection(&m, h, body.clone(), s, "missing_signature").await;

    // Bad signature: a valid-looking signature by another key.
    let mut env = m.envelope(&k.validator, COMMIT, &body);
    let forged = m.envelope(&k.stranger, COMMIT, &body);
    env.signature = forged.signature;
    let s = Rejection::BadSignature.http_status();
    expect_rejection(&m, env.to_headers(), body.clone(), s, "bad_signature").await;

    // Wrong receiver: correctly signed, but for another miner.
    let h = RequestEnvelope::sign(
        &k.validator,
        &k.other_miner.public(),
        "POST",
        COMMIT,
        &body,
        now,
    )
    .to_headers();
    let s = Rejection::WrongReceiver.http_status();
    expect_rejection(&m, h, body.clone(), s, "wrong_receiver").await;

    // Timestamps outside the window, in both directions.
    let window = m.config.timestamp_window_ms;
    let s = Rejection::StaleTimestamp.http_status();
    let h = sign(&k.validator, now - window - 5_000);
    expect_rejection(&m, h, body.clone(), s, "stale_timestamp").await;
    let h = sign(&k.validator, now + window + 5_000);
    expect_rejection(&m, h, body.clone(), s, "stale_timestamp").await;

    // Replayed nonce: the first copy is served, the second refused.
    let h = sign(&k.validator, now);
    let first = m.post_with(COMMIT, h.clone(), body.clone()).await;
    assert_eq!(
        first.status().as_u16(),
        200,
        "{}",
        first.text().await.unwrap()
    );
    let s = Rejection::ReplayedNonce.http_status();
    expect_rejection(&m, h, body.clone(), s, "replayed_nonce").await;

    // Sender not in the metagraph, and a sender registered as a miner.
    let s = Rejection::UnknownSender.http_status();
    expect_rejection(
        &m,
        sign(&k.stranger, now),
        body.clone(),
        s,
        "unknown_sender",
    )
    .await;
    expect_rejection(
        &m,
        sign(&k.other_miner, now),
        body.clone(),
        s,
        "unknown_sender",
    )
    .await;

    // A validator below the minimum stake.
    let s = Rejection::InsufficientStake.http_status();
    expect_rejection(
        &m,
        sign(&k.low_stake, now),
        body.clone(),
        s,
        "insufficient_stake",
    )
    .await;

    // Body hash mismatch: signed for one body, sent with another.
    let s = Rejection::BodyHashMismatch.http_status();
    expect_rejection(
        &m,
        sign(&k.validator, now),
        small_task(2),
        s,
        "body_hash_mismatch",
    )
    .await;

    // A header that does not parse.
    let h = replace(
        sign(&k.validator, now),
        "x-polylith-timestamp",
        "soon".into(),
    );
    let s = Rejection::Malformed(String::new()).http_status();
    expect_rejection(&m, h, body.clone(), s, "malformed").await;

    m.shutdown().await;
}

#[tokio::test]
async fn oversized_body_is_413_and_malformed_json_is_400() {
    let m = TestMiner::start(MinerConfig {
        max_body_bytes: 1024,
        ..test_config()
    })
    .await;
    let big = vec![b' '; 4096];
    let h = m.envelope(&m.keys.validator, COMMIT, &big).to_headers();
    expect_rejection(&m, h, big, 413, "body_too_large").await;

    let junk = b"{\"spec\": not json".to_vec();
    let h = m.envelope(&m.keys.validator, COMMIT, &junk).to_headers();
    expect_rejection(&m, h, junk, 400, "malformed").await;

    // Valid JSON of the wrong shape is malformed too.
    let wrong = br#"{"spec": {"seed": 1}}"#.to_vec();
    let h = m.envelope(&m.keys.validator, COMMIT, &wrong).to_headers();
    expect_rejection(&m, h, wrong, 400, "malformed").await;
    m.shutdown().await;
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_get_503_at_once() {
    let m = TestMiner::start(MinerConfig {
        max_concurrent: 1,
        max_queue: 0,
        behaviour: Behaviour::Slow,
        slow_delay_ms: 1_500,
        ..test_config()
    })
    .await;
    let body = small_task(5);
    let h = m.envelope(&m.keys.validator, COMMIT, &body).to_headers();
    let first = {
        let client = m.client.clone();
        let url = format!("{}{}", m.base, COMMIT);
        let body = body.clone();
        tokio::spawn(async move {
            let mut req = client.post(url).body(body);
            for (n, v) in h {
                req = req.header(n, v);
            }
            req.send().await.unwrap().status().as_u16()
        })
    };
    // Wait until the first request holds the only slot.
    let mut held = false;
    for _ in 0..200 {
        if m.metric("polylith_miner_queue_depth").await >= 1.0 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held, "the first request never got admitted");
    let h = m.envelope(&m.keys.validator, COMMIT, &body).to_headers();
    let started = std::time::Instant::now();
    expect_rejection(&m, h, body.clone(), 503, "overloaded").await;
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "the refusal waited for the busy slot"
    );
    assert_eq!(first.await.unwrap(), 200);
    m.shutdown().await;
}
