//! The miner's front door under attack: forged headers with bodies that never arrive, slow
//! bodies from registered validators, a low-stake validator filling its share, clients that
//! leave mid-task, and requests replayed across a miner restart.

mod common;

use common::{Keys, MIN_STAKE, STAKE, TestMiner, error_reason, neuron, test_config};
use polylith_miner::{Clock, MinerConfig};
use polylith_protocol::gemm::{CommitRequest, Dtype, GemmSpec};
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::{Metagraph, Role};
use polylith_protocol::signing::RequestEnvelope;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Opens a raw connection and sends a POST with `headers`, a `content-length` of
/// `declared` and only `sent` of the body: the rest never comes unless the caller writes it.
async fn raw_post(
    m: &TestMiner,
    path: &str,
    headers: &[(&'static str, String)],
    declared: usize,
    sent: &[u8],
) -> TcpStream {
    let addr = m.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {declared}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Reads one HTTP/1.1 response (status and body) within `wait`; `None` when none came.
async fn read_response(stream: &mut TcpStream, wait: Duration) -> Option<(u16, Vec<u8>)> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                while buf.len() < end + 4 + length {
                    let n = stream.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                return Some((status, buf[end + 4..end + 4 + length].to_vec()));
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(wait, read).await.ok().flatten()
}

/// Posts a signed small task and returns the status, failing if it takes longer than `within`.
async fn served_within(m: &TestMiner, key: &Hotkey, seed: u64, within: Duration) -> u16 {
    let started = Instant::now();
    let value: serde_json::Value = serde_json::from_slice(&small_task(seed)).unwrap();
    let (status, body, _, _) = tokio::time::timeout(within, m.call(key, COMMIT, &value))
        .await
        .unwrap_or_else(|_| panic!("an honest request was not answered within {within:?}"));
    assert_eq!(
        status,
        200,
        "honest request after {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&body)
    );
    status
}

/// Waits up to a second for metric `name` to read `want`, then asserts it does.
async fn settles_to(m: &TestMiner, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut got = m.metric(name).await;
    while got != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        got = m.metric(name).await;
    }
    assert_eq!(got, want, "{name}");
}

/// Forged-but-well-formed envelopes (a registered validator's address with another key's
/// signature, a stranger's own signature, an under-staked validator) whose bodies never
/// arrive are refused from the headers alone, so they hold no slot and the honest request
/// is served at once.
#[tokio::test]
async fn forged_headers_with_missing_bodies_do_not_hold_slots() {
    let m = TestMiner::start(MinerConfig {
        max_concurrent: 1,
        max_queue: 1,
        ..test_config()
    })
    .await;
    let k = &m.keys;
    let body = small_task(1);
    let mut forged = Vec::new();
    for i in 0..8 {
        let headers = match i % 3 {
            0 => {
                let mut env = m.envelope(&k.validator, COMMIT, &body);
                env.signature = m.envelope(&k.stranger, COMMIT, &body).signature;
                env.to_headers()
            }
            1 => m.envelope(&k.stranger, COMMIT, &body).to_headers(),
            _ => m.envelope(&k.low_stake, COMMIT, &body).to_headers(),
        };
        forged.push((i, raw_post(&m, COMMIT, &headers, 100_000, b"{").await));
    }
    let mut statuses = Vec::new();
    for (i, stream) in &mut forged {
        let got = read_response(stream, Duration::from_millis(300)).await;
        statuses.push((*i, got.map(|(s, b)| (s, error_reason(&b)))));
    }
    served_within(&m, &k.validator, 2, Duration::from_secs(3)).await;
    for (i, got) in statuses {
        let expected = match i % 3 {
            0 => (401, "bad_signature"),
            1 => (403, "unknown_sender"),
            _ => (403, "insufficient_stake"),
        };
        let (status, reason) = got.expect("a forged request got no answer before its body");
        assert_eq!((status, reason.as_str()), expected);
    }
    assert_eq!(m.metric("polylith_miner_queue_depth").await, 0.0);
    drop(forged);
    m.shutdown().await;
}

/// A registered validator that sends its body slower than `body_read_timeout_ms` gets a
/// 408 `body_timeout`, and its slot (its only one here) is free for its next request.
#[tokio::test]
async fn slow_body_gets_a_timeout_and_releases_its_slot() {
    let m = TestMiner::start(MinerConfig {
        max_concurrent: 1,
        max_queue: 0,
        body_read_timeout_ms: 300,
        ..test_config()
    })
    .await;
    let body = small_task(3);
    let headers = m.envelope(&m.keys.validator, COMMIT, &body).to_headers();
    let started = Instant::now();
    let mut slow = raw_post(&m, COMMIT, &headers, body.len(), &body[..body.len() / 2]).await;
    let (status, reply) = read_response(&mut slow, Duration::from_secs(3))
        .await
        .expect("no answer to a body that stopped halfway");
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&reply));
    assert_eq!(error_reason(&reply), "body_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "the body deadline fired after {took:?}"
    );
    assert_eq!(m.rejections("body_timeout").await, 1.0);
    assert_eq!(m.metric("polylith_miner_queue_depth").await, 0.0);
    served_within(&m, &m.keys.validator, 4, Duration::from_secs(3)).await;
    m.shutdown().await;
}

/// A minimum-stake validator holds at most its stake share of places (one here): its
/// further stalled requests are refused at once, and a high-stake validator is served.
#[tokio::test]
async fn a_low_stake_validator_cannot_take_a_high_stake_validators_slots() {
    let m = TestMiner::start_with_metagraph(
        MinerConfig {
            max_concurrent: 2,
            max_queue: 4,
            body_read_timeout_ms: 20_000,
            ..test_config()
        },
        |k: &Keys| Metagraph {
            netuid: 1,
            neurons: vec![
                neuron(0, &k.validator, Role::Validator, STAKE),
                neuron(1, &k.validator2, Role::Validator, STAKE),
                neuron(2, &k.low_stake, Role::Validator, MIN_STAKE),
                neuron(3, &k.miner, Role::Miner, 0),
            ],
        },
    )
    .await;
    let body = small_task(5);
    let limit = m.config.max_concurrent + m.config.max_queue;
    let mut stalled = Vec::new();
    for _ in 0..limit {
        let headers = m.envelope(&m.keys.low_stake, COMMIT, &body).to_headers();
        stalled.push(raw_post(&m, COMMIT, &headers, body.len(), b"{").await);
    }
    // Its first request holds its one place; every other one is refused without waiting.
    let mut refused = 0;
    for stream in &mut stalled {
        if let Some((status, reply)) = read_response(stream, Duration::from_millis(300)).await {
            assert_eq!(status, 503, "{}", String::from_utf8_lossy(&reply));
            assert_eq!(error_reason(&reply), "overloaded");
            refused += 1;
        }
    }
    assert_eq!(
        refused,
        limit - 1,
        "the low-stake validator's share is one place"
    );
    served_within(&m, &m.keys.validator, 6, Duration::from_secs(3)).await;
    drop(stalled);
    m.shutdown().await;
}

/// A client that gives up on a long LLM generation frees its compute slot: generation stops,
/// and the next task (here a GEMM commit, which needs that only slot) is served promptly.
#[tokio::test]
async fn a_dropped_client_releases_its_slot_and_stops_its_generation() {
    let m = TestMiner::start(MinerConfig {
        max_concurrent: 1,
        max_queue: 1,
        model: Some("builtin".into()),
        ..test_config()
    })
    .await;
    let long = serde_json::json!({"prompt": "Go on", "max_tokens": 480, "temperature": 1.0,
                                  "seed": 3});
    let body = serde_json::to_vec(&long).unwrap();
    let env = m.envelope(&m.keys.validator, "/v1/completions", &body);
    let mut req = m
        .client
        .post(format!("{}/v1/completions", m.base))
        .timeout(Duration::from_millis(400))
        .body(body);
    for (name, value) in env.to_headers() {
        req = req.header(name, value);
    }
    let gave_up = req.send().await;
    assert!(
        gave_up.as_ref().is_err_and(|e| e.is_timeout()),
        "the long generation should still be running when the client leaves: {gave_up:?}"
    );
    served_within(&m, &m.keys.validator2, 7, Duration::from_secs(2)).await;
    // A place is given back when the reply is done, which the client may see a moment
    // before the server has finished with it, so the gauge is read until it settles.
    settles_to(&m, "polylith_miner_queue_depth", 0.0).await;
    // The abandoned generation was stopped early, and counted as such.
    settles_to(&m, "polylith_miner_cancelled_total{task=\"llm\"}", 1.0).await;
    m.shutdown().await;
}

/// A request signed before the miner (re)started is refused: the nonce cache is empty after
/// a restart, so only its start time keeps a captured request from being served twice.
#[tokio::test]
async fn a_request_signed_before_a_restart_is_refused_after_it() {
    let m = TestMiner::start(test_config()).await;
    let body = small_task(8);
    let served = m.envelope(&m.keys.validator, COMMIT, &body);
    let never_sent = m.envelope(&m.keys.validator, COMMIT, &body);
    let resp = m.post_with(COMMIT, served.to_headers(), body.clone()).await;
    assert_eq!(resp.status().as_u16(), 200);
    // Both envelopes carry a timestamp strictly before the new miner's start.
    m.clock.advance_ms(1);
    let m = m.restart().await;
    assert!(served.timestamp_ms < m.clock.now_ms());
    for env in [&served, &never_sent] {
        let resp = m.post_with(COMMIT, env.to_headers(), body.clone()).await;
        let status = resp.status().as_u16();
        let reply = resp.bytes().await.unwrap();
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&reply));
        assert_eq!(error_reason(&reply), "stale_timestamp");
        let message: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert!(
            message["message"]
                .as_str()
                .unwrap()
                .contains("before this miner started"),
            "{message}"
        );
    }
    // A request signed after the restart is served.
    let fresh = RequestEnvelope::sign(
        &m.keys.validator,
        &m.miner_pk,
        "POST",
        COMMIT,
        &body,
        m.now_ms(),
    );
    let resp = m.post_with(COMMIT, fresh.to_headers(), body).await;
    assert_eq!(resp.status().as_u16(), 200);
    m.shutdown().await;
}

/// Nonces are recorded only after the signature and metagraph checks: a cache with room for
/// two nonces still takes two honest requests after many forged and stranger requests.
#[tokio::test]
async fn strangers_do_not_fill_the_nonce_cache() {
    let m = TestMiner::start(MinerConfig {
        nonce_cache_capacity: 2,
        ..test_config()
    })
    .await;
    let body = small_task(9);
    for _ in 0..4 {
        let stranger = m.envelope(&m.keys.stranger, COMMIT, &body);
        let mut forged = m.envelope(&m.keys.validator, COMMIT, &body);
        forged.signature = stranger.signature.clone();
        for env in [stranger, forged] {
            let resp = m.post_with(COMMIT, env.to_headers(), body.clone()).await;
            assert!(matches!(resp.status().as_u16(), 401 | 403));
        }
    }
    served_within(&m, &m.keys.validator, 10, Duration::from_secs(3)).await;
    served_within(&m, &m.keys.validator2, 11, Duration::from_secs(3)).await;
    m.shutdown().await;
}
