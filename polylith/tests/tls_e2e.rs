//! TLS end to end through the real binary, with a self-signed certificate made here: a miner
//! and a validator serve HTTPS (`--tls-cert`, `--tls-key`), the metagraph lists `https://`
//! endpoints (the miner's by host name), the validator trusts the certificate through
//! `--tls-ca` and reaches verified work, and its own API answers over HTTPS.

use polylith_protocol::keys::Keystore;
use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

fn polylith() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_polylith"));
    c.env_remove("POLYLITH_KEYS_DIR")
        .env("POLYLITH_LOG", "info")
        .env("POLYLITH_LOG_JSON", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn miner_and_validator_serve_tls_and_the_validator_verifies_work_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();

    let keys = Keystore::new(dir.path().join("keys"));
    let miner_key = keys.create("m").unwrap();
    let validator_key = keys.create("v").unwrap();
    let (miner_port, validator_port) = (free_port(), free_port());
    let metagraph = Metagraph {
        netuid: 1,
        neurons: vec![
            Neuron {
                uid: 0,
                hotkey: validator_key.public().to_ss58(),
                role: Role::Validator,
                stake: 1000,
                endpoint: format!("https://127.0.0.1:{validator_port}"),
            },
            Neuron {
                uid: 1,
                hotkey: miner_key.public().to_ss58(),
                role: Role::Miner,
                stake: 0,
                endpoint: format!("https://localhost:{miner_port}"),
            },
        ],
    };
    let mg_path = dir.path().join("metagraph.toml");
    metagraph.save(&mg_path).unwrap();

    let tls = |c: &mut Command| {
        c.arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .arg("--keys-dir")
            .arg(dir.path().join("keys"))
            .arg("--metagraph")
            .arg(&mg_path);
    };
    let mut miner = polylith();
    miner
        .args(["miner", "--key", "m", "--backend", "cpu", "--model", "none"])
        .args(["--listen", &format!("localhost:{miner_port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())]);
    tls(&mut miner);
    let _miner = Daemon(miner.spawn().unwrap());

    let mut validator = polylith();
    validator
        .args(["validator", "--key", "v", "--llm-weight", "0"])
        .args(["--round-interval-ms", "500"])
        .args(["--listen", &format!("127.0.0.1:{validator_port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("vdata"))
        .arg("--tls-ca")
        .arg(&cert_path);
    tls(&mut validator);
    let mut validator = Daemon(validator.spawn().unwrap());

    // Rounds until one verifies the miner's work (the miner may still be starting at first).
    let stderr = validator.0.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let mut verified = false;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "validator serving" {
            assert_eq!(
                v["fields"]["api"],
                format!("https://127.0.0.1:{validator_port}")
            );
        }
        if v["fields"]["message"] == "round complete" {
            seen.push(line.clone());
            if v["fields"]["verified"].as_u64().unwrap_or(0) >= 1 {
                verified = true;
                break;
            }
        }
        if v["fields"]["message"] == "query failed" {
            seen.push(line.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no verified work in time:\n{}",
            seen.join("\n")
        );
    }
    assert!(verified, "the validator stopped:\n{}", seen.join("\n"));

    // The validator's own API over HTTPS, trusted through the same certificate.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let body = runtime.block_on(async {
        let roots = polylith_net::tls::client_roots(Some(&cert_path)).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only(
                roots
                    .into_iter()
                    .map(|der| reqwest::Certificate::from_der(&der).unwrap()),
            )
            .build()
            .unwrap();
        client
            .get(format!("https://localhost:{validator_port}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(body.contains("\"status\":\"ok\""), "{body}");
}
