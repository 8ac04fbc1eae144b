//! The shared front door of every task endpoint: the signed envelope, the metagraph check,
//! the sender's share of places, replay protection, the bounded body read, and the signed
//! receipt on the way out. Task modules (`gemm`, `llm`) only see an [`Authenticated`]
//! request and call [`reply_json`] or [`make_receipt`].
//!
//! The order in [`admit`] is the defence against pre-authentication slot exhaustion: every
//! check that needs only the headers (the signature covers the body hash) and the metagraph
//! runs before a place, a queue position or a body buffer is taken, and the body is then
//! read under a deadline and a size cap.

use crate::error::ApiError;
use crate::server::{CancelToken, MinerInner, Place, RequestAlive, SlotPermit};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use polylith_protocol::Hash32;
use polylith_protocol::keys::PublicKey;
use polylith_protocol::metagraph::Role;
use polylith_protocol::signing::{H_RECEIPT, Receipt, Rejection, RequestEnvelope};
use polylith_protocol::task::TaskKind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Keeps the request's cancellation unset while this (or a clone) lives.
    pub alive: RequestAlive,
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
    /// Turns cancelled once this request and all its clones are dropped (the client left).
    pub fn cancel_token(&self) -> CancelToken {
        self.alive.token()
    }
}

impl FromRequest<Arc<MinerInner>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request(mut req: Request, _state: &Arc<MinerInner>) -> Result<Self, ApiError> {
        // `admit` (the route layer of every task endpoint) put it there.
        req.extensions_mut()
            .remove::<Authenticated>()
            .ok_or_else(|| ApiError::internal("task endpoint served without admission"))
    }
}

/// Admits one task request, or says why not. In order:
///
/// 1. the envelope headers parse and the signature verifies over them (the body hash
///    header included), the receiver is this miner, the timestamp is inside the window and
///    not before this miner started;
/// 2. the sender is a validator in the metagraph with at least the minimum stake;
/// 3. the sender has a free place in its stake share ([`MinerInner::sender_share`]);
/// 4. the nonce is new (recorded only now, so strangers cannot fill the cache);
/// 5. the body arrives within `body_read_timeout_ms` and `max_body_bytes`, and its blake3
///    is the signed body hash;
/// 6. a compute slot frees up within `queue_timeout_ms`.
///
/// The request handed on carries the [`Authenticated`] request and its [`SlotPermit`]; the
/// returned place is for the caller to hold until the reply is done.
pub(crate) async fn admit(
    state: &Arc<MinerInner>,
    req: Request,
    task: TaskKind,
) -> Result<(Request, Arc<Place>), ApiError> {
    let started = Instant::now();
    let received_ms = state.clock.now_ms();
    let (mut parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let envelope = RequestEnvelope::from_headers(|name| {
        parts.headers.get(name).and_then(|v| v.to_str().ok())
    })?;

    let now_ms = state.clock.now_ms();
    let sender = envelope.verify_headers(
        &method,
        &path,
        &state.public,
        now_ms,
        state.config.timestamp_window_ms,
    )?;
    if envelope.timestamp_ms < state.started_ms {
        return Err(ApiError::signed_before_start(
            envelope.timestamp_ms,
            state.started_ms,
        ));
    }

    let metagraph = state.metagraph.current();
    let neuron = metagraph
        .by_hotkey(&sender)
        .filter(|n| n.role == Role::Validator)
        .ok_or(Rejection::UnknownSender)?;
    if neuron.stake < state.config.min_validator_stake {
        return Err(Rejection::InsufficientStake.into());
    }
    let sender_uid = neuron.uid;
    let share = state.sender_share(&metagraph, neuron.stake);
    let place = Arc::new(state.take_place(sender, share)?);
    state
        .nonces
        .lock()
        .check_and_insert(&envelope.sender, &envelope.nonce, now_ms)?;
    tracing::Span::current().record("hotkey", envelope.sender.as_str());

    let body = read_body(
        body,
        &parts.headers,
        state.config.max_body_bytes,
        state.config.body_read_timeout_ms,
    )
    .await?;
    envelope.verify_body(&body)?;

    let wait = Duration::from_millis(state.config.queue_timeout_ms);
    let permit = match tokio::time::timeout(wait, state.slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return Err(ApiError::overloaded("miner is shutting down")),
        Err(_) => {
            return Err(ApiError::overloaded(format!(
                "no compute slot free within {} ms",
                wait.as_millis()
            )));
        }
    };
    parts
        .extensions
        .insert::<SlotPermit>(MinerInner::slot(permit, place.clone()));
    parts.extensions.insert(Authenticated {
        sender,
        sender_uid,
        request_hash: envelope.request_hash(&method, &path),
        body: body.clone(),
        received_ms,
        started,
        task,
        alive: RequestAlive::new(),
    });
    Ok((Request::from_parts(parts, Body::from(body)), place))
}

/// Reads a body of at most `limit` bytes within `timeout_ms`. A declared length over the
/// limit is refused before reading; the buffer grows with what arrives, not with what the
/// client declares.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout_ms: u64,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request("malformed", format!("unreadable body: {e}")))?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::body_too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok::<_, ApiError>(Bytes::from(buf))
    };
    tokio::time::timeout(Duration::from_millis(timeout_ms), read)
        .await
        .map_err(|_| ApiError::body_timeout(timeout_ms))?
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
