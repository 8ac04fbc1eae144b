//! Test subnet pieces: fake miners (honest or cheating in one chosen way) served with axum on
//! 127.0.0.1:0, a metagraph file, and a validator configuration with small matrices.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use polylith_protocol::gemm::{
    CommitRequest, CommitResponse, GemmSpec, MerkleTree, OpenRequest, OpenResponse, OpenedRow,
    leaf_hash,
};
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use polylith_protocol::signing::{H_RECEIPT, Receipt, RequestEnvelope};
use polylith_validator::ValidatorConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How a fake miner answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Correct product, correct openings, valid receipts.
    Honest,
    /// Commits to a product with one wrong entry in every row (paths are consistent).
    TamperRow,
    /// Correct product, but the first sibling of every opened path is corrupted.
    TamperPath,
    /// Commits, then answers every opening with 404 unknown_commitment.
    ForgetCommitment,
    /// Receipts signed by a key other than the miner's hotkey.
    BadReceiptSignature,
    /// No receipt header at all.
    NoReceipt,
    /// Claims n + 1 rows.
    WrongRowCount,
    /// Answers every task with its first commitment (root and rows).
    Replay,
    /// Honest, after sleeping this long before each commitment.
    Slow(u64),
}

struct Stored {
    rows: Vec<Vec<i32>>,
    tree: MerkleTree,
}

struct FakeState {
    key: Hotkey,
    receipt_key: Hotkey,
    behaviour: Behaviour,
    commitments: parking_lot::Mutex<HashMap<String, Arc<Stored>>>,
    first: parking_lot::Mutex<Option<(String, Arc<Stored>)>>,
}

/// A fake miner on loopback.
pub struct FakeMiner {
    pub key: Hotkey,
    pub endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMiner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn receipt_for(state: &FakeState, headers: &HeaderMap, path: &str, body: &[u8]) -> Option<String> {
    if state.behaviour == Behaviour::NoReceipt {
        return None;
    }
    let envelope = RequestEnvelope::from_headers(|name| headers.get(name)?.to_str().ok()).ok()?;
    let receipt = Receipt {
        miner: state.key.public().to_ss58(),
        request_hash: hex::encode(envelope.request_hash("POST", path)),
        response_hash: hex::encode(blake3::hash(body).as_bytes()),
        model_hash: String::new(),
        received_ms: 0,
        compute_us: 1,
        ttft_us: 0,
        total_us: 1,
        tokens: 0,
        signature: String::new(),
    }
    .sign(&state.receipt_key);
    serde_json::to_string(&receipt).ok()
}

fn reply(
    state: &FakeState,
    headers: &HeaderMap,
    path: &str,
    value: &impl serde::Serialize,
) -> Response {
    let body = serde_json::to_vec(value).unwrap();
    let mut resp = (StatusCode::OK, body.clone()).into_response();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(r) = receipt_for(state, headers, path, &body) {
        resp.headers_mut().insert(H_RECEIPT, r.parse().unwrap());
    }
    resp
}

fn compute(spec: &GemmSpec, tamper: bool) -> Stored {
    let rows: Vec<Vec<i32>> = (0..spec.n)
        .map(|i| {
            let mut r = spec.row_of_c(i).unwrap();
            if tamper {
                r[0] = r[0].wrapping_add(1);
            }
            r
        })
        .collect();
    let tree = MerkleTree::from_leaves(rows.iter().map(|r| leaf_hash(r)).collect());
    Stored { rows, tree }
}

async fn commit(State(s): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: CommitRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if let Behaviour::Slow(ms) = s.behaviour {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let (id, stored) = if s.behaviour == Behaviour::Replay {
        let mut first = s.first.lock();
        let entry = first.get_or_insert_with(|| {
            (
                hex::encode(rand::random::<[u8; 8]>()),
                Arc::new(compute(&req.spec, false)),
            )
        });
        entry.clone()
    } else {
        let stored = Arc::new(compute(&req.spec, s.behaviour == Behaviour::TamperRow));
        (hex::encode(rand::random::<[u8; 8]>()), stored)
    };
    s.commitments.lock().insert(id.clone(), stored.clone());
    let rows = if s.behaviour == Behaviour::WrongRowCount {
        req.spec.n + 1
    } else {
        stored.tree.len() as u32
    };
    let resp = CommitResponse {
        commitment_id: id,
        root: hex::encode(stored.tree.root()),
        rows,
    };
    reply(&s, &headers, "/v1/gemm/commit", &resp)
}

async fn open(State(s): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: OpenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let stored = s.commitments.lock().get(&req.commitment_id).cloned();
    let stored = match (stored, s.behaviour) {
        (Some(st), b) if b != Behaviour::ForgetCommitment => st,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"error": "unknown_commitment", "message": "gone"})),
            )
                .into_response();
        }
    };
    let mut rows = Vec::new();
    for &i in &req.rows {
        let Some(values) = stored.rows.get(i as usize) else {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({"error": "row_out_of_range", "message": ""})),
            )
                .into_response();
        };
        let mut path: Vec<String> = stored
            .tree
            .path(i as usize)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        if s.behaviour == Behaviour::TamperPath
            && let Some(first) = path.first_mut()
        {
            *first = hex::encode([0x5a; 32]);
        }
        rows.push(OpenedRow {
            index: i,
            values: values.clone(),
            path,
        });
    }
    reply(&s, &headers, "/v1/gemm/open", &OpenResponse { rows })
}

/// Starts a fake miner with a fresh hotkey.
pub async fn fake_miner(behaviour: Behaviour) -> FakeMiner {
    let key = Hotkey::generate();
    let receipt_key = if behaviour == Behaviour::BadReceiptSignature {
        Hotkey::generate()
    } else {
        key.clone()
    };
    let state = Arc::new(FakeState {
        key: key.clone(),
        receipt_key,
        behaviour,
        commitments: parking_lot::Mutex::new(HashMap::new()),
        first: parking_lot::Mutex::new(None),
    });
    let app = Router::new()
        .route("/v1/gemm/commit", post(commit))
        .route("/v1/gemm/open", post(open))
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeMiner {
        key,
        endpoint,
        task,
    }
}

/// A neuron entry.
pub fn neuron(uid: u16, key: &Hotkey, role: Role, stake: u64, endpoint: &str) -> Neuron {
    Neuron {
        uid,
        hotkey: key.public().to_ss58(),
        role,
        stake,
        endpoint: endpoint.to_string(),
    }
}

/// Writes a metagraph file.
pub fn write_metagraph(path: &Path, neurons: Vec<Neuron>) {
    Metagraph { netuid: 1, neurons }.save(path).unwrap();
}

/// Small, fast settings for tests: 8..=16 matrices, 4 opened rows, 5 s deadlines.
pub fn test_config(dir: &Path, metagraph: PathBuf, db: &str) -> ValidatorConfig {
    ValidatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        metagraph,
        data_dir: dir.join(db),
        round_interval_ms: 100,
        query_timeout_ms: 5_000,
        peer_timeout_ms: 2_000,
        gemm_min_dim: 8,
        gemm_max_dim: 16,
        open_rows: 4,
        ema_alpha: 0.5,
        // These tests count rounds on the shortest commit-reveal schedule (rewards from
        // round 5); copier.rs measures the default delay.
        reveal_delay_rounds: 2,
        // The fake miners answer GEMM only; LLM rounds use real miners (real_miner.rs).
        task_weights: polylith_validator::TaskWeights {
            gemm: 1.0,
            llm: 0.0,
        },
        ..ValidatorConfig::default()
    }
}

/// A bound loopback listener.
pub async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Stake of every test validator.
pub const STAKE: u64 = 1_000;
