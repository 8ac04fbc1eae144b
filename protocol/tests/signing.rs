//! The signed request envelope, the nonce cache and miner receipts: every rejection has its
//! reason and status, and tampering with any signed field fails verification.

use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::signing::*;
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000_000;
const WINDOW: u64 = 30_000;
const PATH: &str = "/v1/gemm/commit";
const BODY: &[u8] = br#"{"spec":{"seed":1,"n":4,"k":8,"m":4}}"#;

struct Keys {
    validator: Hotkey,
    miner: Hotkey,
}

fn keys() -> Keys {
    Keys {
        validator: Hotkey::from_seed(&[1; 32]).unwrap(),
        miner: Hotkey::from_seed(&[2; 32]).unwrap(),
    }
}

fn signed(k: &Keys) -> RequestEnvelope {
    RequestEnvelope::sign(&k.validator, &k.miner.public(), "POST", PATH, BODY, NOW)
}

fn verify(env: &RequestEnvelope, k: &Keys) -> Result<PublicKey, Rejection> {
    env.verify("POST", PATH, BODY, &k.miner.public(), NOW, WINDOW)
}

#[test]
fn honest_envelope_verifies_and_returns_the_sender() {
    let k = keys();
    let env = signed(&k);
    assert_eq!(verify(&env, &k), Ok(k.validator.public()));
    assert_eq!(env.nonce.len(), 32);
    assert_eq!(env.body_hash, blake3_hex(BODY));
    // Timestamps at the edge of the window, both directions, are accepted.
    assert!(
        env.verify("POST", PATH, BODY, &k.miner.public(), NOW + WINDOW, WINDOW)
            .is_ok()
    );
    assert!(
        env.verify("POST", PATH, BODY, &k.miner.public(), NOW - WINDOW, WINDOW)
            .is_ok()
    );
    // Two signings never share a nonce.
    assert_ne!(signed(&k).nonce, env.nonce);
}

#[test]
fn each_rejection_has_its_reason_and_status() {
    let k = keys();
    let me = k.miner.public();
    let env = signed(&k);

    let mut unsigned = env.clone();
    unsigned.signature.clear();
    assert_eq!(verify(&unsigned, &k), Err(Rejection::MissingSignature));

    assert_eq!(
        env.verify("POST", PATH, b"other body", &me, NOW, WINDOW),
        Err(Rejection::BodyHashMismatch)
    );

    let mut forged = env.clone();
    forged.signature = k.miner.sign(&env.signing_payload("POST", PATH)).to_hex();
    assert_eq!(verify(&forged, &k), Err(Rejection::BadSignature));

    // The same signature is not valid for another endpoint or method.
    assert_eq!(
        env.verify("POST", "/v1/gemm/open", BODY, &me, NOW, WINDOW),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        env.verify("PUT", PATH, BODY, &me, NOW, WINDOW),
        Err(Rejection::BadSignature)
    );

    let other = Hotkey::from_seed(&[3; 32]).unwrap().public();
    assert_eq!(
        env.verify("POST", PATH, BODY, &other, NOW, WINDOW),
        Err(Rejection::WrongReceiver)
    );

    for now in [NOW + WINDOW + 1, NOW - WINDOW - 1] {
        assert_eq!(
            env.verify("POST", PATH, BODY, &me, now, WINDOW),
            Err(Rejection::StaleTimestamp)
        );
    }

    let expected = [
        (Rejection::MissingSignature, "missing_signature", 401),
        (Rejection::Malformed("x".into()), "malformed", 400),
        (Rejection::BodyHashMismatch, "body_hash_mismatch", 400),
        (Rejection::BadSignature, "bad_signature", 401),
        (Rejection::WrongReceiver, "wrong_receiver", 421),
        (Rejection::StaleTimestamp, "stale_timestamp", 401),
        (Rejection::ReplayedNonce, "replayed_nonce", 409),
        (Rejection::UnknownSender, "unknown_sender", 403),
        (Rejection::InsufficientStake, "insufficient_stake", 403),
        (Rejection::Overloaded, "overloaded", 503),
        (
            Rejection::ReceiptMismatch("x".into()),
            "receipt_mismatch",
            502,
        ),
    ];
    for (r, reason, status) in expected {
        assert_eq!(r.reason(), reason);
        assert_eq!(r.http_status(), status, "{reason}");
    }
}

/// The reasons a miner can send are exactly the label values documented in docs/metrics.md.
#[test]
fn miner_rejection_reasons_are_documented_metric_labels() {
    let metrics =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
            .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.contains("polylith_miner_rejections_total"))
        .unwrap();
    for r in [
        Rejection::MissingSignature,
        Rejection::Malformed(String::new()),
        Rejection::BodyHashMismatch,
        Rejection::BadSignature,
        Rejection::WrongReceiver,
        Rejection::StaleTimestamp,
        Rejection::ReplayedNonce,
        Rejection::UnknownSender,
        Rejection::InsufficientStake,
        Rejection::Overloaded,
    ] {
        assert!(
            line.contains(r.reason()),
            "{} not in docs/metrics.md",
            r.reason()
        );
    }
}

#[test]
fn headers_round_trip_and_malformed_headers_are_rejected() {
    let k = keys();
    let env = signed(&k);
    let headers = env.to_headers();
    let lookup = |h: &Vec<(&'static str, String)>, name: &str| {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    };
    let parsed = RequestEnvelope::from_headers(|n| {
        headers
            .iter()
            .find(|(h, _)| *h == n)
            .map(|(_, v)| v.as_str())
    })
    .unwrap();
    assert_eq!(parsed, env);
    assert_eq!(lookup(&headers, H_TIMESTAMP), Some(NOW.to_string()));

    let parse_with = |name: &str, value: Option<&str>| {
        let mut h: Vec<(&str, String)> = headers
            .iter()
            .filter(|(n, _)| *n != name)
            .cloned()
            .collect();
        if let Some(v) = value {
            h.push((name, v.to_owned()));
        }
        RequestEnvelope::from_headers(|n| h.iter().find(|(x, _)| *x == n).map(|(_, v)| v.as_str()))
    };
    assert_eq!(
        parse_with(H_SIGNATURE, None),
        Err(Rejection::MissingSignature)
    );
    assert_eq!(
        parse_with(H_SIGNATURE, Some("  ")),
        Err(Rejection::MissingSignature)
    );
    // Nothing at all: the unsigned case is reported as such.
    assert_eq!(
        RequestEnvelope::from_headers(|_| None),
        Err(Rejection::MissingSignature)
    );
    let bad: [(&str, Option<&str>); 12] = [
        (H_SENDER, None),
        (H_SENDER, Some("not-an-address")),
        (
            H_RECEIVER,
            Some("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQZ"),
        ),
        (H_NONCE, None),
        (H_NONCE, Some("abc")),
        (H_NONCE, Some("ABCDEF0123456789ABCDEF0123456789")),
        (H_TIMESTAMP, Some("soon")),
        (H_TIMESTAMP, Some("-5")),
        (H_TIMESTAMP, Some("99999999999999999999999")),
        (H_BODY_HASH, Some("00")),
        (H_SIGNATURE, Some("nothex")),
        (H_SIGNATURE, Some("abcd")),
    ];
    for (name, value) in bad {
        assert!(
            matches!(parse_with(name, value), Err(Rejection::Malformed(_))),
            "{name}={value:?}"
        );
    }
}

#[test]
fn request_hash_depends_on_endpoint_and_signature() {
    let k = keys();
    let env = signed(&k);
    let h = env.request_hash("POST", PATH);
    assert_eq!(h, env.request_hash("POST", PATH));
    assert_ne!(h, env.request_hash("POST", "/v1/gemm/open"));
    let resigned = RequestEnvelope {
        signature: k
            .validator
            .sign(&env.signing_payload("POST", PATH))
            .to_hex(),
        ..env.clone()
    };
    assert_ne!(h, resigned.request_hash("POST", PATH));
}

#[test]
fn signing_payload_layout_is_length_prefixed_fields() {
    let env = RequestEnvelope {
        sender: "S".into(),
        receiver: "R".into(),
        nonce: "N".into(),
        timestamp_ms: 0x0102,
        body_hash: "B".into(),
        signature: String::new(),
    };
    let mut want = Vec::new();
    for f in [
        &b"polylith/v1/request"[..],
        b"POST",
        b"/p",
        b"S",
        b"R",
        b"N",
        &0x0102u64.to_le_bytes(),
        b"B",
    ] {
        want.extend_from_slice(&(f.len() as u32).to_le_bytes());
        want.extend_from_slice(f);
    }
    assert_eq!(env.signing_payload("POST", "/p"), want);
    // Moving a byte between adjacent fields changes the payload.
    assert_ne!(
        env.signing_payload("POST", "/pS"),
        RequestEnvelope {
            sender: String::new(),
            ..env.clone()
        }
        .signing_payload("POST", "/p")
    );
}

#[test]
fn nonce_cache_rejects_replays_and_expires_after_twice_the_window() {
    let mut c = NonceCache::new(10, WINDOW);
    assert!(c.is_empty());
    c.check_and_insert("alice", "n1", NOW).unwrap();
    assert_eq!(
        c.check_and_insert("alice", "n1", NOW + 1),
        Err(Rejection::ReplayedNonce)
    );
    // Nonces are per sender.
    c.check_and_insert("bob", "n1", NOW).unwrap();
    assert_eq!(c.len(), 2);
    // Still remembered just before 2·window (a future-dated request could still be valid).
    assert_eq!(
        c.check_and_insert("alice", "n1", NOW + 2 * WINDOW - 1),
        Err(Rejection::ReplayedNonce)
    );
    // Forgotten after 2·window, when no timestamp it could carry is acceptable any more.
    c.check_and_insert("carol", "n9", NOW + 2 * WINDOW).unwrap();
    assert_eq!(c.len(), 1);
    c.check_and_insert("alice", "n1", NOW + 2 * WINDOW).unwrap();
}

#[test]
fn full_nonce_cache_refuses_new_nonces_instead_of_forgetting() {
    let mut c = NonceCache::new(3, WINDOW);
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        c.check_and_insert("v", n, NOW + i as u64).unwrap();
    }
    assert_eq!(
        c.check_and_insert("v", "d", NOW + 10),
        Err(Rejection::Overloaded)
    );
    // The oldest was not evicted to make room, so its replay is still caught.
    assert_eq!(
        c.check_and_insert("v", "a", NOW + 10),
        Err(Rejection::ReplayedNonce)
    );
    assert_eq!(c.len(), 3);
    // Once entries expire there is room again.
    c.check_and_insert("v", "d", NOW + 2 * WINDOW).unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(
        NonceCache::new(0, WINDOW).check_and_insert("v", "x", NOW),
        Err(Rejection::Overloaded)
    );
}

fn receipt_for(k: &Keys, env: &RequestEnvelope, body: &[u8]) -> Receipt {
    Receipt {
        miner: k.miner.public().to_ss58(),
        request_hash: hex::encode(env.request_hash("POST", PATH)),
        response_hash: blake3_hex(body),
        model_hash: String::new(),
        received_ms: NOW,
        compute_us: 1234,
        ttft_us: 0,
        total_us: 2345,
        tokens: 0,
        signature: String::new(),
    }
    .sign(&k.miner)
}

#[test]
fn receipt_verifies_and_each_mismatch_is_caught() {
    let k = keys();
    let env = signed(&k);
    let rh = env.request_hash("POST", PATH);
    let body = br#"{"root":"00"}"#;
    let r = receipt_for(&k, &env, body);
    assert_eq!(r.verify(&k.miner.public(), &rh, body), Ok(()));
    // Survives JSON (the header encoding).
    let json = serde_json::to_string(&r).unwrap();
    let back: Receipt = serde_json::from_str(&json).unwrap();
    assert_eq!(back.verify(&k.miner.public(), &rh, body), Ok(()));

    assert!(matches!(
        r.verify(&k.miner.public(), &rh, b"other body"),
        Err(Rejection::ReceiptMismatch(_))
    ));
    assert!(matches!(
        r.verify(&k.miner.public(), &[0; 32], body),
        Err(Rejection::ReceiptMismatch(_))
    ));
    assert!(matches!(
        r.verify(&k.validator.public(), &rh, body),
        Err(Rejection::ReceiptMismatch(_))
    ));
    let mut slower = r.clone();
    slower.compute_us += 1;
    assert_eq!(
        slower.verify(&k.miner.public(), &rh, body),
        Err(Rejection::BadSignature)
    );
    let mut unsigned = r.clone();
    unsigned.signature.clear();
    assert_eq!(
        unsigned.verify(&k.miner.public(), &rh, body),
        Err(Rejection::MissingSignature)
    );
    let mut junk = r.clone();
    junk.response_hash = "zz".into();
    // Signed by the miner, but not parsable: malformed rather than a bad signature.
    let junk = junk.sign(&k.miner);
    assert!(matches!(
        junk.verify(&k.miner.public(), &rh, body),
        Err(Rejection::Malformed(_))
    ));
}

/// Which field of the envelope a tampering test changes.
#[derive(Debug, Clone, Copy)]
enum Field {
    Sender,
    Receiver,
    Nonce,
    Timestamp,
    BodyHash,
    Signature,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any envelope signed for any body, method and path verifies for exactly that request.
    #[test]
    fn envelopes_sign_and_verify(
        seed in any::<[u8; 32]>(),
        body in prop::collection::vec(any::<u8>(), 0..300),
        path in "/[a-z0-9/]{0,30}",
        ts in 0u64..u64::MAX / 2,
    ) {
        let key = Hotkey::from_seed(&seed).unwrap();
        let me = Hotkey::from_seed(&[9; 32]).unwrap().public();
        let env = RequestEnvelope::sign(&key, &me, "POST", &path, &body, ts);
        prop_assert_eq!(env.verify("POST", &path, &body, &me, ts, 0), Ok(key.public()));
    }

    /// Changing any signed field (one bit or character) makes verification fail.
    #[test]
    fn tampering_any_field_fails(
        field in prop::sample::select(vec![
            Field::Sender, Field::Receiver, Field::Nonce, Field::Timestamp, Field::BodyHash,
            Field::Signature,
        ]),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let k = keys();
        let env = signed(&k);
        let mut t = env.clone();
        let flip_hex = |s: &mut String| {
            let i = pos.index(s.len());
            let c = s.as_bytes()[i];
            let new = if c == b'0' { '1' } else { '0' };
            s.replace_range(i..i + 1, &new.to_string());
        };
        match field {
            Field::Sender => t.sender = Hotkey::from_seed(&[bit + 10; 32]).unwrap().public().to_ss58(),
            Field::Receiver => t.receiver = Hotkey::from_seed(&[bit + 20; 32]).unwrap().public().to_ss58(),
            Field::Nonce => flip_hex(&mut t.nonce),
            Field::Timestamp => t.timestamp_ms ^= 1 << bit,
            Field::BodyHash => flip_hex(&mut t.body_hash),
            Field::Signature => {
                let mut sig = hex::decode(&t.signature).unwrap();
                let i = pos.index(sig.len());
                sig[i] ^= 1 << bit;
                t.signature = hex::encode(sig);
            }
        }
        prop_assert_ne!(&t, &env);
        prop_assert!(verify(&t, &k).is_err());
    }

    /// Changing any signed receipt field makes verification fail.
    #[test]
    fn tampering_any_receipt_field_fails(which in 0usize..8, delta in 1u64..1000) {
        let k = keys();
        let env = signed(&k);
        let rh = env.request_hash("POST", PATH);
        let r = receipt_for(&k, &env, b"body");
        let mut t = r.clone();
        match which {
            0 => t.received_ms += delta,
            1 => t.compute_us += delta,
            2 => t.ttft_us += delta,
            3 => t.total_us += delta,
            4 => t.tokens += delta,
            5 => t.model_hash = format!("{delta:x}"),
            6 => t.request_hash = blake3_hex(&delta.to_le_bytes()),
            _ => t.response_hash = blake3_hex(&delta.to_le_bytes()),
        }
        prop_assert!(t.verify(&k.miner.public(), &rh, b"body").is_err());
    }
}
