//! The signed request envelope (validator → miner) and the miner's signed receipt.
//!
//! The envelope travels in HTTP headers so the body stays the task's own JSON; the receipt
//! travels in the `x-polylith-receipt` response header (or, for streams, the final event).
//! The byte layout of every signed message is specified in `docs/protocol.md`.

use crate::Hash32;
use crate::keys::{Hotkey, PublicKey, Signature};
use serde::{Deserialize, Serialize};

/// Header carrying the sender's SS58 hotkey.
pub const H_SENDER: &str = "x-polylith-sender";
/// Header carrying the intended receiver's SS58 hotkey.
pub const H_RECEIVER: &str = "x-polylith-receiver";
/// Header carrying a 16-byte random nonce, hex.
pub const H_NONCE: &str = "x-polylith-nonce";
/// Header carrying the sender's clock, Unix milliseconds.
pub const H_TIMESTAMP: &str = "x-polylith-timestamp";
/// Header carrying blake3(body), hex.
pub const H_BODY_HASH: &str = "x-polylith-body-hash";
/// Header carrying the sr25519 signature, hex (64 bytes).
pub const H_SIGNATURE: &str = "x-polylith-signature";
/// Response header carrying the miner's receipt as JSON.
pub const H_RECEIPT: &str = "x-polylith-receipt";

/// The fields of a signed request, as sent in headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Sender hotkey (SS58).
    pub sender: String,
    /// Receiver hotkey (SS58).
    pub receiver: String,
    /// Random nonce, 32 hex chars.
    pub nonce: String,
    /// Sender clock in Unix milliseconds.
    pub timestamp_ms: u64,
    /// blake3 of the body, hex.
    pub body_hash: String,
    /// Signature over [`RequestEnvelope::signing_payload`], hex; empty when unsigned.
    pub signature: String,
}

/// Why a request envelope was rejected; each maps to its own HTTP status and metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Signature header absent or empty.
    #[error("missing or empty signature")]
    MissingSignature,
    /// A required header is absent or unparsable.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// Body hash does not match the body.
    #[error("body hash mismatch")]
    BodyHashMismatch,
    /// Signature does not verify under the sender's key.
    #[error("bad signature")]
    BadSignature,
    /// Receiver is not this node.
    #[error("wrong receiver")]
    WrongReceiver,
    /// Timestamp outside the allowed window.
    #[error("stale or future timestamp")]
    StaleTimestamp,
    /// Nonce already seen inside the window.
    #[error("replayed nonce")]
    ReplayedNonce,
    /// Sender is not a validator in the metagraph.
    #[error("sender is not a registered validator")]
    UnknownSender,
    /// Sender's stake is below the configured minimum.
    #[error("sender stake below minimum")]
    InsufficientStake,
}

impl Rejection {
    /// Stable snake_case reason for metrics labels and error bodies.
    pub fn reason(&self) -> &'static str {
        todo!("H2")
    }
    /// The HTTP status code for this rejection.
    pub fn http_status(&self) -> u16 {
        todo!("H2")
    }
}

impl RequestEnvelope {
    /// Builds and signs an envelope for `method path` with `body`.
    pub fn sign(
        _key: &Hotkey,
        _receiver: &PublicKey,
        _method: &str,
        _path: &str,
        _body: &[u8],
        _timestamp_ms: u64,
    ) -> Self {
        todo!("H2")
    }
    /// The exact bytes that are signed (see docs/protocol.md).
    pub fn signing_payload(&self, _method: &str, _path: &str) -> Vec<u8> {
        todo!("H2")
    }
    /// blake3 of the signing payload plus signature: the id of this request in receipts.
    pub fn request_hash(&self, _method: &str, _path: &str) -> Hash32 {
        todo!("H2")
    }
    /// Reads the envelope from header lookups (`get(name) -> value`).
    pub fn from_headers<'a>(_get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, Rejection> {
        todo!("H2")
    }
    /// Header name/value pairs to attach to an outgoing request.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        todo!("H2")
    }
    /// Stateless checks: signature present, body hash, signature valid, receiver is `me`,
    /// timestamp within `window_ms` of `now_ms`. Replay and stake checks are the caller's
    /// (they need state); see [`NonceCache`].
    pub fn verify(
        &self,
        _method: &str,
        _path: &str,
        _body: &[u8],
        _me: &PublicKey,
        _now_ms: u64,
        _window_ms: u64,
    ) -> Result<PublicKey, Rejection> {
        todo!("H2")
    }
}

/// Bounded memory of recently seen nonces, so a signed request cannot be replayed inside
/// its timestamp window. Entries older than the window are evicted; when full, the oldest go.
#[derive(Debug)]
pub struct NonceCache {
    _private: (),
}

impl NonceCache {
    /// A cache holding at most `capacity` nonces for `window_ms`.
    pub fn new(_capacity: usize, _window_ms: u64) -> Self {
        todo!("H2")
    }
    /// Records `(sender, nonce)` seen at `now_ms`; `Err(ReplayedNonce)` if already present.
    pub fn check_and_insert(
        &mut self,
        _sender: &str,
        _nonce: &str,
        _now_ms: u64,
    ) -> Result<(), Rejection> {
        todo!("H2")
    }
    /// Number of nonces currently held.
    pub fn len(&self) -> usize {
        todo!("H2")
    }
    /// True when no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A miner's signed statement of what it answered and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Miner hotkey (SS58).
    pub miner: String,
    /// [`RequestEnvelope::request_hash`], hex.
    pub request_hash: String,
    /// blake3 of the exact response body bytes, hex.
    pub response_hash: String,
    /// Model hash for LLM responses, hex; empty for other tasks.
    #[serde(default)]
    pub model_hash: String,
    /// Miner clock when the request arrived, Unix ms.
    pub received_ms: u64,
    /// Miner-measured compute time, microseconds.
    pub compute_us: u64,
    /// Miner-measured time to first token, microseconds (0 when not streaming tokens).
    #[serde(default)]
    pub ttft_us: u64,
    /// Miner-measured total handling time, microseconds.
    pub total_us: u64,
    /// Tokens produced (LLM), 0 otherwise.
    #[serde(default)]
    pub tokens: u64,
    /// Signature over the receipt's signing payload, hex.
    pub signature: String,
}

impl Receipt {
    /// Signs the receipt fields (the `signature` field is overwritten).
    pub fn sign(self, _key: &Hotkey) -> Self {
        todo!("H2")
    }
    /// The exact signed bytes (see docs/protocol.md).
    pub fn signing_payload(&self) -> Vec<u8> {
        todo!("H2")
    }
    /// Checks the signature against `miner`, and that the hashes match the exchange.
    pub fn verify(
        &self,
        _miner: &PublicKey,
        _request_hash: &Hash32,
        _response_body: &[u8],
    ) -> Result<(), Rejection> {
        todo!("H2")
    }
}

/// Converts a signature to hex for headers.
pub fn sig_hex(sig: &Signature) -> String {
    hex::encode(sig.0)
}
