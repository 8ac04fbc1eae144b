//! cargo-fuzz target `ss58`: see `harness::ss58_address`.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::ss58_address(data));
