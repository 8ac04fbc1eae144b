//! The metagraph file: parsing, validation, lookups, atomic saves and hot reload.

use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::metagraph::*;
use std::path::PathBuf;
use std::sync::Arc;

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/metagraph.example.toml")
}

fn neuron(uid: u16, key: &PublicKey, role: Role) -> Neuron {
    Neuron {
        uid,
        hotkey: key.to_ss58(),
        role,
        stake: 10 * uid as u64,
        endpoint: format!("http://127.0.0.1:{}", 8000 + uid),
    }
}

fn sample() -> (Metagraph, Vec<PublicKey>) {
    let keys: Vec<PublicKey> = (0..4u8)
        .map(|i| Hotkey::from_seed(&[i + 1; 32]).unwrap().public())
        .collect();
    let g = Metagraph {
        netuid: 7,
        neurons: vec![
            neuron(3, &keys[3], Role::Miner),
            neuron(0, &keys[0], Role::Validator),
            neuron(2, &keys[2], Role::Miner),
            neuron(1, &keys[1], Role::Validator),
        ],
    };
    (g, keys)
}

#[test]
fn example_file_has_two_validators_and_three_miners() {
    let g = Metagraph::load(&example_path()).unwrap();
    assert_eq!(g.validators().len(), 2);
    assert_eq!(g.miners().len(), 3);
    assert_eq!(g.n(), 5);
    let alice = PublicKey::from_ss58("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY").unwrap();
    assert_eq!(g.by_hotkey(&alice).unwrap().role, Role::Validator);
    assert_eq!(g.by_hotkey(&alice).unwrap().stake, 1_000_000);
    // Miners without a stake line default to 0.
    assert_eq!(g.by_uid(2).unwrap().stake, 0);
}

#[test]
fn lookups_and_role_lists_are_by_uid() {
    let (g, keys) = sample();
    g.validate().unwrap();
    assert_eq!(g.n(), 4);
    let uids = |v: Vec<&Neuron>| v.iter().map(|n| n.uid).collect::<Vec<_>>();
    assert_eq!(uids(g.miners()), vec![2, 3]);
    assert_eq!(uids(g.validators()), vec![0, 1]);
    assert_eq!(g.by_hotkey(&keys[2]).unwrap().uid, 2);
    assert!(
        g.by_hotkey(&Hotkey::from_seed(&[99; 32]).unwrap().public())
            .is_none()
    );
    assert_eq!(g.by_uid(1).unwrap().hotkey, keys[1].to_ss58());
    assert!(g.by_uid(9).is_none());
    assert_eq!(
        Metagraph {
            netuid: 0,
            neurons: vec![]
        }
        .n(),
        0
    );
}

#[test]
fn hotkey_with_another_ss58_prefix_is_found() {
    let (mut g, keys) = sample();
    g.neurons[0].hotkey = polylith_protocol::ss58::encode(&keys[3].0, 0);
    g.validate().unwrap();
    assert_eq!(g.by_hotkey(&keys[3]).unwrap().uid, 3);
}

#[test]
fn toml_round_trips() {
    let (g, _) = sample();
    let text = g.to_toml();
    assert!(text.contains("[[neuron]]"), "{text}");
    assert_eq!(Metagraph::from_toml(&text).unwrap(), g);
}

#[test]
fn invalid_metagraphs_are_refused_with_a_reason() {
    let (g, keys) = sample();
    let mut dup_uid = g.clone();
    dup_uid.neurons[0].uid = 0;
    let mut dup_key = g.clone();
    dup_key.neurons[0].hotkey = keys[0].to_ss58();
    let mut bad_ss58 = g.clone();
    bad_ss58.neurons[1].hotkey = "5Grwva-not-an-address".into();
    let mut huge_stake = g.clone();
    huge_stake.neurons[1].stake = u64::MAX;
    for (what, bad) in [
        ("duplicate uid", dup_uid),
        ("duplicate hotkey", dup_key),
        ("bad ss58", bad_ss58),
    ] {
        assert!(
            matches!(bad.validate(), Err(MetagraphError::Invalid(_))),
            "{what}"
        );
        assert!(
            matches!(
                Metagraph::from_toml(&bad.to_toml()),
                Err(MetagraphError::Invalid(_))
            ),
            "{what}"
        );
    }
    // TOML integers are i64: a larger stake is refused (to_toml clamps it so it still writes).
    assert!(matches!(
        huge_stake.validate(),
        Err(MetagraphError::Invalid(_))
    ));
    let clamped = Metagraph::from_toml(&huge_stake.to_toml()).unwrap();
    assert_eq!(clamped.by_uid(0).unwrap().stake, i64::MAX as u64);
    for endpoint in [
        "127.0.0.1:8091",
        "ftp://host",
        "http://",
        "http://:80",
        "http://host:port",
        "http://host:70000",
        "http://ho st",
        "http://host/?q=1",
        "http://user@host",
        "http://[::1",
        "http://[zz]:80",
    ] {
        let mut bad = g.clone();
        bad.neurons[0].endpoint = endpoint.into();
        assert!(
            matches!(bad.validate(), Err(MetagraphError::Invalid(_))),
            "{endpoint}"
        );
    }
    for endpoint in [
        "http://127.0.0.1:8091",
        "https://miner-0.example.org",
        "http://miner_1:8091/",
        "http://[::1]:8091",
        "https://host/prefix/path",
    ] {
        let mut ok = g.clone();
        ok.neurons[0].endpoint = endpoint.into();
        assert!(ok.validate().is_ok(), "{endpoint}");
    }
    assert!(matches!(
        Metagraph::from_toml("[[neuron]]\nuid = \"x\""),
        Err(MetagraphError::Parse(..))
    ));
    assert!(matches!(
        Metagraph::from_toml("role = "),
        Err(MetagraphError::Parse(..))
    ));
    let unknown_role = format!(
        "[[neuron]]\nuid = 0\nhotkey = \"{}\"\nrole = \"king\"\nendpoint = \"http://a\"\n",
        keys[0].to_ss58()
    );
    assert!(matches!(
        Metagraph::from_toml(&unknown_role),
        Err(MetagraphError::Parse(..))
    ));
}

#[test]
fn save_is_atomic_and_load_reports_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("metagraph.toml");
    let (g, _) = sample();
    g.save(&path).unwrap();
    assert_eq!(Metagraph::load(&path).unwrap(), g);
    // Only the target file remains (no temporaries).
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    let mut bad = g.clone();
    bad.neurons[0].uid = 0;
    assert!(bad.save(&path).is_err());
    assert_eq!(
        Metagraph::load(&path).unwrap(),
        g,
        "a refused save leaves the file alone"
    );
    assert!(matches!(
        Metagraph::load(&tmp.path().join("none.toml")),
        Err(MetagraphError::Io(..))
    ));
}

#[test]
fn handle_reloads_changes_and_keeps_the_old_graph_on_invalid_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("metagraph.toml");
    let (g, keys) = sample();
    g.save(&path).unwrap();
    let handle = Arc::new(MetagraphHandle::open(path.clone()).unwrap());
    assert_eq!(*handle.current(), g);
    assert!(!handle.reload_if_changed().unwrap());

    // A valid change (different size) is picked up.
    let mut g2 = g.clone();
    g2.neurons.push(neuron(
        4,
        &Hotkey::from_seed(&[50; 32]).unwrap().public(),
        Role::Miner,
    ));
    g2.save(&path).unwrap();
    assert!(handle.reload_if_changed().unwrap());
    assert_eq!(handle.current().n(), 5);
    assert!(!handle.reload_if_changed().unwrap());

    // An invalid file errors and keeps the last good graph; it is retried until fixed.
    std::fs::write(&path, "this is not toml [").unwrap();
    assert!(handle.reload_if_changed().is_err());
    assert!(handle.reload_if_changed().is_err());
    assert_eq!(*handle.current(), g2);
    let mut dup = g2.to_toml();
    dup.push_str(&format!(
        "\n[[neuron]]\nuid = 0\nhotkey = \"{}\"\nrole = \"miner\"\nendpoint = \"http://a\"\n",
        keys[0].to_ss58()
    ));
    std::fs::write(&path, dup).unwrap();
    assert!(matches!(
        handle.reload_if_changed(),
        Err(MetagraphError::Invalid(_))
    ));
    assert_eq!(*handle.current(), g2);

    // A deleted file errors too, and the graph stays.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        handle.reload_if_changed(),
        Err(MetagraphError::Io(..))
    ));
    assert_eq!(*handle.current(), g2);

    // Fixed again: reloaded. Readers on other threads see a whole graph either way.
    g.save(&path).unwrap();
    let reader = {
        let handle = Arc::clone(&handle);
        std::thread::spawn(move || {
            (0..200).all(|_| {
                let n = handle.current().neurons.len();
                n == 4 || n == 5
            })
        })
    };
    assert!(handle.reload_if_changed().unwrap());
    assert!(reader.join().unwrap());
    assert_eq!(*handle.current(), g);
}

#[test]
fn open_fails_on_missing_or_invalid_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.toml");
    assert!(matches!(
        MetagraphHandle::open(path.clone()),
        Err(MetagraphError::Io(..))
    ));
    std::fs::write(&path, "netuid = \"one\"").unwrap();
    assert!(matches!(
        MetagraphHandle::open(path),
        Err(MetagraphError::Parse(..))
    ));
}
