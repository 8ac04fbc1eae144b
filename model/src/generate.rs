//! Generation with a KV cache: prefill, then one token at a time, streamed through a callback.

use crate::error::{ModelError, Result};
use crate::model::{KvCache, Model};
use crate::sampling::{self, SamplingParams};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

pub use polylith_protocol::llm::{GeneratedToken, TopLogprob};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The completion text contains a stop string (the token completing it is the last one).
    Stop,
    /// `max_tokens` tokens were produced.
    Length,
    /// The last token is an end-of-sequence id.
    Eos,
}

impl FinishReason {
    /// The wire string: `stop`, `length` or `eos`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Eos => "eos",
        }
    }

    /// Parses the wire string.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(FinishReason::Stop),
            "length" => Some(FinishReason::Length),
            "eos" => Some(FinishReason::Eos),
            _ => None,
        }
    }
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Number of prompt tokens (BOS included).
    pub prompt_tokens: usize,
    /// Every generated token, including an EOS or the token that completed a stop string.
    pub tokens: Vec<GeneratedToken>,
    /// Decoded completion, cut before the first stop string (OpenAI semantics).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

impl Completion {
    /// The generated ids.
    pub fn ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }
}

/// What the streaming callback receives for each token.
#[derive(Debug)]
pub struct TokenEvent<'a> {
    /// 0-based index in the completion.
    pub index: u32,
    /// The token.
    pub token: &'a GeneratedToken,
    /// New text that is now final (may be empty while a multi-byte character or a possible stop
    /// string is incomplete; the last event flushes the rest, without the stop string).
    pub text_delta: &'a str,
    /// `Some` on the last token.
    pub finish_reason: Option<FinishReason>,
}

/// The earliest byte offset at which any stop string occurs in `text`.
pub fn find_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// One sequence being decoded: its KV cache lives inside.
pub trait Sequence: Send {
    /// Appends `tokens` (at least one) after the positions already fed and returns the
    /// vocabulary-sized logits after the last of them.
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
}

/// Turns tokens into next-token logits. The CPU [`Model`] and the CUDA engine both implement
/// it, so that one generation loop ([`generate_with`]: sampling, EOS, stop strings, streaming)
/// serves both and their outputs can be compared token by token.
pub trait Decoder: Send + Sync {
    /// A fresh sequence with an empty cache.
    fn new_sequence(&self) -> Result<Box<dyn Sequence + '_>>;
}

struct CpuSequence<'a> {
    model: &'a Model,
    cache: KvCache,
}

impl Sequence for CpuSequence<'_> {
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        last_row(&self.model.forward(tokens, &mut self.cache)?)
    }
}

impl Decoder for Model {
    fn new_sequence(&self) -> Result<Box<dyn Sequence + '_>> {
        Ok(Box::new(CpuSequence {
            model: self,
            cache: KvCache::default(),
        }))
    }
}

impl Model {
    /// Generates a completion of `prompt` (token ids, BOS included) on the CPU, calling
    /// `on_token` after each token; returning `ControlFlow::Break` from it cancels with
    /// [`ModelError::Cancelled`].
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
        on_token: impl FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Completion> {
        generate_with(self, self, prompt, params, on_token)
    }
}

/// Generates a completion of `prompt` with `decoder` computing the logits and `model`
/// supplying the tokenizer, EOS ids and position limit (the decoder must run `model`'s
/// weights). See [`Model::generate`].
pub fn generate_with(
    decoder: &dyn Decoder,
    model: &Model,
    prompt: &[u32],
    params: &SamplingParams,
    mut on_token: impl FnMut(TokenEvent<'_>) -> ControlFlow<()>,
) -> Result<Completion> {
    params.validate()?;
    if prompt.is_empty() {
        return Err(ModelError::InvalidInput("empty prompt".into()));
    }
    let max_pos = model.config().max_position_embeddings;
    if prompt.len() + params.max_tokens as usize > max_pos {
        return Err(ModelError::InvalidInput(format!(
            "prompt ({}) + max_tokens ({}) exceeds the model's {max_pos} positions",
            prompt.len(),
            params.max_tokens
        )));
    }
    let mut out = Completion {
        prompt_tokens: prompt.len(),
        tokens: Vec::new(),
        text: String::new(),
        finish_reason: FinishReason::Length,
    };
    if params.max_tokens == 0 {
        return Ok(out);
    }
    let k = usize::from(params.top_logprobs);
    let hold_back = params.stop.iter().map(|s| s.len()).max().unwrap_or(1) - 1;
    let mut seq = decoder.new_sequence()?;
    let mut logits = seq.feed(prompt)?;
    let mut ids = Vec::new();
    let mut emitted = 0usize;
    for step in 0..params.max_tokens {
        let id = sampling::pick(&logits, params, step);
        let lp = sampling::log_softmax(&logits);
        let token = GeneratedToken {
            id,
            logprob: lp[id as usize] as f32,
            top_logprobs: sampling::top_k(&lp, k)
                .into_iter()
                .map(|(id, l)| TopLogprob {
                    id,
                    logprob: l as f32,
                })
                .collect(),
        };
        ids.push(id);
        let text = model.tokenizer().decode(&ids)?;
        let finish = if model.eos_token_ids().contains(&id) {
            Some(FinishReason::Eos)
        } else if find_stop(&text, &params.stop).is_some() {
            Some(FinishReason::Stop)
        } else if step + 1 == params.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        let final_text = match finish {
            Some(_) => {
                let cut = find_stop(&text, &params.stop).unwrap_or(text.len());
                text[..cut].to_string()
            }
            None => text,
        };
        let end = stream_end(&final_text, emitted, hold_back, finish.is_some());
        let delta = final_text.get(emitted..end).unwrap_or("");
        let flow = on_token(TokenEvent {
            index: step,
            token: &token,
            text_delta: delta,
            finish_reason: finish,
        });
        emitted = end;
        out.tokens.push(token);
        if flow.is_break() {
            return Err(ModelError::Cancelled);
        }
        if let Some(f) = finish {
            out.finish_reason = f;
            out.text = final_text;
            return Ok(out);
        }
        logits = seq.feed(&[id])?;
    }
    // max_tokens >= 1 and the last step always sets a finish reason.
    Ok(out)
}

/// How far the streamed text may go after this token: everything once finished, otherwise
/// all but what a stop string or an incomplete UTF-8 sequence may still change. Never before
/// `emitted` (streamed bytes cannot be taken back) and always a char boundary of `text`, or
/// `emitted` itself when a re-decode moved a boundary under it.
fn stream_end(text: &str, emitted: usize, hold_back: usize, finished: bool) -> usize {
    let mut e = if finished {
        text.len()
    } else {
        text.len().saturating_sub(hold_back)
    };
    // Down to a boundary before slicing: `e` may land inside a character below `emitted`,
    // which panicked when the text was sliced there (seen on honest miners).
    while !text.is_char_boundary(e) {
        e -= 1;
    }
    if !finished {
        // An incomplete UTF-8 sequence decodes to U+FFFD and may still change.
        while text[..e].ends_with('\u{FFFD}') {
            e -= '\u{FFFD}'.len_utf8();
        }
    }
    e.max(emitted.min(text.len()))
}

fn last_row(logits: &candle_core::Tensor) -> Result<Vec<f32>> {
    let n = logits.dim(0)?;
    Ok(logits.get(n - 1)?.to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::stream_end;

    #[test]
    fn hold_back_inside_a_character_below_emitted_does_not_panic() {
        // "aé" is 3 bytes; holding one back lands inside 'é', below what was streamed.
        assert_eq!(stream_end("aé", 3, 1, false), 3);
        assert_eq!(stream_end("aé", 1, 1, false), 1);
        assert_eq!(stream_end("aé", 0, 0, false), 3);
    }

    #[test]
    fn incomplete_utf8_is_held_back_until_it_completes() {
        let partial = String::from_utf8_lossy(&[b'a', 0xC3]).into_owned();
        assert_eq!(stream_end(&partial, 0, 0, false), 1);
        assert_eq!(stream_end(&partial, 0, 0, true), partial.len());
    }

    /// Byte-level decoding of growing random byte strings (the builtin model's vocabulary):
    /// the end is never before what was streamed, never past the text, and a boundary.
    #[test]
    fn every_prefix_of_random_bytes_gives_a_valid_end() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..500 {
            let mut bytes = Vec::new();
            let mut emitted = 0;
            let hold_back = (state % 4) as usize;
            for _ in 0..24 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Mostly multi-byte lead and continuation bytes, where boundaries move.
                bytes.push(match state % 4 {
                    0 => b'a' + (state >> 8) as u8 % 26,
                    1 => 0xC3,
                    2 => 0xE2,
                    _ => 0x80 | ((state >> 16) as u8 & 0x3F),
                });
                let text = String::from_utf8_lossy(&bytes);
                let end = stream_end(&text, emitted, hold_back, false);
                assert!(end >= emitted.min(text.len()) && end <= text.len().max(emitted));
                assert!(
                    end == emitted || text.is_char_boundary(end),
                    "{text:?} {end}"
                );
                emitted = end;
            }
        }
    }
}
