//! `polylith bench yuma`: wall-clock and CPU time of one Yuma epoch on a synthetic subnet
//! shaped like `scoring/benches/yuma_epoch.rs` (the same generator and seed, so the default
//! flags measure the same subnet): `--validators` staked validators each weighting every
//! miner, and a full previous bond matrix.
//!
//! Each repeat runs the epoch twice, interleaved: on the threads the epoch picks (or
//! `--threads`) and on one thread, the same-run baseline. Both share whatever else the
//! machine is doing, so their ratio means something on a busy machine even when the absolute
//! figures do not. The outputs of the two runs are compared bit for bit.

use anyhow::Context;
use polylith_scoring::yuma::{self, EpochInputs, EpochParams};
use serde::Serialize;
use std::time::Instant;

/// Flags of `polylith bench yuma`.
#[derive(Debug, clap::Args)]
pub struct YumaArgs {
    /// Number of uids.
    #[arg(long, default_value_t = 4096)]
    uids: u16,
    /// Validators (uids 0..V, staked and permitted); every other uid is a miner they all weight.
    #[arg(long, default_value_t = 256)]
    validators: u16,
    /// Yuma3 bonds instead of Yuma2.
    #[arg(long)]
    yuma3: bool,
    /// Liquid alpha (per-entry bond EMA rates; Yuma3 only).
    #[arg(long, requires = "yuma3")]
    liquid_alpha: bool,
    /// Timed repeats (medians are reported).
    #[arg(long, default_value_t = 31)]
    repeats: u32,
    /// Untimed warm-up repeats.
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Threads for the measured run [default: what `yuma::epoch` picks on this machine].
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One configuration's figures over all repeats.
#[derive(Debug, Serialize)]
struct Figures {
    threads: usize,
    wall_ms_median: f64,
    wall_ms_min: f64,
    /// Process CPU time per epoch (all threads), from the kernel's per-process tick counts
    /// summed over all repeats, so it is a mean: per-epoch ticks are too coarse for a median.
    cpu_ms_mean: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    uids: u16,
    validators: u16,
    yuma3: bool,
    liquid_alpha: bool,
    repeats: u32,
    measured: Figures,
    baseline_one_thread: Figures,
    /// `baseline wall median / measured wall median`.
    speedup_wall: f64,
    /// Whether every output of the measured run equals the one-thread run's.
    identical: bool,
    load_average_before: String,
    load_average_after: String,
}

/// Runs `polylith bench yuma`.
pub fn yuma(a: YumaArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.repeats > 0, "--repeats must be at least 1");
    anyhow::ensure!(
        a.validators <= a.uids,
        "--validators ({}) must not exceed --uids ({})",
        a.validators,
        a.uids
    );
    let inputs = subnet(a.uids, a.validators);
    let params = EpochParams {
        max_allowed_validators: a.validators,
        yuma3: a.yuma3,
        liquid_alpha: a.liquid_alpha,
        ..EpochParams::default()
    };
    let entries = inputs
        .weights
        .iter()
        .chain(&inputs.bonds_before)
        .map(Vec::len)
        .sum();
    let threads = a
        .threads
        .unwrap_or_else(|| yuma::par::default_threads(entries))
        .max(1);
    let load_before = load_average();
    let want = yuma::epoch_with_threads(&params, &inputs, 1).context("running the epoch")?;
    let mut identical = true;
    for _ in 0..a.warmup {
        yuma::epoch_with_threads(&params, &inputs, threads)?;
        yuma::epoch_with_threads(&params, &inputs, 1)?;
    }
    let mut walls = (Vec::new(), Vec::new());
    let mut ticks = (0u64, 0u64);
    for _ in 0..a.repeats {
        let (t0, c0) = (Instant::now(), process_cpu_ticks()?);
        let out = yuma::epoch_with_threads(&params, &inputs, threads)?;
        let (t1, c1) = (Instant::now(), process_cpu_ticks()?);
        identical &= out == want;
        drop(out);
        let (t2, c2) = (Instant::now(), process_cpu_ticks()?);
        let base = yuma::epoch_with_threads(&params, &inputs, 1)?;
        let (t3, c3) = (Instant::now(), process_cpu_ticks()?);
        identical &= base == want;
        walls.0.push(t1.duration_since(t0).as_secs_f64() * 1e3);
        walls.1.push(t3.duration_since(t2).as_secs_f64() * 1e3);
        ticks.0 += c1.saturating_sub(c0);
        ticks.1 += c3.saturating_sub(c2);
    }
    let figures = |threads: usize, walls: &mut Vec<f64>, ticks: u64| Figures {
        threads,
        wall_ms_median: median(walls),
        wall_ms_min: walls.iter().copied().fold(f64::INFINITY, f64::min),
        cpu_ms_mean: ticks as f64 * 1e3 / TICKS_PER_SECOND / f64::from(a.repeats),
    };
    let measured = figures(threads, &mut walls.0, ticks.0);
    let baseline = figures(1, &mut walls.1, ticks.1);
    let report = Report {
        uids: a.uids,
        validators: a.validators,
        yuma3: a.yuma3,
        liquid_alpha: a.liquid_alpha,
        repeats: a.repeats,
        speedup_wall: baseline.wall_ms_median / measured.wall_ms_median,
        measured,
        baseline_one_thread: baseline,
        identical,
        load_average_before: load_before,
        load_average_after: load_average(),
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let mode = match (a.yuma3, a.liquid_alpha) {
            (false, _) => "Yuma2",
            (true, false) => "Yuma3",
            (true, true) => "Yuma3 + liquid alpha",
        };
        println!(
            "yuma epoch: {} uids, {} validators, {mode}; median of {} repeats after {} warm-up",
            report.uids, report.validators, report.repeats, a.warmup
        );
        for (name, f) in [
            ("measured", &report.measured),
            ("baseline", &report.baseline_one_thread),
        ] {
            println!(
                "  {name:<8} {} thread(s): wall median {:8.2} ms (min {:.2}), cpu {:8.2} ms/epoch",
                f.threads, f.wall_ms_median, f.wall_ms_min, f.cpu_ms_mean
            );
        }
        println!(
            "  speedup {:.2}x over one thread; outputs identical: {}",
            report.speedup_wall, report.identical
        );
        println!(
            "  load average before: {}; after: {}",
            report.load_average_before, report.load_average_after
        );
    }
    anyhow::ensure!(
        report.identical,
        "the epoch's output depends on the thread count"
    );
    Ok(())
}

/// The kernel reports per-process CPU time in clock ticks of 1/100 s (`USER_HZ`, fixed by the
/// Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of this process (all threads, including exited ones), in ticks.
fn process_cpu_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at field 3; utime and
    // stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |k: usize| -> anyhow::Result<u64> {
        fields
            .get(k - 3)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("field {k} of /proc/self/stat"))
    };
    Ok(field(14)? + field(15)?)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| String::from("unknown"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Deterministic pseudo-random numbers (xorshift), as in the criterion benchmark.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The criterion benchmark's subnet, for any size.
fn subnet(n: u16, validators: u16) -> EpochInputs {
    let len = usize::from(n);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let stake: Vec<u64> = (0..n)
        .map(|i| {
            if i < validators {
                1_000_000_000 + next(&mut rng) % 1_000_000_000_000
            } else {
                0
            }
        })
        .collect();
    let mut rows = || -> Vec<Vec<(u16, u16)>> {
        (0..n)
            .map(|i| {
                if i < validators {
                    (validators..n)
                        .map(|j| (j, (next(&mut rng) % 65_536) as u16))
                        .collect()
                } else {
                    Vec::new()
                }
            })
            .collect()
    };
    let weights = rows();
    let bonds = rows();
    let current_block = 10_000;
    EpochInputs {
        current_block,
        stake,
        weights,
        last_update: vec![current_block - 1; len],
        block_at_registration: vec![1; len],
        validator_permit: (0..n).map(|i| i < validators).collect(),
        bonds_before: bonds,
        commit_blocks: None,
        tao_stake: None,
        weights_dense_u16: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_ticks_reads_this_process() {
        let before = process_cpu_ticks().unwrap();
        // Burn CPU until the count moves; on a loaded machine that may take a while.
        let t = Instant::now();
        let mut x = 1u64;
        while process_cpu_ticks().unwrap() == before && t.elapsed().as_secs() < 20 {
            for _ in 0..100_000 {
                x = next(&mut x);
            }
        }
        std::hint::black_box(x);
        assert!(process_cpu_ticks().unwrap() > before);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
