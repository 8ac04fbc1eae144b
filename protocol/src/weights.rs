//! Signed weight vectors a validator publishes at `GET /v1/weights`.
//!
//! Signing payload (docs/protocol.md §4): length-prefixed fields (u32 LE length, then
//! bytes) `polylith/v1/weights`, validator SS58, round (u64 LE), timestamp_ms (u64 LE), and
//! the pairs as one field of `uid (u16 LE) ‖ weight (u16 LE)` per pair.

use crate::keys::{Hotkey, PublicKey, Signature};
use crate::signing::push_field;
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

/// Domain tag of a weight vector's signing payload.
pub const WEIGHTS_TAG: &[u8] = b"polylith/v1/weights";

impl SignedWeights {
    /// Builds and signs a weight vector.
    ///
    /// The pairs are put in canonical form first: sorted by uid, zero weights dropped.
    /// Duplicate uids are kept (there is no right way to merge them), so such a vector
    /// fails [`SignedWeights::verify`].
    pub fn sign(key: &Hotkey, round: u64, timestamp_ms: u64, mut weights: Vec<(u16, u16)>) -> Self {
        weights.retain(|&(_, w)| w != 0);
        weights.sort_by_key(|&(uid, _)| uid);
        let mut out = Self {
            validator: key.public().to_ss58(),
            round,
            timestamp_ms,
            weights,
            signature: String::new(),
        };
        out.signature = key.sign(&out.signing_payload()).to_hex();
        out
    }
    /// The exact signed bytes (see docs/protocol.md).
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(120 + 4 * self.weights.len());
        push_field(&mut out, WEIGHTS_TAG);
        push_field(&mut out, self.validator.as_bytes());
        push_field(&mut out, &self.round.to_le_bytes());
        push_field(&mut out, &self.timestamp_ms.to_le_bytes());
        let pairs: Vec<u8> = self
            .weights
            .iter()
            .flat_map(|&(uid, w)| {
                let mut b = [0u8; 4];
                b[..2].copy_from_slice(&uid.to_le_bytes());
                b[2..].copy_from_slice(&w.to_le_bytes());
                b
            })
            .collect();
        push_field(&mut out, &pairs);
        out
    }
    /// Checks structure and the signature; returns the signer.
    ///
    /// Structure: uids strictly ascending (so sorted and unique) and no zero weights.
    pub fn verify(&self) -> Result<PublicKey, WeightsError> {
        for pair in self.weights.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return Err(WeightsError::Malformed(format!(
                    "uids must be strictly ascending, got {} then {}",
                    pair[0].0, pair[1].0
                )));
            }
        }
        if let Some((uid, _)) = self.weights.iter().find(|&&(_, w)| w == 0) {
            return Err(WeightsError::Malformed(format!(
                "zero weight listed for uid {uid}"
            )));
        }
        let key = PublicKey::from_ss58(&self.validator).map_err(|_| WeightsError::BadSignature)?;
        let sig = Signature::from_hex(&self.signature).ok_or(WeightsError::BadSignature)?;
        key.verify(&self.signing_payload(), &sig)
            .map_err(|_| WeightsError::BadSignature)?;
        Ok(key)
    }
}
