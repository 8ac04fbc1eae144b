//! `polylith validator`: loads the configuration (TOML file, then flags and `POLYLITH_*`
//! variables), the hotkey, the metagraph and the database, binds both listeners and runs
//! rounds until Ctrl-C, SIGTERM or the configured number of rounds.

use crate::Global;
use crate::cmd::KeysDirArg;
use anyhow::Context;
use polylith_protocol::keys::Keystore;
use polylith_validator::{Validator, ValidatorConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `polylith validator`. Each overrides the same key of the `--config` file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (keys as in `ValidatorConfig`); flags override it.
    #[arg(long, env = "POLYLITH_VALIDATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the public API (weights, health, state).
    #[arg(long, env = "POLYLITH_LISTEN", value_name = "HOST:PORT", value_parser = listen_addr)]
    pub listen: Option<SocketAddr>,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "POLYLITH_METRICS_LISTEN", value_name = "HOST:PORT", value_parser = listen_addr)]
    pub metrics_listen: Option<SocketAddr>,
    /// Longest time to receive a request's headers, milliseconds.
    #[arg(long, env = "POLYLITH_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Longest time to receive a request body, milliseconds.
    #[arg(long, env = "POLYLITH_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
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
    /// PEM certificates to trust, besides the system's, for https:// miners and peers.
    #[arg(long, env = "POLYLITH_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Name of the hotkey in the keystore.
    #[arg(long, env = "POLYLITH_KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub keys_dir: KeysDirArg,
    /// Metagraph TOML file.
    #[arg(long, env = "POLYLITH_METAGRAPH")]
    pub metagraph: Option<PathBuf>,
    /// Directory of the validator database.
    #[arg(long, env = "POLYLITH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Time between round starts, milliseconds.
    #[arg(long, env = "POLYLITH_ROUND_INTERVAL_MS")]
    pub round_interval_ms: Option<u64>,
    /// Deadline of one miner query (commitment and opening), milliseconds.
    #[arg(long, env = "POLYLITH_QUERY_TIMEOUT_MS")]
    pub query_timeout_ms: Option<u64>,
    /// Deadline of one peer weights fetch, milliseconds.
    #[arg(long, env = "POLYLITH_PEER_TIMEOUT_MS")]
    pub peer_timeout_ms: Option<u64>,
    /// Peer weights older than this are ignored, milliseconds.
    #[arg(long, env = "POLYLITH_PEER_MAX_AGE_MS")]
    pub peer_max_age_ms: Option<u64>,
    /// n = k = m of a miner's first GEMM task; later tasks are sized from its throughput.
    #[arg(long, env = "POLYLITH_GEMM_MIN_DIM")]
    pub gemm_min_dim: Option<u32>,
    /// Largest n, k or m of a GEMM task (miners refuse more than their own maximum).
    #[arg(long, env = "POLYLITH_GEMM_MAX_DIM")]
    pub gemm_max_dim: Option<u32>,
    /// Time a GEMM task should take, ms: a miner's next task is its last verified FLOP/s times this.
    #[arg(long, env = "POLYLITH_GEMM_TARGET_MS")]
    pub gemm_target_ms: Option<u64>,
    /// CPU ms of one core for checking a round's GEMM openings, shared by the miners.
    #[arg(long, env = "POLYLITH_GEMM_VERIFY_BUDGET_MS")]
    pub gemm_verify_budget_ms: Option<u64>,
    /// Rows opened per GEMM query.
    #[arg(long, env = "POLYLITH_OPEN_ROWS")]
    pub open_rows: Option<u32>,
    /// EMA smoothing factor in (0, 1].
    #[arg(long, env = "POLYLITH_EMA_ALPHA")]
    pub ema_alpha: Option<f64>,
    /// Weight of the GEMM task in the round score.
    #[arg(long, env = "POLYLITH_GEMM_WEIGHT")]
    pub gemm_weight: Option<f64>,
    /// Weight of the LLM task in the round score.
    #[arg(long, env = "POLYLITH_LLM_WEIGHT")]
    pub llm_weight: Option<f64>,
    /// The subnet's LLM: `builtin` or a Hugging Face checkpoint directory.
    #[arg(long, env = "POLYLITH_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// Completion tokens asked for per LLM query.
    #[arg(long, env = "POLYLITH_LLM_MAX_TOKENS")]
    pub llm_max_tokens: Option<u32>,
    /// Rounds to run, then exit; 0 runs until stopped.
    #[arg(long, env = "POLYLITH_ROUNDS")]
    pub rounds: Option<u64>,
    /// Round records kept in the database.
    #[arg(long, env = "POLYLITH_KEEP_ROUNDS")]
    pub keep_rounds: Option<u64>,
    /// Rounds between committing to weights and revealing them (at least 2).
    #[arg(long, env = "POLYLITH_REVEAL_DELAY_ROUNDS")]
    pub reveal_delay_rounds: Option<u64>,
    /// Peers with less stake than this are not fetched.
    #[arg(long, env = "POLYLITH_MIN_PEER_STAKE")]
    pub min_peer_stake: Option<u64>,
    /// Work proofs whose signatures are checked per peer vector (0: all).
    #[arg(long, env = "POLYLITH_PROOF_SAMPLE")]
    pub proof_sample: Option<usize>,
    /// A work proof counts only if signed at most this long before the commitment, ms.
    #[arg(long, env = "POLYLITH_WORK_WINDOW_MS")]
    pub work_window_ms: Option<u64>,
    /// On SIGINT/SIGTERM, time the round in progress gets to finish and be saved, ms.
    #[arg(long, env = "POLYLITH_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Args {
    /// The effective configuration: defaults, then the file, then flags/environment.
    pub fn config(&self) -> anyhow::Result<ValidatorConfig> {
        let mut c = match &self.config {
            Some(path) => ValidatorConfig::load(path)?,
            None => ValidatorConfig::default(),
        };
        override_from_flags!(
            c,
            self,
            listen,
            metrics_listen,
            header_read_timeout_ms,
            body_read_timeout_ms,
            idle_timeout_ms,
            max_connections,
            max_connections_per_ip,
            metrics_max_connections,
            key,
            metagraph,
            data_dir,
            round_interval_ms,
            query_timeout_ms,
            peer_timeout_ms,
            peer_max_age_ms,
            gemm_min_dim,
            gemm_max_dim,
            gemm_target_ms,
            gemm_verify_budget_ms,
            open_rows,
            ema_alpha,
            llm_model,
            llm_max_tokens,
            rounds,
            keep_rounds,
            reveal_delay_rounds,
            min_peer_stake,
            proof_sample,
            work_window_ms,
            shutdown_grace_ms
        );
        if let Some(w) = self.gemm_weight {
            c.task_weights.gemm = w;
        }
        if let Some(w) = self.llm_weight {
            c.task_weights.llm = w;
        }
        if let Some(path) = &self.tls_cert {
            c.tls_cert = Some(path.clone());
        }
        if let Some(path) = &self.tls_key {
            c.tls_key = Some(path.clone());
        }
        if let Some(path) = &self.tls_ca {
            c.tls_ca = Some(path.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

/// Runs `polylith validator`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<()> {
    let config = args.config()?;
    if args.print_config {
        crate::cmd::out::write(format_args!("{}", config.to_toml()))?;
        return Ok(());
    }
    let keystore = Keystore::new(global.keys_dir(&args.keys_dir));
    let hotkey = keystore
        .load(&config.key)
        .with_context(|| format!("loading hotkey {:?}", config.key))?;
    // Before the runtime starts: every socket either listener accepts counts against it.
    let nofile = polylith_net::raise_nofile_limit();
    tracing::debug!(soft = ?nofile.soft, hard = ?nofile.hard, "open-files limit");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        // Both binds are fatal: a validator whose metrics cannot be scraped is not silently run.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the validator API to {}", config.listen))?;
        let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| {
                format!("binding the metrics endpoint to {}", config.metrics_listen)
            })?;
        let validator = Validator::new(config, hotkey)?;
        // The start-up line (key, address, endpoints, model, backend) is logged by the
        // library when serving starts, through the logger so JSON logging covers it.
        polylith_validator::run(
            validator,
            listener,
            metrics_listener,
            super::shutdown_signal(),
        )
        .await?;
        Ok(())
    })
}

/// `--listen` and `--metrics-listen`: `IP:PORT` or a `HOST:PORT` that resolves.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    polylith_net::resolve_listen_addr(text).map_err(|e| e.to_string())
}
