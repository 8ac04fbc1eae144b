//! SIGINT mid-round to the real `polylith validator`: the round in progress finishes within
//! the grace period and is persisted before the process exits (docs/deploy.md: compose stops
//! containers with SIGINT and gives them 30 s).

#![cfg(unix)]

use polylith_protocol::keys::Keystore;
use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use polylith_validator::store::Store;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A "miner" that accepts connections and never answers: every query of a round runs to the
/// validator's query deadline, so the round is reliably in progress for that long.
fn hanging_miner() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let held = Arc::new(Mutex::new(Vec::new()));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.lock().unwrap().push(s);
        }
    });
    (port, accepted)
}

#[test]
fn sigint_mid_round_finishes_and_persists_the_round() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let store = Keystore::new(&keys);
    let vkey = store.create("v").unwrap();
    let mkey = store.create("m").unwrap();
    let (miner_port, accepted) = hanging_miner();
    let api = free_port();
    let metrics = free_port();
    let mg = Metagraph {
        netuid: 1,
        neurons: vec![
            Neuron {
                uid: 0,
                hotkey: vkey.public().to_ss58(),
                role: Role::Validator,
                stake: 1_000,
                endpoint: format!("http://127.0.0.1:{api}"),
            },
            Neuron {
                uid: 1,
                hotkey: mkey.public().to_ss58(),
                role: Role::Miner,
                stake: 0,
                endpoint: format!("http://127.0.0.1:{miner_port}"),
            },
        ],
    };
    let mg_path = dir.path().join("metagraph.toml");
    mg.save(&mg_path).unwrap();
    let data = dir.path().join("vdata");
    let query_timeout_ms = 3_000u64;
    let mut child = Command::new(env!("CARGO_BIN_EXE_polylith"))
        .args(["--keys-dir", keys.to_str().unwrap(), "--log", "info"])
        .args(["validator", "--key", "v", "--metagraph"])
        .arg(&mg_path)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--round-interval-ms", "600000"])
        .args(["--query-timeout-ms", &query_timeout_ms.to_string()])
        .args(["--llm-weight", "0"])
        .args(["--shutdown-grace-ms", "20000"])
        .env_remove("POLYLITH_LOG_JSON")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the polylith binary starts");
    let mut stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });

    // The first round starts at once; it is mid-round once it has connected to the miner.
    let start = Instant::now();
    while accepted.load(Ordering::SeqCst) == 0 {
        if let Some(status) = child.try_wait().unwrap() {
            reader.join().unwrap();
            panic!("validator exited early ({status}): {}", log.lock().unwrap());
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the validator never queried the miner: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(60),
            "the validator did not exit within 60 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(
        status.success(),
        "clean exit after SIGINT ({status}): {log}"
    );
    assert!(
        log.contains("finishing the round in progress"),
        "says it finishes the round: {log}"
    );
    assert!(
        log.contains("round in progress finished before shutdown"),
        "the round finished: {log}"
    );
    // It waited for the query deadline instead of leaving at once.
    assert!(
        took >= Duration::from_millis(query_timeout_ms / 2),
        "exited {took:?} after SIGINT, before the round could finish: {log}"
    );

    // Persisted: the database holds round 1's state, its record and its weights message
    // (written in one flushed batch, then published).
    let store = Store::open(&data).unwrap();
    let state = store.load().unwrap().expect("a persisted state");
    assert_eq!(state.round, 1, "round 1 was installed: {log}");
    let record = store.round_record(1).unwrap().expect("round 1's record");
    assert_eq!(record.outcomes.len(), 1, "{record:?}");
    assert!(
        record.outcomes[0].failure.is_some(),
        "the hanging miner failed: {record:?}"
    );
    assert!(
        store
            .latest_message()
            .unwrap()
            .is_some_and(|m| m.round == 1)
    );
}
