//! The LLM inference task: a fresh seeded prompt with greedy or seeded-sampling settings,
//! streamed back token by token, then verified in full by one teacher-forced forward pass of
//! the validator's own reference model (`polylith_model::verify`).
//!
//! Only verified completions are timed into a score: time to first token and tokens per
//! second over the whole exchange, each relative to the round's median with a bounded bonus
//! (`polylith_scoring::speed::llm_speed`). Rates are measured by the validator's clock from
//! the stream it received; a miner that buffers its answer gains nothing, because the rate
//! counts from the request, not from the first token.

use super::{
    Failure, FailureReason, MinerTarget, QueryContext, QueryOutcome, Task, new_outcome, settle,
};
use crate::client::StreamExchange;
use futures::FutureExt;
use futures::future::BoxFuture;
use polylith_model::verify::{self, Claim, FailReason, Tolerances};
use polylith_model::{GeneratedToken, Model, ModelId, SamplingParams};
use polylith_protocol::llm::{
    CHAT_PATH, COMPLETIONS_PATH, ChatMessage, ChatRequest, CompletionRequest, MAX_TOP_LOGPROBS,
    STREAM_DONE, Sampling, Stop, StreamChunk, chat_prompt,
};
use polylith_protocol::task::TaskKind;
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Stop strings a challenge may carry (one of them, a quarter of the time), so that miners
/// must honour `stop`.
const STOP_CHOICES: &[&str] = &["\n", ".", " the", "e"];

/// Sampling settings a challenge draws from: greedy and two seeded-sampling regimes.
const MODES: &[(f32, f32)] = &[(0.0, 1.0), (0.7, 0.9), (1.0, 1.0)];

/// LLM task settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmSettings {
    /// Completion tokens asked for per query.
    pub max_tokens: u32,
    /// Share of the score given to time to first token (the rest goes to tokens/s).
    pub ttft_weight: f64,
    /// How many times the round's median speed earns the full score (the bonus bound).
    pub speed_cap: f64,
    /// Verification tolerances (calibrated defaults in docs/protocol.md).
    pub tolerances: Tolerances,
}

/// Domain separation of the prompt PRF's input.
const PROMPT_DOMAIN: &[u8] = b"polylith llm challenge prompt v1";

/// The LLM inference task.
pub struct LlmTask {
    model: Arc<Model>,
    hash: ModelId,
    settings: LlmSettings,
    /// Secret key of the prompt PRF; never leaves the process.
    prompt_key: [u8; 32],
    next_prompt: AtomicU64,
}

/// The request of a challenge: either endpoint, so that both are verified.
#[derive(Debug, Clone)]
pub enum ChallengeRequest {
    /// `POST /v1/completions`.
    Completion(CompletionRequest),
    /// `POST /v1/chat/completions`.
    Chat(ChatRequest),
}

/// One challenge: the request body, the prompt text the model sees, and the sampling rule the
/// completion is verified against.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// What is sent.
    pub request: ChallengeRequest,
    /// The text the miner must prompt the model with (the chat template applied for chats).
    pub prompt: String,
    /// The rule the completion is verified against.
    pub params: SamplingParams,
}

impl Challenge {
    /// The endpoint's path.
    pub fn path(&self) -> &'static str {
        match self.request {
            ChallengeRequest::Completion(_) => COMPLETIONS_PATH,
            ChallengeRequest::Chat(_) => CHAT_PATH,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Result<Vec<u8>> {
        match &self.request {
            ChallengeRequest::Completion(r) => serde_json::to_vec(r),
            ChallengeRequest::Chat(r) => serde_json::to_vec(r),
        }
    }
}

impl LlmTask {
    /// A task verifying against `model`; prompts come from a keyed PRF whose 32-byte key is
    /// drawn from the OS-seeded CSPRNG at start and never revealed, so two validators (or two
    /// runs) never send the same prompts and no miner can predict its next one.
    pub fn new(model: Arc<Model>, settings: LlmSettings) -> Self {
        Self::with_prompt_key(model, settings, rand::rng().random())
    }

    /// [`LlmTask::new`] with a given prompt key (tests, reproducible runs).
    pub fn with_prompt_key(model: Arc<Model>, settings: LlmSettings, key: [u8; 32]) -> Self {
        let hash = model.hash();
        Self {
            model,
            hash,
            settings,
            prompt_key: key,
            next_prompt: AtomicU64::new(0),
        }
    }

    /// Prompt text number `index` of this task: `prompts::generate` of a 64-bit seed that is
    /// keyed BLAKE3 of (domain, index). The text is a function of that PRF output alone, so
    /// every earlier prompt reveals nothing about the key, the counter or the next prompt.
    fn prompt_text(&self, index: u64) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.prompt_key);
        h.update(PROMPT_DOMAIN);
        h.update(&index.to_le_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&h.finalize().as_bytes()[..8]);
        // Index 0 of a fresh stream: the public index part of the text carries no counter.
        polylith_model::prompts::generate(u64::from_le_bytes(seed), 0)
    }

    /// The reference model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// A fresh challenge: the next prompt of this task's keyed stream, a random sampling mode and
    /// seed, 20 alternatives per token, sometimes a stop string, and a third of the time as
    /// a chat (one user message) instead of a plain completion.
    pub fn draw_challenge(&self) -> Challenge {
        let index = self.next_prompt.fetch_add(1, Ordering::Relaxed);
        let prompt = self.prompt_text(index);
        let mut rng = rand::rng();
        let (temperature, top_p) = MODES
            .get(rng.random_range(0..MODES.len()))
            .copied()
            .unwrap_or((0.0, 1.0));
        let seed: u64 = rng.random();
        let stop: Vec<String> = if rng.random_ratio(1, 4) {
            STOP_CHOICES
                .get(rng.random_range(0..STOP_CHOICES.len()))
                .map(|s| vec![s.to_string()])
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let params = SamplingParams {
            max_tokens: self.settings.max_tokens,
            temperature,
            top_p,
            seed,
            stop: stop.clone(),
            top_logprobs: MAX_TOP_LOGPROBS,
        };
        let sampling = Sampling {
            model: Some(self.hash.to_string()),
            max_tokens: self.settings.max_tokens,
            temperature,
            top_p,
            seed,
            stop: (!stop.is_empty()).then_some(Stop::Many(stop)),
            stream: true,
        };
        if rng.random_ratio(1, 3) {
            let messages = vec![ChatMessage {
                role: "user".to_string(),
                content: prompt,
            }];
            Challenge {
                prompt: chat_prompt(&messages),
                request: ChallengeRequest::Chat(ChatRequest {
                    messages,
                    logprobs: true,
                    top_logprobs: Some(MAX_TOP_LOGPROBS),
                    sampling,
                }),
                params,
            }
        } else {
            Challenge {
                prompt: prompt.clone(),
                request: ChallengeRequest::Completion(CompletionRequest {
                    prompt,
                    logprobs: Some(MAX_TOP_LOGPROBS),
                    sampling,
                }),
                params,
            }
        }
    }

    async fn run_inner(
        &self,
        ctx: &QueryContext<'_>,
        miner: &MinerTarget,
        out: &mut QueryOutcome,
    ) -> Result<(), Failure> {
        let challenge = self.draw_challenge();
        out.work = f64::from(self.settings.max_tokens);
        tracing::debug!(
            temperature = challenge.params.temperature,
            top_p = challenge.params.top_p,
            stop = ?challenge.params.stop,
            path = challenge.path(),
            "llm challenge"
        );
        let body = challenge
            .body()
            .map_err(|e| Failure::new(FailureReason::Internal, e.to_string()))?;
        let exchange = ctx
            .client
            .post_signed_stream(&miner.endpoint, &miner.hotkey, challenge.path(), body)
            .await?;
        let (tokens, finish_reason) = parse_stream(&exchange)?;
        let n = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        out.tokens_checked = n;
        if exchange.receipt.tokens != u64::from(n) {
            return Err(Failure::new(
                FailureReason::BadReceipt,
                format!(
                    "receipt counts {} tokens, the stream has {n}",
                    exchange.receipt.tokens
                ),
            ));
        }
        let declared: ModelId = exchange.receipt.model_hash.parse().map_err(|_| {
            Failure::new(
                FailureReason::BadReceipt,
                format!(
                    "receipt model hash {:?} is not a model id",
                    exchange.receipt.model_hash
                ),
            )
        })?;
        let ttft = exchange.first_token.as_secs_f64();
        let total = exchange.elapsed.as_secs_f64();
        out.latency_s = Some(ttft);

        // One forward pass of prompt + completion: CPU work, off the async workers.
        let model = self.model.clone();
        let tol = self.settings.tolerances;
        let prompt_text = challenge.prompt.clone();
        let params = challenge.params.clone();
        let report = tokio::task::spawn_blocking(move || {
            let prompt = model.encode_prompt(&prompt_text)?;
            let claim = Claim {
                prompt_tokens: &prompt,
                tokens: &tokens,
                finish_reason: &finish_reason,
                model_hash: Some(declared),
            };
            verify::verify(&model, &claim, &params, &tol)
        })
        .await
        .map_err(|e| Failure::new(FailureReason::Internal, format!("verification task: {e}")))?
        .map_err(|e| Failure::new(FailureReason::Internal, format!("reference model: {e}")))?;

        if !report.passed {
            out.tokens_passed = report.first_failure.unwrap_or(0).min(n);
            let reason = report
                .reason
                .map_or(FailureReason::Malformed, failure_reason);
            return Err(Failure::new(reason, report.detail));
        }
        out.tokens_passed = n;
        if n == 0 || total <= 0.0 {
            return Err(Failure::new(
                FailureReason::Malformed,
                "an empty completion cannot be timed",
            ));
        }
        out.throughput = Some(f64::from(n) / total);
        Ok(())
    }
}

/// The verifier's reason as the validator's (metrics label) reason.
pub fn failure_reason(r: FailReason) -> FailureReason {
    match r {
        FailReason::Malformed => FailureReason::Malformed,
        FailReason::WrongModel => FailureReason::WrongModel,
        FailReason::TooManyTokens => FailureReason::TooManyTokens,
        FailReason::WrongToken => FailureReason::WrongToken,
        FailReason::LogprobMismatch => FailureReason::LogprobMismatch,
        FailReason::PastEos => FailureReason::PastEos,
        FailReason::EarlyStop => FailureReason::EarlyStop,
        FailReason::StopIgnored => FailureReason::StopIgnored,
    }
}

/// The completion tokens and the finish reason of a verified-receipt stream: consecutive
/// chunk indices from 0, a finish reason on the last chunk only, then `[DONE]` (which the
/// receipt does not cover, so it is not required here).
pub fn parse_stream(exchange: &StreamExchange) -> Result<(Vec<GeneratedToken>, String), Failure> {
    let malformed = |m: String| Failure::new(FailureReason::Malformed, m);
    let mut tokens = Vec::new();
    let mut finish: Option<String> = None;
    for ev in &exchange.events {
        if ev.event.is_some() {
            return Err(malformed(format!(
                "unexpected {:?} event before the receipt",
                ev.event
            )));
        }
        if ev.data == STREAM_DONE {
            return Err(malformed("[DONE] before the receipt".to_string()));
        }
        if finish.is_some() {
            return Err(malformed(
                "a token follows the chunk that carried finish_reason".to_string(),
            ));
        }
        let chunk: StreamChunk = serde_json::from_str(&ev.data)
            .map_err(|e| malformed(format!("stream chunk {}: {e}", tokens.len())))?;
        if chunk.index as usize != tokens.len() {
            return Err(malformed(format!(
                "chunk index {} where {} was expected",
                chunk.index,
                tokens.len()
            )));
        }
        finish = chunk.finish_reason;
        tokens.push(chunk.token);
    }
    match finish {
        Some(f) => Ok((tokens, f)),
        None if tokens.is_empty() => Err(malformed("the stream has no tokens".to_string())),
        None => Err(malformed(
            "the last chunk carries no finish_reason".to_string(),
        )),
    }
}

impl Task for LlmTask {
    fn kind(&self) -> TaskKind {
        TaskKind::Llm
    }

    fn query<'a>(
        &'a self,
        ctx: &'a QueryContext<'a>,
        miner: &'a MinerTarget,
    ) -> BoxFuture<'a, QueryOutcome> {
        async move {
            let mut out = new_outcome(TaskKind::Llm, miner);
            let result = self.run_inner(ctx, miner, &mut out).await;
            settle(out, result)
        }
        .boxed()
    }

    /// Median-relative time to first token and tokens/s with a bounded bonus.
    fn score(&self, outcomes: &[QueryOutcome]) -> Vec<f64> {
        let ttft: Vec<Option<f64>> = outcomes
            .iter()
            .map(|o| if o.verified() { o.latency_s } else { None })
            .collect();
        let rate: Vec<Option<f64>> = outcomes
            .iter()
            .map(|o| if o.verified() { o.throughput } else { None })
            .collect();
        polylith_scoring::speed::llm_speed(
            &ttft,
            &rate,
            self.settings.ttft_weight,
            self.settings.speed_cap,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polylith_protocol::llm::{SseEvent, parse_sse};
    use polylith_protocol::signing::Receipt;
    use std::time::Duration;

    fn task() -> LlmTask {
        LlmTask::new(
            Arc::new(Model::builtin().unwrap()),
            LlmSettings {
                max_tokens: 8,
                ttft_weight: 0.3,
                speed_cap: 2.0,
                tolerances: Tolerances::default(),
            },
        )
    }

    fn exchange(events: Vec<SseEvent>) -> StreamExchange {
        StreamExchange {
            events,
            receipt: Receipt {
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
            },
            first_token: Duration::ZERO,
            elapsed: Duration::ZERO,
        }
    }

    fn chunk(index: u32, finish: Option<&str>) -> String {
        let c = StreamChunk {
            id: "x".into(),
            object: "text_completion".into(),
            index,
            text: "a".into(),
            token: GeneratedToken {
                id: 97,
                logprob: -1.0,
                top_logprobs: vec![],
            },
            finish_reason: finish.map(str::to_string),
            usage: None,
        };
        format!("data: {}\n\n", serde_json::to_string(&c).unwrap())
    }

    #[test]
    fn challenges_never_repeat_a_prompt_and_ask_for_20_alternatives() {
        let t = task();
        let cs: Vec<Challenge> = (0..300).map(|_| t.draw_challenge()).collect();
        let prompts: std::collections::HashSet<&str> =
            cs.iter().map(|c| c.prompt.as_str()).collect();
        assert_eq!(prompts.len(), 300);
        let hash = t.hash.to_string();
        for c in &cs {
            assert_eq!(c.params.top_logprobs, 20);
            let sampling = match &c.request {
                ChallengeRequest::Completion(r) => {
                    assert_eq!(r.logprobs, Some(20));
                    assert_eq!(r.prompt, c.prompt);
                    &r.sampling
                }
                ChallengeRequest::Chat(r) => {
                    assert!(r.logprobs && r.top_logprobs == Some(20));
                    assert_eq!(chat_prompt(&r.messages), c.prompt);
                    &r.sampling
                }
            };
            assert!(sampling.stream);
            assert_eq!(sampling.model.as_deref(), Some(hash.as_str()));
            assert_eq!(sampling.max_tokens, c.params.max_tokens);
        }
        assert!(cs.iter().any(|c| c.path() == CHAT_PATH));
        assert!(cs.iter().any(|c| c.path() == COMPLETIONS_PATH));
        assert!(cs.iter().any(|c| c.params.temperature == 0.0));
        assert!(cs.iter().any(|c| c.params.temperature > 0.0));
        assert!(cs.iter().any(|c| !c.params.stop.is_empty()));
        // Two tasks (two validators) draw different prompt streams.
        assert_ne!(task().draw_challenge().prompt, cs[0].prompt);
    }

    /// The prompt text of a challenge as the miner sees it (the user message of a chat).
    fn sent_text(c: &Challenge) -> String {
        match &c.request {
            ChallengeRequest::Completion(r) => r.prompt.clone(),
            ChallengeRequest::Chat(r) => r.messages[0].content.clone(),
        }
    }

    /// Inverse of `rng::mix64` (each xorshift and odd multiply is invertible).
    fn unmix64(mut z: u64) -> u64 {
        let inv = |a: u64| {
            (0..6).fold(a, |x, _| {
                x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)))
            })
        };
        z ^= (z >> 31) ^ (z >> 62);
        z = z.wrapping_mul(inv(0x94D0_49BB_1331_11EB));
        z ^= (z >> 27) ^ (z >> 54);
        z = z.wrapping_mul(inv(0xBF58_476D_1CE4_E5B9));
        z ^ (z >> 30) ^ (z >> 60)
    }

    /// A miner's predictor: reads (seed, index) back from the prompt's reference code and
    /// returns the prompts the same stream would send `1..=64` steps later.
    fn predict(text: &str) -> Vec<String> {
        let code = text
            .rsplit("(ref ")
            .next()
            .unwrap_or("")
            .trim_end_matches(')');
        let mut parts = code
            .split('-')
            .map(|p| u64::from_str_radix(p, 36).unwrap_or(0));
        let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let seed = unmix64(a);
        let index = unmix64(b) ^ a;
        (1..=64)
            .map(|k| polylith_model::prompts::generate(seed, index + k))
            .collect()
    }

    #[test]
    fn earlier_prompts_do_not_predict_the_next() {
        // The predictor works on an unkeyed stream: it would have broken the old scheme.
        let old = polylith_model::prompts::generate(77, 5);
        assert!(predict(&old).contains(&polylith_model::prompts::generate(77, 5 + 3)));
        let settings = task().settings;
        let model = Arc::new(Model::builtin().unwrap());
        let t = LlmTask::with_prompt_key(model.clone(), settings.clone(), [7; 32]);
        let seen: Vec<String> = (0..40).map(|_| sent_text(&t.draw_challenge())).collect();
        for w in seen.windows(2) {
            assert!(
                !predict(&w[0]).contains(&w[1]),
                "{} predicted {}",
                w[0],
                w[1]
            );
        }
        // No earlier prompt's stream, rewound or advanced, reaches the next one.
        let next = sent_text(&t.draw_challenge());
        assert!(seen.iter().all(|p| !predict(p).contains(&next)));
        // The key is the only secret: same key and counter, same prompt; another key, another.
        let again = LlmTask::with_prompt_key(model.clone(), settings.clone(), [7; 32]);
        let other = LlmTask::with_prompt_key(model, settings, [8; 32]);
        let (mut same, mut differ) = (0, 0);
        for p in &seen {
            same += usize::from(sent_text(&again.draw_challenge()) == *p);
            let o = sent_text(&other.draw_challenge());
            let body = |s: &str| s.split(" (ref").next().unwrap_or("").to_string();
            differ += usize::from(body(&o) != body(p));
        }
        assert_eq!(same, seen.len());
        assert!(differ >= 30, "only {differ} of 40 wordings differ");
        // The counter cannot be read back from the reference code.
        for (i, p) in seen.iter().enumerate().skip(1) {
            let code = p.rsplit("(ref ").next().unwrap_or("").trim_end_matches(')');
            let v: Vec<u64> = code
                .split('-')
                .map(|x| u64::from_str_radix(x, 36).unwrap_or(0))
                .collect();
            assert_ne!(unmix64(v[1]) ^ v[0], i as u64, "{p}");
        }
    }

    #[test]
    fn stream_parsing_accepts_a_well_formed_stream() {
        let body = format!("{}{}", chunk(0, None), chunk(1, Some("length")));
        let (tokens, finish) = parse_stream(&exchange(parse_sse(&body))).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(finish, "length");
    }

    #[test]
    fn stream_parsing_rejects_gaps_missing_finish_and_tokens_after_it() {
        for body in [
            format!("{}{}", chunk(0, None), chunk(2, Some("length"))),
            format!("{}{}", chunk(0, None), chunk(1, None)),
            format!("{}{}", chunk(0, Some("eos")), chunk(1, Some("length"))),
            String::new(),
            "data: not json\n\n".to_string(),
            format!("{}event: error\ndata: x\n\n", chunk(0, None)),
        ] {
            let err = parse_stream(&exchange(parse_sse(&body))).unwrap_err();
            assert_eq!(err.reason, FailureReason::Malformed, "{body}");
        }
    }

    #[test]
    fn honest_completion_verifies_and_a_forged_token_fails_with_its_index() {
        let t = task();
        let c = t.draw_challenge();
        let model = t.model();
        let prompt = model.encode_prompt(&c.prompt).unwrap();
        let out = model
            .generate(&prompt, &c.params, |_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        let claim = Claim {
            prompt_tokens: &prompt,
            tokens: &out.tokens,
            finish_reason: out.finish_reason.as_str(),
            model_hash: Some(model.hash()),
        };
        let tol = Tolerances::default();
        assert!(
            verify::verify(model, &claim, &c.params, &tol)
                .unwrap()
                .passed
        );
        let mut forged = out.tokens.clone();
        let last = forged.len() - 1;
        forged[last].id = (forged[last].id + 1) % 256;
        let claim = Claim {
            tokens: &forged,
            ..claim
        };
        let r = verify::verify(model, &claim, &c.params, &tol).unwrap();
        assert!(!r.passed);
        assert!(failure_reason(r.reason.unwrap()).is_cheating());
    }

    #[test]
    fn only_verified_outcomes_score() {
        let t = task();
        let miner = |uid: u16| MinerTarget {
            uid,
            hotkey: polylith_protocol::keys::PublicKey([uid as u8; 32]),
            ss58: format!("m{uid}"),
            endpoint: String::new(),
        };
        let mut outs: Vec<QueryOutcome> = (0..3)
            .map(|uid| {
                let mut o = new_outcome(TaskKind::Llm, &miner(uid));
                o.latency_s = Some(0.1);
                o.throughput = Some(100.0);
                o
            })
            .collect();
        outs[2].fail(Failure::new(FailureReason::WrongToken, "x"));
        let s = t.score(&outs);
        assert!(s[0] > 0.0 && (s[0] - s[1]).abs() < 1e-12);
        assert_eq!(s[2], 0.0);
    }
}
