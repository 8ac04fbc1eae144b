//! The shared front door of every task endpoint: the signed envelope, the metagraph check,
//! replay protection, and the signed receipt on the way out. Task modules (`gemm`, later
//! `llm`) only see an [`Authenticated`] request and call [`reply_json`] or [`make_receipt`].

use crate::error::ApiError;
use crate::server::MinerInner;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use polylith_protocol::Hash32;
use polylith_protocol::keys::PublicKey;
use polylith_protocol::metagraph::Role;
use polylith_protocol::signing::{H_RECEIPT, Receipt, Rejection, RequestEnvelope};
use polylith_protocol::task::TaskKind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Instant;

/// The task an endpoint path belongs to (metrics label).
pub fn task_for_path(path: &str) -> TaskKind {
    if path.starts_with("/v1/gemm/") {
        TaskKind::Gemm
    } else {
        TaskKind::Llm
    }
}

/// A request whose envelope verified, from a validator with enough stake, seen once.
#[derive(Clone)]
pub struct Authenticated {
    /// The validator's hotkey.
    pub sender: PublicKey,
    /// The validator's uid in the metagraph.
    pub sender_uid: u16,
    /// [`RequestEnvelope::request_hash`] of this request.
    pub request_hash: Hash32,
    /// The exact body bytes (already checked against the envelope's body hash).
    pub body: Bytes,
    /// Miner clock when the request arrived, Unix ms.
    pub received_ms: u64,
    /// Monotonic arrival time, for the receipt's total time.
    pub started: Instant,
    /// Which task the endpoint serves.
    pub task: TaskKind,
}

impl Authenticated {
    /// Parses the body as JSON; failure is a `malformed` rejection (400).
    pub fn json<T: DeserializeOwned>(&self, miner: &MinerInner) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let err = ApiError::bad_request("malformed", format!("invalid request body: {e}"));
            miner.count_rejection(self.task, err.reason);
            err
        })
    }
}

impl FromRequest<Arc<MinerInner>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<MinerInner>) -> Result<Self, ApiError> {
        let task = task_for_path(req.uri().path());
        let result = authenticate(req, state, task).await;
        if let Err(e) = &result {
            state.count_rejection(task, e.reason);
            tracing::debug!(reason = e.reason, message = %e.message, "request rejected");
        }
        result
    }
}

async fn authenticate(
    req: Request,
    state: &Arc<MinerInner>,
    task: TaskKind,
) -> Result<Authenticated, ApiError> {
    let started = Instant::now();
    let received_ms = state.clock.now_ms();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    let envelope = RequestEnvelope::from_headers(|name| {
        parts.headers.get(name).and_then(|v| v.to_str().ok())
    })?;

    let req = Request::from_parts(parts, body);
    let body = Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(state.config.max_body_bytes)
        } else {
            ApiError::bad_request("malformed", format!("unreadable body: {}", r.body_text()))
        }
    })?;

    let now_ms = state.clock.now_ms();
    let sender = envelope.verify(
        &method,
        &path,
        &body,
        &state.public,
        now_ms,
        state.config.timestamp_window_ms,
    )?;

    // The metagraph check comes before the nonce cache so that strangers cannot fill it.
    let metagraph = state.metagraph.current();
    let neuron = metagraph
        .by_hotkey(&sender)
        .filter(|n| n.role == Role::Validator)
        .ok_or(Rejection::UnknownSender)?;
    if neuron.stake < state.config.min_validator_stake {
        return Err(Rejection::InsufficientStake.into());
    }
    let sender_uid = neuron.uid;
    state
        .nonces
        .lock()
        .check_and_insert(&envelope.sender, &envelope.nonce, now_ms)?;

    tracing::Span::current().record("hotkey", envelope.sender.as_str());
    Ok(Authenticated {
        sender,
        sender_uid,
        request_hash: envelope.request_hash(&method, &path),
        body,
        received_ms,
        started,
        task,
    })
}

/// Per-response facts that go into a receipt beyond the request and body hashes.
#[derive(Debug, Clone, Default)]
pub struct ReceiptInfo {
    /// Compute time, microseconds.
    pub compute_us: u64,
    /// Time to first token, microseconds (LLM streams).
    pub ttft_us: u64,
    /// Tokens produced (LLM).
    pub tokens: u64,
    /// Model hash, hex (LLM).
    pub model_hash: String,
}

/// Signs a receipt for `auth` answered with exactly `body`.
pub fn make_receipt(
    miner: &MinerInner,
    auth: &Authenticated,
    body: &[u8],
    info: ReceiptInfo,
) -> Receipt {
    Receipt {
        miner: miner.ss58.clone(),
        request_hash: hex::encode(auth.request_hash),
        response_hash: hex::encode(blake3::hash(body).as_bytes()),
        model_hash: info.model_hash,
        received_ms: auth.received_ms,
        compute_us: info.compute_us,
        ttft_us: info.ttft_us,
        total_us: auth.started.elapsed().as_micros() as u64,
        tokens: info.tokens,
        signature: String::new(),
    }
    .sign(&miner.hotkey)
}

/// A 200 JSON response carrying the signed receipt in [`H_RECEIPT`].
pub fn reply_json<T: Serialize>(
    miner: &MinerInner,
    auth: &Authenticated,
    value: &T,
    info: ReceiptInfo,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::internal(format!("serialising the response: {e}")))?;
    let receipt = make_receipt(miner, auth, &body, info);
    let receipt_json = serde_json::to_string(&receipt)
        .map_err(|e| ApiError::internal(format!("serialising the receipt: {e}")))?;
    let receipt_header = HeaderValue::from_str(&receipt_json)
        .map_err(|e| ApiError::internal(format!("receipt is not a valid header: {e}")))?;
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(H_RECEIPT, receipt_header);
    Ok(response)
}
