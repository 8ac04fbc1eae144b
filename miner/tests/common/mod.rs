//! A test subnet: a metagraph with validators of several stakes and miners, one real miner
//! served on 127.0.0.1:0, and a client that signs requests like a validator.
#![allow(dead_code)]

use polylith_miner::backend::CpuBackend;
use polylith_miner::{Clock, Miner, MinerConfig, OffsetClock};
use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use polylith_protocol::signing::{H_RECEIPT, Receipt, RequestEnvelope};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Stake of the well-staked validators; the minimum is 100.
pub const STAKE: u64 = 1_000;
/// The miner's minimum validator stake in these tests.
pub const MIN_STAKE: u64 = 100;

/// Keys and the metagraph file.
pub struct Keys {
    pub validator: Hotkey,
    pub validator2: Hotkey,
    pub low_stake: Hotkey,
    pub miner: Hotkey,
    pub other_miner: Hotkey,
    pub stranger: Hotkey,
}

pub fn neuron(uid: u16, key: &Hotkey, role: Role, stake: u64) -> Neuron {
    Neuron {
        uid,
        hotkey: key.public().to_ss58(),
        role,
        stake,
        endpoint: format!("http://127.0.0.1:{}", 10_000 + uid),
    }
}

impl Keys {
    pub fn new() -> Self {
        Self {
            validator: Hotkey::generate(),
            validator2: Hotkey::generate(),
            low_stake: Hotkey::generate(),
            miner: Hotkey::generate(),
            other_miner: Hotkey::generate(),
            stranger: Hotkey::generate(),
        }
    }

    pub fn metagraph(&self) -> Metagraph {
        Metagraph {
            netuid: 1,
            neurons: vec![
                neuron(0, &self.validator, Role::Validator, STAKE),
                neuron(1, &self.validator2, Role::Validator, STAKE),
                neuron(2, &self.low_stake, Role::Validator, MIN_STAKE - 1),
                neuron(3, &self.miner, Role::Miner, 0),
                neuron(4, &self.other_miner, Role::Miner, STAKE),
            ],
        }
    }
}

/// A miner running on loopback.
pub struct TestMiner {
    pub keys: Keys,
    pub dir: tempfile::TempDir,
    pub metagraph_path: PathBuf,
    pub base: String,
    pub metrics_url: String,
    pub miner_pk: PublicKey,
    pub clock: Arc<OffsetClock>,
    pub config: MinerConfig,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), polylith_miner::MinerError>>>,
}

/// The configuration tests start from: small limits, the test stake minimum.
pub fn test_config() -> MinerConfig {
    MinerConfig {
        min_validator_stake: MIN_STAKE,
        max_gemm_dim: 512,
        metagraph_reload_ms: 50,
        ..MinerConfig::default()
    }
}

impl TestMiner {
    pub async fn start(config: MinerConfig) -> Self {
        Self::start_with_metagraph(config, Keys::metagraph).await
    }

    /// Starts a miner whose metagraph is `metagraph(&keys)` instead of the default one.
    pub async fn start_with_metagraph(
        config: MinerConfig,
        metagraph: impl FnOnce(&Keys) -> Metagraph,
    ) -> Self {
        let keys = Keys::new();
        let dir = tempfile::tempdir().unwrap();
        let metagraph_path = dir.path().join("metagraph.toml");
        metagraph(&keys).save(&metagraph_path).unwrap();
        let config = MinerConfig {
            metagraph: metagraph_path.clone(),
            ..config
        };
        Self::launch(keys, dir, config, OffsetClock::new()).await
    }

    /// Stops this miner and starts a new one with the same key, metagraph, configuration
    /// and clock: what a validator sees when a miner process restarts.
    pub async fn restart(mut self) -> Self {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("miner did not stop within 10 s")
            .unwrap()
            .unwrap();
        let keys = std::mem::replace(&mut self.keys, Keys::new());
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::launch(keys, dir, self.config.clone(), self.clock.clone()).await
    }

    async fn launch(
        keys: Keys,
        dir: tempfile::TempDir,
        config: MinerConfig,
        clock: Arc<OffsetClock>,
    ) -> Self {
        let metagraph_path = config.metagraph.clone();
        let miner = Miner::with_clock(
            config.clone(),
            keys.miner.clone(),
            Arc::new(CpuBackend::new()),
            clock.clone(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics_url = format!("http://{}/metrics", metrics_listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(miner.serve(listener, metrics_listener, async move {
            let _ = stopped.await;
        }));
        // reqwest is built without a default TLS provider; the daemons install it at start.
        polylith_net::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            miner_pk: keys.miner.public(),
            keys,
            dir,
            metagraph_path,
            base,
            metrics_url,
            clock,
            config,
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the miner and checks it shut down cleanly.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("miner did not stop within 10 s")
            .unwrap()
            .unwrap();
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A signed envelope from `key` to this miner.
    pub fn envelope(&self, key: &Hotkey, path: &str, body: &[u8]) -> RequestEnvelope {
        RequestEnvelope::sign(key, &self.miner_pk, "POST", path, body, self.now_ms())
    }

    /// Posts `body` with the given envelope headers.
    pub async fn post_with(
        &self,
        path: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}{}", self.base, path))
            .body(body);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req.send().await.unwrap()
    }

    /// Posts `body` signed by `key`; returns the response and the request hash.
    pub async fn post_signed(
        &self,
        key: &Hotkey,
        path: &str,
        body: Vec<u8>,
    ) -> (reqwest::Response, [u8; 32]) {
        let env = self.envelope(key, path, &body);
        let hash = env.request_hash("POST", path);
        (self.post_with(path, env.to_headers(), body).await, hash)
    }

    /// Posts a JSON value signed by the staked validator; returns status, body bytes, the
    /// receipt (if any) and the request hash.
    pub async fn call(
        &self,
        key: &Hotkey,
        path: &str,
        value: &serde_json::Value,
    ) -> (u16, Vec<u8>, Option<Receipt>, [u8; 32]) {
        let (resp, hash) = self
            .post_signed(key, path, serde_json::to_vec(value).unwrap())
            .await;
        let status = resp.status().as_u16();
        let receipt = resp
            .headers()
            .get(H_RECEIPT)
            .map(|v| serde_json::from_str(v.to_str().unwrap()).unwrap());
        (status, resp.bytes().await.unwrap().to_vec(), receipt, hash)
    }

    /// The value of one exported sample, e.g.
    /// `polylith_miner_rejections_total{reason="bad_signature"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .client
            .get(&self.metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }

    pub async fn rejections(&self, reason: &str) -> f64 {
        self.metric(&format!(
            "polylith_miner_rejections_total{{reason=\"{reason}\"}}"
        ))
        .await
    }
}

/// Parses an error body and returns its `error` field.
pub fn error_reason(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("error body is not JSON: {}", String::from_utf8_lossy(body)));
    assert!(v["message"].is_string(), "error body lacks a message: {v}");
    v["error"].as_str().expect("error field").to_string()
}
