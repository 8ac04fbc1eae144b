//! Reference Llama-style decoder on candle (CPU), the subnet model and its sampler.
//!
//! This crate owns the LLM task's pure logic: the model (Hugging Face `LlamaForCausalLM`
//! checkpoints or the seeded builtin one), its identity ([`ModelId`]), generation with a KV
//! cache and streaming, the deterministic sampling rule, the validator's verification of a
//! completion, adversarial model variants and seeded prompts. It does no networking, no I/O
//! beyond reading checkpoint files, and never uses a GPU (candle is built without `cuda`).
//!
//! ```no_run
//! use polylith_model::{Model, SamplingParams, verify};
//! let model = Model::builtin()?;
//! let prompt = model.encode_prompt("Hello")?;
//! let out = model.generate(&prompt, &SamplingParams::greedy(16), |_ev| std::ops::ControlFlow::Continue(()))?;
//! let claim = verify::Claim { prompt_tokens: &prompt, tokens: &out.tokens,
//!     finish_reason: out.finish_reason.as_str(), model_hash: Some(model.hash()) };
//! let report = verify::verify(&model, &claim, &SamplingParams::greedy(16), &verify::Tolerances::default())?;
//! assert!(report.passed);
//! # Ok::<(), polylith_model::ModelError>(())
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod generate;
pub mod model;
pub mod prompts;
pub mod rng;
pub mod sampling;
pub mod tokenizer;
pub mod verify;
pub mod weights;

pub use config::LlamaConfig;
pub use error::{ModelError, Result};
pub use generate::{
    Completion, Decoder, FinishReason, GeneratedToken, Sequence, TokenEvent, TopLogprob,
    generate_with,
};
pub use model::{BUILTIN_SEED, KvCache, Model, builtin_config};
pub use sampling::SamplingParams;
pub use tokenizer::Tokenizer;
pub use verify::{Claim, FailReason, Tolerances, VerifyReport};
pub use weights::{ModelId, Weights};
