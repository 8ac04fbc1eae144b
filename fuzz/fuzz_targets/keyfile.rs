//! cargo-fuzz target `keyfile`: see `harness::keyfile`.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::keyfile(data));
