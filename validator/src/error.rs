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
    #[error("opening the validator database at {}", path.display())]
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
    #[error("registering metrics")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client could not be built.
    #[error("building the HTTP client")]
    Http(#[source] reqwest::Error),
    /// The TLS certificates (`tls_cert`/`tls_key`, `tls_ca`) could not be loaded.
    #[error("setting up TLS")]
    Tls(#[source] Box<polylith_net::tls::TlsError>),
    /// Binding or serving a socket failed. The message says what was being done; the OS
    /// error is the source (error-chain formatting prints it once).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}
