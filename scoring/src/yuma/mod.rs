//! Yuma consensus, bit-exact with subtensor's production (sparse) epoch.
//!
//! [`epoch`] runs one epoch from the stored state of a subnet ([`EpochInputs`]) and its
//! hyperparameters ([`EpochParams`]) and returns everything the chain would write back
//! ([`EpochOutput`]). [`rewards`] is the short entry point for the validator. The spec is
//! `spec/yuma.md` (subtensor `main` @ `14bc6f9f`); section numbers below refer to it.

pub mod csr;
pub mod io;
pub mod lanes;
pub mod math;
pub mod par;
pub mod reference;

use csr::Csr;
use math::{
    ONE, SparseMatrix, SparseRow, ZERO, col_clip_sparse, fixed_proportion_to_u16,
    inplace_normalize, inplace_normalize_64, inplace_normalize_using_sum, interpolate_sparse,
    is_topk_nonzero, mat_ema_alpha_sparse_row, share_to_amount, sum, u16_proportion_to_fixed,
};
use serde::{Deserialize, Serialize};
use substrate_fixed::types::{I32F32, I64F64};

pub use math::max_upscale_to_u16;

/// A stored sparse row: `(uid, u16 value)` pairs in the order they were written.
pub type U16Row = Vec<(u16, u16)>;

/// Why an epoch could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YumaError {
    /// A per-uid input does not have one entry per uid.
    #[error("`{field}` has {got} entries but the subnet has {expected} uids")]
    LengthMismatch {
        /// The input field.
        field: &'static str,
        /// The number of uids (length of `stake`).
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// More uids than a u16 uid can address.
    #[error("subnet has {0} uids; at most 65535 are supported")]
    TooManyUids(usize),
    /// The total stake does not fit I64F64 (above 2^63 − 1 stake units in all).
    #[error("total stake exceeds {max} units (I64F64 range)", max = i64::MAX)]
    StakeOverflow,
    /// The input JSON could not be read.
    #[error("invalid epoch JSON at `{path}`: {message}")]
    Json {
        /// Where in the document (e.g. `inputs.stake[3]`).
        path: String,
        /// What was wrong.
        message: String,
    },
}

/// Subnet hyperparameters of one epoch (same names and meaning as `yuma_vectors.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpochParams {
    /// κ as u16 (divided by 65535): stake share that defines consensus.
    pub kappa_u16: u16,
    /// Bonds penalty β as u16 (divided by 65535).
    pub bonds_penalty_u16: u16,
    /// Bonds moving average ×1e-6 (EMA keeps this much of the old bond).
    pub bonds_moving_average: u64,
    /// Yuma3 bonds (true) or the original Yuma2 bonds (false).
    pub yuma3: bool,
    /// Per-entry liquid alpha in Yuma3.
    pub liquid_alpha: bool,
    /// Liquid alpha lower bound as u16 (divided by 65535).
    pub alpha_low_u16: u16,
    /// Liquid alpha upper bound as u16 (divided by 65535).
    pub alpha_high_u16: u16,
    /// Liquid alpha sigmoid steepness (used divided by −100).
    pub alpha_sigmoid_steepness: i16,
    /// Number of validator permits (top-k by stake).
    pub max_allowed_validators: u16,
    /// Minimum stake for a uid's stake to count (the owner is exempt).
    pub stake_threshold: u64,
    /// Blocks per epoch.
    pub tempo: u64,
    /// A uid is inactive when `last_update + activity_cutoff_blocks < current_block`.
    pub activity_cutoff_blocks: u64,
    /// Block of the previous successful epoch; 0 means `current_block − tempo` is the horizon.
    pub last_mechanism_step_block: u64,
    /// The subnet owner's uid, if it is registered.
    #[serde(default)]
    pub owner_uid: Option<u16>,
    /// Apply the commit-reveal mask (§5.5 step 4) using `inputs.commit_blocks`.
    #[serde(default)]
    pub commit_reveal_mask: bool,
    /// `TaoWeight` (fraction of `u64::MAX`) applied to `inputs.tao_stake` when given.
    #[serde(default)]
    pub tao_weight: u64,
    /// Emission to distribute this epoch, in rao.
    pub rao_emission: u64,
}

impl Default for EpochParams {
    /// subtensor's runtime defaults (§6), with a 1 TAO epoch emission.
    fn default() -> Self {
        Self {
            kappa_u16: 32_767,
            bonds_penalty_u16: 65_535,
            bonds_moving_average: 900_000,
            yuma3: false,
            liquid_alpha: false,
            alpha_low_u16: 45_875,
            alpha_high_u16: 58_982,
            alpha_sigmoid_steepness: 1_000,
            max_allowed_validators: 128,
            stake_threshold: 0,
            tempo: 360,
            activity_cutoff_blocks: 5_000,
            last_mechanism_step_block: 0,
            owner_uid: None,
            commit_reveal_mask: false,
            tao_weight: 0,
            rao_emission: 1_000_000_000,
        }
    }
}

/// The stored subnet state one epoch reads. Per-uid vectors have one entry per uid.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EpochInputs {
    /// The block the epoch runs at.
    pub current_block: u64,
    /// Stake per uid (alpha units; the total stake weight when `tao_stake` is absent).
    pub stake: Vec<u64>,
    /// Stored weight rows (after `set_weights` upscaling), explicit zeros kept.
    pub weights: Vec<U16Row>,
    /// Block of each uid's last weight set (or registration).
    pub last_update: Vec<u64>,
    /// Block each uid was registered at.
    pub block_at_registration: Vec<u64>,
    /// Permits written by the previous epoch.
    pub validator_permit: Vec<bool>,
    /// Bonds written by the previous epoch.
    pub bonds_before: Vec<U16Row>,
    /// Per uid, the earliest unexpired commit block (null: none); used with `commit_reveal_mask`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_blocks: Option<Vec<Option<u64>>>,
    /// Per uid root (TAO) stake, weighted by `params.tao_weight` and added to `stake`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tao_stake: Option<Vec<u64>>,
    /// Dense copy of `weights` found in the test vectors; read and ignored.
    #[serde(default, skip_serializing)]
    pub weights_dense_u16: Option<serde_json::Value>,
}

/// Everything one epoch produces (same names and types as `emulator_outputs`).
///
/// `*_bits` are raw I32F32 values (value × 2^32); `*_u16` are `floor(value × 65535)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochOutput {
    /// Normalised stake after the threshold filter.
    pub stake_bits: Vec<i64>,
    /// Stake of active, permitted validators, normalised.
    pub active_stake_bits: Vec<i64>,
    /// Consensus weight per uid.
    pub consensus_bits: Vec<i64>,
    /// Miner incentive per uid.
    pub incentive_bits: Vec<i64>,
    /// Validator dividends per uid.
    pub dividends_bits: Vec<i64>,
    /// Validator trust per uid.
    pub validator_trust_bits: Vec<i64>,
    /// Stored consensus.
    pub consensus_u16: Vec<u16>,
    /// Stored incentive.
    pub incentive_u16: Vec<u16>,
    /// Stored dividends.
    pub dividends_u16: Vec<u16>,
    /// Stored validator trust.
    pub validator_trust_u16: Vec<u16>,
    /// Stored combined emission per uid, in rao.
    pub emission: Vec<u64>,
    /// Miner (server) emission per uid, in rao.
    pub server_emission: Vec<u64>,
    /// Validator emission per uid, in rao.
    pub validator_emission: Vec<u64>,
    /// Permits for the next epoch.
    pub new_validator_permit: Vec<bool>,
    /// Combined emission share per uid.
    pub normalized_combined_emission_bits: Vec<i64>,
    /// Validator emission share per uid.
    pub normalized_validator_emission_bits: Vec<i64>,
    /// Server emission share per uid.
    pub normalized_server_emission_bits: Vec<i64>,
    /// Bonds to store for the next epoch.
    pub bonds_after: Vec<U16Row>,
}

pub(crate) fn check_len(field: &'static str, expected: usize, got: usize) -> Result<(), YumaError> {
    if expected == got {
        Ok(())
    } else {
        Err(YumaError::LengthMismatch {
            field,
            expected,
            got,
        })
    }
}

pub(crate) fn bits(v: &[I32F32]) -> Vec<i64> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub(crate) fn to_u16s(v: &[I32F32]) -> Vec<u16> {
    v.iter().map(|x| fixed_proportion_to_u16(*x)).collect()
}

/// Stored u16 rows as fixed point, dropping columns that are not uids.
pub(crate) fn rows_to_fixed(
    rows: &[U16Row],
    n: usize,
    conv: impl Fn(u16) -> I32F32,
) -> SparseMatrix {
    rows.iter()
        .map(|row| {
            row.iter()
                .filter(|(j, _)| usize::from(*j) < n)
                .map(|(j, v)| (*j, conv(*v)))
                .collect()
        })
        .collect()
}

/// `1 − BondsMovingAverage/1e6`, with the I64F64 → I32F32 truncation of §2.
pub(crate) fn ema_alpha(bonds_moving_average: u64) -> I32F32 {
    let bma = math::safe_div_64(
        I64F64::saturating_from_num(bonds_moving_average),
        I64F64::saturating_from_num(1_000_000u32),
    );
    ONE.saturating_sub(I32F32::saturating_from_num(bma))
}

/// Runs one epoch (§5): activity, stake, permits, weights, consensus, incentive, bonds,
/// dividends and emission. Pure and panic-free; fails only on inconsistent input lengths.
///
/// A large epoch runs on several threads ([`par::default_threads`]); the output is the same
/// bits on any number of threads ([`epoch_with_threads`]).
pub fn epoch(params: &EpochParams, inputs: &EpochInputs) -> Result<EpochOutput, YumaError> {
    let entries = inputs
        .weights
        .iter()
        .chain(&inputs.bonds_before)
        .fold(0usize, |acc, r| acc.saturating_add(r.len()));
    epoch_with_threads(params, inputs, par::default_threads(entries))
}

/// [`epoch`] on at most `threads` threads (0 means 1). The result does not depend on
/// `threads`: rows and columns are split, never the order of a sum (see [`par`]).
pub fn epoch_with_threads(
    params: &EpochParams,
    inputs: &EpochInputs,
    threads: usize,
) -> Result<EpochOutput, YumaError> {
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

    // §5.5 weights: permit, self-weight, outdated, commit-reveal, row normalise. The masks
    // only ever drop single entries, so they are applied in one pass while the rows are read.
    // The matrices are cut into row blocks, one per thread (see `par`); the stored bonds
    // (§5.10) of the same rows are read in the same pass.
    let commit_blocks: Option<Vec<u64>> =
        params
            .commit_reveal_mask
            .then(|| match &inputs.commit_blocks {
                Some(cb) => cb.iter().map(|c| c.unwrap_or(u64::MAX)).collect(),
                None => vec![u64::MAX; n],
            });
    let last_tempo = if params.last_mechanism_step_block == 0 {
        current_block.saturating_sub(params.tempo)
    } else {
        params.last_mechanism_step_block.saturating_add(1)
    };
    let bond_conv: fn(u16) -> I32F32 = if params.yuma3 {
        u16_proportion_to_fixed
    } else {
        math::from_u16
    };
    let costs: Vec<usize> = inputs
        .weights
        .iter()
        .zip(&inputs.bonds_before)
        .map(|(w, b)| w.len().saturating_add(b.len()))
        .collect();
    let ranges = par::split_rows(&costs, threads);
    let starts: Vec<usize> = ranges.iter().map(|r| r.start).collect();
    let built = par::map(ranges, |r| {
        let start = r.start;
        let w_rows = inputs.weights.get(r.clone()).unwrap_or(&[]);
        let mut weights = Csr::from_rows(
            w_rows.iter().enumerate().map(|(k, row)| {
                let i = start.saturating_add(k);
                let fb = forbid.get(i).copied().unwrap_or(true);
                let updated = lu.get(i).copied().unwrap_or(0);
                let committed = commit_blocks.as_ref().and_then(|c| c.get(i)).copied();
                let self_ok = Some(i) == owner;
                row.iter()
                    .take(if fb { 0 } else { usize::MAX })
                    .filter(move |(j, _)| {
                        let j = usize::from(*j);
                        let Some(registered) = reg.get(j) else {
                            return false;
                        };
                        (j != i || self_ok)
                            && updated > *registered
                            && committed.is_none_or(|cb| cb >= *registered)
                    })
                    .map(|(j, v)| (*j, math::from_u16(*v)))
            }),
            w_rows.iter().map(Vec::len).sum(),
        );
        weights.row_normalize();
        let b_rows = inputs.bonds_before.get(r).unwrap_or(&[]);
        let bonds = Csr::from_rows(
            b_rows.iter().map(|row| {
                row.iter()
                    .filter(|(j, _)| reg.get(usize::from(*j)).is_some_and(|r| last_tempo > *r))
                    .map(move |(j, v)| (*j, bond_conv(*v)))
            }),
            b_rows.iter().map(Vec::len).sum(),
        );
        // Yuma2 column-normalises the stored bonds; Yuma3 never reads their column sums.
        let bond_sums = if params.yuma3 {
            (Vec::new(), true)
        } else {
            bonds.col_sums_checked(n)
        };
        (weights, bonds, bond_sums)
    });
    let mut weights = Vec::with_capacity(built.len());
    let mut bonds = Vec::with_capacity(built.len());
    let mut bond_sum_parts = Vec::with_capacity(built.len());
    for (w, b, s) in built {
        weights.push(w);
        bonds.push(b);
        bond_sum_parts.push(s);
    }

    // §5.6 consensus.
    let kappa = u16_proportion_to_fixed(params.kappa_u16);
    let consensus = csr::weighted_median_col_blocks(&active_stake, &weights, n, kappa, threads);
    let threshold = |j: u16| consensus.get(usize::from(j)).copied().unwrap_or(ZERO);

    // §5.7 validator trust and §5.8 incentive, read off the clipped weights as they are made.
    let trust_incentive = |m: &Csr, start: usize, incentive: &mut [I32F32], neg: &mut i64| {
        let a_rows = active_stake.get(start..).unwrap_or(&[]);
        m.rows()
            .zip(a_rows.iter().chain(std::iter::repeat(&ZERO)))
            .map(|(row, a)| {
                let mut trust = ZERO;
                for (j, v) in row {
                    if let Some(c) = csr::clip(*v, threshold(*j)) {
                        trust = math::add(trust, c);
                        if let Some(o) = incentive.get_mut(usize::from(*j)) {
                            let t = math::mul(*a, c);
                            *neg |= t.to_bits();
                            *o = math::add(*o, t);
                        }
                    }
                }
                trust
            })
            .collect::<Vec<I32F32>>()
    };
    let jobs: Vec<(&Csr, usize)> = weights.iter().zip(starts.iter().copied()).collect();
    let parts = par::map(jobs, |(m, start)| {
        let mut incentive = vec![ZERO; n];
        let mut neg = 0i64;
        let trust = trust_incentive(m, start, &mut incentive, &mut neg);
        (trust, (incentive, neg >= 0))
    });
    let mut validator_trust = Vec::with_capacity(n);
    let mut incentive_parts = Vec::with_capacity(parts.len());
    for (t, p) in parts {
        validator_trust.extend(t);
        incentive_parts.push(p);
    }
    let mut incentive = par::combine_sums(&incentive_parts, n).unwrap_or_else(|| {
        // A negative term: one sequential pass, in row order, as on one thread.
        let mut incentive = vec![ZERO; n];
        let mut neg = 0i64;
        for (m, start) in weights.iter().zip(&starts) {
            trust_incentive(m, *start, &mut incentive, &mut neg);
        }
        incentive
    });
    inplace_normalize(&mut incentive);

    // §5.9 weights for bonds: β = 1 (the default) is the clipped matrix itself. Row-local,
    // so each block does it at the start of its bonds pass.
    let beta = u16_proportion_to_fixed(params.bonds_penalty_u16);
    let weights_for_bonds = |m: &mut Csr| {
        if beta == ONE {
            m.retain_map(|_, j, v| csr::clip(v, threshold(j)));
        } else if beta != ZERO {
            let rows: SparseMatrix = m.rows().map(<[_]>::to_vec).collect();
            let clipped = col_clip_sparse(&rows, &consensus);
            let mixed = interpolate_sparse(&rows, &clipped, n, beta);
            *m = Csr::from_rows(mixed.iter().map(|r| r.iter().copied()), 0);
        }
    };

    // §5.10 bonds and dividends; §5.12 bonds written back: quantised rows of uids holding a
    // new permit.
    let quantise = |m: &Csr, start: usize, out: &mut Vec<U16Row>| {
        let permits = new_permits.get(start..).unwrap_or(&[]);
        out.extend(m.rows().zip(permits).map(|(row, permit)| {
            if *permit {
                row.iter()
                    .map(|(j, v)| (*j, fixed_proportion_to_u16(*v)))
                    .collect()
            } else {
                Vec::new()
            }
        }));
    };
    let (mut dividends, bonds_after) = if params.yuma3 {
        let liquid = params.liquid_alpha && consensus.iter().any(|c| *c != ZERO);
        let jobs: Vec<(&mut Csr, &Csr)> = weights.iter_mut().zip(&bonds).collect();
        let made = par::map(jobs, |(m, b)| {
            weights_for_bonds(m);
            let ema = yuma3_bonds(params, liquid, m, b, &consensus, n);
            let sums = ema.col_sums_checked(n);
            (ema, sums)
        });
        let (ema_bonds, sum_parts): (Vec<Csr>, Vec<_>) = made.into_iter().unzip();
        let sums =
            par::combine_sums(&sum_parts, n).unwrap_or_else(|| csr::col_sums_blocks(&ema_bonds, n));
        // Dividends read the column-normalised bonds; the unnormalised ones are stored.
        let col_div = csr::column_divisors(&sums);
        let jobs: Vec<(&Csr, usize)> = ema_bonds.iter().zip(starts.iter().copied()).collect();
        let parts = par::map(jobs, |(m, start)| {
            let a_rows = active_stake.get(start..).unwrap_or(&[]);
            let dividends: Vec<I32F32> = m
                .rows()
                .zip(a_rows)
                .map(|(row, a)| {
                    let b = row.iter().fold(ZERO, |acc, (j, x)| {
                        let x = match col_div.get(usize::from(*j)) {
                            Some(Some(d)) => d.div(*x),
                            _ => *x,
                        };
                        let ij = incentive.get(usize::from(*j)).copied().unwrap_or(ZERO);
                        math::add(acc, math::mul(ij, x))
                    });
                    b.checked_mul(*a).unwrap_or(ZERO)
                })
                .collect();
            let mut stored = Vec::with_capacity(m.rows_len());
            quantise(m, start, &mut stored);
            (dividends, stored)
        });
        let mut dividends = Vec::with_capacity(n);
        let mut bonds_after = Vec::with_capacity(n);
        for (d, b) in parts {
            dividends.extend(d);
            bonds_after.extend(b);
        }
        inplace_normalize(&mut dividends);
        (dividends, bonds_after)
    } else {
        let bond_sums = par::combine_sums(&bond_sum_parts, n)
            .unwrap_or_else(|| csr::col_sums_blocks(&bonds, n));
        let bond_div = csr::column_divisors(&bond_sums);
        // Each column sum of the weighted delta is accumulated row after row as the entries
        // are made, which is the order a separate pass would add them in.
        let jobs: Vec<(&mut Csr, &mut Csr, usize)> = weights
            .iter_mut()
            .zip(bonds.iter_mut())
            .zip(starts.iter().copied())
            .map(|((w, b), s)| (w, b, s))
            .collect();
        let delta_sum_parts = par::map(jobs, |(delta, b, start)| {
            weights_for_bonds(delta);
            b.divide_columns(&bond_div);
            let a_rows = active_stake.get(start..).unwrap_or(&[]);
            let mut sums = vec![ZERO; n];
            let mut neg = 0i64;
            for (row, a) in delta.rows_mut().zip(a_rows) {
                for (j, v) in row.iter_mut() {
                    *v = math::mul(*v, *a);
                    if let Some(c) = sums.get_mut(usize::from(*j)) {
                        neg |= v.to_bits();
                        *c = math::add(*c, *v);
                    }
                }
            }
            (sums, neg >= 0)
        });
        let delta = weights;
        let delta_sums = par::combine_sums(&delta_sum_parts, n)
            .unwrap_or_else(|| csr::col_sums_blocks(&delta, n));
        let delta_div = csr::column_divisors(&delta_sums);
        let alpha = ema_alpha(params.bonds_moving_average);
        let jobs: Vec<(Csr, &Csr)> = delta.into_iter().zip(&bonds).collect();
        let made = par::map(jobs, |(mut d, b)| {
            d.divide_columns(&delta_div);
            let (ema, sums) = csr::mat_ema_with_sums(&d, b, alpha, n);
            // The EMA keeps positive entries only.
            (ema, (sums, true))
        });
        let (mut ema_bonds, sum_parts): (Vec<Csr>, Vec<_>) = made.into_iter().unzip();
        let ema_sums =
            par::combine_sums(&sum_parts, n).unwrap_or_else(|| csr::col_sums_blocks(&ema_bonds, n));
        let ema_div = csr::column_divisors(&ema_sums);
        let parts = par::map(ema_bonds.iter_mut().collect(), |m: &mut Csr| {
            m.divide_matmul_transpose_max(&ema_div, &incentive)
        });
        let mut dividends = Vec::with_capacity(n);
        let mut max_parts = Vec::with_capacity(parts.len());
        for (d, mx) in parts {
            dividends.extend(d);
            max_parts.push(mx);
        }
        inplace_normalize(&mut dividends);
        let max_div = csr::column_divisors(&par::combine_max(&max_parts, n));
        let jobs: Vec<(&mut Csr, usize)> =
            ema_bonds.iter_mut().zip(starts.iter().copied()).collect();
        let stored = par::map(jobs, |(m, start)| {
            m.divide_columns(&max_div);
            let mut stored = Vec::with_capacity(m.rows_len());
            quantise(m, start, &mut stored);
            stored
        });
        (dividends, stored.into_iter().flatten().collect())
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

/// Yuma3 bond EMA (§5.10b) of one row block: per-entry liquid alpha when `liquid` (enabled
/// and some consensus is nonzero), otherwise one alpha from `bonds_moving_average`.
fn yuma3_bonds(
    params: &EpochParams,
    liquid: bool,
    weights: &Csr,
    bonds: &Csr,
    consensus: &[I32F32],
    columns: usize,
) -> Csr {
    if liquid {
        let low = u16_proportion_to_fixed(params.alpha_low_u16);
        let high = u16_proportion_to_fixed(params.alpha_high_u16);
        let steepness = I32F32::from_num(params.alpha_sigmoid_steepness);
        let mut scratch = lanes::AlphaScratch::default();
        let mut bond_rows = bonds.rows();
        Csr::from_rows(
            weights
                .rows()
                .map(|w_row| {
                    let b_row = bond_rows.next().unwrap_or(&[]);
                    if w_row.is_empty() {
                        // No column of this row is written, whatever its alphas.
                        return SparseRow::new();
                    }
                    let alphas = lanes::liquid_alpha_row(
                        &mut scratch,
                        w_row,
                        b_row,
                        consensus,
                        low,
                        high,
                        steepness,
                    );
                    mat_ema_alpha_sparse_row(w_row, b_row, &alphas)
                })
                .collect::<Vec<_>>(),
            weights.rows().map(<[_]>::len).sum(),
        )
    } else {
        csr::mat_ema_with_sums(
            weights,
            bonds,
            ema_alpha(params.bonds_moving_average),
            columns,
        )
        .0
    }
}

/// Bond and permit state carried from one epoch to the next (what the chain stores).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct YumaState {
    /// Validator permits written by the previous epoch.
    pub validator_permit: Vec<bool>,
    /// Bond rows written by the previous epoch.
    pub bonds: Vec<U16Row>,
}

impl YumaState {
    /// A first-epoch state: no bonds, and the permits the chain's setup epoch would grant
    /// (top-k nonzero stake), so the first call to [`rewards`] already counts weights.
    pub fn fresh(stakes: &[u64], params: &EpochParams) -> Self {
        let mut s: Vec<I64F64> = stakes
            .iter()
            .map(|x| I64F64::saturating_from_num(*x))
            .collect();
        inplace_normalize_64(&mut s);
        let s32: Vec<I32F32> = s.iter().map(|x| I32F32::saturating_from_num(*x)).collect();
        Self {
            validator_permit: is_topk_nonzero(&s32, usize::from(params.max_allowed_validators)),
            bonds: vec![Vec::new(); stakes.len()],
        }
    }
}

/// Rewards of one epoch as shares and amounts, plus the state for the next epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewards {
    /// The full epoch output.
    pub output: EpochOutput,
    /// State to pass to the next call of [`rewards`].
    pub next_state: YumaState,
}

impl Rewards {
    /// Miner incentive per uid as `f64` in [0, 1], for display only.
    pub fn incentive_f64(&self) -> Vec<f64> {
        self.output
            .incentive_bits
            .iter()
            .map(|b| bits_to_f64(*b))
            .collect()
    }
    /// Validator dividends per uid as `f64` in [0, 1], for display only.
    pub fn dividends_f64(&self) -> Vec<f64> {
        self.output
            .dividends_bits
            .iter()
            .map(|b| bits_to_f64(*b))
            .collect()
    }
    /// Consensus per uid as `f64` in [0, 1], for display only.
    pub fn consensus_f64(&self) -> Vec<f64> {
        self.output
            .consensus_bits
            .iter()
            .map(|b| bits_to_f64(*b))
            .collect()
    }
}

/// A raw I32F32 value (value × 2^32) as `f64`, for display only.
pub fn bits_to_f64(bits: i64) -> f64 {
    I32F32::from_bits(bits).to_num::<f64>()
}

/// A stored u16 proportion (x × 65535) as `f64`, for display only.
pub fn u16_to_f64(x: u16) -> f64 {
    f64::from(x) / 65_535.0
}

/// One epoch for the validator: stake per uid and each uid's submitted weights (empty for
/// non-validators) in, rewards and next state out.
///
/// Weights are max-upscaled as `set_weights` stores them; every uid counts as active,
/// registered before the previous epoch and updated this epoch. Pass the previous
/// [`Rewards::next_state`] as `state` (or [`YumaState::fresh`] the first time).
pub fn rewards(
    stakes: &[u64],
    weights: &[Vec<(u16, u16)>],
    state: &YumaState,
    params: &EpochParams,
) -> Result<Rewards, YumaError> {
    rewards_inner(stakes, weights, None, state, params)
}

/// [`rewards`] for commit-reveal weights: `commit_rounds[i]` is the round validator `i`
/// committed to its (revealed) row in, and the chain's commit-reveal mask (§5.5 step 4) is
/// applied with it, so a row never weights a uid registered after its commitment. Every uid
/// counts as registered at round 0 here (the metagraph file carries no registration round),
/// so the mask removes nothing until registrations are tracked.
pub fn rewards_revealed(
    stakes: &[u64],
    weights: &[Vec<(u16, u16)>],
    commit_rounds: &[Option<u64>],
    state: &YumaState,
    params: &EpochParams,
) -> Result<Rewards, YumaError> {
    check_len("commit_rounds", stakes.len(), commit_rounds.len())?;
    rewards_inner(stakes, weights, Some(commit_rounds), state, params)
}

fn rewards_inner(
    stakes: &[u64],
    weights: &[Vec<(u16, u16)>],
    commit_rounds: Option<&[Option<u64>]>,
    state: &YumaState,
    params: &EpochParams,
) -> Result<Rewards, YumaError> {
    let n = stakes.len();
    check_len("weights", n, weights.len())?;
    check_len("validator_permit", n, state.validator_permit.len())?;
    check_len("bonds", n, state.bonds.len())?;
    let stored: Vec<U16Row> = weights
        .iter()
        .map(|row| {
            let values: Vec<u16> = row.iter().map(|(_, v)| *v).collect();
            row.iter()
                .zip(max_upscale_to_u16(&values))
                .map(|((j, _), v)| (*j, v))
                .collect()
        })
        .collect();
    // Registration at block 0 and an update at `current_block` keep every weight and bond live.
    let current_block = params.tempo.saturating_add(1);
    let inputs = EpochInputs {
        current_block,
        stake: stakes.to_vec(),
        weights: stored,
        last_update: vec![current_block; n],
        block_at_registration: vec![0; n],
        validator_permit: state.validator_permit.clone(),
        bonds_before: state.bonds.clone(),
        commit_blocks: commit_rounds.map(<[_]>::to_vec),
        tao_stake: None,
        weights_dense_u16: None,
    };
    let mut params = params.clone();
    params.last_mechanism_step_block = 0;
    params.commit_reveal_mask = commit_rounds.is_some();
    let output = epoch(&params, &inputs)?;
    let next_state = YumaState {
        validator_permit: output.new_validator_permit.clone(),
        bonds: output.bonds_after.clone(),
    };
    Ok(Rewards { output, next_state })
}
