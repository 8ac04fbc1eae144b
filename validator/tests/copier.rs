//! Weight copying does not pay: a simulated subnet of equal-stake validators whose miners'
//! speeds change over time, run through the validator's own commit-reveal schedule, copier
//! median and Yuma epoch. A copier that queries nobody has no work proofs, so its vector is
//! left out (as `accept_reveal` does); one that queries but copies sees only revealed
//! weights, `delay + 1` rounds old, and falls behind consensus.

use polylith_scoring::yuma::{self, EpochParams, YumaState};
use polylith_validator::weights::{Schedule, median_weights};
use std::collections::BTreeMap;

const MINERS: u16 = 4;
const HONEST: usize = 3;
/// uids: 0..HONEST honest, then the lazy copier, then the copier that queries nobody.
const LAZY: usize = HONEST;
const NOWORK: usize = HONEST + 1;
const VALIDATORS: usize = HONEST + 2;

/// Speed of miner `m` in round `r`: one fast miner at a time, changing every `period` rounds.
fn speed(m: u16, r: u64, period: u64) -> f64 {
    if u64::from(m) == (r / period) % u64::from(MINERS) {
        1.0
    } else {
        0.25
    }
}

/// Dividends per unit of stake summed over the run: (mean honest, lazy copier, no-work copier).
fn run(rounds: u64, period: u64, delay: u64, ema_alpha: f64) -> (f64, f64, f64) {
    run_with(rounds, period, delay, ema_alpha, &EpochParams::default())
}

fn run_with(
    rounds: u64,
    period: u64,
    delay: u64,
    ema_alpha: f64,
    params: &EpochParams,
) -> (f64, f64, f64) {
    let schedule = Schedule { delay };
    let n = VALIDATORS + usize::from(MINERS);
    let miner_uid = |m: u16| (VALIDATORS as u16) + m;
    let stakes: Vec<u64> = (0..n)
        .map(|i| if i < VALIDATORS { 1_000 } else { 0 })
        .collect();
    let params = params.clone();
    let mut state = YumaState::fresh(&stakes, &params);
    let mut ema = [[0.0f64; MINERS as usize]; HONEST];
    // Weights each validator committed to, by round.
    let mut committed: Vec<BTreeMap<u64, Vec<(u16, u16)>>> = vec![BTreeMap::new(); VALIDATORS];
    let mut dividends = [0.0f64; VALIDATORS];
    for r in 1..=rounds {
        for (v, e) in ema.iter_mut().enumerate() {
            for m in 0..MINERS {
                let s = speed(m, r, period);
                e[usize::from(m)] = ema_alpha * s + (1.0 - ema_alpha) * e[usize::from(m)];
            }
            let w = polylith_scoring::speed::max_upscale_u16(e.as_ref());
            committed[v].insert(
                r,
                w.iter()
                    .enumerate()
                    .map(|(m, w)| (miner_uid(m as u16), *w))
                    .collect(),
            );
        }
        // The copiers see the newest reveals in the messages of round r - 1.
        let visible: Vec<Vec<(u16, u16)>> = schedule
            .reveal_round(r.saturating_sub(1))
            .map(|e| {
                (0..HONEST)
                    .filter_map(|v| committed[v].get(&e).cloned())
                    .collect()
            })
            .unwrap_or_default();
        let copy = median_weights(&visible);
        committed[LAZY].insert(r, copy.clone());
        committed[NOWORK].insert(r, copy);

        let mut rows = vec![Vec::new(); n];
        let mut commits = vec![None; n];
        if let Some(e) = schedule.epoch_weights_round(r) {
            for v in 0..VALIDATORS {
                // No work proofs: accept_reveal refuses the vector (MissingProof).
                if v == NOWORK {
                    continue;
                }
                if let Some(w) = committed[v].get(&e) {
                    rows[v] = w.clone();
                    commits[v] = Some(e);
                }
            }
        }
        let out = yuma::rewards_revealed(&stakes, &rows, &commits, &state, &params).unwrap();
        for (d, x) in dividends.iter_mut().zip(out.dividends_f64()) {
            *d += x;
        }
        state = out.next_state;
    }
    let honest = dividends[..HONEST].iter().sum::<f64>() / HONEST as f64;
    (honest, dividends[LAZY], dividends[NOWORK])
}

/// Measured (200 rounds, equal stakes, the fast miner rotating every 4 rounds, EMA alpha 0.5,
/// default Yuma parameters): a copier that queries nobody earns exactly 0; one that does
/// the work but copies earns ~0.75x an honest validator with a 2-round reveal delay and
/// less with 4, against ~0.86x with no delay. Commit-reveal alone does not bring the
/// working copier below 0.5x under Yuma's default bonds (see docs/security.md §5).
#[test]
fn copiers_earn_less_than_honest_validators_and_no_work_earns_nothing() {
    let (honest, lazy, nowork) = run(200, 4, 2, 0.5);
    let (honest0, lazy0, _) = run(200, 4, 0, 0.5);
    let ratio = lazy / honest;
    let ratio0 = lazy0 / honest0;
    eprintln!(
        "dividend per unit stake: honest {honest:.4}, lazy copier {lazy:.4} (ratio {ratio:.3}; \
         {ratio0:.3} without the delay), copier without work {nowork:.4}"
    );
    assert!(honest > 0.0);
    assert_eq!(nowork, 0.0, "no work proofs, no row, no dividends");
    assert!(ratio < 0.8, "lazy copier / honest = {ratio}");
    assert!(
        ratio < ratio0 - 0.1,
        "the delay is what costs the copier: {ratio} vs {ratio0}"
    );
    let (h4, l4, _) = run(200, 4, 4, 0.5);
    assert!(l4 / h4 < ratio, "a longer delay costs the copier more");
}
