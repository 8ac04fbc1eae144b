//! The miner daemon: verifies signed requests, computes tasks, returns signed receipts.
#![warn(missing_docs)]
