//! The miner's configuration: one typed struct, loadable from TOML, with defaults that work on
//! a laptop (loopback addresses, modest limits).

use crate::MinerError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Which compute backend to use for GEMM proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// CUDA when a usable GPU is present, else CPU.
    #[default]
    Auto,
    /// Always the CPU backend.
    Cpu,
    /// CUDA or a start-up error.
    Cuda,
}

impl BackendKind {
    /// The lowercase name used in flags and TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendKind::Auto),
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            other => Err(format!(
                "unknown backend {other:?} (expected auto, cpu or cuda)"
            )),
        }
    }
}

/// How the miner behaves. Everything except `honest` is an adversary used by tests and
/// `polylith local` to show that validators catch cheating and slowness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Computes every task correctly, as fast as it can.
    #[default]
    Honest,
    /// Correct results, but replies only after an extra delay (see
    /// [`MinerConfig::slow_delay_ms`] and [`MinerConfig::slow_factor`]).
    Slow,
    /// Computes half of C's rows and fills the rest with garbage, then commits honestly to
    /// that matrix.
    Lazy,
    /// Commits to a garbage matrix without computing anything.
    Random,
    /// Computes its first task honestly and answers every later task with that commitment.
    Replay,
    /// LLM: generates with a different model's weights while claiming the real one.
    WrongModel,
    /// LLM: generates with slightly perturbed weights.
    Perturbed,
    /// LLM: generates with the last layer skipped.
    Truncated,
    /// LLM: generates with int8-quantized weights.
    Quantized,
    /// LLM: returns uniformly random tokens without running the model.
    RandomTokens,
}

impl Behaviour {
    /// Every behaviour, for help texts and exhaustive tests.
    pub const ALL: [Behaviour; 10] = [
        Behaviour::Honest,
        Behaviour::Slow,
        Behaviour::Lazy,
        Behaviour::Random,
        Behaviour::Replay,
        Behaviour::WrongModel,
        Behaviour::Perturbed,
        Behaviour::Truncated,
        Behaviour::Quantized,
        Behaviour::RandomTokens,
    ];

    /// The kebab-case name used in flags and TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::Slow => "slow",
            Behaviour::Lazy => "lazy",
            Behaviour::Random => "random",
            Behaviour::Replay => "replay",
            Behaviour::WrongModel => "wrong-model",
            Behaviour::Perturbed => "perturbed",
            Behaviour::Truncated => "truncated",
            Behaviour::Quantized => "quantized",
            Behaviour::RandomTokens => "random-tokens",
        }
    }
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Behaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Behaviour::ALL
            .into_iter()
            .find(|b| b.as_str() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = Behaviour::ALL.iter().map(|b| b.as_str()).collect();
                format!(
                    "unknown behaviour {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// Every setting of the miner daemon. Missing TOML keys take the [`Default`] values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinerConfig {
    /// Address of the task API: `IP:PORT` or `HOST:PORT` (resolved at load).
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint (loopback by default), as `listen`.
    #[serde(deserialize_with = "deserialize_listen")]
    pub metrics_listen: SocketAddr,
    /// PEM certificate chain: with `tls_key`, the task API serves HTTPS (the metagraph
    /// endpoint must then be `https://`). Metrics stay plain HTTP on loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Longest time to receive a request's headers (also how long an idle keep-alive
    /// connection may wait before its next request), milliseconds. Every listener.
    pub header_read_timeout_ms: u64,
    /// A connection with no bytes moving and no handler running this long is closed,
    /// milliseconds. Every listener.
    pub idle_timeout_ms: u64,
    /// Most connections open at once on the task API; more are closed when accepted.
    pub max_connections: usize,
    /// Most connections open at once from one IPv4 address or IPv6 /64, on every listener.
    pub max_connections_per_ip: usize,
    /// Most connections open at once on the metrics listener.
    pub metrics_max_connections: usize,
    /// Name of the hotkey in the keystore.
    pub key: String,
    /// Path of the metagraph TOML file.
    pub metagraph: PathBuf,
    /// How often the metagraph file is checked for changes, milliseconds.
    pub metagraph_reload_ms: u64,
    /// Smallest stake a validator needs for the miner to accept its requests.
    pub min_validator_stake: u64,
    /// Allowed difference between the sender's timestamp and the miner's clock, milliseconds.
    pub timestamp_window_ms: u64,
    /// Most nonces remembered for replay protection.
    pub nonce_cache_capacity: usize,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Task requests computed at the same time.
    pub max_concurrent: usize,
    /// Task requests allowed to wait for a compute slot; more are refused with 503.
    pub max_queue: usize,
    /// Longest wait for a compute slot before a request is refused with 503, milliseconds.
    pub queue_timeout_ms: u64,
    /// Longest time to receive a request body once its headers verified, milliseconds;
    /// a slower sender gets 408 `body_timeout` and its place is freed.
    pub body_read_timeout_ms: u64,
    /// How long a commitment stays openable, milliseconds.
    pub commitment_ttl_ms: u64,
    /// Most bytes held by all commitments together; the oldest are evicted first.
    pub max_commitment_bytes: u64,
    /// Most commitments held; the oldest are evicted first.
    pub max_commitments: usize,
    /// Largest n, k or m accepted in a GEMM task.
    pub max_gemm_dim: u32,
    /// Most rows opened by one request.
    pub max_open_rows: usize,
    /// Compute backend.
    pub backend: BackendKind,
    /// LLM served on `/v1/completions`: `builtin` (the default) or a checkpoint directory;
    /// absent or `none` disables the LLM endpoints (they answer 404 `unknown_model`).
    pub model: Option<String>,
    /// Honest or one of the adversarial behaviours.
    pub behaviour: Behaviour,
    /// Extra delay of the `slow` behaviour, milliseconds (added to the factor's delay).
    pub slow_delay_ms: u64,
    /// The `slow` behaviour also waits this multiple of its compute time.
    pub slow_factor: f64,
}

/// A listen address in TOML: `IP:PORT` or a `HOST:PORT` that resolves.
fn deserialize_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    polylith_net::resolve_listen_addr(&text).map_err(serde::de::Error::custom)
}

impl Default for MinerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8091)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            tls_cert: None,
            tls_key: None,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            max_connections_per_ip: 128,
            metrics_max_connections: 16,
            key: "miner".to_string(),
            metagraph: PathBuf::from("metagraph.toml"),
            metagraph_reload_ms: 2_000,
            min_validator_stake: 1,
            timestamp_window_ms: 30_000,
            nonce_cache_capacity: 100_000,
            max_body_bytes: 1 << 20,
            max_concurrent: 4,
            max_queue: 64,
            queue_timeout_ms: 30_000,
            body_read_timeout_ms: 5_000,
            commitment_ttl_ms: 120_000,
            max_commitment_bytes: 1 << 30,
            max_commitments: 256,
            max_gemm_dim: 8192,
            max_open_rows: 1024,
            backend: BackendKind::Auto,
            model: Some("builtin".to_string()),
            behaviour: Behaviour::Honest,
            slow_delay_ms: 200,
            slow_factor: 2.0,
        }
    }
}

impl MinerConfig {
    /// Parses TOML text; unknown keys are errors so typos do not pass silently.
    pub fn from_toml(text: &str) -> Result<Self, MinerError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            // toml's Display draws a multi-line snippet; start-up errors are one line.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', " ");
            MinerError::Config(match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            })
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads a TOML file.
    pub fn load(path: &Path) -> Result<Self, MinerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MinerError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| match e {
            MinerError::Config(m) => MinerError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The configuration as TOML (every key, so it doubles as a template).
    pub fn to_toml(&self) -> String {
        // Plain data with string/number fields: serialisation cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Limits of the task API listener.
    pub fn listener_limits(&self) -> polylith_net::ListenerLimits {
        polylith_net::ListenerLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            // Task routes enforce their own, shorter body deadline after the envelope checks
            // (`body_read_timeout_ms`); the listener's default is the backstop for the rest.
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

    /// Checks values that would make the daemon useless or unbounded.
    pub fn validate(&self) -> Result<(), MinerError> {
        let bad = |m: &str| Err(MinerError::Config(m.to_string()));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together: give both or neither");
        }
        if self.max_concurrent == 0 {
            return bad("max_concurrent must be at least 1");
        }
        if self.header_read_timeout_ms == 0 || self.idle_timeout_ms == 0 {
            return bad("header_read_timeout_ms and idle_timeout_ms must be at least 1");
        }
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.metrics_max_connections == 0
        {
            return bad(
                "max_connections, max_connections_per_ip and metrics_max_connections must be \
                 at least 1",
            );
        }
        if self.body_read_timeout_ms == 0 {
            return bad("body_read_timeout_ms must be at least 1");
        }
        if self.max_body_bytes == 0 {
            return bad("max_body_bytes must be at least 1");
        }
        if self.nonce_cache_capacity == 0 {
            return bad("nonce_cache_capacity must be at least 1");
        }
        if self.max_commitments == 0 || self.max_commitment_bytes == 0 {
            return bad("max_commitments and max_commitment_bytes must be at least 1");
        }
        if self.max_gemm_dim == 0 {
            return bad("max_gemm_dim must be at least 1");
        }
        if self.metagraph_reload_ms == 0 {
            return bad("metagraph_reload_ms must be at least 1");
        }
        if !self.slow_factor.is_finite() || self.slow_factor < 0.0 {
            return bad("slow_factor must be a finite number ≥ 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = toml::to_string(&MinerConfig::default()).unwrap();
        assert_eq!(
            MinerConfig::from_toml(&text).unwrap(),
            MinerConfig::default()
        );
    }

    #[test]
    fn partial_toml_keeps_defaults_and_rejects_unknown_keys() {
        let c = MinerConfig::from_toml("behaviour = \"lazy\"\nbackend = \"cpu\"\n").unwrap();
        assert_eq!(c.behaviour, Behaviour::Lazy);
        assert_eq!(c.backend, BackendKind::Cpu);
        assert_eq!(c.timestamp_window_ms, 30_000);
        let err = MinerConfig::from_toml("listen_adress = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("listen_adress"), "{err}");
    }

    #[test]
    fn zero_concurrency_is_rejected() {
        assert!(MinerConfig::from_toml("max_concurrent = 0").is_err());
    }

    #[test]
    fn behaviour_and_backend_parse_from_strings() {
        for b in Behaviour::ALL {
            assert_eq!(b.as_str().parse::<Behaviour>().unwrap(), b);
        }
        assert!("sneaky".parse::<Behaviour>().is_err());
        assert_eq!("CUDA".parse::<BackendKind>().unwrap(), BackendKind::Cuda);
        assert!("tpu".parse::<BackendKind>().is_err());
    }
}
