//! End-to-end: the real `polylith local` binary runs a subnet on loopback, and the
//! leaderboard shows honest miners earning and cheaters earning nothing.

use serde_json::Value;
use std::process::Command;

fn run_local(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_polylith"))
        .arg("local")
        .args(args)
        .arg("--json")
        .output()
        .expect("the polylith binary runs");
    assert!(
        out.status.success(),
        "polylith local failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn miners_by<'a>(report: &'a Value, behaviour: &str) -> Vec<&'a Value> {
    report["miners"]
        .as_array()
        .expect("miners array")
        .iter()
        .filter(|m| m["behaviour"] == behaviour)
        .collect()
}

#[test]
fn honest_miners_earn_and_cheaters_earn_nothing() {
    // Weights are revealed two rounds after the commitment and used two rounds later, so the
    // epoch of round 8 pays for round 4's weights (after the replay miner was caught in
    // round 2). Validator uid 2 copies without querying.
    let report = run_local(&[
        "--rounds",
        "8",
        "--validators",
        "3",
        "--validator-behaviours",
        "honest,honest,copier",
    ]);
    assert_eq!(report["rounds"], 8, "eight rounds completed: {report:#}");
    assert_eq!(report["validators"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        report["validators"][2]["dividend_share"].as_f64(),
        Some(0.0),
        "a copier without work proofs earns nothing: {report:#}"
    );

    let honest = miners_by(&report, "honest");
    assert_eq!(honest.len(), 2);
    for m in &honest {
        assert!(
            m["weight_u16"].as_u64().unwrap() > 0,
            "honest has weight: {m:#}"
        );
        assert!(
            m["reward_share"].as_f64().unwrap() > 0.0,
            "honest earns: {m:#}"
        );
        assert_eq!(m["failed"], 0, "honest never fails: {m:#}");
        for key in ["uid", "hotkey", "verified", "gflops_median", "score"] {
            assert!(!m[key].is_null(), "field {key} present: {m:#}");
        }
    }
    for cheat in ["lazy", "random", "replay", "wrong-model", "perturbed"] {
        for m in miners_by(&report, cheat) {
            assert_eq!(m["weight_u16"], 0, "{cheat} has no weight: {m:#}");
            assert!(
                m["reward_share"].as_f64().unwrap() < 0.01,
                "{cheat} earns < 1%: {m:#}"
            );
            assert!(m["reason"].is_string(), "{cheat} has a reason: {m:#}");
        }
    }
    let slow = miners_by(&report, "slow");
    assert_eq!(slow.len(), 1);
    let slowest_honest = honest
        .iter()
        .map(|m| m["score"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(
        slow[0]["score"].as_f64().unwrap() < slowest_honest,
        "slow scores below honest: {report:#}"
    );
    let dividends: f64 = report["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["dividend_share"].as_f64().unwrap())
        .sum();
    assert!(
        dividends > 0.0 && dividends <= 1.0 + 1e-9,
        "dividends paid: {report:#}"
    );
}

/// The LLM task alone: every model-level cheat is caught on every query and earns nothing,
/// and an honest CPU miner passes (at least) 99% of its tokens.
#[test]
fn llm_task_pays_honest_miners_only() {
    let report = run_local(&[
        "--task",
        "llm",
        "--rounds",
        "5",
        "--miners",
        "honest,honest,wrong-model,perturbed,truncated,quantized,random-tokens",
    ]);
    assert_eq!(report["rounds"], 5, "{report:#}");
    let honest = miners_by(&report, "honest");
    assert_eq!(honest.len(), 2);
    for m in &honest {
        assert!(
            m["weight_u16"].as_u64().unwrap() > 0,
            "honest has weight: {m:#}"
        );
        assert!(
            m["reward_share"].as_f64().unwrap() > 0.0,
            "honest earns: {m:#}"
        );
        let checked = m["tokens_checked"].as_u64().unwrap();
        let passed = m["tokens_passed"].as_u64().unwrap();
        assert!(checked > 0, "tokens were checked: {m:#}");
        assert!(
            passed as f64 >= 0.99 * checked as f64,
            "honest passes >= 99% of its tokens: {m:#}"
        );
        assert!(m["tokens_per_s_median"].as_f64().unwrap() > 0.0, "{m:#}");
        assert!(m["gflops_median"].is_null(), "no GEMM task was run: {m:#}");
    }
    for cheat in [
        "wrong-model",
        "perturbed",
        "truncated",
        "quantized",
        "random-tokens",
    ] {
        let ms = miners_by(&report, cheat);
        assert_eq!(ms.len(), 1, "{cheat}");
        let m = ms[0];
        assert_eq!(m["weight_u16"], 0, "{cheat} has no weight: {m:#}");
        assert_eq!(m["verified"], 0, "{cheat} never passes: {m:#}");
        assert!(m["reward_share"].as_f64().unwrap() < 0.01, "{cheat}: {m:#}");
        assert!(m["reason"].is_string(), "{cheat} has a reason: {m:#}");
    }
}

#[test]
fn unknown_behaviour_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_polylith"))
        .args(["local", "--miners", "honest,sneaky", "--rounds", "1"])
        .output()
        .expect("the polylith binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sneaky"), "names the bad behaviour: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
}
