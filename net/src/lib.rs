//! Polylith's listeners: serving an axum router on a bound TCP listener so that hostile
//! clients cannot take it offline.
//!
//! Owns: the accept loop of every daemon listener (miner API, validator API, metrics), the
//! per-connection HTTP/1 settings (header read timeout with a real timer, body read timeout,
//! idle timeout), the total and per-source-address connection caps, graceful shutdown with a
//! grace period, the `polylith_listener_*` metrics, raising `RLIMIT_NOFILE` at start, TLS
//! on a listener, and the process's rustls crypto provider ([`tls`]).
//!
//! Must not: bind sockets (callers pass bound listeners, so tests can use port 0), know any
//! route or wire format, authenticate requests (the miner's envelope checks do that), or
//! panic on anything a client sends.
//!
//! Use [`serve`] (or [`serve_tls`]) with [`ListenerLimits`] in place of `axum::serve`, and call
//! [`raise_nofile_limit`] once when a daemon starts.
#![warn(missing_docs)]

mod addr;
mod body;
mod limits;
mod metrics;
mod nofile;
mod server;
pub mod tls;

pub use addr::{AddrError, resolve_listen_addr};
pub use limits::ListenerLimits;
pub use metrics::{ListenerMetrics, ListenerObserver};
pub use nofile::{NofileError, NofileLimit, raise_nofile_limit, try_raise_nofile_limit};
pub use server::{serve, serve_tls};
pub use tls::install_crypto_provider;
