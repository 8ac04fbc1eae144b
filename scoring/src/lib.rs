//! Pure scoring math: verification scores, latency/throughput scores, EMA, Yuma consensus.
//!
//! Must not: do I/O, read clocks or draw randomness.
#![warn(missing_docs)]

pub mod ema;
pub mod speed;
