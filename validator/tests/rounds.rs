//! Rounds against fake miners: honest miners are verified and weighted, every way of cheating
//! scores 0 with its reason, and the published weights and rewards follow.

mod common;

use common::*;
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::Role;
use polylith_validator::{FailureReason, QueryOutcome, RoundRecord, Validator};

/// One validator (uid 0) and the given miners (uids 1..), one round.
async fn one_round(
    behaviours: &[Behaviour],
) -> (Validator, RoundRecord, Vec<FakeMiner>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let vkey = Hotkey::generate();
    let mut miners = Vec::new();
    for b in behaviours {
        miners.push(fake_miner(*b).await);
    }
    let mut neurons = vec![neuron(
        0,
        &vkey,
        Role::Validator,
        STAKE,
        "http://127.0.0.1:9",
    )];
    for (i, m) in miners.iter().enumerate() {
        neurons.push(neuron(i as u16 + 1, &m.key, Role::Miner, 0, &m.endpoint));
    }
    let mg = dir.path().join("metagraph.toml");
    write_metagraph(&mg, neurons);
    let v = Validator::new(test_config(dir.path(), mg, "db"), vkey).unwrap();
    let record = v.run_round().await;
    (v, record, miners, dir)
}

fn outcome(r: &RoundRecord, uid: u16) -> &QueryOutcome {
    r.outcomes.iter().find(|o| o.uid == uid).unwrap()
}

fn reason(r: &RoundRecord, uid: u16) -> Option<FailureReason> {
    outcome(r, uid).failure.as_ref().map(|f| f.reason)
}

#[tokio::test]
async fn honest_miner_is_verified_weighted_and_rewarded() {
    let (v, r, _m, _d) = one_round(&[Behaviour::Honest]).await;
    let o = outcome(&r, 1);
    assert!(o.verified(), "{:?}", o.failure);
    assert!(o.throughput.unwrap() > 0.0);
    assert_eq!(o.score, 1.0);
    assert_eq!(r.weights, vec![(1, 65_535)]);
    assert!(r.persisted);
    let s = v.snapshot();
    assert_eq!(s.round, 1);
    let m = &s.miners[0];
    assert_eq!((m.verified, m.failed), (1, 0));
    assert_eq!(m.ema, 0.5, "first verified round with alpha 0.5 from 0");
    assert_eq!(m.weight_u16, 65_535);
    assert!(m.median_gflops.unwrap() > 0.0);
    // Weights are revealed two rounds after they are committed and enter the epoch two
    // rounds after that (commit-reveal, docs/protocol.md §4.1): rewards from round 5 on.
    assert_eq!(m.reward_share, 0.0, "nothing revealed in round 1");
    for _ in 0..4 {
        v.run_round().await;
    }
    let s = v.snapshot();
    let m = &s.miners[0];
    assert!(
        m.reward_share > 0.99,
        "the only weighted miner gets the incentive: {}",
        m.reward_share
    );
    assert!(
        s.dividends[0] > 0.99,
        "the only validator gets the dividends: {:?}",
        s.dividends
    );
    let published = v.published_weights().unwrap();
    assert_eq!(published.verify().unwrap(), v.public_key());
    assert_eq!(published.round, 5);
}

#[tokio::test]
async fn every_cheat_scores_zero_with_its_reason() {
    let cases = [
        Behaviour::Honest,
        Behaviour::TamperRow,
        Behaviour::TamperPath,
        Behaviour::ForgetCommitment,
        Behaviour::BadReceiptSignature,
        Behaviour::NoReceipt,
        Behaviour::WrongRowCount,
    ];
    let (v, r, _m, _d) = one_round(&cases).await;
    assert_eq!(reason(&r, 1), None);
    assert_eq!(reason(&r, 2), Some(FailureReason::WrongRow));
    assert_eq!(reason(&r, 3), Some(FailureReason::BadPath));
    assert_eq!(reason(&r, 4), Some(FailureReason::UnknownCommitment));
    assert_eq!(reason(&r, 5), Some(FailureReason::BadReceipt));
    assert_eq!(reason(&r, 6), Some(FailureReason::BadReceipt));
    assert_eq!(reason(&r, 7), Some(FailureReason::WrongRowCount));
    for uid in 2..=7 {
        assert_eq!(outcome(&r, uid).score, 0.0, "uid {uid}");
    }
    assert_eq!(
        r.weights,
        vec![(1, 65_535)],
        "only the honest miner is weighted"
    );
    let s = v.snapshot();
    for m in s.miners.iter().filter(|m| m.uid >= 2) {
        assert_eq!(
            (m.verified, m.failed, m.ema, m.weight_u16),
            (0, 1, 0.0, 0),
            "{m:?}"
        );
        assert!(m.last_failure.is_some());
        assert_eq!(m.reward_share, 0.0);
    }
    let metrics = v.metrics().render();
    assert!(
        metrics.contains(
            r#"polylith_validator_verification_failures_total{reason="wrong_row",task="gemm"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"polylith_validator_queries_total{miner_uid="1",outcome="verified",task="gemm"} 1"#
    ));
}

#[tokio::test]
async fn slow_and_unreachable_miners_fail_with_timeout_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let vkey = Hotkey::generate();
    let slow = fake_miner(Behaviour::Slow(3_000)).await;
    let dead_key = Hotkey::generate();
    // A port nothing listens on: bind, read the port, close.
    let dead = {
        let l = loopback().await;
        format!("http://{}", l.local_addr().unwrap())
    };
    let mg = dir.path().join("metagraph.toml");
    write_metagraph(
        &mg,
        vec![
            neuron(0, &vkey, Role::Validator, STAKE, "http://127.0.0.1:9"),
            neuron(1, &slow.key, Role::Miner, 0, &slow.endpoint),
            neuron(2, &dead_key, Role::Miner, 0, &dead),
        ],
    );
    let mut config = test_config(dir.path(), mg, "db");
    config.query_timeout_ms = 300;
    let v = Validator::new(config, vkey).unwrap();
    let r = v.run_round().await;
    assert_eq!(reason(&r, 1), Some(FailureReason::Timeout));
    assert_eq!(reason(&r, 2), Some(FailureReason::Unreachable));
    assert!(r.weights.is_empty());
    let metrics = v.metrics().render();
    assert!(
        metrics.contains(
            r#"polylith_validator_queries_total{miner_uid="1",outcome="timeout",task="gemm"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"polylith_validator_queries_total{miner_uid="2",outcome="error",task="gemm"} 1"#
    ));
}

#[tokio::test]
async fn replayed_commitment_fails_from_the_second_task_on() {
    let (v, r1, _m, _d) = one_round(&[Behaviour::Replay]).await;
    assert!(
        outcome(&r1, 1).verified(),
        "the first task is answered honestly"
    );
    let r2 = v.run_round().await;
    let why = reason(&r2, 1);
    assert!(
        matches!(
            why,
            Some(
                FailureReason::WrongRow
                    | FailureReason::BadPath
                    | FailureReason::WrongRowCount
                    | FailureReason::RowOutOfRange
            )
        ),
        "replay must fail verification, got {why:?}"
    );
    let m = &v.snapshot().miners[0];
    assert_eq!((m.verified, m.failed), (1, 1));
    assert_eq!(
        m.ema, 0.0,
        "evidence of cheating resets the EMA (a plain failure would only halve it)"
    );
    assert!(
        v.metrics()
            .render()
            .contains(r#"polylith_validator_miner_throughput_flops{miner_uid="1"}"#),
        "the last verified throughput stays visible after a failure"
    );
}

#[tokio::test]
async fn faster_miner_gets_more_weight_and_failure_pulls_ema_down() {
    let (v, r, _m, _d) = one_round(&[Behaviour::Honest, Behaviour::Slow(200)]).await;
    let fast = outcome(&r, 1);
    let slow = outcome(&r, 2);
    assert!(fast.verified() && slow.verified());
    assert!(fast.score > slow.score, "{} vs {}", fast.score, slow.score);
    let w: std::collections::BTreeMap<u16, u16> = r.weights.iter().copied().collect();
    assert_eq!(w[&1], 65_535);
    assert!(w[&2] < 65_535);
    // Rewards follow once round 1's weights are revealed and enter the epoch (round 5).
    for _ in 0..4 {
        v.run_round().await;
    }
    let s = v.snapshot();
    assert!(s.miners[0].reward_share > s.miners[1].reward_share);
}
