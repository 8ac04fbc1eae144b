//! Edge cases and properties of the Yuma epoch over random subnets.

use polylith_scoring::yuma::io::EpochCase;
use polylith_scoring::yuma::{
    EpochInputs, EpochParams, YumaError, YumaState, epoch, max_upscale_to_u16, rewards,
};
use proptest::prelude::*;

const ONE_BITS: i64 = 1 << 32;

fn inputs(stake: Vec<u64>, weights: Vec<Vec<(u16, u16)>>, permits: Vec<bool>) -> EpochInputs {
    let n = stake.len();
    EpochInputs {
        current_block: 10,
        stake,
        weights,
        last_update: vec![9; n],
        block_at_registration: vec![1; n],
        validator_permit: permits,
        bonds_before: vec![Vec::new(); n],
        ..EpochInputs::default()
    }
}

#[test]
fn empty_subnet_gives_empty_output() {
    let out = epoch(&EpochParams::default(), &EpochInputs::default()).unwrap();
    assert!(out.stake_bits.is_empty() && out.emission.is_empty() && out.bonds_after.is_empty());
}

#[test]
fn one_uid_with_stake_gets_all_emission_as_validator() {
    let p = EpochParams::default();
    let out = epoch(&p, &inputs(vec![5], vec![vec![(0, 65535)]], vec![true])).unwrap();
    // Its only weight is a self-weight, which is masked: the fallback pays by active stake.
    assert_eq!(out.stake_bits, vec![ONE_BITS]);
    assert_eq!(out.validator_emission, vec![p.rao_emission]);
    assert_eq!(out.server_emission, vec![0]);
}

#[test]
fn all_zero_stake_and_weights_pay_nothing() {
    let out = epoch(
        &EpochParams::default(),
        &inputs(vec![0; 4], vec![Vec::new(); 4], vec![false; 4]),
    )
    .unwrap();
    assert!(out.emission.iter().all(|e| *e == 0));
    assert!(out.new_validator_permit.iter().all(|p| !p));
}

#[test]
fn weights_to_out_of_range_uids_are_ignored() {
    let p = EpochParams::default();
    let base = inputs(
        vec![1, 0],
        vec![vec![(1, 65535)], Vec::new()],
        vec![true, false],
    );
    let mut with_junk = base.clone();
    with_junk.weights[0].push((7, 65535));
    with_junk.bonds_before[0].push((9, 100));
    assert_eq!(epoch(&p, &with_junk).unwrap(), epoch(&p, &base).unwrap());
}

#[test]
fn mismatched_lengths_are_typed_errors() {
    let mut i = inputs(vec![1, 2], vec![Vec::new(); 2], vec![true; 2]);
    i.last_update.pop();
    assert_eq!(
        epoch(&EpochParams::default(), &i),
        Err(YumaError::LengthMismatch {
            field: "last_update",
            expected: 2,
            got: 1
        })
    );
}

#[test]
fn stake_beyond_i64f64_is_a_typed_error() {
    let i = inputs(
        vec![u64::MAX / 2, u64::MAX / 2],
        vec![Vec::new(); 2],
        vec![true; 2],
    );
    assert_eq!(
        epoch(&EpochParams::default(), &i),
        Err(YumaError::StakeOverflow)
    );
    let i = inputs(vec![u64::MAX, 0], vec![Vec::new(); 2], vec![true; 2]);
    assert_eq!(
        epoch(&EpochParams::default(), &i),
        Err(YumaError::StakeOverflow)
    );
}

#[test]
fn bad_json_names_the_field() {
    let text = r#"{"params": {"kappa_u16": "x"}, "inputs": {}}"#;
    let err = EpochCase::from_json(text).unwrap_err().to_string();
    assert!(err.contains("params.kappa_u16"), "{err}");
    // Hyperparameters default (as in a validator's TOML); the inputs never do.
    let text = r#"{"params": {}, "inputs": {}}"#;
    let err = EpochCase::from_json(text).unwrap_err().to_string();
    assert!(
        err.contains("inputs") && err.contains("current_block"),
        "{err}"
    );
}

#[test]
fn set_weights_upscaling_matches_spec_examples() {
    assert_eq!(max_upscale_to_u16(&[43690, 21845]), vec![65535, 32768]);
    assert_eq!(max_upscale_to_u16(&[0, 0]), vec![0, 0]);
    assert_eq!(max_upscale_to_u16(&[1, 2]), vec![32768, 65535]);
    assert_eq!(max_upscale_to_u16(&[]), Vec::<u16>::new());
}

#[test]
fn rewards_pays_the_miner_validators_agree_on() {
    let p = EpochParams::default();
    let stakes = [100, 100, 0, 0];
    let weights = vec![
        vec![(2, 10), (3, 1)],
        vec![(2, 10), (3, 1)],
        Vec::new(),
        Vec::new(),
    ];
    let state = YumaState::fresh(&stakes, &p);
    let r = rewards(&stakes, &weights, &state, &p).unwrap();
    let inc = r.incentive_f64();
    assert!(inc[2] > 0.85 && inc[3] > 0.05 && inc[0] == 0.0, "{inc:?}");
    let div = r.dividends_f64();
    assert!(
        (div[0] - 0.5).abs() < 1e-6 && (div[1] - 0.5).abs() < 1e-6,
        "{div:?}"
    );
    // The state carries the new bonds and permits into the next epoch.
    assert!(!r.next_state.bonds[0].is_empty());
    let r2 = rewards(&stakes, &weights, &r.next_state, &p).unwrap();
    assert_eq!(
        r2.output.server_emission.iter().sum::<u64>(),
        r.output.server_emission.iter().sum::<u64>()
    );
}

fn subnet_strategy() -> impl Strategy<Value = (EpochParams, EpochInputs)> {
    (1usize..24).prop_flat_map(|n| {
        let nu = n as u16;
        (
            proptest::collection::vec(
                prop_oneof![Just(0u64), 0u64..1_000_000, 0u64..(1u64 << 58)],
                n,
            ),
            proptest::collection::vec(
                proptest::collection::vec((0..nu + 2, any::<u16>()), 0..6),
                n,
            ),
            proptest::collection::vec(
                proptest::collection::vec((0..nu + 2, any::<u16>()), 0..6),
                n,
            ),
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::vec(0u64..30, n),
            proptest::collection::vec(0u64..30, n),
            (
                any::<bool>(),
                any::<bool>(),
                any::<u16>(),
                any::<u16>(),
                0u64..=1_000_000,
            ),
            (
                any::<u16>(),
                any::<u16>(),
                any::<i16>(),
                0u16..30,
                proptest::option::of(0u16..30),
            ),
            (0u64..40, 0u64..20, any::<u64>(), 0u64..1000),
        )
            .prop_map(
                |(stake, weights, bonds, permits, lu, reg, flags, alphas, blocks)| {
                    let (yuma3, liquid_alpha, kappa_u16, bonds_penalty_u16, bonds_moving_average) =
                        flags;
                    let (a, b, alpha_sigmoid_steepness, max_allowed_validators, owner_uid) = alphas;
                    let (current_block, tempo, rao_emission, stake_threshold) = blocks;
                    let params = EpochParams {
                        kappa_u16,
                        bonds_penalty_u16,
                        bonds_moving_average,
                        yuma3,
                        liquid_alpha,
                        alpha_low_u16: a.min(b),
                        alpha_high_u16: a.max(b),
                        alpha_sigmoid_steepness,
                        max_allowed_validators,
                        stake_threshold,
                        tempo,
                        activity_cutoff_blocks: 13,
                        last_mechanism_step_block: 0,
                        owner_uid,
                        commit_reveal_mask: false,
                        tao_weight: 0,
                        rao_emission,
                    };
                    let inputs = EpochInputs {
                        current_block,
                        stake,
                        weights,
                        last_update: lu,
                        block_at_registration: reg,
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
    fn epoch_invariants_hold_on_random_subnets((params, inputs) in subnet_strategy()) {
        let out = epoch(&params, &inputs).unwrap();
        let n = inputs.stake.len();
        prop_assert_eq!(out.emission.len(), n);
        let inc: i128 = out.incentive_bits.iter().map(|x| i128::from(*x)).sum();
        let div: i128 = out.dividends_bits.iter().map(|x| i128::from(*x)).sum();
        prop_assert!(out.incentive_bits.iter().all(|x| *x >= 0));
        prop_assert!(out.dividends_bits.iter().all(|x| *x >= 0));
        prop_assert!(inc <= i128::from(ONE_BITS), "incentive sums to {inc}");
        prop_assert!(div <= i128::from(ONE_BITS), "dividends sum to {div}");
        let rao = u128::from(params.rao_emission);
        for amounts in [&out.emission, &out.server_emission, &out.validator_emission] {
            prop_assert!(amounts.iter().map(|x| u128::from(*x)).sum::<u128>() <= rao);
        }
        let paid: u128 = out.server_emission.iter().chain(&out.validator_emission).map(|x| u128::from(*x)).sum();
        prop_assert!(paid <= rao);
        // A uid with no stake and no incoming weight gets nothing.
        for j in 0..n {
            let incoming = inputs.weights.iter().enumerate()
                .any(|(i, row)| i != j && row.iter().any(|(c, w)| usize::from(*c) == j && *w > 0));
            // Yuma2 keeps paying stored bonds after stake is withdrawn, so bond holders are excluded.
            let holds_bonds = inputs.bonds_before[j].iter().any(|(c, b)| usize::from(*c) < n && *b > 0);
            if inputs.stake[j] == 0 && !incoming && !holds_bonds {
                prop_assert_eq!(out.emission[j], 0);
                prop_assert_eq!(out.server_emission[j], 0);
                prop_assert_eq!(out.validator_emission[j], 0);
            }
        }
    }

    #[test]
    fn upscaling_puts_the_max_at_65535(values in proptest::collection::vec(any::<u16>(), 1..40)) {
        let up = max_upscale_to_u16(&values);
        prop_assert_eq!(up.len(), values.len());
        let mx = values.iter().copied().max().unwrap();
        if mx > 0 {
            let pos = values.iter().position(|v| *v == mx).unwrap();
            prop_assert_eq!(up[pos], 65535);
        } else {
            prop_assert!(up.iter().all(|v| *v == 0));
        }
    }
}
