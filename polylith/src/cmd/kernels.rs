//! `polylith kernels check`: compile every CUDA kernel with NVRTC for each architecture.
//! Needs libnvrtc (not a GPU): `.ci/install-nvrtc.sh` installs it from PyPI.

use crate::Global;
use anyhow::Context;
use std::path::PathBuf;

/// Flags of `polylith kernels`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Compile every kernel to PTX and CUBIN for each architecture; any error or warning fails
    /// with the compiler's log.
    Check {
        /// Target architectures, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_90")]
        arch: Vec<String>,
        /// CUDA include directory (default: $CUDA_INCLUDE, /usr/local/cuda/include, or the
        /// pip wheel under .ci/cuda).
        #[arg(long)]
        include: Option<PathBuf>,
    },
}

/// Runs `polylith kernels`.
pub fn run(args: Args, _global: &Global) -> anyhow::Result<()> {
    match args.command {
        Command::Check { arch, include } => check(&arch, include),
    }
}

fn check(archs: &[String], include: Option<PathBuf>) -> anyhow::Result<()> {
    let include = include.or_else(polylith_cuda::check::cuda_include_dir);
    let (major, minor) = polylith_cuda::kernels::nvrtc_version().context("cannot check kernels")?;
    println!(
        "NVRTC {major}.{minor}; include dir: {}",
        include
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none (the kernels need no CUDA header)".to_string())
    );
    let reports =
        polylith_cuda::check_all(archs, include.as_deref()).context("kernel check failed")?;
    for r in &reports {
        println!(
            "{:<8} {:<7} PTX {:>7} bytes (ISA {}), CUBIN {:>7} bytes, {} entries, {} ms",
            r.name,
            r.arch,
            r.ptx_bytes,
            r.ptx_version.as_deref().unwrap_or("?"),
            r.cubin_bytes,
            r.entries.len(),
            r.elapsed.as_millis()
        );
    }
    println!(
        "ok: {} kernel families × {} architectures, no errors, no warnings",
        polylith_cuda::kernels::ALL.len(),
        archs.len()
    );
    Ok(())
}
