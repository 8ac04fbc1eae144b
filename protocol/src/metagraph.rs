//! The metagraph: who is on the subnet, in which role, with what stake and endpoint.
//!
//! Stored as TOML (`deploy/metagraph.example.toml`). Daemons hold a [`MetagraphHandle`]
//! and call [`MetagraphHandle::reload_if_changed`] periodically.

use crate::keys::PublicKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    pub fn from_toml(_text: &str) -> Result<Self, MetagraphError> {
        todo!("H2")
    }
    /// Serialises to TOML.
    pub fn to_toml(&self) -> String {
        todo!("H2")
    }
    /// Loads and validates a file.
    pub fn load(_path: &Path) -> Result<Self, MetagraphError> {
        todo!("H2")
    }
    /// Writes atomically (temp file + rename).
    pub fn save(&self, _path: &Path) -> Result<(), MetagraphError> {
        todo!("H2")
    }
    /// The neuron with this hotkey.
    pub fn by_hotkey(&self, _key: &PublicKey) -> Option<&Neuron> {
        todo!("H2")
    }
    /// The neuron with this uid.
    pub fn by_uid(&self, _uid: u16) -> Option<&Neuron> {
        todo!("H2")
    }
    /// All miners, by uid.
    pub fn miners(&self) -> Vec<&Neuron> {
        todo!("H2")
    }
    /// All validators, by uid.
    pub fn validators(&self) -> Vec<&Neuron> {
        todo!("H2")
    }
    /// Number of uid slots (max uid + 1).
    pub fn n(&self) -> usize {
        todo!("H2")
    }
}

/// A metagraph file plus the state needed to reload it when it changes on disk.
#[derive(Debug)]
pub struct MetagraphHandle {
    _private: (),
}

impl MetagraphHandle {
    /// Loads `path` now.
    pub fn open(_path: PathBuf) -> Result<Self, MetagraphError> {
        todo!("H2")
    }
    /// The current metagraph.
    pub fn current(&self) -> std::sync::Arc<Metagraph> {
        todo!("H2")
    }
    /// Re-reads the file if its modification time or size changed. Returns `Ok(true)` when
    /// a new, valid metagraph was installed; an invalid file keeps the old one and errors.
    pub fn reload_if_changed(&self) -> Result<bool, MetagraphError> {
        todo!("H2")
    }
}
