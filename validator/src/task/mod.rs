//! Task kinds the validator queries. Each [`Task`] turns one miner into one [`QueryOutcome`]
//! per round; the round loop, scoring, persistence and metrics are shared by all kinds.
//!
//! Each kind is one [`Task`] implementation ([`gemm::GemmTask`], [`llm::LlmTask`]) with a
//! weight in [`crate::TaskWeights`].

pub mod gemm;
pub mod llm;

use crate::client::SignedClient;
use futures::future::BoxFuture;
use polylith_protocol::keys::PublicKey;
use polylith_protocol::task::TaskKind;
use serde::{Deserialize, Serialize};

/// Why a query scored 0. A fixed set, so it is a bounded metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The query did not finish before its deadline.
    Timeout,
    /// The miner could not be reached (connection refused, reset, DNS, bad endpoint).
    Unreachable,
    /// The miner answered with a non-success HTTP status.
    HttpStatus,
    /// The miner answered with a redirect (3xx); outbound calls never follow one.
    Redirect,
    /// The opening referred to a commitment the miner does not hold.
    UnknownCommitment,
    /// The response was larger than the configured limit.
    ResponseTooLarge,
    /// The response body or a field of it could not be parsed.
    Malformed,
    /// The receipt was missing, unparsable, signed by another key, or for another exchange.
    BadReceipt,
    /// The commitment covers a different number of rows than the task has.
    WrongRowCount,
    /// The opening did not answer the rows asked for.
    WrongRows,
    /// An opened row index outside the matrix.
    RowOutOfRange,
    /// A Merkle path does not lead to the committed root.
    BadPath,
    /// An opened row differs from the exact product.
    WrongRow,
    /// Two miners committed to the same root for different tasks (copying or replay).
    DuplicateRoot,
    /// The miner declared a model other than the subnet's (LLM).
    WrongModel,
    /// A completion token is neither the sampling rule's pick nor a near-tie (LLM).
    WrongToken,
    /// A reported log-probability is off by more than the tolerance (LLM).
    LogprobMismatch,
    /// Tokens after an end-of-sequence pick (LLM).
    PastEos,
    /// The completion ended early without a reason (LLM).
    EarlyStop,
    /// A stop string was ignored or misreported (LLM).
    StopIgnored,
    /// More tokens than `max_tokens` (LLM).
    TooManyTokens,
    /// The validator itself failed (a bug or resource problem), not the miner.
    Internal,
}

impl FailureReason {
    /// Whether this failure proves a wrong answer (as opposed to an unreachable, slow or
    /// broken miner, or a validator-side problem). Such a failure resets the miner's EMA.
    pub fn is_cheating(self) -> bool {
        matches!(
            self,
            FailureReason::BadReceipt
                | FailureReason::WrongRowCount
                | FailureReason::WrongRows
                | FailureReason::RowOutOfRange
                | FailureReason::BadPath
                | FailureReason::WrongRow
                | FailureReason::DuplicateRoot
                | FailureReason::WrongToken
                | FailureReason::LogprobMismatch
                | FailureReason::PastEos
                | FailureReason::EarlyStop
                | FailureReason::StopIgnored
                | FailureReason::TooManyTokens
        )
    }

    /// Every reason, for pre-creating metric labels and exhaustive tests.
    pub const ALL: [FailureReason; 22] = [
        FailureReason::Timeout,
        FailureReason::Unreachable,
        FailureReason::HttpStatus,
        FailureReason::Redirect,
        FailureReason::UnknownCommitment,
        FailureReason::ResponseTooLarge,
        FailureReason::Malformed,
        FailureReason::BadReceipt,
        FailureReason::WrongRowCount,
        FailureReason::WrongRows,
        FailureReason::RowOutOfRange,
        FailureReason::BadPath,
        FailureReason::WrongRow,
        FailureReason::DuplicateRoot,
        FailureReason::WrongModel,
        FailureReason::WrongToken,
        FailureReason::LogprobMismatch,
        FailureReason::PastEos,
        FailureReason::EarlyStop,
        FailureReason::StopIgnored,
        FailureReason::TooManyTokens,
        FailureReason::Internal,
    ];

    /// Stable snake_case name (metrics label, stored records).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::Unreachable => "unreachable",
            FailureReason::HttpStatus => "http_status",
            FailureReason::Redirect => "redirect",
            FailureReason::UnknownCommitment => "unknown_commitment",
            FailureReason::ResponseTooLarge => "response_too_large",
            FailureReason::Malformed => "malformed",
            FailureReason::BadReceipt => "bad_receipt",
            FailureReason::WrongRowCount => "wrong_row_count",
            FailureReason::WrongRows => "wrong_rows",
            FailureReason::RowOutOfRange => "row_out_of_range",
            FailureReason::BadPath => "bad_path",
            FailureReason::WrongRow => "wrong_row",
            FailureReason::DuplicateRoot => "duplicate_root",
            FailureReason::WrongModel => "wrong_model",
            FailureReason::WrongToken => "wrong_token",
            FailureReason::LogprobMismatch => "logprob_mismatch",
            FailureReason::PastEos => "past_eos",
            FailureReason::EarlyStop => "early_stop",
            FailureReason::StopIgnored => "stop_ignored",
            FailureReason::TooManyTokens => "too_many_tokens",
            FailureReason::Internal => "internal",
        }
    }

    /// What a miner's operator should do about failures of this kind: one or two sentences,
    /// shown by `polylith explain`. Kept next to the reason (an exhaustive match) so a new
    /// reason cannot ship without advice.
    pub fn advice(self) -> &'static str {
        match self {
            FailureReason::Timeout => {
                "The miner did not answer before the round's deadline. Check that it is not \
                 overloaded (its CPU/GPU, `polylith_miner_*` metrics), that the backend is the \
                 fastest you have (`--backend cuda` on a GPU), and the network path from the \
                 validators."
            }
            FailureReason::Unreachable => {
                "The validator could not connect to the endpoint the metagraph lists for this \
                 miner. Check that the miner is running, listens on that address \
                 (`--listen`), and that the port is open from the validators' hosts (firewall, \
                 NAT, a public address rather than 127.0.0.1 across hosts)."
            }
            FailureReason::HttpStatus => {
                "The miner answered with an error status. Its log says why; a common cause is \
                 a hotkey that is not the one the metagraph lists for this uid (every request \
                 is then refused as `wrong_receiver`): check `polylith key show` against the \
                 metagraph."
            }
            FailureReason::Redirect => {
                "The endpoint answered with a redirect, which validators never follow. List \
                 the final URL (scheme, host, port) in the metagraph, or remove the redirect \
                 in front of the miner."
            }
            FailureReason::UnknownCommitment => {
                "The miner did not hold the commitment it had just made when asked to open it: \
                 it restarted between commit and open, or several miner processes share one \
                 endpoint. Run one miner process per endpoint and keep it up."
            }
            FailureReason::ResponseTooLarge => {
                "The response exceeded the validator's size limit. Run an unmodified miner: \
                 the reference one never sends responses this large."
            }
            FailureReason::Malformed => {
                "The response could not be parsed. Run the same protocol version as the \
                 validators (an up-to-date, unmodified `polylith miner`), and make sure nothing \
                 between them rewrites the body."
            }
            FailureReason::BadReceipt => {
                "The receipt was missing or not signed by the hotkey the metagraph lists for \
                 this uid. Run the miner with the key registered for this uid (`--key`), and \
                 restart it after the metagraph changes."
            }
            FailureReason::WrongRowCount
            | FailureReason::WrongRows
            | FailureReason::RowOutOfRange
            | FailureReason::BadPath
            | FailureReason::WrongRow => {
                "The GEMM proof does not match the product the validator recomputed: the miner \
                 is computing something else (skipped rows, a stale or replayed result, a \
                 modified or faulty backend). Run the unmodified miner; on a GPU, check \
                 `polylith bench gemm` against the CPU backend. A proven wrong answer resets \
                 the score to 0."
            }
            FailureReason::DuplicateRoot => {
                "The miner's commitment equals another miner's for a different task: copying \
                 or replaying answers. Compute every task yourself; two uids must not share \
                 one backend's answers."
            }
            FailureReason::WrongModel => {
                "The miner serves another model than the subnet's. Point `--model` at the \
                 same model the validators use (`--llm-model`; `builtin` by default) and check \
                 its weights are unmodified."
            }
            FailureReason::WrongToken
            | FailureReason::LogprobMismatch
            | FailureReason::PastEos
            | FailureReason::EarlyStop
            | FailureReason::StopIgnored
            | FailureReason::TooManyTokens => {
                "The completion does not follow the subnet's model and sampling rule (altered, \
                 quantized or truncated weights, another sampler, a modified stream). Serve the \
                 exact reference model with the unmodified miner. A proven wrong answer resets \
                 the score to 0."
            }
            FailureReason::Internal => {
                "The validator itself failed, not the miner; nothing to change on your side. \
                 Tell the validator's operator if it persists."
            }
        }
    }

    /// The `outcome` label of `polylith_validator_queries_total` for a query failing this way.
    pub fn outcome(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::Unreachable
            | FailureReason::HttpStatus
            | FailureReason::Redirect
            | FailureReason::Internal => "error",
            _ => "failed",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most bytes of a failure message (and of any other miner- or peer-supplied text) that is
/// stored, logged or served.
pub const MAX_MESSAGE_BYTES: usize = 256;

/// `text` made safe to store, log and serve: control characters (newlines, terminal
/// escapes) become spaces and the result is cut to at most `max` bytes on a character
/// boundary, ending in `…` when cut. Reads only as much of `text` as it keeps, so a huge input
/// costs no more than a small one.
pub fn bounded_text(text: &str, max: usize) -> String {
    const MORE: char = '…';
    let mut out = String::with_capacity(text.len().min(max));
    let mut chars = text.chars();
    for c in chars.by_ref() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len().saturating_add(c.len_utf8()) > max {
            // Make room for the marker when it fits at all.
            while !out.is_empty() && out.len().saturating_add(MORE.len_utf8()) > max {
                out.pop();
            }
            if out.len().saturating_add(MORE.len_utf8()) <= max {
                out.push(MORE);
            }
            return out;
        }
        out.push(c);
    }
    out
}

/// Deserializes a message through [`bounded_text`], so a record written before the bound
/// existed (or edited by hand) cannot bring a huge string back.
fn bounded_message<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    Ok(bounded_text(&s, MAX_MESSAGE_BYTES))
}

/// A failed query: the reason and a human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Why.
    pub reason: FailureReason,
    /// Details for logs and the state API, at most [`MAX_MESSAGE_BYTES`] without control
    /// characters when built with [`Failure::new`].
    #[serde(deserialize_with = "bounded_message")]
    pub message: String,
}

impl Failure {
    /// A failure with a reason and a message, bounded with [`bounded_text`]: messages quote
    /// what miners sent (error fields, parse errors, receipt fields), and every failure is
    /// stored in the round record, the miner's `last_failure`, the state API and the logs.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        let message: String = message.into();
        let message =
            if message.len() <= MAX_MESSAGE_BYTES && !message.chars().any(char::is_control) {
                message
            } else {
                bounded_text(&message, MAX_MESSAGE_BYTES)
            };
        Self { reason, message }
    }

    /// The same failure with its message bounded (for failures built field by field).
    pub fn bounded(self) -> Self {
        Self::new(self.reason, self.message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// A miner as the tasks see it.
#[derive(Debug, Clone)]
pub struct MinerTarget {
    /// Uid in the metagraph.
    pub uid: u16,
    /// Hotkey (receipts must be signed by it).
    pub hotkey: PublicKey,
    /// Hotkey as SS58.
    pub ss58: String,
    /// HTTP base URL.
    pub endpoint: String,
}

/// What a task needs from the validator to query one miner.
pub struct QueryContext<'a> {
    /// Signs requests with the validator's hotkey and bounds responses.
    pub client: &'a SignedClient,
    /// When the round's queries must be done: one instant shared by every task and miner
    /// of the round, so a hung miner costs a round one timeout, not one per task.
    pub deadline: tokio::time::Instant,
}

/// Result of querying one miner with one task in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryOutcome {
    /// Miner uid.
    pub uid: u16,
    /// Miner hotkey (SS58).
    pub hotkey: String,
    /// Task kind.
    pub task: TaskKind,
    /// `None` when verified; the reason otherwise.
    pub failure: Option<Failure>,
    /// The task's speed measure, higher is better (FLOP/s for GEMM, decode tokens/s for
    /// LLM); `None` when failed.
    pub throughput: Option<f64>,
    /// Request → commitment (GEMM) or first token (LLM), seconds, when a response arrived.
    pub latency_s: Option<f64>,
    /// Work asked for (FLOP for GEMM, `max_tokens` for LLM).
    pub work: f64,
    /// LLM: completion tokens run through the per-token checks (0 for other kinds).
    #[serde(default)]
    pub tokens_checked: u32,
    /// LLM: tokens that passed before the first failing one (all of them when verified).
    #[serde(default)]
    pub tokens_passed: u32,
    /// Task-specific fingerprint of the answer (the Merkle root for GEMM), used to detect
    /// copying across miners.
    pub fingerprint: Option<String>,
    /// Round-relative score in [0, 1], filled in after every miner was queried.
    pub score: f64,
}

impl QueryOutcome {
    /// True when the answer was verified.
    pub fn verified(&self) -> bool {
        self.failure.is_none()
    }

    /// Marks the query failed (clearing its measurement).
    pub fn fail(&mut self, failure: Failure) {
        self.failure = Some(failure.bounded());
        self.throughput = None;
        self.score = 0.0;
    }
}

/// One kind of work the validator asks miners for.
pub trait Task: Send + Sync {
    /// Which kind this is.
    fn kind(&self) -> TaskKind;

    /// Queries one miner with a fresh challenge and verifies the answer. Never panics on bad
    /// miner behaviour: every problem becomes a [`Failure`] in the outcome. The caller
    /// cancels this future at [`QueryContext::deadline`]; a task may set shorter deadlines
    /// for steps that should be quick (the GEMM opening).
    fn query<'a>(
        &'a self,
        ctx: &'a QueryContext<'a>,
        miner: &'a MinerTarget,
    ) -> BoxFuture<'a, QueryOutcome>;

    /// Checks across all miners of a round (for example identical answers to different
    /// challenges) and fails the offenders. The default does nothing.
    fn cross_check(&self, _outcomes: &mut [QueryOutcome]) {}

    /// Round-relative scores in [0, 1], one per outcome. The default: throughput relative
    /// to the best verified miner of the round.
    fn score(&self, outcomes: &[QueryOutcome]) -> Vec<f64> {
        let t: Vec<Option<f64>> = outcomes
            .iter()
            .map(|o| if o.verified() { o.throughput } else { None })
            .collect();
        polylith_scoring::speed::relative_throughput(&t)
    }
}

/// The outcome of a query body: `out` as filled in, failed with the body's failure if any.
pub fn settle(mut out: QueryOutcome, result: Result<(), Failure>) -> QueryOutcome {
    if let Err(f) = result {
        out.fail(f);
    }
    out
}

/// A fresh outcome for `miner` that has not failed yet.
pub fn new_outcome(task: TaskKind, miner: &MinerTarget) -> QueryOutcome {
    QueryOutcome {
        uid: miner.uid,
        hotkey: miner.ss58.clone(),
        task,
        failure: None,
        throughput: None,
        latency_s: None,
        work: 0.0,
        tokens_checked: 0,
        tokens_passed: 0,
        fingerprint: None,
        score: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_reason_has_advice() {
        // `ALL` lists every variant once (the exhaustive `as_str` match names them all), and
        // `advice` is an exhaustive match, so a new reason needs both to compile and pass.
        let names: std::collections::BTreeSet<&str> =
            FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names.len(),
            FailureReason::ALL.len(),
            "ALL has no duplicates"
        );
        for r in FailureReason::ALL {
            let a = r.advice();
            assert!(a.len() > 40, "{r}: advice too short: {a:?}");
            assert!(a.ends_with('.'), "{r}: advice is a sentence: {a:?}");
            assert!(!a.contains("  "), "{r}: no double spaces: {a:?}");
        }
        assert!(FailureReason::Unreachable.advice().contains("endpoint"));
        assert!(FailureReason::WrongRow.advice().contains("resets"));
    }

    #[test]
    fn bounded_text_cuts_on_a_char_boundary_and_strips_control_characters() {
        assert_eq!(bounded_text("short", 256), "short");
        assert_eq!(bounded_text("a\nb\x1b[31mc", 256), "a b [31mc");
        let huge = "é".repeat(1 << 20);
        let cut = bounded_text(&huge, 256);
        assert!(cut.len() <= 256, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
        // Exactly at the limit: kept whole.
        assert_eq!(bounded_text(&"x".repeat(256), 256).len(), 256);
        assert_eq!(bounded_text("abcdef", 2), "");
        assert_eq!(bounded_text("abcdef", 4), "a…");
    }

    #[test]
    fn failures_are_bounded_when_built_failed_or_loaded() {
        let f = Failure::new(FailureReason::HttpStatus, "x".repeat(15 << 20));
        assert!(f.message.len() <= MAX_MESSAGE_BYTES);
        let raw = Failure {
            reason: FailureReason::Malformed,
            message: "y\n".repeat(10_000),
        };
        let json = serde_json::to_string(&raw).unwrap();
        let loaded: Failure = serde_json::from_str(&json).unwrap();
        assert!(loaded.message.len() <= MAX_MESSAGE_BYTES);
        assert!(!loaded.message.contains('\n'));
        let miner = MinerTarget {
            uid: 1,
            hotkey: PublicKey([1; 32]),
            ss58: "m1".into(),
            endpoint: String::new(),
        };
        let mut o = new_outcome(TaskKind::Gemm, &miner);
        o.fail(raw);
        assert!(o.failure.unwrap().message.len() <= MAX_MESSAGE_BYTES);
    }
}
