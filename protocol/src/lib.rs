//! Polylith's shared protocol: everything two nodes must agree on byte for byte.
//!
//! Owns: sr25519 hotkeys and SS58 addresses ([`keys`], [`ss58`]), the signed request
//! envelope and miner receipts ([`signing`]), the metagraph file ([`metagraph`]), the
//! deterministic proof-of-compute task definition and its Merkle commitment ([`gemm`]),
//! signed weight vectors ([`weights`]), the LLM task's wire types ([`llm`]) and the
//! task-kind registry ([`task`]).
//!
//! Must not: open sockets, spawn tasks or read clocks other than through arguments; the
//! daemons own I/O. Everything here is deterministic so it can be tested exhaustively.
#![warn(missing_docs)]

pub mod gemm;
pub mod keys;
pub mod llm;
pub mod metagraph;
pub mod signing;
pub mod ss58;
pub mod task;
pub mod weights;

/// A 32-byte blake3 digest, the hash used everywhere on the wire.
pub type Hash32 = [u8; 32];
