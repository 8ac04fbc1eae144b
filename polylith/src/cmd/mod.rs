//! One module per subcommand; each owns its clap `Args` and a `run` function.

/// Copies each named flag that was given (`Some`) over the same field of a daemon's config:
/// flags and environment beat the TOML file, which beats the defaults.
macro_rules! override_from_flags {
    ($config:expr, $args:expr, $($field:ident),* $(,)?) => {
        $( if let Some(v) = &$args.$field { $config.$field = v.clone(); } )*
    };
}

pub mod bench;
pub mod explain;
pub mod health;
pub mod help;
pub mod kernels;
pub mod key;
pub mod local;
pub mod miner;
pub mod model;
pub mod out;
pub mod validator;
pub mod yuma;

/// `--keys-dir` for the subcommands that read keys (`key` and its subcommands, `miner`,
/// `validator`); the same flag before the subcommand also works
/// (`polylith --keys-dir DIR miner ...`). Not on the other commands, which ignore keys.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeysDirArg {
    /// Directory holding named hotkey files [default: $HOME/.polylith/keys].
    #[arg(
        long = "keys-dir",
        global = true,
        env = "POLYLITH_KEYS_DIR",
        value_name = "DIR"
    )]
    pub keys_dir: Option<std::path::PathBuf>,
}

/// Completes on Ctrl-C or SIGTERM: the daemons' and `local --serve`'s shutdown future.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}

/// The client `explain` and `health` ask daemons with: the daemons' own (the system's root
/// certificates, none in a slim image, which is fine for http://, plus --tls-ca; no proxy, no
/// redirects), with `timeout` for connecting and for the whole request.
pub(crate) fn http_client(
    timeout: std::time::Duration,
    tls_ca: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    polylith_validator::client::http_client_builder(tls_ca)
        .context("loading TLS root certificates")?
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .context("building the HTTP client")
}
