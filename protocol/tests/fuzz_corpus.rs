//! The fuzz targets on stable: every seed (`fuzz/seeds/<target>/`) and every input a fuzz
//! run once crashed on (`fuzz/regressions/<target>/`) goes through the same harness the
//! cargo-fuzz target runs (`fuzz/harness/mod.rs`), followed by a few hundred deterministic
//! mutations of each seed. A failure names the target and the input file.
//!
//! `cargo test -p polylith-protocol --test fuzz_corpus -- --ignored write_seeds` rewrites
//! the seed corpus (including the `llm_stream` seeds, whose target lives in the fuzz crate).

#[path = "../../fuzz/harness/mod.rs"]
mod harness;

use polylith_protocol::gemm::{OpenResponse, OpenedRow};
use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::llm::{GeneratedToken, StreamChunk, TopLogprob};
use polylith_protocol::signing::{Receipt, RequestEnvelope, blake3_hex};
use polylith_protocol::ss58;
use polylith_protocol::weights::{Evidence, Reveal, SignedWeights, WeightsMessage, WorkProof};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Files of `fuzz/<kind>/<target>/`, sorted; none when the directory does not exist.
fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable corpus file");
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

/// Runs `f` on `input`, turning a panic into a failure that names the input.
fn run(target: &str, what: &str, f: fn(&[u8]), input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        panic!(
            "fuzz target {target} panicked on {what} (input {:?})",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_target_has_seeds_and_passes_them() {
    for &(target, f) in harness::TARGETS {
        let seeds = files("seeds", target);
        assert!(
            !seeds.is_empty(),
            "no seeds in fuzz/seeds/{target}; run the ignored write_seeds test"
        );
        for (path, bytes) in seeds {
            run(target, &path.display().to_string(), f, &bytes);
        }
    }
    // The llm_stream target lives in the fuzz crate (it needs the validator); its seeds are
    // replayed by validator/tests/fuzz_llm_stream.rs but must exist here too.
    assert!(!files("seeds", "llm_stream").is_empty());
}

#[test]
fn regression_inputs_pass() {
    for &(target, f) in harness::TARGETS {
        for (path, bytes) in files("regressions", target) {
            run(target, &path.display().to_string(), f, &bytes);
        }
    }
}

/// xorshift64*, so the mutations are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One libFuzzer-style mutation: flip a bit, overwrite, insert or delete a byte, duplicate
/// or drop a span, or truncate.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let interesting = b"\n\r: \"{}[]0x9-,=.\x00\xff";
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if at < v.len() => v[at] ^= 1 << rng.below(8),
            1 if at < v.len() => v[at] = interesting[rng.below(interesting.len())],
            2 => v.insert(at, interesting[rng.below(interesting.len())]),
            3 if at < v.len() => {
                v.remove(at);
            }
            4 => {
                let end = (at + rng.below(16)).min(v.len());
                let span = v[at..end].to_vec();
                v.splice(at..at, span);
            }
            _ => v.truncate(at),
        }
    }
    v
}

#[test]
fn mutated_seeds_pass() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for &(target, f) in harness::TARGETS {
        for (path, bytes) in files("seeds", target) {
            for i in 0..150 {
                let input = mutate(&mut rng, &bytes);
                run(
                    target,
                    &format!("mutation {i} of {}", path.display()),
                    f,
                    &input,
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Seed corpus generation.
// ---------------------------------------------------------------------------------------

const MNEMONIC: &str = "bottom drive obey lake curtain smoke basket hold race lonely fit walk";

fn envelope_seed(key: &Hotkey, receiver: &PublicKey, prefix: u16) -> String {
    let mut env = RequestEnvelope::sign(
        key,
        receiver,
        harness::ENVELOPE_METHOD,
        harness::ENVELOPE_PATH,
        harness::ENVELOPE_BODY,
        1_764_000_000_000,
    );
    if prefix != ss58::DEFAULT_PREFIX {
        env.sender = ss58::encode(&key.public().0, prefix);
        env.signature = key
            .sign(&env.signing_payload(harness::ENVELOPE_METHOD, harness::ENVELOPE_PATH))
            .to_hex();
    }
    env.to_headers()
        .iter()
        .map(|(n, v)| format!("{n}:{v}\n"))
        .collect()
}

fn token(id: u32, alternatives: usize) -> GeneratedToken {
    GeneratedToken {
        id,
        logprob: -0.25 * id as f32,
        top_logprobs: (0..alternatives as u32)
            .map(|j| TopLogprob {
                id: j,
                logprob: -1.5 - j as f32,
            })
            .collect(),
    }
}

fn stream_seed(tokens: u32, with_receipt: bool) -> String {
    let mut body = String::from(": stream of a polylith completion\n");
    for i in 0..tokens {
        let chunk = StreamChunk {
            id: "cmpl-1".into(),
            object: "text_completion".into(),
            index: i,
            text: "ab".into(),
            token: token(100 + i, 2),
            finish_reason: (i + 1 == tokens).then(|| "length".to_string()),
            usage: None,
        };
        body.push_str(&format!(
            "data: {}\n\n",
            serde_json::to_string(&chunk).unwrap()
        ));
    }
    if with_receipt {
        let miner = Hotkey::from_seed(&[9; 32]).unwrap();
        let receipt = Receipt {
            miner: miner.public().to_ss58(),
            request_hash: hex::encode([0u8; 32]),
            response_hash: blake3_hex(body.as_bytes()),
            model_hash: String::new(),
            received_ms: 1,
            compute_us: 2,
            ttft_us: 3,
            total_us: 4,
            tokens: u64::from(tokens),
            signature: String::new(),
        }
        .sign(&miner);
        body.push_str(&format!(
            "event: receipt\r\ndata: {}\r\n\r\n",
            serde_json::to_string(&receipt).unwrap()
        ));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

fn key_file(fields: &[(&str, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::to_string_pretty(&map).unwrap()
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let keys = harness::fixed_keys();
    let (a, b) = (&keys[0], &keys[1]);
    let mut out: Vec<(&str, &str, Vec<u8>)> = Vec::new();
    let mut add = |t, n, bytes: Vec<u8>| out.push((t, n, bytes));

    add(
        "envelope_headers",
        "signed",
        envelope_seed(a, &b.public(), 42).into_bytes(),
    );
    add(
        "envelope_headers",
        "prefix0",
        envelope_seed(b, &a.public(), 0).into_bytes(),
    );
    add(
        "envelope_headers",
        "two_byte_prefix",
        envelope_seed(a, &a.public(), 1284).into_bytes(),
    );

    add("sse", "stream", stream_seed(3, true).into_bytes());
    add(
        "sse",
        "edge_cases",
        b"retry: 10\nid: 7\n: comment\ndata\ndata:x\ndata:  two spaces\r\n\r\nevent:\ndata: \xc3\xa9\n\nevent: e\r\n\r\ndata: tail".to_vec(),
    );
    add("llm_stream", "stream", stream_seed(3, true).into_bytes());
    add(
        "llm_stream",
        "no_receipt",
        stream_seed(2, false).into_bytes(),
    );

    add("ss58", "default", a.public().to_ss58().into_bytes());
    add(
        "ss58",
        "polkadot",
        ss58::encode(&b.public().0, 0).into_bytes(),
    );
    add(
        "ss58",
        "two_byte",
        ss58::encode(&b.public().0, 16383).into_bytes(),
    );
    let mut raw = vec![0x40 | 42 >> 2, (42 & 3) << 6];
    raw.extend_from_slice(&a.public().0);
    let sum = {
        use blake2::Digest;
        let mut h = blake2::Blake2b512::new();
        h.update(b"SS58PRE");
        h.update(&raw);
        h.finalize()
    };
    raw.extend_from_slice(&sum[..2]);
    add(
        "ss58",
        "non_canonical_42",
        bs58::encode(raw).into_string().into_bytes(),
    );
    let mut key_and_prefix = a.public().0.to_vec();
    key_and_prefix.extend_from_slice(&[0x55, 0x01]);
    add("ss58", "encode_bytes", key_and_prefix);

    let phrase = Hotkey::from_mnemonic(MNEMONIC).unwrap();
    let seed_hex = format!("0x{}", hex::encode(a.seed().unwrap()));
    let public_hex = format!("0x{}", a.public().to_hex());
    add(
        "keyfile",
        "seed_only",
        key_file(&[("secretSeed", seed_hex.clone())]).into_bytes(),
    );
    add(
        "keyfile",
        "seed_and_public",
        key_file(&[
            ("accountId", public_hex.clone()),
            ("publicKey", public_hex.clone()),
            ("secretSeed", seed_hex),
            ("ss58Address", a.public().to_ss58()),
        ])
        .into_bytes(),
    );
    add(
        "keyfile",
        "phrase",
        key_file(&[
            ("secretPhrase", MNEMONIC.to_string()),
            ("ss58Address", phrase.public().to_ss58()),
        ])
        .into_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = polylith_protocol::keys::Keystore::new(dir.path());
    store.save("a", a).unwrap();
    let saved = std::fs::read_to_string(dir.path().join("a.json")).unwrap();
    add("keyfile", "as_saved", saved.clone().into_bytes());
    let private: serde_json::Value = serde_json::from_str(&saved).unwrap();
    add(
        "keyfile",
        "private_key_only",
        key_file(&[(
            "privateKey",
            private["privateKey"].as_str().unwrap().to_string(),
        )])
        .into_bytes(),
    );
    add("keyfile", "encrypted", b"$NACL\x00\x01".to_vec());

    let example = std::fs::read(fuzz_dir().join("../deploy/metagraph.example.toml")).unwrap();
    add("metagraph_toml", "example", example);
    add(
        "metagraph_toml",
        "ipv6_and_prefixes",
        format!(
            "netuid = 65535\n\n[[neuron]]\nuid = 65535\nhotkey = \"{}\"\nrole = \"miner\"\n\
             endpoint = \"https://[::1]:443/v1\"\n\n[[neuron]]\nuid = 0\nhotkey = \"{}\"\n\
             role = \"validator\"\nstake = 9223372036854775807\nendpoint = \"http://a_b-c.d:0\"\n",
            ss58::encode(&a.public().0, 0),
            b.public().to_ss58()
        )
        .into_bytes(),
    );

    let signed = SignedWeights::sign(a, 7, 1_764_000_000_000, vec![(0, 65535), (3, 17), (9, 1)]);
    let mut json = vec![0u8];
    json.extend_from_slice(serde_json::to_string(&signed).unwrap().as_bytes());
    add("signed_weights", "json", json);
    let mut json = vec![4u8];
    json.extend_from_slice(
        serde_json::to_string(&SignedWeights::sign(b, 0, 0, vec![]))
            .unwrap()
            .as_bytes(),
    );
    add("signed_weights", "json_empty", json);
    let mut structured = vec![1u8, 2];
    structured.extend_from_slice(&[7; 16]);
    structured.push(5);
    structured.extend_from_slice(&[1, 0, 9, 9, 3, 0, 1, 0, 2, 0, 0, 0, 3, 0, 4, 4, 8, 1, 1, 1]);
    add("signed_weights", "structured", structured);

    let envelope = RequestEnvelope::sign(a, &b.public(), "POST", "/v1/x", b"{}", 5);
    let proof = WorkProof {
        method: "POST".into(),
        path: "/v1/x".into(),
        receipt: Receipt {
            miner: b.public().to_ss58(),
            request_hash: hex::encode(envelope.request_hash("POST", "/v1/x")),
            response_hash: hex::encode([0u8; 32]),
            model_hash: String::new(),
            received_ms: 5,
            compute_us: 1,
            ttft_us: 0,
            total_us: 1,
            tokens: 0,
            signature: String::new(),
        }
        .sign(b),
        envelope,
    };
    let reveal = Reveal::new(3, vec![(1, 9), (4, 65535)], vec![proof]);
    let v2 = WeightsMessage::sign(a, 5, 6, [7; 32], Some(reveal), Vec::new());
    let mut json = vec![2u8];
    json.extend_from_slice(serde_json::to_string(&v2).unwrap().as_bytes());
    add("signed_weights", "v2_json", json);
    let other = WeightsMessage::sign(a, 5, 7, [8; 32], None, Vec::new());
    let evidence = Evidence::new(v2, other).expect("two messages for round 5");
    let mut json = vec![6u8];
    json.extend_from_slice(serde_json::to_string(&evidence).unwrap().as_bytes());
    add("signed_weights", "v2_evidence", json);
    let mut structured = vec![3u8, 1, 9, 0];
    structured.extend_from_slice(&[1; 8]);
    structured.extend_from_slice(&[0xab; 32]);
    structured.extend_from_slice(&[1, 3, 1, 0, 5, 0, 2, 0, 7, 0, 9, 0, 3, 0, 1, 2, 9, 9, 9, 1]);
    add("signed_weights", "v2_structured", structured);

    let spec = harness::FIXED_SPEC;
    let rows: Vec<Vec<i32>> = (0..spec.n).map(|i| spec.row_of_c(i).unwrap()).collect();
    let tree = polylith_protocol::gemm::MerkleTree::from_leaves(
        rows.iter()
            .map(|r| polylith_protocol::gemm::leaf_hash(r))
            .collect(),
    );
    let opening = OpenResponse {
        rows: [4u32, 1]
            .iter()
            .map(|&i| OpenedRow {
                index: i,
                values: rows[i as usize].clone(),
                path: tree
                    .path(i as usize)
                    .unwrap()
                    .iter()
                    .map(hex::encode)
                    .collect(),
            })
            .collect(),
    };
    let mut json = vec![0u8];
    json.extend_from_slice(serde_json::to_string(&opening).unwrap().as_bytes());
    add("gemm_opening", "open_response", json);
    add(
        "gemm_opening",
        "commit_request",
        b"\x00{\"spec\":{\"seed\":18446744073709551615,\"n\":3,\"k\":4194304,\"m\":2},\"dtype\":\"bf16\"}"
            .to_vec(),
    );
    add(
        "gemm_opening",
        "commit_response",
        format!(
            "\x00{{\"commitment_id\":\"c1\",\"root\":\"{}\",\"rows\":5}}",
            hex::encode(tree.root())
        )
        .into_bytes(),
    );
    add(
        "gemm_opening",
        "open_request",
        b"\x00{\"commitment_id\":\"c1\",\"rows\":[0,4,4294967295]}".to_vec(),
    );
    add(
        "gemm_opening",
        "structured",
        vec![
            1, 3, 1, 4, 1, 5, 9, 2, 6, 8, 7, 7, 4, 1, 6, 3, 0, 9, 1, 2, 3,
        ],
    );
    out
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand after changing a harness"]
fn write_seeds() {
    for (target, name, bytes) in seeds() {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn generated_seeds_pass() {
    for (target, name, bytes) in seeds() {
        if let Some(&(_, f)) = harness::TARGETS.iter().find(|(t, _)| *t == target) {
            run(target, name, f, &bytes);
        }
    }
}
