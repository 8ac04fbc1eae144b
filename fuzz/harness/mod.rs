//! Fuzz harnesses for the wire parsers of `polylith-protocol`, shared by the cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`) and the stable replay test
//! (`protocol/tests/fuzz_corpus.rs`), so CI on stable runs the same checks on the seeds.
//!
//! Every harness takes arbitrary bytes and must not panic on any of them; a panic is a bug,
//! either a parser panicking or one of the properties asserted here failing:
//! parse → serialise → parse gives the same value, and signature or opening checks return
//! errors (never panic) and accept exactly what an honest signer or miner produces.
#![allow(dead_code)]

use polylith_protocol::gemm::{
    self, CommitRequest, CommitResponse, GemmSpec, MerkleTree, OpenRequest, OpenResponse, OpenedRow,
};
use polylith_protocol::keys::{Hotkey, Keystore, PublicKey, parse_key_file};
use polylith_protocol::llm::{MAX_SSE_EVENT_BYTES, SseError, SseEvent, SseParser, parse_sse};
use polylith_protocol::metagraph::Metagraph;
use polylith_protocol::signing::RequestEnvelope;
use polylith_protocol::ss58;
use polylith_protocol::weights::{
    Evidence, Reveal, SeenMessage, SignedWeights, WeightsError, WeightsMessage,
};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A harness: takes any bytes, panics only on a bug.
pub type Harness = fn(&[u8]);

/// The protocol-crate targets by name (the directory names under `fuzz/seeds`).
pub const TARGETS: &[(&str, Harness)] = &[
    ("envelope_headers", envelope_headers),
    ("sse", sse),
    ("ss58", ss58_address),
    ("keyfile", keyfile),
    ("metagraph_toml", metagraph_toml),
    ("signed_weights", signed_weights),
    ("gemm_opening", gemm_opening),
];

/// Method, path and body the envelope seeds are signed over, so a seed verifies.
pub const ENVELOPE_METHOD: &str = "POST";
/// See [`ENVELOPE_METHOD`].
pub const ENVELOPE_PATH: &str = "/v1/gemm/commit";
/// See [`ENVELOPE_METHOD`].
pub const ENVELOPE_BODY: &[u8] = b"{\"spec\":{\"seed\":1,\"n\":4,\"k\":4,\"m\":4}}";

/// A few fixed keys (seeds `[i; 32]`), made once per process.
pub fn fixed_keys() -> &'static [Hotkey] {
    static KEYS: OnceLock<Vec<Hotkey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (1..=4u8)
            .map(|i| Hotkey::from_seed(&[i; 32]).expect("a 32-byte seed is a key"))
            .collect()
    })
}

/// Reads structured values off the front of the input; past the end it yields zeros.
pub struct Cursor<'a>(pub &'a [u8]);

impl Cursor<'_> {
    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    /// The next eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }
    /// Everything not yet read.
    pub fn rest(&self) -> &[u8] {
        self.0
    }
}

/// Header lines `name:value` (split at the first colon, lines at `\n`) looked up by exact
/// name, first match wins: the shape `RequestEnvelope::from_headers` sees from a header map.
pub fn envelope_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<(&str, &str)> = text.split('\n').filter_map(|l| l.split_once(':')).collect();
    let parsed = RequestEnvelope::from_headers(|name: &str| {
        lines.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    });
    let Ok(env) = parsed else { return };

    // Round trip: what the sender attaches parses back to the same envelope.
    let headers = env.to_headers();
    let again = RequestEnvelope::from_headers(|name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    });
    assert_eq!(again, Ok(env.clone()), "to_headers/from_headers round trip");

    // from_headers promised SS58 addresses; verification returns errors, never panics.
    let sender = PublicKey::from_ss58(&env.sender).expect("from_headers checked the sender");
    let me = PublicKey::from_ss58(&env.receiver).expect("from_headers checked the receiver");
    let _ = env.request_hash(ENVELOPE_METHOD, ENVELOPE_PATH);
    let result = env.verify(
        ENVELOPE_METHOD,
        ENVELOPE_PATH,
        ENVELOPE_BODY,
        &me,
        env.timestamp_ms,
        0,
    );
    if let Ok(signer) = result {
        assert_eq!(signer, sender, "verify returns the sender's key");
        // The same signature does not cover another path, body or receiver.
        let other = fixed_keys()[3].public();
        assert!(
            env.verify(
                ENVELOPE_METHOD,
                "/v1/other",
                ENVELOPE_BODY,
                &me,
                0,
                u64::MAX
            )
            .is_err()
        );
        assert!(
            env.verify(ENVELOPE_METHOD, ENVELOPE_PATH, b"x", &me, 0, u64::MAX)
                .is_err()
        );
        if other != me {
            assert!(
                env.verify(
                    ENVELOPE_METHOD,
                    ENVELOPE_PATH,
                    ENVELOPE_BODY,
                    &other,
                    0,
                    u64::MAX
                )
                .is_err()
            );
        }
    }
    // Extreme clocks and windows are plain comparisons, never overflows.
    let _ = env.verify("GET", "/", b"", &me, u64::MAX, u64::MAX);
    let _ = env.verify("GET", "/", b"", &me, 0, 0);
}

/// Writes `events` in the canonical form (`event:` line, one `data:` line per data line,
/// blank line) and returns the text and each event's expected start offset.
pub fn format_sse(events: &[(Option<String>, String)]) -> (String, Vec<usize>) {
    let mut out = String::new();
    let mut starts = Vec::with_capacity(events.len());
    for (event, data) in events {
        starts.push(out.len());
        if let Some(e) = event {
            out.push_str("event: ");
            out.push_str(e);
            out.push('\n');
        }
        for line in data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    (out, starts)
}

fn event_pairs(events: &[SseEvent]) -> Vec<(Option<String>, String)> {
    events
        .iter()
        .map(|e| (e.event.clone(), e.data.clone()))
        .collect()
}

/// Feeds `data` to an [`SseParser`] in chunks of `chunk` bytes, then finishes it.
pub fn feed_sse(
    data: &[u8],
    chunk: usize,
    max_event: usize,
    max_total: usize,
) -> Result<Vec<SseEvent>, SseError> {
    let mut parser = SseParser::new(max_event, max_total);
    let mut events = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        parser.feed(piece, &mut events)?;
    }
    parser.finish(&mut events)?;
    assert_eq!(parser.total(), data.len(), "bytes accounted");
    Ok(events)
}

/// The SSE parsers on any bytes. Incremental: the events do not depend on how the bytes are
/// chunked, a non-UTF-8 line is an error (never a panic), and with limits the result is an
/// error or the unlimited result. Whole-body `parse_sse`: offsets are increasing char
/// boundaries inside the body, and the canonical re-serialisation parses to the same events
/// at the offsets it was written to.
pub fn sse(data: &[u8]) {
    let chunk = 1 + usize::from(data.first().copied().unwrap_or(0) % 23);
    let unlimited = feed_sse(data, chunk, usize::MAX, usize::MAX);
    match std::str::from_utf8(data) {
        Ok(text) => assert_eq!(unlimited, Ok(parse_sse(text)), "chunks of {chunk} bytes"),
        Err(_) => assert!(
            matches!(unlimited, Err(SseError::NotUtf8 { .. })),
            "non-UTF-8 input gave {unlimited:?}"
        ),
    }
    for (max_event, max_total) in [(64, 4096), (MAX_SSE_EVENT_BYTES, 512)] {
        if let Ok(events) = feed_sse(data, chunk, max_event, max_total) {
            assert_eq!(Ok(events), unlimited, "limits change only the outcome");
        }
    }
    let text = String::from_utf8_lossy(data);
    let events = parse_sse(&text);
    let mut previous: Option<usize> = None;
    for (i, ev) in events.iter().enumerate() {
        assert!(
            ev.start < text.len(),
            "event start {} past the end",
            ev.start
        );
        assert!(
            text.is_char_boundary(ev.start),
            "event start inside a character"
        );
        if let Some(p) = previous {
            assert!(
                ev.start > p,
                "event starts not increasing: {p} then {}",
                ev.start
            );
        }
        previous = Some(ev.start);
        // The validator re-parses text[..start] of the receipt event as the covered events:
        // that prefix must give exactly the events before this one (checked for the first
        // few events and the last, which keeps each run linear in the input).
        if i < 4 || i + 1 == events.len() {
            assert_eq!(
                parse_sse(&text[..ev.start]),
                events[..i],
                "prefix before event {i}"
            );
        }
    }
    let pairs = event_pairs(&events);
    let (canonical, starts) = format_sse(&pairs);
    let again = parse_sse(&canonical);
    assert_eq!(event_pairs(&again), pairs, "format/parse round trip");
    let again_starts: Vec<usize> = again.iter().map(|e| e.start).collect();
    assert_eq!(again_starts, starts, "offsets of the canonical form");
    // Each prefix ending at an event start parses to exactly the events before it.
    for (i, &start) in starts.iter().enumerate() {
        if i < 4 || i + 1 == starts.len() {
            assert_eq!(event_pairs(&parse_sse(&canonical[..start])), pairs[..i]);
        }
    }
}

/// SS58 decode of any text, and encode of any (key, prefix) from the bytes.
///
/// A decoded address re-encodes to itself, except the non-canonical two-byte spelling of a
/// prefix below 64 (which Substrate also accepts); either way it decodes to the same pair.
pub fn ss58_address(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match ss58::decode(&text) {
        Ok((key, prefix)) => {
            assert!(prefix <= ss58::MAX_PREFIX);
            let canonical = ss58::encode(&key, prefix);
            assert_eq!(ss58::decode(&canonical), Ok((key, prefix)));
            if canonical != text {
                let raw = bs58::decode(text.as_bytes()).into_vec().unwrap_or_default();
                assert!(
                    prefix < 64 && matches!(raw.first(), Some(64..=127)),
                    "{text:?} decodes to prefix {prefix} but re-encodes as {canonical:?}"
                );
            }
            assert_eq!(PublicKey::from_ss58(&text).ok(), Some(PublicKey(key)));
        }
        Err(_) => assert!(PublicKey::from_ss58(&text).is_err()),
    }
    if let Some((key, rest)) = data.split_first_chunk::<32>() {
        let prefix = rest
            .first()
            .map_or(42, |&b| u16::from(b) << 6 | rest.len() as u16);
        let text = ss58::encode(key, prefix);
        assert_eq!(ss58::decode(&text), Ok((*key, prefix & ss58::MAX_PREFIX)));
    }
}

/// A scratch keystore for the key-file round trip.
fn scratch_store() -> &'static (tempfile::TempDir, Keystore) {
    static STORE: OnceLock<(tempfile::TempDir, Keystore)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Keystore::new(dir.path().join("keys"));
        (dir, store)
    })
}

/// `parse_key_file` on any text; a parsed key saves and loads back as the same key.
pub fn keyfile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(key) = parse_key_file(&text) else {
        return;
    };
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!("k{}", N.fetch_add(1, Ordering::Relaxed));
    let (_, store) = scratch_store();
    let path = store.save(&name, &key).expect("a parsed key saves");
    let back = store.load(&name);
    let _ = std::fs::remove_file(&path);
    let back = back.expect("a saved key loads");
    assert_eq!(back.public(), key.public(), "public key survives the file");
    assert_eq!(back.seed(), key.seed(), "seed survives the file");
    assert_eq!(back.phrase(), key.phrase(), "phrase survives the file");
    let sig = key.sign(b"polylith fuzz");
    assert!(back.public().verify(b"polylith fuzz", &sig).is_ok());
}

/// `Metagraph::from_toml` on any text; a valid graph re-serialises to itself, and the raw
/// (unvalidated) schema round-trips too.
pub fn metagraph_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(raw) = toml::from_str::<Metagraph>(&text) {
        let again: Metagraph = toml::from_str(&raw.to_toml()).expect("to_toml output parses");
        // to_toml clamps stakes to TOML's i64 range (validate refuses larger ones).
        if raw.neurons.iter().all(|n| n.stake <= i64::MAX as u64) {
            assert_eq!(again, raw, "raw TOML round trip");
        } else {
            assert!(raw.validate().is_err(), "a stake above i64::MAX validated");
        }
    }
    let Ok(graph) = Metagraph::from_toml(&text) else {
        return;
    };
    let again = Metagraph::from_toml(&graph.to_toml()).expect("a valid graph stays valid");
    assert_eq!(again, graph, "validated TOML round trip");
    for n in &graph.neurons {
        let key = PublicKey::from_ss58(&n.hotkey).expect("validate checked the hotkey");
        assert_eq!(graph.by_hotkey(&key).map(|x| x.uid), Some(n.uid));
        assert_eq!(graph.by_uid(n.uid), Some(n));
        assert!(graph.n() > usize::from(n.uid));
    }
    let roles = graph.miners().len() + graph.validators().len();
    assert_eq!(roles, graph.neurons.len());
}

/// First byte mod 4 picks the mode. 0: the rest is a v1 `SignedWeights` JSON body, which
/// verifies or not without panicking and round-trips. 1: a v1 vector signed from the bytes,
/// which verifies exactly when its uids are unique, survives JSON, and fails once changed.
/// 2: the rest is a v2 `WeightsMessage` JSON body (round trip, verify, hash, work proofs and
/// evidence checks never panic). 3: a v2 message signed from the bytes (see
/// [`weights_message_structured`]).
pub fn signed_weights(data: &[u8]) {
    let mut cur = Cursor(data);
    let mode = cur.u8() % 4;
    if mode == 2 {
        return weights_message_json(cur.rest());
    }
    if mode == 3 {
        return weights_message_structured(&mut cur);
    }
    if mode == 0 {
        let text = String::from_utf8_lossy(cur.rest());
        let Ok(w) = serde_json::from_str::<SignedWeights>(&text) else {
            return;
        };
        let json = serde_json::to_string(&w).expect("weights serialise");
        let again: SignedWeights = serde_json::from_str(&json).expect("serialised weights parse");
        assert_eq!(again, w, "JSON round trip");
        // Equal values verify alike, so one check covers both.
        if let Ok(signer) = w.verify() {
            assert_eq!(Some(signer), PublicKey::from_ss58(&w.validator).ok());
        }
        return;
    }
    let key = &fixed_keys()[usize::from(cur.u8() % 4)];
    let (round, ts) = (cur.u64(), cur.u64());
    let count = usize::from(cur.u8() % 40);
    let pairs: Vec<(u16, u16)> = (0..count).map(|_| (cur.u16() % 512, cur.u16())).collect();
    let signed = SignedWeights::sign(key, round, ts, pairs);
    let unique = signed.weights.windows(2).all(|p| p[0].0 < p[1].0);
    match signed.verify() {
        Ok(signer) => {
            assert!(unique, "duplicate uids verified");
            assert_eq!(signer, key.public());
        }
        Err(e) => {
            assert!(!unique, "an honest vector failed: {e}");
            assert!(matches!(e, WeightsError::Malformed(_)));
            return;
        }
    }
    let json = serde_json::to_string(&signed).expect("weights serialise");
    let back: SignedWeights = serde_json::from_str(&json).expect("serialised weights parse");
    assert_eq!(back, signed, "JSON round trip");
    let mut tampered = back.clone();
    match cur.u8() % 3 {
        0 => tampered.round ^= 1,
        1 => tampered.timestamp_ms ^= 1 << (cur.u8() % 64),
        _ => match tampered.weights.first_mut() {
            Some(pair) => pair.1 = pair.1.wrapping_add(1).max(1),
            None => tampered.weights.push((0, 1)),
        },
    }
    if tampered != back {
        assert!(tampered.verify().is_err(), "a tampered vector verified");
    }
}

/// A v2 weights message from any JSON: it round-trips with the same hash, verifies or not
/// without panicking (and never as anyone but its validator), and the checks built on it
/// (work proofs, commitments, equivocation evidence) return answers, never panic.
pub fn weights_message_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(e) = serde_json::from_str::<Evidence>(&text) {
        json_round_trip(&e);
        if let Some((key, round)) = e.verify() {
            assert_eq!(e.first.round, round);
            assert_eq!(e.first.verify(), Ok(key));
            assert_ne!(e.first.hash(), e.second.hash(), "evidence of one message");
        }
    }
    let Ok(msg) = serde_json::from_str::<WeightsMessage>(&text) else {
        return;
    };
    let json = serde_json::to_string(&msg).expect("messages serialise");
    let again: WeightsMessage = serde_json::from_str(&json).expect("serialised message parses");
    assert_eq!(again, msg, "JSON round trip");
    assert_eq!(again.hash(), msg.hash(), "hash survives JSON");
    let verified = msg.verify();
    if let Ok(signer) = &verified {
        assert_eq!(PublicKey::from_ss58(&msg.validator).ok(), Some(*signer));
    }
    assert!(
        Evidence::new(msg.clone(), msg.clone()).is_none(),
        "a message equivocates with itself"
    );
    if let Some(r) = &msg.reveal {
        let _ = r.commitment(&msg.validator);
        let keys = fixed_keys();
        for proof in &r.proofs {
            let _ = proof.verify(&keys[0].public(), &keys[1].public(), 0, u64::MAX);
            let _ = proof.verify(&keys[0].public(), &keys[1].public(), u64::MAX, 0);
        }
    }
}

/// A v2 message signed from the bytes, with or without a reveal: it verifies exactly when
/// its reveal is well-formed and for an earlier round, survives JSON with its hash, fails
/// once a field is changed, and two different messages for one round are evidence.
pub fn weights_message_structured(cur: &mut Cursor<'_>) {
    let key = &fixed_keys()[usize::from(cur.u8() % 4)];
    let (round, ts) = (u64::from(cur.u16()), cur.u64());
    let mut commitment = [0u8; 32];
    commitment.iter_mut().for_each(|b| *b = cur.u8());
    let reveal = (cur.u8() % 2 == 1).then(|| {
        let count = usize::from(cur.u8() % 16);
        let pairs: Vec<(u16, u16)> = (0..count).map(|_| (cur.u16() % 64, cur.u16())).collect();
        let mut r = Reveal::new(u64::from(cur.u16()), pairs, Vec::new());
        if cur.u8().is_multiple_of(8) {
            r.salt.truncate(usize::from(cur.u8() % 64));
        }
        r
    });
    let seen: Vec<SeenMessage> = (0..cur.u8() % 3)
        .map(|i| SeenMessage {
            validator: fixed_keys()[usize::from(i)].public().to_ss58(),
            round: u64::from(cur.u8()),
            hash: hex::encode([cur.u8(); 32]),
        })
        .collect();
    let well_formed = reveal.as_ref().is_none_or(|r| {
        r.round < round && r.salt.len() == 64 && r.weights.windows(2).all(|p| p[0].0 < p[1].0)
    });
    let msg = WeightsMessage::sign(key, round, ts, commitment, reveal, seen);
    let result = msg.verify();
    assert_eq!(
        result.is_ok(),
        well_formed,
        "round {round}, reveal {:?}: {result:?}",
        msg.reveal
            .as_ref()
            .map(|r| (r.round, r.salt.len(), &r.weights))
    );
    json_round_trip(&msg);
    if !well_formed {
        return;
    }
    assert_eq!(result, Ok(key.public()));
    let mut other = msg.clone();
    match cur.u8() % 3 {
        0 => other.timestamp_ms ^= 1,
        1 => other.commitment = hex::encode([cur.u8() ^ 0x5a; 32]),
        _ => other.seen.clear(),
    }
    if other == msg {
        return;
    }
    assert!(other.verify().is_err(), "a changed message verified");
    // The validator signing a second message for the round is caught.
    let second = WeightsMessage::sign(
        key,
        round,
        other.timestamp_ms,
        commitment,
        None,
        other.seen.clone(),
    );
    // Equivocation is two different signed contents; sr25519 signatures are randomised, so
    // the same content signed twice has two hashes and must not count.
    if second.signing_payload() != msg.signing_payload() {
        let evidence = Evidence::new(msg.clone(), second).expect("two messages, one round");
        assert_eq!(evidence.verify(), Some((key.public(), round)));
        json_round_trip(&evidence);
    } else {
        assert!(
            Evidence::new(msg.clone(), second).is_none(),
            "one content signed twice counted as equivocation"
        );
    }
}

/// The fixed task the JSON-mode openings are checked against.
pub const FIXED_SPEC: GemmSpec = GemmSpec {
    seed: 11,
    n: 5,
    k: 3,
    m: 4,
};

fn honest_tree(spec: &GemmSpec) -> (Vec<Vec<i32>>, MerkleTree) {
    let rows: Vec<Vec<i32>> = (0..spec.n)
        .map(|i| spec.row_of_c(i).expect("a small valid spec"))
        .collect();
    let tree = MerkleTree::from_leaves(rows.iter().map(|r| gemm::leaf_hash(r)).collect());
    (rows, tree)
}

fn honest_row(rows: &[Vec<i32>], tree: &MerkleTree, i: u32) -> OpenedRow {
    OpenedRow {
        index: i,
        values: rows[i as usize].clone(),
        path: tree
            .path(i as usize)
            .expect("row in range")
            .iter()
            .map(hex::encode)
            .collect(),
    }
}

fn json_round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).expect("serialises");
    let back: T = serde_json::from_str(&json).expect("serialised value parses");
    assert_eq!(&back, value, "JSON round trip");
}

/// Even first byte: the rest is JSON for the GEMM messages (commit, open and their replies),
/// which round-trip, and an `OpenResponse` is checked against [`FIXED_SPEC`] without
/// panicking. Odd: an honest opening of a small task from the bytes, perhaps tampered, which
/// verifies exactly when untampered and all requested rows are in range.
pub fn gemm_opening(data: &[u8]) {
    let mut cur = Cursor(data);
    if cur.u8() % 2 == 0 {
        let text = String::from_utf8_lossy(cur.rest());
        if let Ok(v) = serde_json::from_str::<CommitRequest>(&text) {
            json_round_trip(&v);
            let spec = v.spec;
            if spec.validate(4096).is_ok() && u64::from(spec.k) * u64::from(spec.m) <= 1 << 14 {
                let row = spec.row_of_c(spec.n - 1).expect("valid spec");
                assert_eq!(row.len(), spec.m as usize);
            }
            assert!(spec.row_of_c(spec.n).is_err());
        }
        if let Ok(v) = serde_json::from_str::<CommitResponse>(&text) {
            json_round_trip(&v);
            let _ = gemm::parse_hash(&v.root);
        }
        if let Ok(v) = serde_json::from_str::<OpenRequest>(&text) {
            json_round_trip(&v);
        }
        if let Ok(opening) = serde_json::from_str::<OpenResponse>(&text) {
            json_round_trip(&opening);
            let (rows, tree) = honest_tree(&FIXED_SPEC);
            let root = tree.root();
            let claimed: Vec<u32> = opening.rows.iter().map(|r| r.index).collect();
            for requested in [claimed.as_slice(), &[0, 1, 2, 3, 4]] {
                if gemm::verify_opening(&FIXED_SPEC, &root, requested, &opening).is_ok() {
                    for (row, &want) in opening.rows.iter().zip(requested) {
                        assert_eq!(row.values, rows[want as usize], "accepted a wrong row");
                    }
                }
            }
            for row in &opening.rows {
                let path: Option<Vec<_>> = row.path.iter().map(|h| gemm::parse_hash(h)).collect();
                let leaf = gemm::leaf_hash(&row.values);
                for n in [1, 5, usize::MAX] {
                    let _ = gemm::verify_path(
                        &root,
                        n,
                        row.index as usize,
                        &leaf,
                        &path.clone().unwrap_or_default(),
                    );
                }
            }
        }
        return;
    }
    let spec = GemmSpec {
        seed: cur.u64(),
        n: 1 + u32::from(cur.u8() % 9),
        k: 1 + u32::from(cur.u8() % 8),
        m: 1 + u32::from(cur.u8() % 8),
    };
    let (rows, tree) = honest_tree(&spec);
    let root = tree.root();
    let requested: Vec<u32> = (0..cur.u8() % 5)
        .map(|_| u32::from(cur.u8()) % (spec.n + 1))
        .collect();
    let in_range = requested.iter().all(|&r| r < spec.n);
    let mut opening = OpenResponse {
        rows: requested
            .iter()
            .filter(|&&r| r < spec.n)
            .map(|&r| honest_row(&rows, &tree, r))
            .collect(),
    };
    let pick = usize::from(cur.u8());
    let count = opening.rows.len();
    let tampered = match (cur.u8() % 8, opening.rows.get_mut(pick % count.max(1))) {
        (1, Some(row)) => {
            let j = usize::from(cur.u8()) % row.values.len();
            row.values[j] ^= 1 << (cur.u8() % 32);
            true
        }
        (2, Some(row)) => {
            row.index = row.index.wrapping_add(1 + u32::from(cur.u8()));
            true
        }
        (3, Some(_)) => {
            opening.rows.pop();
            true
        }
        (4, _) => {
            opening.rows.push(honest_row(&rows, &tree, 0));
            true
        }
        (5, Some(row)) if !row.path.is_empty() => {
            let j = usize::from(cur.u8()) % row.path.len();
            row.path[j] = hex::encode([cur.u8() | 1; 32]);
            true
        }
        (6, Some(row)) if !row.path.is_empty() => {
            row.path.pop();
            true
        }
        (7, Some(row)) => {
            row.path.push(hex::encode(root));
            true
        }
        _ => false,
    };
    json_round_trip(&opening);
    let result = gemm::verify_opening(&spec, &root, &requested, &opening);
    assert_eq!(
        result.is_ok(),
        in_range && !tampered,
        "spec {spec:?}, requested {requested:?}, tampered {tampered}: {result:?}"
    );
}
