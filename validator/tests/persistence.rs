//! Persistence: a restarted validator resumes its round counter, EMA, weights and bonds; a
//! writer killed with SIGKILL mid-stream leaves a consistent database; a full disk turns
//! writes into errors without losing what was acknowledged.

mod common;

use common::*;
use polylith_protocol::keys::Hotkey;
use polylith_protocol::metagraph::Role;
use polylith_validator::store::Store;
use polylith_validator::{PersistedState, RoundRecord, Validator};
use std::time::Duration;

#[tokio::test]
async fn restart_resumes_round_ema_weights_and_bonds() {
    let dir = tempfile::tempdir().unwrap();
    let vkey = Hotkey::generate();
    let miner = fake_miner(Behaviour::Honest).await;
    let mg = dir.path().join("metagraph.toml");
    write_metagraph(
        &mg,
        vec![
            neuron(0, &vkey, Role::Validator, STAKE, "http://127.0.0.1:9"),
            neuron(1, &miner.key, Role::Miner, 0, &miner.endpoint),
        ],
    );
    let config = test_config(dir.path(), mg, "db");
    let served = {
        let v = Validator::new(config.clone(), vkey.clone()).unwrap();
        v.run_round().await;
        v.run_round().await;
        assert_eq!(v.snapshot().miners[0].ema, 0.75);
        v.published_message().unwrap()
    };
    let v = Validator::new(config, vkey).unwrap();
    let s = v.snapshot();
    assert_eq!(s.round, 2, "round counter resumed");
    assert_eq!(s.miners[0].ema, 0.75, "EMA resumed");
    assert_eq!(s.miners[0].verified, 2, "counters resumed");
    assert_eq!(
        v.published_weights().unwrap().round,
        2,
        "this round's weights resumed"
    );
    assert_eq!(
        v.published_message(),
        Some(served),
        "a restart serves exactly the message last published"
    );
    let r3 = v.run_round().await;
    assert_eq!(r3.round, 3);
    assert_eq!(
        v.snapshot().miners[0].ema,
        0.875,
        "EMA continues from the stored value"
    );
    assert_eq!(v.store().rounds().unwrap(), vec![1, 2, 3]);
    // Round 5 is the first epoch with revealed weights (round 1's, committed before the
    // restart and opened from the database after it).
    v.run_round().await;
    v.run_round().await;
    let stored = v.store().load().unwrap().unwrap();
    let bonds = &stored.yuma.as_ref().expect("bonds stored").bonds;
    assert!(
        bonds[0].iter().any(|(j, b)| *j == 1 && *b > 0),
        "validator holds a bond on the miner: {bonds:?}"
    );
}

#[tokio::test]
async fn an_unopenable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let vkey = Hotkey::generate();
    let mg = dir.path().join("metagraph.toml");
    write_metagraph(
        &mg,
        vec![neuron(
            0,
            &vkey,
            Role::Validator,
            STAKE,
            "http://127.0.0.1:9",
        )],
    );
    // A regular file where the data directory should be.
    let blocker = dir.path().join("db");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let e = Validator::new(test_config(dir.path(), mg, "db"), vkey)
        .err()
        .expect("must fail");
    let text = e.to_string();
    assert!(text.contains(&blocker.display().to_string()), "{text}");
}

const CHILD_ENV: &str = "POLYLITH_VALIDATOR_CRASH_CHILD_DIR";

fn state_for(round: u64) -> PersistedState {
    let mut s = PersistedState {
        round,
        ..PersistedState::default()
    };
    // Several keys whose values all derive from the round, so a mix of two rounds shows.
    for i in 0..50 {
        s.ema
            .insert(format!("miner{i}"), (round % 1000) as f64 / 1000.0);
    }
    s.incentive = vec![round as f64; 64];
    s
}

fn record_for(round: u64) -> RoundRecord {
    RoundRecord {
        round,
        started_ms: round,
        finished_ms: round,
        outcomes: Vec::new(),
        weights: vec![(1, (round % 65_536) as u16)],
        incentive: vec![round as f64; 64],
        dividends: Vec::new(),
        peers_used: Vec::new(),
        persisted: true,
    }
}

/// Not a test on its own: the child process of `sigkill_mid_write_leaves_a_consistent_database`.
#[test]
#[ignore]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    let start = store.load().unwrap().map_or(0, |s| s.round);
    for round in start + 1.. {
        store
            .commit_round(&state_for(round), &record_for(round), 20)
            .unwrap();
    }
}

#[test]
fn sigkill_mid_write_leaves_a_consistent_database() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_round = 0;
    for attempt in 0..3 {
        let mut child = std::process::Command::new(&exe)
            .args(["--ignored", "--exact", "crash_child_writer", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let it write a while, then kill it without warning.
        std::thread::sleep(Duration::from_millis(700 + 300 * attempt));
        child.kill().unwrap();
        child.wait().unwrap();

        let store = Store::open(dir.path()).unwrap();
        let state = store.load().unwrap().expect("some round was written");
        assert!(
            state.round > last_round,
            "attempt {attempt}: no progress past round {last_round}"
        );
        assert_eq!(
            state,
            state_for(state.round),
            "state is exactly one round's value"
        );
        let rounds = store.rounds().unwrap();
        assert_eq!(
            rounds.last(),
            Some(&state.round),
            "the newest record is the state's round"
        );
        assert!(rounds.len() <= 20, "pruning kept at most 20 records");
        assert_eq!(
            store.round_record(state.round).unwrap(),
            Some(record_for(state.round))
        );
        last_round = state.round;
    }
}

const FULL_DISK_ENV: &str = "POLYLITH_TEST_FULL_DISK_DIR";

/// Not a test on its own: the child process of `a_full_disk_fails_writes_cleanly_and_loses_nothing`.
/// Writes rounds under a file-size limit (a full disk as sled sees it: EFBIG on growth), keeps
/// going after the first failure like the daemon does, and reports what it saw on stdout.
#[cfg(target_os = "linux")]
#[test]
#[ignore]
fn full_disk_child_writer() {
    let Ok(dir) = std::env::var(FULL_DISK_ENV) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    let start = store.load().unwrap().map_or(0, |s| s.round);
    let size: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    // SAFETY: plain libc calls on this process's own signal disposition and limits.
    unsafe {
        // Exceeding the limit raises SIGXFSZ, which would kill the process; a full disk
        // returns an error instead, and that is what is simulated.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: size + 256 * 1024,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let mut last_ok = start;
    let mut errors = 0u32;
    for round in start + 1..start + 2_000 {
        match store.commit_round(&state_for(round), &record_for(round), 1_000) {
            Ok(()) if errors == 0 => last_ok = round,
            Ok(()) => {}
            Err(e) => {
                if errors == 0 {
                    println!("FIRST_ERROR {round} {e}");
                }
                errors += 1;
                if errors >= 20 {
                    break;
                }
            }
        }
    }
    println!("LAST_OK {last_ok} ERRORS {errors}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_writes_cleanly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A few rounds on a healthy disk first.
    {
        let store = Store::open(dir.path()).unwrap();
        for round in 1..=5 {
            store
                .commit_round(&state_for(round), &record_for(round), 1_000)
                .unwrap();
        }
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(&exe)
        .args([
            "--ignored",
            "--exact",
            "full_disk_child_writer",
            "--nocapture",
        ])
        .env(FULL_DISK_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the writer must get errors, not crash or panic: {stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("FIRST_ERROR"),
        "the limit was reached: {stdout}"
    );
    let last_ok: u64 = stdout
        .split("LAST_OK ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no LAST_OK line: {stdout}"));
    assert!(last_ok >= 5, "{stdout}");

    // Space is back: the database opens, holds one complete round at least as new as the
    // last acknowledged one, and takes new rounds again.
    let store = Store::open(dir.path()).unwrap();
    let state = store.load().unwrap().expect("state survives");
    assert!(
        state.round >= last_ok,
        "acknowledged round {last_ok} lost: {}",
        state.round
    );
    assert_eq!(
        state,
        state_for(state.round),
        "state is exactly one round's value"
    );
    assert_eq!(
        store.round_record(last_ok).unwrap(),
        Some(record_for(last_ok)),
        "the last acknowledged record is intact"
    );
    let next = state.round + 1;
    store
        .commit_round(&state_for(next), &record_for(next), 1_000)
        .unwrap();
    assert_eq!(store.load().unwrap().map(|s| s.round), Some(next));
}

const KILL9_ENV: &str = "POLYLITH_TEST_KILL9_DIR";

/// Not a test on its own: the child process of `kill9_loop_never_serves_two_messages_for_one_round`.
/// Serves a validator (fast rounds, one fake miner) and writes its API port to `DIR/port`.
#[test]
#[ignore]
fn kill9_child_validator() {
    let Ok(dir) = std::env::var(KILL9_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let seed: [u8; 32] = std::fs::read(dir.join("seed")).unwrap().try_into().unwrap();
        let vkey = Hotkey::from_seed(&seed).unwrap();
        let miner = fake_miner(Behaviour::Honest).await;
        let listener = loopback().await;
        let port = listener.local_addr().unwrap().port();
        let mg = dir.join("metagraph.toml");
        write_metagraph(
            &mg,
            vec![
                neuron(
                    0,
                    &vkey,
                    Role::Validator,
                    STAKE,
                    &format!("http://127.0.0.1:{port}"),
                ),
                neuron(1, &miner.key, Role::Miner, 0, &miner.endpoint),
            ],
        );
        let mut config = test_config(&dir, mg, "db");
        config.round_interval_ms = 20;
        let v = Validator::new(config, vkey).unwrap();
        let tmp = dir.join("port.tmp");
        std::fs::write(&tmp, port.to_string()).unwrap();
        std::fs::rename(&tmp, dir.join("port")).unwrap();
        let metrics = loopback().await;
        v.serve(listener, metrics, std::future::pending())
            .await
            .unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loop_never_serves_two_messages_for_one_round() {
    use polylith_protocol::weights::WeightsMessage;
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seed"), rand::random::<[u8; 32]>()).unwrap();
    let exe = std::env::current_exe().unwrap();
    // reqwest is built without a default TLS provider; the daemons install it at start.
    polylith_net::install_crypto_provider();
    let http = reqwest::Client::new();
    // Every message ever observed, by round: a second, different one is the bug.
    let mut observed: BTreeMap<u64, String> = BTreeMap::new();
    let mut last_round = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    for kill in 0..30u32 {
        assert!(std::time::Instant::now() < deadline, "kill loop too slow");
        let _ = std::fs::remove_file(dir.path().join("port"));
        let mut child = std::process::Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "kill9_child_validator",
                "--nocapture",
            ])
            .env(KILL9_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(dir.path().join("port")) {
                break p;
            }
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let url = format!("http://127.0.0.1:{port}/v1/weights");
        // Every third kill lands right after a new message is first seen; the others at a
        // random moment.
        let right_after_publish = kill % 3 == 0;
        let run_for = Duration::from_millis(50 + u64::from(rand::random::<u16>() % 400));
        let started = std::time::Instant::now();
        let mut first = true;
        loop {
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().is_success()
                && let Ok(m) = resp.json::<WeightsMessage>().await
            {
                let hash = hex::encode(m.hash());
                if first {
                    assert!(
                        m.round >= last_round,
                        "kill {kill}: restarted at round {} after serving round {last_round}",
                        m.round
                    );
                    first = false;
                }
                if let Some(h) = observed.get(&m.round) {
                    assert_eq!(h, &hash, "kill {kill}: two messages for round {}", m.round);
                }
                let new = m.round > last_round;
                observed.insert(m.round, hash);
                last_round = last_round.max(m.round);
                if new
                    && right_after_publish
                    && !observed.is_empty()
                    && started.elapsed() > Duration::from_millis(30)
                {
                    break;
                }
            }
            if started.elapsed() > run_for {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(
        last_round >= 5,
        "rounds progressed across kills: {last_round}"
    );
}
