//! `polylith local`: a whole subnet on loopback that prints who earned what, and why.

use crate::Global;
use anyhow::Context;
use polylith_localnet::{
    DEFAULT_MINERS, LocalOptions, LocalSubnet, LocalTasks, parse_behaviours,
    parse_validator_behaviours,
};
use polylith_miner::BackendKind;
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `polylith local`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of validators.
    #[arg(long, default_value_t = 2)]
    validators: usize,
    /// Comma-separated miner behaviours: honest, slow, lazy, random, replay (GEMM cheats),
    /// wrong-model, perturbed, truncated, quantized, random-tokens (LLM cheats).
    #[arg(long, default_value = DEFAULT_MINERS)]
    miners: String,
    /// Comma-separated validator behaviours by uid: honest, copier (queries nobody,
    /// republishes the median of the others' revealed weights) or lazy-copier (queries, but
    /// publishes the median). Validators not listed are honest.
    #[arg(long, default_value = "")]
    validator_behaviours: String,
    /// Task kinds the validators run: gemm, llm or all.
    #[arg(long, default_value = "all")]
    task: LocalTasks,
    /// The subnet's LLM: `builtin` or a Hugging Face checkpoint directory.
    #[arg(long, default_value = "builtin")]
    model: String,
    /// Rounds to run before printing the leaderboard (ignored with --serve). Weights are
    /// revealed three rounds after they are committed and enter the epoch two rounds later,
    /// so rewards appear from round 6 on.
    #[arg(long, default_value_t = 8)]
    rounds: u64,
    /// Where keys, the metagraph and the databases go (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Compute backend of the miners.
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
    /// Print the leaderboard as one JSON object.
    #[arg(long)]
    json: bool,
    /// Keep the subnet running (rounds continue) until interrupted; writes DIR/targets.json
    /// for Prometheus' file_sd.
    #[arg(long)]
    serve: bool,
    /// Connections a slow-body client (a key outside the metagraph, sending forged headers and
    /// bodies it never finishes, plus a registered stake-1 validator key dribbling signed
    /// bodies) holds to each miner and validator during the run; 0 for none. Default 4, and
    /// none with --serve.
    #[arg(long)]
    slow_clients: Option<usize>,
    /// Pause between rounds with --serve, milliseconds.
    #[arg(long, default_value_t = 2_000)]
    round_interval_ms: u64,
}

/// Runs `polylith local`.
pub fn run(args: Args, _global: &Global) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let (data_dir, _temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("polylith-local-")
                .tempdir()
                .context("creating a temporary data directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    if args.serve && args.data_dir.is_none() {
        anyhow::bail!("--serve needs --data-dir DIR (targets.json is written there)");
    }
    let mut opts = LocalOptions::new(data_dir);
    opts.validators = args.validators;
    opts.validator_behaviours = parse_validator_behaviours(&args.validator_behaviours)?;
    if opts.validator_behaviours.len() > opts.validators {
        anyhow::bail!(
            "--validator-behaviours lists {} validators but --validators is {}",
            opts.validator_behaviours.len(),
            opts.validators
        );
    }
    opts.miners = parse_behaviours(&args.miners)?;
    opts.backend = args.backend;
    opts.round_interval_ms = args.round_interval_ms;
    opts.tasks = args.task;
    opts.model = args.model.clone();
    // A served subnet feeds dashboards; an attack there runs only when asked for.
    opts.slow_clients = args.slow_clients.unwrap_or(if args.serve { 0 } else { 4 });

    let mut subnet = LocalSubnet::start(&opts, args.serve).await?;
    if args.serve {
        let targets = subnet.write_targets()?;
        eprintln!(
            "local subnet serving: {} validators, {} miners; Prometheus targets in {}",
            opts.validators,
            opts.miners.len(),
            targets.display()
        );
        for n in subnet.validator_nodes() {
            eprintln!(
                "  validator uid {} api http://{} metrics http://{}/metrics",
                n.uid, n.api, n.metrics
            );
        }
        for n in subnet.miner_nodes() {
            eprintln!(
                "  miner     uid {} api http://{} metrics http://{}/metrics",
                n.uid, n.api, n.metrics
            );
        }
        eprintln!("press Ctrl-C to stop");
        super::shutdown_signal().await;
        subnet.shutdown().await;
        return Ok(());
    }

    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.rounds)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} rounds ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("running rounds");
    for _ in 0..args.rounds {
        subnet.run_round().await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = subnet.report();
    subnet.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
        println!(
            "\nwall time {:.1} s. Weights are each validator's EMA of verified speed; rewards are \
             the Yuma consensus incentive over all validators' signed weights and stakes.",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
