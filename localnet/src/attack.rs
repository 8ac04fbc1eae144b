//! A slow-body client for the local subnet: a stranger (a key that is not in the metagraph)
//! that holds connections open to every miner and validator listener for the whole run,
//! sending forged or unregistered `x-polylith-*` headers with bodies it dribbles and never
//! finishes, and headers it never finishes; and, when given one, a registered validator key
//! with the least stake a miner admits, whose correctly signed requests get a place and then
//! dribble their bodies. It is there to show, in the leaderboard, that
//! such a client gets no answer but a refusal and that honest miners keep being verified
//! (docs/security.md §2 and §4 name the defences: `admit` refuses before the body is read,
//! the listener cuts unfinished headers and bodies).
//!
//! Bounded: a fixed number of connections per listener, at most one reconnect per
//! connection every [`RECONNECT_PAUSE`], one byte per [`DRIP_EVERY`], and everything stops
//! with the subnet's stop signal.

use polylith_protocol::keys::{Hotkey, PublicKey};
use polylith_protocol::signing::{RequestEnvelope, blake3_hex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Pause between one byte and the next of a dribbled body or header.
pub const DRIP_EVERY: Duration = Duration::from_millis(250);
/// Pause before a closed connection is opened again.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// The body length the client declares and never delivers.
const DECLARED_BODY: usize = 1 << 20;

/// A listener under attack.
#[derive(Debug, Clone)]
pub struct Target {
    /// The listener's address.
    pub addr: SocketAddr,
    /// The node's hotkey, named as the receiver in forged envelopes.
    pub hotkey: PublicKey,
    /// A miner (signed task routes) or a validator (public API).
    pub miner: bool,
}

/// What one connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Well-formed headers whose signature is not the sender's, then a dribbled body.
    ForgedSignature,
    /// Headers correctly signed by a key that is not in the metagraph, then a dribbled body.
    Unregistered,
    /// A request line and headers that never end.
    EndlessHeaders,
    /// Headers correctly signed by the registered low-stake key, then a dribbled body.
    Registered,
}

impl Kind {
    fn for_connection(i: usize, miner: bool, registered: bool) -> Self {
        match (miner, i % 4) {
            (true, 0) => Kind::ForgedSignature,
            (true, 1) => Kind::Unregistered,
            (true, 3) if registered => Kind::Registered,
            (false, 0) => Kind::Unregistered,
            _ => Kind::EndlessHeaders,
        }
    }
}

/// What the slow client got, for the leaderboard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowClientReport {
    /// Listeners attacked (every miner and validator API).
    pub listeners: usize,
    /// Connections held open at a time, per listener.
    pub per_listener: usize,
    /// Connections opened over the run.
    pub connections: u64,
    /// Connections refused or failed at connect.
    pub connect_failures: u64,
    /// Answers received, by HTTP status code.
    pub answers: BTreeMap<u16, u64>,
    /// Connections the server closed without an answer (unfinished headers cut).
    pub cut_without_answer: u64,
    /// Bytes dribbled in all.
    pub bytes_sent: u64,
    /// Uid of the registered low-stake key, when one ran.
    #[serde(default)]
    pub registered_uid: Option<u16>,
    /// That key's Yuma dividend share in the shown epoch.
    #[serde(default)]
    pub registered_dividend_share: Option<f64>,
}

impl SlowClientReport {
    /// Answers with a 2xx status: requests the subnet served. Anything above 0 would be a
    /// gain for the client.
    pub fn served(&self) -> u64 {
        self.answers
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The running slow client.
pub struct SlowClients {
    report: Arc<Mutex<SlowClientReport>>,
    tasks: Vec<JoinHandle<()>>,
}

impl SlowClients {
    /// Starts `per_listener` connections to each target; they run until `stop` turns true.
    /// With `registered` (uid and key of a staked validator), every fourth connection to a
    /// miner sends that key's correctly signed requests.
    pub fn start(
        targets: &[Target],
        per_listener: usize,
        registered: Option<(u16, Hotkey)>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let report = Arc::new(Mutex::new(SlowClientReport {
            listeners: targets.len(),
            per_listener,
            registered_uid: registered.as_ref().map(|(uid, _)| *uid),
            ..SlowClientReport::default()
        }));
        // One key for the unregistered requests: a stranger to the metagraph.
        let stranger = Arc::new(Hotkey::generate());
        let staked = registered.map(|(_, k)| Arc::new(k));
        let mut tasks = Vec::new();
        for t in targets {
            for i in 0..per_listener {
                let kind = Kind::for_connection(i, t.miner, staked.is_some());
                let key = match (&staked, kind) {
                    (Some(k), Kind::Registered) => k.clone(),
                    _ => stranger.clone(),
                };
                let (t, report, stop) = (t.clone(), report.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    hold(t, kind, key, report, stop).await;
                }));
            }
        }
        Self { report, tasks }
    }

    /// What the client got so far.
    pub fn report(&self) -> SlowClientReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits for every connection task to end (after the stop signal).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The bytes a connection opens with.
fn preamble(t: &Target, kind: Kind, key: &Hotkey) -> Vec<u8> {
    let path = if t.miner {
        "/v1/gemm/commit"
    } else {
        "/v1/weights"
    };
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {}\r\n", t.addr);
    if kind == Kind::EndlessHeaders {
        return head.into_bytes();
    }
    // Signed over a body that is never sent (the body hash is part of the signed headers).
    let mut env = RequestEnvelope::sign(key, &t.hotkey, "POST", path, b"", now_ms());
    // The hash of a body that is never sent, computed once: hashing a MiB per connection
    // would cost the machine the subnet runs on more than the servers spend refusing it.
    static NEVER_SENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    env.body_hash = NEVER_SENT
        .get_or_init(|| blake3_hex(&vec![b'x'; DECLARED_BODY]))
        .clone();
    env.signature = key.sign(&env.signing_payload("POST", path)).to_hex();
    if kind == Kind::ForgedSignature {
        // A well-formed signature by this key over other bytes: it does not verify.
        env.signature = key.sign(b"not the signing payload").to_hex();
    }
    for (name, value) in env.to_headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {DECLARED_BODY}\r\n\r\n"
    ));
    head.into_bytes()
}

/// Resolves once `stop` is true (or its sender is gone). Its output is `()`, so the
/// receiver's read guard is never held across an await and the task stays `Send`.
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn record(report: &Mutex<SlowClientReport>, f: impl FnOnce(&mut SlowClientReport)) {
    if let Ok(mut r) = report.lock() {
        f(&mut r);
    }
}

/// The status code of an HTTP/1.x status line at the start of `buf`, if complete.
fn status_of(buf: &[u8]) -> Option<u16> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(buf.get(..line_end)?).ok()?;
    line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// One connection slot: connect, send the preamble, dribble bytes until the server answers
/// or closes, then reconnect after a pause; until `stop`.
async fn hold(
    t: Target,
    kind: Kind,
    key: Arc<Hotkey>,
    report: Arc<Mutex<SlowClientReport>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        match TcpStream::connect(t.addr).await {
            Ok(mut s) => {
                record(&report, |r| r.connections += 1);
                let first = preamble(&t, kind, &key);
                if s.write_all(&first).await.is_ok() {
                    record(&report, |r| r.bytes_sent += first.len() as u64);
                    let status = dribble(&mut s, kind, &report, &mut stop).await;
                    match status {
                        Some(Some(code)) => {
                            record(&report, |r| *r.answers.entry(code).or_default() += 1)
                        }
                        Some(None) => record(&report, |r| r.cut_without_answer += 1),
                        None => return,
                    }
                }
            }
            Err(_) => record(&report, |r| r.connect_failures += 1),
        }
        tokio::select! {
            _ = until_stopped(&mut stop) => return,
            _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
        }
    }
}

/// Dribbles one byte per [`DRIP_EVERY`] while watching for an answer. `Some(Some(code))`:
/// answered; `Some(None)`: closed without an answer; `None`: stopped.
async fn dribble(
    s: &mut TcpStream,
    kind: Kind,
    report: &Mutex<SlowClientReport>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Option<u16>> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    let mut tick = tokio::time::interval(DRIP_EVERY);
    tick.tick().await;
    // Header bytes that never make a blank line, or body bytes that never reach the length.
    let drip: &[u8] = if kind == Kind::EndlessHeaders {
        b"x"
    } else {
        b"{"
    };
    loop {
        tokio::select! {
            _ = until_stopped(stop) => return None,
            read = s.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return Some(status_of(&buf)),
                Ok(n) => {
                    buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                    if let Some(code) = status_of(&buf) {
                        return Some(Some(code));
                    }
                    // Only the status line is of interest; never hold more than a little.
                    if buf.len() > 4096 {
                        return Some(None);
                    }
                }
            },
            _ = tick.tick() => {
                if s.write_all(drip).await.is_err() {
                    return Some(status_of(&buf));
                }
                record(report, |r| r.bytes_sent += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_and_partial_ones_wait() {
        assert_eq!(status_of(b"HTTP/1.1 403 Forbidden\r\n"), Some(403));
        assert_eq!(status_of(b"HTTP/1.0 408 Request Timeout\r\nx"), Some(408));
        assert_eq!(status_of(b"HTTP/1.1 40"), None);
        assert_eq!(status_of(b"garbage\r\n"), None);
    }

    #[test]
    fn miners_get_every_kind_and_validators_no_forged_signature() {
        let m: Vec<Kind> = (0..4)
            .map(|i| Kind::for_connection(i, true, true))
            .collect();
        assert_eq!(
            m,
            [
                Kind::ForgedSignature,
                Kind::Unregistered,
                Kind::EndlessHeaders,
                Kind::Registered
            ]
        );
        assert_eq!(Kind::for_connection(3, true, false), Kind::EndlessHeaders);
        assert!((0..8).all(|i| !matches!(
            Kind::for_connection(i, false, true),
            Kind::ForgedSignature | Kind::Registered
        )));
    }
}
