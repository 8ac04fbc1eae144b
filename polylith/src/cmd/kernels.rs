//! `polylith kernels` (placeholder until its owner fills it in).

use crate::Global;

/// Flags of `polylith kernels`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `polylith kernels`.
pub fn run(_args: Args, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("`polylith kernels` is not available yet")
}
