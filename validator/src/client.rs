//! Signed HTTP exchanges with miners and unsigned reads from peers, with bounded bodies.

use crate::task::{Failure, FailureReason};
use polylith_protocol::Hash32;
use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::llm::{RECEIPT_EVENT, SseEvent, parse_sse};
use polylith_protocol::signing::{H_RECEIPT, Receipt, RequestEnvelope};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A response whose receipt was verified.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The exact body bytes (what the receipt's response hash covers).
    pub body: Vec<u8>,
    /// The verified receipt.
    pub receipt: Receipt,
    /// From handing the request to the client until the whole body was read.
    pub elapsed: Duration,
}

/// A streamed response whose receipt was verified.
#[derive(Debug, Clone)]
pub struct StreamExchange {
    /// The events the receipt covers (everything before the receipt event).
    pub events: Vec<SseEvent>,
    /// The verified receipt.
    pub receipt: Receipt,
    /// From handing the request to the client until the first complete event arrived.
    pub first_event: Duration,
    /// From handing the request to the client until the stream ended.
    pub elapsed: Duration,
}

/// An HTTP client that signs every request with the validator's hotkey.
pub struct SignedClient {
    http: reqwest::Client,
    key: Hotkey,
    max_body: usize,
}

/// The `error` field of a miner's JSON error body, if any.
fn error_reason(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.as_str().map(str::to_string)
}

fn transport_failure(e: &reqwest::Error, what: &str) -> Failure {
    let reason = if e.is_timeout() {
        FailureReason::Timeout
    } else {
        FailureReason::Unreachable
    };
    Failure::new(reason, format!("{what}: {e}"))
}

impl SignedClient {
    /// A client signing with `key`, refusing bodies over `max_body` bytes.
    pub fn new(key: Hotkey, max_body: usize) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(Self {
            http,
            key,
            max_body,
        })
    }

    /// The signing key's public half.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// Reads the body, refusing more than the limit (checked against Content-Length first).
    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, Failure> {
        let too_large = || {
            Failure::new(
                FailureReason::ResponseTooLarge,
                format!("response exceeds {} bytes", self.max_body),
            )
        };
        if resp
            .content_length()
            .is_some_and(|l| l > self.max_body as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport_failure(&e, "reading the response"))?
        {
            if body.len().saturating_add(chunk.len()) > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A JSON POST of `body` to `base + path` carrying the envelope signed for `receiver`;
    /// returns it with the request hash the receipt must name, and the URL.
    fn signed_post(
        &self,
        base: &str,
        receiver: &PublicKey,
        path: &str,
        body: Vec<u8>,
    ) -> (reqwest::RequestBuilder, Hash32, String) {
        let envelope = RequestEnvelope::sign(&self.key, receiver, "POST", path, &body, now_ms());
        let request_hash: Hash32 = envelope.request_hash("POST", path);
        let url = format!("{}{}", base.trim_end_matches('/'), path);
        let mut req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in envelope.to_headers() {
            req = req.header(name, value);
        }
        (req, request_hash, url)
    }

    /// POSTs `body` to `base + path` signed for `receiver`, checks the status and the
    /// receipt (signed by `receiver`, for this request, over these response bytes).
    pub async fn post_signed(
        &self,
        base: &str,
        receiver: &PublicKey,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Exchange, Failure> {
        let (req, request_hash, url) = self.signed_post(base, receiver, path, body);
        let started = Instant::now();
        let resp = req
            .send()
            .await
            .map_err(|e| transport_failure(&e, &format!("POST {url}")))?;
        let status = resp.status();
        let receipt_header = resp
            .headers()
            .get(H_RECEIPT)
            .map(|v| v.to_str().map(str::to_string));
        let body = self.read_body(resp).await?;
        let elapsed = started.elapsed();
        if !status.is_success() {
            let reason = error_reason(&body);
            let kind = if reason.as_deref() == Some("unknown_commitment") {
                FailureReason::UnknownCommitment
            } else {
                FailureReason::HttpStatus
            };
            return Err(Failure::new(
                kind,
                format!(
                    "POST {path}: HTTP {} ({})",
                    status.as_u16(),
                    reason.unwrap_or_else(|| "no reason given".to_string())
                ),
            ));
        }
        let receipt_text = match receipt_header {
            None => {
                return Err(Failure::new(
                    FailureReason::BadReceipt,
                    format!("POST {path}: no {H_RECEIPT} header"),
                ));
            }
            Some(Err(_)) => {
                return Err(Failure::new(
                    FailureReason::BadReceipt,
                    format!("POST {path}: receipt header is not text"),
                ));
            }
            Some(Ok(t)) => t,
        };
        let receipt: Receipt = serde_json::from_str(&receipt_text).map_err(|e| {
            Failure::new(
                FailureReason::BadReceipt,
                format!("POST {path}: unparsable receipt: {e}"),
            )
        })?;
        receipt
            .verify(receiver, &request_hash, &body)
            .map_err(|e| {
                Failure::new(
                    FailureReason::BadReceipt,
                    format!("POST {path}: receipt rejected: {e}"),
                )
            })?;
        Ok(Exchange {
            body,
            receipt,
            elapsed,
        })
    }

    /// POSTs a streaming request (`text/event-stream` response) like [`Self::post_signed`],
    /// recording when the first complete event arrived. The receipt is the stream's
    /// `event: receipt` and covers every byte before it; the body is returned up to that event.
    pub async fn post_signed_stream(
        &self,
        base: &str,
        receiver: &PublicKey,
        path: &str,
        body: Vec<u8>,
    ) -> Result<StreamExchange, Failure> {
        let (req, request_hash, url) = self.signed_post(base, receiver, path, body);
        let req = req.header("accept", "text/event-stream");
        let started = Instant::now();
        let mut resp = req
            .send()
            .await
            .map_err(|e| transport_failure(&e, &format!("POST {url}")))?;
        let status = resp.status();
        if !status.is_success() {
            let body = self.read_body(resp).await?;
            let reason = error_reason(&body);
            return Err(Failure::new(
                FailureReason::HttpStatus,
                format!(
                    "POST {path}: HTTP {} ({})",
                    status.as_u16(),
                    reason.unwrap_or_else(|| "no reason given".to_string())
                ),
            ));
        }
        let mut all = Vec::new();
        let mut first_event = None;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport_failure(&e, "reading the stream"))?
        {
            if all.len().saturating_add(chunk.len()) > self.max_body {
                return Err(Failure::new(
                    FailureReason::ResponseTooLarge,
                    format!("stream exceeds {} bytes", self.max_body),
                ));
            }
            all.extend_from_slice(&chunk);
            if first_event.is_none() && all.windows(2).any(|w| w == b"\n\n") {
                first_event = Some(started.elapsed());
            }
        }
        let elapsed = started.elapsed();
        let text = String::from_utf8(all).map_err(|_| {
            Failure::new(FailureReason::Malformed, "stream is not UTF-8".to_string())
        })?;
        let events = parse_sse(&text);
        let Some(receipt_event) = events
            .iter()
            .find(|e| e.event.as_deref() == Some(RECEIPT_EVENT))
        else {
            let err = events
                .iter()
                .find(|e| e.event.as_deref() == Some("error"))
                .map(|e| e.data.clone());
            return Err(match err {
                Some(e) => Failure::new(
                    FailureReason::HttpStatus,
                    format!("POST {path}: the stream ended with an error: {e}"),
                ),
                None => Failure::new(
                    FailureReason::BadReceipt,
                    format!("POST {path}: the stream has no receipt event"),
                ),
            });
        };
        let covered = text.get(..receipt_event.start).unwrap_or_default();
        let receipt: Receipt = serde_json::from_str(&receipt_event.data).map_err(|e| {
            Failure::new(
                FailureReason::BadReceipt,
                format!("POST {path}: unparsable receipt: {e}"),
            )
        })?;
        receipt
            .verify(receiver, &request_hash, covered.as_bytes())
            .map_err(|e| {
                Failure::new(
                    FailureReason::BadReceipt,
                    format!("POST {path}: receipt rejected: {e}"),
                )
            })?;
        Ok(StreamExchange {
            events: parse_sse(covered),
            receipt,
            first_event: first_event.unwrap_or(elapsed),
            elapsed,
        })
    }

    /// GETs `base + path` with a timeout and a bounded body; `Err` carries a message.
    pub async fn get(&self, base: &str, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        let url = format!("{}{}", base.trim_end_matches('/'), path);
        let fut = async {
            let resp = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = resp.status();
            let body = self.read_body(resp).await.map_err(|f| f.message)?;
            if !status.is_success() {
                return Err(format!("GET {url}: HTTP {}", status.as_u16()));
            }
            Ok(body)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("GET {url}: no answer within {} ms", timeout.as_millis()))?
    }
}
