//! Peers' weights messages: only a message signed by the validator registered at that
//! endpoint, for the asked round, within the size cap enters the exchange; a validator that
//! signs two messages for one round is caught by both honest validators, left out of their
//! epochs, and the honest validators agree; a copier that queries nobody earns nothing.

mod common;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use common::*;
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::Role;
use polylith_protocol::weights::{Reveal, WeightsMessage};
use polylith_validator::{PeerOutcome, Validator, ValidatorBehaviour, check_peer_weights};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;

fn url(l: &TcpListener) -> String {
    format!("http://{}", l.local_addr().unwrap())
}

fn serve(listener: TcpListener, app: Router) {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

#[test]
fn peer_check_accepts_only_the_registered_key_and_the_asked_round() {
    let key = Hotkey::generate();
    let other = Hotkey::generate();
    let good = WeightsMessage::sign(&key, 3, 10, [1; 32], None, vec![]);
    assert_eq!(check_peer_weights(&good, &key.public(), 3), PeerOutcome::Ok);
    assert_eq!(
        check_peer_weights(&good, &other.public(), 3),
        PeerOutcome::BadSignature,
        "valid signature by a key other than the one registered at the endpoint"
    );
    assert_eq!(
        check_peer_weights(&good, &key.public(), 4),
        PeerOutcome::Stale,
        "an old message replayed as a newer round's"
    );
    let mut tampered = good.clone();
    tampered.commitment = hex::encode([2u8; 32]);
    assert_eq!(
        check_peer_weights(&tampered, &key.public(), 3),
        PeerOutcome::BadSignature
    );
}

/// The other persona of an equivocating validator: the same rounds, re-signed with
/// different weights (and so different commitments and reveals).
#[derive(Clone)]
struct Twin {
    key: Hotkey,
    real: Validator,
}

fn alter(r: &Reveal) -> Reveal {
    let mut x = r.clone();
    // Weight the miners the other way round.
    x.weights = r
        .weights
        .iter()
        .map(|(u, w)| (*u, 65_535 - *w + 1))
        .collect();
    x
}

async fn twin_round(State(t): State<Twin>, Path(round): Path<u64>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let store = t.real.store();
    let (Some(m), Some(c)) = (store.message(round).unwrap(), store.commit(round).unwrap()) else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let reveal = m.reveal.as_ref().map(alter);
    let alt = WeightsMessage::sign(
        &t.key,
        round,
        m.timestamp_ms,
        alter(&c).commitment(&m.validator),
        reveal,
        m.seen.clone(),
    );
    axum::Json(alt).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_equivocating_validator_is_caught_and_honest_validators_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb, kc) = (Hotkey::generate(), Hotkey::generate(), Hotkey::generate());
    let fast = fake_miner(Behaviour::Honest).await;
    let slow = fake_miner(Behaviour::Slow(30)).await;
    let (la, lb, lc, ltwin) = (
        loopback().await,
        loopback().await,
        loopback().await,
        loopback().await,
    );
    let (ua, ub, uc, utwin) = (url(&la), url(&lb), url(&lc), url(&ltwin));
    let graph = |c_endpoint: &str, name: &str| {
        let path = dir.path().join(name);
        write_metagraph(
            &path,
            vec![
                neuron(0, &ka, Role::Validator, STAKE, &ua),
                neuron(1, &kb, Role::Validator, STAKE, &ub),
                neuron(2, &kc, Role::Validator, STAKE, c_endpoint),
                neuron(3, &fast.key, Role::Miner, 0, &fast.endpoint),
                neuron(4, &slow.key, Role::Miner, 0, &slow.endpoint),
            ],
        );
        path
    };
    // A and C see C's real messages; B is shown the twin's.
    let (mg, mg_b) = (graph(&uc, "mg.toml"), graph(&utwin, "mg_b.toml"));
    let a = Validator::new(test_config(dir.path(), mg.clone(), "a"), ka).unwrap();
    let b = Validator::new(test_config(dir.path(), mg_b, "b"), kb).unwrap();
    let c = Validator::new(test_config(dir.path(), mg, "c"), kc.clone()).unwrap();
    serve(la, a.router());
    serve(lb, b.router());
    serve(lc, c.router());
    let twin = Router::new()
        .route("/v1/weights/{round}", get(twin_round))
        .with_state(Twin {
            key: kc.clone(),
            real: c.clone(),
        });
    serve(ltwin, twin);

    for _ in 0..8 {
        futures::future::join3(a.run_round(), b.run_round(), c.run_round()).await;
    }
    let c_ss58 = kc.public().to_ss58();
    for v in [&a, &b] {
        let ev = v.evidence();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].first.validator, c_ss58);
        assert_eq!(ev[0].verify().map(|(k, _)| k), Some(kc.public()));
    }
    let (sa, sb) = (a.snapshot(), b.snapshot());
    assert_eq!(sa.dividends[2], 0.0, "{:?}", sa.dividends);
    assert_eq!(sb.dividends[2], 0.0, "{:?}", sb.dividends);
    assert!(
        sa.dividends[0] > 0.0 && sa.dividends[1] > 0.0,
        "{:?}",
        sa.dividends
    );
    for (x, y) in sa
        .incentive
        .iter()
        .zip(&sb.incentive)
        .chain(sa.dividends.iter().zip(&sb.dividends))
    {
        assert!(
            (x - y).abs() < 1e-9,
            "A {:?} / {:?} vs B {:?} / {:?}",
            sa.incentive,
            sa.dividends,
            sb.incentive,
            sb.dividends
        );
    }
    assert!(sa.incentive[3] > sa.incentive[4], "{:?}", sa.incentive);
    let text = a.metrics().render();
    assert!(text.contains("polylith_validator_equivocators 1"), "{text}");
    assert!(text.contains(r#"polylith_validator_reveals_total{outcome="equivocation"}"#));
    // The evidence is public.
    let body = reqwest::get(format!("{ua}/v1/evidence"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains(&c_ss58));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copier_that_queries_nobody_earns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb, kc) = (Hotkey::generate(), Hotkey::generate(), Hotkey::generate());
    let m1 = fake_miner(Behaviour::Honest).await;
    let m2 = fake_miner(Behaviour::Slow(30)).await;
    let (la, lb, lc) = (loopback().await, loopback().await, loopback().await);
    let mg = dir.path().join("mg.toml");
    write_metagraph(
        &mg,
        vec![
            neuron(0, &ka, Role::Validator, STAKE, &url(&la)),
            neuron(1, &kb, Role::Validator, STAKE, &url(&lb)),
            neuron(2, &kc, Role::Validator, STAKE, &url(&lc)),
            neuron(3, &m1.key, Role::Miner, 0, &m1.endpoint),
            neuron(4, &m2.key, Role::Miner, 0, &m2.endpoint),
        ],
    );
    let a = Validator::new(test_config(dir.path(), mg.clone(), "a"), ka).unwrap();
    let b = Validator::new(test_config(dir.path(), mg.clone(), "b"), kb).unwrap();
    let mut cc = test_config(dir.path(), mg, "c");
    cc.behaviour = ValidatorBehaviour::Copier;
    let c = Validator::new(cc, kc).unwrap();
    serve(la, a.router());
    serve(lb, b.router());
    serve(lc, c.router());
    for _ in 0..9 {
        futures::future::join3(a.run_round(), b.run_round(), c.run_round()).await;
    }
    let s = a.snapshot();
    assert_eq!(s.dividends[2], 0.0, "{:?}", s.dividends);
    assert!(
        s.dividends[0] > 0.3 && s.dividends[1] > 0.3,
        "{:?}",
        s.dividends
    );
    assert_eq!(s.peers_used, vec![1]);
    // The copier did publish weights (copied), but without work proofs.
    let last = c.published_message().unwrap();
    let reveal = last.reveal.expect("revealed by now");
    assert!(
        !reveal.weights.is_empty() && reveal.proofs.is_empty(),
        "{reveal:?}"
    );
    let text = a.metrics().render();
    assert!(
        text.contains(r#"polylith_validator_reveals_total{outcome="missing_proof"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn oversized_and_unstaked_peers_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kd, ke) = (Hotkey::generate(), Hotkey::generate(), Hotkey::generate());
    let m = fake_miner(Behaviour::Honest).await;
    let (la, ld, le) = (loopback().await, loopback().await, loopback().await);
    let mg = dir.path().join("mg.toml");
    write_metagraph(
        &mg,
        vec![
            neuron(0, &ka, Role::Validator, STAKE, &url(&la)),
            neuron(1, &kd, Role::Validator, STAKE, &url(&ld)),
            neuron(2, &ke, Role::Validator, 5, &url(&le)),
            neuron(3, &m.key, Role::Miner, 0, &m.endpoint),
        ],
    );
    // D answers with 1 MiB (the cap for 4 uids is 72 KiB); E has too little stake.
    serve(
        ld,
        Router::new().route("/v1/weights/{round}", get(|| async { " ".repeat(1 << 20) })),
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    serve(
        le,
        Router::new().route(
            "/v1/weights/{round}",
            get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async { "{}" }
            }),
        ),
    );
    let mut config = test_config(dir.path(), mg, "a");
    config.min_peer_stake = 10;
    let a = Validator::new(config, ka).unwrap();
    a.run_round().await;
    a.run_round().await;
    let text = a.metrics().render();
    assert!(
        text.contains(
            r#"polylith_validator_peer_weights_received_total{outcome="too_large",peer_uid="1"} 1"#
        ),
        "{text}"
    );
    assert!(!text.contains(r#"peer_uid="2""#), "{text}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a peer below the minimum stake is never fetched"
    );
}
