//! cargo-fuzz target `sse`: see `harness::sse`.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::sse(data));
