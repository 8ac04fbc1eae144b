//! sr25519 hotkeys (schnorrkel, Substrate signing context) and the on-disk keystore.

use std::path::{Path, PathBuf};

/// Substrate's sr25519 signing context; signatures are verifiable by any Substrate node.
pub const SIGNING_CONTEXT: &[u8] = b"substrate";

/// Errors from key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Filesystem error on a key file.
    #[error("{path}: {source}")]
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
    #[error("no key named {0:?} in {1}")]
    NotFound(String, PathBuf),
    /// A bad signature.
    #[error("bad signature")]
    BadSignature,
}

/// A hotkey's public half: 32 bytes, shown as SS58.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// A 64-byte sr25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

/// A hotkey pair able to sign.
#[derive(Clone)]
pub struct Hotkey {
    _private: (),
}

impl Hotkey {
    /// A fresh random hotkey.
    pub fn generate() -> Self {
        todo!("H2")
    }
    /// The key from a 32-byte mini secret (Substrate's seed), expanded the Substrate way.
    pub fn from_seed(_seed: &[u8; 32]) -> Result<Self, KeyError> {
        todo!("H2")
    }
    /// The key Substrate derives from a BIP39 mnemonic with no derivation path.
    pub fn from_mnemonic(_phrase: &str) -> Result<Self, KeyError> {
        todo!("H2")
    }
    /// Public half.
    pub fn public(&self) -> PublicKey {
        todo!("H2")
    }
    /// Signs `msg` under [`SIGNING_CONTEXT`].
    pub fn sign(&self, _msg: &[u8]) -> Signature {
        todo!("H2")
    }
}

impl PublicKey {
    /// Verifies a signature made by [`Hotkey::sign`].
    pub fn verify(&self, _msg: &[u8], _sig: &Signature) -> Result<(), KeyError> {
        todo!("H2")
    }
    /// SS58 with the default prefix.
    pub fn to_ss58(&self) -> String {
        todo!("H2")
    }
    /// Parses an SS58 address (any prefix).
    pub fn from_ss58(_s: &str) -> Result<Self, KeyError> {
        todo!("H2")
    }
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
        todo!("H2")
    }
    /// Where the keystore lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Creates and saves a new random key; refuses to overwrite.
    pub fn create(&self, _name: &str) -> Result<Hotkey, KeyError> {
        todo!("H2")
    }
    /// Saves an existing key under `name`; refuses to overwrite.
    pub fn save(&self, _name: &str, _key: &Hotkey) -> Result<PathBuf, KeyError> {
        todo!("H2")
    }
    /// Loads a key by name.
    pub fn load(&self, _name: &str) -> Result<Hotkey, KeyError> {
        todo!("H2")
    }
    /// Imports an unencrypted Bittensor hotkey file (btcli's JSON).
    pub fn import_bittensor_file(&self, _name: &str, _path: &Path) -> Result<Hotkey, KeyError> {
        todo!("H2")
    }
    /// Imports a key from a BIP39 mnemonic (Substrate derivation, no path).
    pub fn import_mnemonic(&self, _name: &str, _phrase: &str) -> Result<Hotkey, KeyError> {
        todo!("H2")
    }
}
