//! `polylith yuma` (placeholder until its owner fills it in).

use crate::Global;

/// Flags of `polylith yuma`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `polylith yuma`.
pub fn run(_args: Args, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("`polylith yuma` is not available yet")
}
