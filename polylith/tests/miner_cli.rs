//! `polylith miner` through the real binary: clean start-up failures (one line, non-zero
//! exit, no panic) and a real start that serves `/health` and `/metrics`.

use polylith_protocol::keys::Keystore;
use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn polylith() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_polylith"));
    c.env_remove("RUST_BACKTRACE").env("POLYLITH_LOG", "warn");
    c
}

/// Runs to completion and returns (exit success, stderr).
fn run_to_end(c: &mut Command) -> (bool, String) {
    let out = c.output().expect("polylith runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_clean_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn cuda_backend_without_a_gpu_fails_with_one_line() {
    // On a machine with a usable GPU this command would start serving instead.
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_to_end(
        polylith()
            .args(["miner", "--backend", "cuda", "--keys-dir"])
            .arg(dir.path()),
    );
    assert!(!ok, "exit status was success");
    assert_one_clean_line(&stderr);
    assert!(stderr.contains("backend"), "{stderr}");
}

#[test]
fn unknown_backend_and_behaviour_are_refused() {
    let (ok, stderr) = run_to_end(polylith().args(["miner", "--backend", "tpu"]));
    assert!(!ok);
    assert!(stderr.contains("tpu"), "{stderr}");
    let (ok, stderr) = run_to_end(polylith().args(["miner", "--behaviour", "sneaky"]));
    assert!(!ok);
    assert!(stderr.contains("sneaky"), "{stderr}");
}

#[test]
fn missing_key_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_to_end(
        polylith()
            .args(["miner", "--backend", "cpu", "--key", "nobody", "--keys-dir"])
            .arg(dir.path()),
    );
    assert!(!ok);
    assert_one_clean_line(&stderr);
    assert!(stderr.contains("nobody"), "{stderr}");
}

#[test]
fn config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("miner.toml");
    std::fs::write(&path, "behaviour = \"lazy\"\nmax_gemm_dim = 77\n").unwrap();
    let out = polylith()
        .args([
            "miner",
            "--print-config",
            "--max-gemm-dim",
            "99",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("behaviour = \"lazy\""), "{text}");
    assert!(text.contains("max_gemm_dim = 99"), "{text}");

    std::fs::write(&path, "no_such_key = 1\n").unwrap();
    let (ok, stderr) = run_to_end(polylith().args(["miner", "--config"]).arg(&path));
    assert!(!ok);
    assert_one_clean_line(&stderr);
    assert!(stderr.contains("no_such_key"), "{stderr}");
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn setup_key_and_metagraph(dir: &std::path::Path) -> std::path::PathBuf {
    let keys = Keystore::new(dir.join("keys"));
    let miner = keys.create("miner").unwrap();
    let metagraph = Metagraph {
        netuid: 1,
        neurons: vec![Neuron {
            uid: 0,
            hotkey: miner.public().to_ss58(),
            role: Role::Miner,
            stake: 0,
            endpoint: "http://127.0.0.1:1".into(),
        }],
    };
    let path = dir.join("metagraph.toml");
    metagraph.save(&path).unwrap();
    path
}

#[test]
fn miner_starts_serves_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metagraph = setup_key_and_metagraph(dir.path());
    let child = polylith()
        .args(["miner", "--backend", "cpu", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0", "--metagraph"])
        .arg(&metagraph)
        .arg("--keys-dir")
        .arg(dir.path().join("keys"))
        // The start-up line goes through the logger (at info, the daemons' default).
        .env("POLYLITH_LOG", "info")
        .env("POLYLITH_LOG_JSON", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let start = BufReader::new(child.0.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .find(|v| v["fields"]["message"] == "miner serving")
        .expect("a start-up line");
    let api = start["fields"]["api"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("unexpected start-up line: {start}"))
        .to_string();
    let metrics = start["fields"]["metrics"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected start-up line: {start}"))
        .to_string();
    let (api, metrics) = (api.as_str(), metrics.as_str());
    let health = http_get(api, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"backend\":\"cpu\""), "{health}");
    let m = http_get(metrics, "/metrics");
    assert!(m.contains("polylith_build_info{component=\"miner\""), "{m}");
}

#[test]
fn a_taken_metrics_port_is_a_fatal_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let metagraph = setup_key_and_metagraph(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, stderr) = run_to_end(
        polylith()
            .args(["miner", "--backend", "cpu", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", &addr, "--metagraph"])
            .arg(&metagraph)
            .arg("--keys-dir")
            .arg(dir.path().join("keys")),
    );
    assert!(!ok);
    assert_one_clean_line(&stderr);
    assert!(stderr.contains(&addr), "{stderr}");
}
