//! The signed request envelope (validator → miner) and the miner's signed receipt.
//!
//! The envelope travels in HTTP headers so the body stays the task's own JSON; the receipt
//! travels in the `x-polylith-receipt` response header (or, for streams, the final event).
//! The byte layout of every signed message is specified in `docs/protocol.md` §2–§3.
//!
//! Every signed payload is a sequence of fields, each written as a 4-byte little-endian
//! length followed by that many bytes, the first field being a domain tag. Length prefixes
//! make the layout unambiguous whatever the fields contain, and the tags keep a signature
//! made for one message kind from verifying as another.

use crate::Hash32;
use crate::keys::{Hotkey, PublicKey, Signature};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

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

/// Domain tag of a request's signing payload.
pub const REQUEST_TAG: &[u8] = b"polylith/v1/request";
/// Domain tag of a receipt's signing payload.
pub const RECEIPT_TAG: &[u8] = b"polylith/v1/receipt";

/// Appends one field: its length as u32 little-endian, then its bytes.
pub(crate) fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // No field comes near 4 GiB; saturating keeps this infallible for absurd inputs, and
    // such a payload cannot collide with a well-formed one because lengths still differ.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Lowercase hex of blake3(`bytes`).
pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
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
    /// The nonce cache is full of unexpired nonces, so a new one cannot be remembered
    /// (refusing is what keeps replays impossible; the sender may retry later).
    #[error("too many recent requests to remember their nonces; retry later")]
    Overloaded,
    /// A receipt does not match the exchange it claims to cover (validator side only).
    #[error("receipt does not match the exchange: {0}")]
    ReceiptMismatch(String),
}

impl Rejection {
    /// Stable snake_case reason for metrics labels and error bodies.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingSignature => "missing_signature",
            Rejection::Malformed(_) => "malformed",
            Rejection::BodyHashMismatch => "body_hash_mismatch",
            Rejection::BadSignature => "bad_signature",
            Rejection::WrongReceiver => "wrong_receiver",
            Rejection::StaleTimestamp => "stale_timestamp",
            Rejection::ReplayedNonce => "replayed_nonce",
            Rejection::UnknownSender => "unknown_sender",
            Rejection::InsufficientStake => "insufficient_stake",
            Rejection::Overloaded => "overloaded",
            Rejection::ReceiptMismatch(_) => "receipt_mismatch",
        }
    }
    /// The HTTP status code for this rejection.
    pub fn http_status(&self) -> u16 {
        match self {
            Rejection::MissingSignature => 401,
            Rejection::Malformed(_) => 400,
            Rejection::BodyHashMismatch => 400,
            Rejection::BadSignature => 401,
            // 421 Misdirected Request: the request was meant for another server.
            Rejection::WrongReceiver => 421,
            // An authentication failure; 408 would invite automatic retries of a request
            // that can never succeed.
            Rejection::StaleTimestamp => 401,
            Rejection::ReplayedNonce => 409,
            Rejection::UnknownSender => 403,
            Rejection::InsufficientStake => 403,
            Rejection::Overloaded => 503,
            Rejection::ReceiptMismatch(_) => 502,
        }
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl RequestEnvelope {
    /// Builds and signs an envelope for `method path` with `body`.
    pub fn sign(
        key: &Hotkey,
        receiver: &PublicKey,
        method: &str,
        path: &str,
        body: &[u8],
        timestamp_ms: u64,
    ) -> Self {
        let mut env = Self {
            sender: key.public().to_ss58(),
            receiver: receiver.to_ss58(),
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            timestamp_ms,
            body_hash: blake3_hex(body),
            signature: String::new(),
        };
        env.signature = key.sign(&env.signing_payload(method, path)).to_hex();
        env
    }
    /// The exact bytes that are signed (see docs/protocol.md).
    ///
    /// Fields, each length-prefixed (u32 LE): `polylith/v1/request`, method, path, sender,
    /// receiver, nonce, timestamp (u64 LE), body hash (hex text as sent).
    pub fn signing_payload(&self, method: &str, path: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(300 + path.len());
        push_field(&mut out, REQUEST_TAG);
        push_field(&mut out, method.as_bytes());
        push_field(&mut out, path.as_bytes());
        push_field(&mut out, self.sender.as_bytes());
        push_field(&mut out, self.receiver.as_bytes());
        push_field(&mut out, self.nonce.as_bytes());
        push_field(&mut out, &self.timestamp_ms.to_le_bytes());
        push_field(&mut out, self.body_hash.as_bytes());
        out
    }
    /// blake3 of the signing payload plus signature: the id of this request in receipts.
    ///
    /// `blake3(signing_payload ‖ field(signature bytes))`, where the signature bytes are the
    /// 64 decoded bytes (or the header text when it is not valid hex, which a verified
    /// envelope never has).
    pub fn request_hash(&self, method: &str, path: &str) -> Hash32 {
        let mut bytes = self.signing_payload(method, path);
        match Signature::from_hex(&self.signature) {
            Some(sig) => push_field(&mut bytes, &sig.0),
            None => push_field(&mut bytes, self.signature.as_bytes()),
        }
        *blake3::hash(&bytes).as_bytes()
    }
    /// Reads the envelope from header lookups (`get(name) -> value`).
    ///
    /// A missing or empty signature is reported first (an unsigned request is the most
    /// common mistake); then each header must be present and well-formed: SS58 sender and
    /// receiver, 32 lowercase hex digits of nonce, a decimal timestamp, 64 lowercase hex
    /// digits of body hash, and 128 hex digits of signature.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, Rejection> {
        let signature = get(H_SIGNATURE).map(str::trim).unwrap_or_default();
        if signature.is_empty() {
            return Err(Rejection::MissingSignature);
        }
        let header = |name: &str| {
            get(name)
                .map(str::trim)
                .ok_or_else(|| Rejection::Malformed(format!("missing header {name}")))
        };
        let sender = header(H_SENDER)?;
        let receiver = header(H_RECEIVER)?;
        for (name, value) in [(H_SENDER, sender), (H_RECEIVER, receiver)] {
            PublicKey::from_ss58(value)
                .map_err(|_| Rejection::Malformed(format!("{name} is not an SS58 address")))?;
        }
        let nonce = header(H_NONCE)?;
        if !is_lower_hex(nonce, 32) {
            return Err(Rejection::Malformed(format!(
                "{H_NONCE} must be 32 lowercase hex digits"
            )));
        }
        let timestamp = header(H_TIMESTAMP)?;
        if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Rejection::Malformed(format!(
                "{H_TIMESTAMP} must be Unix milliseconds"
            )));
        }
        let timestamp_ms = timestamp
            .parse::<u64>()
            .map_err(|_| Rejection::Malformed(format!("{H_TIMESTAMP} is out of range")))?;
        let body_hash = header(H_BODY_HASH)?;
        if !is_lower_hex(body_hash, 64) {
            return Err(Rejection::Malformed(format!(
                "{H_BODY_HASH} must be 64 lowercase hex digits"
            )));
        }
        if Signature::from_hex(signature).is_none() {
            return Err(Rejection::Malformed(format!(
                "{H_SIGNATURE} must be 128 hex digits"
            )));
        }
        Ok(Self {
            sender: sender.to_owned(),
            receiver: receiver.to_owned(),
            nonce: nonce.to_owned(),
            timestamp_ms,
            body_hash: body_hash.to_owned(),
            signature: signature.to_owned(),
        })
    }
    /// Header name/value pairs to attach to an outgoing request.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (H_SENDER, self.sender.clone()),
            (H_RECEIVER, self.receiver.clone()),
            (H_NONCE, self.nonce.clone()),
            (H_TIMESTAMP, self.timestamp_ms.to_string()),
            (H_BODY_HASH, self.body_hash.clone()),
            (H_SIGNATURE, self.signature.clone()),
        ]
    }
    /// Stateless checks: [`verify_headers`](Self::verify_headers), then
    /// [`verify_body`](Self::verify_body). Replay and stake checks are the caller's (they
    /// need state); see [`NonceCache`].
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        me: &PublicKey,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<PublicKey, Rejection> {
        let sender = self.verify_headers(method, path, me, now_ms, window_ms)?;
        self.verify_body(body)?;
        Ok(sender)
    }
    /// The checks that need only the headers: signature present and valid over the signing
    /// payload, receiver is `me`, timestamp within `window_ms` of `now_ms`.
    ///
    /// The signature covers the body hash header, so a server can run this before reading
    /// a single body byte and then hold the body to the signed hash with
    /// [`verify_body`](Self::verify_body).
    pub fn verify_headers(
        &self,
        method: &str,
        path: &str,
        me: &PublicKey,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<PublicKey, Rejection> {
        if self.signature.trim().is_empty() {
            return Err(Rejection::MissingSignature);
        }
        let sender = PublicKey::from_ss58(&self.sender)
            .map_err(|_| Rejection::Malformed("sender is not an SS58 address".into()))?;
        let signature = Signature::from_hex(&self.signature)
            .ok_or_else(|| Rejection::Malformed("signature must be 128 hex digits".into()))?;
        sender
            .verify(&self.signing_payload(method, path), &signature)
            .map_err(|_| Rejection::BadSignature)?;
        match PublicKey::from_ss58(&self.receiver) {
            Ok(receiver) if receiver == *me => {}
            _ => return Err(Rejection::WrongReceiver),
        }
        if self.timestamp_ms.abs_diff(now_ms) > window_ms {
            return Err(Rejection::StaleTimestamp);
        }
        Ok(sender)
    }
    /// `Err(BodyHashMismatch)` unless blake3(`body`) is the signed body hash.
    pub fn verify_body(&self, body: &[u8]) -> Result<(), Rejection> {
        if self.body_hash != blake3_hex(body) {
            return Err(Rejection::BodyHashMismatch);
        }
        Ok(())
    }
}

/// Bounded memory of recently seen nonces, so a signed request cannot be replayed inside
/// its timestamp window. Entries older than the window are evicted; when full, the oldest go.
///
/// More precisely: an entry is kept for **2 × window** after it was seen, because a request
/// accepted at time t may carry a timestamp up to t + window and so stays acceptable until
/// t + 2·window. When the cache is full of entries that are still inside that span, a new
/// nonce is refused with [`Rejection::Overloaded`] instead of forgetting an unexpired one
/// (forgetting would re-open a replay). Callers check the sender against the metagraph
/// before inserting, so only registered validators can fill the cache.
#[derive(Debug)]
pub struct NonceCache {
    capacity: usize,
    retention_ms: u64,
    seen: HashMap<(String, String), u64>,
    /// Insertion order, for expiry from the front.
    order: VecDeque<(u64, (String, String))>,
}

impl NonceCache {
    /// A cache holding at most `capacity` nonces for `window_ms`.
    pub fn new(capacity: usize, window_ms: u64) -> Self {
        Self {
            capacity,
            retention_ms: window_ms.saturating_mul(2),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }
    fn evict_expired(&mut self, now_ms: u64) {
        while let Some((seen_ms, _)) = self.order.front() {
            if seen_ms.saturating_add(self.retention_ms) > now_ms {
                break;
            }
            if let Some((seen_ms, key)) = self.order.pop_front()
                && self.seen.get(&key) == Some(&seen_ms)
            {
                self.seen.remove(&key);
            }
        }
    }
    /// Records `(sender, nonce)` seen at `now_ms`; `Err(ReplayedNonce)` if already present.
    ///
    /// `Err(Overloaded)` when the cache is full of unexpired nonces.
    pub fn check_and_insert(
        &mut self,
        sender: &str,
        nonce: &str,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        self.evict_expired(now_ms);
        let key = (sender.to_owned(), nonce.to_owned());
        if self.seen.contains_key(&key) {
            return Err(Rejection::ReplayedNonce);
        }
        if self.seen.len() >= self.capacity {
            return Err(Rejection::Overloaded);
        }
        self.seen.insert(key.clone(), now_ms);
        self.order.push_back((now_ms, key));
        Ok(())
    }
    /// Number of nonces currently held.
    pub fn len(&self) -> usize {
        self.seen.len()
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
    pub fn sign(mut self, key: &Hotkey) -> Self {
        self.signature = key.sign(&self.signing_payload()).to_hex();
        self
    }
    /// The exact signed bytes (see docs/protocol.md).
    ///
    /// Fields, each length-prefixed (u32 LE): `polylith/v1/receipt`, miner, request hash,
    /// response hash, model hash (text as sent), then received_ms, compute_us, ttft_us,
    /// total_us, tokens (u64 LE each).
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        push_field(&mut out, RECEIPT_TAG);
        push_field(&mut out, self.miner.as_bytes());
        push_field(&mut out, self.request_hash.as_bytes());
        push_field(&mut out, self.response_hash.as_bytes());
        push_field(&mut out, self.model_hash.as_bytes());
        for v in [
            self.received_ms,
            self.compute_us,
            self.ttft_us,
            self.total_us,
            self.tokens,
        ] {
            push_field(&mut out, &v.to_le_bytes());
        }
        out
    }
    /// Checks the signature against `miner`, and that the hashes match the exchange.
    ///
    /// Errors: `Malformed` (unparsable miner, hash or signature text), `ReceiptMismatch`
    /// (another miner, request or response), `MissingSignature`, `BadSignature`.
    pub fn verify(
        &self,
        miner: &PublicKey,
        request_hash: &Hash32,
        response_body: &[u8],
    ) -> Result<(), Rejection> {
        let claimed = PublicKey::from_ss58(&self.miner)
            .map_err(|_| Rejection::Malformed("receipt miner is not an SS58 address".into()))?;
        if claimed != *miner {
            return Err(Rejection::ReceiptMismatch(format!(
                "signed by {} instead of {}",
                self.miner,
                miner.to_ss58()
            )));
        }
        if self.signature.trim().is_empty() {
            return Err(Rejection::MissingSignature);
        }
        let signature = Signature::from_hex(&self.signature).ok_or_else(|| {
            Rejection::Malformed("receipt signature must be 128 hex digits".into())
        })?;
        miner
            .verify(&self.signing_payload(), &signature)
            .map_err(|_| Rejection::BadSignature)?;
        let parse = |s: &str, what: &str| {
            crate::gemm::parse_hash(s)
                .ok_or_else(|| Rejection::Malformed(format!("receipt {what} is not 32-byte hex")))
        };
        if parse(&self.request_hash, "request_hash")? != *request_hash {
            return Err(Rejection::ReceiptMismatch("request hash".into()));
        }
        if parse(&self.response_hash, "response_hash")? != *blake3::hash(response_body).as_bytes() {
            return Err(Rejection::ReceiptMismatch("response hash".into()));
        }
        Ok(())
    }
}

/// Converts a signature to hex for headers.
pub fn sig_hex(sig: &Signature) -> String {
    hex::encode(sig.0)
}

#[cfg(test)]
mod split_tests {
    use super::*;

    /// The header check alone accepts any body (it never sees one), the body check holds
    /// the body to the signed hash, and a forged signature is caught without a body.
    #[test]
    fn header_and_body_checks_split_the_old_verify() {
        let validator = Hotkey::from_seed(&[7; 32]).unwrap();
        let miner = Hotkey::from_seed(&[8; 32]).unwrap().public();
        let path = "/v1/gemm/commit";
        let env = RequestEnvelope::sign(&validator, &miner, "POST", path, b"body", 1_000);
        assert_eq!(
            env.verify_headers("POST", path, &miner, 1_000, 10),
            Ok(validator.public())
        );
        assert_eq!(env.verify_body(b"body"), Ok(()));
        assert_eq!(env.verify_body(b"other"), Err(Rejection::BodyHashMismatch));
        assert_eq!(
            env.verify("POST", path, b"other", &miner, 1_000, 10),
            Err(Rejection::BodyHashMismatch)
        );
        let mut forged = env.clone();
        forged.signature = miner_forgery(&env, path);
        assert_eq!(
            forged.verify_headers("POST", path, &miner, 1_000, 10),
            Err(Rejection::BadSignature)
        );
        // With a forged signature and a wrong body, the signature is what is reported: the
        // miner rejects it before reading the body.
        assert_eq!(
            forged.verify("POST", path, b"other", &miner, 1_000, 10),
            Err(Rejection::BadSignature)
        );
    }

    fn miner_forgery(env: &RequestEnvelope, path: &str) -> String {
        let stranger = Hotkey::from_seed(&[9; 32]).unwrap();
        stranger.sign(&env.signing_payload("POST", path)).to_hex()
    }
}
