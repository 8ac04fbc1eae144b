//! Wire types of the LLM task: the OpenAI-compatible `POST /v1/completions` and
//! `POST /v1/chat/completions` bodies, their responses and stream events, and the
//! server-sent-events framing a validator parses. Normative text: docs/protocol.md, "LLM task".
//!
//! Streams are `text/event-stream`: one `data: {StreamChunk}` event per token, then
//! `event: receipt` whose data is the signed [`crate::signing::Receipt`], then `data: [DONE]`.
//! The receipt's `response_hash` is blake3 of every byte sent before the receipt event.

use serde::{Deserialize, Serialize};

/// Path of the text-completion endpoint.
pub const COMPLETIONS_PATH: &str = "/v1/completions";
/// Path of the chat-completion endpoint.
pub const CHAT_PATH: &str = "/v1/chat/completions";
/// Most alternatives per token a request may ask for.
pub const MAX_TOP_LOGPROBS: u8 = 20;
/// The `event:` name of the stream's receipt event.
pub const RECEIPT_EVENT: &str = "receipt";
/// The data of the stream's last event.
pub const STREAM_DONE: &str = "[DONE]";

/// One alternative token and its log-probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// Token id.
    pub id: u32,
    /// log-softmax of the unmodified (temperature 1) logits.
    pub logprob: f32,
}

/// A generated token as a miner reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedToken {
    /// Token id.
    pub id: u32,
    /// Its log-probability under the unmodified logits (temperature 1, no top-p), so that the
    /// value does not depend on the sampling parameters.
    pub logprob: f32,
    /// The `top_logprobs` highest alternatives, sorted by (logprob desc, id asc).
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// `stop`: one string or a list, as in the OpenAI API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// Sampling fields shared by both endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Model name or hash; absent means the served model.
    #[serde(default)]
    pub model: Option<String>,
    /// Most completion tokens (default 16).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// 0 = greedy (default 1, as in the OpenAI API).
    #[serde(default = "one")]
    pub temperature: f32,
    /// Nucleus mass (default 1).
    #[serde(default = "one")]
    pub top_p: f32,
    /// Seed of the sampling draws (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Stream tokens as server-sent events.
    #[serde(default)]
    pub stream: bool,
}

fn default_max_tokens() -> u32 {
    16
}
fn one() -> f32 {
    1.0
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// Prompt text (BOS is added by the miner).
    pub prompt: String,
    /// Alternatives per token, 0..=20 (OpenAI's integer `logprobs`).
    #[serde(default)]
    pub logprobs: Option<u8>,
    /// Sampling fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Whether to return logprobs.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per token when `logprobs` is set, 0..=20.
    #[serde(default)]
    pub top_logprobs: Option<u8>,
    /// Sampling fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// The prompt text of a chat: one `role: content` line per message, then `assistant: `.
pub fn chat_prompt(messages: &[ChatMessage]) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str(&m.role);
        s.push_str(": ");
        s.push_str(&m.content);
        s.push('\n');
    }
    s.push_str("assistant: ");
    s
}

/// Token usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (BOS included).
    pub prompt_tokens: usize,
    /// Completion tokens.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

/// What a validator needs to verify a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolylithExtra {
    /// Prompt ids (BOS included).
    pub prompt_token_ids: Vec<u32>,
    /// Completion tokens with logprobs and alternatives.
    pub tokens: Vec<GeneratedToken>,
    /// `stop`, `length` or `eos`.
    pub finish_reason: String,
    /// Hash of the model the miner says it ran, hex.
    pub model_hash: String,
}

/// One choice of a non-streamed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// Completion text (`/v1/completions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Assistant message (`/v1/chat/completions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<ChatMessage>,
    /// Per-token logprobs when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<GeneratedToken>>,
    /// `stop`, `length` or `eos`.
    pub finish_reason: String,
}

/// A non-streamed response of either endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    /// Random id.
    pub id: String,
    /// `text_completion` or `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model name.
    pub model: String,
    /// One choice.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
    /// Verification data.
    pub polylith: PolylithExtra,
}

/// One streamed token event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamChunk {
    /// Same id for every chunk of a response.
    pub id: String,
    /// `text_completion` or `chat.completion.chunk`.
    pub object: String,
    /// 0-based token index.
    pub index: u32,
    /// Newly final text.
    pub text: String,
    /// The token (with logprob and alternatives).
    pub token: GeneratedToken,
    /// Set on the last token.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Set on the last token.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One server-sent event of a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`None` for plain `data:` events).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// Byte offset in the body where the event starts (the receipt covers the bytes before it).
    pub start: usize,
}

/// Largest single event a validator accepts (a token chunk with 20 alternatives is about
/// 1.5 KiB; the receipt about 0.6 KiB), bytes including its field names and line ends.
pub const MAX_SSE_EVENT_BYTES: usize = 64 << 10;

/// Why an incremental SSE parse stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event (or one line) grew past the event limit before its blank line.
    #[error("an event exceeds {limit} bytes")]
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The stream grew past the total limit.
    #[error("the stream exceeds {limit} bytes")]
    StreamTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A line is not UTF-8.
    #[error("line at byte {offset} is not UTF-8")]
    NotUtf8 {
        /// Byte offset of the line in the stream.
        offset: usize,
    },
}

/// An incremental `text/event-stream` parser: feed it chunks as they arrive and it returns
/// the events they complete. Every byte is examined once (no rescans of earlier chunks), and
/// both one event and the whole stream are bounded, so a hostile sender can neither make the
/// reader quadratic nor grow its memory without limit.
#[derive(Debug)]
pub struct SseParser {
    max_event: usize,
    max_total: usize,
    /// Bytes fed so far (the offset of the next byte).
    total: usize,
    /// The unfinished line (no `\n` yet).
    line: Vec<u8>,
    /// Where `line` starts in the stream.
    line_start: usize,
    /// The event under construction.
    current: Option<SseEvent>,
    /// Bytes of the event under construction so far (its lines, including skipped ones).
    current_bytes: usize,
    /// Bytes examined while looking for line ends (a work counter for tests and metrics).
    scanned: usize,
}

impl SseParser {
    /// A parser refusing events over `max_event` bytes and streams over `max_total` bytes.
    pub fn new(max_event: usize, max_total: usize) -> Self {
        Self {
            max_event,
            max_total,
            total: 0,
            line: Vec::new(),
            line_start: 0,
            current: None,
            current_bytes: 0,
            scanned: 0,
        }
    }

    /// Bytes fed so far.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes examined so far while searching for line ends: equal to [`Self::total`] for a
    /// linear parser, whatever the chunking.
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    /// Parses `chunk`, appending the events it completes to `out`. After an error the parser
    /// must not be fed again.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.total.saturating_add(chunk.len()) > self.max_total {
            return Err(SseError::StreamTooLarge {
                limit: self.max_total,
            });
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            let nl = rest.iter().position(|b| *b == b'\n');
            self.scanned = self
                .scanned
                .saturating_add(nl.map_or(rest.len(), |i| i + 1));
            let (piece, done) = match nl {
                Some(i) => rest.split_at(i + 1),
                None => (rest, &[][..]),
            };
            rest = done;
            if self
                .current_bytes
                .saturating_add(self.line.len())
                .saturating_add(piece.len())
                > self.max_event
            {
                return Err(SseError::EventTooLarge {
                    limit: self.max_event,
                });
            }
            self.line.extend_from_slice(piece);
            self.total = self.total.saturating_add(piece.len());
            if nl.is_some() {
                let line = std::mem::take(&mut self.line);
                let start = self.line_start;
                self.line_start = self.total;
                self.line_done(&line, start, out)?;
            }
        }
        Ok(())
    }

    /// Ends the stream: a trailing event without its blank line is returned too, so a
    /// truncated stream is visible to the caller. Feeding more afterwards starts a new line.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let start = self.line_start;
            self.line_start = self.total;
            self.line_done(&line, start, out)?;
        }
        self.current_bytes = 0;
        if let Some(ev) = self.current.take() {
            out.push(ev);
        }
        Ok(())
    }

    fn line_done(
        &mut self,
        raw: &[u8],
        start: usize,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), SseError> {
        let text = std::str::from_utf8(raw).map_err(|_| SseError::NotUtf8 { offset: start })?;
        let line = text.trim_end_matches('\n').trim_end_matches('\r');
        if line.is_empty() {
            self.current_bytes = 0;
            if let Some(ev) = self.current.take() {
                out.push(ev);
            }
            return Ok(());
        }
        // Comment and unknown lines still count toward the event's size, so a stream of
        // them without a blank line is bounded like any other event.
        self.current_bytes = self.current_bytes.saturating_add(raw.len());
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        let ev = self.current.get_or_insert_with(|| SseEvent {
            event: None,
            data: String::new(),
            start,
        });
        match field {
            "event" => ev.event = Some(value.to_string()),
            "data" => {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Splits a complete `text/event-stream` body into events (blank-line separated; `\r\n`
/// accepted; comment lines and unknown fields ignored). A trailing event without its blank
/// line is returned too, so a truncated stream is visible to the caller. No size limits:
/// for bodies already bounded by the caller; readers of live streams use [`SseParser`].
pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    let mut parser = SseParser::new(usize::MAX, usize::MAX);
    let mut events = Vec::new();
    // Without limits and on `&str` input neither step can fail.
    let _ = parser.feed(body.as_bytes(), &mut events);
    let _ = parser.finish(&mut events);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_with_offsets_and_multiline_data() {
        let body = "data: {\"a\":1}\n\n: comment\ndata: x\ndata: y\n\nevent: receipt\r\ndata: r\r\n\r\ndata: [DONE]\n\n";
        let ev = parse_sse(body);
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[0].start, 0);
        assert_eq!(ev[1].data, "x\ny");
        assert_eq!(ev[2].event.as_deref(), Some(RECEIPT_EVENT));
        assert_eq!(ev[2].data, "r");
        assert!(body[ev[2].start..].starts_with("event: receipt"));
        assert_eq!(ev[3].data, STREAM_DONE);
    }

    #[test]
    fn truncated_stream_keeps_its_last_partial_event() {
        let ev = parse_sse("data: a\n\ndata: b");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].data, "b");
    }

    fn feed_in_chunks(body: &[u8], size: usize, parser: &mut SseParser) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for chunk in body.chunks(size) {
            parser.feed(chunk, &mut events).unwrap();
        }
        parser.finish(&mut events).unwrap();
        events
    }

    #[test]
    fn incremental_parsing_matches_whole_body_parsing_for_any_chunking() {
        let body = "data: {\"a\":1}\n\n: comment\ndata: x\ndata: y\n\nevent: receipt\r\ndata: r\r\n\r\ndata: é\n\ndata: tail";
        let whole = parse_sse(body);
        assert_eq!(whole.len(), 5);
        for size in [1, 2, 3, 7, 64, body.len()] {
            let mut p = SseParser::new(MAX_SSE_EVENT_BYTES, 1 << 20);
            assert_eq!(
                feed_in_chunks(body.as_bytes(), size, &mut p),
                whole,
                "{size}"
            );
        }
    }

    /// The work per byte is flat: every byte is examined once whatever the chunking, so 4 MB
    /// costs exactly four times 1 MB (a reader that rescans its buffer per chunk does
    /// quadratic work here).
    #[test]
    fn parsing_work_is_linear_in_the_stream_length() {
        let event = ": keep-alive\ndata: {\"index\":0}\n\n";
        let work = |bytes: usize| {
            let body = event.repeat(bytes / event.len());
            let mut p = SseParser::new(MAX_SSE_EVENT_BYTES, usize::MAX);
            let events = feed_in_chunks(body.as_bytes(), 100, &mut p);
            assert_eq!(events.len(), bytes / event.len());
            assert_eq!(p.total(), body.len());
            (p.scanned(), body.len())
        };
        let (small, small_len) = work(1 << 20);
        let (large, large_len) = work(4 << 20);
        assert_eq!(small, small_len, "bytes examined per byte fed");
        assert_eq!(large, large_len, "bytes examined per byte fed");
        let ratio = large as f64 / small as f64;
        assert!((3.9..4.1).contains(&ratio), "4x the bytes cost {ratio}x");
    }

    #[test]
    fn an_event_without_its_blank_line_stops_at_the_event_limit() {
        let mut p = SseParser::new(1024, usize::MAX);
        let mut events = Vec::new();
        let mut fed = 0usize;
        // Comment lines without a blank line: no event ever completes.
        let err = loop {
            match p.feed(b": x\n", &mut events) {
                Ok(()) => fed += 4,
                Err(e) => break e,
            }
            assert!(fed <= 2048, "no error after {fed} bytes");
        };
        assert_eq!(err, SseError::EventTooLarge { limit: 1024 });
        assert!(p.scanned() <= 1024 + 4);
        // One endless line is refused the same way.
        let mut p = SseParser::new(1024, usize::MAX);
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = p.feed(&[b'a'; 100], &mut events) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(SseError::EventTooLarge { limit: 1024 }));
        assert!(events.is_empty());
    }

    #[test]
    fn the_stream_limit_and_invalid_utf8_are_errors() {
        let mut p = SseParser::new(1024, 30);
        let mut events = Vec::new();
        p.feed(b"data: a\n\ndata: b\n\n", &mut events).unwrap();
        assert_eq!(
            p.feed(b"data: c\n\ndata: d\n\n", &mut events),
            Err(SseError::StreamTooLarge { limit: 30 })
        );
        assert_eq!(events.len(), 2);
        let mut p = SseParser::new(1024, 1024);
        assert_eq!(
            p.feed(b"data: a\n\ndata: \xff\n\n", &mut events),
            Err(SseError::NotUtf8 { offset: 9 })
        );
    }

    #[test]
    fn requests_take_openai_defaults_and_reject_unknown_shapes() {
        let r: CompletionRequest = serde_json::from_str(r#"{"prompt":"hi"}"#).unwrap();
        assert_eq!(r.sampling.max_tokens, 16);
        assert_eq!(r.sampling.temperature, 1.0);
        assert!(!r.sampling.stream);
        let r: CompletionRequest =
            serde_json::from_str(r#"{"prompt":"hi","stop":["a","b"],"logprobs":5}"#).unwrap();
        assert_eq!(
            r.sampling.stop.map(Stop::into_vec),
            Some(vec!["a".into(), "b".into()])
        );
        assert!(serde_json::from_str::<CompletionRequest>(r#"{"prompt":3}"#).is_err());
        assert!(serde_json::from_str::<ChatRequest>(r#"{"messages":"x"}"#).is_err());
    }

    #[test]
    fn chat_prompt_lists_roles_then_opens_the_assistant_turn() {
        let p = chat_prompt(&[
            ChatMessage {
                role: "system".into(),
                content: "be brief".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "hi".into(),
            },
        ]);
        assert_eq!(p, "system: be brief\nuser: hi\nassistant: ");
    }
}
