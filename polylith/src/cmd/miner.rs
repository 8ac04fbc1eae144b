//! `polylith miner`: loads the configuration (TOML file, then flags and `POLYLITH_*`
//! variables), the hotkey and the metagraph, binds both listeners and serves until Ctrl-C
//! or SIGTERM.

use crate::Global;
use crate::cmd::KeysDirArg;
use anyhow::Context;
use polylith_miner::{BackendKind, Behaviour, Miner, MinerConfig, select_backend};
use polylith_protocol::keys::Keystore;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `polylith miner`. Each overrides the same key of the `--config` file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (keys as in `MinerConfig`); flags override it.
    #[arg(long, env = "POLYLITH_MINER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the task API.
    #[arg(long, env = "POLYLITH_LISTEN", value_name = "HOST:PORT", value_parser = listen_addr)]
    pub listen: Option<SocketAddr>,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "POLYLITH_METRICS_LISTEN", value_name = "HOST:PORT", value_parser = listen_addr)]
    pub metrics_listen: Option<SocketAddr>,
    /// Longest time to receive a request's headers, milliseconds.
    #[arg(long, env = "POLYLITH_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Close connections idle (no bytes, no handler running) this long, milliseconds.
    #[arg(long, env = "POLYLITH_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Most connections open at once on the API listener.
    #[arg(long, env = "POLYLITH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections open at once from one address, on every listener.
    #[arg(long, env = "POLYLITH_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Most connections open at once on the metrics listener.
    #[arg(long, env = "POLYLITH_METRICS_MAX_CONNECTIONS")]
    pub metrics_max_connections: Option<usize>,
    /// PEM certificate chain: serve the API over HTTPS (with --tls-key).
    #[arg(
        long,
        env = "POLYLITH_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "POLYLITH_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Name of the hotkey in the keystore.
    #[arg(long, env = "POLYLITH_KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub keys_dir: KeysDirArg,
    /// Metagraph TOML file.
    #[arg(long, env = "POLYLITH_METAGRAPH")]
    pub metagraph: Option<PathBuf>,
    /// How often to check the metagraph file for changes, milliseconds.
    #[arg(long, env = "POLYLITH_METAGRAPH_RELOAD_MS")]
    pub metagraph_reload_ms: Option<u64>,
    /// Smallest validator stake accepted.
    #[arg(long, env = "POLYLITH_MIN_VALIDATOR_STAKE")]
    pub min_validator_stake: Option<u64>,
    /// Allowed clock difference of signed requests, milliseconds.
    #[arg(long, env = "POLYLITH_TIMESTAMP_WINDOW_MS")]
    pub timestamp_window_ms: Option<u64>,
    /// Nonces remembered for replay protection.
    #[arg(long, env = "POLYLITH_NONCE_CACHE_CAPACITY")]
    pub nonce_cache_capacity: Option<usize>,
    /// Largest request body, bytes.
    #[arg(long, env = "POLYLITH_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Longest time to receive a request body after its headers verified, milliseconds.
    #[arg(long, env = "POLYLITH_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Task requests computed at once.
    #[arg(long, env = "POLYLITH_MAX_CONCURRENT")]
    pub max_concurrent: Option<usize>,
    /// Task requests allowed to wait for a slot.
    #[arg(long, env = "POLYLITH_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// Longest wait for a compute slot, milliseconds.
    #[arg(long, env = "POLYLITH_QUEUE_TIMEOUT_MS")]
    pub queue_timeout_ms: Option<u64>,
    /// How long a commitment stays openable, milliseconds.
    #[arg(long, env = "POLYLITH_COMMITMENT_TTL_MS")]
    pub commitment_ttl_ms: Option<u64>,
    /// Most bytes held by commitments.
    #[arg(long, env = "POLYLITH_MAX_COMMITMENT_BYTES")]
    pub max_commitment_bytes: Option<u64>,
    /// Most commitments held.
    #[arg(long, env = "POLYLITH_MAX_COMMITMENTS")]
    pub max_commitments: Option<usize>,
    /// Largest n, k or m of a GEMM task.
    #[arg(long, env = "POLYLITH_MAX_GEMM_DIM")]
    pub max_gemm_dim: Option<u32>,
    /// Most rows per opening.
    #[arg(long, env = "POLYLITH_MAX_OPEN_ROWS")]
    pub max_open_rows: Option<usize>,
    /// Compute backend: auto, cpu or cuda.
    #[arg(long, env = "POLYLITH_BACKEND")]
    pub backend: Option<BackendKind>,
    /// LLM to serve on /v1/completions: `builtin` (default), a checkpoint directory, or
    /// `none` (GEMM only).
    #[arg(long, env = "POLYLITH_MODEL")]
    pub model: Option<String>,
    /// honest, or an adversary for tests: slow, lazy, random, replay (GEMM), wrong-model,
    /// perturbed, truncated, quantized, random-tokens (LLM).
    #[arg(long, env = "POLYLITH_BEHAVIOUR")]
    pub behaviour: Option<Behaviour>,
    /// Extra delay of the slow behaviour, milliseconds.
    #[arg(long, env = "POLYLITH_SLOW_DELAY_MS")]
    pub slow_delay_ms: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Args {
    /// The effective configuration: defaults, then the file, then flags/environment.
    pub fn config(&self) -> anyhow::Result<MinerConfig> {
        let mut c = match &self.config {
            Some(path) => MinerConfig::load(path)?,
            None => MinerConfig::default(),
        };
        if let Some(model) = &self.model {
            c.model = Some(model.clone());
        }
        override_from_flags!(
            c,
            self,
            listen,
            metrics_listen,
            header_read_timeout_ms,
            idle_timeout_ms,
            max_connections,
            max_connections_per_ip,
            metrics_max_connections,
            key,
            metagraph,
            metagraph_reload_ms,
            min_validator_stake,
            timestamp_window_ms,
            nonce_cache_capacity,
            max_body_bytes,
            body_read_timeout_ms,
            max_concurrent,
            max_queue,
            queue_timeout_ms,
            commitment_ttl_ms,
            max_commitment_bytes,
            max_commitments,
            max_gemm_dim,
            max_open_rows,
            backend,
            behaviour,
            slow_delay_ms
        );
        if let Some(path) = &self.tls_cert {
            c.tls_cert = Some(path.clone());
        }
        if let Some(path) = &self.tls_key {
            c.tls_key = Some(path.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

/// Runs `polylith miner`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<()> {
    let config = args.config()?;
    if args.print_config {
        crate::cmd::out::write(format_args!("{}", config.to_toml()))?;
        return Ok(());
    }
    // The backend first: a missing GPU is the most likely start-up failure and needs no key.
    let backend = select_backend(config.backend).context("selecting the compute backend")?;
    let keystore = Keystore::new(global.keys_dir(&args.keys_dir));
    let hotkey = keystore
        .load(&config.key)
        .with_context(|| format!("loading hotkey {:?}", config.key))?;
    // Before the runtime starts: every socket either listener accepts counts against it.
    let nofile = polylith_net::raise_nofile_limit();
    tracing::debug!(soft = ?nofile.soft, hard = ?nofile.hard, "open-files limit");

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the task API to {}", config.listen))?;
        let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| {
                format!("binding the metrics endpoint to {}", config.metrics_listen)
            })?;
        let miner = Miner::new(config, hotkey, backend)?;
        // The start-up line (key, address, endpoints, model, backend) is logged by the
        // library when serving starts, through the logger so JSON logging covers it.
        polylith_miner::run(miner, listener, metrics_listener, super::shutdown_signal()).await?;
        Ok(())
    })
}

/// `--listen` and `--metrics-listen`: `IP:PORT` or a `HOST:PORT` that resolves.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    polylith_net::resolve_listen_addr(text).map_err(|e| e.to_string())
}
