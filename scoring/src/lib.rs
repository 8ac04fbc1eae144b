//! Pure scoring math: verification scores, latency/throughput scores, EMA, Yuma consensus.
//!
//! Owns: the numbers that turn measurements into rewards, including subtensor's Yuma epoch
//! bit for bit ([`yuma`]).
//! Must not: do I/O, read clocks or draw randomness; panic or overflow on any input (the
//! lints below forbid unchecked arithmetic, indexing, unwrap/expect and panics outside tests).
//! The one system query: a large Yuma epoch asks once per process how many CPUs it may use
//! ([`yuma::par::default_threads`]); its results never depend on the answer.
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod ema;
pub mod speed;
pub mod yuma;
