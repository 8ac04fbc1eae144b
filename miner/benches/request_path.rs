//! The miner's signed request path against a bare axum handler, under the same load in the
//! same run.
//!
//! Two servers on 127.0.0.1: the real miner (`Miner::serve`: the listener's limits, envelope
//! parse, signature check, metagraph and stake, the sender's place, nonce cache, bounded body
//! read, compute slot, the handler, a signed receipt) and a bare `axum::serve` router whose
//! handler returns a fixed JSON body. A bounded load generator (a fixed number of requests
//! from a fixed number of concurrent keep-alive connections, every request signed before the
//! clock starts) drives each in turn; the cases alternate so drift in the machine's load hits
//! both alike. Reported: requests/s, p50 and p99 latency, and the ratios.
//!
//! Handlers on the miner: `open` of an unknown commitment (the whole admission path, then a
//! store lookup and a 404: the trivial handler) and `commit` of a 1×1×1 product (admission,
//! a blocking-pool hop, the smallest product, a Merkle root, a signed receipt).
//!
//! `cargo bench -p polylith-miner --bench request_path` (harness-less: it prints a table).
//! Environment: `REQUESTS` per measurement (default 3000), `CONCURRENCY` (default 16),
//! `REPEATS` (default 3).

use axum::Router;
use axum::routing::post;
use polylith_miner::backend::CpuBackend;
use polylith_miner::{Miner, MinerConfig};
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use polylith_protocol::signing::RequestEnvelope;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// Longest a measurement may run before it stops early (bounds the bench in time).
const MAX_WALL: Duration = Duration::from_secs(60);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One request ready to send: path, headers, body.
struct Prepared {
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// One measurement: requests/s and latency percentiles, ms.
#[derive(Debug, Clone, Copy)]
struct Figure {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Sends every request in `batch` to `base` over `concurrency` connections; each must get
/// `want` as its status.
async fn drive(
    client: &reqwest::Client,
    base: &str,
    batch: Vec<Prepared>,
    concurrency: usize,
    want: u16,
) -> Figure {
    let queue = Arc::new(parking_lot::Mutex::new(batch));
    let deadline = Instant::now() + MAX_WALL;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, queue, base) = (client.clone(), queue.clone(), base.to_string());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let Some(p) = queue.lock().pop() else { break };
                    if Instant::now() > deadline {
                        break;
                    }
                    let mut req = client
                        .post(format!("{base}{}", p.path))
                        .header("content-type", "application/json")
                        .body(p.body);
                    for (k, v) in p.headers {
                        req = req.header(k, v);
                    }
                    let t = Instant::now();
                    let resp = req.send().await.expect("request");
                    let status = resp.status().as_u16();
                    let _ = resp.bytes().await.expect("body");
                    lat.push(t.elapsed().as_secs_f64());
                    assert_eq!(status, want, "unexpected status from {base}{}", p.path);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.expect("worker"));
    }
    let wall = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1e3;
    Figure {
        rps: lat.len() as f64 / wall,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let requests = env_or("REQUESTS", 3000);
    let concurrency = env_or("CONCURRENCY", 16);
    let repeats = env_or("REPEATS", 3).max(1);

    let (validator, miner_key) = (Hotkey::generate(), Hotkey::generate());
    let miner_pk = miner_key.public();
    let dir = tempfile::tempdir().expect("temp dir");
    let mg_path = dir.path().join("metagraph.toml");
    Metagraph {
        netuid: 1,
        neurons: vec![
            Neuron {
                uid: 0,
                hotkey: validator.public().to_ss58(),
                role: Role::Validator,
                stake: 1_000,
                endpoint: "http://127.0.0.1:1".into(),
            },
            Neuron {
                uid: 1,
                hotkey: miner_pk.to_ss58(),
                role: Role::Miner,
                stake: 0,
                endpoint: "http://127.0.0.1:2".into(),
            },
        ],
    }
    .save(&mg_path)
    .expect("metagraph");
    let config = MinerConfig {
        metagraph: mg_path,
        model: None,
        // Enough nonces for every request of the run; the default (100 000) already is.
        ..MinerConfig::default()
    };
    let miner = Miner::new(config, miner_key, Arc::new(CpuBackend::new())).expect("miner");
    let (api, metrics) = (
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    );
    let miner_addr: SocketAddr = api.local_addr().expect("addr");
    tokio::spawn(miner.serve(api, metrics, std::future::pending()));

    // The baseline: the same route on a bare router, a fixed small JSON answer.
    let bare = Router::new()
        .route(
            "/v1/gemm/open",
            post(|| async { r#"{"error":"unknown_commitment","message":"no such commitment"}"# }),
        )
        .route(
            "/v1/gemm/commit",
            post(|| async { r#"{"commitment_id":"00","root":"00","rows":1}"# }),
        );
    let bare_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bare_addr = bare_l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(bare_l, bare).await });

    // reqwest is built without a default TLS provider; the daemons install this one.
    polylith_net::install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let sign = |path: &'static str, body: &[u8]| Prepared {
        path,
        headers: RequestEnvelope::sign(&validator, &miner_pk, "POST", path, body, now_ms())
            .to_headers(),
        body: body.to_vec(),
    };
    let open_body = br#"{"commitment_id":"ffffffffffffffffffffffffffffffff","rows":[0]}"#;
    let commit_body = br#"{"spec":{"seed":1,"n":1,"k":1,"m":1},"dtype":"f32"}"#;
    let cases: [(&str, &'static str, &[u8], u16); 2] = [
        (
            "open (unknown id): admission + trivial handler",
            "/v1/gemm/open",
            open_body,
            404,
        ),
        (
            "commit 1x1x1: admission + product + receipt",
            "/v1/gemm/commit",
            commit_body,
            200,
        ),
    ];
    println!(
        "{requests} requests per measurement, {concurrency} connections, median of {repeats}; loopback, client in the same process"
    );
    println!(
        "{:<48} {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>7} {:>10}",
        "case", "bare rps", "p50 ms", "p99 ms", "miner rps", "p50 ms", "p99 ms", "ratio", "+p99 ms"
    );
    // Warm both servers and the connection pool.
    let warm: Vec<Prepared> = (0..200).map(|_| sign("/v1/gemm/open", open_body)).collect();
    drive(
        &client,
        &format!("http://{miner_addr}"),
        warm,
        concurrency,
        404,
    )
    .await;
    for (name, path, body, status) in cases {
        let (mut bare_f, mut miner_f) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            let plain: Vec<Prepared> = (0..requests)
                .map(|_| Prepared {
                    path,
                    headers: Vec::new(),
                    body: body.to_vec(),
                })
                .collect();
            bare_f.push(
                drive(
                    &client,
                    &format!("http://{bare_addr}"),
                    plain,
                    concurrency,
                    200,
                )
                .await,
            );
            // Signed just before sending: the timestamps stay inside the miner's window.
            let signed: Vec<Prepared> = (0..requests).map(|_| sign(path, body)).collect();
            miner_f.push(
                drive(
                    &client,
                    &format!("http://{miner_addr}"),
                    signed,
                    concurrency,
                    status,
                )
                .await,
            );
        }
        let m = |v: &[Figure], f: fn(&Figure) -> f64| median(v.iter().map(f).collect());
        let (b_rps, b50, b99) = (
            m(&bare_f, |f| f.rps),
            m(&bare_f, |f| f.p50_ms),
            m(&bare_f, |f| f.p99_ms),
        );
        let (m_rps, m50, m99) = (
            m(&miner_f, |f| f.rps),
            m(&miner_f, |f| f.p50_ms),
            m(&miner_f, |f| f.p99_ms),
        );
        println!(
            "{name:<48} {b_rps:>10.0} {b50:>8.3} {b99:>8.3} | {m_rps:>10.0} {m50:>8.3} {m99:>8.3} | {:>6.2}x {:>10.3}",
            m_rps / b_rps,
            m99 - b99
        );
    }
}
