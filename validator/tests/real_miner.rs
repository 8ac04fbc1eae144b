//! Interoperability with the real miner crate (CPU backend): honest miners are verified,
//! lazy, random and replaying miners are caught; on the LLM task, honest completions pass
//! and every model-level cheat (another model, perturbed, truncated, int8, random tokens) fails.

mod common;

use common::*;
use polylith_miner::backend::CpuBackend;
use polylith_miner::{Behaviour as MinerBehaviour, Miner, MinerConfig};
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::Role;
use polylith_validator::{FailureReason, Validator};
use std::sync::Arc;

#[tokio::test]
async fn real_miners_honest_verified_and_cheaters_caught() {
    let dir = tempfile::tempdir().unwrap();
    let vkey = Hotkey::generate();
    let behaviours = [
        MinerBehaviour::Honest,
        MinerBehaviour::Lazy,
        MinerBehaviour::Random,
        MinerBehaviour::Replay,
    ];
    let mut keys = Vec::new();
    let mut listeners = Vec::new();
    let mut neurons = vec![neuron(
        0,
        &vkey,
        Role::Validator,
        STAKE,
        "http://127.0.0.1:9",
    )];
    for (i, _) in behaviours.iter().enumerate() {
        let key = Hotkey::generate();
        let l = loopback().await;
        let endpoint = format!("http://{}", l.local_addr().unwrap());
        neurons.push(neuron(i as u16 + 1, &key, Role::Miner, 0, &endpoint));
        keys.push(key);
        listeners.push(l);
    }
    let mg = dir.path().join("metagraph.toml");
    write_metagraph(&mg, neurons);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for ((behaviour, key), listener) in behaviours.iter().zip(keys).zip(listeners) {
        let config = MinerConfig {
            metagraph: mg.clone(),
            behaviour: *behaviour,
            ..MinerConfig::default()
        };
        let miner = Miner::new(config, key, Arc::new(CpuBackend::new())).unwrap();
        let mut rx = stopped.clone();
        tokio::spawn(miner.serve(listener, loopback().await, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
    }
    let mut config = test_config(dir.path(), mg, "db");
    // 14 opened rows: a miner that computed half the rows passes with probability 0.5^14.
    config.open_rows = 14;
    config.gemm_min_dim = 32;
    config.gemm_max_dim = 48;
    let v = Validator::new(config, vkey).unwrap();

    let r1 = v.run_round().await;
    let why = |r: &polylith_validator::RoundRecord, uid: u16| {
        r.outcomes
            .iter()
            .find(|o| o.uid == uid)
            .unwrap()
            .failure
            .as_ref()
            .map(|f| f.reason)
    };
    assert_eq!(
        why(&r1, 1),
        None,
        "honest real miner verified: {:?}",
        r1.outcomes[0]
    );
    assert_eq!(why(&r1, 2), Some(FailureReason::WrongRow), "lazy");
    assert_eq!(why(&r1, 3), Some(FailureReason::WrongRow), "random");
    assert_eq!(why(&r1, 4), None, "replay answers its first task honestly");
    let r2 = v.run_round().await;
    assert_eq!(why(&r2, 1), None);
    assert!(
        why(&r2, 4).is_some(),
        "replayed commitment caught in round 2"
    );
    let weights: Vec<u16> = v
        .published_weights()
        .unwrap()
        .weights
        .iter()
        .map(|w| w.0)
        .collect();
    assert!(weights.contains(&1) && !weights.contains(&2) && !weights.contains(&3));
    let _ = stop.send(true);
}

/// Starts one real miner per config on loopback (uids 1..) under validator `vkey` (uid 0);
/// returns the metagraph path and the stop switch.
async fn start_real_miners(
    dir: &std::path::Path,
    vkey: &Hotkey,
    configs: Vec<MinerConfig>,
) -> (std::path::PathBuf, tokio::sync::watch::Sender<bool>) {
    let mut neurons = vec![neuron(
        0,
        vkey,
        Role::Validator,
        STAKE,
        "http://127.0.0.1:9",
    )];
    let mut started = Vec::new();
    for (i, _) in configs.iter().enumerate() {
        let key = Hotkey::generate();
        let l = loopback().await;
        let endpoint = format!("http://{}", l.local_addr().unwrap());
        neurons.push(neuron(i as u16 + 1, &key, Role::Miner, 0, &endpoint));
        started.push((key, l));
    }
    let mg = dir.join("metagraph.toml");
    write_metagraph(&mg, neurons);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for (config, (key, listener)) in configs.into_iter().zip(started) {
        let config = MinerConfig {
            metagraph: mg.clone(),
            ..config
        };
        let miner = Miner::new(config, key, Arc::new(CpuBackend::new())).unwrap();
        let mut rx = stopped.clone();
        tokio::spawn(miner.serve(listener, loopback().await, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
    }
    (mg, stop)
}

#[tokio::test]
async fn llm_round_verifies_honest_completions_and_fails_every_model_cheat() {
    let dir = tempfile::tempdir().unwrap();
    let vkey = Hotkey::generate();
    let behaviours = [
        MinerBehaviour::Honest,
        MinerBehaviour::WrongModel,
        MinerBehaviour::Perturbed,
        MinerBehaviour::Truncated,
        MinerBehaviour::Quantized,
        MinerBehaviour::RandomTokens,
    ];
    let mut configs: Vec<MinerConfig> = behaviours
        .iter()
        .map(|b| MinerConfig {
            behaviour: *b,
            model: Some("builtin".into()),
            ..MinerConfig::default()
        })
        .collect();
    // Uid 7 honestly serves another model (the HF fixture): it must not be scored.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../model/tests/fixtures/tiny-llama"
    );
    configs.push(MinerConfig {
        model: Some(fixture.into()),
        ..MinerConfig::default()
    });
    let (mg, stop) = start_real_miners(dir.path(), &vkey, configs).await;
    let mut config = test_config(dir.path(), mg, "db");
    config.task_weights = polylith_validator::TaskWeights {
        gemm: 0.0,
        llm: 1.0,
    };
    config.llm_max_tokens = 16;
    let v = Validator::new(config, vkey).unwrap();
    for round in 0..2 {
        let r = v.run_round().await;
        let out = |uid: u16| r.outcomes.iter().find(|o| o.uid == uid).unwrap();
        let honest = out(1);
        assert!(honest.verified(), "round {round}: {:?}", honest.failure);
        assert_eq!(honest.tokens_passed, honest.tokens_checked);
        assert!(honest.tokens_checked > 0);
        assert!(honest.latency_s.unwrap() > 0.0 && honest.throughput.unwrap() > 0.0);
        assert!(honest.score > 0.0);
        for uid in 2..=6 {
            let o = out(uid);
            let f = o.failure.as_ref().unwrap_or_else(|| {
                panic!(
                    "round {round}: {:?} passed verification",
                    behaviours[uid as usize - 1]
                )
            });
            assert!(
                f.reason.is_cheating(),
                "{:?}: {f}",
                behaviours[uid as usize - 1]
            );
            assert_eq!(o.score, 0.0);
            assert!(o.tokens_passed < o.tokens_checked.max(1));
        }
        let other = out(7)
            .failure
            .as_ref()
            .expect("another model is not scored");
        assert_eq!(other.reason, FailureReason::HttpStatus, "{other}");
        assert!(other.message.contains("unknown_model"), "{other}");
        assert_eq!(r.weights, vec![(1, 65_535)], "round {round}");
    }
    let s = v.snapshot();
    let honest = s.miners.iter().find(|m| m.uid == 1).unwrap();
    assert_eq!(honest.tokens_passed, honest.tokens_checked);
    assert!(honest.median_tokens_per_s.unwrap() > 0.0 && honest.median_ttft_s.unwrap() > 0.0);
    let metrics = v.metrics().render();
    assert!(
        metrics.contains(r#"polylith_validator_verification_failures_total{reason="logprob_mismatch",task="llm"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("polylith_validator_llm_tokens_total{outcome=\"verified\"}"));
    let _ = stop.send(true);
}
