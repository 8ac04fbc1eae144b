//! A validator whose hotkey is not in the metagraph as a validator keeps running but says so:
//! `registration_problem`, the `polylith_validator_registered` metric and `/health` show it
//! until a metagraph edit registers it, which a round picks up without a restart.

mod common;

use common::*;
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::Role;
use polylith_validator::Validator;

async fn health(v: &Validator) -> serde_json::Value {
    let api = loopback().await;
    let base = format!("http://{}", api.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = v.router();
    let task = tokio::spawn(polylith_net::serve(
        api,
        router,
        Default::default(),
        Default::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let body = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = stop.send(());
    let _ = task.await;
    body
}

#[tokio::test]
async fn an_unregistered_validator_is_degraded_until_the_metagraph_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let vkey = Hotkey::generate();
    let miner = fake_miner(Behaviour::Honest).await;
    let mg = dir.path().join("metagraph.toml");
    // Listed, but as a miner.
    write_metagraph(
        &mg,
        vec![
            neuron(0, &vkey, Role::Miner, STAKE, "http://127.0.0.1:9"),
            neuron(1, &miner.key, Role::Miner, 0, &miner.endpoint),
        ],
    );
    let v = Validator::new(test_config(dir.path(), mg.clone(), "db"), vkey.clone()).unwrap();
    let problem = v
        .registration_problem()
        .expect("a miner's role is a problem");
    assert!(problem.contains("role miner"), "{problem}");
    assert_eq!(v.metrics().registered.get(), 0);
    let h = health(&v).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["problem"]
            .as_str()
            .unwrap()
            .contains(&vkey.public().to_ss58())
    );

    // Missing altogether.
    write_metagraph(
        &mg,
        vec![neuron(1, &miner.key, Role::Miner, 0, &miner.endpoint)],
    );
    v.run_round().await;
    let problem = v
        .registration_problem()
        .expect("a missing hotkey is a problem");
    assert!(problem.contains("not in the metagraph"), "{problem}");

    // Registered: the next round clears it.
    write_metagraph(
        &mg,
        vec![
            neuron(0, &vkey, Role::Validator, STAKE, "http://127.0.0.1:9"),
            neuron(1, &miner.key, Role::Miner, 0, &miner.endpoint),
        ],
    );
    v.run_round().await;
    assert_eq!(v.registration_problem(), None);
    assert_eq!(v.metrics().registered.get(), 1);
    assert_eq!(health(&v).await["status"], "ok");
}
