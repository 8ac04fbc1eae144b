//! What an operator sees from the real binary: no panic on a closed stdout, the usual
//! boolean spellings for `POLYLITH_LOG_JSON`, no colour in pipes, the start-up line through
//! the logger, and a daemon whose hotkey is not in the metagraph saying so loudly (error log,
//! metric, `/health` degraded) while it keeps running.

use polylith_protocol::keys::Keystore;
use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn polylith() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_polylith"));
    c.env_remove("RUST_BACKTRACE")
        .env_remove("POLYLITH_LOG")
        .env_remove("POLYLITH_LOG_JSON")
        .env_remove("POLYLITH_KEYS_DIR")
        .env_remove("NO_COLOR");
    c
}

fn sample_epoch() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/yuma-epoch.json")
}

/// Runs `args` with stdout a pipe whose reader is closed before the command writes.
fn with_closed_stdout(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = polylith()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closing the read end at once: the process is still starting, so every write it makes
    // to stdout fails with EPIPE (deterministically, unlike `| head -1`).
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), stderr)
}

#[test]
fn no_command_panics_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().to_str().unwrap();
    for name in ["a", "b", "c"] {
        let out = polylith()
            .args(["key", "new", name, "--no-show-mnemonic", "--keys-dir", keys])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let epoch = sample_epoch();
    let runs: Vec<Vec<&str>> = vec![
        vec!["key", "list", "--keys-dir", keys],
        vec!["key", "show", "a", "--keys-dir", keys],
        vec!["key", "new", "d", "--keys-dir", keys],
        vec!["yuma", "--pretty", "--input", epoch.to_str().unwrap()],
        vec!["miner", "--print-config"],
        vec!["validator", "--print-config"],
        vec!["--help"],
        vec!["miner", "--help"],
    ];
    for args in runs {
        let (status, stderr) = with_closed_stdout(&args);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert!(status.success(), "{args:?}: {status:?} {stderr}");
    }
}

#[test]
fn log_json_takes_the_usual_boolean_spellings_and_pipes_get_no_colour() {
    let epoch = sample_epoch();
    for (value, json) in [
        ("1", true),
        ("true", true),
        ("yes", true),
        ("on", true),
        ("0", false),
        ("false", false),
        ("no", false),
        ("off", false),
    ] {
        let out = polylith()
            .args(["--log", "debug", "yuma", "--input"])
            .arg(&epoch)
            .env("POLYLITH_LOG_JSON", value)
            .output()
            .unwrap();
        assert!(out.status.success(), "{value}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let line = stderr
            .lines()
            .find(|l| l.contains("yuma epoch done"))
            .unwrap_or_else(|| panic!("{value}: no debug line in {stderr}"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            json,
            "{value}: {line}"
        );
        assert!(!line.contains('\u{1b}'), "colour in a pipe: {line:?}");
    }
    let out = polylith()
        .args(["yuma", "--input"])
        .arg(&epoch)
        .env("POLYLITH_LOG_JSON", "maybe")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("maybe"));
}

#[test]
fn yuma_runs_the_shipped_sample() {
    let out = polylith()
        .args(["yuma", "--input"])
        .arg(sample_epoch())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Two of three equal validators vote for uid 3: it takes all the incentive (1.0 = 2^32
    // in I32F32), and the dissenting validator (uid 1) earns no dividend.
    assert_eq!(v["incentive_bits"][3], 4294967296u64);
    assert_eq!(v["incentive_u16"][3], 65535);
    assert_eq!(v["dividends_bits"][1], 0);
    assert_eq!(v["dividends_bits"][0], 2147483648u64);
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A miner whose key is not in the metagraph starts, says so at error level through the
/// (JSON) logger along with its start-up line, exports the metric at 0 and answers
/// `/health` with `degraded`; once the metagraph lists it, it reports `ok` without a restart.
#[test]
fn an_unregistered_miner_says_so_until_the_metagraph_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keystore::new(dir.path()).create("m").unwrap();
    let other = polylith_protocol::keys::Hotkey::generate();
    let (api, metrics) = (free_port(), free_port());
    let neuron = |uid: u16, hotkey: String, role: Role| Neuron {
        uid,
        hotkey,
        role,
        stake: 1000,
        endpoint: format!("http://127.0.0.1:{api}"),
    };
    let write_metagraph = |neurons: Vec<Neuron>| {
        let mg = Metagraph { netuid: 1, neurons };
        let tmp = dir.path().join("mg.toml.tmp");
        mg.save(&tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join("mg.toml")).unwrap();
    };
    write_metagraph(vec![neuron(0, other.public().to_ss58(), Role::Miner)]);
    let mut child = Daemon(
        polylith()
            .args(["miner", "--backend", "cpu", "--model", "none", "--key", "m"])
            .args(["--listen", &format!("localhost:{api}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--metagraph-reload-ms", "100", "--keys-dir"])
            .arg(dir.path())
            .arg("--metagraph")
            .arg(dir.path().join("mg.toml"))
            .env("POLYLITH_LOG_JSON", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let wait_for = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => {}
                Err(e) => panic!("log line not seen: {e}"),
            }
        }
    };
    let ss58 = key.public().to_ss58();
    let error = wait_for(&|v| v["level"] == "ERROR");
    let message = error["fields"]["message"].as_str().unwrap();
    assert!(
        message.contains(&ss58) && message.contains("not in the metagraph"),
        "{error}"
    );
    let start = wait_for(&|v| v["fields"]["message"] == "miner serving");
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["fields"]["hotkey"], ss58.as_str());
    assert_eq!(start["fields"]["key"], "m");
    assert_eq!(start["fields"]["api"], format!("http://127.0.0.1:{api}"));
    assert_eq!(start["fields"]["backend"], "cpu");

    let health = http_get(api, "/health").expect("the miner serves although unregistered");
    assert!(health.contains("\"status\":\"degraded\""), "{health}");
    let text = http_get(metrics, "/metrics").unwrap();
    assert!(text.contains("polylith_miner_registered 0"), "{text}");

    // A validator's role is not a miner's either.
    write_metagraph(vec![neuron(0, ss58.clone(), Role::Validator)]);
    let error = wait_for(&|v| v["level"] == "ERROR");
    assert!(
        error["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("role validator"),
        "{error}"
    );
    write_metagraph(vec![neuron(0, ss58.clone(), Role::Miner)]);
    wait_for(&|v| v["fields"]["message"] == "registered as a miner in the metagraph");
    let health = http_get(api, "/health").unwrap();
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let text = http_get(metrics, "/metrics").unwrap();
    assert!(text.contains("polylith_miner_registered 1"), "{text}");
}
