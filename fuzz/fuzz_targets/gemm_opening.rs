//! cargo-fuzz target `gemm_opening`: see `harness::gemm_opening`.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::gemm_opening(data));
