//! The validator: round loop, scoring, weights, peers, consensus, persistence and HTTP.

use crate::ValidatorError;
use crate::client::{SignedClient, now_ms};
use crate::config::ValidatorConfig;
use crate::metrics::ValidatorMetrics;
use crate::state::{MinerSnapshot, PersistedState, RoundRecord, ValidatorSnapshot};
use crate::store::{Store, filesystem_space};
use crate::task::gemm::GemmTask;
use crate::task::llm::{LlmSettings, LlmTask};
use crate::task::{
    Failure, FailureReason, MinerTarget, QueryContext, QueryOutcome, Task, new_outcome,
};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::metagraph::{Metagraph, MetagraphHandle, Neuron};
use polylith_protocol::weights::SignedWeights;
use polylith_scoring::{ema, speed, yuma};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

/// Path where validators publish their signed weights.
pub const WEIGHTS_PATH: &str = "/v1/weights";

/// How far in the future a peer's timestamp may be (clock skew), milliseconds.
const PEER_FUTURE_SKEW_MS: u64 = 60_000;

/// Result of checking one peer's weight vector (the `outcome` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOutcome {
    /// Verified and fresh.
    Ok,
    /// Unparsable, malformed, badly signed, or signed by a key other than the registered one.
    BadSignature,
    /// No answer, an HTTP error, or no weights yet.
    Unreachable,
    /// Too old, from the future, or older than a vector already accepted.
    Stale,
}

impl PeerOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerOutcome::Ok => "ok",
            PeerOutcome::BadSignature => "bad_signature",
            PeerOutcome::Unreachable => "unreachable",
            PeerOutcome::Stale => "stale",
        }
    }
}

/// Checks a peer's signed weights: valid signature by exactly `expected` (the hotkey
/// registered at that endpoint), signed within `max_age_ms` of `now_ms` (and not far in
/// the future), and not older than `last_accepted_ms` (a replayed old vector).
pub fn check_peer_weights(
    weights: &SignedWeights,
    expected: &PublicKey,
    now_ms: u64,
    max_age_ms: u64,
    last_accepted_ms: Option<u64>,
) -> PeerOutcome {
    match weights.verify() {
        Ok(signer) if signer == *expected => {}
        _ => return PeerOutcome::BadSignature,
    }
    let too_old = weights.timestamp_ms.saturating_add(max_age_ms) < now_ms;
    let future = weights.timestamp_ms > now_ms.saturating_add(PEER_FUTURE_SKEW_MS);
    let rolled_back = last_accepted_ms.is_some_and(|t| weights.timestamp_ms < t);
    if too_old || future || rolled_back {
        PeerOutcome::Stale
    } else {
        PeerOutcome::Ok
    }
}

struct Inner {
    config: ValidatorConfig,
    hotkey: Hotkey,
    public: PublicKey,
    ss58: String,
    metagraph: MetagraphHandle,
    client: SignedClient,
    tasks: Vec<(f64, Box<dyn Task>)>,
    store: Store,
    metrics: ValidatorMetrics,
    state: parking_lot::Mutex<PersistedState>,
    round_lock: tokio::sync::Mutex<()>,
    peer_last_ms: parking_lot::Mutex<HashMap<String, u64>>,
    db_write_errors: AtomicU64,
}

/// A validator: configuration, key, database and state. Cheap to clone (shared state).
///
/// Drive it either with [`Validator::serve`] (HTTP + a round every `round_interval_ms`) or by
/// calling [`Validator::run_round`] yourself and mounting [`Validator::router`].
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

impl Validator {
    /// Validates the configuration, loads the metagraph, opens (or resumes) the database.
    pub fn new(config: ValidatorConfig, hotkey: Hotkey) -> Result<Self, ValidatorError> {
        config.validate()?;
        let metagraph = MetagraphHandle::open(config.metagraph.clone())?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ValidatorError::Io {
            context: format!("creating the data directory {}", config.data_dir.display()),
            source,
        })?;
        let store = Store::open(&config.data_dir)?;
        let state = store.load()?.unwrap_or_default();
        let public = hotkey.public();
        let ss58 = public.to_ss58();
        if metagraph.current().by_hotkey(&public).is_none() {
            tracing::warn!(hotkey = %ss58, "this validator's hotkey is not in the metagraph; its weights will not enter consensus");
        }
        if state.round > 0 {
            tracing::info!(
                round = state.round,
                miners = state.ema.len(),
                "resuming from the database"
            );
        }
        let client = SignedClient::new(hotkey.clone(), config.max_response_bytes)
            .map_err(|e| ValidatorError::Http(e.to_string()))?;
        let mut tasks: Vec<(f64, Box<dyn Task>)> = Vec::new();
        if config.task_weights.gemm > 0.0 {
            tasks.push((
                config.task_weights.gemm,
                Box::new(GemmTask {
                    min_dim: config.gemm_min_dim,
                    max_dim: config.gemm_max_dim,
                    open_rows: config.open_rows,
                    dtype: config.gemm_dtype,
                }),
            ));
        }
        if config.task_weights.llm > 0.0 {
            let model = polylith_model::Model::load(&config.llm_model).map_err(|e| {
                ValidatorError::Config(format!("llm_model {:?}: {e}", config.llm_model))
            })?;
            tracing::info!(model = %model.name(), hash = %model.hash(), "LLM reference model loaded");
            tasks.push((
                config.task_weights.llm,
                Box::new(LlmTask::new(
                    Arc::new(model),
                    LlmSettings {
                        max_tokens: config.llm_max_tokens,
                        ttft_weight: config.llm_ttft_weight,
                        speed_cap: config.llm_speed_cap,
                        tolerances: polylith_model::Tolerances::default(),
                    },
                )),
            ));
        }
        let metrics = ValidatorMetrics::new()?;
        for (_, task) in &tasks {
            for reason in FailureReason::ALL {
                metrics
                    .verification_failures
                    .with_label_values(&[task.kind().as_str(), reason.as_str()]);
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                hotkey,
                public,
                ss58,
                metagraph,
                client,
                tasks,
                store,
                metrics,
                state: parking_lot::Mutex::new(state),
                round_lock: tokio::sync::Mutex::new(()),
                peer_last_ms: parking_lot::Mutex::new(HashMap::new()),
                db_write_errors: AtomicU64::new(0),
            }),
        })
    }

    /// This validator's hotkey.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public
    }

    /// The configuration in use.
    pub fn config(&self) -> &ValidatorConfig {
        &self.inner.config
    }

    /// The metrics registry wrapper.
    pub fn metrics(&self) -> &ValidatorMetrics {
        &self.inner.metrics
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Last completed round (0 before the first).
    pub fn round(&self) -> u64 {
        self.inner.state.lock().round
    }

    /// The weights currently published at `GET /v1/weights`.
    pub fn published_weights(&self) -> Option<SignedWeights> {
        self.inner.state.lock().weights.clone()
    }

    /// The current state: per-miner counts, median GFLOP/s, EMA, weight, reward share, and
    /// the last epoch's incentive and dividends.
    pub fn snapshot(&self) -> ValidatorSnapshot {
        let mg = self.inner.metagraph.current();
        let state = self.inner.state.lock().clone();
        let weight_of: BTreeMap<u16, u16> = state
            .weights
            .as_ref()
            .map(|w| w.weights.iter().copied().collect())
            .unwrap_or_default();
        let miners = mg
            .miners()
            .into_iter()
            .map(|n| {
                let stats = state.miners.get(&n.hotkey).cloned().unwrap_or_default();
                let flops: Vec<f64> = stats.recent_flops.iter().copied().collect();
                MinerSnapshot {
                    uid: n.uid,
                    hotkey: n.hotkey.clone(),
                    verified: stats.verified,
                    failed: stats.failed,
                    failures: stats.failures,
                    last_failure: stats.last_failure,
                    median_gflops: speed::median(&flops).map(|f| f / 1e9),
                    tokens_checked: stats.tokens_checked,
                    tokens_passed: stats.tokens_passed,
                    median_tokens_per_s: speed::median(
                        &stats
                            .recent_tokens_per_s
                            .iter()
                            .copied()
                            .collect::<Vec<_>>(),
                    ),
                    median_ttft_s: speed::median(
                        &stats.recent_ttft_s.iter().copied().collect::<Vec<_>>(),
                    ),
                    ema: state.ema.get(&n.hotkey).copied().unwrap_or(0.0),
                    weight_u16: weight_of.get(&n.uid).copied().unwrap_or(0),
                    reward_share: state
                        .incentive
                        .get(usize::from(n.uid))
                        .copied()
                        .unwrap_or(0.0),
                }
            })
            .collect();
        ValidatorSnapshot {
            hotkey: self.inner.ss58.clone(),
            uid: mg.by_hotkey(&self.inner.public).map(|n| n.uid),
            round: state.round,
            miners,
            weights: state.weights,
            incentive: state.incentive,
            dividends: state.dividends,
            peers_used: state.peers_used,
            db_write_errors: self.inner.db_write_errors.load(Ordering::Relaxed),
        }
    }

    /// Runs one complete round: reload the metagraph, query every miner with every task,
    /// score, update the EMA, sign and publish weights, fetch peers' weights, run the Yuma
    /// epoch, persist. Rounds never overlap (a second call waits for the first).
    pub async fn run_round(&self) -> RoundRecord {
        let _guard = self.inner.round_lock.lock().await;
        let round = self.inner.state.lock().round.saturating_add(1);
        let span = tracing::info_span!("round", round);
        self.round_inner(round).instrument(span).await
    }

    /// Queries every miner with every task under one deadline for the whole round: miners
    /// in parallel, each miner's tasks one after another (so its own GEMM and LLM work do not
    /// compete for its hardware while being timed). A hung miner therefore costs the round
    /// one query timeout, not one per task.
    async fn query_all(&self, targets: &[MinerTarget]) -> (Vec<QueryOutcome>, Vec<f64>) {
        let inner = &self.inner;
        let timeout = Duration::from_millis(inner.config.query_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let ctx = QueryContext {
            client: &inner.client,
            deadline,
        };
        let ctx = &ctx;
        let per_miner = targets.iter().map(|m| async move {
            let mut outs = Vec::with_capacity(inner.tasks.len());
            for (_, task) in &inner.tasks {
                let kind = task.kind();
                let span = tracing::info_span!("query", miner = %m.ss58, uid = m.uid, task = %kind);
                let outcome = tokio::time::timeout_at(deadline, task.query(ctx, m))
                    .instrument(span)
                    .await
                    .unwrap_or_else(|_| {
                        let mut o = new_outcome(kind, m);
                        o.fail(Failure::new(
                            FailureReason::Timeout,
                            format!(
                                "no verified answer within the round's {} ms",
                                timeout.as_millis()
                            ),
                        ));
                        o
                    });
                outs.push(outcome);
            }
            outs
        });
        let mut by_task: Vec<Vec<QueryOutcome>> = vec![Vec::new(); inner.tasks.len()];
        for outs in futures::future::join_all(per_miner).await {
            for (column, o) in by_task.iter_mut().zip(outs) {
                column.push(o);
            }
        }
        let mut parts: Vec<(f64, Vec<f64>)> = Vec::new();
        let mut all = Vec::new();
        for ((weight, task), mut outcomes) in inner.tasks.iter().zip(by_task) {
            let kind = task.kind();
            task.cross_check(&mut outcomes);
            let scores = task.score(&outcomes);
            for (o, s) in outcomes.iter_mut().zip(scores) {
                o.score = if o.verified() { s } else { 0.0 };
                match &o.failure {
                    None => {
                        tracing::debug!(uid = o.uid, task = %kind, score = o.score, flops = ?o.throughput, "verified")
                    }
                    Some(f) => {
                        tracing::info!(uid = o.uid, task = %kind, reason = %f.reason, message = %f.message, "query failed")
                    }
                }
            }
            parts.push((*weight, outcomes.iter().map(|o| o.score).collect()));
            all.extend(outcomes);
        }
        (all, speed::mix(&parts, targets.len()))
    }

    async fn round_inner(&self, round: u64) -> RoundRecord {
        let inner = &self.inner;
        let started = Instant::now();
        let started_ms = now_ms();
        match inner.metagraph.reload_if_changed() {
            Ok(true) => tracing::info!("metagraph reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "metagraph reload failed; keeping the previous one")
            }
        }
        let mg = inner.metagraph.current();
        let targets: Vec<MinerTarget> = mg
            .miners()
            .into_iter()
            .filter_map(|n| match PublicKey::from_ss58(&n.hotkey) {
                Ok(hotkey) => Some(MinerTarget {
                    uid: n.uid,
                    hotkey,
                    ss58: n.hotkey.clone(),
                    endpoint: n.endpoint.clone(),
                }),
                Err(e) => {
                    tracing::warn!(uid = n.uid, error = %e, "miner with an invalid hotkey skipped");
                    None
                }
            })
            .collect();

        let (outcomes, combined) = self.query_all(&targets).await;

        // Work on a copy; it is installed only once the round is complete.
        let mut state = inner.state.lock().clone();
        let samples: BTreeMap<String, f64> = targets
            .iter()
            .zip(&combined)
            .map(|(m, s)| (m.ss58.clone(), *s))
            .collect();
        ema::update_table(&mut state.ema, &samples, inner.config.ema_alpha, true);
        // Evidence of cheating (a wrong row, a forged path, a replayed or copied commitment)
        // forfeits the miner's accumulated score: otherwise a miner could bank an EMA with a
        // few honest answers and then cheat on the rest while still earning.
        for o in &outcomes {
            if o.failure.as_ref().is_some_and(|f| f.reason.is_cheating()) {
                state.ema.insert(o.hotkey.clone(), 0.0);
            }
        }
        for o in &outcomes {
            state.miners.entry(o.hotkey.clone()).or_default().record(o);
        }
        state.miners.retain(|k, _| samples.contains_key(k));

        let ema_vec: Vec<f64> = targets
            .iter()
            .map(|m| state.ema.get(&m.ss58).copied().unwrap_or(0.0))
            .collect();
        let mut weights: Vec<(u16, u16)> = targets
            .iter()
            .zip(speed::max_upscale_u16(&ema_vec))
            .filter(|(_, w)| *w > 0)
            .map(|(m, w)| (m.uid, w))
            .collect();
        weights.sort_unstable();
        let signed = SignedWeights::sign(&inner.hotkey, round, now_ms(), weights.clone());
        // Publish now so peers fetching during this round already see it.
        inner.state.lock().weights = Some(signed.clone());

        let peers = self.fetch_peer_weights(&mg).await;
        let (incentive, dividends, peers_used) = self.consensus(&mg, &mut state, &weights, peers);

        state.round = round;
        state.weights = Some(signed);
        state.incentive = incentive.clone();
        state.dividends = dividends.clone();
        state.peers_used = peers_used.clone();
        let mut record = RoundRecord {
            round,
            started_ms,
            finished_ms: now_ms(),
            outcomes,
            weights,
            incentive,
            dividends,
            peers_used,
            persisted: false,
        };
        record.persisted = self.persist(&state, &record).await;
        self.update_metrics(&mg, &state, &record, started.elapsed());
        *inner.state.lock() = state;
        tracing::info!(
            miners = targets.len(),
            verified = record.outcomes.iter().filter(|o| o.verified()).count(),
            peers = record.peers_used.len(),
            secs = started.elapsed().as_secs_f64(),
            "round complete"
        );
        record
    }

    /// Own weights plus verified peers' weights through one Yuma epoch. Returns incentive,
    /// dividends (per uid) and the peers used; updates the carried bonds in `state`.
    fn consensus(
        &self,
        mg: &Metagraph,
        state: &mut PersistedState,
        own: &[(u16, u16)],
        peers: Vec<(u16, Vec<(u16, u16)>)>,
    ) -> (Vec<f64>, Vec<f64>, Vec<u16>) {
        let inner = &self.inner;
        let n = mg.n();
        let stakes: Vec<u64> = (0..n)
            .map(|uid| {
                u16::try_from(uid)
                    .ok()
                    .and_then(|u| mg.by_uid(u))
                    .map_or(0, |x| x.stake)
            })
            .collect();
        let mut rows: Vec<Vec<(u16, u16)>> = vec![Vec::new(); n];
        if let Some(me) = mg.by_hotkey(&inner.public)
            && let Some(row) = rows.get_mut(usize::from(me.uid))
        {
            *row = own.to_vec();
        }
        let mut used = Vec::new();
        for (uid, w) in peers {
            if let Some(row) = rows.get_mut(usize::from(uid)) {
                *row = w.into_iter().filter(|(j, _)| usize::from(*j) < n).collect();
                used.push(uid);
            }
        }
        used.sort_unstable();
        let params = &inner.config.yuma;
        let prev = match state.yuma.take() {
            Some(s) if s.bonds.len() == n && s.validator_permit.len() == n => s,
            _ => yuma::YumaState::fresh(&stakes, params),
        };
        let t = Instant::now();
        let result = yuma::rewards(&stakes, &rows, &prev, params);
        inner
            .metrics
            .consensus_duration
            .observe(t.elapsed().as_secs_f64());
        match result {
            Ok(r) => {
                let out = (r.incentive_f64(), r.dividends_f64(), used);
                state.yuma = Some(r.next_state);
                out
            }
            Err(e) => {
                tracing::error!(error = %e, "Yuma epoch failed; bonds kept");
                state.yuma = Some(prev);
                (vec![0.0; n], vec![0.0; n], used)
            }
        }
    }

    /// Fetches every other validator's weights; returns the accepted (uid, weights).
    async fn fetch_peer_weights(&self, mg: &Metagraph) -> Vec<(u16, Vec<(u16, u16)>)> {
        let inner = &self.inner;
        let timeout = Duration::from_millis(inner.config.peer_timeout_ms);
        let peers: Vec<&Neuron> = mg
            .validators()
            .into_iter()
            .filter(|v| v.hotkey != inner.ss58)
            .collect();
        let fetches = peers.iter().map(|p| async move {
            let outcome = self.fetch_one_peer(p, timeout).await;
            (p, outcome)
        });
        let mut accepted = Vec::new();
        for (peer, result) in futures::future::join_all(fetches).await {
            let outcome = match result {
                Ok(w) => {
                    accepted.push((peer.uid, w));
                    PeerOutcome::Ok
                }
                Err((o, why)) => {
                    tracing::info!(peer_uid = peer.uid, outcome = o.as_str(), why = %why, "peer weights ignored");
                    o
                }
            };
            inner
                .metrics
                .peer_weights_received
                .with_label_values(&[&peer.uid.to_string(), outcome.as_str()])
                .inc();
        }
        accepted
    }

    async fn fetch_one_peer(
        &self,
        peer: &Neuron,
        timeout: Duration,
    ) -> Result<Vec<(u16, u16)>, (PeerOutcome, String)> {
        let inner = &self.inner;
        let expected = PublicKey::from_ss58(&peer.hotkey)
            .map_err(|e| (PeerOutcome::BadSignature, format!("registered hotkey: {e}")))?;
        let body = inner
            .client
            .get(&peer.endpoint, WEIGHTS_PATH, timeout)
            .await
            .map_err(|e| (PeerOutcome::Unreachable, e))?;
        let weights: SignedWeights = serde_json::from_slice(&body)
            .map_err(|e| (PeerOutcome::BadSignature, format!("unparsable: {e}")))?;
        let last = inner.peer_last_ms.lock().get(&peer.hotkey).copied();
        let outcome = check_peer_weights(
            &weights,
            &expected,
            now_ms(),
            inner.config.peer_max_age_ms,
            last,
        );
        if outcome != PeerOutcome::Ok {
            return Err((
                outcome,
                format!(
                    "round {} signed at {} ms",
                    weights.round, weights.timestamp_ms
                ),
            ));
        }
        inner
            .peer_last_ms
            .lock()
            .insert(peer.hotkey.clone(), weights.timestamp_ms);
        Ok(weights.weights)
    }

    /// Writes the round atomically; a failure is logged and counted, never fatal.
    async fn persist(&self, state: &PersistedState, record: &RoundRecord) -> bool {
        let inner = &self.inner;
        let store = inner.store.clone();
        let (state, record) = (state.clone(), record.clone());
        let keep = inner.config.keep_rounds;
        let t = Instant::now();
        let result =
            tokio::task::spawn_blocking(move || store.commit_round(&state, &record, keep)).await;
        inner
            .metrics
            .db_write_seconds
            .observe(t.elapsed().as_secs_f64());
        let error = match result {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("write task: {e}"),
        };
        inner.db_write_errors.fetch_add(1, Ordering::Relaxed);
        inner.metrics.db_write_errors.inc();
        tracing::error!(path = %inner.store.path().display(), error = %error, "writing the round to the database failed; continuing with in-memory state");
        false
    }

    fn update_metrics(
        &self,
        mg: &Metagraph,
        state: &PersistedState,
        record: &RoundRecord,
        took: Duration,
    ) {
        let m = &self.inner.metrics;
        m.rounds.inc();
        m.round_duration.observe(took.as_secs_f64());
        m.last_round_timestamp
            .set(record.finished_ms as f64 / 1000.0);
        m.miner_throughput.reset();
        m.miner_tokens_per_second.reset();
        for o in &record.outcomes {
            let uid = o.uid.to_string();
            let task = o.task.as_str();
            let outcome = o
                .failure
                .as_ref()
                .map_or("verified", |f| f.reason.outcome());
            m.queries.with_label_values(&[&uid, task, outcome]).inc();
            if let Some(f) = &o.failure {
                m.verification_failures
                    .with_label_values(&[task, f.reason.as_str()])
                    .inc();
            }
            if let Some(l) = o.latency_s {
                m.query_latency.with_label_values(&[task]).observe(l);
            }
            if o.tokens_checked > 0 {
                let passed = if o.verified() {
                    o.tokens_checked
                } else {
                    o.tokens_passed.min(o.tokens_checked)
                };
                m.llm_tokens
                    .with_label_values(&["verified"])
                    .inc_by(u64::from(passed));
                m.llm_tokens
                    .with_label_values(&["rejected"])
                    .inc_by(u64::from(o.tokens_checked.saturating_sub(passed)));
            }
        }
        m.miner_score.reset();
        m.miner_weight.reset();
        m.miner_reward_share.reset();
        let weight_of: BTreeMap<u16, u16> = record.weights.iter().copied().collect();
        for n in mg.miners() {
            let uid = n.uid.to_string();
            // The last verified throughput, kept through later failures (the score shows those).
            if let Some(t) = state
                .miners
                .get(&n.hotkey)
                .and_then(|s| s.recent_flops.back())
            {
                m.miner_throughput.with_label_values(&[&uid]).set(*t);
            }
            if let Some(t) = state
                .miners
                .get(&n.hotkey)
                .and_then(|s| s.recent_tokens_per_s.back())
            {
                m.miner_tokens_per_second.with_label_values(&[&uid]).set(*t);
            }
            m.miner_score
                .with_label_values(&[&uid])
                .set(state.ema.get(&n.hotkey).copied().unwrap_or(0.0));
            m.miner_weight
                .with_label_values(&[&uid])
                .set(yuma::u16_to_f64(
                    weight_of.get(&n.uid).copied().unwrap_or(0),
                ));
            m.miner_reward_share.with_label_values(&[&uid]).set(
                record
                    .incentive
                    .get(usize::from(n.uid))
                    .copied()
                    .unwrap_or(0.0),
            );
        }
        m.dividend_share.reset();
        for n in mg.validators() {
            m.dividend_share
                .with_label_values(&[&n.uid.to_string()])
                .set(
                    record
                        .dividends
                        .get(usize::from(n.uid))
                        .copied()
                        .unwrap_or(0.0),
                );
        }
        m.peers_with_weights
            .set(i64::try_from(record.peers_used.len()).unwrap_or(i64::MAX));
        self.update_disk_metrics();
    }

    fn update_disk_metrics(&self) {
        let inner = &self.inner;
        match inner.store.size_on_disk() {
            Ok(b) => inner.metrics.db_size_bytes.set(b as f64),
            Err(e) => tracing::warn!(error = %e, "reading the database size failed"),
        }
        match filesystem_space(&inner.config.data_dir) {
            Ok((free, total)) => {
                inner.metrics.data_dir_free_bytes.set(free as f64);
                inner.metrics.data_dir_size_bytes.set(total as f64);
            }
            Err(e) => tracing::warn!(error = %e, "reading free space of the data directory failed"),
        }
    }

    /// The public API: `GET /v1/weights`, `GET /health`, `GET /v1/state`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(WEIGHTS_PATH, get(weights_handler))
            .route("/health", get(health_handler))
            .route("/v1/state", get(state_handler))
            .with_state(self.clone())
    }

    /// The metrics API: `GET /metrics`.
    pub fn metrics_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_handler))
            .with_state(self.clone())
    }

    /// Serves both routers and runs a round every `round_interval_ms` until `shutdown`
    /// completes or `rounds` rounds are done (when nonzero). A round in progress at shutdown
    /// is abandoned; its state was not yet installed, and writes are atomic.
    pub async fn serve(
        self,
        listener: TcpListener,
        metrics_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ValidatorError> {
        let io = |context: &str, source: std::io::Error| ValidatorError::Io {
            context: context.to_string(),
            source,
        };
        let api_addr = listener
            .local_addr()
            .map_err(|e| io("reading the listener's address", e))?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|e| io("reading the listener's address", e))?;
        tracing::info!(%api_addr, %metrics_addr, hotkey = %self.inner.ss58, "validator serving");
        self.update_disk_metrics();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let listeners =
            polylith_net::ListenerMetrics::register_or_warn(self.inner.metrics.registry());
        let mut api = tokio::spawn(polylith_net::serve(
            listener,
            self.router(),
            self.inner.config.listener_limits(),
            listeners.listener("api"),
            stopped(stop_rx.clone()),
        ));
        let mut metrics = tokio::spawn(polylith_net::serve(
            metrics_listener,
            self.metrics_router(),
            self.inner.config.metrics_listener_limits(),
            listeners.listener("metrics"),
            stopped(stop_rx.clone()),
        ));
        let rounds = self.inner.config.rounds;
        let interval = Duration::from_millis(self.inner.config.round_interval_ms.max(1));
        let this = self.clone();
        let mut loop_stop = stop_rx.clone();
        let mut round_loop = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut done = 0u64;
            loop {
                tokio::select! {
                    _ = loop_stop.wait_for(|s| *s) => break,
                    _ = ticker.tick() => {}
                }
                tokio::select! {
                    _ = loop_stop.wait_for(|s| *s) => break,
                    _ = this.run_round() => {}
                }
                done = done.saturating_add(1);
                if rounds > 0 && done >= rounds {
                    break;
                }
            }
        });
        let early = tokio::select! {
            _ = shutdown => None,
            r = &mut round_loop => { let _ = r; None }
            r = &mut api => Some(("API server", r)),
            r = &mut metrics => Some(("metrics server", r)),
        };
        let _ = stop_tx.send(true);
        let joined = |what: &str, r: Result<std::io::Result<()>, tokio::task::JoinError>| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io(what, e)),
            Err(e) => Err(io(what, std::io::Error::other(e.to_string()))),
        };
        let result = match early {
            Some((what, r)) => joined(what, r).and(Err(io(
                what,
                std::io::Error::other("server stopped unexpectedly"),
            ))),
            None => {
                let a = joined("API server", api.await);
                let m = joined("metrics server", metrics.await);
                a.and(m)
            }
        };
        if !round_loop.is_finished() {
            let _ = round_loop.await;
        }
        tracing::info!(round = self.round(), "validator stopped");
        result
    }
}

/// Serves a validator until `shutdown` (or its configured number of rounds): the library
/// entry point used by `polylith validator`.
pub async fn run(
    validator: Validator,
    listener: TcpListener,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ValidatorError> {
    validator.serve(listener, metrics_listener, shutdown).await
}

fn json_error(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": reason, "message": message })),
    )
        .into_response()
}

async fn weights_handler(State(v): State<Validator>) -> Response {
    match v.published_weights() {
        Some(w) => axum::Json(w).into_response(),
        None => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_weights_yet",
            "no round has completed yet",
        ),
    }
}

async fn health_handler(State(v): State<Validator>) -> Response {
    axum::Json(serde_json::json!({
        "status": "ok",
        "hotkey": v.inner.ss58,
        "round": v.round(),
        "db_write_errors": v.inner.db_write_errors.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn state_handler(State(v): State<Validator>) -> Response {
    axum::Json(v.snapshot()).into_response()
}

async fn metrics_handler(State(v): State<Validator>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        v.inner.metrics.render(),
    )
        .into_response()
}
