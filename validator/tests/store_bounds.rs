//! Bounds on the validator's database: across 10,000 rounds written with the default
//! `keep_rounds`, exactly the newest `keep_rounds` round records, messages and commitment
//! openings remain, and the file stops growing once pruning has started. The store is driven
//! directly (one `commit_round_with` per round, as `Validator::persist` calls it) so the test
//! runs in seconds rather than the hours real rounds would take.
//!
//! `peak_rss_with_256_miners_and_kept_rounds` (ignored; run by hand, see docs/perf.md) writes
//! realistic rounds of 256 miners and prints the process's peak RSS and the database size.

use polylith_protocol::task::TaskKind;
use polylith_protocol::weights::{Reveal, WeightsMessage};
use polylith_validator::store::{RoundWeights, Store};
use polylith_validator::{PersistedState, QueryOutcome, RoundRecord, ValidatorConfig};

/// A round of `miners` GEMM queries, with the per-uid vectors a real round stores.
fn round(round: u64, miners: u16) -> (PersistedState, RoundRecord, RoundWeights) {
    let uids = usize::from(miners);
    let outcomes = (0..miners)
        .map(|uid| QueryOutcome {
            uid,
            hotkey: format!("5Miner{uid:0>42}"),
            task: TaskKind::Gemm,
            failure: None,
            throughput: Some(1.0e9 + f64::from(uid)),
            latency_s: Some(0.25),
            work: 2.0e8,
            tokens_checked: 0,
            tokens_passed: 0,
            fingerprint: Some(format!("{:0>64x}", round ^ u64::from(uid))),
            score: 0.5,
        })
        .collect();
    let weights: Vec<(u16, u16)> = (0..miners).map(|u| (u, 1 + u)).collect();
    let mut state = PersistedState {
        round,
        ..PersistedState::default()
    };
    for uid in 0..miners {
        state.ema.insert(format!("5Miner{uid:0>42}"), 0.5);
    }
    state.incentive = vec![1.0 / f64::from(miners.max(1)); uids];
    let record = RoundRecord {
        round,
        started_ms: round,
        finished_ms: round,
        outcomes,
        weights: weights.clone(),
        incentive: vec![1.0 / f64::from(miners.max(1)); uids],
        dividends: vec![0.0; uids],
        peers_used: Vec::new(),
        persisted: true,
    };
    let commit = Reveal {
        round,
        weights,
        salt: format!("{round:0>64x}"),
        proofs: Vec::new(),
    };
    let message = WeightsMessage {
        version: 2,
        validator: "5Validator".to_string(),
        round,
        timestamp_ms: round,
        commitment: format!("{round:0>64x}"),
        reveal: None,
        seen: Vec::new(),
        signature: String::new(),
    };
    let extras = RoundWeights {
        message,
        commit,
        evidence: Vec::new(),
    };
    (state, record, extras)
}

#[test]
fn ten_thousand_rounds_keep_exactly_keep_rounds_and_stop_growing() {
    let keep = ValidatorConfig::default().keep_rounds;
    assert!(keep < 5_000, "the test needs several prune cycles");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    // Rounds of 8 miners keep the 10,000 writes quick; what is pruned does not depend on
    // the size of a round.
    let last = 10_000u64;
    let mut size_at_steady = 0u64;
    let mut max_after = 0u64;
    for r in 1..=last {
        let (state, record, extras) = round(r, 8);
        store
            .commit_round_with(&state, &record, Some(&extras), keep)
            .unwrap();
        if r == 2 * keep {
            size_at_steady = store.size_on_disk().unwrap();
        } else if r > 2 * keep {
            max_after = max_after.max(store.size_on_disk().unwrap());
        }
    }
    eprintln!(
        "database: {size_at_steady} bytes at round {}, at most {max_after} bytes after it",
        2 * keep
    );
    let rounds = store.rounds().unwrap();
    let want: Vec<u64> = (last - keep + 1..=last).collect();
    assert_eq!(rounds.len(), want.len(), "round records kept");
    assert_eq!(rounds, want);
    for r in [1, last - keep - 1, last - keep] {
        assert!(store.message(r).unwrap().is_none(), "message {r} pruned");
        assert!(store.commit(r).unwrap().is_none(), "commitment {r} pruned");
        assert!(
            store.round_record(r).unwrap().is_none(),
            "record {r} pruned"
        );
    }
    for r in [last - keep + 1, last] {
        assert!(store.message(r).unwrap().is_some(), "message {r} kept");
        assert!(store.commit(r).unwrap().is_some(), "commitment {r} kept");
    }
    assert_eq!(store.load().unwrap().map(|s| s.round), Some(last));
    // Without pruning the file would grow five-fold between round 2000 and 10,000; with it,
    // sled's log may fluctuate but stays within a small factor of its size at round 2000.
    assert!(size_at_steady > 0);
    assert!(
        max_after <= 3 * size_at_steady,
        "database grew from {size_at_steady} bytes at round {} to {max_after} bytes by round {last}",
        2 * keep
    );
}

fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Not part of the suite (slow, and a measurement rather than a check of behaviour):
/// `cargo test --release -p polylith-validator --test store_bounds -- --ignored --nocapture`.
#[test]
#[ignore]
fn peak_rss_with_256_miners_and_kept_rounds() {
    let keep = ValidatorConfig::default().keep_rounds;
    let rounds: u64 = std::env::var("POLYLITH_RSS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(keep + 200);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let before = peak_rss_kib().unwrap_or(0);
    for r in 1..=rounds {
        let (state, record, extras) = round(r, 256);
        store
            .commit_round_with(&state, &record, Some(&extras), keep)
            .unwrap();
    }
    let record_bytes = serde_json::to_vec(&round(1, 256).1).unwrap().len();
    let mut files: Vec<(String, u64)> = Vec::new();
    let mut stack = vec![dir.path().join("db")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir.path())
                    .unwrap()
                    .display()
                    .to_string();
                files.push((rel, meta.len()));
            }
        }
    }
    let blobs: u64 = files
        .iter()
        .filter(|(p, _)| p.contains("blobs"))
        .map(|(_, l)| *l)
        .sum();
    let total: u64 = files.iter().map(|(_, l)| *l).sum();
    println!(
        "files {}: {total} bytes, of which blobs {blobs}",
        files.len()
    );
    println!(
        "rounds {rounds}, keep_rounds {keep}, 256 miners: record {record_bytes} bytes, \
         database {} bytes, kept records {}, peak RSS {} KiB (before writing: {before} KiB)",
        store.size_on_disk().unwrap(),
        store.rounds().unwrap().len(),
        peak_rss_kib().unwrap_or(0),
    );
}
