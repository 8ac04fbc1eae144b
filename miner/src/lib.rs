//! The miner daemon: verifies signed requests, computes tasks, returns signed receipts.
//!
//! Owns: the HTTP task API (axum), envelope checks against the metagraph, replay protection,
//! admission control, the GEMM compute backends and the commitments held for opening, the
//! OpenAI-compatible LLM endpoints (on `polylith-model`), the adversarial behaviours used in
//! tests and local subnets, and the miner's metrics.
//!
//! Must not: decide scores or weights (the validator's job), define wire formats (those live
//! in `polylith-protocol`), or read the keystore: callers hand it a loaded [`Hotkey`].
//!
//! Start one in-process with [`Miner::new`] and [`Miner::serve`] (or mount [`Miner::router`]
//! and [`Miner::metrics_router`] yourself).
//!
//! [`Hotkey`]: polylith_protocol::keys::Hotkey
#![warn(missing_docs)]

pub mod auth;
pub mod backend;
pub mod clock;
pub mod config;
pub mod error;
mod gemm;
pub mod llm;
pub mod metrics;
pub mod server;
pub mod store;

pub use backend::{BackendError, GemmBackend, select_backend};
pub use clock::{Clock, OffsetClock, SystemClock};
pub use config::{BackendKind, Behaviour, MinerConfig};
pub use error::{ApiError, MinerError};
pub use metrics::MinerMetrics;
pub use server::{Miner, run};
