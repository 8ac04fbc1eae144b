//! `polylith miner` (placeholder until its owner fills it in).

use crate::Global;

/// Flags of `polylith miner`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `polylith miner`.
pub fn run(_args: Args, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("`polylith miner` is not available yet")
}
