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

/// Splits a complete `text/event-stream` body into events (blank-line separated; `\r\n`
/// accepted; comment lines and unknown fields ignored). A trailing event without its blank
/// line is returned too, so a truncated stream is visible to the caller.
pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    let mut current: Option<SseEvent> = None;
    let mut offset = 0usize;
    for raw in body.split_inclusive('\n') {
        let line_start = offset;
        offset = offset.saturating_add(raw.len());
        let line = raw.trim_end_matches('\n').trim_end_matches('\r');
        if line.is_empty() {
            if let Some(ev) = current.take() {
                events.push(ev);
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        let ev = current.get_or_insert_with(|| SseEvent {
            event: None,
            data: String::new(),
            start: line_start,
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
    }
    if let Some(ev) = current {
        events.push(ev);
    }
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
