//! What a validator remembers between rounds (persisted) and what it shows (snapshots).

use crate::task::{Failure, QueryOutcome};
use polylith_protocol::task::TaskKind;
use polylith_protocol::weights::SignedWeights;
use polylith_scoring::yuma::YumaState;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Verified throughputs remembered per miner for the median.
pub const RECENT_THROUGHPUTS: usize = 32;

/// Version of [`PersistedState`]'s layout.
pub const STATE_VERSION: u32 = 1;

/// Running counters of one miner (keyed by hotkey, so a uid reassigned to a new hotkey
/// starts from zero).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MinerStats {
    /// Queries verified.
    pub verified: u64,
    /// Queries failed (any reason).
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// The most recent failure.
    pub last_failure: Option<Failure>,
    /// Last verified GEMM throughputs, FLOP/s, oldest first.
    pub recent_flops: VecDeque<f64>,
    /// LLM completion tokens checked (every token of every completion received).
    #[serde(default)]
    pub tokens_checked: u64,
    /// LLM tokens that passed (all tokens of a verified completion; those before the first
    /// failing token otherwise).
    #[serde(default)]
    pub tokens_passed: u64,
    /// Last verified LLM rates, tokens/s over the whole exchange, oldest first.
    #[serde(default)]
    pub recent_tokens_per_s: VecDeque<f64>,
    /// Last verified LLM times to first token, seconds, oldest first.
    #[serde(default)]
    pub recent_ttft_s: VecDeque<f64>,
}

fn push_recent(q: &mut VecDeque<f64>, v: Option<f64>) {
    if let Some(v) = v.filter(|v| v.is_finite() && *v > 0.0) {
        q.push_back(v);
        while q.len() > RECENT_THROUGHPUTS {
            q.pop_front();
        }
    }
}

impl MinerStats {
    /// Counts one outcome.
    pub fn record(&mut self, o: &QueryOutcome) {
        self.tokens_checked = self
            .tokens_checked
            .saturating_add(u64::from(o.tokens_checked));
        self.tokens_passed = self
            .tokens_passed
            .saturating_add(u64::from(o.tokens_passed));
        match &o.failure {
            None => {
                self.verified = self.verified.saturating_add(1);
                // Each kind measures speed in its own unit.
                match o.task {
                    TaskKind::Gemm => push_recent(&mut self.recent_flops, o.throughput),
                    TaskKind::Llm => {
                        push_recent(&mut self.recent_tokens_per_s, o.throughput);
                        push_recent(&mut self.recent_ttft_s, o.latency_s);
                    }
                }
            }
            Some(f) => {
                self.failed = self.failed.saturating_add(1);
                let c = self
                    .failures
                    .entry(f.reason.as_str().to_string())
                    .or_default();
                *c = c.saturating_add(1);
                // Bounded again here: this copy outlives the round and is served by the
                // state API, whatever path built the failure.
                self.last_failure = Some(f.clone().bounded());
            }
        }
    }
}

/// Everything a restarted validator resumes from; written as one value per round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Layout version.
    pub version: u32,
    /// Last completed round (0 before the first).
    pub round: u64,
    /// EMA score per miner hotkey (SS58).
    pub ema: BTreeMap<String, f64>,
    /// Counters per miner hotkey.
    pub miners: BTreeMap<String, MinerStats>,
    /// Yuma bonds and permits carried to the next epoch.
    pub yuma: Option<YumaState>,
    /// The weights last signed and published.
    pub weights: Option<SignedWeights>,
    /// Incentive (miners' reward share) per uid from the last epoch.
    pub incentive: Vec<f64>,
    /// Dividends (validators' share) per uid from the last epoch.
    pub dividends: Vec<f64>,
    /// Peers whose weights entered the last epoch.
    pub peers_used: Vec<u16>,
}

impl Default for PersistedState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            round: 0,
            ema: BTreeMap::new(),
            miners: BTreeMap::new(),
            yuma: None,
            weights: None,
            incentive: Vec::new(),
            dividends: Vec::new(),
            peers_used: Vec::new(),
        }
    }
}

/// The full result of one round, stored under its round number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number (1-based).
    pub round: u64,
    /// Unix ms when the round started.
    pub started_ms: u64,
    /// Unix ms when it finished.
    pub finished_ms: u64,
    /// Every query of the round.
    pub outcomes: Vec<QueryOutcome>,
    /// The weights signed this round.
    pub weights: Vec<(u16, u16)>,
    /// Incentive per uid.
    pub incentive: Vec<f64>,
    /// Dividends per uid.
    pub dividends: Vec<f64>,
    /// Peers whose weights were used.
    pub peers_used: Vec<u16>,
    /// Whether the round's state reached the disk.
    pub persisted: bool,
}

/// One miner as the validator sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinerSnapshot {
    /// Uid.
    pub uid: u16,
    /// Hotkey, SS58.
    pub hotkey: String,
    /// Queries verified.
    pub verified: u64,
    /// Queries failed.
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// The most recent failure.
    pub last_failure: Option<Failure>,
    /// Median of recent verified throughputs, GFLOP/s.
    pub median_gflops: Option<f64>,
    /// LLM completion tokens checked.
    #[serde(default)]
    pub tokens_checked: u64,
    /// LLM tokens that passed verification.
    #[serde(default)]
    pub tokens_passed: u64,
    /// Median of recent verified LLM rates, tokens/s.
    #[serde(default)]
    pub median_tokens_per_s: Option<f64>,
    /// Median of recent verified LLM times to first token, seconds.
    #[serde(default)]
    pub median_ttft_s: Option<f64>,
    /// EMA score in [0, 1].
    pub ema: f64,
    /// This validator's published weight, u16.
    pub weight_u16: u16,
    /// Yuma incentive share in [0, 1].
    pub reward_share: f64,
}

/// The validator's state for `polylith local`, the state API and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatorSnapshot {
    /// This validator's hotkey, SS58.
    pub hotkey: String,
    /// Its uid, if registered in the metagraph.
    pub uid: Option<u16>,
    /// Last completed round.
    pub round: u64,
    /// Miners of the current metagraph, by uid.
    pub miners: Vec<MinerSnapshot>,
    /// The weights last published.
    pub weights: Option<SignedWeights>,
    /// Incentive per uid from the last epoch.
    pub incentive: Vec<f64>,
    /// Dividend share per uid from the last epoch.
    pub dividends: Vec<f64>,
    /// Peers whose weights entered the last epoch.
    pub peers_used: Vec<u16>,
    /// Round state writes that failed since start.
    pub db_write_errors: u64,
    /// True on the public `GET /v1/state`: `ema`, the speeds, `weight_u16` and `weights` are
    /// withheld (0 / null) until revealed, so a copier cannot read this round's scores. The
    /// revealed weights are in `GET /v1/weights`. Absent (false) in older bodies.
    #[serde(default)]
    pub scores_hidden: bool,
}

impl ValidatorSnapshot {
    /// The snapshot as the public API serves it: counts, failures and the epoch's outputs,
    /// without anything that would let a copier read this round's scores before they are
    /// revealed (EMA, speeds, weights). Sets [`ValidatorSnapshot::scores_hidden`].
    pub fn into_public(mut self) -> Self {
        self.weights = None;
        for m in &mut self.miners {
            m.ema = 0.0;
            m.weight_u16 = 0;
            m.median_gflops = None;
            m.median_tokens_per_s = None;
            m.median_ttft_s = None;
        }
        self.scores_hidden = true;
        self
    }
}

/// Domain tag of the `GET /v1/state` signature (docs/protocol.md, "Validator state").
pub const STATE_TAG: &[u8] = b"polylith/v1/state";

/// Response header carrying the validator's signature over the exact `/v1/state` body.
pub const STATE_SIGNATURE_HEADER: &str = "x-polylith-signature";

/// The signed bytes of a `/v1/state` body: `field(STATE_TAG) ‖ field(body)`, where
/// `field(x)` is `u32le(len(x)) ‖ x` as everywhere in the protocol.
pub fn state_signing_payload(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len().saturating_add(STATE_TAG.len() + 8));
    for f in [STATE_TAG, body] {
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Serializes `snapshot` and signs the exact bytes with `key`: (body, signature hex).
pub fn sign_state(
    key: &polylith_protocol::keys::Hotkey,
    snapshot: &ValidatorSnapshot,
) -> Result<(Vec<u8>, String), serde_json::Error> {
    let body = serde_json::to_vec(snapshot)?;
    let sig = key.sign(&state_signing_payload(&body)).to_hex();
    Ok((body, sig))
}

/// Why a `/v1/state` body was not accepted as the expected validator's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The header is not 128 hex digits, or the signature does not verify.
    #[error("bad signature: not made by {0} over this body")]
    BadSignature(String),
    /// The body is not a state object.
    #[error("the body is not a validator state: {0}")]
    Malformed(String),
    /// The body names another validator than the one asked.
    #[error("the state names validator {got}, expected {expected}")]
    WrongValidator {
        /// The hotkey expected (from the metagraph).
        expected: String,
        /// The hotkey in the body.
        got: String,
    },
}

/// Checks a `/v1/state` response from the validator `expected` (its hotkey in the metagraph)
/// and parses it. Returns the state and whether it was signed: a body without a signature
/// (`signature` `None`, a validator older than the signed endpoint) is accepted and reported
/// as unsigned; a signature that does not verify is an error.
pub fn verify_state(
    body: &[u8],
    signature: Option<&str>,
    expected: &polylith_protocol::keys::PublicKey,
) -> Result<(ValidatorSnapshot, bool), StateError> {
    let snapshot = serde_json::from_slice::<ValidatorSnapshot>(body).map_err(|e| {
        StateError::Malformed(crate::task::bounded_text(
            &e.to_string(),
            crate::task::MAX_MESSAGE_BYTES,
        ))
    })?;
    let ss58 = expected.to_ss58();
    if snapshot.hotkey != ss58 {
        return Err(StateError::WrongValidator {
            expected: ss58,
            got: crate::task::bounded_text(&snapshot.hotkey, 64),
        });
    }
    let Some(sig) = signature else {
        return Ok((snapshot, false));
    };
    let ok = polylith_protocol::keys::Signature::from_hex(sig.trim())
        .is_some_and(|sig| expected.verify(&state_signing_payload(body), &sig).is_ok());
    if ok {
        Ok((snapshot, true))
    } else {
        Err(StateError::BadSignature(ss58))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polylith_protocol::keys::Hotkey;

    fn snapshot(hotkey: &str) -> ValidatorSnapshot {
        ValidatorSnapshot {
            hotkey: hotkey.to_string(),
            uid: Some(0),
            round: 3,
            miners: vec![MinerSnapshot {
                uid: 1,
                hotkey: "m".into(),
                verified: 2,
                failed: 1,
                failures: BTreeMap::from([("timeout".to_string(), 1)]),
                last_failure: None,
                median_gflops: Some(1.0),
                tokens_checked: 0,
                tokens_passed: 0,
                median_tokens_per_s: None,
                median_ttft_s: None,
                ema: 0.5,
                weight_u16: 65535,
                reward_share: 1.0,
            }],
            weights: None,
            incentive: vec![0.0, 1.0],
            dividends: vec![1.0, 0.0],
            peers_used: vec![0],
            db_write_errors: 0,
            scores_hidden: false,
        }
    }

    #[test]
    fn signed_state_verifies_and_any_change_is_refused() {
        let key = Hotkey::generate();
        let other = Hotkey::generate();
        let s = snapshot(&key.public().to_ss58()).into_public();
        assert!(s.scores_hidden);
        assert_eq!(s.miners[0].ema, 0.0);
        assert_eq!(s.miners[0].weight_u16, 0);
        let (body, sig) = sign_state(&key, &s).unwrap();
        let (got, signed) = verify_state(&body, Some(&sig), &key.public()).unwrap();
        assert!(signed);
        assert_eq!(got, s);
        // Unsigned (an older validator): parsed, reported unsigned.
        assert!(!verify_state(&body, None, &key.public()).unwrap().1);
        // Another key, a changed body, garbage: refused.
        assert!(matches!(
            verify_state(&body, Some(&sig), &other.public()),
            Err(StateError::WrongValidator { .. })
        ));
        let mut changed = body.clone();
        let pos = changed.windows(3).position(|w| w == b"\"ro").unwrap();
        changed[pos + 8] = b'4'; // "round":3 -> 4
        assert!(matches!(
            verify_state(&changed, Some(&sig), &key.public()),
            Err(StateError::BadSignature(_))
        ));
        assert!(matches!(
            verify_state(&body, Some("zz"), &key.public()),
            Err(StateError::BadSignature(_))
        ));
        // Signed by another key over a body naming `key`.
        let (_, forged) = sign_state(&other, &s).unwrap();
        assert!(verify_state(&body, Some(&forged), &key.public()).is_err());
        assert!(matches!(
            verify_state(b"{}", Some(&sig), &key.public()),
            Err(StateError::Malformed(_))
        ));
    }

    #[test]
    fn older_state_bodies_without_the_new_field_still_parse() {
        let key = Hotkey::generate();
        let mut v = serde_json::to_value(snapshot(&key.public().to_ss58())).unwrap();
        v.as_object_mut().unwrap().remove("scores_hidden");
        let s: ValidatorSnapshot = serde_json::from_value(v).unwrap();
        assert!(!s.scores_hidden);
    }
}
