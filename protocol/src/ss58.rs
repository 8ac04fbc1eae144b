//! SS58 addresses (Substrate/Bittensor account encoding).

/// Default SS58 prefix (generic Substrate, used by Bittensor).
pub const DEFAULT_PREFIX: u16 = 42;

/// Errors decoding an SS58 string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ss58Error {
    /// Not valid base58.
    #[error("invalid base58")]
    BadBase58,
    /// Length does not match a 32-byte account with a 1- or 2-byte prefix.
    #[error("invalid length {0}")]
    BadLength(usize),
    /// The 2-byte blake2b checksum does not match.
    #[error("invalid checksum")]
    BadChecksum,
    /// The prefix byte(s) are malformed or reserved.
    #[error("invalid prefix")]
    BadPrefix,
}

/// Encodes a 32-byte public key with the given network prefix.
pub fn encode(_public: &[u8; 32], _prefix: u16) -> String {
    todo!("H2")
}

/// Decodes an SS58 string into (public key, prefix).
pub fn decode(_s: &str) -> Result<([u8; 32], u16), Ss58Error> {
    todo!("H2")
}
