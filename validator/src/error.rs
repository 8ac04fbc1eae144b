//! Errors that stop a validator (start-up, fatal serving failures). Problems with one miner or
//! one peer never become a [`ValidatorError`]: they are a zero score or an ignored vector.

use polylith_protocol::metagraph::MetagraphError;
use std::path::PathBuf;

/// Why a validator could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    /// Invalid configuration.
    #[error("invalid validator configuration: {0}")]
    Config(String),
    /// The metagraph could not be loaded at start-up.
    #[error(transparent)]
    Metagraph(#[from] MetagraphError),
    /// The database could not be opened (locked by another process, corrupt, unwritable).
    #[error("opening the validator database at {path}: {source}")]
    DbOpen {
        /// The data directory.
        path: PathBuf,
        /// The underlying error.
        source: sled::Error,
    },
    /// The stored state exists but cannot be read.
    #[error("reading the validator state in {path}: {message}")]
    DbState {
        /// The data directory.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// Metrics registration failed (a duplicate name: a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(String),
    /// Binding or serving a socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}
