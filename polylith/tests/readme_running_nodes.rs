//! README.md's "Running nodes", followed literally with the real binary: the commands are read
//! from the README's code block and run as written (HOME is a temporary directory, so keys go
//! to its `~/.polylith/keys`; the working directory holds a copy of
//! `deploy/metagraph.example.toml`). Each documented daemon must reach verified work or stop
//! with (or log) a clear error naming the step that is missing.
//!
//! Then the missing step is done the way an operator would: the new hotkeys are written into
//! a metagraph in its own directory, first with the validator's stake at 0 (the miner refuses
//! it), then replaced by rename with a real stake (as `deploy/init-subnet.sh` does), and the
//! running daemons must pick the new file up and reach verified work without a restart.

#![cfg(unix)]

use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use serde_json::Value;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The commands of the first ```bash block under "## Running nodes", comments removed.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("## Running nodes")
        .nth(1)
        .expect("README has a \"Running nodes\" section");
    let block = section
        .split("```bash")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a bash block in \"Running nodes\"");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| l.starts_with("polylith "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

struct Env {
    home: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("deploy")).unwrap();
        std::fs::copy(
            repo_root().join("deploy/metagraph.example.toml"),
            home.path().join("deploy/metagraph.example.toml"),
        )
        .unwrap();
        Self { home }
    }

    fn dir(&self) -> &Path {
        self.home.path()
    }

    /// `polylith ARGS` as the README user runs it: HOME and the working directory are the
    /// temporary home; no POLYLITH_* variable from the test's environment leaks in.
    fn command(&self, args: &[String]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_polylith"));
        c.args(args).current_dir(self.dir()).env("HOME", self.dir());
        for (k, _) in std::env::vars() {
            if k.starts_with("POLYLITH_") {
                c.env_remove(k);
            }
        }
        c
    }

    fn run(&self, args: &[String]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ss58(&self, name: &str) -> String {
        let out = self.run(&strings(&["key", "show", "--name", name]));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "key show {name}: {}", show(&out));
        text.split_whitespace()
            .find(|w| w.starts_with('5') && w.len() >= 46)
            .unwrap_or_else(|| panic!("an SS58 address in `key show`: {text}"))
            .to_string()
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn show(o: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A daemon with its stderr collected.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Self { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `limit` for the daemon to exit or for `done(log)`; the exit status if
    /// it exited.
    fn watch(&mut self, limit: Duration, done: impl Fn(&str) -> bool) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200)); // let the pipes drain
                return Some(s.code().unwrap_or(-1));
            }
            if done(&self.log()) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon's log says something is wrong at error level (text or JSON logs).
fn logged_error(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("ERROR") || l.starts_with("error:"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn readme_running_nodes_literally_reaches_work_or_names_the_missing_step() {
    let env = Env::new();
    let commands = readme_commands();
    assert!(!commands.is_empty(), "commands in the README block");
    let is = |c: &Vec<String>, a: &str, b: Option<&str>| {
        c.get(1).map(String::as_str) == Some(a)
            && b.is_none_or(|b| c.get(2).map(String::as_str) == Some(b))
    };
    let mut checked_daemons = 0;
    let mut problems = Vec::new();
    for cmd in &commands {
        let args: Vec<String> = cmd[1..].to_vec();
        if is(cmd, "key", Some("new")) {
            let out = env.run(&args);
            assert!(
                out.status.success(),
                "README step `{}`: {}",
                cmd.join(" "),
                show(&out)
            );
        } else if is(cmd, "miner", None) || is(cmd, "validator", None) {
            checked_daemons += 1;
            let key = args
                .iter()
                .position(|a| a == "--key")
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_default();
            let mut d = Daemon::start(env.command(&args));
            let exited = d.watch(Duration::from_secs(30), logged_error);
            let log = d.log();
            let what = format!("README step `{}`", cmd.join(" "));
            if exited == Some(0) {
                problems.push(format!("{what}: exited 0 without doing work: {log}"));
                continue;
            }
            if exited.is_none() && !logged_error(&log) {
                problems.push(format!(
                    "{what}: ran 30 s with no error although its key is not in the example \
                     metagraph (silent failure): {log}"
                ));
                continue;
            }
            // A clear error names the missing step.
            let keys_dir = env.dir().join(".polylith/keys");
            let key_exists = keys_dir.join(&key).exists()
                || std::fs::read_dir(&keys_dir).is_ok_and(|mut r| {
                    r.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(&key)))
                });
            if !key_exists {
                if !(log.contains(&key) && log.contains("key new")) {
                    problems.push(format!(
                        "{what}: the key {key:?} was never created by the README's steps; the \
                         error must name it and say `polylith key new --name {key}`: {log}"
                    ));
                }
            } else {
                let ss58 = env.ss58(&key);
                if !(log.contains(&ss58) && log.contains("metagraph")) {
                    problems.push(format!(
                        "{what}: its hotkey {ss58} is not in the example metagraph; the error \
                         must name the hotkey and the metagraph: {log}"
                    ));
                }
            }
        }
    }
    assert!(
        checked_daemons >= 2,
        "the README starts a miner and a validator"
    );
    assert!(problems.is_empty(), "\n\n{}", problems.join("\n\n"));
}

/// The step the README leaves to the operator: both hotkeys in a metagraph, in a directory
/// the daemons read, replaced by rename. A stake change reaches the running daemons.
#[test]
fn metagraph_replaced_by_rename_reaches_running_daemons() {
    let env = Env::new();
    for name in ["my-miner", "my-validator"] {
        let out = env.run(&strings(&["key", "new", "--name", name]));
        assert!(out.status.success(), "{}", show(&out));
    }
    let (miner_ss58, validator_ss58) = (env.ss58("my-miner"), env.ss58("my-validator"));
    let (m_api, m_met, v_api, v_met) = (free_port(), free_port(), free_port(), free_port());
    let graph = |stake: u64| Metagraph {
        netuid: 1,
        neurons: vec![
            Neuron {
                uid: 0,
                hotkey: validator_ss58.clone(),
                role: Role::Validator,
                stake,
                endpoint: format!("http://127.0.0.1:{v_api}"),
            },
            Neuron {
                uid: 1,
                hotkey: miner_ss58.clone(),
                role: Role::Miner,
                stake: 0,
                endpoint: format!("http://127.0.0.1:{m_api}"),
            },
        ],
    };
    let mg_dir = env.dir().join("metagraph");
    std::fs::create_dir_all(&mg_dir).unwrap();
    let mg = mg_dir.join("metagraph.toml");
    // The validator has no stake yet: the miner refuses it (`insufficient_stake`).
    graph(0).save(&mg).unwrap();
    let inode_before = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&mg).unwrap());

    let mg_arg = mg.to_string_lossy().into_owned();
    let _miner = Daemon::start(env.command(&strings(&[
        "--log",
        "info",
        "miner",
        "--key",
        "my-miner",
        "--metagraph",
        &mg_arg,
        "--backend",
        "auto",
        "--model",
        "none",
        "--listen",
        &format!("127.0.0.1:{m_api}"),
        "--metrics-listen",
        &format!("127.0.0.1:{m_met}"),
        "--metagraph-reload-ms",
        "500",
    ])));
    let validator = Daemon::start(env.command(&strings(&[
        "--log",
        "info",
        "validator",
        "--key",
        "my-validator",
        "--metagraph",
        &mg_arg,
        "--data-dir",
        "./vdata",
        "--listen",
        &format!("127.0.0.1:{v_api}"),
        "--metrics-listen",
        &format!("127.0.0.1:{v_met}"),
        "--round-interval-ms",
        "1000",
        "--llm-weight",
        "0",
    ])));

    let explain = || -> Value {
        let out = env.run(&strings(&[
            "explain",
            "--metagraph",
            &mg_arg,
            "--miner",
            "1",
            "--json",
        ]));
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let wait_for = |what: &str, ok: &dyn Fn(&Value) -> bool| -> Value {
        let start = Instant::now();
        loop {
            let j = explain();
            if ok(&j) {
                return j;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{what} within 120 s; last answer {j:#}\n--- validator log\n{}",
                validator.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let refused = wait_for("the miner refuses the stakeless validator", &|j| {
        j["validators"][0]["failures"]["http_status"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    assert_eq!(refused["verified"], 0, "{refused:#}");

    // Replace the file the way init-subnet.sh does: write beside it, rename over it.
    let tmp = mg_dir.join("metagraph.toml.tmp");
    graph(1_000_000).save(&tmp).unwrap();
    std::fs::rename(&tmp, &mg).unwrap();
    let inode_after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&mg).unwrap());
    assert_ne!(
        inode_before, inode_after,
        "rename gives the file a new inode"
    );

    let verified = wait_for("verified work after the stake change", &|j| {
        j["verified"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(verified["answered"], 1, "{verified:#}");
    assert!(
        validator.log().contains("metagraph reloaded"),
        "the validator says it reloaded: {}",
        validator.log()
    );
}
