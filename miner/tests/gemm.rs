//! The GEMM task end to end on the real router: commit, open, verify; receipts; the
//! commitment store's errors; the adversarial behaviours; metagraph reload; health/info.

mod common;

use common::{STAKE, TestMiner, error_reason, neuron, test_config};
use polylith_miner::{Behaviour, MinerConfig};
use polylith_protocol::gemm::{CommitResponse, GemmSpec, OpenResponse, verify_opening};
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::Role;
use polylith_protocol::signing::{Receipt, Rejection};
use serde_json::json;
use std::time::{Duration, Instant};

const COMMIT: &str = "/v1/gemm/commit";
const OPEN: &str = "/v1/gemm/open";

fn spec(seed: u64) -> GemmSpec {
    GemmSpec {
        seed,
        n: 16,
        k: 64,
        m: 24,
    }
}

fn root_of(c: &CommitResponse) -> [u8; 32] {
    hex::decode(&c.root).unwrap().try_into().unwrap()
}

/// Commits `spec` as `key`; returns the parsed response.
async fn commit(m: &TestMiner, key: &Hotkey, spec: GemmSpec) -> CommitResponse {
    let (status, body, receipt, hash) = m.call(key, COMMIT, &json!({ "spec": spec })).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let receipt = receipt.expect("commit reply carries a receipt");
    receipt.verify(&m.miner_pk, &hash, &body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Opens `rows` as `key`; returns status and body.
async fn open(m: &TestMiner, key: &Hotkey, id: &str, rows: &[u32]) -> (u16, Vec<u8>) {
    let (status, body, _, _) = m
        .call(key, OPEN, &json!({ "commitment_id": id, "rows": rows }))
        .await;
    (status, body)
}

/// Commits and opens every row; the verdict of `verify_opening`.
async fn commit_and_verify(m: &TestMiner, spec: GemmSpec) -> Result<(), String> {
    let c = commit(m, &m.keys.validator, spec).await;
    if c.rows != spec.n {
        return Err(format!("committed {} rows for n = {}", c.rows, spec.n));
    }
    let rows: Vec<u32> = (0..spec.n).collect();
    let (status, body) = open(m, &m.keys.validator, &c.commitment_id, &rows).await;
    if status != 200 {
        return Err(format!("open failed with {status}"));
    }
    let opening: OpenResponse = serde_json::from_slice(&body).unwrap();
    verify_opening(&spec, &root_of(&c), &rows, &opening).map_err(|e| e.to_string())
}

#[tokio::test]
async fn honest_commit_then_open_verifies_and_receipts_verify() {
    let m = TestMiner::start(test_config()).await;
    let s = spec(11);
    let c = commit(&m, &m.keys.validator, s).await;
    assert_eq!(c.rows, s.n);
    let rows = [0u32, 7, 15, 7];
    let (status, body, receipt, hash) = m
        .call(
            &m.keys.validator,
            OPEN,
            &json!({ "commitment_id": c.commitment_id, "rows": rows }),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let opening: OpenResponse = serde_json::from_slice(&body).unwrap();
    verify_opening(&s, &root_of(&c), &rows, &opening).unwrap();
    let receipt: Receipt = receipt.expect("open reply carries a receipt");
    receipt.verify(&m.miner_pk, &hash, &body).unwrap();
    assert_eq!(receipt.miner, m.miner_pk.to_ss58());
    assert!(receipt.total_us >= receipt.compute_us);
    // A receipt does not verify for other bytes.
    assert!(receipt.verify(&m.miner_pk, &hash, b"{}").is_err());

    assert_eq!(
        m.metric("polylith_miner_requests_total{outcome=\"ok\",task=\"gemm\"}")
            .await,
        2.0
    );
    assert_eq!(m.metric("polylith_miner_gemm_flop_total").await, s.flops());
    assert_eq!(m.metric("polylith_miner_commitments").await, 1.0);
    m.shutdown().await;
}

#[tokio::test]
async fn unknown_foreign_and_out_of_range_openings_are_clear_errors() {
    let m = TestMiner::start(test_config()).await;
    // Never committed.
    let (status, body) = open(&m, &m.keys.validator, "00112233", &[0]).await;
    assert_eq!(status, 404);
    assert_eq!(error_reason(&body), "unknown_commitment");
    assert!(String::from_utf8_lossy(&body).contains("unknown or expired commitment"));

    let c = commit(&m, &m.keys.validator, spec(3)).await;
    // Another validator cannot open it.
    let (status, _) = open(&m, &m.keys.validator2, &c.commitment_id, &[0]).await;
    assert_eq!(status, 404);
    // Row out of range.
    let (status, body) = open(&m, &m.keys.validator, &c.commitment_id, &[16]).await;
    assert_eq!(status, 400);
    assert_eq!(error_reason(&body), "row_out_of_range");
    // No rows.
    let (status, _) = open(&m, &m.keys.validator, &c.commitment_id, &[]).await;
    assert_eq!(status, 400);
    // The owner still can.
    let (status, _) = open(&m, &m.keys.validator, &c.commitment_id, &[15]).await;
    assert_eq!(status, 200);
    m.shutdown().await;
}

#[tokio::test]
async fn bad_sizes_are_400() {
    let m = TestMiner::start(test_config()).await;
    for bad in [
        GemmSpec {
            seed: 1,
            n: 0,
            k: 4,
            m: 4,
        },
        GemmSpec {
            seed: 1,
            n: 4,
            k: 4,
            m: 513,
        },
    ] {
        let (status, body, receipt, _) = m
            .call(&m.keys.validator, COMMIT, &json!({ "spec": bad }))
            .await;
        assert_eq!(status, 400, "{bad:?}");
        assert_eq!(error_reason(&body), "bad_spec");
        assert!(receipt.is_none());
    }
    assert_eq!(
        m.metric("polylith_miner_requests_total{outcome=\"error\",task=\"gemm\"}")
            .await,
        2.0
    );
    m.shutdown().await;
}

#[tokio::test]
async fn expired_commitment_is_404() {
    let m = TestMiner::start(MinerConfig {
        commitment_ttl_ms: 10_000,
        ..test_config()
    })
    .await;
    let c = commit(&m, &m.keys.validator, spec(4)).await;
    m.clock.advance_ms(10_001);
    let (status, body) = open(&m, &m.keys.validator, &c.commitment_id, &[0]).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("unknown or expired commitment"));
    assert_eq!(m.metric("polylith_miner_commitments").await, 0.0);
    m.shutdown().await;
}

async fn miner_with(behaviour: Behaviour) -> TestMiner {
    TestMiner::start(MinerConfig {
        behaviour,
        slow_delay_ms: 300,
        ..test_config()
    })
    .await
}

#[tokio::test]
async fn lazy_and_random_openings_fail_verification() {
    for behaviour in [Behaviour::Lazy, Behaviour::Random] {
        let m = miner_with(behaviour).await;
        let verdict = commit_and_verify(&m, spec(21)).await;
        assert!(verdict.is_err(), "{behaviour} passed verification");
        m.shutdown().await;
    }
}

#[tokio::test]
async fn lazy_miner_computes_exactly_the_first_half() {
    let m = miner_with(Behaviour::Lazy).await;
    let s = spec(22);
    let c = commit(&m, &m.keys.validator, s).await;
    let first_half: Vec<u32> = (0..s.n / 2).collect();
    let (status, body) = open(&m, &m.keys.validator, &c.commitment_id, &first_half).await;
    assert_eq!(status, 200);
    let opening: OpenResponse = serde_json::from_slice(&body).unwrap();
    // Its paths are honest, so the computed half verifies and only the rest gives it away.
    verify_opening(&s, &root_of(&c), &first_half, &opening).unwrap();
    m.shutdown().await;
}

#[tokio::test]
async fn replay_miner_passes_once_then_fails() {
    let m = miner_with(Behaviour::Replay).await;
    commit_and_verify(&m, spec(31)).await.unwrap();
    let second = commit_and_verify(&m, spec(32)).await;
    assert!(second.is_err(), "a replayed commitment verified");
    m.shutdown().await;
}

#[tokio::test]
async fn slow_miner_is_correct_but_waits_at_least_its_delay() {
    let m = miner_with(Behaviour::Slow).await;
    let started = Instant::now();
    commit_and_verify(&m, spec(41)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    m.shutdown().await;
}

#[tokio::test]
async fn metagraph_reload_admits_a_new_validator() {
    let m = TestMiner::start(test_config()).await;
    let newcomer = Hotkey::generate();
    let body = json!({ "spec": spec(5) });
    let (status, resp, _, _) = m.call(&newcomer, COMMIT, &body).await;
    assert_eq!(status, Rejection::UnknownSender.http_status());
    assert_eq!(error_reason(&resp), "unknown_sender");

    let mut g = m.keys.metagraph();
    g.neurons.push(neuron(9, &newcomer, Role::Validator, STAKE));
    g.save(&m.metagraph_path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _, _) = m.call(&newcomer, COMMIT, &body).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new validator still refused after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    m.shutdown().await;
}

#[tokio::test]
async fn health_and_info_describe_the_miner() {
    let m = TestMiner::start(test_config()).await;
    let health: serde_json::Value = m
        .client
        .get(format!("{}/health", m.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["hotkey"], m.miner_pk.to_ss58());
    assert_eq!(health["backend"], "cpu");
    commit(&m, &m.keys.validator, spec(1)).await;
    let info: serde_json::Value = m
        .client
        .get(format!("{}/v1/info", m.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["tasks_served"], 1);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        m.metric("polylith_miner_backend_info{backend=\"cpu\"}")
            .await,
        1.0
    );
    m.shutdown().await;
}
