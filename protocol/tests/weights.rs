//! Signed weight vectors: canonical form, structure checks and signatures.

use polylith_protocol::keys::Hotkey;
use polylith_protocol::weights::*;
use proptest::prelude::*;

fn key() -> Hotkey {
    Hotkey::from_seed(&[7; 32]).unwrap()
}

#[test]
fn signed_weights_verify_and_return_the_validator() {
    let k = key();
    let w = SignedWeights::sign(
        &k,
        12,
        1_700_000_000_000,
        vec![(5, 100), (1, 65535), (3, 0)],
    );
    // Canonical form: sorted by uid, zero weights dropped.
    assert_eq!(w.weights, vec![(1, 65535), (5, 100)]);
    assert_eq!(w.verify().unwrap(), k.public());
    // Survives JSON (the GET /v1/weights body).
    let back: SignedWeights = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
    assert_eq!(back.verify().unwrap(), k.public());
    assert!(SignedWeights::sign(&k, 0, 0, vec![]).verify().is_ok());
}

#[test]
fn unsorted_duplicate_or_zero_weights_are_malformed() {
    let k = key();
    let dup = SignedWeights::sign(&k, 1, 1, vec![(2, 5), (2, 6)]);
    assert!(matches!(dup.verify(), Err(WeightsError::Malformed(_))));
    let mut unsorted = SignedWeights::sign(&k, 1, 1, vec![(1, 5), (2, 6)]);
    unsorted.weights.reverse();
    assert!(matches!(unsorted.verify(), Err(WeightsError::Malformed(_))));
    let mut zero = SignedWeights::sign(&k, 1, 1, vec![(1, 5)]);
    zero.weights.push((4, 0));
    assert!(matches!(zero.verify(), Err(WeightsError::Malformed(_))));
}

#[test]
fn bad_signatures_and_keys_are_refused() {
    let k = key();
    let w = SignedWeights::sign(&k, 3, 9, vec![(0, 10), (1, 20)]);
    let mut other_signer = w.clone();
    other_signer.validator = Hotkey::from_seed(&[8; 32]).unwrap().public().to_ss58();
    assert_eq!(other_signer.verify(), Err(WeightsError::BadSignature));
    let mut junk_key = w.clone();
    junk_key.validator = "nope".into();
    assert_eq!(junk_key.verify(), Err(WeightsError::BadSignature));
    let mut junk_sig = w.clone();
    junk_sig.signature = "00".into();
    assert_eq!(junk_sig.verify(), Err(WeightsError::BadSignature));
}

#[test]
fn payload_is_domain_tagged_and_length_prefixed() {
    let w = SignedWeights {
        validator: "V".into(),
        round: 2,
        timestamp_ms: 3,
        weights: vec![(0x0102, 0x0304)],
        signature: String::new(),
    };
    let mut want = Vec::new();
    for f in [
        &b"polylith/v1/weights"[..],
        b"V",
        &2u64.to_le_bytes(),
        &3u64.to_le_bytes(),
        &[0x02, 0x01, 0x04, 0x03],
    ] {
        want.extend_from_slice(&(f.len() as u32).to_le_bytes());
        want.extend_from_slice(f);
    }
    assert_eq!(w.signing_payload(), want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Changing the round, the timestamp or any weight breaks the signature.
    #[test]
    fn tampering_fails(
        pairs in prop::collection::btree_map(any::<u16>(), 1u16.., 1..20),
        which in 0usize..3,
        pick in any::<prop::sample::Index>(),
        delta in 1u16..,
    ) {
        let k = key();
        let w = SignedWeights::sign(&k, 5, 6, pairs.into_iter().collect());
        prop_assert!(w.verify().is_ok());
        let mut t = w.clone();
        match which {
            0 => t.round ^= delta as u64,
            1 => t.timestamp_ms ^= delta as u64,
            _ => {
                let i = pick.index(t.weights.len());
                t.weights[i].1 = t.weights[i].1.wrapping_add(delta).max(1);
            }
        }
        prop_assume!(t != w);
        prop_assert!(t.verify().is_err());
    }
}
