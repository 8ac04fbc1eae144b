//! `polylith explain`: why a miner earns what it earns, asked of every validator.
//!
//! Reads the metagraph, asks each validator it lists for its public state (`GET /v1/state`,
//! signed by the validator's hotkey) and its newest weights message (`GET /v1/weights`, whose
//! reveal carries the weights committed `reveal_delay_rounds` earlier), and prints per
//! validator the miner's verified/failed counts, failures by reason, the last failure, the
//! EMA score (when the validator shows it), the revealed weight and the resulting incentive;
//! then the most common failure reason and what to do about it ([`FailureReason::advice`]).

use crate::Global;
use anyhow::{Context, bail};
use polylith_protocol::keys::PublicKey;
use polylith_protocol::metagraph::{Metagraph, Neuron, Role};
use polylith_protocol::weights::WeightsMessage;
use polylith_validator::state::{STATE_SIGNATURE_HEADER, verify_state};
use polylith_validator::{Failure, FailureReason, ValidatorSnapshot};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Largest `/v1/state` or `/v1/weights` body read from one validator.
const MAX_BODY_BYTES: usize = 16 << 20;

/// Flags of `polylith explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The subnet's metagraph file (TOML): the validators asked and the miner's uid/hotkey.
    #[arg(long, required_unless_present = "chain", conflicts_with = "chain")]
    metagraph: Option<PathBuf>,
    /// Read the metagraph from a subtensor node instead (WebSocket URL, with --netuid). Not
    /// supported yet: there is no chain client; export the metagraph to a file.
    #[arg(long, value_name = "WS", requires = "netuid")]
    chain: Option<String>,
    /// The subnet's netuid on --chain.
    #[arg(long, requires = "chain")]
    netuid: Option<u16>,
    /// The miner: its uid or its hotkey (SS58).
    #[arg(long, value_name = "UID|SS58")]
    miner: String,
    /// How long to wait for each validator, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also trust the CA certificates in this PEM file for https:// validators.
    #[arg(long, env = "POLYLITH_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

/// The miner asked about.
#[derive(Debug, Serialize)]
struct MinerId {
    uid: u16,
    hotkey: String,
    endpoint: String,
}

/// What one validator says about the miner.
#[derive(Debug, Default, Serialize)]
struct ValidatorView {
    uid: u16,
    hotkey: String,
    endpoint: String,
    stake: u64,
    /// Why this validator's state could not be read (then the fields below are empty).
    error: Option<String>,
    /// Whether `/v1/state` carried a valid signature by the validator's hotkey (an older
    /// validator serves it unsigned).
    signed: bool,
    /// The validator's last completed round.
    round: Option<u64>,
    verified: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    last_failure: Option<Failure>,
    /// The EMA score, when the validator shows it (the public state withholds current
    /// scores until they are revealed: `null`).
    ema: Option<f64>,
    /// The weight of the newest revealed vector (u16, 65535 = the validator's best miner).
    weight_u16: Option<u16>,
    /// The round whose weights `weight_u16` is from.
    weight_round: Option<u64>,
    /// Why the weight is missing, if it is.
    weight_error: Option<String>,
    /// The miner's incentive share from the validator's last epoch, in [0, 1].
    incentive: Option<f64>,
    /// Something the operator should know about this validator's view.
    note: Option<String>,
}

/// The whole answer.
#[derive(Debug, Serialize)]
struct Explanation {
    miner: MinerId,
    validators: Vec<ValidatorView>,
    /// Validators whose state was read.
    answered: usize,
    verified: u64,
    failed: u64,
    /// Failures by reason, summed over the validators that answered.
    failures: BTreeMap<String, u64>,
    /// The most frequent failure reason, if any failed.
    most_common_reason: Option<String>,
    /// One line: why the miner earns what it earns.
    verdict: String,
    /// What to do about it.
    advice: String,
}

/// Runs `polylith explain`.
pub fn run(args: Args, _global: &Global) -> anyhow::Result<()> {
    if let Some(chain) = &args.chain {
        bail!(
            "--chain {chain} --netuid {}: reading the metagraph from a chain is not supported \
             until the chain client lands; write the subnet's metagraph to a TOML file \
             (docs/protocol.md §6) and pass --metagraph FILE",
            args.netuid
                .map_or_else(|| "?".to_string(), |n| n.to_string())
        );
    }
    let Some(path) = &args.metagraph else {
        bail!("--metagraph FILE is required");
    };
    let mg = Metagraph::load(path).with_context(|| format!("reading {}", path.display()))?;
    let miner = find_miner(&mg, &args.miner)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let ex = runtime.block_on(explain(&mg, miner, timeout, args.tls_ca.as_deref()))?;
    let text = if args.json {
        serde_json::to_string_pretty(&ex)? + "\n"
    } else {
        render(&ex)
    };
    // A closed stdout (`| head`) is not an error worth a panic.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("writing to stdout");
        }
        _ => {}
    }
    if ex.answered == 0 {
        bail!(
            "no validator answered ({} listed in {})",
            ex.validators.len(),
            path.display()
        );
    }
    Ok(())
}

/// The miner named by `--miner`: a uid or an SS58 hotkey.
fn find_miner<'a>(mg: &'a Metagraph, which: &str) -> anyhow::Result<&'a Neuron> {
    let which = which.trim();
    let neuron = if let Ok(uid) = which.parse::<u16>() {
        mg.by_uid(uid)
            .with_context(|| format!("no neuron with uid {uid} in the metagraph"))?
    } else {
        let key = PublicKey::from_ss58(which).map_err(|e| {
            anyhow::anyhow!("--miner {which}: neither a uid nor an SS58 hotkey ({e})")
        })?;
        mg.by_hotkey(&key)
            .with_context(|| format!("hotkey {which} is not in the metagraph (not registered)"))?
    };
    if neuron.role != Role::Miner {
        bail!(
            "uid {} ({}) is a validator in the metagraph, not a miner",
            neuron.uid,
            neuron.hotkey
        );
    }
    Ok(neuron)
}

async fn explain(
    mg: &Metagraph,
    miner: &Neuron,
    timeout: Duration,
    tls_ca: Option<&std::path::Path>,
) -> anyhow::Result<Explanation> {
    let http = super::http_client(timeout, tls_ca)?;
    let mut set = tokio::task::JoinSet::new();
    for (i, v) in mg.validators().into_iter().enumerate() {
        let http = http.clone();
        let v = v.clone();
        let m = (miner.uid, miner.hotkey.clone());
        set.spawn(async move { (i, ask(&http, &v, m.0, &m.1).await) });
    }
    let mut views: Vec<(usize, ValidatorView)> = Vec::new();
    while let Some(r) = set.join_next().await {
        views.push(r.context("a validator query panicked")?);
    }
    views.sort_by_key(|(i, _)| *i);
    let validators: Vec<ValidatorView> = views.into_iter().map(|(_, v)| v).collect();
    Ok(summarize(
        MinerId {
            uid: miner.uid,
            hotkey: miner.hotkey.clone(),
            endpoint: miner.endpoint.clone(),
        },
        validators,
    ))
}

/// GETs `url` (no redirects), reading at most [`MAX_BODY_BYTES`]: the body and the state
/// signature header.
async fn get(http: &reqwest::Client, url: &str) -> Result<(Vec<u8>, Option<String>), String> {
    let mut resp = http.get(url).send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let sig = resp
        .headers()
        .get(STATE_SIGNATURE_HEADER)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len().saturating_add(chunk.len()) > MAX_BODY_BYTES {
            return Err(format!("{url}: body over {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!(
            "{url}: HTTP {} {}",
            status.as_u16(),
            polylith_validator::task::bounded_text(text.trim(), 200)
        ));
    }
    Ok((body, sig))
}

/// `e` and every cause below it, once each ("connection refused" is what the operator needs).
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

fn base_url(endpoint: &str) -> String {
    endpoint.trim_end_matches('/').to_string()
}

async fn ask(http: &reqwest::Client, v: &Neuron, uid: u16, hotkey: &str) -> ValidatorView {
    let mut view = ValidatorView {
        uid: v.uid,
        hotkey: v.hotkey.clone(),
        endpoint: v.endpoint.clone(),
        stake: v.stake,
        ..ValidatorView::default()
    };
    let key = match PublicKey::from_ss58(&v.hotkey) {
        Ok(k) => k,
        Err(e) => {
            view.error = Some(format!("the metagraph's hotkey is not valid SS58: {e}"));
            return view;
        }
    };
    let base = base_url(&v.endpoint);
    let state = match get(http, &format!("{base}/v1/state")).await {
        Ok((body, sig)) => match verify_state(&body, sig.as_deref(), &key) {
            Ok((s, signed)) => {
                view.signed = signed;
                s
            }
            Err(e) => {
                view.error = Some(format!("{base}/v1/state: {e}"));
                return view;
            }
        },
        Err(e) => {
            view.error = Some(e);
            return view;
        }
    };
    fill_from_state(&mut view, &state, uid, hotkey);
    match get(http, &format!("{base}/v1/weights")).await {
        Ok((body, _)) => match serde_json::from_slice::<WeightsMessage>(&body) {
            Ok(msg) => match msg.verify() {
                Ok(signer) if signer == key => match &msg.reveal {
                    Some(r) => {
                        view.weight_round = Some(r.round);
                        view.weight_u16 = Some(
                            r.weights
                                .iter()
                                .find(|(u, _)| *u == uid)
                                .map_or(0, |(_, w)| *w),
                        );
                    }
                    None => {
                        view.weight_error = Some(format!(
                            "nothing revealed yet (message of round {})",
                            msg.round
                        ))
                    }
                },
                Ok(_) => {
                    view.weight_error =
                        Some("the weights message is signed by another hotkey".into())
                }
                Err(e) => view.weight_error = Some(format!("the weights message: {e}")),
            },
            Err(e) => view.weight_error = Some(format!("unparsable weights message: {e}")),
        },
        Err(e) => view.weight_error = Some(e),
    }
    view
}

fn fill_from_state(view: &mut ValidatorView, s: &ValidatorSnapshot, uid: u16, hotkey: &str) {
    view.round = Some(s.round);
    view.incentive = Some(s.incentive.get(usize::from(uid)).copied().unwrap_or(0.0));
    match s.miners.iter().find(|m| m.uid == uid) {
        Some(m) if m.hotkey == hotkey => {
            view.verified = m.verified;
            view.failed = m.failed;
            view.failures = m.failures.clone();
            view.last_failure = m.last_failure.clone();
            view.ema = (!s.scores_hidden).then_some(m.ema);
        }
        Some(m) => {
            view.note = Some(format!(
                "this validator's metagraph has hotkey {} at uid {uid}: one of the two \
                 metagraph files is out of date",
                m.hotkey
            ));
        }
        None => {
            view.note = Some(format!(
                "this validator's metagraph has no miner at uid {uid}: it does not query this \
                 miner (its metagraph file is out of date)"
            ));
        }
    }
}

fn summarize(miner: MinerId, validators: Vec<ValidatorView>) -> Explanation {
    let ok: Vec<&ValidatorView> = validators.iter().filter(|v| v.error.is_none()).collect();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for v in &ok {
        for (r, n) in &v.failures {
            let c = failures.entry(r.clone()).or_default();
            *c = c.saturating_add(*n);
        }
    }
    let verified: u64 = ok.iter().map(|v| v.verified).sum();
    let failed: u64 = ok.iter().map(|v| v.failed).sum();
    // The most frequent reason; ties go to the one proving a wrong answer, then by name.
    let most = failures
        .iter()
        .filter(|(_, n)| **n > 0)
        .max_by_key(|(r, n)| {
            let cheat = reason(r).is_some_and(FailureReason::is_cheating);
            (**n, cheat, std::cmp::Reverse((*r).clone()))
        })
        .map(|(r, n)| (r.clone(), *n));
    let incentive = ok.iter().filter_map(|v| v.incentive).fold(0.0f64, f64::max);
    let total = verified.saturating_add(failed);
    let (verdict, advice) = if ok.is_empty() {
        (
            "no validator answered, so nothing is known".to_string(),
            "Check the validators' endpoints in the metagraph and that you can reach them \
             (the errors above say why each failed)."
                .to_string(),
        )
    } else if total == 0 {
        (
            "no validator has queried this miner yet".to_string(),
            "Validators query every miner of their metagraph each round: wait for the next \
             round, and check that their metagraph lists this hotkey at this uid (a note \
             above says so when it does not)."
                .to_string(),
        )
    } else if let Some((r, n)) = most
        .as_ref()
        .filter(|(_, n)| incentive > 0.0 && n.saturating_mul(10) < total)
    {
        // Earning, with a few failures: say so first, then what the failures were.
        let advice = reason(r).map_or_else(String::new, |r| r.advice().to_string());
        (
            format!(
                "earning (incentive up to {:.1}%): {verified} of {total} queries verified; \
                 occasional failures, most often {r} ({n})",
                incentive * 100.0
            ),
            format!("About the occasional {r}: {advice}"),
        )
    } else if let Some((r, n)) = &most {
        let advice = reason(r).map_or_else(
            || format!("Unknown failure reason `{r}` (a newer validator?)."),
            |r| r.advice().to_string(),
        );
        let proven = reason(r).is_some_and(FailureReason::is_cheating);
        let verdict = format!(
            "{n} of {total} queries failed with {r}{}",
            if proven {
                " (a proven wrong answer: the score is reset to 0 each time)"
            } else {
                ""
            }
        );
        (verdict, advice)
    } else if incentive == 0.0 {
        (
            format!("all {verified} queries verified, no incentive yet"),
            "Weights are committed each round, revealed `reveal_delay_rounds` later (3 by \
             default) and enter the epoch two rounds after that, so rewards start about five \
             rounds after the first verified work. If it stays 0, the miner is much slower \
             than the others: scores are relative to the fastest miner of each round."
                .to_string(),
        )
    } else {
        (
            format!(
                "all {verified} queries verified; incentive up to {:.1}%",
                incentive * 100.0
            ),
            "Nothing is wrong. To earn more, be faster: scores are relative to the fastest \
             miner (GEMM) and to the round's median (LLM)."
                .to_string(),
        )
    };
    Explanation {
        miner,
        answered: ok.len(),
        validators,
        verified,
        failed,
        failures,
        most_common_reason: most.map(|(r, _)| r),
        verdict,
        advice,
    }
}

fn reason(name: &str) -> Option<FailureReason> {
    FailureReason::ALL.into_iter().find(|r| r.as_str() == name)
}

fn short(ss58: &str) -> String {
    polylith_localnet::short_hotkey(ss58)
}

fn render(ex: &Explanation) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let m = &ex.miner;
    let _ = writeln!(
        o,
        "miner uid {} {} at {}",
        m.uid,
        m.hotkey,
        if m.endpoint.is_empty() {
            "(no endpoint)"
        } else {
            &m.endpoint
        }
    );
    for v in &ex.validators {
        let _ = writeln!(o);
        let _ = write!(
            o,
            "validator uid {} {} at {} (stake {})",
            v.uid,
            short(&v.hotkey),
            v.endpoint,
            v.stake
        );
        if let Some(e) = &v.error {
            let _ = writeln!(o, "\n  not read: {e}");
            continue;
        }
        let _ = writeln!(
            o,
            ", round {}, state {}",
            v.round.unwrap_or(0),
            if v.signed {
                "signed"
            } else {
                "UNSIGNED (an older validator)"
            }
        );
        if let Some(n) = &v.note {
            let _ = writeln!(o, "  note: {n}");
        }
        let by_reason: Vec<String> = v.failures.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            o,
            "  verified {}, failed {}{}",
            v.verified,
            v.failed,
            if by_reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_reason.join(", "))
            }
        );
        if let Some(f) = &v.last_failure {
            let _ = writeln!(o, "  last failure: {f}");
        }
        let _ = writeln!(
            o,
            "  EMA score: {}",
            v.ema.map_or_else(
                || "not shown (the public state withholds current scores until they are revealed)"
                    .to_string(),
                |e| format!("{e:.3}")
            )
        );
        match (v.weight_u16, v.weight_round, &v.weight_error) {
            (Some(w), Some(r), _) => {
                let _ = writeln!(o, "  weight: {w} of 65535 (revealed, round {r})");
            }
            (_, _, Some(e)) => {
                let _ = writeln!(o, "  weight: unknown ({e})");
            }
            _ => {
                let _ = writeln!(o, "  weight: unknown");
            }
        }
        let _ = writeln!(o, "  incentive: {:.1}%", v.incentive.unwrap_or(0.0) * 100.0);
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{} of {} validators answered: {} verified, {} failed",
        ex.answered,
        ex.validators.len(),
        ex.verified,
        ex.failed
    );
    if let Some(r) = &ex.most_common_reason {
        let _ = writeln!(o, "most common reason: {r}");
    }
    let _ = writeln!(o, "verdict: {}", ex.verdict);
    let _ = writeln!(o, "what to do: {}", ex.advice);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(failures: &[(&str, u64)], verified: u64, incentive: f64) -> ValidatorView {
        ValidatorView {
            failures: failures.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            failed: failures.iter().map(|(_, n)| n).sum(),
            verified,
            incentive: Some(incentive),
            ..ValidatorView::default()
        }
    }

    fn miner() -> MinerId {
        MinerId {
            uid: 3,
            hotkey: "5x".into(),
            endpoint: String::new(),
        }
    }

    #[test]
    fn the_most_common_reason_gets_its_advice() {
        let ex = summarize(
            miner(),
            vec![
                view(&[("timeout", 2), ("wrong_row", 3)], 5, 0.0),
                view(&[("wrong_row", 1)], 5, 0.0),
            ],
        );
        assert_eq!(ex.most_common_reason.as_deref(), Some("wrong_row"));
        assert_eq!(ex.failed, 6);
        assert_eq!(ex.advice, FailureReason::WrongRow.advice());
        assert!(ex.verdict.contains("4 of 16"), "{}", ex.verdict);
        // A tie goes to the proven wrong answer.
        let tie = summarize(
            miner(),
            vec![view(&[("timeout", 2), ("wrong_token", 2)], 0, 0.0)],
        );
        assert_eq!(tie.most_common_reason.as_deref(), Some("wrong_token"));
    }

    #[test]
    fn verdicts_without_failures() {
        let never = summarize(miner(), vec![view(&[], 0, 0.0)]);
        assert!(
            never.verdict.contains("not queried")
                || never.verdict.contains("no validator has queried")
        );
        let waiting = summarize(miner(), vec![view(&[], 4, 0.0)]);
        assert!(waiting.advice.contains("revealed"), "{}", waiting.advice);
        let fine = summarize(miner(), vec![view(&[], 4, 0.25)]);
        assert!(fine.verdict.contains("25.0%"), "{}", fine.verdict);
        let mostly = summarize(miner(), vec![view(&[("http_status", 1)], 27, 0.5)]);
        assert!(mostly.verdict.starts_with("earning"), "{}", mostly.verdict);
        assert!(mostly.advice.contains(FailureReason::HttpStatus.advice()));
        assert_eq!(mostly.most_common_reason.as_deref(), Some("http_status"));
        let down = summarize(
            miner(),
            vec![ValidatorView {
                error: Some("connection refused".into()),
                ..ValidatorView::default()
            }],
        );
        assert_eq!(down.answered, 0);
    }
}
