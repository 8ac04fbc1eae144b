//! One Yuma epoch on a large subnet: 4096 uids, 256 validators each weighting all 3840 miners.
//!
//! Two groups: `yuma_epoch` measures wall-clock time (criterion's default) of `epoch` on the
//! threads it picks for this machine and of `epoch_with_threads(.., 1)`; and
//! `yuma_epoch_thread_cpu` the on-CPU time of the benchmarking thread (from
//! `/proc/thread-self/schedstat`) running the epoch on one thread, which stays meaningful on a
//! machine shared with other work: on one thread, the thread's CPU time is all of the epoch's
//! CPU time. (`polylith bench yuma` reports the process CPU time of the multi-threaded run.)

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use polylith_scoring::yuma::{EpochInputs, EpochParams, epoch, epoch_with_threads};
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

/// On-CPU nanoseconds of the calling thread, as the kernel's scheduler counts them.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Criterion measurement: CPU time of the benchmarking thread, in nanoseconds.
struct ThreadCpu;

/// Formats thread CPU nanoseconds like criterion formats wall time.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if ns < 1e3 {
            (1.0, "ns (cpu)")
        } else if ns < 1e6 {
            (1e-3, "µs (cpu)")
        } else if ns < 1e9 {
            (1e-6, "ms (cpu)")
        } else {
            (1e-9, "s (cpu)")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(&self, _: f64, _: &Throughput, values: &mut [f64]) -> &'static str {
        for v in values {
            *v = 0.0;
        }
        "n/a"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a.saturating_add(*b)
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

fn params() -> (EpochParams, EpochParams) {
    let yuma2 = EpochParams {
        max_allowed_validators: VALIDATORS,
        ..EpochParams::default()
    };
    let mut yuma3 = yuma2.clone();
    yuma3.yuma3 = true;
    yuma3.liquid_alpha = true;
    (yuma2, yuma3)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("yuma_epoch");
    group.sample_size(20);
    let (yuma2, yuma3) = params();
    let inputs = subnet();
    // Fail fast if the subnet is malformed rather than benchmarking an error path.
    let out = epoch(&yuma2, &inputs).expect("benchmark subnet is valid");
    assert!(out.incentive_bits.iter().filter(|b| **b > 0).count() > 3000);
    group.bench_function("4096uids_256validators_yuma2", |b| {
        b.iter(|| epoch(black_box(&yuma2), black_box(&inputs)))
    });
    group.bench_function("4096uids_256validators_yuma3_liquid_alpha", |b| {
        b.iter(|| epoch(black_box(&yuma3), black_box(&inputs)))
    });
    group.bench_function("4096uids_256validators_yuma2_1thread", |b| {
        b.iter(|| epoch_with_threads(black_box(&yuma2), black_box(&inputs), 1))
    });
    group.bench_function("4096uids_256validators_yuma3_liquid_alpha_1thread", |b| {
        b.iter(|| epoch_with_threads(black_box(&yuma3), black_box(&inputs), 1))
    });
    group.finish();
}

fn bench_cpu(c: &mut Criterion<ThreadCpu>) {
    if thread_cpu_ns() == 0 {
        eprintln!("yuma_epoch_thread_cpu skipped: /proc/thread-self/schedstat is unreadable");
        return;
    }
    let mut group = c.benchmark_group("yuma_epoch_thread_cpu");
    group.sample_size(20);
    let (yuma2, yuma3) = params();
    let inputs = subnet();
    group.bench_function("4096uids_256validators_yuma2_1thread", |b| {
        b.iter(|| epoch_with_threads(black_box(&yuma2), black_box(&inputs), 1))
    });
    group.bench_function("4096uids_256validators_yuma3_liquid_alpha_1thread", |b| {
        b.iter(|| epoch_with_threads(black_box(&yuma3), black_box(&inputs), 1))
    });
    group.finish();
}

criterion_group!(wall, bench);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_cpu
}
criterion_main!(wall, cpu);
