//! Fuzz harness for the validator's LLM stream parser (`polylith_validator::task::llm::
//! parse_stream`), shared by the `llm_stream` cargo-fuzz target and the stable replay test
//! `validator/tests/fuzz_llm_stream.rs`.
//!
//! The input is a whole `text/event-stream` body. It goes the way the validator's stream
//! reader takes it: split into events, the `event: receipt` found and parsed and its
//! signature checked (errors only), the events before it re-parsed as the covered part, and
//! those given to `parse_stream`. Nothing may panic; an accepted stream has one token per
//! event and its canonical re-encoding is accepted with the same tokens and finish reason.
#![allow(dead_code)]

use polylith_protocol::keys::Hotkey;
use polylith_protocol::llm::{RECEIPT_EVENT, SseEvent, StreamChunk, parse_sse};
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
        first_event: Duration::ZERO,
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

/// See the module documentation.
pub fn llm_stream(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let events = parse_sse(&text);
    let (covered, receipt) = match events
        .iter()
        .find(|e| e.event.as_deref() == Some(RECEIPT_EVENT))
    {
        Some(ev) => {
            let covered = &text[..ev.start];
            let receipt = serde_json::from_str::<Receipt>(&ev.data).ok();
            if let Some(r) = &receipt {
                let key = miner_key().public();
                let _ = r.verify(&key, &[0; 32], covered.as_bytes());
            }
            (covered, receipt)
        }
        None => (&text[..], None),
    };
    let covered_events = parse_sse(covered);
    let n_events = covered_events.len();
    let receipt = receipt.unwrap_or_else(blank_receipt);
    let Ok((tokens, finish)) = parse_stream(&exchange(covered_events, receipt)) else {
        return;
    };
    assert_eq!(tokens.len(), n_events, "one token per covered event");
    // JSON cannot carry a non-finite float, so a logprob that overflowed f32 (e.g. 1e39)
    // has no canonical re-encoding; everything else must survive it.
    let finite = tokens
        .iter()
        .all(|t| t.logprob.is_finite() && t.top_logprobs.iter().all(|a| a.logprob.is_finite()));
    if !finite {
        return;
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
    assert_eq!(again, (tokens, finish), "stream round trip");
}
