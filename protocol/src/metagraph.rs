//! The metagraph: who is on the subnet, in which role, with what stake and endpoint.
//!
//! Stored as TOML (`deploy/metagraph.example.toml`). Daemons hold a [`MetagraphHandle`]
//! and call [`MetagraphHandle::reload_if_changed`] periodically.
//!
//! ```toml
//! netuid = 1
//!
//! [[neuron]]
//! uid = 0
//! hotkey = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
//! role = "validator"      # or "miner"
//! stake = 1000000         # optional, default 0
//! endpoint = "http://127.0.0.1:8091"
//! ```

use crate::keys::PublicKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// A neuron's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves work.
    Miner,
    /// Holds stake, queries and scores miners.
    Validator,
}

/// One registered neuron.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neuron {
    /// Unique id in 0..n.
    pub uid: u16,
    /// Hotkey, SS58.
    pub hotkey: String,
    /// Role.
    pub role: Role,
    /// Stake in the subnet's smallest unit.
    #[serde(default)]
    pub stake: u64,
    /// HTTP base URL, e.g. `http://127.0.0.1:8091`.
    pub endpoint: String,
}

/// The whole metagraph file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metagraph {
    /// Subnet id (informational).
    #[serde(default)]
    pub netuid: u16,
    /// The neurons, any order; uids must be unique.
    #[serde(rename = "neuron", default)]
    pub neurons: Vec<Neuron>,
}

/// Errors loading a metagraph.
#[derive(Debug, thiserror::Error)]
pub enum MetagraphError {
    /// Reading the file failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// TOML syntax or schema error.
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    /// Semantically invalid (duplicate uid, bad SS58, ...).
    #[error("invalid metagraph: {0}")]
    Invalid(String),
}

impl Metagraph {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, MetagraphError> {
        Self::parse(text, Path::new("<metagraph>"))
    }
    fn parse(text: &str, path: &Path) -> Result<Self, MetagraphError> {
        let graph: Metagraph = toml::from_str(text)
            .map_err(|e| MetagraphError::Parse(path.to_path_buf(), e.to_string()))?;
        graph.validate()?;
        Ok(graph)
    }
    /// Checks uids and hotkeys are unique, hotkeys are SS58, stakes fit TOML's signed
    /// integers, and endpoints look like `http(s)://host[:port][/path]`.
    pub fn validate(&self) -> Result<(), MetagraphError> {
        let invalid = |msg: String| Err(MetagraphError::Invalid(msg));
        let mut uids = std::collections::HashSet::new();
        let mut keys = std::collections::HashMap::new();
        for n in &self.neurons {
            if !uids.insert(n.uid) {
                return invalid(format!("uid {} appears more than once", n.uid));
            }
            let key = match PublicKey::from_ss58(&n.hotkey) {
                Ok(k) => k,
                Err(e) => return invalid(format!("uid {}: {e}", n.uid)),
            };
            if let Some(other) = keys.insert(key, n.uid) {
                return invalid(format!(
                    "uids {other} and {} have the same hotkey {}",
                    n.uid, n.hotkey
                ));
            }
            if n.stake > i64::MAX as u64 {
                return invalid(format!("uid {}: stake {} is too large", n.uid, n.stake));
            }
            if let Err(why) = check_endpoint(&n.endpoint) {
                return invalid(format!("uid {}: endpoint {:?}: {why}", n.uid, n.endpoint));
            }
        }
        Ok(())
    }
    /// Serialises to TOML.
    pub fn to_toml(&self) -> String {
        // TOML integers are i64; clamping keeps this infallible for out-of-range stakes
        // (which `validate` refuses anyway).
        let mut copy = self.clone();
        for n in &mut copy.neurons {
            n.stake = n.stake.min(i64::MAX as u64);
        }
        toml::to_string(&copy).unwrap_or_else(|e| format!("# could not serialise: {e}\n"))
    }
    /// Loads and validates a file.
    pub fn load(path: &Path) -> Result<Self, MetagraphError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| MetagraphError::Io(path.to_path_buf(), e))?;
        Self::parse(&text, path)
    }
    /// Writes atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), MetagraphError> {
        self.validate()?;
        let io = |e| MetagraphError::Io(path.to_path_buf(), e);
        let name = path.file_name().ok_or_else(|| {
            MetagraphError::Invalid(format!("{} is not a file path", path.display()))
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let result =
            std::fs::write(&tmp, self.to_toml()).and_then(|()| std::fs::rename(&tmp, path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
    /// The neuron with this hotkey.
    pub fn by_hotkey(&self, key: &PublicKey) -> Option<&Neuron> {
        // Most files use the default prefix, so a string comparison finds the neuron without
        // decoding every address; other prefixes fall back to decoding.
        let ss58 = key.to_ss58();
        self.neurons.iter().find(|n| n.hotkey == ss58).or_else(|| {
            self.neurons
                .iter()
                .find(|n| PublicKey::from_ss58(&n.hotkey).is_ok_and(|k| k == *key))
        })
    }
    /// The neuron with this uid.
    pub fn by_uid(&self, uid: u16) -> Option<&Neuron> {
        self.neurons.iter().find(|n| n.uid == uid)
    }
    fn with_role(&self, role: Role) -> Vec<&Neuron> {
        let mut out: Vec<&Neuron> = self.neurons.iter().filter(|n| n.role == role).collect();
        out.sort_by_key(|n| n.uid);
        out
    }
    /// All miners, by uid.
    pub fn miners(&self) -> Vec<&Neuron> {
        self.with_role(Role::Miner)
    }
    /// All validators, by uid.
    pub fn validators(&self) -> Vec<&Neuron> {
        self.with_role(Role::Validator)
    }
    /// Number of uid slots (max uid + 1).
    pub fn n(&self) -> usize {
        self.neurons
            .iter()
            .map(|n| n.uid as usize + 1)
            .max()
            .unwrap_or(0)
    }
}

/// Accepts `http://` or `https://`, a non-empty host (name, IPv4 or `[IPv6]`), an optional
/// numeric port and an optional path; no whitespace, query or fragment.
fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    if endpoint
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("contains whitespace");
    }
    if rest.contains(['?', '#', '@']) {
        return Err("must not contain a query, fragment or user info");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in IPv6 host")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("invalid IPv6 address");
        }
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("junk after IPv6 host")?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err("invalid host");
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err("port must be a number 0-65535");
    }
    Ok(())
}

/// What identifies a version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    /// Inode, so an atomic replace within one mtime tick is still noticed.
    ino: u64,
}

fn stamp(path: &Path) -> Result<FileStamp, MetagraphError> {
    let meta = std::fs::metadata(path).map_err(|e| MetagraphError::Io(path.to_path_buf(), e))?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let ino = 0;
    Ok(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        ino,
    })
}

/// A metagraph file plus the state needed to reload it when it changes on disk.
///
/// Shareable across threads (`&self` methods, an internal lock); readers get an
/// `Arc<Metagraph>` snapshot that stays valid while a reload installs a new one.
#[derive(Debug)]
pub struct MetagraphHandle {
    path: PathBuf,
    state: RwLock<(Arc<Metagraph>, FileStamp)>,
}

impl MetagraphHandle {
    /// Loads `path` now.
    pub fn open(path: PathBuf) -> Result<Self, MetagraphError> {
        let stamp = stamp(&path)?;
        let graph = Metagraph::load(&path)?;
        Ok(Self {
            path,
            state: RwLock::new((Arc::new(graph), stamp)),
        })
    }
    /// The file this handle watches.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The current metagraph.
    pub fn current(&self) -> std::sync::Arc<Metagraph> {
        // A panic while holding the lock cannot leave the pair half-updated (it is replaced
        // whole), so a poisoned lock is still safe to read.
        let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard.0)
    }
    /// Re-reads the file if its modification time or size changed. Returns `Ok(true)` when
    /// a new, valid metagraph was installed; an invalid file keeps the old one and errors.
    ///
    /// A failed reload does not remember the new file's stamp, so it is retried (and
    /// reported) on every call until the file is fixed.
    pub fn reload_if_changed(&self) -> Result<bool, MetagraphError> {
        let now = stamp(&self.path)?;
        if self.state.read().unwrap_or_else(|e| e.into_inner()).1 == now {
            return Ok(false);
        }
        let graph = Metagraph::load(&self.path)?;
        // Stamp again: if the file changed while it was read, the next call reads it again.
        let after = stamp(&self.path)?;
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        let changed = *guard.0 != graph;
        *guard = (Arc::new(graph), if after == now { now } else { guard.1 });
        if changed {
            tracing::info!(path = %self.path.display(), neurons = guard.0.neurons.len(), "metagraph reloaded");
        }
        Ok(changed)
    }
}
