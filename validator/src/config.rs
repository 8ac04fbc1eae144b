//! The validator's configuration: one typed struct, loadable from TOML, with defaults that
//! work on a laptop (loopback addresses, GEMM tasks sized to each miner's measured speed).

use crate::ValidatorError;
use polylith_protocol::gemm::{Dtype, MAX_K};
use polylith_scoring::yuma::EpochParams;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Relative weight of each task kind in a miner's round score. A kind with weight 0 is not
/// queried at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskWeights {
    /// Proof-of-compute GEMM.
    pub gemm: f64,
    /// LLM inference.
    pub llm: f64,
}

impl Default for TaskWeights {
    fn default() -> Self {
        Self {
            gemm: 1.0,
            llm: 1.0,
        }
    }
}

/// How a validator sets its weights. Everything but `honest` exists to demonstrate (in
/// `polylith local` and the tests) that copying weights does not pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidatorBehaviour {
    /// Queries every miner and publishes its own measurements.
    #[default]
    Honest,
    /// Queries nobody and publishes the median of the peers' latest revealed weights.
    Copier,
    /// Queries every miner (so it holds receipts) but publishes the median of the peers'
    /// latest revealed weights instead of its own measurements.
    LazyCopier,
}

impl std::str::FromStr for ValidatorBehaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "honest" => Ok(Self::Honest),
            "copier" => Ok(Self::Copier),
            "lazy-copier" => Ok(Self::LazyCopier),
            other => Err(format!(
                "unknown validator behaviour {other:?} (expected honest, copier or lazy-copier)"
            )),
        }
    }
}

impl std::fmt::Display for ValidatorBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Honest => "honest",
            Self::Copier => "copier",
            Self::LazyCopier => "lazy-copier",
        })
    }
}

/// Everything a validator needs to run. Every field has a default; a TOML file may set any
/// subset, and `polylith validator` flags override the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidatorConfig {
    /// Address of the public API (`GET /v1/weights`, `GET /health`, `GET /v1/state`):
    /// `IP:PORT` or `HOST:PORT` (resolved at load).
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: SocketAddr,
    /// Address of the Prometheus endpoint (`GET /metrics`); loopback by default.
    #[serde(deserialize_with = "deserialize_listen")]
    pub metrics_listen: SocketAddr,
    /// PEM certificate chain: with `tls_key`, the public API serves HTTPS (the metagraph
    /// endpoint must then be `https://`). Metrics stay plain HTTP on loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificates to trust, besides the system's, for `https://` miners and peers
    /// (a private CA, or self-signed certificates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Longest time to receive a request's headers (also how long an idle keep-alive
    /// connection may wait before its next request), milliseconds. Every listener.
    pub header_read_timeout_ms: u64,
    /// Longest time to receive a request body, milliseconds. Every listener.
    pub body_read_timeout_ms: u64,
    /// A connection with no bytes moving and no handler running this long is closed,
    /// milliseconds. Every listener.
    pub idle_timeout_ms: u64,
    /// Most connections open at once on the public API; more are closed when accepted.
    pub max_connections: usize,
    /// Most connections open at once from one IPv4 address or IPv6 /64, on every listener.
    pub max_connections_per_ip: usize,
    /// Most connections open at once on the metrics listener.
    pub metrics_max_connections: usize,
    /// Name of the hotkey in the keystore.
    pub key: String,
    /// Metagraph TOML file.
    pub metagraph: PathBuf,
    /// Directory of the sled database (created if missing).
    pub data_dir: PathBuf,
    /// Time between the starts of two rounds, milliseconds.
    pub round_interval_ms: u64,
    /// Deadline of one whole query (commitment and opening), milliseconds.
    pub query_timeout_ms: u64,
    /// Deadline for fetching one peer's weights, milliseconds.
    pub peer_timeout_ms: u64,
    /// Unused since weights messages are tied to their round (wire format v2); kept so
    /// existing configuration files still load.
    pub peer_max_age_ms: u64,
    /// n = k = m of a miner's first GEMM task, and the smallest any dimension gets. Later
    /// tasks are sized from the miner's last verified throughput (docs/protocol.md §1.5).
    pub gemm_min_dim: u32,
    /// Largest n, k or m of a GEMM task: every miner must accept it (miners refuse more than
    /// their `max_gemm_dim`, 8192 by default).
    pub gemm_max_dim: u32,
    /// Time a GEMM task should take as the validator measures it (request to commitment),
    /// milliseconds: each miner's next task is its last verified FLOP/s times this (growing
    /// at most 8× per round), so compute dominates the exchange's overhead. At most a quarter
    /// of `query_timeout_ms` is used, so a task that overshoots its target still finishes.
    pub gemm_target_ms: u64,
    /// Validator CPU time for checking one round's GEMM openings, milliseconds of one core,
    /// shared evenly by the miners; it bounds each task's k·m (the check costs about
    /// k·m·(2.0 + 0.16·open_rows) ns, docs/perf.md), while n, which costs the validator
    /// nothing, carries the rest of the work.
    pub gemm_verify_budget_ms: u64,
    /// Dtype requested from miners.
    pub gemm_dtype: Dtype,
    /// Rows opened per GEMM query (capped at n); the default makes a miner that computed half
    /// the rows pass with probability below 1e-4.
    pub open_rows: u32,
    /// The subnet's LLM: `builtin` or a Hugging Face checkpoint directory. Miners must serve
    /// the same weights (checked by hash).
    pub llm_model: String,
    /// Completion tokens asked for per LLM query.
    pub llm_max_tokens: u32,
    /// Share of the LLM speed score given to time to first token (the rest: tokens/s).
    pub llm_ttft_weight: f64,
    /// Bonus bound of the LLM speed score: this many times the round's median speed earns
    /// the full score, and no more.
    pub llm_speed_cap: f64,
    /// EMA smoothing factor in (0, 1]: the weight of the newest round.
    pub ema_alpha: f64,
    /// Weighting between task kinds.
    pub task_weights: TaskWeights,
    /// Rounds to run before returning; 0 runs until shutdown.
    pub rounds: u64,
    /// Round records kept in the database (older ones are deleted).
    pub keep_rounds: u64,
    /// Largest response body accepted from a miner or peer, bytes.
    pub max_response_bytes: usize,
    /// Yuma consensus hyperparameters. A `[yuma]` table sets the keys it names; the others
    /// keep [`default_yuma`] (this subnet's defaults, not subtensor's).
    #[serde(deserialize_with = "deserialize_yuma")]
    pub yuma: EpochParams,
    /// Rounds between committing to a round's weights and revealing them (at least 2).
    pub reveal_delay_rounds: u64,
    /// Validators with less stake than this are not fetched at all.
    pub min_peer_stake: u64,
    /// Work proofs whose signatures are checked per peer vector (0: all of them).
    pub proof_sample: usize,
    /// A work proof counts only if its request was signed at most this long before the
    /// commitment, milliseconds.
    pub work_window_ms: u64,
    /// On shutdown (SIGINT, SIGTERM) with a round in progress, how long to let it finish
    /// (queries, weights, persistence) before exiting, milliseconds; 0 abandons it at once.
    /// A round cut short is not installed, so the validator resumes from the one before.
    pub shutdown_grace_ms: u64,
    /// How this validator sets weights (`honest` in any real deployment).
    pub behaviour: ValidatorBehaviour,
}

/// This subnet's Yuma hyperparameters: subtensor's defaults with Yuma3 bonds. Yuma3 bonds
/// follow each validator's own clipped weights (not its stake share of a column), so a
/// validator that weights a miner after consensus moved (a copier, whose freshest view is
/// `reveal_delay_rounds + 1` rounds old) holds less bond where the incentive now is
/// (docs/protocol.md §4.2, `validator/tests/copier.rs`).
pub fn default_yuma() -> EpochParams {
    EpochParams {
        yuma3: true,
        ..EpochParams::default()
    }
}

/// Reads a `[yuma]` table over [`default_yuma`], so a partial table changes only what it
/// names (`EpochParams`'s own serde default would reset the rest to subtensor's values).
fn deserialize_yuma<'de, D: serde::Deserializer<'de>>(d: D) -> Result<EpochParams, D::Error> {
    use serde::de::Error;
    let given = toml::Table::deserialize(d)?;
    let mut merged = toml::Table::try_from(default_yuma()).map_err(D::Error::custom)?;
    merged.extend(given);
    merged.try_into().map_err(D::Error::custom)
}

/// Default rows opened: a miner computing half the rows passes with probability < 1e-4.
pub fn default_open_rows() -> u32 {
    polylith_protocol::gemm::rows_for_soundness(0.5, 1e-4)
}

/// A listen address in TOML: `IP:PORT` or a `HOST:PORT` that resolves.
fn deserialize_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    polylith_net::resolve_listen_addr(&text).map_err(serde::de::Error::custom)
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        Self {
            // The ports of the compose subnet and the example metagraph: validators 8081+
            // (metrics 9201+), miners 8091+ (metrics 9101+), so defaults never collide.
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9201)),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            max_connections_per_ip: 128,
            metrics_max_connections: 16,
            key: "validator".to_string(),
            metagraph: PathBuf::from("metagraph.toml"),
            data_dir: PathBuf::from("validator-data"),
            round_interval_ms: 12_000,
            query_timeout_ms: 10_000,
            peer_timeout_ms: 2_000,
            peer_max_age_ms: 120_000,
            gemm_min_dim: 192,
            gemm_max_dim: 8192,
            gemm_target_ms: 250,
            gemm_verify_budget_ms: 4_000,
            gemm_dtype: Dtype::F32,
            open_rows: default_open_rows(),
            llm_model: "builtin".to_string(),
            llm_max_tokens: 24,
            llm_ttft_weight: 0.3,
            llm_speed_cap: 2.0,
            ema_alpha: 0.5,
            task_weights: TaskWeights::default(),
            rounds: 0,
            keep_rounds: 1_000,
            max_response_bytes: 16 << 20,
            yuma: default_yuma(),
            reveal_delay_rounds: 3,
            min_peer_stake: 1,
            proof_sample: 64,
            work_window_ms: 300_000,
            shutdown_grace_ms: 20_000,
            behaviour: ValidatorBehaviour::Honest,
        }
    }
}

impl ValidatorConfig {
    /// Reads a TOML file; unknown keys are errors (a typo must not silently keep a default).
    pub fn load(path: &Path) -> Result<Self, ValidatorError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ValidatorError::Config(format!("reading {}: {e}", path.display())))?;
        Self::from_toml(&text)
            .map_err(|e| ValidatorError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text (missing keys take their defaults).
    pub fn from_toml(text: &str) -> Result<Self, ValidatorError> {
        toml::from_str(text).map_err(|e| ValidatorError::Config(e.to_string()))
    }

    /// The configuration as TOML (every key, so it documents the defaults).
    pub fn to_toml(&self) -> String {
        // Serialising plain data with string keys cannot fail; fall back to an empty doc.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Limits of the public API listener.
    pub fn listener_limits(&self) -> polylith_net::ListenerLimits {
        polylith_net::ListenerLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            ..polylith_net::ListenerLimits::default()
        }
    }

    /// Limits of the metrics listener: the API's timeouts, a smaller cap.
    pub fn metrics_listener_limits(&self) -> polylith_net::ListenerLimits {
        self.listener_limits()
            .for_metrics(self.metrics_max_connections)
    }

    /// Checks ranges; returns the first problem.
    pub fn validate(&self) -> Result<(), ValidatorError> {
        let bad = |m: String| Err(ValidatorError::Config(m));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together: give both or neither".to_string());
        }
        if self.gemm_min_dim == 0 || self.gemm_min_dim > self.gemm_max_dim {
            return bad(format!(
                "gemm_min_dim ({}) must be at least 1 and at most gemm_max_dim ({})",
                self.gemm_min_dim, self.gemm_max_dim
            ));
        }
        if self.gemm_max_dim > MAX_K {
            return bad(format!("gemm_max_dim must be at most {MAX_K}"));
        }
        if self.gemm_target_ms == 0 {
            return bad("gemm_target_ms must be at least 1".to_string());
        }
        if self.gemm_verify_budget_ms == 0 {
            return bad("gemm_verify_budget_ms must be at least 1".to_string());
        }
        if self.open_rows == 0 {
            return bad("open_rows must be at least 1".to_string());
        }
        if self.header_read_timeout_ms == 0
            || self.body_read_timeout_ms == 0
            || self.idle_timeout_ms == 0
        {
            return bad(
                "header_read_timeout_ms, body_read_timeout_ms and idle_timeout_ms must be at \
                 least 1"
                    .to_string(),
            );
        }
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.metrics_max_connections == 0
        {
            return bad(
                "max_connections, max_connections_per_ip and metrics_max_connections must be \
                 at least 1"
                    .to_string(),
            );
        }
        if !(self.ema_alpha > 0.0 && self.ema_alpha <= 1.0) {
            return bad(format!("ema_alpha ({}) must be in (0, 1]", self.ema_alpha));
        }
        let w = &self.task_weights;
        if !(w.gemm.is_finite() && w.gemm >= 0.0 && w.llm.is_finite() && w.llm >= 0.0) {
            return bad("task weights must be finite and non-negative".to_string());
        }
        if w.gemm <= 0.0 && w.llm <= 0.0 {
            return bad("at least one task weight must be positive".to_string());
        }
        if w.llm > 0.0 {
            if self.llm_max_tokens == 0 || self.llm_max_tokens > 4096 {
                return bad(format!(
                    "llm_max_tokens ({}) must be in 1..=4096",
                    self.llm_max_tokens
                ));
            }
            if !(0.0..=1.0).contains(&self.llm_ttft_weight) {
                return bad(format!(
                    "llm_ttft_weight ({}) must be in [0, 1]",
                    self.llm_ttft_weight
                ));
            }
            if !(self.llm_speed_cap.is_finite() && self.llm_speed_cap >= 1.0) {
                return bad(format!(
                    "llm_speed_cap ({}) must be a number >= 1",
                    self.llm_speed_cap
                ));
            }
            if self.llm_model.trim().is_empty() {
                return bad("llm_model must name `builtin` or a checkpoint directory".into());
            }
        }
        if self.query_timeout_ms == 0 || self.peer_timeout_ms == 0 {
            return bad("timeouts must be positive".to_string());
        }
        if self.keep_rounds == 0 {
            return bad("keep_rounds must be at least 1".to_string());
        }
        if self.reveal_delay_rounds < 2 {
            return bad(format!(
                "reveal_delay_rounds ({}) must be at least 2 (a commitment must be fetched \
                 and cross-checked before anyone can see the weights it hides)",
                self.reveal_delay_rounds
            ));
        }
        if self.keep_rounds < self.reveal_delay_rounds.saturating_add(3) {
            return bad(format!(
                "keep_rounds ({}) must be at least reveal_delay_rounds + 3 (commitments are \
                 opened from the database)",
                self.keep_rounds
            ));
        }
        if self.work_window_ms == 0 {
            return bad("work_window_ms must be positive".to_string());
        }
        if self.max_response_bytes < 1024 {
            return bad("max_response_bytes must be at least 1024".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_local_and_cpu_sized() {
        let c = ValidatorConfig::default();
        c.validate().unwrap();
        assert!(c.metrics_listen.ip().is_loopback());
        assert_eq!((c.gemm_min_dim, c.gemm_max_dim), (192, 8192));
        assert!(c.gemm_target_ms >= 100, "compute dominates the exchange");
        assert_eq!(c.open_rows, 14, "0.5^14 < 1e-4 <= 0.5^13");
        assert_eq!(
            c.task_weights,
            TaskWeights {
                gemm: 1.0,
                llm: 1.0
            },
            "both tasks by default"
        );
        // A GEMM-only validator is valid (the LLM settings are then not used).
        ValidatorConfig {
            task_weights: TaskWeights {
                gemm: 1.0,
                llm: 0.0,
            },
            llm_max_tokens: 0,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn toml_sets_a_subset_and_round_trips() {
        let c = ValidatorConfig::from_toml("rounds = 5\n[task_weights]\ngemm = 2.0\n").unwrap();
        assert_eq!(c.rounds, 5);
        assert_eq!(c.task_weights.gemm, 2.0);
        assert_eq!(
            c.query_timeout_ms,
            ValidatorConfig::default().query_timeout_ms
        );
        assert_eq!(ValidatorConfig::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn a_partial_yuma_table_keeps_the_other_defaults() {
        let c = ValidatorConfig::from_toml("[yuma]\nkappa_u16 = 40000\n").unwrap();
        assert_eq!(c.yuma.kappa_u16, 40_000);
        assert_eq!(
            c.yuma,
            EpochParams {
                kappa_u16: 40_000,
                ..default_yuma()
            }
        );
        assert!(
            c.yuma.yuma3,
            "a partial table keeps this subnet's Yuma3 default"
        );
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_errors() {
        assert!(ValidatorConfig::from_toml("roundz = 5").is_err());
        for bad in [
            ValidatorConfig {
                gemm_min_dim: 0,
                ..Default::default()
            },
            ValidatorConfig {
                gemm_min_dim: 9000,
                ..Default::default()
            },
            ValidatorConfig {
                open_rows: 0,
                ..Default::default()
            },
            ValidatorConfig {
                gemm_target_ms: 0,
                ..Default::default()
            },
            ValidatorConfig {
                gemm_verify_budget_ms: 0,
                ..Default::default()
            },
            ValidatorConfig {
                ema_alpha: 0.0,
                ..Default::default()
            },
            ValidatorConfig {
                ema_alpha: f64::NAN,
                ..Default::default()
            },
            ValidatorConfig {
                task_weights: TaskWeights {
                    gemm: 0.0,
                    llm: 0.0,
                },
                ..Default::default()
            },
            ValidatorConfig {
                task_weights: TaskWeights {
                    gemm: 1.0,
                    llm: -1.0,
                },
                ..Default::default()
            },
            ValidatorConfig {
                llm_max_tokens: 0,
                ..Default::default()
            },
            ValidatorConfig {
                llm_ttft_weight: 1.5,
                ..Default::default()
            },
            ValidatorConfig {
                llm_speed_cap: f64::NAN,
                ..Default::default()
            },
            ValidatorConfig {
                query_timeout_ms: 0,
                ..Default::default()
            },
            ValidatorConfig {
                reveal_delay_rounds: 1,
                ..Default::default()
            },
            ValidatorConfig {
                keep_rounds: 3,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
