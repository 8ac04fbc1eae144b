//! `polylith bench`: throughput benchmarks. `bench gemm` times the proof's GEMM on the chosen
//! backend; on CUDA it also times cuBLAS on the same operands in the same run.

use crate::Global;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use polylith_protocol::gemm::{Dtype, GemmSpec};

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
