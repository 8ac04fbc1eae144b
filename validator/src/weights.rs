//! Pure rules of the weights exchange (docs/protocol.md §4): the commit-reveal schedule,
//! which revealed vectors enter an epoch (commitment and work-proof coverage), the copier's
//! median, and the peer body cap. No I/O here, so every rule is unit- and property-tested.

use polylith_protocol::keys::PublicKey;
use polylith_protocol::weights::{ProofError, Reveal, WeightsMessage};
use std::collections::BTreeMap;

/// How far ahead of the commitment time a work proof's request may be signed (clock skew).
const PROOF_FUTURE_SKEW_MS: u64 = 60_000;

/// Round arithmetic of commit-reveal.
///
/// Round `r`'s message commits to round `r`'s weights and reveals round `r − delay`'s. The
/// epoch of round `t` uses the vectors revealed in the messages of round `t − 2`: those were
/// fetched in round `t − 1` and cross-checked (equivocation) against every peer's `seen`
/// list in round `t`, so all honest validators hold the same set when they run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Rounds between a commitment and its reveal (at least 2).
    pub delay: u64,
}

impl Schedule {
    /// The round whose weights the message of `round` reveals, if any.
    pub fn reveal_round(self, round: u64) -> Option<u64> {
        round.checked_sub(self.delay).filter(|r| *r >= 1)
    }

    /// The round of the messages whose reveals the epoch of `round` uses.
    pub fn source_round(self, round: u64) -> Option<u64> {
        round.checked_sub(2).filter(|r| *r >= 1)
    }

    /// The round whose weights the epoch of `round` uses.
    pub fn epoch_weights_round(self, round: u64) -> Option<u64> {
        self.source_round(round).and_then(|s| self.reveal_round(s))
    }
}

/// Why a validator's revealed vector stays out of an epoch (the `outcome` metric label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevealError {
    /// No message of the source round, or it reveals another round (or nothing).
    #[error("no reveal of round {0}")]
    Missing(u64),
    /// The message committing to the revealed round was not seen in time.
    #[error("commitment of round {0} was not seen")]
    NoCommitment(u64),
    /// The reveal does not open the commitment.
    #[error("reveal does not match the commitment of round {0}")]
    CommitmentMismatch(u64),
    /// A weighted uid is not a miner of the metagraph.
    #[error("uid {0} is weighted but is not a miner")]
    NotAMiner(u16),
    /// A weighted miner has no work proof.
    #[error("uid {0} is weighted without a work proof")]
    MissingProof(u16),
    /// A sampled work proof does not verify.
    #[error("work proof for uid {uid}: {error}")]
    BadProof {
        /// The miner.
        uid: u16,
        /// What was wrong.
        error: ProofError,
    },
    /// The validator signed two messages for one round.
    #[error("equivocation evidence is held against this validator")]
    Equivocation,
}

impl RevealError {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            RevealError::Missing(_) => "missing",
            RevealError::NoCommitment(_) => "no_commitment",
            RevealError::CommitmentMismatch(_) => "commitment_mismatch",
            RevealError::NotAMiner(_) => "not_a_miner",
            RevealError::MissingProof(_) => "missing_proof",
            RevealError::BadProof { .. } => "bad_proof",
            RevealError::Equivocation => "equivocation",
        }
    }

    /// Every label, for pre-creating metric series.
    pub const LABELS: [&'static str; 7] = [
        "missing",
        "no_commitment",
        "commitment_mismatch",
        "not_a_miner",
        "missing_proof",
        "bad_proof",
        "equivocation",
    ];
}

/// Which proofs a sampled check verifies fully.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck {
    /// Proofs older than this before the commitment's signing time do not count, ms.
    pub window_ms: u64,
    /// Weighted uids whose proof is verified (signatures); 0 verifies all.
    pub sample: usize,
    /// Seed choosing the sample (the verifier's own randomness, so the vector's author cannot
    /// know which proofs are checked).
    pub seed: u64,
}

/// The weights `validator` revealed for round `round`, if they may enter the epoch: the
/// reveal opens the commitment in `commit` (the validator's message of `round`), every
/// weighted uid is a miner (`miners`: uid → hotkey) with a work proof whose request `validator`
/// signed to that miner within `check.window_ms` before the commitment, and the sampled
/// proofs' signatures verify.
pub fn accept_reveal(
    validator: &PublicKey,
    round: u64,
    source: Option<&WeightsMessage>,
    commit: Option<&WeightsMessage>,
    miners: &BTreeMap<u16, PublicKey>,
    check: ProofCheck,
) -> Result<Vec<(u16, u16)>, RevealError> {
    let reveal: &Reveal = source
        .and_then(|m| m.reveal.as_ref())
        .filter(|r| r.round == round)
        .ok_or(RevealError::Missing(round))?;
    let commit = commit
        .filter(|c| c.round == round)
        .ok_or(RevealError::NoCommitment(round))?;
    if hex::encode(reveal.commitment(&validator.to_ss58())) != commit.commitment {
        return Err(RevealError::CommitmentMismatch(round));
    }
    let to = commit.timestamp_ms.saturating_add(PROOF_FUTURE_SKEW_MS);
    let from = commit.timestamp_ms.saturating_sub(check.window_ms);
    // Index proofs by the miner they claim; the full check below re-derives everything.
    let mut by_miner: BTreeMap<PublicKey, Vec<usize>> = BTreeMap::new();
    for (i, p) in reveal.proofs.iter().enumerate() {
        if let Ok(k) = PublicKey::from_ss58(&p.envelope.receiver) {
            by_miner.entry(k).or_default().push(i);
        }
    }
    let mut covered: Vec<(u16, &PublicKey, &[usize])> = Vec::with_capacity(reveal.weights.len());
    for &(uid, _) in &reveal.weights {
        let key = miners.get(&uid).ok_or(RevealError::NotAMiner(uid))?;
        let idx = by_miner
            .get(key)
            .map(Vec::as_slice)
            .filter(|v| !v.is_empty())
            .ok_or(RevealError::MissingProof(uid))?;
        covered.push((uid, key, idx));
    }
    let n = covered.len();
    let sampled: Vec<usize> = if check.sample == 0 || check.sample >= n {
        (0..n).collect()
    } else {
        sample_indices(n, check.sample, check.seed)
    };
    for i in sampled {
        let Some((uid, key, idx)) = covered.get(i) else {
            continue;
        };
        // One proof per miner must hold; later ones are spares (a validator may keep several).
        let mut last = None;
        let ok = idx.iter().any(|&j| match reveal.proofs.get(j) {
            Some(p) => match p.verify(validator, key, from, to) {
                Ok(()) => true,
                Err(e) => {
                    last = Some(e);
                    false
                }
            },
            None => false,
        });
        if !ok {
            return Err(match last {
                Some(error) => RevealError::BadProof { uid: *uid, error },
                None => RevealError::MissingProof(*uid),
            });
        }
    }
    Ok(reveal.weights.clone())
}

/// `k` distinct indices below `n` drawn by a small deterministic generator (splitmix64).
fn sample_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    // Partial Fisher-Yates over 0..n.
    let mut all: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    for i in 0..k {
        let span = (n - i) as u64;
        let j = i + (next() % span) as usize;
        all.swap(i, j);
    }
    all.truncate(k);
    all
}

/// The per-uid median of several weight vectors, each normalised to its own maximum first;
/// what a weight copier publishes. Max-upscaled to u16, zeros dropped.
pub fn median_weights(vectors: &[Vec<(u16, u16)>]) -> Vec<(u16, u16)> {
    if vectors.is_empty() {
        return Vec::new();
    }
    let mut columns: BTreeMap<u16, Vec<f64>> = BTreeMap::new();
    for v in vectors {
        let max = v.iter().map(|(_, w)| *w).max().unwrap_or(0);
        for &(uid, w) in v {
            if max > 0 {
                columns
                    .entry(uid)
                    .or_default()
                    .push(f64::from(w) / f64::from(max));
            }
        }
    }
    let uids: Vec<u16> = columns.keys().copied().collect();
    let medians: Vec<f64> = columns
        .into_values()
        .map(|mut c| {
            // Vectors that leave the uid out weight it 0.
            c.resize(vectors.len(), 0.0);
            c.sort_by(f64::total_cmp);
            let m = c.len() / 2;
            if c.len() % 2 == 1 {
                c[m]
            } else {
                (c[m - 1] + c[m]) / 2.0
            }
        })
        .collect();
    uids.into_iter()
        .zip(polylith_scoring::speed::max_upscale_u16(&medians))
        .filter(|(_, w)| *w > 0)
        .collect()
}

/// Largest peer weights body read for a subnet of `n` uids: 64 KiB of fixed fields plus,
/// per uid, a weight pair and one work proof (~1 KiB as JSON; 2 KiB allowed) and a `seen`
/// entry. A 4,096-uid subnet allows ~8.3 MiB.
pub fn peer_body_cap(n: usize) -> usize {
    (64usize << 10).saturating_add(n.saturating_mul(2 << 10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use polylith_protocol::keys::Hotkey;
    use polylith_protocol::signing::{Receipt, RequestEnvelope};
    use polylith_protocol::weights::WorkProof;
    use proptest::prelude::*;

    fn proof(v: &Hotkey, m: &Hotkey, ts: u64) -> WorkProof {
        let envelope = RequestEnvelope::sign(v, &m.public(), "POST", "/p", b"{}", ts);
        let receipt = Receipt {
            miner: m.public().to_ss58(),
            request_hash: hex::encode(envelope.request_hash("POST", "/p")),
            response_hash: hex::encode([0u8; 32]),
            model_hash: String::new(),
            received_ms: ts,
            compute_us: 1,
            ttft_us: 0,
            total_us: 1,
            tokens: 0,
            signature: String::new(),
        }
        .sign(m);
        WorkProof {
            method: "POST".into(),
            path: "/p".into(),
            envelope,
            receipt,
        }
    }

    struct Setup {
        v: Hotkey,
        miners: Vec<Hotkey>,
        map: BTreeMap<u16, PublicKey>,
    }

    fn setup(n: u16) -> Setup {
        let miners: Vec<Hotkey> = (0..n).map(|_| Hotkey::generate()).collect();
        let map = miners
            .iter()
            .enumerate()
            .map(|(i, k)| (i as u16 + 1, k.public()))
            .collect();
        Setup {
            v: Hotkey::generate(),
            miners,
            map,
        }
    }

    const CHECK: ProofCheck = ProofCheck {
        window_ms: 10_000,
        sample: 0,
        seed: 7,
    };

    fn messages(
        s: &Setup,
        weights: Vec<(u16, u16)>,
        proofs: Vec<WorkProof>,
    ) -> (WeightsMessage, WeightsMessage) {
        let reveal = Reveal::new(3, weights, proofs);
        let commit = WeightsMessage::sign(
            &s.v,
            3,
            100_000,
            reveal.commitment(&s.v.public().to_ss58()),
            None,
            vec![],
        );
        let source = WeightsMessage::sign(&s.v, 5, 110_000, [0; 32], Some(reveal), vec![]);
        (commit, source)
    }

    #[test]
    fn schedule_reveals_after_the_delay_and_epochs_use_cross_checked_rounds() {
        let s = Schedule { delay: 2 };
        assert_eq!(s.reveal_round(2), None);
        assert_eq!(s.reveal_round(3), Some(1));
        assert_eq!(s.source_round(2), None);
        assert_eq!(s.source_round(3), Some(1));
        assert_eq!(s.epoch_weights_round(4), None);
        assert_eq!(s.epoch_weights_round(5), Some(1));
        assert_eq!(s.epoch_weights_round(10), Some(6));
    }

    #[test]
    fn a_covered_reveal_is_accepted_and_every_gap_is_named() {
        let s = setup(3);
        let proofs: Vec<_> = s.miners.iter().map(|m| proof(&s.v, m, 99_000)).collect();
        let w = vec![(1, 65_535), (2, 100), (3, 7)];
        let (c, src) = messages(&s, w.clone(), proofs.clone());
        let vp = s.v.public();
        assert_eq!(
            accept_reveal(&vp, 3, Some(&src), Some(&c), &s.map, CHECK),
            Ok(w.clone())
        );
        assert_eq!(
            accept_reveal(&vp, 4, Some(&src), Some(&c), &s.map, CHECK),
            Err(RevealError::Missing(4))
        );
        assert_eq!(
            accept_reveal(&vp, 3, Some(&src), None, &s.map, CHECK),
            Err(RevealError::NoCommitment(3))
        );
        // Another validator's commitment does not open.
        let other = Hotkey::generate();
        assert_eq!(
            accept_reveal(&other.public(), 3, Some(&src), Some(&c), &s.map, CHECK),
            Err(RevealError::CommitmentMismatch(3))
        );
        // A weighted miner without a proof: the copier that queried nobody.
        let (c2, src2) = messages(&s, w.clone(), proofs[..2].to_vec());
        assert_eq!(
            accept_reveal(&vp, 3, Some(&src2), Some(&c2), &s.map, CHECK),
            Err(RevealError::MissingProof(3))
        );
        let (c3, src3) = messages(&s, vec![(9, 1)], vec![]);
        assert_eq!(
            accept_reveal(&vp, 3, Some(&src3), Some(&c3), &s.map, CHECK),
            Err(RevealError::NotAMiner(9))
        );
        // Proofs from another validator's queries (copied receipts).
        let thief = Hotkey::generate();
        let stolen: Vec<_> = s.miners.iter().map(|m| proof(&thief, m, 99_000)).collect();
        let (c4, src4) = messages(&s, w.clone(), stolen);
        assert!(matches!(
            accept_reveal(&vp, 3, Some(&src4), Some(&c4), &s.map, CHECK),
            Err(RevealError::BadProof { uid: 1, .. })
        ));
        // Old receipts do not back this round's weights.
        let old: Vec<_> = s.miners.iter().map(|m| proof(&s.v, m, 80_000)).collect();
        let (c5, src5) = messages(&s, w, old);
        assert!(matches!(
            accept_reveal(&vp, 3, Some(&src5), Some(&c5), &s.map, CHECK),
            Err(RevealError::BadProof {
                error: ProofError::OutsideWindow(_),
                ..
            })
        ));
    }

    #[test]
    fn median_of_normalised_vectors() {
        let m = median_weights(&[
            vec![(1, 65_535), (2, 32_768)],
            vec![(1, 100), (2, 100)],
            vec![(1, 65_535)],
        ]);
        assert_eq!(m, vec![(1, 65_535), (2, 32_768)]);
        assert!(median_weights(&[]).is_empty());
    }

    #[test]
    fn peer_cap_fits_a_4096_uid_vector_with_proofs() {
        let cap = peer_body_cap(4096);
        assert!(cap > 4096 * 1500 && cap < 16 << 20, "{cap}");
    }

    proptest! {
        /// Samples are distinct, in range, and of the asked size.
        #[test]
        fn samples_are_distinct_and_in_range(n in 1usize..300, k in 1usize..300, seed in any::<u64>()) {
            let s = sample_indices(n, k, seed);
            prop_assert_eq!(s.len(), k.min(n));
            let set: std::collections::BTreeSet<_> = s.iter().copied().collect();
            prop_assert_eq!(set.len(), s.len());
            prop_assert!(s.iter().all(|i| *i < n));
        }

        /// The median lies between the smallest and largest normalised weight of each uid,
        /// and the copy never weights a uid that no vector weights.
        #[test]
        fn median_stays_within_the_inputs(
            vs in proptest::collection::vec(proptest::collection::btree_map(0u16..8, 1u16.., 1..6), 1..6)
        ) {
            let vectors: Vec<Vec<(u16, u16)>> = vs.into_iter().map(|m| m.into_iter().collect()).collect();
            let m = median_weights(&vectors);
            for (uid, _) in &m {
                prop_assert!(vectors.iter().any(|v| v.iter().any(|(u, _)| u == uid)));
            }
            prop_assert!(m.windows(2).all(|p| p[0].0 < p[1].0));
        }
    }
}
