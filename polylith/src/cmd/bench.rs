//! `polylith bench`: throughput benchmarks. `bench gemm` times the proof's GEMM on the chosen
//! backend; on CUDA it also times cuBLAS on the same operands in the same run. `bench llm` times
//! prefill and decode of the LLM engine (CUDA) or the CPU model against the memory-bandwidth
//! floor of a decode step.

use crate::Global;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use polylith_protocol::gemm::{Dtype, GemmSpec};

// A sibling file rather than an entry in cmd/mod.rs: each bench mode is self-contained.
#[path = "bench_verify.rs"]
mod bench_verify;
#[path = "bench_yuma.rs"]
mod bench_yuma;

/// Flags of `polylith bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Benchmarks; more (e.g. LLM serving) join this list as they are written.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// GEMM throughput of the proof-of-compute kernel (TFLOP/s; TOP/s for int8), against
    /// cuBLAS on a GPU.
    Gemm(GemmArgs),
    /// LLM inference: prefill and decode tokens/s, time to first token, and the fraction of
    /// the memory-bandwidth floor a decode step reaches.
    Llm(LlmArgs),
    /// What checking one miner costs a CPU validator: one GEMM opening at a given soundness
    /// for a miner that computed half the rows, and one LLM completion, on one thread.
    Verify(bench_verify::VerifyArgs),
    /// One Yuma epoch on a synthetic subnet: median wall and CPU time, against one thread in
    /// the same run.
    Yuma(bench_yuma::YumaArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchDtype {
    Bf16,
    Int8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, clap::Args)]
struct GemmArgs {
    /// Square sizes n = k = m, comma-separated (default 4096,8192,16384 on a GPU, 512,1024 on
    /// the CPU).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<u32>>,
    /// Input dtype (accumulation is f32 for bf16, i32 for int8).
    #[arg(long, value_enum, default_value = "bf16")]
    dtype: BenchDtype,
    /// Where to run: CUDA if usable (auto), or force one.
    #[arg(long, value_enum, default_value = "auto")]
    backend: Backend,
    /// Timed runs per size (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: u32,
    /// Untimed warm-up runs per size.
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

/// Runs `polylith bench`.
pub fn run(args: Args, _global: &Global) -> anyhow::Result<()> {
    match args.command {
        Command::Gemm(a) => gemm(a),
        Command::Llm(a) => llm(a),
        Command::Verify(a) => bench_verify::verify(a),
        Command::Yuma(a) => bench_yuma::yuma(a),
    }
}

fn progress(len: u64, msg: String) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    bar
}

fn gemm(a: GemmArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.repeats > 0, "--repeats must be at least 1");
    let dtype = match a.dtype {
        BenchDtype::Bf16 => Dtype::Bf16,
        BenchDtype::Int8 => Dtype::Int8,
    };
    let cuda = match a.backend {
        Backend::Cpu => None,
        Backend::Cuda => {
            Some(polylith_cuda::CudaGemm::new(a.device).context("the CUDA backend is not usable")?)
        }
        Backend::Auto => match polylith_cuda::CudaGemm::new(a.device) {
            Ok(g) => Some(g),
            Err(e) => {
                println!("CUDA not usable ({e}); benchmarking the CPU backend");
                None
            }
        },
    };
    match cuda {
        Some(g) => gemm_cuda(&g, &a, dtype),
        None => gemm_cpu(&a),
    }
}

fn gemm_cuda(g: &polylith_cuda::CudaGemm, a: &GemmArgs, dtype: Dtype) -> anyhow::Result<()> {
    let sizes = a.sizes.clone().unwrap_or_else(|| vec![4096, 8192, 16384]);
    let unit = if dtype == Dtype::Int8 {
        "TOP/s"
    } else {
        "TFLOP/s"
    };
    let cublas = polylith_cuda::bench::cublas_available();
    println!(
        "backend cuda: {} ({}), dtype {dtype:?}, median of {} runs after {} warm-up, device events{}",
        g.device_name(),
        g.arch(),
        a.repeats,
        a.warmup,
        if cublas {
            ""
        } else {
            "; cuBLAS n/a (libcublas not found)"
        }
    );
    println!(
        "{:>7}  {:>10}  {:>12}  {:>14}  {:>6}  match",
        "size",
        "ours ms",
        format!("ours {unit}"),
        format!("cuBLAS {unit}"),
        "ratio"
    );
    for &s in &sizes {
        let runs = (a.warmup + a.repeats) as u64 * if cublas { 2 } else { 1 };
        let bar = progress(runs, format!("{s}³"));
        let spec = GemmSpec {
            seed: 0xB0B,
            n: s,
            k: s,
            m: s,
        };
        let r = g
            .bench_gemm(&spec, dtype, a.warmup, a.repeats, &mut || bar.inc(1))
            .with_context(|| format!("benchmarking {s}³"))?;
        bar.finish_and_clear();
        let theirs = r.cublas_tops();
        println!(
            "{:>7}  {:>10.3}  {:>12.1}  {:>14}  {:>6}  {}",
            format!("{s}³"),
            r.ours_ms,
            r.ours_tops(),
            theirs.map_or("n/a".to_string(), |t| format!("{t:.1}")),
            theirs.map_or("n/a".to_string(), |t| format!("{:.2}", r.ours_tops() / t)),
            match r.matches_cublas {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "n/a",
            }
        );
        anyhow::ensure!(
            r.matches_cublas != Some(false),
            "our product differs from cuBLAS's at {s}³"
        );
    }
    Ok(())
}

fn gemm_cpu(a: &GemmArgs) -> anyhow::Result<()> {
    let sizes = a.sizes.clone().unwrap_or_else(|| vec![512, 1024]);
    println!(
        "backend cpu (f32, exact for the bounded entries; every dtype runs as f32), median of {} runs after {} warm-up; cuBLAS n/a",
        a.repeats, a.warmup
    );
    println!("{:>7}  {:>10}  {:>10}  cuBLAS", "size", "ms", "GFLOP/s");
    for &s in &sizes {
        let spec = GemmSpec {
            seed: 0xB0B,
            n: s,
            k: s,
            m: s,
        };
        spec.validate(u32::MAX)
            .with_context(|| format!("size {s}"))?;
        let bar = progress((a.warmup + a.repeats) as u64, format!("{s}³"));
        let mut times = Vec::new();
        for i in 0..a.warmup + a.repeats {
            let (_, _, gemm_us) =
                polylith_miner::backend::cpu::product(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
            if i >= a.warmup {
                times.push(gemm_us as f64 / 1e3);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        times.sort_by(|x, y| x.total_cmp(y));
        let ms = times[times.len() / 2];
        println!(
            "{:>7}  {:>10.3}  {:>10.1}  n/a",
            format!("{s}³"),
            ms,
            spec.flops() / (ms * 1e-3) / 1e9
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
struct LlmArgs {
    /// `builtin`, a Hugging Face checkpoint directory, or `synthetic-1b` (a Llama-shaped
    /// ~1.2 B-parameter config with random weights generated on the GPU; CUDA only).
    #[arg(long, default_value = "builtin")]
    model: String,
    /// Where to run: CUDA if usable (auto), or force one.
    #[arg(long, value_enum, default_value = "auto")]
    backend: Backend,
    /// Concurrent sequences, comma-separated; one table row each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batch: Vec<usize>,
    /// Tokens generated per sequence (greedy).
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Prompt tokens per sequence.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Timed runs per batch size (the median of each figure is reported).
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

/// One timed run of a batch: wall seconds of the prefill, of the first token (prefill plus
/// the first pick) and of the decode steps after it.
#[derive(Debug, Clone, Copy)]
struct LlmRun {
    prefill_s: f64,
    ttft_s: f64,
    decode_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Deterministic prompt ids (BOS first when the model has one), different per sequence.
fn bench_prompt(cfg: &polylith_model::LlamaConfig, len: usize, seq: usize) -> Vec<u32> {
    let mut out: Vec<u32> = cfg.bos_token_id.into_iter().collect();
    let mut z = 0x9E37_79B9_7F4A_7C15u64 ^ seq as u64;
    while out.len() < len {
        z = polylith_model::rng::mix64(z.wrapping_add(0x9E37_79B9_7F4A_7C15));
        out.push((z % cfg.vocab_size as u64) as u32);
    }
    out.truncate(len.max(1));
    out
}

/// Parameters read per decode step (every matrix once; the embedding only by rows unless it
/// is also the output head; norms).
fn decode_params(cfg: &polylith_model::LlamaConfig) -> u64 {
    let (h, i, v) = (
        cfg.hidden_size as u64,
        cfg.intermediate_size as u64,
        cfg.vocab_size as u64,
    );
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let layer = (q + 2 * kv) * h + h * q + 3 * i * h + 2 * h;
    cfg.num_hidden_layers as u64 * layer + v * h + h
}

/// Host memcpy bandwidth in bytes/s (read + write), median of 5 copies of 256 MiB.
fn host_copy_bandwidth() -> f64 {
    let n = 256usize << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let mut times = Vec::new();
    for i in 0..7 {
        let t = std::time::Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    2.0 * n as f64 / median(times)
}

fn llm(a: LlmArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.repeats > 0, "--repeats must be at least 1");
    anyhow::ensure!(a.tokens > 0, "--tokens must be at least 1");
    anyhow::ensure!(a.prompt_tokens > 0, "--prompt-tokens must be at least 1");
    anyhow::ensure!(
        !a.batch.is_empty() && a.batch.iter().all(|&b| b > 0),
        "--batch needs sizes of at least 1"
    );
    let synthetic = a.model == "synthetic-1b";
    let max_batch = a.batch.iter().copied().max().unwrap_or(1);
    let positions = a.prompt_tokens + a.tokens;
    let want_cuda = a.backend != Backend::Cpu;
    if synthetic {
        anyhow::ensure!(
            want_cuda,
            "--model synthetic-1b runs on CUDA only: its random weights are generated on the GPU (4.9 GB as f32 on the host would make a CPU figure meaningless)"
        );
        let cfg = polylith_cuda::llm::synthetic_1b_config();
        anyhow::ensure!(
            positions <= cfg.max_position_embeddings,
            "prompt + tokens ({positions}) exceeds the model's {} positions",
            cfg.max_position_embeddings
        );
        let limits = polylith_cuda::LlmLimits {
            max_sequences: max_batch,
            max_positions: positions,
        };
        let dec = polylith_cuda::CudaDecoder::synthetic(a.device, &cfg, 0x5EED, limits)
            .context("the CUDA backend is not usable for synthetic-1b")?;
        return llm_cuda(&dec, "synthetic-1b (random bf16 weights)", &a);
    }
    let model = polylith_model::Model::load(&a.model)
        .with_context(|| format!("loading model {:?}", a.model))?;
    let cfg = model.config();
    anyhow::ensure!(
        positions <= cfg.max_position_embeddings,
        "prompt + tokens ({positions}) exceeds the model's {} positions",
        cfg.max_position_embeddings
    );
    let limits = polylith_cuda::LlmLimits {
        max_sequences: max_batch,
        max_positions: positions,
    };
    let cuda = match a.backend {
        Backend::Cpu => None,
        Backend::Cuda => Some(
            polylith_cuda::CudaDecoder::new(a.device, &model, limits)
                .context("the CUDA backend is not usable")?,
        ),
        Backend::Auto => match polylith_cuda::CudaDecoder::new(a.device, &model, limits) {
            Ok(d) => Some(d),
            Err(e) => {
                println!("CUDA not usable ({e}); benchmarking the CPU backend");
                None
            }
        },
    };
    match cuda {
        Some(d) => llm_cuda(&d, model.name(), &a),
        None => llm_cpu(&model, &a),
    }
}

fn print_llm_header(
    backend: &str,
    model: &str,
    params: u64,
    weight_bytes: u64,
    bw: f64,
    bw_what: &str,
    a: &LlmArgs,
) -> f64 {
    let floor_ms = weight_bytes as f64 / bw * 1e3;
    println!(
        "backend {backend}, model {model} ({:.3} B params), prompt {} tokens, {} new tokens per sequence (greedy), median of {} runs",
        params as f64 / 1e9,
        a.prompt_tokens,
        a.tokens,
        a.repeats
    );
    println!(
        "bandwidth floor: {:.1} MB of weights per decode step / {:.1} GB/s measured {bw_what} = {floor_ms:.3} ms per step",
        weight_bytes as f64 / 1e6,
        bw / 1e9
    );
    println!(
        "{:>6}  {:>14}  {:>9}  {:>13}  {:>9}  {:>9}  {:>8}",
        "batch", "prefill tok/s", "TTFT ms", "decode tok/s", "step ms", "floor ms", "of floor"
    );
    floor_ms
}

fn print_llm_row(batch: usize, runs: &[LlmRun], a: &LlmArgs, floor_ms: f64) {
    let prefill = median(runs.iter().map(|r| r.prefill_s).collect());
    let ttft = median(runs.iter().map(|r| r.ttft_s).collect());
    let decode = median(runs.iter().map(|r| r.decode_s).collect());
    // The first token comes from the prefill; the rest from decode steps.
    let steps = a.tokens.saturating_sub(1).max(1) as f64;
    let step_ms = decode / steps * 1e3;
    let decode_tps = if a.tokens > 1 {
        format!("{:.1}", batch as f64 * steps / decode)
    } else {
        "n/a".to_string()
    };
    println!(
        "{:>6}  {:>14.1}  {:>9.3}  {:>13}  {:>9.3}  {:>9.3}  {:>7.1}%",
        batch,
        (batch * a.prompt_tokens) as f64 / prefill,
        ttft * 1e3,
        decode_tps,
        step_ms,
        floor_ms,
        100.0 * floor_ms / step_ms
    );
}

fn llm_cuda(dec: &polylith_cuda::CudaDecoder, name: &str, a: &LlmArgs) -> anyhow::Result<()> {
    let cfg = dec.config().clone();
    let bw = dec
        .copy_bandwidth()
        .context("measuring device copy bandwidth")?;
    let floor_ms = print_llm_header(
        &format!("cuda: {}", dec.device_name()),
        name,
        decode_params(&cfg),
        dec.weight_bytes(),
        bw,
        "device-to-device copy",
        a,
    );
    for &b in &a.batch {
        let bar = progress(u64::from(a.repeats) + 1, format!("batch {b}"));
        let mut runs = Vec::new();
        // One untimed warm-up run, then the timed ones.
        for i in 0..=a.repeats {
            let prompts: Vec<Vec<u32>> = (0..b)
                .map(|s| bench_prompt(&cfg, a.prompt_tokens, s))
                .collect();
            let mut batch = dec.new_batch(b).context("opening the batch")?;
            let t0 = std::time::Instant::now();
            let logits = batch.prefill(&prompts).context("prefill")?;
            let prefill_s = t0.elapsed().as_secs_f64();
            let mut next: Vec<u32> = logits
                .iter()
                .map(|l| polylith_model::sampling::argmax(l))
                .collect();
            let ttft_s = t0.elapsed().as_secs_f64();
            let t1 = std::time::Instant::now();
            for _ in 1..a.tokens {
                next = batch.decode_greedy(&next).context("decode step")?;
            }
            let decode_s = t1.elapsed().as_secs_f64();
            if i > 0 {
                runs.push(LlmRun {
                    prefill_s,
                    ttft_s,
                    decode_s,
                });
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        print_llm_row(b, &runs, a, floor_ms);
    }
    Ok(())
}

fn llm_cpu(model: &polylith_model::Model, a: &LlmArgs) -> anyhow::Result<()> {
    use polylith_model::Decoder;
    let cfg = model.config().clone();
    let params = decode_params(&cfg);
    let floor_ms = print_llm_header(
        "cpu (candle, f32; batch > 1 runs one thread per sequence)",
        model.name(),
        params,
        4 * params,
        host_copy_bandwidth(),
        "host memcpy",
        a,
    );
    for &b in &a.batch {
        let bar = progress(u64::from(a.repeats), format!("batch {b}"));
        let mut runs = Vec::new();
        for _ in 0..a.repeats {
            // Each sequence on its own thread; a phase's wall time is its slowest thread's.
            let per_seq: Vec<anyhow::Result<LlmRun>> = std::thread::scope(|sc| {
                let handles: Vec<_> = (0..b)
                    .map(|s| {
                        let (cfg, model) = (&cfg, model);
                        sc.spawn(move || -> anyhow::Result<LlmRun> {
                            let prompt = bench_prompt(cfg, a.prompt_tokens, s);
                            let mut seq = model.new_sequence()?;
                            let t0 = std::time::Instant::now();
                            let logits = seq.feed(&prompt)?;
                            let prefill_s = t0.elapsed().as_secs_f64();
                            let mut next = polylith_model::sampling::argmax(&logits);
                            let ttft_s = t0.elapsed().as_secs_f64();
                            let t1 = std::time::Instant::now();
                            for _ in 1..a.tokens {
                                next = polylith_model::sampling::argmax(&seq.feed(&[next])?);
                            }
                            Ok(LlmRun {
                                prefill_s,
                                ttft_s,
                                decode_s: t1.elapsed().as_secs_f64(),
                            })
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("a sequence thread panicked")))
                    })
                    .collect()
            });
            let per_seq: Vec<LlmRun> = per_seq.into_iter().collect::<anyhow::Result<_>>()?;
            let worst = |f: fn(&LlmRun) -> f64| per_seq.iter().map(f).fold(0.0, f64::max);
            runs.push(LlmRun {
                prefill_s: worst(|r| r.prefill_s),
                ttft_s: worst(|r| r.ttft_s),
                decode_s: worst(|r| r.decode_s),
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        print_llm_row(b, &runs, a, floor_ms);
    }
    Ok(())
}
