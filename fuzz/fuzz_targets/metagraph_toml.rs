//! cargo-fuzz target `metagraph_toml`: see `harness::metagraph_toml`.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::metagraph_toml(data));
