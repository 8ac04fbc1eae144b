//! Hostile miners and peers against the validator's outbound calls: redirects (SSRF), stalled
//! openings and streams, one deadline per round, huge error text, endless or blank-line-free
//! SSE streams and a time to first token faked with an SSE comment. Every fake server is axum
//! on 127.0.0.1:0; every test is bounded to a few seconds.

mod common;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use common::*;
use futures::SinkExt;
use polylith_protocol::gemm::{CommitRequest, CommitResponse, OpenResponse, OpenedRow};
use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::llm::{GeneratedToken, StreamChunk};
use polylith_protocol::metagraph::Role;
use polylith_protocol::signing::{H_RECEIPT, Receipt, RequestEnvelope};
use polylith_validator::client::SignedClient;
use polylith_validator::task::MAX_MESSAGE_BYTES;
use polylith_validator::{FailureReason, RoundRecord, Validator, ValidatorConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A test server on loopback, stopped when dropped.
struct Server {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(app: Router) -> Server {
    let listener = loopback().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server { url, task }
}

/// A server that counts every request it receives (the target a redirect would reach).
async fn victim() -> (Server, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            StatusCode::OK
        }
    });
    (serve(app).await, hits)
}

/// A receipt for `covered` answering the signed request in `headers`.
fn receipt(key: &Hotkey, headers: &HeaderMap, path: &str, covered: &[u8], tokens: u64) -> String {
    let envelope = RequestEnvelope::from_headers(|n| headers.get(n)?.to_str().ok()).unwrap();
    let r = Receipt {
        miner: key.public().to_ss58(),
        request_hash: hex::encode(envelope.request_hash("POST", path)),
        response_hash: hex::encode(blake3::hash(covered).as_bytes()),
        model_hash: String::new(),
        received_ms: 0,
        compute_us: 1,
        ttft_us: 0,
        total_us: 1,
        tokens,
        signature: String::new(),
    }
    .sign(key);
    serde_json::to_string(&r).unwrap()
}

/// A 200 JSON answer with a valid receipt.
fn signed_json(
    key: &Hotkey,
    headers: &HeaderMap,
    path: &str,
    value: &impl serde::Serialize,
) -> Response {
    let body = serde_json::to_vec(value).unwrap();
    let r = receipt(key, headers, path, &body, 0);
    (StatusCode::OK, [(H_RECEIPT, r)], body).into_response()
}

/// Answers a commitment at once with a random root and the right row count: nothing is
/// computed, but the validator cannot tell until it opens rows.
fn instant_commit(key: &Hotkey, headers: &HeaderMap, body: &[u8]) -> Response {
    let req: CommitRequest = serde_json::from_slice(body).unwrap();
    let resp = CommitResponse {
        commitment_id: "c".into(),
        root: hex::encode(rand::random::<[u8; 32]>()),
        rows: req.spec.n,
    };
    signed_json(key, headers, "/v1/gemm/commit", &resp)
}

/// A streamed body sent by a task: the returned sender pushes chunks; dropping it ends the
/// stream.
fn streamed() -> (
    futures::channel::mpsc::Sender<Result<Bytes, std::io::Error>>,
    Response,
) {
    let (tx, rx) = futures::channel::mpsc::channel(4);
    let resp = (
        StatusCode::OK,
        [("content-type", "text/event-stream")],
        Body::from_stream(rx),
    )
        .into_response();
    (tx, resp)
}

/// One token chunk event.
fn token_event(index: u32, finish: Option<&str>) -> String {
    let c = StreamChunk {
        id: "x".into(),
        object: "text_completion".into(),
        index,
        text: "a".into(),
        token: GeneratedToken {
            id: 97,
            logprob: -1.0,
            top_logprobs: vec![],
        },
        finish_reason: finish.map(str::to_string),
        usage: None,
    };
    format!("data: {}\n\n", serde_json::to_string(&c).unwrap())
}

/// A validator (uid 0) over `miners` (uids 1..) and `peers` (validators after them), with
/// the test configuration adjusted by `tweak`.
fn validator(
    dir: &std::path::Path,
    miners: &[(&Hotkey, &str)],
    peers: &[(&Hotkey, &str)],
    tweak: impl FnOnce(&mut ValidatorConfig),
) -> Validator {
    let vkey = Hotkey::generate();
    let mut neurons = vec![neuron(
        0,
        &vkey,
        Role::Validator,
        STAKE,
        "http://127.0.0.1:9",
    )];
    let mut uid = 1u16;
    for (key, endpoint) in miners {
        neurons.push(neuron(uid, key, Role::Miner, 0, endpoint));
        uid += 1;
    }
    for (key, endpoint) in peers {
        neurons.push(neuron(uid, key, Role::Validator, STAKE, endpoint));
        uid += 1;
    }
    let mg = dir.join("metagraph.toml");
    write_metagraph(&mg, neurons);
    let mut config = test_config(dir, mg, "db");
    tweak(&mut config);
    Validator::new(config, vkey).unwrap()
}

fn reason(record: &RoundRecord, uid: u16, task: &str) -> Option<FailureReason> {
    record
        .outcomes
        .iter()
        .find(|o| o.uid == uid && o.task.as_str() == task)
        .unwrap_or_else(|| panic!("no {task} outcome for uid {uid}"))
        .failure
        .as_ref()
        .map(|f| f.reason)
}

fn client(max_body: usize) -> SignedClient {
    SignedClient::new(Hotkey::generate(), max_body).unwrap()
}

/// Issue 19.1: a miner or peer answering 3xx must not make the validator send anything
/// (least of all its signed request) anywhere else; the query fails with `redirect`.
#[tokio::test]
async fn redirects_are_refused_and_never_followed() {
    let (victim, hits) = victim().await;
    let location = format!("{}/steal", victim.url);
    let app = Router::new()
        .route(
            "/v1/weights",
            any({
                let l = location.clone();
                move || async move { (StatusCode::FOUND, [("location", l)]).into_response() }
            }),
        )
        .fallback(move || {
            let l = location.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", l)]).into_response() }
        });
    let hostile = serve(app).await;
    let miner = Hotkey::generate();
    let c = client(1 << 20);

    let f = c
        .post_signed(
            &hostile.url,
            &miner.public(),
            "/v1/gemm/commit",
            b"{}".to_vec(),
        )
        .await
        .unwrap_err();
    assert_eq!(f.reason, FailureReason::Redirect, "{f}");
    assert!(
        !f.message.contains(&victim.url),
        "the target is not echoed: {f}"
    );
    let f = c
        .post_signed_stream(
            &hostile.url,
            &miner.public(),
            "/v1/completions",
            b"{}".to_vec(),
        )
        .await
        .unwrap_err();
    assert_eq!(f.reason, FailureReason::Redirect, "{f}");
    let e = c
        .get(&hostile.url, "/v1/weights", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(e.contains("redirect"), "{e}");

    // Through a whole round: the miner's query and the peer fetch both stay put.
    let dir = tempfile::tempdir().unwrap();
    let peer = Hotkey::generate();
    let v = validator(
        dir.path(),
        &[(&miner, &hostile.url)],
        &[(&peer, &hostile.url)],
        |_| {},
    );
    let r = v.run_round().await;
    assert_eq!(reason(&r, 1, "gemm"), Some(FailureReason::Redirect));
    assert!(r.peers_used.is_empty());
    let snap = v.snapshot();
    let m = snap.miners.iter().find(|m| m.uid == 1).unwrap();
    assert_eq!(m.failures.get("redirect"), Some(&1));
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a redirect was followed");
}

/// Issue 19.5: a miner that commits at once and then holds its opening must not stretch the
/// round to the query deadline; an honest miner in the same round is still verified.
#[tokio::test]
async fn a_held_opening_fails_fast_without_stretching_the_round() {
    let key = Hotkey::generate();
    let k = key.clone();
    let app = Router::new()
        .route(
            "/v1/gemm/commit",
            post(move |headers: HeaderMap, body: Bytes| {
                let k = k.clone();
                async move { instant_commit(&k, &headers, &body) }
            }),
        )
        .route(
            "/v1/gemm/open",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                StatusCode::OK
            }),
        );
    let staller = serve(app).await;
    let honest = fake_miner(Behaviour::Honest).await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(
        dir.path(),
        &[(&key, &staller.url), (&honest.key, &honest.endpoint)],
        &[],
        |c| c.query_timeout_ms = 8_000,
    );
    let t = Instant::now();
    let r = v.run_round().await;
    let took = t.elapsed();
    assert_eq!(reason(&r, 1, "gemm"), Some(FailureReason::Timeout));
    assert_eq!(reason(&r, 2, "gemm"), None, "honest miner verified");
    assert!(
        took < Duration::from_secs(4),
        "a held opening stretched the round to {took:?} (deadline 8 s)"
    );
}

/// A stream that sends an SSE comment every 100 ms until the client leaves.
async fn trickle_stream() -> Response {
    let (mut tx, resp) = streamed();
    tokio::spawn(async move {
        while tx.send(Ok(Bytes::from_static(b": ping\n\n"))).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    resp
}

/// Issue 11.12 and 19.5: the GEMM and LLM queries of a round share one deadline, so a miner
/// that hangs (or trickles an endless stream) costs the round one timeout, not one per task.
#[tokio::test]
async fn one_deadline_covers_every_task_of_the_round() {
    // Hangs on every request.
    let hang = serve(Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        StatusCode::OK
    }))
    .await;
    // No GEMM (404 at once); its LLM stream sends a comment every 100 ms and never ends.
    let trickle = serve(
        Router::new()
            .route("/v1/completions", post(trickle_stream))
            .route("/v1/chat/completions", post(trickle_stream)),
    )
    .await;
    let (hk, tk) = (Hotkey::generate(), Hotkey::generate());
    let dir = tempfile::tempdir().unwrap();
    let v = validator(
        dir.path(),
        &[(&hk, &hang.url), (&tk, &trickle.url)],
        &[],
        |c| {
            c.query_timeout_ms = 2_000;
            c.task_weights.llm = 1.0;
        },
    );
    let t = Instant::now();
    let r = v.run_round().await;
    let took = t.elapsed();
    assert_eq!(reason(&r, 1, "gemm"), Some(FailureReason::Timeout));
    assert_eq!(reason(&r, 1, "llm"), Some(FailureReason::Timeout));
    assert_eq!(reason(&r, 2, "llm"), Some(FailureReason::Timeout));
    assert!(
        took < Duration::from_millis(3_200),
        "the round took {took:?}: the tasks waited in series (deadline 2 s)"
    );
}

/// Issue 11.4: megabytes of miner text (an error field, a debug-formatted answer) must not
/// reach the round record, the miner's `last_failure`, the state API or the database.
#[tokio::test]
async fn huge_miner_text_is_bounded_everywhere_it_is_kept() {
    // Answers every commitment with 500 and a 2 MB error field full of control characters.
    let shouter = serve(Router::new().fallback(|| async {
        let error = "\u{1b}[2J\nA".repeat(1 << 18);
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": error, "message": error })),
        )
    }))
    .await;
    // Commits at once, then opens 50 000 rows nobody asked for (a huge debug-formatted list).
    let key = Hotkey::generate();
    let (k1, k2) = (key.clone(), key.clone());
    let flooder = serve(
        Router::new()
            .route(
                "/v1/gemm/commit",
                post(move |headers: HeaderMap, body: Bytes| {
                    let k = k1.clone();
                    async move { instant_commit(&k, &headers, &body) }
                }),
            )
            .route(
                "/v1/gemm/open",
                post(move |headers: HeaderMap| {
                    let k = k2.clone();
                    async move {
                        let rows = (0..50_000)
                            .map(|i| OpenedRow {
                                index: i,
                                values: vec![],
                                path: vec![],
                            })
                            .collect();
                        signed_json(&k, &headers, "/v1/gemm/open", &OpenResponse { rows })
                    }
                }),
            ),
    )
    .await;
    let sk = Hotkey::generate();
    let dir = tempfile::tempdir().unwrap();
    let v = validator(
        dir.path(),
        &[(&sk, &shouter.url), (&key, &flooder.url)],
        &[],
        |_| {},
    );
    let r = v.run_round().await;
    assert_eq!(reason(&r, 1, "gemm"), Some(FailureReason::HttpStatus));
    assert_eq!(reason(&r, 2, "gemm"), Some(FailureReason::WrongRows));
    for o in &r.outcomes {
        let m = &o.failure.as_ref().unwrap().message;
        assert!(m.len() <= MAX_MESSAGE_BYTES, "{} bytes", m.len());
        assert!(!m.chars().any(char::is_control), "{m:?}");
    }
    let record = serde_json::to_vec(&r).unwrap().len();
    assert!(record < 8 << 10, "round record is {record} bytes");
    let snapshot = serde_json::to_vec(&v.snapshot()).unwrap().len();
    assert!(snapshot < 16 << 10, "state API answer is {snapshot} bytes");
    let state = v.store().load().unwrap().unwrap();
    let stored = serde_json::to_vec(&state).unwrap().len();
    assert!(stored < 16 << 10, "persisted state is {stored} bytes");

    // A streamed `event: error` with a long, hostile error field is cut the same way.
    let yeller = serve(Router::new().fallback(|| async {
        let error = format!("x\u{7}{}", "y".repeat(20_000));
        let body = format!(
            "event: error\ndata: {}\n\n",
            serde_json::json!({ "error": error, "message": error })
        );
        (
            StatusCode::OK,
            [("content-type", "text/event-stream")],
            body,
        )
    }))
    .await;
    let f = client(16 << 20)
        .post_signed_stream(&yeller.url, &sk.public(), "/v1/completions", b"{}".to_vec())
        .await
        .unwrap_err();
    assert_eq!(f.reason, FailureReason::HttpStatus);
    assert!(
        f.message.len() <= MAX_MESSAGE_BYTES,
        "{} bytes",
        f.message.len()
    );
}

/// Issue 11.5: a stream with no blank line is refused once one event passes the event limit,
/// instead of being buffered (and rescanned on every chunk) up to the body limit; a stream of
/// small events stops at the body limit.
#[tokio::test]
async fn sse_streams_are_bounded_per_event_and_in_total() {
    let endless_line = serve(Router::new().fallback(|| async {
        let (mut tx, resp) = streamed();
        tokio::spawn(async move {
            let chunk = Bytes::from(": x\n".repeat(256));
            // 8 MB of comment lines and never a blank line.
            for _ in 0..8 << 10 {
                if tx.send(Ok(chunk.clone())).await.is_err() {
                    break;
                }
            }
        });
        resp
    }))
    .await;
    let miner = PublicKey([7; 32]);
    let c = client(16 << 20);
    let t = Instant::now();
    let f = tokio::time::timeout(
        Duration::from_secs(10),
        c.post_signed_stream(&endless_line.url, &miner, "/v1/completions", b"{}".to_vec()),
    )
    .await
    .expect("the stream reader is linear and stops at the event limit")
    .unwrap_err();
    assert_eq!(f.reason, FailureReason::ResponseTooLarge, "{f}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    let chatty = serve(Router::new().fallback(|| async {
        (
            StatusCode::OK,
            [("content-type", "text/event-stream")],
            "data: {}\n\n".repeat(100_000),
        )
    }))
    .await;
    let f = client(256 << 10)
        .post_signed_stream(&chatty.url, &miner, "/v1/completions", b"{}".to_vec())
        .await
        .unwrap_err();
    assert_eq!(f.reason, FailureReason::ResponseTooLarge, "{f}");
}

/// Issue 11.6: an SSE comment (or any event that is not a token) sent at once does not end the
/// time to first token; and whatever follows the receipt is not waited for.
#[tokio::test]
async fn ttft_ends_at_the_first_token_and_reading_stops_at_the_receipt() {
    let key = Hotkey::generate();
    let k = key.clone();
    let app = Router::new().fallback(move |headers: HeaderMap| {
        let k = k.clone();
        async move {
            let (mut tx, resp) = streamed();
            tokio::spawn(async move {
                let mut covered = Vec::new();
                for part in [":\n\n", ": padding\n\n", "data: not a token\n\n"] {
                    covered.extend_from_slice(part.as_bytes());
                    let _ = tx.send(Ok(Bytes::from(part))).await;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
                let token = token_event(0, Some("length"));
                covered.extend_from_slice(token.as_bytes());
                let _ = tx.send(Ok(Bytes::from(token))).await;
                let r = receipt(&k, &headers, "/v1/completions", &covered, 1);
                let tail = format!("event: receipt\ndata: {r}\n\ndata: [DONE]\n\n");
                let _ = tx.send(Ok(Bytes::from(tail))).await;
                // Holds the connection open long after the receipt.
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(tx);
            });
            resp
        }
    });
    let miner = serve(app).await;
    let t = Instant::now();
    let x = tokio::time::timeout(
        Duration::from_secs(5),
        client(1 << 20).post_signed_stream(
            &miner.url,
            &key.public(),
            "/v1/completions",
            b"{}".to_vec(),
        ),
    )
    .await
    .expect("reading stops at the receipt")
    .unwrap();
    assert!(
        x.first_token >= Duration::from_millis(380),
        "a comment counted as the first token: {:?}",
        x.first_token
    );
    assert!(x.elapsed >= x.first_token);
    assert!(t.elapsed() < Duration::from_secs(3));
    // The receipt covers the comment and the non-token event too; the token is the last event.
    assert_eq!(x.events.len(), 2);
    assert_eq!(x.receipt.tokens, 1);
}
