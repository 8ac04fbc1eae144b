//! The validator daemon: challenges miners, verifies, scores, persists and sets weights.
#![warn(missing_docs)]
