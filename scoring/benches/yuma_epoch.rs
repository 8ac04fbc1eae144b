//! One Yuma epoch on a large subnet: 4096 uids, 256 validators each weighting all 3840 miners.

use criterion::{Criterion, criterion_group, criterion_main};
use polylith_scoring::yuma::{EpochInputs, EpochParams, epoch};
use std::hint::black_box;

const N: u16 = 4096;
const VALIDATORS: u16 = 256;

/// Deterministic pseudo-random u16s (xorshift) so every run measures the same subnet.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn subnet() -> EpochInputs {
    let n = usize::from(N);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let stake: Vec<u64> = (0..N)
        .map(|i| {
            if i < VALIDATORS {
                1_000_000_000 + next(&mut rng) % 1_000_000_000_000
            } else {
                0
            }
        })
        .collect();
    let weights: Vec<Vec<(u16, u16)>> = (0..N)
        .map(|i| {
            if i < VALIDATORS {
                (VALIDATORS..N)
                    .map(|j| (j, (next(&mut rng) % 65_536) as u16))
                    .collect()
            } else {
                Vec::new()
            }
        })
        .collect();
    // Previous bonds: every validator holds some bond to every miner, as after many epochs.
    let bonds: Vec<Vec<(u16, u16)>> = (0..N)
        .map(|i| {
            if i < VALIDATORS {
                (VALIDATORS..N)
                    .map(|j| (j, (next(&mut rng) % 65_536) as u16))
                    .collect()
            } else {
                Vec::new()
            }
        })
        .collect();
    let current_block = 10_000;
    EpochInputs {
        current_block,
        stake,
        weights,
        last_update: vec![current_block - 1; n],
        block_at_registration: vec![1; n],
        validator_permit: (0..N).map(|i| i < VALIDATORS).collect(),
        bonds_before: bonds,
        commit_blocks: None,
        tao_stake: None,
        weights_dense_u16: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("yuma_epoch");
    group.sample_size(20);
    let yuma2 = EpochParams {
        max_allowed_validators: VALIDATORS,
        ..EpochParams::default()
    };
    let inputs = subnet();
    // Fail fast if the subnet is malformed rather than benchmarking an error path.
    let out = epoch(&yuma2, &inputs).expect("benchmark subnet is valid");
    assert!(out.incentive_bits.iter().filter(|b| **b > 0).count() > 3000);
    group.bench_function("4096uids_256validators_yuma2", |b| {
        b.iter(|| epoch(black_box(&yuma2), black_box(&inputs)))
    });
    let mut yuma3 = yuma2.clone();
    yuma3.yuma3 = true;
    yuma3.liquid_alpha = true;
    group.bench_function("4096uids_256validators_yuma3_liquid_alpha", |b| {
        b.iter(|| epoch(black_box(&yuma3), black_box(&inputs)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
