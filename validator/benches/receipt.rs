//! The validator's cost per response for the miner's receipt: parse the `x-polylith-receipt`
//! header and verify it (the miner's SS58 address, the request hash, blake3 of the response
//! body, the sr25519 signature), against the same run's cost of parsing the response body,
//! which the validator does for every response anyway.
//!
//! Bodies: a GEMM commitment (about 150 bytes) and a GEMM opening of 21 rows of 8192 values
//! with their paths (about 1.9 MB; the body hash grows with it, the signature does not).
//!
//! `cargo bench -p polylith-validator --bench receipt`

use criterion::{Criterion, criterion_group, criterion_main};
use polylith_protocol::gemm::{CommitResponse, OpenResponse, OpenedRow};
use polylith_protocol::keys::Hotkey;
use polylith_protocol::signing::{Receipt, RequestEnvelope};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let (validator, miner) = (Hotkey::generate(), Hotkey::generate());
    let miner_pk = miner.public();
    let envelope = RequestEnvelope::sign(
        &validator,
        &miner_pk,
        "POST",
        "/v1/gemm/commit",
        b"{}",
        1_700_000_000_000,
    );
    let request_hash = envelope.request_hash("POST", "/v1/gemm/commit");
    let commit = serde_json::to_vec(&CommitResponse {
        commitment_id: "ab".repeat(16),
        root: "cd".repeat(32),
        rows: 8192,
    })
    .expect("commit body");
    let open = serde_json::to_vec(&OpenResponse {
        rows: (0..21)
            .map(|i| OpenedRow {
                index: i * 300,
                values: (0..8192)
                    .map(|j| (j * 7919 + i as i32 * 104_729) % 16_000_000 - 8_000_000)
                    .collect(),
                path: (0..13).map(|_| "ef".repeat(32)).collect(),
            })
            .collect(),
    })
    .expect("open body");
    let mut group = c.benchmark_group("receipt");
    group.sample_size(30);
    for (name, body) in [("commit_150B", &commit), ("open_21x8192", &open)] {
        let header = serde_json::to_string(
            &Receipt {
                miner: miner_pk.to_ss58(),
                request_hash: hex::encode(request_hash),
                response_hash: hex::encode(blake3::hash(body).as_bytes()),
                model_hash: String::new(),
                received_ms: 1_700_000_000_000,
                compute_us: 1234,
                ttft_us: 0,
                total_us: 2345,
                tokens: 0,
                signature: String::new(),
            }
            .sign(&miner),
        )
        .expect("receipt");
        group.bench_function(format!("{name}/parse_and_verify_receipt"), |b| {
            b.iter(|| {
                let r: Receipt = serde_json::from_str(black_box(&header)).expect("parse");
                r.verify(&miner_pk, &request_hash, black_box(body))
                    .expect("verify");
            })
        });
        group.bench_function(format!("{name}/parse_body_baseline"), |b| {
            b.iter(|| {
                if name.starts_with("commit") {
                    let v: CommitResponse = serde_json::from_slice(black_box(body)).expect("body");
                    black_box(v.rows);
                } else {
                    let v: OpenResponse = serde_json::from_slice(black_box(body)).expect("body");
                    black_box(v.rows.len());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
