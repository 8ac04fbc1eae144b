//! sr25519 hotkeys (schnorrkel, Substrate signing context) and the on-disk keystore.
//!
//! Key files use the JSON layout btcli writes for unencrypted hotkeys (`secretSeed`,
//! `secretPhrase`, `privateKey`, `publicKey`, `accountId`, `ss58Address`), so a Polylith key
//! file and a Bittensor hotkey file are interchangeable.

use crate::ss58;
use rand::RngCore;
use schnorrkel::{ExpansionMode, Keypair, MiniSecretKey, SecretKey, signing_context};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Substrate's sr25519 signing context; signatures are verifiable by any Substrate node.
pub const SIGNING_CONTEXT: &[u8] = b"substrate";

/// Errors from key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Filesystem error on a key file. The message names the file; the OS error is the
    /// source (printed once by error-chain formatting such as anyhow's `{:#}`).
    #[error("{}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file or mnemonic could not be parsed.
    #[error("invalid key: {0}")]
    Invalid(String),
    /// A key with this name already exists.
    #[error("key {0:?} already exists")]
    Exists(String),
    /// No key with this name.
    #[error(
        "no key named {0:?} in {dir}: create it with `polylith key new --name {0}` or import \
         one with `polylith key import --name {0} --from-file FILE`",
        dir = .1.display()
    )]
    NotFound(String, PathBuf),
    /// A bad signature.
    #[error("bad signature")]
    BadSignature,
    /// An encrypted Bittensor key file (btcli encrypts every coldkey, and hotkeys made with
    /// a password): Polylith reads unencrypted hotkeys only.
    #[error("{}: {}", path.display(), encrypted_advice(*coldkey))]
    Encrypted {
        /// The file.
        path: PathBuf,
        /// Whether it looks like a coldkey (its file name), not a password-protected hotkey.
        coldkey: bool,
    },
    /// A file with a public key but no secret, such as btcli's `coldkeypub.txt`.
    #[error(
        "{}: holds only a public key (like btcli's coldkeypub.txt), not a secret; import the \
         hotkey file instead (~/.bittensor/wallets/<wallet>/hotkeys/<hotkey>) or the hotkey's \
         mnemonic with --mnemonic -",
        path.display()
    )]
    PublicOnly {
        /// The file.
        path: PathBuf,
    },
}

fn encrypted_advice(coldkey: bool) -> &'static str {
    if coldkey {
        "this is an encrypted Bittensor coldkey. Miners and validators sign with a hotkey, and \
         a coldkey should never be on a server: import the wallet's hotkey file \
         (~/.bittensor/wallets/<wallet>/hotkeys/<hotkey>) or the hotkey's mnemonic \
         (polylith key import --name NAME --mnemonic -)"
    } else {
        "this Bittensor key file is encrypted (made with a password), and Polylith reads \
         unencrypted hotkeys only: import the hotkey's mnemonic instead \
         (polylith key import --name NAME --mnemonic -, which reads it from stdin), or \
         regenerate the hotkey without a password with btcli (wallet regen-hotkey)"
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A hotkey's public half: 32 bytes, shown as SS58.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// A 64-byte sr25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// Parses 128 hex digits (an optional `0x` prefix is accepted).
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 64];
        hex::decode_to_slice(strip_0x(s), &mut out).ok()?;
        Some(Self(out))
    }
    /// Lowercase hex, no prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

/// A hotkey pair able to sign.
#[derive(Clone)]
pub struct Hotkey {
    pair: Keypair,
    /// The 32-byte mini secret, when the key was made from one (not for expanded-only keys).
    seed: Option<[u8; 32]>,
    /// The BIP39 phrase, when the key was made from one.
    phrase: Option<String>,
}

impl fmt::Debug for Hotkey {
    /// Shows only the public half, so keys never end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hotkey({})", self.public().to_ss58())
    }
}

impl Hotkey {
    /// A fresh random hotkey.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self::from_mini_secret(seed)
    }
    /// The key from a 32-byte mini secret (Substrate's seed), expanded the Substrate way.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        Ok(Self::from_mini_secret(*seed))
    }
    fn from_mini_secret(seed: [u8; 32]) -> Self {
        // from_bytes only fails on a wrong length, which the array type rules out.
        let mini = MiniSecretKey::from_bytes(&seed).expect("32-byte mini secret");
        Self {
            pair: mini.expand_to_keypair(ExpansionMode::Ed25519),
            seed: Some(seed),
            phrase: None,
        }
    }
    /// The key Substrate derives from a BIP39 mnemonic with no derivation path.
    ///
    /// Substrate's mini secret is the first 32 bytes of PBKDF2-HMAC-SHA512 over the
    /// mnemonic's *entropy* (not the BIP39 seed), salt `"mnemonic"` (empty password), 2048
    /// rounds.
    pub fn from_mnemonic(phrase: &str) -> Result<Self, KeyError> {
        let normalized = phrase
            .split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ");
        let mnemonic = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &normalized)
            .map_err(|e| KeyError::Invalid(format!("mnemonic: {e}")))?;
        let entropy = mnemonic.to_entropy();
        let mut out = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(&entropy, b"mnemonic", 2048, &mut out);
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&out[..32]);
        let mut key = Self::from_mini_secret(seed);
        key.phrase = Some(normalized);
        Ok(key)
    }
    /// The key from a 64-byte expanded sr25519 secret (btcli's `privateKey`).
    ///
    /// Two encodings of the secret scalar exist: schnorrkel's canonical one (what btcli
    /// writes) and the ed25519-style one (scalar times the cofactor) some tools export.
    /// `expected` picks the one whose public key matches; without it the canonical form wins.
    pub fn from_expanded(bytes: &[u8; 64], expected: Option<&PublicKey>) -> Result<Self, KeyError> {
        let candidates = [
            SecretKey::from_bytes(bytes).ok(),
            SecretKey::from_ed25519_bytes(bytes).ok(),
        ];
        let mut first = None;
        for secret in candidates.into_iter().flatten() {
            let pair = secret.to_keypair();
            let public = PublicKey(pair.public.to_bytes());
            match expected {
                Some(want) if *want != public => {}
                _ => {
                    return Ok(Self {
                        pair,
                        seed: None,
                        phrase: None,
                    });
                }
            }
            first.get_or_insert(public);
        }
        Err(KeyError::Invalid(match (first, expected) {
            (Some(got), Some(want)) => format!(
                "privateKey gives public key {} but the file says {}",
                got.to_ss58(),
                want.to_ss58()
            ),
            _ => "privateKey is not a valid sr25519 secret".into(),
        }))
    }
    /// Public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.pair.public.to_bytes())
    }
    /// Signs `msg` under [`SIGNING_CONTEXT`].
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(
            self.pair
                .sign(signing_context(SIGNING_CONTEXT).bytes(msg))
                .to_bytes(),
        )
    }
    /// The BIP39 phrase, if this key was made from one.
    pub fn phrase(&self) -> Option<&str> {
        self.phrase.as_deref()
    }
    /// The 32-byte mini secret, if this key was made from one.
    pub fn seed(&self) -> Option<&[u8; 32]> {
        self.seed.as_ref()
    }

    fn to_file(&self) -> KeyFile {
        let public = format!("0x{}", hex::encode(self.public().0));
        KeyFile {
            account_id: Some(public.clone()),
            public_key: Some(public),
            secret_phrase: self.phrase.clone(),
            secret_seed: self.seed.map(|s| format!("0x{}", hex::encode(s))),
            private_key: Some(format!("0x{}", hex::encode(self.pair.secret.to_bytes()))),
            ss58_address: Some(self.public().to_ss58()),
            crypto_type: Some(1),
        }
    }

    /// Reads a key from btcli-style JSON: `secretSeed` if present, else `secretPhrase`, else
    /// `privateKey`; every other secret and public field present must agree with it.
    fn from_file(file: &KeyFile) -> Result<Self, KeyError> {
        let claimed = claimed_public(file)?;
        let mut derived: Vec<(&str, Hotkey)> = Vec::new();
        if let Some(seed) = &file.secret_seed {
            let bytes: [u8; 32] = decode_hex_array(seed, "secretSeed")?;
            derived.push(("secretSeed", Self::from_mini_secret(bytes)));
        }
        if let Some(phrase) = &file.secret_phrase {
            derived.push(("secretPhrase", Self::from_mnemonic(phrase)?));
        }
        if let Some(private) = &file.private_key {
            let bytes: [u8; 64] = decode_hex_array(private, "privateKey")?;
            let expected = claimed.or_else(|| derived.first().map(|(_, k)| k.public()));
            derived.push((
                "privateKey",
                Self::from_expanded(&bytes, expected.as_ref())?,
            ));
        }
        let Some((source, mut key)) = derived.first().cloned() else {
            return Err(KeyError::Invalid(
                "no secretSeed, secretPhrase or privateKey in the key file".into(),
            ));
        };
        for (other, k) in &derived[1..] {
            if k.public() != key.public() {
                return Err(KeyError::Invalid(format!(
                    "{other} and {source} give different keys ({} vs {})",
                    k.public().to_ss58(),
                    key.public().to_ss58()
                )));
            }
        }
        if let Some(want) = claimed
            && want != key.public()
        {
            return Err(KeyError::Invalid(format!(
                "{source} gives {} but the file says {}",
                key.public().to_ss58(),
                want.to_ss58()
            )));
        }
        // Keep the phrase for the saved copy when both phrase and seed were given.
        if key.phrase.is_none() {
            key.phrase = derived.iter().find_map(|(_, k)| k.phrase.clone());
        }
        Ok(key)
    }
}

/// The public key the file claims (`publicKey`, `accountId`, `ss58Address`), which must all
/// agree when several are present.
fn claimed_public(file: &KeyFile) -> Result<Option<PublicKey>, KeyError> {
    let mut claimed: Option<(&str, PublicKey)> = None;
    let hexes = [
        ("publicKey", &file.public_key),
        ("accountId", &file.account_id),
    ];
    let mut found: Vec<(&str, PublicKey)> = Vec::new();
    for (field, value) in hexes {
        if let Some(v) = value {
            found.push((field, PublicKey(decode_hex_array(v, field)?)));
        }
    }
    if let Some(addr) = &file.ss58_address {
        let pk = PublicKey::from_ss58(addr)
            .map_err(|e| KeyError::Invalid(format!("ss58Address {addr:?}: {e}")))?;
        found.push(("ss58Address", pk));
    }
    for (field, pk) in found {
        match claimed {
            Some((first, want)) if want != pk => {
                return Err(KeyError::Invalid(format!(
                    "{field} ({}) disagrees with {first} ({})",
                    pk.to_ss58(),
                    want.to_ss58()
                )));
            }
            Some(_) => {}
            None => claimed = Some((field, pk)),
        }
    }
    Ok(claimed.map(|(_, pk)| pk))
}

fn strip_0x(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s)
}

fn decode_hex_array<const N: usize>(s: &str, field: &str) -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(strip_0x(s), &mut out)
        .map_err(|e| KeyError::Invalid(format!("{field}: expected {N} bytes of hex: {e}")))?;
    Ok(out)
}

impl PublicKey {
    /// Verifies a signature made by [`Hotkey::sign`].
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let public =
            schnorrkel::PublicKey::from_bytes(&self.0).map_err(|_| KeyError::BadSignature)?;
        let sig = schnorrkel::Signature::from_bytes(&sig.0).map_err(|_| KeyError::BadSignature)?;
        public
            .verify_simple(SIGNING_CONTEXT, msg, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
    /// SS58 with the default prefix.
    pub fn to_ss58(&self) -> String {
        ss58::encode(&self.0, ss58::DEFAULT_PREFIX)
    }
    /// Parses an SS58 address (any prefix).
    pub fn from_ss58(s: &str) -> Result<Self, KeyError> {
        ss58::decode(s)
            .map(|(pk, _prefix)| Self(pk))
            .map_err(|e| KeyError::Invalid(format!("SS58 address {s:?}: {e}")))
    }
    /// Lowercase hex of the 32 bytes, no prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    /// The SS58 address (default prefix).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_ss58())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_ss58())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    /// Parses an SS58 address.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_ss58(s)
    }
}

/// btcli's hotkey JSON (unencrypted).
#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    #[serde(rename = "accountId", default, skip_serializing_if = "Option::is_none")]
    account_id: Option<String>,
    #[serde(rename = "publicKey", default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(
        rename = "secretPhrase",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    secret_phrase: Option<String>,
    #[serde(
        rename = "secretSeed",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    secret_seed: Option<String>,
    #[serde(
        rename = "privateKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    private_key: Option<String>,
    #[serde(
        rename = "ss58Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    ss58_address: Option<String>,
    #[serde(
        rename = "cryptoType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    crypto_type: Option<u8>,
}

/// Parses the text of a btcli-style hotkey file into a key, checking its public fields.
pub fn parse_key_file(text: &str) -> Result<Hotkey, KeyError> {
    parse_key_bytes(text.as_bytes(), Path::new("key file"))
}

/// Markers btcli puts at the start of an encrypted key file: NaCl (current), the wallet
/// format, Ansible vault and Fernet (`gAAAAA`, legacy), in that order.
const ENCRYPTED_PREFIXES: [&[u8]; 4] = [b"$NACL", b"$BTWALLET", b"$ANSIBLE_VAULT", b"gAAAAA"];

/// Parses the bytes of the key file `path` (named in errors): an unencrypted btcli hotkey.
/// Encrypted files, coldkeys and public-only files get an error saying what they are and
/// what to import instead.
pub fn parse_key_bytes(bytes: &[u8], path: &Path) -> Result<Hotkey, KeyError> {
    let start = bytes.trim_ascii_start();
    if ENCRYPTED_PREFIXES.iter().any(|p| start.starts_with(p)) {
        let coldkey = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("coldkey"));
        return Err(KeyError::Encrypted {
            path: path.to_path_buf(),
            coldkey,
        });
    }
    let invalid = |msg: String| KeyError::Invalid(format!("{}: {msg}", path.display()));
    let text = std::str::from_utf8(bytes).map_err(|_| {
        invalid("not a key file: it is binary, and btcli hotkey files are JSON text".into())
    })?;
    let file: KeyFile =
        serde_json::from_str(text).map_err(|e| invalid(format!("not a hotkey JSON file: {e}")))?;
    if file.secret_seed.is_none()
        && file.secret_phrase.is_none()
        && file.private_key.is_none()
        && claimed_public(&file).ok().flatten().is_some()
    {
        return Err(KeyError::PublicOnly {
            path: path.to_path_buf(),
        });
    }
    Hotkey::from_file(&file).map_err(|e| match e {
        KeyError::Invalid(msg) => invalid(msg),
        other => other,
    })
}

/// A directory of named key files (0600), one JSON file per key.
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    /// A keystore rooted at `dir` (created on first write, 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// The default directory: `$HOME/.polylith/keys`.
    pub fn default_dir() -> PathBuf {
        // Without HOME (some containers), fall back to the working directory.
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".polylith")
            .join("keys")
    }
    /// Where the keystore lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The file that holds key `name` (`<dir>/<name>.json`); the name must be 1–64 of
    /// `[A-Za-z0-9_.-]`, not starting with a dot.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, KeyError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(KeyError::Invalid(format!(
                "key name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ - . and not start \
                 with a dot"
            )));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }
    /// Creates and saves a new random key; refuses to overwrite.
    ///
    /// The key comes from a fresh 12-word mnemonic, which is stored in the file
    /// (`secretPhrase`) so the key can also be restored with btcli or `key import --mnemonic`.
    pub fn create(&self, name: &str) -> Result<Hotkey, KeyError> {
        self.path_of(name)?;
        let entropy: [u8; 16] = rand::random();
        let phrase = bip39::Mnemonic::from_entropy(&entropy)
            .map_err(|e| KeyError::Invalid(format!("mnemonic: {e}")))?
            .to_string();
        let key = Hotkey::from_mnemonic(&phrase)?;
        self.save(name, &key)?;
        Ok(key)
    }
    /// Saves an existing key under `name`; refuses to overwrite.
    ///
    /// The file is written to a temporary 0600 file and hard-linked into place, so a crash
    /// never leaves a half-written key and an existing key is never replaced.
    pub fn save(&self, name: &str, key: &Hotkey) -> Result<PathBuf, KeyError> {
        let path = self.path_of(name)?;
        if path.exists() {
            return Err(KeyError::Exists(name.to_owned()));
        }
        create_private_dir(&self.dir)?;
        let mut text = serde_json::to_string_pretty(&key.to_file())
            .map_err(|e| KeyError::Invalid(format!("serialising the key: {e}")))?;
        text.push('\n');
        let tmp = self.dir.join(format!(
            ".{name}.{}.{:016x}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = write_private(&tmp, text.as_bytes()).and_then(|()| {
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(KeyError::Exists(name.to_owned()))
                }
                // Filesystems without hard links: rename, after re-checking the target
                // (a narrow race, but never a half-written file).
                Err(_) if !path.exists() => std::fs::rename(&tmp, &path).map_err(io_err(&path)),
                Err(e) => Err(io_err(&path)(e)),
            }
        });
        // The temporary name is removed whether or not the link succeeded.
        let _ = std::fs::remove_file(&tmp);
        result?;
        tracing::info!(name, path = %path.display(), address = %key.public(), "saved hotkey");
        Ok(path)
    }
    /// Loads a key by name.
    pub fn load(&self, name: &str) -> Result<Hotkey, KeyError> {
        let path = self.path_of(name)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::NotFound(name.to_owned(), self.dir.clone()));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        warn_if_readable_by_others(&path);
        parse_key_bytes(&bytes, &path)
    }
    /// Imports an unencrypted Bittensor hotkey file (btcli's JSON).
    pub fn import_bittensor_file(&self, name: &str, path: &Path) -> Result<Hotkey, KeyError> {
        self.path_of(name)?;
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let key = parse_key_bytes(&bytes, path)?;
        self.save(name, &key)?;
        Ok(key)
    }
    /// Imports a key from a BIP39 mnemonic (Substrate derivation, no path).
    pub fn import_mnemonic(&self, name: &str, phrase: &str) -> Result<Hotkey, KeyError> {
        self.path_of(name)?;
        let key = Hotkey::from_mnemonic(phrase)?;
        self.save(name, &key)?;
        Ok(key)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_err(dir))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "key file is readable by other users; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
