//! Signed HTTP exchanges with miners and unsigned reads from peers, with bounded bodies.
//!
//! Every answer comes from a party that may be hostile, so: redirects are never followed (a
//! signed request goes only to the endpoint the metagraph lists), bodies and streams are
//! bounded, streams are parsed incrementally in linear time, and text from a response reaches
//! a [`Failure`] only as a short, sanitised error code.

use crate::task::{Failure, FailureReason, MAX_MESSAGE_BYTES, bounded_text};
use polylith_protocol::Hash32;
use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::llm::{
    MAX_SSE_EVENT_BYTES, RECEIPT_EVENT, SseError, SseEvent, SseParser, StreamChunk,
};
use polylith_protocol::signing::{H_RECEIPT, Receipt, RequestEnvelope};
use polylith_protocol::weights::WorkProof;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most bytes of a non-2xx body read to find its error code; the rest is never read.
const MAX_ERROR_BODY_BYTES: usize = 4 << 10;

/// Most bytes of a miner's error code that is kept (codes are short snake_case words).
const MAX_ERROR_CODE_BYTES: usize = 64;

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
    /// From handing the request to the client until the first event that parses as a token
    /// chunk arrived (comments, blank lines and other events do not count).
    pub first_token: Duration,
    /// From handing the request to the client until the receipt event arrived.
    pub elapsed: Duration,
}

/// An HTTP client that signs every request with the validator's hotkey.
pub struct SignedClient {
    http: reqwest::Client,
    key: Hotkey,
    max_body: usize,
    /// Requests whose receipt verified, since the last [`SignedClient::take_proofs`]: the
    /// validator publishes them with its weights as proof that it did the work.
    proofs: parking_lot::Mutex<Vec<WorkProof>>,
}

/// Most work proofs held between two [`SignedClient::take_proofs`] calls (the round loop
/// drains them every round; the bound only matters when nothing does).
const MAX_PROOFS: usize = 1 << 16;

/// The `error` code of a miner's JSON error body, if it is a short code; anything else the
/// body says is not repeated (it would reach the logs and the state API).
pub fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error")?.as_str()?;
    let plain = !code.is_empty()
        && code.len() <= MAX_ERROR_CODE_BYTES
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    Some(if plain {
        code.to_string()
    } else {
        "unrecognised error code".to_string()
    })
}

/// `e` and its causes, the root cause first (connection refused, DNS, TLS, timeout: what an
/// operator needs) and then the layers that wrapped it, each text once. reqwest's own
/// message ("error sending request for url (…)") says none of that by itself.
pub fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut texts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !texts.contains(&text) {
            texts.push(text);
        }
        current = err.source();
    }
    texts.reverse();
    texts.join(" <- ")
}

/// A transport error as a failure. The message carries the whole cause chain, bounded and
/// sanitised by [`Failure::new`] like any text that may come from a miner (a TLS error can
/// quote the miner's certificate).
fn transport_failure(e: &reqwest::Error, what: &str) -> Failure {
    let reason = if e.is_timeout() {
        FailureReason::Timeout
    } else {
        FailureReason::Unreachable
    };
    Failure::new(reason, format!("{what}: {}", cause_chain(e)))
}

/// The builder of every HTTP client of a validator: rustls (the process's ring provider,
/// installed here if nothing did it before), trusting the system's root certificates plus
/// those in `extra_ca` (a private CA or miners' self-signed certificates), no proxy, and
/// never following a redirect (a miner answering 3xx would otherwise make the validator
/// re-send its signed request to any address: SSRF).
pub fn http_client_builder(
    extra_ca: Option<&std::path::Path>,
) -> Result<reqwest::ClientBuilder, polylith_net::tls::TlsError> {
    let roots = polylith_net::tls::client_roots(extra_ca)?;
    let roots = roots
        .into_iter()
        .filter_map(|der| reqwest::Certificate::from_der(&der).ok());
    Ok(reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only(roots))
}

fn redirect_failure(status: reqwest::StatusCode, what: &str) -> Failure {
    Failure::new(
        FailureReason::Redirect,
        format!("{what}: HTTP {} redirect refused", status.as_u16()),
    )
}

fn sse_failure(e: &SseError, path: &str) -> Failure {
    let reason = match e {
        SseError::EventTooLarge { .. } | SseError::StreamTooLarge { .. } => {
            FailureReason::ResponseTooLarge
        }
        SseError::NotUtf8 { .. } => FailureReason::Malformed,
    };
    Failure::new(reason, format!("POST {path}: {e}"))
}

/// `base + path` when `base` is a plain `http(s)://host[:port][/prefix]` URL: no credentials,
/// query or fragment that would change where or what the request goes to.
pub fn endpoint_url(base: &str, path: &str) -> Result<reqwest::Url, Failure> {
    let bad = |why: &str| {
        Failure::new(
            FailureReason::Unreachable,
            format!(
                "endpoint {:?} {why}",
                bounded_text(base, MAX_MESSAGE_BYTES / 2)
            ),
        )
    };
    let parsed = reqwest::Url::parse(base).map_err(|_| bad("is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("is not http(s)"));
    }
    if parsed.host().is_none() {
        return Err(bad("has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("carries credentials"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("carries a query or fragment"));
    }
    reqwest::Url::parse(&format!("{}{}", base.trim_end_matches('/'), path))
        .map_err(|_| bad("does not join with the path"))
}

/// Whether an event is a token chunk (what ends the time to first token).
fn is_token(ev: &SseEvent) -> bool {
    ev.event.is_none() && serde_json::from_str::<StreamChunk>(&ev.data).is_ok()
}

impl SignedClient {
    /// A client signing with `key`, refusing bodies over `max_body` bytes, trusting the
    /// system's root certificates. It never follows a redirect: a miner answering 3xx would
    /// otherwise make the validator re-send its signed request to any address (SSRF).
    pub fn new(key: Hotkey, max_body: usize) -> Result<Self, crate::ValidatorError> {
        Self::with_ca(key, max_body, None)
    }

    /// [`Self::new`], also trusting the certificates in the PEM file `extra_ca`.
    pub fn with_ca(
        key: Hotkey,
        max_body: usize,
        extra_ca: Option<&std::path::Path>,
    ) -> Result<Self, crate::ValidatorError> {
        let http = http_client_builder(extra_ca)
            .map_err(|e| crate::ValidatorError::Tls(Box::new(e)))?
            .pool_max_idle_per_host(4)
            .build()
            .map_err(crate::ValidatorError::Http)?;
        Ok(Self {
            http,
            key,
            max_body,
            proofs: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// The signing key's public half.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// Reads the body, refusing more than `limit` bytes (checked against Content-Length
    /// first, then as it arrives).
    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, Failure> {
        let too_large = || {
            Failure::new(
                FailureReason::ResponseTooLarge,
                format!("response exceeds {limit} bytes"),
            )
        };
        if resp.content_length().is_some_and(|l| l > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport_failure(&e, "reading the response"))?
        {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The failure for a non-2xx answer: its status and the body's error code, if short.
    async fn status_failure(&self, resp: reqwest::Response, path: &str) -> Failure {
        let status = resp.status();
        // Only the error code is wanted: a short read; a longer body is not worth reading.
        let code = match self.read_body(resp, MAX_ERROR_BODY_BYTES).await {
            Ok(body) => error_code(&body),
            Err(_) => None,
        };
        let kind = if code.as_deref() == Some("unknown_commitment") {
            FailureReason::UnknownCommitment
        } else {
            FailureReason::HttpStatus
        };
        Failure::new(
            kind,
            format!(
                "POST {path}: HTTP {} ({})",
                status.as_u16(),
                code.as_deref().unwrap_or("no error code")
            ),
        )
    }

    /// A JSON POST of `body` to `base + path` carrying the envelope signed for `receiver`;
    /// returns it with the request hash the receipt must name.
    fn signed_post(
        &self,
        base: &str,
        receiver: &PublicKey,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(reqwest::RequestBuilder, Hash32, RequestEnvelope), Failure> {
        let url = endpoint_url(base, path)?;
        let envelope = RequestEnvelope::sign(&self.key, receiver, "POST", path, &body, now_ms());
        let request_hash: Hash32 = envelope.request_hash("POST", path);
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in envelope.to_headers() {
            req = req.header(name, value);
        }
        Ok((req, request_hash, envelope))
    }

    /// Keeps a verified exchange as a work proof.
    fn record_proof(&self, envelope: RequestEnvelope, path: &str, receipt: &Receipt) {
        let mut proofs = self.proofs.lock();
        if proofs.len() < MAX_PROOFS {
            proofs.push(WorkProof {
                method: "POST".to_string(),
                path: path.to_string(),
                envelope,
                receipt: receipt.clone(),
            });
        }
    }

    /// The work proofs recorded since the last call: every signed request whose receipt
    /// verified (whatever the task then found in the answer).
    pub fn take_proofs(&self) -> Vec<WorkProof> {
        std::mem::take(&mut *self.proofs.lock())
    }

    /// Sends a signed request; a redirect or another non-2xx status is a failure.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<reqwest::Response, Failure> {
        let resp = req
            .send()
            .await
            .map_err(|e| transport_failure(&e, &format!("POST {path}")))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(redirect_failure(status, &format!("POST {path}")));
        }
        if !status.is_success() {
            return Err(self.status_failure(resp, path).await);
        }
        Ok(resp)
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
        let (req, request_hash, envelope) = self.signed_post(base, receiver, path, body)?;
        let started = Instant::now();
        let resp = self.send(req, path).await?;
        let receipt_header = resp
            .headers()
            .get(H_RECEIPT)
            .map(|v| v.to_str().map(str::to_string));
        let body = self.read_body(resp, self.max_body).await?;
        let elapsed = started.elapsed();
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
        self.record_proof(envelope, path, &receipt);
        Ok(Exchange {
            body,
            receipt,
            elapsed,
        })
    }

    /// POSTs a streaming request (`text/event-stream` response) like [`Self::post_signed`].
    /// The stream is parsed as it arrives (linear time, each event at most
    /// [`MAX_SSE_EVENT_BYTES`], the whole stream at most the body limit) and read only up to
    /// its `event: receipt`, which covers every byte before it; time to first token ends at
    /// the first event that parses as a token chunk.
    pub async fn post_signed_stream(
        &self,
        base: &str,
        receiver: &PublicKey,
        path: &str,
        body: Vec<u8>,
    ) -> Result<StreamExchange, Failure> {
        let (req, request_hash, envelope) = self.signed_post(base, receiver, path, body)?;
        let req = req.header("accept", "text/event-stream");
        let started = Instant::now();
        let mut resp = self.send(req, path).await?;
        let mut parser = SseParser::new(MAX_SSE_EVENT_BYTES, self.max_body);
        let mut all = Vec::new();
        let mut events = Vec::new();
        let mut first_token = None;
        // The index of the event that ends the exchange (the receipt or an error).
        let mut last = None;
        let mut ended = false;
        while last.is_none() && !ended {
            let seen = events.len();
            match resp
                .chunk()
                .await
                .map_err(|e| transport_failure(&e, "reading the stream"))?
            {
                Some(chunk) => {
                    parser
                        .feed(&chunk, &mut events)
                        .map_err(|e| sse_failure(&e, path))?;
                    all.extend_from_slice(&chunk);
                }
                None => {
                    parser
                        .finish(&mut events)
                        .map_err(|e| sse_failure(&e, path))?;
                    ended = true;
                }
            }
            for (i, ev) in events.iter().enumerate().skip(seen) {
                if first_token.is_none() && is_token(ev) {
                    first_token = Some(started.elapsed());
                }
                if matches!(ev.event.as_deref(), Some(RECEIPT_EVENT | "error")) {
                    last = Some(i);
                    break;
                }
            }
        }
        // Whatever the miner sends after its receipt is not read: it can no longer stretch
        // the exchange.
        drop(resp);
        let elapsed = started.elapsed();
        let Some(receipt_event) = last.and_then(|i| events.get(i)) else {
            return Err(Failure::new(
                FailureReason::BadReceipt,
                format!("POST {path}: the stream has no receipt event"),
            ));
        };
        if receipt_event.event.as_deref() == Some("error") {
            let code = error_code(receipt_event.data.as_bytes());
            return Err(Failure::new(
                FailureReason::HttpStatus,
                format!(
                    "POST {path}: the stream ended with an error ({})",
                    code.as_deref().unwrap_or("no error code")
                ),
            ));
        }
        let covered = all.get(..receipt_event.start).unwrap_or_default();
        let receipt: Receipt = serde_json::from_str(&receipt_event.data).map_err(|e| {
            Failure::new(
                FailureReason::BadReceipt,
                format!("POST {path}: unparsable receipt: {e}"),
            )
        })?;
        receipt
            .verify(receiver, &request_hash, covered)
            .map_err(|e| {
                Failure::new(
                    FailureReason::BadReceipt,
                    format!("POST {path}: receipt rejected: {e}"),
                )
            })?;
        let start = receipt_event.start;
        events.retain(|e| e.start < start);
        self.record_proof(envelope, path, &receipt);
        Ok(StreamExchange {
            events,
            receipt,
            first_token: first_token.unwrap_or(elapsed),
            elapsed,
        })
    }

    /// GETs `base + path` with a timeout and a bounded body, never following a redirect;
    /// `Err` carries a short message with nothing of the response in it.
    pub async fn get(&self, base: &str, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        let url = endpoint_url(base, path).map_err(|f| f.message)?;
        let what = bounded_text(&format!("GET {url}"), MAX_MESSAGE_BYTES / 2);
        let fut = async {
            let resp = self
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|e| transport_failure(&e, &what).message)?;
            let status = resp.status();
            if status.is_redirection() {
                return Err(redirect_failure(status, &what).message);
            }
            if !status.is_success() {
                return Err(format!("{what}: HTTP {}", status.as_u16()));
            }
            self.read_body(resp, self.max_body)
                .await
                .map_err(|f| f.message)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("{what}: no answer within {} ms", timeout.as_millis()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_http_urls() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:8091/", "/v1/gemm/commit")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8091/v1/gemm/commit"
        );
        assert!(endpoint_url("https://miner.example:443/api", "/v1/x").is_ok());
        for bad in [
            "",
            "not a url",
            "file:///etc/passwd",
            "ftp://127.0.0.1/",
            "http://user:pw@127.0.0.1:1",
            "http://127.0.0.1:1/?to=",
            "http://127.0.0.1:1/#",
        ] {
            let f = endpoint_url(bad, "/v1/gemm/commit").unwrap_err();
            assert_eq!(f.reason, FailureReason::Unreachable, "{bad}");
        }
    }

    #[test]
    fn only_short_plain_error_codes_are_repeated() {
        assert_eq!(
            error_code(br#"{"error":"unknown_commitment","message":"gone"}"#).as_deref(),
            Some("unknown_commitment")
        );
        let long = format!(r#"{{"error":"{}"}}"#, "a".repeat(1000));
        assert_eq!(
            error_code(long.as_bytes()).as_deref(),
            Some("unrecognised error code")
        );
        assert_eq!(
            error_code(br#"{"error":"bad\u001b[2J"}"#).as_deref(),
            Some("unrecognised error code")
        );
        assert_eq!(error_code(b"not json"), None);
    }
}
