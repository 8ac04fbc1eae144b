//! The documentation and `--help` agree: every `polylith ...` command line in README.md and
//! docs/*.md uses a subcommand and flags that exist (checked against the real `--help`
//! output of that subcommand), every bare `--flag` the README and docs/deploy.md mention
//! exists in some command, daemon help shows defaults, and flags a command ignores are not
//! in its help. (The same idea as reth's CLI docs check, without generated pages.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_polylith"))
        .args(path)
        .arg("--help")
        .env_remove("POLYLITH_KEYS_DIR")
        .output()
        .expect("polylith runs");
    assert!(
        out.status.success(),
        "polylith {} --help failed: {}",
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Subcommand names listed under "Commands:" in a help text (`help` excluded).
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap_or_default();
            if !name.is_empty() && name != "help" {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// The long flags an options section documents.
fn flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .flat_map(|l| {
            l.split([' ', ',', '='])
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(|w| w.trim_end_matches(['.', ':', ')']).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every command path (`[]`, `["key"]`, `["key", "new"]`, ...) with its help text.
fn all_helps() -> BTreeMap<Vec<String>, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let text = help(&path);
        for sub in subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        out.insert(path, text);
    }
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// `polylith ...` invocations in a document: the words after `polylith`, up to the end of
/// the line, a backtick, a comment or a shell operator.
fn invocations(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("polylith ") {
            // Only the command, not a word ending in "polylith" (e.g. `/usr/bin/polylith`
            // is fine, `polylith_miner` is not a match anyway).
            let before = rest[..i].chars().last();
            rest = &rest[i + "polylith ".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                continue;
            }
            let end = rest
                .find(['`', '#', '|', ';', '&', ')', '"'])
                .unwrap_or(rest.len());
            // Usage syntax such as `[--json]` or `(--a|--b)` marks optional words.
            let words: Vec<String> = rest[..end]
                .split(|c: char| c.is_whitespace() || c == '|')
                .map(|w| w.trim_matches(['[', ']', '(', ')', ',']))
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect();
            out.push(words);
        }
    }
    out
}

#[test]
fn documented_commands_and_flags_exist() {
    let helps = all_helps();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for words in invocations(&text) {
            // Prose such as "the polylith binary" is not a command line.
            let Some(first) = words.first() else { continue };
            if !first.starts_with("--") && !helps.contains_key(&vec![first.clone()]) {
                continue;
            }
            let mut path: Vec<String> = Vec::new();
            let mut flags_seen = Vec::new();
            for w in &words {
                // `cargo run -p polylith -- local`: the separator, not a flag.
                if w == "--" {
                    continue;
                }
                if let Some(flag) = w.strip_prefix("--") {
                    let flag = flag.split('=').next().unwrap_or_default();
                    flags_seen.push((path.clone(), format!("--{flag}")));
                    continue;
                }
                let mut next = path.clone();
                next.push(w.clone());
                if helps.contains_key(&next) {
                    path = next;
                }
            }
            for (at, flag) in flags_seen {
                // A flag before the subcommand belongs to the top level; after it, to the
                // deepest subcommand named so far (its help lists inherited globals too).
                let known = flags(&helps[&at]);
                let deepest = flags(&helps[&path]);
                if !known.contains(&flag) && !deepest.contains(&flag) {
                    problems.push(format!(
                        "{name}: `polylith {}`: {flag} is not a flag of `polylith {}`",
                        words.join(" "),
                        path.join(" ")
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} documented flags found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_flag_the_operator_docs_mention_exists() {
    let helps = all_helps();
    let mut every: BTreeSet<String> = helps.values().flat_map(|h| flags(h)).collect();
    // The deploy scripts' own flags (`./init-subnet.sh --gpu`) are documented there too.
    for dir in ["deploy", "scripts"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sh") {
                let text = std::fs::read_to_string(&path).unwrap();
                every.extend(
                    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                        .filter(|w| w.starts_with("--") && w.len() > 2)
                        .map(String::from),
                );
            }
        }
    }
    let mut problems = Vec::new();
    for file in [repo().join("README.md"), repo().join("docs/deploy.md")] {
        let text = std::fs::read_to_string(&file).unwrap();
        // Inline code that starts with a flag, e.g. `--rounds N` or `--max-connections`.
        for span in text.split('`').skip(1).step_by(2) {
            let Some(flag) = span.split_whitespace().next() else {
                continue;
            };
            if flag.starts_with("--") && !every.contains(flag.split('=').next().unwrap()) {
                problems.push(format!("{}: `{span}`", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn daemon_help_shows_defaults_and_hides_flags_a_command_ignores() {
    let miner = help(&["miner".into()]);
    assert!(miner.contains("[default: 127.0.0.1:8091]"), "{miner}");
    assert!(miner.contains("[default: auto]"), "{miner}");
    let validator = help(&["validator".into()]);
    assert!(
        validator.contains("[default: 127.0.0.1:8081]"),
        "{validator}"
    );
    assert!(validator.contains("[default: 1]") || validator.contains("[default: 1.0]"));
    for daemon in [&miner, &validator] {
        assert!(daemon.contains("--keys-dir"), "{daemon}");
        assert!(daemon.contains("--tls-cert"), "{daemon}");
    }
    for ignores_keys in ["yuma", "local", "kernels", "bench", "model"] {
        let text = help(&[ignores_keys.into()]);
        assert!(!text.contains("--keys-dir"), "{ignores_keys}:\n{text}");
    }
    let yuma = help(&["yuma".into()]);
    assert!(yuma.contains("docs/examples/yuma-epoch.json"), "{yuma}");
    assert!(yuma.contains("2^32"), "{yuma}");
}

/// The daemons' default ports and `deploy/metagraph.example.toml` agree: a validator and a
/// miner started with defaults are where the example's first validator and first miner
/// are, and no default metrics port is anyone's endpoint.
#[test]
fn default_ports_match_the_example_metagraph() {
    use polylith_protocol::metagraph::{Metagraph, Role};
    let text = std::fs::read_to_string(repo().join("deploy/metagraph.example.toml")).unwrap();
    let mg: Metagraph = toml::from_str(&text).unwrap();
    let port = |endpoint: &str| -> u16 {
        endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in {endpoint}"))
    };
    let ports = |role: Role| -> Vec<u16> {
        mg.neurons
            .iter()
            .filter(|n| n.role == role)
            .map(|n| port(&n.endpoint))
            .collect()
    };
    let miner = polylith_miner::MinerConfig::default();
    let validator = polylith_validator::ValidatorConfig::default();
    assert_eq!(
        ports(Role::Validator).first(),
        Some(&validator.listen.port())
    );
    assert_eq!(ports(Role::Miner).first(), Some(&miner.listen.port()));
    let endpoints: Vec<u16> = mg.neurons.iter().map(|n| port(&n.endpoint)).collect();
    for metrics in [miner.metrics_listen.port(), validator.metrics_listen.port()] {
        assert!(
            !endpoints.contains(&metrics),
            "metrics port {metrics} is an endpoint"
        );
    }
    assert_ne!(miner.listen.port(), validator.listen.port());
}
