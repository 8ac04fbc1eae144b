//! Fuzz harness for the validator's LLM stream parser (`polylith_validator::task::llm::
//! parse_stream`), shared by the `llm_stream` cargo-fuzz target and the stable replay test
//! `validator/tests/fuzz_llm_stream.rs`.
//!
//! The input is a whole `text/event-stream` body. It goes the way the validator's stream
//! reader (`SignedClient::post_signed_stream`) takes it: fed in chunks to a bounded
//! `SseParser`, read up to the first `event: receipt` (or `error`), the receipt parsed and
//! its signature checked over the bytes before it (errors only), and the events before it
//! given to `parse_stream`. Nothing may panic; an accepted stream has one token per event
//! and its canonical re-encoding is accepted with the same tokens and finish reason.
#![allow(dead_code)]

use polylith_protocol::keys::Hotkey;
use polylith_protocol::llm::{
    MAX_SSE_EVENT_BYTES, RECEIPT_EVENT, SseEvent, SseParser, StreamChunk, parse_sse,
};
use polylith_protocol::signing::Receipt;
use polylith_validator::client::StreamExchange;
use polylith_validator::task::llm::parse_stream;
use std::sync::OnceLock;
use std::time::Duration;

fn miner_key() -> &'static Hotkey {
    static KEY: OnceLock<Hotkey> = OnceLock::new();
    KEY.get_or_init(|| Hotkey::from_seed(&[9; 32]).expect("a 32-byte seed is a key"))
}

fn blank_receipt() -> Receipt {
    Receipt {
        miner: String::new(),
        request_hash: String::new(),
        response_hash: String::new(),
        model_hash: String::new(),
        received_ms: 0,
        compute_us: 0,
        ttft_us: 0,
        total_us: 0,
        tokens: 0,
        signature: String::new(),
    }
}

fn exchange(events: Vec<SseEvent>, receipt: Receipt) -> StreamExchange {
    StreamExchange {
        events,
        receipt,
        first_token: Duration::ZERO,
        elapsed: Duration::ZERO,
    }
}

/// The stream a miner would send for these chunks (one `data:` event each, then `[DONE]`).
pub fn stream_body(chunks: &[StreamChunk]) -> String {
    let mut out = String::new();
    for c in chunks {
        out.push_str("data: ");
        out.push_str(&serde_json::to_string(c).expect("chunks serialise"));
        out.push_str("\n\n");
    }
    out
}

/// See the module documentation. Returns the number of tokens when the stream is accepted.
pub fn llm_stream(data: &[u8]) -> Option<usize> {
    let chunk = 1 + usize::from(data.first().copied().unwrap_or(0) % 29);
    let mut parser = SseParser::new(MAX_SSE_EVENT_BYTES, 1 << 20);
    let mut events = Vec::new();
    let mut last = None;
    for piece in data.chunks(chunk) {
        let seen = events.len();
        if parser.feed(piece, &mut events).is_err() {
            return None;
        }
        last = events
            .iter()
            .skip(seen)
            .position(|e| matches!(e.event.as_deref(), Some(RECEIPT_EVENT | "error")))
            .map(|i| seen + i);
        if last.is_some() {
            break;
        }
    }
    if last.is_none() {
        let seen = events.len();
        if parser.finish(&mut events).is_err() {
            return None;
        }
        last = events
            .iter()
            .skip(seen)
            .position(|e| matches!(e.event.as_deref(), Some(RECEIPT_EVENT | "error")))
            .map(|i| seen + i);
    }
    // The validator stops at the receipt; without one the fuzzer still gets parse_stream
    // on every event (with a blank receipt), which is stricter than the client.
    let (end, receipt) = match last.map(|i| &events[i]) {
        Some(ev) => {
            let covered = &data[..ev.start];
            let receipt = serde_json::from_str::<Receipt>(&ev.data).ok();
            if let Some(r) = &receipt {
                let _ = r.verify(&miner_key().public(), &[0; 32], covered);
            }
            (ev.start, receipt)
        }
        None => (usize::MAX, None),
    };
    events.retain(|e| e.start < end);
    let n_events = events.len();
    let receipt = receipt.unwrap_or_else(blank_receipt);
    let (tokens, finish) = parse_stream(&exchange(events, receipt)).ok()?;
    assert_eq!(tokens.len(), n_events, "one token per covered event");
    // JSON cannot carry a non-finite float, so a logprob that overflowed f32 (e.g. 1e39)
    // has no canonical re-encoding; everything else must survive it.
    let finite = tokens
        .iter()
        .all(|t| t.logprob.is_finite() && t.top_logprobs.iter().all(|a| a.logprob.is_finite()));
    if !finite {
        return Some(tokens.len());
    }
    let last = tokens.len() - 1;
    let chunks: Vec<StreamChunk> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| StreamChunk {
            id: "fuzz".into(),
            object: "text_completion".into(),
            index: u32::try_from(i).expect("fewer than 2^32 tokens"),
            text: String::new(),
            token: t.clone(),
            finish_reason: (i == last).then(|| finish.clone()),
            usage: None,
        })
        .collect();
    let body = stream_body(&chunks);
    let again = parse_stream(&exchange(parse_sse(&body), blank_receipt()))
        .expect("the canonical form of an accepted stream is accepted");
    let count = tokens.len();
    assert_eq!(again, (tokens, finish), "stream round trip");
    Some(count)
}
