//! `polylith local` (placeholder until its owner fills it in).

use crate::Global;

/// Flags of `polylith local`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `polylith local`.
pub fn run(_args: Args, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("`polylith local` is not available yet")
}
