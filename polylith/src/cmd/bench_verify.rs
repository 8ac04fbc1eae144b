//! `polylith bench verify`: what checking one miner costs a CPU validator, on one thread.
//!
//! GEMM: the check of one opening at a given soundness for a miner that computed half the
//! rows (the `lazy` behaviour): the rows are drawn uniformly after the commitment, the opened
//! rows in the computed half are exact and the others garbage, and the validator recomputes
//! the opened rows and checks their Merkle paths. The unopened leaves are random hashes: the
//! check never sees them, only the paths built over them, so its cost is the same as for a
//! real commitment. Two cases are timed: the lazy miner as drawn (it fails, almost surely),
//! and the 2^-r case in which every opened row landed in the computed half, which is the
//! most a check can cost (every row recomputed, every path walked).
//!
//! LLM: one check of a completion of the validator's default length (a teacher-forced pass
//! and the per-token checks), as tokens verified per second.
//!
//! Times are wall clock and this thread's CPU time (`/proc/thread-self/schedstat`); candle
//! may use more threads for the LLM pass, so run with `RAYON_NUM_THREADS=1` for one core.

use anyhow::Context;
use polylith_protocol::Hash32;
use polylith_protocol::gemm::{
    GemmSpec, MerkleTree, OpenResponse, OpenedRow, leaf_hash, mix64, rows_for_soundness,
    verify_opening,
};
use std::collections::BTreeSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A splitmix64 stream seeded from the clock: the bench needs unpredictable-enough draws,
/// not secrets, and this keeps the command free of another dependency.
struct Draws(u64);

impl Draws {
    fn new() -> Self {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(mix64(t))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }
    fn hash(&mut self) -> Hash32 {
        let mut h = [0u8; 32];
        for c in h.chunks_exact_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        h
    }
}

/// Flags of `polylith bench verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Rows of A and C.
    #[arg(long, default_value_t = 8192)]
    n: u32,
    /// Inner dimension.
    #[arg(long, default_value_t = 8192)]
    k: u32,
    /// Columns of B and C.
    #[arg(long, default_value_t = 8192)]
    m: u32,
    /// Rows opened; default: the fewest that catch a miner computing half the rows with
    /// probability at least 1 − 2^-soundness-bits.
    #[arg(long)]
    open_rows: Option<u32>,
    /// Soundness as bits (used when --open-rows is not given).
    #[arg(long, default_value_t = 20)]
    soundness_bits: u32,
    /// Timed checks per case (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// Also time the row-by-row recomputation (`GemmSpec::row_of_c` per opened row), once.
    #[arg(long)]
    row_by_row: bool,
    /// LLM whose check is timed: `builtin`, a checkpoint directory, or `none`.
    #[arg(long, default_value = "builtin")]
    llm: String,
    /// Completion tokens per LLM check (the validator's `llm_max_tokens` default).
    #[arg(long, default_value_t = 24)]
    llm_tokens: u32,
    /// Timed LLM checks (the median is reported).
    #[arg(long, default_value_t = 10)]
    llm_repeats: u32,
    /// Validator cores and round interval for the budget lines, as "CORES,MS".
    #[arg(long, default_value = "2,12000")]
    budget: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// This thread's CPU time so far, seconds (0 where the kernel does not report it).
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// Wall and thread-CPU seconds of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (c0, t0) = (thread_cpu_s(), Instant::now());
    let out = f();
    (out, t0.elapsed().as_secs_f64(), thread_cpu_s() - c0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// The opening a miner that computed rows `0..n/2` gives for `rows`, with the root it
/// committed to; `exact` holds the true values of those rows.
fn lazy_opening(
    spec: &GemmSpec,
    rows: &[u32],
    exact: &[Vec<i32>],
    rng: &mut Draws,
) -> (Hash32, OpenResponse) {
    let half = spec.n.div_ceil(2);
    let values: Vec<Vec<i32>> = rows
        .iter()
        .zip(exact)
        .map(|(&i, v)| {
            if i < half {
                v.clone()
            } else {
                // Garbage as the `lazy` miner commits it.
                v.iter().map(|_| (rng.next() as i32) >> 8).collect()
            }
        })
        .collect();
    // Stand-ins for the rows the check never opens.
    let mut leaves: Vec<Hash32> = (0..spec.n).map(|_| rng.hash()).collect();
    for (&i, v) in rows.iter().zip(&values) {
        leaves[i as usize] = leaf_hash(v);
    }
    let tree = MerkleTree::from_leaves(leaves);
    let opened = rows
        .iter()
        .zip(values)
        .map(|(&i, values)| OpenedRow {
            index: i,
            values,
            path: tree
                .path(i as usize)
                .unwrap_or_default()
                .iter()
                .map(hex_hash)
                .collect(),
        })
        .collect();
    (tree.root(), OpenResponse { rows: opened })
}

fn hex_hash(h: &Hash32) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// `r` distinct sorted rows drawn uniformly from `0..n` (as the validator draws them).
fn draw(n: u32, r: u32, rng: &mut Draws) -> Vec<u32> {
    let mut rows = BTreeSet::new();
    while rows.len() < r.min(n) as usize {
        rows.insert(rng.below(n));
    }
    rows.into_iter().collect()
}

/// Median wall and CPU seconds of `repeats` checks of `opening`, and the last result.
fn time_checks(
    spec: &GemmSpec,
    root: &Hash32,
    rows: &[u32],
    opening: &OpenResponse,
    repeats: u32,
) -> (f64, f64, String) {
    let (mut wall, mut cpu, mut last) = (Vec::new(), Vec::new(), String::new());
    for _ in 0..repeats {
        let (r, w, c) = timed(|| verify_opening(spec, root, rows, opening));
        wall.push(w);
        cpu.push(c);
        last = match r {
            Ok(()) => "passed".to_string(),
            Err(e) => format!("failed: {e}"),
        };
    }
    (median(wall), median(cpu), last)
}

/// Runs `polylith bench verify`.
pub fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.repeats > 0, "--repeats must be at least 1");
    let mut rng = Draws::new();
    let spec = GemmSpec {
        seed: rng.next(),
        n: a.n,
        k: a.k,
        m: a.m,
    };
    spec.validate(u32::MAX).context("sizes")?;
    anyhow::ensure!(
        a.n >= 2,
        "--n must be at least 2 (half of the rows are computed)"
    );
    let p = 0.5f64.powi(a.soundness_bits.min(1000) as i32);
    let r = a
        .open_rows
        .unwrap_or_else(|| rows_for_soundness(0.5, p))
        .clamp(1, a.n.div_ceil(2));
    let (cores, interval_ms) = a
        .budget
        .split_once(',')
        .and_then(|(c, i)| Some((c.trim().parse::<f64>().ok()?, i.trim().parse::<f64>().ok()?)))
        .context("--budget takes CORES,MS")?;
    if !a.json {
        println!(
            "GEMM check: n={} k={} m={}, {r} opened rows (a half-computing miner passes with probability 0.5^{r}), one thread, median of {}",
            a.n, a.k, a.m, a.repeats
        );
    }

    // What the check needs, untimed: the validator's draw, the opened rows' true values.
    let drawn = draw(a.n, r, &mut rng);
    let all_computed = draw(a.n.div_ceil(2), r, &mut rng);
    let (exact_drawn, gen_wall, gen_cpu) = timed(|| spec.rows_of_c(&drawn));
    let exact_drawn = exact_drawn?;
    let exact_computed = spec.rows_of_c(&all_computed)?;
    let (root_d, open_d) = lazy_opening(&spec, &drawn, &exact_drawn, &mut rng);
    let (root_c, open_c) = lazy_opening(&spec, &all_computed, &exact_computed, &mut rng);

    let (lazy_wall, lazy_cpu, lazy_result) =
        time_checks(&spec, &root_d, &drawn, &open_d, a.repeats);
    let (worst_wall, worst_cpu, worst_result) =
        time_checks(&spec, &root_c, &all_computed, &open_c, a.repeats);
    anyhow::ensure!(
        worst_result == "passed",
        "the all-computed opening must pass: {worst_result}"
    );
    // The leaf hashes alone (the paths add a few dozen hashes per row).
    let (_, paths_wall, _) = timed(|| {
        for row in &open_c.rows {
            std::hint::black_box(leaf_hash(&row.values));
        }
    });
    let row_by_row = if a.row_by_row {
        let (res, w, c) = timed(|| -> anyhow::Result<()> {
            for &i in &all_computed {
                std::hint::black_box(spec.row_of_c(i)?);
            }
            Ok(())
        });
        res?;
        Some((w, c))
    } else {
        None
    };

    let per_miner = worst_cpu.max(1e-9);
    let gemm_miners = cores * interval_ms / 1e3 / per_miner;

    let llm = if a.llm == "none" {
        None
    } else {
        Some(llm_check(&a)?)
    };

    if a.json {
        let v = serde_json::json!({
            "gemm": {
                "n": a.n, "k": a.k, "m": a.m, "open_rows": r,
                "lazy_check": {"wall_s": lazy_wall, "cpu_s": lazy_cpu, "result": lazy_result},
                "worst_case_check": {"wall_s": worst_wall, "cpu_s": worst_cpu, "result": worst_result},
                "leaf_hashes_wall_s": paths_wall,
                "first_recomputation": {"wall_s": gen_wall, "cpu_s": gen_cpu},
                "row_by_row": row_by_row.map(|(w, c)| serde_json::json!({"wall_s": w, "cpu_s": c})),
                "miners_per_round": gemm_miners,
            },
            "llm": llm.as_ref().map(|l| serde_json::json!({
                "model": l.model, "tokens": l.tokens, "wall_s": l.wall_s, "cpu_s": l.cpu_s,
                "tokens_per_s_wall": l.tokens as f64 / l.wall_s,
                "miners_per_round": cores * interval_ms / 1e3 / l.wall_s,
            })),
            "budget": {"cores": cores, "interval_ms": interval_ms},
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "  lazy miner as drawn:        {:>9.1} ms wall {:>9.1} ms CPU  ({lazy_result})",
        lazy_wall * 1e3,
        lazy_cpu * 1e3
    );
    println!(
        "  all opened rows computed:   {:>9.1} ms wall {:>9.1} ms CPU  ({worst_result}; the most a check costs)",
        worst_wall * 1e3,
        worst_cpu * 1e3
    );
    println!(
        "  of which leaf hashes:       {:>9.1} ms wall",
        paths_wall * 1e3
    );
    if let Some((w, c)) = row_by_row {
        println!(
            "  row-by-row recomputation:   {:>9.1} ms wall {:>9.1} ms CPU  (GemmSpec::row_of_c per row, once; same run)",
            w * 1e3,
            c * 1e3
        );
    }
    println!(
        "  budget: {cores} cores × {interval_ms} ms round → {gemm_miners:.0} such checks per round"
    );
    if let Some(l) = llm {
        println!(
            "LLM check: {} , {} completion tokens, {} checks: {:.2} ms wall {:.2} ms thread CPU → {:.0} tokens verified/s (wall); budget: {:.0} such checks per round",
            l.model,
            l.tokens,
            a.llm_repeats,
            l.wall_s * 1e3,
            l.cpu_s * 1e3,
            l.tokens as f64 / l.wall_s,
            cores * interval_ms / 1e3 / l.wall_s
        );
    }
    Ok(())
}

struct LlmFigure {
    model: String,
    tokens: u32,
    wall_s: f64,
    cpu_s: f64,
}

fn llm_check(a: &VerifyArgs) -> anyhow::Result<LlmFigure> {
    use polylith_model::verify::{Claim, Tolerances, verify};
    use polylith_model::{Model, SamplingParams, prompts};
    use std::ops::ControlFlow;
    anyhow::ensure!(a.llm_repeats > 0, "--llm-repeats must be at least 1");
    let model = Model::load(&a.llm).with_context(|| format!("loading model {:?}", a.llm))?;
    let params = SamplingParams {
        max_tokens: a.llm_tokens,
        temperature: 0.8,
        top_p: 0.95,
        seed: 7,
        stop: vec![],
        top_logprobs: polylith_protocol::llm::MAX_TOP_LOGPROBS,
    };
    let (mut wall, mut cpu, mut tokens) = (Vec::new(), Vec::new(), 0);
    for i in 0..a.llm_repeats {
        let prompt = model.encode_prompt(&prompts::generate(1, u64::from(i)))?;
        let out = model.generate(&prompt, &params, |_| ControlFlow::Continue(()))?;
        let claim = Claim {
            prompt_tokens: &prompt,
            tokens: &out.tokens,
            finish_reason: out.finish_reason.as_str(),
            model_hash: Some(model.hash()),
        };
        let (r, w, c) = timed(|| verify(&model, &claim, &params, &Tolerances::default()));
        let r = r?;
        anyhow::ensure!(r.passed, "an honest completion must pass");
        tokens = out.tokens.len() as u32;
        wall.push(w / out.tokens.len().max(1) as f64);
        cpu.push(c / out.tokens.len().max(1) as f64);
    }
    // Per-token medians, scaled back to one completion of the requested length.
    Ok(LlmFigure {
        model: model.name().to_string(),
        tokens: a.llm_tokens.max(tokens),
        wall_s: median(wall) * f64::from(a.llm_tokens),
        cpu_s: median(cpu) * f64::from(a.llm_tokens),
    })
}
