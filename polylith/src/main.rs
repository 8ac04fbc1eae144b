//! `polylith`: one binary for every role. Each subcommand lives in `cmd/` and only parses
//! flags, calls the libraries and prints; the logic is in the workspace crates.

mod cmd;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Directory holding named hotkey files [default: $HOME/.polylith/keys]. Also accepted
    /// after `key`, `miner` and `validator`.
    #[arg(long, env = "POLYLITH_KEYS_DIR", value_name = "DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. `debug` or `polylith_miner=debug`
    /// [default: info for miner and validator, warn for the other commands].
    #[arg(long, global = true, env = "POLYLITH_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Log as JSON lines instead of text. The variable takes 1/0, true/false, yes/no, on/off.
    #[arg(
        long,
        global = true,
        env = "POLYLITH_LOG_JSON",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub log_json: bool,
}

impl Global {
    /// The keystore directory: a subcommand's `--keys-dir`, else the top-level one, else the
    /// default under the home directory.
    pub fn keys_dir(&self, sub: &cmd::KeysDirArg) -> PathBuf {
        sub.keys_dir
            .clone()
            .or_else(|| self.keys_dir.clone())
            .unwrap_or_else(polylith_protocol::keys::Keystore::default_dir)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "polylith",
    version,
    about = "Polylith: a decentralized compute subnet",
    after_help = "Logs go to stderr, coloured only when stderr is a terminal and NO_COLOR is \
                  unset; command output goes to stdout."
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

impl Command {
    /// Long-running daemons log their lifecycle at `info` by default; one-shot commands
    /// print their result on stdout and log only problems.
    fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Miner(_) | Command::Validator(_) => "info",
            _ => "warn",
        }
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and never when `NO_COLOR` is set
/// to anything non-empty (<https://no-color.org>).
fn use_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_tracing(global: &Global, default_filter: &str) {
    let filter = global.log.as_deref().unwrap_or(default_filter);
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: --log {filter:?} is not a valid filter ({e}); using {default_filter}");
        tracing_subscriber::EnvFilter::new(default_filter)
    });
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if global.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A last resort for output written with `println!` (which panics when stdout is closed,
/// as in `polylith ... | head -1`): such a panic ends the process quietly with success,
/// as the reader has all it wanted. Commands should print through [`cmd::out`], which
/// returns an error instead of panicking; this hook covers any `println!` left elsewhere.
fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_closed_stdout();
    // Before any command can build an HTTP client or TLS config (reqwest panics without a
    // provider); the libraries also install it, this covers every command in one place.
    polylith_net::install_crypto_provider();
    let matches = cmd::help::with_daemon_defaults(Cli::command()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_tracing(&cli.global, cli.command.default_log_filter());
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
        // The reader went away (`| head`): it has what it wanted, which is not a failure.
        Err(e) if e.downcast_ref::<cmd::out::StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: each cause once, never a panic or backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn the_command_line_is_consistent() {
        cmd::help::with_daemon_defaults(Cli::command()).debug_assert();
    }
}
