//! `polylith explain` against a local subnet (the localnet library, in this process): for an
//! honest and a cheating miner it reads every validator's signed `/v1/state` and revealed
//! weights, and names the cheater's failure reason and the advice for it.

use polylith_localnet::{LocalOptions, LocalSubnet, LocalTasks, parse_behaviours};
use polylith_validator::FailureReason;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn explain(metagraph: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_polylith"))
        .arg("explain")
        .arg("--metagraph")
        .arg(metagraph)
        .args(args)
        .output()
        .expect("the polylith binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn explain_async(metagraph: &Path, args: &[&str]) -> Output {
    let metagraph = metagraph.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        explain(&metagraph, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_names_the_cheaters_reason_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = LocalOptions::new(dir.path().to_path_buf());
    opts.validators = 2;
    opts.miners = parse_behaviours("honest,lazy").unwrap();
    opts.tasks = LocalTasks::Gemm;
    let mut subnet = LocalSubnet::start(&opts, false).await.unwrap();
    // Weights are revealed two rounds after they are committed and enter the epoch two
    // rounds later: six rounds show revealed weights and incentive.
    for _ in 0..6 {
        subnet.run_round().await;
    }
    let mg = dir.path().join("metagraph.toml");
    let miners = subnet.miner_nodes();
    let (honest, lazy) = (&miners[0], &miners[1]);

    // The cheater, by uid, as text: the reason, the last failure and the advice.
    let out = explain_async(&mg, &["--miner", &lazy.uid.to_string()]).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("most common reason: wrong_row"), "{t}");
    assert!(t.contains("last failure: wrong_row:"), "{t}");
    assert!(t.contains(FailureReason::WrongRow.advice()), "{t}");
    assert!(t.contains("state signed"), "{t}");
    assert_eq!(t.matches("validator uid ").count(), 2, "{t}");
    assert!(t.contains("weight: 0 of 65535 (revealed, round"), "{t}");

    // The same miner by SS58, as JSON.
    let out = explain_async(&mg, &["--miner", &lazy.hotkey, "--json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["miner"]["uid"], lazy.uid, "{j:#}");
    assert_eq!(j["answered"], 2, "{j:#}");
    assert_eq!(j["most_common_reason"], "wrong_row", "{j:#}");
    assert_eq!(j["advice"], FailureReason::WrongRow.advice(), "{j:#}");
    for v in j["validators"].as_array().unwrap() {
        assert_eq!(v["signed"], true, "{v:#}");
        assert!(v["error"].is_null(), "{v:#}");
        assert!(v["failed"].as_u64().unwrap() > 0, "{v:#}");
        assert_eq!(v["failures"]["wrong_row"], v["failed"], "{v:#}");
        assert_eq!(v["last_failure"]["reason"], "wrong_row", "{v:#}");
        assert_eq!(v["weight_u16"], 0, "{v:#}");
        assert_eq!(v["incentive"].as_f64(), Some(0.0), "{v:#}");
        assert!(v["ema"].is_null(), "the public state withholds it: {v:#}");
    }

    // The honest miner: verified everywhere, weighted, earning.
    let out = explain_async(&mg, &["--miner", &honest.uid.to_string(), "--json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["failed"], 0, "{j:#}");
    assert!(j["most_common_reason"].is_null(), "{j:#}");
    assert!(j["verdict"].as_str().unwrap().contains("verified"), "{j:#}");
    for v in j["validators"].as_array().unwrap() {
        assert_eq!(v["weight_u16"], 65535, "{v:#}");
        assert!(v["incentive"].as_f64().unwrap() > 0.5, "{v:#}");
        assert!(v["verified"].as_u64().unwrap() >= 6, "{v:#}");
    }

    // A validator that cannot be reached is reported, and the others still answer.
    let mut graph = polylith_protocol::metagraph::Metagraph::load(&mg).unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let extra = polylith_protocol::keys::Hotkey::generate();
    graph.neurons.push(polylith_protocol::metagraph::Neuron {
        uid: graph.neurons.len() as u16,
        hotkey: extra.public().to_ss58(),
        role: polylith_protocol::metagraph::Role::Validator,
        stake: 10,
        endpoint: format!("http://{dead_addr}"),
    });
    let mg2 = dir.path().join("with-dead-validator.toml");
    graph.save(&mg2).unwrap();
    let out = explain_async(&mg2, &["--miner", &lazy.uid.to_string()]).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("not read:"), "{t}");
    assert!(
        t.to_lowercase().contains("connect"),
        "the cause is named: {t}"
    );
    assert!(t.contains("2 of 3 validators answered"), "{t}");

    // A validator that is not a miner, and an unknown miner, are clear errors.
    let v0 = subnet.validator_nodes()[0].uid.to_string();
    let out = explain_async(&mg, &["--miner", &v0]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("is a validator"), "{}", text(&out));
    let out = explain_async(&mg, &["--miner", "999"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no neuron with uid 999"),
        "{}",
        text(&out)
    );

    // `polylith health` against the real daemons' /health.
    for node in subnet.validator_nodes().iter().chain(miners.iter()) {
        let url = format!("http://{}", node.api);
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_polylith"))
                .args(["health", "--url", &url])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "health of uid {}: {}",
            node.uid,
            text(&out)
        );
    }

    subnet.shutdown().await;
}

#[test]
fn chain_source_is_accepted_but_not_supported_yet() {
    let out = Command::new(env!("CARGO_BIN_EXE_polylith"))
        .args([
            "explain",
            "--chain",
            "ws://127.0.0.1:9944",
            "--netuid",
            "1",
            "--miner",
            "3",
        ])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("not supported until the chain client lands"),
        "{t}"
    );
    assert!(t.contains("--metagraph FILE"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}
