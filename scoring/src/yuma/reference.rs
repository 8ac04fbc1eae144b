//! The original epoch on rows of `(uid, value)` pairs, kept as the oracle for [`super::epoch`].
//!
//! This is the straightforward transcription of the spec that first matched every vector bit
//! for bit. [`super::epoch`] computes the same thing on flat matrices with fused passes; the
//! property tests in `tests/yuma_fast.rs` check both agree on random subnets. Slow: do not
//! call it outside tests and tools that cross-check.

use super::math::{
    self, SparseMatrix, SparseRow, ZERO, col_clip_sparse, fixed_proportion_to_u16,
    inplace_col_max_upscale_sparse, inplace_col_normalize_sparse, inplace_normalize,
    inplace_normalize_64, inplace_normalize_using_sum, inplace_row_normalize_sparse,
    interpolate_sparse, is_topk_nonzero, liquid_alpha_row, mat_ema_alpha_sparse_row,
    mat_ema_sparse, matmul_sparse, matmul_transpose_sparse, row_hadamard_sparse, row_sum_sparse,
    share_to_amount, sum, u16_proportion_to_fixed, vec_mask_sparse_matrix,
    weighted_median_col_sparse,
};
use super::{
    EpochInputs, EpochOutput, EpochParams, U16Row, YumaError, bits, check_len, ema_alpha,
    rows_to_fixed, to_u16s,
};
use substrate_fixed::types::{I32F32, I64F64};

/// Runs one epoch (§5) the original way; same result as [`super::epoch`].: activity, stake, permits, weights, consensus, incentive, bonds,
/// dividends and emission. Pure and panic-free; fails only on inconsistent input lengths.
pub fn epoch(params: &EpochParams, inputs: &EpochInputs) -> Result<EpochOutput, YumaError> {
    let n = inputs.stake.len();
    if n > usize::from(u16::MAX) {
        return Err(YumaError::TooManyUids(n));
    }
    check_len("weights", n, inputs.weights.len())?;
    check_len("last_update", n, inputs.last_update.len())?;
    check_len(
        "block_at_registration",
        n,
        inputs.block_at_registration.len(),
    )?;
    check_len("validator_permit", n, inputs.validator_permit.len())?;
    check_len("bonds_before", n, inputs.bonds_before.len())?;
    if let Some(cb) = &inputs.commit_blocks {
        check_len("commit_blocks", n, cb.len())?;
    }
    if let Some(ts) = &inputs.tao_stake {
        check_len("tao_stake", n, ts.len())?;
    }
    let owner = params.owner_uid.map(usize::from).filter(|o| *o < n);
    let current_block = inputs.current_block;
    let lu = &inputs.last_update;
    let reg = &inputs.block_at_registration;

    // §5.1 activity.
    let inactive: Vec<bool> = lu
        .iter()
        .map(|u| u.saturating_add(params.activity_cutoff_blocks) < current_block)
        .collect();

    // §5.2 stake: threshold filter and normalisation in I64F64, then floor to I32F32.
    let tao_weight = math::safe_div_64(
        I64F64::saturating_from_num(params.tao_weight),
        I64F64::saturating_from_num(u64::MAX),
    );
    let mut stake64: Vec<I64F64> = inputs
        .stake
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let alpha = I64F64::saturating_from_num(*s);
            let total = match inputs.tao_stake.as_ref().and_then(|t| t.get(i)) {
                Some(t) => {
                    alpha.saturating_add(tao_weight.saturating_mul(I64F64::saturating_from_num(*t)))
                }
                None => alpha,
            };
            if Some(i) != owner && total.saturating_to_num::<u64>() < params.stake_threshold {
                I64F64::from_bits(0)
            } else {
                total
            }
        })
        .collect();
    // The chain sums stake with a plain `+`; a sum beyond I64F64 has no defined chain result.
    if stake64
        .iter()
        .try_fold(I64F64::from_bits(0), |acc, s| acc.checked_add(*s))
        .is_none()
        || inputs.stake.iter().any(|s| i64::try_from(*s).is_err())
    {
        return Err(YumaError::StakeOverflow);
    }
    inplace_normalize_64(&mut stake64);
    let stake: Vec<I32F32> = stake64
        .iter()
        .map(|s| I32F32::saturating_from_num(*s))
        .collect();

    // §5.3 permits: this epoch masks with the stored ones; the new ones are only written out.
    let mut permits_old = inputs.validator_permit.clone();
    if let Some(p) = owner.and_then(|o| permits_old.get_mut(o)) {
        *p = true;
    }
    let forbid: Vec<bool> = permits_old.iter().map(|p| !p).collect();
    let mut new_permits = is_topk_nonzero(&stake, usize::from(params.max_allowed_validators));
    if let Some(p) = owner.and_then(|o| new_permits.get_mut(o)) {
        *p = true;
    }

    // §5.4 active stake.
    let mut active_stake: Vec<I32F32> = stake
        .iter()
        .zip(inactive.iter().zip(&forbid))
        .map(|(s, (ina, fb))| if *ina || *fb { ZERO } else { *s })
        .collect();
    inplace_normalize(&mut active_stake);

    // §5.5 weights: permit, self-weight, outdated, commit-reveal, row normalise.
    let mut weights: SparseMatrix = inputs
        .weights
        .iter()
        .zip(&forbid)
        .enumerate()
        .map(|(i, (row, fb))| {
            if *fb {
                return Vec::new();
            }
            row.iter()
                .filter(|(j, _)| {
                    let j = usize::from(*j);
                    j < n && (j != i || Some(i) == owner)
                })
                .map(|(j, v)| (*j, I32F32::from_num(*v)))
                .collect()
        })
        .collect();
    weights = vec_mask_sparse_matrix(&weights, lu, reg, |updated, registered| {
        updated <= registered
    });
    if params.commit_reveal_mask {
        let commit_blocks: Vec<u64> = match &inputs.commit_blocks {
            Some(cb) => cb.iter().map(|c| c.unwrap_or(u64::MAX)).collect(),
            None => vec![u64::MAX; n],
        };
        weights = vec_mask_sparse_matrix(&weights, &commit_blocks, reg, |cb, registered| {
            cb < registered
        });
    }
    inplace_row_normalize_sparse(&mut weights);

    // §5.6 consensus.
    let kappa = u16_proportion_to_fixed(params.kappa_u16);
    let consensus = weighted_median_col_sparse(&active_stake, &weights, n, kappa);

    // §5.7 clipping and validator trust.
    let clipped = col_clip_sparse(&weights, &consensus);
    let validator_trust = row_sum_sparse(&clipped);

    // §5.8 incentive.
    let mut incentive = matmul_sparse(&clipped, &active_stake, n);
    inplace_normalize(&mut incentive);

    // §5.9 weights for bonds.
    let beta = u16_proportion_to_fixed(params.bonds_penalty_u16);
    let weights_for_bonds = interpolate_sparse(&weights, &clipped, n, beta);

    // §5.10 bonds and dividends.
    let last_tempo = if params.last_mechanism_step_block == 0 {
        current_block.saturating_sub(params.tempo)
    } else {
        params.last_mechanism_step_block.saturating_add(1)
    };
    let bond_horizon = vec![last_tempo; n];
    let (mut dividends, bonds_store) = if params.yuma3 {
        let bonds = rows_to_fixed(&inputs.bonds_before, n, u16_proportion_to_fixed);
        let bonds = vec_mask_sparse_matrix(&bonds, &bond_horizon, reg, |lt, registered| {
            lt <= registered
        });
        let ema_bonds = yuma3_bonds(params, &weights_for_bonds, &bonds, &consensus);
        let mut norm = ema_bonds.clone();
        inplace_col_normalize_sparse(&mut norm, n);
        let per_validator = matmul_transpose_sparse(&norm, &incentive);
        let mut dividends: Vec<I32F32> = per_validator
            .iter()
            .zip(&active_stake)
            .map(|(b, a)| b.checked_mul(*a).unwrap_or(ZERO))
            .collect();
        inplace_normalize(&mut dividends);
        (dividends, ema_bonds)
    } else {
        let mut bonds = rows_to_fixed(&inputs.bonds_before, n, I32F32::from_num);
        bonds = vec_mask_sparse_matrix(&bonds, &bond_horizon, reg, |lt, registered| {
            lt <= registered
        });
        inplace_col_normalize_sparse(&mut bonds, n);
        let mut delta = row_hadamard_sparse(&weights_for_bonds, &active_stake);
        inplace_col_normalize_sparse(&mut delta, n);
        let mut ema_bonds = mat_ema_sparse(&delta, &bonds, ema_alpha(params.bonds_moving_average));
        inplace_col_normalize_sparse(&mut ema_bonds, n);
        let mut dividends = matmul_transpose_sparse(&ema_bonds, &incentive);
        inplace_normalize(&mut dividends);
        inplace_col_max_upscale_sparse(&mut ema_bonds, n);
        (dividends, ema_bonds)
    };
    if dividends.len() != n {
        // Keeps the output shape fixed even if a bond row were missing; unreachable after the checks above.
        dividends.resize(n, ZERO);
    }

    // §5.11 emission shares and amounts.
    let combined: Vec<I32F32> = incentive
        .iter()
        .zip(&dividends)
        .map(|(i, d)| i.saturating_add(*d))
        .collect();
    let emission_sum = sum(&combined);
    let mut server_share = incentive.clone();
    let mut validator_share = dividends.clone();
    let mut combined_share = combined;
    inplace_normalize_using_sum(&mut server_share, emission_sum);
    inplace_normalize_using_sum(&mut validator_share, emission_sum);
    inplace_normalize(&mut combined_share);
    if emission_sum == ZERO {
        let fallback = if sum(&active_stake) == ZERO {
            &stake
        } else {
            &active_stake
        };
        validator_share.clone_from(fallback);
        combined_share.clone_from(fallback);
    }
    let rao = params.rao_emission;
    let amounts =
        |v: &[I32F32]| -> Vec<u64> { v.iter().map(|x| share_to_amount(*x, rao)).collect() };

    // §5.12 bonds written back: quantised rows of uids holding a new permit.
    let bonds_after: Vec<U16Row> = bonds_store
        .iter()
        .zip(&new_permits)
        .map(|(row, permit)| {
            if *permit {
                row.iter()
                    .map(|(j, v)| (*j, fixed_proportion_to_u16(*v)))
                    .collect()
            } else {
                Vec::new()
            }
        })
        .collect();

    Ok(EpochOutput {
        stake_bits: bits(&stake),
        active_stake_bits: bits(&active_stake),
        consensus_bits: bits(&consensus),
        incentive_bits: bits(&incentive),
        dividends_bits: bits(&dividends),
        validator_trust_bits: bits(&validator_trust),
        consensus_u16: to_u16s(&consensus),
        incentive_u16: to_u16s(&incentive),
        dividends_u16: to_u16s(&dividends),
        validator_trust_u16: to_u16s(&validator_trust),
        emission: amounts(&combined_share),
        server_emission: amounts(&server_share),
        validator_emission: amounts(&validator_share),
        new_validator_permit: new_permits,
        normalized_combined_emission_bits: bits(&combined_share),
        normalized_validator_emission_bits: bits(&validator_share),
        normalized_server_emission_bits: bits(&server_share),
        bonds_after,
    })
}

/// Yuma3 bond EMA (§5.10b): per-entry liquid alpha when enabled and some consensus is nonzero,
/// otherwise one alpha from `bonds_moving_average`.
fn yuma3_bonds(
    params: &EpochParams,
    weights: &[SparseRow],
    bonds: &[SparseRow],
    consensus: &[I32F32],
) -> SparseMatrix {
    if params.liquid_alpha && consensus.iter().any(|c| *c != ZERO) {
        let low = u16_proportion_to_fixed(params.alpha_low_u16);
        let high = u16_proportion_to_fixed(params.alpha_high_u16);
        let steepness = I32F32::from_num(params.alpha_sigmoid_steepness);
        let empty = SparseRow::new();
        weights
            .iter()
            .enumerate()
            .map(|(i, w_row)| {
                if w_row.is_empty() {
                    // No column of this row is written, whatever its alphas.
                    return SparseRow::new();
                }
                let b_row = bonds.get(i).unwrap_or(&empty);
                let alphas = liquid_alpha_row(w_row, b_row, consensus, low, high, steepness);
                mat_ema_alpha_sparse_row(w_row, b_row, &alphas)
            })
            .collect()
    } else {
        mat_ema_sparse(weights, bonds, ema_alpha(params.bonds_moving_average))
    }
}
