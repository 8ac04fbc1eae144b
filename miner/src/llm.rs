//! The LLM task: OpenAI-compatible `POST /v1/completions` and `POST /v1/chat/completions` on
//! top of `polylith-model`, with optional SSE streaming.
//!
//! The wire types and the stream framing are in `polylith_protocol::llm`. Besides the OpenAI
//! fields, every response carries a `polylith` object with the prompt and completion token
//! ids, per-token logprobs and the model hash, which is what a validator needs for
//! `polylith_model::verify`.

use crate::auth::{Authenticated, ReceiptInfo, make_receipt, reply_json};
use crate::backend::BackendError;
use crate::config::{BackendKind, Behaviour};
use crate::error::{ApiError, MinerError};
use crate::server::{MinerInner, SlotPermit};
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use polylith_cuda::{CudaDecoder, LlmLimits};
use polylith_model::{
    Completion, FinishReason, GeneratedToken, Model, ModelError, SamplingParams, TopLogprob,
};
use polylith_protocol::llm::{
    ChatMessage, ChatRequest, Choice, CompletionRequest, CompletionResponse, PolylithExtra,
    Sampling, Stop, StreamChunk, Usage, chat_prompt,
};
use rand::Rng;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Relative weight noise of the `perturbed` adversary.
const PERTURB_REL: f64 = 0.01;
/// Seed of the `wrong-model` adversary's weights (any seed but the real one).
const WRONG_MODEL_SEED: u64 = 0xBAD_5EED;

/// The model a miner serves: what it runs, on which engine, and what it claims to run.
pub struct ServedModel {
    /// The model that generates (a variant for the LLM adversaries); on the CPU it computes
    /// the logits, on a GPU it supplies the tokenizer, EOS ids and limits.
    pub model: Model,
    /// The GPU engine running `model`'s weights, when the backend is CUDA.
    gpu: Option<CudaDecoder>,
    /// The honest model's name, matched against requests.
    pub name: String,
    /// The honest model's hash, reported in receipts (adversaries claim it too).
    pub hash_hex: String,
}

impl ServedModel {
    /// Loads `spec` (`builtin` or a checkpoint directory), applies `behaviour`'s variant and
    /// puts it on `backend`: `cuda` must find a usable GPU (else a clear error), `auto`
    /// falls back to the CPU. The GPU engine holds `max_sequences` KV-cache slots.
    pub fn load(
        spec: &str,
        behaviour: Behaviour,
        backend: BackendKind,
        max_sequences: usize,
    ) -> Result<Self, MinerError> {
        let honest = Model::load(spec)?;
        let name = honest.name().to_string();
        let hash_hex = honest.hash().to_string();
        let model = match behaviour {
            Behaviour::WrongModel => Model::builtin_with_seed(WRONG_MODEL_SEED)?,
            Behaviour::Perturbed => honest.perturbed(PERTURB_REL, WRONG_MODEL_SEED)?,
            Behaviour::Truncated => honest.truncated()?,
            Behaviour::Quantized => honest.quantized_int8()?,
            _ => honest,
        };
        let limits = LlmLimits {
            max_sequences: max_sequences.max(1),
            max_positions: model.config().max_position_embeddings,
        };
        let open = |model: &Model| -> Result<CudaDecoder, String> {
            let gpu = CudaDecoder::new(0, model, limits).map_err(|e| e.to_string())?;
            gpu_self_check(&gpu, model)?;
            Ok(gpu)
        };
        let gpu = match backend {
            BackendKind::Cpu => None,
            BackendKind::Cuda => Some(open(&model).map_err(|e| {
                MinerError::Backend(BackendError::Unavailable(format!(
                    "the LLM cannot run on CUDA: {e}"
                )))
            })?),
            BackendKind::Auto => match open(&model) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::info!(reason = %e, "LLM on the CPU: the CUDA engine is not usable");
                    None
                }
            },
        };
        if let Some(g) = &gpu {
            tracing::info!(device = %g.device_name(), model = %name, "LLM on the CUDA engine");
        }
        Ok(Self {
            model,
            gpu,
            name,
            hash_hex,
        })
    }

    /// `cuda` or `cpu`: where the logits are computed.
    pub fn engine(&self) -> &'static str {
        if self.gpu.is_some() { "cuda" } else { "cpu" }
    }

    /// Generates with the engine in use (same loop, sampler and stop rules on both).
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
        on_token: impl FnMut(polylith_model::TokenEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Completion, ModelError> {
        match &self.gpu {
            Some(gpu) => polylith_model::generate_with(gpu, &self.model, prompt, params, on_token),
            None => self.model.generate(prompt, params, on_token),
        }
    }

    fn accepts(&self, requested: Option<&str>) -> bool {
        match requested {
            None => true,
            Some(m) => {
                m == self.name
                    || m == self.hash_hex
                    || m == "builtin" && self.name.starts_with("builtin")
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    fn object(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Endpoint::Completions, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }
}

struct Job {
    endpoint: Endpoint,
    prompt: String,
    params: SamplingParams,
    want_logprobs: bool,
    stream: bool,
}

fn model_error(e: ModelError) -> ApiError {
    match e {
        ModelError::InvalidInput(m) => ApiError::bad_request("bad_params", m),
        other => ApiError::internal(other.to_string()),
    }
}

fn job_from(sampling: Sampling, endpoint: Endpoint, prompt: String, top: u8, want: bool) -> Job {
    Job {
        endpoint,
        prompt,
        params: SamplingParams {
            max_tokens: sampling.max_tokens,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            seed: sampling.seed,
            stop: sampling.stop.map(Stop::into_vec).unwrap_or_default(),
            top_logprobs: top,
        },
        want_logprobs: want,
        stream: sampling.stream,
    }
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    State(miner): State<Arc<MinerInner>>,
    Extension(permit): Extension<SlotPermit>,
    auth: Authenticated,
) -> Response {
    let result = async {
        let req: CompletionRequest = auth.json(&miner)?;
        check_model(&miner, req.sampling.model.as_deref())?;
        let top = req.logprobs.unwrap_or(0);
        let job = job_from(
            req.sampling,
            Endpoint::Completions,
            req.prompt,
            top,
            req.logprobs.is_some(),
        );
        serve(&miner, permit, &auth, job).await
    }
    .await;
    miner.finish(&auth, result)
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(miner): State<Arc<MinerInner>>,
    Extension(permit): Extension<SlotPermit>,
    auth: Authenticated,
) -> Response {
    let result = async {
        let req: ChatRequest = auth.json(&miner)?;
        check_model(&miner, req.sampling.model.as_deref())?;
        if req.messages.is_empty() {
            return Err(ApiError::bad_request("bad_params", "messages is empty"));
        }
        let top = if req.logprobs {
            req.top_logprobs.unwrap_or(0)
        } else {
            0
        };
        let prompt = chat_prompt(&req.messages);
        let job = job_from(req.sampling, Endpoint::Chat, prompt, top, req.logprobs);
        serve(&miner, permit, &auth, job).await
    }
    .await;
    miner.finish(&auth, result)
}

fn check_model(miner: &MinerInner, requested: Option<&str>) -> Result<(), ApiError> {
    match &miner.model {
        Some(served) if served.accepts(requested) => Ok(()),
        Some(served) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!(
                "model {:?} is not served here (this miner serves {:?}, hash {})",
                requested.unwrap_or(""),
                served.name,
                served.hash_hex
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            "this miner serves no model",
        )),
    }
}

/// Largest deviation of a GPU logit from the CPU model's accepted at start-up: the validators'
/// near-tie tolerance (`verify::Tolerances::logit`), so an engine that passes would also pass
/// verification and one that fails is refused before it serves a wrong token.
const SELF_CHECK_LOGIT_TOLERANCE: f32 = 0.3;

/// Runs one short prompt through the GPU engine and the CPU model and compares the last
/// position's logits (mean-centred, as softmax is shift-invariant).
fn gpu_self_check(gpu: &CudaDecoder, model: &Model) -> Result<(), String> {
    let prompt = model
        .encode_prompt("Polylith engine self-check: the quick brown fox")
        .map_err(|e| e.to_string())?;
    let reference = model
        .logits(&prompt)
        .map_err(|e| e.to_string())?
        .pop()
        .ok_or("the CPU model returned no logits")?;
    let got = {
        let mut seq = polylith_model::Decoder::new_sequence(gpu).map_err(|e| e.to_string())?;
        seq.feed(&prompt).map_err(|e| e.to_string())?
    };
    if got.len() != reference.len() {
        return Err(format!(
            "self-check: {} logits from the GPU, {} expected",
            got.len(),
            reference.len()
        ));
    }
    let mean = |v: &[f32]| v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len().max(1) as f64;
    let (mg, mr) = (mean(&got), mean(&reference));
    let worst = got
        .iter()
        .zip(&reference)
        .map(|(g, r)| ((f64::from(*g) - mg) - (f64::from(*r) - mr)).abs())
        .fold(
            0.0f64,
            |a, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
        );
    if worst > f64::from(SELF_CHECK_LOGIT_TOLERANCE) {
        return Err(format!(
            "self-check: GPU logits differ from the CPU model by {worst:.3} (tolerance {SELF_CHECK_LOGIT_TOLERANCE})"
        ));
    }
    tracing::info!(
        max_logit_deviation = worst,
        "CUDA LLM engine self-check passed"
    );
    Ok(())
}

/// Tokens chosen uniformly at random (the `random-tokens` adversary), shaped like a real
/// completion.
fn random_completion(model: &Model, prompt_len: usize, params: &SamplingParams) -> Completion {
    let vocab = model.config().vocab_size as u32;
    let mut rng = rand::rng();
    let lp = -(vocab as f32).ln();
    let tokens: Vec<GeneratedToken> = (0..params.max_tokens)
        .map(|_| GeneratedToken {
            id: rng.random_range(0..256.min(vocab)),
            logprob: lp,
            top_logprobs: (0..params.top_logprobs)
                .map(|_| TopLogprob {
                    id: rng.random_range(0..vocab),
                    logprob: lp,
                })
                .collect(),
        })
        .collect();
    let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
    Completion {
        prompt_tokens: prompt_len,
        text: model.tokenizer().decode(&ids).unwrap_or_default(),
        tokens,
        finish_reason: FinishReason::Length,
    }
}

/// A generation's events, sent from the blocking thread to the response.
enum Event {
    Token {
        index: u32,
        token: GeneratedToken,
        text: String,
        finish: Option<FinishReason>,
    },
    Done(Result<(Completion, Vec<u32>), ApiError>, u64, u64),
}

async fn serve(
    miner: &Arc<MinerInner>,
    permit: SlotPermit,
    auth: &Authenticated,
    job: Job,
) -> Result<Response, ApiError> {
    job.params.validate().map_err(model_error)?;
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let worker = miner.clone();
    let random = miner.config.behaviour == Behaviour::RandomTokens;
    let params = job.params.clone();
    let prompt_text = job.prompt.clone();
    let streaming = job.stream;
    let cancel = auth.cancel_token();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let Some(served) = worker.model.as_ref() else {
            return;
        };
        let model = &served.model;
        let started = Instant::now();
        let mut ttft_us = 0u64;
        let mut cancelled = false;
        let result = model
            .encode_prompt(&prompt_text)
            .map_err(model_error)
            .and_then(|prompt| {
                let completion = if random {
                    let c = random_completion(model, prompt.len(), &params);
                    ttft_us = started.elapsed().as_micros() as u64;
                    if streaming {
                        let last = c.tokens.len().saturating_sub(1);
                        for (i, token) in c.tokens.iter().enumerate() {
                            if cancel.is_cancelled() {
                                cancelled = true;
                                break;
                            }
                            let sent = tx.blocking_send(Event::Token {
                                index: i as u32,
                                token: token.clone(),
                                text: if i == last {
                                    c.text.clone()
                                } else {
                                    String::new()
                                },
                                finish: (i == last).then_some(c.finish_reason),
                            });
                            if sent.is_err() {
                                cancelled = true;
                                break;
                            }
                        }
                    }
                    Ok(c)
                } else {
                    served
                        .generate(&prompt, &params, |ev| {
                            if ev.index == 0 {
                                ttft_us = started.elapsed().as_micros() as u64;
                            }
                            // Nobody holds the request any more (the client left): stop, so
                            // the slot is free for work someone will read.
                            if cancel.is_cancelled() {
                                cancelled = true;
                                return ControlFlow::Break(());
                            }
                            if !streaming {
                                return ControlFlow::Continue(());
                            }
                            let sent = tx.blocking_send(Event::Token {
                                index: ev.index,
                                token: ev.token.clone(),
                                text: ev.text_delta.to_string(),
                                finish: ev.finish_reason,
                            });
                            // The stream's reader is gone: stop generating.
                            if sent.is_err() {
                                cancelled = true;
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        })
                        .map_err(model_error)
                };
                completion.map(|c| (c, prompt))
            });
        let compute_us = started.elapsed().as_micros() as u64;
        if cancelled {
            worker.metrics.cancelled.with_label_values(&["llm"]).inc();
            tracing::debug!(compute_us, "generation stopped: the client went away");
            return;
        }
        let _ = tx.blocking_send(Event::Done(result, ttft_us, compute_us));
    });

    let id = format!("cmpl-{}", hex::encode(rand::random::<[u8; 12]>()));
    let model_name = miner
        .model
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let model_hash = miner
        .model
        .as_ref()
        .map(|m| m.hash_hex.clone())
        .unwrap_or_default();

    if !job.stream {
        let Some(Event::Done(result, ttft_us, compute_us)) = rx.recv().await else {
            return Err(ApiError::internal("generation ended without a result"));
        };
        let (completion, prompt_ids) = result?;
        if miner.config.behaviour == Behaviour::Slow {
            slow_down(miner, compute_us).await;
        }
        record(miner, &completion, compute_us);
        let response = full_response(
            &job,
            id,
            model_name,
            model_hash.clone(),
            completion,
            prompt_ids,
        );
        let tokens = response.usage.completion_tokens as u64;
        return reply_json(
            miner,
            auth,
            &response,
            ReceiptInfo {
                compute_us,
                ttft_us,
                tokens,
                model_hash,
            },
        );
    }

    // Streaming: the first event decides between an error status and a 200 stream.
    let first = rx.recv().await;
    if let Some(Event::Done(Err(e), _, _)) = first {
        return Err(e);
    }
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let miner2 = miner.clone();
    let auth2 = auth.clone();
    let object = job.endpoint.object(true).to_string();
    tokio::spawn(async move {
        let mut hasher_bytes: Vec<u8> = Vec::new();
        let mut next = first;
        while let Some(ev) = next {
            match ev {
                Event::Token {
                    index,
                    token,
                    text,
                    finish,
                } => {
                    let chunk = StreamChunk {
                        id: id.clone(),
                        object: object.clone(),
                        index,
                        text,
                        token,
                        finish_reason: finish.map(|f| f.as_str().to_string()),
                        usage: None,
                    };
                    let line = format!(
                        "data: {}\n\n",
                        serde_json::to_string(&chunk).unwrap_or_default()
                    );
                    hasher_bytes.extend_from_slice(line.as_bytes());
                    if body_tx.send(Ok(Bytes::from(line))).await.is_err() {
                        return;
                    }
                }
                Event::Done(result, ttft_us, compute_us) => {
                    let (completion, _prompt_ids) = match result {
                        Ok(r) => r,
                        Err(e) => {
                            let line = format!(
                                "event: error\ndata: {}\n\n",
                                serde_json::json!({"error": e.reason, "message": e.message})
                            );
                            let _ = body_tx.send(Ok(Bytes::from(line))).await;
                            return;
                        }
                    };
                    if miner2.config.behaviour == Behaviour::Slow {
                        slow_down(&miner2, compute_us).await;
                    }
                    record(&miner2, &completion, compute_us);
                    let receipt = make_receipt(
                        &miner2,
                        &auth2,
                        &hasher_bytes,
                        ReceiptInfo {
                            compute_us,
                            ttft_us,
                            tokens: completion.tokens.len() as u64,
                            model_hash: model_hash.clone(),
                        },
                    );
                    let line = format!(
                        "event: receipt\ndata: {}\n\ndata: [DONE]\n\n",
                        serde_json::to_string(&receipt).unwrap_or_default()
                    );
                    let _ = body_tx.send(Ok(Bytes::from(line))).await;
                    return;
                }
            }
            next = rx.recv().await;
        }
    });
    let stream = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

async fn slow_down(miner: &MinerInner, compute_us: u64) {
    let compute = std::time::Duration::from_micros(compute_us);
    let extra = compute.mul_f64(miner.config.slow_factor)
        + std::time::Duration::from_millis(miner.config.slow_delay_ms);
    tokio::time::sleep(extra).await;
}

fn record(miner: &MinerInner, completion: &Completion, compute_us: u64) {
    miner
        .metrics
        .compute_seconds
        .with_label_values(&["llm"])
        .observe(compute_us as f64 / 1e6);
    miner
        .metrics
        .tokens_served
        .inc_by(completion.tokens.len() as u64);
}

fn full_response(
    job: &Job,
    id: String,
    model: String,
    model_hash: String,
    completion: Completion,
    prompt_ids: Vec<u32>,
) -> CompletionResponse {
    let finish = completion.finish_reason.as_str().to_string();
    let usage = Usage {
        prompt_tokens: prompt_ids.len(),
        completion_tokens: completion.tokens.len(),
        total_tokens: prompt_ids.len() + completion.tokens.len(),
    };
    let logprobs = job.want_logprobs.then(|| completion.tokens.clone());
    let (text, message) = match job.endpoint {
        Endpoint::Completions => (Some(completion.text.clone()), None),
        Endpoint::Chat => (
            None,
            Some(ChatMessage {
                role: "assistant".into(),
                content: completion.text.clone(),
            }),
        ),
    };
    CompletionResponse {
        id,
        object: job.endpoint.object(false).to_string(),
        created: crate::clock::unix_ms() / 1000,
        model,
        choices: vec![Choice {
            index: 0,
            text,
            message,
            logprobs,
            finish_reason: finish.clone(),
        }],
        usage,
        polylith: PolylithExtra {
            prompt_token_ids: prompt_ids,
            tokens: completion.tokens,
            finish_reason: finish,
            model_hash,
        },
    }
}
