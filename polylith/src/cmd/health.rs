//! `polylith health`: asks a daemon's `/health` and says, by exit status, whether it is
//! healthy. Made for scripts and container healthchecks (docker compose uses it).
//!
//! Exit status 0: the daemon answered 2xx and, when the body is JSON with a `status` field,
//! that field is `ok`. Exit status 1 otherwise (unreachable, timed out, an error status, a
//! `status` other than `ok` such as `degraded`), with one line on stderr saying which.

use crate::Global;
use anyhow::{Context, bail};
use std::io::Write;
use std::time::Duration;

/// Flags of `polylith health`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The daemon's URL: `http://HOST:PORT` (then `/health` is asked), a full URL, or
    /// `HOST:PORT`.
    #[arg(long)]
    url: String,
    /// Give up after this many milliseconds (connect and answer together).
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Print nothing when healthy.
    #[arg(long, short)]
    quiet: bool,
    /// Also trust the CA certificates in this PEM file for an https:// URL.
    #[arg(long, env = "POLYLITH_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
}

/// The URL to ask: a scheme is added when missing, and `/health` when there is no path.
fn health_url(url: &str) -> String {
    let url = url.trim();
    let with_scheme = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let after_scheme = with_scheme
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .to_string();
    match after_scheme.find('/') {
        None => format!("{with_scheme}/health"),
        Some(i) if after_scheme[i..] == *"/" => format!("{}health", with_scheme),
        Some(_) => with_scheme,
    }
}

/// `e` and each distinct cause (so "connection refused" is not lost behind "error sending
/// request").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// Runs `polylith health`.
pub fn run(args: Args, _global: &Global) -> anyhow::Result<()> {
    let url = health_url(&args.url);
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let body = runtime.block_on(check(&url, timeout, args.tls_ca.as_deref()))?;
    if !args.quiet {
        let line = format!("ok: {url}: {body}\n");
        match std::io::stdout().lock().write_all(line.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing to stdout");
            }
            _ => {}
        }
    }
    Ok(())
}

async fn check(
    url: &str,
    timeout: Duration,
    tls_ca: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let http = super::http_client(timeout, tls_ca)?;
    let secs = timeout.as_secs_f64();
    let answer = tokio::time::timeout(timeout, async {
        let resp = http.get(url).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    })
    .await;
    let (status, body) = match answer {
        Err(_) => bail!("unhealthy: {url}: no answer within {secs} s"),
        Ok(Err(e)) if e.is_timeout() => bail!("unhealthy: {url}: no answer within {secs} s"),
        Ok(Err(e)) => bail!("unreachable: {url}: {}", error_chain(&e)),
        Ok(Ok(a)) => a,
    };
    let body: String = body.chars().take(500).collect();
    let body = body.trim().replace(['\n', '\r'], " ");
    if !status.is_success() {
        bail!("unhealthy: {url}: HTTP {}: {body}", status.as_u16());
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
        && let Some(s) = v.get("status")
        && s != "ok"
    {
        bail!("unhealthy: {url}: status {s}: {body}");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::health_url;

    #[test]
    fn urls_get_a_scheme_and_the_health_path() {
        assert_eq!(health_url("127.0.0.1:8081"), "http://127.0.0.1:8081/health");
        assert_eq!(
            health_url("http://127.0.0.1:8081"),
            "http://127.0.0.1:8081/health"
        );
        assert_eq!(
            health_url("http://127.0.0.1:8081/"),
            "http://127.0.0.1:8081/health"
        );
        assert_eq!(
            health_url("https://v.example:443/health"),
            "https://v.example:443/health"
        );
        assert_eq!(health_url("http://h:1/v1/info"), "http://h:1/v1/info");
    }
}
