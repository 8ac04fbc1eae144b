//! `polylith model` (placeholder until its owner fills it in).

use crate::Global;

/// Flags of `polylith model`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `polylith model`.
pub fn run(_args: Args, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("`polylith model` is not available yet")
}
