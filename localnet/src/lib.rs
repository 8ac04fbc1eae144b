//! A whole Polylith subnet in one process on loopback: `polylith local`.
//!
//! Owns: generating the keys and the metagraph of a throwaway subnet, starting V validators
//! and N miners (with chosen behaviours) on free 127.0.0.1 ports, driving rounds, and
//! collecting the leaderboard (who earned what, and why) from the validators' own state.
//!
//! Must not: score, verify or sign anything itself. Every number in the report comes from the
//! real miner and validator code over real HTTP, so the local subnet demonstrates exactly
//! what a deployed one does. It lives in its own crate (not in the binary) so that the
//! end-to-end behaviour is a library callable from tests, and the binary stays thin.
#![warn(missing_docs)]

pub mod attack;

use attack::{SlowClientReport, SlowClients, Target};
use polylith_miner::{BackendKind, Behaviour, GemmBackend, Miner, MinerConfig};
use polylith_protocol::keys::Keystore;
use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use polylith_validator::{
    TaskWeights, Validator, ValidatorBehaviour, ValidatorConfig, ValidatorSnapshot,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The behaviours `polylith local` runs when none are given: honest and slow miners, the GEMM
/// cheats (lazy, random, replay) and two LLM cheats (another model, perturbed weights).
pub const DEFAULT_MINERS: &str = "honest,honest,slow,lazy,random,replay,wrong-model,perturbed";

/// Which task kinds the validators of a local subnet run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalTasks {
    /// Proof-of-compute GEMM only.
    Gemm,
    /// LLM inference only.
    Llm,
    /// Both, weighted equally.
    #[default]
    All,
}

impl LocalTasks {
    /// The validators' task weights.
    pub fn weights(self) -> TaskWeights {
        match self {
            LocalTasks::Gemm => TaskWeights {
                gemm: 1.0,
                llm: 0.0,
            },
            LocalTasks::Llm => TaskWeights {
                gemm: 0.0,
                llm: 1.0,
            },
            LocalTasks::All => TaskWeights {
                gemm: 1.0,
                llm: 1.0,
            },
        }
    }
}

impl std::str::FromStr for LocalTasks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gemm" => Ok(LocalTasks::Gemm),
            "llm" => Ok(LocalTasks::Llm),
            "all" => Ok(LocalTasks::All),
            other => Err(format!(
                "unknown task {other:?} (expected gemm, llm or all)"
            )),
        }
    }
}

/// Stake of the first validator; each later one holds a little less, so dividends differ.
const BASE_STAKE: u64 = 1_000_000;

/// Errors starting or running a local subnet. Each names its step and leaves the cause to
/// the source chain, so `{:#}` prints every cause once.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Bad options (no validators, unknown behaviour, ...).
    #[error("{0}")]
    Options(String),
    /// Filesystem or socket error.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Key generation or storage failed.
    #[error("keys")]
    Keys(#[from] polylith_protocol::keys::KeyError),
    /// Writing the metagraph failed.
    #[error("metagraph")]
    Metagraph(#[from] polylith_protocol::metagraph::MetagraphError),
    /// The compute backend could not start.
    #[error(transparent)]
    Backend(#[from] polylith_miner::BackendError),
    /// A miner failed to start.
    #[error("miner")]
    Miner(#[from] polylith_miner::MinerError),
    /// A validator failed to start.
    #[error("validator")]
    Validator(#[from] polylith_validator::ValidatorError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let context = context.into();
    move |source| LocalError::Io { context, source }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Number of validators (at least 1).
    pub validators: usize,
    /// One behaviour per miner.
    pub miners: Vec<Behaviour>,
    /// Where keys, the metagraph and the validators' databases go.
    pub data_dir: PathBuf,
    /// Compute backend for every miner.
    pub backend: BackendKind,
    /// Pause between rounds in `--serve` mode, milliseconds.
    pub round_interval_ms: u64,
    /// GEMM dimension of a miner's first task and the largest any task reaches (tasks are
    /// sized in between from each miner's measured throughput).
    pub gemm_dims: (u32, u32),
    /// Task kinds the validators run.
    pub tasks: LocalTasks,
    /// The subnet's LLM (`builtin` or a checkpoint directory), served by every miner.
    pub model: String,
    /// Completion tokens per LLM query.
    pub llm_max_tokens: u32,
    /// Behaviour of each validator by uid (missing ones are honest): weight copiers show
    /// that copying earns (near) nothing.
    pub validator_behaviours: Vec<ValidatorBehaviour>,
    /// Connections a slow-body client (a key outside the metagraph, and a registered
    /// validator key with stake 1 for every fourth miner connection) holds open to each miner
    /// and validator listener for the whole run; 0 (the default here; `polylith local` asks
    /// for 4) runs none and registers no extra key.
    pub slow_clients: usize,
}

impl LocalOptions {
    /// Defaults for `data_dir`: 2 validators, the default behaviours, the CPU backend.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            validators: 2,
            miners: parse_behaviours(DEFAULT_MINERS).unwrap_or_default(),
            data_dir,
            backend: BackendKind::Cpu,
            round_interval_ms: 2_000,
            gemm_dims: (192, 8192),
            tasks: LocalTasks::All,
            model: "builtin".to_string(),
            llm_max_tokens: 24,
            validator_behaviours: Vec::new(),
            slow_clients: 0,
        }
    }
}

/// Parses a comma-separated list of validator behaviours (`honest,copier,lazy-copier`).
pub fn parse_validator_behaviours(list: &str) -> Result<Vec<ValidatorBehaviour>, LocalError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<ValidatorBehaviour>().map_err(LocalError::Options))
        .collect()
}

/// Parses a comma-separated list of behaviours (`honest,slow,...`).
pub fn parse_behaviours(list: &str) -> Result<Vec<Behaviour>, LocalError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Behaviour>().map_err(LocalError::Options))
        .collect()
}

/// A running node's addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Uid in the metagraph.
    pub uid: u16,
    /// Hotkey, SS58.
    pub hotkey: String,
    /// Task API / public API address.
    pub api: SocketAddr,
    /// Prometheus metrics address.
    pub metrics: SocketAddr,
}

struct MinerNode {
    info: NodeInfo,
    behaviour: Behaviour,
}

struct ValidatorNode {
    info: NodeInfo,
    stake: u64,
    behaviour: ValidatorBehaviour,
    validator: Validator,
}

/// A started local subnet. Dropping it without [`LocalSubnet::shutdown`] aborts the servers.
pub struct LocalSubnet {
    miners: Vec<MinerNode>,
    validators: Vec<ValidatorNode>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    data_dir: PathBuf,
    rounds: u64,
    slow: Option<SlowClients>,
}

async fn bind() -> Result<(TcpListener, SocketAddr), LocalError> {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding a loopback port"))?;
    let a = l.local_addr().map_err(io("reading a listener's address"))?;
    Ok((l, a))
}

fn stopped(rx: watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx;
    async move {
        // A dropped sender also means stop.
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl LocalSubnet {
    /// Generates keys and the metagraph under `opts.data_dir`, binds every node to a free
    /// loopback port and starts the miners and the validators' HTTP APIs. Rounds run only
    /// when asked ([`LocalSubnet::run_round`]) or, with `serve`, on the validators' timers.
    pub async fn start(opts: &LocalOptions, serve: bool) -> Result<Self, LocalError> {
        if opts.validators == 0 {
            return Err(LocalError::Options(
                "at least one validator is needed".into(),
            ));
        }
        if opts.miners.is_empty() {
            return Err(LocalError::Options("at least one miner is needed".into()));
        }
        let total = opts.validators.saturating_add(opts.miners.len());
        if total > usize::from(u16::MAX) {
            return Err(LocalError::Options("too many neurons".into()));
        }
        std::fs::create_dir_all(&opts.data_dir)
            .map_err(io(format!("creating {}", opts.data_dir.display())))?;
        let keystore = Keystore::new(opts.data_dir.join("keys"));
        let metagraph_path = opts.data_dir.join("metagraph.toml");

        // Keys: reuse a data dir's keys so a restarted `--data-dir` subnet resumes its state.
        let mut keys = Vec::with_capacity(total);
        for uid in 0..total {
            let name = if uid < opts.validators {
                format!("validator-{uid}")
            } else {
                format!("miner-{uid}")
            };
            let key = match keystore.load(&name) {
                Ok(k) => k,
                Err(_) => keystore.create(&name)?,
            };
            keys.push((name, key));
        }

        let mut listeners = Vec::with_capacity(total);
        for _ in 0..total {
            listeners.push((bind().await?, bind().await?));
        }
        let mut neurons = Vec::with_capacity(total);
        for (uid, ((name, key), ((_, api), (_, metrics)))) in
            keys.iter().zip(listeners.iter()).enumerate()
        {
            let _ = (name, metrics);
            let is_validator = uid < opts.validators;
            neurons.push(Neuron {
                uid: uid as u16,
                hotkey: key.public().to_ss58(),
                role: if is_validator {
                    Role::Validator
                } else {
                    Role::Miner
                },
                stake: if is_validator {
                    BASE_STAKE / (uid as u64 + 1)
                } else {
                    0
                },
                endpoint: format!("http://{api}"),
            });
        }
        // The slow client's registered key: a validator with the least stake a miner admits,
        // which publishes nothing; its endpoint is a port nobody listens on, so peers' fetches
        // are refused at once.
        let registered = if opts.slow_clients > 0 {
            let key = match keystore.load("slow-client") {
                Ok(k) => k,
                Err(_) => keystore.create("slow-client")?,
            };
            let (_, closed) = bind().await?;
            neurons.push(Neuron {
                uid: total as u16,
                hotkey: key.public().to_ss58(),
                role: Role::Validator,
                stake: 1,
                endpoint: format!("http://{closed}"),
            });
            Some((total as u16, key))
        } else {
            None
        };
        let metagraph = Metagraph {
            netuid: 1,
            neurons: neurons.clone(),
        };
        metagraph.save(&metagraph_path)?;

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let backend: Arc<dyn GemmBackend> = polylith_miner::select_backend(opts.backend)?;
        let mut miners = Vec::new();
        let mut validators = Vec::new();
        for (uid, (((name, key), ((api_l, api), (met_l, metrics))), neuron)) in keys
            .into_iter()
            .zip(listeners)
            .zip(neurons.iter())
            .enumerate()
        {
            let info = NodeInfo {
                uid: uid as u16,
                hotkey: key.public().to_ss58(),
                api,
                metrics,
            };
            if uid < opts.validators {
                let config = ValidatorConfig {
                    listen: api,
                    metrics_listen: metrics,
                    key: name.clone(),
                    metagraph: metagraph_path.clone(),
                    data_dir: opts.data_dir.join(&name),
                    round_interval_ms: opts.round_interval_ms,
                    gemm_min_dim: opts.gemm_dims.0,
                    gemm_max_dim: opts.gemm_dims.1,
                    task_weights: opts.tasks.weights(),
                    llm_model: opts.model.clone(),
                    llm_max_tokens: opts.llm_max_tokens,
                    behaviour: opts
                        .validator_behaviours
                        .get(uid)
                        .copied()
                        .unwrap_or_default(),
                    ..ValidatorConfig::default()
                };
                let behaviour = config.behaviour;
                let validator = Validator::new(config, key)?;
                if serve {
                    let v = validator.clone();
                    let shutdown = stopped(stop_rx.clone());
                    tasks.push(tokio::spawn(async move {
                        if let Err(e) = v.serve(api_l, met_l, shutdown).await {
                            tracing::error!(error = %e, "validator stopped with an error");
                        }
                    }));
                } else {
                    for (l, router) in [
                        (api_l, validator.router()),
                        (met_l, validator.metrics_router()),
                    ] {
                        let shutdown = stopped(stop_rx.clone());
                        tasks.push(tokio::spawn(async move {
                            if let Err(e) = serve_router(l, router, shutdown).await {
                                tracing::error!(error = %e, "validator API stopped with an error");
                            }
                        }));
                    }
                }
                validators.push(ValidatorNode {
                    info,
                    stake: neuron.stake,
                    behaviour,
                    validator,
                });
            } else {
                let behaviour = opts
                    .miners
                    .get(uid.saturating_sub(opts.validators))
                    .copied()
                    .unwrap_or_default();
                let config = MinerConfig {
                    listen: api,
                    metrics_listen: metrics,
                    key: name,
                    metagraph: metagraph_path.clone(),
                    backend: opts.backend,
                    behaviour,
                    model: (opts.tasks != LocalTasks::Gemm).then(|| opts.model.clone()),
                    // `slow` runs at exactly half speed (it idles as long as it computed), so
                    // the leaderboard shows throughput tracking compute: about half the
                    // GFLOP/s of an honest miner.
                    slow_factor: 1.0,
                    slow_delay_ms: 0,
                    ..MinerConfig::default()
                };
                let miner = Miner::new(config, key, backend.clone())?;
                let shutdown = stopped(stop_rx.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = miner.serve(api_l, met_l, shutdown).await {
                        tracing::error!(error = %e, "miner stopped with an error");
                    }
                }));
                miners.push(MinerNode { info, behaviour });
            }
        }
        let rounds = validators
            .iter()
            .map(|v| v.validator.round())
            .min()
            .unwrap_or(0);
        // The listeners are bound, so the slow client's connections queue up even before
        // the servers' tasks first run.
        let slow = (opts.slow_clients > 0).then(|| {
            let targets: Vec<Target> = miners
                .iter()
                .map(|m| (&m.info, true))
                .chain(validators.iter().map(|v| (&v.info, false)))
                .filter_map(|(info, miner)| {
                    Some(Target {
                        addr: info.api,
                        hotkey: polylith_protocol::keys::PublicKey::from_ss58(&info.hotkey).ok()?,
                        miner,
                    })
                })
                .collect();
            SlowClients::start(&targets, opts.slow_clients, registered, stop.subscribe())
        });
        Ok(Self {
            miners,
            validators,
            stop,
            tasks,
            data_dir: opts.data_dir.clone(),
            rounds,
            slow,
        })
    }

    /// Runs one round on every validator at once and waits for all of them.
    pub async fn run_round(&mut self) {
        let rounds = self
            .validators
            .iter()
            .map(|v| v.validator.clone())
            .map(|v| async move { v.run_round().await });
        futures::future::join_all(rounds).await;
        self.rounds = self.rounds.saturating_add(1);
    }

    /// The Prometheus file_sd target groups: one per job (`miner`, `validator`).
    pub fn targets(&self) -> serde_json::Value {
        let group = |job: &str, nodes: Vec<&NodeInfo>| {
            serde_json::json!({
                "targets": nodes.iter().map(|n| n.metrics.to_string()).collect::<Vec<_>>(),
                "labels": { "job": job },
            })
        };
        serde_json::json!([
            group("miner", self.miners.iter().map(|m| &m.info).collect()),
            group(
                "validator",
                self.validators.iter().map(|v| &v.info).collect()
            ),
        ])
    }

    /// Writes [`LocalSubnet::targets`] to `DIR/targets.json` atomically.
    pub fn write_targets(&self) -> Result<PathBuf, LocalError> {
        let path = self.data_dir.join("targets.json");
        let tmp = self.data_dir.join("targets.json.tmp");
        let text = serde_json::to_string_pretty(&self.targets()).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("renaming to {}", path.display())))?;
        Ok(path)
    }

    /// The data directory in use.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Every miner's addresses.
    pub fn miner_nodes(&self) -> Vec<NodeInfo> {
        self.miners.iter().map(|m| m.info.clone()).collect()
    }

    /// Every validator's addresses.
    pub fn validator_nodes(&self) -> Vec<NodeInfo> {
        self.validators.iter().map(|v| v.info.clone()).collect()
    }

    /// The leaderboard as the validators see it now.
    pub fn report(&self) -> Report {
        let snaps: Vec<ValidatorSnapshot> = self
            .validators
            .iter()
            .map(|v| v.validator.snapshot())
            .collect();
        // Every validator runs the same Yuma epoch over the same published weights; the
        // highest-stake validator's view is reported (uid 0, the first).
        let lead = snaps.first();
        let rounds = snaps.iter().map(|s| s.round).min().unwrap_or(0);
        let miners = self
            .miners
            .iter()
            .map(|m| {
                let views: Vec<_> = snaps
                    .iter()
                    .filter_map(|s| s.miners.iter().find(|x| x.uid == m.info.uid))
                    .collect();
                let verified = views.iter().map(|v| v.verified).sum();
                let failed = views.iter().map(|v| v.failed).sum();
                let gflops: Vec<f64> = views.iter().filter_map(|v| v.median_gflops).collect();
                let gflops_median = polylith_scoring::speed::median(&gflops);
                let rates: Vec<f64> = views.iter().filter_map(|v| v.median_tokens_per_s).collect();
                let ttfts: Vec<f64> = views.iter().filter_map(|v| v.median_ttft_s).collect();
                let tokens_checked: u64 = views.iter().map(|v| v.tokens_checked).sum();
                let tokens_passed: u64 = views.iter().map(|v| v.tokens_passed).sum();
                let score = mean(views.iter().map(|v| v.ema));
                let weight_u16 = mean(views.iter().map(|v| f64::from(v.weight_u16))).round() as u16;
                let reward_share = lead
                    .and_then(|s| s.incentive.get(usize::from(m.info.uid)))
                    .copied()
                    .unwrap_or(0.0);
                let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
                for v in &views {
                    for (r, c) in &v.failures {
                        *reasons.entry(r.clone()).or_default() += c;
                    }
                }
                let top_reason = reasons
                    .iter()
                    .max_by_key(|(_, c)| **c)
                    .map(|(r, _)| r.clone());
                // The last failure's own reason and message (the most frequent reason may be
                // another one; pairing them would mislead).
                let last_failure = views
                    .iter()
                    .filter_map(|v| v.last_failure.as_ref())
                    .map(|f| format!("{}: {}", f.reason, f.message))
                    .next();
                let reason = if weight_u16 == 0 || reward_share < 0.01 {
                    match (last_failure, top_reason) {
                        (Some(f), _) => Some(f),
                        (None, Some(r)) => Some(r),
                        _ if verified == 0 => Some("no verified answers yet".to_string()),
                        _ => Some("slower than the other miners".to_string()),
                    }
                } else {
                    None
                };
                MinerRow {
                    uid: m.info.uid,
                    hotkey: m.info.hotkey.clone(),
                    behaviour: m.behaviour.to_string(),
                    verified,
                    failed,
                    gflops_median,
                    tokens_checked,
                    tokens_passed,
                    tokens_per_s_median: polylith_scoring::speed::median(&rates),
                    ttft_median_s: polylith_scoring::speed::median(&ttfts),
                    score,
                    weight_u16,
                    reward_share,
                    failures: reasons,
                    reason,
                }
            })
            .collect();
        let validators = self
            .validators
            .iter()
            .map(|v| ValidatorRow {
                uid: v.info.uid,
                hotkey: v.info.hotkey.clone(),
                behaviour: v.behaviour.to_string(),
                stake: v.stake,
                dividend_share: lead
                    .and_then(|s| s.dividends.get(usize::from(v.info.uid)))
                    .copied()
                    .unwrap_or(0.0),
                round: snaps
                    .iter()
                    .find(|s| s.hotkey == v.info.hotkey)
                    .map(|s| s.round)
                    .unwrap_or(0),
                peers_used: snaps
                    .iter()
                    .find(|s| s.hotkey == v.info.hotkey)
                    .map(|s| s.peers_used.len())
                    .unwrap_or(0),
            })
            .collect();
        // Every validator runs the epoch over the same cross-checked messages; say whether
        // their views really agree, since only the first one's is printed.
        let same = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
        };
        let epoch_views_agree = lead.is_some_and(|l| {
            snaps
                .iter()
                .all(|s| same(&s.incentive, &l.incentive) && same(&s.dividends, &l.dividends))
        });
        Report {
            rounds,
            miners,
            validators,
            epoch_views_agree,
            slow_client: self.slow.as_ref().map(|s| {
                let mut r = s.report();
                r.registered_dividend_share = r
                    .registered_uid
                    .and_then(|u| lead.and_then(|l| l.dividends.get(usize::from(u)).copied()));
                r
            }),
        }
    }

    /// Stops every server and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(s) = self.slow {
            s.join().await;
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Serves a router that a test or the local subnet drives directly, under the same listener
/// limits as the daemons, so the local subnet behaves as a deployed one does.
async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    polylith_net::serve(
        listener,
        router,
        polylith_net::ListenerLimits::default(),
        polylith_net::ListenerObserver::default(),
        shutdown,
    )
    .await
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = it.fold((0.0, 0u32), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

/// One miner's line of the leaderboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinerRow {
    /// Uid.
    pub uid: u16,
    /// Hotkey, SS58.
    pub hotkey: String,
    /// The behaviour it was started with.
    pub behaviour: String,
    /// Verified queries, summed over validators.
    pub verified: u64,
    /// Failed queries, summed over validators.
    pub failed: u64,
    /// Median verified throughput over validators, GFLOP/s.
    pub gflops_median: Option<f64>,
    /// LLM completion tokens checked, summed over validators.
    pub tokens_checked: u64,
    /// LLM tokens that passed verification, summed over validators.
    pub tokens_passed: u64,
    /// Median verified LLM rate over validators, tokens/s.
    pub tokens_per_s_median: Option<f64>,
    /// Median verified LLM time to first token over validators, seconds.
    pub ttft_median_s: Option<f64>,
    /// EMA score, mean over validators, in [0, 1].
    pub score: f64,
    /// The validators' published weight for it, mean, u16.
    pub weight_u16: u16,
    /// Yuma incentive share in [0, 1].
    pub reward_share: f64,
    /// Failures by reason, summed over validators.
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Why it earns (almost) nothing, when it does.
    pub reason: Option<String>,
}

/// One validator's line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidatorRow {
    /// Uid.
    pub uid: u16,
    /// Hotkey, SS58.
    pub hotkey: String,
    /// How it sets weights (`honest`, `copier`, `lazy-copier`).
    pub behaviour: String,
    /// Stake.
    pub stake: u64,
    /// Yuma dividend share in [0, 1].
    pub dividend_share: f64,
    /// Rounds it completed.
    pub round: u64,
    /// Peers whose signed weights entered its last epoch.
    pub peers_used: usize,
}

/// The leaderboard printed by `polylith local`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Rounds completed by every validator.
    pub rounds: u64,
    /// Miners by uid.
    pub miners: Vec<MinerRow>,
    /// Validators by uid.
    pub validators: Vec<ValidatorRow>,
    /// Whether every validator's last epoch gave the same incentive and dividends as the
    /// first validator's, which is the one shown.
    #[serde(default)]
    pub epoch_views_agree: bool,
    /// The slow-body client's connections and the answers it got, when one ran.
    #[serde(default)]
    pub slow_client: Option<SlowClientReport>,
}

/// A short form of an SS58 address for tables: first 6 and last 4 characters.
pub fn short_hotkey(ss58: &str) -> String {
    let chars: Vec<char> = ss58.chars().collect();
    if chars.len() <= 12 {
        return ss58.to_string();
    }
    let head: String = chars.iter().take(6).collect();
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{head}…{tail}")
}

impl MinerRow {
    /// Share of its LLM tokens that passed verification; `None` before any was checked.
    pub fn tokens_verified_share(&self) -> Option<f64> {
        (self.tokens_checked > 0).then(|| self.tokens_passed as f64 / self.tokens_checked as f64)
    }
}

impl Report {
    /// The human-readable leaderboard.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "Polylith local subnet: {} rounds\n", self.rounds);
        let _ = writeln!(
            out,
            "{:>3}  {:<12} {:<13} {:>8} {:>6} {:>8} {:>7} {:>8} {:>6} {:>7} {:>7}  reason",
            "uid",
            "hotkey",
            "behaviour",
            "verified",
            "failed",
            "GFLOP/s",
            "tok/s",
            "tokens",
            "score",
            "weight",
            "reward"
        );
        for m in &self.miners {
            let _ = writeln!(
                out,
                "{:>3}  {:<12} {:<13} {:>8} {:>6} {:>8} {:>7} {:>8} {:>6.3} {:>7} {:>6.1}%  {}",
                m.uid,
                short_hotkey(&m.hotkey),
                m.behaviour,
                m.verified,
                m.failed,
                m.gflops_median
                    .map(|g| format!("{g:.1}"))
                    .unwrap_or_else(|| "-".into()),
                m.tokens_per_s_median
                    .map(|g| format!("{g:.0}"))
                    .unwrap_or_else(|| "-".into()),
                m.tokens_verified_share()
                    .map(|s| format!("{:.1}%", s * 100.0))
                    .unwrap_or_else(|| "-".into()),
                m.score,
                m.weight_u16,
                m.reward_share * 100.0,
                m.reason.as_deref().unwrap_or(""),
            );
        }
        if let Some(c) = &self.slow_client {
            let answers: Vec<String> = c
                .answers
                .iter()
                .map(|(code, n)| format!("{code}×{n}"))
                .collect();
            let _ = writeln!(
                out,
                "\nslow-body client (a key outside the metagraph; forged and unregistered \
                 headers, bodies and headers dribbled and never finished): {} connections to \
                 {} listeners, answers {}, cut without an answer {}, served {}; its registered \
                 stake-1 key earns {}",
                c.connections,
                c.listeners,
                if answers.is_empty() {
                    "none".to_string()
                } else {
                    answers.join(" ")
                },
                c.cut_without_answer,
                c.served(),
                c.registered_dividend_share
                    .map(|d| format!("{:.1}% of dividends", d * 100.0))
                    .unwrap_or_else(|| "-".into())
            );
        }
        let _ = writeln!(out, "\nvalidators:");
        let _ = writeln!(
            out,
            "{:>3}  {:<12} {:<12} {:>10} {:>9} {:>7}",
            "uid", "hotkey", "behaviour", "stake", "dividend", "peers"
        );
        for v in &self.validators {
            let _ = writeln!(
                out,
                "{:>3}  {:<12} {:<12} {:>10} {:>8.1}% {:>7}",
                v.uid,
                short_hotkey(&v.hotkey),
                v.behaviour,
                v.stake,
                v.dividend_share * 100.0,
                v.peers_used
            );
        }
        // Operators read the dividend column as "should equal stake share"; say why not.
        let _ = writeln!(
            out,
            "\ndividend is not proportional to stake: Yuma pays a validator for the bonds its \
             weights earn, counting each weight only up to the consensus (the stake-weighted \
             median, kappa 0.5). A validator with over half the stake sets that consensus alone, \
             so where another validator's measurements differ they are clipped and its \
             dividend falls below its stake share."
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::LocalError;

    /// What `{:#}` prints: the error, then each source after ": ".
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(cause) = next {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            next = cause.source();
        }
        out
    }

    #[test]
    fn an_error_chain_names_its_cause_once() {
        let io = LocalError::Io {
            context: "binding 127.0.0.1:0".into(),
            source: std::io::Error::other("address in use"),
        };
        assert_eq!(chain(&io), "binding 127.0.0.1:0: address in use");
        let opts = LocalError::Options("no validators".into());
        assert_eq!(chain(&opts), "no validators");
    }
}
