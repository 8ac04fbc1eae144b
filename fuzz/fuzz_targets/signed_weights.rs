//! cargo-fuzz target `signed_weights`: see `harness::signed_weights`.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::signed_weights(data));
