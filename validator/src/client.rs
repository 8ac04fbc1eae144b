//! Signed HTTP exchanges with miners and unsigned reads from peers, with bounded bodies.

use crate::task::{Failure, FailureReason};
use polylith_protocol::Hash32;
use polylith_protocol::keys::{Hotkey, PublicKey};
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

    /// POSTs `body` to `base + path` signed for `receiver`, checks the status and the
    /// receipt (signed by `receiver`, for this request, over these response bytes).
    pub async fn post_signed(
        &self,
        base: &str,
        receiver: &PublicKey,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Exchange, Failure> {
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
