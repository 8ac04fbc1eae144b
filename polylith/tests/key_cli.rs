//! `polylith key` end to end: the real binary against a keystore in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEV_PHRASE: &str = "bottom drive obey lake curtain smoke basket hold race lonely fit walk";
/// `subkey inspect` of the dev phrase with no derivation path.
const DEV_SS58: &str = "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../protocol/tests/data")
        .join(name)
}

fn polylith(keys: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_polylith"))
        .arg("--keys-dir")
        .arg(keys)
        .args(args)
        .env_remove("POLYLITH_KEYS_DIR")
        .output()
        .expect("run polylith")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn new_then_show_prints_the_same_address_and_file_is_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let created = ok(polylith(&keys, &["key", "new", "--name", "v0"]));
    let address = first_line(&created).to_owned();
    assert_eq!(address.len(), 48, "SS58 on its own line: {created}");
    assert!(address.starts_with('5'));
    let shown = ok(polylith(&keys, &["key", "show", "--name", "v0"]));
    assert_eq!(first_line(&shown), address);
    assert!(shown.contains("public key: 0x"), "{shown}");
    // The positional form (used by deploy/init-subnet.sh) works too.
    assert_eq!(
        first_line(&ok(polylith(&keys, &["key", "show", "v0"]))),
        address
    );
    #[cfg(unix)]
    assert_eq!(mode(&keys.join("v0.json")), 0o600);

    // Never overwrites, and a missing key is an error with a message.
    let again = polylith(&keys, &["key", "new", "--name", "v0"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let missing = polylith(&keys, &["key", "show", "--name", "nobody"]);
    assert!(!missing.status.success());
    assert_eq!(
        first_line(&ok(polylith(&keys, &["key", "show", "v0"]))),
        address
    );

    let listed = ok(polylith(&keys, &["key", "list"]));
    assert!(listed.contains(&format!("v0\t{address}")), "{listed}");
}

#[test]
fn import_mnemonic_gives_substrates_address() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(polylith(
        tmp.path(),
        &["key", "import", "--name", "dev", "--mnemonic", DEV_PHRASE],
    ));
    assert_eq!(first_line(&out), DEV_SS58);
    assert_eq!(
        first_line(&ok(polylith(tmp.path(), &["key", "show", "--name", "dev"]))),
        DEV_SS58
    );
    #[cfg(unix)]
    assert_eq!(mode(&tmp.path().join("dev.json")), 0o600);
    let bad = polylith(
        tmp.path(),
        &[
            "key",
            "import",
            "--name",
            "bad",
            "--mnemonic",
            "not a real phrase",
        ],
    );
    assert!(!bad.status.success());
    assert!(!tmp.path().join("bad.json").exists());
}

#[test]
fn import_btcli_hotkey_file_keeps_its_address() {
    let tmp = tempfile::tempdir().unwrap();
    let file = fixture("bittensor_hotkey.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let want = json["ss58Address"].as_str().unwrap();
    let out = ok(polylith(
        tmp.path(),
        &[
            "key",
            "import",
            "--name",
            "hk",
            "--from-file",
            file.to_str().unwrap(),
        ],
    ));
    assert_eq!(first_line(&out), want);
    assert_eq!(
        first_line(&ok(polylith(tmp.path(), &["key", "show", "--name", "hk"]))),
        want
    );
    #[cfg(unix)]
    assert_eq!(mode(&tmp.path().join("hk.json")), 0o600);

    // A file whose address does not match its secret is refused.
    let mut tampered = json.clone();
    tampered["ss58Address"] = DEV_SS58.into();
    let bad = tmp.path().join("tampered.json");
    std::fs::write(&bad, tampered.to_string()).unwrap();
    let out = polylith(
        tmp.path(),
        &[
            "key",
            "import",
            "--name",
            "t",
            "--from-file",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(!tmp.path().join("t.json").exists());
}

/// `key new` shows the mnemonic once, on stderr with a back-up warning, and it is the key's
/// real phrase (importing it gives the same address); `--no-show-mnemonic` keeps it off.
#[test]
fn new_shows_its_mnemonic_once_unless_told_not_to() {
    let tmp = tempfile::tempdir().unwrap();
    let out = polylith(tmp.path(), &["key", "new", "--name", "fresh"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let address = first_line(&ok(out)).to_string();
    assert!(
        stderr.contains("IMPORTANT: write down this mnemonic"),
        "{stderr}"
    );
    let phrase = stderr
        .lines()
        .map(str::trim)
        .find(|l| l.split_whitespace().count() == 12)
        .unwrap_or_else(|| panic!("no 12-word phrase on stderr: {stderr}"));
    let restored = ok(polylith(
        tmp.path(),
        &["key", "import", "--name", "restored", "--mnemonic", phrase],
    ));
    assert_eq!(first_line(&restored), address);

    let quiet = polylith(
        tmp.path(),
        &["key", "new", "--name", "scripted", "--no-show-mnemonic"],
    );
    let quiet_err = String::from_utf8_lossy(&quiet.stderr).to_string();
    ok(quiet);
    assert!(!quiet_err.contains("mnemonic"), "{quiet_err}");
}
