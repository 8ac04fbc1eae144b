//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON or misses a field.
    #[error("bad config.json: {0}")]
    Config(String),
    /// The config asks for something this implementation does not do (e.g. rope scaling).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A weight tensor is missing or has the wrong shape.
    #[error("bad weights: {0}")]
    Weights(String),
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A caller-supplied input is invalid (token id out of range, too long a sequence, bad parameter).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The streaming callback asked to stop.
    #[error("generation cancelled by the caller")]
    Cancelled,
    /// A device engine implementing [`crate::Decoder`] (the CUDA engine) failed.
    #[error("device engine: {0}")]
    Backend(String),
    /// An error from the tensor library.
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
