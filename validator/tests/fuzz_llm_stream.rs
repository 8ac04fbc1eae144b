//! The `llm_stream` fuzz target on stable: its seeds (`fuzz/seeds/llm_stream/`), any input
//! a fuzz run once crashed on (`fuzz/regressions/llm_stream/`) and deterministic mutations
//! of the seeds go through the harness cargo-fuzz runs (`fuzz/harness/llm_stream.rs`).

#[path = "../../fuzz/harness/llm_stream.rs"]
mod llm_stream;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

fn inputs(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join("llm_stream");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("readable"),
            )
        })
        .collect();
    out.sort();
    out
}

fn run(what: &str, input: &[u8]) -> Option<usize> {
    match catch_unwind(AssertUnwindSafe(|| llm_stream::llm_stream(input))) {
        Ok(accepted) => accepted,
        Err(_) => panic!(
            "llm_stream panicked on {what} (input {:?})",
            String::from_utf8_lossy(input)
        ),
    }
}

#[test]
fn seeds_and_regressions_pass() {
    let seeds = inputs("seeds");
    assert!(!seeds.is_empty(), "no seeds in fuzz/seeds/llm_stream");
    for (name, bytes) in seeds.iter().chain(&inputs("regressions")) {
        let _ = run(name, bytes);
    }
}

#[test]
fn mutated_seeds_pass() {
    // xorshift64*, so the mutations are the same on every run.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as usize
    };
    let bytes_of_interest = b"\n\r:{}[]\",0-9e";
    for (name, seed) in inputs("seeds") {
        for i in 0..200 {
            let mut v = seed.clone();
            for _ in 0..1 + next(3) {
                let at = next(v.len() + 1);
                let b = bytes_of_interest[next(bytes_of_interest.len())];
                match next(4) {
                    0 if at < v.len() => v[at] = b,
                    1 => v.insert(at, b),
                    2 if at < v.len() => {
                        v.remove(at);
                    }
                    _ => v.truncate(at.max(v.len() / 2)),
                }
            }
            let _ = run(&format!("mutation {i} of {name}"), &v);
        }
    }
}

#[test]
fn the_seed_streams_reach_the_round_trip() {
    // Without this the harness could reject every seed early and fuzz nothing deep: the
    // three-token stream with its receipt is accepted, and so is the two-token one without.
    let seeds = inputs("seeds");
    let find = |suffix: &str| {
        let (name, bytes) = seeds
            .iter()
            .find(|(n, _)| n.ends_with(suffix))
            .unwrap_or_else(|| panic!("seed {suffix}"));
        run(name, bytes)
    };
    assert_eq!(find("/stream"), Some(3));
    assert_eq!(
        find("/no_receipt"),
        None,
        "[DONE] is an event when no receipt ends the read"
    );
}
