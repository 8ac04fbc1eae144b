//! The GEMM proof-of-compute task: commit to C = A·B for a fresh seed and sizes, then open
//! rows chosen after the commitment and check them against the exact product.

use super::{
    Failure, FailureReason, MinerTarget, QueryContext, QueryOutcome, Task, new_outcome, settle,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use polylith_protocol::Hash32;
use polylith_protocol::gemm::MAX_K;
use polylith_protocol::gemm::{
    CommitRequest, CommitResponse, Dtype, GemmError, GemmSpec, OpenRequest, OpenResponse,
    verify_opening,
};
use polylith_protocol::task::TaskKind;
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Path of the commitment endpoint.
pub const COMMIT_PATH: &str = "/v1/gemm/commit";
/// Path of the opening endpoint.
pub const OPEN_PATH: &str = "/v1/gemm/open";

/// Time an opening may take beyond the commitment's own time. Opening only reads stored
/// rows and paths, so an honest miner answers well within it; a miner that commits at once
/// and then holds the opening would otherwise stretch every round to the full deadline.
pub const OPEN_GRACE: Duration = Duration::from_secs(1);

/// The first few indices of a miner-supplied list and its length, so a failure message stays
/// short whatever the miner sent.
fn preview(rows: &[u32]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<u32> = rows.iter().take(SHOWN).copied().collect();
    if rows.len() > SHOWN {
        format!("{head:?}… ({} rows)", rows.len())
    } else {
        format!("{head:?}")
    }
}

/// Largest factor between two consecutive tasks of one miner (see [`Sizing::growth`]).
pub const GROWTH: f64 = 8.0;

/// Consecutive verified answers after which a miner's ceiling (set when a larger task went
/// unanswered) doubles, so that one transient failure does not cap a miner for good.
pub const CEILING_RECOVERY: u32 = 16;

/// Validator CPU time to check one k·m entry of an opening, nanoseconds on one core: one
/// generator call for B's entry plus one multiply-add per opened row. Measured with
/// `polylith bench verify` (docs/perf.md); it turns the verification budget, which is CPU
/// time, into a bound on k·m.
pub const VERIFY_NS_PER_ENTRY: f64 = 2.0;
/// Validator CPU time per k·m entry and opened row, nanoseconds on one core (see
/// [`VERIFY_NS_PER_ENTRY`]).
pub const VERIFY_NS_PER_ENTRY_ROW: f64 = 0.16;

/// Validator CPU time, seconds on one core, to check an opening of `rows` rows of a task with
/// inner dimension `k` and `m` columns (the cost model behind [`GemmTask::verify_budget_s`]).
pub fn verify_cost_s(k: u32, m: u32, rows: u32) -> f64 {
    let km = f64::from(k) * f64::from(m);
    km * (VERIFY_NS_PER_ENTRY + f64::from(rows) * VERIFY_NS_PER_ENTRY_ROW) * 1e-9
}

/// How a miner's next GEMM task is sized. Every figure is a setting of the validator; see
/// [`GemmTask::next_spec`] and docs/protocol.md §1.5.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    /// n = k = m of a miner's first task, and the smallest any dimension gets.
    pub min_dim: u32,
    /// Largest n, k or m of any task: the size every miner must accept (miners refuse more
    /// than their `max_gemm_dim`, 8192 by default).
    pub max_dim: u32,
    /// Time a task should take as the validator measures it, seconds: the work asked for is
    /// the miner's last verified FLOP/s times this, so that compute, not the exchange,
    /// dominates the measurement.
    pub target_s: f64,
    /// Largest factor between two consecutive tasks of one miner: growth from the first,
    /// small task is geometric, and one lucky measurement cannot ask for a task that runs
    /// into the deadline.
    pub growth: f64,
    /// Largest k·m of one task. Checking an opening costs the validator k·m generator calls
    /// plus `open_rows`·k·m multiply-adds whatever n is, so this is the per-query share of
    /// the verification budget; n carries the rest of the work.
    pub max_km: u64,
}

impl Sizing {
    /// FLOP of the first (smallest) task.
    pub fn min_work(&self) -> f64 {
        2.0 * f64::from(self.min_dim).powi(3)
    }

    /// FLOP of the largest task these bounds allow.
    pub fn max_work(&self) -> f64 {
        let (n, k, m) = self.shape(f64::INFINITY);
        2.0 * f64::from(n) * f64::from(k) * f64::from(m)
    }

    /// The work to ask of a miner whose last verified task was `last` (FLOP, seconds), or the
    /// first task's when there is none; never above `ceiling` (FLOP) unless that is below the
    /// first task.
    pub fn next_work(&self, last: Option<(f64, f64)>, ceiling: f64) -> f64 {
        let min = self.min_work();
        let wanted = match last {
            Some((work, secs)) if work > 0.0 && secs > 0.0 && work.is_finite() => {
                let rate = work / secs;
                (rate * self.target_s).min(work * self.growth)
            }
            _ => min,
        };
        let wanted = if wanted.is_nan() { min } else { wanted };
        wanted.min(ceiling).min(self.max_work()).max(min)
    }

    /// Sizes (n, k, m) doing about `work` FLOP (never more than `work` unless the smallest
    /// task already does): a cube while k·m is within `max_km`, then k and m stay at the
    /// budget and only n grows, up to `max_dim` each. k also stays within the generator's
    /// exactness limit [`MAX_K`] (every dtype is exact below it).
    pub fn shape(&self, work: f64) -> (u32, u32, u32) {
        let (lo, hi) = (
            self.min_dim.clamp(1, MAX_K),
            self.max_dim
                .clamp(1, MAX_K)
                .max(self.min_dim.clamp(1, MAX_K)),
        );
        let clamp = |x: f64| -> u32 {
            if x.is_nan() || x < f64::from(lo) {
                lo
            } else if x >= f64::from(hi) {
                hi
            } else {
                x as u32
            }
        };
        let half = (work / 2.0).max(0.0);
        // The largest square k = m with k·m within the budget (at least the smallest task).
        let side_cap = clamp((self.max_km as f64).sqrt());
        let side = clamp(half.cbrt()).min(side_cap);
        let n = clamp(half / (f64::from(side) * f64::from(side)));
        (n, side, side)
    }
}
/// What the validator remembers about one miner's GEMM tasks (in memory; a restart resumes
/// from the persisted verified throughputs, see [`GemmTask::resume`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct MinerSizing {
    /// The last verified task: FLOP and the seconds the validator measured.
    last: Option<(f64, f64)>,
    /// FLOP of a task handed out and not (yet) verified.
    pending: Option<f64>,
    /// No task above this many FLOP (lowered when a larger task went unanswered).
    ceiling: f64,
    /// Verified answers since the ceiling last moved.
    streak: u32,
}

impl Default for MinerSizing {
    fn default() -> Self {
        Self {
            last: None,
            pending: None,
            ceiling: f64::INFINITY,
            streak: 0,
        }
    }
}

/// GEMM task settings and each miner's task size.
#[derive(Debug)]
pub struct GemmTask {
    /// Task size bounds and growth; `max_km` is the bound before the per-round budget.
    pub sizing: Sizing,
    /// Rows opened per query (capped at n).
    pub open_rows: u32,
    /// Requested dtype.
    pub dtype: Dtype,
    /// Validator CPU time for checking the GEMM openings of one round, seconds on one core;
    /// shared evenly by the round's miners, it bounds each task's k·m.
    pub verify_budget_s: f64,
    miners: parking_lot::Mutex<HashMap<String, MinerSizing>>,
    /// Miners queried in the last round (the budget's divisor).
    round_miners: AtomicUsize,
}

impl GemmTask {
    /// A task with no miner history.
    pub fn new(sizing: Sizing, open_rows: u32, dtype: Dtype, verify_budget_s: f64) -> Self {
        Self {
            sizing,
            open_rows,
            dtype,
            verify_budget_s,
            miners: parking_lot::Mutex::new(HashMap::new()),
            round_miners: AtomicUsize::new(0),
        }
    }

    /// The task a validator with `config` runs.
    pub fn from_config(config: &crate::ValidatorConfig) -> Self {
        Self::new(
            Sizing {
                min_dim: config.gemm_min_dim,
                max_dim: config.gemm_max_dim,
                target_s: config
                    .gemm_target_ms
                    .min(config.query_timeout_ms / 4)
                    .max(1) as f64
                    / 1e3,
                growth: GROWTH,
                max_km: u64::MAX,
            },
            config.open_rows,
            config.gemm_dtype,
            config.gemm_verify_budget_ms as f64 / 1e3,
        )
    }

    /// Starts `hotkey` from a verified throughput remembered across a restart (FLOP/s), as if
    /// its last task had taken exactly the target time: its next task is then sized from that
    /// rate instead of growing again from the smallest.
    pub fn resume(&self, hotkey: &str, flops: f64) {
        if !(flops.is_finite() && flops > 0.0) {
            return;
        }
        let t = self.sizing.target_s;
        self.miners
            .lock()
            .entry(hotkey.to_string())
            .or_default()
            .last = Some((flops * t, t));
    }

    /// The sizing bounds for one query: k·m also within this query's share of the round's
    /// verification budget.
    pub fn round_sizing(&self, miners: usize) -> Sizing {
        let rows = self.open_rows.max(1);
        let per_entry_s = (VERIFY_NS_PER_ENTRY + f64::from(rows) * VERIFY_NS_PER_ENTRY_ROW) * 1e-9;
        let share = self.verify_budget_s / miners.max(1) as f64;
        let km = (share / per_entry_s).clamp(0.0, u64::MAX as f64) as u64;
        Sizing {
            max_km: self.sizing.max_km.min(km),
            ..self.sizing
        }
    }

    /// The next task for `hotkey`: a fresh seed, sizes from its last verified throughput
    /// ([`Sizing::next_work`], [`Sizing::shape`]). Marks the task pending until
    /// [`GemmTask::verified`]; a task still pending at the next call was never verified
    /// (failed, timed out, or cancelled at the round's deadline), and if it was larger than
    /// the last verified one, the miner's ceiling drops to half of it.
    pub fn next_spec(&self, hotkey: &str) -> GemmSpec {
        let mut miners = self.miners.lock();
        let count = self.round_miners.load(Ordering::Relaxed).max(miners.len());
        let sizing = self.round_sizing(count.max(1));
        let state = miners.entry(hotkey.to_string()).or_default();
        if let Some(unverified) = state.pending.take() {
            let last_work = state.last.map_or(0.0, |(w, _)| w);
            if unverified > last_work {
                state.ceiling = state.ceiling.min(unverified / 2.0);
                state.streak = 0;
            }
        }
        let work = sizing.next_work(state.last, state.ceiling);
        let (n, k, m) = sizing.shape(work);
        let spec = GemmSpec {
            seed: rand::rng().random(),
            n,
            k,
            m,
        };
        state.pending = Some(spec.flops());
        spec
    }

    /// Records a verified answer to `spec` that took `secs` as the validator measured it.
    pub fn verified(&self, hotkey: &str, spec: &GemmSpec, secs: f64) {
        let mut miners = self.miners.lock();
        let state = miners.entry(hotkey.to_string()).or_default();
        state.pending = None;
        state.last = Some((spec.flops(), secs));
        state.streak = state.streak.saturating_add(1);
        if state.streak >= CEILING_RECOVERY && state.ceiling.is_finite() {
            state.ceiling *= 2.0;
            state.streak = 0;
        }
    }

    /// `min(open_rows, n)` distinct row indices drawn uniformly, after the commitment.
    pub fn draw_rows(&self, n: u32) -> Vec<u32> {
        let r = self.open_rows.min(n) as usize;
        let mut rows: Vec<u32> = rand::seq::index::sample(&mut rand::rng(), n as usize, r)
            .into_iter()
            // Indices are < n, which is a u32.
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        rows.sort_unstable();
        rows
    }

    async fn run_inner(
        &self,
        ctx: &QueryContext<'_>,
        miner: &MinerTarget,
        out: &mut QueryOutcome,
    ) -> Result<(), Failure> {
        let spec = self.next_spec(&miner.ss58);
        out.work = spec.flops();
        tracing::debug!(
            n = spec.n,
            k = spec.k,
            m = spec.m,
            seed = spec.seed,
            "gemm challenge"
        );
        let body = serde_json::to_vec(&CommitRequest {
            spec,
            dtype: self.dtype,
        })
        .map_err(|e| Failure::new(FailureReason::Internal, e.to_string()))?;
        let commit = ctx
            .client
            .post_signed(&miner.endpoint, &miner.hotkey, COMMIT_PATH, body)
            .await?;
        let t = commit.elapsed.as_secs_f64();
        out.latency_s = Some(t);
        let response: CommitResponse = serde_json::from_slice(&commit.body).map_err(|e| {
            Failure::new(
                FailureReason::Malformed,
                format!("commit response is not a CommitResponse: {e}"),
            )
        })?;
        let root = parse_root(&response.root)?;
        out.fingerprint = Some(response.root.to_ascii_lowercase());
        if response.rows != spec.n {
            return Err(Failure::new(
                FailureReason::WrongRowCount,
                format!("committed {} rows, the task has {}", response.rows, spec.n),
            ));
        }

        // Rows are chosen only now, after the root is fixed.
        let rows = self.draw_rows(spec.n);
        let body = serde_json::to_vec(&OpenRequest {
            commitment_id: response.commitment_id.clone(),
            rows: rows.clone(),
        })
        .map_err(|e| Failure::new(FailureReason::Internal, e.to_string()))?;
        let open_timeout = OPEN_GRACE.saturating_add(commit.elapsed);
        let open = tokio::time::timeout(
            open_timeout,
            ctx.client
                .post_signed(&miner.endpoint, &miner.hotkey, OPEN_PATH, body),
        )
        .await
        .map_err(|_| {
            Failure::new(
                FailureReason::Timeout,
                format!(
                    "no opening within {} ms (the commitment took {} ms)",
                    open_timeout.as_millis(),
                    commit.elapsed.as_millis()
                ),
            )
        })??;
        let opening: OpenResponse = serde_json::from_slice(&open.body).map_err(|e| {
            Failure::new(
                FailureReason::Malformed,
                format!("open response is not an OpenResponse: {e}"),
            )
        })?;
        let answered: Vec<u32> = opening.rows.iter().map(|r| r.index).collect();
        if answered != rows {
            return Err(Failure::new(
                FailureReason::WrongRows,
                format!(
                    "asked for rows {}, got {}",
                    preview(&rows),
                    preview(&answered)
                ),
            ));
        }
        // Recomputing rows is CPU work; keep it off the async workers.
        let checked =
            tokio::task::spawn_blocking(move || verify_opening(&spec, &root, &rows, &opening))
                .await
                .map_err(|e| {
                    Failure::new(FailureReason::Internal, format!("verification task: {e}"))
                })?;
        checked.map_err(|e| {
            let reason = match &e {
                GemmError::BadSize(_) => FailureReason::Malformed,
                GemmError::RowOutOfRange(_) => FailureReason::RowOutOfRange,
                GemmError::BadPath(_) => FailureReason::BadPath,
                GemmError::WrongRow(_) => FailureReason::WrongRow,
                GemmError::MissingRow(_)
                | GemmError::WrongIndex { .. }
                | GemmError::ExtraRows { .. } => FailureReason::WrongRows,
            };
            Failure::new(reason, e.to_string())
        })?;
        if t > 0.0 {
            out.throughput = Some(spec.flops() / t);
            self.verified(&miner.ss58, &spec, t);
        } else {
            out.throughput = None;
            return Err(Failure::new(
                FailureReason::Internal,
                "commitment arrived in zero time",
            ));
        }
        Ok(())
    }
}

/// A Merkle root from hex (32 bytes).
fn parse_root(hex_root: &str) -> Result<Hash32, Failure> {
    let bytes = hex::decode(hex_root)
        .map_err(|e| Failure::new(FailureReason::Malformed, format!("root is not hex: {e}")))?;
    Hash32::try_from(bytes.as_slice()).map_err(|_| {
        Failure::new(
            FailureReason::Malformed,
            format!("root has {} bytes, expected 32", bytes.len()),
        )
    })
}

impl Task for GemmTask {
    fn kind(&self) -> TaskKind {
        TaskKind::Gemm
    }

    fn query<'a>(
        &'a self,
        ctx: &'a QueryContext<'a>,
        miner: &'a MinerTarget,
    ) -> BoxFuture<'a, QueryOutcome> {
        async move {
            let mut out = new_outcome(TaskKind::Gemm, miner);
            let result = self.run_inner(ctx, miner, &mut out).await;
            settle(out, result)
        }
        .boxed()
    }

    /// Fresh seeds make every honest root distinct, so a root shared by two miners means one
    /// copied the other (or both replay): all of them fail.
    ///
    /// Also the once-per-round hook of the sizing: the round's miner count divides the next
    /// round's verification budget, and miners no longer queried are forgotten.
    fn cross_check(&self, outcomes: &mut [QueryOutcome]) {
        self.round_miners.store(outcomes.len(), Ordering::Relaxed);
        let queried: HashSet<&str> = outcomes.iter().map(|o| o.hotkey.as_str()).collect();
        self.miners
            .lock()
            .retain(|k, _| queried.contains(k.as_str()));
        let mut count: HashMap<String, usize> = HashMap::new();
        for o in outcomes.iter() {
            if let Some(f) = &o.fingerprint {
                *count.entry(f.clone()).or_default() += 1;
            }
        }
        for o in outcomes.iter_mut() {
            let shared = o
                .fingerprint
                .as_ref()
                .and_then(|f| count.get(f))
                .is_some_and(|c| *c > 1);
            if shared {
                let others = o
                    .fingerprint
                    .as_ref()
                    .and_then(|f| count.get(f))
                    .map_or(0, |c| c.saturating_sub(1));
                o.fail(Failure::new(
                    FailureReason::DuplicateRoot,
                    format!("root also returned by {others} other miner(s) for different tasks"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizing() -> Sizing {
        Sizing {
            min_dim: 64,
            max_dim: 8192,
            target_s: 0.25,
            growth: GROWTH,
            max_km: u64::MAX,
        }
    }

    fn task() -> GemmTask {
        GemmTask::new(
            Sizing {
                min_dim: 4,
                max_dim: 9,
                ..sizing()
            },
            5,
            Dtype::F32,
            1.0,
        )
    }

    /// A big-budget task (the budget never binds below 8192²).
    fn big_task() -> GemmTask {
        GemmTask::new(sizing(), 21, Dtype::F32, 1e6)
    }

    /// Runs `rounds` simulated rounds for a miner that computes at `rate` FLOP/s after a fixed
    /// `overhead_s` per exchange; returns each task's spec and measured time.
    fn simulate(
        t: &GemmTask,
        hotkey: &str,
        rate: f64,
        overhead_s: f64,
        rounds: usize,
    ) -> Vec<(GemmSpec, f64)> {
        (0..rounds)
            .map(|_| {
                let spec = t.next_spec(hotkey);
                let secs = overhead_s + spec.flops() / rate;
                t.verified(hotkey, &spec, secs);
                (spec, secs)
            })
            .collect()
    }

    #[test]
    fn specs_stay_in_range_and_seeds_differ() {
        let t = task();
        let specs: Vec<GemmSpec> = (0..200).map(|i| t.next_spec(&format!("m{i}"))).collect();
        for s in &specs {
            for d in [s.n, s.k, s.m] {
                assert!((4..=9).contains(&d), "{s:?}");
            }
        }
        let seeds: std::collections::HashSet<u64> = specs.iter().map(|s| s.seed).collect();
        assert!(seeds.len() > 190, "seeds repeat: {}", seeds.len());
    }

    #[test]
    fn tasks_grow_geometrically_from_the_smallest_until_compute_dominates() {
        let t = big_task();
        // A CPU-class miner: 50 GFLOP/s behind a 2 ms exchange.
        let runs = simulate(&t, "cpu", 50e9, 0.002, 12);
        assert_eq!((runs[0].0.n, runs[0].0.k, runs[0].0.m), (64, 64, 64));
        let works: Vec<f64> = runs.iter().map(|(s, _)| s.flops()).collect();
        let mut grew = 0;
        for w in works.windows(2) {
            assert!(w[1] <= w[0] * GROWTH * 1.0001, "{works:?}");
            if w[1] >= w[0] * GROWTH * 0.9 {
                grew += 1;
            }
        }
        assert!(
            grew >= 3,
            "growth by about {GROWTH}x per round at first: {works:?}"
        );
        let (last, secs) = runs[runs.len() - 1];
        let compute = last.flops() / 50e9;
        assert!(compute / secs > 0.95, "compute {compute} s of {secs} s");
        assert!(
            (0.2..=0.3).contains(&secs),
            "converges to the 0.25 s target: {secs}"
        );
    }

    #[test]
    fn a_miner_twice_as_fast_gets_twice_the_work_and_twice_the_measured_rate() {
        let t = big_task();
        let slow = simulate(&t, "slow", 20e9, 0.002, 15);
        let fast = simulate(&t, "fast", 40e9, 0.002, 15);
        let (s, ts) = slow[slow.len() - 1];
        let (f, tf) = fast[fast.len() - 1];
        let work_ratio = f.flops() / s.flops();
        assert!((1.8..=2.2).contains(&work_ratio), "{work_ratio}");
        let rate_ratio = (f.flops() / tf) / (s.flops() / ts);
        assert!((1.9..=2.1).contains(&rate_ratio), "{rate_ratio}");
        // And a GPU-class miner gets the largest task there is and shows its speed.
        let gpu = simulate(&t, "gpu", 200e12, 0.002, 15);
        let (g, tg) = gpu[gpu.len() - 1];
        assert_eq!((g.n, g.k, g.m), (8192, 8192, 8192));
        assert!(g.flops() / tg > 100e12, "{}", g.flops() / tg);
    }

    #[test]
    fn sizes_are_bounded_for_any_measurement() {
        let s = Sizing {
            max_km: 1000 * 1000,
            ..sizing()
        };
        for last in [
            None,
            Some((1.0, 1e-9)),
            Some((1e30, 1e-9)),
            Some((1e6, 1e9)),
            Some((f64::NAN, 1.0)),
            Some((1e9, 0.0)),
            Some((f64::INFINITY, 1.0)),
        ] {
            for ceiling in [f64::INFINITY, 0.0, 1e12] {
                let w = s.next_work(last, ceiling);
                assert!(w >= s.min_work() && w <= s.max_work(), "{last:?} {w}");
                let (n, k, m) = s.shape(w);
                for d in [n, k, m] {
                    assert!((64..=8192).contains(&d), "{last:?} {d}");
                }
                assert!(u64::from(k) * u64::from(m) <= 1000 * 1000);
                assert!(k <= MAX_K);
            }
        }
        // k·m stops at the budget; n carries the rest, up to the largest dimension.
        assert_eq!(s.shape(f64::INFINITY), (8192, 1000, 1000));
        // The budget never pushes a task below the smallest.
        let tight = Sizing { max_km: 10, ..s };
        assert_eq!(tight.shape(0.0), (64, 64, 64));
    }

    #[test]
    fn sizing_is_monotone_in_the_measured_rate_and_tight() {
        let s = Sizing {
            max_km: 2048 * 2048,
            ..sizing()
        };
        let mut prev_work = 0.0;
        let mut prev_side = 0;
        for i in 0..400 {
            let rate = 1e6 * 1.07f64.powi(i);
            // Last task took the target time at this rate: growth does not bind.
            let w = s.next_work(Some((rate * 0.25, 0.25)), f64::INFINITY);
            assert!(w >= prev_work, "rate {rate}: {w} < {prev_work}");
            prev_work = w;
            let (n, k, m) = s.shape(w);
            assert!(k >= prev_side, "k·m shrank at rate {rate}");
            prev_side = k;
            let flops = 2.0 * f64::from(n) * f64::from(k) * f64::from(m);
            if w > s.min_work() && n < 8192 {
                assert!(flops <= w, "{flops} > {w}");
                assert!(
                    flops > w - 2.0 * f64::from(k) * f64::from(m) - 1.0,
                    "{flops} far below {w}"
                );
            }
        }
        assert_eq!(prev_work, s.max_work());
        // Faster means bigger at every step too.
        let a = s.next_work(Some((1e9, 0.1)), f64::INFINITY);
        let b = s.next_work(Some((1e9, 0.05)), f64::INFINITY);
        assert!(b > a);
    }

    #[test]
    fn the_round_budget_bounds_every_tasks_verification_cost() {
        let t = GemmTask::new(sizing(), 21, Dtype::F32, 2.0);
        for miners in [4, 16, 256, 4096] {
            let s = t.round_sizing(miners);
            let (_, k, m) = s.shape(f64::INFINITY);
            let cost = verify_cost_s(k, m, 21);
            let share = 2.0 / miners as f64;
            // Between the smallest and the largest task, the per-miner share holds.
            if k > 64 && k < 8192 {
                assert!(cost <= share * 1.0001, "{miners}: {cost} > {share}");
                assert!(cost > share * 0.9, "{miners}: {cost} well under {share}");
            }
        }
        // cross_check counts the round's miners; the next round divides the budget by it.
        let before = t.round_sizing(1).max_km;
        let miner = |uid: u16| MinerTarget {
            uid,
            hotkey: polylith_protocol::keys::PublicKey([uid as u8; 32]),
            ss58: format!("m{uid}"),
            endpoint: String::new(),
        };
        let mut outs: Vec<QueryOutcome> = (0..4)
            .map(|uid| new_outcome(TaskKind::Gemm, &miner(uid)))
            .collect();
        t.cross_check(&mut outs);
        assert_eq!(t.round_miners.load(Ordering::Relaxed), 4);
        assert!(t.round_sizing(4).max_km < before);
    }

    #[test]
    fn an_unanswered_larger_task_lowers_the_ceiling_until_it_recovers() {
        let t = big_task();
        simulate(&t, "m", 50e9, 0.002, 3);
        let grown = t.next_spec("m");
        // Never verified (timeout, refusal or cancellation): the next task is at most half.
        let after = t.next_spec("m");
        assert!(
            after.flops() <= grown.flops() / 2.0,
            "{after:?} vs {grown:?}"
        );
        let ceiling = t.miners.lock()["m"].ceiling;
        assert!(ceiling <= grown.flops() / 2.0);
        t.verified("m", &after, 0.002 + after.flops() / 50e9);
        for _ in 0..CEILING_RECOVERY {
            let s = t.next_spec("m");
            assert!(s.flops() <= t.miners.lock()["m"].ceiling);
            t.verified("m", &s, 0.002 + s.flops() / 50e9);
        }
        assert!(
            t.miners.lock()["m"].ceiling > ceiling,
            "the ceiling recovers"
        );
    }

    #[test]
    fn a_resumed_miner_starts_from_its_remembered_rate() {
        let t = big_task();
        t.resume("m", 50e9);
        t.resume("bad", f64::NAN);
        let s = t.next_spec("m");
        let expected = 50e9 * 0.25;
        assert!(
            s.flops() <= expected && s.flops() > expected * 0.9,
            "{s:?}: {} vs {expected}",
            s.flops()
        );
        let fresh = t.next_spec("bad");
        assert_eq!((fresh.n, fresh.k, fresh.m), (64, 64, 64));
    }

    #[test]
    fn opened_rows_are_distinct_sorted_and_capped() {
        let t = task();
        let rows = t.draw_rows(100);
        assert_eq!(rows.len(), 5);
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
        assert!(rows.iter().all(|r| *r < 100));
        assert_eq!(t.draw_rows(3), vec![0, 1, 2]);
    }

    #[test]
    fn root_parsing_rejects_bad_hex_and_length() {
        assert!(parse_root(&"ab".repeat(32)).is_ok());
        assert_eq!(
            parse_root("zz").unwrap_err().reason,
            FailureReason::Malformed
        );
        assert_eq!(
            parse_root(&"ab".repeat(31)).unwrap_err().reason,
            FailureReason::Malformed
        );
    }

    #[test]
    fn shared_roots_fail_every_holder() {
        let miner = |uid: u16| MinerTarget {
            uid,
            hotkey: polylith_protocol::keys::PublicKey([uid as u8; 32]),
            ss58: format!("m{uid}"),
            endpoint: String::new(),
        };
        let mut outs: Vec<QueryOutcome> = (0..3)
            .map(|uid| {
                let mut o = new_outcome(TaskKind::Gemm, &miner(uid));
                o.throughput = Some(1.0);
                o.fingerprint = Some(if uid < 2 { "aa" } else { "bb" }.to_string());
                o
            })
            .collect();
        task().cross_check(&mut outs);
        assert_eq!(
            outs[0].failure.as_ref().map(|f| f.reason),
            Some(FailureReason::DuplicateRoot)
        );
        assert_eq!(
            outs[1].failure.as_ref().map(|f| f.reason),
            Some(FailureReason::DuplicateRoot)
        );
        assert!(outs[2].verified());
    }
}
