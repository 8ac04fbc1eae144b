//! The epoch gives the same bits on any number of threads: rows and columns are split across
//! threads, never the order of a sum. Checked against the single-threaded original
//! (`yuma::reference::epoch`) on random subnets cut into 1, 2, 3 and 7 row blocks, and on a
//! dense subnet shaped like the benchmark's in every bonds mode.

use polylith_scoring::yuma::{EpochInputs, EpochParams, epoch_with_threads, reference};
use proptest::prelude::*;

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// `n` uids, the first `validators` staked and weighting every miner, full previous bonds;
/// some rows unsorted or with a duplicate column, one validator outdated.
fn dense(n: u16, validators: u16, seed: u64) -> EpochInputs {
    let mut rng = seed | 1;
    let mut rows = |salt: u64| -> Vec<Vec<(u16, u16)>> {
        (0..n)
            .map(|i| {
                if i >= validators {
                    return Vec::new();
                }
                let mut row: Vec<(u16, u16)> = (validators..n)
                    .map(|j| (j, ((next(&mut rng) ^ salt) % 65_536) as u16))
                    .collect();
                if i % 5 == 1 {
                    row.reverse();
                }
                if i % 7 == 2 {
                    row.push((validators, 7));
                }
                row
            })
            .collect()
    };
    let weights = rows(0);
    let bonds = rows(0xABCD);
    let len = usize::from(n);
    let stake = (0..n)
        .map(|i| {
            if i < validators {
                1 + next(&mut rng) % 1_000_000_000
            } else {
                0
            }
        })
        .collect();
    let mut last_update = vec![9_999; len];
    if let Some(u) = last_update.get_mut(3) {
        *u = 0;
    }
    EpochInputs {
        current_block: 10_000,
        stake,
        weights,
        last_update,
        block_at_registration: vec![1; len],
        validator_permit: (0..n).map(|i| i < validators).collect(),
        bonds_before: bonds,
        ..EpochInputs::default()
    }
}

#[test]
fn dense_epoch_is_the_same_on_one_two_and_three_threads() {
    let inputs = dense(700, 40, 0x9E37_79B9_7F4A_7C15);
    for (yuma3, liquid_alpha, beta) in [
        (false, false, u16::MAX),
        (false, false, 0),
        (false, false, 30_000),
        (true, false, u16::MAX),
        (true, true, u16::MAX),
        (true, true, 12_345),
    ] {
        let params = EpochParams {
            yuma3,
            liquid_alpha,
            bonds_penalty_u16: beta,
            max_allowed_validators: 40,
            activity_cutoff_blocks: 5_000,
            ..EpochParams::default()
        };
        let want = reference::epoch(&params, &inputs).unwrap();
        assert!(want.incentive_bits.iter().filter(|b| **b > 0).count() > 600);
        for threads in [1, 2, 3] {
            assert_eq!(
                epoch_with_threads(&params, &inputs, threads).unwrap(),
                want,
                "threads {threads}, yuma3 {yuma3}, liquid alpha {liquid_alpha}, beta {beta}"
            );
        }
    }
}

fn row(n: u16) -> impl Strategy<Value = Vec<(u16, u16)>> {
    prop::collection::vec(
        (
            prop_oneof![4 => 0..n, 1 => 0..n.saturating_add(3)],
            prop_oneof![Just(0u16), Just(u16::MAX), any::<u16>()],
        ),
        0..(usize::from(n) + 3),
    )
}

fn subnet() -> impl Strategy<Value = (EpochParams, EpochInputs)> {
    (1u16..14).prop_flat_map(|n| {
        let len = usize::from(n);
        (
            prop::collection::vec(prop_oneof![Just(0u64), 0u64..(1 << 40)], len),
            prop::collection::vec(row(n), len),
            prop::collection::vec(row(n), len),
            prop::collection::vec(prop::bool::weighted(0.8), len),
            (
                any::<bool>(),
                any::<bool>(),
                prop_oneof![Just(u16::MAX), Just(0u16), any::<u16>()],
            ),
            prop_oneof![Just(32_767u16), any::<u16>()],
        )
            .prop_map(
                move |(stake, weights, bonds, permits, (yuma3, liquid, beta), kappa)| {
                    let params = EpochParams {
                        yuma3,
                        liquid_alpha: liquid,
                        bonds_penalty_u16: beta,
                        kappa_u16: kappa,
                        max_allowed_validators: 8,
                        ..EpochParams::default()
                    };
                    let inputs = EpochInputs {
                        current_block: 10_000,
                        stake,
                        weights,
                        last_update: vec![9_999; len],
                        block_at_registration: vec![1; len],
                        validator_permit: permits,
                        bonds_before: bonds,
                        ..EpochInputs::default()
                    };
                    (params, inputs)
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn epoch_is_the_same_on_any_number_of_threads((params, inputs) in subnet()) {
        let want = reference::epoch(&params, &inputs);
        for threads in [1, 2, 3, 7] {
            prop_assert_eq!(&epoch_with_threads(&params, &inputs, threads), &want, "threads {}", threads);
        }
    }
}
