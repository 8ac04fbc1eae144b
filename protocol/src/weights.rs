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

// ---------------------------------------------------------------------------------------
// Weights wire format v2: commit-reveal, work proofs, round-tied messages, evidence.
// ---------------------------------------------------------------------------------------

use crate::Hash32;
use crate::signing::{Receipt, RequestEnvelope};

/// Version of [`WeightsMessage`] (the `version` field). v1 was [`SignedWeights`], which
/// published a round's weights in the clear as soon as they were computed.
pub const WEIGHTS_VERSION: u32 = 2;
/// Domain tag of a [`WeightsMessage`]'s signing payload.
pub const WEIGHTS_V2_TAG: &[u8] = b"polylith/v2/weights";
/// Domain tag of a weights commitment (the hash a round's message carries).
pub const COMMIT_TAG: &[u8] = b"polylith/v2/weights-commit";
/// Domain tag of the digest over a reveal's work proofs.
pub const PROOFS_TAG: &[u8] = b"polylith/v2/work-proofs";
/// Domain tag of a message's identity hash (what `seen` lists and evidence compare).
pub const MESSAGE_HASH_TAG: &[u8] = b"polylith/v2/weights-message";

/// One query the validator sent and the miner's signed receipt for it: the request's
/// signing fields let anyone recompute the request hash the receipt names and check that
/// the validator itself signed the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkProof {
    /// HTTP method the request was signed for.
    pub method: String,
    /// Path the request was signed for.
    pub path: String,
    /// The request's envelope, signature included.
    pub envelope: RequestEnvelope,
    /// The miner's receipt for it.
    pub receipt: Receipt,
}

/// Why a work proof does not prove that a validator queried a miner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The request was sent by another key.
    #[error("request sender {0} is not the validator")]
    WrongSender(String),
    /// The request or receipt names another miner.
    #[error("request or receipt is for another miner")]
    WrongMiner,
    /// The validator's request signature does not verify.
    #[error("request signature does not verify")]
    BadRequestSignature,
    /// The receipt names another request.
    #[error("receipt is for another request")]
    RequestHashMismatch,
    /// The miner's receipt signature does not verify.
    #[error("receipt signature does not verify")]
    BadReceiptSignature,
    /// Signed outside the allowed time window.
    #[error("request signed at {0} ms, outside the scoring window")]
    OutsideWindow(u64),
}

impl WorkProof {
    /// Checks that `validator` signed the request, to `miner`, within `[from_ms, to_ms]`,
    /// and that `miner` signed a receipt for exactly that request.
    pub fn verify(
        &self,
        validator: &PublicKey,
        miner: &PublicKey,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<(), ProofError> {
        let env = &self.envelope;
        if PublicKey::from_ss58(&env.sender).ok() != Some(*validator) {
            return Err(ProofError::WrongSender(env.sender.clone()));
        }
        if PublicKey::from_ss58(&env.receiver).ok() != Some(*miner)
            || PublicKey::from_ss58(&self.receipt.miner).ok() != Some(*miner)
        {
            return Err(ProofError::WrongMiner);
        }
        if env.timestamp_ms < from_ms || env.timestamp_ms > to_ms {
            return Err(ProofError::OutsideWindow(env.timestamp_ms));
        }
        let req_sig = Signature::from_hex(&env.signature).ok_or(ProofError::BadRequestSignature)?;
        validator
            .verify(&env.signing_payload(&self.method, &self.path), &req_sig)
            .map_err(|_| ProofError::BadRequestSignature)?;
        let hash = hex::encode(env.request_hash(&self.method, &self.path));
        if hash != self.receipt.request_hash {
            return Err(ProofError::RequestHashMismatch);
        }
        let rec_sig =
            Signature::from_hex(&self.receipt.signature).ok_or(ProofError::BadReceiptSignature)?;
        miner
            .verify(&self.receipt.signing_payload(), &rec_sig)
            .map_err(|_| ProofError::BadReceiptSignature)?;
        Ok(())
    }

    /// Appends this proof's canonical bytes (every field, length-prefixed).
    fn encode(&self, out: &mut Vec<u8>) {
        let e = &self.envelope;
        for f in [
            self.method.as_bytes(),
            self.path.as_bytes(),
            e.sender.as_bytes(),
            e.receiver.as_bytes(),
            e.nonce.as_bytes(),
            &e.timestamp_ms.to_le_bytes(),
            e.body_hash.as_bytes(),
            e.signature.as_bytes(),
        ] {
            push_field(out, f);
        }
        push_field(out, &self.receipt.signing_payload());
        push_field(out, self.receipt.signature.as_bytes());
    }
}

/// blake3 over the work proofs, in order: what commitments and signatures cover instead of
/// the proofs themselves.
pub fn proofs_digest(proofs: &[WorkProof]) -> Hash32 {
    let mut bytes = Vec::with_capacity(32 + 1024 * proofs.len());
    push_field(&mut bytes, PROOFS_TAG);
    for p in proofs {
        p.encode(&mut bytes);
    }
    *blake3::hash(&bytes).as_bytes()
}

fn pairs_bytes(pairs: &[(u16, u16)]) -> Vec<u8> {
    pairs
        .iter()
        .flat_map(|&(uid, w)| {
            let mut b = [0u8; 4];
            b[..2].copy_from_slice(&uid.to_le_bytes());
            b[2..].copy_from_slice(&w.to_le_bytes());
            b
        })
        .collect()
}

fn check_pairs(pairs: &[(u16, u16)]) -> Result<(), WeightsError> {
    for pair in pairs.windows(2) {
        if pair[0].0 >= pair[1].0 {
            return Err(WeightsError::Malformed(format!(
                "uids must be strictly ascending, got {} then {}",
                pair[0].0, pair[1].0
            )));
        }
    }
    if let Some((uid, _)) = pairs.iter().find(|&&(_, w)| w == 0) {
        return Err(WeightsError::Malformed(format!(
            "zero weight listed for uid {uid}"
        )));
    }
    Ok(())
}

/// The opening of an earlier round's commitment: that round's weights, the salt that hid
/// them, and the work proofs they were scored from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reveal {
    /// The round whose commitment this opens.
    pub round: u64,
    /// (uid, weight) pairs, strictly ascending uids, no zeros.
    pub weights: Vec<(u16, u16)>,
    /// 32 random bytes, hex: without it the commitment of a small vector could be guessed.
    pub salt: String,
    /// One proof per weighted uid (at least), from the round's own queries.
    pub proofs: Vec<WorkProof>,
}

impl Reveal {
    /// A reveal with canonical pairs (sorted, zeros dropped) and a fresh random salt.
    pub fn new(round: u64, mut weights: Vec<(u16, u16)>, proofs: Vec<WorkProof>) -> Self {
        weights.retain(|&(_, w)| w != 0);
        weights.sort_by_key(|&(uid, _)| uid);
        Self {
            round,
            weights,
            salt: hex::encode(rand::random::<[u8; 32]>()),
            proofs,
        }
    }

    /// The commitment `validator` publishes for this reveal's round:
    /// `blake3(field(tag) ‖ field(validator) ‖ field(u64le(round)) ‖ field(pairs) ‖
    /// field(proofs digest) ‖ field(salt text))`.
    pub fn commitment(&self, validator: &str) -> Hash32 {
        let mut b = Vec::with_capacity(200 + 4 * self.weights.len());
        push_field(&mut b, COMMIT_TAG);
        push_field(&mut b, validator.as_bytes());
        push_field(&mut b, &self.round.to_le_bytes());
        push_field(&mut b, &pairs_bytes(&self.weights));
        push_field(&mut b, &proofs_digest(&self.proofs));
        push_field(&mut b, self.salt.as_bytes());
        *blake3::hash(&b).as_bytes()
    }
}

/// One peer message a validator fetched and used: published so that two validators that
/// were shown different messages for the same round find out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeenMessage {
    /// The peer's hotkey, SS58.
    pub validator: String,
    /// The round of its message.
    pub round: u64,
    /// [`WeightsMessage::hash`], hex.
    pub hash: String,
}

/// What a validator publishes for one round (`GET /v1/weights`, wire format v2): the
/// commitment to this round's weights, the reveal of an earlier round's, and the hashes of
/// the peer messages it fetched this round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsMessage {
    /// Always [`WEIGHTS_VERSION`].
    pub version: u32,
    /// Validator hotkey, SS58.
    pub validator: String,
    /// The round this message belongs to.
    pub round: u64,
    /// Unix ms when signed.
    pub timestamp_ms: u64,
    /// [`Reveal::commitment`] of this round's weights, hex.
    pub commitment: String,
    /// The opening of round `round − reveal delay`, once there is one.
    pub reveal: Option<Reveal>,
    /// Peer messages fetched this round (sorted).
    pub seen: Vec<SeenMessage>,
    /// Signature over [`WeightsMessage::signing_payload`], hex.
    pub signature: String,
}

impl WeightsMessage {
    /// Builds and signs a message (`seen` is sorted first).
    pub fn sign(
        key: &Hotkey,
        round: u64,
        timestamp_ms: u64,
        commitment: Hash32,
        reveal: Option<Reveal>,
        mut seen: Vec<SeenMessage>,
    ) -> Self {
        seen.sort();
        let mut out = Self {
            version: WEIGHTS_VERSION,
            validator: key.public().to_ss58(),
            round,
            timestamp_ms,
            commitment: hex::encode(commitment),
            reveal,
            seen,
            signature: String::new(),
        };
        out.signature = key.sign(&out.signing_payload()).to_hex();
        out
    }

    /// The exact signed bytes (docs/protocol.md §4).
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(400);
        push_field(&mut out, WEIGHTS_V2_TAG);
        push_field(&mut out, &self.version.to_le_bytes());
        push_field(&mut out, self.validator.as_bytes());
        push_field(&mut out, &self.round.to_le_bytes());
        push_field(&mut out, &self.timestamp_ms.to_le_bytes());
        push_field(&mut out, self.commitment.as_bytes());
        match &self.reveal {
            None => push_field(&mut out, &[0]),
            Some(r) => {
                push_field(&mut out, &[1]);
                push_field(&mut out, &r.round.to_le_bytes());
                push_field(&mut out, &pairs_bytes(&r.weights));
                push_field(&mut out, r.salt.as_bytes());
                push_field(&mut out, &proofs_digest(&r.proofs));
            }
        }
        push_field(&mut out, &(self.seen.len() as u64).to_le_bytes());
        for s in &self.seen {
            push_field(&mut out, s.validator.as_bytes());
            push_field(&mut out, &s.round.to_le_bytes());
            push_field(&mut out, s.hash.as_bytes());
        }
        out
    }

    /// The message's identity: `blake3(field(tag) ‖ signing payload ‖ field(signature))`.
    pub fn hash(&self) -> Hash32 {
        let mut b = Vec::with_capacity(512);
        push_field(&mut b, MESSAGE_HASH_TAG);
        b.extend_from_slice(&self.signing_payload());
        push_field(&mut b, self.signature.as_bytes());
        *blake3::hash(&b).as_bytes()
    }

    /// Checks version, structure and signature; returns the signer.
    ///
    /// Structure: a 64-hex commitment, a reveal (if any) for an earlier round with strictly
    /// ascending nonzero pairs and a 64-hex salt.
    pub fn verify(&self) -> Result<PublicKey, WeightsError> {
        if self.version != WEIGHTS_VERSION {
            return Err(WeightsError::Malformed(format!(
                "version {} (expected {WEIGHTS_VERSION})",
                self.version
            )));
        }
        if crate::gemm::parse_hash(&self.commitment).is_none() {
            return Err(WeightsError::Malformed(
                "commitment is not 32-byte hex".into(),
            ));
        }
        if let Some(r) = &self.reveal {
            if r.round >= self.round {
                return Err(WeightsError::Malformed(format!(
                    "reveal of round {} in the message of round {}",
                    r.round, self.round
                )));
            }
            check_pairs(&r.weights)?;
            if crate::gemm::parse_hash(&r.salt).is_none() {
                return Err(WeightsError::Malformed("salt is not 32-byte hex".into()));
            }
        }
        let key = PublicKey::from_ss58(&self.validator).map_err(|_| WeightsError::BadSignature)?;
        let sig = Signature::from_hex(&self.signature).ok_or(WeightsError::BadSignature)?;
        key.verify(&self.signing_payload(), &sig)
            .map_err(|_| WeightsError::BadSignature)?;
        Ok(key)
    }
}

/// Proof that one validator signed two different messages for the same round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// One message.
    pub first: WeightsMessage,
    /// Another message by the same validator for the same round.
    pub second: WeightsMessage,
}

impl Evidence {
    /// Evidence from two messages, if they are a valid equivocation: both verify, same
    /// signer and round, different signed contents. The pair is ordered by hash so that every
    /// validator holding the same two messages holds the same evidence.
    pub fn new(a: WeightsMessage, b: WeightsMessage) -> Option<Self> {
        let (ka, kb) = (a.verify().ok()?, b.verify().ok()?);
        if ka != kb || a.round != b.round {
            return None;
        }
        // sr25519 signatures are randomised, so one content signed twice gives two hashes:
        // only different signed contents are an equivocation.
        if a.signing_payload() == b.signing_payload() {
            return None;
        }
        let (ha, hb) = (a.hash(), b.hash());
        match ha.cmp(&hb) {
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Less => Some(Self {
                first: a,
                second: b,
            }),
            std::cmp::Ordering::Greater => Some(Self {
                first: b,
                second: a,
            }),
        }
    }

    /// Re-checks the evidence (e.g. received from a peer); returns the equivocator and round.
    pub fn verify(&self) -> Option<(PublicKey, u64)> {
        let e = Self::new(self.first.clone(), self.second.clone())?;
        Some((e.first.verify().ok()?, e.first.round))
    }
}

#[cfg(test)]
mod v2_tests {
    use super::*;
    use proptest::prelude::*;

    fn proof(validator: &Hotkey, miner: &Hotkey, ts: u64) -> WorkProof {
        let envelope =
            RequestEnvelope::sign(validator, &miner.public(), "POST", "/v1/x", b"{}", ts);
        let receipt = Receipt {
            miner: miner.public().to_ss58(),
            request_hash: hex::encode(envelope.request_hash("POST", "/v1/x")),
            response_hash: hex::encode([0u8; 32]),
            model_hash: String::new(),
            received_ms: ts,
            compute_us: 1,
            ttft_us: 0,
            total_us: 1,
            tokens: 0,
            signature: String::new(),
        }
        .sign(miner);
        WorkProof {
            method: "POST".into(),
            path: "/v1/x".into(),
            envelope,
            receipt,
        }
    }

    #[test]
    fn work_proof_binds_validator_miner_request_and_time() {
        let (v, m, other) = (Hotkey::generate(), Hotkey::generate(), Hotkey::generate());
        let p = proof(&v, &m, 1_000);
        assert_eq!(p.verify(&v.public(), &m.public(), 0, 2_000), Ok(()));
        assert!(matches!(
            p.verify(&other.public(), &m.public(), 0, 2_000),
            Err(ProofError::WrongSender(_))
        ));
        assert_eq!(
            p.verify(&v.public(), &other.public(), 0, 2_000),
            Err(ProofError::WrongMiner)
        );
        assert_eq!(
            p.verify(&v.public(), &m.public(), 1_001, 2_000),
            Err(ProofError::OutsideWindow(1_000))
        );
        // A copier re-labelling someone else's proof as its own breaks the request signature.
        let mut stolen = p.clone();
        stolen.envelope.sender = other.public().to_ss58();
        assert_eq!(
            stolen.verify(&other.public(), &m.public(), 0, 2_000),
            Err(ProofError::BadRequestSignature)
        );
        let mut forged = p.clone();
        forged.receipt.compute_us = 2;
        assert_eq!(
            forged.verify(&v.public(), &m.public(), 0, 2_000),
            Err(ProofError::BadReceiptSignature)
        );
        let mut other_req = proof(&v, &m, 1_000);
        other_req.receipt = p.receipt.clone();
        assert_eq!(
            other_req.verify(&v.public(), &m.public(), 0, 2_000),
            Err(ProofError::RequestHashMismatch)
        );
    }

    #[test]
    fn messages_sign_verify_and_evidence_needs_two_different_ones() {
        let k = Hotkey::generate();
        let r = Reveal::new(1, vec![(5, 10), (2, 65_535), (3, 0)], vec![]);
        assert_eq!(r.weights, vec![(2, 65_535), (5, 10)]);
        let a = WeightsMessage::sign(&k, 3, 10, [1; 32], Some(r.clone()), vec![]);
        assert_eq!(a.verify(), Ok(k.public()));
        let b = WeightsMessage::sign(&k, 3, 11, [1; 32], Some(r), vec![]);
        assert!(
            Evidence::new(a.clone(), a.clone()).is_none(),
            "same message"
        );
        let resigned = WeightsMessage::sign(&k, 3, 10, [1; 32], a.reveal.clone(), vec![]);
        assert_ne!(
            resigned.hash(),
            a.hash(),
            "sr25519 signatures are randomised"
        );
        assert!(
            Evidence::new(a.clone(), resigned).is_none(),
            "one content signed twice is no equivocation"
        );
        let e = Evidence::new(b.clone(), a.clone()).expect("equivocation");
        assert_eq!(e.verify(), Some((k.public(), 3)));
        assert_eq!(Evidence::new(a.clone(), b.clone()), Some(e));
        let c = WeightsMessage::sign(&k, 4, 11, [1; 32], None, vec![]);
        assert!(Evidence::new(a.clone(), c).is_none(), "other round");
        let d = WeightsMessage::sign(&Hotkey::generate(), 3, 11, [1; 32], None, vec![]);
        assert!(Evidence::new(a.clone(), d).is_none(), "other signer");
        let mut t = b.clone();
        t.timestamp_ms = 12;
        assert!(
            Evidence::new(a, t).is_none(),
            "tampered message is no evidence"
        );
    }

    #[test]
    fn structural_problems_are_refused() {
        let k = Hotkey::generate();
        let mut late = Reveal::new(5, vec![(1, 1)], vec![]);
        assert!(
            WeightsMessage::sign(&k, 5, 1, [0; 32], Some(late.clone()), vec![])
                .verify()
                .is_err()
        );
        late.round = 4;
        late.salt = "zz".into();
        assert!(
            WeightsMessage::sign(&k, 5, 1, [0; 32], Some(late), vec![])
                .verify()
                .is_err()
        );
        let mut m = WeightsMessage::sign(&k, 5, 1, [0; 32], None, vec![]);
        m.version = 1;
        assert!(m.verify().is_err());
    }

    proptest! {
        /// The commitment binds every revealed field: changing the round, a weight, the
        /// salt or the validator changes it.
        #[test]
        fn commitment_binds_every_field(
            pairs in proptest::collection::btree_map(0u16..512, 1u16.., 1..20),
            round in 1u64..1_000_000,
            pick in any::<proptest::sample::Index>(),
        ) {
            let r = Reveal::new(round, pairs.into_iter().collect(), vec![]);
            let c = r.commitment("v");
            prop_assert_ne!(c, r.commitment("w"));
            let mut x = r.clone();
            x.round += 1;
            prop_assert_ne!(c, x.commitment("v"));
            let mut y = r.clone();
            let i = pick.index(y.weights.len());
            y.weights[i].1 = y.weights[i].1.wrapping_add(1).max(1);
            prop_assert_ne!(c, y.commitment("v"));
            let mut z = r.clone();
            z.salt = hex::encode(rand::random::<[u8; 32]>());
            prop_assert_ne!(c, z.commitment("v"));
        }
    }
}
