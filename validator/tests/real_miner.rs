//! Interoperability with the real miner crate (CPU backend): honest miners are verified,
//! lazy, random and replaying miners are caught.

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
