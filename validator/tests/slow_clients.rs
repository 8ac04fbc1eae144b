//! Thousands of slow clients on a validator's API listener (issue 19 item 2): one client
//! holding ~1,100 half-sent requests used to make `/v1/weights`, `/health` and `/metrics`
//! unreachable, and peers dropped the validator. Here every slow connection is admitted (the
//! caps are set above them: the worst case for the server) and held for the whole test, while
//! a fresh client must still get the weights and rounds must keep their interval.

mod common;

use common::*;
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::Role;
use polylith_validator::{Validator, ValidatorConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Slow connections wanted; fewer when the open-files limit cannot hold them.
const WANTED: u64 = 2_000;
/// Descriptors kept free for the database, the fake miner and the test's own clients.
const HEADROOM: u64 = 512;
const ROUND_MS: u64 = 200;

/// A half-sent request from `source` (another loopback address, so the fresh client below
/// is not the same source as the flood).
async fn slow_client(source: Ipv4Addr, addr: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).ok()?;
    let mut stream = socket.connect(addr).await.ok()?;
    stream
        .write_all(b"GET /v1/weights HTTP/1.1\r\nHost: validator\r\n")
        .await
        .ok()?;
    Some(stream)
}

async fn health_round(client: &reqwest::Client, base: &str) -> u64 {
    let h: serde_json::Value = client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h["round"].as_u64().unwrap()
}

async fn open_api_connections(client: &reqwest::Client, metrics_url: &str) -> i64 {
    let text = client
        .get(metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"polylith_listener_open_connections{listener="api"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_rounds_survive_thousands_of_half_sent_requests() {
    let limit = polylith_net::raise_nofile_limit();
    let soft = limit.soft.unwrap_or(u64::MAX);
    // Client and server ends of every slow connection live in this one process.
    let held = WANTED.min(soft.saturating_sub(HEADROOM) / 2);
    if held < 200 {
        println!("skipped: open-files soft limit {soft} leaves room for only {held} connections");
        return;
    }
    if held < WANTED {
        println!("open-files soft limit {soft}: holding {held} connections, not {WANTED}");
    }
    let held = held as usize;

    let dir = tempfile::tempdir().unwrap();
    let vkey = Hotkey::generate();
    let miner = fake_miner(Behaviour::Honest).await;
    let mg = dir.path().join("metagraph.toml");
    write_metagraph(
        &mg,
        vec![
            neuron(0, &vkey, Role::Validator, STAKE, "http://127.0.0.1:9"),
            neuron(1, &miner.key, Role::Miner, 0, &miner.endpoint),
        ],
    );
    let config = ValidatorConfig {
        round_interval_ms: ROUND_MS,
        // Outlast the test, so the slow clients are really held rather than timed out.
        header_read_timeout_ms: 120_000,
        max_connections: held + 64,
        max_connections_per_ip: held + 64,
        ..test_config(dir.path(), mg, "db")
    };
    let v = Validator::new(config, vkey).unwrap();
    let (api, metrics) = (loopback().await, loopback().await);
    let addr = api.local_addr().unwrap();
    let base = format!("http://{addr}");
    let metrics_url = format!("http://{}/metrics", metrics.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(polylith_validator::run(v, api, metrics, async move {
        let _ = stopped.await;
    }));
    // No pooling: every request is a new connection, as a peer's first fetch would be.
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while health_round(&fresh, &base).await < 1 {
        assert!(Instant::now() < deadline, "no round within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let flood = Ipv4Addr::new(127, 0, 0, 2);
    let mut slow = Vec::with_capacity(held);
    while slow.len() < held {
        // Batches stay under the listen backlog so no connect waits on SYN retries.
        let batch = (held - slow.len()).min(200);
        let opened = futures::future::join_all((0..batch).map(|_| slow_client(flood, addr))).await;
        let before = slow.len();
        slow.extend(opened.into_iter().flatten());
        assert_eq!(slow.len() - before, batch, "slow clients failed to connect");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = open_api_connections(&fresh, &metrics_url).await;
        if open >= held as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {open} of {held} slow connections admitted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let start_round = health_round(&fresh, &base).await;
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(3) {
        let asked = Instant::now();
        let resp = fresh
            .get(format!("{base}/v1/weights"))
            .send()
            .await
            .expect("weights reachable while the slow clients are held");
        assert_eq!(resp.status(), 200);
        let _: serde_json::Value = resp.json().await.expect("weights are JSON");
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rounds = health_round(&fresh, &base).await - start_round;
    let elapsed = start.elapsed();
    let expected = elapsed.as_millis() as u64 / ROUND_MS;
    println!(
        "{held} slow connections held: {rounds} rounds in {elapsed:?} (expected ~{expected}), \
         slowest weights fetch {slowest:?}"
    );
    assert!(
        rounds * 2 >= expected,
        "rounds slowed down: {rounds} in {elapsed:?}, expected ~{expected}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "weights fetch took {slowest:?}"
    );
    // Every slow client was still held at the end, so the numbers above are under load.
    assert!(open_api_connections(&fresh, &metrics_url).await >= held as i64);

    drop(slow);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("validator stops")
        .unwrap()
        .unwrap();
}
