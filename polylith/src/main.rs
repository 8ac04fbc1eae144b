//! `polylith`: one binary for every role. Each subcommand lives in `cmd/` and only parses
//! flags, calls the libraries and prints; the logic is in the workspace crates.

mod cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Directory holding named hotkey files.
    #[arg(long, global = true, env = "POLYLITH_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `polylith_miner=debug`.
    #[arg(long, global = true, env = "POLYLITH_LOG", default_value = "warn")]
    pub log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "POLYLITH_LOG_JSON")]
    pub log_json: bool,
}

impl Global {
    /// The keystore directory: `--keys-dir` or the default under the home directory.
    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(polylith_protocol::keys::Keystore::default_dir)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "polylith",
    version,
    about = "Polylith: a decentralized compute subnet"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage sr25519 hotkeys.
    Key(cmd::key::Args),
    /// Run a miner daemon.
    Miner(cmd::miner::Args),
    /// Run a validator daemon.
    Validator(cmd::validator::Args),
    /// Run a whole subnet on loopback and print who earned what.
    Local(cmd::local::Args),
    /// Run one Yuma consensus epoch from a JSON file.
    Yuma(cmd::yuma::Args),
    /// Inspect and check the CUDA kernels.
    Kernels(cmd::kernels::Args),
    /// Benchmarks.
    Bench(cmd::bench::Args),
    /// The reference model: logits and generation.
    Model(cmd::model::Args),
    /// Why a miner earns what it earns: asks every validator in the metagraph.
    Explain(cmd::explain::Args),
    /// Ask a daemon's /health; exit status 0 when healthy (for scripts and healthchecks).
    Health(cmd::health::Args),
}

fn init_tracing(global: &Global) {
    let filter = tracing_subscriber::EnvFilter::try_new(&global.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if global.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.global);
    let result = match cli.command {
        Command::Key(a) => cmd::key::run(a, &cli.global),
        Command::Miner(a) => cmd::miner::run(a, &cli.global),
        Command::Validator(a) => cmd::validator::run(a, &cli.global),
        Command::Local(a) => cmd::local::run(a, &cli.global),
        Command::Yuma(a) => cmd::yuma::run(a, &cli.global),
        Command::Kernels(a) => cmd::kernels::run(a, &cli.global),
        Command::Bench(a) => cmd::bench::run(a, &cli.global),
        Command::Model(a) => cmd::model::run(a, &cli.global),
        Command::Explain(a) => cmd::explain::run(a, &cli.global),
        Command::Health(a) => cmd::health::run(a, &cli.global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line (with causes), never a panic or backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
