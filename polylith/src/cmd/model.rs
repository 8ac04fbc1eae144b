//! `polylith model`: inspect the reference model: its id, logits of a token sequence, a
//! generated completion, and a self-check of the verifier.

use crate::Global;
use anyhow::Context;
use polylith_model::{Model, SamplingParams, verify};
use std::io::Write;
use std::ops::ControlFlow;
use std::time::Instant;

/// Flags of `polylith model`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `polylith model`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the model's id and config.
    Info {
        /// `builtin` or a Hugging Face checkpoint directory.
        #[arg(long, default_value = "builtin")]
        model: String,
    },
    /// Print the logits of every position of a token sequence.
    Logits {
        /// `builtin` or a Hugging Face checkpoint directory.
        #[arg(long, default_value = "builtin")]
        model: String,
        /// Comma-separated token ids, e.g. `1,2,3`.
        #[arg(long, value_delimiter = ',', required = true)]
        tokens: Vec<u32>,
        /// Print `{"logits": [[...], ...]}` (one vocab-sized row per input token).
        #[arg(long)]
        json: bool,
    },
    /// Generate a completion of a text prompt.
    Generate {
        /// `builtin` or a Hugging Face checkpoint directory.
        #[arg(long, default_value = "builtin")]
        model: String,
        /// The prompt text (BOS is prepended if the model has one).
        #[arg(long)]
        prompt: String,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 32)]
        max_tokens: u32,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus mass.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop string (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        /// Print the full result (tokens, logprobs, finish reason, verification) as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `polylith model`.
pub fn run(args: Args, _global: &Global) -> anyhow::Result<()> {
    match args.command {
        Command::Info { model } => {
            let m = load(&model)?;
            let out = serde_json::json!({
                "name": m.name(),
                "model_hash": m.hash(),
                "config": m.config(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Logits {
            model,
            tokens,
            json,
        } => {
            let m = load(&model)?;
            let logits = m.logits(&tokens).context("running the model")?;
            if json {
                println!("{}", serde_json::json!({ "logits": logits }));
            } else {
                for (tok, row) in tokens.iter().zip(&logits) {
                    let best = polylith_model::sampling::argmax(row);
                    println!(
                        "token {tok}: argmax {best} (logit {:.4})",
                        row[best as usize]
                    );
                }
            }
        }
        Command::Generate {
            model,
            prompt,
            max_tokens,
            temperature,
            top_p,
            seed,
            stop,
            json,
        } => {
            let m = load(&model)?;
            let params = SamplingParams {
                max_tokens,
                temperature,
                top_p,
                seed,
                stop,
                top_logprobs: 5,
            };
            let ids = m.encode_prompt(&prompt).context("tokenizing the prompt")?;
            let start = Instant::now();
            let mut first = None;
            let mut stdout = std::io::stdout();
            let out = m
                .generate(&ids, &params, |ev| {
                    first.get_or_insert_with(|| start.elapsed());
                    if !json {
                        let _ = write!(stdout, "{}", ev.text_delta);
                        let _ = stdout.flush();
                    }
                    ControlFlow::Continue(())
                })
                .context("generating")?;
            let elapsed = start.elapsed();
            let claim = verify::Claim {
                prompt_tokens: &ids,
                tokens: &out.tokens,
                finish_reason: out.finish_reason.as_str(),
                model_hash: Some(m.hash()),
            };
            let report = verify::verify(&m, &claim, &params, &verify::Tolerances::default())
                .context("verifying")?;
            let tps = out.tokens.len() as f64 / elapsed.as_secs_f64().max(1e-9);
            if json {
                let j = serde_json::json!({
                    "model_hash": m.hash(),
                    "completion": out,
                    "time_to_first_token_s": first.map(|d| d.as_secs_f64()),
                    "tokens_per_second": tps,
                    "verification": report,
                });
                println!("{}", serde_json::to_string_pretty(&j)?);
            } else {
                println!();
                eprintln!(
                    "[{} tokens, finish {}, {:.1} tok/s, first token {:.1} ms, self-verification {}]",
                    out.tokens.len(),
                    out.finish_reason.as_str(),
                    tps,
                    first.unwrap_or_default().as_secs_f64() * 1e3,
                    if report.passed { "passed" } else { "FAILED" },
                );
            }
        }
    }
    Ok(())
}

fn load(spec: &str) -> anyhow::Result<Model> {
    Model::load(spec).with_context(|| format!("loading model {spec}"))
}
