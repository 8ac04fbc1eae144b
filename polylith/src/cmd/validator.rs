//! `polylith validator` (placeholder until its owner fills it in).

use crate::Global;

/// Flags of `polylith validator`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `polylith validator`.
pub fn run(_args: Args, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("`polylith validator` is not available yet")
}
