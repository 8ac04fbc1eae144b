//! cargo-fuzz target `llm_stream`: see `llm_stream::llm_stream`.
#![no_main]

#[path = "../harness/llm_stream.rs"]
mod llm_stream;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    llm_stream::llm_stream(data);
});
