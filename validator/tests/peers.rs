//! Peers' weight vectors: a verified, fresh vector signed by the validator registered at that
//! endpoint enters consensus; forged, tampered, stale and unreachable ones are ignored.

mod common;

use axum::Router;
use axum::routing::get;
use common::*;
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::Role;
use polylith_protocol::weights::SignedWeights;
use polylith_validator::{PeerOutcome, Validator, check_peer_weights};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Serves `body` at GET /v1/weights on an already bound listener.
fn serve_json(listener: TcpListener, body: String) -> tokio::task::JoinHandle<()> {
    let app = Router::new().route("/v1/weights", get(move || async move { body }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

#[test]
fn peer_check_accepts_only_fresh_vectors_signed_by_the_registered_key() {
    let key = Hotkey::generate();
    let other = Hotkey::generate();
    let now = 1_000_000;
    let good = SignedWeights::sign(&key, 3, now - 10, vec![(1, 65_535)]);
    assert_eq!(
        check_peer_weights(&good, &key.public(), now, 60_000, None),
        PeerOutcome::Ok
    );
    assert_eq!(
        check_peer_weights(&good, &other.public(), now, 60_000, None),
        PeerOutcome::BadSignature,
        "valid signature by a key other than the one registered at the endpoint"
    );
    let mut tampered = good.clone();
    tampered.weights = vec![(2, 65_535)];
    assert_eq!(
        check_peer_weights(&tampered, &key.public(), now, 60_000, None),
        PeerOutcome::BadSignature
    );
    let old = SignedWeights::sign(&key, 3, now - 120_000, vec![(1, 65_535)]);
    assert_eq!(
        check_peer_weights(&old, &key.public(), now, 60_000, None),
        PeerOutcome::Stale
    );
    let future = SignedWeights::sign(&key, 3, now + 3_600_000, vec![(1, 65_535)]);
    assert_eq!(
        check_peer_weights(&future, &key.public(), now, 60_000, None),
        PeerOutcome::Stale
    );
    assert_eq!(
        check_peer_weights(&good, &key.public(), now, 60_000, Some(now)),
        PeerOutcome::Stale,
        "older than a vector already accepted (replay)"
    );
}

#[tokio::test]
async fn only_verified_peer_weights_enter_consensus() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb, kc, kd, ke) = (
        Hotkey::generate(),
        Hotkey::generate(),
        Hotkey::generate(),
        Hotkey::generate(),
        Hotkey::generate(),
    );
    let miner = fake_miner(Behaviour::Honest).await;
    let (la, lb, lc, ld, le) = (
        loopback().await,
        loopback().await,
        loopback().await,
        loopback().await,
        loopback().await,
    );
    let url = |l: &TcpListener| format!("http://{}", l.local_addr().unwrap());
    let dead = {
        let l = loopback().await;
        url(&l)
    };
    let kf = Hotkey::generate();
    let mg = dir.path().join("metagraph.toml");
    write_metagraph(
        &mg,
        vec![
            neuron(0, &ka, Role::Validator, STAKE, &url(&la)),
            neuron(1, &kb, Role::Validator, STAKE, &url(&lb)),
            neuron(2, &kc, Role::Validator, STAKE / 10, &url(&lc)),
            neuron(3, &kd, Role::Validator, STAKE / 10, &url(&ld)),
            neuron(4, &ke, Role::Validator, STAKE / 10, &url(&le)),
            neuron(5, &kf, Role::Validator, STAKE / 10, &dead),
            neuron(6, &miner.key, Role::Miner, 0, &miner.endpoint),
        ],
    );
    // C serves a vector signed by an impostor, D a tampered one, E a stale one.
    let impostor = Hotkey::generate();
    serve_json(
        lc,
        serde_json::to_string(&SignedWeights::sign(
            &impostor,
            1,
            now_ms(),
            vec![(6, 65_535)],
        ))
        .unwrap(),
    );
    let mut tampered = SignedWeights::sign(&kd, 1, now_ms(), vec![(6, 100)]);
    tampered.weights = vec![(6, 65_535)];
    serve_json(ld, serde_json::to_string(&tampered).unwrap());
    serve_json(
        le,
        serde_json::to_string(&SignedWeights::sign(
            &ke,
            1,
            now_ms() - 3_600_000,
            vec![(6, 65_535)],
        ))
        .unwrap(),
    );

    let a = Validator::new(test_config(dir.path(), mg.clone(), "a"), ka).unwrap();
    let b = Validator::new(test_config(dir.path(), mg, "b"), kb).unwrap();
    let ra = a.router();
    tokio::spawn(async move {
        let _ = axum::serve(la, ra).await;
    });
    let rb = b.router();
    tokio::spawn(async move {
        let _ = axum::serve(lb, rb).await;
    });

    let first = a.run_round().await;
    // B has not run yet: its endpoint answers 503, which counts as unreachable.
    assert!(first.peers_used.is_empty(), "{:?}", first.peers_used);
    let second = b.run_round().await;
    assert_eq!(second.peers_used, vec![0], "only A's vector is valid");
    let text = b.metrics().render();
    for (uid, outcome) in [
        (0, "ok"),
        (2, "bad_signature"),
        (3, "bad_signature"),
        (4, "stale"),
        (5, "unreachable"),
    ] {
        let line = format!(
            r#"polylith_validator_peer_weights_received_total{{outcome="{outcome}",peer_uid="{uid}"}} 1"#
        );
        assert!(text.contains(&line), "missing {line}\n{text}");
    }
    assert!(text.contains("polylith_validator_peers_with_weights 1"));
    // A and B hold most of the stake (the others a tenth each, so consensus is reached
    // without them): the only weighted miner gets all the incentive, and A and B, whose
    // weights entered the epoch, share the dividends.
    let s = b.snapshot();
    assert!(s.incentive[6] > 0.99, "{:?}", s.incentive);
    assert!(
        s.dividends[0] > 0.0 && s.dividends[1] > 0.0,
        "{:?}",
        s.dividends
    );
    assert_eq!(s.dividends[2], 0.0);
    let third = a.run_round().await;
    assert_eq!(third.peers_used, vec![1], "A now sees B's vector");
}
