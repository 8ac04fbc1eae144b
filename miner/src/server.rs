//! The miner's state, router, admission control and serving loop.

use crate::auth::{Authenticated, task_for_path};
use crate::backend::{Committed, GemmBackend};
use crate::clock::{Clock, SystemClock};
use crate::config::MinerConfig;
use crate::error::{ApiError, MinerError};
use crate::metrics::MinerMetrics;
use crate::store::{CommitmentStore, StoreLimits};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::metagraph::MetagraphHandle;
use polylith_protocol::metagraph::{Metagraph, Role};
use polylith_protocol::signing::NonceCache;
use polylith_protocol::task::TaskKind;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument;

/// A compute slot held by one task request; shared with its blocking compute so the slot is
/// only freed when the work really ends.
pub type SlotPermit = Arc<Slot>;

/// One compute slot together with the sender's place it was admitted on: a sender that
/// abandons a task keeps paying for it (in its own share) until the compute really stops.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _place: Arc<Place>,
}

/// One place of a sender's stake share, from verified headers until both the reply is done
/// and the compute has stopped (the middleware and the compute each hold it).
pub(crate) struct Place {
    inner: Arc<MinerInner>,
    sender: PublicKey,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.inner.places.lock();
        if let Some(n) = held.get_mut(&self.sender) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Only senders with places in use are kept, so the map stays small.
                held.remove(&self.sender);
            }
        }
        self.inner.metrics.queue_depth.dec();
    }
}

/// Reads whether the client of a task request is gone; blocking compute polls it between
/// steps so that work nobody will read stops and frees its slot.
#[derive(Debug, Clone)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// True once every [`RequestAlive`] of the request has been dropped.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Keeps a request's [`CancelToken`] unset while any clone lives: the handler future holds
/// one (dropped with it when the client disconnects), a streaming body holds another.
#[derive(Clone)]
pub struct RequestAlive(Arc<CancelOnDrop>);

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl RequestAlive {
    /// A new, live request.
    pub fn new() -> Self {
        Self(Arc::new(CancelOnDrop(Arc::new(AtomicBool::new(false)))))
    }
    /// The token that turns cancelled when the last clone of `self` is dropped. It does not
    /// keep the request alive itself, so blocking compute can hold it.
    pub fn token(&self) -> CancelToken {
        CancelToken(self.0.0.clone())
    }
}

impl Default for RequestAlive {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything a request handler needs; shared behind an `Arc`.
pub struct MinerInner {
    /// The configuration in force.
    pub(crate) config: MinerConfig,
    /// This miner's hotkey (signs receipts).
    pub(crate) hotkey: Hotkey,
    /// Its public half.
    pub(crate) public: PublicKey,
    /// Its SS58 form.
    pub(crate) ss58: String,
    pub(crate) backend: Arc<dyn GemmBackend>,
    pub(crate) metagraph: MetagraphHandle,
    pub(crate) nonces: Mutex<NonceCache>,
    pub(crate) metrics: MinerMetrics,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Mutex<CommitmentStore>,
    /// The LLM, when one is served.
    pub(crate) model: Option<crate::llm::ServedModel>,
    /// The `replay` behaviour's first commitment.
    pub(crate) replay: Mutex<Option<Arc<dyn Committed>>>,
    pub(crate) slots: Arc<Semaphore>,
    /// Places held per sender (body read, queue or compute); see [`MinerInner::take_place`].
    places: Mutex<HashMap<PublicKey, usize>>,
    /// Miner clock at start-up: requests signed earlier are refused, because the replay
    /// cache of a previous run is gone.
    pub(crate) started_ms: u64,
    tasks_served: AtomicU64,
    /// Why this miner cannot earn under the current metagraph (hotkey missing or not a
    /// miner), or `None`; `/health` reports it as `degraded`.
    registration: Mutex<Option<String>>,
}

impl MinerInner {
    /// The places (compute plus queue) a validator of `stake` may hold at once: its
    /// stake-proportional part of `max_concurrent + max_queue`, at least one.
    pub(crate) fn sender_share(&self, metagraph: &Metagraph, stake: u64) -> usize {
        let total = self.config.max_concurrent + self.config.max_queue;
        let min = self.config.min_validator_stake;
        let eligible: u128 = metagraph
            .neurons
            .iter()
            .filter(|n| n.role == Role::Validator && n.stake >= min)
            .map(|n| u128::from(n.stake))
            .sum();
        if eligible == 0 {
            return total;
        }
        let share = total as u128 * u128::from(stake) / eligible;
        usize::try_from(share).unwrap_or(total).clamp(1, total)
    }

    /// Takes one of `sender`'s places, or refuses with 503 when it already holds `share`.
    ///
    /// There is no global cap besides the shares: a validator inside its share is never
    /// refused because others are busy, and the total is bounded by the sum of the shares.
    pub(crate) fn take_place(
        self: &Arc<Self>,
        sender: PublicKey,
        share: usize,
    ) -> Result<Place, ApiError> {
        {
            let mut held = self.places.lock();
            let n = held.entry(sender).or_insert(0);
            if *n >= share {
                return Err(ApiError::overloaded(format!(
                    "this validator already holds its share of {share} places"
                )));
            }
            *n += 1;
        }
        self.metrics.queue_depth.inc();
        Ok(Place {
            inner: self.clone(),
            sender,
        })
    }

    /// Bundles a compute `permit` with the `place` it was admitted on.
    pub(crate) fn slot(permit: OwnedSemaphorePermit, place: Arc<Place>) -> SlotPermit {
        Arc::new(Slot {
            _permit: permit,
            _place: place,
        })
    }

    /// Counts a rejection (reason label) and a rejected request of `task`.
    pub(crate) fn count_rejection(&self, task: TaskKind, reason: &str) {
        self.metrics.reject(reason);
        self.metrics
            .requests
            .with_label_values(&[task.as_str(), "rejected"])
            .inc();
    }

    /// Turns a handler result into a response and counts its outcome. Rejections were
    /// already counted where they happened.
    pub(crate) fn finish(
        &self,
        auth: &Authenticated,
        result: Result<Response, ApiError>,
    ) -> Response {
        match result {
            Ok(response) => {
                self.tasks_served.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .requests
                    .with_label_values(&[auth.task.as_str(), "ok"])
                    .inc();
                response
            }
            Err(e) => {
                if e.reason != "malformed" {
                    self.metrics
                        .requests
                        .with_label_values(&[auth.task.as_str(), "error"])
                        .inc();
                }
                tracing::debug!(reason = e.reason, message = %e.message, "request failed");
                e.into_response()
            }
        }
    }
}

/// A miner: state plus routers. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Miner {
    inner: Arc<MinerInner>,
}

impl std::fmt::Debug for Miner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Miner")
            .field("hotkey", &self.inner.ss58)
            .field("backend", &self.inner.backend.name())
            .field("behaviour", &self.inner.config.behaviour)
            .finish()
    }
}

impl Miner {
    /// A miner with the system clock. Loads the metagraph from `config.metagraph`.
    pub fn new(
        config: MinerConfig,
        hotkey: Hotkey,
        backend: Arc<dyn GemmBackend>,
    ) -> Result<Self, MinerError> {
        Self::with_clock(config, hotkey, backend, Arc::new(SystemClock))
    }

    /// A miner reading time from `clock` (tests expire commitments with it).
    pub fn with_clock(
        config: MinerConfig,
        hotkey: Hotkey,
        backend: Arc<dyn GemmBackend>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, MinerError> {
        config.validate()?;
        let metagraph = MetagraphHandle::open(config.metagraph.clone())?;
        let metrics = MinerMetrics::new(backend.name())?;
        let model = match &config.model {
            Some(spec) if spec != "none" => Some(crate::llm::ServedModel::load(
                spec,
                config.behaviour,
                config.backend,
                config.max_concurrent,
            )?),
            _ => None,
        };
        let public = hotkey.public();
        let started_ms = clock.now_ms();
        let inner = MinerInner {
            ss58: public.to_ss58(),
            public,
            hotkey,
            backend,
            metagraph,
            nonces: Mutex::new(NonceCache::new(
                config.nonce_cache_capacity,
                config.timestamp_window_ms,
            )),
            metrics,
            clock,
            store: Mutex::new(CommitmentStore::new(StoreLimits {
                ttl_ms: config.commitment_ttl_ms,
                max_bytes: config.max_commitment_bytes,
                max_count: config.max_commitments,
            })),
            model,
            replay: Mutex::new(None),
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            places: Mutex::new(HashMap::new()),
            started_ms,
            tasks_served: AtomicU64::new(0),
            registration: Mutex::new(None),
            config,
        };
        let inner = Arc::new(inner);
        check_registration(&inner);
        Ok(Self { inner })
    }

    /// This miner's hotkey.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public
    }

    /// The configuration in force.
    pub fn config(&self) -> &MinerConfig {
        &self.inner.config
    }

    /// The metrics (for in-process checks).
    pub fn metrics(&self) -> &MinerMetrics {
        &self.inner.metrics
    }

    /// The backend's name (`cpu` or `cuda`).
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Successful task requests so far.
    pub fn tasks_served(&self) -> u64 {
        self.inner.tasks_served.load(Ordering::Relaxed)
    }

    /// Re-reads the metagraph file if it changed; `Ok(true)` when a new one was installed.
    pub fn reload_metagraph(&self) -> Result<bool, MinerError> {
        let changed = self.inner.metagraph.reload_if_changed()?;
        if changed {
            check_registration(&self.inner);
        }
        Ok(changed)
    }

    /// Why this miner cannot earn under the current metagraph (its hotkey is missing, or
    /// listed with another role), or `None` when it is registered as a miner.
    pub fn registration_problem(&self) -> Option<String> {
        self.inner.registration.lock().clone()
    }

    /// The task API: `/v1/gemm/commit`, `/v1/gemm/open`, `/v1/completions`,
    /// `/v1/chat/completions`, `/health`, `/v1/info`.
    pub fn router(&self) -> Router {
        let state = self.inner.clone();
        let tasks = Router::new()
            .route("/v1/gemm/commit", post(crate::gemm::commit))
            .route("/v1/gemm/open", post(crate::gemm::open))
            .route("/v1/completions", post(crate::llm::completions))
            .route("/v1/chat/completions", post(crate::llm::chat_completions))
            .route_layer(middleware::from_fn_with_state(state.clone(), admission));
        Router::new()
            .merge(tasks)
            .route("/health", get(health))
            .route("/v1/info", get(info))
            .layer(middleware::from_fn(request_span))
            .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
            .with_state(state)
    }

    /// The metrics API: `GET /metrics` in Prometheus text format.
    pub fn metrics_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(self.inner.clone())
    }

    /// Serves the task API on `listener` and metrics on `metrics_listener`, and reloads the
    /// metagraph periodically, until `shutdown` completes; then stops accepting, lets
    /// in-flight requests finish and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        metrics_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MinerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = rx.wait_for(|s| *s).await;
        };
        let api_addr = local_addr(&listener)?;
        let metrics_addr = local_addr(&metrics_listener)?;
        let config = &self.inner.config;
        // Before the start-up line: a bad certificate is a start-up error, not a log line.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                polylith_net::tls::server_config(cert, key)
                    .map_err(|e| MinerError::Tls(Box::new(e)))?,
            ),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            key = %config.key,
            hotkey = %self.inner.ss58,
            api = %format!("{scheme}://{api_addr}"),
            metrics = %format!("http://{metrics_addr}/metrics"),
            backend = self.inner.backend.name(),
            model = self.inner.model.as_ref().map(|m| m.name.as_str()).unwrap_or("none"),
            model_hash = self.inner.model.as_ref().map(|m| m.hash_hex.as_str()).unwrap_or("-"),
            behaviour = %config.behaviour,
            metagraph = %config.metagraph.display(),
            "miner serving"
        );
        let listeners =
            polylith_net::ListenerMetrics::register_or_warn(self.inner.metrics.registry());
        let api_limits = self.inner.config.listener_limits();
        let api_observer = listeners.listener("api");
        let api_stop = stopped(stop_rx.clone());
        let router = self.router();
        let api = async move {
            match tls {
                Some(tls) => {
                    polylith_net::serve_tls(
                        listener,
                        tls,
                        router,
                        api_limits,
                        api_observer,
                        api_stop,
                    )
                    .await
                }
                None => {
                    polylith_net::serve(listener, router, api_limits, api_observer, api_stop).await
                }
            }
        };
        let metrics = polylith_net::serve(
            metrics_listener,
            self.metrics_router(),
            self.inner.config.metrics_listener_limits(),
            listeners.listener("metrics"),
            stopped(stop_rx.clone()),
        );
        let mut api = tokio::spawn(api);
        let mut metrics = tokio::spawn(metrics);
        let reloader = tokio::spawn(reload_loop(self.inner.clone(), stop_rx));

        let early = tokio::select! {
            _ = shutdown => None,
            r = &mut api => Some(("task API", r)),
            r = &mut metrics => Some(("metrics", r)),
        };
        let _ = stop_tx.send(true);
        let io = |context: &str, e: std::io::Error| MinerError::Io {
            context: context.to_string(),
            source: e,
        };
        let joined = |context: &str, r: Result<std::io::Result<()>, tokio::task::JoinError>| match r
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io(context, e)),
            Err(e) => Err(io(context, std::io::Error::other(e.to_string()))),
        };
        let result = match early {
            Some((what, r)) => {
                // Either server stopping on its own is a failure even if it returned Ok.
                joined(what, r).and(Err(io(
                    what,
                    std::io::Error::other("server stopped unexpectedly"),
                )))
            }
            None => {
                let a = joined("task API", api.await);
                let m = joined("metrics", metrics.await);
                a.and(m)
            }
        };
        let _ = reloader.await;
        tracing::info!("miner stopped");
        result
    }
}

fn local_addr(listener: &TcpListener) -> Result<std::net::SocketAddr, MinerError> {
    listener.local_addr().map_err(|e| MinerError::Io {
        context: "reading the listener's address".to_string(),
        source: e,
    })
}

/// Serves a miner until `shutdown`: the library entry point used by `polylith miner`.
pub async fn run(
    miner: Miner,
    listener: TcpListener,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MinerError> {
    miner.serve(listener, metrics_listener, shutdown).await
}

async fn reload_loop(inner: Arc<MinerInner>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(inner.config.metagraph_reload_ms);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_reminder = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let worker = inner.clone();
        match tokio::task::spawn_blocking(move || worker.metagraph.reload_if_changed()).await {
            Ok(Ok(true)) => {
                tracing::info!(
                    neurons = inner.metagraph.current().neurons.len(),
                    "metagraph reloaded"
                );
                check_registration(&inner);
                last_reminder = tokio::time::Instant::now();
            }
            Ok(Ok(false)) => {
                // Unchanged file, still not registered: remind now and then, not every tick.
                if last_reminder.elapsed() >= REGISTRATION_REMINDER
                    && inner.registration.lock().is_some()
                {
                    check_registration(&inner);
                    last_reminder = tokio::time::Instant::now();
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metagraph reload failed; keeping the old one")
            }
            Err(e) => tracing::warn!(error = %e, "metagraph reload task failed"),
        }
    }
}

/// Wraps each request in a span; the hotkey field is filled once the envelope verifies.
async fn request_span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        hotkey = tracing::field::Empty,
    );
    async move {
        let response = next.run(req).await;
        tracing::debug!(status = response.status().as_u16(), "response");
        response
    }
    .instrument(span)
    .await
}

/// The front door of every task endpoint (see [`crate::auth::admit`]): nothing costly
/// happens before the headers verified and the sender's share has room.
async fn admission(State(inner): State<Arc<MinerInner>>, req: Request, next: Next) -> Response {
    let task = task_for_path(req.uri().path());
    match crate::auth::admit(&inner, req, task).await {
        Ok((req, place)) => {
            let response = next.run(req).await;
            // Held until here so that a reply still being prepared after its compute (the
            // `slow` behaviour's delay) keeps counting against its sender.
            drop(place);
            response
        }
        Err(e) => {
            inner.count_rejection(task, e.reason);
            tracing::debug!(reason = e.reason, message = %e.message, "request rejected");
            e.into_response()
        }
    }
}

/// How often an unregistered miner repeats its error when the metagraph does not change.
const REGISTRATION_REMINDER: Duration = Duration::from_secs(60);

/// Why `hotkey` cannot earn as a miner under `metagraph`, or `None` when it is listed as one.
pub fn registration_problem(metagraph: &Metagraph, hotkey: &PublicKey) -> Option<String> {
    let ss58 = hotkey.to_ss58();
    match metagraph.by_hotkey(hotkey) {
        None => Some(format!(
            "hotkey {ss58} is not in the metagraph, so no validator will query or pay this \
             miner: add it as a [[neuron]] with role = \"miner\" and this miner's endpoint"
        )),
        Some(n) if n.role != Role::Miner => Some(format!(
            "hotkey {ss58} is uid {} in the metagraph with role validator, not miner, so no \
             validator will query or pay this miner: run a miner with a miner's hotkey",
            n.uid
        )),
        Some(_) => None,
    }
}

/// Re-checks the registration against the current metagraph: sets the metric and the
/// `/health` status and logs an error while the miner cannot earn. The miner keeps running
/// (a metagraph edit or a registration can fix it without a restart).
fn check_registration(inner: &MinerInner) {
    let problem = registration_problem(&inner.metagraph.current(), &inner.public);
    inner.metrics.registered.set(i64::from(problem.is_none()));
    match &problem {
        Some(why) => tracing::error!(
            hotkey = %inner.ss58,
            metagraph = %inner.config.metagraph.display(),
            "not registered as a miner: {why}; serving anyway and re-checking on every \
             metagraph change"
        ),
        None => {
            if inner.registration.lock().is_some() {
                tracing::info!(hotkey = %inner.ss58, "registered as a miner in the metagraph");
            }
        }
    }
    *inner.registration.lock() = problem;
}

async fn health(State(inner): State<Arc<MinerInner>>) -> Response {
    let problem = inner.registration.lock().clone();
    axum::Json(serde_json::json!({
        "status": if problem.is_some() { "degraded" } else { "ok" },
        "problem": problem,
        "hotkey": inner.ss58,
        "backend": inner.backend.name(),
    }))
    .into_response()
}

async fn info(State(inner): State<Arc<MinerInner>>) -> Response {
    let tasks: &[&str] = if inner.model.is_some() {
        &["gemm", "llm"]
    } else {
        &["gemm"]
    };
    axum::Json(serde_json::json!({
        "hotkey": inner.ss58,
        "backend": inner.backend.name(),
        "version": env!("CARGO_PKG_VERSION"),
        "tasks": tasks,
        "tasks_served": inner.tasks_served.load(Ordering::Relaxed),
        "model": inner.model.as_ref().map(|m| m.name.clone()),
        "model_hash": inner.model.as_ref().map(|m| m.hash_hex.clone()),
    }))
    .into_response()
}

async fn metrics(State(inner): State<Arc<MinerInner>>) -> Response {
    let mut response = inner.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
