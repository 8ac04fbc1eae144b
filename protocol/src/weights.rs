//! Signed weight vectors a validator publishes at `GET /v1/weights`.

use crate::keys::{Hotkey, PublicKey};
use serde::{Deserialize, Serialize};

/// A validator's weights over uids, u16-normalised (max-upscaled, Bittensor convention).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedWeights {
    /// Validator hotkey, SS58.
    pub validator: String,
    /// Validator round number at which these weights were set.
    pub round: u64,
    /// Unix ms when signed.
    pub timestamp_ms: u64,
    /// (uid, weight) pairs, ascending uid, no duplicates, zeros omitted.
    pub weights: Vec<(u16, u16)>,
    /// Signature over the signing payload, hex.
    pub signature: String,
}

/// Why a weight vector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    /// Bad signature or key.
    #[error("bad signature")]
    BadSignature,
    /// Unsorted or duplicate uids.
    #[error("malformed weights: {0}")]
    Malformed(String),
}

impl SignedWeights {
    /// Builds and signs a weight vector.
    pub fn sign(_key: &Hotkey, _round: u64, _timestamp_ms: u64, _weights: Vec<(u16, u16)>) -> Self {
        todo!("H2")
    }
    /// The exact signed bytes (see docs/protocol.md).
    pub fn signing_payload(&self) -> Vec<u8> {
        todo!("H2")
    }
    /// Checks structure and the signature; returns the signer.
    pub fn verify(&self) -> Result<PublicKey, WeightsError> {
        todo!("H2")
    }
}
