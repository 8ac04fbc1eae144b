//! The flat, fused epoch (`yuma::epoch`) gives the same bits as the original row-of-pairs
//! epoch (`yuma::reference::epoch`) on random subnets, including the awkward inputs: unsorted
//! rows, duplicate and out-of-range columns, explicit zeros, zero stakes, masks and every
//! bonds mode.

use polylith_scoring::yuma::{EpochInputs, EpochParams, epoch, reference};
use proptest::prelude::*;

fn u16_row(n: u16) -> impl Strategy<Value = Vec<(u16, u16)>> {
    prop::collection::vec(
        (
            prop_oneof![4 => 0..n.max(1), 1 => 0..n.saturating_add(3)],
            prop_oneof![Just(0u16), Just(u16::MAX), any::<u16>(), 0u16..4],
        ),
        0..(usize::from(n) + 3),
    )
}

fn subnet() -> impl Strategy<Value = (EpochParams, EpochInputs)> {
    (1u16..10).prop_flat_map(|n| {
        let len = usize::from(n);
        let inputs = (
            prop::collection::vec(prop_oneof![Just(0u64), 0u64..1000, 0u64..(1 << 40)], len),
            prop::collection::vec(u16_row(n), len),
            prop::collection::vec(u16_row(n), len),
            prop::collection::vec(0u64..12, len),
            prop::collection::vec(0u64..12, len),
            prop::collection::vec(prop::bool::weighted(0.7), len),
            prop::option::of(prop::collection::vec(prop::option::of(0u64..12), len)),
            prop::option::of(prop::collection::vec(0u64..(1 << 40), len)),
        );
        let params = (
            (
                prop_oneof![Just(32_767u16), any::<u16>()],
                prop_oneof![Just(0u16), Just(u16::MAX), any::<u16>()],
                0u64..=1_000_000,
                any::<bool>(),
                any::<bool>(),
            ),
            (
                (0u16..=u16::MAX, 0u16..=u16::MAX),
                prop_oneof![Just(1000i16), any::<i16>()],
                0u16..12,
                prop_oneof![Just(0u64), 0u64..500],
                (0u64..6, 0u64..8, 0u64..12),
                (prop::option::of(0u16..12), any::<bool>(), any::<u64>()),
            ),
        );
        (params, inputs).prop_map(|(p, i)| {
            let ((kappa, beta, bma, yuma3, liquid), ((lo, hi), steep, maxv, thr, blocks, extra)) =
                p;
            let (stake, weights, bonds, last_update, reg, permits, commits, tao) = i;
            let (tempo, cutoff, last_step) = blocks;
            let (owner_uid, commit_reveal_mask, tao_weight) = extra;
            let params = EpochParams {
                kappa_u16: kappa,
                bonds_penalty_u16: beta,
                bonds_moving_average: bma,
                yuma3,
                liquid_alpha: liquid,
                alpha_low_u16: lo.min(hi),
                alpha_high_u16: lo.max(hi),
                alpha_sigmoid_steepness: steep,
                max_allowed_validators: maxv,
                stake_threshold: thr,
                tempo,
                activity_cutoff_blocks: cutoff,
                last_mechanism_step_block: last_step,
                owner_uid,
                commit_reveal_mask,
                tao_weight,
                rao_emission: 1_000_000_000,
            };
            let inputs = EpochInputs {
                current_block: 12,
                stake,
                weights,
                last_update,
                block_at_registration: reg,
                validator_permit: permits,
                bonds_before: bonds,
                commit_blocks: commits,
                tao_stake: tao,
                weights_dense_u16: None,
            };
            (params, inputs)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_epoch_equals_reference_epoch((params, inputs) in subnet()) {
        prop_assert_eq!(epoch(&params, &inputs), reference::epoch(&params, &inputs));
    }
}

/// A dense subnet like the benchmark's, at a size the unoptimised test build runs quickly.
#[test]
fn fast_epoch_equals_reference_epoch_on_a_dense_subnet() {
    let (n, validators) = (300u16, 24u16);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut full_rows = |salt: u64| -> Vec<Vec<(u16, u16)>> {
        (0..n)
            .map(|i| {
                if i < validators {
                    (validators..n)
                        .map(|j| (j, ((next() ^ salt) % 65_536) as u16))
                        .collect()
                } else {
                    Vec::new()
                }
            })
            .collect()
    };
    let weights = full_rows(0);
    let bonds = full_rows(1);
    let stake: Vec<u64> = (0..n)
        .map(|i| {
            if i < validators {
                1 + u64::from(i) * 7_919
            } else {
                0
            }
        })
        .collect();
    let len = usize::from(n);
    let inputs = EpochInputs {
        current_block: 10_000,
        stake,
        weights,
        last_update: vec![9_999; len],
        block_at_registration: vec![1; len],
        validator_permit: (0..n).map(|i| i < validators).collect(),
        bonds_before: bonds,
        ..EpochInputs::default()
    };
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
            max_allowed_validators: validators,
            ..EpochParams::default()
        };
        let fast = epoch(&params, &inputs).unwrap();
        assert!(fast.incentive_bits.iter().filter(|b| **b > 0).count() > 200);
        assert_eq!(
            fast,
            reference::epoch(&params, &inputs).unwrap(),
            "yuma3 {yuma3}, liquid alpha {liquid_alpha}, beta {beta}"
        );
    }
}
