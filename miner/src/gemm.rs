//! The GEMM proof-of-compute endpoints: `POST /v1/gemm/commit` and `POST /v1/gemm/open`,
//! plus the adversarial behaviours' versions of a commitment.

use crate::auth::{Authenticated, ReceiptInfo, reply_json};
use crate::backend::{BackendError, Committed, GemmBackend, HostCommitted, StageTimings};
use crate::config::Behaviour;
use crate::error::ApiError;
use crate::server::{MinerInner, SlotPermit};
use crate::store::StoredCommitment;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use polylith_protocol::gemm::{
    CommitRequest, CommitResponse, Dtype, GemmSpec, OpenRequest, OpenResponse, OpenedRow,
};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest absolute value a garbage entry takes: inside the range an honest product can
/// reach, so magnitudes alone give nothing away.
const GARBAGE_LIMIT: i32 = (1 << 24) - 1;

/// Bytes a commitment of `spec` will hold (rows of i32 plus the tree), for refusing tasks
/// that could never be stored.
fn estimated_bytes(spec: &GemmSpec) -> u64 {
    spec.n as u64 * spec.m as u64 * 4 + 2 * spec.n as u64 * 32
}

/// A product with rows `0..honest_rows` computed by `backend` and the rest garbage.
fn partly_garbage(
    backend: &dyn GemmBackend,
    spec: &GemmSpec,
    dtype: Dtype,
    honest_rows: u32,
) -> Result<HostCommitted, BackendError> {
    let (n, m) = (spec.n, spec.m);
    let mut values = Vec::with_capacity(n as usize * m as usize);
    let mut timings = StageTimings::default();
    if honest_rows > 0 {
        // The generator is counter-based, so the first rows of A (and all of B) are the
        // same for a smaller n: computing that smaller task gives the first rows of C.
        let part = GemmSpec {
            n: honest_rows,
            ..*spec
        };
        let committed = backend.commit(&part, dtype)?;
        timings = committed.timings();
        for i in 0..honest_rows {
            values.extend(committed.row(i)?);
        }
    }
    let mut rng = rand::rng();
    values.resize_with(n as usize * m as usize, || {
        rng.random_range(-GARBAGE_LIMIT..=GARBAGE_LIMIT)
    });
    HostCommitted::from_flat(n, m, values, timings)
}

/// Computes the commitment the configured behaviour would give for `spec`.
pub(crate) fn commit_with_behaviour(
    miner: &MinerInner,
    spec: &GemmSpec,
    dtype: Dtype,
) -> Result<Arc<dyn Committed>, BackendError> {
    let backend = miner.backend.as_ref();
    match miner.config.behaviour {
        // The LLM adversaries cheat on LLM tasks only.
        Behaviour::Honest
        | Behaviour::Slow
        | Behaviour::WrongModel
        | Behaviour::Perturbed
        | Behaviour::Truncated
        | Behaviour::Quantized
        | Behaviour::RandomTokens => Ok(Arc::from(backend.commit(spec, dtype)?)),
        Behaviour::Lazy => Ok(Arc::new(partly_garbage(
            backend,
            spec,
            dtype,
            spec.n.div_ceil(2),
        )?)),
        Behaviour::Random => Ok(Arc::new(partly_garbage(backend, spec, dtype, 0)?)),
        Behaviour::Replay => {
            if let Some(first) = miner.replay.lock().clone() {
                return Ok(first);
            }
            let first: Arc<dyn Committed> = Arc::from(backend.commit(spec, dtype)?);
            Ok(miner.replay.lock().get_or_insert(first).clone())
        }
    }
}

/// `POST /v1/gemm/commit`.
pub(crate) async fn commit(
    State(miner): State<Arc<MinerInner>>,
    Extension(permit): Extension<SlotPermit>,
    auth: Authenticated,
) -> Response {
    let result = commit_inner(&miner, permit, &auth).await;
    miner.finish(&auth, result)
}

async fn commit_inner(
    miner: &Arc<MinerInner>,
    permit: SlotPermit,
    auth: &Authenticated,
) -> Result<Response, ApiError> {
    let request: CommitRequest = auth.json(miner)?;
    let spec = request.spec;
    spec.validate(miner.config.max_gemm_dim)
        .map_err(|e| ApiError::bad_request("bad_spec", e.to_string()))?;
    if estimated_bytes(&spec) > miner.config.max_commitment_bytes {
        return Err(ApiError::bad_request(
            "bad_spec",
            format!(
                "the product needs about {} bytes, more than this miner holds ({})",
                estimated_bytes(&spec),
                miner.config.max_commitment_bytes
            ),
        ));
    }

    let started = Instant::now();
    let worker = miner.clone();
    let cancel = auth.cancel_token();
    let committed = tokio::task::spawn_blocking(move || {
        // The compute slot stays taken until the work is done, even if the client left.
        let _permit = permit;
        // A backend product cannot be interrupted, but one whose client left while it
        // waited for this thread need not start.
        if cancel.is_cancelled() {
            worker.metrics.cancelled.with_label_values(&["gemm"]).inc();
            return Err(BackendError::Compute("the client went away".into()));
        }
        commit_with_behaviour(&worker, &spec, request.dtype)
    })
    .await
    .map_err(|e| ApiError::internal(format!("compute task failed: {e}")))?
    .map_err(|e| match e {
        BackendError::TooLarge(m) => ApiError::bad_request("bad_spec", m),
        other => ApiError::internal(other.to_string()),
    })?;
    let compute = started.elapsed();
    miner
        .metrics
        .compute_seconds
        .with_label_values(&["gemm"])
        .observe(compute.as_secs_f64());
    miner.metrics.gemm_flop.inc_by(spec.flops());

    if miner.config.behaviour == Behaviour::Slow {
        let extra = compute.mul_f64(miner.config.slow_factor)
            + Duration::from_millis(miner.config.slow_delay_ms);
        tokio::time::sleep(extra).await;
    }

    let root = committed.tree().root();
    let rows = committed.tree().len() as u32;
    let id = hex::encode(rand::random::<[u8; 16]>());
    let entry = StoredCommitment {
        owner: auth.sender,
        spec,
        bytes: committed.bytes() as u64,
        committed,
        created_ms: miner.clock.now_ms(),
    };
    {
        let mut store = miner.store.lock();
        let now = miner.clock.now_ms();
        if store.insert(id.clone(), entry, now).is_err() {
            return Err(ApiError::bad_request(
                "bad_spec",
                "the product is larger than this miner's commitment budget",
            ));
        }
        miner.metrics.commitments.set(store.len() as f64);
    }
    tracing::debug!(commitment = %id, n = spec.n, k = spec.k, m = spec.m, us = compute.as_micros() as u64, "committed");
    let response = CommitResponse {
        commitment_id: id,
        root: hex::encode(root),
        rows,
    };
    reply_json(
        miner,
        auth,
        &response,
        ReceiptInfo {
            compute_us: compute.as_micros() as u64,
            ..ReceiptInfo::default()
        },
    )
}

/// `POST /v1/gemm/open`.
pub(crate) async fn open(
    State(miner): State<Arc<MinerInner>>,
    Extension(permit): Extension<SlotPermit>,
    auth: Authenticated,
) -> Response {
    let result = open_inner(&miner, permit, &auth).await;
    miner.finish(&auth, result)
}

async fn open_inner(
    miner: &Arc<MinerInner>,
    permit: SlotPermit,
    auth: &Authenticated,
) -> Result<Response, ApiError> {
    let request: OpenRequest = auth.json(miner)?;
    if request.rows.is_empty() {
        return Err(ApiError::bad_request("bad_rows", "no rows requested"));
    }
    if request.rows.len() > miner.config.max_open_rows {
        return Err(ApiError::bad_request(
            "bad_rows",
            format!(
                "{} rows requested, at most {} per opening",
                request.rows.len(),
                miner.config.max_open_rows
            ),
        ));
    }
    let stored = {
        let mut store = miner.store.lock();
        let found = store.get(&request.commitment_id, &auth.sender, miner.clock.now_ms());
        miner.metrics.commitments.set(store.len() as f64);
        found
    }
    .ok_or_else(|| ApiError::unknown_commitment(&request.commitment_id))?;

    let n = stored.committed.tree().len();
    if let Some(&bad) = request.rows.iter().find(|&&i| i as usize >= n) {
        return Err(ApiError::bad_request(
            "row_out_of_range",
            format!("row {bad} out of range: the commitment has {n} rows"),
        ));
    }
    let started = Instant::now();
    let cancel = auth.cancel_token();
    let worker = miner.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let committed = &stored.committed;
        request
            .rows
            .iter()
            .map(|&i| {
                if cancel.is_cancelled() {
                    worker.metrics.cancelled.with_label_values(&["gemm"]).inc();
                    return Err(BackendError::Compute("the client went away".into()));
                }
                let values = committed.row(i)?;
                let path = committed
                    .tree()
                    .path(i as usize)
                    .ok_or_else(|| BackendError::Compute(format!("no Merkle path for row {i}")))?;
                Ok(OpenedRow {
                    index: i,
                    values,
                    path: path.iter().map(hex::encode).collect(),
                })
            })
            .collect::<Result<Vec<_>, BackendError>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("opening task failed: {e}")))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    reply_json(
        miner,
        auth,
        &OpenResponse { rows },
        ReceiptInfo {
            compute_us: started.elapsed().as_micros() as u64,
            ..ReceiptInfo::default()
        },
    )
}
