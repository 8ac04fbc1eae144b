//! The validator: round loop, scoring, weights, peers, consensus, persistence and HTTP.

use crate::ValidatorError;
use crate::client::{SignedClient, now_ms};
use crate::config::ValidatorBehaviour;
use crate::config::ValidatorConfig;
use crate::metrics::ValidatorMetrics;
use crate::state::{MinerSnapshot, PersistedState, RoundRecord, ValidatorSnapshot};
use crate::store::RoundWeights;
use crate::store::{Store, filesystem_space};
use crate::task::gemm::GemmTask;
use crate::task::llm::{LlmSettings, LlmTask};
use crate::task::{
    Failure, FailureReason, MinerTarget, QueryContext, QueryOutcome, Task, new_outcome,
};
use crate::weights::{
    ProofCheck, RevealError, Schedule, accept_reveal, median_weights, peer_body_cap,
};
use axum::Router;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::metagraph::{Metagraph, MetagraphHandle, Neuron, Role};
use polylith_protocol::weights::{
    Evidence, Reveal, SeenMessage, SignedWeights, WeightsMessage, WorkProof,
};
use polylith_scoring::{ema, speed, yuma};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

/// Path where validators publish their signed weights messages (`/{round}` for one round).
pub const WEIGHTS_PATH: &str = "/v1/weights";
/// Path where validators publish equivocation evidence.
pub const EVIDENCE_PATH: &str = "/v1/evidence";

/// Result of checking one peer's weight vector (the `outcome` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOutcome {
    /// Verified and fresh.
    Ok,
    /// Unparsable, malformed, badly signed, or signed by a key other than the registered one.
    BadSignature,
    /// No answer, an HTTP error, or no weights yet.
    Unreachable,
    /// For another round than the one asked for.
    Stale,
    /// Larger than the cap derived from the subnet size.
    TooLarge,
}

impl PeerOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerOutcome::Ok => "ok",
            PeerOutcome::BadSignature => "bad_signature",
            PeerOutcome::Unreachable => "unreachable",
            PeerOutcome::Stale => "stale",
            PeerOutcome::TooLarge => "too_large",
        }
    }
}

/// Checks a peer's weights message: version, structure and signature by exactly `expected`
/// (the hotkey registered at that endpoint), and that it is the message of `round` (a
/// message is tied to its round, so an old one cannot be replayed as a new one).
pub fn check_peer_weights(msg: &WeightsMessage, expected: &PublicKey, round: u64) -> PeerOutcome {
    match msg.verify() {
        Ok(signer) if signer == *expected => {}
        _ => return PeerOutcome::BadSignature,
    }
    if msg.round != round {
        PeerOutcome::Stale
    } else {
        PeerOutcome::Ok
    }
}

/// A (uid, weight) pair.
type Pair = (u16, u16);

/// Peer messages held: (validator hotkey, round) → message.
type PeerMessages = BTreeMap<(String, u64), WeightsMessage>;

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
    /// Unsigned reads from peers: no redirects, bodies capped per call.
    peer_http: reqwest::Client,
    /// The message served at `GET /v1/weights`: only ever one that is already on disk.
    published: parking_lot::Mutex<Option<WeightsMessage>>,
    /// Peers' messages of recent rounds, as first received.
    peer_msgs: parking_lot::Mutex<PeerMessages>,
    /// Equivocation evidence by offending hotkey.
    evidence: parking_lot::Mutex<BTreeMap<String, Evidence>>,
    db_write_errors: AtomicU64,
    /// Why this validator's weights cannot count under the current metagraph (hotkey
    /// missing or not a validator), or `None`; `/health` reports it as `degraded`.
    registration: parking_lot::Mutex<Option<String>>,
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
        let db_err = |e: crate::store::StoreError| ValidatorError::DbState {
            path: config.data_dir.clone(),
            message: e.to_string(),
        };
        let published = store.latest_message().map_err(db_err)?;
        let evidence: BTreeMap<String, Evidence> = store
            .evidence()
            .map_err(db_err)?
            .into_iter()
            .filter(|e| e.verify().is_some())
            .map(|e| (e.first.validator.clone(), e))
            .collect();
        let peer_http = crate::client::http_client_builder(config.tls_ca.as_deref())
            .map_err(|e| ValidatorError::Tls(Box::new(e)))?
            .build()
            .map_err(ValidatorError::Http)?;
        let public = hotkey.public();
        let ss58 = public.to_ss58();
        if state.round > 0 {
            tracing::info!(
                round = state.round,
                miners = state.ema.len(),
                "resuming from the database"
            );
        }
        let client = SignedClient::with_ca(
            hotkey.clone(),
            config.max_response_bytes,
            config.tls_ca.as_deref(),
        )?;
        let mut tasks: Vec<(f64, Box<dyn Task>)> = Vec::new();
        if config.task_weights.gemm > 0.0 {
            let gemm = GemmTask::from_config(&config);
            // Resume each miner's task size from its last persisted verified throughput, so
            // a restart does not send everyone back to the smallest task.
            for (hotkey, stats) in &state.miners {
                if let Some(&flops) = stats.recent_flops.back() {
                    gemm.resume(hotkey, flops);
                }
            }
            tasks.push((config.task_weights.gemm, Box::new(gemm)));
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
        let validator = Self {
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
                peer_http,
                published: parking_lot::Mutex::new(published),
                peer_msgs: parking_lot::Mutex::new(BTreeMap::new()),
                evidence: parking_lot::Mutex::new(evidence),
                db_write_errors: AtomicU64::new(0),
                registration: parking_lot::Mutex::new(None),
            }),
        };
        validator.check_registration();
        Ok(validator)
    }

    /// Why this validator's weights cannot count under the current metagraph (its hotkey is
    /// missing, or listed with another role), or `None` when it is registered as one.
    pub fn registration_problem(&self) -> Option<String> {
        self.inner.registration.lock().clone()
    }

    /// Re-checks the registration against the current metagraph: sets the metric and the
    /// `/health` status and logs an error while the validator's weights cannot count. It
    /// keeps running: a metagraph edit or a registration fixes it without a restart.
    fn check_registration(&self) {
        let inner = &self.inner;
        let mg = inner.metagraph.current();
        let problem = match mg.by_hotkey(&inner.public) {
            None => Some(format!(
                "hotkey {} is not in the metagraph, so its weights do not enter consensus and \
                 miners refuse its queries: add it as a [[neuron]] with role = \"validator\", \
                 a stake and this validator's endpoint",
                inner.ss58
            )),
            Some(n) if n.role != Role::Validator => Some(format!(
                "hotkey {} is uid {} in the metagraph with role miner, not validator, so \
                 miners refuse its queries: run a validator with a validator's hotkey",
                inner.ss58, n.uid
            )),
            Some(_) => None,
        };
        inner.metrics.registered.set(i64::from(problem.is_none()));
        match &problem {
            Some(why) => tracing::error!(
                hotkey = %inner.ss58,
                metagraph = %inner.config.metagraph.display(),
                "not registered as a validator: {why}; running anyway and re-checking every round"
            ),
            None if inner.registration.lock().is_some() => {
                tracing::info!(hotkey = %inner.ss58, "registered as a validator in the metagraph")
            }
            None => {}
        }
        *inner.registration.lock() = problem;
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

    /// This round's own weights, signed in the v1 form for in-process use (tests, `polylith
    /// local`). They are not served: peers see them only when revealed.
    pub fn published_weights(&self) -> Option<SignedWeights> {
        self.inner.state.lock().weights.clone()
    }

    /// The message served at `GET /v1/weights` (always one already flushed to disk).
    pub fn published_message(&self) -> Option<WeightsMessage> {
        self.inner.published.lock().clone()
    }

    /// Equivocation evidence held (served at `GET /v1/evidence`).
    pub fn evidence(&self) -> Vec<Evidence> {
        self.inner.evidence.lock().values().cloned().collect()
    }

    /// The commit-reveal schedule in use.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            delay: self.inner.config.reveal_delay_rounds,
        }
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
            scores_hidden: false,
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
            Ok(true) => tracing::info!(
                neurons = inner.metagraph.current().neurons.len(),
                "metagraph reloaded"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "metagraph reload failed; keeping the previous one")
            }
        }
        // Every round, changed file or not: an unregistered validator says so each round.
        self.check_registration();
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

        let behaviour = inner.config.behaviour;
        let (outcomes, combined) = if behaviour == ValidatorBehaviour::Copier {
            (Vec::new(), vec![0.0; targets.len()])
        } else {
            self.query_all(&targets).await
        };
        // Every verified receipt of this round's queries (late ones of an abandoned query
        // included: they are genuine too).
        let proofs = inner.client.take_proofs();

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

        // Peers' messages of the previous round, cross-checked against what every peer says
        // it was shown; then the epoch over the vectors revealed two rounds ago.
        let seen = self.exchange_with_peers(&mg, round).await;
        if behaviour != ValidatorBehaviour::Honest {
            weights = self.copied_weights(round);
        }
        let commit = Reveal::new(
            round,
            weights.clone(),
            proofs_for(&weights, &targets, proofs),
        );
        let commitment = commit.commitment(&inner.ss58);
        let reveal = match self.schedule().reveal_round(round) {
            Some(r) => match inner.store.commit(r) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(round = r, error = %e, "reading the commitment to reveal failed");
                    None
                }
            },
            None => None,
        };
        let message =
            WeightsMessage::sign(&inner.hotkey, round, now_ms(), commitment, reveal, seen);
        let (incentive, dividends, peers_used) = self.consensus(&mg, &mut state, round, &message);

        state.round = round;
        state.weights = Some(SignedWeights::sign(
            &inner.hotkey,
            round,
            message.timestamp_ms,
            weights.clone(),
        ));
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
        let new_evidence: Vec<Evidence> = inner.evidence.lock().values().cloned().collect();
        let extras = RoundWeights {
            message: message.clone(),
            commit,
            evidence: new_evidence,
        };
        record.persisted = self.persist(&state, &record, &extras).await;
        // Publish only what is on disk: a restart then serves exactly this message, and
        // never signs another one for this round. An unsaved round is not published at all.
        if record.persisted {
            *inner.published.lock() = Some(message);
        }
        self.update_metrics(&mg, &state, &record, started.elapsed());
        *inner.state.lock() = state;
        let mut failed_by_reason: BTreeMap<&str, usize> = BTreeMap::new();
        for f in record.outcomes.iter().filter_map(|o| o.failure.as_ref()) {
            *failed_by_reason.entry(f.reason.as_str()).or_default() += 1;
        }
        tracing::info!(
            miners = targets.len(),
            queried = record.outcomes.len(),
            verified = record.outcomes.iter().filter(|o| o.verified()).count(),
            failed = failed_by_reason.values().sum::<usize>(),
            failed_by_reason = ?failed_by_reason,
            peers = record.peers_used.len(),
            weights_published = record.persisted,
            secs = started.elapsed().as_secs_f64(),
            "round complete"
        );
        record
    }

    /// A copier's weights: the median of the newest vector each peer revealed.
    fn copied_weights(&self, round: u64) -> Vec<(u16, u16)> {
        let msgs = self.inner.peer_msgs.lock();
        let mut newest: BTreeMap<&str, (u64, &[Pair])> = BTreeMap::new();
        for ((v, r), m) in msgs.iter() {
            if *r >= round {
                continue;
            }
            if let Some(rev) = &m.reveal {
                let e = newest
                    .entry(v.as_str())
                    .or_insert((0, rev.weights.as_slice()));
                if rev.round >= e.0 {
                    *e = (rev.round, rev.weights.as_slice());
                }
            }
        }
        let vectors: Vec<Vec<(u16, u16)>> = newest.values().map(|(_, w)| w.to_vec()).collect();
        median_weights(&vectors)
    }

    /// The epoch of `round`: every validator's vector revealed in its message of the source
    /// round (own included, checked the same way), through Yuma. Returns incentive,
    /// dividends (per uid) and the peers used; updates the carried bonds in `state`.
    fn consensus(
        &self,
        mg: &Metagraph,
        state: &mut PersistedState,
        round: u64,
        own_message: &WeightsMessage,
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
        let miners: BTreeMap<u16, PublicKey> = mg
            .miners()
            .into_iter()
            .filter_map(|m| Some((m.uid, PublicKey::from_ss58(&m.hotkey).ok()?)))
            .collect();
        let schedule = self.schedule();
        let mut rows: Vec<Vec<(u16, u16)>> = vec![Vec::new(); n];
        let mut commit_rounds: Vec<Option<u64>> = vec![None; n];
        let mut used = Vec::new();
        if let (Some(source), Some(e)) = (
            schedule.source_round(round),
            schedule.epoch_weights_round(round),
        ) {
            let check = ProofCheck {
                window_ms: inner.config.work_window_ms,
                sample: inner.config.proof_sample,
                seed: rand::random(),
            };
            let own = |r: u64| {
                if r == own_message.round {
                    return Some(own_message.clone());
                }
                inner.store.message(r).ok().flatten()
            };
            for v in mg.validators() {
                let Ok(key) = PublicKey::from_ss58(&v.hotkey) else {
                    continue;
                };
                let me = v.hotkey == inner.ss58;
                let result = if inner.evidence.lock().contains_key(&v.hotkey) {
                    Err(RevealError::Equivocation)
                } else if me {
                    accept_reveal(
                        &key,
                        e,
                        own(source).as_ref(),
                        own(e).as_ref(),
                        &miners,
                        check,
                    )
                } else {
                    let msgs = inner.peer_msgs.lock();
                    accept_reveal(
                        &key,
                        e,
                        msgs.get(&(v.hotkey.clone(), source)),
                        msgs.get(&(v.hotkey.clone(), e)),
                        &miners,
                        check,
                    )
                };
                let label = match &result {
                    Ok(_) => "accepted",
                    Err(err) => err.as_str(),
                };
                inner.metrics.reveals.with_label_values(&[label]).inc();
                match result {
                    Ok(w) => {
                        if let Some(row) = rows.get_mut(usize::from(v.uid)) {
                            *row = w.into_iter().filter(|(j, _)| usize::from(*j) < n).collect();
                            commit_rounds[usize::from(v.uid)] = Some(e);
                            if !me {
                                used.push(v.uid);
                            }
                        }
                    }
                    Err(err) => {
                        tracing::info!(validator_uid = v.uid, round = e, why = %err, "revealed weights left out of the epoch")
                    }
                }
            }
        }
        inner
            .metrics
            .equivocators
            .set(i64::try_from(inner.evidence.lock().len()).unwrap_or(i64::MAX));
        used.sort_unstable();
        let params = &inner.config.yuma;
        let prev = match state.yuma.take() {
            Some(s) if s.bonds.len() == n && s.validator_permit.len() == n => s,
            _ => yuma::YumaState::fresh(&stakes, params),
        };
        let t = Instant::now();
        let result = yuma::rewards_revealed(&stakes, &rows, &commit_rounds, &prev, params);
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

    /// Fetches every staked peer's message of the previous round, fills gaps and detects
    /// equivocation from the `seen` lists in them, and returns this round's `seen` list.
    async fn exchange_with_peers(&self, mg: &Metagraph, round: u64) -> Vec<SeenMessage> {
        let inner = &self.inner;
        let Some(prev) = round.checked_sub(1).filter(|r| *r >= 1) else {
            return Vec::new();
        };
        // Drop what no later epoch or cross-check reads.
        let keep_from = round.saturating_sub(inner.config.reveal_delay_rounds.saturating_add(4));
        inner.peer_msgs.lock().retain(|(_, r), _| *r >= keep_from);
        let cap = peer_body_cap(mg.n()).min(inner.config.max_response_bytes);
        let peers: Vec<&Neuron> = mg
            .validators()
            .into_iter()
            .filter(|v| v.hotkey != inner.ss58 && v.stake >= inner.config.min_peer_stake)
            .collect();
        let fetches = peers.iter().map(|p| async move {
            let path = format!("{WEIGHTS_PATH}/{prev}");
            let outcome = self.fetch_message(p, &p.hotkey, &path, prev, cap).await;
            (*p, outcome)
        });
        let mut seen = Vec::new();
        let mut fetched: Vec<(&Neuron, WeightsMessage)> = Vec::new();
        for (peer, result) in futures::future::join_all(fetches).await {
            let outcome = match result {
                Ok(m) => {
                    seen.push(SeenMessage {
                        validator: m.validator.clone(),
                        round: m.round,
                        hash: hex::encode(m.hash()),
                    });
                    self.hold_peer_message(m.clone());
                    fetched.push((peer, m));
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
        // Cross-check: each peer lists the messages it fetched last round. A different hash
        // than ours, or one we lack, is fetched from that peer (it keeps what it was shown).
        let by_hotkey: BTreeMap<&str, &Neuron> = mg
            .validators()
            .into_iter()
            .map(|v| (v.hotkey.as_str(), v))
            .collect();
        let mut asked = BTreeSet::new();
        for (peer, m) in &fetched {
            for s in m.seen.iter().take(by_hotkey.len()) {
                if s.round != prev.saturating_sub(1) || s.validator == inner.ss58 {
                    continue;
                }
                if !by_hotkey.contains_key(s.validator.as_str()) {
                    continue;
                }
                let held = inner
                    .peer_msgs
                    .lock()
                    .get(&(s.validator.clone(), s.round))
                    .map(|h| hex::encode(h.hash()));
                if held.as_deref() == Some(s.hash.as_str())
                    || !asked.insert((s.validator.clone(), s.hash.clone()))
                {
                    continue;
                }
                let path = format!("{WEIGHTS_PATH}/peer/{}/{}", s.validator, s.round);
                match self
                    .fetch_message(peer, &s.validator, &path, s.round, cap)
                    .await
                {
                    Ok(relayed) if hex::encode(relayed.hash()) == s.hash => {
                        self.hold_peer_message(relayed)
                    }
                    Ok(_) => tracing::info!(
                        peer_uid = peer.uid,
                        "relayed message does not match the listed hash"
                    ),
                    Err((o, why)) => {
                        tracing::info!(peer_uid = peer.uid, outcome = o.as_str(), why = %why, "relay failed")
                    }
                }
            }
        }
        seen
    }

    /// Keeps a verified peer message; a second, different one for the same round and
    /// validator becomes evidence.
    fn hold_peer_message(&self, m: WeightsMessage) {
        let inner = &self.inner;
        let key = (m.validator.clone(), m.round);
        let mut msgs = inner.peer_msgs.lock();
        match msgs.get(&key) {
            None => {
                msgs.insert(key, m);
            }
            Some(held) if held.hash() == m.hash() => {}
            Some(held) => {
                if let Some(e) = Evidence::new(held.clone(), m) {
                    tracing::warn!(validator = %e.first.validator, round = e.first.round, "equivocation: two signed weights messages for one round");
                    inner
                        .evidence
                        .lock()
                        .entry(e.first.validator.clone())
                        .or_insert(e);
                }
            }
        }
    }

    /// GETs one message by `signer` for `round` from `peer`, body capped at `cap` bytes.
    async fn fetch_message(
        &self,
        peer: &Neuron,
        signer: &str,
        path: &str,
        round: u64,
        cap: usize,
    ) -> Result<WeightsMessage, (PeerOutcome, String)> {
        let inner = &self.inner;
        let expected = PublicKey::from_ss58(signer)
            .map_err(|e| (PeerOutcome::BadSignature, format!("registered hotkey: {e}")))?;
        let timeout = Duration::from_millis(inner.config.peer_timeout_ms);
        let url = format!("{}{}", peer.endpoint.trim_end_matches('/'), path);
        let body = tokio::time::timeout(timeout, read_capped(&inner.peer_http, &url, cap))
            .await
            .map_err(|_| {
                (
                    PeerOutcome::Unreachable,
                    format!("no answer within {} ms", timeout.as_millis()),
                )
            })??;
        let msg: WeightsMessage = serde_json::from_slice(&body).map_err(|e| {
            // serde's message can quote the peer's bytes; keep only where it failed.
            (
                PeerOutcome::BadSignature,
                format!("unparsable JSON at line {} column {}", e.line(), e.column()),
            )
        })?;
        match check_peer_weights(&msg, &expected, round) {
            PeerOutcome::Ok => Ok(msg),
            o => Err((
                o,
                format!("message of round {} (wanted {round})", msg.round),
            )),
        }
    }

    /// Writes the round atomically (message first on disk, then served); a failure is
    /// logged and counted, never fatal.
    async fn persist(
        &self,
        state: &PersistedState,
        record: &RoundRecord,
        extras: &RoundWeights,
    ) -> bool {
        let inner = &self.inner;
        let store = inner.store.clone();
        let (state, record, extras) = (state.clone(), record.clone(), extras.clone());
        let keep = inner.config.keep_rounds;
        let t = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            store.commit_round_with(&state, &record, Some(&extras), keep)
        })
        .await;
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
        tracing::error!(path = %inner.store.path().display(), error = %error, "writing the round to the database failed; continuing with in-memory state and not publishing this round");
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
            .route("/v1/weights/{round}", get(weights_round_handler))
            .route(
                "/v1/weights/peer/{hotkey}/{round}",
                get(peer_message_handler),
            )
            .route(EVIDENCE_PATH, get(evidence_handler))
            .route("/health", get(health_handler))
            .route("/v1/state", get(public_state_handler))
            .with_state(self.clone())
    }

    /// The metrics API: `GET /metrics`.
    pub fn metrics_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/v1/state", get(state_handler))
            .with_state(self.clone())
    }

    /// Serves both routers and runs a round every `round_interval_ms` until `shutdown`
    /// completes or `rounds` rounds are done (when nonzero). A round in progress at shutdown
    /// gets `shutdown_grace_ms` to finish and be saved; past that it is abandoned (its state
    /// was not yet installed, and writes are atomic).
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
        let config = &self.inner.config;
        // Before the start-up line: a bad certificate is a start-up error, not a log line.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                polylith_net::tls::server_config(cert, key)
                    .map_err(|e| ValidatorError::Tls(Box::new(e)))?,
            ),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            key = %config.key,
            hotkey = %self.inner.ss58,
            api = %format!("{scheme}://{api_addr}"),
            metrics = %format!("http://{metrics_addr}/metrics"),
            tasks = %self.inner.tasks.iter().map(|(w, t)| format!("{}={w}", t.kind())).collect::<Vec<_>>().join(","),
            llm_model = %config.llm_model,
            metagraph = %config.metagraph.display(),
            data_dir = %config.data_dir.display(),
            resuming_after_round = self.round(),
            "validator serving"
        );
        self.update_disk_metrics();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let listeners =
            polylith_net::ListenerMetrics::register_or_warn(self.inner.metrics.registry());
        let api = {
            let (router, limits) = (self.router(), self.inner.config.listener_limits());
            let (observer, stop) = (listeners.listener("api"), stopped(stop_rx.clone()));
            async move {
                match tls {
                    Some(tls) => {
                        polylith_net::serve_tls(listener, tls, router, limits, observer, stop).await
                    }
                    None => polylith_net::serve(listener, router, limits, observer, stop).await,
                }
            }
        };
        let mut api = tokio::spawn(api);
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
                let round = this.run_round();
                tokio::pin!(round);
                tokio::select! {
                    _ = &mut round => {}
                    // (The watch guard is dropped inside: it must not live across an await.)
                    _ = async { let _ = loop_stop.wait_for(|s| *s).await; } => {
                        // Shutdown mid-round: let the round finish (queries, weights, the
                        // flushed write) within the grace period, then stop.
                        let grace = Duration::from_millis(this.inner.config.shutdown_grace_ms);
                        tracing::info!(
                            grace_ms = grace.as_millis() as u64,
                            "shutdown requested mid-round: finishing the round in progress"
                        );
                        match tokio::time::timeout(grace, &mut round).await {
                            Ok(r) => tracing::info!(
                                round = r.round,
                                persisted = r.persisted,
                                "round in progress finished before shutdown"
                            ),
                            Err(_) => tracing::warn!(
                                grace_ms = grace.as_millis() as u64,
                                "the round in progress did not finish within the shutdown \
                                 grace period; abandoned (the previous round's state is kept)"
                            ),
                        }
                        break;
                    }
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

/// The work proofs to publish with `weights`: the newest verified exchange with each
/// weighted miner (one per miner is what peers check).
fn proofs_for(
    weights: &[(u16, u16)],
    targets: &[MinerTarget],
    proofs: Vec<WorkProof>,
) -> Vec<WorkProof> {
    let mut newest: BTreeMap<String, WorkProof> = BTreeMap::new();
    for p in proofs {
        let replace = newest
            .get(&p.envelope.receiver)
            .is_none_or(|q| q.envelope.timestamp_ms <= p.envelope.timestamp_ms);
        if replace {
            newest.insert(p.envelope.receiver.clone(), p);
        }
    }
    weights
        .iter()
        .filter_map(|(uid, _)| {
            let t = targets.iter().find(|t| t.uid == *uid)?;
            newest.remove(&t.ss58)
        })
        .collect()
}

/// GETs `url` without following redirects, refusing a body over `cap` bytes before reading
/// past it (Content-Length first, then while streaming).
async fn read_capped(
    http: &reqwest::Client,
    url: &str,
    cap: usize,
) -> Result<Vec<u8>, (PeerOutcome, String)> {
    let unreachable = |e: reqwest::Error| (PeerOutcome::Unreachable, e.to_string());
    let mut resp = http.get(url).send().await.map_err(unreachable)?;
    let status = resp.status();
    if !status.is_success() {
        return Err((
            PeerOutcome::Unreachable,
            format!("HTTP {}", status.as_u16()),
        ));
    }
    let too_large = || (PeerOutcome::TooLarge, format!("body over {cap} bytes"));
    if resp.content_length().is_some_and(|l| l > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        if body.len().saturating_add(chunk.len()) > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn json_error(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": reason, "message": message })),
    )
        .into_response()
}

async fn weights_handler(State(v): State<Validator>) -> Response {
    match v.published_message() {
        Some(w) => axum::Json(w).into_response(),
        None => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_weights_yet",
            "no round has completed yet",
        ),
    }
}

async fn weights_round_handler(State(v): State<Validator>, Path(round): Path<u64>) -> Response {
    // Never a round past the published one: its message may not be on disk yet.
    let published = v.published_message().map_or(0, |m| m.round);
    if round > published {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_published",
            "no message for that round yet",
        );
    }
    match v.inner.store.message(round) {
        Ok(Some(m)) => axum::Json(m).into_response(),
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            "not_kept",
            "no message kept for that round",
        ),
        Err(e) => {
            tracing::error!(error = %e, "reading a stored weights message failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "database read failed",
            )
        }
    }
}

async fn peer_message_handler(
    State(v): State<Validator>,
    Path((hotkey, round)): Path<(String, u64)>,
) -> Response {
    match v.inner.peer_msgs.lock().get(&(hotkey, round)) {
        Some(m) => axum::Json(m.clone()).into_response(),
        None => json_error(
            StatusCode::NOT_FOUND,
            "not_held",
            "no such peer message held",
        ),
    }
}

async fn evidence_handler(State(v): State<Validator>) -> Response {
    axum::Json(v.evidence()).into_response()
}

/// The public state ([`ValidatorSnapshot::into_public`]: no current scores), signed by the
/// validator's hotkey over the exact body (docs/protocol.md, "Validator state").
async fn public_state_handler(State(v): State<Validator>) -> Response {
    match crate::state::sign_state(&v.inner.hotkey, &v.snapshot().into_public()) {
        Ok((body, sig)) => (
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "application/json".to_string(),
                ),
                (
                    axum::http::HeaderName::from_static(crate::state::STATE_SIGNATURE_HEADER),
                    sig,
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "serializing the state failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "serializing failed",
            )
        }
    }
}

async fn health_handler(State(v): State<Validator>) -> Response {
    let problem = v.registration_problem();
    axum::Json(serde_json::json!({
        "status": if problem.is_some() { "degraded" } else { "ok" },
        "problem": problem,
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
