//! cargo-fuzz target `envelope_headers`: see `harness::envelope_headers`.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::envelope_headers(data));
