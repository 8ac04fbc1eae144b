//! The daemon entry point: serves weights, health and metrics on bound listeners, runs rounds
//! on its own, and stops on shutdown or after the configured number of rounds.

mod common;

use common::*;
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::Role;
use polylith_protocol::weights::WeightsMessage;
use polylith_validator::Validator;
use std::time::Duration;

#[tokio::test]
async fn serve_runs_rounds_and_exposes_weights_health_and_metrics() {
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
    let v = Validator::new(test_config(dir.path(), mg, "db"), vkey.clone()).unwrap();
    let (api, metrics) = (loopback().await, loopback().await);
    let base = format!("http://{}", api.local_addr().unwrap());
    let metrics_url = format!("http://{}/metrics", metrics.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(polylith_validator::run(
        v.clone(),
        api,
        metrics,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let mut rounds = 0;
    for _ in 0..100 {
        let h: serde_json::Value = client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(h["status"], "ok");
        rounds = h["round"].as_u64().unwrap();
        if rounds >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rounds >= 2, "two rounds within 10 s, got {rounds}");
    let w: WeightsMessage = client
        .get(format!("{base}/v1/weights"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(w.verify().unwrap(), vkey.public());
    assert!(w.round >= 2, "{w:?}");
    let state: serde_json::Value = client
        .get(format!("{base}/v1/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The public state does not show this round's weights (copiers would read them); the
    // operator's copy on the metrics listener does.
    assert_eq!(state["miners"][0]["weight_u16"], 0);
    let private: serde_json::Value = client
        .get(metrics_url.replace("/metrics", "/v1/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(private["miners"][0]["weight_u16"], 65_535);
    let text = client
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"polylith_build_info{component="validator""#),
        "{text}"
    );
    assert!(
        text.contains(r#"polylith_validator_miner_weight{miner_uid="1"} 1"#),
        "{text}"
    );
    assert!(text.contains("polylith_validator_data_dir_size_bytes"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("validator stops within 10 s")
        .unwrap()
        .unwrap();
}

/// Paused time: the 60 s round interval elapses virtually, so three rounds take no real wait.
#[tokio::test(start_paused = true)]
async fn serve_returns_after_the_configured_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let vkey = Hotkey::generate();
    let mg = dir.path().join("metagraph.toml");
    write_metagraph(
        &mg,
        vec![neuron(
            0,
            &vkey,
            Role::Validator,
            STAKE,
            "http://127.0.0.1:9",
        )],
    );
    let mut config = test_config(dir.path(), mg, "db");
    config.rounds = 3;
    config.round_interval_ms = 60_000;
    let v = Validator::new(config, vkey).unwrap();
    let started = tokio::time::Instant::now();
    let run = polylith_validator::run(
        v.clone(),
        loopback().await,
        loopback().await,
        std::future::pending(),
    );
    tokio::time::timeout(Duration::from_secs(3_600), run)
        .await
        .expect("returns after 3 rounds")
        .unwrap();
    assert_eq!(v.round(), 3);
    // The first round starts at once, the next two one interval apart each.
    assert!(
        started.elapsed() >= Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
}
