//! Keys: Substrate-compatible derivation and signatures (checked against vectors produced by
//! Bittensor's wallet library and py-sr25519-bindings, see scripts/make_key_fixtures.py),
//! btcli hotkey file import, and the keystore's files.

use polylith_protocol::keys::{Hotkey, KeyError, Keystore, PublicKey, Signature, parse_key_file};
use polylith_protocol::ss58;
use proptest::prelude::*;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn vectors() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data("key_vectors.json")).unwrap()).unwrap()
}

fn s(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap().to_owned()
}

#[test]
fn dev_phrase_without_path_gives_substrates_published_key() {
    let v = vectors();
    let key = Hotkey::from_mnemonic(&s(&v, "dev_phrase")).unwrap();
    // subkey inspect "bottom drive obey ... walk" (no path).
    assert_eq!(
        key.public().to_hex(),
        "46ebddef8cd9bb167dc30878d7113b7e168e6f0646beffd77d69d39bad76b47a"
    );
    assert_eq!(key.public().to_hex(), s(&v, "dev_phrase_public_hex"));
    assert_eq!(
        key.public().to_ss58(),
        "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
    );
    // Extra whitespace and capitals are normalised away.
    let sloppy = format!(
        "  {}  ",
        s(&v, "dev_phrase").to_uppercase().replace(' ', "   ")
    );
    assert_eq!(
        Hotkey::from_mnemonic(&sloppy).unwrap().public(),
        key.public()
    );
}

#[test]
fn alice_public_key_has_the_published_address() {
    let v = vectors();
    let mut k = [0u8; 32];
    hex::decode_to_slice(s(&v, "alice_public_hex"), &mut k).unwrap();
    assert_eq!(
        PublicKey(k).to_ss58(),
        "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    );
    assert_eq!(PublicKey(k).to_ss58(), s(&v, "alice_ss58"));
    assert_eq!(
        PublicKey::from_ss58(&s(&v, "alice_ss58")).unwrap(),
        PublicKey(k)
    );
}

#[test]
fn bad_mnemonics_are_rejected() {
    for bad in [
        "",
        "bottom drive obey lake",
        "bottom drive obey lake curtain smoke basket hold race lonely fit fit",
        "notaword drive obey lake curtain smoke basket hold race lonely fit walk",
    ] {
        assert!(
            matches!(Hotkey::from_mnemonic(bad), Err(KeyError::Invalid(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn signature_made_by_bittensor_wallet_verifies_here() {
    let v = vectors();
    let msg = hex::decode(s(&v, "message_hex")).unwrap();
    let sig = Signature::from_hex(&s(&v, "fixture_signature_hex")).unwrap();
    let pk = PublicKey::from_ss58(&s(&v, "fixture_ss58")).unwrap();
    pk.verify(&msg, &sig).unwrap();
    assert!(matches!(
        pk.verify(b"another message", &sig),
        Err(KeyError::BadSignature)
    ));
    let mut flipped = sig;
    flipped.0[5] ^= 0x10;
    assert!(pk.verify(&msg, &flipped).is_err());
}

#[test]
fn our_signatures_verify_and_fail_on_other_key_or_message() {
    let key = Hotkey::generate();
    let other = Hotkey::generate();
    assert_ne!(key.public(), other.public());
    let sig = key.sign(b"hello");
    key.public().verify(b"hello", &sig).unwrap();
    assert!(key.public().verify(b"hellO", &sig).is_err());
    assert!(other.public().verify(b"hello", &sig).is_err());
    // All-zero bytes are not a valid sr25519 signature encoding.
    assert!(key.public().verify(b"hello", &Signature([0; 64])).is_err());
}

#[test]
fn btcli_hotkey_file_parses_from_seed_phrase_or_private_key() {
    let v = vectors();
    let want = s(&v, "fixture_ss58");
    for file in [
        "bittensor_hotkey.json",
        "bittensor_hotkey_private_only.json",
        "bittensor_hotkey_phrase_only.json",
    ] {
        let text = std::fs::read_to_string(data(file)).unwrap();
        let key = parse_key_file(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(key.public().to_ss58(), want, "{file}");
        // The imported key signs for the same address.
        let sig = key.sign(b"m");
        PublicKey::from_ss58(&want)
            .unwrap()
            .verify(b"m", &sig)
            .unwrap();
    }
}

fn fixture_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data("bittensor_hotkey.json")).unwrap()).unwrap()
}

#[test]
fn hotkey_file_whose_public_fields_disagree_is_rejected() {
    let other = Hotkey::generate().public();
    for field in ["publicKey", "accountId", "ss58Address"] {
        let mut j = fixture_json();
        j[field] = if field == "ss58Address" {
            other.to_ss58().into()
        } else {
            format!("0x{}", other.to_hex()).into()
        };
        let err = parse_key_file(&j.to_string()).unwrap_err();
        assert!(matches!(err, KeyError::Invalid(_)), "{field}: {err}");
    }
    // A seed that belongs to another key than the phrase.
    let mut j = fixture_json();
    j["secretSeed"] = format!("0x{}", "11".repeat(32)).into();
    assert!(matches!(
        parse_key_file(&j.to_string()),
        Err(KeyError::Invalid(_))
    ));
    // A private key of the wrong length, a file with no secret, junk and encrypted files.
    let mut j = fixture_json();
    j.as_object_mut().unwrap().remove("secretSeed");
    j.as_object_mut().unwrap().remove("secretPhrase");
    j["privateKey"] = "0x1234".into();
    assert!(matches!(
        parse_key_file(&j.to_string()),
        Err(KeyError::Invalid(_))
    ));
    let public_only = r#"{"ss58Address": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"}"#;
    assert!(matches!(
        parse_key_file(public_only),
        Err(KeyError::PublicOnly { .. })
    ));
    assert!(matches!(
        parse_key_file("not json"),
        Err(KeyError::Invalid(_))
    ));
    let err = parse_key_file("$NACL\u{1}\u{2}binary").unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keystore_creates_0600_files_loads_them_and_refuses_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Keystore::new(tmp.path().join("nested/keys"));
    let key = store.create("validator-0").unwrap();
    let path = store.path_of("validator-0").unwrap();
    #[cfg(unix)]
    {
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
    }
    let loaded = store.load("validator-0").unwrap();
    assert_eq!(loaded.public(), key.public());
    assert_eq!(loaded.seed(), key.seed());
    assert!(matches!(
        store.create("validator-0"),
        Err(KeyError::Exists(_))
    ));
    assert!(matches!(
        store.save("validator-0", &Hotkey::generate()),
        Err(KeyError::Exists(_))
    ));
    // The existing key is untouched and no temporary files are left behind.
    assert_eq!(store.load("validator-0").unwrap().public(), key.public());
    assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 1);
    assert!(matches!(store.load("nobody"), Err(KeyError::NotFound(..))));
    for bad in ["", ".hidden", "a/b", "../x", "with space", &"x".repeat(65)] {
        assert!(
            matches!(store.create(bad), Err(KeyError::Invalid(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn keystore_files_are_btcli_compatible_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Keystore::new(tmp.path());
    let v = vectors();
    let key = store.import_mnemonic("dev", &s(&v, "dev_phrase")).unwrap();
    assert_eq!(key.public().to_ss58(), s(&v, "dev_phrase_ss58"));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.path_of("dev").unwrap()).unwrap())
            .unwrap();
    assert_eq!(saved["ss58Address"], s(&v, "dev_phrase_ss58"));
    assert_eq!(
        saved["publicKey"],
        format!("0x{}", s(&v, "dev_phrase_public_hex"))
    );
    assert_eq!(saved["secretPhrase"], s(&v, "dev_phrase"));

    let imported = store
        .import_bittensor_file("fixture", &data("bittensor_hotkey.json"))
        .unwrap();
    assert_eq!(imported.public().to_ss58(), s(&v, "fixture_ss58"));
    // Our saved copy carries the same privateKey btcli wrote.
    let ours: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.path_of("fixture").unwrap()).unwrap())
            .unwrap();
    assert_eq!(ours["privateKey"], fixture_json()["privateKey"]);
    assert_eq!(ours["secretSeed"], fixture_json()["secretSeed"]);
    // A key known only by its expanded secret survives a save/load round trip.
    let private_only = store
        .import_bittensor_file("private", &data("bittensor_hotkey_private_only.json"))
        .unwrap();
    assert_eq!(
        store.load("private").unwrap().public(),
        private_only.public()
    );
    assert!(store.load("private").unwrap().seed().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// SS58 encoding round-trips for any key and any encodable prefix.
    #[test]
    fn ss58_round_trips(key in any::<[u8; 32]>(), prefix in 0u16..=ss58::MAX_PREFIX) {
        let text = ss58::encode(&key, prefix);
        prop_assert_eq!(ss58::decode(&text), Ok((key, prefix)));
    }

    /// Changing any single character of an address is detected.
    #[test]
    fn ss58_single_character_changes_are_detected(
        key in any::<[u8; 32]>(),
        pos in any::<prop::sample::Index>(),
        replacement in prop::sample::select(
            "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".chars().collect::<Vec<_>>()
        ),
    ) {
        let text = ss58::encode(&key, 42);
        let mut chars: Vec<char> = text.chars().collect();
        let i = pos.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let changed: String = chars.into_iter().collect();
        // Either it fails to decode, or (astronomically unlikely with a 16-bit checksum
        // plus length/prefix checks) decodes to something else; never to the same key.
        match ss58::decode(&changed) {
            Err(_) => {}
            Ok((k, p)) => prop_assert!(k != key || p != 42),
        }
    }

    /// Seeds give deterministic keys whose signatures verify.
    #[test]
    fn seed_keys_sign_and_verify(seed in any::<[u8; 32]>(), msg in prop::collection::vec(any::<u8>(), 0..200)) {
        let a = Hotkey::from_seed(&seed).unwrap();
        let b = Hotkey::from_seed(&seed).unwrap();
        prop_assert_eq!(a.public(), b.public());
        let sig = a.sign(&msg);
        prop_assert!(b.public().verify(&msg, &sig).is_ok());
    }
}

#[test]
fn new_keys_carry_a_phrase_that_restores_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Keystore::new(tmp.path());
    let key = store.create("k").unwrap();
    let phrase = store.load("k").unwrap().phrase().unwrap().to_owned();
    assert_eq!(phrase.split(' ').count(), 12);
    assert_eq!(
        Hotkey::from_mnemonic(&phrase).unwrap().public(),
        key.public()
    );
    assert_ne!(store.create("k2").unwrap().public(), key.public());
}

/// What a btcli wallet holds besides an unencrypted hotkey: each file gets an error that
/// says what it is and what to import instead, and an OS error is not repeated.
#[test]
fn importing_coldkeys_encrypted_hotkeys_and_missing_files_says_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Keystore::new(tmp.path().join("keys"));
    let wallet = tmp.path().join("wallets/w");
    std::fs::create_dir_all(wallet.join("hotkeys")).unwrap();
    // Encrypted files are binary after their marker (not UTF-8).
    let encrypted: &[u8] = b"$NACL\xff\xfe\x00\x81ciphertext";
    std::fs::write(wallet.join("coldkey"), encrypted).unwrap();
    std::fs::write(wallet.join("hotkeys/default"), encrypted).unwrap();
    std::fs::write(
        wallet.join("coldkeypub.txt"),
        r#"{"accountId": "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d", "publicKey": "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d", "ss58Address": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"}"#,
    )
    .unwrap();
    std::fs::write(wallet.join("junk.bin"), [0xffu8, 0xfe, 0x00, 0x81]).unwrap();

    let err = store
        .import_bittensor_file("a", &wallet.join("coldkey"))
        .unwrap_err();
    assert!(
        matches!(err, KeyError::Encrypted { coldkey: true, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("coldkey") && text.contains("hotkeys/"),
        "{text}"
    );
    assert!(!text.contains("UTF-8"), "{text}");

    let err = store
        .import_bittensor_file("a", &wallet.join("hotkeys/default"))
        .unwrap_err();
    assert!(
        matches!(err, KeyError::Encrypted { coldkey: false, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--mnemonic"), "{err}");

    let err = store
        .import_bittensor_file("a", &wallet.join("coldkeypub.txt"))
        .unwrap_err();
    assert!(matches!(err, KeyError::PublicOnly { .. }), "{err}");

    let err = store
        .import_bittensor_file("a", &wallet.join("junk.bin"))
        .unwrap_err();
    assert!(err.to_string().contains("binary"), "{err}");
    assert!(!err.to_string().contains("UTF-8"), "{err}");

    // A missing file: the message names the file, the OS error is the source, once.
    let err = store
        .import_bittensor_file("a", &wallet.join("missing"))
        .unwrap_err();
    let chain: Vec<String> =
        std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect();
    assert_eq!(chain.len(), 2, "{chain:?}");
    assert!(chain[0].ends_with("missing"), "{chain:?}");
    assert!(!chain[0].contains("os error"), "{chain:?}");
    assert!(chain[1].contains("os error 2"), "{chain:?}");
    // Nothing was saved by any failed import.
    assert!(matches!(store.load("a"), Err(KeyError::NotFound(..))));
}
